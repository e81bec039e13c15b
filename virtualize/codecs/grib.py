"""A zarr v3 codec that decodes a GRIB message exactly as cfgrib reads it.

The GRIB parser makes each GRIB message (the bytes from ``GRIB`` to ``7777``) one chunk of an
array whose chunk shape is ``(1, ..., 1, *field)``: the field is ``(Ny, Nx)`` for grids cfgrib
lays out in two dimensions (regular, rotated, Lambert, polar stereographic, ...) and
``(numberOfPoints,)`` for the others (reduced Gaussian, unstructured, ...).
:class:`GRIBCodec` (``virtualize.grib``) turns the message back into that field with ecCodes,
following cfgrib's ``OnDiskArray`` step by step, so the values equal cfgrib's bit for bit:

1. set ``missingValue`` to cfgrib's indicator (the largest float32), so that points missing
   from the bitmap come out as that number;
2. read ``values`` as float64, in the order the message stores them (cfgrib does not undo
   ``iScansNegatively``, ``jScansPositively`` or ``jPointsAreConsecutive``; neither does this);
3. for a two-dimensional field with ``alternativeRowScanning``, reverse every other row;
4. cast to the array's data type (float32 unless the parser chose otherwise);
5. replace the indicator with NaN.

A GRIB 2 message may hold several fields (sections 2 to 7 repeated). cfgrib reads field ``k``
of such a message with ecCodes' multi-field support; the codec's ``field`` option rebuilds that
field as ecCodes does (sections 0 and 1, the latest sections 2 to 7 seen up to the field's
section 7, an inherited bitmap in place of indicator 254) and decodes it.

The codec only decodes: GRIB packing (simple, complex, JPEG 2000, CCSDS, ...) is lossy and
depends on parameters no zarr array holds, so writing raises :class:`NotImplementedError`.
"""

from __future__ import annotations

import asyncio
import math
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import JSON, parse_named_configuration

__all__ = ["MISSING_VALUE_INDICATOR", "GRIBCodec", "decode_message", "message_field"]

#: cfgrib's ``MISSING_VAUE_INDICATOR``: what ecCodes is told to return for missing points.
MISSING_VALUE_INDICATOR = float(np.finfo(np.float32).max)

_END = b"7777"
_BITMAP_PREVIOUSLY_DEFINED = 254


def _eccodes() -> Any:
    from virtualize._eccodes import eccodes

    return eccodes()


def message_field(message: bytes, field: int) -> bytes:
    """The single-field GRIB 2 message ecCodes' multi-field mode builds for field ``field``.

    Parameters
    ----------
    message
        One whole GRIB message.
    field
        The field's position in the message, from 0.

    Returns
    -------
    bytes
        The message itself for field 0 (cfgrib reads it without multi-field support), else
        sections 0 and 1, the latest sections 2 to 7 up to the field's section 7 and ``7777``,
        with the total length in section 0 rewritten.

    Raises
    ------
    ValueError
        If the message is not GRIB 2, is malformed or has fewer fields.
    """
    if field == 0:
        return message
    if len(message) < 16 or message[7] != 2:
        raise ValueError(f"field {field} asked of a GRIB message that is not GRIB 2")
    sections: dict[int, bytes] = {0: message[:16]}
    bitmap: bytes | None = None
    seen = 0
    position = 16
    while position + 4 <= len(message) and message[position : position + 4] != _END:
        if position + 5 > len(message):
            break
        length = struct.unpack(">I", message[position : position + 4])[0]
        number = message[position + 4]
        if length < 5 or position + length > len(message) or not 1 <= number <= 7:
            raise ValueError(f"malformed GRIB 2 section at byte {position} of the message")
        section = message[position : position + length]
        position += length
        if number == 6:
            if section[5] == _BITMAP_PREVIOUSLY_DEFINED:
                if bitmap is None:
                    raise ValueError("a GRIB 2 field inherits a bitmap no earlier field defines")
                section = bitmap
            else:
                bitmap = section
        sections[number] = section
        if number == 7:
            if seen == field:
                body = b"".join(sections[n] for n in range(8) if n in sections) + _END
                return body[:8] + struct.pack(">Q", len(body)) + body[16:]
            seen += 1
    raise ValueError(f"the GRIB message has {seen} field(s); field {field} was asked for")


