"""open_virtual_mfdataset: many files, any executor, xarray's combine semantics."""

from __future__ import annotations

import concurrent.futures
import shutil
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import obstore
import pandas as pd
import pytest
import xarray as xr
from obstore.store import LocalStore
from oracle import moto_bucket_store, read_through_manifest_store

import virtualize as vz
from virtualize.errors import (
    ConcatenationError,
    FormatDetectionError,
    InvalidFileError,
    NoFilesError,
    UnauthorizedLocationError,
)
from virtualize.executors import TaskFailure
from virtualize.manifests import ManifestArray
from virtualize.parsers import HDFParser

BUCKET = "mfdataset"
DAYS = 50


def write_day(folder: Path, day: int, *, scale_factor: float | None = None) -> Path:
    """One day of a small daily archive: a chunked, a contiguous and a static variable."""
    rng = np.random.default_rng(day)
    time = pd.date_range("2023-01-01", periods=1) + pd.Timedelta(days=day)
    dataset = xr.Dataset(
        {
            "tas": (("time", "lat", "lon"), rng.normal(280, 5, (1, 3, 4)).astype("f4")),
            "pr": (("time", "lat", "lon"), rng.gamma(1.0, 2.0, (1, 3, 4))),
            "orog": (("lat", "lon"), np.arange(12.0).reshape(3, 4)),
        },
        coords={"time": time, "lat": [10.0, 20.0, 30.0], "lon": [0.0, 90.0, 180.0, 270.0]},
        attrs={"source": "test archive"},
    )
    encoding: dict[str, Any] = {
        "time": {"units": "days since 2000-01-01", "dtype": "i4"},
        "tas": {"zlib": True, "chunksizes": (1, 3, 2)},
    }
    if scale_factor is not None:
        encoding["tas"].update({"dtype": "i2", "scale_factor": scale_factor, "_FillValue": -999})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"day{day:03d}.nc"
    dataset.to_netcdf(path, encoding=encoding)
    return path


def registry_for(folder: Path) -> vz.ObjectStoreRegistry:
    return vz.ObjectStoreRegistry({folder.resolve().as_uri() + "/": LocalStore(folder)})


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("archive")
    for day in range(DAYS):
        write_day(folder, day)
    return folder


@pytest.fixture(scope="module")
def serial(archive: Path) -> xr.Dataset:
    return vz.open_virtual_mfdataset(
        str(archive / "day*.nc"), registry=registry_for(archive), progress=False
    )


def assert_same_virtual_dataset(got: xr.Dataset, expected: xr.Dataset) -> None:
    """Same variables, coordinates and attributes; virtual variables with the same metadata
    and the same references, chunk for chunk."""
    assert list(got.variables) == list(expected.variables)
    assert got.attrs == expected.attrs
    for name, variable in expected.variables.items():
        other = got.variables[name]
        assert other.dims == variable.dims and other.attrs == variable.attrs
        if isinstance(variable.data, ManifestArray):
            assert isinstance(other.data, ManifestArray)
            assert other.data.metadata == variable.data.metadata
            assert other.data.manifest == variable.data.manifest
            assert other.data.manifest.urls == variable.data.manifest.urls
        else:
            xr.testing.assert_identical(other, variable)


def test_the_archive_combines_and_reads_back_exactly(archive: Path, serial: xr.Dataset) -> None:
    assert serial.sizes == {"time": DAYS, "lat": 3, "lon": 4}
    assert isinstance(serial["tas"].data, ManifestArray)
    assert len(serial["tas"].data.manifest.urls) == DAYS
    assert serial["orog"].dims == ("lat", "lon")  # data_vars="minimal": taken from one file
    store = serial.virtualize.to_manifest_store(registry_for(archive))
    native = xr.open_mfdataset(
        sorted(archive.glob("day*.nc")), data_vars="minimal", coords="minimal", compat="override"
    ).load()
    xr.testing.assert_identical(read_through_manifest_store(store), native)


def local_cluster_executor() -> Any:
    from distributed import Client, LocalCluster

    from virtualize.executors import DaskExecutor

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    return DaskExecutor(client=client), lambda: (client.close(), cluster.close())


