"""GeoTIFF georeferencing of a TIFF page, derived the way rioxarray (and so GDAL) presents it.

What
    :func:`read_georeference` reads the GeoTIFF and GDAL tags of one ``tifffile.TiffPage`` and
    returns a :class:`GeoReference`: the GDAL geotransform, the attributes of rioxarray's scalar
    ``spatial_ref`` coordinate (CRS as WKT plus pyproj's CF grid-mapping attributes,
    ``GeoTransform``, ``gcps``, ``rpcs``), the attributes of the data variable
    (``AREA_OR_POINT``, ``GDAL_METADATA`` items, ``TIFFTAG_*`` items, scale/offset, band
    descriptions and units) and the nodata value. :func:`pixel_centres` gives the 1-D ``x``/``y``
    coordinates rioxarray builds from a transform, bit for bit, and :func:`level_transform` the
    transform GDAL gives a reduced-resolution IFD (COG overview).

How
    Only tag values are read, never pixels. The geotransform follows GDAL's GTiff driver:
    ModelPixelScale + the first ModelTiepoint (y scale taken as negative whatever its sign), else
    ModelTransformation; several tiepoints without a pixel scale are ground control points.
    ``GTRasterTypeGeoKey = PixelIsPoint`` moves the origin (or the GCPs' pixel positions) by half
    a pixel, as GDAL does by default (``GTIFF_POINT_GEO_IGNORE=NO``). The CRS comes from the EPSG
    code in ``ProjectedCSTypeGeoKey`` / ``GeographicTypeGeoKey``; a user-defined CRS is rebuilt
    from its geokeys as a PROJ string (a geographic CRS, or one of the common coordinate
    transformations), or from an ``ESRI PE String`` citation. The CRS needs pyproj, an optional
    dependency: without it, or when the keys describe nothing pyproj can build,
    ``crs_attributes`` holds ``"crs": "EPSG:<code>"`` when there is a code and always the raw
    geokeys as ``"geotiff:geokeys"`` (key name -> value), with no ``crs_wkt``.

Deliberate differences from rioxarray
    ``scale_factor`` = 1.0 and ``add_offset`` = 0.0, which rioxarray writes on every variable,
    are left out: xarray would decode integer data to floats for an identity transformation.
    A nodata value the data type cannot hold exactly (``-9999`` on uint8, ``nan`` on integers,
    ``1.5`` on uint8) is reported with ``representable=False``: rioxarray drops the first two
    and casts the last to 1, which would mask valid pixels.
"""

from __future__ import annotations

import contextlib
import html
import importlib
import json
import math
import re
import warnings
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any

import numpy as np

from virtualize.errors import InvalidFileError

__all__ = [
    "GeoReference",
    "NoData",
    "Transform",
    "level_georeference",
    "level_transform",
    "pixel_centres",
    "read_georeference",
]

Transform = tuple[float, float, float, float, float, float]

_MODEL_PIXEL_SCALE = 33550
_MODEL_TIEPOINT = 33922
_MODEL_TRANSFORMATION = 34264
_GEO_KEY_DIRECTORY = 34735
_GEO_DOUBLE_PARAMS = 34736
_GEO_ASCII_PARAMS = 34737
_GDAL_METADATA = 42112
_GDAL_NODATA = 42113
_RPC_COEFFICIENTS = 50844

_USER_DEFINED = 32767
_PIXEL_IS_POINT = 2

# GDAL reports these baseline TIFF tags as TIFFTAG_* metadata items (gtiffdataset_read.cpp).
_TIFFTAG_ITEMS = {
    269: "TIFFTAG_DOCUMENTNAME",
    270: "TIFFTAG_IMAGEDESCRIPTION",
    305: "TIFFTAG_SOFTWARE",
    306: "TIFFTAG_DATETIME",
    315: "TIFFTAG_ARTIST",
    316: "TIFFTAG_HOSTCOMPUTER",
    33432: "TIFFTAG_COPYRIGHT",
    282: "TIFFTAG_XRESOLUTION",
    283: "TIFFTAG_YRESOLUTION",
    296: "TIFFTAG_RESOLUTIONUNIT",
    280: "TIFFTAG_MINSAMPLEVALUE",
    281: "TIFFTAG_MAXSAMPLEVALUE",
}
_RESOLUTION_UNITS = {1: "1 (unitless)", 2: "2 (pixels/inch)", 3: "3 (pixels/cm)"}

