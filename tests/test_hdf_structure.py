"""HDF5 structure: trees, links, external storage, virtual datasets, odd dataspaces."""

from __future__ import annotations

from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr
from obstore.store import LocalStore
from oracle import local_registry

import virtualize as vz
from virtualize.errors import (
    SkippedVariableWarning,
    UnauthorizedLocationError,
    UnsupportedFeatureError,
)
from virtualize.parsers import HDFParser


def read(store: vz.ManifestStore, path: str) -> np.ndarray:
    return zarr.open_array(store, path=path, mode="r", zarr_format=3)[...]


def test_open_virtual_datatree_matches_open_datatree(tmp_path: Path) -> None:
    path = tmp_path / "tree.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 4)
        nc.createVariable("x", "f8", ("x",))[:] = np.arange(4.0)
        nc.title = "root"
        forecast = nc.createGroup("forecast")
        forecast.createDimension("step", 3)
        forecast.createVariable("step", "i4", ("step",))[:] = [0, 6, 12]
        forecast.createVariable("t", "f4", ("step", "x"), zlib=True)[:] = np.arange(12).reshape(
            3, 4
        )
        deep = forecast.createGroup("deep")
        deep.createVariable("u", "f4", ("x",))[:] = np.ones(4)  # a dimension of the root group
    registry = local_registry(path)
    tree = vz.open_virtual_datatree(path, registry=registry)
    assert set(tree.groups) == {"/", "/forecast", "/forecast/deep"}
    assert isinstance(tree["forecast/t"].data, vz.ManifestArray)
    assert tree["forecast"]["step"].values.tolist() == [0, 6, 12]
    store = HDFParser()(str(path), registry)
    virtual = xr.open_datatree(store, engine="zarr", consolidated=False, zarr_format=3).load()
    xr.testing.assert_identical(virtual, xr.open_datatree(path).load())


def test_soft_hard_and_dangling_links(tmp_path: Path) -> None:
    path = tmp_path / "links.h5"
    values = np.arange(10.0)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=values, chunks=(5,))
        f["hard"] = f["data"]
        f["soft"] = h5py.SoftLink("/data")
        f["dangling"] = h5py.SoftLink("/nowhere")
    store = HDFParser()(str(path), local_registry(path))
    assert set(store.group.arrays) == {"data", "hard", "soft"}
    for name in ("data", "hard", "soft"):
        np.testing.assert_array_equal(read(store, name), values)


def test_external_links_are_followed_through_the_registry(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    with h5py.File(folder / "other.h5", "w") as f:
        f.create_dataset("group/temperature", data=np.arange(12.0).reshape(3, 4), chunks=(1, 4))
    with h5py.File(folder / "main.h5", "w") as f:
        f["linked_dataset"] = h5py.ExternalLink("other.h5", "/group/temperature")
        f["linked_group"] = h5py.ExternalLink("other.h5", "/group")
        f["missing_object"] = h5py.ExternalLink("other.h5", "/nothing")
    store = HDFParser()(str(folder / "main.h5"), local_registry(folder / "main.h5"))
    expected = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(read(store, "linked_dataset"), expected)
    np.testing.assert_array_equal(read(store, "linked_group/temperature"), expected)
    urls = store.group.arrays["linked_dataset"].manifest.urls
    assert urls == ((folder / "other.h5").as_uri(),)


def test_external_links_outside_the_registry_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    with h5py.File(secret / "private.h5", "w") as f:
        f["x"] = np.arange(3)
    public = tmp_path / "public"
    public.mkdir()
    with h5py.File(public / "main.h5", "w") as f:
        f["sneaky"] = h5py.ExternalLink("../secret/private.h5", "/x")
    registry = vz.ObjectStoreRegistry({public.as_uri() + "/": LocalStore(public)})
    with pytest.raises(UnauthorizedLocationError, match="private"):
        HDFParser()(str(public / "main.h5"), registry)


def test_external_raw_storage_references_the_external_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = np.arange(48, dtype="<i4").reshape(12, 4)
    (tmp_path / "part1.bin").write_bytes(b"HEADER" + values[:4].tobytes())
    (tmp_path / "part2.bin").write_bytes(values[4:].tobytes() + b"trailing")
    path = tmp_path / "external.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "x",
            shape=(12, 4),
            dtype="<i4",
            external=[("part1.bin", 6, 4 * 16), ("part2.bin", 0, h5py.h5f.UNLIMITED)],
        )
    monkeypatch.chdir(tmp_path)  # HDF5 itself resolves external files against the cwd
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["x"][...], values)
    store = HDFParser()(str(path), local_registry(path))
    array = store.group.arrays["x"]
    assert set(array.manifest.urls) == {
        (tmp_path / "part1.bin").as_uri(),
        (tmp_path / "part2.bin").as_uri(),
    }
    np.testing.assert_array_equal(read(store, "x"), values)


