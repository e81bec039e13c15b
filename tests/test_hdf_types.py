"""HDF5 / netCDF4 data types: every type reads back virtually exactly as the native reader
shows it (``xr.open_dataset`` where netCDF-C reads it, h5py otherwise), referenced where the
stored bytes allow, inline where they don't, refused loudly where zarr can't hold it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr
from h5py import h5d, h5p, h5s, h5t
from oracle import (
    CORPUS,
    assert_virtual_equals_native,
    local_registry,
    read_through_manifest_store,
)

from virtualize.errors import UnsupportedFeatureError
from virtualize.manifests import ManifestArray
from virtualize.parsers import HDFParser
from virtualize.parsers.hdf_types import plan_type
from virtualize.store import ManifestStore

# -- helpers ----------------------------------------------------------------------------------


def parse(path: Path, **options: Any) -> ManifestStore:
    return HDFParser(**options)(str(path), local_registry(path))


def array_of(store: ManifestStore, name: str) -> ManifestArray:
    node: Any = store.group
    *groups, leaf = name.split("/")
    for group in groups:
        node = node.groups[group]
    return node.arrays[leaf]


def virtual(store: ManifestStore, name: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: data types without a stable v3 spec
        return np.asarray(zarr.open_array(store, path=name, mode="r", zarr_format=3)[...])


def refs_and_inline(store: ManifestStore, name: str) -> tuple[int, int]:
    manifest = array_of(store, name).manifest
    return manifest.nrefs, manifest.ninline


def as_text(value: bytes) -> str:
    """netCDF-C's reading of a string's bytes: the text ends at the first NUL."""
    return value.split(b"\0", 1)[0].decode("utf-8")


def stored_bytes(dset: Any) -> np.ndarray:
    """A dataset's stored bytes, read without HDF5 converting anything."""
    size = dset.id.get_type().get_size()
    out = np.empty(dset.shape, dtype=f"V{size}")
    if out.size:
        dset.id.read(h5s.ALL, h5s.ALL, out, mtype=dset.id.get_type())
    return out


def native(dset: Any) -> np.ndarray:
    """What the virtual array must hold for ``dset``, in the form zarr returns it."""
    tid = dset.id.get_type()
    kind = tid.get_class()
    if kind == h5t.STRING and tid.is_variable_str():
        values = np.asarray(dset[...], dtype=object)
        return np.array([as_text(v) for v in values.ravel()], dtype=object).reshape(dset.shape)
    if kind == h5t.STRING and tid.get_size() > 1:
        raw = stored_bytes(dset).view(f"S{tid.get_size()}")
        cut = [bytes(v).split(b"\0", 1)[0] for v in raw.ravel()]
        return np.array(cut, dtype=raw.dtype).reshape(raw.shape)
    if kind == h5t.REFERENCE:
        values = np.asarray(dset[...], dtype=object)
        paths = [dset.file[r].name if r else "" for r in values.ravel()]
        return np.array(paths, dtype=object).reshape(dset.shape)
    if kind == h5t.OPAQUE:
        raw = stored_bytes(dset)
        dtype = dset.dtype if dset.dtype.itemsize == raw.dtype.itemsize else raw.dtype
        return raw.view(dtype)
    if kind == h5t.COMPOUND and dset.dtype.names is not None:
        try:
            return dset[...]
        except OSError:  # h5py has no conversion for an opaque member it did not tag
            return stored_bytes(dset).view(dset.dtype)
    return dset[...]


