"""What the HDF5 parser's two readers share: netCDF's attribute conventions, dimension names
for axes without scales, contiguous-data chunking and the zarr metadata of an array.

:mod:`virtualize.parsers.hdf` reads a file through h5py; :mod:`virtualize.parsers.hdf_fast`
reads the common netCDF-4 layout straight from the bytes. Both build their arrays here, so a
file gives the same arrays whichever reader took it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from zarr.core.metadata.v3 import ArrayV3Metadata

from virtualize.errors import InvalidFileError
from virtualize.manifests import INLINE, MISSING, ChunkManifest, ManifestArray, SourceInfo
from virtualize.parsers.attributes import (
    PACKING_ATTRIBUTES,
    encode_fill_value,
    packing_codec,
    to_json_value,
)
from virtualize.parsers.hdf_index import ChunkIndex
from virtualize.parsers.hdf_types import TypePlan, zarr_data_type

#: Attributes netCDF and HDF5 keep for themselves; netCDF readers never show them.
HIDDEN_ATTRIBUTES = frozenset(
    {
        "DIMENSION_LIST",
        "_Netcdf4Dimid",
        "_Netcdf4Coordinates",
        "_nc3_strict",
        "_NCProperties",
        "_SuperblockVersion",
        "_IsNetcdf4",
    }
)
SCALE_ATTRIBUTES = frozenset({"CLASS", "NAME"})
REFERENCE_ATTRIBUTES = frozenset({"DIMENSION_LIST", "REFERENCE_LIST"})
#: Listed but not read: bookkeeping no reader shows (each h5py attribute read costs ~0.1 ms,
#: which matters at thousands of files) or object references only the dimension API needs.
UNREAD_ATTRIBUTES = HIDDEN_ATTRIBUTES | REFERENCE_ATTRIBUTES
DIMENSION_ONLY = b"This is a netCDF dimension but not a netCDF variable"
DEFAULT_MAX_CHUNK_BYTES = 16 * 1024 * 1024


class StoredLayout:
    """How a dataset's bytes are stored: shape, chunks and the codecs that decode them.

    Its zarr metadata is built only when chunks must be encoded (inline or rewritten ones):
    building ``ArrayV3Metadata`` costs more than parsing a small dataset's chunk index.
    """

    __slots__ = ("_metadata", "chunks", "codecs", "data_type", "fill_value", "shape")

    def __init__(
        self,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
        data_type: Any,
        fill_value: Any,
        codecs: list[Any],
    ) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.chunks = tuple(int(c) for c in chunks)
        self.data_type = data_type
        self.fill_value = fill_value
        self.codecs = codecs
        self._metadata: ArrayV3Metadata | None = None

    def metadata(self) -> ArrayV3Metadata:
        if self._metadata is None:
            self._metadata = array_metadata(
                self.shape, self.chunks, self.data_type, self.fill_value, self.codecs
            )
        return self._metadata


def array_metadata(
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    data_type: Any,
    fill_value: Any,
    codecs: list[Any],
    attributes: dict[str, Any] | None = None,
    dimension_names: tuple[str, ...] | None = None,
) -> ArrayV3Metadata:
    """Zarr v3 metadata, shared between arrays that describe themselves identically.

    The files of an archive repeat the same variables; building ``ArrayV3Metadata`` (codec
    validation and all) costs more than reading a small dataset's chunk index, and the
    objects are immutable, so equal descriptions share one.
    """
    try:
        key = json.dumps(
            [
                shape,
                chunks,
                repr(data_type),
                repr(fill_value),
                [codec.to_dict() for codec in codecs],
                attributes,
                dimension_names,
            ],
            default=_exact_key,
        )
    except (TypeError, ValueError):
        return _build_metadata(
            shape, chunks, data_type, fill_value, codecs, attributes, dimension_names
        )
    cached = _METADATA_CACHE.get(key)
    if cached is None:
        if len(_METADATA_CACHE) >= _METADATA_CACHE_SIZE:
            _METADATA_CACHE.clear()
        cached = _METADATA_CACHE[key] = _build_metadata(
            shape, chunks, data_type, fill_value, codecs, attributes, dimension_names
        )
    return cached


def _exact_key(value: Any) -> Any:
    """A cache-key form of a value JSON lacks; arrays in full (their repr abbreviates)."""
    if isinstance(value, np.ndarray):
        return [str(value.dtype), value.tolist()]
    return repr(value)


_METADATA_CACHE: dict[str, ArrayV3Metadata] = {}


_METADATA_CACHE_SIZE = 1024


def _build_metadata(
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    data_type: Any,
    fill_value: Any,
    codecs: list[Any],
    attributes: dict[str, Any] | None,
    dimension_names: tuple[str, ...] | None,
) -> ArrayV3Metadata:
    return ArrayV3Metadata(
        shape=shape,
        data_type=data_type,
        chunk_grid={"name": "regular", "configuration": {"chunk_shape": chunks}},
        chunk_key_encoding={"name": "default", "configuration": {"separator": "/"}},
        fill_value=fill_value,
        codecs=codecs,
        attributes=attributes or {},
        dimension_names=dimension_names,
    )


def chunk_counts(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(-(-n // c) for n, c in zip(shape, chunks, strict=True))


def contiguous_chunks(shape: tuple[int, ...], itemsize: int, max_bytes: int) -> tuple[int, ...]:
    """Rows per chunk for a contiguous dataset: a divisor of the first axis, so every chunk is
    a whole byte range, close to ``max_bytes`` (one chunk if no divisor is reasonable)."""
    whole = tuple(max(n, 1) for n in shape)
    if not shape or shape[0] <= 1:
        return whole
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
    total = row_bytes * shape[0]
    if total <= max_bytes or row_bytes == 0:
        return whole
    best = 1
    limit = max(max_bytes // max(row_bytes, 1), 1)
    for rows in range(min(limit, shape[0]), 0, -1):
        if shape[0] % rows == 0:
            best = rows
            break
    if best * row_bytes < max_bytes // 16:
        return whole
    return (best, *whole[1:])


class PhonyDimensions:
    """Names for axes without a dimension scale, the way netCDF and h5netcdf (``sort``) do:
    within a group, an axis reuses a phony dimension of its length not yet used by the same
    variable, or gets a new one."""

    def __init__(self) -> None:
        self._by_length: dict[int, list[str]] = {}
        self._count = 0

    def fill(self, names: list[str | None], shape: tuple[int, ...]) -> tuple[str, ...]:
        used: set[str] = set()
        result = []
        for name, length in zip(names, shape, strict=True):
            if name is None:
                candidates = [n for n in self._by_length.get(length, []) if n not in used]
                if candidates:
                    name = candidates[0]
                else:
                    name = f"phony_dim_{self._count}"
                    self._count += 1
                    self._by_length.setdefault(length, []).append(name)
            used.add(name)
            result.append(name)
        return tuple(result)


def json_attributes(
    raw: dict[str, Any],
    *,
    is_scale: bool,
    dtype: np.dtype[Any] | None = None,
    skip: Iterable[str] = (),
) -> dict[str, Any]:
    """Attributes in the JSON form xarray reads from zarr (``_FillValue`` encoded), without
    the ones netCDF readers never show."""
    result: dict[str, Any] = {}
    skipped = frozenset(skip)
    for key, value in raw.items():
        if key in HIDDEN_ATTRIBUTES or key in skipped or key in REFERENCE_ATTRIBUTES:
            continue
        if is_scale and key in SCALE_ATTRIBUTES:
            continue
        if key == "_FillValue" and dtype is not None:
            encoded = encode_fill_value(value, dtype)
        else:
            encoded = to_json_value(value)
        if encoded is not None:
            result[key] = encoded
    return result


def assemble_array(
    raw: dict[str, Any],
    is_scale: bool,
    plan: TypePlan,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    filters: list[Any],
    dims: tuple[str, ...],
    manifest: ChunkManifest,
) -> ManifestArray:
    """The array of a dataset: its codecs (CF packing first, where it needs a codec to stay
    exact), its attributes and its manifest."""
    codecs = [plan.serializer, *filters]
    data_type = plan.data_type
    fill_value = plan.fill_value
    packing = packing_codec(
        {k: raw[k] for k in PACKING_ATTRIBUTES if raw.get(k) is not None}, plan.stored
    )
    if packing is not None:
        codec, decoded = packing
        codecs = [codec, *codecs]
        data_type = zarr_data_type(decoded)
        fill_value = codec.decode_array(np.array([fill_value], dtype=plan.stored))[0].item()
    attributes = json_attributes(
        raw,
        is_scale=is_scale,
        dtype=plan.stored,
        skip=PACKING_ATTRIBUTES if packing is not None else (),
    )
    attributes.update(plan.attributes)
    metadata = array_metadata(shape, chunks, data_type, fill_value, codecs, attributes, dims)
    return ManifestArray(metadata, manifest)


def chunked_manifest(
    url: str,
    source: SourceInfo,
    name: str,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    read_index: Callable[[], ChunkIndex],
    rewrite_masked: Callable[[np.ndarray], dict[int, bytes]],
) -> ChunkManifest:
    """The manifest of a chunked dataset from its chunk index.

    ``rewrite_masked`` gets the grid positions of chunks stored with some filters skipped
    and returns them re-encoded, keyed by flat grid index, to be held inline.
    """
    grid = chunk_counts(shape, chunks)
    path_ids = np.full(grid, MISSING, dtype=np.uint32)
    offsets = np.zeros(grid, dtype=np.uint64)
    lengths = np.zeros(grid, dtype=np.uint64)
    if not all(n > 0 for n in shape):
        return ChunkManifest([url], path_ids, offsets, lengths, sources=[source])
    index = read_index()
    chunk_array = np.array(chunks, dtype=np.uint64)
    if (index.coordinates % chunk_array).any():
        raise InvalidFileError(
            "its chunk index lists a chunk that does not start on a chunk boundary",
            url=url,
            variable=name,
            hint="The file is corrupt; rewrite it, or drop the variable",
        )
    grid_positions = index.coordinates // chunk_array
    # a shrunk dataset may keep chunks beyond its extent; they are not part of it
    inside = (grid_positions < np.array(grid, dtype=np.uint64)).all(axis=1)
    masked = inside & (index.filter_masks != 0)
    referenced = inside & ~masked
    positions = tuple(grid_positions[referenced].T.astype(np.intp))
    path_ids[positions] = 0
    offsets[positions] = index.addresses[referenced]
    lengths[positions] = index.sizes[referenced]
    inline: dict[int, bytes] = {}
    if masked.any():
        inline = rewrite_masked(grid_positions[masked])
        for flat, data in inline.items():
            position = np.unravel_index(flat, grid)
            path_ids[position] = INLINE
            lengths[position] = len(data)
    return ChunkManifest(
        [url], path_ids, offsets, lengths, inline=inline, sources=[source], validate=False
    )


def contiguous_manifest(
    url: str,
    source: SourceInfo,
    offset: int | None,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: np.dtype[Any],
) -> ChunkManifest:
    """The manifest of a contiguous dataset whose bytes start at file offset ``offset``
    (None: never written), cut into ``chunks``."""
    grid = chunk_counts(shape, chunks)
    if offset is None or any(n == 0 for n in shape):
        return ChunkManifest.empty(grid)
    chunk_bytes = int(np.prod(chunks, dtype=np.int64)) * dtype.itemsize
    count = int(np.prod(grid, dtype=np.int64))
    offsets = np.uint64(offset) + np.arange(count, dtype=np.uint64) * np.uint64(chunk_bytes)
    lengths = np.full(count, chunk_bytes, dtype=np.uint64)
    return ChunkManifest.from_single_url(
        url, offsets.reshape(grid), lengths.reshape(grid), source=source
    )
