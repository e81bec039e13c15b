"""The native HDF5 metadata reader against h5py: every field equal, or NativeUnsupported.

Files are written at test time by h5py and netCDF4-python; the oracle is h5py reading the same
file, compared field by field. The corpus under ``../shared/corpus`` runs through the same
comparison: each file is either read natively and equal to h5py, or refused.
"""

from __future__ import annotations

import collections
import math
import random
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from obstore.store import LocalStore

from virtualize.codecs.hdf5_filters import filters_of
from virtualize.io import ObstoreFile
from virtualize.parsers.hdf import _fill_value, _object_address
from virtualize.parsers.hdf_native import (
    NativeDataset,
    NativeFile,
    NativeGroup,
    NativeUnsupported,
    read_metadata,
)

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

NUMERIC = [f"{order}{kind}{size}" for order in "<>" for kind in "iu" for size in (1, 2, 4, 8)] + [
    f"{order}f{size}" for order in "<>" for size in (2, 4, 8)
]


# -- the oracle -------------------------------------------------------------------------------


def read_native(path: Path) -> NativeFile:
    """read_metadata over the file's bytes, checking every read stays inside the file."""
    data = path.read_bytes()

    def read_at(offset: int, size: int) -> bytes:
        assert offset >= 0 and offset + size <= len(data), (offset, size)
        return data[offset : offset + size]

    return read_metadata(read_at, file_size=len(data))


def same_value(got: Any, expected: Any) -> bool:
    """Equal in type and value; arrays also in dtype (byte order and h5py's metadata)."""
    if type(got) is not type(expected):
        return False
    if isinstance(expected, h5py.Empty):
        return bool(got == expected) and got.dtype.str == expected.dtype.str
    if isinstance(expected, np.ndarray):
        if got.dtype.str != expected.dtype.str or got.shape != expected.shape:
            return False
        if got.dtype.metadata != expected.dtype.metadata:
            return False
        if expected.dtype.kind == "f":
            return bool(np.array_equal(got, expected, equal_nan=True))
        return bool(np.array_equal(got, expected))
    if isinstance(expected, np.generic):
        if got.dtype.str != expected.dtype.str:
            return False
        if expected.dtype.kind == "f" and np.isnan(expected):
            return bool(np.isnan(got))
    return bool(got == expected)


def dimension_list(node: Any) -> tuple[tuple[int, ...], ...]:
    return tuple(
        tuple(_object_address(scale) for scale in node.dims[axis].values())
        for axis in range(len(node.dims))
    )


def attribute_problems(got: dict[str, Any], node: Any, where: str) -> list[str]:
    names = list(node.attrs)
    if list(got) != names:
        return [f"{where}: attributes {list(got)} != {names}"]
    problems = []
    for key in names:
        if key == "REFERENCE_LIST":
            expected: Any = None
        elif key == "DIMENSION_LIST":
            expected = dimension_list(node)
        else:
            expected = node.attrs[key]
        if key in ("REFERENCE_LIST", "DIMENSION_LIST"):
            same = got[key] == expected
        else:
            same = same_value(got[key], expected)
        if not same:
            problems.append(f"{where}: attribute {key!r}: {got[key]!r} != {expected!r}")
    return problems


def dataset_problems(got: NativeDataset, dset: Any) -> list[str]:
    plist = dset.id.get_create_plist()
    layouts = {h5py.h5d.CHUNKED: "chunked", h5py.h5d.CONTIGUOUS: "contiguous"}
    fill, defined = _fill_value(dset, np.dtype(dset.dtype))
    checks = {
        "shape": (got.shape, dset.shape),
        "maxshape": (got.maxshape, dset.maxshape),
        "dtype": (got.dtype.str, np.dtype(dset.dtype).str),
        "layout": (got.layout, layouts.get(plist.get_layout())),
        "chunks": (got.chunks, dset.chunks),
        "filters": (
            [(f.code, f.flags, f.values) for f in got.filters],
            [(f.code, f.flags, f.values) for f in filters_of(plist)],
        ),
        "fill_defined": (got.fill_defined, defined),
        "fill type": (type(got.fill_value), type(fill)),
    }
    problems = [f"{got.path}: {k} {a!r} != {b!r}" for k, (a, b) in checks.items() if a != b]
    nan = isinstance(fill, float) and math.isnan(fill) and math.isnan(got.fill_value)
    if got.fill_value != fill and not nan:
        problems.append(f"{got.path}: fill value {got.fill_value!r} != {fill!r}")
    if got.layout == "contiguous":
        offset = dset.id.get_offset()
        stored = dset.id.get_storage_size()
        if got.data_address != offset or got.btree_address is not None:
            problems.append(f"{got.path}: data address {got.data_address} != {offset}")
        if offset is not None and got.data_size != stored:
            problems.append(f"{got.path}: data size {got.data_size} != {stored}")
    else:
        written = dset.id.get_num_chunks() > 0
        if written and got.btree_address is None:
            problems.append(f"{got.path}: chunks were written but there is no B-tree")
        if got.data_address is not None or got.data_size != 0:
            problems.append(f"{got.path}: a chunked dataset with a data address")
    return problems + attribute_problems(got.attributes, dset, got.path)


