"""CF packing decoded inside zarr, for packing that JSON attributes can't carry exactly.

xarray decodes ``scale_factor``/``add_offset`` into the float type *of those attributes*: a
netCDF file with float32 factors decodes to float32. Zarr attributes are JSON, where every
number reads back as a Python float (float64), so the same variable read from zarr decodes to
float64 with different rounding. For such variables the parsers put this codec in the array's
codec chain instead: it masks the fill values and applies the factors in exactly the types and
order xarray uses, and the array's data type is the decoded float type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from zarr.abc.codec import ArrayArrayCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import NDBuffer
from zarr.core.common import JSON, parse_named_configuration
from zarr.core.dtype import get_data_type_from_native_dtype

__all__ = ["CFPackingCodec"]

CODEC_NAME = "virtualize.cf_packing"

TypedScalar = tuple[str, Any]  # (numpy dtype name, value)


def _typed(value: TypedScalar | None) -> Any:
    if value is None:
        return None
    dtype, number = value
    return np.dtype(dtype).type(number)


def _as_typed(value: Any) -> TypedScalar | None:
    if value is None:
        return None
    scalar = np.asarray(value).reshape(-1)[0]
    return (scalar.dtype.name, scalar.item())


@dataclass(frozen=True)
class CFPackingCodec(ArrayArrayCodec):
    """Decode CF-packed integers (mask, then ``* scale_factor + add_offset``) as xarray does.

    Parameters
    ----------
    encoded_dtype
        The stored data type, e.g. ``"int16"``.
    decoded_dtype
        The decoded float type, e.g. ``"float32"``.
    scale_factor, add_offset
        ``(dtype name, value)`` pairs, or None.
    fill_values
        ``(dtype name, value)`` pairs of the encoded values that mean "missing"
        (``_FillValue`` and ``missing_value``).
    reinterpret_as
        For ``_Unsigned``: the integer type the stored integers are cast to before masking
        (``"uint16"`` for int16 with ``_Unsigned = "true"``).
    """

    is_fixed_size = True

    encoded_dtype: str
    decoded_dtype: str
    scale_factor: TypedScalar | None
    add_offset: TypedScalar | None
    fill_values: tuple[TypedScalar, ...]
    reinterpret_as: str | None

    def __init__(
        self,
        *,
        encoded_dtype: str,
        decoded_dtype: str,
        scale_factor: Any = None,
        add_offset: Any = None,
        fill_values: Any = (),
        reinterpret_as: str | None = None,
    ) -> None:
        object.__setattr__(self, "encoded_dtype", np.dtype(encoded_dtype).name)
        object.__setattr__(self, "decoded_dtype", np.dtype(decoded_dtype).name)
        object.__setattr__(self, "scale_factor", _pair(scale_factor))
        object.__setattr__(self, "add_offset", _pair(add_offset))
        object.__setattr__(self, "fill_values", tuple(_pair(v) for v in fill_values))
        object.__setattr__(
            self, "reinterpret_as", np.dtype(reinterpret_as).name if reinterpret_as else None
        )

    @classmethod
    def from_attributes(
        cls, encoded: np.dtype[Any], decoded: np.dtype[Any], attributes: dict[str, Any]
    ) -> CFPackingCodec:
        """Build the codec from a variable's raw (typed) CF attributes."""
        reinterpret = unsigned_view(encoded, attributes.get("_Unsigned"))
        fill_values = []
        for name in ("_FillValue", "missing_value"):
            if name in attributes:
                for value in np.ravel(np.asarray(attributes[name])):
                    if np.issubdtype(np.asarray(value).dtype, np.floating) and np.isnan(value):
                        continue
                    if name == "_FillValue" and reinterpret is not None:
                        # xarray converts only _FillValue to the reinterpreted type
                        value = np.array(value, dtype=encoded).view(reinterpret).reshape(())[()]
                        if encoded.kind == "u":
                            value = reinterpret.type(np.array(attributes[name]).reshape(-1)[0])
                    fill_values.append(_as_typed(value))
        return cls(
            encoded_dtype=encoded.name,
            decoded_dtype=decoded.name,
            scale_factor=_as_typed(attributes.get("scale_factor")),
            add_offset=_as_typed(attributes.get("add_offset")),
            fill_values=tuple(v for v in fill_values if v is not None),
            reinterpret_as=reinterpret.name if reinterpret is not None else None,
        )

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, CODEC_NAME)
        return cls(**configuration)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        return {
            "name": CODEC_NAME,
            "configuration": {
                "encoded_dtype": self.encoded_dtype,
                "decoded_dtype": self.decoded_dtype,
                "scale_factor": list(self.scale_factor) if self.scale_factor else None,
                "add_offset": list(self.add_offset) if self.add_offset else None,
                "fill_values": [list(v) for v in self.fill_values],
                "reinterpret_as": self.reinterpret_as,
            },
        }

    def resolve_metadata(self, chunk_spec: ArraySpec) -> ArraySpec:
        encoded = np.dtype(self.encoded_dtype)
        fill = _typed(self.fill_values[0]) if self.fill_values else encoded.type(0)
        return ArraySpec(
            shape=chunk_spec.shape,
            dtype=get_data_type_from_native_dtype(encoded),
            fill_value=np.asarray(fill).astype(encoded).item(),
            config=chunk_spec.config,
            prototype=chunk_spec.prototype,
        )

    def decode_array(self, data: np.ndarray) -> np.ndarray:
        """Decode stored values; the same steps, types and order as xarray's CF coders."""
        dtype = np.dtype(self.decoded_dtype)
        if self.reinterpret_as is not None:
            data = np.asarray(data, dtype=self.reinterpret_as)
        if self.fill_values:
            data = np.asarray(data, dtype=dtype)
            condition = np.zeros(data.shape, dtype=bool)
            for fill in self.fill_values:
                condition |= data == _typed(fill)
            data = np.where(condition, np.nan, data)
        data = data.astype(dtype, copy=True)
        if self.scale_factor is not None:
            data *= _typed(self.scale_factor)
        if self.add_offset is not None:
            data += _typed(self.add_offset)
        return data

    def _decode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        decoded = self.decode_array(chunk_array.as_numpy_array())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(decoded)

    async def _decode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_array, chunk_spec)

    def encode_array(self, data: np.ndarray) -> np.ndarray:
        """Pack floats: the inverse of :meth:`decode_array` up to rounding; NaN becomes the
        first fill value."""
        values = np.asarray(data, dtype=np.float64)
        if self.add_offset is not None:
            values = values - float(_typed(self.add_offset))
        if self.scale_factor is not None:
            values = values / float(_typed(self.scale_factor))
        encoded = np.dtype(self.encoded_dtype)
        fill = float(_typed(self.fill_values[0])) if self.fill_values else 0.0
        values = np.where(np.isnan(values), fill, np.round(values))
        if self.reinterpret_as is not None:
            return values.astype(self.reinterpret_as).astype(encoded)
        return values.astype(encoded)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        encoded = self.encode_array(chunk_array.as_numpy_array())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(encoded)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        decoded = np.dtype(self.decoded_dtype).itemsize
        return input_byte_length // decoded * np.dtype(self.encoded_dtype).itemsize


def unsigned_view(encoded: np.dtype[Any], unsigned: Any) -> np.dtype[Any] | None:
    """The type xarray's ``_Unsigned`` handling casts ``encoded`` integers to, or None."""
    if unsigned is None:
        return None
    flag = unsigned.decode() if isinstance(unsigned, bytes | np.bytes_) else str(unsigned)
    flag = str(np.asarray(flag).reshape(-1)[0])
    if encoded.kind == "i" and flag == "true":
        return np.dtype(f"u{encoded.itemsize}")
    if encoded.kind == "u" and flag == "false":
        return np.dtype(f"i{encoded.itemsize}")
    return None


def _pair(value: Any) -> TypedScalar | None:
    if value is None:
        return None
    dtype, number = value
    return (np.dtype(dtype).name, number)
