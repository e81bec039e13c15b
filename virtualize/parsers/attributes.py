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

from virtualize.codecs.cf import CFPackingCodec, unsigned_view

__all__ = ["PACKING_ATTRIBUTES", "encode_fill_value", "packing_codec", "to_json_value"]


def to_json_value(value: Any) -> Any:
    """A JSON-serialisable form of an attribute value, or ``None`` to leave it out."""
    if type(value).__name__ == "Empty":  # h5py.Empty: an attribute with no elements
        dtype = np.dtype(value.dtype)
        return "" if dtype.kind in "SUO" else []
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


#: The attributes a CF packing codec takes over from the variable.
PACKING_ATTRIBUTES = ("scale_factor", "add_offset", "_FillValue", "missing_value", "_Unsigned")


def _scalar(value: Any) -> Any:
    array = np.asarray(value)
    return array.reshape(-1)[0] if array.size == 1 else array


def packing_codec(
    raw_attributes: dict[str, Any], dtype: np.dtype[Any]
) -> tuple[CFPackingCodec, np.dtype[Any]] | None:
    """A codec for CF packing that JSON attributes would decode differently, or None.

    Packing whose ``scale_factor`` and ``add_offset`` are float64 (or absent) round-trips
    through JSON exactly and stays in the attributes, where any xarray reads it. Factors of
    another type (float32, say) decide the decoded type in xarray, and JSON can't keep that
    type: those variables get a :class:`~virtualize.codecs.CFPackingCodec`.

    Parameters
    ----------
    raw_attributes
        The variable's attributes as the format library returns them (numpy-typed).
    dtype
        The stored data type.

    Returns
    -------
    tuple or None
        The codec and the decoded data type.
    """
    from xarray.coding.variables import _choose_float_dtype

    factors: dict[str, Any] = {
        name: _scalar(raw_attributes[name])
        for name in ("scale_factor", "add_offset")
        if name in raw_attributes
    }
    if not factors or all(np.asarray(v).dtype == np.float64 for v in factors.values()):
        return None
    if dtype.kind not in "iuf":
        return None
    viewed = unsigned_view(dtype, raw_attributes.get("_Unsigned")) or dtype
    decoded = np.dtype(_choose_float_dtype(viewed, factors))
    typed: dict[str, Any] = {
        n: raw_attributes[n]
        for n in ("_FillValue", "missing_value", "_Unsigned")
        if n in raw_attributes
    }
    typed.update(factors)
    return CFPackingCodec.from_attributes(dtype, decoded, typed), decoded
