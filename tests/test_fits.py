"""The FITS parser: virtual reads equal astropy's reads, exactly, or are refused with a reason.

Every file is written at test time by astropy and read twice: by ``astropy.io.fits.open`` and
through ``xr.open_zarr(FITSParser()(url, registry), group=..., zarr_format=3)``. Images are
the variable ``"data"`` of the HDU's group; table columns are variables named by column.
"""

from __future__ import annotations

import gzip
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import obstore
import pytest
import xarray as xr
import zarr
from astropy.io import fits
from obstore.store import MemoryStore
from oracle import local_registry

import virtualize as vz
from virtualize.codecs.fits import FITSColumnCodec, FITSScaleCodec, FITSTileCodec, TileSpec
from virtualize.errors import InvalidFileError, SkippedVariableWarning, UnsupportedFeatureError
from virtualize.parsers.fits import FITSParser
from virtualize.registry import normalize_url

RNG = np.random.default_rng(20240601)


def parse(path: Path, **options: Any) -> vz.ManifestStore:
    return FITSParser(**options)(normalize_url(path), local_registry(path))


def open_group(store: vz.ManifestStore, group: str | None) -> xr.Dataset:
    return xr.open_zarr(store, group=group, consolidated=False, zarr_format=3)


def assert_exact(expected: Any, actual: Any) -> None:
    """Same type, shape and values; floats compared bit for bit (NaN equals NaN)."""
    expected, actual = np.asarray(expected), np.asarray(actual)
    native = expected.dtype.newbyteorder("=") if expected.dtype.kind not in "bSU" else None
    expected = expected.astype(native) if native is not None else expected
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape
    if expected.dtype.kind in "fc":
        bits = f"u{expected.dtype.itemsize}" if expected.dtype.kind == "f" else "u8"
        same = np.array_equal(expected.view(bits), actual.view(bits))
        assert same, (expected, actual)
    else:
        np.testing.assert_array_equal(actual, expected)


def assert_file_reads_as_astropy(path: Path, **options: Any) -> vz.ManifestStore:
    """Every HDU's image or columns read through the store equal astropy's."""
    store = parse(path, **options)
    names = list(store.group.groups)
    with fits.open(path) as hdus:
        assert len(names) == len(hdus)
        for name, hdu in zip(names, hdus, strict=True):
            dataset = open_group(store, name)
            if hdu.data is None:
                assert "data" not in dataset
            elif hdu.is_image:
                assert_exact(hdu.data, dataset["data"].values)
            else:
                for column in hdu.data.names:
                    assert_exact(hdu.data[column], dataset[column].values)
    return store


def codec_names(store: vz.ManifestStore, path: str) -> list[str]:
    node = store.group.get_node(path)
    assert isinstance(node, vz.ManifestArray)
    return [codec.to_dict()["name"] for codec in node.metadata.codecs]


# -- images -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "int64", "float32", "float64"])
def test_every_bitpix_in_images_and_cubes(tmp_path: Path, dtype: str) -> None:
    if dtype[0] == "f":
        cube = RNG.normal(size=(3, 4, 5)).astype(dtype) * 1e3
        cube[0, 0, 0] = np.nan
    else:
        info = np.iinfo(dtype)
        cube = RNG.integers(info.min, info.max, size=(3, 4, 5), dtype=dtype, endpoint=True)
    hdus = [fits.PrimaryHDU(cube[0]), fits.ImageHDU(cube, name="CUBE")]
    hdus.append(fits.ImageHDU(cube[0, 0], name="LINE"))
    hdus.append(fits.ImageHDU(cube.reshape(1, 3, 4, 5), name="HYPER"))
    path = tmp_path / "image.fits"
    fits.HDUList(hdus).writeto(path)
    store = assert_file_reads_as_astropy(path)
    dims = {name: open_group(store, name)["data"].dims for name in store.group.groups}
    assert dims == {
        "PRIMARY": ("y", "x"),
        "CUBE": ("axis3", "axis2", "axis1"),
        "LINE": ("x",),
        "HYPER": ("axis4", "axis3", "axis2", "axis1"),
    }
    codec = store.group.groups["CUBE"].arrays["data"].metadata.codecs[0].to_dict()
    expected = {"endian": "big"} if np.dtype(dtype).itemsize > 1 else None
    assert codec.get("configuration") == expected


