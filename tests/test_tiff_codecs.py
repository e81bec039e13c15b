"""The TIFF codecs for LERC, packed bits and complex integers, segment by segment.

Each TIFF is written at test time (tifffile, or GDAL through rasterio for what tifffile does
not write); every strip or tile is read raw from the file, decoded through a one-chunk zarr
array built from the codecs, and compared with ``tifffile.TiffFile(path).pages[i].asarray()``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.abc.codec import BytesBytesCodec
from zarr.codecs import BytesCodec, TransposeCodec
from zarr.codecs.numcodecs import Zlib
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import MemoryStore

from virtualize.codecs.tiff import (
    TIFFComplexIntCodec,
    TIFFLERCCodec,
    TIFFUnpackCodec,
)

tifffile = pytest.importorskip("tifffile")
imagecodecs = pytest.importorskip("imagecodecs")

CORPUS = Path(os.environ.get("VIRTUALIZE_CORPUS", "/work/shared/corpus")) / "tiff"
HEIGHT, WIDTH, ROWS, TILE = 37, 29, 8, 16  # the last strip holds 5 rows

# the codecs after ``bytes`` for one page: (rows, width, contig samples) -> codecs
CodecsFor = Callable[[Any, int, int, int], list[BytesBytesCodec]]


def _decode(
    segment: bytes, dtype: np.dtype[Any], chunk: tuple[int, ...], codecs: list[Any], endian: Any
) -> np.ndarray:
    """``segment`` decoded as the only chunk of a zarr array, ``(samples, rows, width)``."""
    interleaved = len(chunk) == 3
    data: dict[str, Any] = {}
    array = zarr.create_array(
        MemoryStore(data),
        shape=chunk,
        chunks=chunk,
        dtype=dtype,
        filters=[TransposeCodec(order=(1, 2, 0))] if interleaved else None,
        serializer=BytesCodec(endian=None if dtype.itemsize == 1 else endian),
        compressors=codecs,
        fill_value=0,
    )
    key = "c/" + "/".join("0" * len(chunk))
    data[key] = default_buffer_prototype().buffer.from_bytes(segment)
    values = np.asarray(array[...])
    return values if interleaved else values[None]


def _check_page(
    path: Path | str, codecs_for: CodecsFor, *, page: int = 0, endian: Any = "little"
) -> int:
    """Compare every segment of a page, decoded by zarr, with tifffile; return their count."""
    with tifffile.TiffFile(path) as tif:
        tiff_page = tif.pages[page]
        expected = np.asarray(tiff_page.asarray())
        samples = int(tiff_page.samplesperpixel)
        planar = samples > 1 and tiff_page.planarconfig == 2
        contig = 1 if planar else samples
        # band first: (samples, height, width)
        if samples == 1:
            expected = expected[None]
        elif not planar:
            expected = np.moveaxis(expected, -1, 0)
        height, width = int(tiff_page.imagelength), int(tiff_page.imagewidth)
        if tiff_page.is_tiled:
            rows, cols = int(tiff_page.tilelength), int(tiff_page.tilewidth)
        else:
            rows, cols = min(int(tiff_page.rowsperstrip), height), width
        down, across = -(-height // rows), -(-width // cols)
        dtype = np.dtype(expected.dtype)
        codecs = codecs_for(tiff_page, rows, cols, contig)
        chunk = (contig, rows, cols) if contig > 1 else (rows, cols)
        handle = tif.filehandle
        segments = list(zip(tiff_page.dataoffsets, tiff_page.databytecounts, strict=True))
        assert len(segments) == (samples // contig) * down * across
        for index, (offset, count) in enumerate(segments):
            handle.seek(offset)
            decoded = _decode(handle.read(count), dtype, chunk, codecs, endian)
            plane, rest = divmod(index, down * across)
            y, x = divmod(rest, across)
            y0, x0 = y * rows, x * cols
            want = expected[plane * contig : (plane + 1) * contig, y0 : y0 + rows, x0 : x0 + cols]
            got = decoded[:, : want.shape[1], : want.shape[2]]
            np.testing.assert_array_equal(got, want, strict=True)
        return len(segments)


def _layout(tiled: bool) -> dict[str, Any]:
    return {"tile": (TILE, TILE)} if tiled else {"rowsperstrip": ROWS}


# LERC -----------------------------------------------------------------------------------


def _lerc(page: Any, rows: int, width: int, samples: int) -> list[BytesBytesCodec]:
    compression = int(page.tags.valueof(50674, (4, 0))[1])
    return [TIFFLERCCodec(rows=rows, width=width, samples=samples, compression=compression)]


@pytest.mark.parametrize("dtype", ["float32", "uint8", "uint16"])
@pytest.mark.parametrize("tiled", [False, True], ids=["strips", "tiles"])
@pytest.mark.parametrize("extra", [None, "deflate", "zstd"])
def test_lerc(tmp_path: Path, dtype: str, tiled: bool, extra: str | None) -> None:
    rng = np.random.default_rng(1)
    data = (rng.random((HEIGHT, WIDTH)) * 250).astype(dtype)
    if dtype == "float32":
        data[3, 4] = np.nan
    path = tmp_path / "lerc.tif"
    tifffile.imwrite(
        path, data, compression="lerc", compressionargs={"compression": extra}, **_layout(tiled)
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].tags[50674].value[1] == {None: 0, "deflate": 1, "zstd": 2}[extra]
    assert _check_page(path, _lerc) == (6 if tiled else 5)


@pytest.mark.parametrize("tiled", [False, True], ids=["strips", "tiles"])
@pytest.mark.parametrize("planarconfig", ["contig", "separate"])
def test_lerc_rgb(tmp_path: Path, tiled: bool, planarconfig: str) -> None:
    rng = np.random.default_rng(2)
    data = (rng.random((HEIGHT, WIDTH, 3)) * 1000).astype("float32")
    if planarconfig == "separate":
        data = np.ascontiguousarray(np.moveaxis(data, -1, 0))
    path = tmp_path / "lerc_rgb.tif"
    tifffile.imwrite(
        path,
        data,
        compression="lerc",
        photometric="rgb",
        planarconfig=planarconfig,
        compressionargs={"compression": "zstd"},
        **_layout(tiled),
    )
    _check_page(path, _lerc)


def test_lerc_big_endian_gdal(tmp_path: Path) -> None:
    """GDAL encodes a big-endian file's values byte-swapped; tifffile reads them so."""
    rasterio = pytest.importorskip("rasterio")
    rng = np.random.default_rng(3)
    data = (rng.random((HEIGHT, WIDTH)) * 100).astype("float32")
    path = tmp_path / "lerc_be.tif"
    with rasterio.open(
        path,
        "w",
        compress="lerc_deflate",
        endianness="big",
        blockysize=ROWS,
        **_gdal_profile("float32"),
    ) as dataset:
        dataset.write(data, 1)
    with tifffile.TiffFile(path) as tif:
        assert tif.byteorder == ">"
    _check_page(path, _lerc, endian="big")


