"""Zarr v3 codecs that decode TIFF strips and tiles exactly as tifffile does.

A TIFF segment (strip or tile) is compressed, then possibly predicted (differenced) before
compression. virtualize describes a segment as a zarr chunk with the codecs, in zarr order::

    [transpose (pixel-interleaved bands)], bytes, [tiff_predictor], [tiff_strip], [compressor]

so that decoding runs: decompress (zarr's ``numcodecs.zlib`` / ``zstd``, or
:class:`TIFFLZWCodec`, :class:`TIFFPackBitsCodec`), pad the last, short strip to a whole chunk
(:class:`TIFFStripCodec`), undo the predictor (:class:`TIFFPredictorCodec`), interpret the
bytes. JPEG (compression 7) segments are decoded and padded to whole chunks in one step,
:class:`TIFFJPEGCodec` (after ``bytes``, with no strip or predictor codec). The decoders are imagecodecs', the ones tifffile calls; none is written here.
"""

from __future__ import annotations

import asyncio
import base64
import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np
from zarr.abc.codec import BytesBytesCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer
from zarr.core.common import JSON, parse_named_configuration

__all__ = [
    "TIFFJPEGCodec",
    "TIFFLZWCodec",
    "TIFFPackBitsCodec",
    "TIFFPredictorCodec",
    "TIFFStripCodec",
    "TIFFWebPCodec",
]


def _imagecodecs() -> Any:
    import imagecodecs

    return imagecodecs


def _chunk_nbytes(chunk_spec: ArraySpec) -> int:
    """Bytes of a whole decoded chunk."""
    itemsize = chunk_spec.dtype.to_native_dtype().itemsize
    return math.prod(chunk_spec.shape) * itemsize


