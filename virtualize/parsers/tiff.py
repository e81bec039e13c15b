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

import logging
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from zarr.codecs import BytesCodec, TransposeCodec, ZstdCodec
from zarr.codecs.numcodecs import Zlib

from virtualize.codecs.tiff import (
    TIFFComplexIntCodec,
    TIFFJPEGCodec,
    TIFFLERCCodec,
    TIFFLZWCodec,
    TIFFPackBitsCodec,
    TIFFPredictorCodec,
    TIFFStripCodec,
    TIFFUnpackCodec,
    TIFFWebPCodec,
)
from virtualize.errors import InvalidFileError, UnsupportedFeatureError
from virtualize.io import ObstoreFile, head
from virtualize.manifests import ChunkManifest, ManifestArray, ManifestGroup, SourceInfo
from virtualize.parsers.attributes import encode_fill_value
from virtualize.parsers.damaged import library_errors
from virtualize.parsers.geotiff import (
    GeoReference,
    level_georeference,
    pixel_centres,
    read_georeference,
)
from virtualize.parsers.hdf_common import array_metadata
from virtualize.parsers.hdf_types import zarr_data_type
from virtualize.parsers.inline import inline_array
from virtualize.registry import ObjectStoreRegistry, normalize_url
from virtualize.store import ManifestStore

__all__ = ["TIFFParser"]

VARIABLE = "data"
MASK_VARIABLE = "mask"
SPATIAL_REF = "spatial_ref"
MULTISCALES_SCHEMA = (
    "https://raw.githubusercontent.com/zarr-conventions/multiscales/refs/tags/v0.1/schema.json"
)
_HINT = "Convert the file (e.g. gdal_translate -co COMPRESS=DEFLATE) or open it with tifffile"
_UNCOMPRESSED = 1
_LZW = 5
_DEFLATE = (8, 32946)
_PACKBITS = 32773
_ZSTD = 50000
_JPEG = 7
_WEBP = 50001
_LERC = 34887
_LERC_PARAMETERS = 50674
_COMPRESSIONS = (_UNCOMPRESSED, _LZW, *_DEFLATE, _PACKBITS, _ZSTD, _JPEG, _WEBP, _LERC)
_COMPLEX_INT = 5
_YCBCR = 6