def equal(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.names or b.dtype.names:
        return a.dtype.names == b.dtype.names and all(
            equal(a[n], b[n]) for n in a.dtype.names or ()
        )
    if a.dtype.kind in "OTU" or b.dtype.kind in "OTU":
        return a.astype(object).tolist() == b.astype(object).tolist()
    if a.dtype.kind in "fc":
        same_type = a.dtype.newbyteorder("=") == b.dtype.newbyteorder("=")
        return same_type and bool(np.array_equal(a, b, equal_nan=True))
    return a.dtype.kind == b.dtype.kind and bool(np.array_equal(a, b))


def assert_matches_h5py(path: Path, store: ManifestStore, names: list[str]) -> None:
    with h5py.File(path, "r") as f:
        for name in names:
            got, want = virtual(store, name), native(f[name])
            assert equal(got, want), f"{name}: {got!r} != {want!r}"


def write_raw(
    group: Any,
    name: str,
    tid: Any,
    values: np.ndarray,
    *,
    chunks: tuple[int, ...] | None = None,
    compact: bool = False,
) -> None:
    """A dataset of file type ``tid`` holding ``values``' bytes exactly (no conversion)."""
    dcpl = h5p.create(h5p.DATASET_CREATE)
    if chunks:
        dcpl.set_chunk(chunks)
    if compact:
        dcpl.set_layout(h5d.COMPACT)
    space = h5s.create_simple(values.shape) if values.shape else h5s.create(h5s.SCALAR)
    dsid = h5d.create(group.id, name.encode(), tid, space, dcpl=dcpl)
    dsid.write(h5s.ALL, h5s.ALL, np.ascontiguousarray(values), mtype=tid)


def string_type(size: int, pad: int, cset: int = h5t.CSET_ASCII) -> Any:
    tid = h5t.C_S1.copy()
    tid.set_size(size)
    tid.set_strpad(pad)
    tid.set_cset(cset)
    return tid


PADS = {"nullterm": h5t.STR_NULLTERM, "nullpad": h5t.STR_NULLPAD, "spacepad": h5t.STR_SPACEPAD}
CSETS = {"ascii": h5t.CSET_ASCII, "utf8": h5t.CSET_UTF8}


# -- variable-length strings ------------------------------------------------------------------


def test_netcdf_strings_are_inline_and_read_as_netcdf_does(tmp_path: Path) -> None:
    path = tmp_path / "strings.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("station", 4)
        nc.createDimension("n", 3)
        names = nc.createVariable("name", str, ("station",))
        names[0], names[1], names[2] = "Zürich", "", "東京"  # [3] never written: ""
        grid = nc.createVariable("grid", str, ("n", "station"), chunksizes=(2, 2))
        grid[:] = np.array([[f"{i}-{j}" * j for j in range(4)] for i in range(3)], dtype=object)
        nc.createVariable("scalar", str, ())[...] = "just one"
        nc.createVariable("id", "i4", ("station",))[:] = np.arange(4)
    virtual_ds = assert_virtual_equals_native(path)
    assert virtual_ds["name"].values.tolist() == ["Zürich", "", "東京", ""]
    store = parse(path)
    for name in ("name", "grid", "scalar"):
        assert array_of(store, name).metadata.data_type.to_json(zarr_format=3) == "string"
        nrefs, ninline = refs_and_inline(store, name)
        assert nrefs == 0 and ninline > 0
    assert refs_and_inline(store, "grid")[1] == 4  # the chunk grid is kept
    assert_matches_h5py(path, store, ["name", "grid", "scalar"])


@pytest.mark.parametrize("encoding", ["ascii", "utf-8"])
def test_h5py_vlen_strings_ascii_and_utf8(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "vlen.h5"
    text = ["plain", "", "with space ", "x" * 300]
    if encoding == "utf-8":
        text += ["äöü", "🙂"]
    with h5py.File(path, "w") as f:
        kind = h5py.string_dtype(encoding)
        f.create_dataset("contiguous", data=np.array(text, dtype=object), dtype=kind)
        f.create_dataset("chunked", data=np.array(text, dtype=object), dtype=kind, chunks=(2,))
        f.create_dataset("compact", data=np.array(text[:2], dtype=object), dtype=kind)
        f.create_dataset("scalar", data="only", dtype=kind)
        f.create_dataset("empty", shape=(0,), dtype=kind)
        f.create_dataset("unwritten", shape=(3,), dtype=kind, chunks=(1,))
    store = parse(path)
    names = ["contiguous", "chunked", "compact", "scalar", "empty", "unwritten"]
    assert_matches_h5py(path, store, names)
    assert virtual(store, "contiguous").tolist() == text
    assert virtual(store, "unwritten").tolist() == ["", "", ""]
    assert virtual(store, "scalar").tolist() == "only"
    assert_virtual_equals_native(path, engine="netcdf4")


def test_vlen_strings_above_the_size_guard_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", data=np.array(["label"] * 2000, dtype=object))
        f["ok"] = np.arange(3)
    with pytest.raises(UnsupportedFeatureError) as caught:
        parse(path, max_inline_bytes=1000)
    message = str(caught.value)
    assert "'labels'" in message and "max_inline_bytes" in message and str(path) in message
    assert "drop_variables" in message
    store = parse(path, max_inline_bytes=1000, drop_variables=["labels"])
    assert list(store.group.arrays) == ["ok"]


def test_vlen_size_estimate_reads_the_strings_and_stops_at_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "sizes.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("few_long", data=np.array(["y" * 10_000] * 3, dtype=object))
    with h5py.File(path, "r") as f:
        dset = f["few_long"]
        plan = plan_type(dset, url="u", name="few_long", fill_value=dset.fillvalue)
        assert not plan.referenceable
        assert plan.estimate_nbytes(dset) == 3 * (4 + 10_000)
        # three pointers' worth is all that itemsize would say
        assert plan.stored.itemsize * 3 < 100
        assert plan.estimate_nbytes(dset, limit=5_000) > 5_000


def test_vlen_string_with_fill_value_attribute_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fill.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 2)
        nc.createVariable("s", str, ("x",), fill_value="N/A")[0] = "a"
    with pytest.raises(UnsupportedFeatureError, match="_FillValue") as caught:
        parse(path)
    assert "'s'" in str(caught.value)


def test_strings_that_are_not_utf8_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "v", data=np.array([b"caf\xe9"], dtype=object), dtype=h5py.string_dtype("ascii")
        )
        write_raw(f, "fixed", string_type(4, h5t.STR_NULLPAD), np.array([b"caf\xe9"], "S4"))
    for name in ("v", "fixed"):
        with pytest.raises(UnsupportedFeatureError, match="UTF-8") as caught:
            parse(path, drop_variables=[n for n in ("v", "fixed") if n != name])
        assert f"'{name}'" in str(caught.value)


