"""Zarr v3 codecs that decode FITS data exactly as astropy reads it.

FITS stores big-endian values; the parsers reference image bytes with zarr's ``bytes`` codec
and add these codecs where astropy does more than a byte swap:

- :class:`FITSScaleCodec` (``virtualize.fits_scale``): ``BSCALE``/``BZERO``/``BLANK`` of an
  image, or ``TSCALn``/``TZEROn`` of a binary-table column, applied in astropy's types and
  order (pseudo-unsigned integers, float32 for scaled 8- and 16-bit images, ``BLANK`` to NaN).
- :class:`FITSColumnCodec` (``virtualize.fits_column``): one column of a binary table. A
  chunk is a run of whole rows; the codec cuts the column's bytes out of each row and decodes
  them (numbers, logicals, bit arrays, ASCII strings).
- :class:`FITSTileCodec` (``virtualize.fits_tile``): one tile of a tile-compressed image,
  decompressed and (for quantised floats) dequantised with astropy's own codecs and
  dithering, so the values equal astropy's bit for bit.

zarr gives a codec the chunk's bytes and shape but not its position, while some tiles need
more: edge tiles are smaller than the chunk, and quantised tiles have their own
``ZSCALE``/``ZZERO``/``ZBLANK`` and a dither row. :class:`FITSTileCodec` keeps those tiles in a
table keyed by the compressed bytes' length (and, where lengths repeat, their first bytes);
the parser checks at parse time that every tile's key picks the right entry.

Every codec is registered with zarr through the ``zarr.codecs`` entry points.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple, Self

import numpy as np
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import JSON, parse_named_configuration
from zarr.core.dtype import get_data_type_from_native_dtype

__all__ = [
    "ColumnKind",
    "FITSColumnCodec",
    "FITSScaleCodec",
    "FITSTileCodec",
    "TileSpec",
    "column_decoded_dtype",
    "image_decoded_dtype",
]

#: numpy types of FITS ``BITPIX`` values (as stored, before scaling).
BITPIX_TYPES: dict[int, str] = {
    8: "uint8",
    16: "int16",
    32: "int32",
    64: "int64",
    -32: "float32",
    -64: "float64",
}
_BITPIX_OF = {np.dtype(name): bitpix for bitpix, name in BITPIX_TYPES.items()}
_UNSIGNED: dict[int, np.dtype[Any]] = {
    16: np.dtype("uint16"),
    32: np.dtype("uint32"),
    64: np.dtype("uint64"),
}

Number = int | float


def _number(value: Any) -> Number:
    """A JSON number that keeps the int/float distinction (astropy's arithmetic keeps it)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | np.integer):
        return int(value)
    return float(value)


def _spec_with_dtype(spec: ArraySpec, dtype: np.dtype[Any], fill: Any) -> ArraySpec:
    return ArraySpec(
        shape=spec.shape,
        dtype=get_data_type_from_native_dtype(dtype),
        fill_value=fill,
        config=spec.config,
        prototype=spec.prototype,
    )


# -- scaling ----------------------------------------------------------------------------------


def _pseudo_unsigned(stored: np.dtype[Any], bscale: Number, bzero: Number) -> np.dtype[Any] | None:
    """The unsigned type astropy's ``uint=True`` reads a scaled image as, or None."""
    bitpix = _BITPIX_OF.get(stored)
    if bitpix is None or bscale != 1 or bitpix not in _UNSIGNED:
        return None
    return _UNSIGNED[bitpix] if bzero == 1 << (bitpix - 1) else None


def image_decoded_dtype(
    stored: np.dtype[Any], bscale: Number, bzero: Number, blank: int | None
) -> np.dtype[Any]:
    """The type astropy gives an image stored as ``stored`` with these keywords.

    Mirrors ``astropy.io.fits`` ``_ImageBaseHDU._scale_data`` and ``_dtype_for_bitpix``.
    """
    if bzero == 0 and bscale == 1 and blank is None:
        return stored
    if not (bzero == 0 and bscale == 1):
        unsigned = _pseudo_unsigned(stored, bscale, bzero)
        if unsigned is not None:
            return unsigned
    bitpix = _BITPIX_OF[stored]
    if bitpix == 8 and bscale == 1 and bzero == -128:
        return np.dtype("int8")
    if bitpix > 16:
        return np.dtype("float64")
    if bitpix > 0:
        return np.dtype("float32")
    return stored


def column_decoded_dtype(stored: np.dtype[Any], bzero: Number) -> np.dtype[Any]:
    """The type astropy gives a scaled binary-table column stored as ``stored``.

    Mirrors ``astropy.io.fits.FITS_rec._convert_other``: ``TZEROn`` of 2**15, 2**31 or 2**63
    on I, J or K columns gives unsigned integers, any other scaling float64.
    """
    bits = {np.dtype("int16"): 16, np.dtype("int32"): 32, np.dtype("int64"): 64}.get(stored)
    if bits is not None and bzero == 1 << (bits - 1):
        return _UNSIGNED[bits]
    return np.dtype("float64")


@dataclass(frozen=True)
class FITSScaleCodec(ArrayArrayCodec):
    """Apply FITS scaling as astropy does.

    Parameters
    ----------
    convention
        ``"image"`` for ``BSCALE``/``BZERO``/``BLANK`` (astropy's image rules) or
        ``"column"`` for a binary-table column's ``TSCALn``/``TZEROn``.
    stored
        The stored type (native byte order), e.g. ``"int16"``.
    bscale, bzero
        The factors, as the header gives them (int or float: astropy's arithmetic, and so
        the rounding, follows Python's types).
    blank
        The image's valid ``BLANK`` value (integer images only), or None.
    """

    is_fixed_size = True
    codec_name: ClassVar[str] = "virtualize.fits_scale"

    convention: Literal["image", "column"]
    stored: str
    bscale: Number
    bzero: Number
    blank: int | None

    def __init__(
        self,
        *,
        convention: Literal["image", "column"],
        stored: str,
        bscale: Number = 1,
        bzero: Number = 0,
        blank: int | None = None,
    ) -> None:
        if convention not in ("image", "column"):
            raise ValueError(f"convention must be 'image' or 'column', got {convention!r}")
        dtype = np.dtype(stored)
        if dtype not in _BITPIX_OF:
            raise ValueError(f"FITS values are never stored as {dtype}")
        object.__setattr__(self, "convention", convention)
        object.__setattr__(self, "stored", dtype.name)
        object.__setattr__(self, "bscale", _number(bscale))
        object.__setattr__(self, "bzero", _number(bzero))
        object.__setattr__(self, "blank", None if blank is None else int(blank))

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, cls.codec_name)
        return cls(**configuration)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        return {
            "name": self.codec_name,
            "configuration": {
                "convention": self.convention,
                "stored": self.stored,
                "bscale": self.bscale,
                "bzero": self.bzero,
                "blank": self.blank,
            },
        }

    @property
    def decoded(self) -> np.dtype[Any]:
        """The decoded type."""
        stored = np.dtype(self.stored)
        if self.convention == "image":
            return image_decoded_dtype(stored, self.bscale, self.bzero, self.blank)
        return column_decoded_dtype(stored, self.bzero)

    def resolve_metadata(self, chunk_spec: ArraySpec) -> ArraySpec:
        return _spec_with_dtype(chunk_spec, np.dtype(self.stored), 0)

    def decode_array(self, raw: np.ndarray) -> np.ndarray:
        """Scale stored values (native byte order) into astropy's values."""
        raw = np.asarray(raw, dtype=self.stored)
        if self.convention == "image":
            return self._decode_image(raw)
        return self._decode_column(raw)

    def _decode_image(self, raw: np.ndarray) -> np.ndarray:
        # The steps of astropy's _ImageBaseHDU._scale_data, in its order and types.
        bscale, bzero = self.bscale, self.bzero
        decoded = self.decoded
        if bzero == 0 and bscale == 1 and self.blank is None:
            return raw
        if decoded.kind == "u":
            data = np.array(raw, dtype=decoded)
            data -= np.uint64(1 << (decoded.itemsize * 8 - 1))
            return data
        blanks = raw == self.blank if self.blank is not None else None
        data = np.array(raw, dtype=decoded)
        if bscale != 1:
            np.multiply(data, bscale, data)
        if bzero != 0:
            data += bzero
        if self.blank:
            data[blanks] = np.nan
        return data

    def _decode_column(self, raw: np.ndarray) -> np.ndarray:
        # The steps of astropy's FITS_rec._convert_other for scaled numbers.
        bscale, bzero = self.bscale, self.bzero
        decoded = self.decoded
        field = np.array(raw, dtype=decoded)
        if bscale != 1:
            np.multiply(field, bscale, field)
        if bzero != 0:
            if decoded == np.uint64:
                field = field + np.uint64(1 << 63)
            else:
                field += bzero
        return field

    def encode_array(self, values: np.ndarray) -> np.ndarray:
        """Stored values for decoded ones: the inverse of :meth:`decode_array` up to
        rounding; NaN becomes ``blank`` (or 0)."""
        stored = np.dtype(self.stored)
        decoded = self.decoded
        values = np.asarray(values)
        if decoded.kind in "ui" and stored.kind in "ui":
            offset = int(self.bzero)
            shifted = values.astype(np.uint64 if decoded.kind == "u" else np.int64)
            if self.bscale != 1:
                shifted = shifted // int(self.bscale)
            return (shifted - np.array(offset).astype(shifted.dtype)).astype(stored)
        floats = (np.asarray(values, dtype=np.float64) - self.bzero) / self.bscale
        if stored.kind == "f":
            return floats.astype(stored)
        fill = float(self.blank) if self.blank is not None else 0.0
        return np.where(np.isnan(floats), fill, np.round(floats)).astype(stored)

    def _decode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        decoded = self.decode_array(chunk_array.as_numpy_array())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(decoded)

    async def _decode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_array, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer | None:
        encoded = self.encode_array(chunk_array.as_numpy_array())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(encoded)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        encoded = self.encode_array(chunk_array.as_numpy_array())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(encoded)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        return input_byte_length // self.decoded.itemsize * np.dtype(self.stored).itemsize