class TIFFParser:
    """Parse TIFF, BigTIFF, GeoTIFF and COG files into virtual arrays.

    By default the store's root holds the first image as ``"data"`` (and its internal
    mask, if any, as ``"mask"``), as :func:`rioxarray.open_rasterio` opens a file. With
    ``multiscales=True`` (what :func:`~virtualize.open_virtual_datatree` asks for) the store
    is a tree in the zarr ``multiscales`` convention: a root group with the ``multiscales``
    attributes and one group per resolution level, ``"0"`` (full resolution), ``"1"``,
    ``"2"``, ... (the COG's reduced-resolution overviews, largest first), each holding
    ``"data"`` and ``"mask"``; any other IFD of the file is a group ``"ifd_<index>"``.

    Parameters
    ----------
    ifd
        Index of one IFD (page) to open alone, as the root group's ``"data"``; None
        (default) for the first image and its mask.
    group
        One group of the multiscale tree to return as the root: ``"0"``, ``"1"``, ...
        or ``"ifd_<index>"`` (implies ``multiscales=True``).
    drop_variables
        Variable names to leave out of every group, e.g. ``["mask"]``.
    multiscales
        Return every IFD as the multiscale tree described above.
    on_unsupported
        ``"raise"`` (default) refuses the file when an image it opens can't be referenced;
        ``"skip"`` leaves such images out with a warning that says why.

    Examples
    --------
    >>> store = TIFFParser()("s3://bucket/scene.tif", registry)  # doctest: +SKIP
    >>> xr.open_zarr(store, consolidated=False, zarr_format=3)["data"]  # doctest: +SKIP
    >>> vz.open_virtual_datatree("s3://bucket/cog.tif", registry=registry)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        ifd: int | None = None,
        group: str | None = None,
        drop_variables: Iterable[str] | None = None,
        multiscales: bool = False,
        on_unsupported: Literal["raise", "skip"] = "raise",
    ) -> None:
        if ifd is not None and (isinstance(ifd, bool) or not isinstance(ifd, int) or ifd < 0):
            raise ValueError(f"ifd must be a non-negative integer or None, got {ifd!r}")
        if on_unsupported not in ("raise", "skip"):
            raise ValueError(f"on_unsupported must be 'raise' or 'skip', got {on_unsupported!r}")
        self.ifd = ifd
        self.group = None if group in (None, "", "/") else str(group).strip("/")
        if self.group is not None and ifd is not None:
            raise ValueError("pass ifd= or group=, not both")
        self.drop_variables = frozenset(drop_variables or ())
        self.multiscales = bool(multiscales) or self.group is not None
        self.on_unsupported = on_unsupported

    def __repr__(self) -> str:
        return (
            f"TIFFParser(ifd={self.ifd!r}, group={self.group!r}, "
            f"multiscales={self.multiscales!r}, on_unsupported={self.on_unsupported!r})"
        )

    def for_tree(self) -> TIFFParser:
        """This parser, returning the multiscale tree (for ``open_virtual_datatree``)."""
        if self.ifd is not None or self.multiscales:
            return self
        return TIFFParser(
            group=self.group,
            drop_variables=self.drop_variables,
            multiscales=True,
            on_unsupported=self.on_unsupported,
        )

    def __call__(self, url: str, registry: ObjectStoreRegistry) -> ManifestStore:
        """Parse ``url`` and return a :class:`~virtualize.ManifestStore` over its images."""
        url = normalize_url(url)
        source = head(registry, url)
        store, path = registry.resolve(url)
        with (
            ObstoreFile(store, path, int(source.size or 0)) as file,
            library_errors(url, "tifffile"),  # tifffile parses tags as they are used
        ):
            pages = _open_pages(file, url, every=self.multiscales, until=self.ifd or 0)
            builder = _Builder(self, url, source)
            if self.ifd is not None:
                if self.ifd >= len(pages):
                    raise InvalidFileError(
                        f"the file has {len(pages)} IFDs, no IFD {self.ifd}", url=url
                    )
                root = builder.level(_Level(pages[self.ifd], None), "")
            elif not self.multiscales:
                root = builder.level(_plan(pages).levels[0], "")
            else:
                root = builder.tree(_plan(pages))
        if self.group is not None:
            node = root.get_node(self.group)
            if not isinstance(node, ManifestGroup):
                raise InvalidFileError(
                    f"no group {self.group!r}",
                    url=url,
                    hint=f"Groups here: {sorted(root.groups)}",
                )
            root = node
        return ManifestStore(root, registry=registry)


class _NoDataLogFilter(logging.Filter):
    """Drops tifffile's warning that GDAL_NODATA doesn't fit the sample type: the parser
    reads that tag itself (:mod:`virtualize.parsers.geotiff`) and says what it does."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "GDAL_NODATA" not in record.getMessage()


if not any(isinstance(f, _NoDataLogFilter) for f in logging.getLogger("tifffile").filters):
    logging.getLogger("tifffile").addFilter(_NoDataLogFilter())


# -- which IFD goes where ---------------------------------------------------------------------

_REDUCED = 1
_MASK = 4


@dataclass(frozen=True)
class _Level:
    """One resolution level: its image IFD and the internal mask IFD that masks it."""

    page: Any
    mask: Any | None


@dataclass(frozen=True)
class _Plan:
    """The first image with its overviews (``levels[0]`` full resolution), and the rest."""

    levels: list[_Level]
    others: list[Any]


def _plan(pages: list[Any]) -> _Plan:
    """Sort IFDs into the first image, its overviews and masks (GDAL's COG layout: reduced
    images flagged ``NewSubfileType`` 1, masks 4, masks of overviews 5), and the rest."""
    main = pages[0]
    images = [main] + [
        p
        for p in pages[1:]
        if p.subfiletype & (_REDUCED | _MASK) == _REDUCED and _overview_of(p, main)
    ]
    masks = [p for p in pages[1:] if p.subfiletype & _MASK]
    levels = []
    used = {id(page) for page in images}
    for image in images:
        want = 0 if image is main else _REDUCED
        mask = next(
            (
                m
                for m in masks
                if id(m) not in used
                and m.subfiletype & _REDUCED == want
                and _size(m) == _size(image)
            ),
            None,
        )
        if mask is not None:
            used.add(id(mask))
        levels.append(_Level(image, mask))
    return _Plan(levels=levels, others=[p for p in pages if id(p) not in used])