# -- fixed-length strings ---------------------------------------------------------------------


CLEAN = np.array([b"abcdefg", b"ab", b"ab   ", b" ", b"", b"\xc3\xa4b", b"a  b "], dtype="S7")
#: bytes after the first NUL, which netCDF-C drops and numpy keeps
DIRTY = np.array([b"ab\0cd", b"ab\0  ", b"\0\0\0x", b"ok"], dtype="S7")


@pytest.mark.parametrize("cset", CSETS)
@pytest.mark.parametrize("pad", PADS)
def test_fixed_strings_are_referenced_and_decode_like_netcdf(
    tmp_path: Path, pad: str, cset: str
) -> None:
    path = tmp_path / "fixed.h5"
    with h5py.File(path, "w") as f:
        write_raw(f, "contiguous", string_type(7, PADS[pad], CSETS[cset]), CLEAN)
        write_raw(f, "chunked", string_type(7, PADS[pad], CSETS[cset]), CLEAN, chunks=(3,))
        write_raw(f, "scalar", string_type(5, PADS[pad], CSETS[cset]), np.array(b"x y", "S5"))
    store = parse(path)
    for name in ("contiguous", "chunked", "scalar"):
        nrefs, ninline = refs_and_inline(store, name)
        assert nrefs > 0 and ninline == 0
        assert array_of(store, name).metadata.attributes["_Encoding"] == "utf-8"
    assert_matches_h5py(path, store, ["contiguous", "chunked", "scalar"])
    assert virtual(store, "contiguous").tolist() == CLEAN.tolist()  # spaces kept
    virtual_ds = assert_virtual_equals_native(path, engine="netcdf4")
    assert virtual_ds["contiguous"].values.tolist() == [as_text(v) for v in CLEAN.tolist()]
    assert "_Encoding" not in virtual_ds["contiguous"].attrs


@pytest.mark.parametrize("pad", PADS)
def test_fixed_strings_with_bytes_after_the_nul_are_inline(tmp_path: Path, pad: str) -> None:
    path = tmp_path / "dirty.h5"
    with h5py.File(path, "w") as f:
        write_raw(f, "v", string_type(7, PADS[pad]), DIRTY, chunks=(2,))
    store = parse(path)
    nrefs, ninline = refs_and_inline(store, "v")
    assert nrefs == 0 and ninline == 2
    assert virtual(store, "v").tolist() == [b"ab", b"ab", b"", b"ok"]
    assert_matches_h5py(path, store, ["v"])
    assert_virtual_equals_native(path, engine="netcdf4")


def test_h5py_fixed_strings_corpus_style(tmp_path: Path) -> None:
    """What h5py writes for numpy ``S`` arrays (NULLPAD, ASCII), with a fill value."""
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("names", data=np.array([b"alpha", b"be", b""], dtype="S6"))
        d = f.create_dataset("filled", shape=(6,), dtype="S4", chunks=(2,), fillvalue=b"none")
        d[:2] = [b"a", b"bcde"]
        utf8 = np.array(["ä".encode(), "€uro".encode()], dtype="S8")
        write_raw(f, "utf8", string_type(8, h5t.STR_NULLPAD, h5t.CSET_UTF8), utf8)
    store = parse(path)
    assert_matches_h5py(path, store, ["names", "filled", "utf8"])
    assert virtual(store, "filled").tolist() == [b"a", b"bcde"] + [b"none"] * 4
    assert refs_and_inline(store, "filled") == (1, 0)  # unwritten chunks read as the fill
    # netCDF-C crashes (a double free) on fixed-length strings with a fill value: only h5py
    # is the oracle for "filled"
    with h5py.File(path, "a") as f:
        del f["filled"]
    assert_virtual_equals_native(path, engine="netcdf4")


