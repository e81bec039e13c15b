"""TIFFParser: files written with tifffile at test time read back through
``xr.open_zarr(TIFFParser()(url, registry), zarr_format=3)`` exactly as
``tifffile.TiffFile(path).pages[0].asarray()`` (band axis first), and every TIFF of the shared
corpus either reads exactly or is refused with a reason.
"""

from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr
from oracle import local_registry

import virtualize as vz
from virtualize.errors import UnsupportedFeatureError, VirtualizeError
from virtualize.parsers.tiff import TIFFParser
from virtualize.registry import normalize_url

CORPUS = Path(os.environ.get("VIRTUALIZE_CORPUS", "/work/shared/corpus")) / "tiff"
SHAPE = (37, 53)
COMPRESSIONS = [None, "deflate", "adobe_deflate", "lzw", "packbits", "zstd"]


def parse(path: Path, **options: Any) -> vz.ManifestStore:
    return TIFFParser(**options)(normalize_url(path), local_registry(path))


def virtual(path: Path, **options: Any) -> np.ndarray:
    store = parse(path, **options)
    dataset = xr.open_zarr(store, consolidated=False, zarr_format=3)
    return np.asarray(dataset["data"].values)


def native(path: Path, ifd: int = 0) -> np.ndarray:
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[ifd]
        values = page.asarray()
        if page.samplesperpixel > 1 and page.planarconfig == 1:
            values = np.moveaxis(values, -1, 0)
    return np.asarray(values)


def assert_reads_as_tifffile(path: Path, **options: Any) -> None:
    expected = native(path, options.get("ifd") or 0)
    actual = virtual(path, **options)
    assert actual.dtype == expected.dtype.newbyteorder("=")
    np.testing.assert_array_equal(actual, expected, strict=True)


def values(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(7)
    kind = np.dtype(dtype)
    if kind.kind == "f":
        base = np.cumsum(rng.normal(size=shape), axis=-1)
        return base.astype(dtype)
    info = np.iinfo(kind)
    steps = rng.integers(-3, 4, size=shape).astype(kind)
    middle = kind.type(info.min // 2 + info.max // 2)
    smooth = np.cumsum(steps, axis=-1, dtype=kind) + middle  # wraps around: fine for TIFF
    smooth[..., :3] = np.array([info.min, info.max, 0], dtype=kind)
    return smooth


def predictors(dtype: str) -> list[Any]:
    return [None, "floatingpoint"] if np.dtype(dtype).kind == "f" else [None, "horizontal"]


LAYOUTS = {
    "strips": {"rowsperstrip": 8},  # 37 rows: the last strip holds 5
    "one-strip": {"rowsperstrip": 100},
    "tiles": {"tile": (16, 32)},  # edge tiles in both directions
}
CASES = [
    (compression, predictor, layout, dtype, byteorder)
    for compression in COMPRESSIONS
    for dtype, byteorder in [("uint8", "<"), ("int16", ">"), ("float32", "<"), ("float64", ">")]
    for predictor in (predictors(dtype) if compression else [None])
    for layout in LAYOUTS
]


@pytest.mark.parametrize(("compression", "predictor", "layout", "dtype", "byteorder"), CASES)
def test_compression_predictor_layout(
    tmp_path: Path,
    compression: str | None,
    predictor: str | None,
    layout: str,
    dtype: str,
    byteorder: str,
) -> None:
    path = tmp_path / "image.tif"
    tifffile.imwrite(
        path,
        values(dtype, SHAPE),
        compression=compression,
        predictor=predictor,
        byteorder=byteorder,
        **LAYOUTS[layout],
    )
    assert_reads_as_tifffile(path)


@pytest.mark.parametrize(
    "dtype", ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"]
)
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_integer_dtypes_with_predictor(tmp_path: Path, dtype: str, byteorder: str) -> None:
    path = tmp_path / "image.tif"
    tifffile.imwrite(
        path,
        values(dtype, SHAPE),
        compression="zlib",
        predictor="horizontal",
        byteorder=byteorder,
        rowsperstrip=10,
    )
    assert_reads_as_tifffile(path)


@pytest.mark.parametrize("compression", ["lzw", "zstd", None])
@pytest.mark.parametrize("bigtiff", [False, True])
def test_bigtiff(tmp_path: Path, compression: str | None, bigtiff: bool) -> None:
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, values("uint16", SHAPE), compression=compression, bigtiff=bigtiff)
    assert_reads_as_tifffile(path)


@pytest.mark.parametrize("planarconfig", ["contig", "separate"])
@pytest.mark.parametrize("layout", ["strips", "tiles"])
@pytest.mark.parametrize(
    ("compression", "predictor", "dtype"),
    [
        (None, None, "uint8"),
        ("deflate", "horizontal", "uint8"),
        ("lzw", "horizontal", "uint16"),
        ("zstd", "floatingpoint", "float32"),
        ("packbits", None, "uint8"),
    ],
)
def test_multiband(
    tmp_path: Path,
    planarconfig: str,
    layout: str,
    compression: str | None,
    predictor: str | None,
    dtype: str,
) -> None:
    path = tmp_path / "rgb.tif"
    shape = (*SHAPE, 3) if planarconfig == "contig" else (3, *SHAPE)
    photometric = "rgb" if dtype == "uint8" else "minisblack"
    tifffile.imwrite(
        path,
        values(dtype, shape),
        photometric=photometric,
        planarconfig=planarconfig,
        compression=compression,
        predictor=predictor,
        byteorder=">",
        **LAYOUTS[layout],
    )
    assert_reads_as_tifffile(path)
    dataset = xr.open_zarr(parse(path), consolidated=False, zarr_format=3)
    assert dataset["data"].dims == ("band", "y", "x")


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_horizontal_differencing_of_floats(tmp_path: Path, byteorder: str) -> None:
    # tifffile won't write predictor 2 for floats (GDAL does): relabel a predictor-3 file;
    # both readers then undo predictor 2 on the same bytes
    path = tmp_path / "float-delta.tif"
    data = values("float32", SHAPE)
    tifffile.imwrite(
        path, data, compression="zlib", predictor=3, rowsperstrip=8, byteorder=byteorder
    )
    with tifffile.TiffFile(path, mode="r+b") as tiff:
        tiff.pages[0].tags["Predictor"].overwrite(2)
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages[0].predictor == 2
    assert_reads_as_tifffile(path)


def test_dimensions_chunks_and_attributes(tmp_path: Path) -> None:
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, values("uint16", SHAPE), compression="zlib", tile=(16, 32))
    dataset = xr.open_zarr(parse(path), consolidated=False, zarr_format=3)
    assert dataset["data"].dims == ("y", "x")
    assert dataset["data"].encoding["chunks"] == (16, 32)
    assert dataset.attrs["tiff:compression"] == "ADOBE_DEFLATE"


