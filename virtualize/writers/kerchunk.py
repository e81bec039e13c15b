"""Kerchunk references: a virtual dataset written as a Kerchunk reference set (JSON or Parquet).

A Kerchunk reference set maps every key of a Zarr store to a value: metadata documents as
JSON text, chunks as ``[url, offset, length]`` or inline ``"base64:..."`` bytes
(https://fsspec.github.io/kerchunk/spec.html, version 1). fsspec's ``ReferenceFileSystem``
and kerchunk's xarray backend read them.

By default the metadata is Zarr v2 (``.zgroup``, ``.zattrs``, ``.zarray``), which every
Kerchunk reader understands. Zarr v3 metadata (one ``zarr.json`` per node) is an option for
JSON and dict output; it keeps every codec, including virtualize's own, which Zarr v2 has no
way to name. Nothing unreadable is ever written: a variable whose codecs have no Zarr v2
(numcodecs) equivalent raises :class:`~virtualize.errors.UnsupportedFeatureError` naming it.

References are built from the manifests' columns, never one Python object per chunk for
JSON and Parquet: JSON text is assembled in numpy byte matrices a batch at a time, and
Parquet is written one record file at a time.
"""

from __future__ import annotations

import base64
import json
import math
import os
import posixpath
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, Literal, cast
from urllib.parse import unquote, urlsplit

import numpy as np
import numpy.typing as npt
import xarray as xr
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec
from zarr.codecs import BytesCodec, VLenBytesCodec, VLenUTF8Codec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding, V2ChunkKeyEncoding
from zarr.core.dtype import get_data_type_from_native_dtype
from zarr.core.metadata.v2 import ArrayV2Metadata
from zarr.core.metadata.v3 import ArrayV3Metadata

from virtualize.errors import UnsupportedFeatureError, VirtualizeError
from virtualize.manifests import INLINE, MISSING, ChunkManifest, ManifestArray
from virtualize.manifests.grid import is_regular
from virtualize.writers.common import encode_loaded, plan_write

__all__ = ["to_kerchunk"]

KerchunkFormat = Literal["dict", "json", "parquet"]

#: Chunk references rendered per batch when JSON text is assembled.
_JSON_BATCH = 1 << 16

_V3_TO_NUMCODECS_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def to_kerchunk(
    dataset: xr.Dataset,
    path: str | os.PathLike[str] | None = None,
    *,
    format: KerchunkFormat = "dict",
    zarr_format: Literal[2, 3] = 2,
    record_size: int = 100_000,
    group: str | None = None,
) -> dict[str, Any] | None:
    """Write a virtual dataset as Kerchunk references (version 1).

    Virtual variables become chunk references ``[url, offset, length]`` (chunks held inline
    become ``"base64:..."`` values); loaded variables are encoded by xarray, as
    :meth:`xarray.Dataset.to_zarr` would store them, and written inline. Local source files
    are referenced by their absolute path, other sources by their url.

    Parameters
    ----------
    dataset
        A dataset of :class:`~virtualize.ManifestArray` variables (and loaded ones), as
        :func:`virtualize.open_virtual_dataset` returns.
    path
        Where to write: a file for ``"json"``, a directory for ``"parquet"`` (created, and
        its record files replaced). Local paths, or urls fsspec can write to. Not used for
        ``"dict"``.
    format
        ``"dict"`` returns the references; ``"json"`` writes one JSON document;
        ``"parquet"`` writes Kerchunk's Parquet layout (``.zmetadata`` plus
        ``<variable>/refs.<n>.parq`` record files with columns ``path``, ``offset``,
        ``size`` and ``raw``) that fsspec's ``LazyReferenceMapper`` reads.
    zarr_format
        2 (default): ``.zgroup``/``.zattrs``/``.zarray`` metadata, readable by every
        Kerchunk reader, including kerchunk's xarray backend. 3: ``zarr.json`` metadata, for
        ``"dict"`` and ``"json"`` only; it keeps codecs that Zarr v2 can't name (read it with
        ``zarr.storage.FsspecStore`` over fsspec's reference file system and
        ``xr.open_zarr(..., zarr_format=3)``).
    record_size
        References per Parquet record file.
    group
        Write the dataset as this group (``"a/b"``) of the reference set instead of its root.

    Returns
    -------
    dict or None
        ``{"version": 1, "refs": {...}}`` for ``format="dict"`` (metadata values are JSON
        text, as Kerchunk writes them), else None.

    Raises
    ------
    UnsupportedFeatureError
        With ``zarr_format=2``, for a variable whose codecs have no numcodecs equivalent
        (virtualize's own codecs, such as CF packing with float32 factors, or sharding).
        The message names the variable; ``zarr_format=3`` writes it.
    ValueError
        For an unknown ``format``, a missing ``path`` or a ``record_size`` below 1.

    Notes
    -----
    Zarr v2 has one fill value, which xarray reads as ``_FillValue`` (it masks with it) and
    which missing chunks read as. Where a variable's missing chunks must read as another
    value (netCDF's default fill without a ``_FillValue`` attribute, say), those chunks are
    written inline, encoded like the others, up to :data:`MAX_FILL_BYTES` per variable
    (beyond that the variable is refused). Zarr v3 metadata has no such limit.

    Examples
    --------
    >>> refs = to_kerchunk(vds)  # doctest: +SKIP
    >>> to_kerchunk(vds, "refs.parq", format="parquet")  # doctest: +SKIP
    >>> xr.open_dataset("refs.json", engine="kerchunk")  # doctest: +SKIP
    """
    if format not in ("dict", "json", "parquet"):
        raise ValueError(f"format must be 'dict', 'json' or 'parquet', got {format!r}")
    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    if format == "parquet" and zarr_format != 2:
        raise UnsupportedFeatureError(
            "Kerchunk Parquet references hold Zarr v2 metadata only",
            hint="Write format='json' or 'dict' for zarr_format=3",
        )
    if format != "dict" and path is None:
        raise ValueError(f"format={format!r} needs a path to write to")
    if record_size < 1:
        raise ValueError(f"record_size must be positive, got {record_size}")
    layout = _layout(dataset, zarr_format=zarr_format, group=group)
    if format == "dict":
        return _to_dict(layout)
    assert path is not None
    output = _Output(path)
    if format == "json":
        _write_json(layout, output)
    else:
        _write_parquet(layout, output, record_size)
    return None


