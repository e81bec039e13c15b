"""open_virtual_dataset: what is virtual, what is loaded, and where bytes may come from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from obstore.store import LocalStore
from oracle import local_registry, read_through_manifest_store, without_nczarr_attributes

import virtualize as vz
from virtualize.errors import UnauthorizedLocationError, VirtualArrayAccessError
from virtualize.manifests import ManifestGroup


@pytest.fixture
def netcdf_file(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "air.nc"
    path.parent.mkdir()
    rng = np.random.default_rng(3)
    dataset = xr.Dataset(
        {
            "air": (("time", "lat", "lon"), rng.normal(size=(6, 4, 5)).astype("f4")),
            "station_height": (("lat", "lon"), rng.normal(size=(4, 5)), {"units": "m"}),
        },
        coords={
            "time": pd.date_range("2021-03-01", periods=6, freq="h"),
            "lat": [10.0, 20.0, 30.0, 40.0],
            "lon": np.arange(5.0),
            "elevation": (("lat", "lon"), np.ones((4, 5))),
        },
    )
    dataset.to_netcdf(
        path, engine="netcdf4", encoding={"air": {"zlib": True, "chunksizes": (2, 4, 5)}}
    )
    return path


def test_dimension_coordinates_are_loaded_and_indexed_by_default(netcdf_file: Path) -> None:
    vds = vz.open_virtual_dataset(netcdf_file, registry=local_registry(netcdf_file))
    native = xr.open_dataset(netcdf_file)
    assert set(vds.xindexes) == {"time", "lat", "lon"}
    xr.testing.assert_identical(vds["time"], native["time"])
    assert isinstance(vds["air"].data, vz.ManifestArray)
    assert isinstance(vds["elevation"].data, vz.ManifestArray)
    assert "elevation" in vds.coords, "the 'coordinates' attribute makes it a coordinate"
    assert vds["air"].dims == native["air"].dims and vds["air"].shape == native["air"].shape


def test_nothing_loaded_means_no_index_and_no_data_read(netcdf_file: Path) -> None:
    vds = vz.open_virtual_dataset(
        netcdf_file, registry=local_registry(netcdf_file), loadable_variables=[]
    )
    assert not vds.xindexes
    assert all(isinstance(v.data, vz.ManifestArray) for v in vds.variables.values())
    assert vds["time"].attrs["units"].startswith("hours since")
    with pytest.raises(VirtualArrayAccessError, match="loadable_variables"):
        np.asarray(vds["air"].data)
    with pytest.raises(VirtualArrayAccessError):
        vds["air"].data + 1


def test_loadable_variables_are_decoded_like_open_dataset(netcdf_file: Path) -> None:
    vds = vz.open_virtual_dataset(
        netcdf_file, registry=local_registry(netcdf_file), loadable_variables=["air", "time"]
    )
    native = xr.open_dataset(netcdf_file).load()
    xr.testing.assert_identical(vds["air"].variable, native["air"].variable)
    raw = vz.open_virtual_dataset(
        netcdf_file,
        registry=local_registry(netcdf_file),
        loadable_variables=["time"],
        decode_times=False,
    )
    assert raw["time"].dtype.kind in "iu"
    assert raw["time"].attrs["units"].startswith("hours since")


def test_drop_variables_and_accessor(netcdf_file: Path) -> None:
    vds = vz.open_virtual_dataset(
        netcdf_file, registry=local_registry(netcdf_file), drop_variables=["station_height"]
    )
    assert "station_height" not in vds
    assert vds.virtualize.nrefs == 3 + 1  # air in 3 chunks, elevation in 1
    manifest_bytes = sum(
        v.data.manifest.nbytes
        for v in vds.variables.values()
        if isinstance(v.data, vz.ManifestArray)
    )
    loaded_bytes = sum(
        v.nbytes for v in vds.variables.values() if not isinstance(v.data, vz.ManifestArray)
    )
    assert vds.virtualize.nbytes == manifest_bytes + loaded_bytes
    moved = vds.virtualize.rename_paths(lambda url: url.replace("/data/", "/moved/"))
    assert all("/moved/" in u for u in moved["air"].data.manifest.urls)
    assert set(moved.xindexes) == set(vds.xindexes)


def test_registry_none_authorises_the_files_folder_and_says_so(netcdf_file: Path) -> None:
    with pytest.warns(UserWarning, match="registry=None"):
        vds = vz.open_virtual_dataset(netcdf_file)
    assert vds["air"].data.manifest.urls == (netcdf_file.resolve().as_uri(),)


def test_a_file_outside_the_registry_is_refused_before_reading(
    netcdf_file: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    registry = vz.ObjectStoreRegistry({elsewhere.as_uri() + "/": LocalStore(elsewhere)})
    with pytest.raises(UnauthorizedLocationError, match=r"air\.nc"):
        vz.open_virtual_dataset(netcdf_file, registry=registry)


def test_a_manifest_pointing_outside_the_registry_is_refused_on_read(
    netcdf_file: Path, tmp_path: Path
) -> None:
    store = vz.parsers.HDFParser()(str(netcdf_file), local_registry(netcdf_file))
    other = tmp_path / "other"
    other.mkdir()
    narrow = vz.ObjectStoreRegistry({other.as_uri() + "/": LocalStore(other)})
    foreign = vz.ManifestStore(store.group, registry=narrow)
    array = zarr.open_array(foreign, path="air", mode="r", zarr_format=3)
    with pytest.raises(UnauthorizedLocationError, match=r"air\.nc"):
        array[...]


def test_virtual_datasets_concatenate_and_read_back(tmp_path: Path) -> None:
    paths = []
    for day in range(3):
        path = tmp_path / f"day{day}.nc"
        xr.Dataset(
            {"t": (("time", "x"), np.full((4, 3), float(day), dtype="f4"))},
            coords={"time": np.arange(4) + 4 * day},
        ).to_netcdf(path, encoding={"t": {"chunksizes": (2, 3), "zlib": True}})
        paths.append(path)
    registry = local_registry(paths[0])
    parts = [vz.open_virtual_dataset(p, registry=registry, loadable_variables=[]) for p in paths]
    combined = xr.concat(parts, dim="time", coords="minimal", compat="override")
    array = combined["t"].data
    assert array.shape == (12, 3) and len(array.manifest.urls) == 3
    store = combined.virtualize.to_manifest_store(registry)
    virtual = xr.open_zarr(store, consolidated=False, zarr_format=3).load()
    expected = xr.open_mfdataset(paths, combine="nested", concat_dim="time").load()
    xr.testing.assert_identical(virtual, expected)


def test_to_manifest_store_inlines_loaded_variables(netcdf_file: Path) -> None:
    registry = local_registry(netcdf_file)
    vds = vz.open_virtual_dataset(netcdf_file, registry=registry)
    group = vds.virtualize.to_manifest_group()
    assert isinstance(group, ManifestGroup)
    assert set(group.arrays) == {"air", "station_height", "elevation", "time", "lat", "lon"}
    time = group.arrays["time"].manifest
    assert time.nrefs == 0 and time.ninline == time.path_ids.size  # encoded, held inline
    assert group.arrays["air"].manifest.nrefs > 0
    got = read_through_manifest_store(vds.virtualize.to_manifest_store(registry))
    with xr.open_dataset(netcdf_file) as native:
        xr.testing.assert_identical(got, without_nczarr_attributes(native.load()))


def test_loading_a_variable_no_chunk_of_which_was_written(tmp_path: Path) -> None:
    """100,000 chunks, none written: loaded as the fill value h5py reads, without zarr
    visiting every chunk."""
    import h5py

    path = tmp_path / "sparse.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", shape=(100_000, 2), chunks=(1, 2), dtype="i4", fillvalue=7)
        expected = f["x"][...]
    dataset = vz.open_virtual_dataset(
        str(path), registry=local_registry(path), loadable_variables=["x"]
    )
    np.testing.assert_array_equal(dataset["x"].values, expected)
    assert dataset["x"].dtype == expected.dtype