def test_sparse_tiles_read_as_fill_value(tmp_path: Path) -> None:
    path = tmp_path / "sparse.tif"
    data = values("uint16", (64, 64))
    tifffile.imwrite(path, data, tile=(16, 16), compression="zlib")
    # offset and byte count 0 mark a sparse tile (GDAL's SPARSE_OK)
    with tifffile.TiffFile(path, mode="r+b") as tiff:
        page = tiff.pages[0]
        offsets, counts = list(page.dataoffsets), list(page.databytecounts)
        offsets[5] = counts[5] = 0
        page.tags["TileOffsets"].overwrite(offsets)
        page.tags["TileByteCounts"].overwrite(counts)
    assert_reads_as_tifffile(path)
    assert (virtual(path)[16:32, 16:32] == 0).all()


def test_nodata_is_the_fill_value(tmp_path: Path) -> None:
    path = tmp_path / "nodata.tif"
    tifffile.imwrite(
        path, values("int16", SHAPE), tile=(16, 16), extratags=[(42113, "s", 0, "-9999", True)]
    )
    store = parse(path)
    assert store.group.arrays["data"].metadata.fill_value == -9999
    assert_reads_as_tifffile(path)


def test_second_ifd(tmp_path: Path) -> None:
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(values("uint8", SHAPE), compression="zlib")
        tiff.write(values("float32", (10, 12)), compression="lzw", predictor=True)
    assert_reads_as_tifffile(path, ifd=1)
    with pytest.raises(VirtualizeError, match="no IFD 5"):
        parse(path, ifd=5)