# -- binary-table columns ---------------------------------------------------------------------

ColumnKind = Literal["plain", "logical", "bits", "string"]


@dataclass(frozen=True)
class FITSColumnCodec(ArrayBytesCodec):
    """One fixed-width column of a FITS binary table, cut out of whole rows.

    A chunk's bytes are whole rows (``row_bytes`` each; the last chunk may hold fewer rows
    than the chunk); the column is bytes ``[offset, offset + width)`` of each row.

    Parameters
    ----------
    row_bytes
        Bytes per table row (``NAXIS1``).
    offset
        Where the column starts in a row.
    width
        The column's bytes per row.
    kind
        ``"plain"`` (numbers of type ``stored``), ``"logical"`` (FITS ``L``: ``'T'`` is
        True), ``"bits"`` (FITS ``X``: bits, most significant first) or ``"string"`` (FITS
        ``A``: ASCII, decoded as astropy does; non-ASCII bytes raise).
    stored
        The stored element type (numpy, big-endian), e.g. ``">i4"``, ``"|u1"``, ``"|S8"``.
    """

    is_fixed_size = True
    codec_name: ClassVar[str] = "virtualize.fits_column"

    row_bytes: int
    offset: int
    width: int
    kind: ColumnKind
    stored: str

    def __init__(
        self, *, row_bytes: int, offset: int, width: int, kind: ColumnKind, stored: str
    ) -> None:
        if kind not in ("plain", "logical", "bits", "string"):
            raise ValueError(f"unknown FITS column kind {kind!r}")
        if int(row_bytes) < 1 or int(offset) < 0 or int(width) < 1:
            raise ValueError("row_bytes and width must be positive, offset non-negative")
        if int(offset) + int(width) > int(row_bytes):
            raise ValueError("the column does not fit in a row")
        object.__setattr__(self, "row_bytes", int(row_bytes))
        object.__setattr__(self, "offset", int(offset))
        object.__setattr__(self, "width", int(width))
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "stored", np.dtype(stored).str)

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, cls.codec_name)
        return cls(**configuration)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        return {
            "name": self.codec_name,
            "configuration": {
                "row_bytes": self.row_bytes,
                "offset": self.offset,
                "width": self.width,
                "kind": self.kind,
                "stored": self.stored,
            },
        }

    def decode_rows(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """The column's values of ``shape`` (rows first) from whole rows of table bytes."""
        raw = np.frombuffer(data, dtype=np.uint8)
        if raw.size % self.row_bytes:
            raise ValueError(
                f"a FITS table chunk of {raw.size} bytes is not whole rows of {self.row_bytes}"
            )
        rows = raw.size // self.row_bytes
        fields = np.ascontiguousarray(
            raw.reshape(rows, self.row_bytes)[:, self.offset : self.offset + self.width]
        )
        values = self._values(fields, (rows, *shape[1:]))
        out = np.zeros(shape, dtype=dtype)
        count = min(rows, shape[0])
        out[:count] = values[:count]
        return out

    def _values(self, fields: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if self.kind == "logical":
            return np.equal(fields, ord("T")).reshape(shape)
        if self.kind == "bits":
            return np.unpackbits(fields, axis=1)[:, : shape[1]].astype(bool).reshape(shape)
        stored = np.dtype(self.stored)
        values = fields.view(stored).reshape(shape)
        if self.kind == "string":
            try:
                decoded = np.char.decode(values, "ascii")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"a FITS string column holds non-ASCII bytes ({error}); astropy returns "
                    "such columns as bytes"
                ) from error
            return decoded.astype(f"U{stored.itemsize}")
        return values.astype(stored.newbyteorder("="))

    def encode_rows(self, values: np.ndarray) -> bytes:
        """Whole rows holding ``values`` in this column (other bytes zero)."""
        values = np.asarray(values)
        rows = values.shape[0] if values.ndim else 1
        table = np.zeros((rows, self.row_bytes), dtype=np.uint8)
        table[:, self.offset : self.offset + self.width] = self._field_bytes(values, rows)
        return table.tobytes()

    def _field_bytes(self, values: np.ndarray, rows: int) -> np.ndarray:
        if self.kind == "logical":
            stored = np.where(values.reshape(rows, -1), ord("T"), ord("F")).astype(np.uint8)
            return stored
        if self.kind == "bits":
            flat = values.reshape(rows, -1).astype(np.uint8)
            return np.packbits(flat, axis=1)[:, : self.width]
        if self.kind == "string":
            stored = np.char.encode(values.astype(str), "ascii").astype(self.stored)
        else:
            stored = values.astype(self.stored)
        return np.ascontiguousarray(stored).view(np.uint8).reshape(rows, self.width)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        dtype = np.dtype(chunk_spec.dtype.to_native_dtype())
        values = self.decode_rows(chunk_bytes.to_bytes(), chunk_spec.shape, dtype)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(values)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        data = self.encode_rows(chunk_array.as_numpy_array())
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return self._encode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, _input_byte_length: int, chunk_spec: ArraySpec) -> int:
        return int(chunk_spec.shape[0]) * self.row_bytes