@pytest.mark.xdist_group("executors")
@pytest.mark.parametrize("name", ["threads", "processes", "futures", "dask", "lithops"])
def test_every_executor_gives_the_same_dataset(
    archive: Path, serial: xr.Dataset, name: str
) -> None:
    cleanup: Any = None
    executor: Any = name
    if name == "futures":
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=3)
        cleanup = executor.shutdown
    elif name == "dask":
        pytest.importorskip("distributed")
        executor, cleanup = local_cluster_executor()
    elif name == "lithops":
        pytest.importorskip("lithops")  # by name: localhost, files spread over a few calls
    try:
        got = vz.open_virtual_mfdataset(
            str(archive / "day*.nc"),
            registry=registry_for(archive),
            executor=executor,
            progress=False,
        )
    finally:
        if cleanup is not None:
            cleanup()
    assert_same_virtual_dataset(got, serial)


@pytest.fixture
def archive_with_a_corrupt_file(archive: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "archive"
    shutil.copytree(archive, folder)
    (folder / "day025.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)  # truncated
    return folder


def test_record_reports_the_one_corrupt_file_and_combines_the_rest(
    archive_with_a_corrupt_file: Path,
) -> None:
    folder = archive_with_a_corrupt_file
    combined, failures = vz.open_virtual_mfdataset(
        str(folder / "day*.nc"),
        registry=registry_for(folder),
        executor="threads",
        on_error="record",
        progress=False,
    )
    assert combined.sizes["time"] == DAYS - 1
    assert len(failures) == 1
    (failure,) = failures
    assert isinstance(failure, TaskFailure)
    assert failure.item.endswith("/day025.nc") and failure.index == 25
    assert isinstance(failure.error, InvalidFileError | FormatDetectionError)
    assert failure.attempts == 1  # a malformed file is not retried
    assert pd.Timestamp("2023-01-26") not in combined.indexes["time"]


def test_skip_warns_once_and_raise_names_the_file(archive_with_a_corrupt_file: Path) -> None:
    folder = archive_with_a_corrupt_file
    registry = registry_for(folder)
    with pytest.warns(UserWarning, match="1 of 50"):
        combined = vz.open_virtual_mfdataset(
            str(folder / "day*.nc"), registry=registry, on_error="skip", progress=False
        )
    assert combined.sizes["time"] == DAYS - 1
    with pytest.raises((InvalidFileError, FormatDetectionError), match=r"day025\.nc"):
        vz.open_virtual_mfdataset(str(folder / "day*.nc"), registry=registry, progress=False)


class FlakyParser:
    """An HDF parser whose first ``failures`` attempts per file fail with an I/O error, as a
    network hiccup would; attempts are counted in files so that processes share them."""

    def __init__(self, counters: Path, failures: int) -> None:
        self.counters = counters
        self.failures = failures

    def __call__(self, url: str, registry: vz.ObjectStoreRegistry) -> vz.ManifestStore:
        counter = self.counters / (url.rsplit("/", 1)[-1] + ".attempts")
        attempts = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(attempts))
        if attempts <= self.failures:
            raise ConnectionResetError(f"attempt {attempts} of {url} reset by peer")
        return HDFParser()(url, registry)


@pytest.mark.xdist_group("executors")
@pytest.mark.parametrize("executor", ["serial", "processes"])
def test_transient_failures_are_retried(archive: Path, tmp_path: Path, executor: str) -> None:
    files = sorted(archive.glob("day00*.nc"))[:3]
    counters = tmp_path / "counters"
    counters.mkdir()
    combined = vz.open_virtual_mfdataset(
        files,
        parser=FlakyParser(counters, failures=2),
        registry=registry_for(archive),
        executor=executor,
        retries=2,
        progress=False,
    )
    assert combined.sizes["time"] == len(files)
    assert sorted(int(c.read_text()) for c in counters.iterdir()) == [3] * len(files)
    for counter in counters.iterdir():
        counter.unlink()
    with pytest.raises(ConnectionResetError, match="attempt 2"):
        vz.open_virtual_mfdataset(
            files,
            parser=FlakyParser(counters, failures=2),
            registry=registry_for(archive),
            executor=executor,
            retries=1,
            progress=False,
        )


def test_files_packed_differently_are_refused_with_the_groups(tmp_path: Path) -> None:
    for day in range(6):
        write_day(tmp_path, day, scale_factor=0.01 if day < 4 else 0.02)
    with pytest.raises(ConcatenationError) as caught:
        vz.open_virtual_mfdataset(
            str(tmp_path / "day*.nc"), registry=registry_for(tmp_path), progress=False
        )
    message = str(caught.value)
    assert caught.value.variable == "tas"
    assert "4 files" in message and "2 files" in message
    assert "scale_factor 0.01" in message and "scale_factor 0.02" in message
    assert "day004.nc" in message and "day000.nc" in message
    # only the variable that disagrees is listed, under its own heading
    assert "\ntas:\n" in message and "\npr:\n" not in message and "\norog:\n" not in message


def test_files_packed_differently_are_grouped_on_request(tmp_path: Path) -> None:
    # the packing changes on day 2 and changes back on day 5
    scales = [0.01, 0.01, 0.02, 0.02, 0.02, 0.01]
    files = [write_day(tmp_path, day, scale_factor=s) for day, s in enumerate(scales)]
    parts = vz.open_virtual_mfdataset(
        str(tmp_path / "day*.nc"),
        registry=registry_for(tmp_path),
        progress=False,
        group_by_encoding=True,
    )
    assert [len(part.time) for part in parts] == [3, 3]
    assert [part.encoding["source_files"] for part in parts] == [
        [files[i].resolve().as_uri() for i in (0, 1, 5)],
        [files[i].resolve().as_uri() for i in (2, 3, 4)],
    ]
    for part in parts:
        virtual = read_through_manifest_store(
            part.virtualize.to_manifest_store(registry_for(tmp_path))
        )
        native = xr.open_mfdataset(
            [Path(url.removeprefix("file://")) for url in part.encoding["source_files"]],
            combine="by_coords",
            data_vars="minimal",
            coords="minimal",
            compat="override",
        ).load()
        xr.testing.assert_identical(virtual, native)
    with pytest.raises(ValueError, match="by_coords"):
        vz.open_virtual_mfdataset(
            files, combine="nested", concat_dim="time", group_by_encoding=True
        )


def test_progress_is_reported_per_file(archive: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    vz.open_virtual_mfdataset(
        str(archive / "day00*.nc"),
        registry=registry_for(archive),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(i, 10) for i in range(1, 11)]


def test_nested_combine_keeps_the_given_order_and_nesting(archive: Path) -> None:
    files = sorted(archive.glob("day00*.nc"))
    registry = registry_for(archive)
    reversed_order = vz.open_virtual_mfdataset(
        files[::-1], combine="nested", concat_dim="time", registry=registry, progress=False
    )
    assert list(reversed_order.indexes["time"]) == sorted(reversed_order.indexes["time"])[::-1]
    first, second = files[:5], files[5:]
    by_halves = vz.open_virtual_mfdataset(
        [first, second],
        combine="nested",
        concat_dim=["half", "time"],
        registry=registry,
        data_vars="all",  # a new dimension: xarray needs to be told what to stack
        join="override",
        progress=False,
    )
    assert by_halves["tas"].dims == ("half", "time", "lat", "lon")
    assert by_halves["tas"].shape == (2, 5, 3, 4)
    native = xr.combine_nested(
        [[xr.open_dataset(f) for f in first], [xr.open_dataset(f) for f in second]],
        concat_dim=["half", "time"],
        data_vars="all",
        join="override",
    )
    for name, variable in native.variables.items():
        assert by_halves[name].dims == variable.dims  # "orog" stacked by reference too
    manifest = by_halves["tas"].data.manifest
    for half in range(2):
        for step in range(5):
            entry = manifest[half, step, 0, 0]
            assert entry is not None and entry.url.endswith(f"day{5 * half + step:03d}.nc")


def test_preprocess_runs_on_each_file(archive: Path) -> None:
    seen: list[int] = []

    def keep_tas(dataset: xr.Dataset) -> xr.Dataset:
        seen.append(dataset.sizes["time"])
        return dataset[["tas"]]

    combined = vz.open_virtual_mfdataset(
        str(archive / "day00*.nc"),
        registry=registry_for(archive),
        preprocess=keep_tas,
        executor="threads",
        progress=False,
    )
    assert seen == [1] * 10
    assert list(combined.data_vars) == ["tas"]


def test_globs_list_only_what_matches_and_what_is_registered(tmp_path: Path) -> None:
    for month in ("2023-01", "2023-02"):
        write_day(tmp_path / "years" / "2023" / month, int(month[-1]))
    write_day(tmp_path / "years" / "2024", 40)
    registry = registry_for(tmp_path)
    combined = vz.open_virtual_mfdataset(
        str(tmp_path / "years" / "2023" / "**" / "*.nc"), registry=registry, progress=False
    )
    assert combined.sizes["time"] == 2
    with pytest.raises(NoFilesError, match=r"\*\.grib"):
        vz.open_virtual_mfdataset(str(tmp_path / "*.grib"), registry=registry, progress=False)
    elsewhere = registry_for(tmp_path / "years" / "2024")
    with pytest.raises(UnauthorizedLocationError):
        vz.open_virtual_mfdataset(
            str(tmp_path / "years" / "2023" / "*" / "*.nc"), registry=elsewhere, progress=False
        )


def test_months_of_unequal_length_combine_into_a_rectilinear_grid(tmp_path: Path) -> None:
    for month, days in (("2023-01", 31), ("2023-02", 28), ("2023-03", 31)):
        times = pd.date_range(month, periods=days, freq="D")
        xr.Dataset(
            {"tas": (("time", "x"), np.arange(days * 2, dtype="f4").reshape(days, 2))},
            coords={"time": times, "x": [0, 1]},
        ).to_netcdf(tmp_path / f"{month}.nc", encoding={"time": {"units": "days since 2023-01-01"}})
    registry = registry_for(tmp_path)
    combined = vz.open_virtual_mfdataset(
        str(tmp_path / "2023-*.nc"), registry=registry, progress=False
    )
    assert combined["tas"].data.chunk_grid == ((31, 28, 31), 2)
    native = xr.open_mfdataset(sorted(tmp_path.glob("2023-*.nc"))).load()
    xr.testing.assert_identical(
        read_through_manifest_store(combined.virtualize.to_manifest_store(registry)), native
    )


def test_an_s3_glob_parses_writes_to_icechunk_and_reads_back(
    s3_endpoint: str, tmp_path: Path
) -> None:
    bucket = moto_bucket_store(BUCKET, s3_endpoint)
    local = tmp_path / "local"
    for day in range(6):
        path = write_day(local, day)
        obstore.put(bucket, f"era/{path.name}", path.read_bytes())
    obstore.put(bucket, "era/README.txt", b"not data")
    registry = vz.ObjectStoreRegistry({f"s3://{BUCKET}/": bucket})
    combined = vz.open_virtual_mfdataset(
        f"s3://{BUCKET}/era/day*.nc", registry=registry, executor="threads", progress=False
    )
    assert combined["tas"].data.manifest.urls[0] == f"s3://{BUCKET}/era/day000.nc"

    container = f"s3://{BUCKET}/era/"
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(
            container,
            icechunk.s3_store(
                region="us-east-1",
                endpoint_url=s3_endpoint,
                allow_http=True,
                s3_compatible=True,
                force_path_style=True,
            ),
        )
    )
    credentials = {
        container: icechunk.s3_static_credentials(
            access_key_id="testing", secret_access_key="testing"
        )
    }
    repository = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(tmp_path / "repo")),
        config=config,
        authorize_virtual_chunk_access=icechunk.containers_credentials(credentials),
    )
    session = repository.writable_session("main")
    combined.virtualize.to_icechunk(session.store)
    session.commit("six days from s3")
    store = repository.readonly_session("main").store
    got = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None).load()
    native = xr.open_mfdataset(
        sorted(local.glob("day*.nc")), data_vars="minimal", coords="minimal", compat="override"
    ).load()
    xr.testing.assert_identical(got, native)