# -- the reference set, before it is written ----------------------------------------------------


@dataclass(frozen=True)
class _KeyScheme:
    """How the chunk keys of one array are spelled: ``prefix`` + indices joined by
    ``separator``, or ``scalar`` for a 0-d array."""

    prefix: str
    separator: str
    scalar: str

    def key(self, index: tuple[int, ...]) -> str:
        if not index:
            return self.scalar
        return self.prefix + self.separator.join(str(i) for i in index)


_V2_KEYS = _KeyScheme(prefix="", separator=".", scalar="0")


@dataclass
class _ArrayRefs:
    """The chunks of one array: its store path, how its keys are spelled, its manifest and
    the urls its url table becomes in the references."""

    path: str
    keys: _KeyScheme
    manifest: ChunkManifest
    urls: list[str]


@dataclass
class _Layout:
    """A reference set: metadata documents by key, and arrays of chunk references."""

    metadata: dict[str, Any]
    arrays: list[_ArrayRefs]


def _layout(dataset: xr.Dataset, *, zarr_format: int, group: str | None) -> _Layout:
    plan = plan_write(dataset)
    base = "/".join(part for part in (group or "").split("/") if part)
    prefix = f"{base}/" if base else ""
    metadata: dict[str, Any] = {}
    arrays: list[_ArrayRefs] = []

    loaded_metadata, loaded_arrays, loaded_root = _encode_loaded(plan.loaded, zarr_format)
    attributes = {**loaded_root, **plan.attributes}
    _group_documents(metadata, base, attributes, zarr_format)

    for name, array in plan.virtual.items():
        if not is_regular(array.chunk_grid):
            # fsspec's reference reader and Zarr v2 know regular grids only
            raise UnsupportedFeatureError(
                "Kerchunk references need a regular chunk grid; this array joins files of "
                f"unequal length into a rectilinear one {array.chunk_grid}",
                variable=name,
                hint="Write it to Icechunk, or read it through ManifestStore",
            )
        if zarr_format == 2:
            zarray, zattrs, manifest = _v2_documents(name, array)
            metadata[f"{prefix}{name}/.zarray"] = zarray
            metadata[f"{prefix}{name}/.zattrs"] = zattrs
            keys = _V2_KEYS
        else:
            metadata[f"{prefix}{name}/zarr.json"] = _v3_document(array.metadata)
            keys = _v3_key_scheme(array.metadata, name)
            manifest = array.manifest
        arrays.append(
            _ArrayRefs(
                f"{prefix}{name}", keys, manifest, [_reference_url(u) for u in manifest.urls]
            )
        )
    for key, document in loaded_metadata.items():
        metadata[f"{prefix}{key}"] = document
    for refs in loaded_arrays:
        refs.path = f"{prefix}{refs.path}"
        arrays.append(refs)
    return _Layout(metadata, arrays)