@pytest.mark.parametrize(
    "write",
    [
        {"tile": (16, 16), "photometric": "rgb"},
        {"rowsperstrip": 8, "photometric": "rgb"},
        {"tile": (16, 16), "photometric": "minisblack"},
        {"rowsperstrip": 5, "photometric": "minisblack"},
        {"tile": (16, 32), "photometric": "ycbcr", "subsampling": (2, 2)},
        {"rowsperstrip": 16, "photometric": "ycbcr", "subsampling": (2, 1)},
        {"rowsperstrip": 16, "photometric": "rgb", "planarconfig": "separate"},
    ],
    ids=[
        "tiled-rgb",
        "strips-rgb",
        "tiled-grey",
        "strips-grey",
        "tiled-ycbcr",
        "strips-ycbcr",
        "planar-rgb",
    ],
)
def test_jpeg(tmp_path: Path, write: dict[str, Any]) -> None:
    path = tmp_path / "jpeg.tif"
    if write["photometric"] == "minisblack":
        shape: tuple[int, ...] = SHAPE
    elif write.get("planarconfig") == "separate":
        shape = (3, *SHAPE)
    else:
        shape = (*SHAPE, 3)
    tifffile.imwrite(path, values("uint8", shape), compression="jpeg", **write)
    assert_reads_as_tifffile(path)


def test_jpeg_tables_are_used(tmp_path: Path) -> None:
    """Abbreviated JPEG tiles whose tables live in the JPEGTables tag (347)."""
    import imagecodecs

    data = values("uint8", (32, 48, 3))
    tiles, tables = [], b""
    for y in range(0, 32, 16):
        for x in range(0, 48, 16):
            full = bytes(imagecodecs.jpeg8_encode(data[y : y + 16, x : x + 16], level=90))
            tables, tile = split_jpeg_tables(full)
            tiles.append(tile)
    path = tmp_path / "tables.tif"
    tifffile.imwrite(
        path,
        iter(tiles),
        shape=data.shape,
        dtype="uint8",
        tile=(16, 16),
        compression="jpeg",
        photometric="ycbcr",
        subsampling=(1, 1),
        jpegtables=tables,
    )
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages[0].jpegtables == tables
    assert_reads_as_tifffile(path)


def split_jpeg_tables(jpeg: bytes) -> tuple[bytes, bytes]:
    """``(tables, abbreviated image)``: DQT and DHT segments moved to a tables-only stream."""
    assert jpeg[:2] == b"\xff\xd8"
    tables, image, position = [b"\xff\xd8"], [b"\xff\xd8"], 2
    while True:
        marker = jpeg[position : position + 2]
        length = int.from_bytes(jpeg[position + 2 : position + 4], "big")
        segment = jpeg[position : position + 2 + length]
        if marker == b"\xff\xda":  # start of scan: the rest is the image
            image.append(jpeg[position:])
            break
        (tables if marker in (b"\xff\xdb", b"\xff\xc4") else image).append(segment)
        position += 2 + length
    return b"".join(tables) + b"\xff\xd9", b"".join(image)


@pytest.mark.parametrize(
    "write",
    [
        {"tile": (16, 16), "bands": 3},
        {"rowsperstrip": 16, "bands": 3},
        {"tile": (16, 16), "bands": 4},
        {"rowsperstrip": 16, "bands": 4},
        {"tile": (16, 16), "bands": 3, "compressionargs": {"lossless": True}},
    ],
    ids=["tiled-rgb", "strips-rgb", "tiled-rgba", "strips-rgba", "tiled-lossless"],
)
def test_webp(tmp_path: Path, write: dict[str, Any]) -> None:
    path = tmp_path / "webp.tif"
    bands = write.pop("bands")
    data = values("uint8", (*SHAPE, bands))
    extrasamples = {"extrasamples": ["unassalpha"]} if bands == 4 else {}
    tifffile.imwrite(path, data, compression="webp", photometric="rgb", **extrasamples, **write)
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages[0].compression == 50001
    assert_reads_as_tifffile(path)
    if write.get("compressionargs"):
        assert np.array_equal(np.moveaxis(virtual(path), 0, -1), data)


def test_webp_opaque_alpha(tmp_path: Path) -> None:
    """RGBA whose alpha is all opaque: WebP may drop it, tifffile decodes with hasalpha."""
    path = tmp_path / "opaque.tif"
    data = values("uint8", (*SHAPE, 4))
    data[..., 3] = 255
    tifffile.imwrite(
        path,
        data,
        compression="webp",
        photometric="rgb",
        extrasamples=["unassalpha"],
        tile=(16, 16),
    )
    assert_reads_as_tifffile(path)


