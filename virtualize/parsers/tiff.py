"""TIFF parser: chunk manifests from the image file directories (IFDs) of a TIFF, read with
tifffile.

The IFDs are parsed by :class:`tifffile.TiffFile` over a block-cached
:class:`~virtualize.io.ObstoreFile`, so only metadata is read, through obstore and the
:class:`~virtualize.ObjectStoreRegistry`; the file is never opened by a local path. Values
read through the returned store equal ``tifffile.TiffFile(path).pages[ifd].asarray()``
(with the band axis first, see below).

Layout of the store
-------------------
The root group holds one variable, ``"data"``, the image of one IFD (the first, full
resolution one unless ``TIFFParser(ifd=...)`` says otherwise):

- one sample per pixel: dimensions ``("y", "x")``;
- several samples per pixel (RGB, multi-band): ``("band", "y", "x")``, band first as in
  rioxarray, whatever the planar configuration. Pixel-interleaved (chunky, ``PlanarConfig
  = 1``) segments decode to ``(rows, width, band)``; a zarr ``transpose`` codec presents
  them band first, so each chunk holds every band. Band-separate (planar, ``PlanarConfig =
  2``) segments are chunks of one band each.

Strips and tiles are chunks: tiles of ``(TileLength, TileWidth)``, strips of
``(RowsPerStrip, ImageWidth)``. Edge tiles are stored whole, so zarr's partial last chunks
read them as they are; the last strip, stored short, is padded to a whole chunk by
:class:`~virtualize.codecs.tiff.TIFFStripCodec`. Sparse segments (byte count 0) are missing
chunks and read as the fill value, tifffile's ``nodata`` (``GDAL_NODATA``, else 0).

Compressions: none (1), deflate (8, 32946; zarr's ``numcodecs.zlib``), LZW (5), PackBits
(32773), zstd (50000; zarr's ``zstd``) and JPEG (7, with its ``JPEGTables``; YCbCr,
subsampled or not, converted to RGB by libjpeg as tifffile does;
:class:`~virtualize.codecs.tiff.TIFFJPEGCodec`) and WEBP (50001; 8-bit interleaved RGB or
RGBA, :class:`~virtualize.codecs.tiff.TIFFWebPCodec`), with predictor none (1), horizontal differencing
(2; of floats too, as tifffile undoes it) or floating point (3, floats); samples of 8, 16, 32 or 64 bits, unsigned,
signed or floating point; either byte order; classic TIFF and BigTIFF. Anything else is
refused with :class:`~virtualize.errors.UnsupportedFeatureError`.

The group's attributes are ``tiff:compression``, ``tiff:predictor``, ``tiff:photometric``
and ``tiff:planar_configuration`` (tifffile's names).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from zarr.codecs import BytesCodec, TransposeCodec, ZstdCodec
from zarr.codecs.numcodecs import Zlib

from virtualize.codecs.tiff import (
    TIFFJPEGCodec,
    TIFFLZWCodec,
    TIFFPackBitsCodec,
    TIFFPredictorCodec,
    TIFFStripCodec,
    TIFFWebPCodec,
)
from virtualize.errors import InvalidFileError, UnsupportedFeatureError
from virtualize.io import ObstoreFile, head
from virtualize.manifests import ChunkManifest, ManifestArray, ManifestGroup, SourceInfo
from virtualize.parsers.hdf_common import array_metadata
from virtualize.parsers.hdf_types import zarr_data_type
from virtualize.registry import ObjectStoreRegistry, normalize_url
from virtualize.store import ManifestStore

__all__ = ["TIFFParser"]

VARIABLE = "data"
_HINT = "Convert the file (e.g. gdal_translate -co COMPRESS=DEFLATE) or open it with tifffile"
_UNCOMPRESSED = 1
_LZW = 5
_DEFLATE = (8, 32946)
_PACKBITS = 32773
_ZSTD = 50000
_JPEG = 7
_WEBP = 50001
_COMPRESSIONS = (_UNCOMPRESSED, _LZW, *_DEFLATE, _PACKBITS, _ZSTD, _JPEG, _WEBP)
_YCBCR = 6


class TIFFParser:
    """Parse TIFF, BigTIFF, GeoTIFF and COG files (one IFD) into a virtual ``"data"`` array.

    Parameters
    ----------
    ifd
        Index of the IFD (page) to open; None (default) for the first.
    group
        Only the root (None, ``""`` or ``"/"``): a TIFF image has no groups. Accepted so that
        ``open_virtual_dataset`` can pass it to every parser.
    drop_variables
        ``["data"]`` leaves the image out (an empty dataset).

    Examples
    --------
    >>> store = TIFFParser()("s3://bucket/scene.tif", registry)  # doctest: +SKIP
    >>> xr.open_zarr(store, consolidated=False, zarr_format=3)["data"]  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        ifd: int | None = None,
        group: str | None = None,
        drop_variables: Iterable[str] | None = None,
    ) -> None:
        if ifd is not None and (isinstance(ifd, bool) or not isinstance(ifd, int) or ifd < 0):
            raise ValueError(f"ifd must be a non-negative integer or None, got {ifd!r}")
        if group not in (None, "", "/"):
            raise ValueError(f"a TIFF image has no groups; group must be None, got {group!r}")
        self.ifd = ifd
        self.drop_variables = frozenset(drop_variables or ())

    def __repr__(self) -> str:
        return f"TIFFParser(ifd={self.ifd!r})"

    def __call__(self, url: str, registry: ObjectStoreRegistry) -> ManifestStore:
        """Parse ``url`` and return a :class:`~virtualize.ManifestStore` over its image."""
        url = normalize_url(url)
        source = head(registry, url)
        store, path = registry.resolve(url)
        with ObstoreFile(store, path, int(source.size or 0)) as file:
            page = _open_page(file, url, self.ifd or 0)
            layout = _layout(page, url)
        arrays = {} if VARIABLE in self.drop_variables else {VARIABLE: _array(layout, url, source)}
        root = ManifestGroup(arrays, {}, layout.attributes)
        return ManifestStore(root, registry=registry)


