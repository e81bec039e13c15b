"""The contract every executor shares: streaming, bounded submission, retries and errors.

:class:`Executor` implements the logic once. A backend only says how to submit tasks, how to
wait until some of them are done and how to read an outcome (a :class:`Dispatch`). Every
task runs inside :func:`run_task`, in the worker: it retries there and returns an outcome
instead of raising, so errors reach the driver the same way whatever the backend.
"""

from __future__ import annotations

import pickle
import queue
import time
import traceback
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from itertools import islice
from types import TracebackType
from typing import Any, Literal, Self

from virtualize.errors import (
    ConcatenationError,
    FormatDetectionError,
    InvalidFileError,
    ManifestError,
    UnauthorizedLocationError,
    UnsupportedFeatureError,
    VirtualizeError,
)

__all__ = [
    "Dispatch",
    "Executor",
    "OnError",
    "Outcome",
    "Task",
    "TaskFailure",
    "TaskResults",
    "is_transient",
    "run_task",
]

OnError = Literal["raise", "skip", "record"]
"""What :meth:`Executor.map` does with a task that failed after its retries."""

_ON_ERROR = ("raise", "skip", "record")
_MAX_BACKOFF = 30.0
_REPR_LIMIT = 200

_DETERMINISTIC: tuple[type[BaseException], ...] = (
    InvalidFileError,
    UnsupportedFeatureError,
    FormatDetectionError,
    UnauthorizedLocationError,
    ConcatenationError,
    ManifestError,
    TypeError,
    ValueError,
    KeyError,
    NotImplementedError,
)


def is_transient(error: BaseException) -> bool:
    """Whether trying the same task again may succeed.

    The default ``retry_on`` of :meth:`Executor.map`. Errors that the same input always
    raises (a malformed file, an unsupported feature, a refused location, ``TypeError``,
    ``ValueError``, ``KeyError``, ``NotImplementedError``) are not transient; anything else
    (``OSError``, ``TimeoutError``, :class:`~virtualize.errors.ChunkReadError`, unknown
    errors) is.

    Parameters
    ----------
    error
        The error a task raised.

    Returns
    -------
    bool
        True when the task is worth retrying.
    """
    return not isinstance(error, _DETERMINISTIC)


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """A task that failed after its retries (``on_error="record"``).

    Parameters
    ----------
    index
        The 0-based position of the item in the input.
    item
        The input item.
    error
        The error of the last attempt.
    attempts
        How many times the function ran; 0 when the backend lost the task before the worker
        reported back (a worker died, the result did not unpickle, submission failed).
    """

    index: int
    item: Any
    error: Exception
    attempts: int


@dataclass(frozen=True, slots=True)
class Task:
    """One call of the user's function, as shipped to a worker (see :func:`run_task`)."""

    fn: Callable[[Any], Any]
    index: int
    item: Any
    retries: int
    backoff: float
    retry_on: Callable[[BaseException], bool]
    remote: bool
    """Whether the outcome crosses a process boundary, so its error must pickle."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a worker sends back: a value or an error, and the number of attempts."""

    index: int
    value: Any = None
    error: Exception | None = None
    attempts: int = 1
    traceback: str | None = None


def run_task(task: Task) -> Outcome:
    """Run one task in the worker: call, retry transient errors, never raise.

    Parameters
    ----------
    task
        The function, the item and the retry policy.

    Returns
    -------
    Outcome
        The value, or the error of the last attempt (replaced by a
        :class:`~virtualize.errors.VirtualizeError` naming it when it does not pickle).
    """
    attempt = 0
    while True:
        try:
            return Outcome(task.index, value=task.fn(task.item), attempts=attempt + 1)
        except Exception as error:
            if attempt < task.retries and _should_retry(task.retry_on, error):
                time.sleep(min(task.backoff * 2**attempt, _MAX_BACKOFF))
                attempt += 1
                continue
            if not task.remote:
                return Outcome(task.index, error=error, attempts=attempt + 1)
            return Outcome(
                task.index,
                error=_portable(error),
                attempts=attempt + 1,
                traceback="".join(traceback.format_exception(error)),
            )


def _should_retry(retry_on: Callable[[BaseException], bool], error: Exception) -> bool:
    try:
        return bool(retry_on(error))
    except Exception:
        return False


def _portable(error: Exception) -> Exception:
    # An exception whose __init__ takes other arguments than its args pickles but fails to
    # unpickle, so round-trip it: a failure in the driver would lose the error altogether.
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return VirtualizeError(f"{type(error).__qualname__}: {error}")
    return error