def group_problems(got: NativeGroup, group: Any) -> list[str]:
    problems = attribute_problems(got.attributes, group, got.path)
    if got.address != _object_address(group):
        problems.append(f"{got.path}: address {got.address} != {_object_address(group)}")
    names = list(group)
    if list(got.members) != names:
        return [*problems, f"{got.path}: members {list(got.members)} != {names}"]
    for name in names:
        member, node = got.members[name], group[name]
        if member.address != _object_address(node):
            problems.append(f"{member.path}: address {member.address}")
        if isinstance(node, h5py.Group) and isinstance(member, NativeGroup):
            problems += group_problems(member, node)
        elif isinstance(node, h5py.Dataset) and isinstance(member, NativeDataset):
            problems += dataset_problems(member, node)
        else:
            problems.append(f"{member.path}: {type(member).__name__} for a {type(node).__name__}")
    return problems


def problems_of(path: Path) -> list[str]:
    """Where the native reading of ``path`` differs from h5py's (NativeUnsupported passes)."""
    native = read_native(path)
    with h5py.File(path, "r") as h5file:
        problems = group_problems(native.root, h5file)
        base = h5file.id.get_create_plist().get_userblock()
        if native.base_address != base:
            problems.append(f"base address {native.base_address} != {base}")
    return problems


def assert_matches_h5py(path: Path) -> NativeFile:
    assert problems_of(path) == []
    return read_native(path)


# -- files written by h5py --------------------------------------------------------------------

LIBVERS = [
    ("earliest", "latest"),
    ("v108", "v110"),
    ("v110", "latest"),
    ("latest", "latest"),
]


def write_attributes(node: Any) -> None:
    """One attribute of every kind in scope."""
    for code in NUMERIC:
        node.attrs[f"s{code}"] = np.array(7, dtype=code)
        node.attrs[f"a{code}"] = np.arange(3, dtype=code)
    node.attrs["one"] = np.array([1.5])
    node.attrs["none"] = np.zeros((0,), dtype="i4")
    node.attrs["matrix"] = np.arange(6, dtype=">f4").reshape(2, 3)
    node.attrs["nan"] = np.float32("nan")
    node.attrs["bytes"] = np.bytes_(b"degrees_north")
    node.attrs["byte array"] = np.array([b"a", b"bcd", b""])
    node.attrs["str"] = "K"
    node.attrs["unicode"] = "température"
    node.attrs["empty str"] = ""
    node.attrs["str list"] = ["x", "yy", ""]
    node.attrs.create("utf8 fixed", np.array("é".encode()), dtype=h5py.string_dtype("utf-8", 4))
    node.attrs.create("ascii vlen", "abc", dtype=h5py.string_dtype("ascii"))
    node.attrs.create("ascii vlens", ["a", "bc"], dtype=h5py.string_dtype("ascii"))
    node.attrs.create("byte matrix", np.array([[b"ab", b"c"]]), dtype="S2")
    node.attrs["empty float"] = h5py.Empty(">f8")
    node.attrs["empty vlen"] = h5py.Empty(h5py.string_dtype())
    node.attrs["empty bytes"] = h5py.Empty("S3")