def test_space_padded_strings_are_read_without_hdf5_stripping_the_spaces(tmp_path: Path) -> None:
    """h5py's own read strips the spaces of space-padded strings (in some layouts);
    ``TypePlan.read`` reads the stored bytes, as netCDF-C does."""
    path = tmp_path / "space.h5"
    values = np.array([b"is so  ", b"swe    ", b"       "], dtype="S7")
    with h5py.File(path, "w") as f:
        write_raw(f, "v", string_type(7, h5t.STR_SPACEPAD), values, compact=True)
    with h5py.File(path, "r") as f:
        dset = f["v"]
        plan = plan_type(dset, url="u", name="v", fill_value=b"")
        assert plan.referenceable and plan.raw
        assert plan.read(dset).tolist() == values.tolist()
        assert plan.values(dset)[(slice(1, 3),)].tolist() == values[1:].tolist()


def test_compact_space_padded_strings_read_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "space.h5"
    values = np.array([b"is so  ", b"swe    ", b"       "], dtype="S7")
    with h5py.File(path, "w") as f:
        write_raw(f, "v", string_type(7, h5t.STR_SPACEPAD), values, compact=True)
    assert_virtual_equals_native(path, engine="netcdf4")


def test_fixed_strings_too_large_to_check_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "many.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=np.array([b"abc"] * 100, dtype="S3"))
    with h5py.File(path, "r") as f:
        with pytest.raises(UnsupportedFeatureError, match="max_scan_bytes"):
            plan_type(f["v"], url="u", name="v", fill_value=b"", max_scan_bytes=100)
        assert plan_type(f["v"], url="u", name="v", fill_value=b"", max_scan_bytes=300)


def test_one_byte_strings_stay_bytes(tmp_path: Path) -> None:
    path = tmp_path / "chars.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("n", 2)
        nc.createDimension("nchar", 4)
        chars = nc.createVariable("code", "S1", ("n", "nchar"))
        chars[:] = netCDF4.stringtochar(np.array([b"ab", b"wxyz"], dtype="S4"))
    virtual_ds = assert_virtual_equals_native(path)
    assert "_Encoding" not in array_of(parse(path), "code").metadata.attributes
    assert virtual_ds["code"].dtype.kind == "S"


# -- compound ---------------------------------------------------------------------------------


INNER = [("x", "f4"), ("flag", "u1")]


def records(dtype: np.dtype[Any], count: int) -> np.ndarray:
    """Distinct values in every (nested) member of ``dtype``."""
    out = np.zeros(count, dtype=dtype)

    def fill(view: np.ndarray, seed: int) -> None:
        for index, member in enumerate(view.dtype.names or ()):
            sub = view[member]
            if sub.dtype.names:
                fill(sub, seed + 10 * index)
            elif sub.dtype.kind == "S":
                sub[...] = [f"s{seed}{i}".encode() for i in range(count)]
            elif sub.dtype.kind == "V":
                size = sub.dtype.itemsize
                sub[...] = np.array([bytes([i + 1]) * size for i in range(count)], sub.dtype)
            elif sub.dtype.kind == "b":
                sub[...] = np.arange(count) % 2 == 0
            else:
                sub[...] = (np.arange(count) + seed + index).astype(sub.dtype)

    fill(out, 1)
    return out


@pytest.mark.parametrize("order", ["<", ">"])
def test_packed_compounds_are_referenced(tmp_path: Path, order: str) -> None:
    flat = np.dtype([("a", f"{order}i4"), ("b", f"{order}f8"), ("c", "i1"), ("s", "S3")])
    nested = np.dtype(
        [("id", f"{order}u2"), ("pos", [("x", f"{order}f4"), ("y", f"{order}f4")]), ("z", "u1")]
    )
    deeper = np.dtype([("n", nested), ("c", f"{order}c8"), ("ok", "?")])
    path = tmp_path / "packed.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("flat", data=records(flat, 5))
        f.create_dataset("nested", data=records(nested, 7), chunks=(3,))
        f.create_dataset("deeper", data=records(deeper, 4), chunks=(2,), compression="gzip")
        f.create_dataset("scalar", data=records(flat, 1)[0])
    store = parse(path)
    for name in ("flat", "nested", "deeper", "scalar"):
        nrefs, ninline = refs_and_inline(store, name)
        assert nrefs > 0 and ninline == 0, name
        assert array_of(store, name).metadata.data_type.to_json(zarr_format=3)["name"] == "struct"
    assert_matches_h5py(path, store, ["flat", "nested", "deeper", "scalar"])


def test_compounds_in_other_layouts_are_inline(tmp_path: Path) -> None:
    aligned = np.dtype([("day", "i1"), ("elev", "<i2"), ("time", "<f8")], align=True)
    mixed = np.dtype([("a", "<i4"), ("b", ">i4")])
    padded = np.dtype({"names": ["a", "b"], "formats": ["<i2", "<f4"], "offsets": [0, 4]})
    nested = np.dtype([("p", aligned), ("q", "<f4")])
    opaque = np.dtype([("o", "V3"), ("v", "<f8")], align=True)
    path = tmp_path / "layouts.h5"
    names = ["aligned", "mixed", "padded", "opaque"]
    with h5py.File(path, "w") as f:
        for name, dtype in zip(names, [aligned, mixed, padded, opaque], strict=True):
            f.create_dataset(name, data=records(dtype, 5))
        f.create_dataset("nested", data=records(nested, 6), chunks=(4,))
    store = parse(path)
    for name in [*names, "nested"]:
        nrefs, ninline = refs_and_inline(store, name)
        assert nrefs == 0 and ninline > 0, name
    assert_matches_h5py(path, store, [*names, "nested"])
    assert virtual(store, "opaque")["o"].tolist()[:2] == [b"\x01" * 3, b"\x02" * 3]


