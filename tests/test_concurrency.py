"""Readers and writers of one repository at the same time, in separate processes.

Readers polling a branch while an ingest commits only ever see whole committed batches; two
ingests into one branch either both get their files in (the later commit rebased, or planned
and written again on the new tip) or one stops with ``IngestConflictError``: never a lost
commit, a file committed twice, or a file recorded that isn't in the data.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

import pytest
import xarray as xr
import zarr
from concurrency_support import (
    WAIT,
    commit_attributes,
    ingest_together,
    native,
    read_branch,
    read_while_ingesting,
    recorded_files,
)
from test_mfdataset import registry_for, write_day

import virtualize as vz
from virtualize.ingest import open_repository

# These tests share one xdist worker: their worker processes start once, and the tests don't
# compete with each other for the two cores.
pytestmark = pytest.mark.xdist_group("concurrency")

Workers = tuple[ProcessPoolExecutor, SyncManager]


@pytest.fixture(scope="module")
def workers() -> Iterator[Workers]:
    """Four worker processes for the module's tests (started once: a start costs seconds),
    and a manager for the barriers and events they share with the test."""
    # Icechunk hangs in processes started with "fork".
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, ProcessPoolExecutor(4, mp_context=spawn) as executor:
        yield executor, manager


def write_archive(folder: Path, days: int) -> list[Path]:
    return [write_day(folder, day) for day in range(days)]


def uri(path: Path) -> str:
    return path.resolve().as_uri()


def check_repository(repo: Path, archive: Path) -> list[str]:
    """The files the branch's commits recorded, oldest first, after checking that each is
    recorded once and that the data is exactly the native read of those files in that order."""
    repository, _ = open_repository(str(repo), registry_for(archive))
    files = recorded_files(repository, repository.lookup_branch("main"))
    assert len(files) == len(set(files)), f"a file committed twice: {files}"
    if files:
        store = repository.readonly_session("main").store
        got = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None).load()
        expected = native([f.removeprefix("file://") for f in files])
        xr.testing.assert_identical(got, expected)  # no time step lost, doubled or reordered
    return files


def ingest_at_once(workers: Workers, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the jobs' ingests in worker processes at the same time; their outcomes."""
    executor, manager = workers
    barrier = manager.Barrier(len(jobs))
    futures = [executor.submit(ingest_together, job, barrier) for job in jobs]
    return [future.result(timeout=3 * WAIT) for future in futures]


def describe(outcome: dict[str, Any]) -> str:
    if outcome["status"] == "ok":
        return (
            f"ok, {len(outcome['ingested'])} files in {outcome['commits']} commits, "
            f"{outcome['already']} already in, {outcome['rebased']} rebased, "
            f"{outcome['rewritten']} rewritten"
        )
    return f"{outcome['status']}, {outcome['error'].splitlines()[-1].split(': ', 1)[-1][:90]}"


def races(outcome: dict[str, Any]) -> int:
    """Times an ingest found that the other one had committed first."""
    if outcome["status"] == "ok":
        return int(outcome["rebased"] + outcome["rewritten"])
    return 1  # IngestConflictError is only raised after another writer committed


def test_readers_in_other_processes_only_see_whole_batches(
    tmp_path: Path, workers: Workers
) -> None:
    archive, repo, batch, readers = tmp_path / "archive", tmp_path / "repo", 5, 4
    files = write_archive(archive, 30)
    registry = registry_for(archive)
    open_repository(str(repo), registry, concat_dim="time", create=True)
    executor, manager = workers
    ready, stop, latest = manager.Barrier(readers + 1), manager.Event(), manager.dict()
    args = (str(repo), str(archive), [str(f) for f in files], native(files), batch)
    futures = [
        executor.submit(read_while_ingesting, name, *args, ready, stop, latest)
        for name in range(readers)
    ]

    def after_each_commit(done: int, total: int) -> None:
        """Called as a batch's files are parsed: before the batch's first file is, wait
        until every reader has read the last commit, so that each reads every snapshot."""
        if done % batch != 1:
            return
        deadline = time.monotonic() + WAIT
        while sorted(latest.values()) != [done - 1] * readers:
            assert time.monotonic() < deadline, f"readers stuck at {dict(latest)}"
            time.sleep(0.005)

    try:
        ready.wait(WAIT)  # every reader has read the empty repository
        report = vz.ingest(
            [str(f) for f in files],
            str(repo),
            concat_dim="time",
            registry=registry,
            batch_size=batch,
            progress=after_each_commit,
        )
    finally:
        stop.set()
    summaries = [future.result(timeout=WAIT) for future in futures]
    assert len(report.commits) == 30 // batch
    errors = [error for summary in summaries for error in summary["errors"]]
    assert not errors, "\n".join(errors)
    reads = sum(summary["reads"] for summary in summaries)
    snapshots: dict[str, int] = {}
    for summary in summaries:
        snapshots.update(summary["snapshots"])
    print(
        f"{readers} readers, {reads} reads, {len(snapshots)} snapshots seen, time lengths "
        f"{sorted(set(snapshots.values()))}: every read a whole number of {batch}-file batches, "
        "equal to the native read of the files its snapshot's commits recorded; each reader "
        "read every snapshot, its last read all 30 files"
    )
    lengths = list(range(0, 31, batch))
    assert all(sorted(set(s["snapshots"].values())) == lengths for s in summaries)
    assert all(summary["final"] == 30 for summary in summaries)
    assert len(snapshots) == len(report.commits) + 1