def write_datasets(group: Any, *, chunked: bool) -> None:
    """Datasets of every numeric type, layout and fill value setting; chunked ones only for
    files whose format keeps version-1 B-tree chunk indexes (libver below v110)."""
    for code in NUMERIC:
        group.create_dataset(f"scalar {code}", data=np.array(3, dtype=code))
        group.create_dataset(f"cube {code}", data=np.ones((2, 3, 4), dtype=code))
    group.create_dataset("contiguous", data=np.arange(10.0))
    group.create_dataset("unallocated", shape=(5, 5), dtype="i2")
    group.create_dataset("no elements", shape=(0,), dtype="f8")
    group.create_dataset("user fill", shape=(4,), dtype="<i8", fillvalue=-5)
    group.create_dataset("nan fill", shape=(4,), dtype=">f4", fillvalue=np.nan)
    group.create_dataset("alloc", shape=(4,), dtype="u2", fillvalue=9, fill_time="alloc")
    group.create_dataset("contiguous never", shape=(3,), dtype="i1", fill_time="never")
    if not chunked:
        return
    for code in NUMERIC:
        group.create_dataset(
            f"chunks {code}", data=np.ones((2, 3, 4), dtype=code), chunks=(1, 3, 2)
        )
    group.create_dataset("unwritten chunks", shape=(5, 5), dtype="f4", chunks=(2, 2))
    group.create_dataset("gzip", data=np.arange(100.0), chunks=(10,), compression="gzip")
    group.create_dataset(
        "all filters",
        data=np.arange(100, dtype=">i4").reshape(10, 10),
        chunks=(5, 5),
        compression="gzip",
        compression_opts=9,
        shuffle=True,
        fletcher32=True,
    )
    group.create_dataset("extensible", data=np.arange(4.0), maxshape=(None,), chunks=(2,))
    group.create_dataset("no rows", shape=(0, 3), dtype="i4", maxshape=(None, 3), chunks=(2, 3))
    group.create_dataset("chunked nan fill", shape=(4,), dtype=">f4", fillvalue=np.nan, chunks=(2,))
    group.create_dataset("never", shape=(4,), dtype="f8", chunks=(2,), fill_time="never")
    group.create_dataset("ifset", shape=(4,), dtype="f2", fill_time="ifset", chunks=(4,))


@pytest.mark.parametrize("libver", LIBVERS, ids=lambda v: "-".join(v))
def test_h5py_files_match(tmp_path: Path, libver: tuple[str, str]) -> None:
    path = tmp_path / "file.h5"
    with h5py.File(path, "w", libver=libver) as f:
        write_attributes(f)
        write_datasets(f, chunked=libver[0] in ("earliest", "v108"))
        inner = f.create_group("a/b/c")
        inner.create_dataset("deep", data=[1, 2])
        write_attributes(f["a"])
        write_attributes(f["scalar <i4"])
        f["a/b"].attrs["x"] = 1
        f["again"] = f["contiguous"]  # one dataset under two names
    native = assert_matches_h5py(path)
    assert isinstance(native.root.members["a"], NativeGroup)
    assert native.root.members["again"].address == native.root.members["contiguous"].address


@pytest.mark.parametrize("libver", [("earliest", "latest"), ("latest", "latest")])
@pytest.mark.parametrize("userblock", [512, 4096])
def test_user_blocks(tmp_path: Path, libver: tuple[str, str], userblock: int) -> None:
    path = tmp_path / "userblock.h5"
    with h5py.File(path, "w", libver=libver, userblock_size=userblock) as f:
        f.create_dataset("contiguous", data=np.arange(10, dtype="i4"))
        if libver[0] == "earliest":
            f.create_dataset("chunked", data=np.arange(10, dtype="i4"), chunks=(5,))
        f.attrs["str"] = "in the file after the user block"
    with open(path, "r+b") as raw:
        raw.write(b"\x89HDF but not a superblock")  # a decoy in the user block
    native = assert_matches_h5py(path)
    assert native.base_address == userblock
    contiguous = native.root.members["contiguous"]
    assert isinstance(contiguous, NativeDataset)
    assert contiguous.data_address is not None and contiguous.data_address > userblock
    assert path.read_bytes()[contiguous.data_address : contiguous.data_address + 8] == (
        np.arange(2, dtype="i4").tobytes()
    )


