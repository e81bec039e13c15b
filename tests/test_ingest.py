"""``vz.ingest`` and ``virtualize ingest`` / ``log``: batches, resumption, errors, readers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from test_mfdataset import registry_for, write_day

import virtualize as vz
from virtualize.cli import main
from virtualize.errors import ConcatenationError, InvalidFileError
from virtualize.ingest import IngestCommit, ingest_history, open_repository
from virtualize.parsers import IcechunkParser

TESTS = Path(__file__).resolve().parent


def write_archive(folder: Path, days: int) -> list[Path]:
    return [write_day(folder, day) for day in range(days)]


def committed(repo: Path, registry: vz.ObjectStoreRegistry) -> xr.Dataset:
    repository, _ = open_repository(str(repo), registry)
    store = repository.readonly_session("main").store
    return xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None).load()


def native(files: list[Path]) -> xr.Dataset:
    with xr.open_mfdataset(
        files, combine="by_coords", data_vars="minimal", coords="minimal", compat="override"
    ) as dataset:
        return dataset.load()


def references(repo: Path, archive: Path) -> dict[str, Any]:
    """The virtual arrays' references (the repository's own chunks, of loaded coordinates,
    are named after the repository and chunked by batch, so they are not compared)."""
    from obstore.store import LocalStore

    registry = registry_for(archive)
    registry.register(repo.resolve().as_uri() + "/", LocalStore(repo))
    group = IcechunkParser()(str(repo), registry).group
    found = {}
    for name, array in group.arrays.items():
        manifest = array.manifest
        if manifest.urls and all(
            url.startswith(archive.resolve().as_uri()) for url in manifest.urls
        ):
            found[name] = (
                array.metadata.to_dict(),
                [
                    manifest.urls[i] if i < len(manifest.urls) else int(i)
                    for i in manifest.path_ids.ravel()
                ],
                manifest.offsets.tolist(),
                manifest.lengths.tolist(),
            )
    assert {"tas", "pr", "orog"} <= set(found)
    return found


def ingest_commits(repo: Path) -> list[IngestCommit]:
    return [commit for commit in ingest_history(str(repo)) if commit.by_ingest]


def test_ingest_in_two_runs_equals_one_run_and_the_native_read(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    files = write_archive(archive, 12)
    registry = registry_for(archive)
    first = vz.ingest(
        [str(f) for f in files[:7]],
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=registry,
        batch_size=3,
        progress=False,
    )
    assert (len(first.ingested), len(first.commits), first.already) == (7, 3, 0)
    second = vz.ingest(
        str(archive / "day*.nc"),
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=registry,
        batch_size=3,
        progress=False,
    )
    assert (second.listed, second.already, len(second.ingested)) == (12, 7, 5)
    assert second.ingested == [f.resolve().as_uri() for f in files[7:]]
    once = vz.ingest(
        str(archive / "day*.nc"),
        str(tmp_path / "once"),
        concat_dim="time",
        progress=False,
        registry=registry,
        batch_size=5,
    )
    assert len(once.commits) == 3
    xr.testing.assert_identical(committed(tmp_path / "repo", registry), native(files))
    xr.testing.assert_identical(committed(tmp_path / "once", registry), native(files))
    assert references(tmp_path / "repo", archive) == references(tmp_path / "once", archive)
    # a third run finds nothing to do and commits nothing
    again = vz.ingest(
        str(archive / "day*.nc"),
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=registry,
        progress=False,
    )
    assert (again.already, again.commits) == (12, [])
    commits = ingest_commits(tmp_path / "repo")
    assert [len(c.files) for c in commits] == [2, 3, 1, 3, 3]  # newest first
    assert sum(c.references for c in commits) == first.references + second.references


def test_kill_mid_batch_leaves_whole_batches_and_a_rerun_resumes(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    files = write_archive(archive, 200)
    repo = tmp_path / "repo"
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "import virtualize as vz\n"
        "from ingest_support import SlowParser\n"
        "from test_mfdataset import registry_for\n"
        "from pathlib import Path\n"
        f"vz.ingest({str(archive / 'day*.nc')!r}, {str(repo)!r}, concat_dim='time',\n"
        f"          registry=registry_for(Path({str(archive)!r})), batch_size=20,\n"
        "          parser=SlowParser(0.02), progress=False)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail("the ingest ended before it could be stopped")
            if (repo / "repo").exists() and len(ingest_commits(repo)) >= 2:
                break
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)  # while it parses the third batch
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    commits = ingest_commits(repo)
    assert 2 <= len(commits) < 10
    assert all(len(commit.files) == 20 for commit in commits)
    done = sorted(url for commit in commits for url in commit.files)
    assert done == [f.resolve().as_uri() for f in files[: 20 * len(commits)]]
    registry = registry_for(archive)
    xr.testing.assert_identical(committed(repo, registry), native(files[: len(done)]))

    rerun = vz.ingest(
        str(archive / "day*.nc"),
        str(repo),
        concat_dim="time",
        registry=registry,
        batch_size=20,
        progress=False,
    )
    assert rerun.already == len(done)
    assert len(rerun.ingested) == 200 - len(done)
    vz.ingest(
        str(archive / "day*.nc"),
        str(tmp_path / "once"),
        concat_dim="time",
        registry=registry,
        batch_size=20,
        progress=False,
    )
    resumed, once = committed(repo, registry), committed(tmp_path / "once", registry)
    xr.testing.assert_identical(resumed, once)
    xr.testing.assert_identical(resumed, native(files))
    assert references(repo, archive) == references(tmp_path / "once", archive)


def write_corrupt(folder: Path, day: int) -> Path:
    path = folder / f"day{day:03d}.nc"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 200)  # a signature, then nothing
    return path


def test_corrupt_file_is_skipped_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "archive"
    files = write_archive(archive, 10)
    bad = write_corrupt(archive, 7)
    repo = tmp_path / "repo"
    code = main(
        [
            "ingest",
            str(archive / "day*.nc"),
            "--repo",
            str(repo),
            "--batch-size",
            "5",
            "--on-error",
            "skip",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "9 files ingested in 2 commits" in out and "skipped 1" in out
    [newest, oldest] = ingest_commits(repo)
    assert [url for url, _ in newest.skipped] == [bad.resolve().as_uri()]
    assert "InvalidFileError" in newest.skipped[0][1]
    assert oldest.skipped == () and len(newest.files) == 4
    good = [f for f in files if f != bad]
    xr.testing.assert_identical(committed(repo, registry_for(archive)), native(good))
    assert main(["log", str(repo)]) == 0
    log = capsys.readouterr().out
    assert f"skipped {bad.resolve().as_uri()}: InvalidFileError" in log
    assert "4 files" in log and "5 files" in log
    # the skipped file is left alone on a rerun, unless asked
    assert main(["ingest", str(archive / "day*.nc"), "--repo", str(repo), "--no-progress"]) == 0
    assert "0 files ingested in 0 commits" in capsys.readouterr().out


def test_corrupt_file_with_raise_commits_nothing_of_its_batch(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    files = write_archive(archive, 10)
    bad = write_corrupt(archive, 7)
    repo = tmp_path / "repo"
    with pytest.raises(InvalidFileError) as caught:
        vz.ingest(
            str(archive / "day*.nc"),
            str(repo),
            concat_dim="time",
            registry=registry_for(archive),
            batch_size=5,
            progress=False,
        )
    assert bad.name in str(caught.value)
    assert any("nothing of this batch was committed" in n for n in caught.value.__notes__)
    [only] = ingest_commits(repo)
    assert len(only.files) == 5
    xr.testing.assert_identical(committed(repo, registry_for(archive)), native(files[:5]))
    code = main(["ingest", str(archive / "day*.nc"), "--repo", str(repo), "--no-progress"])
    assert code == 2  # the same file fails again, with a one-line message


def test_readers_only_ever_see_whole_batches(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    files = write_archive(archive, 60)
    repo = tmp_path / "repo"
    expected = native(files)
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "import virtualize as vz\n"
        "from ingest_support import SlowParser\n"
        "from test_mfdataset import registry_for\n"
        "from pathlib import Path\n"
        f"vz.ingest({str(archive / 'day*.nc')!r}, {str(repo)!r}, concat_dim='time',\n"
        f"          registry=registry_for(Path({str(archive)!r})), batch_size=10,\n"
        "          parser=SlowParser(0.02), progress=False)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    seen: set[int] = set()
    try:
        while process.poll() is None:
            if (repo / "repo").exists():
                repository, _ = open_repository(str(repo), registry_for(archive))
                store = repository.readonly_session("main").store
                try:
                    got = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None)
                except (FileNotFoundError, KeyError, ValueError):
                    got = None  # the root group alone: nothing ingested yet
                if got is not None and "time" in got.sizes:
                    length = got.sizes["time"]
                    seen.add(length)
                    assert length % 10 == 0
                    xr.testing.assert_identical(got.load(), expected.isel(time=slice(0, length)))
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert len(seen) >= 2  # the reader did look during the ingest


def test_appending_out_of_order_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    files = write_archive(archive, 6)
    registry = registry_for(archive)
    vz.ingest(
        [str(f) for f in files[3:]],
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=registry,
        progress=False,
    )
    with pytest.raises(ConcatenationError, match="not after the last value committed"):
        vz.ingest(
            [str(f) for f in files[:3]],
            str(tmp_path / "repo"),
            concat_dim="time",
            registry=registry,
            progress=False,
        )
    assert len(ingest_commits(tmp_path / "repo")) == 1


def test_progress_callback_and_arguments(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    write_archive(archive, 4)
    calls: list[tuple[int, int]] = []
    vz.ingest(
        str(archive / "day*.nc"),
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=registry_for(archive),
        batch_size=3,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (4, 4) and all(total == 4 for _, total in calls)
    with pytest.raises(ValueError, match="batch_size"):
        vz.ingest(str(archive / "day*.nc"), str(tmp_path / "repo"), concat_dim="time", batch_size=0)
    with pytest.raises(ValueError, match="on_error"):
        vz.ingest(
            str(archive / "day*.nc"),
            str(tmp_path / "repo"),
            concat_dim="time",
            on_error="record",  # type: ignore[arg-type]
        )
    times = committed(tmp_path / "repo", registry_for(archive))["time"].values
    assert (np.diff(times) > np.timedelta64(0, "ns")).all()


BUCKET = "ingest"


def test_s3_archive_into_an_s3_repository(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import obstore
    from oracle import moto_bucket_store

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    bucket = moto_bucket_store(BUCKET, s3_endpoint)
    local = tmp_path / "local"
    files = write_archive(local, 6)
    for path in files:
        obstore.put(bucket, f"archive/{path.name}", path.read_bytes())
    registry = vz.ObjectStoreRegistry({f"s3://{BUCKET}/": bucket})
    repo = f"s3://{BUCKET}/repo"
    first = vz.ingest(
        f"s3://{BUCKET}/archive/day00[0-3].nc",
        repo,
        concat_dim="time",
        registry=registry,
        batch_size=2,
        progress=False,
    )
    assert len(first.commits) == 2
    assert main(["ingest", f"s3://{BUCKET}/archive/day*.nc", "--repo", repo, "--no-progress"]) == 0
    repository, _ = open_repository(repo, registry)
    store = repository.readonly_session("main").store
    got = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None).load()
    xr.testing.assert_identical(got, native(files))
    urls = {url for commit in ingest_commits_at(repo) for url in commit.files}
    assert urls == {f"s3://{BUCKET}/archive/{path.name}" for path in files}


def ingest_commits_at(repo: str) -> list[Any]:
    return [commit for commit in ingest_history(repo) if commit.by_ingest]


def test_inspect_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    path = write_day(tmp_path, 0)
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "tas" in text and "referenced" in text
    assert main(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {v["path"] for v in report["variables"]} >= {"tas", "pr", "orog"}
    assert main(["inspect", str(tmp_path / "missing.nc")]) == 2
    assert "missing.nc" in capsys.readouterr().err


def test_group_attributes_stay_the_first_files(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    files = []
    for day in range(6):
        path = write_day(archive, day)
        with xr.open_dataset(path) as opened:
            dataset = opened.load()
        dataset.attrs["day"] = day  # differs from file to file
        path.unlink()
        dataset.to_netcdf(path, encoding={"tas": {"zlib": True, "chunksizes": (1, 3, 2)}})
        files.append(path)
    repo = tmp_path / "repo"
    registry = registry_for(archive)
    vz.ingest(
        [str(f) for f in files[:2]], str(repo), concat_dim="time", registry=registry, progress=False
    )
    vz.ingest(
        str(archive / "day*.nc"),
        str(repo),
        concat_dim="time",
        registry=registry,
        batch_size=2,
        progress=False,
    )
    got = committed(repo, registry)
    assert got.attrs["day"] == 0
    xr.testing.assert_identical(got, native(files))


def test_verify_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "archive"
    files = write_archive(archive, 4)
    repo = tmp_path / "repo"
    assert main(["ingest", str(archive / "day*.nc"), "--repo", str(repo), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["verify", str(repo), "--sample", "100"]) == 0
    assert "all equal" in capsys.readouterr().out
    files[2].unlink()
    assert main(["verify", str(repo), "--sample", "100"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and files[2].name in out


def test_a_batch_of_only_bad_files_is_recorded(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    write_archive(archive, 3)
    bad = [write_corrupt(archive, day) for day in (3, 4)]
    report = vz.ingest(
        str(archive / "day*.nc"),
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=registry_for(archive),
        batch_size=3,
        on_error="skip",
        progress=False,
    )
    assert sorted(url for url, _ in report.skipped) == [b.resolve().as_uri() for b in bad]
    [newest, _] = ingest_commits(tmp_path / "repo")
    assert newest.files == () and len(newest.skipped) == 2
    assert all("InvalidFileError" in error for _, error in newest.skipped)
