"""Run tasks on any :class:`concurrent.futures.Executor`."""

from __future__ import annotations

import concurrent.futures
import os
from concurrent.futures import Future, ThreadPoolExecutor

from virtualize.executors.base import CallbackDispatch, Executor, Outcome, Task, run_task

__all__ = ["FuturesExecutor"]


class PoolDispatch(CallbackDispatch[Future[Outcome]]):
    """Tasks of one map on a :class:`concurrent.futures.Executor`."""

    def __init__(self, pool: concurrent.futures.Executor, workers: int) -> None:
        super().__init__()
        self.pool = pool
        self.workers = workers

    def submit_one(self, task: Task) -> Future[Outcome]:
        return self.track(self.pool.submit(run_task, task))

    def outcome(self, handle: Future[Outcome]) -> Outcome:
        return handle.result()

    def cancel(self, handles: list[Future[Outcome]]) -> None:
        for handle in handles:
            handle.cancel()


class FuturesExecutor(Executor):
    """Run tasks on a :class:`concurrent.futures.Executor` that the caller owns.

    :meth:`close` never shuts ``executor`` down.

    Parameters
    ----------
    executor
        Any executor: a thread or process pool, or a third-party one (``loky``,
        ``mpi4py.futures``...). Unless it is a thread pool, tasks are assumed to run in other
        processes, so their errors are made to pickle.

    Examples
    --------
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> with ThreadPoolExecutor(2) as pool:
    ...     sorted(FuturesExecutor(pool).map(abs, [-1, -2]))
    [(0, 1), (1, 2)]
    """

    def __init__(self, executor: concurrent.futures.Executor) -> None:
        if not isinstance(executor, concurrent.futures.Executor):
            raise TypeError(
                f"expected a concurrent.futures.Executor, not {type(executor).__name__}"
            )
        self.executor = executor
        self.remote = not isinstance(executor, ThreadPoolExecutor)

    def _dispatch(self) -> PoolDispatch:
        workers = getattr(self.executor, "_max_workers", None)
        if not isinstance(workers, int) or workers < 1:
            workers = os.cpu_count() or 1
        return PoolDispatch(self.executor, workers)

    def _release(self) -> None:
        pass
