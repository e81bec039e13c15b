"""Ingest an archive into an Icechunk repository: batched, resumable and transactional.

Files are listed, the ones earlier commits already ingested are left out, and the rest are
parsed in batches with an executor; each batch is combined, appended along the concatenation
dimension and committed on its own. A commit carries, in its metadata under ``"virtualize"``,
the files it ingested and the files it skipped with their errors, so the repository itself
remembers what it holds: a rerun after a crash (even ``kill -9``) resumes after the last
commit, and readers only ever see whole batches, since an Icechunk commit is atomic.

Ingests may run at the same time on one branch: a batch is planned on the branch tip it
started from, and when another writer commits first the batch is rebased (the other commit
touched none of its arrays) or planned and written again on the new tip, so no commit is lost
and no file is appended twice.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from virtualize.errors import ConcatenationError, IngestConflictError, NoFilesError
from virtualize.network import NetworkSettings
from virtualize.registry import ObjectStoreRegistry, normalize_url

__all__ = [
    "METADATA_KEY",
    "IngestCommit",
    "IngestReport",
    "ingest",
    "ingest_history",
    "open_repository",
]

#: The key of virtualize's record in a commit's metadata.
METADATA_KEY = "virtualize"
_FORMAT = 1


@dataclass(frozen=True)
class IngestCommit:
    """One commit of a repository's history, as ``virtualize log`` shows it.

    Attributes
    ----------
    snapshot_id, message, written_at
        The commit.
    files
        The files it ingested (empty for commits ``ingest`` did not make).
    skipped
        Files it left out, with the error that made it skip them.
    references
        How many chunk references it added.
    by_ingest
        Whether ``ingest`` made the commit.
    """

    snapshot_id: str
    message: str
    written_at: datetime
    files: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    references: int = 0
    by_ingest: bool = False


@dataclass
class IngestReport:
    """What one :func:`ingest` run did.

    Attributes
    ----------
    repository, branch
        Where it committed.
    listed
        Files the paths or glob gave.
    already
        Of those, files earlier commits had ingested or skipped (left alone).
    ingested
        Files this run committed.
    skipped
        Files this run left out (``on_error="skip"``), with their errors.
    commits
        The snapshot ids of this run's commits, one per batch.
    references
        Chunk references this run added.
    seconds
        Wall time of the run.
    rebased
        Commits that found another writer had committed to the branch first, and were rebased
        onto it (the other commit touched none of their arrays).
    rewritten
        Times a batch was planned and written again on the branch tip because another writer
        had committed first to the arrays it appends to.
    """

    repository: str
    branch: str
    listed: int = 0
    already: int = 0
    ingested: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)
    references: int = 0
    seconds: float = 0.0
    rebased: int = 0
    rewritten: int = 0

    def __str__(self) -> str:
        rate = len(self.ingested) / self.seconds if self.seconds > 0 else 0.0
        refs_rate = self.references / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{self.repository} ({self.branch}): {len(self.ingested)} files ingested in "
            f"{len(self.commits)} commits, {self.references:,} references, "
            f"{self.seconds:.1f} s ({rate:.1f} files/s, {refs_rate:,.0f} refs/s)",
            f"  listed {self.listed}, already in the repository {self.already}, "
            f"skipped {len(self.skipped)}",
        ]
        if self.rebased or self.rewritten:
            lines.append(
                f"  other writers committed first: {self.rebased} commits rebased, "
                f"{self.rewritten} batches written again"
            )
        lines += [f"  skipped {url}: {error}" for url, error in self.skipped]
        return "\n".join(lines)


def ingest(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    repo: Any,
    *,
    concat_dim: str,
    branch: str = "main",
    parser: Any = None,
    registry: ObjectStoreRegistry | None = None,
    executor: Any = "serial",
    batch_size: int = 100,
    message: str | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    retry_skipped: bool = False,
    group: str | None = None,
    loadable_variables: Iterable[str] | None = None,
    drop_variables: Iterable[str] | None = None,
    retries: int = 2,
    preprocess: Callable[[xr.Dataset], xr.Dataset] | None = None,
    target_group: str | None = None,
    progress: bool | Callable[[int, int], None] | None = None,
    network: NetworkSettings | None = None,
) -> IngestReport:
    """Ingest an archive into an Icechunk repository, one commit per batch of files.

    Parameters
    ----------
    paths
        A glob (``"data/*.nc"``, ``"s3://bucket/era5/**/*.nc"``) or a list of paths or urls.
        Files are ingested in the order of their urls, which must be their order along
        ``concat_dim``.
    repo
        An ``icechunk.Repository``, or where one is or will be: a local path or an
        ``s3://bucket/prefix`` url (credentials, and ``AWS_ENDPOINT_URL`` if set, from the
        environment). A new repository gets virtual chunk containers for the registry's
        locations and manifests split along ``concat_dim``.
    concat_dim
        The dimension batches are appended along (``"time"``).
    branch
        The branch to commit to; created from ``main`` if it does not exist.
    parser, registry, group, loadable_variables, drop_variables, retries, preprocess
        As for :func:`~virtualize.open_virtual_mfdataset`. ``preprocess`` can give files
        without ``concat_dim`` one, e.g. images stacked in time:
        ``lambda ds: ds.expand_dims(time=[np.datetime64(ds.attrs["DATE-OBS"])])``.
        ``group`` is the group of the files to read.
    target_group
        The group of the repository to write into; its root by default.
    executor
        Parses each batch's files: ``"serial"``, ``"threads"``, ``"processes"``, ``"dask"``,
        ``"lithops"`` or an executor instance (kept open across batches).
    batch_size
        Files per commit. Memory is bounded by the batch, not by the archive.
    message
        The commit message; by default one naming the batch's first and last file.
    on_error
        A file that fails to parse: ``"raise"`` stops, committing nothing of its batch
        (earlier batches stay committed); ``"skip"`` leaves it out and records it, with its
        error, in the batch's commit.
    retry_skipped
        Parse files earlier runs skipped again (by default they are left alone, like the
        files already ingested).
    progress
        A progress bar (files/s, refs/s, ETA) when True, none when False, or a callable
        ``progress(files_done, files_total)``; by default a bar when standard error is a
        terminal.
    network
        Retries, backoff and timeouts of the requests to the archive (when ``registry`` is
        None; a registry's stores keep their own) and to the repository; by default
        :meth:`~virtualize.NetworkSettings.from_environment`.

    Returns
    -------
    IngestReport
        Files ingested, skipped and left alone, commits, references and timing.

    Raises
    ------
    ConcatenationError
        A batch does not continue the repository along ``concat_dim`` (its first value is not
        after the last one committed), or its files can't be joined.
    NoFilesError
        The glob matches nothing.
    IngestConflictError
        Another writer committed to the branch during the run, and a batch can't go on top
        of it: the other commit's data comes after the batch's along ``concat_dim``, or the
        branch moved before each of 10 attempts. Nothing of that batch is committed.

    Notes
    -----
    Several ingests may run at the same time on one branch, in threads, processes or on
    several machines (for a local repository, on one machine: their commits take turns on a
    lock of the repository's directory). A batch is planned on the branch tip it starts from:
    the files still to ingest, and where it goes along ``concat_dim``. If another writer
    commits first, the batch's commit fails instead of overwriting; the batch is then rebased
    when the other commit touched none of its arrays (another ``target_group``), and
    otherwise planned again on the new tip (files the other writer committed are left out)
    and written again. No commit is lost and no file is committed twice.

    Examples
    --------
    >>> report = vz.ingest("archive/*.nc", "repo/", concat_dim="time")  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    """
    from virtualize.executors import resolve_executor
    from virtualize.xarray import _expand_paths

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    started = time.perf_counter()
    urls, _, registry = _expand_paths(paths, registry, nested=False, network=network)
    urls = sorted(dict.fromkeys(urls))
    repository, location = open_repository(
        repo, registry, concat_dim=concat_dim, create=True, network=network
    )
    _ensure_branch(repository, branch)
    recorded = _Recorded.read(repository, branch, retry_skipped=retry_skipped)
    todo = [url for url in urls if url not in recorded.left_alone]
    report = IngestReport(location, branch, listed=len(urls), already=len(urls) - len(todo))
    runner, owned = resolve_executor(executor)
    bar = _Progress(progress, len(todo))
    options = {
        "parser": parser,
        "registry": registry,
        "group": group,
        "loadable_variables": loadable_variables,
        "drop_variables": drop_variables,
        "retries": retries,
        "preprocess": preprocess,
    }
    try:
        for batch in _batches(todo, batch_size):
            with _reaching(location, during="this batch"):
                commit = _ingest_batch(
                    repository,
                    branch,
                    batch,
                    recorded,
                    report,
                    concat_dim,
                    target_group,
                    runner,
                    options,
                    bar,
                    on_error,
                    message,
                )
            if commit is not None:
                report.commits.append(commit.snapshot_id)
                report.ingested.extend(commit.files)
                report.skipped.extend(commit.skipped)
                report.references += commit.references
            bar.advance(len(batch), report.references)
    finally:
        bar.close()
        if owned:
            runner.close()
    report.seconds = time.perf_counter() - started
    return report


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


#: Attempts at committing one batch while other writers keep committing to the branch first.
_COMMIT_ATTEMPTS = 10


@dataclass
class _Parsed:
    """A batch's files, parsed and combined."""

    urls: list[str]
    dataset: xr.Dataset | None
    files: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def _ingest_batch(
    repository: Any,
    branch: str,
    batch: list[str],
    recorded: _Recorded,
    report: IngestReport,
    concat_dim: str,
    target_group: str | None,
    runner: Any,
    options: dict[str, Any],
    bar: _Progress,
    on_error: str,
    message: str | None,
) -> IngestCommit | None:
    """Parse, write and commit one batch; None when other writers committed all its files.

    The batch is planned on the snapshot its session starts from: which of its files are
    still to ingest, and, in ``_write_batch``, where along ``concat_dim`` they go. A commit
    that finds the branch moved is rebased when that is clean; otherwise the plan is stale
    (an append's place depends on the length it found), so it is made again on the new tip.
    """
    import icechunk

    parsed: _Parsed | None = None
    conflict: icechunk.ConflictError | None = None
    for _ in range(_COMMIT_ATTEMPTS):
        session = repository.writable_session(branch)
        base = session.snapshot_id
        recorded.catch_up(repository, base)
        urls = [url for url in batch if url not in recorded.left_alone]
        if not urls:
            report.already += len(batch)
            return None
        if parsed is None or parsed.urls != urls:
            parsed = _parse_batch(urls, runner, options, bar, on_error)
        references = 0
        if parsed.dataset is not None:
            _write_batch(
                session.store,
                parsed.dataset,
                parsed.files,
                concat_dim,
                target_group,
                options["registry"],
                raced=recorded.others > 0,
            )
            references = int(parsed.dataset.virtualize.nrefs)
        record = {
            "format": _FORMAT,
            "files": list(parsed.files),
            "skipped": [{"url": url, "error": error} for url, error in parsed.skipped],
            "concat_dim": concat_dim,
            "group": target_group or "",
            "references": references,
        }
        first, last = Path(urls[0]).name, Path(urls[-1]).name
        text = message or f"ingest {len(parsed.files)} files ({first} .. {last})"
        if parsed.skipped:
            text += f", skipped {len(parsed.skipped)}"
        try:
            with _commit_lock(repository):
                snapshot = session.commit(
                    text,
                    metadata={METADATA_KEY: record},
                    rebase_with=icechunk.ConflictDetector(),
                    allow_empty=True,
                )
        except icechunk.ConflictError as error:
            # The other commit changed the arrays this batch appends to: a rebase would put
            # both appends at the same place. Plan the batch again on the new tip.
            conflict = error
            report.rewritten += 1
            continue
        if repository.lookup_snapshot(snapshot).parent_id != base:
            report.rebased += 1
        recorded.own.add(snapshot)
        recorded.catch_up(repository, snapshot)
        report.already += len(batch) - len(urls)
        return IngestCommit(
            snapshot_id=snapshot,
            message=text,
            written_at=datetime.now().astimezone(),
            files=parsed.files,
            skipped=parsed.skipped,
            references=references,
            by_ingest=True,
        )
    raise IngestConflictError(
        f"other writers committed to branch {branch!r} before each of {_COMMIT_ATTEMPTS} "
        f"attempts to commit this batch of {len(batch)} files; nothing of it was committed",
        url=batch[0],
        hint="Rerun the ingest when the other writers are done: files already in the "
        "repository are skipped",
    ) from conflict


def _parse_batch(
    urls: list[str], runner: Any, options: dict[str, Any], bar: _Progress, on_error: str
) -> _Parsed:
    from virtualize.xarray import open_virtual_mfdataset

    dataset: xr.Dataset | None
    try:
        dataset, failures = open_virtual_mfdataset(
            urls,
            executor=runner,
            on_error="record",
            progress=bar.within_batch,
            combine="by_coords",
            **options,
        )
    except NoFilesError as error:
        dataset, failures = None, error.failures
    if failures and on_error == "raise":
        first = failures[0]
        first.error.add_note(f"nothing of this batch was committed ({len(urls)} files)")
        raise first.error
    skipped = tuple((str(f.item), f"{type(f.error).__name__}: {f.error}") for f in failures)
    failed = {str(f.item) for f in failures}
    files = tuple(url for url in urls if url not in failed)
    return _Parsed(urls, dataset, files, skipped)


def _write_batch(
    store: Any,
    dataset: xr.Dataset,
    files: Sequence[str],
    concat_dim: str,
    group: str | None,
    registry: ObjectStoreRegistry,
    *,
    raced: bool = False,
) -> None:
    """Append ``dataset`` to the group in ``store``, or create it.

    ``raced``: other writers committed to the branch during this run, so a batch that comes
    before the data committed lost a race rather than came in the wrong order.
    """
    from virtualize.writers.icechunk import to_icechunk

    if concat_dim not in dataset.dims:
        raise ConcatenationError(
            f"the files have no dimension {concat_dim!r} to append along "
            f"(they have {sorted(map(str, dataset.dims))})",
            hint="Pass the dimension the archive grows along as concat_dim",
        )
    existing = _committed(store, group)
    last = _last_value(existing, concat_dim)
    if existing is None or last is None:
        to_icechunk(dataset, store, group=group, mode="a", registry=registry)
        return
    first = dataset[concat_dim].values[0]
    if not _after(first, last) and raced:
        raise IngestConflictError(
            f"another writer committed to the branch during this ingest, up to "
            f"{concat_dim}={last}, and this batch starts at {concat_dim}={first}, before that; "
            "ingest appends, so the batch can no longer go in (nothing of it was committed)",
            url=files[0],
            hint=f"Run ingests of one repository's branch in {concat_dim} order, or ingest "
            "these files into another branch or repository",
        )
    if not _after(first, last):
        raise ConcatenationError(
            f"this batch starts at {concat_dim}={first}, not after the last value committed "
            f"({last}); ingest appends, so files must come in {concat_dim} order",
            url=files[0],
            hint="Name files so that their order is their order in time, or ingest the "
            "earlier files into another repository",
        )
    # The group's attributes stay the first file's, as open_mfdataset's combine_attrs
    # "override" gives for the whole archive; a later batch would bring its own first file's.
    dataset = dataset.copy()
    dataset.attrs = dict(existing.attrs)
    to_icechunk(dataset, store, group=group, append_dim=concat_dim, registry=registry)


def _committed(store: Any, group: str | None) -> xr.Dataset | None:
    """The repository's dataset (lazily), or None before the first batch."""
    try:
        return xr.open_zarr(store, group=group, consolidated=False, zarr_format=3)
    except (FileNotFoundError, KeyError, ValueError):
        return None


def _last_value(existing: xr.Dataset | None, concat_dim: str) -> Any:
    """The last value of ``concat_dim`` committed, or None before the first batch."""
    if existing is None:
        return None
    if concat_dim not in existing.variables or existing.sizes.get(concat_dim, 0) == 0:
        return None
    return existing[concat_dim].isel({concat_dim: -1}).values


def _after(first: Any, last: Any) -> bool:
    try:
        return bool(np.asarray(first) > np.asarray(last))
    except TypeError:
        return True  # values that don't order (strings of other kinds): xarray decides


# -- repositories ------------------------------------------------------------------------------


def open_repository(
    repo: Any,
    registry: ObjectStoreRegistry | None = None,
    *,
    concat_dim: str | None = None,
    create: bool = False,
    network: NetworkSettings | None = None,
) -> tuple[Any, str]:
    """The Icechunk repository ``repo`` names, and its location as text.

    Parameters
    ----------
    repo
        An ``icechunk.Repository`` (returned as it is), a local path, or an
        ``s3://bucket/prefix`` url.
    registry
        The locations virtual chunks may be read from: a new repository gets a virtual chunk
        container for each, and reading is authorised for each.
    concat_dim
        For a new repository: manifests are split along this dimension, so appends rewrite
        one small manifest rather than every array's whole manifest.
    create
        Create the repository (with a first commit holding the root group) if there is none.
    network
        Retries, backoff and timeouts of the requests to the repository and its virtual
        chunks (not used for an ``icechunk.Repository``, which has its own); by default
        :meth:`~virtualize.NetworkSettings.from_environment`.

    Raises
    ------
    InvalidFileError
        No repository is there and ``create`` is False.
    """
    import icechunk

    from virtualize.errors import InvalidFileError
    from virtualize.writers.icechunk import authorize_containers, repository_config

    if isinstance(repo, icechunk.Repository):
        return repo, "repository"
    location = str(repo)
    network = NetworkSettings.resolve(network)
    storage = _storage(location, network)
    access = authorize_containers(registry) if registry is not None else None
    # Settings given to open() override the ones saved in the repository's config; exists()
    # takes them separately, or it would retry with Icechunk's defaults (minutes).
    settings = network.icechunk_storage_settings()

    def existing() -> Any | None:
        if not icechunk.Repository.exists(storage, settings):
            return None
        return icechunk.Repository.open(
            storage,
            config=icechunk.RepositoryConfig(storage=settings),
            authorize_virtual_chunk_access=access,
        )

    with _reaching(location):
        repository = existing()
    if repository is not None:
        return repository, location
    if not create:
        raise InvalidFileError(
            "no Icechunk repository here",
            url=location,
            hint="Create one with `virtualize ingest ... --repo` or check the path",
        )
    if registry is None:
        raise ValueError("a new repository needs the registry of the locations it references")
    # Of two processes creating a local repository at once, one creates it, the other opens it.
    with _directory_lock(_local_directory(storage)):
        repository = existing()
        if repository is not None:
            return repository, location
        config = repository_config(registry, split_along=concat_dim)
        config.storage = settings
        repository = icechunk.Repository.create(
            storage, config=config, authorize_virtual_chunk_access=access
        )
        # The root group in a commit of its own: two first writers would otherwise conflict
        # on it.
        session = repository.writable_session("main")
        import zarr

        zarr.open_group(session.store, mode="a", zarr_format=3)
        session.commit("create the repository")
    return repository, location


@contextmanager
def _reaching(location: str, during: str | None = None) -> Iterator[None]:
    """Turn Icechunk's storage failures (retries exhausted) into an error naming the
    repository; ``during`` names what was being committed (batches before it stay)."""
    import icechunk

    from virtualize.errors import RepositoryAccessError

    try:
        yield
    except icechunk.StorageError as error:
        done = (
            f"Nothing of {during} was committed (batches committed before it stay; a rerun resumes)"
            if during
            else "Nothing was committed"
        )
        raise RepositoryAccessError(
            f"the repository could not be reached: {str(error).splitlines()[0]}",
            url=location,
            hint=f"{done}; check the endpoint and credentials, or allow more retries and "
            "longer timeouts with NetworkSettings (VIRTUALIZE_MAX_RETRIES, VIRTUALIZE_TIMEOUT)",
        ) from error


def _storage(location: str, network: NetworkSettings | None = None) -> Any:
    import icechunk

    if location.startswith("s3://"):
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return icechunk.s3_storage(
            bucket=bucket,
            prefix=prefix.strip("/") or None,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
            endpoint_url=endpoint,
            allow_http=bool(endpoint and endpoint.startswith("http://")),
            force_path_style=bool(endpoint),
            from_env=True,
            network_stream_timeout_seconds=NetworkSettings.resolve(network).stream_timeout_seconds,
        )
    if "://" in location and not location.startswith("file://"):
        raise ValueError(f"repositories are local paths or s3:// urls, not {location!r}")
    path = normalize_url(location).removeprefix("file://")
    return icechunk.local_filesystem_storage(path)


def _ensure_branch(repository: Any, branch: str) -> None:
    if branch in repository.list_branches():
        return
    with _commit_lock(repository):
        if branch not in repository.list_branches():
            repository.create_branch(branch, repository.lookup_branch("main"))


@contextmanager
def _commit_lock(repository: Any) -> Iterator[None]:
    """Hold the lock of a local repository's directory (none for other storage)."""
    with _directory_lock(_local_directory(repository.storage)):
        yield


@contextmanager
def _directory_lock(directory: str | None) -> Iterator[None]:
    """An exclusive ``flock`` on ``directory`` (created if missing); nothing when None.

    Icechunk's local filesystem storage does not update a branch atomically: two processes
    committing at once can both succeed, and the first commit is lost (icechunk issue 804;
    it warns "not safe for concurrent commits"). Writers that commit under this lock take
    turns, so the later one sees the branch moved and gets its ConflictError. Object stores
    need no lock: their conditional writes do this.
    """
    if directory is None or sys.platform == "win32":
        yield
        return
    import fcntl

    os.makedirs(directory, exist_ok=True)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # which releases the lock


def _local_directory(storage: Any) -> str | None:
    """The directory of local filesystem storage, None for other storage."""
    # icechunk tells a Storage's kind and path only in its text form.
    fields = dict(line.partition(": ")[::2] for line in repr(storage).splitlines())
    if fields.get("type") != "local filesystem" or not fields.get("path"):
        return None
    return fields["path"]


# -- history -----------------------------------------------------------------------------------


def ingest_history(repo: Any, *, branch: str = "main") -> list[IngestCommit]:
    """The commits of ``branch``, newest first, with the files each ingest commit recorded.

    Parameters
    ----------
    repo
        An ``icechunk.Repository``, a local path or an ``s3://`` url.
    branch
        The branch whose ancestry to read.
    """
    repository, _ = open_repository(repo)
    return [_as_commit(snapshot) for snapshot in repository.ancestry(branch=branch)]


def _as_commit(snapshot: Any) -> IngestCommit:
    record = (snapshot.metadata or {}).get(METADATA_KEY)
    if not (isinstance(record, dict) and record.get("format") == _FORMAT):
        return IngestCommit(snapshot.id, snapshot.message, snapshot.written_at)
    return IngestCommit(
        snapshot_id=snapshot.id,
        message=snapshot.message,
        written_at=snapshot.written_at,
        files=tuple(record.get("files", ())),
        skipped=tuple(
            (str(item.get("url")), str(item.get("error"))) for item in record.get("skipped", ())
        ),
        references=int(record.get("references", 0)),
        by_ingest=True,
    )


@dataclass
class _Recorded:
    """The files a branch's commits recorded as of ``snapshot``, kept up with the branch.

    Attributes
    ----------
    done, skipped
        Files the commits ingested, and files they skipped.
    own
        The snapshots this run committed.
    others
        Commits of other writers found since the run began.
    """

    snapshot: str
    retry_skipped: bool
    done: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    own: set[str] = field(default_factory=set)
    others: int = 0

    @classmethod
    def read(cls, repository: Any, branch: str, *, retry_skipped: bool) -> _Recorded:
        tip = repository.lookup_branch(branch)
        recorded = cls(tip, retry_skipped)
        recorded._add(repository.ancestry(snapshot_id=tip))
        return recorded

    @property
    def left_alone(self) -> set[str]:
        """The files a run must not ingest."""
        return self.done if self.retry_skipped else self.done | self.skipped

    def catch_up(self, repository: Any, snapshot: str) -> None:
        """Read the commits between the snapshot last seen and ``snapshot``, its descendant."""
        if snapshot == self.snapshot:
            return
        newer = []
        for info in repository.ancestry(snapshot_id=snapshot):
            if info.id == self.snapshot:
                break
            newer.append(info)
        else:  # the branch was reset past the snapshot last seen: all of it is new
            self.done.clear()
            self.skipped.clear()
        self.others += sum(info.id not in self.own for info in newer)
        self._add(newer)
        self.snapshot = snapshot

    def _add(self, snapshots: Iterable[Any]) -> None:
        for snapshot in snapshots:
            commit = _as_commit(snapshot)
            self.done.update(commit.files)
            self.skipped.update(url for url, _ in commit.skipped)


# -- progress ----------------------------------------------------------------------------------


class _Progress:
    """Files done across batches, as a tqdm bar (files/s, refs/s, ETA) or a callback."""

    def __init__(self, progress: bool | Callable[[int, int], None] | None, total: int) -> None:
        self.total = total
        self.done = 0
        self.callback = progress if callable(progress) else None
        show = sys.stderr.isatty() if progress is None else progress is True
        self.bar: Any = None
        self.started = time.perf_counter()
        if show and self.callback is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="file", desc="ingest", dynamic_ncols=True)

    def within_batch(self, done: int, total: int | None) -> None:
        if self.bar is not None:
            self.bar.n = self.done + done
            self.bar.refresh()
        if self.callback is not None:
            self.callback(self.done + done, self.total)

    def advance(self, files: int, references: int) -> None:
        self.done += files
        if self.bar is not None:
            self.bar.n = self.done
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix(refs_per_s=f"{references / elapsed:,.0f}", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
