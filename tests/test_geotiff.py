"""GeoTIFF georeferencing (virtualize.parsers.geotiff): files written here with explicit tags,
and every corpus GeoTIFF compared with rioxarray/rasterio (skipped where they are missing)."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from virtualize.errors import InvalidFileError
from virtualize.parsers.geotiff import (
    level_transform,
    pixel_centres,
    pixel_centres_2d,
    read_georeference,
)

CORPUS = (
    Path(
        os.environ.get(
            "VIRTUALIZE_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"
        )
    )
    / "tiff"
)

# GDAL derives this file's Bessel inverse flattening from its axes and gets the last digits
# differently from PROJ; the CRSs agree as PROJ strings but not under pyproj's ``==``.
KNOWN_CRS_DIFFERENCES = {"geotiff-test-data/GeogToWGS84GeoKey5.tif"}


def geokeys(model: int = 2, raster: int = 1, epsg: int = 4326) -> list[int]:
    code_key = 2048 if model == 2 else 3072
    return [1, 1, 0, 3, 1024, 0, 1, model, 1025, 0, 1, raster, code_key, 0, 1, epsg]


def write(
    path: Path,
    data: np.ndarray,
    *,
    scale: list[float] | None = None,
    tiepoints: list[float] | None = None,
    matrix: list[float] | None = None,
    keys: list[int] | None = None,
    nodata: str | None = None,
    metadata: str | None = None,
    rpcs: list[float] | None = None,
) -> Any:
    """Write ``data`` with the given GeoTIFF tags; return its first page."""
    extra: list[tuple[int, int, int, Any, bool]] = []
    if scale is not None:
        extra.append((33550, 12, len(scale), scale, True))
    if tiepoints is not None:
        extra.append((33922, 12, len(tiepoints), tiepoints, True))
    if matrix is not None:
        extra.append((34264, 12, len(matrix), matrix, True))
    if keys is not None:
        extra.append((34735, 3, len(keys), keys, True))
    if nodata is not None:
        extra.append((42113, 2, len(nodata) + 1, nodata, True))
    if metadata is not None:
        extra.append((42112, 2, len(metadata) + 1, metadata, True))
    if rpcs is not None:
        extra.append((50844, 12, len(rpcs), rpcs, True))
    tifffile.imwrite(path, data, extratags=extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tifffile.TiffFile(path).pages[0]


@pytest.fixture
def u8() -> np.ndarray:
    return np.zeros((4, 5), np.uint8)


def test_plain_tiff_has_no_georeference(tmp_path: Path, u8: np.ndarray) -> None:
    assert read_georeference(write(tmp_path / "a.tif", u8), "a.tif") is None


def test_scale_and_tiepoint(tmp_path: Path, u8: np.ndarray) -> None:
    page = write(
        tmp_path / "a.tif", u8, scale=[0.5, 0.25, 0], tiepoints=[1, 2, 0, 10, 20, 0], keys=geokeys()
    )
    geo = read_georeference(page, "a.tif")
    assert geo is not None
    x0, y0 = 10 - 1 * 0.5, 20 + 2 * 0.25
    assert geo.transform == (x0, 0.5, 0.0, y0, 0.0, -0.25)
    assert geo.attributes["AREA_OR_POINT"] == "Area"
    assert geo.crs_attributes["GeoTransform"] == f"{x0} 0.5 0.0 {y0} 0.0 -0.25"
    pytest.importorskip("pyproj")
    import pyproj

    assert pyproj.CRS(geo.crs_attributes["crs_wkt"]).to_epsg() == 4326
    assert geo.crs_attributes["grid_mapping_name"] == "latitude_longitude"
    centres = pixel_centres(geo.transform, 4, 5)
    assert centres is not None
    np.testing.assert_array_equal(centres[0], x0 + (np.arange(5) + 0.5) * 0.5)
    np.testing.assert_array_equal(centres[1], y0 - (np.arange(4) + 0.5) * 0.25)


def test_negative_y_scale_is_read_as_gdal_does(tmp_path: Path, u8: np.ndarray) -> None:
    page = write(
        tmp_path / "a.tif",
        u8,
        scale=[0.5, -0.25, 0],
        tiepoints=[0, 0, 0, 10, 20, 0],
        keys=geokeys(),
    )
    geo = read_georeference(page, "a.tif")
    assert geo is not None and geo.transform == (10.0, 0.5, 0.0, 20.0, 0.0, -0.25)


def test_pixel_is_point_shifts_origin_half_a_pixel(tmp_path: Path, u8: np.ndarray) -> None:
    page = write(
        tmp_path / "a.tif",
        u8,
        scale=[0.5, 0.25, 0],
        tiepoints=[0, 0, 0, 10, 20, 0],
        keys=geokeys(raster=2),
    )
    geo = read_georeference(page, "a.tif")
    assert geo is not None
    assert geo.transform == (9.75, 0.5, 0.0, 20.125, 0.0, -0.25)
    assert geo.attributes["AREA_OR_POINT"] == "Point"


def test_rotated_model_transformation(tmp_path: Path, u8: np.ndarray) -> None:
    matrix = [0.5, 0.1, 0, 10, 0.2, -0.25, 0, 20, 0, 0, 0, 0, 0, 0, 0, 1]
    page = write(tmp_path / "a.tif", u8, matrix=matrix, keys=geokeys(raster=2))
    geo = read_georeference(page, "a.tif")
    assert geo is not None and geo.transform is not None
    # PixelIsPoint moves the origin by half a pixel along both rotated axes
    assert geo.transform == pytest.approx((9.7, 0.5, 0.1, 20.025, 0.2, -0.25))
    assert pixel_centres(geo.transform, 4, 5) is None
    xc, yc = pixel_centres_2d(geo.transform, 4, 5)
    assert xc.shape == yc.shape == (4, 5)
    c, a, b, f, d, e = geo.transform
    assert xc[3, 4] == pytest.approx(c + 4.5 * a + 3.5 * b)
    assert yc[3, 4] == pytest.approx(f + 4.5 * d + 3.5 * e)


def test_many_tiepoints_are_gcps(tmp_path: Path, u8: np.ndarray) -> None:
    tiepoints = [0, 0, 0, 10, 20, 0, 4, 0, 0, 12, 20, 0, 0, 3, 0, 10, 18, 0, 4, 3, 0, 12, 18, 1]
    page = write(tmp_path / "a.tif", u8, tiepoints=tiepoints, keys=geokeys(raster=2))
    geo = read_georeference(page, "a.tif")
    assert geo is not None and geo.transform is None
    gcps = json.loads(geo.crs_attributes["gcps"])
    assert gcps["type"] == "FeatureCollection"
    last = gcps["features"][3]
    assert last["properties"] == {"id": "4", "info": "", "row": 3.5, "col": 4.5}
    assert last["geometry"] == {"type": "Point", "coordinates": [12.0, 18.0, 1.0]}
    assert geo.crs_attributes["GeoTransform"] == "0.0 1.0 0.0 0.0 0.0 1.0"


def test_rpcs_as_rasterio_names_them(tmp_path: Path, u8: np.ndarray) -> None:
    values = [float(v) + 0.1234567890123456 for v in range(92)]
    page = write(tmp_path / "a.tif", u8, rpcs=values, keys=geokeys())
    geo = read_georeference(page, "a.tif")
    assert geo is not None and geo.transform is None
    rpcs = json.loads(geo.crs_attributes["rpcs"])
    assert rpcs["err_bias"] == float(f"{values[0]:.15g}")
    assert rpcs["height_scale"] == float(f"{values[11]:.15g}")
    assert len(rpcs["samp_den_coeff"]) == 20
    assert rpcs["samp_den_coeff"][-1] == float(f"{values[91]:.15g}")


@pytest.mark.parametrize(
    ("dtype", "text", "value", "representable"),
    [
        ("uint8", "255", 255, True),
        ("uint8", " 7 ", 7, True),
        ("uint8", "-9999", -9999.0, False),
        ("uint8", "300", 300.0, False),
        ("uint8", "1.5", 1.5, False),
        ("uint8", "nan", math.nan, False),
        ("int16", "-32768", -32768, True),
        ("int64", "-9223372036854775808", -9223372036854775808, True),
        ("float32", "-3.4e+38", float(np.float32(-3.4e38)), True),
        ("float32", "nan", math.nan, True),
        ("float32", "0.1", float(np.float32(0.1)), True),
        ("float32", "1e39", 1e39, False),
        ("float64", "-9999", -9999.0, True),
        ("float32", "abc", math.nan, False),
    ],
)
def test_nodata(tmp_path: Path, dtype: str, text: str, value: float, representable: bool) -> None:
    page = write(
        tmp_path / "a.tif",
        np.zeros((4, 5), dtype),
        scale=[1, 1, 0],
        tiepoints=[0, 0, 0, 0, 0, 0],
        keys=geokeys(),
        nodata=text,
    )
    geo = read_georeference(page, "a.tif")
    assert geo is not None and geo.nodata is not None
    assert geo.nodata.representable is representable
    assert (geo.nodata.message is None) is representable
    assert geo.nodata.text == text.strip()
    if math.isnan(value):
        assert math.isnan(geo.nodata.value)
    else:
        assert geo.nodata.value == value
        assert type(geo.nodata.value) is type(value)


def test_gdal_metadata_scale_offset_and_items(tmp_path: Path) -> None:
    metadata = (
        "<GDALMetadata>"
        '<Item name="STATISTICS_MEAN" sample="0">1.5</Item>'
        '<Item name="OVR_RESAMPLING_ALG">NEAREST</Item>'
        '<Item name="SCALE" sample="0" role="scale">0.01</Item>'
        '<Item name="OFFSET" sample="0" role="offset">5</Item>'
        '<Item name="DESCRIPTION" sample="0" role="description">Height</Item>'
        '<Item name="UNITTYPE" sample="0" role="unittype">m</Item>'
        '<Item name="COLORINTERP" sample="0" role="colorinterp">Gray</Item>'
        "</GDALMetadata>"
    )
    page = write(
        tmp_path / "a.tif",
        np.zeros((4, 5), np.int16),
        scale=[1, 1, 0],
        tiepoints=[0, 0, 0, 0, 0, 0],
        keys=geokeys(),
        metadata=metadata,
    )
    geo = read_georeference(page, "a.tif")
    assert geo is not None
    assert geo.attributes["TIFFTAG_SOFTWARE"] == "tifffile.py"
    assert {k: v for k, v in geo.attributes.items() if not k.startswith("TIFFTAG_")} == {
        "STATISTICS_MEAN": 1.5,
        "OVR_RESAMPLING_ALG": "NEAREST",
        "scale_factor": 0.01,
        "add_offset": 5.0,
        "long_name": "Height",
        "units": "m",
        "AREA_OR_POINT": "Area",
    }


def test_identity_scale_is_left_out(tmp_path: Path, u8: np.ndarray) -> None:
    page = write(
        tmp_path / "a.tif", u8, scale=[1, 1, 0], tiepoints=[0, 0, 0, 0, 0, 0], keys=geokeys()
    )
    geo = read_georeference(page, "a.tif")
    assert geo is not None
    assert "scale_factor" not in geo.attributes and "add_offset" not in geo.attributes


def test_without_pyproj_keeps_code_and_geokeys(
    tmp_path: Path, u8: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = write(
        tmp_path / "a.tif",
        u8,
        scale=[1, 1, 0],
        tiepoints=[0, 0, 0, 0, 0, 0],
        keys=geokeys(model=1, epsg=32633),
    )
    monkeypatch.setitem(sys.modules, "pyproj", None)
    geo = read_georeference(page, "a.tif")
    assert geo is not None
    assert geo.crs_attributes["crs"] == "EPSG:32633"
    assert geo.crs_attributes["geotiff:geokeys"]["ProjectedCSTypeGeoKey"] == 32633
    assert "crs_wkt" not in geo.crs_attributes


@pytest.mark.filterwarnings("ignore:You will likely lose important projection information")
def test_user_defined_crs_from_geokeys(tmp_path: Path, u8: np.ndarray) -> None:
    pyproj = pytest.importorskip("pyproj")
    # Albers on GRS 1980 with an EPSG ellipsoid code and no datum code
    keys = [1, 1, 0, 12]
    keys += [1024, 0, 1, 1, 1025, 0, 1, 1, 2048, 0, 1, 32767, 2050, 0, 1, 32767]
    keys += [2056, 0, 1, 7019, 3072, 0, 1, 32767, 3075, 0, 1, 11, 3076, 0, 1, 9001]
    keys += [3078, 34736, 1, 0, 3079, 34736, 1, 1, 3080, 34736, 1, 2, 3081, 34736, 1, 3]
    tifffile.imwrite(
        tmp_path / "a.tif",
        u8,
        extratags=[
            (33550, 12, 3, [1, 1, 0], True),
            (33922, 12, 6, [0, 0, 0, 0, 0, 0], True),
            (34735, 3, len(keys), keys, True),
            (34736, 12, 4, [29.5, 45.5, -96.0, 23.0], True),
        ],
    )
    geo = read_georeference(tifffile.TiffFile(tmp_path / "a.tif").pages[0], "a.tif")
    assert geo is not None
    crs = pyproj.CRS(geo.crs_attributes["crs_wkt"])
    expected = pyproj.CRS(
        "+proj=aea +lat_1=29.5 +lat_2=45.5 +lat_0=23 +lon_0=-96 +ellps=GRS80 +units=m"
    )
    assert crs.to_proj4() == expected.to_proj4()
    assert geo.crs_attributes["grid_mapping_name"] == "albers_conical_equal_area"


@pytest.mark.parametrize(
    "tags",
    [
        {"scale": [1.0, 1.0, 0.0]},
        {"matrix": [1.0, 0.0, 0.0]},
        {"tiepoints": [0, 0, 0, 1, 2, 0, 5]},
        {"keys": [1, 1, 0, 9, 1024, 0, 1, 1]},
        {"rpcs": [1.0] * 10},
        {"scale": [1, 1, 0], "tiepoints": [0, 0, 0, 0, 0, 0], "metadata": "<GDALMetadata"},
    ],
)
def test_malformed_tags_raise_invalid_file(
    tmp_path: Path, u8: np.ndarray, tags: dict[str, Any]
) -> None:
    page = write(tmp_path / "a.tif", u8, **tags)
    with pytest.raises(InvalidFileError, match=r"a\.tif: variable 'data'"):
        read_georeference(page, "a.tif")


def test_level_transform_scales_resolution_per_axis() -> None:
    transform = (100.0, 30.0, 0.0, 500.0, 0.0, -30.0)
    assert level_transform(transform, (1000, 999), (500, 500)) == (
        100.0,
        30.0 * (999 / 500),
        0.0,
        500.0,
        0.0,
        -30.0 * 2.0,
    )


def corpus_geotiffs() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(path for path in CORPUS.rglob("*") if path.is_file())


def overview_pages(tif: tifffile.TiffFile) -> list[Any]:
    """The reduced-resolution IFDs that are not masks, in file order (GDAL's overviews)."""
    return [page for page in tif.pages[1:] if page.subfiletype & 1 and not page.subfiletype & 4]


def test_corpus_matches_rioxarray() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} is missing")
    rioxarray = pytest.importorskip("rioxarray")
    rasterio = pytest.importorskip("rasterio")
    pyproj = pytest.importorskip("pyproj")
    mismatches: dict[str, list[str]] = {}
    matched = 0
    for path in corpus_geotiffs():
        name = path.relative_to(CORPUS).as_posix()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                source = rasterio.open(path)
            except rasterio.errors.RasterioIOError:
                continue
            with source, tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                geo = read_georeference(page, str(path))
                if geo is None:
                    assert source.crs is None and not source.gcps[0] and source.rpcs is None
                    assert source.transform.is_identity, name
                    continue
                problems = compare(rioxarray, pyproj, name, path, page, geo)
                problems += compare_overviews(rasterio, path, tif, page, geo)
        if problems:
            mismatches[name] = problems
        else:
            matched += 1
    print(f"\nGeoTIFF corpus: {matched} match rioxarray, mismatches: {mismatches}")
    assert not mismatches
    assert matched >= 60


