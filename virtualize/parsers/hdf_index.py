"""Reading HDF5 chunk indexes straight into numpy arrays.

h5py lists chunks through a Python callback, one object per chunk: about 1.5 s for 10^6
chunks before any other work. The version-1 B-tree that netCDF-C and h5py's default file
format use for chunked datasets (data layout message version 3) is simple enough to read
directly: this module finds the dataset's layout message in its object header, then reads the
B-tree one level at a time — every node of a level in one batched range request — and parses
all of a level's entries with one structured numpy view.

Anything else (layout version 4 indexes: fixed and extensible arrays, version-2 B-trees,
single-chunk and implicit indexes) returns ``None`` so the caller falls back to h5py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import obstore

__all__ = ["ChunkIndex", "IndexFormatError", "read_v1_btree", "read_v1_btree_chunk_index"]

_LAYOUT_MESSAGE = 0x0008
_CONTINUATION_MESSAGE = 0x0010
_UNDEFINED = 0xFFFFFFFFFFFFFFFF
_MAX_HEADER_BLOCKS = 4096


class IndexFormatError(Exception):
    """The bytes are not what the HDF5 format says they should be; use h5py instead."""


@dataclass(frozen=True)
class ChunkIndex:
    """Every allocated chunk of a dataset, as columns.

    ``coordinates`` are element offsets of each chunk's first element, shape ``(n, ndim)``;
    ``addresses`` are absolute byte offsets in the file.
    """

    coordinates: npt.NDArray[np.uint64]
    addresses: npt.NDArray[np.uint64]
    sizes: npt.NDArray[np.uint64]
    filter_masks: npt.NDArray[np.uint32]


class _Reader:
    """Byte ranges of one object, with the HDF5 base address (user block) applied."""

    def __init__(
        self,
        store: Any,
        path: str,
        base: int,
        file_size: int,
        read_cached: Callable[[int, int], bytes] | None = None,
    ) -> None:
        self.store = store
        self.path = path
        self.base = base
        self.file_size = file_size
        self.read_cached = read_cached

    def read(self, address: int, length: int) -> bytes:
        return self.read_many([address], [length])[0]

    def read_many(self, addresses: list[int], lengths: list[int]) -> list[Any]:
        starts = [self.base + a for a in addresses]
        for start, length in zip(starts, lengths, strict=True):
            if start < 0 or start + length > self.file_size:
                raise IndexFormatError(f"range {start}+{length} lies outside the file")
        # A few small ranges (object headers, a small tree) come from the block cache the
        # metadata reader already filled; a level of a large tree is one batched request.
        if self.read_cached is not None and len(starts) <= 8 and sum(lengths) <= 1 << 16:
            return [
                self.read_cached(start, length)
                for start, length in zip(starts, lengths, strict=True)
            ]
        return list(obstore.get_ranges(self.store, self.path, starts=starts, lengths=lengths))


def read_v1_btree_chunk_index(
    store: Any,
    path: str,
    *,
    header_address: int,
    base_address: int,
    file_size: int,
    ndim: int,
    offset_size: int = 8,
    length_size: int = 8,
    read_cached: Callable[[int, int], bytes] | None = None,
) -> ChunkIndex | None:
    """Read a chunked dataset's version-1 B-tree chunk index, or None if it has another index.

    Parameters
    ----------
    store, path
        Where the file is (an obstore store and the path in it).
    header_address
        The dataset's object header address (relative to the base address).
    base_address
        Where the HDF5 superblock starts (the user block size).
    file_size
        The file's size in bytes; nothing is read beyond it.
    ndim
        The dataset's rank.
    offset_size, length_size
        The file's "size of offsets" and "size of lengths" (both 8 in practice).
    read_cached
        Reads ``(file offset, length)`` from a cache; used for a few small ranges at a time.

    Raises
    ------
    IndexFormatError
        If the bytes do not parse as the HDF5 format says.
    """
    if offset_size != 8 or length_size != 8:
        return None
    reader = _Reader(store, path, base_address, file_size, read_cached)
    layout = _find_layout_message(reader, header_address)
    if layout is None or len(layout) < 3 or layout[0] != 3 or layout[1] != 2:
        return None
    dimensionality = layout[2]
    if dimensionality != ndim + 1:
        raise IndexFormatError(f"layout has {dimensionality} dimensions for a rank-{ndim} dataset")
    (btree_address,) = struct.unpack_from("<Q", layout, 3)
    if btree_address == _UNDEFINED:
        return _empty(ndim)
    return _read_tree(reader, btree_address, ndim)


def read_v1_btree(
    store: Any,
    path: str,
    *,
    btree_address: int | None,
    base_address: int,
    file_size: int,
    ndim: int,
    read_cached: Callable[[int, int], bytes] | None = None,
) -> ChunkIndex:
    """Read the version-1 chunk B-tree whose root is at ``btree_address`` (relative to the
    base address; None for a dataset with no chunks written).

    The other parameters are those of :func:`read_v1_btree_chunk_index`.

    Raises
    ------
    IndexFormatError
        If the bytes do not parse as the HDF5 format says.
    """
    if btree_address is None:
        return _empty(ndim)
    reader = _Reader(store, path, base_address, file_size, read_cached)
    return _read_tree(reader, btree_address, ndim)


def _read_tree(reader: _Reader, btree_address: int, ndim: int) -> ChunkIndex:
    index = _walk_btree(reader, btree_address, ndim)
    base_address = reader.base
    # B-tree addresses are relative to the superblock; manifests need file offsets.
    return ChunkIndex(
        index.coordinates,
        index.addresses + np.uint64(base_address),
        index.sizes,
        index.filter_masks,
    )


def _empty(ndim: int) -> ChunkIndex:
    return ChunkIndex(
        np.zeros((0, ndim), dtype=np.uint64),
        np.zeros(0, dtype=np.uint64),
        np.zeros(0, dtype=np.uint64),
        np.zeros(0, dtype=np.uint32),
    )


# -- object headers ---------------------------------------------------------------------------


def _find_layout_message(reader: _Reader, address: int) -> bytes | None:
    prefix = reader.read(address, 16)
    if prefix[:4] == b"OHDR":
        return _find_in_v2_header(reader, address)
    if prefix[0] == 1:
        return _find_in_v1_header(reader, address, prefix)
    raise IndexFormatError(f"unknown object header version at {address}")


def _find_in_v1_header(reader: _Reader, address: int, prefix: bytes) -> bytes | None:
    (header_size,) = struct.unpack_from("<I", prefix, 8)
    blocks = [(address + 16, header_size)]
    seen = 0
    while blocks:
        start, length = blocks.pop(0)
        seen += 1
        if seen > _MAX_HEADER_BLOCKS:
            raise IndexFormatError("too many object header continuation blocks")
        data = reader.read(start, length)
        position = 0
        while position + 8 <= len(data):
            kind, size = struct.unpack_from("<HH", data, position)
            body = data[position + 8 : position + 8 + size]
            if kind == _LAYOUT_MESSAGE:
                return bytes(body)
            if kind == _CONTINUATION_MESSAGE:
                blocks.append(struct.unpack_from("<QQ", body, 0))
            position += 8 + size
    return None


def _find_in_v2_header(reader: _Reader, address: int) -> bytes | None:
    head = reader.read(address, 32)
    flags = head[5]
    position = 6
    if flags & 0x20:
        position += 16
    if flags & 0x10:
        position += 4
    size_bytes = 1 << (flags & 0x03)
    chunk_size = int.from_bytes(head[position : position + size_bytes], "little")
    position += size_bytes
    with_order = bool(flags & 0x04)
    # the first chunk's messages, then its 4-byte checksum
    blocks = [(address + position, chunk_size, False)]
    seen = 0
    while blocks:
        start, length, signed = blocks.pop(0)
        seen += 1
        if seen > _MAX_HEADER_BLOCKS:
            raise IndexFormatError("too many object header continuation blocks")
        data = reader.read(start, length)
        if signed:
            if data[:4] != b"OCHK":
                raise IndexFormatError("object header continuation block without OCHK")
            data = data[4 : len(data) - 4]
        cursor = 0
        header = 6 if with_order else 4
        while cursor + header <= len(data):
            kind = data[cursor]
            (size,) = struct.unpack_from("<H", data, cursor + 1)
            body = data[cursor + header : cursor + header + size]
            if kind == _LAYOUT_MESSAGE:
                return bytes(body)
            if kind == _CONTINUATION_MESSAGE:
                target, target_length = struct.unpack_from("<QQ", body, 0)
                blocks.append((target, target_length, True))
            cursor += header + size
    return None


# -- the version-1 B-tree ---------------------------------------------------------------------


def _walk_btree(reader: _Reader, root: int, ndim: int) -> ChunkIndex:
    key_dtype = np.dtype([("size", "<u4"), ("mask", "<u4"), ("offsets", "<u8", (ndim + 1,))])
    entry_dtype = np.dtype([("key", key_dtype), ("child", "<u8")])
    header_dtype = np.dtype(
        [
            ("signature", "S4"),
            ("type", "u1"),
            ("level", "u1"),
            ("used", "<u2"),
            ("left", "<u8"),
            ("right", "<u8"),
        ]
    )
    level_addresses = [root]
    expected_level: int | None = None
    visited = 0
    while True:
        headers = np.frombuffer(
            b"".join(
                reader.read_many(level_addresses, [header_dtype.itemsize] * len(level_addresses))
            ),
            dtype=header_dtype,
        )
        if not (headers["signature"] == b"TREE").all() or not (headers["type"] == 1).all():
            raise IndexFormatError("a chunk B-tree node lacks its TREE signature or type")
        levels = np.unique(headers["level"])
        if levels.size != 1 or (expected_level is not None and int(levels[0]) != expected_level):
            raise IndexFormatError("chunk B-tree nodes of one depth disagree on their level")
        level = int(levels[0])
        used = headers["used"].astype(np.int64)
        visited += len(level_addresses)
        if visited > 10_000_000:
            raise IndexFormatError("the chunk B-tree is implausibly large")
        entries = np.frombuffer(
            b"".join(
                reader.read_many(
                    [a + header_dtype.itemsize for a in level_addresses],
                    [int(n) * entry_dtype.itemsize for n in used],
                )
            ),
            dtype=entry_dtype,
        )
        if level == 0:
            keys = entries["key"]
            return ChunkIndex(
                coordinates=np.ascontiguousarray(keys["offsets"][:, :ndim]),
                addresses=entries["child"].astype(np.uint64, copy=True),
                sizes=keys["size"].astype(np.uint64),
                filter_masks=keys["mask"].astype(np.uint32, copy=True),
            )
        level_addresses = [int(a) for a in entries["child"]]
        expected_level = level - 1