# -- reading the IFD --------------------------------------------------------------------------


def _open_page(file: ObstoreFile, url: str, index: int) -> Any:
    """The tifffile page (IFD) ``index``, read while ``file`` is open."""
    import tifffile

    try:
        tiff = tifffile.TiffFile(file)  # type: ignore[arg-type]  # any binary file object
    except (tifffile.TiffFileError, ValueError, IndexError, KeyError) as error:
        raise InvalidFileError(
            f"not a readable TIFF file ({error})",
            url=url,
            hint="Pick the parser that matches the file's format",
        ) from error
    if index >= len(tiff.pages):
        raise InvalidFileError(f"the file has {len(tiff.pages)} IFDs, no IFD {index}", url=url)
    return tiff.pages[index]


@dataclass(frozen=True)
class _Layout:
    """How one IFD's image is stored: shape, chunks, codecs and where each segment is."""

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dimensions: tuple[str, ...]
    dtype: np.dtype[Any]
    codecs: list[Any]
    fill_value: Any
    offsets: np.ndarray
    lengths: np.ndarray
    attributes: dict[str, Any]


def _refuse(url: str, reason: str) -> UnsupportedFeatureError:
    return UnsupportedFeatureError(reason, url=url, variable=VARIABLE, hint=_HINT)


def _dtype(page: Any, url: str) -> np.dtype[Any]:
    """The samples' numpy type (native byte order), refusing packed and odd ones."""
    bits = page.bitspersample
    if isinstance(bits, tuple) or bits not in (8, 16, 32, 64):
        raise _refuse(url, f"{bits} bits per sample (only 8, 16, 32 and 64 are referenced)")
    if page.dtype is None or np.dtype(page.dtype).kind not in "uif":
        raise _refuse(url, f"sample format {page.sampleformat} (only integers and floats)")
    # by kind and size: tifffile may say "Q" (ulonglong), which zarr knows as "L"
    dtype = np.dtype(page.dtype)
    return np.dtype(f"{dtype.kind}{dtype.itemsize}")