def _size(page: Any) -> tuple[int, int]:
    return int(page.imagelength), int(page.imagewidth)


def _overview_of(page: Any, main: Any) -> bool:
    """Whether ``page`` is a reduced copy of ``main``: same samples and type, smaller."""
    return (
        page.samplesperpixel == main.samplesperpixel
        and page.dtype == main.dtype
        and _size(page)[0] <= _size(main)[0]
        and _size(page)[1] <= _size(main)[1]
    )


class _Builder:
    """Builds the groups of one file, honouring the parser's options."""

    def __init__(self, parser: TIFFParser, url: str, source: SourceInfo) -> None:
        self.parser = parser
        self.url = url
        self.source = source

    def tree(self, plan: _Plan) -> ManifestGroup:
        """The multiscale tree: a group per level, then a group per other IFD."""
        groups: dict[str, ManifestGroup] = {}
        layout: list[dict[str, Any]] = []
        full = _size(plan.levels[0].page)
        for number, level in enumerate(plan.levels):
            name = str(number)
            groups[name] = self.level(level, name)
            if VARIABLE not in groups[name].arrays:
                continue
            size = _size(level.page)
            entry: dict[str, Any] = {"asset": name}
            if number and "0" in groups and VARIABLE in groups["0"].arrays:
                entry["derived_from"] = "0"
                entry["transform"] = {"scale": [full[0] / size[0], full[1] / size[1]]}
            else:
                entry["transform"] = {"scale": [1.0, 1.0]}
            layout.append(entry)
        for page in plan.others:
            name = f"ifd_{page.index}"
            groups[name] = self.level(_Level(page, None), name)
        attributes = _multiscales(layout) if layout else {}
        return ManifestGroup({}, groups, attributes)

    def level(self, level: _Level, group: str) -> ManifestGroup:
        """The group of one image: ``"data"`` and ``"mask"`` if it has one, with the
        coordinates and ``spatial_ref`` of its georeferencing, if any."""
        arrays: dict[str, ManifestArray] = {}
        attributes: dict[str, Any] = {}
        georeference = self.georeference(level.page)
        image = self.array(level.page, group, VARIABLE, georeference)
        if image is not None:
            arrays[VARIABLE], attributes = image
        if level.mask is not None:
            mask = self.array(level.mask, group, MASK_VARIABLE, georeference)
            if mask is not None:
                arrays[MASK_VARIABLE] = mask[0]
        if arrays and georeference is not None:
            arrays.update(_coordinates(georeference, level.page))
        return ManifestGroup(arrays, {}, attributes)

    def georeference(self, page: Any) -> GeoReference | None:
        """The page's georeferencing; an overview without GeoTIFF tags of its own takes the
        first image's, at its resolution (as GDAL does)."""
        own = read_georeference(page, self.url)
        first = page.parent.pages[0]
        if own is not None or not page.subfiletype & _REDUCED or page.index == 0:
            return own
        main = read_georeference(first, self.url)
        if main is None or not _overview_of(page, first):
            return None
        return level_georeference(main, _size(first), _size(page))

    def array(
        self, page: Any, group: str, name: str, georeference: GeoReference | None
    ) -> tuple[ManifestArray, dict[str, Any]] | None:
        if name in self.parser.drop_variables:
            return None
        variable = f"{group}/{name}" if group else name
        try:
            layout = _layout(page, self.url, variable)
        except UnsupportedFeatureError as error:
            if self.parser.on_unsupported != "skip":
                raise
            warnings.warn(f"left out: {error}", UserWarning, stacklevel=4)
            return None
        attributes: dict[str, Any] = {"tiff:ifd": int(page.index)}
        if georeference is not None and name == VARIABLE:
            attributes.update(_data_attributes(georeference, layout.dtype, self.url, variable))
        if georeference is not None:
            attributes.update(_coordinate_attributes(georeference))
        array = _array(layout, self.url, self.source, attributes)
        return array, layout.attributes


def _data_attributes(
    georeference: GeoReference, dtype: np.dtype[Any], url: str, variable: str
) -> dict[str, Any]:
    """rioxarray's attributes of the image, with the nodata value as ``_FillValue`` when
    the data type holds it, else as ``nodata`` (and a warning)."""
    attributes = dict(georeference.attributes)
    nodata = georeference.nodata
    if nodata is not None and nodata.representable:
        value = np.asarray(nodata.value).astype(dtype)[()]  # complex from a real nodata
        attributes["_FillValue"] = encode_fill_value(value, dtype)
    elif nodata is not None:
        attributes["nodata"] = nodata.text
        warnings.warn(
            f"{url}: variable {variable!r}: {nodata.message}; kept as attribute 'nodata', "
            "not as _FillValue",
            UserWarning,
            stacklevel=6,
        )
    return attributes


