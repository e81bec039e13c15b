"""GeoTIFFs opened through the parser: coordinates and CRS as rioxarray gives them, stacks of
scenes along a new time dimension, mosaics of tiles combined by coordinates, and an archive
of 100 scenes ingested into Icechunk and read back exactly."""

from __future__ import annotations

import json
import os
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import xarray as xr
from oracle import local_registry
from xarray.backends.zarr import FillValueCoder

import virtualize as vz
from virtualize.ingest import open_repository

CORPUS = Path(os.environ.get("VIRTUALIZE_CORPUS", "/work/shared/corpus")) / "tiff"

GEOGRAPHIC, PROJECTED = 2, 1


def geokeys(epsg: int) -> tuple[int, ...]:
    """A GeoKeyDirectory: model type, PixelIsArea, and the EPSG code of the CRS."""
    model = GEOGRAPHIC if epsg == 4326 else PROJECTED
    crs_key = 2048 if model == GEOGRAPHIC else 3072
    keys = [(1024, 0, 1, model), (1025, 0, 1, 1), (crs_key, 0, 1, epsg)]
    return (1, 1, 0, len(keys), *[value for key in keys for value in key])


def write_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    origin: tuple[float, float],
    resolution: tuple[float, float],
    epsg: int = 32633,
    nodata: str | None = None,
    when: datetime | None = None,
    tile: tuple[int, int] = (16, 16),
) -> Path:
    """A GeoTIFF as GDAL writes one: pixel scale, one tiepoint, geokeys, GDAL_NODATA."""
    tags: list[tuple[Any, ...]] = [
        (33550, "d", 3, (resolution[0], resolution[1], 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, origin[0], origin[1], 0.0), True),
        (34735, "H", len(geokeys(epsg)), geokeys(epsg), True),
    ]
    if nodata is not None:
        tags.append((42113, "s", 0, nodata, True))
    tifffile.imwrite(
        path,
        data,
        tile=tile,
        compression="zlib",
        extratags=tags,
        datetime=when,
        photometric="minisblack",
        planarconfig="separate" if data.ndim == 3 else None,
    )
    return path


def scene(seed: int, shape: tuple[int, ...] = (32, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10_000, size=shape, dtype=np.uint16)


def read(store: vz.ManifestStore) -> xr.Dataset:
    return xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None).load()


def test_coordinates_crs_and_nodata(tmp_path: Path) -> None:
    path = write_geotiff(
        tmp_path / "scene.tif",
        scene(1),
        origin=(500_000.0, 6_000_000.0),
        resolution=(30.0, 30.0),
        nodata="0",
    )
    virtual = vz.open_virtual_dataset(path, registry=local_registry(path))
    np.testing.assert_array_equal(virtual["x"].values, 500_000.0 + 15.0 + 30.0 * np.arange(48))
    np.testing.assert_array_equal(virtual["y"].values, 6_000_000.0 - 15.0 - 30.0 * np.arange(32))
    assert "spatial_ref" in virtual.coords
    assert "UTM zone 33N" in virtual["spatial_ref"].attrs["crs_wkt"]
    assert virtual["spatial_ref"].attrs["GeoTransform"] == "500000.0 30.0 0.0 6000000.0 0.0 -30.0"
    assert virtual["data"].attrs["_FillValue"] == 0
    assert virtual["data"].attrs["AREA_OR_POINT"] == "Area"
    # read through the store, the nodata value masks as rioxarray's masked=True does
    store = virtual.virtualize.to_manifest_store(local_registry(path))
    masked = read(store)["data"]
    expected = scene(1).astype("float32")
    expected[expected == 0] = np.nan
    np.testing.assert_array_equal(masked.values, expected)


def test_nodata_the_dtype_cannot_hold_is_kept_as_an_attribute(tmp_path: Path) -> None:
    path = write_geotiff(
        tmp_path / "scene.tif",
        scene(2).astype("uint8"),
        origin=(0.0, 0.0),
        resolution=(1.0, 1.0),
        nodata="-9999",
    )
    with pytest.warns(UserWarning, match="kept as attribute 'nodata', not as _FillValue"):
        virtual = vz.open_virtual_dataset(path, registry=local_registry(path))
    assert virtual["data"].attrs["nodata"] == "-9999"
    assert "_FillValue" not in virtual["data"].attrs


def test_overviews_get_their_own_coordinates(tmp_path: Path) -> None:
    path = tmp_path / "cog.tif"
    image = scene(3, (64, 64))
    tags: list[tuple[Any, ...]] = [
        (33550, "d", 3, (10.0, 10.0, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, 1000.0, 2000.0, 0.0), True),
        (34735, "H", len(geokeys(32633)), geokeys(32633), True),
    ]
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(image, tile=(16, 16), compression="zlib", extratags=tags)
        tiff.write(image[::2, ::2], tile=(16, 16), compression="zlib", subfiletype=1)
    tree = vz.open_virtual_datatree(path, registry=local_registry(path))
    np.testing.assert_array_equal(tree["1"]["x"].values, 1000.0 + 10.0 + 20.0 * np.arange(32))
    np.testing.assert_array_equal(tree["1"]["y"].values, 2000.0 - 10.0 - 20.0 * np.arange(32))
    assert tree["1"]["spatial_ref"].attrs["GeoTransform"].split()[1] == "20.0"


