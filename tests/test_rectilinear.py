"""Files of unequal length along the concat dimension join into a rectilinear chunk grid that
reads back exactly through ManifestStore, Icechunk and appends."""

from __future__ import annotations

from pathlib import Path

import icechunk
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from obstore.store import LocalStore
from oracle import read_through_manifest_store

import virtualize as vz
from virtualize.errors import ConcatenationError, UnsupportedFeatureError
from virtualize.parsers import IcechunkParser, ZarrParser
from virtualize.writers.icechunk import authorize_containers, repository_config

MONTHS = ("2023-01", "2023-02", "2023-03", "2023-04")


def write_month(folder: Path, month: str, *, time_chunk: int | None = None) -> Path:
    """Daily data of one month: 28, 30 or 31 days (contiguous unless ``time_chunk``)."""
    days = pd.date_range(month, periods=pd.Period(month).days_in_month, freq="D")
    rng = np.random.default_rng(len(days) + int(month[-2:]))
    dataset = xr.Dataset(
        {
            "tas": (("time", "lat", "lon"), rng.normal(280, 5, (len(days), 3, 4)).astype("f4")),
            "pr": (("time", "lat", "lon"), rng.gamma(1.0, 2.0, (len(days), 3, 4))),
        },
        coords={"time": days, "lat": [10.0, 20.0, 30.0], "lon": [0.0, 90.0, 180.0, 270.0]},
    )
    encoding = {"time": {"units": "days since 2000-01-01", "dtype": "i4"}}
    if time_chunk is not None:
        for name in ("tas", "pr"):
            encoding[name] = {"zlib": True, "chunksizes": (time_chunk, 3, 2)}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{month}.nc"
    dataset.to_netcdf(path, encoding=encoding)
    return path


def registry_for(folder: Path) -> vz.ObjectStoreRegistry:
    return vz.ObjectStoreRegistry({folder.resolve().as_uri() + "/": LocalStore(folder)})


def virtual_months(paths: list[Path], registry: vz.ObjectStoreRegistry) -> xr.Dataset:
    parts = [vz.open_virtual_dataset(p, registry=registry) for p in paths]
    return xr.concat(parts, dim="time", coords="minimal", compat="override")


def native_months(paths: list[Path]) -> xr.Dataset:
    return xr.concat([xr.open_dataset(p).load() for p in paths], dim="time")


def test_months_join_into_a_rectilinear_grid_that_reads_back(tmp_path: Path) -> None:
    paths = [write_month(tmp_path / "data", m) for m in MONTHS[:3]]
    registry = registry_for(tmp_path / "data")
    combined = virtual_months(paths, registry)
    tas = combined["tas"].data
    assert tas.chunk_grid == ((31, 28, 31), 3, 4)
    store = combined.virtualize.to_manifest_store(registry)
    xr.testing.assert_identical(read_through_manifest_store(store), native_months(paths))


def test_rectilinear_grid_commits_to_icechunk_and_appends(tmp_path: Path) -> None:
    paths = [write_month(tmp_path / "data", m) for m in MONTHS]
    registry = registry_for(tmp_path / "data")
    repository = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(tmp_path / "repo")),
        config=repository_config(registry),
        authorize_virtual_chunk_access=authorize_containers(registry),
    )
    session = repository.writable_session("main")
    virtual_months(paths[:3], registry).virtualize.to_icechunk(session.store)
    session.commit("three months")
    session = repository.writable_session("main")
    april = vz.open_virtual_dataset(paths[3], registry=registry)
    april.virtualize.to_icechunk(session.store, append_dim="time")
    session.commit("april")
    store = repository.readonly_session("main").store
    got = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None).load()
    xr.testing.assert_identical(got, native_months(paths))
    # the repository's references parse back into the same rectilinear grid
    both = vz.ObjectStoreRegistry(
        {
            (tmp_path / "data").resolve().as_uri() + "/": LocalStore(tmp_path / "data"),
            (tmp_path / "repo").resolve().as_uri() + "/": LocalStore(tmp_path / "repo"),
        }
    )
    parsed = IcechunkParser()(str(tmp_path / "repo"), both)
    assert parsed.group.arrays["tas"].chunk_grid == ((31, 28, 31, 30), 3, 4)
    xr.testing.assert_identical(read_through_manifest_store(parsed), native_months(paths))


def test_appending_after_a_regular_array_turns_it_rectilinear(tmp_path: Path) -> None:
    # chunks of 7 days: February (28 days) tiles them, March (31) ends in a partial chunk
    paths = [write_month(tmp_path / "data", m, time_chunk=7) for m in ("2023-02", "2023-03")]
    registry = registry_for(tmp_path / "data")
    repository = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(tmp_path / "repo")),
        config=repository_config(registry),
        authorize_virtual_chunk_access=authorize_containers(registry),
    )
    for index, path in enumerate(paths):
        session = repository.writable_session("main")
        vds = vz.open_virtual_dataset(path, registry=registry)
        vds.virtualize.to_icechunk(session.store, append_dim="time" if index else None)
        session.commit(path.name)
    store = repository.readonly_session("main").store
    got = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None).load()
    xr.testing.assert_identical(got, native_months(paths))
    # March now ends in a partial chunk, stored padded: nothing may follow it
    april = write_month(tmp_path / "data", "2023-04", time_chunk=7)
    session = repository.writable_session("main")
    with pytest.raises(ConcatenationError, match="partial") as caught:
        vz.open_virtual_dataset(april, registry=registry).virtualize.to_icechunk(
            session.store, append_dim="time"
        )
    assert caught.value.variable in {"tas", "pr"}
    assert not session.has_uncommitted_changes


def test_a_partial_chunk_before_other_files_is_refused_by_name(tmp_path: Path) -> None:
    paths = [write_month(tmp_path / "data", m, time_chunk=7) for m in ("2023-03", "2023-02")]
    registry = registry_for(tmp_path / "data")
    with pytest.raises(ConcatenationError, match="partial") as caught:
        virtual_months(paths, registry)
    assert "2023-03.nc" in str(caught.value)
    # in the other order the partial chunk is last, which is fine
    reordered = virtual_months(paths[::-1], registry)
    store = reordered.virtualize.to_manifest_store(registry)
    xr.testing.assert_identical(read_through_manifest_store(store), native_months(paths[::-1]))


def test_native_rectilinear_zarr_stores_parse(tmp_path: Path) -> None:
    values = np.arange(30, dtype="i2").reshape(10, 3)
    group = zarr.open_group(tmp_path / "rect.zarr", mode="w", zarr_format=3)
    array = group.create_array("v", shape=(10, 3), chunks=[[4, 1, 5], [2, 1]], dtype="i2")
    array[...] = values
    store = ZarrParser()(str(tmp_path / "rect.zarr"), registry_for(tmp_path))
    assert store.group.arrays["v"].chunk_grid == ((4, 1, 5), (2, 1))
    assert store.group.arrays["v"].manifest.nrefs == 6
    np.testing.assert_array_equal(zarr.open_array(store, path="v", mode="r")[...], values)


def test_kerchunk_refuses_rectilinear_grids_by_name(tmp_path: Path) -> None:
    paths = [write_month(tmp_path / "data", m) for m in MONTHS[:2]]
    combined = virtual_months(paths, registry_for(tmp_path / "data"))
    with pytest.raises(UnsupportedFeatureError, match="regular chunk grid") as caught:
        combined.virtualize.to_kerchunk(format="dict")
    assert caught.value.variable in {"tas", "pr"}