def _coordinate_attributes(georeference: GeoReference) -> dict[str, Any]:
    """CF ``coordinates`` (so that readers make ``spatial_ref`` a coordinate) and
    ``grid_mapping``."""
    if not georeference.crs_attributes:
        return {}
    return {"coordinates": SPATIAL_REF, "grid_mapping": SPATIAL_REF}


def _coordinates(georeference: GeoReference, page: Any) -> dict[str, ManifestArray]:
    """``x``/``y`` pixel centres, ``band`` numbers and the scalar ``spatial_ref``, as
    rioxarray builds them; held inline."""
    height, width = _size(page)
    arrays: dict[str, ManifestArray] = {}
    if georeference.transform is not None:
        centres = pixel_centres(georeference.transform, height, width)
        # a rotated grid has no 1-D coordinates; its transform is in spatial_ref's
        # GeoTransform (rioxarray's 2-D xc/yc would be as large as the image, held inline)
        if centres is not None:
            arrays["x"] = inline_array(centres[0], ("x",))
            arrays["y"] = inline_array(centres[1], ("y",))
    if int(page.samplesperpixel) > 1:
        arrays["band"] = inline_array(np.arange(1, int(page.samplesperpixel) + 1), ("band",))
    if georeference.crs_attributes:
        arrays[SPATIAL_REF] = inline_array(
            np.array(0, dtype=np.int64), (), georeference.crs_attributes
        )
    return arrays


def _multiscales(layout: list[dict[str, Any]]) -> dict[str, Any]:
    """Group attributes of the zarr ``multiscales`` convention over the image's levels."""
    return {
        "zarr_conventions": [
            {
                "name": "multiscales",
                "uuid": "d35379db-88df-4056-af3a-620245f8e347",
                "schema_url": MULTISCALES_SCHEMA,
                "spec_url": "https://github.com/zarr-conventions/multiscales/blob/v0.1/README.md",
            }
        ],
        "multiscales": {"layout": layout},
    }


# -- reading the IFD --------------------------------------------------------------------------


def _open_pages(file: ObstoreFile, url: str, *, every: bool, until: int = 0) -> list[Any]:
    """The file's top-level IFDs as tifffile pages, read while ``file`` is open: all of them
    (``every``), else IFDs 0 to ``until`` and then those that are overviews or masks (a long
    multi-page file is not read to its end to open its first image)."""
    import tifffile

    pages: list[Any] = []
    try:
        tiff = tifffile.TiffFile(file)  # type: ignore[arg-type]  # any binary file object
        tiff.pages.useframes = False
        while True:
            try:
                page: Any = tiff.pages[len(pages)]
            except IndexError:
                break
            if not every and len(pages) > until and not page.subfiletype & (_REDUCED | _MASK):
                break
            pages.append(page)
    except (InvalidFileError, UnsupportedFeatureError):
        raise
    except Exception as error:  # tifffile on damaged tags: TypeError, IndexError, struct.error...
        raise InvalidFileError(
            f"not a readable TIFF file ({type(error).__name__}: {error})",
            url=url,
            hint="The file is damaged or truncated, or not a TIFF: pick the parser that "
            "matches its format",
        ) from error
    if not pages:
        raise InvalidFileError(
            "the TIFF file has no image (no IFD)",
            url=url,
            hint="The file is damaged or truncated",
        )
    return pages


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


def _layout(page: Any, url: str, variable: str = VARIABLE) -> _Layout:
    """The layout of ``page``'s image; refusals name ``variable``."""
    try:
        return _page_layout(page, url)
    except (UnsupportedFeatureError, InvalidFileError) as error:
        if variable == VARIABLE:
            raise
        raise type(error)(
            error.reason, url=error.url, variable=variable, hint=error.hint
        ) from error.__cause__