def test_a_stack_of_scenes_along_a_new_time_dimension(tmp_path: Path) -> None:
    days = [datetime(2024, 5, day) for day in range(1, 7)]
    paths = [
        write_geotiff(
            tmp_path / f"scene-{when:%Y%m%d}.tif",
            scene(day),
            origin=(500_000.0, 6_000_000.0),
            resolution=(30.0, 30.0),
            when=when,
        )
        for day, when in enumerate(days)
    ]
    registry = local_registry(tmp_path)
    stack = vz.open_virtual_mfdataset(
        [str(p) for p in paths],
        registry=registry,
        combine="nested",
        concat_dim="time",
        preprocess=add_time,
    )
    assert stack["data"].dims == ("time", "y", "x")
    np.testing.assert_array_equal(stack["time"].values, np.array(days, dtype="datetime64[ns]"))
    got = read(stack.virtualize.to_manifest_store(registry))
    np.testing.assert_array_equal(got["data"].values, np.stack([scene(d) for d in range(6)]))
    single = vz.open_virtual_dataset(paths[0], registry=registry)
    np.testing.assert_array_equal(got["x"].values, single["x"].values)


def add_time(dataset: xr.Dataset) -> xr.Dataset:
    """The scene's time from its TIFF DateTime tag, as a new leading dimension."""
    stamp = datetime.strptime(dataset["data"].attrs["TIFFTAG_DATETIME"], "%Y:%m:%d %H:%M:%S")
    return dataset.expand_dims(time=[np.datetime64(stamp, "ns")])


def test_pixel_interleaved_scenes_stack_and_ingest(tmp_path: Path) -> None:
    """RGB stored pixel-interleaved reads band first through a transpose codec, which must
    follow the new time axis when scenes are stacked, expanded and sliced."""
    pytest.importorskip("icechunk")
    archive = tmp_path / "archive"
    archive.mkdir()
    days = [datetime(2024, 6, day) for day in range(1, 5)]
    images = [scene(day, (32, 48, 3)).astype("uint8") for day in range(4)]
    for when, image in zip(days, images, strict=True):
        tifffile.imwrite(
            archive / f"rgb-{when:%Y%m%d}.tif",
            image,
            photometric="rgb",
            tile=(16, 16),
            compression="zlib",
            datetime=when,
            extratags=[
                (33550, "d", 3, (10.0, 10.0, 0.0), True),
                (33922, "d", 6, (0.0, 0.0, 0.0, 0.0, 320.0, 0.0), True),
                (34735, "H", len(geokeys(32633)), geokeys(32633), True),
            ],
        )
    registry = local_registry(archive)
    expected = np.stack([np.moveaxis(image, -1, 0) for image in images])
    stack = vz.open_virtual_mfdataset(
        str(archive / "rgb-*.tif"),
        registry=registry,
        combine="nested",
        concat_dim="time",
        preprocess=add_time,
    )
    got = read(stack.virtualize.to_manifest_store(registry))
    np.testing.assert_array_equal(got["data"].values, expected)
    middle = stack.isel(time=slice(1, 3))
    got = read(middle.virtualize.to_manifest_store(registry))
    np.testing.assert_array_equal(got["data"].values, expected[1:3])
    one = stack.isel(time=2)  # the time axis dropped again
    got = read(one.virtualize.to_manifest_store(registry))
    np.testing.assert_array_equal(got["data"].values, expected[2])
    vz.ingest(
        str(archive / "rgb-*.tif"),
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=registry,
        preprocess=add_time,
        batch_size=3,
        progress=False,
    )
    repository, _ = open_repository(str(tmp_path / "repo"), registry)
    store = repository.readonly_session("main").store
    raw = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None)
    np.testing.assert_array_equal(raw["data"].values, expected, strict=True)


def test_a_mosaic_of_tiles_combines_by_coordinates(tmp_path: Path) -> None:
    """Six tiles of 32 x 48 pixels (2 rows, 3 columns) on one grid make one 64 x 144 image."""
    whole = scene(9, (3, 64, 144))
    paths = []
    for row in range(2):
        for column in range(3):
            tile = whole[:, row * 32 : (row + 1) * 32, column * 48 : (column + 1) * 48]
            paths.append(
                write_geotiff(
                    tmp_path / f"tile-{row}-{column}.tif",
                    tile,
                    origin=(300_000.0 + column * 48 * 10.0, 5_000_000.0 - row * 32 * 10.0),
                    resolution=(10.0, 10.0),
                )
            )
    registry = local_registry(tmp_path)
    mosaic = vz.open_virtual_mfdataset(
        [str(p) for p in reversed(paths)], registry=registry, combine="by_coords"
    )
    assert mosaic["data"].shape == (3, 64, 144)
    got = read(mosaic.virtualize.to_manifest_store(registry))
    np.testing.assert_array_equal(got["data"].values, whole)
    np.testing.assert_array_equal(got["x"].values, 300_000.0 + 5.0 + 10.0 * np.arange(144))
    np.testing.assert_array_equal(got["y"].values, 5_000_000.0 - 5.0 - 10.0 * np.arange(64))
    np.testing.assert_array_equal(got["band"].values, [1, 2, 3])


