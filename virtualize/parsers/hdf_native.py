"""Reading HDF5 metadata directly, without h5py, for the common case.

h5py costs milliseconds per small netCDF4 file in metadata calls alone (file open, group
lookups, ~75 µs per attribute read). This module parses the HDF5 file format itself with
``struct`` and numpy: superblock, object headers, groups (symbol tables, compact and dense
links), datasets' dataspace, datatype, layout, filter pipeline and fill value, and attributes
(compact and dense, numbers, strings, netCDF's ``DIMENSION_LIST``).

Its scope is deliberately narrow: whatever it returns equals what h5py reports for the same
object, and for anything it does not cover it raises :class:`NativeUnsupported`, after which
the caller reads the whole file with h5py instead. Refusing is always safe.

In scope: superblocks 0-3 with 8-byte offsets and lengths, at 0 or after a user block; object
headers 1 and 2 with continuations; old-style groups (symbol tables) and new-style ones
(compact or dense links) of hard links; datasets of little- or big-endian integers and IEEE
floats with scalar or simple dataspaces, contiguous or chunked (version-1 B-tree) layouts
(layout messages 1-3), filter pipelines 1 and 2, fill value messages old and new; attributes
compact or dense (including 'huge' heap objects) of numbers, fixed- and variable-length
strings, empty (null dataspace) ones, and netCDF's ``DIMENSION_LIST`` / ``REFERENCE_LIST``.

Refused: soft, external and user-defined links; committed datatypes and shared messages;
compact and virtual layouts and the chunk indexes of layout version 4; external storage;
datasets of any other type (strings, compounds, enums, references, ...) or with a null
dataspace; attributes of other types; filtered fractal heaps; anything malformed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from virtualize.codecs.hdf5_filters import HDF5Filter

__all__ = ["NativeDataset", "NativeFile", "NativeGroup", "NativeUnsupported", "read_metadata"]

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_UNDEFINED = 0xFFFF_FFFF_FFFF_FFFF
_BLOCK_BITS = 16
_MAX_CACHED_BLOCKS = 256
_MAX_OBJECTS = 200_000
_MAX_HEADER_BLOCKS = 4096
_MAX_NODES = 1_000_000

# object header message types
_NIL = 0x0000
_DATASPACE = 0x0001
_LINK_INFO = 0x0002
_DATATYPE = 0x0003
_FILL_OLD = 0x0004
_FILL = 0x0005
_LINK = 0x0006
_EXTERNAL = 0x0007
_LAYOUT = 0x0008
_PIPELINE = 0x000B
_ATTRIBUTE = 0x000C
_CONTINUATION = 0x0010
_SYMBOL_TABLE = 0x0011
_DRIVER_INFO = 0x0014
_ATTRIBUTE_INFO = 0x0015
_KNOWN_MESSAGES = frozenset(range(0x0018))
_PLAIN_MESSAGES = _KNOWN_MESSAGES - {_NIL, _CONTINUATION}
_SHARED = 0x02
_FAIL_IF_UNKNOWN = 0x08 | 0x80

# fill value write times (H5D_fill_time_t)
_FILL_TIME_NEVER = 1
_FILL_TIME_IFSET = 2

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_TWO_U64 = struct.Struct("<QQ")
_THREE_U64 = struct.Struct("<QQQ")
_V1_MESSAGE = struct.Struct("<HHB")
_V2_MESSAGE = struct.Struct("<BHB")
_V2_MESSAGE_ORDERED = struct.Struct("<BHBH")
_LOCAL_HEAP = struct.Struct("<4sB3xQQQ")
_V1_NODE = struct.Struct("<4sBBHQQ")
_SYMBOL = struct.Struct("<QQI")
_FRACTAL_HEAP = struct.Struct("<4sBHHBI12QHQQHHQH")
_V2_BTREE = struct.Struct("<4sBBIHHBBQHQ")
_GLOBAL_OBJECT = struct.Struct("<HH4xQ")
_VLEN = struct.Struct("<IQI")
_ATTRIBUTE_HEAD = struct.Struct("<BBHHH")

#: The bit layout (sign, exponent location and size, mantissa location and size, bias) of
#: the IEEE floats numpy has, by size: anything else would need HDF5's conversion.
_IEEE = {
    2: (15, 10, 5, 0, 10, 15),
    4: (31, 23, 8, 0, 23, 127),
    8: (63, 52, 11, 0, 52, 1023),
}
_CLASS_NAMES = {
    2: "time",
    3: "string",
    4: "bitfield",
    5: "opaque",
    6: "compound",
    7: "reference",
    8: "enum",
    9: "variable-length",
    10: "array",
}
_NULLTERM, _NULLPAD, _SPACEPAD = 0, 1, 2
_ENCODINGS = {0: "ascii", 1: "utf-8"}


class NativeUnsupported(Exception):
    """The file uses something this reader does not cover; read it with h5py."""


@dataclass(frozen=True, slots=True)
class NativeGroup:
    """A group: its attributes and its hard-linked members in h5py's iteration order.

    ``address`` is the object header's address relative to the base address, as
    ``h5py.h5g.get_objinfo(group.id).objno`` gives it.

    Attributes are keyed and ordered as ``list(node.attrs)`` and valued as ``node.attrs[key]``
    (numbers as numpy scalars in native byte order, arrays in the file's byte order, strings
    as h5py returns them, ``h5py.Empty`` for null dataspaces), except two that netCDF's
    dimension scales use: ``DIMENSION_LIST`` is a tuple with, for each axis, a tuple of the
    attached scales' object header addresses, and ``REFERENCE_LIST`` is None (not decoded).
    """

    path: str
    address: int
    attributes: dict[str, Any]
    members: dict[str, NativeGroup | NativeDataset]


@dataclass(frozen=True, slots=True)
class NativeDataset:
    """A dataset's metadata as h5py reports it.

    ``address`` and ``btree_address`` (the root of a chunked dataset's version-1 B-tree, None
    until a chunk is written) are relative to the base address; ``data_address`` (a contiguous
    dataset's bytes, None until allocated) is an absolute file offset, like
    ``h5py.h5d.DatasetID.get_offset()``. ``fill_value`` and ``fill_defined`` are what
    ``virtualize.parsers.hdf._fill_value`` computes with h5py; attributes are as for
    :class:`NativeGroup`.
    """

    path: str
    address: int
    shape: tuple[int, ...]
    maxshape: tuple[int | None, ...]
    dtype: np.dtype[Any]
    layout: Literal["chunked", "contiguous"]
    chunks: tuple[int, ...] | None
    btree_address: int | None
    data_address: int | None
    data_size: int
    filters: tuple[HDF5Filter, ...]
    fill_value: Any
    fill_defined: bool
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NativeFile:
    """A file's superblock position (the user block size) and its root group."""

    base_address: int
    root: NativeGroup


def read_metadata(read_at: Callable[[int, int], bytes], *, file_size: int) -> NativeFile:
    """Read an HDF5 file's groups, datasets and attributes without h5py.

    Parameters
    ----------
    read_at
        ``read_at(offset, size)`` returns ``size`` bytes at absolute file ``offset``.
    file_size
        The file's size in bytes; nothing beyond it is read.

    Returns
    -------
    NativeFile
        The root group with every member reachable by hard links.

    Raises
    ------
    NativeUnsupported
        If the file uses anything outside this reader's scope or its bytes do not parse as
        the HDF5 format says; read the file with h5py instead.
    """
    source = _Source(read_at, file_size)
    try:
        base, root_address = _superblock(source)
        source.base = base
        root = _Reader(source).root(root_address)
    except (struct.error, IndexError, ValueError, OverflowError, KeyError) as error:
        raise NativeUnsupported(f"malformed metadata ({type(error).__name__}: {error})") from error
    return NativeFile(base, root)


# -- reading bytes ----------------------------------------------------------------------------


class _Source:
    """Bounds-checked reads through a small cache of aligned blocks."""

    __slots__ = ("_blocks", "_read_at", "base", "size")

    def __init__(self, read_at: Callable[[int, int], bytes], size: int) -> None:
        self._read_at = read_at
        self._blocks: dict[int, memoryview] = {}
        self.size = size
        self.base = 0

    def read(self, offset: int, length: int) -> memoryview:
        """``length`` bytes at absolute file ``offset``."""
        end = offset + length
        if offset < 0 or length < 0 or end > self.size:
            raise NativeUnsupported(f"bytes {offset}..{end} lie outside the file")
        index = offset >> _BLOCK_BITS
        if length == 0 or (end - 1) >> _BLOCK_BITS != index:
            return self._fetch(offset, length)
        block = self._blocks.get(index)
        if block is None:
            if len(self._blocks) >= _MAX_CACHED_BLOCKS:
                self._blocks.clear()
            start = index << _BLOCK_BITS
            block = self._blocks[index] = self._fetch(
                start, min(1 << _BLOCK_BITS, self.size - start)
            )
        start = offset - (index << _BLOCK_BITS)
        return block[start : start + length]

    def at(self, address: int, length: int) -> memoryview:
        """``length`` bytes at ``address`` relative to the base address."""
        if address == _UNDEFINED:
            raise NativeUnsupported("an address the structure needs is undefined")
        return self.read(self.base + address, length)

    def _fetch(self, offset: int, length: int) -> memoryview:
        data = self._read_at(offset, length) if length else b""
        if len(data) != length:
            raise NativeUnsupported(f"short read at {offset}: {len(data)} of {length} bytes")
        return memoryview(data)


def _signature(view: memoryview, expected: bytes, what: str) -> None:
    if view[: len(expected)] != expected:
        raise NativeUnsupported(f"{what} lacks its {expected!r} signature")


def _defined(address: int) -> int | None:
    return None if address == _UNDEFINED else address


# -- superblock -------------------------------------------------------------------------------


def _superblock(source: _Source) -> tuple[int, int]:
    """The base address and the root group's object header address."""
    position = _find_signature(source)
    head = source.read(position, 12)
    version = head[8]
    if version in (0, 1):
        return _superblock_v0(source, position, version)
    if version in (2, 3):
        return _superblock_v2(source, position)
    raise NativeUnsupported(f"superblock version {version}")


def _find_signature(source: _Source) -> int:
    # where HDF5 looks: offset 0, then every power of two from 512 below the file size
    candidates = [0]
    position = 512
    while position + 8 <= source.size:
        candidates.append(position)
        position *= 2
    for candidate in candidates:
        if candidate + 8 <= source.size and source.read(candidate, 8) == _SIGNATURE:
            return candidate
    raise NativeUnsupported("no HDF5 superblock signature")


def _superblock_v0(source: _Source, position: int, version: int) -> tuple[int, int]:
    head = source.read(position, 16)
    if head[13] != 8 or head[14] != 8:
        raise NativeUnsupported("sizes of offsets or lengths other than 8")
    fields = position + (24 if version == 0 else 28)
    base, _free, eof, driver = struct.unpack_from("<4Q", source.read(fields, 32))
    root_header = _U64.unpack_from(source.read(fields + 32 + 8, 8))[0]
    return _checked_base(source, position, base, eof, driver), root_header


def _superblock_v2(source: _Source, position: int) -> tuple[int, int]:
    head = source.read(position, 48)
    if head[9] != 8 or head[10] != 8:
        raise NativeUnsupported("sizes of offsets or lengths other than 8")
    base, extension, eof, root_header = struct.unpack_from("<4Q", head, 12)
    base = _checked_base(source, position, base, eof, _UNDEFINED)
    if extension != _UNDEFINED:
        source.base = base
        types = {kind for kind, _, _, _ in _header_messages(source, extension)[0]}
        if _DRIVER_INFO in types:
            raise NativeUnsupported("the superblock extension names a file driver")
    return base, root_header


def _checked_base(source: _Source, position: int, base: int, eof: int, driver: int) -> int:
    if base != position:
        raise NativeUnsupported(f"base address {base} differs from the superblock's {position}")
    if driver != _UNDEFINED:
        raise NativeUnsupported("the file has a driver information block")
    if eof == _UNDEFINED or eof > source.size:  # the one absolute address
        raise NativeUnsupported("the file is shorter than its superblock says (truncated)")
    return base


# -- object headers ---------------------------------------------------------------------------

#: (type, flags, creation order, body) of one header message
_Message = tuple[int, int, int, memoryview]


def _header_messages(source: _Source, address: int) -> tuple[list[_Message], int]:
    """An object header's messages (continuations followed) and its flags (0 for v1)."""
    prefix = source.at(address, 16)
    if prefix[:4] == b"OHDR":
        return _v2_messages(source, address)
    if prefix[0] == 1:
        return _v1_messages(source, address, _U32.unpack_from(prefix, 8)[0]), 0
    raise NativeUnsupported(f"no object header at {address}")


def _v1_messages(source: _Source, address: int, size: int) -> list[_Message]:
    messages: list[_Message] = []
    blocks = [(address + 16, size)]
    seen: set[int] = set()
    while blocks:
        start, length = blocks.pop(0)
        if start in seen or len(seen) >= _MAX_HEADER_BLOCKS:
            raise NativeUnsupported("object header continuation blocks loop")
        seen.add(start)
        data = source.at(start, length)
        position = 0
        while position + 8 <= length:
            kind, body_size, flags = _V1_MESSAGE.unpack_from(data, position)
            position += 8
            if position + body_size > length:
                raise NativeUnsupported("an object header message overruns its block")
            body = data[position : position + body_size]
            position += body_size
            _collect(messages, blocks, kind, flags, 0, body)
    return messages


def _v2_messages(source: _Source, address: int) -> tuple[list[_Message], int]:
    head = source.at(address, 6)
    if head[4] != 2:
        raise NativeUnsupported(f"object header version {head[4]}")
    flags = head[5]
    position = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
    width = 1 << (flags & 0x03)
    size = int.from_bytes(source.at(address + position, width), "little")
    ordered = bool(flags & 0x04)
    messages: list[_Message] = []
    blocks = [(address + position + width, size)]
    seen: set[int] = set()
    first = True
    while blocks:
        start, length = blocks.pop(0)
        if start in seen or len(seen) >= _MAX_HEADER_BLOCKS:
            raise NativeUnsupported("object header continuation blocks loop")
        seen.add(start)
        if first:
            data = source.at(start, length)
            first = False
        else:
            block = source.at(start, length)
            _signature(block, b"OCHK", "an object header continuation block")
            data = block[4 : length - 4]
        _v2_block(data, ordered, messages, blocks)
    return messages, flags


def _v2_block(
    data: memoryview, ordered: bool, messages: list[_Message], blocks: list[tuple[int, int]]
) -> None:
    header = _V2_MESSAGE_ORDERED if ordered else _V2_MESSAGE
    step = header.size
    length = len(data)
    position = 0
    while position + step <= length:
        if ordered:
            kind, body_size, flags, order = header.unpack_from(data, position)
        else:
            kind, body_size, flags = header.unpack_from(data, position)
            order = 0
        position += step
        end = position + body_size
        if end > length:
            raise NativeUnsupported("an object header message overruns its block")
        if kind in _PLAIN_MESSAGES and not flags & _SHARED:
            messages.append((kind, flags, order, data[position:end]))
        else:
            _collect(messages, blocks, kind, flags, order, data[position:end])
        position = end


def _collect(
    messages: list[_Message],
    blocks: list[tuple[int, int]],
    kind: int,
    flags: int,
    order: int,
    body: memoryview,
) -> None:
    if kind == _NIL:
        return
    if kind not in _KNOWN_MESSAGES:
        if flags & _FAIL_IF_UNKNOWN:
            raise NativeUnsupported(f"unknown object header message type {kind:#x}")
        return
    if flags & _SHARED:
        raise NativeUnsupported(f"a shared object header message (type {kind:#x})")
    if kind == _CONTINUATION:
        blocks.append(_TWO_U64.unpack_from(body))
    else:
        messages.append((kind, flags, order, body))


def _by_type(messages: list[_Message]) -> dict[int, list[_Message]]:
    grouped: dict[int, list[_Message]] = {}
    for message in messages:
        grouped.setdefault(message[0], []).append(message)
    return grouped


def _only(grouped: dict[int, list[_Message]], kind: int, what: str) -> memoryview | None:
    found = grouped.get(kind)
    if not found:
        return None
    if len(found) > 1:
        raise NativeUnsupported(f"more than one {what} message")
    return found[0][3]


#: Attributes repeat a few datatype and dataspace encodings, across files too; their parsed
#: forms are immutable, so each encoding is parsed once per process.
_DATATYPES: dict[bytes, _Type] = {}
_DATASPACES: dict[bytes, _Shape] = {}
_PIPELINES: dict[bytes, tuple[HDF5Filter, ...]] = {}
_MAX_CACHED = 4096


def _cached[T](
    cache: dict[bytes, T], parse: Callable[[memoryview], T], body: memoryview | None
) -> T:
    """``parse(body)``, remembered by the encoded bytes (parsed forms are immutable)."""
    if body is None:
        raise NativeUnsupported("a required object header message is missing")
    key = bytes(body)
    try:
        return cache[key]
    except KeyError:
        pass
    if len(cache) > _MAX_CACHED:
        cache.clear()
    found = cache[key] = parse(body)
    return found


# -- the walk ---------------------------------------------------------------------------------


class _Reader:
    """One walk over a file: heaps are read once and shared by every object that uses them."""

    def __init__(self, source: _Source) -> None:
        self.source = source
        self.objects = 0
        self.global_heaps: dict[int, dict[int, memoryview]] = {}
        self.fractal_heaps: dict[int, _FractalHeap] = {}

    def root(self, address: int) -> NativeGroup:
        member = self.node("/", address, frozenset())
        if not isinstance(member, NativeGroup):
            raise NativeUnsupported("the root object is not a group")
        return member

    def node(
        self, path: str, address: int, ancestors: frozenset[int]
    ) -> NativeGroup | NativeDataset:
        """The group or dataset whose object header is at ``address``, members and all."""
        self.objects += 1
        if self.objects > _MAX_OBJECTS:
            raise NativeUnsupported("implausibly many objects")
        if address in ancestors:
            raise NativeUnsupported(f"{path}: links back to one of its own parent groups")
        try:
            messages, header_flags = _header_messages(self.source, address)
            grouped = _by_type(messages)
            attributes = self.attributes(grouped, bool(header_flags & 0x04))
            if _SYMBOL_TABLE not in grouped and _LINK_INFO not in grouped:
                if _DATATYPE in grouped and _DATASPACE in grouped:
                    return _dataset(path, address, grouped, attributes, self.source.base)
                raise NativeUnsupported("neither a group nor a dataset (a committed datatype?)")
            links = self.links(grouped)
        except NativeUnsupported as error:
            raise NativeUnsupported(f"{path}: {error}") from None
        inside = ancestors | {address}
        prefix = path.rstrip("/") + "/"
        members = {name: self.node(prefix + name, child, inside) for name, child in links}
        return NativeGroup(path, address, attributes, members)

    # -- links --------------------------------------------------------------------------------

    def links(self, grouped: dict[int, list[_Message]]) -> list[tuple[str, int]]:
        """A group's hard links, as (name, object header address), in h5py's order."""
        table = _only(grouped, _SYMBOL_TABLE, "symbol table")
        if table is not None:
            btree, heap = _TWO_U64.unpack_from(table)
            entries = [(name, address, 0) for name, address in self.symbol_table(btree, heap)]
            return _ordered(entries, by_creation=False)
        info = _only(grouped, _LINK_INFO, "link info")
        assert info is not None
        if info[0] != 0:
            raise NativeUnsupported(f"link info message version {info[0]}")
        tracked = bool(info[1] & 0x01)
        position = 10 if tracked else 2
        heap, name_index = _TWO_U64.unpack_from(info, position)
        if heap != _UNDEFINED:
            if grouped.get(_LINK):
                raise NativeUnsupported("a group with both compact and dense links")
            records = self.btree_records(name_index, 5)
            fractal = self.fractal_heap(heap)
            entries = [_link(fractal.object(bytes(r[4:]))) for r in records]
        else:
            entries = [_link(message[3]) for message in grouped.get(_LINK, [])]
        return _ordered(entries, by_creation=tracked)

    def symbol_table(self, btree: int, heap_address: int) -> list[tuple[bytes, int]]:
        heap = self.source.at(heap_address, _LOCAL_HEAP.size)
        signature, version, data_size, _free, data_address = _LOCAL_HEAP.unpack_from(heap)
        if signature != b"HEAP" or version != 0:
            raise NativeUnsupported("a group's local heap is malformed")
        names = bytes(self.source.at(data_address, data_size))
        symbols: list[tuple[bytes, int]] = []
        for node in self.group_btree_leaves(btree):
            symbols.extend(self.symbol_node(node, names))
        return symbols

    def group_btree_leaves(self, root: int) -> list[int]:
        """Addresses of the symbol table nodes a group's version-1 B-tree points to."""
        nodes: list[int] = [root]
        expected: int | None = None
        seen: set[int] = set()
        while True:
            children: list[int] = []
            levels: set[int] = set()
            for address in nodes:
                if address in seen or len(seen) > _MAX_NODES:
                    raise NativeUnsupported("a group B-tree loops")
                seen.add(address)
                head = self.source.at(address, _V1_NODE.size)
                signature, kind, level, used, _left, _right = _V1_NODE.unpack_from(head)
                if signature != b"TREE" or kind != 0 or expected not in (None, level):
                    raise NativeUnsupported("a group B-tree node is malformed")
                levels.add(level)
                # keys and children interleave: key 0, child 0, key 1, ..., key n
                body = self.source.at(address + _V1_NODE.size, used * 16 + 8)
                children.extend(struct.unpack_from(f"<{2 * used}Q", body)[1::2])
            if len(levels) != 1:
                raise NativeUnsupported("a group B-tree's nodes disagree on their level")
            level = levels.pop()
            if level == 0:
                return children
            nodes, expected = children, level - 1

    def symbol_node(self, address: int, names: bytes) -> list[tuple[bytes, int]]:
        head = self.source.at(address, 8)
        if head[:4] != b"SNOD" or head[4] != 1:
            raise NativeUnsupported("a symbol table node is malformed")
        count = _U16.unpack_from(head, 6)[0]
        body = self.source.at(address + 8, count * 40)
        symbols = []
        for index in range(count):
            name_offset, header, cache = _SYMBOL.unpack_from(body, index * 40)
            if cache == 2:
                raise NativeUnsupported("a soft link (symbol table entry)")
            symbols.append((_heap_name(names, name_offset), header))
        return symbols

    # -- attributes ---------------------------------------------------------------------------

    def attributes(self, grouped: dict[int, list[_Message]], tracked: bool) -> dict[str, Any]:
        """An object's attributes in h5py's order (creation order if tracked, else name)."""
        compact = grouped.get(_ATTRIBUTE, [])
        info = _only(grouped, _ATTRIBUTE_INFO, "attribute info")
        raw: list[tuple[int, memoryview]]
        if info is not None and _dense_heap(info) is not None:
            if compact:
                raise NativeUnsupported("an object with both compact and dense attributes")
            raw = self.dense_attributes(info)
        else:
            raw = [(message[2], message[3]) for message in compact]
        parsed = [(_attribute_parts(body), order) for order, body in raw]
        if tracked:
            orders = [order for _, order in parsed]
            if len(set(orders)) != len(orders):
                raise NativeUnsupported("attributes share a creation order")
            parsed.sort(key=lambda item: item[1])
        else:
            parsed.sort(key=lambda item: item[0][0])
        result: dict[str, Any] = {}
        for (name, kind, space, data), _order in parsed:
            key = _decode_name(name)
            if key in result:
                raise NativeUnsupported(f"two attributes named {key!r}")
            try:
                result[key] = self.attribute_value(key, kind, space, data)
            except NativeUnsupported as error:
                raise NativeUnsupported(f"attribute {key!r}: {error}") from None
        return result

    def dense_attributes(self, info: memoryview) -> list[tuple[int, memoryview]]:
        heap_address, name_index = _dense_heap(info) or (0, 0)
        heap = self.fractal_heap(heap_address)
        found = []
        for record in self.btree_records(name_index, 8):
            if record[8] & _SHARED:
                raise NativeUnsupported("a shared attribute message (dense storage)")
            order = _U32.unpack_from(record, 9)[0]
            found.append((order, heap.object(bytes(record[:8]))))
        return found

    def attribute_value(
        self, name: str, kind: memoryview, space: memoryview, data: memoryview
    ) -> Any:
        if name == "REFERENCE_LIST":
            return None
        if name == "DIMENSION_LIST":
            return self.dimension_list(kind, space, data)
        category, dtype, dims, count, padding = _attribute_plan(bytes(kind), bytes(space))
        if category == "number":
            if count * dtype.itemsize > len(data):
                raise NativeUnsupported("an attribute's data is shorter than its dataspace")
            array = np.frombuffer(data, dtype, count)
            return array[0] if not dims else array.reshape(dims).copy()
        if category == "string":
            return _fixed_strings(dtype, padding, dims, count, data)
        if category == "variable-length string":
            return self.vlen_strings(dtype, dims, count, data)
        import h5py

        return h5py.Empty(dtype)

    def vlen_strings(
        self, dtype: np.dtype[Any], dims: tuple[int, ...], count: int, data: memoryview
    ) -> Any:
        if count * _VLEN.size > len(data):
            raise NativeUnsupported("an attribute's data is shorter than its dataspace")
        values = []
        for index in range(count):
            raw = self.vlen_bytes(data, index, 1)
            if b"\x00" in raw:
                raise NativeUnsupported("a variable-length string with a NUL byte")
            values.append(raw.decode("utf-8", "surrogateescape"))
        if not dims:
            return values[0]
        return np.array(values, dtype=dtype).reshape(dims)

    def vlen_bytes(self, data: memoryview, index: int, element_size: int) -> bytes:
        length, collection, object_index = _VLEN.unpack_from(data, index * _VLEN.size)
        if length == 0:
            return b""
        stored = self.global_object(collection, object_index)
        if length * element_size > len(stored):
            raise NativeUnsupported("a variable-length value overruns its global heap object")
        return bytes(stored[: length * element_size])

    def dimension_list(self, kind: memoryview, space: memoryview, data: memoryview) -> Any:
        """netCDF's dimension scales of each axis: object header addresses, from a dataspace
        of one variable-length list of object references per axis."""
        shape = _cached(_DATASPACES, _dataspace, space)
        parsed = _cached(_DATATYPES, _datatype, kind)
        if parsed[0] != "object reference" or shape is None or len(shape[0]) != 1:
            raise NativeUnsupported("a DIMENSION_LIST that is not a list of object references")
        count = shape[0][0]
        if count * _VLEN.size > len(data):
            raise NativeUnsupported("DIMENSION_LIST's data is shorter than its dataspace")
        axes = []
        for index in range(count):
            raw = self.vlen_bytes(data, index, 8)
            axes.append(struct.unpack(f"<{len(raw) // 8}Q", raw))
        return tuple(axes)

    # -- heaps and B-trees --------------------------------------------------------------------

    def global_object(self, collection: int, index: int) -> memoryview:
        objects = self.global_heaps.get(collection)
        if objects is None:
            objects = self.global_heaps[collection] = _global_heap(self.source, collection)
        found = objects.get(index)
        if found is None:
            raise NativeUnsupported(f"no object {index} in the global heap at {collection}")
        return found

    def fractal_heap(self, address: int) -> _FractalHeap:
        heap = self.fractal_heaps.get(address)
        if heap is None:
            heap = self.fractal_heaps[address] = _FractalHeap(self.source, address)
        return heap

    def btree_records(self, address: int, kind: int) -> list[memoryview]:
        return _V2BTree(self.source, address, kind).records()


def _heap_name(names: bytes, offset: int) -> bytes:
    end = names.find(b"\x00", offset)
    if offset >= len(names) or end < 0:
        raise NativeUnsupported("a link name lies outside its local heap")
    return names[offset:end]


def _decode_name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NativeUnsupported(f"a name that is not UTF-8: {raw!r}") from None


def _ordered(entries: list[tuple[bytes, int, int]], *, by_creation: bool) -> list[tuple[str, int]]:
    """Links in h5py's iteration order: creation order when the group tracks it, else by
    name (``strcmp``, which is byte order)."""
    if by_creation:
        orders = [order for _, _, order in entries]
        if len(set(orders)) != len(orders):
            raise NativeUnsupported("links share a creation order")
        entries = sorted(entries, key=lambda entry: entry[2])
    else:
        entries = sorted(entries, key=lambda entry: entry[0])
    result: list[tuple[str, int]] = []
    names: set[str] = set()
    for raw, address, _ in entries:
        name = _decode_name(raw)
        if name in names or not name or "/" in name:
            raise NativeUnsupported(f"an unusable link name {name!r}")
        names.add(name)
        result.append((name, address))
    return result


def _link(body: memoryview) -> tuple[bytes, int, int]:
    """A link message's (name, object header address, creation order); hard links only."""
    if body[0] != 1:
        raise NativeUnsupported(f"link message version {body[0]}")
    flags = body[1]
    position = 2
    if flags & 0x08:
        if body[position] != 0:
            raise NativeUnsupported(f"a link of type {body[position]} (soft or external)")
        position += 1
    order = 0
    if flags & 0x04:
        order = _U64.unpack_from(body, position)[0]
        position += 8
    if flags & 0x10:
        position += 1
    width = 1 << (flags & 0x03)
    length = int.from_bytes(body[position : position + width], "little")
    position += width
    if position + length + 8 > len(body):
        raise NativeUnsupported("a link message overruns its body")
    name = bytes(body[position : position + length])
    address = _U64.unpack_from(body, position + length)[0]
    return name, address, order


def _dense_heap(info: memoryview) -> tuple[int, int] | None:
    """The attribute info message's fractal heap and name index, if attributes are dense."""
    if info[0] != 0:
        raise NativeUnsupported(f"attribute info message version {info[0]}")
    position = 4 if info[1] & 0x01 else 2
    heap, name_index = _TWO_U64.unpack_from(info, position)
    return None if heap == _UNDEFINED else (heap, name_index)


# -- fractal heaps, version-2 B-trees, global heaps -------------------------------------------


class _FractalHeap:
    """A fractal heap's managed objects, found through its doubling table."""

    def __init__(self, source: _Source, address: int) -> None:
        self.source = source
        fields = _FRACTAL_HEAP.unpack_from(source.at(address, _FRACTAL_HEAP.size))
        signature, version, self.id_length, filter_length, _flags, max_managed = fields[:6]
        if signature != b"FRHP" or version != 0:
            raise NativeUnsupported("a fractal heap header is malformed")
        if filter_length:
            raise NativeUnsupported("a fractal heap with I/O filters")
        self.width, self.start_size, max_direct, max_heap_bits = fields[18:22]
        self.root, self.root_rows = fields[23], fields[24]
        self.huge_btree = fields[7]
        self.huge_objects: dict[int, tuple[int, int]] | None = None
        if not (_power_of_two(self.width) and _power_of_two(self.start_size)):
            raise NativeUnsupported("a fractal heap's doubling table is malformed")
        if not _power_of_two(max_direct) or max_direct < self.start_size or max_heap_bits > 64:
            raise NativeUnsupported("a fractal heap's doubling table is malformed")
        self.offset_size = (max_heap_bits + 7) // 8
        direct_offset_size = ((max_direct.bit_length() - 1) + 7) // 8
        self.length_size = min(direct_offset_size, (max_managed.bit_length() - 1) // 8 + 1)
        start_bits = self.start_size.bit_length() - 1
        self.first_row_bits = start_bits + self.width.bit_length() - 1
        self.max_direct_rows = (max_direct.bit_length() - 1) - start_bits + 2

    def row_size(self, row: int) -> int:
        return self.start_size if row == 0 else self.start_size << (row - 1)

    def row_offset(self, row: int) -> int:
        return 0 if row == 0 else (self.start_size * self.width) << (row - 1)

    def object(self, heap_id: bytes) -> memoryview:
        """The bytes of the object a heap ID names."""
        if len(heap_id) < 2:
            raise NativeUnsupported("a fractal heap ID is too short")
        kind = heap_id[0] >> 4
        if heap_id[0] >> 6:
            raise NativeUnsupported("a fractal heap ID of an unknown version")
        if kind == 2:
            return _tiny(heap_id, self.id_length)
        if kind == 1:
            return self.huge(heap_id)
        if kind != 0:
            raise NativeUnsupported("a fractal heap ID of an unknown type")
        cut = 1 + self.offset_size
        offset = int.from_bytes(heap_id[1:cut], "little")
        length = int.from_bytes(heap_id[cut : cut + self.length_size], "little")
        block, block_offset, block_size = self.direct_block(offset)
        if offset - block_offset + length > block_size:
            raise NativeUnsupported("a fractal heap object overruns its direct block")
        return self.source.at(block + offset - block_offset, length)

    def huge(self, heap_id: bytes) -> memoryview:
        """A 'huge' object (larger than the heap's blocks), stored on its own: where is in
        its heap ID when that is long enough, else in a version-2 B-tree keyed by ID."""
        if self.id_length - 1 >= 16:
            address, length = _TWO_U64.unpack_from(heap_id, 1)
            return self.source.at(address, length)
        if self.huge_objects is None:
            records = _V2BTree(self.source, self.huge_btree, 1).records()
            self.huge_objects = {
                key: (address, length)
                for address, length, key in (_THREE_U64.unpack_from(r) for r in records)
            }
        found = self.huge_objects.get(int.from_bytes(heap_id[1 : self.id_length], "little"))
        if found is None:
            raise NativeUnsupported("a 'huge' fractal heap object missing from its index")
        return self.source.at(*found)

    def direct_block(self, offset: int) -> tuple[int, int, int]:
        """The direct block holding heap ``offset``: address, heap offset and size."""
        if self.root_rows == 0:
            return self.root, 0, self.start_size
        address, block_offset, rows = self.root, 0, self.root_rows
        for _ in range(64):
            row, column = self.lookup(offset - block_offset)
            if row >= rows:
                raise NativeUnsupported("a fractal heap offset beyond its indirect block")
            entry = self.indirect_entry(address, row * self.width + column)
            block_offset += self.row_offset(row) + column * self.row_size(row)
            size = self.row_size(row)
            if row < self.max_direct_rows:
                return entry, block_offset, size
            address = entry
            rows = (size.bit_length() - 1) - self.first_row_bits + 1
        raise NativeUnsupported("a fractal heap nests too deeply")

    def lookup(self, relative: int) -> tuple[int, int]:
        if relative < self.start_size * self.width:
            return 0, relative // self.start_size
        high = relative.bit_length() - 1
        row = high - self.first_row_bits + 1
        return row, (relative - (1 << high)) // self.row_size(row)

    def indirect_entry(self, address: int, index: int) -> int:
        prefix = 5 + 8 + self.offset_size
        head = self.source.at(address, prefix)
        _signature(head, b"FHIB", "a fractal heap indirect block")
        entry = _U64.unpack_from(self.source.at(address + prefix + 8 * index, 8))[0]
        if entry == _UNDEFINED:
            raise NativeUnsupported("a fractal heap object in an unallocated block")
        return entry


def _tiny(heap_id: bytes, id_length: int) -> memoryview:
    if id_length <= 18:
        length = (heap_id[0] & 0x0F) + 1
        start = 1
    else:
        length = ((heap_id[0] & 0x0F) << 8 | heap_id[1]) + 1
        start = 2
    if start + length > len(heap_id):
        raise NativeUnsupported("a tiny fractal heap object overruns its ID")
    return memoryview(heap_id[start : start + length])


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


class _V2BTree:
    """The records of a version-2 B-tree, in key order."""

    def __init__(self, source: _Source, address: int, kind: int) -> None:
        self.source = source
        fields = _V2_BTREE.unpack_from(source.at(address, _V2_BTREE.size))
        signature, version, tree_kind, node_size, record_size, depth = fields[:6]
        self.root, self.root_count, self.total = fields[8], fields[9], fields[10]
        if signature != b"BTHD" or version != 0 or tree_kind != kind:
            raise NativeUnsupported(f"a version-2 B-tree (type {kind}) header is malformed")
        if record_size == 0 or node_size <= 10 + record_size or depth > 32:
            raise NativeUnsupported("a version-2 B-tree's node sizes are implausible")
        self.kind, self.record_size, self.depth = kind, record_size, depth
        leaf_max = (node_size - 10) // record_size
        self.count_size = _encoded_size(leaf_max)
        cumulative, self.total_sizes = leaf_max, [0]
        for _ in range(depth):
            pointer = 8 + self.count_size + self.total_sizes[-1]
            most = (node_size - 10 - pointer) // (record_size + pointer)
            if most <= 0:
                raise NativeUnsupported("a version-2 B-tree's node sizes are implausible")
            cumulative = (most + 1) * cumulative + most
            self.total_sizes.append(_encoded_size(cumulative))
        self.nodes = 0

    def records(self) -> list[memoryview]:
        found: list[memoryview] = []
        if self.total == 0 or self.root == _UNDEFINED:
            return found
        self.collect(self.root, self.root_count, self.depth, found)
        if len(found) != self.total:
            raise NativeUnsupported("a version-2 B-tree holds other than its stated records")
        return found

    def collect(self, address: int, count: int, depth: int, found: list[memoryview]) -> None:
        self.nodes += 1
        if self.nodes > _MAX_NODES or len(found) + count > self.total:
            raise NativeUnsupported("a version-2 B-tree is implausibly large")
        size = self.record_size
        records = 6 + count * size
        if depth == 0:
            node = self.source.at(address, records)
            self.check(node, b"BTLF")
            found.extend(node[6 + i * size : 6 + (i + 1) * size] for i in range(count))
            return
        pointer = 8 + self.count_size + self.total_sizes[depth - 1]
        node = self.source.at(address, records + (count + 1) * pointer)
        self.check(node, b"BTIN")
        for index in range(count + 1):
            at = records + index * pointer
            child = _U64.unpack_from(node, at)[0]
            child_count = int.from_bytes(node[at + 8 : at + 8 + self.count_size], "little")
            self.collect(child, child_count, depth - 1, found)
            if index < count:
                found.append(node[6 + index * size : 6 + (index + 1) * size])

    def check(self, node: memoryview, signature: bytes) -> None:
        if node[:4] != signature or node[4] != 0 or node[5] != self.kind:
            raise NativeUnsupported("a version-2 B-tree node is malformed")


def _encoded_size(value: int) -> int:
    """Bytes HDF5 uses to store counts up to ``value`` (``H5VM_limit_enc_size``)."""
    return (value.bit_length() - 1) // 8 + 1


def _global_heap(source: _Source, address: int) -> dict[int, memoryview]:
    head = source.at(address, 16)
    if head[:4] != b"GCOL" or head[4] != 1:
        raise NativeUnsupported("a global heap collection is malformed")
    size = _U64.unpack_from(head, 8)[0]
    if size < 16:
        raise NativeUnsupported("a global heap collection is implausibly small")
    data = source.at(address, size)
    objects: dict[int, memoryview] = {}
    position = 16
    while position + 16 <= size:
        index, _references, length = _GLOBAL_OBJECT.unpack_from(data, position)
        if index == 0:
            break
        start = position + 16
        if start + length > size:
            raise NativeUnsupported("a global heap object overruns its collection")
        objects[index] = data[start : start + length]
        position = start + (length + 7) // 8 * 8
    return objects


# -- datatypes and dataspaces -----------------------------------------------------------------

#: ("number", dtype) | ("string", dtype, padding) | ("variable-length string", dtype)
#: | ("object reference",)
_Type = tuple[Any, ...]
#: (dims, maxdims) of a scalar or simple dataspace; None for a null one
_Shape = tuple[tuple[int, ...], tuple[int | None, ...]] | None


def _datatype(body: memoryview) -> _Type:
    if len(body) < 8:
        raise NativeUnsupported("a datatype message is truncated")
    kind, version = body[0] & 0x0F, body[0] >> 4
    bits = body[1] | body[2] << 8 | body[3] << 16
    size = _U32.unpack_from(body, 4)[0]
    if version not in (1, 2, 3):
        raise NativeUnsupported(f"datatype version {version}")
    if kind == 0:
        return ("number", _integer(body, bits, size))
    if kind == 1:
        return ("number", _float(body, bits, size))
    if kind == 3:
        return _string(bits & 0x0F, bits >> 4 & 0x0F, size)
    if kind == 9:
        return _vlen(body, bits)
    name = _CLASS_NAMES.get(kind, f"class {kind}")
    raise NativeUnsupported(f"a datatype of an unsupported class ({name})")


def _integer(body: memoryview, bits: int, size: int) -> np.dtype[Any]:
    offset, precision = struct.unpack_from("<HH", body, 8)
    if size not in (1, 2, 4, 8) or offset != 0 or precision != 8 * size:
        raise NativeUnsupported(f"an integer type of {size} bytes, {precision} bits at {offset}")
    order = ">" if bits & 0x01 else "<"
    return np.dtype(f"{order}{'i' if bits & 0x08 else 'u'}{size}")


def _float(body: memoryview, bits: int, size: int) -> np.dtype[Any]:
    if size not in _IEEE or len(body) < 20:
        raise NativeUnsupported(f"a floating-point type of {size} bytes")
    offset, precision, exponent_at, exponent_size, mantissa_at, mantissa_size, bias = (
        struct.unpack_from("<HHBBBBI", body, 8)
    )
    layout = (bits >> 8 & 0xFF, exponent_at, exponent_size, mantissa_at, mantissa_size, bias)
    standard = offset == 0 and precision == 8 * size and layout == _IEEE[size]
    if not standard or bits & 0x40 or (bits >> 4 & 0x03) != 2:
        raise NativeUnsupported("a floating-point type that is not standard IEEE")
    return np.dtype(f"{'>' if bits & 0x01 else '<'}f{size}")


def _string(padding: int, charset: int, size: int) -> _Type:
    encoding = _ENCODINGS.get(charset)
    if encoding is None or padding > _SPACEPAD or not 0 < size < 1 << 24:
        raise NativeUnsupported(f"a string type with padding {padding}, character set {charset}")
    return ("string", _string_dtype(size, encoding), padding)


def _vlen(body: memoryview, bits: int) -> _Type:
    base = _base_type(body[8:])
    if bits & 0x0F == 1:
        padding, encoding = bits >> 4 & 0x0F, _ENCODINGS.get(bits >> 8 & 0x0F)
        if padding > _SPACEPAD or encoding is None:
            raise NativeUnsupported("a variable-length string type with unknown padding")
        vlen = str if encoding == "utf-8" else bytes
        return ("variable-length string", np.dtype("O", metadata={"vlen": vlen}))
    if bits & 0x0F == 0 and base[:3] == (7, 0, 8) and base[3] in (1, 2, 3):
        return ("object reference",)
    raise NativeUnsupported("a variable-length sequence type")


def _base_type(body: memoryview) -> tuple[int, int, int, int]:
    """(class, class bits low nibble, size, version) of a nested datatype."""
    if len(body) < 8:
        raise NativeUnsupported("a nested datatype is truncated")
    return body[0] & 0x0F, body[1] & 0x0F, _U32.unpack_from(body, 4)[0], body[0] >> 4


_STRING_DTYPES: dict[tuple[int, str], np.dtype[Any]] = {}


def _string_dtype(size: int, encoding: str) -> np.dtype[Any]:
    key = (size, encoding)
    dtype = _STRING_DTYPES.get(key)
    if dtype is None:
        if len(_STRING_DTYPES) > _MAX_CACHED:
            _STRING_DTYPES.clear()
        dtype = _STRING_DTYPES[key] = np.dtype(f"S{size}", metadata={"h5py_encoding": encoding})
    return dtype


#: How to decode an attribute's data: (category, dtype, dims, element count, string padding)
_Plan = tuple[str, np.dtype[Any], tuple[int, ...], int, int]
_PLANS: dict[tuple[bytes, bytes], _Plan] = {}


def _attribute_plan(kind: bytes, space: bytes) -> _Plan:
    """How to decode the data of an attribute with this datatype and dataspace; the
    encodings repeat across attributes and files, so each pair is worked out once."""
    key = (kind, space)
    plan = _PLANS.get(key)
    if plan is None:
        parsed = _datatype(memoryview(kind))
        if parsed[0] not in ("number", "string", "variable-length string"):
            raise NativeUnsupported(f"an attribute of {parsed[0]}s")
        shape = _dataspace(memoryview(space))
        padding = parsed[2] if parsed[0] == "string" else 0
        if shape is None:
            plan = ("empty", parsed[1], (), 0, padding)
        else:
            plan = (parsed[0], parsed[1], shape[0], _product(shape[0]), padding)
        if len(_PLANS) > _MAX_CACHED:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _dataspace(body: memoryview) -> _Shape:
    version, rank, flags = body[0], body[1], body[2]
    if version == 1:
        if flags & 0x02:
            raise NativeUnsupported("a dataspace with a permutation")
        kind, position = (1 if rank else 0), 8
    elif version == 2:
        kind, position = body[3], 4
    else:
        raise NativeUnsupported(f"dataspace version {version}")
    if kind == 2:
        return None
    if kind not in (0, 1) or (kind == 0 and rank):
        raise NativeUnsupported(f"dataspace type {kind}")
    dims = struct.unpack_from(f"<{rank}Q", body, position)
    if flags & 0x01:
        stored = struct.unpack_from(f"<{rank}Q", body, position + 8 * rank)
        maxdims = tuple(None if n == _UNDEFINED else n for n in stored)
    else:
        maxdims = dims
    return dims, maxdims


def _product(dims: tuple[int, ...]) -> int:
    count = 1
    for n in dims:
        count *= n
    if count > 1 << 40:
        raise NativeUnsupported("an implausibly large dataspace")
    return count


# -- attribute messages -----------------------------------------------------------------------


def _attribute_parts(body: memoryview) -> tuple[bytes, memoryview, memoryview, memoryview]:
    """An attribute message's name, datatype, dataspace and data."""
    version, flags, name_size, type_size, space_size = _ATTRIBUTE_HEAD.unpack_from(body)
    if version == 1:
        # version 1 pads each part to a multiple of 8 bytes
        position = 8
        name_end = position + (name_size + 7) // 8 * 8
        type_end = name_end + type_size
        space_at = name_end + (type_size + 7) // 8 * 8
        data_at = space_at + (space_size + 7) // 8 * 8
    elif version == 2 or version == 3:
        if flags & 0x03:
            raise NativeUnsupported("an attribute with a shared datatype or dataspace")
        position = 8 if version == 2 else 9
        name_end = position + name_size
        type_end = name_end + type_size
        space_at = type_end
        data_at = space_at + space_size
    else:
        raise NativeUnsupported(f"attribute message version {version}")
    if data_at > len(body):
        raise NativeUnsupported("an attribute message overruns its body")
    name = bytes(body[position : position + name_size]).split(b"\x00", 1)[0]
    kind = body[name_end:type_end]
    space = body[space_at : space_at + space_size]
    return name, kind, space, body[data_at:]


def _fixed_strings(
    dtype: np.dtype[Any], padding: int, dims: tuple[int, ...], count: int, data: memoryview
) -> Any:
    """Fixed-length strings as h5py reads them. h5py reads into null-padded strings: HDF5
    cuts null-terminated ones at their first NUL but copies space-padded ones unchanged
    (h5py 3.16 with HDF5 2.0; the tests pin this down)."""
    size = dtype.itemsize
    if count * size > len(data):
        raise NativeUnsupported("an attribute's data is shorter than its dataspace")
    raw = bytes(data[: count * size])
    if not dims:
        # what numpy makes of a 0-d S array: a bytes_ without the trailing NULs
        value = raw.split(b"\x00", 1)[0] if padding == _NULLTERM else raw.rstrip(b"\x00")
        return np.bytes_(value)
    if padding == _NULLTERM and b"\x00" in raw:
        raw = b"".join(
            raw[i : i + size].split(b"\x00", 1)[0].ljust(size, b"\x00")
            for i in range(0, len(raw), size)
        )
    return np.frombuffer(raw, dtype, count).reshape(dims).copy()


# -- datasets ---------------------------------------------------------------------------------


def _dataset(
    path: str,
    address: int,
    grouped: dict[int, list[_Message]],
    attributes: dict[str, Any],
    base: int,
) -> NativeDataset:
    if _EXTERNAL in grouped:
        raise NativeUnsupported("a dataset stored in external files")
    space = _cached(_DATASPACES, _dataspace, _only(grouped, _DATASPACE, "dataspace"))
    if space is None:
        raise NativeUnsupported("a dataset with a null dataspace")
    kind = _cached(_DATATYPES, _datatype, _only(grouped, _DATATYPE, "datatype"))
    if kind[0] != "number":
        raise NativeUnsupported(f"a dataset of {kind[0]}s (datasets of numbers only)")
    dtype: np.dtype[Any] = kind[1]
    layout_body = _only(grouped, _LAYOUT, "data layout")
    if layout_body is None:
        raise NativeUnsupported("a dataset without a data layout message")
    layout = _layout(layout_body, space[0], dtype.itemsize, base)
    pipeline = _only(grouped, _PIPELINE, "filter pipeline")
    fill_value, fill_defined = _fill(
        _only(grouped, _FILL, "fill value"), _only(grouped, _FILL_OLD, "old fill value"), dtype
    )
    return NativeDataset(
        path=path,
        address=address,
        shape=space[0],
        maxshape=space[1],
        dtype=dtype,
        layout=layout[0],
        chunks=layout[1],
        btree_address=layout[2],
        data_address=layout[3],
        data_size=layout[4],
        filters=_cached(_PIPELINES, _filters, pipeline) if pipeline is not None else (),
        fill_value=fill_value,
        fill_defined=fill_defined,
        attributes=attributes,
    )


_Layout = tuple[
    Literal["chunked", "contiguous"], tuple[int, ...] | None, int | None, int | None, int
]


def _layout(body: memoryview, shape: tuple[int, ...], itemsize: int, base: int) -> _Layout:
    """(layout, chunks, B-tree address, absolute data address, data size)."""
    version = body[0]
    if version in (1, 2):
        return _old_layout(body, shape, itemsize, base)
    if version != 3:
        raise NativeUnsupported(f"data layout message version {version} (new chunk indexes)")
    kind = body[1]
    if kind == 1:
        address, size = _TWO_U64.unpack_from(body, 2)
        return "contiguous", None, None, _absolute(address, base), size
    if kind == 2:
        dimensionality = body[2]
        btree = _U64.unpack_from(body, 3)[0]
        sizes = struct.unpack_from(f"<{dimensionality}I", body, 11)
        return "chunked", _chunks(sizes, len(shape), itemsize), _defined(btree), None, 0
    raise NativeUnsupported(f"data layout class {kind} (compact or virtual)")


def _old_layout(body: memoryview, shape: tuple[int, ...], itemsize: int, base: int) -> _Layout:
    """Layout message versions 1 and 2 (HDF5 1.4 and before): the contiguous size is not
    stored, HDF5 computes it from the dataspace."""
    dimensionality, kind = body[1], body[2]
    if kind not in (1, 2):
        raise NativeUnsupported(f"data layout class {kind} (compact)")
    address = _U64.unpack_from(body, 8)[0]
    sizes = struct.unpack_from(f"<{dimensionality}I", body, 16)
    if kind == 1:
        return "contiguous", None, None, _absolute(address, base), _product(shape) * itemsize
    return "chunked", _chunks(sizes, len(shape), itemsize), _defined(address), None, 0


def _chunks(sizes: tuple[int, ...], rank: int, itemsize: int) -> tuple[int, ...]:
    if len(sizes) != rank + 1:
        raise NativeUnsupported("a chunked layout whose rank differs from the dataspace's")
    if sizes[-1] != itemsize or 0 in sizes:
        raise NativeUnsupported("a chunked layout with an unusual element size")
    return sizes[:-1]


def _absolute(address: int, base: int) -> int | None:
    return None if address == _UNDEFINED else base + address


def _filters(body: memoryview) -> tuple[HDF5Filter, ...]:
    version, count = body[0], body[1]
    if version not in (1, 2):
        raise NativeUnsupported(f"filter pipeline message version {version}")
    position = 8 if version == 1 else 2
    filters = []
    for _ in range(count):
        code = _U16.unpack_from(body, position)[0]
        if version == 1 or code >= 256:
            name_length, flags, values = struct.unpack_from("<HHH", body, position + 2)
            position += 8
        else:
            name_length = 0
            flags, values = struct.unpack_from("<HH", body, position + 2)
            position += 6
        name = bytes(body[position : position + name_length]).split(b"\x00", 1)[0]
        position += name_length
        parameters = struct.unpack_from(f"<{values}I", body, position)
        position += 4 * values + (4 if version == 1 and values % 2 else 0)
        label = name.decode("utf-8", "replace")
        filters.append(HDF5Filter(code, flags, parameters, label))
    return tuple(filters)


def _fill(new: memoryview | None, old: memoryview | None, dtype: np.dtype[Any]) -> tuple[Any, bool]:
    """The fill value and whether unallocated storage reads as it, as HDF5 decides on open
    (``H5D__open_oid``): the new message if present, else the old one, else undefined."""
    fill_time = _FILL_TIME_IFSET
    value: memoryview | None = None
    if new is not None:
        fill_time, size, value = _new_fill(new)
    elif old is not None:
        size = _U32.unpack_from(old, 0)[0]
        value = old[4 : 4 + size] if size else None
        size = size or -1
    else:
        size = -1
    if fill_time not in (0, 1, 2) or size < -1:
        raise NativeUnsupported("a fill value message with an unknown fill time or size")
    defined = size != -1 and fill_time != _FILL_TIME_NEVER
    if size == -1:
        return 0, defined
    if size == 0:
        return dtype.type(0).item(), defined
    if value is None or size != dtype.itemsize or len(value) != size:
        raise NativeUnsupported("a fill value whose size differs from its datatype's")
    return np.frombuffer(value, dtype, 1)[0].item(), defined


def _new_fill(body: memoryview) -> tuple[int, int, memoryview | None]:
    """(fill time, size, value) of a fill value message: size -1 undefined, 0 default."""
    version = body[0]
    if version in (1, 2):
        fill_time, defined = body[2], body[3]
        if not defined:
            return fill_time, -1, None
        size = _I32.unpack_from(body, 4)[0]
        return fill_time, size, body[8 : 8 + size] if size > 0 else None
    if version == 3:
        flags = body[1]
        if flags & 0xC0 or (flags & 0x10 and flags & 0x20):
            raise NativeUnsupported("a fill value message with unknown flags")
        fill_time = flags >> 2 & 0x03
        if flags & 0x10:
            return fill_time, -1, None
        if flags & 0x20:
            size = _U32.unpack_from(body, 2)[0]
            return fill_time, size, body[6 : 6 + size]
        return fill_time, 0, None
    raise NativeUnsupported(f"fill value message version {version}")
