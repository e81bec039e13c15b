"""HDF5 / netCDF4: files written at test time read back virtually exactly as xarray reads them."""

from __future__ import annotations

from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from oracle import assert_virtual_equals_native, local_registry, read_through_manifest_store

import virtualize as vz
from virtualize.codecs import CFPackingCodec
from virtualize.errors import InvalidFileError, UnsupportedFeatureError
from virtualize.parsers import HDFParser


def sample_dataset() -> xr.Dataset:
    rng = np.random.default_rng(0)
    temperature = rng.normal(280, 10, size=(7, 5, 6)).astype("float32")
    temperature[0, 0, 0] = np.nan
    return xr.Dataset(
        {
            "temperature": (("time", "lat", "lon"), temperature, {"units": "K"}),
            "counts": (("time", "lat"), rng.integers(0, 1000, size=(7, 5)).astype("int32")),
            "flag": ((), np.int8(3)),
        },
        coords={
            "time": pd.date_range("2020-01-01", periods=7, freq="D"),
            "lat": np.linspace(-60, 60, 5),
            "lon": np.arange(6, dtype="float32") * 60,
        },
        attrs={"title": "virtualize test", "version": 2, "scale": [1.5, 2.5]},
    )


ENCODINGS = {
    "default": {},
    "zlib_shuffle": {
        "temperature": {"zlib": True, "shuffle": True, "complevel": 4},
        "counts": {"zlib": True, "shuffle": True},
    },
    "fletcher32": {"temperature": {"fletcher32": True, "zlib": True}},
    "partial_edge_chunks": {
        "temperature": {"chunksizes": (3, 2, 4), "zlib": True},
        "counts": {"chunksizes": (4, 3)},
    },
    "contiguous": {"temperature": {"contiguous": True}, "counts": {"contiguous": True}},
    "packed_int16": {
        "temperature": {
            "dtype": "int16",
            "scale_factor": 0.01,
            "add_offset": 280.0,
            "_FillValue": -32767,
        }
    },
    "nan_fill": {"temperature": {"_FillValue": np.nan}, "counts": {"_FillValue": -1}},
}


@pytest.mark.parametrize("engine", ["netcdf4", "h5netcdf"])
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_xarray_written_files_read_back_exactly(tmp_path: Path, engine: str, encoding: str) -> None:
    path = tmp_path / f"{encoding}.nc"
    sample_dataset().to_netcdf(path, engine=engine, encoding=ENCODINGS[encoding])
    virtual = assert_virtual_equals_native(path)
    assert virtual["temperature"].dtype == xr.open_dataset(path)["temperature"].dtype


def test_codecs_replay_the_filter_pipeline(tmp_path: Path) -> None:
    path = tmp_path / "filters.nc"
    sample_dataset().to_netcdf(
        path,
        engine="netcdf4",
        encoding={"temperature": {"zlib": True, "shuffle": True, "fletcher32": True}},
    )
    store = HDFParser()(str(path), local_registry(path))
    codecs = [c.to_dict()["name"] for c in store.group.arrays["temperature"].metadata.codecs]
    # netCDF-C puts fletcher32 first in the HDF5 pipeline; the codecs follow that order
    assert codecs == ["bytes", "numcodecs.fletcher32", "numcodecs.shuffle", "numcodecs.zlib"]


@pytest.mark.parametrize(
    "dtype",
    [
        "<i1",
        "<u1",
        "<i2",
        ">i2",
        "<u2",
        ">u2",
        "<i4",
        ">i4",
        "<u4",
        ">u8",
        "<i8",
        "<f2",
        "<f4",
        ">f4",
        "<f8",
        ">f8",
        "<c8",
        ">c16",
        "?",
    ],
)
@pytest.mark.parametrize("chunked", [True, False])
def test_every_numeric_dtype_in_both_byte_orders(tmp_path: Path, dtype: str, chunked: bool) -> None:
    path = tmp_path / "dtypes.h5"
    rng = np.random.default_rng(1)
    complex_factor = 1 + 1j if np.dtype(dtype).kind == "c" else 1
    values = (rng.normal(0, 50, size=(9, 4)) * complex_factor).astype(dtype)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=values, chunks=(4, 3) if chunked else None)
    store = HDFParser()(str(path), local_registry(path))
    import zarr

    got = zarr.open_array(store, path="x", mode="r", zarr_format=3)[...]
    assert got.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(got, values)


