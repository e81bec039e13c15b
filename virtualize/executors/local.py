"""Run tasks in a pool of threads or of processes on this machine."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
from concurrent.futures import Executor as _PoolExecutor
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from virtualize.executors.base import Executor, Outcome, Task, run_task
from virtualize.executors.futures import PoolDispatch

__all__ = ["ProcessExecutor", "ThreadExecutor"]


def _check_workers(max_workers: int | None) -> None:
    if max_workers is not None and max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, not {max_workers}")


class ThreadExecutor(Executor):
    """Run tasks in a :class:`~concurrent.futures.ThreadPoolExecutor`.

    Threads suit I/O-bound tasks (reading remote files, writing stores). h5py holds a global
    lock, so HDF5 parsing does not run in parallel on threads: use
    :class:`ProcessExecutor` for that.

    Parameters
    ----------
    max_workers
        The number of threads; by default ``min(32, cpu_count + 4)``, as the standard
        library does.

    Examples
    --------
    >>> with ThreadExecutor(max_workers=4) as executor:
    ...     sorted(executor.map(abs, [-1, -2]))
    [(0, 1), (1, 2)]
    """

    remote = False

    def __init__(self, max_workers: int | None = None) -> None:
        _check_workers(max_workers)
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._pool: ThreadPoolExecutor | None = None

    def _dispatch(self) -> PoolDispatch:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="virtualize")
        return PoolDispatch(self._pool, self.max_workers)

    def _release(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class ProcessExecutor(Executor):
    """Run tasks in a :class:`~concurrent.futures.ProcessPoolExecutor`.

    Processes parallelise CPU-bound parsing, including h5py's. Workers start with
    ``forkserver`` (or ``spawn`` where there is none): ``fork`` copies the locks of h5py's and
    icechunk's threads in whatever state they are and deadlocks, so it is refused. With
    ``forkserver``, the server imports virtualize once and workers fork from it ready to
    parse; CPython has one forkserver per process, so its other users' workers get
    virtualize imported too.

    If a worker dies, the tasks in flight fail with
    :class:`~concurrent.futures.process.BrokenProcessPool`, handled by ``on_error`` like any
    other error; the next :meth:`map` starts a new pool.

    Parameters
    ----------
    max_workers
        The number of processes; by default the number of CPUs.
    start_method
        ``"forkserver"`` or ``"spawn"``; by default ``"forkserver"`` where available.
    work_in_caller
        Whether the calling process runs tasks too. Workers take over a second to start
        (each needs numpy, xarray, zarr, h5py and dask imported): meanwhile the calling
        process runs tasks itself, and afterwards it runs one whenever no result is
        waiting, so a small job does not wait for the pool and a large one gains a worker.
        False keeps every task in a worker, where a crash (a segfault in a native library)
        breaks the pool rather than the calling process.

    Raises
    ------
    ValueError
        For ``start_method="fork"`` or a method this platform does not have.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        start_method: str | None = None,
        *,
        work_in_caller: bool = True,
    ) -> None:
        _check_workers(max_workers)
        available = multiprocessing.get_all_start_methods()
        if start_method is None:
            start_method = "forkserver" if "forkserver" in available else "spawn"
        elif start_method == "fork":
            raise ValueError(
                "start_method='fork' is refused: fork deadlocks with h5py/icechunk threads; "
                "use 'forkserver' or 'spawn'"
            )
        elif start_method not in available:
            raise ValueError(
                f"start_method must be one of {[m for m in available if m != 'fork']}, "
                f"not {start_method!r}"
            )
        self.max_workers = max_workers or os.cpu_count() or 1
        self.start_method = start_method
        self.work_in_caller = work_in_caller
        self._pool: ProcessPoolExecutor | None = None
        self._warming: threading.Thread | None = None
        self._broken = False

    def _dispatch(self) -> PoolDispatch:
        if self._pool is not None and self._broken:
            self._release()
        if self._pool is None:
            context = multiprocessing.get_context(self.start_method)
            if self.start_method == "forkserver":
                # Workers then fork from a server that imported virtualize once instead of
                # each importing it (about a second each, more than parsing hundreds of small
                # files). CPython keeps one forkserver per process, so other users' workers
                # start with virtualize imported too: memory, not behaviour.
                context.set_forkserver_preload(["__main__", "virtualize.executors.preload"])
            self._pool = ProcessPoolExecutor(self.max_workers, mp_context=context)
            self._broken = False
            if self.work_in_caller:
                self._warming = threading.Thread(
                    target=_start_workers,
                    args=(self._pool, self.max_workers),
                    name="virtualize-pool-start",
                    daemon=True,
                )
                self._warming.start()
        return _ProcessDispatch(self, self._pool, self.max_workers, self._warming)

    def _release(self) -> None:
        pool, self._pool = self._pool, None
        warming, self._warming = self._warming, None
        if pool is None:
            return
        if warming is not None and warming.is_alive():
            # Every task ran here while the workers started: don't wait for them to finish
            # starting just to stop them.
            threading.Thread(
                target=_stop_after, args=(warming, pool), name="virtualize-pool-stop", daemon=True
            ).start()
            return
        pool.shutdown(wait=True, cancel_futures=True)


def _start_workers(pool: ProcessPoolExecutor, workers: int) -> None:
    """Start every worker of ``pool`` (each submission starts one while none is idle)."""
    try:
        for future in [pool.submit(int) for _ in range(workers)]:
            future.result()
    except Exception:
        pass  # a pool that fails to start fails the tasks submitted to it, and says why


def _stop_after(warming: threading.Thread, pool: ProcessPoolExecutor) -> None:
    warming.join()
    pool.shutdown(wait=True, cancel_futures=True)


def _run_pickled(payload: bytes) -> Outcome:
    task: Task = pickle.loads(payload)
    return run_task(task)


class _ProcessDispatch(PoolDispatch):
    def __init__(
        self,
        owner: ProcessExecutor,
        pool: _PoolExecutor,
        workers: int,
        warming: threading.Thread | None,
    ) -> None:
        super().__init__(pool, workers)
        self._owner = owner
        self._warming = warming
        self.assists = owner.work_in_caller

    def started(self) -> bool:
        return self._warming is None or not self._warming.is_alive()

    def run_here(self, task: Task) -> Outcome:
        # Exactly what a worker does, so a task behaves the same wherever it runs: it must
        # pickle, and its error comes back through pickle (with the traceback as text).
        try:
            payload = pickle.dumps(task, pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            return Outcome(task.index, error=error, attempts=0)
        outcome = _run_pickled(payload)
        if outcome.error is not None:
            outcome = pickle.loads(pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL))
        return outcome

    def _mark_broken(self) -> None:
        if self._owner._pool is self.pool:
            self._owner._broken = True

    def submit_one(self, task: Task) -> Future[Outcome]:
        # Pickled here rather than in the pool's feeder thread: a task that does not pickle
        # fails at once, and CPython < 3.12.3 can hang in shutdown() after a feeder-thread
        # pickling error (python/cpython#116685).
        payload = pickle.dumps(task, pickle.HIGHEST_PROTOCOL)
        try:
            return self.track(self.pool.submit(_run_pickled, payload))
        except BrokenProcessPool:
            self._mark_broken()
            raise

    def outcome(self, handle: Future[Outcome]) -> Outcome:
        try:
            return super().outcome(handle)
        except BrokenProcessPool:
            self._mark_broken()
            raise
