"""Write the benchmark's netCDF4 file: one variable of many small zlib + shuffle chunks.

The file is written once into ``.bench/`` and reused: a sidecar ``<file>.json`` records
the parameters and the file's size, and a file whose sidecar does not match is rewritten.

Usage
-----
``python benchmarks/generate.py PATH [--rows N]``

Needs the ``netCDF4`` library; :mod:`benchmarks.run` finds an interpreter that has it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

WIDTH = 16
SLAB_ROWS = 50_000


def spec(rows: int) -> dict[str, Any]:
    """The parameters that identify a generated file."""
    return {
        "variable": "data",
        "shape": [rows, WIDTH],
        "chunks": [1, WIDTH],
        "dtype": "float32",
        "filters": ["shuffle", "zlib(4)"],
        "n_chunks": rows,
        "writer": "netCDF4",
    }


def sidecar(path: Path) -> Path:
    """Where the parameters of ``path`` are recorded."""
    return path.with_name(path.name + ".json")


def is_current(path: Path, rows: int) -> bool:
    """Whether ``path`` was generated with these parameters and has not changed since."""
    marker = sidecar(path)
    if not (path.exists() and marker.exists()):
        return False
    recorded = json.loads(marker.read_text())
    return bool(recorded.get("spec") == spec(rows) and recorded.get("size") == path.stat().st_size)


def write(path: Path, rows: int) -> dict[str, Any]:
    """Write the file (through a temporary name, so an interrupted run leaves no stale file).

    Returns
    -------
    dict
        What the sidecar records: the spec, the file's size and how long writing took.
    """
    import netCDF4

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    with netCDF4.Dataset(partial, "w", format="NETCDF4") as nc:
        nc.createDimension("time", rows)
        nc.createDimension("x", WIDTH)
        times = nc.createVariable("time", "f8", ("time",))
        times.units = "seconds since 2000-01-01"
        times[:] = np.arange(rows, dtype="f8")
        data = nc.createVariable(
            "data",
            "f4",
            ("time", "x"),
            zlib=True,
            complevel=4,
            shuffle=True,
            chunksizes=(1, WIDTH),
        )
        data.long_name = "smooth signal with noise"
        for start_row in range(0, rows, SLAB_ROWS):
            stop_row = min(start_row + SLAB_ROWS, rows)
            base = np.sin(np.arange(start_row, stop_row, dtype="f4") / 1000.0)
            noise = rng.normal(0.0, 0.01, (stop_row - start_row, WIDTH)).astype("f4")
            data[start_row:stop_row, :] = base[:, None] + noise
    os.replace(partial, path)
    record = {
        "spec": spec(rows),
        "size": path.stat().st_size,
        "write_seconds": round(time.perf_counter() - start, 2),
        "netCDF4": netCDF4.__version__,
        "hdf5": netCDF4.__hdf5libversion__,
        "netcdf_c": netCDF4.__netcdf4libversion__,
    }
    sidecar(path).write_text(json.dumps(record, indent=2))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    if is_current(args.path, args.rows):
        print(f"reusing {args.path}")
        return
    record = write(args.path, args.rows)
    print(f"wrote {args.path}: {record['size'] / 1e6:.1f} MB in {record['write_seconds']} s")


if __name__ == "__main__":
    main()