@pytest.mark.parametrize("track_order", [False, True])
@pytest.mark.parametrize("libver", [("earliest", "latest"), ("latest", "latest")])
def test_member_and_attribute_order(
    tmp_path: Path, track_order: bool, libver: tuple[str, str]
) -> None:
    """Names created out of order, compact (few) and dense (more than 8) storage."""
    path = tmp_path / "order.h5"
    names = ["zeta", "Alpha", "alpha", "b", "mu", "é", "a1", "a10", "a2", "_x", "Z", "m"]
    with h5py.File(path, "w", libver=libver, track_order=track_order) as f:
        for count in (3, len(names)):
            group = f.create_group(f"g{count}", track_order=track_order)
            for name in names[:count]:
                group.create_dataset(name, data=0)
                group.attrs[name] = 1
    native = assert_matches_h5py(path)
    group = native.root.members["g12"]
    assert isinstance(group, NativeGroup)
    expected = names if track_order else sorted(names, key=str.encode)
    assert list(group.members) == expected
    assert list(group.attributes) == expected


@pytest.mark.parametrize("track_order", [False, True])
def test_large_dense_groups_and_attributes(tmp_path: Path, track_order: bool) -> None:
    """Enough links and attributes for fractal heaps with nested indirect blocks, version-2
    B-trees two levels deep and a 'huge' heap object."""
    path = tmp_path / "large.h5"
    with h5py.File(path, "w", libver="latest") as f:
        group = f.create_group("many", track_order=track_order)
        for i in range(200):
            group.create_dataset(f"v{(i * 7919) % 1000:03d}_{i}", data=np.int16(i))
        dset = f.create_dataset("attributes", data=1.0, track_order=track_order)
        for i in range(1000):
            dset.attrs[f"a{(i * 31) % 1000:04d}"] = np.full(170, i, dtype="<i4")
        dset.attrs["huge"] = np.arange(3000, dtype=">f8")
        dset.attrs["long text"] = "x" * 10_000
        dset.attrs["DIMENSION_LIST extra"] = 1
    native = assert_matches_h5py(path)
    group = native.root.members["many"]
    assert isinstance(group, NativeGroup) and len(group.members) == 200
    assert len(native.root.members["attributes"].attributes) == 1003


@pytest.mark.parametrize("libver", [("earliest", "latest"), ("v108", "v108")])
def test_filter_pipelines(tmp_path: Path, libver: tuple[str, str]) -> None:
    """Pipeline message versions 1 and 2, with an optional filter this HDF5 lacks (it is
    skipped when writing) holding more parameters than most."""
    path = tmp_path / "filters.h5"
    with h5py.File(path, "w", libver=libver) as f:
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_chunk((4,))
        plist.set_shuffle()
        plist.set_filter(32999, h5py.h5z.FLAG_OPTIONAL, tuple(range(21)))
        plist.set_deflate(4)
        plist.set_fletcher32()
        space = h5py.h5s.create_simple((8,))
        h5py.h5d.create(f.id, b"x", h5py.h5t.STD_I32BE, space, dcpl=plist)
        f["x"][...] = np.arange(8)
    native = assert_matches_h5py(path)
    dataset = native.root.members["x"]
    assert isinstance(dataset, NativeDataset)
    assert [f.code for f in dataset.filters] == [2, 32999, 1, 3]
    assert dataset.filters[1].values == tuple(range(21))


def test_large_old_style_group(tmp_path: Path) -> None:
    """A symbol-table group whose version-1 B-tree has more than one level, and attribute
    values spread over several global heap collections."""
    path = tmp_path / "old.h5"
    with h5py.File(path, "w", libver="earliest") as f:
        group = f.create_group("g")
        for i in range(300):
            group.create_dataset(f"d{(i * 7919) % 1000:04d}", data=np.float32(i))
        f.attrs["many strings"] = [f"string number {i}" * (i % 7) for i in range(600)]
    native = assert_matches_h5py(path)
    assert len(native.root.members["g"].members) == 300  # type: ignore[union-attr]


def test_object_header_options(tmp_path: Path) -> None:
    """Version-2 object headers with stored times and non-default attribute phase change
    (dense attributes from the first one), and a superblock extension (paged file space)."""
    path = tmp_path / "options.h5"
    with h5py.File(path, "w", libver="latest", fs_strategy="page", fs_persist=True) as f:
        plist = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
        plist.set_attr_phase_change(0, 0)
        group = h5py.Group(h5py.h5g.create(f.id, b"dense", gcpl=plist))
        group.attrs["only"] = np.int8(1)
        group.attrs["second"] = "two"
        f.create_dataset("timed", data=np.arange(3), track_times=True)
        f["timed"].attrs["x"] = 1.0
    assert_matches_h5py(path)


