"""Executors: one contract (streaming, bounded submission, retries, errors) on every backend."""

from __future__ import annotations

import functools
import itertools
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from virtualize.errors import (
    ChunkReadError,
    ConcatenationError,
    InvalidFileError,
    UnauthorizedLocationError,
    VirtualizeError,
)
from virtualize.executors import (
    DaskExecutor,
    Executor,
    FuturesExecutor,
    LithopsExecutor,
    ProcessExecutor,
    SerialExecutor,
    TaskFailure,
    ThreadExecutor,
    get_executor,
    is_transient,
    resolve_executor,
)

ITEMS = list(range(50))
EXPECTED = {i: i * i for i in ITEMS}
BAD = 13

# Process pools, the dask cluster and lithops' local processes share two cores: one xdist
# worker runs them all, one after the other.
slow = pytest.mark.xdist_group("executors")


# Task functions: module level, so that they pickle by reference.


def square(x: int) -> int:
    return x * x


def fail_at(bad: int, x: int) -> int:
    if x == bad:
        raise InvalidFileError("truncated header", url=f"file:///data/{x}.nc")
    return x * x


def flaky(folder: Path, failures: int, x: int) -> int:
    """Fail ``failures`` times per item, counting attempts in a file (shared by processes)."""
    counter = folder / f"{x}.count"
    count = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(count))
    if count <= failures:
        raise OSError(f"flaky read of {x} (attempt {count})")
    return x * x


def invalid(folder: Path, x: int) -> int:
    counter = folder / f"{x}.count"
    count = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(count))
    raise InvalidFileError("not an HDF5 file", url=f"file:///data/{x}.nc")


def slow_first(x: int) -> int:
    if x == 0:
        time.sleep(0.5)
    return x


class _PickyError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"code {code}: {detail}")


def unpicklable_error(x: int) -> int:
    raise _PickyError(7, f"item {x} is picky")


def die_at(bad: int, x: int) -> int:
    if x == bad:
        os._exit(3)
    time.sleep(0.05)
    return x


def kill_parent_at(bad: int, x: int) -> int:
    if x == bad:
        os.kill(os.getppid(), signal.SIGKILL)
        os._exit(1)
    return x


# Executors that are slow to start are shared by the tests of this module.


@pytest.fixture(scope="module")
def process_executor() -> Iterator[ProcessExecutor]:
    with ProcessExecutor(max_workers=2) as executor:
        yield executor


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def lithops_executor() -> Iterator[LithopsExecutor]:
    pytest.importorskip("lithops")
    with LithopsExecutor(items_per_call=10) as executor:
        yield executor


@pytest.fixture
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    kind = request.param
    if kind == "serial":
        yield SerialExecutor()
    elif kind == "threads":
        with ThreadExecutor(max_workers=4) as threads:
            yield threads
    elif kind == "processes":
        yield request.getfixturevalue("process_executor")
    elif kind == "futures":
        with ThreadPoolExecutor(4) as pool:
            yield FuturesExecutor(pool)
    elif kind == "dask":
        yield DaskExecutor(request.getfixturevalue("dask_client"))
    elif kind == "lithops":
        yield request.getfixturevalue("lithops_executor")
    else:  # pragma: no cover
        raise AssertionError(kind)


ALL = [
    "serial",
    "threads",
    pytest.param("processes", marks=slow),
    "futures",
    pytest.param("dask", marks=slow),
    pytest.param("lithops", marks=slow),
]
LOCAL = ["serial", "threads", pytest.param("processes", marks=slow)]


@pytest.mark.parametrize("executor", ALL, indirect=True)
def test_every_executor_maps_the_same_results(executor: Executor) -> None:
    results = executor.map(square, ITEMS)
    pairs = list(results)
    assert sorted(index for index, _ in pairs) == ITEMS
    assert dict(pairs) == EXPECTED
    assert results.failures == []


@pytest.mark.parametrize("executor", ALL, indirect=True)
def test_record_reports_the_one_failure(executor: Executor) -> None:
    results = executor.map(functools.partial(fail_at, BAD), ITEMS, on_error="record")
    values = dict(results)
    assert values == {i: i * i for i in ITEMS if i != BAD}
    [failure] = results.failures
    assert isinstance(failure, TaskFailure)
    assert (failure.index, failure.item, failure.attempts) == (BAD, BAD, 1)
    assert type(failure.error) is InvalidFileError
    assert str(failure.error) == f"file:///data/{BAD}.nc: truncated header"


