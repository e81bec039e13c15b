"""The demo behind `make demo`: ingest an archive into Icechunk, append to it, read it back.

It writes 72 hourly netCDF4 files (three variables on a lat/lon grid, each with a different
encoding: zlib+shuffle, packed int16, fletcher32), then, as a user would day after day:

1. ingests the first 48 files into a new local Icechunk repository (``vz.ingest``, one commit
   per batch of 12 files);
2. ingests the whole archive again: the 48 files already in the repository are skipped and
   the 24 new ones are appended;
3. opens the repository with plain ``xr.open_zarr``, prints it, and checks every variable
   against ``xr.open_mfdataset`` of the same files;
4. reads the repository as it was after the first run (time travel to that snapshot);
5. prints the ingest log and runs ``verify``, which reads a sample of chunks through the
   repository and through h5py from the source files.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from obstore.store import LocalStore

import virtualize as vz
from virtualize.ingest import ingest_history, open_repository
from virtualize.verify import verify_repository

DEMO = Path(__file__).resolve().parents[1] / ".demo"
ARCHIVE = DEMO / "archive"
REPOSITORY = DEMO / "repository"
HOURS = 72
FIRST_RUN = 48


def write_archive(folder: Path) -> list[Path]:
    """Write one netCDF4 file per hour of synthetic weather on a 1-degree grid."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    lat = np.arange(-30.0, 30.5, 1.0)
    lon = np.arange(0.0, 90.0, 1.0)
    rng = np.random.default_rng(42)
    paths = []
    for hour, stamp in enumerate(pd.date_range("2024-06-01", periods=HOURS, freq="h")):
        shape = (1, lat.size, lon.size)
        temperature = 288 + 10 * np.cos(np.deg2rad(lat))[None, :, None] + rng.normal(0, 1, shape)
        pressure = 101325 + rng.normal(0, 300, shape)
        humidity = np.clip(rng.normal(0.6, 0.2, shape), 0, 1)
        humidity[0, :3, :3] = np.nan
        dataset = xr.Dataset(
            {
                "t2m": (("time", "lat", "lon"), temperature.astype("f4"), {"units": "K"}),
                "sp": (("time", "lat", "lon"), pressure, {"units": "Pa"}),
                "rh": (("time", "lat", "lon"), humidity.astype("f4"), {"units": "1"}),
            },
            coords={"time": [stamp], "lat": lat, "lon": lon},
            attrs={"source": "virtualize demo", "hour": hour},
        )
        path = folder / f"weather_{stamp:%Y%m%d%H}.nc"
        dataset.to_netcdf(
            path,
            engine="netcdf4",
            encoding={
                "t2m": {"zlib": True, "shuffle": True, "chunksizes": (1, 31, 45)},
                "sp": {
                    "dtype": "int16",
                    "scale_factor": 2.0,
                    "add_offset": 101325.0,
                    "_FillValue": -32767,
                },
                "rh": {"fletcher32": True, "zlib": True, "_FillValue": np.nan},
                "time": {"units": "hours since 2024-01-01", "dtype": "int64"},
            },
        )
        paths.append(path)
    return paths


def main() -> int:
    try:
        import icechunk

        icechunk.set_logs_filter("error")  # its warnings about local storage, not ours
    except (ImportError, AttributeError):
        pass
    paths = write_archive(ARCHIVE)
    shutil.rmtree(REPOSITORY, ignore_errors=True)
    print(f"wrote {len(paths)} hourly netCDF4 files to {ARCHIVE}\n")
    registry = vz.ObjectStoreRegistry({ARCHIVE.as_uri() + "/": LocalStore(ARCHIVE)})

    first = vz.ingest(
        [str(p) for p in paths[:FIRST_RUN]],
        str(REPOSITORY),
        concat_dim="time",
        registry=registry,
        batch_size=12,
        progress=False,
    )
    print("first run:", first, "\n", sep="\n")
    second = vz.ingest(
        str(ARCHIVE / "weather_*.nc"),
        str(REPOSITORY),
        concat_dim="time",
        registry=registry,
        batch_size=12,
        progress=False,
    )
    print("second run:", second, "\n", sep="\n")

    repository, _ = open_repository(str(REPOSITORY), registry)
    started = time.perf_counter()
    store = repository.readonly_session("main").store
    cube = xr.open_zarr(store, consolidated=False, zarr_format=3)
    print(f"opened the repository with xr.open_zarr in {time.perf_counter() - started:.2f} s:")
    print(cube, "\n")

    expected = xr.open_mfdataset(paths, combine="nested", concat_dim="time").load()
    loaded = cube.load()
    mismatches = [name for name in expected.variables if not loaded[name].identical(expected[name])]

    snapshot = first.commits[-1]
    then = xr.open_zarr(
        repository.readonly_session(snapshot_id=snapshot).store, consolidated=False, zarr_format=3
    )
    print(
        f"time travel to snapshot {snapshot} (the end of the first run): "
        f"{then.sizes['time']} hours, {then.time.values[0]} .. {then.time.values[-1]}"
    )
    if not then.load().identical(expected.isel(time=slice(0, FIRST_RUN))):
        mismatches.append("first snapshot")
    print()

    print("ingest log (newest first):")
    for commit in ingest_history(str(REPOSITORY)):
        print(f"  {commit.snapshot_id}  {commit.message}")
    print()

    report = verify_repository(str(REPOSITORY), registry=registry, sample=40, seed=0)
    print(report.to_text(), "\n")

    if mismatches or not report.ok:
        print(f"MISMATCH: {mismatches or 'verify failed'}")
        return 1
    print(
        f"every variable matched: the repository ({len(paths)} files in "
        f"{len(first.commits) + len(second.commits)} commits) reads exactly as "
        "xr.open_mfdataset of the files, and verify found every sampled chunk equal"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