# packed bits ----------------------------------------------------------------------------


def _unpack(page: Any, rows: int, width: int, samples: int) -> list[BytesBytesCodec]:
    codecs: list[BytesBytesCodec] = [
        TIFFUnpackCodec(
            bitspersample=int(page.bitspersample),
            rows=rows,
            width=width,
            samples=samples,
            byteorder=page.parent.byteorder,
            fillorder=int(page.fillorder),
        )
    ]
    if page.compression in (8, 32946):
        codecs.append(Zlib())
    else:
        assert page.compression == 1
    return codecs


@pytest.mark.parametrize("tiled", [False, True], ids=["strips", "tiles"])
@pytest.mark.parametrize(
    "options",
    [{}, {"compression": "zlib"}, {"photometric": "minisblack"}],
    ids=["miniswhite", "deflate", "minisblack"],
)
def test_bilevel(tmp_path: Path, tiled: bool, options: dict[str, Any]) -> None:
    rng = np.random.default_rng(4)
    data = rng.random((HEIGHT, WIDTH)) > 0.5
    path = tmp_path / "bilevel.tif"
    tifffile.imwrite(path, data, **options, **_layout(tiled))
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.bitspersample == 1 and page.dtype == np.bool_
        # tifffile does not invert MinIsWhite
        np.testing.assert_array_equal(page.asarray(), data)
    _check_page(path, _unpack)


def test_bilevel_fillorder_2(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    data = rng.random((HEIGHT, WIDTH)) > 0.5
    path = tmp_path / "fillorder.tif"
    # tifffile writes no FillOrder: write an unknown tag 267 and renumber it 266
    tifffile.imwrite(path, data, rowsperstrip=ROWS, extratags=[(267, "H", 1, 2, True)])
    raw = bytearray(path.read_bytes())
    at = raw.index(struct.pack("<HHI", 267, 3, 1))
    raw[at : at + 2] = struct.pack("<H", 266)
    path.write_bytes(bytes(raw))
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].fillorder == 2
    _check_page(path, _unpack)


