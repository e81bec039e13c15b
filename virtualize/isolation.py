"""The C libraries' metadata work, in a helper process with a time limit.

ecCodes and the HDF5 library trust the bytes they parse: on some damaged files they crash
the process that called them (a segmentation fault, an abort) or never return. The parts of
a parse that hand a file's metadata to them (GRIB files, and HDF5 files read through h5py)
run in a helper process instead, so such a file costs an
:class:`~virtualize.errors.InvalidFileError` naming it, and the user's interpreter, with
every other file of an ingest, carries on.

Helpers are started on first use and then reused: they keep what the libraries have loaded
(ecCodes' definition files, imported modules), so only the first parse of a process pays a
helper's start (about a second). There is one helper per parse running at the same time,
up to the number of CPUs. A helper that crashed or ran out of time is replaced.

Two environment variables configure this, so that executors' worker processes see the same
setting:

``VIRTUALIZE_ISOLATION``
    ``"process"`` (default) or ``"off"``: parse in the calling process, as fast as it gets
    and unprotected (for files you trust, or platforms that can't start processes).
``VIRTUALIZE_METADATA_TIMEOUT``
    Seconds one file's metadata may take in a helper before it is stopped (default 300).
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from virtualize.errors import InvalidFileError

__all__ = ["isolated", "isolation_enabled", "metadata_timeout"]

DEFAULT_TIMEOUT = 300.0

_HINT_CRASH = (
    "The file is damaged: check it with the format's own tools (grib_dump, h5dump), or leave it out"
)


def isolation_enabled() -> bool:
    """Whether metadata work runs in a helper process (``VIRTUALIZE_ISOLATION``)."""
    setting = os.environ.get("VIRTUALIZE_ISOLATION", "process").strip().lower()
    if setting not in ("process", "off"):
        raise ValueError(f"VIRTUALIZE_ISOLATION must be 'process' or 'off', got {setting!r}")
    return setting == "process"


def metadata_timeout() -> float:
    """Seconds a helper may take over one call (``VIRTUALIZE_METADATA_TIMEOUT``)."""
    text = os.environ.get("VIRTUALIZE_METADATA_TIMEOUT")
    if not text:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"VIRTUALIZE_METADATA_TIMEOUT must be a positive number, got {text!r}")
    return seconds


def isolated[T](function: Callable[..., T], *args: Any, url: str, library: str) -> T:
    """``function(*args)``, run in a helper process when isolation is on.

    Parameters
    ----------
    function
        A module-level function (it is pickled by name); its arguments and result must
        pickle.
    *args
        Its arguments.
    url
        The file the call reads, named by the errors.
    library
        The C library at work (``"ecCodes"``, ``"h5py"``), named by the errors.

    Returns
    -------
    object
        What ``function`` returned. Warnings it emitted are emitted again here; what it raised
        is raised here.

    Raises
    ------
    InvalidFileError
        If the helper crashed or took longer than :func:`metadata_timeout`.
    """
    if not isolation_enabled():
        return function(*args)
    timeout = metadata_timeout()
    helper = _pool.acquire()
    if helper is None:
        return function(*args)
    healthy = False
    try:
        reply = helper.call((function, args), timeout, url=url, library=library)
        healthy = True
    finally:
        _pool.release(helper, healthy)
    outcome, value, caught, records = reply
    for record in records:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    for message, category in caught:
        warnings.warn(message, category, stacklevel=2)
    if outcome == "raise":
        raise value
    return value


class _Helper:
    """One helper process and the socket it answers on."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        environment = dict(os.environ, VIRTUALIZE_ISOLATION="off")
        package_root = Path(__file__).resolve().parent.parent
        if not _on_site_path(package_root):
            # a source checkout put on sys.path by hand: the helper must find it too (an
            # installed package is found anyway, and site-packages must stay after stdlib)
            environment["PYTHONPATH"] = os.pathsep.join(
                [str(package_root), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "virtualize._helper",
                    str(theirs.fileno()),
                    str(os.getpid()),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=environment,
                start_new_session=True,  # a Ctrl-C in the terminal is the user's, not the helper's
            )
        finally:
            theirs.close()
        self.connection = Connection(ours.detach())
        self.pid = os.getpid()

    def call(self, request: Any, timeout: float, *, url: str, library: str) -> Any:
        try:
            self.connection.send(request)
            if not self.connection.poll(timeout):
                self.stop()
                raise InvalidFileError(
                    f"{library} did not finish reading the file's metadata in {timeout:g} s "
                    "and was stopped",
                    url=url,
                    hint="The file is probably damaged; if it is only large, raise "
                    "VIRTUALIZE_METADATA_TIMEOUT",
                )
            return self.connection.recv()
        except (EOFError, OSError) as error:
            code = self.process.wait()
            raise InvalidFileError(
                f"{library} crashed reading the file's metadata ({_death(code)})",
                url=url,
                hint=_HINT_CRASH,
            ) from error

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.process.poll() is None

    def stop(self) -> None:
        if self.pid != os.getpid():
            return  # a fork's copy: the helper belongs to the parent
        self.connection.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def _on_site_path(folder: Path) -> bool:
    """Whether ``folder`` is a site-packages folder every interpreter of this environment
    searches."""
    import site

    folders = [*site.getsitepackages(), site.getusersitepackages()]
    return any(Path(entry).resolve() == folder for entry in folders if entry)


def _death(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class _Launcher:
    """Starts helpers from one thread that lives as long as the process: a helper asks the
    kernel to stop it when the thread that started it ends (so that a killed caller leaves
    no helper looping on a damaged file), and a caller's own thread may end first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: queue.SimpleQueue[Future[_Helper]] = queue.SimpleQueue()
        self.pid = -1

    def start(self) -> _Helper:
        with self.lock:
            if self.pid != os.getpid():  # first use, or a fork, which has no such thread
                self.requests = queue.SimpleQueue()
                threading.Thread(target=self._run, name="virtualize-helpers", daemon=True).start()
                self.pid = os.getpid()
        started: Future[_Helper] = Future()
        self.requests.put(started)
        return started.result()

    def _run(self) -> None:
        requests = self.requests
        while True:
            started = requests.get()
            try:
                started.set_result(_Helper())
            except BaseException as error:
                started.set_exception(error)


_launcher = _Launcher()


class _Pool:
    """Idle helpers, and a limit on how many run at once."""

    def __init__(self) -> None:
        self.limit = max(2, os.cpu_count() or 2)
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(self.limit)
        self.idle: list[_Helper] = []
        self.unavailable: str | None = None

    def acquire(self) -> _Helper | None:
        """A helper, or None when none can be started here (said once, as a warning)."""
        self.slots.acquire()
        with self.lock:
            while self.idle:
                helper = self.idle.pop()
                if helper.alive():
                    return helper
            if self.unavailable is not None:
                self.slots.release()
                return None
        try:
            return _launcher.start()
        except OSError as error:
            with self.lock:
                self.unavailable = f"{type(error).__name__}: {error}"
            self.slots.release()
            warnings.warn(
                "virtualize can't start a helper process here "
                f"({self.unavailable}): GRIB and h5py metadata are read in this process, "
                "where a damaged file can crash it. Set VIRTUALIZE_ISOLATION=off to say so "
                "and silence this",
                RuntimeWarning,
                stacklevel=3,
            )
            return None

    def release(self, helper: _Helper, healthy: bool) -> None:
        with self.lock:
            if healthy and helper.alive():
                self.idle.append(helper)
            else:
                helper.stop()
        self.slots.release()

    def close(self) -> None:
        with self.lock:
            helpers, self.idle = self.idle, []
        for helper in helpers:
            helper.stop()


_pool = _Pool()
atexit.register(_pool.close)


class _Records(logging.Handler):
    """The log records of one call, to be handled again by the caller's loggers."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None  # arguments may not pickle
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)


def _stop_with(parent: int) -> None:
    """Have Linux kill this process when the thread that started it ends."""
    if sys.platform != "linux":
        return  # elsewhere a helper ends when its socket closes, after its current call
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the request was made
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def serve(descriptor: int, parent: int) -> None:
    """The helper's loop: answer each request on the socket until it closes."""
    _stop_with(parent)
    connection = Connection(descriptor)
    records = _Records()
    logging.getLogger().addHandler(records)
    while True:
        try:
            function, args = connection.recv()
        except EOFError:
            return
        records.records = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                reply: tuple[str, Any, Any, Any] = ("return", function(*args), [], records.records)
            except Exception as error:
                if not hasattr(error, "url"):  # not ours: a bug, shown where it happened
                    error.add_note("In virtualize's helper process:\n" + traceback.format_exc())
                reply = ("raise", error, [], records.records)
        reply[2].extend((str(w.message), w.category) for w in caught)
        try:
            connection.send(reply)
        except Exception as error:  # the result or the error does not pickle: a bug
            connection.send(
                (
                    "raise",
                    RuntimeError(f"can't send back {type(reply[1]).__name__}: {error}"),
                    [],
                    [],
                )
            )
