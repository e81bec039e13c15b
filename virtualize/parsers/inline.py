"""Holding values inline: encoded chunk by chunk with zarr's own codec pipeline.

Some bytes can't be referenced (compact datasets live in an object header, variable-length
strings on a heap, a chunk stored with a filter skipped doesn't decode with the array's
codecs). Their values are read once at parse time and encoded with the array's codecs, so
readers decode them exactly like referenced chunks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.dtype import get_data_type_from_native_dtype
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.storage import MemoryStore

from virtualize.manifests import INLINE, MISSING, ChunkManifest, ManifestArray

__all__ = ["default_fill_value", "encode_chunks", "inline_array", "inline_manifest"]


def encode_chunks(
    metadata: ArrayV3Metadata,
    values: Any,
    *,
    chunks: Iterable[tuple[int, ...]] | None = None,
) -> dict[tuple[int, ...], bytes]:
    """Encode ``values`` (the whole array) into chunk bytes with ``metadata``'s codecs.

    Parameters
    ----------
    metadata
        The array's metadata: shape, chunk grid, data type, codecs and fill value.
    values
        The array's values: an array, or anything sliced like one (only the selected
        chunks' regions are read).
    chunks
        Grid positions to encode; all by default.

    Returns
    -------
    dict
        Encoded bytes per grid position. Chunks zarr leaves unwritten (every element equal to
        the fill value) are absent, and read back as the fill value.
    """
    plain = _plain_bytes_encoder(metadata)
    if plain is not None:
        return plain(values, chunks)
    prototype = default_buffer_prototype()
    store = MemoryStore(store_dict=dict(metadata.to_buffer_dict(prototype)))
    array = zarr.open_array(store, mode="r+", zarr_format=3)
    chunk_shape = array.chunks
    if chunks is None:
        array[...] = values
    else:
        for position in chunks:
            region = tuple(
                slice(i * c, min((i + 1) * c, n))
                for i, c, n in zip(position, chunk_shape, array.shape, strict=True)
            )
            array[region] = values[region]
    encoded: dict[tuple[int, ...], bytes] = {}
    for key, buffer in store._store_dict.items():
        if key == "c" or key.startswith("c/"):
            parts = key.split("/")[1:]
            encoded[tuple(int(p) for p in parts)] = buffer.to_bytes()
    return encoded


def _plain_bytes_encoder(metadata: ArrayV3Metadata) -> Any:
    """For arrays whose only codec is ``bytes`` and whose type is a plain numpy one, encode
    with numpy directly: the same bytes as zarr's pipeline without its async round trips."""
    codecs = list(metadata.codecs)
    if len(codecs) != 1 or not isinstance(codecs[0], BytesCodec):
        return None
    native = np.dtype(metadata.data_type.to_native_dtype())
    if native.kind not in "biufcS" or native.fields is not None:
        return None
    endian = codecs[0].endian
    stored = native.newbyteorder(">" if endian == "big" else "<")
    chunk_shape = tuple(int(c) for c in metadata.chunk_grid.chunk_shape)  # type: ignore[union-attr]
    shape = tuple(int(n) for n in metadata.shape)
    grid = tuple(-(-n // c) for n, c in zip(shape, chunk_shape, strict=True))
    fill = metadata.fill_value

    def encode(
        values: Any, chunks: Iterable[tuple[int, ...]] | None
    ) -> dict[tuple[int, ...], bytes]:
        positions = list(np.ndindex(*grid)) if chunks is None else list(chunks)
        encoded = {}
        for position in positions:
            region = tuple(
                slice(i * c, min((i + 1) * c, n))
                for i, c, n in zip(position, chunk_shape, shape, strict=True)
            )
            block = np.full(chunk_shape, fill, dtype=native)
            part = np.asarray(values[region], dtype=native)
            block[tuple(slice(0, r.stop - r.start) for r in region)] = part
            encoded[position] = block.astype(stored, copy=False).tobytes()
        return encoded

    return encode


def inline_manifest(
    grid_shape: tuple[int, ...], encoded: dict[tuple[int, ...], bytes]
) -> ChunkManifest:
    """A manifest whose chunks are all inline (or missing where ``encoded`` has none)."""
    path_ids = np.full(grid_shape, MISSING, dtype=np.uint32)
    lengths = np.zeros(grid_shape, dtype=np.uint64)
    inline: dict[int, bytes] = {}
    for position, data in encoded.items():
        path_ids[position] = INLINE
        lengths[position] = len(data)
        flat = int(np.ravel_multi_index(position, grid_shape)) if grid_shape else 0
        inline[flat] = data
    return ChunkManifest(
        [], path_ids, np.zeros(grid_shape, dtype=np.uint64), lengths, inline=inline
    )


def inline_array(
    values: Any, dims: tuple[str, ...], attributes: dict[str, Any] | None = None
) -> ManifestArray:
    """An array whose values are known at parse time (a computed coordinate, a small table),
    held inline in one chunk, little-endian.

    Parameters
    ----------
    values
        The array's values (any shape, including a scalar).
    dims
        Its dimension names.
    attributes
        Its attributes.
    """
    from virtualize.parsers.hdf_common import array_metadata, chunk_counts

    values = np.asarray(values)
    dtype = values.dtype.newbyteorder("=") if values.dtype.kind not in "SUb" else values.dtype
    values = values.astype(dtype, copy=False)
    shape = values.shape
    chunks = tuple(max(n, 1) for n in shape)
    metadata = array_metadata(
        shape,
        chunks,
        get_data_type_from_native_dtype(dtype),
        default_fill_value(dtype),
        [BytesCodec(endian="little" if dtype.itemsize > 1 else None)],
        attributes or {},
        dims,
    )
    grid = chunk_counts(shape, chunks)
    if any(n == 0 for n in shape):
        return ManifestArray(metadata, ChunkManifest.empty(grid))
    return ManifestArray(metadata, inline_manifest(grid, encode_chunks(metadata, values)))


def default_fill_value(dtype: np.dtype[Any]) -> Any:
    """The fill value of an array whose every chunk is present: zero of its kind."""
    if dtype.kind == "b":
        return False
    if dtype.kind == "U":
        return ""
    return 0