@pytest.mark.parametrize("bits", [2, 4, 12, 24])
@pytest.mark.parametrize("tiled", [False, True], ids=["strips", "tiles"])
def test_packed(tmp_path: Path, bits: int, tiled: bool) -> None:
    rng = np.random.default_rng(bits)
    dtype = "uint8" if bits <= 8 else "uint16" if bits <= 16 else "uint32"
    data = rng.integers(0, 2**bits, (HEIGHT, WIDTH)).astype(dtype)
    path = tmp_path / "packed.tif"
    tifffile.imwrite(path, data, bitspersample=bits, **_layout(tiled))
    _check_page(path, _unpack)


@pytest.mark.parametrize("bits", [4, 12])
@pytest.mark.parametrize("planarconfig", ["contig", "separate"])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_packed_rgb(tmp_path: Path, bits: int, planarconfig: str, byteorder: str) -> None:
    rng = np.random.default_rng(bits + 1)
    data = rng.integers(0, 2**bits, (HEIGHT, WIDTH, 3)).astype("uint8" if bits <= 8 else "uint16")
    if planarconfig == "separate":
        data = np.ascontiguousarray(np.moveaxis(data, -1, 0))
    path = tmp_path / "packed_rgb.tif"
    tifffile.imwrite(
        path,
        data,
        bitspersample=bits,
        photometric="rgb",
        planarconfig=planarconfig,
        byteorder=byteorder,
        rowsperstrip=ROWS,
    )
    _check_page(path, _unpack)


def test_packed_24_big_endian(tmp_path: Path) -> None:
    """tifffile's reading, not the values written (its writer and reader disagree here)."""
    rng = np.random.default_rng(24)
    data = rng.integers(0, 2**24, (HEIGHT, WIDTH)).astype("uint32")
    path = tmp_path / "packed_be.tif"
    tifffile.imwrite(path, data, bitspersample=24, byteorder=">", rowsperstrip=ROWS)
    _check_page(path, _unpack)


def _gdal_profile(dtype: str = "uint8") -> dict[str, Any]:
    from rasterio.transform import from_origin

    return {
        "driver": "GTiff",
        "width": WIDTH,
        "height": HEIGHT,
        "count": 1,
        "dtype": dtype,
        "transform": from_origin(0, HEIGHT, 1, 1),
    }


def test_gdal_nbits_deflate(tmp_path: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    rng = np.random.default_rng(6)
    data = rng.integers(0, 16, (HEIGHT, WIDTH)).astype("uint8")
    path = tmp_path / "nbits.tif"
    with rasterio.open(
        path, "w", nbits=4, compress="deflate", blockysize=ROWS, **_gdal_profile()
    ) as dataset:
        dataset.write(data, 1)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert (page.bitspersample, page.compression) == (4, 8)
        np.testing.assert_array_equal(page.asarray(), data)
    _check_page(path, _unpack)


@pytest.mark.parametrize("tiled", [False, True], ids=["strips", "tiles"])
def test_gdal_internal_mask(tmp_path: Path, tiled: bool) -> None:
    rasterio = pytest.importorskip("rasterio")
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, (HEIGHT, WIDTH)).astype("uint8")
    mask = np.where(data > 100, 255, 0).astype("uint8")
    path = tmp_path / "mask.tif"
    layout: dict[str, Any] = (
        {"tiled": True, "blockxsize": TILE, "blockysize": TILE} if tiled else {"blockysize": ROWS}
    )
    with (
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(path, "w", compress="deflate", **layout, **_gdal_profile()) as dataset,
    ):
        dataset.write(data, 1)
        dataset.write_mask(mask)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[1]
        assert page.is_mask and page.photometric == 4 and page.bitspersample == 1
        assert page.compression == 8 and page.dtype == np.bool_
        np.testing.assert_array_equal(page.asarray(), mask > 0)
    _check_page(path, _unpack, page=1)


# complex integers -----------------------------------------------------------------------


def _complex_int(page: Any, rows: int, width: int, samples: int) -> list[BytesBytesCodec]:
    codecs: list[BytesBytesCodec] = [
        TIFFComplexIntCodec(
            intsize=int(page.bitspersample) // 16, byteorder=page.parent.byteorder, rows=rows
        )
    ]
    if page.compression in (8, 32946):
        codecs.append(Zlib())
    else:
        assert page.compression == 1
    return codecs


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("tiled", [False, True], ids=["strips", "tiles"])
def test_complex_int(
    tmp_path: Path, bits: int, byteorder: str, compression: str | None, tiled: bool
) -> None:
    rng = np.random.default_rng(bits)
    data = rng.integers(-(2**31), 2**31, (HEIGHT, WIDTH), dtype=np.int64)
    data = data.astype(f"i{bits // 8}")
    path = tmp_path / "cint.tif"
    # tifffile writes no complex integers: write integers, then say SampleFormat 5
    tifffile.imwrite(path, data, byteorder=byteorder, compression=compression, **_layout(tiled))
    with tifffile.TiffFile(path, mode="r+") as tif:
        tif.pages[0].tags[339].overwrite(5)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.sampleformat == 5
        assert page.asarray().dtype == np.dtype("complex64" if bits == 32 else "complex128")
    _check_page(path, _complex_int)