_GEOKEY_NAMES = {
    1024: "GTModelTypeGeoKey",
    1025: "GTRasterTypeGeoKey",
    1026: "GTCitationGeoKey",
    2048: "GeographicTypeGeoKey",
    2049: "GeogCitationGeoKey",
    2050: "GeogGeodeticDatumGeoKey",
    2051: "GeogPrimeMeridianGeoKey",
    2052: "GeogLinearUnitsGeoKey",
    2053: "GeogLinearUnitSizeGeoKey",
    2054: "GeogAngularUnitsGeoKey",
    2055: "GeogAngularUnitSizeGeoKey",
    2056: "GeogEllipsoidGeoKey",
    2057: "GeogSemiMajorAxisGeoKey",
    2058: "GeogSemiMinorAxisGeoKey",
    2059: "GeogInvFlatteningGeoKey",
    2060: "GeogAzimuthUnitsGeoKey",
    2061: "GeogPrimeMeridianLongGeoKey",
    2062: "GeogTOWGS84GeoKey",
    3072: "ProjectedCSTypeGeoKey",
    3073: "PCSCitationGeoKey",
    3074: "ProjectionGeoKey",
    3075: "ProjCoordTransGeoKey",
    3076: "ProjLinearUnitsGeoKey",
    3077: "ProjLinearUnitSizeGeoKey",
    3078: "ProjStdParallel1GeoKey",
    3079: "ProjStdParallel2GeoKey",
    3080: "ProjNatOriginLongGeoKey",
    3081: "ProjNatOriginLatGeoKey",
    3082: "ProjFalseEastingGeoKey",
    3083: "ProjFalseNorthingGeoKey",
    3084: "ProjFalseOriginLongGeoKey",
    3085: "ProjFalseOriginLatGeoKey",
    3086: "ProjFalseOriginEastingGeoKey",
    3087: "ProjFalseOriginNorthingGeoKey",
    3088: "ProjCenterLongGeoKey",
    3089: "ProjCenterLatGeoKey",
    3090: "ProjCenterEastingGeoKey",
    3091: "ProjCenterNorthingGeoKey",
    3092: "ProjScaleAtNatOriginGeoKey",
    3093: "ProjScaleAtCenterGeoKey",
    3094: "ProjAzimuthAngleGeoKey",
    3095: "ProjStraightVertPoleLongGeoKey",
    3096: "ProjRectifiedGridAngleGeoKey",
    4096: "VerticalCSTypeGeoKey",
    4097: "VerticalCitationGeoKey",
    4098: "VerticalDatumGeoKey",
    4099: "VerticalUnitsGeoKey",
}

# RPCCoefficientTag order (GDAL's gt_rpc / rasterio.rpc.RPC names, lower case as to_dict).
_RPC_SCALARS = (
    "err_bias",
    "err_rand",
    "line_off",
    "samp_off",
    "lat_off",
    "long_off",
    "height_off",
    "line_scale",
    "samp_scale",
    "lat_scale",
    "long_scale",
    "height_scale",
)
_RPC_ARRAYS = ("line_num_coeff", "line_den_coeff", "samp_num_coeff", "samp_den_coeff")

_HINT = "Open the file with rioxarray to see how GDAL reads it, or fix the GeoTIFF tags"


@dataclass(frozen=True)
class NoData:
    """The ``GDAL_NODATA`` value of a page.

    Attributes
    ----------
    value
        The parsed value: for a float data type rounded to it as GDAL does (a Python float,
        possibly ``nan`` or ``inf``), for an integer type a Python int when it is one, else the
        float parsed from the tag.
    representable
        Whether the page's data type holds ``value`` exactly. If so the parser sets
        ``_FillValue``; if not it keeps ``text`` as attribute ``nodata`` and warns ``message``.
    message
        The warning text when not representable, else ``None``.
    text
        The tag's string, stripped.
    """

    value: Any
    representable: bool
    message: str | None
    text: str = ""


@dataclass(frozen=True)
class GeoReference:
    """Georeferencing of one TIFF page as rioxarray presents it.

    Attributes
    ----------
    transform
        GDAL geotransform ``(x0, xres, xrot, y0, yrot, yres)``; ``None`` when the page is
        georeferenced by GCPs or RPCs (rioxarray then builds no ``x``/``y`` coordinates).
    crs_attributes
        Attributes of the scalar ``spatial_ref`` coordinate: ``crs_wkt`` and ``spatial_ref``
        (the same WKT1-GDAL string), pyproj's ``CRS.to_cf()`` items, ``GeoTransform``
        (space-separated, as rioxarray), ``gcps`` (a GeoJSON FeatureCollection as a JSON string,
        exactly rioxarray's) and ``rpcs`` (JSON of ``rasterio.rpc.RPC.to_dict()``). Without
        pyproj, or for a CRS that cannot be built, ``crs`` (``"EPSG:<code>"``, when known) and
        ``geotiff:geokeys`` instead of the WKT. Empty when the page has no CRS.
    attributes
        Attributes of the data variable: ``AREA_OR_POINT``, ``GDAL_METADATA`` items (numbers
        parsed as rioxarray does), ``TIFFTAG_*`` items, ``scale_factor``/``add_offset`` (or
        ``scales``/``offsets`` lists when bands differ) unless the identity, ``long_name`` and
        ``units`` from band descriptions and unit types.
    nodata
        The ``GDAL_NODATA`` value, or ``None``.
    """

    transform: Transform | None
    crs_attributes: dict[str, Any]
    attributes: dict[str, Any]
    nodata: NoData | None