@pytest.mark.parametrize("executor", LOCAL, indirect=True)
def test_skip_warns_once(executor: Executor) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = dict(executor.map(functools.partial(fail_at, BAD), ITEMS, on_error="skip"))
    assert len(values) == 49 and BAD not in values
    [warning] = caught
    message = str(warning.message)
    assert message.startswith(f"1 of 50 tasks failed and were skipped; first: item {BAD}")
    assert "InvalidFileError" in message and "truncated header" in message
    assert warning.filename == __file__


@pytest.mark.parametrize("executor", LOCAL, indirect=True)
def test_raise_raises_the_original_error_with_a_note(executor: Executor) -> None:
    with pytest.raises(InvalidFileError, match="truncated header") as info:
        dict(executor.map(functools.partial(fail_at, BAD), ITEMS))
    assert info.value.__notes__ == [f"while processing item {BAD}: {BAD}"]


def test_raise_truncates_the_item_in_the_note() -> None:
    item = "x" * 1000
    with pytest.raises(ValueError) as info:
        list(SerialExecutor().map(int, [item]))
    [note] = info.value.__notes__
    assert note.startswith("while processing item 0: 'xxx") and note.endswith("...")
    assert len(note) < 250


def test_raise_stops_outstanding_work() -> None:
    started: list[int] = []

    def record_then_fail(x: int) -> int:
        started.append(x)
        if x == 0:
            raise KeyError(x)
        time.sleep(0.01)
        return x

    with ThreadExecutor(max_workers=1) as executor, pytest.raises(KeyError):
        list(executor.map(record_then_fail, range(1000)))
    # Only the window (16 tasks) was ever submitted, and queued tasks were cancelled.
    assert len(started) <= 16


@slow
def test_retries_survive_across_processes(
    process_executor: ProcessExecutor, tmp_path: Path
) -> None:
    fn = functools.partial(flaky, tmp_path, 2)
    results = process_executor.map(fn, range(4), retries=2, backoff=0, on_error="record")
    assert dict(results) == {i: i * i for i in range(4)}
    assert results.failures == []
    assert all((tmp_path / f"{i}.count").read_text() == "3" for i in range(4))


@slow
def test_retries_exhausted(process_executor: ProcessExecutor, tmp_path: Path) -> None:
    fn = functools.partial(flaky, tmp_path, 2)
    results = process_executor.map(fn, range(4), retries=1, backoff=0, on_error="record")
    assert dict(results) == {}
    assert sorted(f.index for f in results.failures) == [0, 1, 2, 3]
    for failure in results.failures:
        assert failure.attempts == 2
        assert type(failure.error) is OSError
        assert str(failure.error) == f"flaky read of {failure.item} (attempt 2)"
        # The worker's traceback travels as the error's cause, as concurrent.futures does.
        assert "in flaky" in str(failure.error.__cause__)


def test_deterministic_errors_are_not_retried(tmp_path: Path) -> None:
    with ThreadExecutor(2) as executor:
        fn = functools.partial(invalid, tmp_path)
        results = executor.map(fn, range(3), retries=3, backoff=0, on_error="record")
        assert list(results) == []
    assert [f.attempts for f in results.failures] == [1, 1, 1]
    assert all((tmp_path / f"{i}.count").read_text() == "1" for i in range(3))


def test_retry_on_decides(tmp_path: Path) -> None:
    fn = functools.partial(invalid, tmp_path)
    results = SerialExecutor().map(
        fn, [0], retries=2, backoff=0, retry_on=lambda e: True, on_error="record"
    )
    assert list(results) == []
    assert results.failures[0].attempts == 3


def test_backoff_doubles() -> None:
    calls: list[float] = []

    def failing(x: int) -> int:
        calls.append(time.monotonic())
        raise TimeoutError

    list(SerialExecutor().map(failing, [0], retries=2, backoff=0.05, on_error="record"))
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1


def test_is_transient() -> None:
    for error in [
        InvalidFileError("x"),
        UnauthorizedLocationError("x"),
        ConcatenationError("x"),
        TypeError(),
        ValueError(),
        KeyError(),
        NotImplementedError(),
    ]:
        assert not is_transient(error), error
    for error in [OSError(), TimeoutError(), ConnectionError(), ChunkReadError("x"), Exception()]:
        assert is_transient(error), error


