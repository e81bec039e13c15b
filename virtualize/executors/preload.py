"""What a process-pool worker needs before its first task, imported once by the forkserver.

Workers fork from a server process that imported this module, so none of them pays for it
again. Importing :mod:`virtualize` is not enough: the HDF5 fast path and h5py are imported on
first use, and xarray imports its duck-array modules (dask's, about half a second) the first
time it builds a variable.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

import virtualize.parsers.hdf_fast  # noqa: F401  (imports virtualize too)

__all__ = ["warm"]


def warm() -> None:
    """Import everything a first task would import on its own."""
    import h5py  # noqa: F401

    # xarray checks each new variable against dask, cupy, ... arrays, importing them lazily
    xr.Variable(("x",), np.zeros(1)).copy()


warm()
