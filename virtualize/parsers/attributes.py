"""Turning a format's attribute values into zarr attributes that xarray decodes as the format.

Zarr attributes are JSON. numpy scalars become Python numbers, arrays become lists (a
one-element array becomes its element, as netCDF4-python returns it), byte strings are decoded,
and ``_FillValue`` is written in xarray's encoded form (base64 for floats) so that
``xr.open_zarr`` masks exactly what ``xr.open_dataset`` masks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from xarray.backends.zarr import FillValueCoder

__all__ = ["encode_fill_value", "to_json_value"]


def to_json_value(value: Any) -> Any:
    """A JSON-serialisable form of an attribute value, or ``None`` to leave it out."""
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O" or value.dtype.kind in "SU":
            items = [to_json_value(v) for v in value.ravel().tolist()]
            return items[0] if len(items) == 1 else items
        if value.dtype.kind not in "biufc":
            return None
        if value.size == 1:
            return to_json_value(value.reshape(()).item())
        return [to_json_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return to_json_value(value.item())
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    return None


def encode_fill_value(value: Any, dtype: np.dtype[Any]) -> Any:
    """``_FillValue`` as xarray writes it to zarr attributes for an array of ``dtype``."""
    scalar = np.asarray(value).reshape(-1)[0] if np.ndim(value) else value
    if isinstance(scalar, np.generic):
        scalar = scalar.item()
    if dtype.kind == "S" and isinstance(scalar, str):
        scalar = scalar.encode()
    if dtype.kind in "iu" and isinstance(scalar, float) and math.isnan(scalar):
        return None
    return FillValueCoder.encode(scalar, dtype)