@slow
def test_unpicklable_error_is_replaced() -> None:
    # in a worker: this process may have tblib installed (dask does), which pickles more
    with ProcessExecutor(max_workers=1, work_in_caller=False) as executor:
        results = executor.map(unpicklable_error, [5], on_error="record")
        assert list(results) == []
    [failure] = results.failures
    assert type(failure.error) is VirtualizeError
    assert str(failure.error) == "_PickyError: code 7: item 5 is picky"


@slow
def test_task_that_does_not_pickle_fails_at_submission(
    process_executor: ProcessExecutor,
) -> None:
    results = process_executor.map(lambda x: x, [1, 2], on_error="record")
    assert list(results) == []
    assert [(f.index, f.attempts) for f in results.failures] == [(0, 0), (1, 0)]
    assert "pickle" in str(results.failures[0].error)
    # The pool is still usable (and shuts down at the end of the module without hanging).
    assert dict(process_executor.map(square, [3])) == {0: 9}


def test_errors_in_threads_are_the_original_objects() -> None:
    results = ThreadExecutor(2).map(unpicklable_error, [5], on_error="record")
    assert list(results) == []
    assert type(results.failures[0].error) is _PickyError


@pytest.mark.parametrize("executor", ["serial", "threads"], indirect=True)
def test_progress(executor: Executor) -> None:
    calls: list[tuple[int, int | None]] = []
    fn = functools.partial(fail_at, BAD)
    list(executor.map(fn, ITEMS, on_error="record", progress=lambda d, t: calls.append((d, t))))
    assert calls == [(done, 50) for done in range(1, 51)]
    calls.clear()
    list(executor.map(square, iter(range(5)), progress=lambda d, t: calls.append((d, t))))
    assert calls == [(done, None) for done in range(1, 6)]


def test_results_arrive_as_they_complete() -> None:
    with ThreadExecutor(max_workers=4) as executor:
        order = [index for index, _ in executor.map(slow_first, range(8))]
    assert order[0] != 0
    assert sorted(order) == list(range(8))


def test_serial_runs_in_order() -> None:
    order = [index for index, _ in SerialExecutor().map(slow_first, range(8))]
    assert order == list(range(8))


def test_submission_is_bounded() -> None:
    consumed = 0

    def items() -> Iterator[int]:
        nonlocal consumed
        for i in range(10_000):
            consumed += 1
            yield i

    received = 0
    ahead = []
    with ThreadExecutor(max_workers=2) as executor:  # a window of max(4 * 2, 16) tasks
        for _ in executor.map(square, items()):
            received += 1
            ahead.append(consumed - received)
    assert received == 10_000
    assert ahead[0] <= 16 and max(ahead) <= 16


@slow
def test_process_start_methods(process_executor: ProcessExecutor) -> None:
    with pytest.raises(ValueError, match="fork deadlocks"):
        ProcessExecutor(start_method="fork")
    assert process_executor.start_method == "forkserver"
    list(process_executor.map(square, [1]))
    assert process_executor._pool is not None
    assert process_executor._pool._mp_context.get_start_method() == "forkserver"  # type: ignore[attr-defined]
    spawn = ProcessExecutor(start_method="spawn")
    assert spawn.start_method == "spawn"


@slow
def test_dead_worker_fails_tasks_and_pool_recovers() -> None:
    # work_in_caller=False: the task that kills its process must not run in this one
    with ProcessExecutor(max_workers=1, work_in_caller=False) as executor:
        results = executor.map(functools.partial(die_at, 2), range(6), on_error="record")
        values = dict(results)
        assert 2 not in values
        assert results.failures and all(
            isinstance(f.error, BrokenProcessPool) and f.attempts == 0 for f in results.failures
        )
        assert sorted([*values, *(f.index for f in results.failures)]) == list(range(6))
        assert dict(executor.map(square, range(3))) == {0: 0, 1: 1, 2: 4}


