"""Run tasks with Lithops: local processes, or serverless functions such as AWS Lambda."""

from __future__ import annotations

import copy
import functools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from virtualize.executors.base import Dispatch, Executor, Outcome, Task, run_task

if TYPE_CHECKING:
    from lithops import FunctionExecutor
    from lithops.future import ResponseFuture

__all__ = ["LithopsExecutor", "localhost_config"]

_LOST_AFTER = 10.0
"""Seconds after the processes of a localhost job ended before a call without status is lost."""


def localhost_config() -> dict[str, Any]:
    """The Lithops configuration that runs tasks in local processes of this interpreter.

    Returns
    -------
    dict
        Without ``runtime``, Lithops would start whatever ``python`` is first on the ``PATH``,
        which may lack the packages of this one.
    """
    return {
        "lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"},
        "localhost": {"runtime": sys.executable},
    }


class LithopsExecutor(Executor):
    """Run tasks with a :class:`lithops.FunctionExecutor`.

    Tasks are submitted in batches (one Lithops job each) as earlier ones complete; each
    Lithops call runs ``items_per_call`` tasks one after the other. The function and items
    must pickle, and the runtime must have ``virtualize`` installed, since every task runs
    inside it. Lithops ships the module of the function when the runtime cannot import it.

    Parameters
    ----------
    config
        A Lithops configuration dict; by default :func:`localhost_config` (local
        processes). For AWS Lambda, with a runtime built from an image that has virtualize
        installed (``lithops runtime build``)::

            config = {
                "lithops": {"backend": "aws_lambda", "storage": "aws_s3"},
                "aws": {"region": "us-west-2"},
                "aws_lambda": {
                    "execution_role": "arn:aws:iam::123456789012:role/lithops-execution-role",
                    "runtime": "virtualize-runtime:latest",
                    "runtime_memory": 2048,
                    "runtime_timeout": 600,
                },
                "aws_s3": {"storage_bucket": "my-lithops-bucket"},
            }

        Credentials come from the usual AWS sources (environment, profile) or from
        ``access_key_id`` / ``secret_access_key`` in the ``aws`` section.
    items_per_call
        How many tasks one Lithops call runs. Every call starts a process (a new Python on
        the localhost backend, a function invocation on a serverless one), which costs a
        second or more: group small tasks. Results of a call arrive together.
    **executor_kwargs
        Passed on to :class:`lithops.FunctionExecutor` (``log_level``, ``runtime_memory``...).

    Notes
    -----
    Lithops cannot cancel calls: on ``on_error="raise"`` the calls already submitted are
    dropped from its queue and, on the localhost backend, their processes are stopped.

    On the localhost backend, a call whose process dies before it reports (Lithops would
    wait for it for ever) fails with a ``RuntimeError`` once its job's processes have all
    ended. One way it happens: every Python process that creates its first
    ``FunctionExecutor`` re-copies the Lithops package into the shared temporary folder
    that task processes import it from, so a task starting at that moment in another
    process can fail to import.

    Examples
    --------
    >>> with LithopsExecutor(items_per_call=10) as executor:  # doctest: +SKIP
    ...     results = dict(executor.map(parse, urls, on_error="record"))
    """

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        items_per_call: int = 1,
        **executor_kwargs: Any,
    ) -> None:
        if items_per_call < 1:
            raise ValueError(f"items_per_call must be >= 1, not {items_per_call}")
        self.config = config
        self.items_per_call = items_per_call
        self.executor_kwargs = executor_kwargs
        self._fexec: FunctionExecutor | None = None

    def _dispatch(self) -> _LithopsDispatch:
        if self._fexec is None:
            import lithops

            # Lithops fills the dict in: keep the caller's one as given.
            config = copy.deepcopy(self.config) if self.config else localhost_config()
            self._fexec = lithops.FunctionExecutor(config=config, **self.executor_kwargs)
        return _LithopsDispatch(self._fexec, self.items_per_call)

    def _release(self) -> None:
        fexec, self._fexec = self._fexec, None
        if fexec is None:
            return
        try:
            fexec.clean(clean_cloudobjects=False, force=True)
        finally:
            # What the context manager's exit does: stop the monitor, the invoker and the
            # local task processes.
            fexec.__exit__(None, None, None)


@dataclass(frozen=True)
class _Call:
    """The Lithops function: :func:`run_task` over a list of ``(index, item)``.

    Not slotted: Lithops ships the source of the modules that the functions among the
    callable's attributes come from, when its runtime cannot import them (a test module, a
    script's folder), and does not look inside partials: ``target`` is ``fn`` unwrapped.
    """

    fn: Callable[[Any], Any]
    target: Callable[..., Any]
    retries: int
    backoff: float
    retry_on: Callable[[BaseException], bool]

    @classmethod
    def of(cls, task: Task) -> _Call:
        target = task.fn
        while isinstance(target, functools.partial):
            target = target.func
        return cls(task.fn, target, task.retries, task.backoff, task.retry_on)

    def __call__(self, batch: list[tuple[int, Any]]) -> list[Outcome]:
        return [
            run_task(Task(self.fn, index, item, self.retries, self.backoff, self.retry_on, True))
            for index, item in batch
        ]