def decode_message(
    message: bytes,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    *,
    field: int = 0,
) -> np.ndarray:
    """Decode one GRIB message into an array of ``shape``, as cfgrib's ``OnDiskArray`` does.

    Parameters
    ----------
    message
        The whole message, ``GRIB`` to ``7777``.
    shape
        The chunk's shape; its size must be the field's number of points. When its last two
        axes are a field of several rows (``shape[-2] > 1``), rows are the field's rows for
        ``alternativeRowScanning``.
    dtype
        A floating-point type; values are cast to it after decoding in float64.
    field
        Which field of a multi-field GRIB 2 message to decode.

    Returns
    -------
    numpy.ndarray
        The values, NaN where the bitmap says missing.

    Raises
    ------
    ValueError
        If ``message`` is not a complete GRIB message, ecCodes cannot decode it, or its number
        of points does not fit ``shape``.
    """
    data = bytes(message)
    if not data.startswith(b"GRIB") or not data.endswith(_END):
        head = data[:4]
        raise ValueError(
            f"not a GRIB message: {len(data)} bytes starting {head!r}, "
            f"ending {data[-4:]!r} (expected b'GRIB' ... b'7777')"
        )
    if dtype.kind != "f":
        raise ValueError(f"GRIB values decode to floating point, not {dtype}")
    data = message_field(data, field)
    eccodes = _eccodes()
    try:
        handle = eccodes.codes_new_from_message(data)
    except eccodes.GribInternalError as error:
        raise ValueError(f"ecCodes cannot read the GRIB message: {error}") from error
    try:
        eccodes.codes_set(handle, "missingValue", MISSING_VALUE_INDICATOR)
        bits = _get_long(eccodes, handle, "bitsPerValue")
        if not 0 <= bits <= _MAX_BITS_PER_VALUE:
            # ecCodes' bit readers assert on such a width and abort the process
            raise ValueError(
                f"the GRIB message declares {bits} bits per value (at most "
                f"{_MAX_BITS_PER_VALUE}): it is damaged"
            )
        points = _get_long(eccodes, handle, "numberOfDataPoints")
        coded = _get_long(eccodes, handle, "numberOfValues")
        if points and coded > points:
            # ecCodes allocates for the declared count and aborts when that fails
            raise ValueError(
                f"the GRIB message declares {coded} packed values for {points} points: "
                "it is damaged"
            )
        values = eccodes.codes_get_double_array(handle, "values")
        alternative = _get_long(eccodes, handle, "alternativeRowScanning")
    except eccodes.GribInternalError as error:
        raise ValueError(f"ecCodes cannot decode the GRIB message's values: {error}") from error
    finally:
        eccodes.codes_release(handle)
    size = math.prod(shape)
    if values.size != size:
        raise ValueError(
            f"the GRIB message holds {values.size} values; the chunk {shape} wants {size}"
        )
    if alternative and len(shape) >= 2 and shape[-2] > 1:
        rows = values.reshape(shape[-2:]).copy()
        rows[1::2, :] = rows[1::2, ::-1]
        values = rows.reshape(-1)
    out = values.astype(dtype)
    out[out == MISSING_VALUE_INDICATOR] = np.nan
    return out.reshape(shape)


#: The widest packed value of any GRIB packing (IEEE packing stores 64-bit floats).
_MAX_BITS_PER_VALUE = 64


def _get_long(eccodes: Any, handle: int, key: str) -> int:
    try:
        return int(eccodes.codes_get_long(handle, key))
    except eccodes.KeyValueNotFoundError:
        return 0


@dataclass(frozen=True)
class GRIBCodec(ArrayBytesCodec):
    """Decode a GRIB message (GRIB 1 or 2, any packing ecCodes reads) into one chunk.

    See the module's description for the exact steps, which are cfgrib's.

    Parameters
    ----------
    field
        Which field of a multi-field GRIB 2 message the array holds (0, the default, for the
        first and for every single-field message).
    """

    is_fixed_size = False
    codec_name: ClassVar[str] = "virtualize.grib"

    field: int = 0

    def __init__(self, *, field: int = 0) -> None:
        if isinstance(field, bool) or int(field) < 0:
            raise ValueError(f"field must be a non-negative integer, got {field!r}")
        object.__setattr__(self, "field", int(field))

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(
            data, cls.codec_name, require_configuration=False
        )
        return cls(**(configuration or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        return {"name": self.codec_name, "configuration": self.configuration()}

    def configuration(self) -> dict[str, JSON]:
        """The codec's JSON configuration (``field`` only when not 0)."""
        return {"field": self.field} if self.field else {}

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        values = decode_message(
            chunk_bytes.to_bytes(),
            tuple(chunk_spec.shape),
            chunk_spec.dtype.to_native_dtype(),
            field=self.field,
        )
        return chunk_spec.prototype.nd_buffer.from_numpy_array(values)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        raise NotImplementedError(
            f"{self.codec_name} only decodes: virtualize cannot write GRIB messages"
        )

    def compute_encoded_size(self, _input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable-size output, like zarr's own compressors