def float32_packing_file(tmp_path: Path) -> Path:
    """int16 packed with float32 factors (xarray decodes it to float32); element 3 is fill."""
    path = tmp_path / "packed32.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 20)
        variable = nc.createVariable("v", "i2", ("x",), fill_value=np.int16(-999))
        variable.scale_factor = np.float32(0.1)
        variable.add_offset = np.float32(5.0)
        variable.set_auto_maskandscale(False)
        raw = np.arange(-10, 10, dtype="i2") * 37
        raw[3] = -999
        variable[:] = raw
    return path


def test_float32_packing_decodes_like_netcdf(tmp_path: Path) -> None:
    path = float32_packing_file(tmp_path)
    virtual = assert_virtual_equals_native(path)
    assert virtual["v"].dtype == np.float32
    assert np.isnan(virtual["v"].values[3])
    store = HDFParser()(str(path), local_registry(path))
    array = store.group.arrays["v"]
    assert isinstance(array.metadata.codecs[0], CFPackingCodec)
    assert "scale_factor" not in array.metadata.attributes


def test_unsigned_with_float32_packing(tmp_path: Path) -> None:
    path = tmp_path / "unsigned.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 8)
        variable = nc.createVariable("v", "i2", ("x",), fill_value=np.int16(-1))
        variable.set_auto_maskandscale(False)
        variable._Unsigned = "true"
        variable.scale_factor = np.float32(0.5)
        variable[:] = np.array([0, 1, -1, 32767, -32768, -2, 5, 7], dtype="i2")
    virtual = assert_virtual_equals_native(path)
    assert virtual["v"].values[4] == np.float32(32768 * 0.5)


def test_unsigned_without_packing_stays_in_attributes(tmp_path: Path) -> None:
    path = tmp_path / "unsigned_plain.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 4)
        variable = nc.createVariable("v", "i1", ("x",))
        variable.set_auto_maskandscale(False)
        variable._Unsigned = "true"
        variable[:] = np.array([0, 1, -1, -128], dtype="i1")
    virtual = assert_virtual_equals_native(path)
    assert virtual["v"].dtype == np.uint8


def test_groups_and_dimension_scales_shared_across_groups(tmp_path: Path) -> None:
    path = tmp_path / "groups.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 4)
        nc.createVariable("x", "f8", ("x",))[:] = np.arange(4.0)
        forecast = nc.createGroup("forecast")
        forecast.createDimension("step", 3)
        variable = forecast.createVariable("t", "f4", ("step", "x"), zlib=True)
        variable[:] = np.arange(12, dtype="f4").reshape(3, 4)
        forecast.setncattr("kind", "ensemble")
    assert_virtual_equals_native(path)
    assert_virtual_equals_native(path, group="forecast")
    vds = vz.open_virtual_dataset(path, group="forecast", registry=local_registry(path))
    assert vds["t"].dims == ("step", "x")


def test_dimension_without_coordinate_variable_and_2d_coordinates(tmp_path: Path) -> None:
    path = tmp_path / "dims.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("y", 3)
        nc.createDimension("x", 4)
        lat = nc.createVariable("lat", "f4", ("y", "x"))
        lat[:] = np.arange(12, dtype="f4").reshape(3, 4)
        data = nc.createVariable("data", "f4", ("y", "x"))
        data.coordinates = "lat"
        data[:] = np.ones((3, 4), dtype="f4")
        # a 2-D variable named like its first dimension: netCDF makes it a dimension scale
        y = nc.createVariable("y", "f4", ("y", "x"))
        y[:] = np.zeros((3, 4), dtype="f4")
    assert_virtual_equals_native(path)


def test_phony_dimensions_match_netcdf(tmp_path: Path) -> None:
    path = tmp_path / "phony.h5"
    with h5py.File(path, "w") as f:
        f["a"] = np.arange(12.0).reshape(4, 3)
        f["b"] = np.arange(12.0).reshape(3, 4)
        f["c"] = np.arange(9.0).reshape(3, 3)
    assert_virtual_equals_native(path, engine="h5netcdf", native_kwargs={"phony_dims": "sort"})


