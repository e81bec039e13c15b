"""netCDF-4 and CF encodings read back exactly as xr.open_dataset decodes them."""

from __future__ import annotations

from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest
from oracle import assert_virtual_equals_native


def test_missing_value_and_valid_range(tmp_path: Path) -> None:
    path = tmp_path / "missing.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 6)
        variable = nc.createVariable("v", "f4", ("x",))
        variable.missing_value = np.float32(-9999.0)
        variable.valid_range = np.array([-100, 100], dtype="f4")
        variable.set_auto_maskandscale(False)
        variable[:] = np.array([1, -9999, 3, 500, -200, 6], dtype="f4")
        counts = nc.createVariable("counts", "i2", ("x",), fill_value=np.int16(-1))
        counts.missing_value = np.array([-2, -3], dtype="i2")
        counts.set_auto_maskandscale(False)
        counts[:] = np.array([0, -1, -2, -3, 4, 5], dtype="i2")
    virtual = assert_virtual_equals_native(path)
    assert np.isnan(virtual["v"].values[1]) and np.isnan(virtual["counts"].values[2])


@pytest.mark.parametrize(
    "calendar", ["standard", "proleptic_gregorian", "noleap", "360_day", "julian"]
)
def test_cf_times_in_every_calendar(tmp_path: Path, calendar: str) -> None:
    path = tmp_path / f"time_{calendar}.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", 5)
        nc.createDimension("nv", 2)
        time = nc.createVariable("time", "f8", ("time",))
        time.units = "days since 1850-01-01 00:00:00"
        time.calendar = calendar
        time.bounds = "time_bnds"
        time[:] = np.array([0.5, 31.5, 365.0, 10000.25, 60000.0])
        bounds = nc.createVariable("time_bnds", "f8", ("time", "nv"))
        bounds[:] = np.stack([time[:] - 0.5, time[:] + 0.5], axis=1)
        nc.createVariable("t2m", "f4", ("time",))[:] = np.arange(5, dtype="f4")
    kwargs = {} if calendar in ("standard", "proleptic_gregorian") else {"use_cftime": True}
    assert_virtual_equals_native(path, **kwargs)
    assert_virtual_equals_native(path, decode_times=False)


def test_netcdf4_classic_model(tmp_path: Path) -> None:
    path = tmp_path / "classic.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF4_CLASSIC") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", 3)
        latitude = nc.createVariable("lat", "f4", ("lat",))
        latitude[:] = [10, 20, 30]
        latitude.units = "degrees_north"
        data = nc.createVariable("data", "i2", ("time", "lat"), zlib=True, fill_value=np.int16(-99))
        data.scale_factor = 0.5
        data[0:4] = np.arange(12).reshape(4, 3)
        nc.history = "written for a test"
    assert_virtual_equals_native(path)


NETCDF_ATTRIBUTES = {
    "i1": np.int8(-5),
    "u1": np.uint8(250),
    "i2": np.int16(-300),
    "u2": np.uint16(60000),
    "i4": np.int32(-70000),
    "u4": np.uint32(4_000_000_000),
    "i8": np.int64(-(2**40)),
    "u8": np.uint64(2**63 + 5),
    "f4": np.float32(1.5),
    "f8": np.float64(2.25),
    "f8_nan": np.float64(np.nan),
    "array_i4": np.array([1, 2, 3], dtype="i4"),
    "array_f8": np.array([0.5, -0.5]),
    "text": "a string with ünïcödé",
    "empty_text": "",
}


def test_attributes_of_every_netcdf_type(tmp_path: Path) -> None:
    path = tmp_path / "attributes.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 2)
        variable = nc.createVariable("v", "f4", ("x",))
        variable[:] = [1, 2]
        for name, value in NETCDF_ATTRIBUTES.items():
            variable.setncattr(name, value)
            nc.setncattr(name, value)
        nc.setncattr_string("string_list", ["one", "two"])
    assert_virtual_equals_native(path)


def test_attributes_of_hdf5_types_match_h5netcdf(tmp_path: Path) -> None:
    path = tmp_path / "hdf5_attributes.h5"
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset("x", data=np.arange(3.0))
        for name, value in NETCDF_ATTRIBUTES.items():
            dataset.attrs[name] = value
        dataset.attrs["fixed_bytes"] = np.bytes_(b"fixed")
        dataset.attrs["vlen_list"] = ["a", "bb"]
        dataset.attrs["bool"] = np.bool_(True)
        f.attrs["root"] = np.arange(4, dtype=">i2")
    assert_virtual_equals_native(path, engine="h5netcdf", native_kwargs={"phony_dims": "sort"})