SCALINGS = {
    "bscale_bzero_blank_int16": ("int16", {"BSCALE": 0.1, "BZERO": 3.5, "BLANK": -5}),
    "bscale_int32": ("int32", {"BSCALE": 2, "BZERO": 1}),
    "bscale_int64": ("int64", {"BSCALE": 1e-3}),
    "blank_only": ("int16", {"BLANK": 7}),
    "blank_zero_is_not_masked": ("int16", {"BLANK": 0}),
    "blank_on_float_ignored": ("float32", {"BLANK": 3}),
    "scaled_float32": ("float32", {"BSCALE": 2.5, "BZERO": -1.25}),
    "scaled_float64": ("float64", {"BSCALE": 1.1, "BZERO": 7}),
    "scaled_uint8": ("uint8", {"BSCALE": 0.5, "BZERO": 10.0, "BLANK": 255}),
    "int8_convention": ("uint8", {"BZERO": -128}),
    "uint16_convention": ("int16", {"BZERO": 32768}),
    "uint32_convention": ("int32", {"BZERO": 2**31}),
    "uint64_convention": ("int64", {"BZERO": 2**63}),
    "uint16_with_blank_ignored": ("int16", {"BZERO": 32768, "BLANK": -32768}),
    "bzero_not_unsigned": ("int16", {"BZERO": 32767}),
}