def _group_documents(
    metadata: dict[str, Any], base: str, attributes: dict[str, Any], zarr_format: int
) -> None:
    """Group documents for the root, every group down to ``base``, and ``base`` itself (which
    carries the dataset's attributes)."""
    parts = [p for p in base.split("/") if p]
    for depth in range(len(parts) + 1):
        node = "/".join(parts[:depth])
        prefix = f"{node}/" if node else ""
        attrs = attributes if depth == len(parts) else {}
        if zarr_format == 2:
            metadata[f"{prefix}.zgroup"] = {"zarr_format": 2}
            metadata[f"{prefix}.zattrs"] = attrs
        else:
            metadata[f"{prefix}zarr.json"] = {
                "zarr_format": 3,
                "node_type": "group",
                "attributes": attrs,
            }


def _reference_url(url: str) -> str:
    """The url a reference names: local files as plain absolute paths (fsspec's local file
    system does not undo percent-encoding), others unchanged."""
    if url.startswith("file://"):
        return unquote(urlsplit(url).path)
    return url


# -- Zarr v3 metadata --------------------------------------------------------------------------


def _v3_document(metadata: ArrayV3Metadata) -> Any:
    text = metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()
    return json.loads(text)


def _v3_key_scheme(metadata: ArrayV3Metadata, name: str) -> _KeyScheme:
    encoding = metadata.chunk_key_encoding
    if isinstance(encoding, DefaultChunkKeyEncoding):
        separator = str(encoding.separator)
        scheme = _KeyScheme(prefix="c" + separator, separator=separator, scalar="c")
    elif isinstance(encoding, V2ChunkKeyEncoding):
        scheme = _KeyScheme(prefix="", separator=str(encoding.separator), scalar="0")
    else:
        raise UnsupportedFeatureError(
            f"its chunk key encoding {encoding.to_dict()!r} is not one zarr defines",
            variable=name,
        )
    probe = (0,) * len(metadata.shape)
    if encoding.encode_chunk_key(probe) != scheme.key(probe):  # pragma: no cover - guard
        raise UnsupportedFeatureError(
            f"its chunk key encoding {encoding.to_dict()!r} spells keys unexpectedly",
            variable=name,
        )
    return scheme


# -- Zarr v2 metadata --------------------------------------------------------------------------


def _unsupported_v2(name: str, reason: str) -> UnsupportedFeatureError:
    return UnsupportedFeatureError(
        f"can't be written with Zarr v2 metadata: {reason}",
        variable=name,
        hint=(
            "Write Zarr v3 metadata instead (to_kerchunk(..., zarr_format=3) with format "
            "'json' or 'dict'), which keeps every codec; readers then need virtualize "
            "installed for virtualize's codecs"
        ),
    )


def _numcodecs_config(codec: Any, name: str) -> dict[str, Any]:
    """The numcodecs configuration (``{"id": ...}``) of a zarr v3 bytes or array codec."""
    document = codec.to_dict()
    codec_name = str(document.get("name"))
    configuration = dict(document.get("configuration") or {})
    if codec_name.startswith("numcodecs."):
        return {"id": codec_name[len("numcodecs.") :], **configuration}
    if codec_name == "zstd":
        return {"id": "zstd", "level": configuration.get("level", 0)} | (
            {"checksum": True} if configuration.get("checksum") else {}
        )
    if codec_name == "gzip":
        return {"id": "gzip", "level": configuration.get("level", 5)}
    if codec_name == "blosc":
        shuffle = configuration.get("shuffle") or "noshuffle"
        # typesize is left out: the Blosc frame header carries it, and numcodecs before
        # 0.16 refuses the key
        return {
            "id": "blosc",
            "cname": configuration.get("cname", "lz4"),
            "clevel": configuration.get("clevel", 5),
            "shuffle": _V3_TO_NUMCODECS_SHUFFLE[str(shuffle)],
            "blocksize": configuration.get("blocksize", 0),
        }
    if codec_name == "crc32c":
        return {"id": "crc32c", "location": "end"}
    raise _unsupported_v2(name, f"its codec {codec_name!r} has no numcodecs equivalent")