def _check_page(page: Any, url: str) -> None:
    if page.compression not in _COMPRESSIONS:
        name = getattr(page.compression, "name", page.compression)
        raise _refuse(url, f"compression {name} ({int(page.compression)}) is not supported yet")
    if page.imagedepth > 1 or page.tiledepth > 1:
        raise _refuse(url, "volumetric (ImageDepth > 1) images are not supported")
    if page.compression == _JPEG:
        _check_jpeg(page, url)
        return  # tifffile ignores FillOrder and the predictor with JPEG
    if page.compression == _WEBP:
        _check_webp(page, url)
    if page.fillorder != 1:
        raise _refuse(url, "FillOrder 2 (bit-reversed bytes) is not supported")
    if page.photometric == _YCBCR and tuple(page.subsampling or (1, 1)) != (1, 1):
        raise _refuse(url, "subsampled YCbCr without JPEG is not supported")
    if page.predictor not in (1, 2, 3):
        raise _refuse(url, f"predictor {int(page.predictor)} is not supported")


def _check_jpeg(page: Any, url: str) -> None:
    if getattr(page, "jpegheader", None) is not None:
        raise _refuse(url, "JPEG segments without their own header (NDPI) are not supported")
    if page.bitspersample not in (8, 16):
        raise _refuse(url, f"JPEG of {page.bitspersample} bits per sample is not supported")


def _check_webp(page: Any, url: str) -> None:
    if int(page.samplesperpixel) not in (3, 4) or page.planarconfig != 1:
        raise _refuse(url, "WEBP other than interleaved RGB or RGBA is not supported")
    if page.bitspersample != 8:
        raise _refuse(url, f"WEBP of {page.bitspersample} bits per sample is not supported")
    if page.predictor != 1:
        raise _refuse(url, f"WEBP with predictor {int(page.predictor)} is not supported")


def _check_predictor(page: Any, dtype: np.dtype[Any], url: str) -> None:
    if page.compression == _JPEG:
        return
    if page.predictor == 3 and dtype.kind != "f":
        raise _refuse(url, "the floating-point predictor (3) on integer samples is invalid")


def _layout(page: Any, url: str) -> _Layout:
    _check_page(page, url)
    dtype = _dtype(page, url)
    _check_predictor(page, dtype, url)
    samples = int(page.samplesperpixel)
    height, width = int(page.imagelength), int(page.imagewidth)
    if page.is_tiled:
        segment = (int(page.tilelength), int(page.tilewidth))
    else:
        segment = (max(min(int(page.rowsperstrip), height), 1), width)
    planar = samples > 1 and page.planarconfig == 2
    interleaved = samples > 1 and not planar
    shape: tuple[int, ...] = (height, width)
    chunks: tuple[int, ...] = segment
    dimensions: tuple[str, ...] = ("y", "x")
    if samples > 1:
        shape = (samples, height, width)
        chunks = (1 if planar else samples, *segment)
        dimensions = ("band", "y", "x")
    offsets, lengths = _segments(page, shape, chunks, url)
    codecs = _codecs(page, dtype, segment, interleaved, samples, url)
    return _Layout(
        shape=shape,
        chunks=chunks,
        dimensions=dimensions,
        dtype=dtype,
        codecs=codecs,
        fill_value=_fill_value(page, dtype),
        offsets=offsets,
        lengths=lengths,
        attributes=_attributes(page),
    )