@dataclass(frozen=True)
class _TIFFBytesCodec(BytesBytesCodec):
    """Shared plumbing: a bytes -> bytes transform, knowing the chunk, run on a thread."""

    codec_name: ClassVar[str]
    is_fixed_size = False

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(
            data, cls.codec_name, require_configuration=False
        )
        return cls(**(configuration or {}))

    def to_dict(self) -> dict[str, JSON]:
        return {"name": self.codec_name, "configuration": self.configuration()}

    def configuration(self) -> dict[str, JSON]:
        """The codec's JSON configuration."""
        return {}

    @abstractmethod
    def decode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        """Undo the step for one chunk."""

    def encode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        """Apply the step (not needed to read virtual data)."""
        raise NotImplementedError(f"{self.codec_name} only decodes")

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer:
        decoded = self.decode_bytes(chunk_bytes.to_bytes(), chunk_spec)
        return chunk_spec.prototype.buffer.from_bytes(decoded)

    def _encode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer | None:
        encoded = self.encode_bytes(chunk_bytes.to_bytes(), chunk_spec)
        return chunk_spec.prototype.buffer.from_bytes(encoded)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    async def _encode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_bytes, chunk_spec)

    def compute_encoded_size(self, _input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable-size output, like zarr's own compressors


@dataclass(frozen=True)
class TIFFLZWCodec(_TIFFBytesCodec):
    """TIFF LZW (compression 5), new and old style, with ``imagecodecs.lzw_decode``."""

    codec_name: ClassVar[str] = "virtualize.tiff_lzw"

    def decode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        decoded = _imagecodecs().lzw_decode(data, out=_chunk_nbytes(chunk_spec))
        return bytes(decoded)

    def encode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        return bytes(_imagecodecs().lzw_encode(data))


@dataclass(frozen=True)
class TIFFPackBitsCodec(_TIFFBytesCodec):
    """PackBits run-length coding (compression 32773), ``imagecodecs.packbits_decode``."""

    codec_name: ClassVar[str] = "virtualize.tiff_packbits"

    def decode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        return bytes(_imagecodecs().packbits_decode(data))

    def encode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        return bytes(_imagecodecs().packbits_encode(data))


@dataclass(frozen=True)
class TIFFStripCodec(_TIFFBytesCodec):
    """Fit a decompressed strip to a whole chunk.

    The last strip of an image whose height is not a multiple of ``RowsPerStrip`` holds only
    the image's remaining rows; zarr wants whole chunks, so it is padded with zeros (rows
    outside the image, which zarr never shows). Like tifffile, bytes past the chunk (some
    writers store whole strips, some decompressors overrun) are dropped, and a strip short
    by a part of a row is refused.

    Parameters
    ----------
    rows
        Rows per strip (the chunk's height).
    """

    codec_name: ClassVar[str] = "virtualize.tiff_strip"
    is_fixed_size = True

    rows: int

    def __init__(self, *, rows: int) -> None:
        if int(rows) < 1:
            raise ValueError(f"rows must be positive, got {rows!r}")
        object.__setattr__(self, "rows", int(rows))

    def configuration(self) -> dict[str, JSON]:
        return {"rows": self.rows}

    def decode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        size = _chunk_nbytes(chunk_spec)
        if len(data) >= size:
            return data[:size]
        row = size // self.rows
        if row == 0 or len(data) % row:
            raise ValueError(
                f"a TIFF strip of {len(data)} bytes is not a whole number of {row}-byte rows"
            )
        return data + bytes(size - len(data))

    def encode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        return data


@dataclass(frozen=True)
class TIFFPredictorCodec(_TIFFBytesCodec):
    """Undo TIFF's horizontal (2) or floating-point (3) predictor.

    Like tifffile: the chunk's bytes are read as ``(rows, width, samples)`` values in the
    file's byte order (predictor 2) or as the MSB-first byte planes of native values
    (predictor 3), undone along the width with ``imagecodecs.delta_decode`` /
    ``floatpred_decode``, and returned in native (little-endian) byte order, so the
    ``bytes`` codec before this one must say ``endian: little``.

    Parameters
    ----------
    predictor
        2 (horizontal differencing, integers) or 3 (floating point).
    byteorder
        The file's byte order, ``"<"`` or ``">"`` (used by predictor 2).
    samples
        Samples per pixel interleaved in the chunk's last axis (1 for one band or planar).
    """

    codec_name: ClassVar[str] = "virtualize.tiff_predictor"
    is_fixed_size = True

    predictor: int
    byteorder: Literal["<", ">"]
    samples: int

    def __init__(
        self, *, predictor: int, byteorder: Literal["<", ">"] = "<", samples: int = 1
    ) -> None:
        if int(predictor) not in (2, 3):
            raise ValueError(f"TIFF predictor must be 2 or 3, got {predictor!r}")
        if byteorder not in ("<", ">"):
            raise ValueError(f"byteorder must be '<' or '>', got {byteorder!r}")
        if int(samples) < 1:
            raise ValueError(f"samples must be positive, got {samples!r}")
        object.__setattr__(self, "predictor", int(predictor))
        object.__setattr__(self, "byteorder", byteorder)
        object.__setattr__(self, "samples", int(samples))

    def configuration(self) -> dict[str, JSON]:
        return {"predictor": self.predictor, "byteorder": self.byteorder, "samples": self.samples}

    def _values(self, data: bytes, chunk_spec: ArraySpec) -> np.ndarray:
        native = chunk_spec.dtype.to_native_dtype()
        # tifffile reads floating-point-predicted bytes in native order, as imagecodecs wants
        stored = native.newbyteorder("=" if self.predictor == 3 else self.byteorder)
        values = np.frombuffer(data, dtype=stored)
        width = chunk_spec.shape[-2] if self.samples > 1 else chunk_spec.shape[-1]
        return values.reshape(-1, width, self.samples).astype(native.newbyteorder("<"))

    def decode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        values = self._values(data, chunk_spec)
        imagecodecs = _imagecodecs()
        if self.predictor == 2:
            decoded = imagecodecs.delta_decode(values, axis=-2, out=values)
        else:
            decoded = imagecodecs.floatpred_decode(values, axis=-2, out=values)
        return np.ascontiguousarray(decoded).tobytes()

    def encode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        native = chunk_spec.dtype.to_native_dtype().newbyteorder("<")
        width = chunk_spec.shape[-2] if self.samples > 1 else chunk_spec.shape[-1]
        values = np.frombuffer(data, dtype=native).reshape(-1, width, self.samples).copy()
        imagecodecs = _imagecodecs()
        if self.predictor == 2:
            encoded = imagecodecs.delta_encode(values, axis=-2)
            return np.asarray(encoded).astype(native.newbyteorder(self.byteorder)).tobytes()
        return np.asarray(imagecodecs.floatpred_encode(values, axis=-2)).tobytes()


@dataclass(frozen=True)
class TIFFJPEGCodec(_TIFFBytesCodec):
    """TIFF "new-style" JPEG (compression 7), decoded as tifffile does.

    One segment is decoded with ``imagecodecs.jpeg_decode(data, tables=..., colorspace=...,
    outcolorspace=..., shape=...)``, the call tifffile makes (falling back, like tifffile, to
    ``imagecodecs.ljpeg_decode`` for precisions and colour spaces libjpeg refuses); libjpeg
    converts YCbCr to RGB. The decoded ``(rows, width[, samples])`` values are returned in
    little-endian byte order, padded with zeros at the bottom and right to a whole chunk (a
    last strip, or an edge tile stored short, covers only the image's remaining pixels).

    Parameters
    ----------
    rows, width
        The segment's shape (``RowsPerStrip`` or ``TileLength``, and its width).
    tables
        The ``JPEGTables`` tag (347), base64-encoded, or None.
    colorspace, outcolorspace
        tifffile's ``jpeg_decode_colorspace`` of the page (None leaves libjpeg's default).
    """

    codec_name: ClassVar[str] = "virtualize.tiff_jpeg"
    is_fixed_size = False

    rows: int
    width: int
    tables: str | None
    colorspace: int | str | None
    outcolorspace: int | str | None

    def __init__(
        self,
        *,
        rows: int,
        width: int,
        tables: str | None = None,
        colorspace: int | str | None = None,
        outcolorspace: int | str | None = None,
    ) -> None:
        if int(rows) < 1 or int(width) < 1:
            raise ValueError(f"rows and width must be positive, got {rows!r}, {width!r}")
        if tables is not None:
            base64.b64decode(tables, validate=True)
        object.__setattr__(self, "rows", int(rows))
        object.__setattr__(self, "width", int(width))
        object.__setattr__(self, "tables", tables)
        object.__setattr__(self, "colorspace", colorspace)
        object.__setattr__(self, "outcolorspace", outcolorspace)

    @classmethod
    def from_tables(cls, tables: bytes | None, **kwargs: Any) -> TIFFJPEGCodec:
        """The codec for raw ``JPEGTables`` bytes."""
        encoded = None if tables is None else base64.b64encode(tables).decode("ascii")
        return cls(tables=encoded, **kwargs)

    def configuration(self) -> dict[str, JSON]:
        return {
            "rows": self.rows,
            "width": self.width,
            "tables": self.tables,
            "colorspace": self.colorspace,
            "outcolorspace": self.outcolorspace,
        }

    def _decode_array(self, data: bytes) -> np.ndarray:
        imagecodecs = _imagecodecs()
        tables = None if self.tables is None else base64.b64decode(self.tables)
        try:
            decoded = imagecodecs.jpeg_decode(
                data,
                tables=tables,
                header=None,
                colorspace=self.colorspace,
                outcolorspace=self.outcolorspace,
                shape=(self.rows, self.width),
            )
        except Exception as error:  # the fallback tifffile makes
            message = str(error)
            if not any(
                text in message
                for text in (
                    "Unsupported JPEG data precision",
                    "Unsupported color conversion",
                    "Bogus Huffman table definition",
                    "SOF type",
                )
            ):
                raise
            decoded = imagecodecs.ljpeg_decode(data)
        return np.asarray(decoded)

    def decode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        native = chunk_spec.dtype.to_native_dtype().newbyteorder("<")
        size = _chunk_nbytes(chunk_spec)
        samples = size // (self.rows * self.width * native.itemsize)
        decoded = self._decode_array(data)
        if decoded.dtype.itemsize != native.itemsize or decoded.dtype.kind != native.kind:
            raise ValueError(f"a JPEG segment decoded to {decoded.dtype}, expected {native}")
        return _pad_segment(decoded, self.rows, self.width, samples, native, "JPEG")

    def encode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        native = chunk_spec.dtype.to_native_dtype().newbyteorder("<")
        values = np.frombuffer(data, dtype=native).reshape(self.rows, self.width, -1)
        if values.shape[-1] == 1:
            values = values[..., 0]
        return bytes(_imagecodecs().jpeg8_encode(values, level=95))


def _pad_segment(
    decoded: np.ndarray, rows: int, width: int, samples: int, native: np.dtype[Any], name: str
) -> bytes:
    """``decoded`` as little-endian bytes of a whole ``(rows, width, samples)`` chunk, zero-padded."""
    decoded = decoded.reshape(decoded.shape[0], decoded.shape[1], -1)
    got_rows, got_width, bands = decoded.shape
    if got_rows > rows or got_width > width or bands != samples:
        raise ValueError(
            f"a {name} segment decoded to {decoded.shape}, "
            f"expected at most ({rows}, {width}, {samples})"
        )
    out = np.zeros((rows, width, samples), dtype=native)
    out[:got_rows, :got_width] = decoded
    return out.tobytes()


@dataclass(frozen=True)
class TIFFWebPCodec(_TIFFBytesCodec):
    """TIFF WebP (compression 50001), decoded as tifffile does.

    One segment is decoded with ``imagecodecs.webp_decode(data)``, or, for four samples per
    pixel, ``webp_decode(data, hasalpha=True)`` (tifffile's call: a segment may omit an
    all-opaque alpha channel). The decoded ``(rows, width, samples)`` uint8 values are padded
    with zeros at the bottom and right to a whole chunk (a last strip, or an edge tile stored
    short, covers only the image's remaining pixels).

    Parameters
    ----------
    rows, width
        The segment's shape (``RowsPerStrip`` or ``TileLength``, and its width).
    hasalpha
        Decode to four samples (RGBA) even if the segment stores no alpha.
    """

    codec_name: ClassVar[str] = "virtualize.tiff_webp"
    is_fixed_size = False

    rows: int
    width: int
    hasalpha: bool

    def __init__(self, *, rows: int, width: int, hasalpha: bool = False) -> None:
        if int(rows) < 1 or int(width) < 1:
            raise ValueError(f"rows and width must be positive, got {rows!r}, {width!r}")
        object.__setattr__(self, "rows", int(rows))
        object.__setattr__(self, "width", int(width))
        object.__setattr__(self, "hasalpha", bool(hasalpha))

    def configuration(self) -> dict[str, JSON]:
        return {"rows": self.rows, "width": self.width, "hasalpha": self.hasalpha}

    def decode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        native = chunk_spec.dtype.to_native_dtype().newbyteorder("<")
        size = _chunk_nbytes(chunk_spec)
        samples = size // (self.rows * self.width * native.itemsize)
        imagecodecs = _imagecodecs()
        if self.hasalpha:
            decoded = imagecodecs.webp_decode(data, hasalpha=True)
        else:
            decoded = imagecodecs.webp_decode(data)
        decoded = np.asarray(decoded)
        if decoded.dtype != native:
            raise ValueError(f"a WebP segment decoded to {decoded.dtype}, expected {native}")
        return _pad_segment(decoded, self.rows, self.width, samples, native, "WebP")

    def encode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        native = chunk_spec.dtype.to_native_dtype().newbyteorder("<")
        values = np.frombuffer(data, dtype=native).reshape(self.rows, self.width, -1)
        return bytes(_imagecodecs().webp_encode(values, lossless=True))
