"""The helper process that runs ecCodes' and h5py's metadata work (virtualize.isolation):
a crash or a hang there is an InvalidFileError naming the file, and the caller lives on."""

from __future__ import annotations

import ctypes
import logging
import operator
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import virtualize as vz
from virtualize.errors import InvalidFileError, UnauthorizedLocationError
from virtualize.isolation import isolated

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
LAMBERT = CORPUS / "grib" / "pygrib" / "no-radius-shapeOfEarth-7.grb2"
URL = "file:///data/damaged.grb"


def test_a_crash_in_the_helper_is_an_error_naming_the_file_and_the_next_call_works() -> None:
    with pytest.raises(InvalidFileError) as caught:
        isolated(ctypes.string_at, 0, url=URL, library="ecCodes")  # reads address 0
    message = str(caught.value)
    assert URL in message and "ecCodes crashed" in message and "SIGSEGV" in message
    assert (
        isolated(os.getpid, url=URL, library="ecCodes") != os.getpid()
    )  # a new helper took the dead one's place
    print(f"\ncrash reported as: {message}")


def test_a_helper_over_its_time_limit_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTUALIZE_METADATA_TIMEOUT", "1")
    helper = isolated(os.getpid, url=URL, library="h5py")
    started = time.monotonic()
    with pytest.raises(InvalidFileError, match=r"h5py did not finish .* in 1 s") as caught:
        isolated(time.sleep, 30, url=URL, library="h5py")
    waited = time.monotonic() - started
    assert waited < 10
    assert URL in str(caught.value)
    assert not Path(f"/proc/{helper}").exists() or _is_gone(helper)
    print(f"\nstopped after {waited:.1f} s: {caught.value}")


def _is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_results_errors_warnings_and_log_records_come_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert isolated(operator.add, 2, 3, url=URL, library="h5py") == 5
    with pytest.raises(UnauthorizedLocationError):  # virtualize's errors keep their type
        isolated(vz.ObjectStoreRegistry().resolve, "s3://elsewhere/x", url=URL, library="h5py")
    with pytest.raises(ZeroDivisionError) as bug:  # and a bug shows where it happened
        isolated(operator.truediv, 1, 0, url=URL, library="h5py")
    assert "In virtualize's helper process" in "".join(getattr(bug.value, "__notes__", []))
    with pytest.warns(UserWarning, match="from the helper"):
        isolated(warnings.warn, "from the helper", UserWarning, url=URL, library="h5py")
    with caplog.at_level(logging.WARNING):
        isolated(logging.warning, "logged in the helper", url=URL, library="h5py")
    assert "logged in the helper" in caplog.text


def test_isolation_off_runs_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTUALIZE_ISOLATION", "off")
    assert isolated(os.getpid, url=URL, library="ecCodes") == os.getpid()
    monkeypatch.setenv("VIRTUALIZE_ISOLATION", "threads")
    with pytest.raises(ValueError, match="VIRTUALIZE_ISOLATION"):
        isolated(os.getpid, url=URL, library="ecCodes")


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's parent-death signal is Linux's")
def test_a_helper_does_not_outlive_a_killed_caller(tmp_path: Path) -> None:
    """A caller killed while its helper loops on a damaged file leaves no helper behind."""
    script = (
        "import os, time, sys\n"
        "from virtualize.isolation import isolated\n"
        "print(isolated(os.getpid, url='u', library='l'), flush=True)\n"
        "isolated(time.sleep, 600, url='u', library='l')\n"
    )
    caller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert caller.stdout is not None
    helper = int(caller.stdout.readline())
    assert not _is_gone(helper)
    caller.send_signal(signal.SIGKILL)
    caller.wait()
    deadline = time.monotonic() + 10
    while not _gone_or_zombie(helper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone_or_zombie(helper)


def _gone_or_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


@pytest.mark.skipif(not LAMBERT.exists(), reason="the corpus is not here")
def test_a_grib_message_that_crashes_eccodes_is_an_invalid_file(tmp_path: Path) -> None:
    """One byte of a real file's Lambert grid (its earth shape) set to 1: ecCodes' geoiterator
    then reads out of bounds and the process that called it dies."""
    data = bytearray(LAMBERT.read_bytes())
    data[57] = 1
    damaged = tmp_path / "damaged.grb2"
    damaged.write_bytes(bytes(data))
    registry = vz.ObjectStoreRegistry.for_urls([str(damaged)], quiet=True)
    with pytest.raises(InvalidFileError, match="ecCodes crashed") as caught:
        vz.open_virtual_dataset(str(damaged), registry=registry)
    assert damaged.as_uri() in str(caught.value)
    intact = tmp_path / "intact.grb2"
    intact.write_bytes(LAMBERT.read_bytes())
    assert vz.open_virtual_dataset(str(intact), registry=registry).sizes
