"""The ``virtualize`` command: ingest an archive, inspect a file, verify and log a repository.

Errors of the library (:class:`~virtualize.errors.VirtualizeError`) are printed as one
message naming the file, the variable and what to do, with exit code 2. ``verify`` exits
with 1 when a chunk differs, ``inspect`` when a variable can't be referenced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        parser.print_help()
        return 2
    _quiet_icechunk()
    warnings.showwarning = _show_warning
    from virtualize.errors import VirtualizeError

    try:
        result: int = arguments.run(arguments)
        return result
    except VirtualizeError as error:
        print(f"virtualize {arguments.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"virtualize {arguments.command}: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="virtualize",
        description="Virtual Zarr datacubes over archives of scientific files.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    ingest = commands.add_parser(
        "ingest",
        help="ingest an archive into an Icechunk repository, one commit per batch",
        description="List the archive, skip files the repository already holds, parse the "
        "rest in batches and append each batch along the concatenation dimension in a "
        "commit of its own. Rerunning resumes where a previous run stopped.",
    )
    ingest.add_argument("paths", nargs="+", help="a glob (quote it) or paths/urls of files")
    ingest.add_argument("--repo", required=True, help="repository path or s3:// url")
    ingest.add_argument("--branch", default="main")
    ingest.add_argument("--concat-dim", default="time", help="dimension to append along")
    ingest.add_argument(
        "--executor",
        default="serial",
        choices=["serial", "threads", "processes", "dask", "lithops"],
    )
    ingest.add_argument("--batch-size", type=int, default=100, help="files per commit")
    ingest.add_argument("--on-error", default="raise", choices=["raise", "skip"])
    ingest.add_argument("--retry-skipped", action="store_true", help="retry skipped files")
    ingest.add_argument("--group", default=None, help="group of the files to ingest")
    ingest.add_argument("--target-group", default=None, help="group of the repository to fill")
    ingest.add_argument("--message", default=None, help="commit message")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.set_defaults(run=_ingest)

    inspect = commands.add_parser(
        "inspect",
        help="what a file holds and whether each variable can be referenced",
    )
    inspect.add_argument("path", help="a path or url")
    inspect.add_argument("--group", default=None)
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(run=_inspect)

    verify = commands.add_parser(
        "verify",
        help="compare a sample of a repository's chunks with their source files",
    )
    verify.add_argument("repo", help="repository path or s3:// url")
    verify.add_argument("--branch", default="main")
    verify.add_argument("--group", default=None)
    verify.add_argument("--sample", type=int, default=20, help="chunks to check")
    verify.add_argument("--seed", type=int, default=None)
    verify.set_defaults(run=_verify)

    log = commands.add_parser("log", help="the ingest history of a repository")
    log.add_argument("repo", help="repository path or s3:// url")
    log.add_argument("--branch", default="main")
    log.add_argument("--files", action="store_true", help="list every file of every commit")
    log.add_argument("--json", action="store_true", help="print JSON")
    log.set_defaults(run=_log)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    print(f"virtualize: {message}", file=sys.stderr)


def _quiet_icechunk() -> None:
    """Icechunk logs warnings (such as local storage not being safe for concurrent commits)
    to standard error; the command keeps its output to its own messages unless asked."""
    if "ICECHUNK_LOG" in os.environ:
        return
    try:
        import icechunk

        icechunk.set_logs_filter("error")
    except (ImportError, AttributeError, ValueError):
        pass


def _paths(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


def _ingest(arguments: argparse.Namespace) -> int:
    import virtualize as vz

    report = vz.ingest(
        _paths(arguments.paths),
        arguments.repo,
        concat_dim=arguments.concat_dim,
        branch=arguments.branch,
        executor=arguments.executor,
        batch_size=arguments.batch_size,
        on_error=arguments.on_error,
        retry_skipped=arguments.retry_skipped,
        group=arguments.group,
        target_group=arguments.target_group,
        message=arguments.message,
        progress=False if arguments.no_progress else None,
    )
    print(report)
    return 0


def _inspect(arguments: argparse.Namespace) -> int:
    from virtualize.inspection import inspect_file

    report = inspect_file(arguments.path, group=arguments.group)
    if arguments.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.to_text())
    return 0 if report.ok else 1


def _verify(arguments: argparse.Namespace) -> int:
    from virtualize.verify import verify_repository

    report = verify_repository(
        arguments.repo,
        branch=arguments.branch,
        group=arguments.group,
        sample=arguments.sample,
        seed=arguments.seed,
    )
    print(report.to_text())
    return 0 if report.ok else 1


def _log(arguments: argparse.Namespace) -> int:
    from virtualize.ingest import ingest_history

    history = ingest_history(arguments.repo, branch=arguments.branch)
    if arguments.json:
        print(json.dumps([_commit_dict(commit) for commit in history], indent=2))
        return 0
    for commit in history:
        stamp = commit.written_at.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{commit.snapshot_id}  {stamp}  {commit.message}")
        if not commit.by_ingest:
            continue
        print(f"    {len(commit.files)} files, {commit.references:,} references")
        if arguments.files:
            for url in commit.files:
                print(f"    + {url}")
        for url, error in commit.skipped:
            print(f"    skipped {url}: {error}")
    return 0


def _commit_dict(commit: Any) -> dict[str, Any]:
    return {
        "snapshot_id": commit.snapshot_id,
        "message": commit.message,
        "written_at": commit.written_at.isoformat(),
        "files": list(commit.files),
        "skipped": [{"url": url, "error": error} for url, error in commit.skipped],
        "references": commit.references,
        "by_ingest": commit.by_ingest,
    }


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