@pytest.mark.parametrize("layout", ["strips", "tiles"])
@pytest.mark.parametrize(
    ("dtype", "inner"),
    [("float32", None), ("float64", "deflate"), ("uint16", "zstd"), ("uint8", None)],
)
def test_lerc(tmp_path: Path, dtype: str, inner: str | None, layout: str) -> None:
    path = tmp_path / "lerc.tif"
    tifffile.imwrite(
        path,
        values(dtype, SHAPE),
        compression="lerc",
        compressionargs={"compression": inner} if inner else None,
        **LAYOUTS[layout],
    )
    assert_reads_as_tifffile(path)


def test_lerc_with_interleaved_bands(tmp_path: Path) -> None:
    path = tmp_path / "lerc-rgb.tif"
    image = values("uint8", (*SHAPE, 3))
    tifffile.imwrite(path, image, photometric="rgb", compression="lerc", tile=(16, 16))
    assert_reads_as_tifffile(path)


@pytest.mark.parametrize("layout", ["strips", "tiles"])
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_bilevel_one_bit_images(tmp_path: Path, layout: str, compression: str | None) -> None:
    path = tmp_path / "bilevel.tif"
    image = values("uint8", SHAPE) % 3 == 0
    tifffile.imwrite(path, image, compression=compression, **LAYOUTS[layout])
    assert tifffile.TiffFile(path).pages[0].bitspersample == 1
    assert virtual(path).dtype == np.bool_
    assert_reads_as_tifffile(path)


@pytest.mark.parametrize(("bits", "dtype"), [(2, "uint8"), (4, "uint8"), (12, "uint16")])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_packed_bit_depths(tmp_path: Path, bits: int, dtype: str, byteorder: str) -> None:
    path = tmp_path / "packed.tif"
    image = (values("uint16", SHAPE) % (1 << bits)).astype(dtype)
    tifffile.imwrite(path, image, bitspersample=bits, byteorder=byteorder, rowsperstrip=8)
    assert_reads_as_tifffile(path)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_complex_floats(tmp_path: Path, dtype: str, compression: str | None) -> None:
    path = tmp_path / "complex.tif"
    real = values("float64", SHAPE)
    image = (real + 1j * real[::-1]).astype(dtype)
    tifffile.imwrite(path, image, compression=compression, rowsperstrip=8)
    assert_reads_as_tifffile(path)


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_complex_integers(tmp_path: Path, byteorder: str) -> None:
    """Sample format 5 (pairs of int16), which tifffile reads as complex64."""
    path = tmp_path / "cint16.tif"
    pairs = values("int16", (SHAPE[0], SHAPE[1] * 2)).view(f"{byteorder}i4")
    tifffile.imwrite(path, pairs.astype(f"{byteorder}i4"), byteorder=byteorder, rowsperstrip=8)
    with tifffile.TiffFile(path, mode="r+b") as tiff:
        tiff.pages[0].tags["SampleFormat"].overwrite(5)
    assert tifffile.TiffFile(path).pages[0].dtype == np.complex64
    assert_reads_as_tifffile(path)


def test_masks_and_overviews_form_a_multiscale_tree(tmp_path: Path) -> None:
    """A COG as GDAL writes it: overviews flagged reduced, internal masks after them."""
    path = tmp_path / "cog.tif"
    image = values("uint16", (64, 96))
    mask = values("uint8", (64, 96)) % 5 != 0
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(image, tile=(16, 16), compression="zlib")
        tiff.write(mask, tile=(16, 16), compression="zlib", subfiletype=4)
        tiff.write(image[::2, ::2], tile=(16, 16), compression="zlib", subfiletype=1)
        tiff.write(image[::4, ::4], tile=(16, 16), compression="zlib", subfiletype=1)
        tiff.write(mask[::2, ::2], tile=(16, 16), compression="zlib", subfiletype=5)
        tiff.write(values("uint8", (8, 8)), compression="zlib")  # an unrelated thumbnail
    registry = local_registry(path)
    flat = vz.open_virtual_dataset(path, registry=registry)
    assert set(flat.data_vars) == {"data", "mask"}
    tree = vz.open_virtual_datatree(path, registry=registry)
    assert sorted(tree.children) == ["0", "1", "2", "ifd_5"]
    assert tree.attrs["multiscales"]["layout"] == [
        {"asset": "0", "transform": {"scale": [1.0, 1.0]}},
        {"asset": "1", "derived_from": "0", "transform": {"scale": [2.0, 2.0]}},
        {"asset": "2", "derived_from": "0", "transform": {"scale": [4.0, 4.0]}},
    ]
    assert tree.attrs["zarr_conventions"][0]["name"] == "multiscales"
    assert set(tree["1"].data_vars) == {"data", "mask"} and set(tree["2"].data_vars) == {"data"}
    expected = {
        "0/data": image,
        "0/mask": mask,
        "1/data": image[::2, ::2],
        "1/mask": mask[::2, ::2],
        "2/data": image[::4, ::4],
    }
    store = parse(path, multiscales=True)
    group = zarr.open_group(store, mode="r", zarr_format=3)
    for name, want in expected.items():
        np.testing.assert_array_equal(group[name][...], want, strict=True)
    one = xr.open_zarr(parse(path, group="1"), consolidated=False, zarr_format=3)
    np.testing.assert_array_equal(one["mask"].values, mask[::2, ::2])
    assert vz.open_virtual_dataset(path, registry=registry, group="ifd_5")["data"].shape == (8, 8)
    with pytest.raises(VirtualizeError, match="no group '7'"):
        parse(path, group="7")


