"""How an HDF5 dataset's type becomes a zarr data type: referenced, or read and inlined.

Chunks can be referenced when their stored bytes, once the filters are undone, are the
values in a layout a zarr array-to-bytes codec decodes (numbers in either byte order,
one-byte characters). Types stored elsewhere (variable-length data lives on the HDF5 heap) or
in layouts no zarr codec reads are read with h5py at parse time and held inline, or refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from zarr.codecs import BytesCodec
from zarr.core.dtype import get_data_type_from_native_dtype

from virtualize.errors import UnsupportedFeatureError

__all__ = ["TypePlan", "plan_type"]


@dataclass(frozen=True)
class TypePlan:
    """What to do with a dataset's type.

    Parameters
    ----------
    stored
        The numpy dtype h5py reads the dataset as.
    referenceable
        Whether chunk bytes (after the filters) decode with ``serializer`` to the values.
    data_type
        The zarr data type of the virtual array.
    serializer
        The zarr array-to-bytes codec.
    fill_value
        The zarr fill value.
    attributes
        Attributes the type adds (an enum's mapping, for example).
    """

    stored: np.dtype[Any]
    referenceable: bool
    data_type: Any
    serializer: Any
    fill_value: Any
    attributes: dict[str, Any] = field(default_factory=dict)

    def inline_values(self, values: np.ndarray) -> np.ndarray:
        """Values read by h5py, converted to what ``data_type`` holds."""
        return np.asarray(values, dtype=self.data_type.to_native_dtype())


def _unsupported(url: str, name: str, reason: str) -> UnsupportedFeatureError:
    return UnsupportedFeatureError(
        f"cannot be referenced: {reason}",
        url=url,
        variable=name,
        hint=f"Pass drop_variables=[{name!r}] to open the rest of the file",
    )


def plan_type(dset: Any, *, url: str, name: str, fill_value: Any) -> TypePlan:
    """Decide how the dataset's type is represented.

    Parameters
    ----------
    dset
        The h5py dataset.
    url, name
        For error messages.
    fill_value
        The dataset's fill value as h5py reports it (already a Python scalar or bytes).

    Raises
    ------
    UnsupportedFeatureError
        If the type can be neither referenced nor inlined.
    """
    import h5py

    dtype = np.dtype(dset.dtype)
    if h5py.check_string_dtype(dtype) is not None and dtype.kind == "O":
        raise _unsupported(url, name, "variable-length strings are stored on the HDF5 heap")
    if h5py.check_vlen_dtype(dtype) is not None:
        raise _unsupported(url, name, "variable-length data is stored on the HDF5 heap")
    if h5py.check_enum_dtype(dtype) is not None:
        raise _unsupported(url, name, "enum types are not supported yet")
    if h5py.check_ref_dtype(dtype) is not None:
        raise _unsupported(url, name, "object and region references are not supported yet")
    if dtype.names is not None:
        raise _unsupported(url, name, "compound types are not supported yet")
    if dtype.kind == "S" and dtype.itemsize > 1:
        raise _unsupported(
            url, name, f"fixed-length strings of {dtype.itemsize} bytes are not supported yet"
        )
    if dtype.kind not in "biufcS" or dtype.subdtype is not None:
        raise _unsupported(url, name, f"the {dtype} data type is not supported yet")
    if dtype.itemsize == 1 or dtype.kind == "S":
        serializer = BytesCodec(endian=None)
    else:
        serializer = BytesCodec(endian="big" if dtype.byteorder == ">" else "little")
    return TypePlan(
        stored=dtype,
        referenceable=True,
        data_type=get_data_type_from_native_dtype(dtype.newbyteorder("=")),
        serializer=serializer,
        fill_value=fill_value,
    )