def test_a_hundred_geotiffs_ingest_into_icechunk_and_read_back_exactly(tmp_path: Path) -> None:
    pytest.importorskip("icechunk")
    archive = tmp_path / "archive"
    archive.mkdir()
    start = datetime(2024, 1, 1)
    times = np.datetime64(start, "ns") + np.arange(100) * np.timedelta64(6, "h")
    for index, when in enumerate(times):
        write_geotiff(
            archive / f"scene-{index:03d}.tif",
            scene(index, (32, 32)),
            origin=(500_000.0, 6_000_000.0),
            resolution=(30.0, 30.0),
            nodata="0",
            when=when.astype("datetime64[s]").astype(datetime),
        )
    registry = local_registry(archive)
    report = vz.ingest(
        str(archive / "scene-*.tif"),
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=registry,
        preprocess=add_time,
        batch_size=40,
        progress=False,
    )
    assert (len(report.ingested), len(report.commits)) == (100, 3)
    repository, _ = open_repository(str(tmp_path / "repo"), registry)
    store = repository.readonly_session("main").store
    raw = xr.open_zarr(store, consolidated=False, zarr_format=3, mask_and_scale=False).load()
    expected = np.stack([scene(i, (32, 32)) for i in range(100)])
    np.testing.assert_array_equal(raw["data"].values, expected, strict=True)
    np.testing.assert_array_equal(raw["time"].values, times)
    assert raw["data"].attrs["_FillValue"] == 0
    assert "UTM zone 33N" in raw["spatial_ref"].attrs["crs_wkt"]


def corpus_geotiffs() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    suffixes = {".tif", ".tiff", ".cog"}
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


@pytest.mark.skipif(not corpus_geotiffs(), reason="the TIFF corpus is not available")
def test_corpus_coordinates_match_rioxarray() -> None:
    """x/y (or the rotated transform), band, the CRS and _FillValue of every corpus TIFF and of every COG
    overview, as the parser builds them, against rioxarray's."""
    rioxarray = pytest.importorskip("rioxarray")
    pyproj = pytest.importorskip("pyproj")
    checked = gcp_levels = 0
    for path in corpus_geotiffs():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            native = rioxarray.open_rasterio(path)
            assert not isinstance(native, list), path  # no corpus TIFF has subdatasets
            tree = vz.open_virtual_datatree(path, registry=local_registry(path))
        levels = [name for name in tree.children if name.isdigit()]
        for level in levels:
            if level != "0":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    native = rioxarray.open_rasterio(path, overview_level=int(level) - 1)
            ours = tree[level].to_dataset()
            if not {"x", "spatial_ref"} & set(ours.coords):
                # not georeferenced: rioxarray numbers the pixels from GDAL's identity
                assert native.rio.transform().is_identity, path
                continue
            for name in ("x", "y"):
                assert (name in ours.coords) == (name in native.coords), (path, level, name)
                if name in native.coords:
                    np.testing.assert_array_equal(ours[name].values, native[name].values)
            if "xc" in native.coords:  # rotated: the transform only, as spatial_ref's
                transform = ours["spatial_ref"].attrs["GeoTransform"].split()
                expected = native.rio.transform().to_gdal()
                np.testing.assert_array_equal(np.array(transform, float), expected)
            if "band" in ours.coords:
                np.testing.assert_array_equal(ours["band"].values, native["band"].values)
            theirs_ref, ours_ref = native["spatial_ref"].attrs, ours["spatial_ref"].attrs
            if "GeoTransform" in ours_ref:
                np.testing.assert_array_equal(
                    np.array(ours_ref["GeoTransform"].split(), float),
                    np.array(theirs_ref["GeoTransform"].split(), float),
                )
            if "gcps" in theirs_ref:  # an overview's GCPs are at its own resolution
                assert json.loads(ours_ref["gcps"]) == json.loads(theirs_ref["gcps"]), path
                gcp_levels += 1
            if "crs_wkt" in native["spatial_ref"].attrs and level == "0":
                theirs = pyproj.CRS(native["spatial_ref"].attrs["crs_wkt"])
                mine = pyproj.CRS(ours["spatial_ref"].attrs["crs_wkt"])
                assert mine == theirs or mine.to_proj4() == theirs.to_proj4(), path
            if "_FillValue" in native.attrs and native.dtype.kind != "c":
                encoded = ours["data"].attrs["_FillValue"]  # as in zarr attributes
                np.testing.assert_array_equal(
                    np.asarray(FillValueCoder.decode(encoded, native.dtype), native.dtype),
                    np.asarray(native.attrs["_FillValue"], dtype=native.dtype),
                )
            checked += 1
    print(f"\ncorpus levels whose coordinates match rioxarray: {checked}")
    assert checked >= 100
    assert gcp_levels >= 4  # cog_gcps.tif and its overviews