def test_compound_with_enum_member_and_fill_value(tmp_path: Path) -> None:
    kind = h5py.enum_dtype({"OFF": 0, "ON": 1}, basetype="u1")
    dtype = np.dtype([("state", kind), ("value", "<f4")])
    path = tmp_path / "enum_member.h5"
    with h5py.File(path, "w") as f:
        fill = np.array((1, -1.5), dtype=dtype)
        d = f.create_dataset("v", shape=(6,), dtype=dtype, chunks=(2,), fillvalue=fill)
        d[:2] = np.array([(0, 1.0), (1, 2.0)], dtype=dtype)
    store = parse(path)
    assert refs_and_inline(store, "v") == (1, 0)
    assert_matches_h5py(path, store, ["v"])
    assert virtual(store, "v")[5].tolist() == (1, -1.5)


def test_netcdf_compounds_read_as_xarray_does(tmp_path: Path) -> None:
    inner = np.dtype([("x", "<f4"), ("y", "<i2")])
    outer = np.dtype([("a", "<i4"), ("n", inner), ("z", "<f8")])
    path = tmp_path / "compound.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("t", 3)
        nc.createCompoundType(inner, "inner_t")
        kind = nc.createCompoundType(outer, "outer_t")
        rec = nc.createVariable("rec", kind, ("t",))
        rec[:2] = np.array([(1, (2.5, 3), 4.0), (5, (6.5, 7), 8.0)], dtype=outer)
    virtual_ds = assert_virtual_equals_native(path)
    assert virtual_ds["rec"].values[1].tolist() == (5, (6.5, 7), 8.0)
    store = parse(path)
    assert refs_and_inline(store, "rec") == (0, 1)  # netCDF-C aligns members: inline
    assert_matches_h5py(path, store, ["rec"])


@pytest.mark.parametrize(
    ("dtype", "words"),
    [
        (np.dtype([("a", "<i4"), ("v", "<f4", (3,))]), "array"),
        (np.dtype([("a", "<i4"), ("n", [("v", "<f8", (2, 2))])]), "array"),
        (np.dtype([("a", "<i4"), ("s", h5py.string_dtype())]), "variable-length"),
        (np.dtype([("a", "<i4"), ("r", h5py.ref_dtype)]), "reference"),
    ],
    ids=["array-member", "nested-array-member", "vlen-member", "reference-member"],
)
def test_compounds_zarr_cannot_hold_are_refused(tmp_path: Path, dtype: Any, words: str) -> None:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", shape=(2,), dtype=dtype)
    with pytest.raises(UnsupportedFeatureError) as caught:
        parse(path)
    message = str(caught.value)
    assert "'v'" in message and "compound" in message and words in message


def test_compound_with_fill_value_attribute_is_refused(tmp_path: Path) -> None:
    dtype = np.dtype([("a", "<i4"), ("b", "<f8")])
    path = tmp_path / "fill.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("rec", data=np.zeros(2, dtype))
        f["rec"].attrs["_FillValue"] = np.array((-1, -1.0), dtype)
    with pytest.raises(UnsupportedFeatureError, match="_FillValue"):
        parse(path)


# -- enum -------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["i1", "<u2", ">u2", ">i8"])
def test_h5py_enums_are_referenced_as_their_base_integers(tmp_path: Path, base: str) -> None:
    kind = h5py.enum_dtype({"RED": 0, "GREEN": 1, "BLUE": 2}, basetype=base)
    path = tmp_path / "enum.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("colour", data=np.array([0, 2, 1, 2], dtype=base), dtype=kind)
        f.create_dataset(
            "chunked", data=np.array([[0, 1], [2, 0]], dtype=base), dtype=kind, chunks=(1, 2)
        )
        f.create_dataset("flags", data=np.array([True, False, True]))  # h5py: enum FALSE/TRUE
    store = parse(path)
    for name in ("colour", "chunked", "flags"):
        assert refs_and_inline(store, name)[0] > 0 and not array_of(store, name).metadata.attributes
    assert virtual(store, "colour").dtype == np.dtype(base).newbyteorder("=")
    assert virtual(store, "flags").dtype == np.bool_
    assert_matches_h5py(path, store, ["colour", "chunked", "flags"])
    assert_virtual_equals_native(path, engine="netcdf4")