def test_sizes_other_than_8_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "small.h5"
    plist = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    plist.set_sizes(4, 4)
    with h5py.File(h5py.h5f.create(bytes(path), fcpl=plist)) as f:
        f.create_dataset("x", data=np.arange(3))
    with pytest.raises(NativeUnsupported, match="sizes"):
        read_native(path)


def test_many_attributes_on_a_group(tmp_path: Path) -> None:
    path = tmp_path / "attributes.h5"
    with h5py.File(path, "w") as f:
        for i in range(100):
            f.attrs[f"attribute {i}"] = i
            f.attrs[f"text {i}"] = f"value {i}"
    assert len(assert_matches_h5py(path).root.attributes) == 200


def test_fixed_string_padding(tmp_path: Path) -> None:
    """How h5py returns fixed-length strings of each padding and character set."""
    path = tmp_path / "strings.h5"
    values = np.array([b"ab  \x00x", b"abcdef", b"a\x00b  ", b""], dtype="S6")
    with h5py.File(path, "w") as f:
        for pad, label in [
            (h5py.h5t.STR_NULLTERM, "nullterm"),
            (h5py.h5t.STR_NULLPAD, "nullpad"),
            (h5py.h5t.STR_SPACEPAD, "spacepad"),
        ]:
            for cset, encoding in [(h5py.h5t.CSET_ASCII, "ascii"), (h5py.h5t.CSET_UTF8, "utf8")]:
                kind = h5py.h5t.C_S1.copy()
                kind.set_size(6)
                kind.set_strpad(pad)
                kind.set_cset(cset)
                for shape, data in [((4,), values), ((), values[2])]:
                    name = f"{label} {encoding} {len(shape)}".encode()
                    space = h5py.h5s.create_simple(shape) if shape else h5py.h5s.create(0)
                    attribute = h5py.h5a.create(f.id, name, kind, space)
                    attribute.write(np.asarray(data, dtype="S6"), mtype=kind)
                vlen = h5py.h5t.C_S1.copy()
                vlen.set_size(h5py.h5t.VARIABLE)
                vlen.set_strpad(pad)
                vlen.set_cset(cset)
                attribute = h5py.h5a.create(
                    f.id, f"vlen {label} {encoding}".encode(), vlen, h5py.h5s.create_simple((2,))
                )
                memory = h5py.h5t.py_create(h5py.string_dtype())
                attribute.write(np.array(["ab  ", "c"], dtype=h5py.string_dtype()), mtype=memory)
    native = assert_matches_h5py(path)
    assert native.root.attributes["nullterm ascii 1"].tolist() == [b"ab  ", b"abcdef", b"a", b""]
    assert native.root.attributes["spacepad ascii 1"][2] == b"a\x00b  "


def test_hard_link_cycle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cycle.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("g")
        group["back"] = group
    with pytest.raises(NativeUnsupported, match="links back"):
        read_native(path)


# -- fill values ------------------------------------------------------------------------------


def v1_message(data: bytes | bytearray, header: int, kind: int) -> tuple[int, int] | None:
    """(offset of the body, body size) of a message in a version-1 object header's first
    block (written by libver 'earliest', no checksums: safe to patch)."""
    assert data[header] == 1
    size = struct.unpack_from("<I", data, header + 8)[0]
    position = header + 16
    while position < header + 16 + size:
        found, body_size = struct.unpack_from("<HH", data, position)
        if found == kind:
            return position + 8, body_size
        position += 8 + body_size
    return None


def new_fill(data: bytearray, header: int) -> int:
    found = v1_message(data, header, 0x0005)
    assert found is not None
    return found[0]


def retype(data: bytearray, header: int, kind: int, new_kind: int, body: bytes = b"") -> None:
    """Change a message's type (0: a NIL message); with ``body``, also its content."""
    found = v1_message(data, header, kind)
    assert found is not None
    position, size = found
    struct.pack_into("<H", data, position - 8, new_kind)
    if body:
        data[position : position + size] = body.ljust(size, b"\x00")


FILL_PATCHES: dict[str, Callable[[bytearray, int], None]] = {}