def _split_codecs(codecs: tuple[Any, ...], name: str) -> tuple[list[Any], Any, list[Any]]:
    array_array: list[Any] = []
    serializer: Any = None
    bytes_bytes: list[Any] = []
    for codec in codecs:
        if isinstance(codec, ArrayArrayCodec):
            array_array.append(codec)
        elif isinstance(codec, ArrayBytesCodec):
            serializer = codec
        elif isinstance(codec, BytesBytesCodec):
            bytes_bytes.append(codec)
        else:  # pragma: no cover - zarr refuses such codecs in metadata
            raise _unsupported_v2(name, f"unknown codec {codec!r}")
    return array_array, serializer, bytes_bytes


def _v2_documents(
    name: str, array: ManifestArray
) -> tuple[dict[str, Any], dict[str, Any], ChunkManifest]:
    """``.zarray`` and ``.zattrs`` documents that read back as the virtual variable does, and
    the manifest to write (missing chunks made inline where Zarr v2 needs that)."""
    metadata = array.metadata
    array_array, serializer, bytes_bytes = _split_codecs(tuple(metadata.codecs), name)
    native = np.dtype(metadata.data_type.to_native_dtype())
    filters: list[dict[str, Any]] = []
    for codec in array_array:
        filters.append(_numcodecs_config(codec, name))
    if isinstance(serializer, BytesCodec):
        endian = serializer.endian
        endian_name = str(getattr(endian, "value", endian)) if endian is not None else None
        if array_array and endian_name == "big":
            raise _unsupported_v2(name, "array-to-array codecs followed by big-endian bytes")
        if endian_name == "big":
            stored = native.newbyteorder(">")
        elif endian_name == "little":
            stored = native.newbyteorder("<")
        else:
            stored = native
        data_type = get_data_type_from_native_dtype(stored)
    elif isinstance(serializer, VLenUTF8Codec):
        filters.append({"id": "vlen-utf8"})
        data_type = metadata.data_type
    elif isinstance(serializer, VLenBytesCodec):
        filters.append({"id": "vlen-bytes"})
        data_type = metadata.data_type
    else:
        label = serializer.to_dict().get("name") if serializer is not None else None
        raise _unsupported_v2(name, f"its array-to-bytes codec {label!r} has no v2 equivalent")
    compressors = [_numcodecs_config(codec, name) for codec in bytes_bytes]
    compressor = compressors.pop() if compressors else None
    filters.extend(compressors)

    attributes = dict(metadata.attributes)
    encoded_fill = attributes.pop("_FillValue", None)
    fill_value = None
    if encoded_fill is not None:
        from xarray.backends.zarr import FillValueCoder

        try:
            fill_value = FillValueCoder.decode(encoded_fill, native)
        except (TypeError, ValueError) as error:
            raise _unsupported_v2(name, f"its _FillValue {encoded_fill!r} can't be decoded") from (
                error
            )
    dims = list(metadata.dimension_names or ())
    if len(dims) != len(metadata.shape):
        raise _unsupported_v2(name, "it has no dimension names")
    v2 = ArrayV2Metadata(
        shape=tuple(int(n) for n in metadata.shape),
        dtype=data_type,
        chunks=_chunk_shape(metadata),
        fill_value=fill_value,
        order="C",
        dimension_separator=".",
        compressor=compressor,
        filters=filters or None,
        attributes={**attributes, "_ARRAY_DIMENSIONS": dims},
    )
    manifest = array.manifest
    missing = manifest.path_ids == MISSING
    if bool(missing.any()):
        # Zarr v2 has one fill value, for both missing chunks and xarray's mask: where the
        # missing chunks must read as something else, they are written inline
        reads_as = fill_value if fill_value is not None else data_type.default_scalar()
        if not _same_value(reads_as, metadata.fill_value):
            manifest = _fill_missing(name, manifest, missing, v2, metadata.fill_value)
    buffers = v2.to_buffer_dict(default_buffer_prototype())
    zarray = json.loads(buffers[".zarray"].to_bytes())
    return zarray, json.loads(buffers[".zattrs"].to_bytes()), manifest


#: The most bytes of fill chunks written inline for one array (see :func:`_fill_missing`).
MAX_FILL_BYTES = 16 * 1024 * 1024