def _dtype(page: Any, url: str) -> np.dtype[Any]:
    """The samples' numpy type (native byte order), as tifffile reads them."""
    bits = page.bitspersample
    if isinstance(bits, tuple):
        raise _refuse(url, f"samples of different sizes ({bits} bits) are not supported")
    if page.dtype is None or np.dtype(page.dtype).kind not in "uifcb":
        raise _refuse(url, f"sample format {page.sampleformat} of {bits} bits is not supported")
    if _packed(page) and page.sampleformat != 1:
        raise _refuse(url, f"signed or float samples of {bits} bits are not supported")
    # by kind and size: tifffile may say "Q" (ulonglong), which zarr knows as "L"
    dtype = np.dtype(page.dtype)
    return dtype if dtype.kind == "b" else np.dtype(f"{dtype.kind}{dtype.itemsize}")


def _packed(page: Any) -> bool:
    """Samples packed at a bit depth other than a whole 8, 16, 32, 64 or 128 bits."""
    return page.bitspersample not in (8, 16, 32, 64, 128)


def _complex_int(page: Any) -> bool:
    return int(page.sampleformat) == _COMPLEX_INT


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
    if page.fillorder != 1 and not (_packed(page) and page.compression == _UNCOMPRESSED):
        raise _refuse(url, "FillOrder 2 (bit-reversed bytes) is only supported uncompressed")
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
    if page.predictor != 1 and (_packed(page) or dtype.kind == "c"):
        what = "complex" if dtype.kind == "c" else f"{page.bitspersample}-bit"
        raise _refuse(url, f"a predictor on {what} samples is not supported")


def _page_layout(page: Any, url: str) -> _Layout:
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
    if any(c <= 0 for c in chunks):
        raise InvalidFileError(
            f"the image's segments (tiles or strips) have an empty shape {chunks}",
            url=url,
            hint="The file's TileWidth/TileLength/RowsPerStrip tags are damaged",
        )
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
    if page.compression == _LERC:
        # LERC's values come out in the file's byte order, as tifffile reads them; the
        # predictor codec turns them little-endian
        codecs.append(_bytes_codec(dtype, "<" if predictor > 1 else page.parent.byteorder))
        if predictor > 1:
            codecs.append(_predictor_codec(page, interleaved, samples, page.parent.byteorder))
        codecs.append(_lerc_codec(page, segment, samples if interleaved else 1))
        return codecs
    decoded = "<" if predictor > 1 or _packed(page) or _complex_int(page) else None
    codecs.append(_bytes_codec(dtype, decoded or page.parent.byteorder))
    if predictor > 1:
        codecs.append(_predictor_codec(page, interleaved, samples, page.parent.byteorder))
    if _packed(page):
        codecs.append(
            TIFFUnpackCodec(
                bitspersample=int(page.bitspersample),
                rows=segment[0],
                width=segment[1],
                samples=samples if interleaved else 1,
                byteorder=page.parent.byteorder,
                fillorder=int(page.fillorder),
            )
        )
    elif _complex_int(page):
        codecs.append(
            TIFFComplexIntCodec(
                intsize=dtype.itemsize // 4,
                byteorder=page.parent.byteorder,
                rows=segment[0],
            )
        )
    elif not page.is_tiled:
        codecs.append(TIFFStripCodec(rows=segment[0]))
    compressor = _compressor(int(page.compression))
    if compressor is not None:
        codecs.append(compressor)
    return codecs


def _bytes_codec(dtype: np.dtype[Any], byteorder: str) -> BytesCodec:
    if dtype.itemsize == 1:
        return BytesCodec(endian=None)
    return BytesCodec(endian="little" if byteorder == "<" else "big")


def _predictor_codec(
    page: Any, interleaved: bool, samples: int, byteorder: Literal["<", ">"]
) -> TIFFPredictorCodec:
    return TIFFPredictorCodec(
        predictor=int(page.predictor),
        byteorder=byteorder,
        samples=samples if interleaved else 1,
    )


def _lerc_codec(page: Any, segment: tuple[int, int], samples: int) -> TIFFLERCCodec:
    parameters = page.tags.valueof(_LERC_PARAMETERS) or (0, 0)
    compression = int(parameters[1]) if len(parameters) > 1 else 0
    return TIFFLERCCodec(
        rows=segment[0], width=segment[1], samples=samples, compression=compression
    )


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


def _array(
    layout: _Layout, url: str, source: SourceInfo, attributes: dict[str, Any]
) -> ManifestArray:
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
        attributes,
        layout.dimensions,
    )
    return ManifestArray(metadata, manifest)