def compare(rioxarray: Any, pyproj: Any, name: str, path: Path, page: Any, geo: Any) -> list[str]:
    problems = []
    array = rioxarray.open_rasterio(path)
    grid = dict(array.spatial_ref.attrs)
    height, width = page.imagelength, page.imagewidth
    if geo.transform is not None:
        centres = pixel_centres(geo.transform, height, width)
        if centres is None:
            xc, yc = pixel_centres_2d(geo.transform, height, width)
            if not (np.array_equal(xc, array.xc.values) and np.array_equal(yc, array.yc.values)):
                problems.append("2-D centres differ")
        elif not (
            np.array_equal(centres[0], array.x.values)
            and np.array_equal(centres[1], array.y.values)
        ):
            problems.append("centres differ")
    elif "x" in array.coords:
        problems.append("rioxarray has x/y coordinates")
    if grid.get("GeoTransform") != geo.crs_attributes.get("GeoTransform"):
        problems.append(f"GeoTransform {geo.crs_attributes.get('GeoTransform')}")
    if "crs_wkt" in grid:
        ours = geo.crs_attributes.get("crs_wkt")
        if ours is None:
            problems.append("no CRS")
        else:
            crs, theirs = pyproj.CRS(ours), pyproj.CRS(grid["crs_wkt"])
            if name in KNOWN_CRS_DIFFERENCES:
                if crs.to_proj4() != theirs.to_proj4():
                    problems.append("CRS differs as PROJ string")
            else:
                if crs != theirs or crs.to_epsg() != theirs.to_epsg():
                    problems.append(f"CRS {crs.to_proj4()} != {theirs.to_proj4()}")
                skip = ("crs_wkt", "spatial_ref", "GeoTransform", "gcps", "rpcs")
                problems.extend(
                    f"spatial_ref {key}"
                    for key, value in grid.items()
                    if key not in skip and geo.crs_attributes.get(key) != value
                )
    elif "crs_wkt" in geo.crs_attributes:
        problems.append("CRS where rioxarray has none")
    for key in ("gcps", "rpcs"):
        if (key in grid) != (key in geo.crs_attributes):
            problems.append(f"{key} presence")
        elif key in grid and json.loads(grid[key]) != json.loads(geo.crs_attributes[key]):
            problems.append(f"{key} differ")
    attributes = dict(array.attrs)
    fill = attributes.pop("_FillValue", None)
    nodata = geo.nodata
    if fill is None:
        if nodata is not None and nodata.representable:
            problems.append(f"nodata {nodata}")
    elif nodata is None or not nodata.representable:
        problems.append(f"_FillValue {fill!r}, ours {nodata}")
    else:
        ours = array.dtype.type(nodata.value)
        if not (ours == fill or (np.isnan(ours) and np.isnan(fill))):
            problems.append(f"_FillValue {fill!r} != {ours!r}")
    for key, value in attributes.items():
        if (key, value) in (("scale_factor", 1.0), ("add_offset", 0.0)):
            if key in geo.attributes:
                problems.append(f"identity {key} kept")
            continue
        if isinstance(value, tuple | np.ndarray):
            value = list(value)
        if geo.attributes.get(key) != value:
            problems.append(f"attribute {key}")
    problems.extend(f"extra attribute {key}" for key in geo.attributes if key not in attributes)
    return problems


def compare_overviews(rasterio: Any, path: Path, tif: Any, page: Any, geo: Any) -> list[str]:
    problems: list[str] = []
    if geo.transform is None:
        return problems
    full = (page.imagelength, page.imagewidth)
    for level, overview in enumerate(overview_pages(tif)):
        with rasterio.open(path, overview_level=level) as source:
            expected = tuple(source.transform.to_gdal())
            shape = (source.height, source.width)
        level_shape = (overview.imagelength, overview.imagewidth)
        if shape != level_shape:
            problems.append(f"overview {level} shape {level_shape} != {shape}")
        elif level_transform(geo.transform, full, level_shape) != expected:
            problems.append(f"overview {level} transform")
    return problems