# -- tile-compressed images -------------------------------------------------------------------

TileKind = Literal["compressed", "gzip", "raw"]


class TileSpec(NamedTuple):
    """How to decode one tile.

    ``kind`` is ``"compressed"`` (the image's algorithm), ``"gzip"`` (the lossless
    ``GZIP_COMPRESSED_DATA`` fallback) or ``"raw"`` (``UNCOMPRESSED_DATA``); ``shape`` is the
    tile's shape when it is smaller than the chunk (edge tiles), else None; ``dither_row``,
    ``zscale`` and ``zzero`` dequantise floats; ``zblank`` is the tile's blank value.
    """

    kind: TileKind = "compressed"
    shape: tuple[int, ...] | None = None
    dither_row: int = 0
    zscale: float = 0.0
    zzero: float = 0.0
    zblank: int | None = None

    def to_json(self) -> list[JSON]:
        shape = list(self.shape) if self.shape is not None else None
        return [self.kind, shape, self.dither_row, self.zscale, self.zzero, self.zblank]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> TileSpec:
        kind, shape, row, zscale, zzero, zblank = data
        return cls(
            kind,
            tuple(int(n) for n in shape) if shape is not None else None,
            int(row),
            float(zscale),
            float(zzero),
            None if zblank is None else int(zblank),
        )


