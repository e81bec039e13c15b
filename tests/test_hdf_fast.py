"""The HDF5 parser's fast path gives exactly the arrays the h5py path gives.

Every file is parsed twice, with ``metadata_reader="h5py"`` and with the fast path alone
(:func:`~virtualize.parsers.hdf_fast.parse_natively`); where the fast path takes a file, the
two groups must match in every detail, order included (variables, attributes, codecs,
fill values, dimension names, manifests). Files the fast path refuses are parsed by h5py, so
``metadata_reader="auto"`` must equal ``"h5py"`` on them too.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr
from oracle import CORPUS, local_registry

import virtualize as vz
from virtualize.errors import VirtualizeError
from virtualize.io import ObstoreFile, head
from virtualize.manifests import ManifestArray, ManifestGroup
from virtualize.parsers import HDFParser
from virtualize.parsers.hdf_fast import parse_natively
from virtualize.parsers.hdf_native import NativeUnsupported
from virtualize.registry import normalize_url


def fast_parse(path: Path, **options: Any) -> ManifestGroup | None:
    """The fast path's group for ``path``, or None where it hands the file to h5py."""
    url = normalize_url(path)
    registry = local_registry(path)
    source = head(registry, url)
    store, key = registry.resolve(url)
    reader = ObstoreFile(store, key, source.size or 0)
    try:
        return parse_natively(
            url=url,
            source=source,
            reader=reader,
            group=options.get("group"),
            drop=frozenset(options.get("drop_variables", ())),
            max_chunk_bytes=options.get("max_chunk_bytes", 16 * 1024 * 1024),
        )
    except NativeUnsupported:
        return None


def h5py_parse(path: Path, **options: Any) -> ManifestGroup:
    parser = HDFParser(metadata_reader="h5py", **options)
    return parser(normalize_url(path), local_registry(path)).group


def auto_parse(path: Path, **options: Any) -> ManifestGroup:
    return HDFParser(**options)(normalize_url(path), local_registry(path)).group


def describe(group: ManifestGroup) -> list[Any]:
    """Everything a group says, in order, in comparable form."""
    described: list[Any] = [list(group.attributes.items())]
    for name, array in group.arrays.items():
        described.append(describe_array(name, array))
    for name, subgroup in group.groups.items():
        described.append((name, describe(subgroup)))
    return described


def describe_array(name: str, array: ManifestArray) -> tuple[Any, ...]:
    metadata = array.metadata.to_dict()
    attributes = list(metadata.pop("attributes", {}).items())
    manifest = array.manifest
    return (
        name,
        metadata,
        attributes,
        list(manifest.urls),
        manifest.path_ids.tolist(),
        manifest.offsets.tolist(),
        manifest.lengths.tolist(),
        sorted(manifest.inline.items()),
    )


def assert_same(fast: ManifestGroup, slow: ManifestGroup) -> None:
    assert describe(fast) == describe(slow)
    assert fast == slow


def assert_fast_and_exact(path: Path, **options: Any) -> None:
    fast = fast_parse(path, **options)
    assert fast is not None, f"{path.name} should take the fast path"
    assert_same(fast, h5py_parse(path, **options))


# -- files written here -----------------------------------------------------------------------


def write_daily(path: Path) -> Path:
    """The shape of the many-files benchmark: three zlib variables and time/lat/lon."""
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", 18)
        nc.createDimension("lon", 36)
        times = nc.createVariable("time", "f8", ("time",))
        times.units = "days since 2000-01-01"
        times.calendar = "standard"
        times[:] = [3.0]
        nc.createVariable("lat", "f8", ("lat",))[:] = np.linspace(-85, 85, 18)
        nc.createVariable("lon", "f8", ("lon",))[:] = np.linspace(5, 355, 36)
        for number, name in enumerate(("tas", "psl", "hus")):
            variable = nc.createVariable(
                name, "f4", ("time", "lat", "lon"), zlib=True, shuffle=True, chunksizes=(1, 9, 18)
            )
            variable.units = "K"
            variable.long_name = f"variable {name}"
            variable[:] = np.arange(18 * 36, dtype="f4").reshape(1, 18, 36) + number
        nc.title = "daily"
    return path


def write_cf_rich(path: Path) -> Path:
    """More than eight variables and attributes (HDF5's dense storage), packing, fill
    values, big-endian and contiguous storage, groups, text and numeric attributes."""
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("time", None)
        nc.createDimension("y", 6)
        nc.createDimension("x", 5)
        nc.createVariable("time", "i4", ("time",))[:] = np.arange(4)
        nc["time"].units = "hours since 2001-02-03"
        for index in range(12):
            contiguous = index % 5 == 4  # not along an unlimited dimension
            variable = nc.createVariable(
                f"v{index:02d}",
                ["i2", "u1", "f4", "f8", "i8", "u4"][index % 6],
                ("y", "x") if contiguous else ("time", "y", "x"),
                zlib=index % 2 == 0 and not contiguous,
                fletcher32=index % 3 == 0 and not contiguous,
                fill_value=[None, 7, -1.5, np.nan, 99, 3][index % 6],
                endian="big" if index % 4 == 1 else "native",
                contiguous=contiguous,
            )
            for key in range(10):
                variable.setncattr(f"attribute_{key}", key * 1.5)
            variable.setncattr("comment", "ü and text")
            variable.setncattr("flags", np.array([1, 2, 4], dtype="i1"))
            values = np.arange(4 * 30).reshape(4, 6, 5) % 50
            variable[:] = values[0] if contiguous else values
        packed = nc.createVariable("packed", "i2", ("y", "x"), fill_value=-999)
        packed.scale_factor = 0.01
        packed.add_offset = 273.15
        packed[:] = np.arange(30).reshape(6, 5)
        group = nc.createGroup("forecast")
        group.createDimension("step", 3)
        group.createVariable("step", "i4", ("step",))[:] = [0, 6, 12]
        group.createVariable("t2m", "f4", ("step", "y", "x"))[:] = np.ones((3, 6, 5))
        group.source = "a group attribute"
        for key in range(11):
            nc.setncattr(f"global_{key}", f"value {key}")
    return path


