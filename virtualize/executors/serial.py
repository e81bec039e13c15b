"""Run tasks one after the other in the calling thread."""

from __future__ import annotations

from collections import deque

from virtualize.executors.base import Dispatch, Executor, Outcome, Task, run_task

__all__ = ["SerialExecutor"]


class SerialExecutor(Executor):
    """Run every task in the calling thread, in input order.

    The reference behaviour, and the one to debug with: errors keep their traceback and a
    debugger stops where they are raised.

    Examples
    --------
    >>> with SerialExecutor() as executor:
    ...     sorted(executor.map(abs, [-1, -2]))
    [(0, 1), (1, 2)]
    """

    remote = False

    def _dispatch(self) -> _SerialDispatch:
        return _SerialDispatch()

    def _release(self) -> None:
        pass


class _SerialDispatch(Dispatch[Outcome]):
    def __init__(self) -> None:
        self._done: deque[Outcome] = deque()

    @property
    def window(self) -> int:
        # One at a time: a task runs only once the previous result has been taken.
        return 1

    def submit_one(self, task: Task) -> Outcome:
        outcome = run_task(task)
        self._done.append(outcome)
        return outcome

    def wait(self) -> list[Outcome]:
        return [self._done.popleft()]

    def outcome(self, handle: Outcome) -> Outcome:
        return handle
