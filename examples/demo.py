"""The demo behind `make demo`: a small netCDF4 archive, opened virtually and checked.

It writes 24 hourly netCDF4 files (three variables on a lat/lon grid, each with a different
encoding: zlib+shuffle, packed int16, fletcher32), opens every file virtually and combines
them into one virtual datacube with ``open_virtual_mfdataset``, reads it back through ManifestStore with plain xarray, and checks
every variable against ``xr.open_dataset`` / ``xr.open_mfdataset`` of the same files.
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

ARCHIVE = Path(__file__).resolve().parents[1] / ".demo" / "archive"
HOURS = 24


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
    paths = write_archive(ARCHIVE)
    print(f"wrote {len(paths)} netCDF4 files to {ARCHIVE}")
    registry = vz.ObjectStoreRegistry({ARCHIVE.as_uri() + "/": LocalStore(ARCHIVE)})

    print(vz.open_virtual_dataset(paths[0], registry=registry), "\n")

    mismatches = []
    for path in paths:
        store = vz.parsers.HDFParser()(str(path), registry)
        got = xr.open_zarr(store, consolidated=False, zarr_format=3).load()
        expected = xr.open_dataset(path).load()
        for name in expected.variables:
            if not got[name].identical(expected[name]):
                mismatches.append(f"{path.name}:{name}")

    started = time.perf_counter()
    cube = vz.open_virtual_mfdataset(str(ARCHIVE / "weather_*.nc"), registry=registry)
    elapsed = time.perf_counter() - started
    print(f"opened and combined {len(paths)} files virtually in {elapsed:.2f} s")
    print("the archive as one virtual datacube:")
    print(cube, "\n")
    print(f"{cube.virtualize.nrefs} chunk references held in {cube.virtualize.nbytes:,} bytes")
    combined = xr.open_zarr(
        cube.virtualize.to_manifest_store(registry), consolidated=False, zarr_format=3
    ).load()
    expected = xr.open_mfdataset(paths, combine="nested", concat_dim="time").load()
    for name in expected.variables:
        if not combined[name].identical(expected[name]):
            mismatches.append(f"combined:{name}")

    checked = len(paths) * len(expected.variables) + len(expected.variables)
    if mismatches:
        print(f"MISMATCH in {len(mismatches)} of {checked} variables: {mismatches}")
        return 1
    print(
        f"every variable matched: {checked} variables ({len(paths)} files and the combined "
        "datacube) read through ManifestStore equal xr.open_dataset exactly"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
