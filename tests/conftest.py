"""Session-wide set-up for the test suite."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np
import pytest

# Tests import cfgrib (and so ecCodes) directly: load pyproj first, as virtualize._eccodes
# explains, or a worker that also opens GeoTIFFs aborts when it exits.
with contextlib.suppress(ImportError):
    import pyproj  # noqa: F401

# netCDF4's wheel and hdf5plugin each bundle a Blosc filter library. Once netCDF4 has written a
# file, hdf5plugin's Blosc filter fails in the same process ("error during user callback")
# unless it was used first, which binds its own symbols. Tests write Blosc files with h5py
# after netCDF4 tests ran in the same worker, so use hdf5plugin's Blosc once up front.
with tempfile.TemporaryDirectory() as _folder, h5py.File(Path(_folder) / "blosc.h5", "w") as _f:
    _f.create_dataset("x", data=np.arange(1024.0), chunks=(256,), **hdf5plugin.Blosc())


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[str]:
    """An S3-compatible server (moto) on 127.0.0.1 for one test: credentials in the
    environment, the test module's ``BUCKET`` created, stopped when the test ends."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(name, value)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=request.module.BUCKET)
        yield endpoint
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """List the network faults each test of test_network_faults.py injected and survived
    (recorded as the ``network_faults`` property, which also crosses from xdist workers)."""
    lines = []
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", None) != "call":
                continue
            for name, value in getattr(report, "user_properties", ()):
                if name == "network_faults":
                    lines.append(f"{report.nodeid.rpartition('::')[2]} [{outcome}]: {value}")
    if lines:
        terminalreporter.write_sep("-", "network faults injected (and survived, if passed)")
        for line in sorted(lines):
            terminalreporter.write_line(line)