def test_netcdf_enums_read_as_xarray_does(tmp_path: Path) -> None:
    path = tmp_path / "enum.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("station", 5)
        kind = nc.createEnumType("u1", "cloud_t", {"clear": 0, "cumulus": 1, "missing": 255})
        with_fill = nc.createVariable("cloud", kind, ("station",), fill_value=255)
        with_fill[:3] = [0, 1, 0]
        plain = nc.createVariable("cloud2", kind, ("station",))
        plain[:] = [1, 1, 0, 0, 1]
    virtual_ds = assert_virtual_equals_native(path)
    assert virtual_ds["cloud"].dtype == np.float32  # masked where _FillValue, like netCDF4
    assert virtual_ds["cloud2"].dtype == np.uint8 and not virtual_ds["cloud2"].attrs
    assert_matches_h5py(path, parse(path), ["cloud", "cloud2"])


# -- opaque, bitfield, numbers ----------------------------------------------------------------


def test_opaque_is_referenced_as_raw_bytes(tmp_path: Path) -> None:
    path = tmp_path / "opaque.h5"
    blobs = np.array([b"\x01\x02\x00", b"\xff\x00\x00", b"\x00\x00\x00"], dtype="V3")
    times = np.array(["2020-01-01T00:00:00", "1969-12-31T23:59:59"], dtype="M8[s]")
    with h5py.File(path, "w") as f:
        f.create_dataset("blob", data=blobs)
        f.create_dataset("chunked", data=np.tile(blobs, 3), chunks=(4,))
        f.create_dataset("time", data=times.astype(h5py.opaque_dtype(times.dtype)))
    store = parse(path)
    for name in ("blob", "chunked", "time"):
        assert refs_and_inline(store, name)[0] > 0
    assert array_of(store, "blob").metadata.data_type.to_json(zarr_format=3)["name"] == (
        "raw_bytes"
    )
    assert virtual(store, "blob").tobytes() == blobs.tobytes()
    assert virtual(store, "time").tolist() == times.tolist()
    assert_matches_h5py(path, store, ["blob", "chunked", "time"])


@pytest.mark.parametrize(
    ("bits", "order"),
    # h5py can't read a big-endian 8-bit bitfield at all (no conversion path)
    [(8, "LE"), (16, "LE"), (16, "BE"), (32, "LE"), (32, "BE"), (64, "LE"), (64, "BE")],
)
def test_bitfields_are_referenced_as_unsigned_integers(
    tmp_path: Path, bits: int, order: str
) -> None:
    tid = getattr(h5t, f"STD_B{bits}{order}").copy()
    dtype = np.dtype(f"{'<' if order == 'LE' else '>'}u{bits // 8}")
    values = (np.arange(10, dtype=np.uint64) * 0x0101010101010101 % (1 << min(bits, 63))).astype(
        dtype
    )
    path = tmp_path / "bits.h5"
    with h5py.File(path, "w") as f:
        write_raw(f, "bits", tid, values)
        write_raw(f, "chunked", tid, values, chunks=(3,))
    store = parse(path)
    assert refs_and_inline(store, "bits")[0] > 0 and refs_and_inline(store, "chunked")[0] == 4
    assert virtual(store, "bits").tolist() == values.tolist()
    assert_matches_h5py(path, store, ["bits", "chunked"])


@pytest.mark.parametrize("dtype", ["<f2", ">f2", "<c8", ">c8", "<c16", ">c16"])
def test_float16_and_complex_are_referenced(tmp_path: Path, dtype: str) -> None:
    values = np.array([1.5, -0.0, np.inf, np.nan, 65504.0]).astype(dtype)
    if np.dtype(dtype).kind == "c":
        values = values + 1j * values[::-1]
    path = tmp_path / "numbers.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=values, chunks=(2,))
        f.create_dataset("scalar", data=values[0])
    store = parse(path)
    assert refs_and_inline(store, "v") == (3, 0)
    # h5py is the oracle: netCDF-C has no float16, and crashes reading h5py's complex numbers
    assert_matches_h5py(path, store, ["v", "scalar"])


def test_integers_with_unusual_precision_are_inline(tmp_path: Path) -> None:
    tid = h5t.STD_I32LE.copy()
    tid.set_precision(20)
    tid.set_offset(4)
    path = tmp_path / "precision.h5"
    with h5py.File(path, "w") as f:
        space = h5s.create_simple((5,))
        dsid = h5d.create(f.id, b"v", tid, space)
        dsid.write(h5s.ALL, h5s.ALL, np.array([0, 1, -1, 1000, -5000], dtype="<i4"))
    store = parse(path)
    assert refs_and_inline(store, "v") == (0, 1)
    assert_matches_h5py(path, store, ["v"])
    assert virtual(store, "v").tolist() == [0, 1, -1, 1000, -5000]


