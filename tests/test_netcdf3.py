"""NetCDF-3 parser: every classic format, layout, type and attribute reads back as
``xr.open_dataset`` (netCDF-C) reads it, and damaged files are refused with typed errors.

Files are written at test time by netCDF4-python (CDF-1, CDF-2, CDF-5) and, where it is
installed, scipy (versions 1 and 2); a few malformed headers are built byte by byte. The real
files of ../shared/corpus/netcdf3 are checked too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import pickle
import random
import struct
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import obstore
import pytest
import xarray as xr
from obstore.store import MemoryStore
from oracle import CORPUS, local_registry, read_through_manifest_store, without_nczarr_attributes

import virtualize as vz
from virtualize.errors import InvalidFileError, UnsupportedFeatureError, VirtualizeError
from virtualize.parsers.hdf_common import contiguous_chunks
from virtualize.parsers.netcdf3 import NetCDF3Parser, _contiguous_chunks

pytestmark = pytest.mark.filterwarnings(
    # zarr warns that its S1 data type (netCDF char) has no v3 specification yet
    "ignore::zarr.errors.UnstableSpecificationWarning"
)

FORMATS = {1: "NETCDF3_CLASSIC", 2: "NETCDF3_64BIT_OFFSET", 5: "NETCDF3_64BIT_DATA"}
CLASSIC_TYPES = {"byte": "i1", "short": "i2", "int": "i4", "float": "f4", "double": "f8"}
CDF5_TYPES = {"ubyte": "u1", "ushort": "u2", "uint": "u4", "int64": "i8", "uint64": "u8"}


HAS_SCIPY = importlib.util.find_spec("scipy") is not None


def assert_matches_native(
    path: Path, parser: NetCDF3Parser | None = None, engine: str = "netcdf4", **open_kwargs: Any
) -> xr.Dataset:
    """The virtual read through ManifestStore equals ``xr.open_dataset`` (netCDF-C through
    netCDF4-python by default)."""
    store = (parser or NetCDF3Parser())(str(path), local_registry(path))
    virtual = read_through_manifest_store(store, **open_kwargs)
    with xr.open_dataset(path, engine=engine, **open_kwargs) as native:
        expected = without_nczarr_attributes(native.load())
    xr.testing.assert_identical(virtual, expected)
    return virtual


def parse(path: Path, **options: Any) -> vz.ManifestStore:
    return NetCDF3Parser(**options)(str(path), local_registry(path))


def memory_parse(data: bytes, **options: Any) -> vz.ManifestStore:
    """Parse bytes held in a MemoryStore (no local file)."""
    memory = MemoryStore()
    obstore.put(memory, "f.nc", data)
    registry = vz.ObjectStoreRegistry({"memory://bucket/": memory})
    return NetCDF3Parser(**options)("memory://bucket/f.nc", registry)


def chars(texts: list[str], length: int) -> np.ndarray:
    return netCDF4.stringtochar(np.array(texts, dtype=f"S{length}"))


def write_every_type(path: Path, version: int) -> None:
    """Every type of the format as fixed, record and scalar variables, attributes of every
    type, char arrays, and ``_FillValue``s. Record slabs of 5 bytes (byte, char) and 10 bytes
    (short) need padding between records."""
    types = CLASSIC_TYPES | (CDF5_TYPES if version == 5 else {})
    rng = np.random.default_rng(version)
    with netCDF4.Dataset(path, "w", format=FORMATS[version]) as nc:
        nc.createDimension("time", None)
        nc.createDimension("y", 5)
        nc.createDimension("x", 3)
        nc.createDimension("strlen", 7)
        nc.title = "every type"
        nc.with_nul = "a\x00b"
        nc.empty = ""
        nc.utf8 = "Zürich ☂"
        for name, code in types.items():
            dtype = np.dtype(code)
            info = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
            values = rng.uniform(max(float(info.min), -1e6), min(float(info.max), 1e6), (4, 5))
            values = values.astype(dtype)
            nc.setncattr(f"{name}_one", np.array([info.max], dtype=dtype))
            nc.setncattr(f"{name}_many", np.array([info.min, 0, info.max], dtype=dtype))
            fill = values[0, 0]
            fixed = nc.createVariable(f"fixed_{name}", code, ("y", "x"), fill_value=fill)
            fixed[:] = values.T[:, :3]
            fixed.long_name = f"fixed {name}"
            fixed.valid_range = np.array([info.min, info.max], dtype=dtype)
            record = nc.createVariable(f"record_{name}", code, ("time", "y"))
            record[:] = values
            scalar = nc.createVariable(f"scalar_{name}", code, ())
            scalar[...] = values[1, 1]
        float_nan = nc.createVariable("float_nan_fill", "f4", ("x",), fill_value=np.nan)
        float_nan[:] = [1.0, np.nan, 3.0]
        names = nc.createVariable("names", "S1", ("x", "strlen"))
        names[:] = chars(["a", "abcdefg", ""], 7)
        names.comment = "fixed-width strings"
        letter = nc.createVariable("letter", "S1", ())
        letter[...] = np.array(b"q", dtype="S1")
        record_names = nc.createVariable("record_names", "S1", ("time", "strlen"))
        record_names[:] = chars(["one", "two", "three", "four"], 7)


@pytest.mark.parametrize("version", sorted(FORMATS))
def test_every_type_attribute_and_char_array_reads_back(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"types{version}.nc"
    write_every_type(path, version)
    virtual = assert_matches_native(path)
    assert virtual["names"].dims == ("x",) and virtual["names"].dtype == np.dtype("S7")
    assert virtual.attrs["utf8"] == "Zürich ☂" and virtual.attrs["with_nul"] == "ab"
    assert magic_version(path) == version
    undecoded = assert_matches_native(path, mask_and_scale=False, concat_characters=False)
    assert undecoded["names"].dtype == np.dtype("S1")


def magic_version(path: Path) -> int:
    return path.read_bytes()[3]


def test_cdf5_types_have_their_own_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "cdf5.nc"
    write_every_type(path, 5)
    store = parse(path)
    arrays = store.group.arrays
    for name, code in (CLASSIC_TYPES | CDF5_TYPES).items():
        assert arrays[f"record_{name}"].dtype == np.dtype(code)
    assert arrays["names"].dtype == np.dtype("S1")


def write_records(path: Path, version: int, numrecs: int, variables: dict[str, Any]) -> None:
    """Record variables ``name -> (dtype, inner shape)`` with ``numrecs`` records, plus a
    fixed coordinate."""
    with netCDF4.Dataset(path, "w", format=FORMATS[version]) as nc:
        nc.createDimension("time", None)
        time = nc.createVariable("time", "f8", ("time",)) if "time" not in variables else None
        for name, (code, inner) in variables.items():
            dims = ("time", *(f"{name}_{axis}" for axis in range(len(inner))))
            for dim, length in zip(dims[1:], inner, strict=True):
                nc.createDimension(dim, length)
            variable = nc.createVariable(name, code, dims)
            if numrecs:
                values = np.arange(numrecs * int(np.prod(inner))) % 120
                variable[:] = values.reshape(numrecs, *inner).astype(code)
        if time is not None and numrecs:
            time[:] = np.arange(numrecs, dtype="f8")


@pytest.mark.parametrize("version", sorted(FORMATS))
def test_record_variables_of_odd_sizes_are_strided_by_the_padded_record(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "records.nc"
    write_records(path, version, 7, {"a": ("i1", (3,)), "b": ("i2", (1,)), "c": ("f4", (2, 3))})
    assert_matches_native(path)
    arrays = parse(path).group.arrays
    # slabs of 8 (time), 3, 2 and 24 bytes; padded to 4 bytes: a record is 8 + 4 + 4 + 24
    for name, slab in (("time", 8), ("a", 3), ("b", 2), ("c", 24)):
        manifest = arrays[name].manifest
        assert arrays[name].chunk_shape[0] == 1
        offsets = manifest.offsets.reshape(-1)
        assert (np.diff(offsets) == 40).all()
        assert (manifest.lengths == slab).all()
    data = path.read_bytes()
    c = arrays["c"].manifest
    third = data[int(c.offsets[3, 0, 0]) : int(c.offsets[3, 0, 0] + c.lengths[3, 0, 0])]
    expected = (np.arange(7 * 6) % 120).reshape(7, 2, 3)[3].astype(">f4")
    np.testing.assert_array_equal(np.frombuffer(third, ">f4").reshape(2, 3), expected)


@pytest.mark.parametrize("version", [1, 5])
def test_a_lone_record_variable_has_unpadded_records_grouped_into_chunks(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "lone.nc"
    write_records(path, version, 1000, {"time": ("i2", (3,))})
    parser = NetCDF3Parser(max_chunk_bytes=600)
    assert_matches_native(path, parser)
    array = parser(str(path), local_registry(path)).group.arrays["time"]
    # 6-byte records, no padding: 100 records (a divisor of 1000) per 600-byte chunk
    assert array.chunk_shape == (100, 3)
    assert array.manifest.shape_chunk_grid == (10, 1)
    offsets = array.manifest.offsets.reshape(-1)
    assert (np.diff(offsets) == 600).all() and (array.manifest.lengths == 600).all()
    assert int(offsets[-1]) + 600 == path.stat().st_size


def test_a_prime_record_count_falls_back_to_one_record_per_chunk(tmp_path: Path) -> None:
    path = tmp_path / "prime.nc"
    write_records(path, 1, 997, {"time": ("i2", (3,))})
    parser = NetCDF3Parser(max_chunk_bytes=600)
    assert_matches_native(path, parser)
    array = parser(str(path), local_registry(path)).group.arrays["time"]
    assert array.chunk_shape == (1, 3)
    assert (np.diff(array.manifest.offsets.reshape(-1)) == 6).all()


def test_a_record_larger_than_max_chunk_bytes_is_cut_along_its_first_inner_axis(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big_records.nc"
    write_records(path, 2, 3, {"field": ("f8", (40, 10)), "flag": ("i1", (1,))})
    parser = NetCDF3Parser(max_chunk_bytes=1000)
    assert_matches_native(path, parser)
    array = parser(str(path), local_registry(path)).group.arrays["field"]
    assert array.chunk_shape == (1, 10, 10)
    assert array.manifest.shape_chunk_grid == (3, 4, 1)
    assert (array.manifest.lengths == 800).all()


def test_a_large_fixed_variable_is_split_into_chunks_along_its_first_axis(
    tmp_path: Path,
) -> None:
    path = tmp_path / "large.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as nc:
        nc.createDimension("y", 100)
        nc.createDimension("x", 50)
        nc.createVariable("field", "f8", ("y", "x"))[:] = np.arange(5000.0).reshape(100, 50)
        nc.createVariable("small", "i2", ("x",))[:] = np.arange(50)
    parser = NetCDF3Parser(max_chunk_bytes=8000)
    assert_matches_native(path, parser)
    arrays = parser(str(path), local_registry(path)).group.arrays
    assert arrays["field"].chunk_shape == (20, 50)
    assert arrays["field"].manifest.shape_chunk_grid == (5, 1)
    assert arrays["small"].chunk_shape == (50,)
    assert NetCDF3Parser()(str(path), local_registry(path)).group.arrays["field"].chunk_shape == (
        100,
        50,
    )


def test_chunks_of_fixed_variables_follow_the_hdf5_parsers_rule() -> None:
    cases = [
        ((100, 50), 8, 8000),
        ((1000,), 4, 100),
        ((997, 3), 2, 600),
        ((1, 10, 10), 8, 10),
        ((), 8, 1),
        ((4096, 4096), 4, 16 * 1024 * 1024),
        ((10_000_000,), 8, 16 * 1024 * 1024),
        ((6, 7), 1, 5),
    ]
    for shape, itemsize, max_bytes in cases:
        assert _contiguous_chunks(shape, itemsize, max_bytes) == contiguous_chunks(
            shape, itemsize, max_bytes
        ), shape


@pytest.mark.parametrize("version", sorted(FORMATS))
def test_zero_records(tmp_path: Path, version: int) -> None:
    path = tmp_path / "empty.nc"
    write_records(path, version, 0, {"a": ("i1", (3,)), "b": ("f8", (2,))})
    virtual = assert_matches_native(path)
    assert virtual.sizes["time"] == 0 and virtual["b"].shape == (0, 2)


def streaming_copy(path: Path, version: int, cut: int = 0) -> Path:
    """The file with its record count replaced by "streaming" (all bits set) and ``cut``
    bytes removed from its end."""
    data = bytearray(path.read_bytes())
    width = 8 if version == 5 else 4
    data[4 : 4 + width] = b"\xff" * width
    streaming = path.with_name("streaming_" + path.name)
    streaming.write_bytes(bytes(data[: len(data) - cut]))
    return streaming


@pytest.mark.parametrize("version", sorted(FORMATS))
def test_streaming_record_count_is_recovered_from_the_file_size(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "records.nc"
    write_records(path, version, 9, {"a": ("f4", (3,)), "b": ("i2", (1,))})
    # netCDF-C can't open streaming files: compare with the file before patching
    with xr.open_dataset(path, engine="netcdf4") as native:
        expected = native.load()
    for cut in (0, 2):  # the last record's padding may be missing
        streaming = streaming_copy(path, version, cut)
        virtual = read_through_manifest_store(parse(streaming))
        xr.testing.assert_identical(virtual, expected)


def test_streaming_lone_record_variable(tmp_path: Path) -> None:
    path = tmp_path / "lone.nc"
    write_records(path, 2, 11, {"time": ("i1", (3,))})
    with xr.open_dataset(path, engine="netcdf4") as native:
        expected = native.load()
    virtual = read_through_manifest_store(parse(streaming_copy(path, 2)))
    xr.testing.assert_identical(virtual, expected)


@pytest.mark.filterwarnings("ignore:variable 'packed:xarray.SerializationWarning")
@pytest.mark.parametrize("code", ["f4", "f8"])
def test_packed_variables_decode_as_xarray_decodes_them(tmp_path: Path, code: str) -> None:
    path = tmp_path / f"packed_{code}.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as nc:
        nc.set_auto_maskandscale(False)
        nc.createDimension("time", None)
        nc.createDimension("x", 5)
        raw = np.array([-32768, -1, 0, 100, 32767], dtype="i2")
        for name, dims, values in (
            ("packed", ("x",), raw),
            ("packed_records", ("time", "x"), np.stack([raw, raw[::-1]])),
        ):
            variable = nc.createVariable(name, "i2", dims, fill_value=np.int16(-32768))
            variable.scale_factor = np.array(0.01, dtype=code)
            variable.add_offset = np.array(273.15, dtype=code)
            variable.missing_value = np.int16(-1)
            variable.set_auto_maskandscale(False)
            variable[...] = values
        scale_only = nc.createVariable("scale_only", "i1", ("x",))
        scale_only.scale_factor = np.array(0.5, dtype=code)
        scale_only.set_auto_maskandscale(False)
        scale_only[:] = np.arange(5, dtype="i1")
    virtual = assert_matches_native(path)
    assert virtual["packed"].dtype == np.dtype("float32" if code == "f4" else "float64")
    assert np.isnan(virtual["packed"].values[:2]).all()


def test_drop_variables_and_the_root_group(tmp_path: Path) -> None:
    path = tmp_path / "types.nc"
    write_every_type(path, 1)
    store = parse(path, drop_variables=["names", "record_byte"])
    assert "names" not in store.group.arrays and "record_byte" not in store.group.arrays
    assert "fixed_byte" in store.group.arrays
    assert set(parse(path, group="/").group.arrays) == set(parse(path).group.arrays)
    with pytest.raises(InvalidFileError, match="only the root group"):
        parse(path, group="forecast")


def test_the_parser_is_picklable(tmp_path: Path) -> None:
    path = tmp_path / "records.nc"
    write_records(path, 1, 3, {"a": ("i1", (3,))})
    parser = NetCDF3Parser(drop_variables=["time"], max_chunk_bytes=1024)
    copy = pickle.loads(pickle.dumps(parser))
    assert repr(copy) == repr(parser)
    assert set(copy(str(path), local_registry(path)).group.arrays) == {"a"}


def test_a_header_larger_than_the_first_read_is_read_in_more_requests(tmp_path: Path) -> None:
    path = tmp_path / "types.nc"
    write_every_type(path, 2)
    small = parse(path, header_bytes=16)
    assert small.group == parse(path).group
    xr.testing.assert_identical(
        read_through_manifest_store(small), read_through_manifest_store(parse(path))
    )


def test_bytes_are_read_through_the_registry_store(tmp_path: Path) -> None:
    path = tmp_path / "records.nc"
    write_records(path, 5, 4, {"a": ("u2", (3,)), "b": ("i8", (2,))})
    virtual = read_through_manifest_store(memory_parse(path.read_bytes()))
    with xr.open_dataset(path, engine="netcdf4") as native:
        xr.testing.assert_identical(virtual, native.load())


# -- files written by scipy ------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_files_written_by_scipy(tmp_path: Path, version: int) -> None:
    netcdf = pytest.importorskip("scipy.io")
    path = tmp_path / f"scipy{version}.nc"
    with netcdf.netcdf_file(path, "w", version=version) as nc:
        nc.history = "written by scipy"
        nc.createDimension("time", None)
        nc.createDimension("x", 3)
        nc.createDimension("strlen", 5)
        time = nc.createVariable("time", "f8", ("time",))
        time[:] = np.arange(4.0)
        time.units = "hours since 2000-01-01"
        small = nc.createVariable("small", "i1", ("time", "x"))
        small[:] = np.arange(12).reshape(4, 3)
        short = nc.createVariable("short", "i2", ("time",))
        short[:] = np.arange(4)
        short.scale_factor = np.float32(0.5)
        fixed = nc.createVariable("fixed", "f4", ("x",))
        fixed[:] = [1.5, 2.5, 3.5]
        fixed.valid_range = np.array([0.0, 10.0], dtype="f4")
        label = nc.createVariable("label", "c", ("x", "strlen"))
        label[:] = chars(["ab", "cde", "fghij"], 5)
    assert magic_version(path) == version
    assert_matches_native(path)
    assert_matches_native(path, engine="scipy")
    lone = tmp_path / f"scipy_lone{version}.nc"
    with netcdf.netcdf_file(lone, "w", version=version) as nc:
        nc.createDimension("time", None)
        nc.createDimension("x", 3)
        nc.createVariable("odd", "i2", ("time", "x"))[:] = np.arange(15).reshape(5, 3)
    assert_matches_native(lone, NetCDF3Parser(max_chunk_bytes=6))
    assert_matches_native(lone, engine="scipy")


# -- malformed files -------------------------------------------------------------------------


def header(
    version: int,
    dims: list[tuple[str, int]],
    variables: list[tuple[str, list[int], int, int]],
    *,
    numrecs: int = 0,
    var_attrs: dict[str, bytes] | None = None,
) -> bytes:
    """A header built byte by byte: ``variables`` are ``(name, dim ids, type code, begin)``,
    ``var_attrs`` raw attribute lists per variable."""
    count = ">Q" if version == 5 else ">I"
    offset = ">I" if version == 1 else ">Q"

    def name(text: str) -> bytes:
        raw = text.encode()
        return struct.pack(count, len(raw)) + raw + b"\0" * (-len(raw) % 4)

    def tag(code: int, n: int) -> bytes:
        return struct.pack(">i", code) + struct.pack(count, n)

    out = b"CDF" + bytes([version]) + struct.pack(count, numrecs)
    out += tag(10, len(dims)) + b"".join(name(d) + struct.pack(count, n) for d, n in dims)
    out += tag(0, 0)
    out += tag(11, len(variables))
    for var_name, ids, code, begin in variables:
        out += name(var_name) + struct.pack(count, len(ids))
        out += b"".join(struct.pack(count, i) for i in ids)
        out += (var_attrs or {}).get(var_name, tag(0, 0))
        out += struct.pack(">i", code) + struct.pack(count, 4) + struct.pack(offset, begin)
    return out


def char_attribute(name: str, text: bytes) -> bytes:
    """A one-attribute list holding a char attribute (CDF-1/2 layout)."""
    raw = name.encode()
    return (
        struct.pack(">ii", 12, 1)
        + struct.pack(">I", len(raw))
        + raw
        + b"\0" * (-len(raw) % 4)
        + struct.pack(">iI", 2, len(text))
        + text
        + b"\0" * (-len(text) % 4)
    )


def with_data(head: bytes, nbytes: int) -> bytes:
    return head + bytes(nbytes)


def test_a_handmade_header_reads() -> None:
    head = header(1, [("x", 3)], [("v", [0], 4, 200)])
    store = memory_parse(with_data(head.ljust(200, b"\0"), 12))
    assert store.group.arrays["v"].shape == (3,)


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: header(1, [("x", 3)], [("v", [0], 10, 200)]), "only CDF-5"),
        (lambda: header(2, [("x", 3)], [("v", [0], 11, 200)]), "only CDF-5"),
        (lambda: header(1, [("x", 3)], [("v", [0], 42, 200)]), "unknown type code 42"),
        (lambda: header(1, [("x", 3)], [("v", [1], 4, 200)]), "dimension ids"),
        (lambda: header(1, [("t", 0), ("u", 0)], []), "several record"),
        (lambda: header(1, [("x", 3), ("t", 0)], [("v", [0, 1], 4, 200)]), "not its first"),
        (lambda: header(1, [("x", 3)], [("v", [0], 4, 8)]), "inside the header"),
        (lambda: header(1, [("x", 3)], [("a/b", [0], 4, 200)]), "'/'"),
        (lambda: header(1, [("x", 3)], [("v", [0], 4, 200), ("v", [0], 4, 212)]), "repeated"),
        (lambda: b"CDF\x03" + bytes(60), "version byte 3"),
        (lambda: b"CDF\x00" + bytes(60), "version byte 0"),
        (lambda: b"\x89HDF\r\n\x1a\n" + bytes(60), "not a netCDF-3 file"),
        (lambda: b"", "truncated"),
        (lambda: b"CDF\x01" + struct.pack(">iiI", 0, 7, 1) + bytes(48), "found tag 7"),
        (lambda: header(1, [("x", 3)], [])[:-6], "truncated"),
        (lambda: header(1, [("x", 1 << 30)], [("v", [0], 6, 200)]), "past the end"),
    ],
)
def test_malformed_headers_raise_invalid_file_error(build: Any, words: str) -> None:
    data = build()
    if len(data) > 40:
        data = with_data(data.ljust(200, b"\0"), 64)
    with pytest.raises(InvalidFileError) as caught:
        memory_parse(data)
    message = str(caught.value)
    assert words in message and "memory://bucket/f.nc" in message


def test_a_type_only_cdf5_has_names_the_variable() -> None:
    data = with_data(header(1, [("x", 3)], [("counts", [0], 10, 200)]).ljust(200, b"\0"), 24)
    with pytest.raises(InvalidFileError) as caught:
        memory_parse(data)
    assert caught.value.variable == "counts" and "int64" in str(caught.value)


def test_a_fill_value_of_another_type_is_unsupported_and_can_be_dropped() -> None:
    attrs = {"v": char_attribute("_FillValue", b"ab")}
    head = header(1, [("x", 3)], [("v", [0], 4, 200), ("w", [0], 4, 212)], var_attrs=attrs)
    data = with_data(head.ljust(200, b"\0"), 24)
    with pytest.raises(UnsupportedFeatureError) as caught:
        memory_parse(data)
    assert caught.value.variable == "v" and "drop_variables=['v']" in str(caught.value)
    assert set(memory_parse(data, drop_variables=["v"]).group.arrays) == {"w"}


def test_a_char_array_with_a_fill_value_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "masked_chars.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as nc:
        nc.createDimension("x", 3)
        masked = nc.createVariable("masked", "S1", ("x",), fill_value=b"x")
        masked[:] = np.array([b"a", b"x", b"c"], dtype="S1")
        nc.createVariable("plain", "S1", ("x",))[:] = np.array([b"a", b"x", b"c"], dtype="S1")
    with pytest.raises(UnsupportedFeatureError) as caught:
        parse(path)
    assert caught.value.variable == "masked" and "_FillValue" in str(caught.value)
    assert "drop_variables=['masked']" in str(caught.value)
    virtual = read_through_manifest_store(parse(path, drop_variables=["masked"]))
    with xr.open_dataset(path, engine="netcdf4", drop_variables=["masked"]) as native:
        xr.testing.assert_identical(virtual, native.load())


def test_truncated_files_are_refused_at_every_length(tmp_path: Path) -> None:
    path = tmp_path / "records.nc"
    write_records(path, 2, 3, {"a": ("i2", (3,)), "time": ("f8", ())})
    data = path.read_bytes()
    for length in range(len(data)):
        with pytest.raises(InvalidFileError, match="truncated"):
            memory_parse(data[:length])
    assert set(memory_parse(data).group.arrays) == {"a", "time"}


def test_a_truncated_variable_can_be_dropped(tmp_path: Path) -> None:
    path = tmp_path / "fixed.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as nc:
        nc.createDimension("x", 100)
        nc.createVariable("first", "f8", ("x",))[:] = np.arange(100.0)
        nc.createVariable("last", "f8", ("x",))[:] = np.arange(100.0)
    data = path.read_bytes()[:-8]
    with pytest.raises(InvalidFileError) as caught:
        memory_parse(data)
    assert caught.value.variable == "last" and "drop_variables=['last']" in str(caught.value)
    store = memory_parse(data, drop_variables=["last"])
    values = read_through_manifest_store(store)["first"].values
    np.testing.assert_array_equal(values, np.arange(100.0))


@pytest.mark.parametrize("version", sorted(FORMATS))
def test_damaged_headers_give_typed_errors_only(tmp_path: Path, version: int) -> None:
    """Garbage after a valid magic, and random byte changes anywhere in a real header:
    the parser either reads the file or raises a VirtualizeError (never a struct.error or
    IndexError traceback)."""
    path = tmp_path / "types.nc"
    write_every_type(path, version)
    data = path.read_bytes()
    header_end = min(a.manifest.offsets.min() for a in parse(path).group.arrays.values())
    rng = random.Random(version)
    garbage = b"CDF" + bytes([version]) + rng.randbytes(400)
    with pytest.raises(InvalidFileError):
        memory_parse(garbage)
    for _ in range(150):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(4, int(header_end))] = rng.randrange(256)
        with contextlib.suppress(VirtualizeError):
            memory_parse(bytes(damaged))


# -- the corpus ------------------------------------------------------------------------------

FOLDER = CORPUS / "netcdf3"

#: files xarray can't decode with default options: both sides are read with these instead
NATIVE_OPTIONS: dict[str, dict[str, Any]] = {
    # scale_factor and missing_value are text attributes: xarray can't multiply by them
    "bes/fnoc1.nc": {"mask_and_scale": False},
    # 'days since 1961-01-01' on a 365-day calendar needs cftime, which is not installed
    "netcdf4-python/CRM032_test1.nc": {"decode_times": False},
}


def corpus_files() -> list[str]:
    if not FOLDER.is_dir():
        return []
    return sorted(str(p.relative_to(FOLDER)) for p in FOLDER.rglob("*") if p.is_file())


@pytest.mark.skipif(not FOLDER.is_dir(), reason="../shared/corpus is absent")
@pytest.mark.parametrize("name", corpus_files())
def test_corpus_file_matches_native(name: str) -> None:
    assert_matches_native(FOLDER / name, **NATIVE_OPTIONS.get(name, {}))
    if HAS_SCIPY and (FOLDER / name).read_bytes()[3] != 5:  # scipy reads CDF-1 and CDF-2
        assert_matches_native(FOLDER / name, engine="scipy", **NATIVE_OPTIONS.get(name, {}))


@pytest.mark.skipif(not FOLDER.is_dir(), reason="../shared/corpus is absent")
def test_the_corpus_table_names_real_files() -> None:
    present = set(corpus_files())
    assert set(NATIVE_OPTIONS) <= present
    assert len(present) >= 14


# -- through open_virtual_mfdataset and ingest ------------------------------------------------


def write_netcdf3_day(folder: Path, day: int) -> Path:
    path = folder / f"day{day:03d}.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", 3)
        nc.createDimension("lon", 4)
        times = nc.createVariable("time", "i4", ("time",))
        times.units = "days since 2000-01-01"
        times[:] = [day]
        nc.createVariable("lat", "f8", ("lat",))[:] = [10.0, 20.0, 30.0]
        nc.createVariable("lon", "f8", ("lon",))[:] = [0.0, 90.0, 180.0, 270.0]
        tas = nc.createVariable("tas", "i2", ("time", "lat", "lon"), fill_value=-999)
        tas.scale_factor = 0.01
        tas.add_offset = 273.15
        tas[:] = np.arange(12.0).reshape(1, 3, 4) + day
        nc.createVariable("orog", "f4", ("lat", "lon"))[:] = np.arange(12.0).reshape(3, 4)
    return path


def test_netcdf3_archive_through_mfdataset_and_ingest(tmp_path: Path) -> None:
    from obstore.store import LocalStore

    from virtualize.ingest import open_repository

    archive = tmp_path / "archive"
    archive.mkdir()
    files = [write_netcdf3_day(archive, day) for day in range(6)]
    registry = vz.ObjectStoreRegistry({archive.as_uri() + "/": LocalStore(archive)})
    with xr.open_mfdataset(
        files, combine="by_coords", data_vars="minimal", coords="minimal", compat="override"
    ) as opened:
        native = opened.load()
    combined = vz.open_virtual_mfdataset(
        str(archive / "day*.nc"), registry=registry, progress=False
    )  # the format is detected from the files' first bytes
    virtual = read_through_manifest_store(combined.virtualize.to_manifest_store(registry))
    xr.testing.assert_identical(virtual, native)
    report = vz.ingest(
        str(archive / "day*.nc"),
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=registry,
        batch_size=4,
        progress=False,
    )
    assert len(report.commits) == 2
    repository, _ = open_repository(str(tmp_path / "repo"), registry)
    store = repository.readonly_session("main").store
    got = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None).load()
    xr.testing.assert_identical(got, native)