def fill_patch(function: Callable[[bytearray, int], None]) -> Callable[[bytearray, int], None]:
    FILL_PATCHES[function.__name__] = function
    return function


@fill_patch
def undefined(data: bytearray, header: int) -> None:
    data[new_fill(data, header) + 3] = 0  # "fill value defined": no


@fill_patch
def version_1(data: bytearray, header: int) -> None:
    data[new_fill(data, header)] = 1


@fill_patch
def version_1_undefined(data: bytearray, header: int) -> None:
    body = new_fill(data, header)
    data[body] = 1
    data[body + 3] = 0


@fill_patch
def old_message_only(data: bytearray, header: int) -> None:
    """HDF5 writes the old message next to the new one for user fill values."""
    if v1_message(data, header, 0x0004) is not None:
        retype(data, header, 0x0005, 0x0000)
    else:
        retype(data, header, 0x0005, 0x0004, struct.pack("<I", 4) + b"\x00\x00\x00\x07")


@fill_patch
def old_message_empty(data: bytearray, header: int) -> None:
    if v1_message(data, header, 0x0004) is not None:
        retype(data, header, 0x0005, 0x0000)
        retype(data, header, 0x0004, 0x0004, struct.pack("<I", 0))
    else:
        retype(data, header, 0x0005, 0x0004, struct.pack("<I", 0))


@fill_patch
def no_message(data: bytearray, header: int) -> None:
    retype(data, header, 0x0005, 0x0000)
    if v1_message(data, header, 0x0004) is not None:
        retype(data, header, 0x0004, 0x0000)


@pytest.mark.parametrize("patch", sorted(FILL_PATCHES))
@pytest.mark.parametrize("layout", ["contiguous", "chunked"])
def test_patched_fill_values(tmp_path: Path, patch: str, layout: str) -> None:
    """Fill value messages h5py can't write: undefined values, version 1, and files with
    only the old (pre-1.6) message or none at all."""
    path = tmp_path / "fill.h5"
    chunks = (2,) if layout == "chunked" else None
    with h5py.File(path, "w", libver="earliest") as f:
        f.create_dataset("x", shape=(4,), dtype=">f4", fillvalue=2.5, chunks=chunks)
        f.create_dataset("default", shape=(4,), dtype="i4", chunks=chunks)
        headers = [_object_address(f["x"]), _object_address(f["default"])]
    data = bytearray(path.read_bytes())
    for header in headers:
        FILL_PATCHES[patch](data, header)
    path.write_bytes(bytes(data))
    assert_matches_h5py(path)


# -- netCDF4 ----------------------------------------------------------------------------------


def write_netcdf(path: Path, *, fmt: str = "NETCDF4") -> None:
    netCDF4 = pytest.importorskip("netCDF4")
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.createDimension("time", None)
        ds.createDimension("lat", 18)
        ds.createDimension("lon", 36)
        ds.createDimension("nv", 2)
        time = ds.createVariable("time", "f8", ("time",))
        time.units = "days since 2000-01-01"
        time[:] = [0.0, 1.0]
        for name, size in [("lat", 18), ("lon", 36)]:
            coordinate = ds.createVariable(name, "f4", (name,))
            coordinate[:] = np.arange(size)
            coordinate.units = "degrees"
        for name in ["tas", "pr", "psl"]:
            variable = ds.createVariable(
                name, "f4", ("time", "lat", "lon"), chunksizes=(1, 9, 18), zlib=True, shuffle=True
            )
            variable.units = "K"
            variable.long_name = f"variable {name}"
            variable.valid_range = np.array([0, 400], dtype="f4")
            variable[0] = np.ones((18, 36))
        ds.createVariable("nofill", "i2", ("lat",), fill_value=False)
        ds.createVariable("custom", "i8" if fmt == "NETCDF4" else "i4", ("lon",), fill_value=-1)
        ds.createVariable("scalar", "f8", ())
        ds.createVariable("bounds", "f8", ("lat", "nv"))  # nv: a dimension without a variable
        for i in range(12):
            ds.setncattr(f"global_{i}", i if i % 2 else f"text {i}")
        ds.title = "test"
        if fmt == "NETCDF4":
            ds.setncattr_string("vlen string", "hello")
            ds.setncattr_string("vlen strings", ["a", "bc"])
            group = ds.createGroup("forecast")
            group.createDimension("step", 3)
            for i in range(10):
                group.createVariable(f"v{i}", "u1", ("step", "lat"))
            sub = group.createGroup("deeper")
            sub.createVariable("w", "i4", ("step",))