def test_close_is_idempotent_and_map_after_close_works() -> None:
    executor = ThreadExecutor(max_workers=2)
    assert dict(executor.map(square, range(3))) == {0: 0, 1: 1, 2: 4}
    executor.close()
    executor.close()
    assert dict(executor.map(square, range(3))) == {0: 0, 1: 1, 2: 4}
    executor.close()
    SerialExecutor().close()


def test_futures_executor_leaves_the_pool_open() -> None:
    with ThreadPoolExecutor(2) as pool:
        with FuturesExecutor(pool) as executor:
            assert dict(executor.map(square, range(3))) == {0: 0, 1: 1, 2: 4}
        assert pool.submit(square, 3).result() == 9


@slow
def test_dask_executor_uses_the_active_client(dask_client: Any) -> None:
    executor = DaskExecutor()
    assert executor._resolve_client() is dask_client
    assert dict(executor.map(square, range(3))) == {0: 0, 1: 1, 2: 4}
    executor.close()
    assert dask_client.status == "running"


@slow
def test_lithops_close_and_reuse() -> None:
    pytest.importorskip("lithops")
    executor = LithopsExecutor(items_per_call=4)
    try:
        assert dict(executor.map(square, range(4))) == {0: 0, 1: 1, 2: 4, 3: 9}
        executor.close()
        executor.close()
        assert dict(executor.map(square, range(2))) == {0: 0, 1: 1}
    finally:
        executor.close()


@slow
def test_lithops_call_lost_with_its_process_fails_instead_of_hanging(
    lithops_executor: LithopsExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    import virtualize.executors.lithops

    monkeypatch.setattr(virtualize.executors.lithops, "_LOST_AFTER", 0.5)
    fn = functools.partial(kill_parent_at, 12)
    results = lithops_executor.map(fn, range(20), on_error="record")
    values = dict(results)
    # The call of 10 items that held item 12 never reported: its items fail, the rest arrive.
    assert values == {i: i for i in range(20) if not 10 <= i < 20}
    assert sorted(f.index for f in results.failures) == list(range(10, 20))
    assert all(f.attempts == 0 for f in results.failures)
    assert "ended without a result" in str(results.failures[0].error)


def test_invalid_arguments() -> None:
    executor = SerialExecutor()
    with pytest.raises(ValueError, match="on_error"):
        executor.map(square, [1], on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retries"):
        executor.map(square, [1], retries=-1)
    with pytest.raises(ValueError, match="max_workers"):
        ThreadExecutor(0)
    with pytest.raises(ValueError, match="items_per_call"):
        LithopsExecutor(items_per_call=0)


def test_resolve_executor() -> None:
    for spec, kind in [
        (None, SerialExecutor),
        ("serial", SerialExecutor),
        ("threads", ThreadExecutor),
        ("processes", ProcessExecutor),
        ("dask", DaskExecutor),
        ("lithops", LithopsExecutor),
    ]:
        executor, owned = resolve_executor(spec)
        assert type(executor) is kind and owned
    mine = ThreadExecutor()
    assert resolve_executor(mine) == (mine, False)
    assert get_executor(mine) is mine
    with ThreadPoolExecutor(1) as pool:
        wrapped, owned = resolve_executor(pool)
        assert isinstance(wrapped, FuturesExecutor) and wrapped.executor is pool and owned
    with pytest.raises(ValueError, match="'threads'"):
        get_executor("thread")
    with pytest.raises(TypeError, match=r"concurrent\.futures\.Executor"):
        get_executor(4)


def test_import_does_not_need_dask_or_lithops() -> None:
    code = (
        "import sys, virtualize.executors; "
        "assert 'distributed' not in sys.modules and 'lithops' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def pid_after(seconds: float, x: int) -> int:
    time.sleep(seconds)
    return os.getpid()


@slow
def test_calling_process_works_while_the_pool_starts() -> None:
    task = functools.partial(pid_after, 0.05)
    with ProcessExecutor(max_workers=2) as executor:
        pids = dict(executor.map(task, range(100)))
    assert sorted(pids) == list(range(100))
    here = [i for i, pid in pids.items() if pid == os.getpid()]
    # workers need over half a second to start: the first items ran here meanwhile
    assert here and here[0] == 0
    assert len(set(pids.values()) - {os.getpid()}) >= 1
    with ProcessExecutor(max_workers=2, work_in_caller=False) as executor:
        pids = dict(executor.map(task, range(10)))
    assert os.getpid() not in pids.values()