def _segments(
    page: Any, shape: tuple[int, ...], chunks: tuple[int, ...], url: str
) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and byte counts of the segments, shaped like the chunk grid."""
    grid = tuple(-(-n // c) for n, c in zip(shape, chunks, strict=True))
    offsets = np.asarray(page.dataoffsets, dtype=np.uint64)
    lengths = np.asarray(page.databytecounts, dtype=np.uint64)
    if offsets.size != math.prod(grid) or lengths.size != offsets.size:
        raise InvalidFileError(
            f"the IFD lists {offsets.size} segments for a grid of {math.prod(grid)}",
            url=url,
            variable=VARIABLE,
        )
    return offsets.reshape(grid), lengths.reshape(grid)


def _codecs(
    page: Any,
    dtype: np.dtype[Any],
    segment: tuple[int, int],
    interleaved: bool,
    samples: int,
    url: str,
) -> list[Any]:
    """The zarr codecs of one segment, in zarr's (encoding) order."""
    codecs: list[Any] = []
    if interleaved:
        # segments hold (rows, width, band); the array is (band, y, x)
        codecs.append(TransposeCodec(order=(1, 2, 0)))
    if page.compression == _JPEG:
        codecs.append(BytesCodec(endian=None if dtype.itemsize == 1 else "little"))
        codecs.append(_jpeg_codec(page, segment))
        return codecs
    if page.compression == _WEBP:
        codecs.append(BytesCodec(endian=None))
        codecs.append(TIFFWebPCodec(rows=segment[0], width=segment[1], hasalpha=samples == 4))
        return codecs
    predictor = int(page.predictor)
    byteorder = "<" if predictor > 1 else page.parent.byteorder
    endian: Literal["little", "big"] = "little" if byteorder == "<" else "big"
    codecs.append(BytesCodec(endian=None if dtype.itemsize == 1 else endian))
    if predictor > 1:
        codecs.append(
            TIFFPredictorCodec(
                predictor=predictor,
                byteorder=page.parent.byteorder,
                samples=samples if interleaved else 1,
            )
        )
    if not page.is_tiled:
        codecs.append(TIFFStripCodec(rows=segment[0]))
    compressor = _compressor(int(page.compression))
    if compressor is not None:
        codecs.append(compressor)
    return codecs


def _jpeg_codec(page: Any, segment: tuple[int, int]) -> TIFFJPEGCodec:
    """JPEG decoding with the tables and colour spaces tifffile uses for ``page``."""
    from tifffile.tifffile import jpeg_decode_colorspace

    colorspace, outcolorspace = jpeg_decode_colorspace(
        int(page.photometric),
        int(page.planarconfig),
        tuple(page.extrasamples),
        bool(page.is_jfif),
    )
    return TIFFJPEGCodec.from_tables(
        page.jpegtables,
        rows=segment[0],
        width=segment[1],
        colorspace=None if colorspace is None else int(colorspace),
        outcolorspace=_colorspace(outcolorspace),
    )


def _colorspace(value: Any) -> int | str | None:
    if value is None or isinstance(value, str):
        return value
    return int(value)


def _compressor(compression: int) -> Any:
    if compression in _DEFLATE:
        return Zlib()
    if compression == _ZSTD:
        return ZstdCodec(level=0)
    if compression == _LZW:
        return TIFFLZWCodec()
    if compression == _PACKBITS:
        return TIFFPackBitsCodec()
    return None


def _fill_value(page: Any, dtype: np.dtype[Any]) -> Any:
    """tifffile's value for sparse segments: ``nodata`` (GDAL_NODATA), else 0."""
    value = np.array(page.nodata).astype(dtype)
    return value.item()


def _attributes(page: Any) -> dict[str, Any]:
    def name(value: Any) -> str:
        return str(getattr(value, "name", value))

    return {
        "tiff:compression": name(page.compression),
        "tiff:predictor": name(page.predictor),
        "tiff:photometric": name(page.photometric),
        "tiff:planar_configuration": name(page.planarconfig),
    }


def _array(layout: _Layout, url: str, source: SourceInfo) -> ManifestArray:
    # tifffile reads a segment without an offset or without bytes as missing
    present = (layout.lengths > 0) & (layout.offsets > 0)
    manifest = ChunkManifest.from_single_url(
        url, layout.offsets, layout.lengths, present=present, source=source
    )
    metadata = array_metadata(
        layout.shape,
        layout.chunks,
        zarr_data_type(layout.dtype),
        layout.fill_value,
        layout.codecs,
        None,
        layout.dimensions,
    )
    return ManifestArray(metadata, manifest)