def test_unallocated_chunks_and_never_written_datasets_read_as_fill(tmp_path: Path) -> None:
    path = tmp_path / "sparse.h5"
    with h5py.File(path, "w") as f:
        sparse = f.create_dataset(
            "sparse", shape=(10, 10), chunks=(5, 5), dtype="f4", fillvalue=-7.5
        )
        sparse[0:5, 0:5] = 1.0
        f.create_dataset("never", shape=(6,), dtype="i4", fillvalue=42)
    store = HDFParser()(str(path), local_registry(path))
    assert store.group.arrays["sparse"].manifest.nrefs == 1
    assert store.group.arrays["never"].manifest.nrefs == 0
    import zarr

    sparse = zarr.open_array(store, path="sparse", mode="r", zarr_format=3)[...]
    with h5py.File(path) as f:
        np.testing.assert_array_equal(sparse, f["sparse"][...])
        np.testing.assert_array_equal(
            zarr.open_array(store, path="never", mode="r", zarr_format=3)[...], f["never"][...]
        )


def test_compact_layout_is_inlined(tmp_path: Path) -> None:
    path = tmp_path / "compact.h5"
    with h5py.File(path, "w") as f:
        space = h5py.h5s.create_simple((5,))
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_layout(h5py.h5d.COMPACT)
        dataset = h5py.h5d.create(f.id, b"small", h5py.h5t.NATIVE_INT32, space, plist)
        dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.arange(5, dtype="i4"))
    store = HDFParser()(str(path), local_registry(path))
    manifest = store.group.arrays["small"].manifest
    assert manifest.nrefs == 0 and manifest.ninline == 1
    assert_virtual_equals_native(path, engine="h5netcdf", native_kwargs={"phony_dims": "sort"})


def test_large_contiguous_datasets_are_split_into_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.h5"
    values = np.arange(64 * 1000, dtype="f8").reshape(64, 1000)
    with h5py.File(path, "w") as f:
        f["big"] = values
    parser = HDFParser(max_chunk_bytes=64 * 1000 * 8 // 8)
    store = parser(str(path), local_registry(path))
    array = store.group.arrays["big"]
    assert array.chunk_shape == (8, 1000)
    assert array.manifest.nrefs == 8
    import zarr

    np.testing.assert_array_equal(
        zarr.open_array(store, path="big", mode="r", zarr_format=3)[...], values
    )


def test_scalars_empty_arrays_and_fixed_strings(tmp_path: Path) -> None:
    path = tmp_path / "odd.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("empty", 0)
        nc.createDimension("n", 3)
        nc.createDimension("nchar", 5)
        nc.createVariable("scalar", "f8")[...] = 3.25
        nc.createVariable("nothing", "f4", ("empty",))
        names = nc.createVariable("names", "S1", ("n", "nchar"))
        names[:] = netCDF4.stringtochar(np.array(["alpha", "beta", "gamma"], dtype="S5"))
    assert_virtual_equals_native(path)


def _region_references(f: h5py.File) -> None:
    f["data"] = np.arange(10)
    f.create_dataset("v", data=np.array([f["data"].regionref[2:5]], dtype=h5py.regionref_dtype))


def _ragged(f: h5py.File) -> None:
    ragged = f.create_dataset("v", (2,), dtype=h5py.vlen_dtype(np.int32))
    ragged[0] = [1, 2]
    ragged[1] = [3]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_region_references, "region references"),
        (_ragged, "ragged"),
        (
            lambda f: f.create_dataset(
                "v", data=np.zeros(3, dtype=[("a", "i4", (3,)), ("b", "f8")])
            ),
            "array",
        ),
    ],
    ids=["region-reference", "ragged-vlen", "compound-with-array-member"],
)
def test_unsupported_variables_are_refused_at_parse_time(tmp_path: Path, make, reason: str) -> None:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        make(f)
        f["ok"] = np.arange(4.0)
    with pytest.raises(UnsupportedFeatureError) as caught:
        HDFParser()(str(path), local_registry(path))
    message = str(caught.value)
    assert str(path) in message and "'v'" in message and reason in message
    assert "drop_variables" in message
    vds = vz.open_virtual_dataset(path, registry=local_registry(path), drop_variables=["v"])
    assert "v" not in vds and "ok" in vds.data_vars


