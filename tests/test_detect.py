"""parser=None: the format is detected, for files and for the folders of stores."""

from __future__ import annotations

from pathlib import Path

import icechunk
import numpy as np
import pytest
import xarray as xr
from oracle import local_registry

import virtualize as vz
from virtualize.errors import FormatDetectionError, InvalidFileError
from virtualize.parsers import detect, sniff_format


def sample() -> xr.Dataset:
    return xr.Dataset(
        {"v": (("t", "x"), np.arange(12.0).reshape(4, 3))}, coords={"t": np.arange(4)}
    )


@pytest.fixture
def netcdf(tmp_path: Path) -> Path:
    path = tmp_path / "sample.nc"
    sample().to_netcdf(path, engine="netcdf4")
    return path


def test_hdf5_files(netcdf: Path) -> None:
    assert sniff_format(str(netcdf), local_registry(netcdf)) == "hdf5"
    assert type(detect(str(netcdf), local_registry(netcdf))).__name__ == "HDFParser"


@pytest.mark.parametrize("kind", ["json", "parquet"])
def test_kerchunk_references(netcdf: Path, kind: str) -> None:
    vds = vz.open_virtual_dataset(netcdf, registry=local_registry(netcdf), loadable_variables=[])
    path = netcdf.parent / f"refs.{kind}"
    vds.virtualize.to_kerchunk(path, kind)
    registry = local_registry(netcdf)
    assert sniff_format(str(path), registry) == "kerchunk"
    got = vz.open_virtual_dataset(path, registry=registry, loadable_variables=[])
    store = got.virtualize.to_manifest_store(registry)
    virtual = xr.open_zarr(store, consolidated=False, zarr_format=3).load()
    xr.testing.assert_identical(virtual, xr.open_dataset(netcdf).load())


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_store_folders(tmp_path: Path, zarr_format: int) -> None:
    path = tmp_path / "store.zarr"
    sample().to_zarr(path, zarr_format=zarr_format, consolidated=zarr_format == 2)
    registry = local_registry(path)
    assert sniff_format(str(path), registry) == "zarr"
    vds = vz.open_virtual_dataset(path, registry=registry)
    assert isinstance(vds["v"].data, vz.ManifestArray)


def test_icechunk_repository_folders(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    repository = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))
    session = repository.writable_session("main")
    sample().to_zarr(session.store, zarr_format=3, consolidated=False)
    session.commit("sample")
    registry = local_registry(path)
    assert sniff_format(str(path), registry) == "icechunk"
    vds = vz.open_virtual_dataset(path, registry=registry, loadable_variables=[])
    assert vds["v"].shape == (4, 3)


def test_unknown_json_and_empty_folders_are_loud(tmp_path: Path) -> None:
    other = tmp_path / "settings.json"
    other.write_text('{"colour": "blue"}')
    with pytest.raises(FormatDetectionError, match="settings"):
        sniff_format(str(other), local_registry(other))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidFileError, match="no such file"):
        sniff_format(str(empty), local_registry(empty))