class _RemoteTraceback(Exception):
    """The traceback of an error raised in another process (set as its ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class Dispatch[H](ABC):
    """The tasks of one :meth:`Executor.map` on a running backend.

    ``H`` is the backend's handle of a submitted task (a future).
    """

    workers: int = 1
    #: Whether the calling process runs tasks too: all of them while :meth:`started` is
    #: False (a pool still starting its workers), then whenever no result is waiting.
    assists: bool = False

    @property
    def window(self) -> int:
        """How many tasks may be submitted ahead of the completed ones."""
        return max(4 * self.workers, 16)

    def submit(self, tasks: Sequence[Task]) -> list[H | Exception]:
        """Submit tasks; the error of a submission that failed takes the place of its handle."""
        handles: list[H | Exception] = []
        for task in tasks:
            try:
                handles.append(self.submit_one(task))
            except Exception as error:
                handles.append(error)
        return handles

    @abstractmethod
    def submit_one(self, task: Task) -> H:
        """Submit one task that calls ``run_task(task)`` in a worker."""

    @abstractmethod
    def wait(self) -> list[H]:
        """Block until one or more submitted tasks are done; return them (each once)."""

    def poll(self) -> list[H]:
        """The submitted tasks that are done, without blocking (each once); needed by
        dispatches that assist."""
        return []

    def run_here(self, task: Task) -> Outcome:
        """Run a task in the calling process, as a worker would (dispatches that assist)."""
        return run_task(task)

    def started(self) -> bool:
        """Whether the backend is ready for tasks (it is, unless it says otherwise)."""
        return True

    @abstractmethod
    def outcome(self, handle: H) -> Outcome:
        """The outcome of a done task; raises when the backend lost it."""

    # Not abstract: a backend that cannot cancel keeps this no-op.
    def cancel(self, handles: list[H]) -> None:  # noqa: B027
        """Stop tasks that are not done, as far as the backend allows."""


class CallbackDispatch[H](Dispatch[H]):
    """A dispatch whose handles call back when done (concurrent.futures and dask futures)."""

    def __init__(self) -> None:
        self._done: queue.SimpleQueue[H] = queue.SimpleQueue()

    def track(self, handle: H) -> H:
        """Have ``handle`` reported by :meth:`wait` once done."""
        handle.add_done_callback(self._done.put)  # type: ignore[attr-defined]
        return handle

    def wait(self) -> list[H]:
        return [self._done.get(), *self.poll()]

    def poll(self) -> list[H]:
        done: list[H] = []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                return done


class TaskResults[T](Iterator[tuple[int, T]]):
    """The results of :meth:`Executor.map`: ``(index, value)`` pairs as tasks complete.

    Attributes
    ----------
    failures
        The tasks that failed, filled during iteration when ``on_error="record"``.
    """

    def __init__(self, results: Iterator[tuple[int, T]], failures: list[TaskFailure]) -> None:
        self._results = results
        self.failures = failures

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> tuple[int, T]:
        return next(self._results)

    def close(self) -> None:
        """Stop early: cancel the tasks still outstanding."""
        close = getattr(self._results, "close", None)
        if close is not None:
            close()


@dataclass
class _Run:
    on_error: OnError
    progress: Callable[[int, int | None], object] | None
    total: int | None
    failures: list[TaskFailure] = field(default_factory=list)
    skipped: list[TaskFailure] = field(default_factory=list)
    done: int = 0


class Executor(ABC):
    """Run a function over many items, in parallel, streaming results as they complete.

    Subclasses provide a :class:`Dispatch` (submit, wait for any, read an outcome) and
    release their backend in :meth:`_release`; pools and clusters are created on the first
    :meth:`map` and reused until :meth:`close`.
    """

    remote: bool = True
    """Whether tasks run in other processes (their errors must then pickle)."""

    def map[T](
        self,
        fn: Callable[[Any], T],
        items: Iterable[Any],
        *,
        on_error: OnError = "raise",
        retries: int = 0,
        backoff: float = 0.2,
        retry_on: Callable[[BaseException], bool] = is_transient,
        progress: Callable[[int, int | None], object] | None = None,
    ) -> TaskResults[T]:
        """Call ``fn(item)`` for every item; yield ``(index, value)`` as tasks complete.

        Parameters
        ----------
        fn
            The function. It must pickle (a module-level function or a
            :func:`functools.partial` of one) for executors that use other processes.
        items
            Any iterable, consumed lazily: only a bounded number of tasks is submitted ahead
            of the completed ones.
        on_error
            What to do with a task that failed after its retries: ``"raise"`` its error
            (with a note naming the item) and cancel the rest, ``"skip"`` it (one warning at
            the end sums up the failures), or ``"record"`` it in ``results.failures``.
        retries
            How many more times a task is tried, in the worker, while ``retry_on(error)``.
        backoff
            Seconds to wait before the first retry; doubled at each retry, at most 30 s.
        retry_on
            Which errors are worth a retry; :func:`is_transient` by default.
        progress
            Called in the calling process as ``progress(done, total)`` after each task;
            ``total`` is ``len(items)``, or None when ``items`` has no length.

        Returns
        -------
        TaskResults
            An iterator of ``(index, value)``, where ``index`` is the position of the item
            in ``items``; failures recorded in its ``failures`` list.

        Raises
        ------
        ValueError
            For an unknown ``on_error`` or a negative ``retries``.
        """
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {_ON_ERROR}, not {on_error!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        if backoff < 0:
            raise ValueError(f"backoff must be >= 0, not {backoff}")
        total = len(items) if isinstance(items, Sized) else None
        run = _Run(on_error, progress, total)
        make_task = _TaskFactory(fn, retries, backoff, retry_on, self.remote)
        dispatch = self._dispatch()
        return TaskResults(self._stream(dispatch, iter(items), make_task, run), run.failures)

    def close(self) -> None:
        """Release the pool or cluster this executor created; a later map creates it anew."""
        self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @abstractmethod
    def _dispatch(self) -> Dispatch[Any]:
        """Start the backend if needed and return a dispatch for one map."""

    @abstractmethod
    def _release(self) -> None:
        """Release the backend (idempotent)."""

    def _stream(
        self,
        dispatch: Dispatch[Any],
        items: Iterator[Any],
        make_task: _TaskFactory,
        run: _Run,
    ) -> Iterator[tuple[int, Any]]:
        pending: dict[int, tuple[Any, int, Any]] = {}
        next_index = 0
        exhausted = False
        assisting = dispatch.assists
        try:
            while assisting and not exhausted and not dispatch.started():
                # The backend is still starting: run items here meanwhile.
                batch = list(islice(items, 1))
                if not batch:
                    exhausted = True
                    break
                task = make_task(next_index, batch[0])
                next_index += 1
                yield from self._settle(dispatch.run_here(task), task.item, run)
            while True:
                room = dispatch.window - len(pending)
                if not exhausted and room > 0:
                    batch = list(islice(items, room))
                    exhausted = len(batch) < room
                    tasks = [make_task(next_index + k, item) for k, item in enumerate(batch)]
                    next_index += len(batch)
                    refused: list[tuple[Task, Exception]] = []
                    for task, handle in zip(tasks, dispatch.submit(tasks), strict=True):
                        if isinstance(handle, Exception):
                            refused.append((task, handle))
                        else:
                            pending[id(handle)] = (handle, task.index, task.item)
                    for task, error in refused:
                        failed = Outcome(task.index, error=error, attempts=0)
                        yield from self._settle(failed, task.item, run)
                if not pending:
                    if exhausted:
                        break
                    continue
                done = dispatch.poll() if assisting else []
                if assisting and not done and not exhausted:
                    # No result is waiting: run the next item here rather than idle.
                    batch = list(islice(items, 1))
                    if batch:
                        task = make_task(next_index, batch[0])
                        next_index += 1
                        yield from self._settle(dispatch.run_here(task), task.item, run)
                        continue
                    exhausted = True
                for handle in done or dispatch.wait():
                    _, index, item = pending.pop(id(handle))
                    try:
                        outcome = dispatch.outcome(handle)
                    except Exception as error:
                        outcome = Outcome(index, error=error, attempts=0)
                    yield from self._settle(outcome, item, run)
        finally:
            if pending:
                dispatch.cancel([handle for handle, _, _ in pending.values()])
        if run.skipped:
            first = run.skipped[0]
            warnings.warn(
                f"{len(run.skipped)} of {run.done} tasks failed and were skipped; first: "
                f"item {first.index} ({_short_repr(first.item)}): "
                f"{type(first.error).__name__}: {first.error}",
                stacklevel=3,
            )

    @staticmethod
    def _settle(outcome: Outcome, item: Any, run: _Run) -> Iterator[tuple[int, Any]]:
        run.done += 1
        if run.progress is not None:
            run.progress(run.done, run.total)
        error = outcome.error
        if error is None:
            yield outcome.index, outcome.value
            return
        # (tblib, which dask installs, may carry the traceback itself; the text is kept too)
        if outcome.traceback and error.__cause__ is None:
            error.__cause__ = _RemoteTraceback(outcome.traceback)
        failure = TaskFailure(outcome.index, item, error, outcome.attempts)
        if run.on_error == "raise":
            error.add_note(f"while processing item {outcome.index}: {_short_repr(item)}")
            raise error
        if run.on_error == "record":
            run.failures.append(failure)
        else:
            run.skipped.append(failure)


@dataclass(frozen=True, slots=True)
class _TaskFactory:
    fn: Callable[[Any], Any]
    retries: int
    backoff: float
    retry_on: Callable[[BaseException], bool]
    remote: bool

    def __call__(self, index: int, item: Any) -> Task:
        return Task(self.fn, index, item, self.retries, self.backoff, self.retry_on, self.remote)


def _short_repr(item: Any) -> str:
    try:
        text = repr(item)
    except Exception:
        text = f"<{type(item).__name__}>"
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."