def test_external_raw_storage_outside_the_registry_is_refused(tmp_path: Path) -> None:
    inside = tmp_path / "inside"
    inside.mkdir()
    (tmp_path / "outside.bin").write_bytes(np.arange(4, dtype="<i4").tobytes())
    with h5py.File(inside / "f.h5", "w") as f:
        f.create_dataset("x", shape=(4,), dtype="<i4", external=[("../outside.bin", 0, 16)])
    with pytest.raises(UnauthorizedLocationError, match="outside"):
        HDFParser()(str(inside / "f.h5"), local_registry(inside / "f.h5"))


def make_sources(folder: Path, chunks: tuple[int, int]) -> None:
    for index in range(2):
        with h5py.File(folder / f"src{index}.h5", "w") as f:
            data = np.arange(20.0).reshape(4, 5) + 20 * index
            f.create_dataset("d", data=data, chunks=chunks, compression="gzip")


def test_virtual_datasets_map_to_their_sources_chunks(tmp_path: Path) -> None:
    make_sources(tmp_path, (2, 5))
    layout = h5py.VirtualLayout(shape=(10, 5), dtype="f8")
    layout[0:4] = h5py.VirtualSource("src0.h5", "d", shape=(4, 5))
    layout[6:10] = h5py.VirtualSource("src1.h5", "d", shape=(4, 5))
    path = tmp_path / "vds.h5"
    with h5py.File(path, "w") as f:
        f.create_virtual_dataset("v", layout, fillvalue=-1.0)
    with h5py.File(path) as f:
        expected = f["v"][...]
    store = HDFParser()(str(path), local_registry(path))
    array = store.group.arrays["v"]
    assert array.manifest.nrefs == 4 and len(array.manifest.urls) == 2
    np.testing.assert_array_equal(read(store, "v"), expected)
    assert (expected[4:6] == -1).all()


def test_virtual_datasets_off_chunk_boundaries_are_refused(tmp_path: Path) -> None:
    make_sources(tmp_path, (3, 5))
    layout = h5py.VirtualLayout(shape=(8, 5), dtype="f8")
    layout[0:4] = h5py.VirtualSource("src0.h5", "d", shape=(4, 5))
    layout[4:8] = h5py.VirtualSource("src1.h5", "d", shape=(4, 5))
    path = tmp_path / "vds.h5"
    with h5py.File(path, "w") as f:
        f.create_virtual_dataset("v", layout)
    with pytest.raises(UnsupportedFeatureError, match="chunk boundaries"):
        HDFParser()(str(path), local_registry(path))


def test_unlimited_dimensions_with_chunks_larger_than_the_data(tmp_path: Path) -> None:
    path = tmp_path / "unlimited.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("x", 3)
        plain = nc.createVariable("plain", "f4", ("time", "x"), chunksizes=(1024, 3))
        packed = nc.createVariable("packed", "i2", ("time", "x"), zlib=True, chunksizes=(512, 3))
        plain[0:5] = np.arange(15, dtype="f4").reshape(5, 3)
        packed[0:5] = np.arange(15, dtype="i2").reshape(5, 3)
    store = HDFParser()(str(path), local_registry(path))
    virtual = xr.open_zarr(store, consolidated=False, zarr_format=3).load()
    xr.testing.assert_identical(virtual, xr.open_dataset(path).load())


def test_null_dataspaces_are_refused_and_can_be_skipped(tmp_path: Path) -> None:
    path = tmp_path / "null.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("null", data=h5py.Empty("f4"))
        f["fine"] = np.arange(3.0)
    with pytest.raises(UnsupportedFeatureError, match="null dataspace"):
        HDFParser()(str(path), local_registry(path))
    with pytest.warns(SkippedVariableWarning, match="null dataspace"):
        store = HDFParser(on_unsupported="skip")(str(path), local_registry(path))
    assert set(store.group.arrays) == {"fine"}
    assert "null" in store.skipped and "null dataspace" in store.skipped["null"]


def test_virtual_dataset_sources_with_unwritten_chunks_and_another_fill_are_refused(
    tmp_path: Path,
) -> None:
    for index, fill in enumerate((-1.0, -2.0)):
        with h5py.File(tmp_path / f"src{index}.h5", "w") as f:
            source = f.create_dataset("d", shape=(4, 5), chunks=(2, 5), dtype="f8", fillvalue=fill)
            source[0:2] = np.arange(10.0).reshape(2, 5)  # the second chunk is never written
    layout = h5py.VirtualLayout(shape=(8, 5), dtype="f8")
    layout[0:4] = h5py.VirtualSource("src0.h5", "d", shape=(4, 5))
    layout[4:8] = h5py.VirtualSource("src1.h5", "d", shape=(4, 5))
    path = tmp_path / "vds.h5"
    with h5py.File(path, "w") as f:
        f.create_virtual_dataset("v", layout, fillvalue=-1.0)
    with h5py.File(path) as f:
        native = f["v"][...]
    assert (native[6:8] == -2.0).all(), "HDF5 reads a source's unwritten chunks as its fill"
    with pytest.raises(UnsupportedFeatureError, match="fill value"):
        HDFParser()(str(path), local_registry(path))