def _encoded_fill_chunk(v2: ArrayV2Metadata, fill_value: Any) -> bytes:
    """One chunk of ``fill_value``, encoded as zarr encodes it for the Zarr v2 array ``v2``."""
    import zarr
    from zarr.storage import MemoryStore

    contents: dict[str, Any] = {}
    filters = list(v2.filters or ())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = zarr.create_array(
            MemoryStore(store_dict=contents),
            shape=v2.chunks,
            chunks=v2.chunks,
            dtype=v2.dtype,
            fill_value=None,
            filters=filters or None,
            compressors=v2.compressor,
            zarr_format=2,
            config={"write_empty_chunks": True},
        )
        array[...] = fill_value
    chunks = [value for key, value in contents.items() if not key.startswith(".z")]
    return bytes(chunks[0].to_bytes())


def _fill_missing(
    name: str,
    manifest: ChunkManifest,
    missing: npt.NDArray[np.bool_],
    v2: ArrayV2Metadata,
    fill_value: Any,
) -> ChunkManifest:
    """The manifest with its missing chunks held inline, encoded as chunks of
    ``fill_value`` with the array's Zarr v2 filters and compressor."""
    data = _encoded_fill_chunk(v2, fill_value)
    positions = np.flatnonzero(missing.reshape(-1))
    if positions.size * len(data) > MAX_FILL_BYTES:
        raise _unsupported_v2(
            name,
            f"{positions.size} of its chunks are missing and read as {fill_value!r}, which "
            "Zarr v2 can only say with that value as the _FillValue, or by writing those "
            f"chunks inline ({positions.size * len(data)} bytes, more than the "
            f"{MAX_FILL_BYTES} allowed)",
        )
    inline = dict(manifest.inline)
    inline.update(dict.fromkeys(positions.tolist(), data))
    path_ids = np.where(missing, INLINE, manifest.path_ids).astype(np.uint32)
    return ChunkManifest(
        manifest.urls,
        path_ids,
        manifest.offsets,
        manifest.lengths,
        inline=inline,
        sources=manifest.sources,
        validate=False,
    )


def _chunk_shape(metadata: ArrayV3Metadata) -> tuple[int, ...]:
    shape = getattr(metadata.chunk_grid, "chunk_shape", None)
    if shape is None:
        raise UnsupportedFeatureError(
            f"Kerchunk references need a regular chunk grid, not {metadata.chunk_grid!r}"
        )
    return tuple(int(c) for c in shape)


def _same_value(first: Any, second: Any) -> bool:
    a, b = np.asarray(first), np.asarray(second)
    try:
        if a.dtype.kind in "fc" and b.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    except TypeError:
        return False


# -- loaded variables --------------------------------------------------------------------------