@pytest.mark.parametrize("fmt", ["NETCDF4", "NETCDF4_CLASSIC"])
def test_netcdf_files_match(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "file.nc"
    write_netcdf(path, fmt=fmt)
    native = assert_matches_h5py(path)
    tas = native.root.members["tas"]
    assert isinstance(tas, NativeDataset)
    time, lat, lon = (native.root.members[n].address for n in ("time", "lat", "lon"))
    assert tas.attributes["DIMENSION_LIST"] == ((time,), (lat,), (lon,))
    assert native.root.members["lat"].attributes["REFERENCE_LIST"] is None
    assert [f.code for f in tas.filters] == [2, 1]
    assert tas.btree_address is not None
    start = native.base_address + tas.btree_address
    assert path.read_bytes()[start : start + 4] == b"TREE"


def test_read_through_obstore(tmp_path: Path) -> None:
    path = tmp_path / "file.nc"
    write_netcdf(path)
    reader = ObstoreFile(LocalStore(str(tmp_path)), path.name, path.stat().st_size)
    through_obstore = read_metadata(reader.read_at, file_size=reader.size)
    assert repr(through_obstore) == repr(read_native(path))


# -- refusals ---------------------------------------------------------------------------------


def soft_link(f: h5py.File) -> None:
    f.create_dataset("x", data=1)
    f["soft"] = h5py.SoftLink("/x")


def external_link(f: h5py.File) -> None:
    f["external"] = h5py.ExternalLink("other.h5", "/x")


def compound_dataset(f: h5py.File) -> None:
    f.create_dataset("compound", data=np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]))


def compact_layout(f: h5py.File) -> None:
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_layout(h5py.h5d.COMPACT)
    space = h5py.h5s.create_simple((4,))
    h5py.h5d.create(f.id, b"compact", h5py.h5t.STD_I32LE, space, dcpl=plist)


def vlen_dataset(f: h5py.File) -> None:
    f.create_dataset("vlen", (2,), dtype=h5py.vlen_dtype("i4"))


def string_dataset(f: h5py.File) -> None:
    f.create_dataset("text", data=np.array([b"ab", b"c"]))


def committed_datatype(f: h5py.File) -> None:
    f["type"] = np.dtype("f4")


def null_dataspace(f: h5py.File) -> None:
    f.create_dataset("empty", data=h5py.Empty("f4"))


def enum_attribute(f: h5py.File) -> None:
    f.attrs.create("flag", 1, dtype=h5py.enum_dtype({"a": 1}, basetype="i1"))


def reference_attribute(f: h5py.File) -> None:
    f.attrs["reference"] = f.create_dataset("x", data=1).ref


def compound_attribute(f: h5py.File) -> None:
    f.attrs["compound"] = np.zeros((), dtype=[("a", "i4")])


def array_attribute(f: h5py.File) -> None:
    kind = h5py.h5t.array_create(h5py.h5t.IEEE_F32LE, (3,))
    h5py.h5a.create(f.id, b"array", kind, h5py.h5s.create_simple((2,)))


def boolean_attribute(f: h5py.File) -> None:
    f.attrs["bool"] = True


def long_double(f: h5py.File) -> None:
    f.create_dataset("long double", data=np.zeros(2, dtype=np.longdouble))


def twelve_bit_integers(f: h5py.File) -> None:
    kind = h5py.h5t.STD_I16LE.copy()
    kind.set_precision(12)
    h5py.h5d.create(f.id, b"packed", kind, h5py.h5s.create_simple((4,)))


def external_storage(f: h5py.File) -> None:
    f.create_dataset("raw", shape=(4,), dtype="i4", external=[("raw.bin", 0, 16)])


def chunk_index_v4(f: h5py.File) -> None:
    f.create_dataset("x", data=np.arange(4), chunks=(2,), maxshape=(None,))


def shared_datatype(f: h5py.File) -> None:
    """A dataset whose datatype message points to a committed datatype no link reaches."""
    f["type"] = np.dtype("<f4")
    f.create_dataset("x", shape=(2,), dtype=f["type"])
    del f["type"]