def test_not_hdf5_and_truncated_files_raise_typed_errors(tmp_path: Path) -> None:
    path = tmp_path / "full.nc"
    sample_dataset().to_netcdf(path, engine="netcdf4")
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(InvalidFileError, match=r"truncated\.nc"):
        HDFParser()(str(truncated), local_registry(truncated))
    text = tmp_path / "notes.nc"
    text.write_text("not a netCDF file at all")
    with pytest.raises(vz.errors.FormatDetectionError, match=r"notes\.nc"):
        vz.open_virtual_dataset(text, registry=local_registry(text))
    empty = tmp_path / "empty.nc"
    empty.write_bytes(b"")
    with pytest.raises(InvalidFileError, match="empty"):
        vz.open_virtual_dataset(empty, registry=local_registry(empty))
    with pytest.raises(InvalidFileError, match="no such file"):
        vz.open_virtual_dataset(tmp_path / "missing.nc", registry=local_registry(path))


def test_user_block_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "userblock.h5"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["x"] = np.arange(6.0)
    vds = vz.open_virtual_dataset(path, registry=local_registry(path), loadable_variables=[])
    assert vds["x"].shape == (6,)
    assert_virtual_equals_native(path, engine="h5netcdf", native_kwargs={"phony_dims": "sort"})


def test_read_goes_through_the_registry_store_not_the_local_path(tmp_path: Path) -> None:
    """h5py reads the metadata through obstore: a MemoryStore works with no local file."""
    import obstore
    from obstore.store import MemoryStore

    path = tmp_path / "mem.nc"
    sample_dataset().to_netcdf(path, engine="netcdf4", encoding=ENCODINGS["zlib_shuffle"])
    memory = MemoryStore()
    obstore.put(memory, "data/mem.nc", path.read_bytes())
    registry = vz.ObjectStoreRegistry({"memory://bucket/": memory})
    store = HDFParser()("memory://bucket/data/mem.nc", registry)
    virtual = read_through_manifest_store(store)
    xr.testing.assert_identical(virtual, xr.open_dataset(path).load())


def test_shrunk_datasets_read_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "shrunk.h5"
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset("x", data=np.arange(100.0), chunks=(10,), maxshape=(None,))
        dataset.resize((35,))
    store = HDFParser()(str(path), local_registry(path))
    import zarr

    got = zarr.open_array(store, path="x", mode="r", zarr_format=3)[...]
    np.testing.assert_array_equal(got, np.arange(35.0))


def test_filters_without_a_decoder_are_inlined_when_small_and_refused_when_large(
    tmp_path: Path,
) -> None:
    path = tmp_path / "scaleoffset.h5"
    values = np.arange(400, dtype="i4").reshape(20, 20) * 3
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=values, chunks=(10, 10), scaleoffset=0)
    store = HDFParser()(str(path), local_registry(path))
    manifest = store.group.arrays["v"].manifest
    assert manifest.nrefs == 0 and manifest.ninline == 4
    import zarr

    np.testing.assert_array_equal(zarr.open_array(store, path="v", mode="r")[...], values)
    with pytest.raises(UnsupportedFeatureError) as caught:
        HDFParser(max_inline_bytes=100)(str(path), local_registry(path))
    message = str(caught.value)
    assert "scaleoffset" in message and "id 6" in message and "max_inline_bytes" in message


def test_chunks_stored_with_filters_skipped_are_rewritten_inline(tmp_path: Path) -> None:
    import zlib

    path = tmp_path / "masked.h5"
    values = np.arange(64, dtype="i4").reshape(8, 8)
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset("v", shape=(8, 8), dtype="i4", chunks=(4, 4), compression="gzip")
        for i in (0, 4):
            for j in (0, 4):
                block = np.ascontiguousarray(values[i : i + 4, j : j + 4])
                if (i, j) == (4, 4):  # this chunk skips the deflate filter (mask bit 0)
                    dataset.id.write_direct_chunk((i, j), block.tobytes(), filter_mask=1)
                else:
                    dataset.id.write_direct_chunk((i, j), zlib.compress(block.tobytes()))
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["v"][...], values)
    store = HDFParser()(str(path), local_registry(path))
    manifest = store.group.arrays["v"].manifest
    assert manifest.nrefs == 3 and manifest.ninline == 1
    import zarr

    np.testing.assert_array_equal(zarr.open_array(store, path="v", mode="r")[...], values)
    with pytest.raises(UnsupportedFeatureError, match="filter mask"):
        HDFParser(max_rewritten_share=0.1)(str(path), local_registry(path))