def test_an_unsupported_overview_is_refused_or_skipped(tmp_path: Path) -> None:
    path = tmp_path / "cog.tif"
    image = values("uint8", (32, 32))
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(image, tile=(16, 16), compression="zlib")
        tiff.write(image[::2, ::2], tile=(16, 16), compression="png", subfiletype=1)
    with pytest.raises(UnsupportedFeatureError, match="compression PNG") as info:
        parse(path, multiscales=True)
    assert info.value.variable == "1/data"
    assert parse(path).group.arrays  # the default opens the first image only
    with pytest.warns(UserWarning, match="left out: .*'1/data'.*compression PNG"):
        store = parse(path, multiscales=True, on_unsupported="skip")
    assert not store.group.groups["1"].arrays
    assert len(store.group.attributes["multiscales"]["layout"]) == 1


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_a_tile_larger_than_the_image(tmp_path: Path, compression: str | None) -> None:
    path = tmp_path / "oversize.tif"
    tifffile.imwrite(path, values("int16", (20, 30)), tile=(32, 64), compression=compression)
    store = parse(path)
    assert store.group.arrays["data"].metadata.chunk_grid.chunk_shape == (32, 64)
    assert_reads_as_tifffile(path)


@pytest.mark.parametrize("predictor", [None, "floatingpoint"])
def test_half_precision_floats(tmp_path: Path, predictor: str | None) -> None:
    path = tmp_path / "float16.tif"
    tifffile.imwrite(
        path, values("float32", SHAPE).astype("float16"), compression="zlib", predictor=predictor
    )
    assert_reads_as_tifffile(path)


def test_parser_is_picklable() -> None:
    parser = pickle.loads(pickle.dumps(TIFFParser(ifd=2)))
    assert parser.ifd == 2


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        ({"compression": "png"}, "compression PNG"),
        ({"compression": "jpeg2000"}, "compression JPEG2000"),
        ({"compression": "lzma"}, "compression LZMA"),
    ],
)
def test_refusals_name_the_reason(tmp_path: Path, write: dict[str, Any], reason: str) -> None:
    path = tmp_path / "refused.tif"
    shape = write.pop("shape", SHAPE)
    dtype = write.pop("dtype", "uint8")
    data = values("uint8", shape).astype(dtype)
    tifffile.imwrite(path, data, **write)
    with pytest.raises(UnsupportedFeatureError, match=reason) as info:
        parse(path)
    assert info.value.url == normalize_url(path)
    assert info.value.hint


def test_not_a_tiff(tmp_path: Path) -> None:
    path = tmp_path / "text.tif"
    path.write_bytes(b"hello, this is not a TIFF at all")
    with pytest.raises(VirtualizeError, match="not a readable TIFF"):
        parse(path)


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    suffixes = {".tif", ".tiff", ".gtiff", ".cog"}
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


WINDOW = 1024
LARGE = 64 * 2**20  # decoded bytes above which a page is compared by windows


def page_native(page: Any, window: tuple[slice, slice] | None = None) -> np.ndarray:
    """tifffile's values of ``page`` (band first), whole or in a (y, x) window."""
    whole = window is None
    values = page.asarray() if whole else zarr.open_array(page.aszarr(), mode="r")[window]
    if page.samplesperpixel > 1 and page.planarconfig == 1:
        values = np.moveaxis(values, -1, 0)
    return np.asarray(values)