# -- references and other refused types -------------------------------------------------------


def test_object_references_become_paths(tmp_path: Path) -> None:
    path = tmp_path / "refs.h5"
    with h5py.File(path, "w") as f:
        target = f.create_dataset("data", data=np.arange(4))
        group = f.create_group("sub")
        refs = f.create_dataset("refs", shape=(3,), dtype=h5py.ref_dtype)
        refs[0], refs[1] = target.ref, group.ref  # refs[2] is a null reference
        group.create_dataset("back", data=target.ref, dtype=h5py.ref_dtype)
    store = parse(path)
    assert virtual(store, "refs").tolist() == ["/data", "/sub", ""]
    assert virtual(store, "sub/back").tolist() == "/data"
    assert refs_and_inline(store, "refs") == (0, 1)
    assert_matches_h5py(path, store, ["refs", "sub/back"])


def test_region_references_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "regions.h5"
    with h5py.File(path, "w") as f:
        target = f.create_dataset("data", data=np.arange(10))
        regions = f.create_dataset("regions", shape=(1,), dtype=h5py.regionref_dtype)
        regions[0] = target.regionref[2:5]
    with pytest.raises(UnsupportedFeatureError, match="region references") as caught:
        parse(path)
    assert "'regions'" in str(caught.value)
    assert list(parse(path, drop_variables=["regions"]).group.arrays) == ["data"]


@pytest.mark.parametrize(
    ("dtype", "words"),
    [
        (h5py.vlen_dtype(np.dtype("i4")), "ragged"),
        (np.dtype(("<i4", (3,))), "arrays"),
    ],
    ids=["ragged", "array-elements"],
)
def test_types_zarr_cannot_hold_are_refused(tmp_path: Path, dtype: Any, words: str) -> None:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", shape=(2,), dtype=dtype)
    with h5py.File(path, "r") as f, pytest.raises(UnsupportedFeatureError, match=words) as caught:
        plan_type(f["v"], url="file:///x.h5", name="v", fill_value=None)
    assert "'v'" in str(caught.value) and "drop_variables" in str(caught.value)


# -- the corpus -------------------------------------------------------------------------------

HDF5 = CORPUS / "hdf5"
NETCDF4 = CORPUS / "netcdf4"

#: file -> datasets to drop because they are refused for reasons tested elsewhere
HDF5_FILES: dict[str, list[str]] = {
    "bes/Scalar_compact_str.h5": [],
    "bes/Scalar_compact_vlstr.h5": [],
    "bes/Scalar_contiguous_vlstr.h5": [],
    "bes/chunked_comp_fstr.h5": [],
    "bes/chunked_compound.h5": [],
    "bes/chunked_scalar_string.h5": [],
    "bes/chunked_string_array.h5": [],
    "bes/comp_array2_udf_nfv_chunk_cmp_right.h5": [],
    "bes/comp_scalar_be.h5": [],
    "bes/compact_example.h5": [],
    "bes/d_objref.h5": [],
    "bes/grid_1_2d.h5": [],
    "bes/special_fixed_str.h5": [],
    "bes/t_big_str.h5": [],
    "bes/t_enum_grp.h5": [],
    "bes/t_vl_str_dset_big.h5": [],
    "bes/t_vl_string.h5": [],
    "bes/t_vl_string_chunk.h5": [],
    "bes/t_vl_string_compact.h5": [],
    "bes/vl_str_array.h5": [],
    "bes/ntypes.h5": [
        "Dataset1",  # region references
        "array_type",  # array-typed elements
        "array_type_2",
        "compound_type_3",  # array member
        "vl_type",  # ragged
    ],
    "jhdf/bitfield_datasets.hdf5": [],
    "jhdf/chunked_v4_datasets.hdf5": [],
    "jhdf/compound_datasets_latest.hdf5": [
        "array_vlen_chunked_compound",
        "array_vlen_contiguous_compound",
        "chunked_compound",
        "contiguous_compound",
        "vlen_chunked_compound",
        "vlen_contiguous_compound",
    ],
    "jhdf/opaque_datasets_latest.hdf5": [],
    "jhdf/test_compact_datasets_latest.hdf5": [],
    "jhdf/test_enum_datasets_latest.hdf5": [],
    "jhdf/test_string_datasets_earliest.hdf5": [],
    "jhdf/test_string_datasets_latest.hdf5": [],
    "jhdf/utf8-fixed-length.hdf5": [],
    "kerchunk/NEONDSTowerTemperatureData.hdf5": [],
    "kerchunk/vlen.h5": [],
    "netcdf-c/ref_tst_h_compounds.h5": [],
}

#: corpus files that hdf.py can only read exactly once it reads inline values with
#: ``TypePlan.read`` (compact space-padded strings, which h5py's own read strips)
NEEDS_PLAN_READ = {"bes/t_string_compact.h5"}