def shared_attribute_datatype(f: h5py.File) -> None:
    f["type"] = np.dtype("<i2")
    f.attrs.create("a", 1, dtype=f["type"])
    del f["type"]


REFUSALS: dict[str, tuple[Callable[[h5py.File], None], dict[str, Any]]] = {
    "soft link": (soft_link, {}),
    "soft link (symbol table)": (soft_link, {"libver": ("earliest", "latest")}),
    "external link": (external_link, {}),
    "compound dataset": (compound_dataset, {}),
    "compact layout": (compact_layout, {}),
    "vlen dataset": (vlen_dataset, {}),
    "string dataset": (string_dataset, {}),
    "committed datatype": (committed_datatype, {}),
    "null dataspace": (null_dataspace, {}),
    "enum attribute": (enum_attribute, {}),
    "reference attribute": (reference_attribute, {}),
    "compound attribute": (compound_attribute, {}),
    "array attribute": (array_attribute, {}),
    "boolean attribute": (boolean_attribute, {}),
    "long double": (long_double, {}),
    "12-bit integers": (twelve_bit_integers, {}),
    "external storage": (external_storage, {}),
    "layout version 4": (chunk_index_v4, {"libver": "latest"}),
    "shared datatype": (shared_datatype, {}),
    "shared datatype (v1 header)": (shared_datatype, {"libver": ("earliest", "latest")}),
    "shared attribute datatype": (shared_attribute_datatype, {}),
    "shared attribute datatype (v1)": (shared_attribute_datatype, {"libver": "earliest"}),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_out_of_scope_is_refused(tmp_path: Path, case: str) -> None:
    write, options = REFUSALS[case]
    path = tmp_path / "refused.h5"
    with h5py.File(path, "w", **options) as f:
        write(f)
    with pytest.raises(NativeUnsupported):
        read_native(path)


# -- damaged files ----------------------------------------------------------------------------


def test_damaged_files_are_refused_or_read(tmp_path: Path) -> None:
    """Truncated and byte-flipped files raise NativeUnsupported (or still parse), never
    another exception, and reads stay inside the file."""
    path = tmp_path / "file.nc"
    write_netcdf(path)
    original = path.read_bytes()
    metadata_end = min(len(original), 8192)
    rng = random.Random(1234)
    cases = [original[:size] for size in (0, 7, 100, 1000, 4000, len(original) // 2)]
    for _ in range(300):
        mutated = bytearray(original)
        for _ in range(rng.choice((1, 2, 8))):
            mutated[rng.randrange(metadata_end)] = rng.randrange(256)
        cases.append(bytes(mutated))
    outcomes: collections.Counter[str] = collections.Counter()
    for data in cases:

        def read_at(offset: int, size: int, data: bytes = data) -> bytes:
            assert offset >= 0 and offset + size <= len(data)
            return data[offset : offset + size]

        try:
            read_metadata(read_at, file_size=len(data))
            outcomes["read"] += 1
        except NativeUnsupported:
            outcomes["refused"] += 1
    assert outcomes["refused"] >= 6


# -- the corpus -------------------------------------------------------------------------------


def corpus_files() -> list[Path]:
    folders = [CORPUS / "hdf5", CORPUS / "netcdf4"]
    return sorted(
        p
        for folder in folders
        if folder.is_dir()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix != ".dmrpp"
    )


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")
def test_corpus_files_match_or_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    tally: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    wrong: dict[str, list[str]] = {}
    for path in corpus_files():
        try:
            h5py.File(path, "r").close()
        except OSError:
            tally["unreadable by h5py"] += 1
            continue
        try:
            problems = problems_of(path)
        except NativeUnsupported as error:
            tally["refused"] += 1
            reason = re.sub(r"^/[^:]*: ", "", str(error))
            reasons[re.sub(r"^attribute .*?: ", "an attribute: ", reason)] += 1
            continue
        if problems:
            wrong[str(path.relative_to(CORPUS))] = problems[:5]
        else:
            tally["native"] += 1
    with capsys.disabled():
        print(f"\nnative HDF5 reader on the corpus: {dict(tally)}; wrong: {len(wrong)}")
        for reason, count in reasons.most_common():
            print(f"  {count:3d} refused: {reason}")
    assert wrong == {}
    assert tally["native"] >= 80
