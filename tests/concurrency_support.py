"""What the worker processes of tests/test_concurrency.py run (spawned: they import this)."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr
from obstore.store import LocalStore

import virtualize as vz
from virtualize.errors import IngestConflictError
from virtualize.ingest import METADATA_KEY, open_repository
from virtualize.parsers import HDFParser

#: Longest wait on a barrier: a process that died must not hang the other one.
WAIT = 60.0


def registry_for(folder: Path) -> vz.ObjectStoreRegistry:
    return vz.ObjectStoreRegistry({folder.resolve().as_uri() + "/": LocalStore(folder)})


def native(files: Sequence[str | Path]) -> xr.Dataset:
    with xr.open_mfdataset(
        list(files), combine="by_coords", data_vars="minimal", coords="minimal", compat="override"
    ) as dataset:
        return dataset.load()


def read_branch(repository: Any, branch: str = "main") -> tuple[str, xr.Dataset | None]:
    """The branch's snapshot id and its dataset, loaded (None before the first batch)."""
    session = repository.readonly_session(branch)
    try:
        dataset = xr.open_zarr(session.store, consolidated=False, zarr_format=3, chunks=None)
    except (FileNotFoundError, KeyError, ValueError):
        return session.snapshot_id, None  # the root group alone
    if "time" not in dataset.sizes:
        return session.snapshot_id, None
    return session.snapshot_id, dataset.load()


def recorded_files(repository: Any, snapshot_id: str) -> list[str]:
    """The files the commits up to ``snapshot_id`` recorded as ingested, oldest first."""
    files: list[str] = []
    for info in reversed(list(repository.ancestry(snapshot_id=snapshot_id))):
        record = (info.metadata or {}).get(METADATA_KEY) or {}
        files += record.get("files", [])
    return files


def read_while_ingesting(
    name: int,
    repo: str,
    archive: str,
    files: list[str],
    everything: xr.Dataset,
    batch_size: int,
    ready: Any,
    stop: Any,
    latest: Any,
) -> dict[str, Any]:
    """Read the branch once, wait at the barrier ``ready`` (the ingest starts there), then
    read it over and over until the event ``stop`` is set, and once more.

    Each read is checked against ``everything``, the native read of ``files`` (all the files
    to ingest), cut after the files its snapshot's commits recorded. After each read,
    ``latest[name]`` is the time length it found. Returns reads, snapshots seen, problems.
    """
    summary: dict[str, Any] = {"reads": 0, "snapshots": {}, "errors": []}
    try:
        repository, _ = open_repository(repo, registry_for(Path(archive)))
        urls = [Path(f).resolve().as_uri() for f in files]
        last = False
        while not last:
            if summary["reads"] == 1:
                ready.wait(WAIT)
            last = stop.is_set()  # the read after the ingest ended must see all of it
            snapshot, dataset = read_branch(repository)
            length = 0 if dataset is None else dataset.sizes["time"]
            summary["reads"] += 1
            seen = summary["snapshots"].setdefault(snapshot, length)
            problems = []
            if seen != length:
                problems.append(f"snapshot {snapshot} read with {seen} then {length} steps")
            if length % batch_size:
                problems.append(f"{length} time steps: not a whole number of batches")
            recorded = recorded_files(repository, snapshot)
            if recorded != urls[:length]:
                problems.append(f"{length} time steps, but the commits recorded {recorded}")
            if dataset is not None:
                try:
                    xr.testing.assert_identical(dataset, everything.isel(time=slice(0, length)))
                except AssertionError as error:
                    problems.append(f"{length} time steps differ from the native read: {error}")
            summary["errors"] += problems
            latest[name] = length
        summary["final"] = length
    except Exception:
        summary["errors"].append(traceback.format_exc())
    return summary


class GatedParser:
    """HDFParser whose first call waits for the other writers' first calls: every writer
    has then opened its session on the same branch tip, so their commits race."""

    def __init__(self, barrier: Any) -> None:
        self.barrier = barrier
        self.waited = False
        self.parser = HDFParser()

    def __call__(self, url: str, registry: Any) -> Any:
        self.release()
        return self.parser(url, registry)

    def release(self) -> None:
        if not self.waited:
            self.waited = True
            self.barrier.wait(WAIT)


def ingest_together(job: dict[str, Any], barrier: Any) -> dict[str, Any]:
    """Run ``vz.ingest`` of ``job``, started together with the other writers' (a barrier
    before the call and one at the first file parsed); its outcome."""
    outcome: dict[str, Any] = {}
    parser = GatedParser(barrier)
    try:
        barrier.wait(WAIT)
        report = vz.ingest(
            job["files"],
            job["repo"],
            concat_dim="time",
            registry=registry_for(Path(job["archive"])),
            batch_size=job["batch_size"],
            target_group=job.get("target_group"),
            parser=parser,
            progress=False,
        )
        outcome.update(
            status="ok",
            ingested=report.ingested,
            commits=len(report.commits),
            already=report.already,
            rebased=report.rebased,
            rewritten=report.rewritten,
        )
    except IngestConflictError as error:
        outcome.update(status="conflict", error=str(error))
    except Exception:
        outcome.update(status="error", error=traceback.format_exc())
    finally:
        parser.release()  # if this ingest parsed nothing, the others must not wait for it
    return outcome


def commit_attributes(repo: str, name: int, commits: int, barrier: Any) -> dict[str, Any]:
    """Make ``commits`` commits of one attribute each, under ingest's commit lock, retrying
    on conflicts, started with the other writers at ``barrier``; the snapshot ids committed."""
    import icechunk
    import zarr

    from virtualize.ingest import _commit_lock

    repository, _ = open_repository(repo)
    done: list[str] = []
    conflicts = 0
    barrier.wait(WAIT)
    for number in range(commits):
        while True:
            session = repository.writable_session("main")
            zarr.open_group(session.store, mode="a").attrs[f"{name}-{number}"] = number
            try:
                with _commit_lock(repository):
                    done.append(session.commit(f"writer {name}, commit {number}"))
                break
            except icechunk.ConflictError:
                conflicts += 1
    return {"committed": done, "conflicts": conflicts}
