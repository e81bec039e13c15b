"""Virtual datasets committed to Icechunk read back exactly, safely and atomically."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import icechunk
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from obstore.store import LocalStore
from oracle import CORPUS, without_nczarr_attributes
from test_corpus_netcdf4 import NATIVE_OPTIONS, REFUSED
from test_hdf_conformance import ENCODINGS, sample_dataset

import virtualize as vz
from virtualize.errors import (
    ConcatenationError,
    UnauthorizedLocationError,
    UnsupportedFeatureError,
)
from virtualize.writers.icechunk import authorize_containers, repository_config


def registry_for(folder: Path) -> vz.ObjectStoreRegistry:
    return vz.ObjectStoreRegistry({folder.resolve().as_uri() + "/": LocalStore(folder)})


def new_repository(
    path: Path, registry: vz.ObjectStoreRegistry, split_along: str | None = None
) -> icechunk.Repository:
    config = repository_config(registry, split_along=split_along, split_size=2)
    return icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(path)),
        config=config,
        authorize_virtual_chunk_access=authorize_containers(registry),
    )


def read_main(repository: icechunk.Repository, **kwargs: object) -> xr.Dataset:
    store = repository.readonly_session("main").store
    return xr.open_zarr(store, consolidated=False, zarr_format=3, **kwargs).load()


def commit_file(path: Path, tmp_path: Path, **open_kwargs: object) -> icechunk.Repository:
    registry = registry_for(path.parent)
    repository = new_repository(tmp_path / "repo", registry)
    session = repository.writable_session("main")
    vds = vz.open_virtual_dataset(path, registry=registry, **open_kwargs)
    vds.virtualize.to_icechunk(session.store)
    session.commit("write")
    return repository


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_every_encoding_round_trips_through_icechunk(tmp_path: Path, encoding: str) -> None:
    source = tmp_path / "data" / "file.nc"
    source.parent.mkdir()
    sample_dataset().to_netcdf(source, engine="netcdf4", encoding=ENCODINGS[encoding])
    repository = commit_file(source, tmp_path)
    xr.testing.assert_identical(read_main(repository), xr.open_dataset(source).load())


CORPUS_FILES = (
    sorted(
        p.relative_to(CORPUS / "netcdf4")
        for p in (CORPUS / "netcdf4").rglob("*")
        if p.is_file() and p.suffix != ".dmrpp"
    )
    if (CORPUS / "netcdf4").is_dir()
    else []
)


#: corpus files with attributes strict JSON can't hold (NaN): refused when writing
NOT_STRICT_JSON = {"netcdf-c/ref_nc_test_netcdf4_4_0.nc", "netcdf4-python/test_gold.nc"}


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")
@pytest.mark.parametrize("name", [str(n) for n in CORPUS_FILES if str(n) not in REFUSED])
def test_corpus_netcdf4_files_round_trip_through_icechunk(tmp_path: Path, name: str) -> None:
    source = CORPUS / "netcdf4" / name
    if name in NOT_STRICT_JSON:
        with pytest.raises(UnsupportedFeatureError, match="strict JSON"):
            commit_file(source, tmp_path, loadable_variables=[])
        return
    options = NATIVE_OPTIONS.get(name, {})
    repository = commit_file(source, tmp_path, loadable_variables=[])
    with xr.open_dataset(source, **options) as native:
        expected = without_nczarr_attributes(native.load())
    xr.testing.assert_identical(read_main(repository, **options), expected)


def write_days(folder: Path, days: int, start: int = 0) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for day in range(start, start + days):
        path = folder / f"day{day:03d}.nc"
        xr.Dataset(
            {"t2m": (("time", "x"), np.full((4, 3), day, dtype="f4"), {"units": "K"})},
            coords={
                "time": pd.date_range("2024-01-01", periods=4, freq="6h") + pd.Timedelta(days=day),
                "x": [0.0, 1.0, 2.0],
            },
        ).to_netcdf(
            path,
            encoding={
                "t2m": {"zlib": True, "chunksizes": (2, 3)},
                "time": {"units": "hours since 2024-01-01", "dtype": "i8"},
            },
        )
        paths.append(path)
    return paths


@pytest.mark.parametrize("split_along", [None, "time"])
def test_append_along_a_dimension(tmp_path: Path, split_along: str | None) -> None:
    paths = write_days(tmp_path / "data", 3)
    registry = registry_for(tmp_path / "data")
    repository = new_repository(tmp_path / "repo", registry, split_along=split_along)
    for index, path in enumerate(paths):
        session = repository.writable_session("main")
        vds = vz.open_virtual_dataset(path, registry=registry)
        vds.virtualize.to_icechunk(session.store, append_dim="time" if index else None)
        session.commit(f"day {index}")
    expected = xr.open_mfdataset(paths, combine="nested", concat_dim="time").load()
    xr.testing.assert_identical(read_main(repository), expected)


def test_combined_virtual_datasets_write_in_one_go(tmp_path: Path) -> None:
    paths = write_days(tmp_path / "data", 4)
    registry = registry_for(tmp_path / "data")
    parts = [vz.open_virtual_dataset(p, registry=registry, loadable_variables=["x"]) for p in paths]
    combined = xr.concat(parts, dim="time", coords="minimal", compat="override")
    repository = new_repository(tmp_path / "repo", registry)
    session = repository.writable_session("main")
    combined.virtualize.to_icechunk(session.store, group="forecast")
    session.commit("combined")
    store = repository.readonly_session("main").store
    got = xr.open_zarr(store, group="forecast", consolidated=False).load()
    expected = xr.open_mfdataset(paths, combine="nested", concat_dim="time").load()
    xr.testing.assert_identical(got, expected)


def test_a_source_changed_after_parsing_fails_the_read(tmp_path: Path) -> None:
    (path,) = write_days(tmp_path / "data", 1)
    repository = commit_file(path, tmp_path, loadable_variables=[])
    xr.testing.assert_identical(
        read_main(repository)[["t2m"]], xr.open_dataset(path)[["t2m"]].load()
    )
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data))  # same bytes, newer modification time
    later = path.stat().st_mtime + 10
    os.utime(path, (later, later))
    with pytest.raises(
        Exception, match=r"checksum of the object owning the virtual chunk has changed"
    ):
        read_main(repository)


def test_a_failed_write_commits_nothing(tmp_path: Path) -> None:
    paths = write_days(tmp_path / "data", 2)
    registry = registry_for(tmp_path / "data")
    repository = new_repository(tmp_path / "repo", registry)
    session = repository.writable_session("main")
    vz.open_virtual_dataset(paths[0], registry=registry).virtualize.to_icechunk(session.store)
    first = session.commit("first")
    other = tmp_path / "other" / "day.nc"
    other.parent.mkdir()
    xr.Dataset(
        {"t2m": (("time", "x"), np.ones((4, 3), dtype="f8"))},  # float64: does not append
        coords={"time": np.arange(4), "x": [0.0, 1.0, 2.0]},
    ).to_netcdf(other)
    session = repository.writable_session("main")
    vds = vz.open_virtual_dataset(other, registry=registry_for(other.parent))
    with pytest.raises(ConcatenationError, match="dtype"):
        vds.virtualize.to_icechunk(session.store, append_dim="time")
    assert not session.has_uncommitted_changes
    assert next(iter(repository.ancestry(branch="main"))).id == first


def test_locations_outside_the_containers_or_registry_are_refused(tmp_path: Path) -> None:
    (path,) = write_days(tmp_path / "data", 1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    registry = registry_for(elsewhere)
    repository = new_repository(tmp_path / "repo", registry)  # no container for data/
    session = repository.writable_session("main")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vds = vz.open_virtual_dataset(path, loadable_variables=[])
    with pytest.raises(UnauthorizedLocationError, match="day000"):
        vds.virtualize.to_icechunk(session.store)
    assert not session.has_uncommitted_changes
    with pytest.raises(UnauthorizedLocationError, match="day000"):
        vds.virtualize.to_icechunk(
            repository.writable_session("main").store, registry=registry, validate_containers=False
        )


def test_reading_needs_the_container_authorised(tmp_path: Path) -> None:
    (path,) = write_days(tmp_path / "data", 1)
    commit_file(path, tmp_path, loadable_variables=[])
    unauthorised = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    )
    with pytest.raises(Exception, match=r"(?i)authori"):
        read_main(unauthorised)


def test_region_writes_replace_whole_chunks(tmp_path: Path) -> None:
    paths = write_days(tmp_path / "data", 3)
    registry = registry_for(tmp_path / "data")
    repository = new_repository(tmp_path / "repo", registry)
    parts = [vz.open_virtual_dataset(p, registry=registry, loadable_variables=[]) for p in paths]
    session = repository.writable_session("main")
    first_two = xr.concat(parts[:2], dim="time", coords="minimal", compat="override")
    first_two.virtualize.to_icechunk(session.store)
    session.commit("two days")
    # the second day's slot now takes the third day's references
    session = repository.writable_session("main")
    replacement = parts[2][["t2m"]]
    replacement.virtualize.to_icechunk(session.store, region={"time": slice(4, 8)})
    session.commit("replace day two")
    got = read_main(repository)["t2m"].values
    expected = np.concatenate(
        [xr.open_dataset(paths[0])["t2m"].values, xr.open_dataset(paths[2])["t2m"].values]
    )
    np.testing.assert_array_equal(got, expected)
    session = repository.writable_session("main")
    with pytest.raises(ConcatenationError, match="chunk boundaries"):
        replacement.virtualize.to_icechunk(session.store, region={"time": slice(3, 7)})
    assert not session.has_uncommitted_changes


def test_a_datatree_is_written_node_by_node(tmp_path: Path) -> None:
    import netCDF4

    data = tmp_path / "data"
    data.mkdir()
    path = data / "tree.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 4)
        nc.createVariable("x", "f8", ("x",))[:] = np.arange(4.0)
        forecast = nc.createGroup("forecast")
        forecast.createDimension("step", 3)
        forecast.createVariable("step", "i4", ("step",))[:] = [0, 6, 12]
        forecast.createVariable("t", "f4", ("step", "x"), zlib=True)[:] = np.ones((3, 4))
        forecast.createGroup("deep").createVariable("u", "f4", ("x",))[:] = np.arange(4)
    registry = registry_for(data)
    tree = vz.open_virtual_datatree(path, registry=registry)
    assert tree.virtualize.nrefs == 2
    repository = new_repository(tmp_path / "repo", registry)
    session = repository.writable_session("main")
    tree.virtualize.to_icechunk(session.store)
    session.commit("tree")
    store = repository.readonly_session("main").store
    got = xr.open_datatree(store, engine="zarr", consolidated=False, zarr_format=3).load()
    xr.testing.assert_identical(got, xr.open_datatree(path).load())
