"""Zarr v3 codecs that decode TIFF strips and tiles exactly as tifffile does.

A TIFF segment (strip or tile) is compressed, then possibly predicted (differenced) before
compression. virtualize describes a segment as a zarr chunk with the codecs, in zarr order::

    [transpose (pixel-interleaved bands)], bytes, [tiff_predictor], [tiff_strip], [compressor]

so that decoding runs: decompress (zarr's ``numcodecs.zlib`` / ``zstd``, or
:class:`TIFFLZWCodec`, :class:`TIFFPackBitsCodec`), pad the last, short strip to a whole chunk
(:class:`TIFFStripCodec`), undo the predictor (:class:`TIFFPredictorCodec`), interpret the
bytes. Samples that are not whole numpy values take the place of ``tiff_strip``, padding the
last strip themselves: packed bits (bilevel, masks, 2 to 31 bits; :class:`TIFFUnpackCodec`,
after the predictor) and complex integers (:class:`TIFFComplexIntCodec`)::

    [transpose], bytes, [tiff_predictor], tiff_unpack, [compressor]
    bytes, tiff_complex_int, [compressor]

LERC (compression 34887) segments are decoded, with their deflate or zstd wrapping, and
padded to whole chunks in one step, :class:`TIFFLERCCodec`, in the compressor's place
(``[transpose], bytes, [tiff_predictor], tiff_lerc``). JPEG (compression 7) and WEBP
segments are decoded and padded to whole chunks in one step too, :class:`TIFFJPEGCodec` and
:class:`TIFFWebPCodec` (``[transpose], bytes, tiff_jpeg``, with no strip or predictor
codec). The decoders are imagecodecs', the ones tifffile calls; none is written here.
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
    "TIFFComplexIntCodec",
    "TIFFJPEGCodec",
    "TIFFLERCCodec",
    "TIFFLZWCodec",
    "TIFFPackBitsCodec",
    "TIFFPredictorCodec",
    "TIFFStripCodec",
    "TIFFUnpackCodec",
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


def _fit_rows(data: bytes, rows: int, size: int, name: str) -> bytes:
    """``data`` cut or zero-padded to ``size`` bytes of ``rows`` whole rows (a short last strip)."""
    if len(data) >= size:
        return data[:size]
    row = size // rows
    if row == 0 or len(data) % row:
        raise ValueError(f"a {name} segment of {len(data)} bytes is not whole {row}-byte rows")
    return data + bytes(size - len(data))


def _check_byteorder(byteorder: str) -> None:
    if byteorder not in ("<", ">"):
        raise ValueError(f"byteorder must be '<' or '>', got {byteorder!r}")


_LERC_COMPRESSIONS: dict[int, Literal["deflate", "zstd"] | None] = {
    0: None,
    1: "deflate",
    2: "zstd",
}


@dataclass(frozen=True)
class TIFFLERCCodec(_TIFFBytesCodec):
    """TIFF LERC (compression 34887), decoded as tifffile does.

    One segment is decoded with ``imagecodecs.lerc_decode(data)``, tifffile's call; it also
    undoes the deflate or zstd wrapping the ``LercParameters`` tag (50674) announces, which it
    recognises by the stream's header. The values' bytes are returned as decoded, which is
    how they were stored: tifffile reads them in the file's byte order (GDAL encodes a
    big-endian file's values byte-swapped), so the ``bytes`` codec before this one must say
    the file's byte order. A segment decoded short (the last strip, or an edge tile covering
    only the image's remaining pixels) is padded with zeros at the bottom and right to a
    whole chunk. Like a decompressor, this may follow a :class:`TIFFPredictorCodec`, which
    tifffile applies to LERC-decoded values too.

    Parameters
    ----------
    rows, width
        The segment's shape (``RowsPerStrip`` or ``TileLength``, and its width).
    samples
        Samples per pixel interleaved in a segment (1 for one band or planar).
    compression
        The additional compression of ``LercParameters``: 0 none, 1 deflate, 2 zstd (used
        to encode; decoding recognises it).
    """

    codec_name: ClassVar[str] = "virtualize.tiff_lerc"

    rows: int
    width: int
    samples: int
    compression: int

    def __init__(self, *, rows: int, width: int, samples: int = 1, compression: int = 0) -> None:
        if int(rows) < 1 or int(width) < 1 or int(samples) < 1:
            raise ValueError(
                f"rows, width and samples must be positive, got {rows!r}, {width!r}, {samples!r}"
            )
        if int(compression) not in _LERC_COMPRESSIONS:
            raise ValueError(f"LERC compression must be 0, 1 or 2, got {compression!r}")
        object.__setattr__(self, "rows", int(rows))
        object.__setattr__(self, "width", int(width))
        object.__setattr__(self, "samples", int(samples))
        object.__setattr__(self, "compression", int(compression))

    def configuration(self) -> dict[str, JSON]:
        return {
            "rows": self.rows,
            "width": self.width,
            "samples": self.samples,
            "compression": self.compression,
        }

    def decode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        native = chunk_spec.dtype.to_native_dtype()
        decoded = np.asarray(_imagecodecs().lerc_decode(data))
        if decoded.dtype.itemsize != native.itemsize or decoded.dtype.kind != native.kind:
            raise ValueError(f"a LERC segment decoded to {decoded.dtype}, expected {native}")
        if decoded.ndim not in (2, 3):
            raise ValueError(f"a LERC segment decoded to shape {decoded.shape}")
        # the bytes as decoded, not swapped: tifffile reads them with numpy.frombuffer
        return _pad_segment(decoded, self.rows, self.width, self.samples, decoded.dtype, "LERC")

    def encode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        native = chunk_spec.dtype.to_native_dtype().newbyteorder("=")
        values = np.frombuffer(data, dtype=native).reshape(self.rows, self.width, self.samples)
        encoded = _imagecodecs().lerc_encode(
            values if self.samples > 1 else values[..., 0],
            level=0.0,
            compression=_LERC_COMPRESSIONS[self.compression],
        )
        return bytes(encoded)


@dataclass(frozen=True)
class TIFFUnpackCodec(_TIFFBytesCodec):
    """Unpack samples stored at a bit depth numpy lacks, as tifffile does.

    Bilevel images and GDAL's internal masks (1 bit, read as bool) and samples of 2 to 31
    bits (read as uint8, uint16 or uint32, the smallest that holds them) are packed
    MSB-first, each row of ``width * samples`` values starting on a byte. They are unpacked
    with ``imagecodecs.packints_decode(data, dtype, bitspersample, runlen=width * samples)``,
    tifffile's call (with ``dtype`` in the file's byte order, which tifffile passes and the
    decoder heeds for some depths), and returned as little-endian values, so the ``bytes``
    codec before this one must say ``endian: little``; a following :class:`TIFFPredictorCodec`
    must read ``byteorder: "<"``. Like tifffile, values are not inverted for ``MinIsWhite``.
    A short last strip is padded with zeros to a whole chunk (this replaces
    :class:`TIFFStripCodec`, whose sizes would be those of unpacked data).

    Parameters
    ----------
    bitspersample
        Bits of one sample, 1 to 32.
    rows, width
        The segment's shape (``RowsPerStrip`` or ``TileLength``, and its width).
    samples
        Samples per pixel interleaved in a segment (1 for one band or planar).
    byteorder
        The file's byte order, ``"<"`` or ``">"``.
    fillorder
        ``FillOrder``: 2 reverses the bits of each byte first, as tifffile does; tifffile
        reverses the stored (compressed) bytes, so this matches only uncompressed segments.
    """

    codec_name: ClassVar[str] = "virtualize.tiff_unpack"

    bitspersample: int
    rows: int
    width: int
    samples: int
    byteorder: Literal["<", ">"]
    fillorder: int

    def __init__(
        self,
        *,
        bitspersample: int,
        rows: int,
        width: int,
        samples: int = 1,
        byteorder: Literal["<", ">"] = "<",
        fillorder: int = 1,
    ) -> None:
        if not 1 <= int(bitspersample) <= 32:
            raise ValueError(f"bitspersample must be 1 to 32, got {bitspersample!r}")
        if int(rows) < 1 or int(width) < 1 or int(samples) < 1:
            raise ValueError(
                f"rows, width and samples must be positive, got {rows!r}, {width!r}, {samples!r}"
            )
        _check_byteorder(byteorder)
        if int(fillorder) not in (1, 2):
            raise ValueError(f"fillorder must be 1 or 2, got {fillorder!r}")
        object.__setattr__(self, "bitspersample", int(bitspersample))
        object.__setattr__(self, "rows", int(rows))
        object.__setattr__(self, "width", int(width))
        object.__setattr__(self, "samples", int(samples))
        object.__setattr__(self, "byteorder", byteorder)
        object.__setattr__(self, "fillorder", int(fillorder))

    def configuration(self) -> dict[str, JSON]:
        return {
            "bitspersample": self.bitspersample,
            "rows": self.rows,
            "width": self.width,
            "samples": self.samples,
            "byteorder": self.byteorder,
            "fillorder": self.fillorder,
        }

    @property
    def dtype(self) -> np.dtype[Any]:
        """tifffile's type of the unpacked samples (``TIFF.SAMPLE_DTYPES``), little-endian."""
        bits = self.bitspersample
        if bits == 1:
            return np.dtype("?")
        return np.dtype("<u1" if bits <= 8 else "<u2" if bits <= 16 else "<u4")

    def _check_dtype(self, chunk_spec: ArraySpec) -> None:
        native = chunk_spec.dtype.to_native_dtype()
        if native.kind != self.dtype.kind or native.itemsize != self.dtype.itemsize:
            raise ValueError(
                f"{self.bitspersample}-bit samples unpack to {self.dtype}, not {native}"
            )

    def decode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        self._check_dtype(chunk_spec)
        runlen = self.width * self.samples
        row = -(-runlen * self.bitspersample // 8)
        if len(data) < self.rows * row and len(data) % row:
            raise ValueError(f"a packed segment of {len(data)} bytes is not whole {row}-byte rows")
        imagecodecs = _imagecodecs()
        if self.fillorder == 2:
            data = bytes(imagecodecs.bitorder_decode(data))
        stored = self.dtype.newbyteorder(self.byteorder)
        values = imagecodecs.packints_decode(data, stored, self.bitspersample, runlen=runlen)
        unpacked = np.asarray(values).astype(self.dtype, copy=False).tobytes()
        return _fit_rows(unpacked, self.rows, self.rows * runlen * self.dtype.itemsize, "packed")

    def encode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        self._check_dtype(chunk_spec)
        runlen = self.width * self.samples
        values = np.frombuffer(data, dtype=self.dtype).reshape(self.rows, runlen)
        imagecodecs = _imagecodecs()
        packed = bytes(imagecodecs.packints_encode(values, self.bitspersample, runlen=runlen))
        return bytes(imagecodecs.bitorder_encode(packed)) if self.fillorder == 2 else packed


@dataclass(frozen=True)
class TIFFComplexIntCodec(_TIFFBytesCodec):
    """Complex integers (``SampleFormat`` 5) as complex floats, as tifffile converts them.

    A sample of 32 bits is a pair of int16 (real, imaginary), one of 64 bits a pair of
    int32; tifffile reads them as complex64 and complex128:
    ``numpy.frombuffer(data, int).astype(float).view(complex)``, in the file's byte order.
    The complex values are returned little-endian, so the ``bytes`` codec before this one
    must say ``endian: little``. A short last strip is padded with zeros to a whole chunk
    (this replaces :class:`TIFFStripCodec`, whose sizes would be those of the complex
    values). tifffile refuses a predictor with complex integers.

    Parameters
    ----------
    intsize
        Bytes of each integer of a pair: 2 (``CInt16``) or 4 (``CInt32``).
    byteorder
        The file's byte order, ``"<"`` or ``">"``.
    rows
        Rows per segment (``RowsPerStrip`` or ``TileLength``).
    """

    codec_name: ClassVar[str] = "virtualize.tiff_complex_int"

    intsize: int
    byteorder: Literal["<", ">"]
    rows: int

    def __init__(self, *, intsize: int, byteorder: Literal["<", ">"] = "<", rows: int) -> None:
        if int(intsize) not in (2, 4):
            raise ValueError(f"intsize must be 2 or 4, got {intsize!r}")
        _check_byteorder(byteorder)
        if int(rows) < 1:
            raise ValueError(f"rows must be positive, got {rows!r}")
        object.__setattr__(self, "intsize", int(intsize))
        object.__setattr__(self, "byteorder", byteorder)
        object.__setattr__(self, "rows", int(rows))

    def configuration(self) -> dict[str, JSON]:
        return {"intsize": self.intsize, "byteorder": self.byteorder, "rows": self.rows}

    def _types(self, chunk_spec: ArraySpec) -> tuple[np.dtype[Any], np.dtype[Any]]:
        """The stored integers' and the complex values' types."""
        complex_type = np.dtype(f"<c{4 * self.intsize}")
        native = chunk_spec.dtype.to_native_dtype()
        if native.kind != "c" or native.itemsize != complex_type.itemsize:
            raise ValueError(
                f"pairs of {self.intsize}-byte integers are {complex_type}, not {native}"
            )
        return np.dtype(f"{self.byteorder}i{self.intsize}"), complex_type

    def decode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        itype, ctype = self._types(chunk_spec)
        ftype = np.dtype(f"{self.byteorder}f{2 * self.intsize}")
        values = np.frombuffer(data, itype).astype(ftype).view(ctype.newbyteorder(self.byteorder))
        decoded = values.astype(ctype).tobytes()
        return _fit_rows(decoded, self.rows, _chunk_nbytes(chunk_spec), "complex integer")

    def encode_bytes(self, data: bytes, chunk_spec: ArraySpec) -> bytes:
        itype, ctype = self._types(chunk_spec)
        parts = np.frombuffer(data, ctype).view(f"<f{2 * self.intsize}")
        return np.rint(parts).astype(itype).tobytes()