def test_benchmark_shaped_file_takes_the_fast_path(tmp_path: Path) -> None:
    assert_fast_and_exact(write_daily(tmp_path / "daily.nc"))


def test_dense_storage_packing_fill_values_and_groups(tmp_path: Path) -> None:
    path = write_cf_rich(tmp_path / "rich.nc")
    assert_fast_and_exact(path)
    assert_fast_and_exact(path, group="forecast")
    assert_fast_and_exact(path, drop_variables=["v03", "packed"])
    assert_fast_and_exact(path, max_chunk_bytes=64)


@pytest.mark.parametrize("engine", ["netcdf4", "h5netcdf"])
def test_files_written_by_xarray(tmp_path: Path, engine: str) -> None:
    dataset = xr.Dataset(
        {
            "temperature": (("time", "lat", "lon"), np.random.default_rng(1).random((3, 4, 5))),
            "mask": (("lat", "lon"), np.eye(4, 5, dtype="u1")),
            "no_dims": ((), np.float32(1.5)),
        },
        coords={
            "time": np.array(["2020-01-01", "2020-01-02", "2020-01-03"], dtype="M8[ns]"),
            "lat": [10.0, 20.0, 30.0, 40.0],
            "lon": np.arange(5),
            "label": ("lat", np.array([1, 2, 3, 4])),
        },
        attrs={"history": "written by a test", "version": 3},
    )
    dataset["temperature"].encoding = {"zlib": True, "chunksizes": (1, 2, 5)}
    path = tmp_path / f"{engine}.nc"
    dataset.to_netcdf(path, engine=engine)
    assert_fast_and_exact(path)
    with xr.open_dataset(path, engine=engine) as native:
        virtual = vz.open_virtual_dataset(path, registry=local_registry(path))
        store = virtual.virtualize.to_manifest_store(local_registry(path))
        xr.testing.assert_identical(
            xr.open_zarr(store, consolidated=False, zarr_format=3).load(), native.load()
        )


def test_phony_dimensions_match(tmp_path: Path) -> None:
    path = tmp_path / "phony.h5"
    with h5py.File(path, "w") as f:
        f["a"] = np.zeros((3, 4))
        f["b"] = np.zeros((4, 3))
        f.create_group("g")["c"] = np.zeros((3, 3))
    assert_fast_and_exact(path)


def write_out_of_scope(path: Path, kind: str) -> None:
    with h5py.File(path, "w") as f:
        f["plain"] = np.arange(4.0)
        if kind == "soft link":
            f["alias"] = h5py.SoftLink("/plain")
        elif kind == "compound":
            f["table"] = np.zeros(3, dtype=[("a", "i4"), ("b", "f8")])
        elif kind == "compact":
            space = h5py.h5s.create_simple((4,))
            plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            plist.set_layout(h5py.h5d.COMPACT)
            h5py.h5d.create(f.id, b"small", h5py.h5t.NATIVE_INT32, space, plist)
        elif kind == "vlen strings":
            f["names"] = np.array(["a", "bc"], dtype=h5py.string_dtype())
        elif kind == "masked chunk":
            dataset = f.create_dataset("masked", (4,), chunks=(2,), dtype="i4", compression=4)
            dataset.id.write_direct_chunk((0,), np.arange(2, dtype="i4").tobytes(), 1)
            dataset[2:] = [5, 6]
        elif kind == "undefined fill, unwritten":
            space = h5py.h5s.create_simple((4,))
            plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            plist.set_chunk((2,))
            plist.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
            h5py.h5d.create(f.id, b"holes", h5py.h5t.NATIVE_INT32, space, plist)


@pytest.mark.parametrize(
    "kind",
    [
        "soft link",
        "compound",
        "compact",
        "vlen strings",
        "masked chunk",
        "undefined fill, unwritten",
    ],
)
def test_what_the_fast_path_leaves_to_h5py(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "other.h5"
    write_out_of_scope(path, kind)
    assert fast_parse(path) is None
    try:
        expected = h5py_parse(path)
    except VirtualizeError as error:
        with pytest.raises(type(error)):
            auto_parse(path)
        return
    assert_same(auto_parse(path), expected)


def test_metadata_reader_is_checked() -> None:
    with pytest.raises(ValueError, match="metadata_reader"):
        HDFParser(metadata_reader="fast")  # type: ignore[arg-type]


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
def test_corpus_fast_path_equals_h5py(capsys: pytest.CaptureFixture[str]) -> None:
    taken: list[str] = []
    left: list[str] = []
    for path in corpus_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fast = fast_parse(path)
            except VirtualizeError:
                fast = None  # not an HDF5 file at all, say: h5py reports it
            if fast is None:
                left.append(path.name)
                continue
            try:
                expected = h5py_parse(path)
            except VirtualizeError as error:
                pytest.fail(f"{path.name}: the fast path took a file h5py refuses ({error})")
            assert describe(fast) == describe(expected), path.name
            taken.append(path.name)
    with capsys.disabled():
        print(f"\nfast path: {len(taken)} corpus files, h5py: {len(left)}")
    assert len(taken) >= 20
