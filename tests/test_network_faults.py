"""Network faults between virtualize and S3: reads and ingests retry, or fail loudly.

A :class:`~fault_proxy.FaultProxy` sits between obstore / Icechunk and the moto S3 server and
resets connections, stalls, answers ``503 SlowDown`` and cuts response bodies short. Within
the retry budget of :class:`virtualize.NetworkSettings` the results equal the native read;
beyond it the error is a typed virtualize error naming the url, and an ingest commits nothing.

Each test prints what it injected and checked, and records the count of faults it survived
(``network_faults`` in the report's properties), which the conftest hook lists at the end of
the run.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import icechunk
import numpy as np
import obstore
import pytest
import xarray as xr
from fault_proxy import FaultProxy
from oracle import moto_bucket_store, read_through_manifest_store
from test_mfdataset import write_day

import virtualize as vz
from virtualize.errors import ChunkReadError, InvalidFileError, RepositoryAccessError
from virtualize.ingest import ingest_history, open_repository

BUCKET = "faults"

# Short waits so that a fault costs milliseconds and a stall one second, and a budget of 8
# retries, which every schedule below stays well inside.
FAST = vz.NetworkSettings(
    max_retries=8,
    backoff_initial=0.02,
    backoff_max=0.2,
    timeout=1.0,
    connect_timeout=1.0,
    retry_timeout=30.0,
)
# Two retries only, for the tests that exhaust the budget.
SMALL = vz.NetworkSettings(
    max_retries=2, backoff_initial=0.02, backoff_max=0.1, timeout=1.0, connect_timeout=1.0
)

Report = Callable[[str, FaultProxy], None]


@pytest.fixture
def root() -> str:
    """A key prefix of the test's own: moto keeps buckets in process-wide state, so a later
    test in the same worker would otherwise find an earlier test's repository."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def proxy(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy in front of the test's moto server; obstore's default stores and
    Icechunk reach S3 through it (``AWS_ENDPOINT_URL``)."""
    with FaultProxy(s3_endpoint, stall_seconds=5.0) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL", running.url)
        yield running


@pytest.fixture
def report(record_property: Callable[[str, object], None]) -> Report:
    """Print what a test injected and checked, and record the faults it survived."""

    def emit(checked: str, proxy: FaultProxy) -> None:
        print(f"network faults: {proxy.summary()}; checked: {checked}")
        record_property("network_faults", f"{proxy.total_injected} ({proxy.summary()})")

    return emit


def upload(endpoint: str, local: Path, url: str) -> str:
    """Put ``local`` at ``url`` directly (not through the proxy)."""
    key = url.removeprefix(f"s3://{BUCKET}/")
    obstore.put(moto_bucket_store(BUCKET, endpoint), key, local.read_bytes())
    return url


def sample(folder: Path) -> Path:
    """A netCDF4 file of 48 compressed chunks and an uncompressed variable."""
    path = folder / "sample.nc"
    rng = np.random.default_rng(7)
    xr.Dataset(
        {
            "temperature": (("time", "y", "x"), rng.normal(280, 5, (12, 8, 8)).astype("f4")),
            "count": (("time",), np.arange(12, dtype="i8")),
        },
        coords={"time": np.arange(12), "y": np.arange(8.0), "x": np.arange(8.0)},
        attrs={"title": "faults"},
    ).to_netcdf(
        path,
        engine="netcdf4",
        encoding={"temperature": {"zlib": True, "chunksizes": (1, 4, 2)}},
    )
    return path


def native(files: list[Path]) -> xr.Dataset:
    with xr.open_mfdataset(
        files, combine="by_coords", data_vars="minimal", coords="minimal", compat="override"
    ) as dataset:
        return dataset.load()


def read_repository(repo: str, registry: vz.ObjectStoreRegistry) -> xr.Dataset:
    repository, _ = open_repository(repo, registry, network=FAST)
    store = repository.readonly_session("main").store
    return xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None).load()


def test_reads_survive_resets_503s_truncation_and_a_stall(
    s3_endpoint: str, proxy: FaultProxy, tmp_path: Path, report: Report, root: str
) -> None:
    local = sample(tmp_path)
    url = upload(s3_endpoint, local, f"{root}/data/sample.nc")
    registry = vz.ObjectStoreRegistry.for_urls([url], network=FAST, quiet=True)
    # Spread out so that no request meets more faults in a row than the budget allows.
    proxy.inject("reset", times=3, every=5)
    proxy.inject("slowdown", times=3, every=4)
    proxy.inject("truncate", times=3, every=4, method="GET")
    proxy.inject("stall", times=1, every=7)

    vds = vz.open_virtual_dataset(url, registry=registry)
    assert vds["temperature"].data.manifest.urls == (url,)
    got = read_through_manifest_store(vz.parsers.HDFParser()(url, registry))

    with xr.open_dataset(local) as expected:
        xr.testing.assert_identical(got, expected.load())
    assert all(proxy.injected[kind] > 0 for kind in ("reset", "slowdown", "truncate", "stall"))
    report("open_virtual_dataset + ManifestStore read == xr.open_dataset (identical)", proxy)


def upload_days(endpoint: str, tmp_path: Path, root: str) -> list[Path]:
    """Four daily files, written locally and uploaded under ``root/archive/``."""
    files = [write_day(tmp_path / "local", day) for day in range(4)]
    for path in files:
        upload(endpoint, path, f"{root}/archive/{path.name}")
    return files


def test_ingest_from_s3_into_s3_survives_faults(
    s3_endpoint: str, proxy: FaultProxy, tmp_path: Path, report: Report, root: str
) -> None:
    files = upload_days(s3_endpoint, tmp_path, root)
    repo = f"{root}/repo"
    # Every kind on the archive's reads; resets, 503s and stalls also on the repository's
    # requests (writes included). Icechunk 2.3 does not retry a cut-short body, so
    # truncation is aimed at obstore's reads of the archive only.
    proxy.inject("truncate", times=3, every=3, method="GET", path_contains="/archive/")
    proxy.inject("reset", times=4, every=6)
    proxy.inject("slowdown", times=4, every=5)
    proxy.inject("stall", times=1, every=11, path_contains="/repo/")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # registry=None says what it authorised
        result = vz.ingest(
            f"{root}/archive/day*.nc",
            repo,
            concat_dim="time",
            batch_size=2,
            network=FAST,
            progress=False,
        )
    assert len(result.commits) == 2 and len(result.ingested) == 4
    during_ingest = proxy.total_injected

    # Read back through Icechunk (its virtual chunk reads included), still under fire.
    proxy.clear()
    proxy.inject("reset", times=2, every=4)
    proxy.inject("slowdown", times=2, every=3)
    registry = vz.ObjectStoreRegistry.for_urls([f"{root}/archive/x.nc"], network=FAST, quiet=True)
    got = read_repository(repo, registry)

    xr.testing.assert_identical(got, native(files))
    assert {url for c in ingest_history(repo) for url in c.files} == {
        f"{root}/archive/{path.name}" for path in files
    }
    assert during_ingest > 0 and proxy.total_injected > during_ingest
    assert all(proxy.injected[kind] > 0 for kind in ("reset", "slowdown", "truncate", "stall"))
    report(
        f"S3 ingest (2 commits, {during_ingest} faults) and its read-back == "
        "xr.open_mfdataset of local copies (identical)",
        proxy,
    )


def test_reads_beyond_the_retry_budget_fail_with_the_url(
    s3_endpoint: str, proxy: FaultProxy, tmp_path: Path, report: Report, root: str
) -> None:
    url = upload(s3_endpoint, sample(tmp_path), f"{root}/data/sample.nc")
    registry = vz.ObjectStoreRegistry.for_urls([url], network=SMALL, quiet=True)
    store = vz.parsers.HDFParser()(url, registry)

    proxy.inject("slowdown", times=None)  # every request, for ever
    started = time.perf_counter()
    with pytest.raises(ChunkReadError, match=r"s3://faults/\w+/data/sample\.nc") as raised:
        read_through_manifest_store(store)
    assert raised.value.url == url and "after 2 retries" in str(raised.value)
    assert time.perf_counter() - started < 10

    proxy.clear()
    proxy.inject("reset", times=None)
    started = time.perf_counter()
    with pytest.raises(InvalidFileError, match=r"s3://faults/\w+/data/sample\.nc"):
        vz.open_virtual_dataset(url, registry=registry)
    assert time.perf_counter() - started < 10
    report("ChunkReadError / InvalidFileError naming the url, each in < 10 s", proxy)


def test_an_ingest_beyond_the_retry_budget_commits_nothing(
    s3_endpoint: str, proxy: FaultProxy, tmp_path: Path, report: Report, root: str
) -> None:
    files = upload_days(s3_endpoint, tmp_path, root)
    repo = f"{root}/repo"
    registry = vz.ObjectStoreRegistry.for_urls([f"{root}/archive/x.nc"], network=SMALL, quiet=True)
    urls = [f"{root}/archive/{path.name}" for path in files]
    vz.ingest(urls[:2], repo, concat_dim="time", registry=registry, network=SMALL, progress=False)
    repository, _ = open_repository(repo, registry, network=SMALL)
    tip = repository.lookup_branch("main")
    history = [commit.snapshot_id for commit in ingest_history(repo)]

    # The archive's files can't be read: the batch fails, naming a file, and is not committed.
    proxy.inject("slowdown", times=None, path_contains="/archive/")
    started = time.perf_counter()
    with pytest.raises(InvalidFileError, match=r"s3://faults/\w+/archive/day00[23]\.nc") as raised:
        vz.ingest(urls, repo, concat_dim="time", registry=registry, network=SMALL)
    assert "nothing of this batch was committed" in "".join(raised.value.__notes__)
    archive_seconds = time.perf_counter() - started

    # The repository can't be reached: a clear error naming it, nothing committed.
    proxy.clear()
    proxy.inject("reset", times=None, path_contains="/repo/")
    started = time.perf_counter()
    with pytest.raises(RepositoryAccessError, match=r"s3://faults/\w+/repo"):
        vz.ingest(urls, repo, concat_dim="time", registry=registry, network=SMALL)
    repository_seconds = time.perf_counter() - started

    # Icechunk 2.3 does not retry a body cut short: the same clear error, nothing committed.
    proxy.clear()
    proxy.inject("truncate", times=None, method="GET", path_contains="/repo/")
    with pytest.raises(RepositoryAccessError, match=r"s3://faults/\w+/repo"):
        vz.ingest(urls, repo, concat_dim="time", registry=registry, network=SMALL)
    assert proxy.injected["truncate"] > 0

    # The repository opens but its writes fail: the batch's commit fails, typed, uncommitted.
    proxy.clear()
    proxy.inject("reset", times=None, method="PUT", path_contains="/repo/")
    with pytest.raises(RepositoryAccessError, match="Nothing of this batch was committed"):
        vz.ingest(urls, repo, concat_dim="time", registry=registry, network=SMALL)
    assert proxy.injected["reset"] > 0

    proxy.clear()
    repository, _ = open_repository(repo, registry, network=SMALL)
    assert repository.lookup_branch("main") == tip
    assert [commit.snapshot_id for commit in ingest_history(repo)] == history
    assert archive_seconds < 15 and repository_seconds < 15
    report(
        "typed errors naming the file / the repository "
        f"({archive_seconds:.1f} s, {repository_seconds:.1f} s); branch tip and history "
        "unchanged",
        proxy,
    )


def test_network_settings_map_onto_obstore_and_icechunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = vz.NetworkSettings(max_retries=3, backoff_initial=0.5, timeout=7.5)
    options = settings.obstore_options(allow_http=True)
    assert options["retry_config"]["max_retries"] == 3
    assert options["retry_config"]["backoff"]["init_backoff"].total_seconds() == 0.5
    assert options["client_options"]["timeout"].total_seconds() == 7.5
    assert options["client_options"]["allow_http"] is True
    storage = settings.icechunk_storage_settings()
    assert isinstance(storage, icechunk.StorageSettings)
    assert storage.retries is not None and storage.retries.max_tries == 4
    assert storage.retries.initial_backoff_ms == 500
    assert storage.timeouts is not None and storage.timeouts.read_timeout_ms == 7500

    monkeypatch.setenv("VIRTUALIZE_MAX_RETRIES", "4")
    monkeypatch.setenv("VIRTUALIZE_TIMEOUT", "2.5")
    assert vz.NetworkSettings.from_environment() == vz.NetworkSettings(max_retries=4, timeout=2.5)
    monkeypatch.setenv("VIRTUALIZE_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="VIRTUALIZE_TIMEOUT"):
        vz.NetworkSettings.from_environment()
    with pytest.raises(ValueError, match="max_retries"):
        vz.NetworkSettings(max_retries=-1)
