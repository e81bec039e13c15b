"""Zarr v2 / v3 parser: every chunk object of an existing store becomes one reference.

The store's metadata is read through the :class:`~virtualize.registry.ObjectStoreRegistry`
(consolidated metadata when present, otherwise the ``.zarray`` / ``.zattrs`` / ``.zgroup`` or
``zarr.json`` documents found by listing), and its objects are listed once under the opened
group, so the size, ETag and last-modified time of every chunk object come from the listing,
never from one request per chunk. Each array becomes a :class:`ManifestArray` whose chunks are
``[chunk_object_url, 0, size]``; chunk objects that don't exist are missing chunks.

Zarr v2 metadata is converted to zarr v3: byte order becomes the ``bytes`` codec's endianness,
numcodecs compressors and filters become zarr's own codecs (``blosc``, ``zstd``, ``gzip``) or
its ``numcodecs.*`` wrappers, ``order="F"`` becomes a ``transpose`` codec, object arrays with
``vlen-utf8`` / ``vlen-bytes`` become ``string`` / ``bytes`` arrays, ``_ARRAY_DIMENSIONS``
becomes the dimension names, and the v2 ``fill_value`` of a numeric or boolean array is also
written as the ``_FillValue`` attribute, which is how xarray reads a v2 fill value. Every array is presented with the
default ``c/0/1`` chunk key encoding (Icechunk accepts no other); the source keys keep
theirs.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import numpy as np
import obstore
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec, Codec
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    GzipCodec,
    TransposeCodec,
    VLenBytesCodec,
    VLenUTF8Codec,
    ZstdCodec,
)
from zarr.core.metadata.v2 import ArrayV2Metadata
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync

from virtualize.errors import (
    InvalidFileError,
    SkippedVariableWarning,
    UnsupportedFeatureError,
)
from virtualize.manifests import MISSING, ChunkManifest, ManifestArray, ManifestGroup, SourceInfo
from virtualize.manifests.grid import chunk_grid_of, grid_shape
from virtualize.parsers.attributes import encode_fill_value
from virtualize.registry import ObjectStoreRegistry, normalize_url
from virtualize.store import ManifestStore

__all__ = ["ZarrParser"]

_V2_ARRAY = ".zarray"
_V2_GROUP = ".zgroup"
_V2_ATTRS = ".zattrs"
_V2_CONSOLIDATED = ".zmetadata"
_V3_META = "zarr.json"
_V2_DOCUMENTS = (_V2_ARRAY, _V2_GROUP, _V2_ATTRS)
_DIMENSION_KEY = "_ARRAY_DIMENSIONS"
_URL_SAFE = "/:@!$&'()*+,;=-._~"
_DEFAULT_KEY_ENCODING: dict[str, Any] = {"name": "default", "configuration": {"separator": "/"}}
#: Metadata documents fetched at once.
_CONCURRENT_GETS = 64


class ZarrParser:
    """Reference the chunk objects of an existing Zarr v2 or v3 store.

    Parameters
    ----------
    group
        The group to open, as a path inside the store (the root by default); its subgroups
        are parsed too.
    drop_variables
        Arrays to leave out, as paths relative to the opened group (``"temp"``,
        ``"forecast/temp"``).
    consolidated
        ``None`` (default): use the opened group's consolidated metadata when it has some,
        as zarr and xarray do, else read each node's metadata document. ``True``: require
        consolidated metadata. ``False``: ignore it.
    zarr_format
        2 or 3 to read only that format's metadata; by default the format is detected from the
        opened group's metadata (v3 wins when both are present, as in zarr-python).
    fill_value_attribute
        For numeric and boolean v2 arrays, also write the v2 ``fill_value`` as the
        ``_FillValue`` attribute (in xarray's encoded form). xarray masks a v2 array's fill
        value as missing data but reads a v3 array's ``_FillValue`` only from its attributes,
        so this keeps ``xr.open_zarr`` of the parsed store equal to ``xr.open_zarr`` of the
        original.
    on_unsupported
        ``"raise"`` (default): an array that can't be referenced exactly raises
        :class:`~virtualize.errors.UnsupportedFeatureError`. ``"skip"``: it is left out with a
        :class:`~virtualize.errors.SkippedVariableWarning`, and the returned store's
        ``skipped`` maps its path to the reason.

    Notes
    -----
    Refused (:class:`~virtualize.errors.UnsupportedFeatureError`): v2 object arrays other
    than ``vlen-utf8`` / ``vlen-bytes`` strings, v2 codecs with no zarr v3 codec
    (``categorize``, ``vlen-array``, ``json``, ``pickle``, ...), filters on big-endian v2
    arrays, and non-regular v3 chunk grids. Sharded v3 arrays are referenced shard by shard
    (each shard object is one chunk of the outer grid, read by zarr's sharding codec), which
    is exact. The store must be listable (file system, S3, GCS, Azure; not plain HTTP).

    One difference xarray shows: a v2 string or bytes array with a non-null ``fill_value`` has
    the elements equal to it masked when xarray reads the v2 store, and not when it reads the
    parsed (v3) store, because xarray reads no ``_FillValue`` attribute of a v3 string array.

    Examples
    --------
    >>> parser = ZarrParser(group="forecast")
    >>> store = parser("s3://bucket/archive.zarr", registry)  # doctest: +SKIP
    >>> ds = xr.open_zarr(store, consolidated=False, zarr_format=3)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        group: str | None = None,
        drop_variables: Iterable[str] | None = None,
        consolidated: bool | None = None,
        zarr_format: Literal[2, 3] | None = None,
        fill_value_attribute: bool = True,
        on_unsupported: Literal["raise", "skip"] = "raise",
    ) -> None:
        if on_unsupported not in ("raise", "skip"):
            raise ValueError(f"on_unsupported must be 'raise' or 'skip', got {on_unsupported!r}")
        if zarr_format not in (None, 2, 3):
            raise ValueError(f"zarr_format must be 2, 3 or None, got {zarr_format!r}")
        self.group = group
        self.drop_variables = frozenset(v.strip("/") for v in drop_variables or ())
        self.consolidated = consolidated
        self.zarr_format = zarr_format
        self.fill_value_attribute = fill_value_attribute
        self.on_unsupported = on_unsupported

    def __repr__(self) -> str:
        return (
            f"ZarrParser(group={self.group!r}, drop_variables={sorted(self.drop_variables)!r}, "
            f"consolidated={self.consolidated!r}, zarr_format={self.zarr_format!r})"
        )

    def __call__(self, url: str, registry: ObjectStoreRegistry) -> ManifestStore:
        """Parse the store at ``url`` and return a :class:`~virtualize.ManifestStore`.

        Parameters
        ----------
        url
            The url (or local path) of the store's root folder.
        registry
            Authorises the store's location; the chunk objects are read through it later.

        Raises
        ------
        UnauthorizedLocationError
            If the store lies under no registered prefix.
        InvalidFileError
            If there is no Zarr group at ``url`` (and ``group``).
        UnsupportedFeatureError
            For an array that can't be referenced exactly (with ``on_unsupported="raise"``).
        """
        return _Parse(self, url, registry).run()


@dataclass
class _Listing:
    """The objects under the opened group: their relative paths and what they look like."""

    paths: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    etags: list[str | None] = field(default_factory=list)
    modified: list[datetime | None] = field(default_factory=list)


@dataclass
class _Node:
    """One node's metadata: an array (v2 ``.zarray`` or v3 ``zarr.json``) or a group."""

    kind: Literal["array", "group"]
    document: dict[str, Any]
    attributes: dict[str, Any]


class _Parse:
    """One parse of one store."""

    def __init__(self, parser: ZarrParser, url: str, registry: ObjectStoreRegistry) -> None:
        self.parser = parser
        self.registry = registry
        store_url = normalize_url(url).rstrip("/") + "/"
        group = (parser.group or "").strip("/")
        self.group_url = store_url + (_quote(store_url, group) + "/" if group else "")
        #: The url errors name: the opened group's folder.
        self.url = self.group_url.rstrip("/")
        # Resolving here refuses an unregistered store before any request.
        self.store, self.prefix = registry.resolve(self.group_url)
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.skipped: dict[str, str] = {}

    # -- reading ------------------------------------------------------------------------------

    def list_objects(self) -> _Listing:
        listing = _Listing()
        start = len(self.prefix)
        try:
            for batch in obstore.list(self.store, prefix=self.prefix or None, chunk_size=10_000):
                for row in batch:
                    listing.paths.append(row["path"][start:])
                    listing.sizes.append(int(row["size"]))
                    listing.etags.append(row.get("e_tag"))
                    listing.modified.append(row.get("last_modified"))
        except Exception as error:
            raise InvalidFileError(
                f"cannot list the store's objects ({error})",
                url=self.url,
                hint=(
                    "ZarrParser needs to list a store to find its chunk objects and their "
                    "sizes; plain HTTP servers can't be listed"
                ),
            ) from error
        return listing

    def get_documents(self, paths: list[str]) -> dict[str, dict[str, Any] | None]:
        """JSON documents at ``paths`` (relative to the group); None for absent ones."""
        # The store was resolved once for the group; each document could still be a symbolic
        # link out of the registered folders, and its contents would end up in attributes.
        for path in paths:
            self.registry.resolve(self.group_url + _quote(self.group_url, path))

        async def fetch_all() -> list[bytes | None]:
            limit = asyncio.Semaphore(_CONCURRENT_GETS)

            async def fetch(path: str) -> bytes | None:
                async with limit:
                    try:
                        result = await obstore.get_async(self.store, self.prefix + path)
                        return bytes(await result.bytes_async())
                    except FileNotFoundError:
                        return None

            return list(await asyncio.gather(*(fetch(p) for p in paths)))

        try:
            contents = sync(fetch_all())
        except Exception as error:
            raise InvalidFileError(
                f"cannot read the store's metadata ({error})", url=self.url
            ) from error
        documents: dict[str, dict[str, Any] | None] = {}
        for path, content in zip(paths, contents, strict=True):
            if content is None:
                documents[path] = None
                continue
            try:
                documents[path] = json.loads(content)
            except ValueError as error:
                raise InvalidFileError(
                    f"the metadata document {path!r} is not JSON ({error})",
                    url=self.url,
                ) from error
        return documents

    # -- metadata -----------------------------------------------------------------------------

    def run(self) -> ManifestStore:
        listing = self.list_objects()
        present = set(listing.paths)
        zarr_format = self.parser.zarr_format or self.detect_format(present)
        nodes = self.v3_nodes(present) if zarr_format == 3 else self.v2_nodes(present)
        root = nodes.get("")
        if root is None or root.kind != "group":
            what = "an array" if root is not None else "no zarr group"
            raise InvalidFileError(
                f"{what} at this location (zarr format {zarr_format})",
                url=self.url,
                hint="Point the url (and group=) at a zarr group",
            )
        arrays = {
            path: node
            for path, node in nodes.items()
            if node.kind == "array" and path not in self.parser.drop_variables
        }
        chunks = self.assign_chunks(listing, arrays)
        group = self.build(listing, nodes, arrays, chunks, zarr_format)
        return ManifestStore(group, registry=self.registry, skipped=self.skipped)

    def detect_format(self, present: set[str]) -> Literal[2, 3]:
        if _V3_META in present:
            return 3
        if present & {_V2_GROUP, _V2_ARRAY, _V2_CONSOLIDATED}:
            return 2
        raise InvalidFileError(
            "no zarr metadata (zarr.json, .zgroup, .zarray or .zmetadata) at this location",
            url=self.url,
            hint="Check the url and group=; the store must be listable",
        )

    def v3_nodes(self, present: set[str]) -> dict[str, _Node]:
        root_document = self.get_documents([_V3_META])[_V3_META] if _V3_META in present else None
        consolidated = None
        if root_document is not None and self.parser.consolidated is not False:
            consolidated = (root_document.get("consolidated_metadata") or {}).get("metadata")
        if consolidated is None and self.parser.consolidated:
            raise InvalidFileError(
                "consolidated=True and the group has no consolidated metadata",
                url=self.url,
                hint="Pass consolidated=None to read each node's zarr.json",
            )
        documents: dict[str, Any] = {}
        if root_document is not None:
            documents[""] = root_document
        if consolidated is not None:
            documents.update({path.strip("/"): doc for path, doc in consolidated.items()})
        else:
            paths = sorted(p for p in present if p.endswith("/" + _V3_META))
            fetched = self.get_documents(paths)
            documents.update(
                {p[: -len(_V3_META) - 1]: d for p, d in fetched.items() if d is not None}
            )
        nodes: dict[str, _Node] = {}
        for path, document in documents.items():
            if not isinstance(document, dict) or document.get("zarr_format") != 3:
                continue
            kind = document.get("node_type")
            if kind not in ("array", "group"):
                continue
            nodes[path] = _Node(kind, document, dict(document.get("attributes") or {}))
        return nodes

    def v2_nodes(self, present: set[str]) -> dict[str, _Node]:
        flat: dict[str, Any] | None = None
        if self.parser.consolidated is not False and _V2_CONSOLIDATED in present:
            consolidated = self.get_documents([_V2_CONSOLIDATED])[_V2_CONSOLIDATED] or {}
            flat = consolidated.get("metadata")
        if flat is None and self.parser.consolidated:
            raise InvalidFileError(
                "consolidated=True and the group has no .zmetadata",
                url=self.url,
                hint="Pass consolidated=None to read each node's .zarray / .zgroup",
            )
        if flat is None:
            paths = sorted(
                p
                for p in present
                if p.endswith(_V2_DOCUMENTS) and posixpath.basename(p) in _V2_DOCUMENTS
            )
            flat = {p: d for p, d in self.get_documents(paths).items() if d is not None}
        nodes: dict[str, _Node] = {}
        for key, document in flat.items():
            name = posixpath.basename(key)
            if name not in (_V2_ARRAY, _V2_GROUP) or not isinstance(document, dict):
                continue
            path = posixpath.dirname(key).strip("/")
            attributes = flat.get(posixpath.join(path, _V2_ATTRS) if path else _V2_ATTRS) or {}
            kind: Literal["array", "group"] = "array" if name == _V2_ARRAY else "group"
            if path in nodes and nodes[path].kind == "array":
                continue  # both .zarray and .zgroup: zarr reads the array
            nodes[path] = _Node(kind, document, dict(attributes))
        return nodes

    # -- chunks -------------------------------------------------------------------------------

    def assign_chunks(self, listing: _Listing, arrays: Mapping[str, _Node]) -> dict[str, list[int]]:
        """For each array, the positions in ``listing`` of the objects below it."""
        owned: dict[str, list[int]] = {path: [] for path in arrays}
        for position, path in enumerate(listing.paths):
            parent = path
            while True:
                cut = parent.rfind("/")
                parent = parent[:cut] if cut >= 0 else ""
                rows = owned.get(parent)
                if rows is not None:
                    rows.append(position)
                    break
                if cut < 0:
                    break
        return owned

    def build(
        self,
        listing: _Listing,
        nodes: Mapping[str, _Node],
        arrays: Mapping[str, _Node],
        chunks: Mapping[str, list[int]],
        zarr_format: int,
    ) -> ManifestGroup:
        root = ManifestGroup(attributes=dict(nodes[""].attributes))
        groups: dict[str, ManifestGroup] = {"": root}

        def group_at(path: str) -> ManifestGroup:
            found = groups.get(path)
            if found is not None:
                return found
            parent = group_at(posixpath.dirname(path))
            node = nodes.get(path)
            attributes = dict(node.attributes) if node is not None else {}
            created = parent.groups[posixpath.basename(path)] = ManifestGroup(attributes=attributes)
            groups[path] = created
            return created

        for path in sorted(p for p, n in nodes.items() if n.kind == "group" and p):
            group_at(path)
        for path in sorted(arrays):
            node = arrays[path]
            try:
                if zarr_format == 3:
                    metadata, source_key = _v3_metadata(node, path, self.url)
                else:
                    metadata, source_key = self.v2_metadata(node, path)
                manifest = self.manifest(path, metadata, source_key, chunks[path], listing)
                array = ManifestArray(metadata, manifest)
            except UnsupportedFeatureError as error:
                if self.parser.on_unsupported == "raise":
                    raise
                self.skipped[path] = error.reason
                warnings.warn(str(error), SkippedVariableWarning, stacklevel=4)
                continue
            group_at(posixpath.dirname(path)).arrays[posixpath.basename(path)] = array
        return root

    def manifest(
        self,
        path: str,
        metadata: ArrayV3Metadata,
        source_key: _KeyDecoder,
        rows: list[int],
        listing: _Listing,
    ) -> ChunkManifest:
        grid = grid_shape(metadata.shape, chunk_grid_of(metadata))
        total = int(np.prod(grid, dtype=np.int64))
        start = len(path) + 1 if path else 0
        kept: list[int] = []
        positions: list[tuple[int, ...]] = []
        decode = source_key.decode
        ndim = len(grid)
        for row in rows:
            index = decode(listing.paths[row][start:])
            if index is not None and (len(index) == ndim or (not ndim and index == (0,))):
                kept.append(row)
                positions.append(index)
        if ndim:
            coords = np.array(positions, dtype=np.int64).reshape(len(positions), ndim)
            inside = np.all((coords >= 0) & (coords < np.array(grid, dtype=np.int64)), axis=1)
            # Objects outside the grid (left by an earlier, larger array) are not chunks.
            coords = coords[inside]
            kept = [row for row, ok in zip(kept, inside.tolist(), strict=True) if ok]
            flat: np.ndarray = np.asarray(np.ravel_multi_index(tuple(coords.T), grid))
        else:
            kept = kept[:1]
            flat = np.zeros(len(kept), dtype=np.intp)
        path_ids = np.full(total, MISSING, dtype=np.uint32)
        lengths = np.zeros(total, dtype=np.uint64)
        path_ids[flat] = np.arange(len(kept), dtype=np.uint32)
        lengths[flat] = np.array([listing.sizes[row] for row in kept], dtype=np.uint64)
        # Chunk keys are digits, "c" and separators: only the array's path needs quoting.
        array_url = self.group_url + (_quote(self.group_url, path) + "/" if path else "")
        urls = [array_url + listing.paths[row][start:] for row in kept]
        etags, modified = listing.etags, listing.modified
        sources: list[SourceInfo | None] = [
            SourceInfo(listing.sizes[row], etags[row], modified[row]) for row in kept
        ]
        return ChunkManifest(
            urls,
            path_ids.reshape(grid),
            np.zeros(grid, dtype=np.uint64),
            lengths.reshape(grid),
            sources=sources,
            validate=False,
        )

    def v2_metadata(self, node: _Node, path: str) -> tuple[ArrayV3Metadata, _KeyDecoder]:
        return _v2_metadata(
            node,
            path,
            self.url,
            fill_value_attribute=self.parser.fill_value_attribute,
        )


# -- chunk keys -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _KeyDecoder:
    """Decodes the chunk keys of one source array: ``c/0/1`` / ``c.0.1`` (v3 default) or
    ``0.1`` / ``0/1`` (v2)."""

    separator: str
    prefix: str  # "c" for the v3 default encoding, "" for v2

    def decode(self, key: str) -> tuple[int, ...] | None:
        """The grid position ``key`` names (unchecked against the grid), or None if ``key``
        is not a chunk key zarr writes."""
        if self.prefix:
            if key == self.prefix:
                return ()
            lead = self.prefix + self.separator
            if not key.startswith(lead):
                return None
            key = key[len(lead) :]
        elif key == "0":
            return (0,)  # v2 key of a 0-d array's chunk, or of the first chunk of a 1-d one
        try:
            index = tuple(map(int, key.split(self.separator)))
        except ValueError:
            return None
        # int() accepts "01", "+1", " 1" and "1_0"; zarr writes none of them.
        if self.separator.join(map(str, index)) != key:
            return None
        return index


def _key_decoder(encoding: Any, *, variable: str, url: str) -> _KeyDecoder:
    if isinstance(encoding, Mapping):
        name = encoding.get("name")
        separator = (encoding.get("configuration") or {}).get("separator")
    else:
        name, separator = encoding, None
    if name == "default":
        return _KeyDecoder(separator or "/", "c")
    if name == "v2":
        return _KeyDecoder(separator or ".", "")
    raise UnsupportedFeatureError(
        f"chunk key encoding {name!r} is not supported",
        url=url,
        variable=variable,
        hint="Only the 'default' and 'v2' chunk key encodings of the zarr v3 spec are read",
    )


# -- metadata conversion --------------------------------------------------------------------


def _v3_metadata(node: _Node, path: str, url: str) -> tuple[ArrayV3Metadata, _KeyDecoder]:
    document = dict(node.document)
    decoder = _key_decoder(
        document.get("chunk_key_encoding") or {"name": "default"}, variable=path, url=url
    )
    grid = document.get("chunk_grid")
    if not isinstance(grid, Mapping) or grid.get("name") not in ("regular", "rectilinear"):
        name = grid.get("name") if isinstance(grid, Mapping) else grid
        raise UnsupportedFeatureError(
            f"chunk grid {name!r} is not supported (only regular and rectilinear grids)",
            url=url,
            variable=path,
        )
    if document.get("storage_transformers"):
        raise UnsupportedFeatureError(
            "storage transformers are not supported", url=url, variable=path
        )
    document["chunk_key_encoding"] = _DEFAULT_KEY_ENCODING
    document.pop("storage_transformers", None)
    try:
        metadata = ArrayV3Metadata.from_dict(document)
    except Exception as error:
        raise UnsupportedFeatureError(
            f"zarr cannot read this array's metadata ({error})",
            url=url,
            variable=path,
            hint="If a codec is missing, install the package that registers it with zarr",
        ) from error
    return metadata, decoder


def _v2_metadata(
    node: _Node, path: str, url: str, *, fill_value_attribute: bool
) -> tuple[ArrayV3Metadata, _KeyDecoder]:
    def refuse(reason: str, hint: str | None = None) -> UnsupportedFeatureError:
        return UnsupportedFeatureError(reason, url=url, variable=path, hint=hint)

    document = dict(node.document)
    attributes = dict(node.attributes)
    try:
        v2 = ArrayV2Metadata.from_dict({**document, "attributes": {}})
    except Exception as error:
        raise refuse(f"zarr cannot read this v2 array's metadata ({error})") from error
    separator = v2.dimension_separator or "."
    decoder = _KeyDecoder(separator, "")
    dtype = v2.dtype
    native = dtype.to_native_dtype()
    filters = list(v2.filters or ())
    serializer: ArrayBytesCodec | None = None
    ids = [f.codec_id for f in filters]
    if native.kind in "OT" or ids[:1] in (["vlen-utf8"], ["vlen-bytes"]):
        if ids[:1] == ["vlen-utf8"]:
            serializer = VLenUTF8Codec()
        elif ids[:1] == ["vlen-bytes"]:
            serializer = VLenBytesCodec()
        else:
            raise refuse(
                f"object arrays encoded with {ids or 'no filter'} are not supported",
                "Only vlen-utf8 and vlen-bytes object arrays have a zarr v3 equivalent",
            )
        filters = filters[1:]
    endian = getattr(dtype, "endianness", None)
    if filters and endian == "big":
        raise refuse("filters on a big-endian array are not supported")
    sequence: list[Any] = [*filters]
    if v2.compressor is not None:
        sequence.append(v2.compressor)
    codecs: list[Codec] = []
    if v2.order == "F" and len(v2.shape) > 1:
        # A chunk in Fortran order holds exactly the bytes of its transpose in C order.
        codecs.append(TransposeCodec(order=tuple(range(len(v2.shape) - 1, -1, -1))))
    for numcodec in sequence:
        codec = _v3_codec(numcodec, native.itemsize, refuse)
        if isinstance(codec, ArrayArrayCodec):
            if serializer is not None:
                raise refuse(f"filter {numcodec.codec_id!r} after a bytes codec has no v3 form")
            codecs.append(codec)
        elif isinstance(codec, ArrayBytesCodec):
            if serializer is not None:
                raise refuse(f"codec {numcodec.codec_id!r} after a bytes codec has no v3 form")
            serializer = codec
            codecs.append(codec)
        else:
            if serializer is None:
                serializer = BytesCodec(endian=endian)
                codecs.append(serializer)
            codecs.append(codec)
    if serializer is None:
        serializer = BytesCodec(endian=endian)
        codecs.append(serializer)
    elif serializer not in codecs:
        index = next(
            (i for i, c in enumerate(codecs) if isinstance(c, BytesBytesCodec)), len(codecs)
        )
        codecs.insert(index, serializer)
    dimension_names = attributes.pop(_DIMENSION_KEY, None)
    if dimension_names is not None and (
        not isinstance(dimension_names, list) or len(dimension_names) != len(v2.shape)
    ):
        dimension_names = None
    fill_value: Any = v2.fill_value
    if fill_value is not None and fill_value_attribute and "_FillValue" not in attributes:
        encoded = _encoded_fill_value(fill_value, native)
        if encoded is not None:
            attributes["_FillValue"] = encoded
    if fill_value is None:
        fill_value = dtype.default_scalar()
    try:
        metadata = ArrayV3Metadata(
            shape=v2.shape,
            data_type=dtype,
            chunk_grid={"name": "regular", "configuration": {"chunk_shape": v2.chunks}},
            chunk_key_encoding=_DEFAULT_KEY_ENCODING,
            fill_value=fill_value,
            codecs=codecs,
            attributes=attributes,
            dimension_names=dimension_names,
        )
    except Exception as error:
        raise refuse(f"no zarr v3 form of this v2 array ({error})") from error
    return metadata, decoder


def _encoded_fill_value(value: Any, dtype: np.dtype[Any]) -> Any:
    """The v2 fill value as xarray's ``_FillValue`` attribute, or None if it has none.

    Only numbers and booleans: xarray reads no ``_FillValue`` attribute of a zarr v3 string
    or bytes array (it raises), so those arrays keep their fill value in the metadata only.
    """
    if dtype.kind not in "biufc":
        return None
    try:
        return encode_fill_value(value, dtype)
    except (TypeError, ValueError):
        return None


def _v3_codec(numcodec: Any, itemsize: int, refuse: Any) -> Codec:
    """The zarr v3 codec that decodes what the numcodecs codec ``numcodec`` encoded."""
    from zarr.codecs.blosc import BloscShuffle
    from zarr.errors import UnknownCodecError
    from zarr.registry import get_codec_class

    config = dict(numcodec.get_config())
    codec_id = str(config.pop("id"))
    if codec_id == "blosc":
        shuffle = int(config.get("shuffle", 1))
        if shuffle == -1:  # AUTOSHUFFLE: what numcodecs picks when it encodes
            shuffle = 2 if itemsize == 1 else 1
        return BloscCodec(
            typesize=max(itemsize, 1),
            cname=config.get("cname", "lz4"),
            clevel=int(config.get("clevel", 5)),
            shuffle=BloscShuffle.from_int(shuffle),
            blocksize=int(config.get("blocksize", 0)),
        )
    if codec_id == "zstd" and set(config) <= {"level", "checksum"}:
        return ZstdCodec(level=int(config.get("level", 0)), checksum=bool(config.get("checksum")))
    if codec_id == "gzip":
        return GzipCodec(level=int(config.get("level", 5)))
    try:
        codec_class = get_codec_class(f"numcodecs.{codec_id}")
    except (UnknownCodecError, KeyError, ValueError) as error:
        raise refuse(
            f"the numcodecs codec {codec_id!r} has no zarr v3 codec",
            "Install a package that registers 'numcodecs." + codec_id + "' with zarr",
        ) from error
    return codec_class.from_dict({"name": f"numcodecs.{codec_id}", "configuration": config})


def _quote(base_url: str, key: str) -> str:
    """``key`` as it goes after ``base_url``: percent-encoded in ``file://`` urls."""
    return quote(key, safe=_URL_SAFE) if base_url.startswith("file://") else key