def _tiled() -> Any:
    from astropy.io.fits.hdu.compressed import _tiled_compression

    return _tiled_compression


@dataclass(frozen=True)
class FITSTileCodec(ArrayBytesCodec):
    """One tile of a FITS tile-compressed image, decoded with astropy's codecs.

    The steps are those of astropy's ``decompress_image_data_section`` for one tile:
    decompress (``RICE_1``, ``GZIP_1``, ``GZIP_2``, ``HCOMPRESS_1``, ``PLIO_1``,
    ``NOCOMPRESS``), mask ``ZBLANK``, dequantise floats with the tile's ``ZSCALE``/``ZZERO``
    and subtractive dithering, and cast to the ``ZBITPIX`` type. The result is what astropy
    holds before ``BSCALE``/``BZERO`` (a :class:`FITSScaleCodec` after this one).

    Parameters
    ----------
    algorithm
        ``ZCMPTYPE``.
    zbitpix
        ``ZBITPIX``.
    settings
        The algorithm's settings from the header (astropy's ``_header_to_settings``).
    heap_dtype
        Element type of the ``COMPRESSED_DATA`` heap arrays (``"|u1"``, ``">i2"``,
        ``">i4"``).
    quantized, dither_method
        Whether tiles hold quantised floats, and astropy's dither method number.
    zblank
        The image's blank value (``ZBLANK``, else the image's ``BLANK``), or None.
    default
        How tiles absent from ``tiles`` decode (a :class:`TileSpec` in JSON form).
    tiles
        Tiles that decode otherwise: ``[length, prefix, *spec]`` with the compressed length,
        the hex of its first ``prefix_bytes`` bytes (``""`` when its length alone is
        unambiguous) and its :class:`TileSpec`.
    prefix_bytes
        How many leading bytes tell apart tiles of equal length.
    gzip_dtype, raw_dtype
        Element types of the ``GZIP_COMPRESSED_DATA`` and ``UNCOMPRESSED_DATA`` columns.
    """

    is_fixed_size = False
    codec_name: ClassVar[str] = "virtualize.fits_tile"

    algorithm: str
    zbitpix: int
    settings: tuple[tuple[str, Any], ...]
    heap_dtype: str
    quantized: bool
    dither_method: int
    zblank: int | None
    default: TileSpec
    tiles: tuple[tuple[int, str, TileSpec], ...]
    prefix_bytes: int
    gzip_dtype: str
    raw_dtype: str
    _index: dict[int, dict[str, TileSpec]] = field(compare=False, repr=False)

    def __init__(
        self,
        *,
        algorithm: str,
        zbitpix: int,
        settings: Mapping[str, Any] | None = None,
        heap_dtype: str = "|u1",
        quantized: bool = False,
        dither_method: int = -1,
        zblank: int | None = None,
        default: Sequence[Any] | TileSpec | None = None,
        tiles: Sequence[Sequence[Any]] = (),
        prefix_bytes: int = 0,
        gzip_dtype: str = "|u1",
        raw_dtype: str = "|u1",
    ) -> None:
        if algorithm not in _tiled().ALGORITHMS:
            raise ValueError(f"unknown FITS tile compression {algorithm!r}")
        if int(zbitpix) not in BITPIX_TYPES:
            raise ValueError(f"invalid ZBITPIX {zbitpix!r}")
        if default is None:
            spec = TileSpec()
        else:
            spec = default if isinstance(default, TileSpec) else TileSpec.from_json(default)
        object.__setattr__(self, "algorithm", str(algorithm))
        object.__setattr__(self, "zbitpix", int(zbitpix))
        object.__setattr__(self, "settings", tuple(sorted(dict(settings or {}).items())))
        object.__setattr__(self, "heap_dtype", np.dtype(heap_dtype).str)
        object.__setattr__(self, "quantized", bool(quantized))
        object.__setattr__(self, "dither_method", int(dither_method))
        object.__setattr__(self, "zblank", None if zblank is None else int(zblank))
        object.__setattr__(self, "default", spec)
        object.__setattr__(self, "tiles", tuple(_tile_entry(entry) for entry in tiles))
        object.__setattr__(self, "prefix_bytes", int(prefix_bytes))
        object.__setattr__(self, "gzip_dtype", np.dtype(gzip_dtype).str)
        object.__setattr__(self, "raw_dtype", np.dtype(raw_dtype).str)
        index: dict[int, dict[str, TileSpec]] = {}
        for length, prefix, tile in self.tiles:
            index.setdefault(length, {})[prefix] = tile
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, cls.codec_name)
        return cls(**configuration)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        return {
            "name": self.codec_name,
            "configuration": {
                "algorithm": self.algorithm,
                "zbitpix": self.zbitpix,
                "settings": dict(self.settings),
                "heap_dtype": self.heap_dtype,
                "quantized": self.quantized,
                "dither_method": self.dither_method,
                "zblank": self.zblank,
                "default": self.default.to_json(),
                "tiles": [[length, prefix, *spec.to_json()] for length, prefix, spec in self.tiles],
                "prefix_bytes": self.prefix_bytes,
                "gzip_dtype": self.gzip_dtype,
                "raw_dtype": self.raw_dtype,
            },
        }

    def spec_of(self, data: bytes) -> TileSpec:
        """How the tile whose compressed bytes are ``data`` decodes."""
        entries = self._index.get(len(data))
        if not entries:
            return self.default
        if "" in entries:
            return entries[""]
        return entries.get(bytes(data[: self.prefix_bytes]).hex(), self.default)

    def decode_tile(self, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        """The values of the tile whose compressed bytes are ``data``, in a chunk of
        ``shape`` (edge tiles are padded with zeros)."""
        spec = self.spec_of(data)
        tile_shape = spec.shape or shape
        if spec.kind == "raw":
            tile = np.frombuffer(data, dtype=self.raw_dtype).reshape(tile_shape)
        elif spec.kind == "gzip":
            tile = self._lossless_gzip(data, tile_shape)
        else:
            tile = self._decompress(data, tile_shape, spec)
        out = np.zeros(shape, dtype=BITPIX_TYPES[self.zbitpix])
        out[tuple(slice(0, n) for n in tile_shape)] = tile
        return out

    def _lossless_gzip(self, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        tiled = _tiled()
        buffer = tiled._decompress_tile(
            np.frombuffer(data, dtype=self.gzip_dtype), algorithm="GZIP_1"
        )
        return np.asarray(
            tiled._finalize_array(
                buffer, bitpix=self.zbitpix, tile_shape=shape, algorithm="GZIP_1", lossless=True
            )
        )

    def _decompress(self, data: bytes, shape: tuple[int, ...], spec: TileSpec) -> np.ndarray:
        # astropy's decompress_image_data_section, one tile
        tiled = _tiled()
        compressed = np.frombuffer(data, dtype=self.heap_dtype)
        settings = tiled._update_tile_settings(dict(self.settings), self.algorithm, shape)
        if self.algorithm == "GZIP_2":
            plain = np.asarray(tiled._decompress_tile(compressed, algorithm="GZIP_1"))
            settings["itemsize"] = plain.size // math.prod(shape)
        buffer = tiled._decompress_tile(compressed, algorithm=self.algorithm, **settings)
        tile = tiled._finalize_array(
            buffer,
            bitpix=self.zbitpix,
            tile_shape=shape,
            algorithm=self.algorithm,
            lossless=not self.quantized,
        )
        zblank = spec.zblank
        blanks = tile == zblank if zblank is not None else None
        if self.quantized:
            tile = self._dequantize(tile, shape, spec)
        if blanks is not None:
            if not tile.flags.writeable:
                tile = tile.copy()
            tile[blanks] = self.zblank if self.zbitpix > 0 else np.nan
        return np.asarray(tile)

    def _dequantize(self, tile: np.ndarray, shape: tuple[int, ...], spec: TileSpec) -> np.ndarray:
        from astropy.io.fits.hdu.compressed._quantization import Quantize

        quantize = Quantize(
            row=spec.dither_row,
            dither_method=self.dither_method,
            quantize_level=None,
            bitpix=self.zbitpix,
        )
        values = quantize.decode_quantized(tile, np.float64(spec.zscale), np.float64(spec.zzero))
        return np.asarray(values).reshape(shape)

    def encode_tile(self, values: np.ndarray) -> bytes:
        """Compress a whole tile (only for codecs whose tiles all decode the default way,
        without quantisation: others depend on per-tile parameters)."""
        if self.quantized or self.tiles or self.default != TileSpec(zblank=self.default.zblank):
            raise NotImplementedError(
                "only unquantised tile codecs without per-tile entries can encode"
            )
        tiled = _tiled()
        settings = tiled._update_tile_settings(dict(self.settings), self.algorithm, values.shape)
        compressed = bytes(tiled._compress_tile(values, algorithm=self.algorithm, **settings))
        if self.algorithm == "PLIO_1":
            # astropy stores PLIO's 16-bit words big-endian in the heap
            compressed = np.frombuffer(compressed, dtype="=i2").astype(">i2").tobytes()
        return compressed

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        values = self.decode_tile(chunk_bytes.to_bytes(), tuple(chunk_spec.shape))
        return chunk_spec.prototype.nd_buffer.from_numpy_array(values)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        data = self.encode_tile(chunk_array.as_numpy_array())
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    def compute_encoded_size(self, _input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable-size output, like zarr's own compressors


def _tile_entry(entry: Sequence[Any]) -> tuple[int, str, TileSpec]:
    if len(entry) == 3 and isinstance(entry[2], TileSpec):
        return int(entry[0]), str(entry[1]), entry[2]
    length, prefix, *spec = entry
    return int(length), str(prefix), TileSpec.from_json(spec)