#: file -> words of the refusal
HDF5_REFUSED = {
    "bes/d_regref.h5": "region references",
    "bes/tcompound.h5": "array",
    "bes/compound_filled_chunk.h5": "array",
    "jhdf/test_vlen_datasets_latest.hdf5": "ragged",
    "kerchunk/vlen2.h5": "variable-length",
    "netcdf4:netcdf-c/ref_tst_compounds.nc": "_FillValue",
    "netcdf4:netcdf-c/ref_tst_compounds2.nc": "array",
    "netcdf4:bes/ref_tst_opaque_data.nc": "_FillValue",
}


def corpus_path(name: str) -> Path:
    return NETCDF4 / name.split(":", 1)[1] if name.startswith("netcdf4:") else HDF5 / name


def all_arrays(store: ManifestStore) -> list[str]:
    names: list[str] = []

    def walk(group: Any, prefix: str) -> None:
        names.extend(prefix + name for name in group.arrays)
        for name, sub in group.groups.items():
            walk(sub, f"{prefix}{name}/")

    walk(store.group, "")
    return names


corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")


@corpus
@pytest.mark.parametrize(
    "name",
    [pytest.param(n) for n in sorted({*HDF5_FILES, *NEEDS_PLAN_READ})],
)
def test_corpus_hdf5_types_match_h5py(name: str) -> None:
    path = HDF5 / name
    store = parse(path, drop_variables=HDF5_FILES.get(name, []))
    names = all_arrays(store)
    assert names
    assert_matches_h5py(path, store, names)


@corpus
@pytest.mark.parametrize(
    "name",
    [
        "bes/Scalar_compact_str.h5",
        "bes/chunked_comp_fstr.h5",
        "bes/chunked_string_array.h5",
        "bes/special_fixed_str.h5",
        "bes/t_vl_string.h5",
        "bes/vl_str_array.h5",
        "jhdf/test_string_datasets_latest.hdf5",
        "jhdf/utf8-fixed-length.hdf5",
        "jhdf/test_enum_datasets_latest.hdf5",
        "kerchunk/vlen.h5",
        "netcdf-c/ref_tst_h_compounds.h5",
    ],
)
def test_corpus_hdf5_types_match_netcdf(name: str) -> None:
    """Values and attributes as ``xr.open_dataset`` shows them (netCDF-C names phony
    dimensions its own way, which is not what this checks)."""
    path = HDF5 / name
    virtual_ds = read_through_manifest_store(parse(path))
    with xr.open_dataset(path, engine="netcdf4") as native_ds:
        assert set(native_ds.variables) <= set(virtual_ds.variables)
        for key, variable in native_ds.variables.items():
            got = virtual_ds[key].variable
            assert got.attrs == variable.attrs, key
            assert equal(got.to_numpy(), variable.to_numpy()), key


@corpus
@pytest.mark.parametrize(
    "name", ["bes/nc4_strings.nc", "bes/ref_tst_enum_data.nc", "netcdf-c/ref_tst_irish_rover.nc"]
)
def test_corpus_netcdf4_types_match_xarray(name: str) -> None:
    assert_virtual_equals_native(NETCDF4 / name)


@corpus
@pytest.mark.parametrize("name", sorted(HDF5_REFUSED))
def test_corpus_types_zarr_cannot_hold_are_refused(name: str) -> None:
    path = corpus_path(name)
    with pytest.raises(UnsupportedFeatureError) as caught:
        parse(path)
    message = str(caught.value)
    assert HDF5_REFUSED[name] in message and str(path) in message


def test_xarray_written_string_coordinates_read_back(tmp_path: Path) -> None:
    path = tmp_path / "stations.nc"
    xr.Dataset(
        {"t": (("station",), np.array([1.5, 2.5, 3.5]))},
        coords={"station": ["Genève", "Zürich", ""], "code": ("station", ["GVA", "ZRH", "X"])},
    ).to_netcdf(path, engine="netcdf4")
    virtual_ds = assert_virtual_equals_native(path)
    assert virtual_ds.indexes["station"].tolist() == ["Genève", "Zürich", ""]


def test_char_variable_with_a_fill_value_is_refused_at_parse_time(tmp_path: Path) -> None:
    # xarray's zarr reader can't decode a _FillValue on an S1 array: refuse it up front
    path = tmp_path / "chars.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("n", 3)
        letters = nc.createVariable("letters", "S1", ("n",), fill_value=b"x")
        letters[:] = np.array(list("abc"), "S1")
        nc.createVariable("plain", "S1", ("n",))[:] = np.array(list("abc"), "S1")
    with pytest.raises(UnsupportedFeatureError, match="letters"):
        parse(path)
    assert "plain" in parse(path, drop_variables=["letters"]).group.arrays