def _encode_loaded(
    loaded: xr.Dataset, zarr_format: int
) -> tuple[dict[str, Any], list[_ArrayRefs], dict[str, Any]]:
    """Store the loaded variables as xarray's ``to_zarr`` does, in memory; return their
    metadata documents, their chunks (as inline manifests) and the root attributes xarray
    wrote (``coordinates`` of coordinates no variable names)."""
    if not loaded.variables:
        return {}, [], {}
    blobs = encode_loaded(loaded, zarr_format)
    metadata_name = ".zarray" if zarr_format == 2 else "zarr.json"
    root_name = ".zattrs" if zarr_format == 2 else "zarr.json"
    root = json.loads(blobs.pop(root_name, b"{}"))
    root_attributes = root if zarr_format == 2 else root.get("attributes", {})
    blobs.pop(".zgroup", None)
    documents: dict[str, Any] = {}
    arrays: list[_ArrayRefs] = []
    array_paths = sorted(
        key[: -len(metadata_name) - 1] for key in blobs if key.endswith("/" + metadata_name)
    )
    for array_path in array_paths:
        prefix = f"{array_path}/"
        own = {key[len(prefix) :]: value for key, value in blobs.items() if key.startswith(prefix)}
        document = json.loads(own.pop(metadata_name))
        documents[f"{prefix}{metadata_name}"] = document
        if zarr_format == 2:
            documents[f"{prefix}.zattrs"] = json.loads(own.pop(".zattrs", b"{}"))
            shape = tuple(document["shape"])
            chunks = tuple(document["chunks"])
            separator = str(document.get("dimension_separator") or ".")
            keys = _KeyScheme(prefix="", separator=separator, scalar="0")
        else:
            v3 = ArrayV3Metadata.from_dict(document)
            shape = tuple(int(n) for n in v3.shape)
            chunks = _chunk_shape(v3)
            keys = _v3_key_scheme(v3, array_path)
        grid = tuple(-(-n // max(c, 1)) for n, c in zip(shape, chunks, strict=True))
        arrays.append(_ArrayRefs(array_path, keys, _inline_manifest(grid, keys, own), []))
    return documents, arrays, root_attributes


def _inline_manifest(
    grid: tuple[int, ...], keys: _KeyScheme, chunks: Mapping[str, bytes]
) -> ChunkManifest:
    path_ids = np.full(grid, MISSING, dtype=np.uint32)
    inline: dict[int, bytes] = {}
    for key, data in chunks.items():
        if not grid:
            index: tuple[int, ...] = ()
        else:
            index = tuple(int(i) for i in key.removeprefix(keys.prefix).split(keys.separator))
        flat = int(np.ravel_multi_index(index, grid)) if grid else 0
        path_ids[index] = INLINE
        inline[flat] = data
    zeros = np.zeros(grid, dtype=np.uint64)
    return ChunkManifest([], path_ids, zeros, zeros.copy(), inline=inline, validate=False)


# -- chunk keys and JSON text, vectorised ------------------------------------------------------

_DIGITS = np.frombuffer(
    b"".join(
        [f"{i:04d}".encode() for i in range(10000)]
        + [str(i).rjust(4, "\0").encode() for i in range(10000)]
        + [b"\0\0\0\0"]
    ),
    dtype=np.uint8,
).reshape(20001, 4)


def _render_decimal(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Decimal digits of non-negative integers as rows of a uint8 matrix, right-aligned and
    padded on the left with NUL bytes (which :func:`_assemble` drops)."""
    numbers = np.asarray(values, dtype=np.uint64)
    largest = int(numbers.max()) if numbers.size else 0
    groups = max(1, -(-len(str(largest)) // 4))
    out = np.empty((numbers.size, groups, 4), dtype=np.uint8)
    rest = numbers
    ten_thousand = np.uint64(10000)
    for group in range(groups):
        low = (rest % ten_thousand).astype(np.intp)
        exhausted = rest == 0
        rest = rest // ten_thousand
        # the leading group of a number has no leading zeros; groups above it are empty
        row = low + 10000 * (rest == 0)
        if group:
            row[exhausted] = 20000
        out[:, groups - 1 - group] = _DIGITS[row]
    return out.reshape(numbers.size, groups * 4)


def _constant(text: str, count: int) -> npt.NDArray[np.uint8]:
    row = np.frombuffer(text.encode(), dtype=np.uint8)
    return np.broadcast_to(row, (count, row.size))


def _assemble(parts: list[npt.NDArray[np.uint8]]) -> bytes:
    """Concatenate the rows of several uint8 matrices side by side, drop NUL padding, and
    return the bytes of all rows in order."""
    count = parts[0].shape[0]
    width = sum(part.shape[1] for part in parts)
    out = np.empty((count, width), dtype=np.uint8)
    column = 0
    for part in parts:
        out[:, column : column + part.shape[1]] = part
        column += part.shape[1]
    flat = out.reshape(-1)
    return flat[flat != 0].tobytes()


def _key_parts(
    keys: _KeyScheme, grid: tuple[int, ...], flat: npt.NDArray[np.intp]
) -> list[npt.NDArray[np.uint8]]:
    """Byte matrices spelling the chunk keys of the flat chunk indices ``flat``."""
    count = flat.size
    if not grid:
        return [_constant(keys.scalar, count)]
    positions = np.unravel_index(flat, grid)
    parts: list[npt.NDArray[np.uint8]] = []
    if keys.prefix:
        parts.append(_constant(keys.prefix, count))
    for axis, position in enumerate(positions):
        if axis:
            parts.append(_constant(keys.separator, count))
        parts.append(_render_decimal(position))
    return parts


def _url_table(urls: list[str]) -> npt.NDArray[np.uint8]:
    """The urls as JSON strings, one per row of a NUL-padded uint8 matrix."""
    encoded = [json.dumps(url).encode() for url in urls] or [b'""']
    width = max(len(e) for e in encoded)
    table = np.zeros((len(encoded), width), dtype=np.uint8)
    for row, text in enumerate(encoded):
        table[row, : len(text)] = np.frombuffer(text, dtype=np.uint8)
    return table


def _chunk_key(refs: _ArrayRefs, flat: int) -> str:
    grid = refs.manifest.shape_chunk_grid
    index = tuple(int(i) for i in np.unravel_index(flat, grid)) if grid else ()
    return f"{refs.path}/{refs.keys.key(index)}"


def _inline_value(data: bytes) -> str:
    return "base64:" + base64.b64encode(data).decode()


def _json_entries(refs: _ArrayRefs) -> Iterator[bytes]:
    """``,"key":[url,offset,length]`` entries of one array as JSON text, in batches."""
    manifest = refs.manifest
    grid = manifest.shape_chunk_grid
    escaped = json.dumps(refs.path + "/")[1:-1]
    urls = _url_table(refs.urls)
    for batch in manifest.iter_batches(_JSON_BATCH):
        count = batch.indices.size
        if not count:
            continue
        parts = [
            _constant(f',"{escaped}', count),
            *_key_parts(refs.keys, grid, batch.indices),
            _constant('":[', count),
            urls[batch.path_ids],
            _constant(",", count),
            _render_decimal(batch.offsets),
            _constant(",", count),
            _render_decimal(batch.lengths),
            _constant("]", count),
        ]
        yield _assemble(parts)
    for flat, data in sorted(manifest.inline.items()):
        key = _chunk_key(refs, flat)
        yield ("," + json.dumps(key) + ":" + json.dumps(_inline_value(data))).encode()


def _chunk_keys(refs: _ArrayRefs, flat: npt.NDArray[np.intp]) -> list[str]:
    if not flat.size:
        return []
    parts = _key_parts(refs.keys, refs.manifest.shape_chunk_grid, flat)
    parts.append(_constant("\n", flat.size))
    suffixes = _assemble(parts).decode().split("\n")[:-1]
    prefix = refs.path + "/"
    return [prefix + suffix for suffix in suffixes]


# -- output ------------------------------------------------------------------------------------


def _metadata_text(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), allow_nan=True)


def _to_dict(layout: _Layout) -> dict[str, Any]:
    refs: dict[str, Any] = {key: _metadata_text(doc) for key, doc in layout.metadata.items()}
    for array in layout.arrays:
        manifest = array.manifest
        url_table = np.array(array.urls or [""], dtype=object)
        for batch in manifest.iter_batches():
            keys = _chunk_keys(array, batch.indices)
            urls = url_table[batch.path_ids].tolist()
            values = map(
                list, zip(urls, batch.offsets.tolist(), batch.lengths.tolist(), strict=True)
            )
            refs.update(zip(keys, values, strict=True))
        for flat, data in manifest.inline.items():
            refs[_chunk_key(array, flat)] = _inline_value(data)
    return {"version": 1, "refs": refs}


class _Output:
    """Where references are written: a local path, or a url fsspec can write to."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        text = os.fspath(path)
        self._fs: Any = None
        if "://" in text and not text.startswith("file://"):
            try:
                import fsspec
            except ImportError as error:  # pragma: no cover - fsspec comes with kerchunk
                raise VirtualizeError(
                    "writing references to a url needs fsspec",
                    url=text,
                    hint="pip install 'virtualize[kerchunk]'",
                ) from error
            self._fs, self.root = fsspec.core.url_to_fs(text)
        else:
            self.root = unquote(urlsplit(text).path) if text.startswith("file://") else text

    def join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if self._fs else os.path.join(self.root, *parts)

    def makedirs(self, path: str) -> None:
        if self._fs is not None:
            self._fs.makedirs(path, exist_ok=True)
        else:
            os.makedirs(path, exist_ok=True)

    def remove(self, path: str) -> None:
        """Delete the file at ``path`` if there is one."""
        if self._fs is not None:
            if self._fs.exists(path):
                self._fs.rm(path)
        elif os.path.lexists(path):
            os.remove(path)

    def open(self, path: str) -> IO[bytes]:
        if self._fs is not None:
            return cast(IO[bytes], self._fs.open(path, "wb"))
        return open(path, "wb")


def _write_json(layout: _Layout, output: _Output) -> None:
    parent = os.path.dirname(output.root)
    if parent and output._fs is None:
        os.makedirs(parent, exist_ok=True)
    with output.open(output.root) as sink:
        entries = ",".join(
            f"{json.dumps(key)}:{json.dumps(_metadata_text(doc))}"
            for key, doc in layout.metadata.items()
        )
        sink.write(('{"version":1,"refs":{' + entries).encode())
        for array in layout.arrays:
            for text in _json_entries(array):
                sink.write(text)
        sink.write(b"}}")


def _write_parquet(layout: _Layout, output: _Output, record_size: int) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise VirtualizeError(
            "writing Kerchunk Parquet references needs pyarrow",
            hint="pip install pyarrow (or 'virtualize[kerchunk]')",
        ) from error
    output.makedirs(output.root)
    # a reader must never see the metadata of an earlier write over half-written records
    output.remove(output.join(".zmetadata"))
    for array in layout.arrays:
        folder = output.join(*array.path.split("/"))
        output.makedirs(folder)
        for number, table in _record_tables(array, record_size, pa):
            with output.open(output.join(*array.path.split("/"), f"refs.{number}.parq")) as sink:
                pq.write_table(
                    table,
                    sink,
                    compression="zstd",
                    write_statistics=False,
                    # urls repeat: a dictionary; offsets and sizes are near-monotonic
                    # integers, a quarter of the size delta-encoded (fastparquet reads both)
                    use_dictionary=["path", "raw"],
                    column_encoding={
                        "offset": "DELTA_BINARY_PACKED",
                        "size": "DELTA_BINARY_PACKED",
                    },
                )
    # .zmetadata last: a reader never sees metadata whose record files are not written yet
    document = {"metadata": layout.metadata, "record_size": record_size}
    with output.open(output.join(".zmetadata")) as sink:
        sink.write(json.dumps(document, separators=(",", ":"), allow_nan=True).encode())


def _record_schema(pa: Any) -> Any:
    """The schema of a record file, with the pandas metadata kerchunk's own files carry.

    ``offset`` and ``size`` are required columns and the metadata says they are int64:
    without both, fastparquet (the reader fsspec's ``LazyReferenceMapper`` uses) reads them as
    floats, which no file accepts as an offset.
    """
    fields = [
        pa.field("path", pa.string()),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("raw", pa.binary()),
    ]
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas comes with the kerchunk extra
        return pa.schema(fields)
    template = pd.DataFrame(
        {
            "path": pd.Series(["u"], dtype=object),
            "offset": np.zeros(1, dtype=np.int64),
            "size": np.zeros(1, dtype=np.int64),
            "raw": pd.Series([b""], dtype=object),
        }
    )
    metadata = pa.Schema.from_pandas(template, preserve_index=False).metadata
    return pa.schema(fields, metadata=metadata)


def _record_tables(array: _ArrayRefs, record_size: int, pa: Any) -> Iterator[tuple[int, Any]]:
    """The record tables of one array: rows in C order of the chunk grid, ``record_size`` per
    file, the last one padded with empty rows (as kerchunk writes them)."""
    manifest = array.manifest
    path_ids = manifest.path_ids.reshape(-1)
    offsets = manifest.offsets.reshape(-1)
    lengths = manifest.lengths.reshape(-1)
    total = path_ids.size
    url_array = pa.array(array.urls or [""], type=pa.string())
    # offset and size must be required columns: fastparquet (fsspec's default reader) reads
    # nullable integers as floats, which no file accepts as an offset
    schema = _record_schema(pa)
    for number in range(math.ceil(total / record_size)):
        start = number * record_size
        stop = min(start + record_size, total)
        ids = path_ids[start:stop]
        real = np.zeros(record_size, dtype=bool)
        real[: stop - start] = ids < INLINE
        gather = np.zeros(record_size, dtype=np.int32)
        gather[: stop - start] = np.where(ids < INLINE, ids, 0)
        paths = url_array.take(pa.array(gather, mask=~real))
        offset_column = np.zeros(record_size, dtype=np.int64)
        offset_column[: stop - start] = np.where(ids < INLINE, offsets[start:stop], 0)
        size_column = np.zeros(record_size, dtype=np.int64)
        size_column[: stop - start] = np.where(ids < INLINE, lengths[start:stop], 0)
        inline_rows = np.flatnonzero(ids == INLINE)
        if inline_rows.size:
            raw: list[bytes | None] = [None] * record_size
            for row in inline_rows.tolist():
                raw[row] = manifest.inline[start + row]
            raw_column = pa.array(raw, type=pa.binary())
        else:
            raw_column = pa.nulls(record_size, type=pa.binary())
        table = pa.table(
            [paths, pa.array(offset_column), pa.array(size_column), raw_column], schema=schema
        )
        yield number, table