def windows(page: Any) -> list[tuple[slice, slice] | None]:
    """The whole page, or corner, centre and edge windows of a large one."""
    height, width = int(page.imagelength), int(page.imagewidth)
    if page.size * page.dtype.itemsize <= LARGE:
        return [None]
    starts = [(0, 0), (height - WINDOW, width - WINDOW), (height // 2, width // 2)]
    starts += [(0, width - WINDOW), (height - WINDOW, 0), (height // 3 + 7, width // 5 + 3)]
    return [(slice(y, y + WINDOW), slice(x, x + WINDOW)) for y, x in starts]


def same(actual: np.ndarray, expected: np.ndarray) -> bool:
    return actual.dtype == expected.dtype.newbyteorder("=") and np.array_equal(
        actual, expected, equal_nan=expected.dtype.kind in "fc"
    )


def compare_page(array: Any, page: Any) -> str:
    """``"exact"`` or ``"wrong"``: the virtual ``array`` against tifffile's ``page``."""
    for window in windows(page):
        if window is None:
            actual = array[...]
        else:
            actual = array[(slice(None), *window)] if array.ndim == 3 else array[window]
        if not same(np.asarray(actual), page_native(page, window)):
            return "wrong"
    return "exact"


def corpus_outcomes(path: Path) -> dict[int, tuple[str, str]]:
    """``{ifd: ("exact" | "refused" | "wrong", detail)}`` for every IFD of one corpus file.

    The file is opened as a multiscale tree; if that is refused, each IFD is opened alone
    to tally which ones are refused and why."""
    with tifffile.TiffFile(path) as tiff:
        try:
            store = parse(path, multiscales=True)
        except UnsupportedFeatureError:
            return {
                page.index: page_outcome(path, page, lambda index=page.index: single(path, index))
                for page in tiff.pages
            }
        group = zarr.open_group(store, mode="r", zarr_format=3)
        arrays = {
            int(node.metadata.attributes["tiff:ifd"]): name
            for name, node in store.group.walk()
            if isinstance(node, vz.ManifestArray) and "tiff:ifd" in node.metadata.attributes
        }
        assert sorted(arrays) == list(range(len(tiff.pages))), arrays
        return {
            page.index: page_outcome(path, page, lambda name=arrays[page.index]: group[name])
            for page in tiff.pages
        }


def single(path: Path, ifd: int) -> Any:
    store = parse(path, ifd=ifd)
    return zarr.open_group(store, mode="r", zarr_format=3)["data"]


def page_outcome(path: Path, page: Any, array: Any) -> tuple[str, str]:
    try:
        opened = array()
    except UnsupportedFeatureError as error:
        return "refused", error.reason
    try:
        return compare_page(opened, page), ""
    except Exception as error:
        return "wrong", f"{type(error).__name__}: {error}"


@pytest.mark.skipif(not corpus_files(), reason="the TIFF corpus is not available")
def test_corpus_every_ifd() -> None:
    outcomes = {
        (path, ifd): outcome
        for path in corpus_files()
        for ifd, outcome in corpus_outcomes(path).items()
    }
    tally = Counter(kind for kind, _ in outcomes.values())
    reasons = Counter(detail for kind, detail in outcomes.values() if kind == "refused")
    print(f"\nTIFF corpus, every IFD of {len(corpus_files())} files: {dict(tally)}")
    for reason, count in reasons.most_common():
        print(f"  refused x{count}: {reason}")
    wrong = {f"{p}[{i}]": d for (p, i), (kind, d) in outcomes.items() if kind == "wrong"}
    for where, detail in wrong.items():
        print(f"  WRONG {where}: {detail}")
    assert not wrong
    assert tally["exact"] >= 0.9 * len(outcomes)


def test_a_tiff_is_detected_and_opens_with_open_virtual_dataset(tmp_path: Path) -> None:
    image = np.arange(37 * 53, dtype="uint16").reshape(37, 53)
    path = tmp_path / "detected.tif"
    tifffile.imwrite(path, image, tile=(16, 32), compression="zlib")
    registry = local_registry(path)
    virtual = vz.open_virtual_dataset(path, registry=registry)
    assert virtual["data"].dims == ("y", "x")
    store = virtual.virtualize.to_manifest_store(registry)
    got = xr.open_zarr(store, consolidated=False, zarr_format=3)["data"].values
    np.testing.assert_array_equal(got, image)
    assert not vz.open_virtual_dataset(path, registry=registry, drop_variables=["data"]).variables
