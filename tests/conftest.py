"""Session-wide set-up for the test suite."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

# netCDF4's wheel and hdf5plugin each bundle a Blosc filter library. Once netCDF4 has written a
# file, hdf5plugin's Blosc filter fails in the same process ("error during user callback")
# unless it was used first, which binds its own symbols. Tests write Blosc files with h5py
# after netCDF4 tests ran in the same worker, so use hdf5plugin's Blosc once up front.
with tempfile.TemporaryDirectory() as _folder, h5py.File(Path(_folder) / "blosc.h5", "w") as _f:
    _f.create_dataset("x", data=np.arange(1024.0), chunks=(256,), **hdf5plugin.Blosc())