def test_two_ingests_of_disjoint_files_into_one_branch(tmp_path: Path, workers: Workers) -> None:
    archive = tmp_path / "archive"
    files = write_archive(archive, 24)
    # Each round, two processes append different files to one branch of a new repository,
    # started together (their first commits race); the rounds differ in how the two sets of
    # files interleave in time, and so in which orders of commits are valid appends.
    rounds = {
        "one batch each, A's days before B's": (files[:6], files[6:12], 6),
        "one batch each, B's days before A's": (files[6:12], files[:6], 6),
        "three batches each, A's days before B's": (files[:12], files[12:], 4),
        "A even days, B odd days, batches of 2": (files[0::2], files[1::2], 2),
    }
    total = 0
    for number, (name, (a, b, batch)) in enumerate(rounds.items()):
        repo = tmp_path / f"repo{number}"
        sets = [[str(f) for f in a], [str(f) for f in b]]
        jobs = [
            {"files": mine, "repo": str(repo), "archive": str(archive), "batch_size": batch}
            for mine in sets
        ]
        pair = ingest_at_once(workers, jobs)
        assert all(o["status"] in ("ok", "conflict") for o in pair), [o.get("error") for o in pair]
        committed = check_repository(repo, archive)
        for outcome, mine in zip(pair, sets, strict=True):
            if outcome["status"] == "ok":  # a run that succeeded has all its files in
                assert set(outcome["ingested"]) == {uri(Path(f)) for f in mine}
        assert set(committed) <= {uri(Path(f)) for f in sets[0] + sets[1]}
        total += sum(map(races, pair))
        print(
            f"{name}: A {describe(pair[0])}; B {describe(pair[1])}; repository: "
            f"{len(committed)} files, each once, equal to their native read"
        )
    print(f"in {len(rounds)} rounds, an ingest found the other had committed first {total} times")
    assert total >= len(rounds)  # every round's first commits raced


def test_two_ingests_of_the_same_files_commit_each_file_once(
    tmp_path: Path, workers: Workers
) -> None:
    archive = tmp_path / "archive"
    files = write_archive(archive, 12)
    repo = tmp_path / "repo"  # created by whichever ingest gets there first
    job = {
        "files": [str(f) for f in files],
        "repo": str(repo),
        "archive": str(archive),
        "batch_size": 3,
    }
    pair = ingest_at_once(workers, [job, job])
    assert [o["status"] for o in pair] == ["ok", "ok"], [o.get("error") for o in pair]
    committed = check_repository(repo, archive)
    assert committed == [uri(f) for f in files]
    assert sorted(url for o in pair for url in o["ingested"]) == committed  # each file once
    assert all(o["already"] + len(o["ingested"]) == 12 for o in pair)
    print(
        f"the same 12 files twice at once: A {describe(pair[0])}; B {describe(pair[1])}; "
        f"repository: {len(committed)} files, each once, equal to their native read"
    )
    assert sum(map(races, pair)) >= 1


def test_two_ingests_into_different_groups_rebase(tmp_path: Path, workers: Workers) -> None:
    archive = tmp_path / "archive"
    files = write_archive(archive, 12)
    repo = tmp_path / "repo"
    open_repository(str(repo), registry_for(archive), concat_dim="time", create=True)
    groups = {"a": files[:6], "b": files[6:]}
    jobs = [
        {
            "files": [str(f) for f in mine],
            "repo": str(repo),
            "archive": str(archive),
            "batch_size": 3,
            "target_group": group,
        }
        for group, mine in groups.items()
    ]
    a, b = ingest_at_once(workers, jobs)
    assert (a["status"], b["status"]) == ("ok", "ok"), (a.get("error"), b.get("error"))
    repository, _ = open_repository(str(repo), registry_for(archive))
    store = repository.readonly_session("main").store
    for group, mine in groups.items():
        got = xr.open_zarr(store, group=group, consolidated=False, zarr_format=3, chunks=None)
        xr.testing.assert_identical(got.load(), native(mine))
    committed = recorded_files(repository, repository.lookup_branch("main"))
    assert sorted(committed) == sorted(map(uri, files))
    assert read_branch(repository)[1] is None  # the root group holds no arrays
    print(f"groups a and b of one branch at once: A {describe(a)}; B {describe(b)}")
    assert a["rebased"] + b["rebased"] >= 1
    assert a["rewritten"] + b["rewritten"] == 0  # other arrays: never planned again


def test_commits_of_processes_on_a_local_repository_are_never_lost(
    tmp_path: Path, workers: Workers
) -> None:
    # Icechunk's local storage alone loses some of them (tried here: 74 of 80 in the
    # history); ingest commits under a lock of the repository's directory.
    archive, repo = tmp_path / "archive", tmp_path / "repo"
    archive.mkdir()
    open_repository(str(repo), registry_for(archive), create=True)
    executor, manager = workers
    writers, commits = 4, 15
    barrier = manager.Barrier(writers)
    futures = [
        executor.submit(commit_attributes, str(repo), name, commits, barrier)
        for name in range(writers)
    ]
    outcomes = [future.result(timeout=3 * WAIT) for future in futures]
    repository, _ = open_repository(str(repo))
    history = [info.id for info in repository.ancestry(branch="main")]
    committed = [snapshot for outcome in outcomes for snapshot in outcome["committed"]]
    attributes = dict(zarr.open_group(repository.readonly_session("main").store, mode="r").attrs)
    conflicts = sum(outcome["conflicts"] for outcome in outcomes)
    print(
        f"{writers} processes x {commits} commits under the lock: {len(committed)} committed, "
        f"{len(set(committed) & set(history))} in the history, {len(attributes)} attributes, "
        f"{conflicts} conflicts retried"
    )
    assert set(committed) <= set(history)
    assert len(attributes) == writers * commits