@pytest.mark.parametrize("name", ["rioxarray/cint16.tif", "rio-cogeo/slc.tif"])
def test_complex_int_corpus(name: str) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} is missing")
    path = CORPUS / name
    assert path.exists(), f"{path} is missing from the corpus"
    assert _check_page(path, _complex_int) > 1


# codec plumbing -------------------------------------------------------------------------

CODECS = [
    TIFFLERCCodec(rows=8, width=29, samples=3, compression=2),
    TIFFUnpackCodec(bitspersample=12, rows=8, width=29, samples=3, byteorder=">", fillorder=2),
    TIFFComplexIntCodec(intsize=4, byteorder=">", rows=8),
]


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.codec_name)
def test_registered_and_round_trip(codec: Any) -> None:
    cls: Any = zarr.registry.get_codec_class(codec.codec_name)
    assert cls is type(codec)
    assert cls.from_dict(codec.to_dict()) == codec
    assert codec.to_dict()["name"] == codec.codec_name


@pytest.mark.parametrize(
    ("cls", "configuration"),
    [
        (TIFFLERCCodec, {"rows": 8, "width": 29, "compression": 3}),
        (TIFFLERCCodec, {"rows": 0, "width": 29}),
        (TIFFUnpackCodec, {"bitspersample": 33, "rows": 8, "width": 29}),
        (TIFFUnpackCodec, {"bitspersample": 4, "rows": 8, "width": 29, "fillorder": 3}),
        (TIFFUnpackCodec, {"bitspersample": 4, "rows": 8, "width": 29, "byteorder": "="}),
        (TIFFComplexIntCodec, {"intsize": 1, "rows": 8}),
    ],
)
def test_invalid_configuration(cls: Any, configuration: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        cls(**configuration)


@pytest.mark.parametrize(
    ("codec", "dtype"),
    [
        (TIFFLERCCodec(rows=8, width=29, compression=1), "float32"),
        (TIFFUnpackCodec(bitspersample=1, rows=8, width=29), "bool"),
        (TIFFUnpackCodec(bitspersample=12, rows=8, width=29, byteorder=">"), "uint16"),
        (TIFFComplexIntCodec(intsize=2, byteorder=">", rows=8), "complex64"),
    ],
    ids=["lerc", "bilevel", "12-bit", "cint16"],
)
def test_encode_round_trip(codec: Any, dtype: str) -> None:
    rng = np.random.default_rng(8)
    if dtype == "bool":
        data = rng.random((8, 29)) > 0.5
    elif dtype == "uint16":
        data = rng.integers(0, 2**12, (8, 29)).astype(dtype)
    elif dtype == "complex64":
        data = rng.integers(-(2**15), 2**15, (8, 29, 2)).astype("float32").view("complex64")[..., 0]
    else:
        data = (rng.random((8, 29)) * 100).astype(dtype)
    array = zarr.create_array(
        MemoryStore(),
        shape=data.shape,
        chunks=data.shape,
        dtype=data.dtype,
        serializer=BytesCodec(endian=None if data.dtype.itemsize == 1 else "little"),
        compressors=[codec],
    )
    array[...] = data
    np.testing.assert_array_equal(array[...], data)


def test_wrong_dtype_refused() -> None:
    codec = TIFFUnpackCodec(bitspersample=12, rows=2, width=3)
    array = zarr.create_array(
        MemoryStore(), shape=(2, 3), chunks=(2, 3), dtype="uint8", compressors=[codec]
    )
    with pytest.raises(ValueError, match="unpack to"):
        array[...] = np.ones((2, 3), "uint8")


def test_partial_row_refused() -> None:
    data: dict[str, Any] = {}
    array = zarr.create_array(
        MemoryStore(data),
        shape=(8, 29),
        chunks=(8, 29),
        dtype="uint8",
        compressors=[TIFFUnpackCodec(bitspersample=4, rows=8, width=29)],
    )
    data["c/0/0"] = default_buffer_prototype().buffer.from_bytes(bytes(15 * 3 + 7))
    # 29 4-bit samples: rows of 15 bytes
    with pytest.raises(ValueError, match="whole 15-byte rows"):
        array[...]