@pytest.mark.parametrize("case", sorted(SCALINGS))
def test_bscale_bzero_blank_as_astropy(tmp_path: Path, case: str) -> None:
    dtype, keywords = SCALINGS[case]
    if np.dtype(dtype).kind == "f":
        raw = RNG.normal(size=(6, 7)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        raw = RNG.integers(info.min, info.max, size=(6, 7), dtype=dtype, endpoint=True)
        raw.flat[:4] = [keywords.get("BLANK", 0), 0, info.min, info.max]
    path = tmp_path / f"{case}.fits"
    fits.HDUList([fits.PrimaryHDU(raw)]).writeto(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns about BLANK on float data
        for key, value in keywords.items():
            fits.setval(path, key, value=value, ext=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fits.getval(path, "BITPIX") == fits.DTYPE2BITPIX[np.dtype(dtype).name]
        store = assert_file_reads_as_astropy(path)
    if case != "blank_on_float_ignored":
        assert codec_names(store, "PRIMARY/data")[0] == "virtualize.fits_scale"


def test_unsigned_images_written_by_astropy(tmp_path: Path) -> None:
    hdus = [fits.PrimaryHDU()]
    for dtype in ["uint16", "uint32", "uint64", "int8"]:
        info = np.iinfo(dtype)
        values = np.array([info.min, 0, 1, info.max // 2, info.max], dtype=dtype)
        hdus.append(fits.ImageHDU(values, name=dtype.upper()))
    path = tmp_path / "unsigned.fits"
    fits.HDUList(hdus).writeto(path)
    store = assert_file_reads_as_astropy(path)
    assert open_group(store, "UINT64")["data"].dtype == np.uint64


def test_blank_on_int8_convention_is_refused_as_astropy_fails(tmp_path: Path) -> None:
    path = tmp_path / "int8blank.fits"
    fits.PrimaryHDU(np.arange(6, dtype=np.uint8)).writeto(path)
    fits.setval(path, "BZERO", value=-128)
    fits.setval(path, "BLANK", value=3)
    with pytest.raises(UnsupportedFeatureError, match="BLANK") as caught:
        parse(path)
    assert caught.value.variable == "PRIMARY/data"


def test_large_images_are_chunked_in_whole_rows(tmp_path: Path) -> None:
    path = tmp_path / "big.fits"
    fits.PrimaryHDU(RNG.normal(size=(64, 50)).astype(">f4")).writeto(path)
    store = assert_file_reads_as_astropy(path, max_chunk_bytes=16 * 50 * 4)
    assert store.group.groups["PRIMARY"].arrays["data"].chunk_shape == (16, 50)


# -- several HDUs -------------------------------------------------------------------------------


def multi_extension_file(path: Path) -> None:
    hdus = [
        fits.PrimaryHDU(),
        fits.ImageHDU(np.ones((3, 4), np.int16), name="SCI", ver=1),
        fits.ImageHDU(np.zeros((5, 2), np.float32), name="SCI", ver=2),
        fits.ImageHDU(np.arange(3, dtype=np.int32)),
        fits.BinTableHDU.from_columns([fits.Column(name="a", format="J", array=[1, 2])], name="T"),
        fits.ImageHDU(np.arange(4, dtype=np.uint8), name="A/B"),
    ]
    fits.HDUList(hdus).writeto(path)


def test_one_group_per_hdu_with_distinct_names(tmp_path: Path) -> None:
    path = tmp_path / "mef.fits"
    multi_extension_file(path)
    store = assert_file_reads_as_astropy(path)
    assert list(store.group.groups) == ["PRIMARY", "SCI_1", "SCI_2", "HDU3", "T", "A_B"]
    assert not store.group.arrays
    tree = vz.open_virtual_datatree(
        normalize_url(path), parser=FITSParser(), registry=local_registry(path)
    )
    assert tree["SCI_2"]["data"].shape == (5, 2)
    assert tree["T"]["a"].dims == ("row",)
    assert tree["PRIMARY"].attrs["SIMPLE"] is True


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (2, "SCI_2"),
        ("t", "T"),
        (("SCI", 2), "SCI_2"),
        ("SCI_2", "SCI_2"),
        ("HDU3", "HDU3"),
        (0, "PRIMARY"),
    ],
)
def test_select_one_hdu(tmp_path: Path, selector: Any, expected: str) -> None:
    path = tmp_path / "mef.fits"
    multi_extension_file(path)
    whole = parse(path).group.groups[expected]
    selected = parse(path, hdu=selector).group
    assert selected == whole
    dataset = vz.open_virtual_dataset(
        normalize_url(path), parser=FITSParser(hdu=selector), registry=local_registry(path)
    )
    assert set(dataset.variables) == set(whole.arrays)


def test_group_option_selects_like_hdu_and_parsers_pickle(tmp_path: Path) -> None:
    path = tmp_path / "mef.fits"
    multi_extension_file(path)
    assert parse(path, group="SCI_2").group == parse(path, hdu=2).group
    assert parse(path, group="/").group == parse(path).group
    parser = pickle.loads(pickle.dumps(FITSParser(hdu=("SCI", 1), drop_variables=["x"])))
    assert parser.hdu == ("SCI", 1)
    with pytest.raises(ValueError, match="hdu"):
        FITSParser(hdu=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        FITSParser(hdu=1, group="SCI_1")


def test_unknown_hdu_names_the_ones_there(tmp_path: Path) -> None:
    path = tmp_path / "mef.fits"
    multi_extension_file(path)
    with pytest.raises(InvalidFileError, match="SCI_2") as caught:
        parse(path, hdu="NOPE")
    assert caught.value.url == normalize_url(path)


def test_reads_through_the_registry_store_not_a_local_path(tmp_path: Path) -> None:
    path = tmp_path / "mem.fits"
    multi_extension_file(path)
    memory = MemoryStore()
    obstore.put(memory, "data/mem.fits", path.read_bytes())
    registry = vz.ObjectStoreRegistry({"memory://bucket/": memory})
    store = FITSParser()("memory://bucket/data/mem.fits", registry)
    with fits.open(path) as hdus:
        assert_exact(hdus[2].data, open_group(store, "SCI_2")["data"].values)
        assert_exact(hdus[4].data["a"], open_group(store, "T")["a"].values)


# -- header attributes and WCS ------------------------------------------------------------------


def test_header_cards_become_json_attributes(tmp_path: Path) -> None:
    hdu = fits.PrimaryHDU(np.zeros((2, 2), np.int16))
    hdu.header["OBJECT"] = "M31"
    hdu.header["EXPTIME"] = 30.5
    hdu.header["FLAG"] = False
    hdu.header["CPLX"] = 1 + 2j
    hdu.header["NOTHING"] = fits.card.UNDEFINED
    hdu.header["HIERARCH ESO DET CHIP"] = 3
    hdu.header["COMMENT"] = "first"
    hdu.header["COMMENT"] = "second"
    hdu.header["HISTORY"] = "made at test time"
    path = tmp_path / "header.fits"
    hdu.writeto(path)
    attributes = open_group(parse(path), "PRIMARY").attrs
    json.dumps(attributes)
    assert attributes["OBJECT"] == "M31"
    assert attributes["EXPTIME"] == 30.5
    assert attributes["FLAG"] is False
    assert attributes["CPLX"] == [1.0, 2.0]
    assert attributes["NOTHING"] is None
    assert attributes["ESO DET CHIP"] == 3
    assert attributes["COMMENT"] == ["first", "second"]
    assert attributes["HISTORY"] == ["made at test time"]
    assert attributes["NAXIS1"] == 2


def test_linear_wcs_axes_become_coordinates(tmp_path: Path) -> None:
    from astropy.wcs import WCS

    cube = fits.PrimaryHDU(np.zeros((4, 3, 5), np.float32))
    header = cube.header
    for axis, (ctype, crval, cdelt, crpix) in enumerate(
        [("RA---TAN", 10.0, -0.1, 3.0), ("DEC--TAN", -5.0, 0.1, 2.0), ("FREQ", 1.4e9, 1e6, 1.5)],
        start=1,
    ):
        header[f"CTYPE{axis}"] = ctype
        header[f"CRVAL{axis}"] = crval
        header[f"CDELT{axis}"] = cdelt
        header[f"CRPIX{axis}"] = crpix
    header["CUNIT3"] = "Hz"
    path = tmp_path / "cube.fits"
    cube.writeto(path)
    dataset = open_group(parse(path), "PRIMARY")
    assert list(dataset.coords) == ["axis3"]
    assert dataset["axis3"].attrs == {
        "CTYPE": "FREQ",
        "long_name": "FREQ",
        "CUNIT": "Hz",
        "units": "Hz",
    }
    world = WCS(header).pixel_to_world_values(0, 0, np.arange(4))[2]
    np.testing.assert_allclose(dataset["axis3"].values, world, rtol=1e-15)
    assert not open_group(parse(path, wcs_coordinates=False), "PRIMARY").coords


def test_rotated_axes_get_no_coordinates(tmp_path: Path) -> None:
    image = fits.PrimaryHDU(np.zeros((3, 4), np.float32))
    for key, value in {"CRVAL1": 1.0, "CRVAL2": 2.0, "PC1_2": 0.5, "CDELT1": 1.0}.items():
        image.header[key] = value
    path = tmp_path / "rotated.fits"
    image.writeto(path)
    assert not open_group(parse(path), "PRIMARY").coords


# -- tables -------------------------------------------------------------------------------------


def binary_table() -> fits.BinTableHDU:
    rows = 7
    text = np.array(["a", "bcdef", "  x", "", "abc", "z", "yy"])
    columns = [
        fits.Column(name="text", format="5A", array=text),
        fits.Column(name="vector", format="3J", array=RNG.integers(-9, 9, (rows, 3))),
        fits.Column(name="flag", format="L", array=RNG.integers(0, 2, rows).astype(bool)),
        fits.Column(
            name="u16", format="I", bzero=32768, array=np.arange(rows, dtype=np.uint16) * 9000
        ),
        fits.Column(
            name="u32", format="J", bzero=2**31, array=np.arange(rows, dtype=np.uint32) * 2**29
        ),
        fits.Column(
            name="u64", format="K", bzero=2**63, array=np.arange(rows, dtype=np.uint64) * 2**61
        ),
        fits.Column(name="bits", format="11X", array=RNG.integers(0, 2, (rows, 11)).astype(bool)),
        fits.Column(name="byte", format="B", array=np.arange(rows, dtype=np.uint8)),
        fits.Column(name="short", format="I", array=np.arange(rows, dtype=np.int16) - 3),
        fits.Column(name="long", format="K", array=np.arange(rows, dtype=np.int64) * 2**40),
        fits.Column(name="scaled", format="I", array=np.arange(rows, dtype=np.int16)),
        fits.Column(
            name="offset_byte", format="B", bzero=-128, array=np.arange(rows, dtype=np.int8)
        ),
        fits.Column(
            name="matrix",
            format="6E",
            dim="(3,2)",
            array=RNG.normal(size=(rows, 2, 3)).astype("f4"),
        ),
        fits.Column(name="words", format="6A", dim="(3,2)", array=np.array([["ab", "c"]] * rows)),
        fits.Column(name="complex", format="C", array=RNG.normal(size=rows) + 1j),
        fits.Column(name="dcomplex", format="2M", array=RNG.normal(size=(rows, 2)) * 1j),
        fits.Column(name="double", format="D", array=np.where(np.arange(rows) == 2, np.nan, 1.5)),
        fits.Column(name="single", format="E", array=RNG.normal(size=rows).astype("f4")),
    ]
    return fits.BinTableHDU.from_columns(columns, name="CATALOG")


def write_table(path: Path) -> None:
    fits.HDUList([fits.PrimaryHDU(), binary_table()]).writeto(path)
    scaled = fits.getheader(path, 1)["TTYPE11"]
    assert scaled == "scaled"
    fits.setval(path, "TSCAL11", value=0.25, ext=1)
    fits.setval(path, "TZERO11", value=-3, ext=1)


@pytest.mark.parametrize("max_chunk_bytes", [16 * 1024 * 1024, 300])
def test_binary_table_columns_as_astropy(tmp_path: Path, max_chunk_bytes: int) -> None:
    path = tmp_path / "table.fits"
    write_table(path)
    store = assert_file_reads_as_astropy(path, max_chunk_bytes=max_chunk_bytes)
    dataset = open_group(store, "CATALOG")
    assert dataset["text"].dims == ("row",)
    assert dataset["matrix"].dims == ("row", "matrix_dim_0", "matrix_dim_1")
    assert dataset["words"].dims == ("row", "words_dim_0")
    assert dataset["bits"].dims == ("row", "bits_dim_0")
    assert dataset["scaled"].attrs["TSCAL"] == 0.25
    assert codec_names(store, "CATALOG/scaled") == [
        "virtualize.fits_scale",
        "virtualize.fits_column",
    ]
    rows_per_chunk = store.group.groups["CATALOG"].arrays["text"].chunk_shape[0]
    assert rows_per_chunk == (7 if max_chunk_bytes > 1000 else 300 // dataset.attrs["NAXIS1"])
    assert rows_per_chunk > 1 or max_chunk_bytes > 1000


def test_variable_length_columns_are_refused_or_skipped(tmp_path: Path) -> None:
    arrays = np.array([np.arange(n, dtype=np.float32) for n in (1, 3, 2)], dtype=object)
    columns = [
        fits.Column(name="ok", format="J", array=[1, 2, 3]),
        fits.Column(name="ragged", format="PE()", array=arrays),
    ]
    path = tmp_path / "vla.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns, name="V")]).writeto(
        path
    )
    with pytest.raises(UnsupportedFeatureError, match="variable-length") as caught:
        parse(path)
    assert caught.value.variable == "V/ragged"
    assert caught.value.url == normalize_url(path)
    assert "drop_variables" in str(caught.value)
    with pytest.warns(SkippedVariableWarning, match="ragged"):
        store = parse(path, on_unsupported="skip")
    assert set(store.skipped) == {"V/ragged"}
    assert list(store.group.groups["V"].arrays) == ["ok"]
    assert list(parse(path, drop_variables=["ragged"]).group.groups["V"].arrays) == ["ok"]
    assert list(parse(path, drop_variables=["V/ragged"]).group.groups["V"].arrays) == ["ok"]


def ascii_table(rows: int = 4) -> fits.TableHDU:
    columns = [
        fits.Column(name="count", format="I6", array=np.arange(rows)),
        fits.Column(name="flux", format="E12.4", array=np.linspace(-3e5, 2.5, rows)),
        fits.Column(name="precise", format="D25.17", array=np.linspace(0, 1, rows) / 3),
        fits.Column(
            name="name", format="A6", array=np.array(["ab", "cde", "f", "ghijkl"] * (rows // 4))
        ),
    ]
    return fits.TableHDU.from_columns(columns, name="ASCII")


def test_ascii_tables_are_held_inline(tmp_path: Path) -> None:
    path = tmp_path / "ascii.fits"
    fits.HDUList([fits.PrimaryHDU(), ascii_table()]).writeto(path)
    fits.setval(path, "TSCAL1", value=2, ext=1)
    fits.setval(path, "TZERO1", value=0.5, ext=1)
    store = assert_file_reads_as_astropy(path)
    assert open_group(store, "ASCII")["count"].dtype == np.float64
    assert all(a.manifest.nrefs == 0 for a in store.group.groups["ASCII"].arrays.values())


def test_large_ascii_tables_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ascii.fits"
    fits.HDUList([fits.PrimaryHDU(), ascii_table(400)]).writeto(path)
    with pytest.raises(UnsupportedFeatureError, match="max_inline_bytes") as caught:
        parse(path, max_inline_bytes=1000)
    assert caught.value.variable == "ASCII"
    with pytest.warns(SkippedVariableWarning):
        store = parse(path, max_inline_bytes=1000, on_unsupported="skip")
    assert store.skipped.keys() == {"ASCII"}
    assert open_group(store, "ASCII").attrs["TFIELDS"] == 4


# -- tile-compressed images ---------------------------------------------------------------------

ALGORITHMS = ["RICE_1", "GZIP_1", "GZIP_2", "PLIO_1", "HCOMPRESS_1", "NOCOMPRESS"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_tile_compressed_integer_images(tmp_path: Path, algorithm: str) -> None:
    image = RNG.integers(0, 5000, size=(50, 37)).astype(np.int32)
    hdus = [fits.PrimaryHDU()]
    hdus.append(
        fits.CompImageHDU(image, compression_type=algorithm, name="EDGES", tile_shape=(20, 16))
    )
    hdus.append(fits.CompImageHDU(image.astype(np.int16), compression_type=algorithm, name="ROWS"))
    if algorithm != "PLIO_1":
        hdus.append(
            fits.CompImageHDU(image.astype(np.uint16) * 13, compression_type=algorithm, name="U16")
        )
        hdus.append(
            fits.CompImageHDU(image.astype(np.uint8), compression_type=algorithm, name="U8")
        )
    cube = RNG.integers(0, 100, size=(3, 12, 6)).astype(np.int16)
    hdus.append(fits.CompImageHDU(cube, compression_type=algorithm, name="CUBE"))
    path = tmp_path / f"{algorithm}.fits"
    fits.HDUList(hdus).writeto(path)
    store = assert_file_reads_as_astropy(path)
    assert codec_names(store, "ROWS/data") == ["virtualize.fits_tile"]
    edges = store.group.groups["EDGES"].arrays["data"]
    assert edges.chunk_shape == (20, 16)
    assert edges.manifest.nrefs == 9
    assert open_group(store, "CUBE")["data"].dims == ("axis3", "axis2", "axis1")


@pytest.mark.parametrize("method", [-1, 1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("algorithm", ["RICE_1", "GZIP_2", "HCOMPRESS_1"])
def test_quantized_floats_with_dithering(
    tmp_path: Path, method: int, dtype: str, algorithm: str
) -> None:
    # its own generator: the data must not depend on which tests ran before in the worker
    image = np.random.default_rng(20240601).normal(size=(40, 37)).astype(dtype) * 10
    image[3] = 0.0  # a constant tile: quantisation fails, stored in GZIP_COMPRESSED_DATA
    image[8, :4] = 0.0
    image[9, 5] = np.nan
    tiles = (1, 37) if algorithm != "HCOMPRESS_1" else (20, 16)
    hdu = fits.CompImageHDU(
        image,
        compression_type=algorithm,
        quantize_method=method,
        tile_shape=tiles,
        name="Q",
        dither_seed=7,
    )
    path = tmp_path / "quantized.fits"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    store = assert_file_reads_as_astropy(path)
    codec = store.group.groups["Q"].arrays["data"].metadata.codecs[0]
    assert isinstance(codec, FITSTileCodec)
    assert codec.quantized
    with fits.open(path, disable_image_compression=True) as hdus:
        assert hdus[1].header.get("ZDITHER0", 7) == 7
        if algorithm != "HCOMPRESS_1":
            assert len(hdus[1].data["GZIP_COMPRESSED_DATA"][3]) > 0


def uncompressed_fallback_file(path: Path, source: Path) -> None:
    """A quantised image whose unquantisable tiles are in UNCOMPRESSED_DATA (as cfitsio
    writes them) instead of astropy's GZIP_COMPRESSED_DATA."""
    image = RNG.normal(size=(6, 9)).astype(np.float32)
    image[2] = 1.0
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image, quantize_method=1)]).writeto(source)
    with fits.open(source, disable_image_compression=True) as hdus:
        table = hdus[1]
        raw = [
            np.frombuffer(gzip.decompress(bytes(x)), ">f4") if len(x) else np.zeros(0, ">f4")
            for x in table.data["GZIP_COMPRESSED_DATA"]
        ]
        columns = [
            fits.Column(
                name="COMPRESSED_DATA", format="1PB()", array=list(table.data["COMPRESSED_DATA"])
            ),
            fits.Column(name="UNCOMPRESSED_DATA", format="1PE()", array=raw),
            fits.Column(name="ZSCALE", format="1D", array=table.data["ZSCALE"]),
            fits.Column(name="ZZERO", format="1D", array=table.data["ZZERO"]),
        ]
        rewritten = fits.BinTableHDU.from_columns(columns)
        for card in table.header.cards:
            if card.keyword.startswith("Z"):
                rewritten.header[card.keyword] = card.value
        fits.HDUList([fits.PrimaryHDU(), rewritten]).writeto(path)


def test_uncompressed_data_fallback_tiles(tmp_path: Path) -> None:
    path = tmp_path / "fallback.fits"
    uncompressed_fallback_file(path, tmp_path / "source.fits")
    with fits.open(path, disable_image_compression=True) as hdus:
        assert len(hdus[1].data["UNCOMPRESSED_DATA"][2]) == 9
    store = assert_file_reads_as_astropy(path)
    codec = store.group.groups["COMPRESSED_IMAGE"].arrays["data"].metadata.codecs[0]
    assert isinstance(codec, FITSTileCodec)
    assert codec.default.kind == "raw" or any(spec.kind == "raw" for *_, spec in codec.tiles)


def test_compressed_image_scaling_and_header(tmp_path: Path) -> None:
    image = RNG.integers(-100, 100, size=(10, 12)).astype(np.int16)
    hdu = fits.CompImageHDU(image, name="SCALED")
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 10.0
    hdu.header["OBSERVER"] = "me"
    blanked = fits.CompImageHDU(np.where(image > 50, -100, image).astype(np.int16), name="BLANKED")
    blanked.header["BLANK"] = -100
    path = tmp_path / "scaled.fits"
    fits.HDUList([fits.PrimaryHDU(), hdu, blanked]).writeto(path)
    store = assert_file_reads_as_astropy(path)
    dataset = open_group(store, "SCALED")
    assert dataset["data"].dtype == np.float32
    assert dataset.attrs["OBSERVER"] == "me"
    assert dataset.attrs["BITPIX"] == 16
    assert "ZBITPIX" not in dataset.attrs
    assert np.isnan(open_group(store, "BLANKED")["data"].values).any()


def test_tiles_read_through_their_heap_ranges(tmp_path: Path) -> None:
    image = RNG.integers(0, 1000, size=(4, 30)).astype(np.int32)
    path = tmp_path / "rows.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image, name="C")]).writeto(path)
    array = parse(path).group.groups["C"].arrays["data"]
    with fits.open(path, disable_image_compression=True) as hdus:
        sizes = [len(tile) for tile in hdus[1].data["COMPRESSED_DATA"]]
    np.testing.assert_array_equal(array.manifest.lengths.ravel(), sizes)
    assert np.all(np.diff(array.manifest.offsets.ravel().astype(np.int64)) > 0)


# -- bad input ----------------------------------------------------------------------------------


def test_not_a_fits_file(tmp_path: Path) -> None:
    path = tmp_path / "text.fits"
    path.write_bytes(b"hello" * 1000)
    with pytest.raises(InvalidFileError, match="not a FITS file") as caught:
        parse(path)
    assert caught.value.url == normalize_url(path)
    path.write_bytes(b"")
    with pytest.raises(InvalidFileError, match="not a FITS file"):
        parse(path)


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.fits"
    fits.PrimaryHDU(np.zeros((100, 100), np.float64)).writeto(path)
    path.write_bytes(path.read_bytes()[: 2880 * 3])
    with pytest.raises(InvalidFileError, match="truncated"):
        parse(path)


def test_header_without_end(tmp_path: Path) -> None:
    path = tmp_path / "noend.fits"
    header = fits.PrimaryHDU().header.tostring().replace("END" + " " * 77, " " * 80)
    path.write_bytes(header.encode())
    with pytest.raises(InvalidFileError, match="END"):
        parse(path)


def test_malformed_table_header_names_the_hdu(tmp_path: Path) -> None:
    path = tmp_path / "bad.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="J", array=[1])], name="T")
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    good = b"TFORM1  = 'J       '"
    assert good in path.read_bytes()
    path.write_bytes(path.read_bytes().replace(good, b"TFORM1  = 'Z       '"))
    with pytest.raises(UnsupportedFeatureError, match="TFORM1") as caught:
        parse(path)
    assert caught.value.variable == "T"
    path.write_bytes(path.read_bytes().replace(b"TFORM1  = 'Z       '", b" " * 20))
    with pytest.raises((InvalidFileError, UnsupportedFeatureError)) as failure:
        parse(path)
    assert failure.value.url == normalize_url(path)


def test_bytes_after_the_last_hdu(tmp_path: Path) -> None:
    path = tmp_path / "padded.fits"
    fits.PrimaryHDU(np.arange(10, dtype=np.int16)).writeto(path)
    data = path.read_bytes()
    path.write_bytes(data + bytes(2880))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(parse(path).group.groups) == ["PRIMARY"]
    path.write_bytes(data + b"junk" * 720)
    with pytest.warns(UserWarning, match="not an HDU"):
        assert list(parse(path).group.groups) == ["PRIMARY"]


def test_random_groups_are_refused_with_a_reason(tmp_path: Path) -> None:
    data = fits.GroupData(np.arange(12.0).reshape(3, 4), parnames=["a"], pardata=[np.arange(3.0)])
    path = tmp_path / "groups.fits"
    fits.GroupsHDU(data).writeto(path)
    with pytest.raises(UnsupportedFeatureError, match="random-groups") as caught:
        parse(path)
    assert caught.value.variable == "PRIMARY"
    with pytest.warns(SkippedVariableWarning):
        assert parse(path, on_unsupported="skip").skipped.keys() == {"PRIMARY"}


# -- codecs -------------------------------------------------------------------------------------


def test_codecs_are_registered_with_zarr_and_round_trip_json() -> None:
    codecs = [
        FITSScaleCodec(convention="image", stored="int16", bscale=0.5, bzero=3, blank=-1),
        FITSColumnCodec(row_bytes=10, offset=2, width=4, kind="plain", stored=">i4"),
        FITSTileCodec(
            algorithm="RICE_1",
            zbitpix=-32,
            settings={"blocksize": 32, "bytepix": 4},
            quantized=True,
            dither_method=1,
            default=TileSpec("compressed", None, 3, 0.1, 2.0, None),
            tiles=[(5, "ab", TileSpec("gzip", (2, 3)))],
            prefix_bytes=1,
        ),
    ]
    for codec in codecs:
        document = codec.to_dict()
        cls = zarr.registry.get_codec_class(str(document["name"]))
        assert cls.from_dict(json.loads(json.dumps(document))) == codec


def test_codecs_encode_what_they_decode() -> None:
    scale = FITSScaleCodec(convention="image", stored="int16", bzero=32768)
    values = np.array([0, 1, 65535], dtype=np.uint16)
    assert_exact(values, scale.decode_array(scale.encode_array(values)))
    column = FITSColumnCodec(row_bytes=12, offset=3, width=6, kind="string", stored="|S3")
    words = np.array([["ab", "c"], ["", "xyz"]])
    decoded = column.decode_rows(column.encode_rows(words), (2, 2), np.dtype("U3"))
    assert_exact(words.astype("U3"), decoded)
    tile = FITSTileCodec(algorithm="RICE_1", zbitpix=16, settings={"blocksize": 32, "bytepix": 2})
    pixels = RNG.integers(-500, 500, size=(4, 9)).astype(np.int16)
    assert_exact(pixels, tile.decode_tile(tile.encode_tile(pixels), (4, 9)))


# -- a time series of images: open_virtual_mfdataset and ingest -------------------------------


def write_night(folder: Path, index: int) -> Path:
    rng = np.random.default_rng(index)
    hdu = fits.PrimaryHDU(rng.integers(0, 60_000, (6, 8)).astype(np.uint16))  # BZERO=32768
    hdu.header["DATE-OBS"] = f"2024-03-{index + 1:02d}T22:00:00"
    hdu.header["EXPTIME"] = 30.0
    path = folder / f"night{index:02d}.fits"
    hdu.writeto(path)
    return path


def stamped(dataset: xr.Dataset) -> xr.Dataset:
    when = np.datetime64(dataset.attrs["DATE-OBS"], "ns")
    dataset = dataset.expand_dims(time=[when])
    dataset.attrs = {}  # header cards differ from night to night (DATE-OBS)
    return dataset


def test_a_time_series_of_images_stacks_and_ingests(tmp_path: Path) -> None:
    from obstore.store import LocalStore

    from virtualize.ingest import open_repository

    archive = tmp_path / "archive"
    archive.mkdir()
    files = [write_night(archive, i) for i in range(5)]
    registry = vz.ObjectStoreRegistry({archive.as_uri() + "/": LocalStore(archive)})
    expected = np.stack([fits.getdata(f) for f in files])
    stacked = vz.open_virtual_mfdataset(
        str(archive / "night*.fits"),
        registry=registry,
        group="PRIMARY",
        preprocess=stamped,
        progress=False,
    )
    assert stacked["data"].dims == ("time", "y", "x")
    store = stacked.virtualize.to_manifest_store(registry)
    got = xr.open_zarr(store, consolidated=False, zarr_format=3).load()
    assert_exact(expected, got["data"].values)
    report = vz.ingest(
        str(archive / "night*.fits"),
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=registry,
        group="PRIMARY",
        preprocess=stamped,
        batch_size=2,
        progress=False,
    )
    assert len(report.commits) == 3
    repository, _ = open_repository(str(tmp_path / "repo"), registry)
    session = repository.readonly_session("main")
    ingested = xr.open_zarr(session.store, consolidated=False, zarr_format=3).load()
    assert_exact(expected, ingested["data"].values)
    assert list(ingested.time.values) == [
        np.datetime64(f"2024-03-{i + 1:02d}T22:00:00", "ns") for i in range(5)
    ]


def test_opening_a_file_whose_data_is_in_groups_says_which(tmp_path: Path) -> None:
    path = tmp_path / "image.fits"
    fits.PrimaryHDU(np.arange(12.0).reshape(3, 4)).writeto(path)
    with pytest.warns(UserWarning, match=r"these groups do: \['PRIMARY'\]"):
        empty = vz.open_virtual_dataset(path, registry=local_registry(path))
    assert not empty.variables
    image = vz.open_virtual_dataset(path, registry=local_registry(path), group="PRIMARY")
    assert image["data"].dims == ("y", "x")