def read_georeference(page: Any, url: str) -> GeoReference | None:
    """The georeferencing of ``page``, or ``None`` for a TIFF without GeoTIFF/GDAL geo tags.

    Parameters
    ----------
    page
        A parsed ``tifffile.TiffPage``.
    url
        The file's url, for error messages.

    Returns
    -------
    GeoReference or None

    Raises
    ------
    InvalidFileError
        When a georeferencing tag is malformed (wrong length or type).
    """
    tags = {tag.code: tag.value for tag in page.tags.values()}
    geo_codes = (_MODEL_PIXEL_SCALE, _MODEL_TIEPOINT, _MODEL_TRANSFORMATION, _GEO_KEY_DIRECTORY)
    if not any(code in tags for code in (*geo_codes, _RPC_COEFFICIENTS)):
        return None
    geokeys = _read_geokeys(tags, url)
    point = geokeys.get(1025) == _PIXEL_IS_POINT
    transform, gcps = _read_transform(tags, point, url)
    rpcs = _read_rpcs(tags, url)
    crs_attributes: dict[str, Any] = {}
    if geokeys:
        crs_attributes = _crs_attributes(geokeys)
    elif rpcs is not None or gcps:
        crs_attributes = _crs_attributes({2048: 4326})
    if crs_attributes or transform is not None or gcps:
        # GDAL's default geotransform when the file has none; rioxarray writes it too
        shown = transform if transform is not None else (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        crs_attributes["GeoTransform"] = " ".join(str(v) for v in shown)
    if gcps:
        crs_attributes["gcps"] = json.dumps(_gcps_geojson(gcps))
    if rpcs is not None:
        crs_attributes["rpcs"] = json.dumps(rpcs)
    dtype = np.dtype(page.dtype) if page.dtype is not None else np.dtype("float64")
    attributes = _data_attributes(tags, int(page.samplesperpixel), url)
    if geokeys:
        attributes["AREA_OR_POINT"] = "Point" if point else "Area"
    if gcps or rpcs is not None:
        transform = None
    return GeoReference(
        transform=transform,
        crs_attributes=crs_attributes,
        attributes=attributes,
        nodata=_read_nodata(tags.get(_GDAL_NODATA), dtype),
    )


def pixel_centres(
    transform: Transform, height: int, width: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``x`` and ``y`` coordinates of pixel centres, equal bit for bit to rioxarray's.

    rioxarray applies ``affine * Affine.translation(0.5, 0.5)`` to the pixel indices; the
    same floating-point operations are done here, in the same order.

    Parameters
    ----------
    transform
        GDAL geotransform ``(x0, xres, xrot, y0, yrot, yres)``.
    height, width
        The page's size in pixels.

    Returns
    -------
    tuple of numpy.ndarray or None
        ``(x, y)`` 1-D float64 arrays of length ``width`` and ``height``; ``None`` when the
        transform is rotated or sheared, where rioxarray gives 2-D ``xc``/``yc`` coordinates
        instead (see :func:`pixel_centres_2d`).
    """
    c, a, b, f, d, e = (float(v) for v in transform)
    if b != 0.0 or d != 0.0:
        return None
    # affine's matmul with translation(0.5, 0.5): c' = a*0.5 + b*0.5 + c, f' = d*0.5 + e*0.5 + f
    cc = a * 0.5 + b * 0.5 + c
    fc = d * 0.5 + e * 0.5 + f
    cols = np.arange(width)
    rows = np.arange(height)
    x = cols * a + np.zeros(width) * b + cc
    y = np.zeros(height) * d + rows * e + fc
    return x.astype(np.float64), y.astype(np.float64)


def pixel_centres_2d(
    transform: Transform, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """2-D ``(xc, yc)`` pixel-centre coordinates of shape ``(height, width)``, as rioxarray
    builds them for a rotated or sheared transform.

    Parameters
    ----------
    transform
        GDAL geotransform.
    height, width
        The page's size in pixels.

    Returns
    -------
    tuple of numpy.ndarray
    """
    c, a, b, f, d, e = (float(v) for v in transform)
    cc = a * 0.5 + b * 0.5 + c
    fc = d * 0.5 + e * 0.5 + f
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    return cols * a + rows * b + cc, cols * d + rows * e + fc


def level_transform(
    transform: Transform, full_shape: tuple[int, int], level_shape: tuple[int, int]
) -> Transform:
    """The geotransform GDAL gives a reduced-resolution IFD (an overview).

    GDAL keeps the origin and multiplies the pixel size by the ratio of the full image's size
    to the overview's, per axis (``GDALOverviewDataset::GetGeoTransform``).

    Parameters
    ----------
    transform
        The full-resolution geotransform.
    full_shape, level_shape
        ``(height, width)`` of the full-resolution image and of the overview.

    Returns
    -------
    tuple of float
    """
    c, a, b, f, d, e = (float(v) for v in transform)
    x_ratio = full_shape[1] / level_shape[1]
    y_ratio = full_shape[0] / level_shape[0]
    return (c, a * x_ratio, b * y_ratio, f, d * x_ratio, e * y_ratio)


def level_georeference(
    main: GeoReference, full_shape: tuple[int, int], level_shape: tuple[int, int]
) -> GeoReference:
    """The georeferencing GDAL gives a reduced-resolution IFD that has no GeoTIFF tags of
    its own: the full image's, at the overview's resolution.

    The transform (and ``GeoTransform``) as :func:`level_transform` gives it; GCPs with
    their ``row``/``col`` scaled by the overview's size ratio, as GDAL's overview datasets
    scale them. RPCs are left out: they are for the full image's pixels.

    Parameters
    ----------
    main
        The full-resolution image's georeferencing.
    full_shape, level_shape
        ``(height, width)`` of the full-resolution image and of the overview.

    Returns
    -------
    GeoReference
    """
    crs = dict(main.crs_attributes)
    crs.pop("rpcs", None)
    transform = None
    if main.transform is not None:
        transform = level_transform(main.transform, full_shape, level_shape)
        if "GeoTransform" in crs:
            crs["GeoTransform"] = " ".join(str(v) for v in transform)
    if "gcps" in crs:
        collection = json.loads(crs["gcps"])
        for feature in collection["features"]:
            properties = feature["properties"]
            # GDAL multiplies by the ratio (the same float operations give the same bits)
            properties["row"] = properties["row"] * (level_shape[0] / full_shape[0])
            properties["col"] = properties["col"] * (level_shape[1] / full_shape[1])
        crs["gcps"] = json.dumps(collection)
    return GeoReference(
        transform=transform, crs_attributes=crs, attributes=main.attributes, nodata=main.nodata
    )


def _doubles(value: Any, code: int, url: str) -> list[float]:
    try:
        return [float(v) for v in np.asarray(value, dtype=np.float64).ravel()]
    except (TypeError, ValueError) as error:
        raise InvalidFileError(
            f"GeoTIFF tag {code} is not a list of numbers ({error})",
            url=url,
            variable="data",
            hint=_HINT,
        ) from None


def _read_geokeys(tags: dict[int, Any], url: str) -> dict[int, Any]:
    """GeoKey id -> value (int, float, tuple of floats, or str) from the GeoKeyDirectoryTag."""
    directory = tags.get(_GEO_KEY_DIRECTORY)
    if directory is None:
        return {}
    try:
        entries = [int(v) for v in np.asarray(directory).ravel()]
    except (TypeError, ValueError):
        entries = []
    if len(entries) < 4 or len(entries) < 4 + 4 * entries[3]:
        raise InvalidFileError(
            "the GeoKeyDirectoryTag is shorter than its key count says",
            url=url,
            variable="data",
            hint=_HINT,
        )
    doubles = _doubles(tags.get(_GEO_DOUBLE_PARAMS, []), _GEO_DOUBLE_PARAMS, url)
    ascii_params = tags.get(_GEO_ASCII_PARAMS, "")
    if isinstance(ascii_params, bytes):
        ascii_params = ascii_params.decode("latin-1")
    keys: dict[int, Any] = {}
    for index in range(entries[3]):
        key, location, count, offset = entries[4 + 4 * index : 8 + 4 * index]
        if location == 0:
            keys[key] = offset
        elif location == _GEO_DOUBLE_PARAMS:
            values = doubles[offset : offset + count]
            if len(values) != count:
                raise InvalidFileError(
                    f"GeoKey {key} points past the end of the GeoDoubleParamsTag",
                    url=url,
                    variable="data",
                    hint=_HINT,
                )
            keys[key] = values[0] if count == 1 else tuple(values)
        elif location == _GEO_ASCII_PARAMS:
            text = str(ascii_params)[offset : offset + count]
            # '|' ends each string in GeoAsciiParams
            keys[key] = text.rstrip("\x00").rstrip("|")
        elif location == _GEO_KEY_DIRECTORY:
            keys[key] = tuple(entries[offset : offset + count])
    return keys


def _read_transform(
    tags: dict[int, Any], point: bool, url: str
) -> tuple[Transform | None, list[tuple[float, ...]]]:
    """GDAL's geotransform, or its GCPs ``(row, col, x, y, z)``, from the model tags."""
    scale = (
        _doubles(tags[_MODEL_PIXEL_SCALE], _MODEL_PIXEL_SCALE, url)
        if _MODEL_PIXEL_SCALE in tags
        else []
    )
    tiepoints = (
        _doubles(tags[_MODEL_TIEPOINT], _MODEL_TIEPOINT, url) if _MODEL_TIEPOINT in tags else []
    )
    matrix = (
        _doubles(tags[_MODEL_TRANSFORMATION], _MODEL_TRANSFORMATION, url)
        if _MODEL_TRANSFORMATION in tags
        else []
    )
    gt: list[float] | None = None
    if len(scale) >= 2 and scale[0] != 0.0 and scale[1] != 0.0:
        if len(tiepoints) < 6:
            raise InvalidFileError(
                "ModelPixelScaleTag without a ModelTiepointTag",
                url=url,
                variable="data",
                hint=_HINT,
            )
        # GDAL ignores the sign of the y scale unless GTIFF_HONOUR_NEGATIVE_SCALEY=YES
        yres = scale[1] if scale[1] < 0 else -scale[1]
        gt = [0.0, scale[0], 0.0, 0.0, 0.0, yres]
        gt[0] = tiepoints[3] - tiepoints[0] * gt[1]
        gt[3] = tiepoints[4] - tiepoints[1] * gt[5]
    elif matrix:
        if len(matrix) != 16:
            raise InvalidFileError(
                f"ModelTransformationTag has {len(matrix)} values, not 16",
                url=url,
                variable="data",
                hint=_HINT,
            )
        gt = [matrix[3], matrix[0], matrix[1], matrix[7], matrix[4], matrix[5]]
    elif tiepoints:
        if len(tiepoints) % 6:
            raise InvalidFileError(
                f"ModelTiepointTag has {len(tiepoints)} values, not a multiple of 6",
                url=url,
                variable="data",
                hint=_HINT,
            )
        shift = 0.5 if point else 0.0
        gcps: list[tuple[float, ...]] = [
            (
                tiepoints[i + 1] + shift,
                tiepoints[i] + shift,
                tiepoints[i + 3],
                tiepoints[i + 4],
                tiepoints[i + 5],
            )
            for i in range(0, len(tiepoints), 6)
        ]
        return None, gcps
    if gt is None:
        return None, []
    if point:
        gt[0] -= gt[1] * 0.5 + gt[2] * 0.5
        gt[3] -= gt[4] * 0.5 + gt[5] * 0.5
    return (gt[0], gt[1], gt[2], gt[3], gt[4], gt[5]), []


def _gcps_geojson(gcps: list[tuple[float, ...]]) -> dict[str, Any]:
    """GCPs as rioxarray's ``gcps`` attribute: a GeoJSON FeatureCollection of points with
    ``id`` (1-based, as GDAL numbers them), ``info``, ``row`` and ``col`` properties."""
    features = [
        {
            "type": "Feature",
            "properties": {"id": str(number), "info": "", "row": row, "col": col},
            "geometry": {"type": "Point", "coordinates": [x, y, z]},
        }
        for number, (row, col, x, y, z) in enumerate(gcps, start=1)
    ]
    return {"type": "FeatureCollection", "features": features}


def _read_rpcs(tags: dict[int, Any], url: str) -> dict[str, Any] | None:
    """RPCs as ``rasterio.rpc.RPC.to_dict()``: GDAL passes them through ``%.15g`` text."""
    if _RPC_COEFFICIENTS not in tags:
        return None
    values = _doubles(tags[_RPC_COEFFICIENTS], _RPC_COEFFICIENTS, url)
    if len(values) != 92:
        raise InvalidFileError(
            f"RPCCoefficientTag has {len(values)} values, not 92",
            url=url,
            variable="data",
            hint=_HINT,
        )
    rounded = [float(f"{v:.15g}") for v in values]
    rpcs: dict[str, Any] = dict(zip(_RPC_SCALARS, rounded[:12], strict=True))
    for index, name in enumerate(_RPC_ARRAYS):
        rpcs[name] = rounded[12 + 20 * index : 32 + 20 * index]
    return rpcs


def _crs_attributes(geokeys: dict[int, Any]) -> dict[str, Any]:
    code = _epsg_code(geokeys)
    pyproj: Any = None
    with contextlib.suppress(ImportError):
        pyproj = importlib.import_module("pyproj")
    crs = None
    if pyproj is not None:
        try:
            crs = _build_crs(pyproj, geokeys, code)
            if crs is not None and code is None:
                crs = _gdal_names(pyproj, crs, geokeys)
        except pyproj.exceptions.CRSError:
            crs = None
    if crs is None:
        fallback: dict[str, Any] = {}
        if code is not None:
            fallback["crs"] = f"EPSG:{code}"
        fallback["geotiff:geokeys"] = {
            _GEOKEY_NAMES.get(key, str(key)): list(value) if isinstance(value, tuple) else value
            for key, value in geokeys.items()
        }
        return fallback
    # GDAL writes WKT1; where WKT1 loses something (an axis order) WKT2 keeps the CRS exact
    wkt = crs.to_wkt("WKT1_GDAL")
    if wkt is None or pyproj.CRS(wkt) != crs:
        wkt = crs.to_wkt()
    try:
        attributes: dict[str, Any] = pyproj.CRS(wkt).to_cf()
    except KeyError:
        attributes = {}
    attributes["spatial_ref"] = wkt
    attributes["crs_wkt"] = wkt
    return attributes


def _citation_part(citation: Any, label: str) -> str | None:
    """``X`` from a GDAL-written citation ``"GCS Name = X|Datum = Y|..."``."""
    if not isinstance(citation, str):
        return None
    for part in citation.split("|"):
        key, _, value = part.partition(" = ")
        if key.strip() == label and value:
            return value.strip()
    return None


def _gdal_names(pyproj: Any, crs: Any, geokeys: dict[int, Any]) -> Any:
    """``crs`` renamed as GDAL names a user-defined CRS, from the keys' citations; the names
    become CF attributes (``projected_crs_name``, ``geographic_crs_name``, ...)."""
    outer = crs.to_json_dict()
    # a +towgs84 datum makes a BoundCRS around the CRS that carries the names
    document = outer["source_crs"] if outer.get("type") == "BoundCRS" else outer
    geog_citation = geokeys.get(2049)
    gcs = geokeys.get(2048)
    gcs_name = _citation_part(geog_citation, "GCS Name")
    if gcs_name is None and isinstance(gcs, int) and 0 < gcs < _USER_DEFINED:
        gcs_name = pyproj.CRS.from_epsg(gcs).name
    if gcs_name is None and isinstance(geog_citation, str) and " = " not in geog_citation:
        gcs_name = geog_citation
    geographic = document.get("base_crs", document)
    if geographic is document and document.get("type") != "GeographicCRS":
        return crs
    geographic["name"] = gcs_name or "unknown"
    datum = geographic.get("datum")
    known = pyproj.CRS.from_epsg(gcs) if isinstance(gcs, int) and 0 < gcs < _USER_DEFINED else None
    if isinstance(datum, dict):
        name = _citation_part(geog_citation, "Datum")
        if name is None and known is not None and known.datum is not None:
            name = known.datum.name.removesuffix(" ensemble")
        datum["name"] = name or "unnamed"
        ellipsoid = datum.get("ellipsoid")
        name = _citation_part(geog_citation, "Ellipsoid")
        if name is None and known is not None and known.ellipsoid is not None:
            name = known.ellipsoid.name
        if (
            name is None
            and isinstance(geokeys.get(2056), int)
            and 0 < geokeys[2056] < _USER_DEFINED
        ):
            name = pyproj.crs.Ellipsoid.from_epsg(geokeys[2056]).name
        if isinstance(ellipsoid, dict) and name:
            ellipsoid["name"] = name
    meridian = geographic.get("prime_meridian")
    name = _citation_part(geog_citation, "Primem")
    if isinstance(meridian, dict) and name:
        meridian["name"] = name
    if geographic is not document:
        citation = geokeys.get(1026, geokeys.get(3073))
        document["name"] = citation if isinstance(citation, str) else "unnamed"
    return pyproj.CRS.from_json_dict(outer)


def _epsg_code(geokeys: dict[int, Any]) -> int | None:
    model = geokeys.get(1024)
    projected = geokeys.get(3072)
    geographic = geokeys.get(2048)
    if model != 2 and isinstance(projected, int) and 0 < projected < _USER_DEFINED:
        return projected
    if model != 1 and isinstance(geographic, int) and 0 < geographic < _USER_DEFINED:
        return geographic
    return None


# GeoTIFF ellipsoid codes that carry their own axes in geokeys are read from the keys; these
# coordinate transformations map geokeys to PROJ parameters (GeoTIFF spec / GDAL gt_wkt_srs).
_CT_PROJ: dict[int, tuple[str, dict[str, int]]] = {
    1: ("tmerc", {"lat_0": 3081, "lon_0": 3080, "k_0": 3092, "x_0": 3082, "y_0": 3083}),
    7: ("merc", {"lon_0": 3080, "k_0": 3092, "x_0": 3082, "y_0": 3083}),
    8: (
        "lcc",
        {"lat_1": 3078, "lat_2": 3079, "lat_0": 3085, "lon_0": 3084, "x_0": 3086, "y_0": 3087},
    ),
    9: (
        "lcc",
        {"lat_1": 3081, "lat_0": 3081, "lon_0": 3080, "k_0": 3092, "x_0": 3082, "y_0": 3083},
    ),
    10: ("laea", {"lat_0": 3089, "lon_0": 3088, "x_0": 3082, "y_0": 3083}),
    11: (
        "aea",
        {"lat_1": 3078, "lat_2": 3079, "lat_0": 3081, "lon_0": 3080, "x_0": 3082, "y_0": 3083},
    ),
    12: ("aeqd", {"lat_0": 3089, "lon_0": 3088, "x_0": 3082, "y_0": 3083}),
    14: ("stere", {"lat_0": 3089, "lon_0": 3088, "k_0": 3092, "x_0": 3082, "y_0": 3083}),
    16: ("sterea", {"lat_0": 3081, "lon_0": 3080, "k_0": 3092, "x_0": 3082, "y_0": 3083}),
    17: ("eqc", {"lat_ts": 3078, "lat_0": 3089, "lon_0": 3088, "x_0": 3082, "y_0": 3083}),
    18: ("cass", {"lat_0": 3081, "lon_0": 3080, "x_0": 3082, "y_0": 3083}),
    24: ("sinu", {"lon_0": 3088, "x_0": 3082, "y_0": 3083}),
    28: ("cea", {"lat_ts": 3078, "lon_0": 3080, "x_0": 3082, "y_0": 3083}),
}


def _build_crs(pyproj: Any, geokeys: dict[int, Any], code: int | None) -> Any:
    """A pyproj CRS from the geokeys, or ``None`` when they describe none it can build."""
    model = geokeys.get(1024)
    if code is not None and not _overrides_ellipsoid(pyproj, geokeys, code):
        return pyproj.CRS.from_epsg(code)
    for citation_key in (3073, 1026):
        citation = geokeys.get(citation_key)
        if isinstance(citation, str) and "ESRI PE String = " in citation:
            return pyproj.CRS.from_wkt(citation.split("ESRI PE String = ", 1)[1])
    geographic = _geographic_proj(pyproj, geokeys)
    if geographic is None:
        return None
    if model == 2:
        return pyproj.CRS(f"+proj=longlat {geographic} +no_defs +type=crs")
    if model != 1:
        return None
    units = _linear_units(geokeys)
    projection = geokeys.get(3074)
    if isinstance(projection, int) and 0 < projection < _USER_DEFINED:
        conversion = pyproj.CRS(f"+proj=longlat {geographic} +no_defs +type=crs")
        from pyproj.crs import CoordinateOperation, ProjectedCRS

        return ProjectedCRS(
            conversion=CoordinateOperation.from_epsg(projection), geodetic_crs=conversion
        )
    transformation = geokeys.get(3075)
    if transformation == 15:  # polar stereographic: the pole is on the side of lat_ts
        lat_ts = float(geokeys.get(3081, 90.0))
        lon_0 = geokeys.get(3095, geokeys.get(3080, 0.0))
        parts = [
            "+proj=stere",
            f"+lat_0={90.0 if lat_ts >= 0 else -90.0}",
            f"+lat_ts={lat_ts}",
            f"+lon_0={lon_0}",
            f"+k_0={geokeys.get(3092, 1.0)}",
            f"+x_0={geokeys.get(3082, 0.0)}",
            f"+y_0={geokeys.get(3083, 0.0)}",
        ]
    elif transformation in _CT_PROJ:
        name, parameters = _CT_PROJ[transformation]
        parts = [f"+proj={name}"]
        for parameter, key in parameters.items():
            value = geokeys.get(key)
            if value is None and parameter in ("lat_0", "lon_0"):
                # GDAL falls back between natural-origin, centre and false-origin keys
                fallbacks = (3081, 3089, 3085) if parameter == "lat_0" else (3080, 3088, 3084)
                value = next((geokeys[k] for k in fallbacks if k in geokeys), None)
            if value is not None:
                parts.append(f"+{parameter}={float(value)!r}")
    else:
        return None
    return pyproj.CRS(" ".join([*parts, geographic, units, "+no_defs", "+type=crs"]))


def _overrides_ellipsoid(pyproj: Any, geokeys: dict[int, Any], code: int) -> bool:
    """Whether the keys give ellipsoid axes that differ from the EPSG code's (GDAL honours them)."""
    semi_major = geokeys.get(2057)
    if not isinstance(semi_major, float):
        return False
    ellipsoid = pyproj.CRS.from_epsg(code).ellipsoid
    if ellipsoid is None:
        return False
    if semi_major != ellipsoid.semi_major_metre:
        return True
    inverse = geokeys.get(2059)
    return isinstance(inverse, float) and not math.isclose(
        inverse, ellipsoid.inverse_flattening, rel_tol=1e-9
    )


def _geographic_proj(pyproj: Any, geokeys: dict[int, Any]) -> str | None:
    """PROJ string parameters of the datum/ellipsoid (and prime meridian) from the keys."""
    gcs = geokeys.get(2048)
    parts: list[str] = []
    semi_major = geokeys.get(2057)
    if (
        isinstance(gcs, int)
        and 0 < gcs < _USER_DEFINED
        and not _overrides_ellipsoid(pyproj, geokeys, gcs)
    ):
        with warnings.catch_warnings():
            # only the datum and ellipsoid parameters are taken from it: nothing is lost
            warnings.simplefilter("ignore", UserWarning)
            proj4 = pyproj.CRS.from_epsg(gcs).to_proj4()
        parts = [p for p in proj4.split() if not p.startswith(("+proj=", "+no_defs", "+type="))]
    else:
        ellipsoid = geokeys.get(2056)
        if isinstance(semi_major, float):
            parts.append(f"+a={semi_major!r}")
            inverse = geokeys.get(2059)
            semi_minor = geokeys.get(2058)
            if isinstance(inverse, float) and inverse != 0.0:
                parts.append(f"+rf={inverse!r}")
            elif isinstance(semi_minor, float):
                parts.append(f"+b={semi_minor!r}")
            else:
                parts.append(f"+b={semi_major!r}")
        elif isinstance(ellipsoid, int) and 0 < ellipsoid < _USER_DEFINED:
            # GDAL derives the inverse flattening from the EPSG ellipsoid's two axes
            known = pyproj.crs.Ellipsoid.from_epsg(ellipsoid)
            parts.append(f"+a={known.semi_major_metre!r}")
            parts.append(f"+b={known.semi_minor_metre!r}")
        else:
            return None
        towgs84 = geokeys.get(2062)
        if isinstance(towgs84, tuple):
            parts.append("+towgs84=" + ",".join(repr(v) for v in towgs84))
    meridian = geokeys.get(2061)
    if isinstance(meridian, float) and meridian != 0.0:
        parts.append(f"+pm={meridian!r}")
    return " ".join(parts)


def _linear_units(geokeys: dict[int, Any]) -> str:
    units = geokeys.get(3076)
    if units == 9002:
        return "+units=ft"
    if units == 9003:
        return "+units=us-ft"
    size = geokeys.get(3077)
    if isinstance(size, float):
        return f"+to_meter={size!r}"
    return "+units=m"


def _read_nodata(value: Any, dtype: np.dtype[Any]) -> NoData | None:
    """The ``GDAL_NODATA`` tag, parsed from its string (tifffile may fail to cast it)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = str(value).strip().rstrip("\x00").strip()
    # GDAL reads the tag with CPLAtofM, which takes the longest numeric prefix
    match = re.match(r"[+-]?(nan|inf(inity)?|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)", text, re.I)
    if match is None or match.group(0) != text:
        return NoData(
            float("nan"),
            False,
            f"GDAL_NODATA {text!r} is not a number; it is kept as attribute 'nodata'",
            text,
        )
    number = float(match.group(0))
    kind = dtype.kind
    if kind in "fc":
        # a complex band's nodata applies to its real and imaginary parts
        real = np.dtype(f"f{dtype.itemsize // 2}" if kind == "c" else dtype).type
        with np.errstate(over="ignore"):
            rounded = float(real(number))
        if math.isinf(rounded) and math.isfinite(number):
            return NoData(
                number,
                False,
                f"GDAL_NODATA {text!r} overflows {dtype}; it is kept as attribute 'nodata'",
                text,
            )
        return NoData(rounded, True, None, text)
    if kind in "iu":
        info = np.iinfo(dtype)
        if math.isfinite(number) and number == int(number) and info.min <= int(number) <= info.max:
            # float parsing loses precision beyond 2**53: take the integer text when it is one
            exact = int(text) if re.fullmatch(r"[+-]?\d+", text) else int(number)
            if info.min <= exact <= info.max:
                return NoData(exact, True, None, text)
        return NoData(
            number,
            False,
            f"GDAL_NODATA {text!r} cannot be represented as {dtype}; it is kept as "
            "attribute 'nodata', not as _FillValue",
            text,
        )
    return NoData(
        number,
        False,
        f"GDAL_NODATA {text!r} does not apply to data of type {dtype}; it is kept as "
        "attribute 'nodata'",
        text,
    )


def _to_numeric(text: str) -> Any:
    """A metadata string as rioxarray's ``_parse_tag`` turns it into a value."""
    if text.startswith("{") and text.endswith("}"):
        try:
            array = np.array([float(v) for v in text.strip("{}").split(",") if v.strip()])
        except ValueError:
            array = np.array([])
        if len(array):
            return [float(v) for v in array]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _data_attributes(tags: dict[int, Any], bands: int, url: str) -> dict[str, Any]:
    dataset: dict[str, str] = {}
    for code, name in _TIFFTAG_ITEMS.items():
        if code in tags:
            text = _tifftag_text(code, tags[code])
            if text is not None:
                dataset[name] = text
    band: dict[str, str] = {}
    scales = [1.0] * bands
    offsets = [0.0] * bands
    descriptions = [""] * bands
    units = [""] * bands
    metadata = tags.get(_GDAL_METADATA)
    if metadata:
        if isinstance(metadata, bytes):
            metadata = metadata.decode("utf-8", errors="replace")
        try:
            root = ElementTree.fromstring(str(metadata).rstrip("\x00"))
        except ElementTree.ParseError as error:
            raise InvalidFileError(
                f"the GDAL_METADATA tag is not valid XML ({error})",
                url=url,
                variable="data",
                hint=_HINT,
            ) from None
        for item in root.iter("Item"):
            item_name = item.get("name")
            if item_name is None or item.get("domain"):
                continue
            # GDAL escapes item values once more than XML needs
            text = html.unescape(item.text or "")
            sample = item.get("sample")
            role = item.get("role")
            if sample is None:
                dataset[item_name] = text
                continue
            try:
                index = int(sample)
            except ValueError:
                continue
            if not 0 <= index < bands:
                continue
            try:
                if role == "scale":
                    scales[index] = float(text)
                    continue
                if role == "offset":
                    offsets[index] = float(text)
                    continue
            except ValueError:
                continue
            if role == "description":
                descriptions[index] = text
            elif role == "unittype":
                units[index] = text
            elif index == 0 and role is None:
                band[item_name] = text
    attributes = {key: _to_numeric(value) for key, value in {**dataset, **band}.items()}
    for unwanted in ("_FillValue", "missing_value", "fill_value", "nodata", "nodatavals"):
        attributes.pop(unwanted, None)
    for unwanted in ("is_tiled", "res"):
        attributes.pop(unwanted, None)
    if len(set(scales)) > 1:
        attributes["scales"] = scales
    elif scales[0] != 1.0:
        attributes["scale_factor"] = scales[0]
    if len(set(offsets)) > 1:
        attributes["offsets"] = offsets
    elif offsets[0] != 0.0:
        attributes["add_offset"] = offsets[0]
    if any(descriptions):
        attributes["long_name"] = descriptions[0] if len(set(descriptions)) == 1 else descriptions
    if any(units):
        attributes["units"] = units[0] if len(units) == 1 else units
    return attributes


def _tifftag_text(code: int, value: Any) -> str | None:
    """The TIFFTAG_* item text GDAL reports for a baseline tag."""
    if code == 296:
        return _RESOLUTION_UNITS.get(int(value), str(int(value)))
    if code in (282, 283):
        if isinstance(value, tuple) and len(value) == 2:
            number = value[0] / value[1] if value[1] else 0.0
        else:
            number = float(value)
        return f"{number:.8g}"
    if code in (280, 281):
        values = np.asarray(value).ravel()
        return str(int(values[0])) if values.size else None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value)