@dataclass(eq=False)
class _Slot:
    """One task's place in the output of a Lithops call (the dispatch's handle)."""

    future: ResponseFuture
    position: int


class _LithopsDispatch(Dispatch[_Slot]):
    def __init__(self, fexec: FunctionExecutor, items_per_call: int) -> None:
        self.fexec = fexec
        self.items_per_call = items_per_call
        section = fexec.config.get(fexec.backend, {})
        self.workers = max(
            int(section.get("max_workers", 1)) * int(section.get("worker_processes", 1)), 1
        )
        self._calls: dict[int, tuple[ResponseFuture, list[_Slot]]] = {}
        self._ended: dict[str, float] = {}
        self._lost_calls: set[int] = set()
        remote = fexec.config["lithops"].get("storage") != "localhost"
        self._poll_seconds = 1.0 if remote else 0.1

    @property
    def window(self) -> int:
        return max(4 * self.workers * self.items_per_call, 16)

    def submit(self, tasks: Sequence[Task]) -> list[_Slot | Exception]:
        if not tasks:
            return []
        # One Lithops job per batch: the function and its modules are uploaded once per job,
        # and the tasks of a map differ only by index and item.
        size = self.items_per_call
        batches = [
            [(task.index, task.item) for task in tasks[start : start + size]]
            for start in range(0, len(tasks), size)
        ]
        try:
            futures = self.fexec.map(_Call.of(tasks[0]), [(batch,) for batch in batches])
        except Exception as error:
            return [error] * len(tasks)
        handles: list[_Slot | Exception] = []
        for future, batch in zip(futures, batches, strict=True):
            slots = [_Slot(future, position) for position in range(len(batch))]
            self._calls[id(future)] = (future, slots)
            handles.extend(slots)
        return handles

    def submit_one(self, task: Task) -> _Slot:
        handle = self.submit([task])[0]
        if isinstance(handle, Exception):
            raise handle
        return handle

    def wait(self) -> list[_Slot]:
        from lithops.wait import ANY_COMPLETED

        while True:
            futures = [future for future, _ in self._calls.values()]
            # Lithops' job monitor marks a call ready when its status arrives; polled here
            # rather than in one blocking wait, which would never return for a lost call.
            arrived = [future for future in futures if future.ready or future.done]
            done = []
            if arrived:
                done, _ = self.fexec.wait(
                    arrived,
                    throw_except=False,
                    return_when=ANY_COMPLETED,
                    download_results=True,
                    show_progressbar=False,
                )
            settled = {id(future): future for future in [*done, *self._lost(futures)]}
            if settled:
                return [slot for key in settled for slot in self._calls.pop(key)[1]]
            time.sleep(self._poll_seconds)

    def _lost(self, futures: list[ResponseFuture]) -> list[ResponseFuture]:
        # Lithops waits for ever for a call whose process died before reporting (on the
        # localhost backend, a task process that failed to start: another process that
        # creates its first FunctionExecutor re-copies the package the runner imports). Its
        # job's latch opens when every task process has exited: a call still without a
        # status some time after that is lost.
        jobs = getattr(getattr(self.fexec.compute_handler, "env", None), "jobs", None)
        if not isinstance(jobs, dict):
            return []
        now = time.monotonic()
        lost = []
        for future in futures:
            latch = jobs.get(future.job_key)
            if latch is None or not getattr(latch, "done", False):
                continue
            ended = self._ended.setdefault(future.job_key, now)
            if now - ended < _LOST_AFTER:
                continue
            status = self.fexec.internal_storage.get_call_status(
                future.executor_id, future.job_id, future.call_id
            )
            if status is None:
                self._lost_calls.add(id(future))
                lost.append(future)
        return lost

    def outcome(self, handle: _Slot) -> Outcome:
        future = handle.future
        if id(future) in self._lost_calls:
            raise RuntimeError(
                f"Lithops call {future.job_key}/{future.call_id} ended without a result: its "
                "process died (see the Lithops runner log)"
            )
        outcomes: list[Outcome] = future.result()
        return outcomes[handle.position]

    def cancel(self, handles: list[_Slot]) -> None:
        # Lithops futures cannot be cancelled; this is what FunctionExecutor.wait does to the
        # jobs it was waiting on when it fails: drop queued calls, stop the running ones.
        from concurrent.futures import CancelledError

        futures = list({id(slot.future): slot.future for slot in handles}.values())
        job_keys = {future.job_key for future in futures}
        try:
            self.fexec.invoker.discard_pending(job_keys, {f.job_id for f in futures})
            self.fexec.job_monitor.remove(futures)
            self.fexec.compute_handler.clear(job_keys, exception=CancelledError())
        except Exception:
            # Best effort, on internals: the calls' results are dropped below either way, so
            # a call that can't be stopped only runs on unobserved.
            pass
        for future in futures:
            self._calls.pop(id(future), None)
