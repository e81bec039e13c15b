"""Executors: run a function over many files in parallel, on one machine or a cluster.

Every executor has the same :meth:`~Executor.map`: results stream back as tasks complete,
only a bounded number of tasks is submitted ahead, transient errors are retried in the worker,
and failures are raised, skipped or recorded as asked.

Examples
--------
>>> from virtualize.executors import get_executor
>>> with get_executor("threads") as executor:
...     results = executor.map(len, ["a", "bb"], on_error="record")
...     sorted(results)
[(0, 1), (1, 2)]
"""

from __future__ import annotations

import concurrent.futures

from virtualize.executors.base import Executor, TaskFailure, TaskResults, is_transient
from virtualize.executors.dask import DaskExecutor
from virtualize.executors.futures import FuturesExecutor
from virtualize.executors.lithops import LithopsExecutor
from virtualize.executors.local import ProcessExecutor, ThreadExecutor
from virtualize.executors.serial import SerialExecutor

__all__ = [
    "DaskExecutor",
    "Executor",
    "ExecutorSpec",
    "FuturesExecutor",
    "LithopsExecutor",
    "ProcessExecutor",
    "SerialExecutor",
    "TaskFailure",
    "TaskResults",
    "ThreadExecutor",
    "get_executor",
    "is_transient",
    "resolve_executor",
]

type ExecutorSpec = Executor | concurrent.futures.Executor | str | None
"""What functions taking an ``executor=`` argument accept (see :func:`resolve_executor`)."""

_NAMED: dict[str, type[Executor]] = {
    "serial": SerialExecutor,
    "threads": ThreadExecutor,
    "processes": ProcessExecutor,
    "dask": DaskExecutor,
    "lithops": LithopsExecutor,
}


def resolve_executor(spec: ExecutorSpec) -> tuple[Executor, bool]:
    """Turn what a user passed as ``executor=`` into an :class:`Executor`.

    Parameters
    ----------
    spec
        None or ``"serial"``, ``"threads"``, ``"processes"``, ``"dask"``, ``"lithops"``
        (a new executor with default settings), an :class:`Executor`, or a
        :class:`concurrent.futures.Executor` (wrapped in a :class:`FuturesExecutor`).

    Returns
    -------
    tuple[Executor, bool]
        The executor, and whether the caller created it and so must close it.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything else.
    """
    if spec is None:
        return SerialExecutor(), True
    if isinstance(spec, Executor):
        return spec, False
    if isinstance(spec, concurrent.futures.Executor):
        return FuturesExecutor(spec), True
    accepted = f"None, {', '.join(map(repr, _NAMED))}, an Executor or a concurrent.futures.Executor"
    if isinstance(spec, str):
        try:
            return _NAMED[spec](), True
        except KeyError:
            raise ValueError(f"unknown executor {spec!r}; expected {accepted}") from None
    raise TypeError(f"executor must be {accepted}, not {type(spec).__name__}")


def get_executor(spec: ExecutorSpec = None) -> Executor:
    """Like :func:`resolve_executor`, without saying who owns the executor.

    Parameters
    ----------
    spec
        See :func:`resolve_executor`.

    Returns
    -------
    Executor
        The executor.
    """
    return resolve_executor(spec)[0]
