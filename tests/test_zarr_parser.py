"""ZarrParser: Zarr v2 / v3 stores written at test time, referenced chunk object by chunk object.

Every test parses a store, reads the ManifestStore back with zarr or xarray, and compares with
reading the original store directly.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import obstore
import pandas as pd
import pytest
import xarray as xr
import zarr
from obstore.store import LocalStore
from oracle import moto_bucket_store

import virtualize as vz
from virtualize.errors import (
    InvalidFileError,
    SkippedVariableWarning,
    UnauthorizedLocationError,
    UnsupportedFeatureError,
)
from virtualize.manifests import MISSING, ManifestArray
from virtualize.parsers.zarr import ZarrParser

pytestmark = pytest.mark.filterwarnings(
    "ignore::zarr.errors.UnstableSpecificationWarning",
    "ignore::zarr.errors.ZarrUserWarning",
    "ignore:Consolidated metadata is currently not part:UserWarning",
    "ignore:Failed to open Zarr store with consolidated metadata:RuntimeWarning",
)


def registry_for(folder: Path) -> vz.ObjectStoreRegistry:
    return vz.ObjectStoreRegistry({folder.as_uri() + "/": LocalStore(folder)})


def open_virtual(store: vz.ManifestStore, **kwargs: Any) -> xr.Dataset:
    return xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None, **kwargs).load()


def open_native(path: Path, **kwargs: Any) -> xr.Dataset:
    return xr.open_zarr(path, chunks=None, **kwargs).load()


def assert_arrays_equal(store: vz.ManifestStore, original: Path, names: list[str]) -> None:
    """zarr reads every array of the ManifestStore exactly as it reads the original."""
    for name in names:
        expected = zarr.open_array(original, path=name, mode="r")
        actual = zarr.open_array(store, path=name, mode="r", zarr_format=3)
        assert actual.shape == expected.shape, name
        # zarr v3 reads in native byte order whatever the bytes codec's endianness
        native = expected.dtype
        if native.byteorder not in ("=", "|"):
            native = native.newbyteorder("=")
        assert actual.dtype == native, name
        np.testing.assert_array_equal(actual[...], expected[...], err_msg=name)


def sample_dataset() -> xr.Dataset:
    rng = np.random.default_rng(0)
    temperature = rng.normal(280, 10, size=(10, 7, 5))
    temperature[2, 3, 1] = np.nan
    return xr.Dataset(
        {
            "temperature": (("time", "y", "x"), temperature, {"units": "K", "long_name": "T"}),
            "counts": (("time", "x"), rng.integers(0, 1000, size=(10, 5)).astype("i2")),
            "flag": (("x",), np.array([True, False, True, True, False])),
            "label": (("x",), np.array(["a", "bb", "ccc", "", "dd"])),
            "code": (("x",), np.array([b"q", b"rr", b"s", b"", b"t"])),
            "name": (("y",), np.array(["one", "two", "", "four", "5", "six", "7"], dtype=object)),
            "scalar": ((), 3.5, {"note": "0-d"}),
            "when": (
                ("x",),
                np.array(["2001-02-03", "NaT", "1999-12-31", "2030-01-01", "NaT"], "M8[ns]"),
            ),
            "lag": (("x",), np.array([1, -2, 0, 5, 3], dtype="m8[h]").astype("m8[ns]")),
        },
        coords={
            "time": pd.date_range("2001-01-01", periods=10, freq="6h"),
            "y": np.linspace(-30, 30, 7),
            "x": np.arange(5, dtype="i4"),
        },
        attrs={"title": "sample", "history": "written at test time", "version": 2},
    )


ENCODING = {
    "temperature": {"chunks": (3, 4, 5)},
    "counts": {"chunks": (4, 2)},
}


# -- stores written by xarray ---------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("consolidated", [True, False])
def test_xarray_store_round_trips(tmp_path: Path, zarr_format: int, consolidated: bool) -> None:
    path = tmp_path / "sample.zarr"
    sample_dataset().to_zarr(
        path, zarr_format=zarr_format, consolidated=consolidated, encoding=ENCODING
    )
    store = ZarrParser()(str(path), registry_for(tmp_path))
    virtual = open_virtual(store)
    xr.testing.assert_identical(virtual, open_native(path))
    # Every array is presented as zarr v3 with the default chunk key encoding.
    for _, node in store.group.walk():
        if isinstance(node, ManifestArray):
            assert node.metadata.chunk_key_encoding.to_dict()["name"] == "default"


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_masked_values_and_encoding_survive(tmp_path: Path, zarr_format: int) -> None:
    path = tmp_path / "masked.zarr"
    ds = xr.Dataset(
        {
            "packed": (("t",), np.array([1.5, np.nan, 3.25, -1.0, np.nan, 7.0])),
            "ints": (("t",), np.array([1, -9999, 3, 4, -9999, 6], dtype="i4")),
        }
    )
    ds["packed"].encoding = {
        "dtype": "i2",
        "scale_factor": 0.25,
        "add_offset": 1.0,
        "_FillValue": -32768,
        "chunks": (4,),
    }
    ds["ints"].attrs["_FillValue"] = -9999
    ds.to_zarr(path, zarr_format=zarr_format)
    store = ZarrParser()(str(path), registry_for(tmp_path))
    virtual = open_virtual(store)
    native = open_native(path)
    xr.testing.assert_identical(virtual, native)
    assert np.isnan(virtual["ints"].values[1])
    raw = xr.open_zarr(store, consolidated=False, zarr_format=3, decode_cf=False).load()
    xr.testing.assert_identical(raw, xr.open_zarr(path, decode_cf=False).load())


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_nested_groups(tmp_path: Path, zarr_format: int) -> None:
    path = tmp_path / "tree.zarr"
    root = sample_dataset()[["temperature"]]
    root.to_zarr(path, zarr_format=zarr_format, encoding={"temperature": {"chunks": (4, 4, 4)}})
    forecast = xr.Dataset(
        {"wind": (("step", "station"), np.arange(12.0).reshape(3, 4))}, attrs={"kind": "forecast"}
    )
    forecast.to_zarr(path, group="forecast", zarr_format=zarr_format, mode="a")
    deep = xr.Dataset({"q": (("z",), np.arange(3, dtype="u2"))}, attrs={"depth": 2})
    deep.to_zarr(path, group="forecast/members/m1", zarr_format=zarr_format, mode="a")
    if zarr_format == 2:
        zarr.consolidate_metadata(str(path), zarr_format=2)
    registry = registry_for(tmp_path)

    store = ZarrParser()(str(path), registry)
    assert sorted(store.group.groups) == ["forecast"]
    assert store.group.get_node("forecast/members/m1/q") is not None
    for group in ["forecast", "forecast/members/m1"]:
        xr.testing.assert_identical(
            open_virtual(store, group=group), open_native(path, group=group)
        )
        sub = ZarrParser(group=group)(str(path), registry)
        xr.testing.assert_identical(open_virtual(sub), open_native(path, group=group))
    tree = xr.open_datatree(store, engine="zarr", consolidated=False, zarr_format=3).load()
    expected = xr.open_datatree(path, engine="zarr").load()
    xr.testing.assert_identical(tree, expected)


def test_url_and_local_path_give_the_same_references(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    sample_dataset().to_zarr(path, zarr_format=3, encoding=ENCODING)
    registry = registry_for(tmp_path)
    by_path = ZarrParser()(str(path), registry)
    by_url = ZarrParser()(path.as_uri() + "/", registry)
    assert by_path.group == by_url.group


# -- stores written by zarr-python ----------------------------------------------------------


def v2_arrays(path: Path) -> dict[str, np.ndarray]:
    """v2 arrays with several codecs, filters, separators, orders and byte orders."""
    rng = np.random.default_rng(1)
    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.attrs["made_by"] = "zarr-python"
    values: dict[str, np.ndarray] = {}

    def add(name: str, data: np.ndarray, **options: Any) -> None:
        dtype = "str" if data.dtype.kind == "O" else data.dtype
        array = group.create_array(name, shape=data.shape, dtype=dtype, **options)
        array[...] = data
        values[name] = data

    ints = np.arange(30 * 20, dtype="<i4").reshape(30, 20)
    floats = rng.normal(size=(17, 9))
    add("zlib", floats, chunks=(5, 4), compressors=numcodecs.Zlib(level=3))
    add("gzip", floats, chunks=(5, 4), compressors=numcodecs.GZip(level=1))
    add("zstd", floats, chunks=(5, 4), compressors=numcodecs.Zstd(level=2, checksum=True))
    add("lz4", floats, chunks=(5, 4), compressors=numcodecs.LZ4())
    add("bz2", floats, chunks=(5, 4), compressors=numcodecs.BZ2())
    add("lzma", floats, chunks=(17, 9), compressors=numcodecs.LZMA())
    add("raw", floats, chunks=(6, 9), compressors=None)
    add(
        "blosc_bitshuffle",
        floats,
        chunks=(5, 4),
        compressors=numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE),
    )
    add(
        "blosc_auto_bigendian",
        np.arange(10, dtype=">f8"),
        chunks=(3,),
        compressors=numcodecs.Blosc(shuffle=numcodecs.Blosc.AUTOSHUFFLE),
    )
    add("bigendian_raw", np.arange(12, dtype=">i8").reshape(3, 4), chunks=(2, 3), compressors=None)
    add(
        "delta_slash",
        ints,
        chunks=(7, 6),
        filters=[numcodecs.Delta(dtype="<i4")],
        compressors=numcodecs.Zlib(level=3),
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    add(
        "fortran",
        ints,
        chunks=(7, 6),
        order="F",
        filters=[numcodecs.Delta(dtype="<i4")],
        compressors=numcodecs.Zstd(),
    )
    add(
        "fortran_3d_slash",
        rng.normal(size=(5, 6, 7)),
        chunks=(2, 4, 3),
        order="F",
        compressors=None,
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    add(
        "fixedscaleoffset",
        np.round(np.linspace(0, 2, 23), 1),
        chunks=(5,),
        filters=[numcodecs.FixedScaleOffset(offset=0, scale=10, dtype="<f8", astype="u1")],
        compressors=None,
    )
    add(
        "quantize",
        floats,
        chunks=(9, 9),
        filters=[numcodecs.Quantize(digits=3, dtype="<f8")],
        compressors=numcodecs.Zlib(),
    )
    add("uint8", np.arange(256, dtype="u1").reshape(16, 16), chunks=(5, 5))
    add("complex", (floats + 1j * floats).astype("c16"), chunks=(4, 4))
    add("fixed_unicode", np.array(["ü", "日本", "", "delta"]), chunks=(3,))
    add("fixed_bytes", np.array([b"ab", b"c", b""]), chunks=(2,))
    add("vlen_utf8", np.array(["x", "yy", "", "zzzz", "ü"], dtype=object), chunks=(2,))
    add("scalar", np.array(2.5), chunks=())
    # Chunks equal to the fill value are not written: they are missing objects.
    sparse = np.full((12, 12), 7, dtype="i2")
    sparse[:4, :4] = np.arange(16).reshape(4, 4)
    sparse[8:, 8:] = 1
    add("sparse", sparse, chunks=(4, 4), fill_value=7)
    empty = group.create_array("empty", shape=(6, 6), chunks=(3, 3), dtype="f4", fill_value=-1.0)
    values["empty"] = empty[...]
    return values


def test_zarr_python_v2_arrays(tmp_path: Path) -> None:
    path = tmp_path / "v2.zarr"
    values = v2_arrays(path)
    store = ZarrParser()(str(path), registry_for(tmp_path))
    assert store.group.attributes == {"made_by": "zarr-python"}
    assert sorted(store.group.arrays) == sorted(values)
    assert_arrays_equal(store, path, sorted(values))
    sparse = store.group.arrays["sparse"].manifest
    assert sparse.nrefs == 2
    assert int(np.count_nonzero(sparse.path_ids == MISSING)) == 7
    assert store.group.arrays["empty"].manifest.nrefs == 0
    # The chunk objects and their sizes come from the listing.
    manifest = store.group.arrays["delta_slash"].manifest
    urls = set(manifest.urls)
    assert (path / "delta_slash" / "1" / "2").as_uri() in urls
    for url, source in zip(manifest.urls, manifest.sources, strict=True):
        local = Path(url.removeprefix("file://"))
        assert source is not None and source.size == local.stat().st_size
        assert source.last_modified is not None
    assert np.all(manifest.offsets == 0)
    # F order is a transpose codec; v2 byte order is the bytes codec's endianness.
    codecs = store.group.arrays["fortran"].metadata.to_dict()["codecs"]
    assert codecs[0]["name"] == "transpose"
    assert list(codecs[0]["configuration"]["order"]) == [1, 0]
    codecs = store.group.arrays["bigendian_raw"].metadata.to_dict()["codecs"]
    assert list(codecs) == [{"name": "bytes", "configuration": {"endian": "big"}}]


def test_v2_fill_value_becomes_the_fill_value_attribute(tmp_path: Path) -> None:
    path = tmp_path / "fill.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=2)
    array = group.create_array("v", shape=(6,), chunks=(4,), dtype="f4", fill_value=-99.0)
    array[:4] = [1, -99, 3, 4]
    array.attrs["_ARRAY_DIMENSIONS"] = ["t"]
    zarr.consolidate_metadata(str(path), zarr_format=2)
    registry = registry_for(tmp_path)
    store = ZarrParser()(str(path), registry)
    metadata = store.group.arrays["v"].metadata
    assert metadata.dimension_names == ("t",)
    assert "_ARRAY_DIMENSIONS" not in metadata.attributes
    assert "_FillValue" in metadata.attributes
    virtual = open_virtual(store)
    xr.testing.assert_identical(virtual, open_native(path))
    assert np.isnan(virtual["v"].values[[1, 4, 5]]).all()
    plain = ZarrParser(fill_value_attribute=False)(str(path), registry)
    assert "_FillValue" not in plain.group.arrays["v"].metadata.attributes


def test_v2_fill_values_of_every_kind(tmp_path: Path) -> None:
    path = tmp_path / "fills.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=2)
    cases: list[tuple[str, np.ndarray, Any]] = [
        ("ints", np.arange(4, dtype="i2"), 2),
        ("unsigned", np.arange(4, dtype="u8"), 3),
        ("bools", np.array([True, False, True, False]), False),
        ("complex", np.arange(4) * (1 + 1j), 1j),
        ("floats", np.array([1.0, np.nan, 3.0, 4.0], dtype="f4"), 3.0),
        ("times", np.array(["2000-01-01", "NaT", "2000-01-03", "2000-01-04"], "M8[s]"), None),
        ("fixed_bytes", np.array([b"ab", b"c", b"", b"x"]), b"x"),
        ("fixed_unicode", np.array(["ab", "c", "", "x"]), "x"),
        ("strings", np.array(["ab", "c", "", "x"], dtype=object), "x"),
    ]
    for name, data, fill_value in cases:
        dtype = "str" if data.dtype.kind == "O" else data.dtype
        array = group.create_array(
            name, shape=(4,), chunks=(3,), dtype=dtype, fill_value=fill_value
        )
        array[...] = data
        array.attrs["_ARRAY_DIMENSIONS"] = ["x"]
    store = ZarrParser()(str(path), registry_for(tmp_path))
    virtual = open_virtual(store)
    native = xr.open_zarr(path, consolidated=False, chunks=None).load()
    numeric = ["ints", "unsigned", "bools", "complex", "floats", "times"]
    xr.testing.assert_identical(virtual[numeric], native[numeric])
    # xarray reads no _FillValue attribute of a v3 string array, so the strings equal to a
    # v2 string fill value, which xarray masks in the v2 store, are plain values here.
    for name in ["fixed_bytes", "fixed_unicode", "strings"]:
        assert "_FillValue" not in store.group.arrays[name].metadata.attributes
        np.testing.assert_array_equal(
            virtual[name].values, zarr.open_array(path, path=name, mode="r")[...]
        )


def v3_arrays(path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.attrs["made_by"] = "zarr-python v3"
    values: dict[str, np.ndarray] = {}

    def add(name: str, data: np.ndarray, **options: Any) -> None:
        dtype = "str" if data.dtype.kind == "O" else data.dtype
        array = group.create_array(name, shape=data.shape, dtype=dtype, **options)
        array[...] = data
        values[name] = data

    floats = rng.normal(size=(17, 9))
    add("zstd", floats, chunks=(5, 4), compressors=zarr.codecs.ZstdCodec(level=3))
    add("gzip", floats, chunks=(5, 4), compressors=zarr.codecs.GzipCodec())
    add("blosc", floats, chunks=(5, 4), compressors=zarr.codecs.BloscCodec(cname="lz4"))
    add("raw_bigendian", floats.astype(">f8"), chunks=(5, 4), compressors=None)
    add("crc32c", floats, chunks=(5, 4), compressors=[zarr.codecs.Crc32cCodec()])
    add(
        "transposed",
        floats,
        chunks=(5, 4),
        filters=[zarr.codecs.TransposeCodec(order=(1, 0))],
    )
    add("dot_keys", floats, chunks=(5, 4), chunk_key_encoding={"name": "default", "separator": "."})
    add("v2_keys", floats, chunks=(5, 4), chunk_key_encoding={"name": "v2", "separator": "."})
    add("v2_slash_keys", floats, chunks=(5, 4), chunk_key_encoding={"name": "v2", "separator": "/"})
    add("sharded", floats, chunks=(2, 3), shards=(6, 9))
    add("strings", np.array(["a", "", "ccc", "dddd", "e"], dtype=object), chunks=(2,))
    add("scalar", np.array(-4, dtype="i8"), chunks=())
    add("bools", rng.random(30) > 0.5, chunks=(7,))
    sparse = np.zeros((9, 9), dtype="u4")
    sparse[3:6, 3:6] = 5
    add("sparse", sparse, chunks=(3, 3), fill_value=0)
    sub = group.create_group("sub", attributes={"level": 1})
    inner = sub.create_array("inner", shape=(4,), chunks=(3,), dtype="f4", dimension_names=["i"])
    inner[...] = [1, 2, 3, 4]
    values["sub/inner"] = inner[...]
    return values


def test_zarr_python_v3_arrays(tmp_path: Path) -> None:
    path = tmp_path / "v3.zarr"
    values = v3_arrays(path)
    store = ZarrParser()(str(path), registry_for(tmp_path))
    assert store.group.attributes == {"made_by": "zarr-python v3"}
    assert store.group.groups["sub"].attributes == {"level": 1}
    assert_arrays_equal(store, path, sorted(values))
    sparse = store.group.arrays["sparse"].manifest
    assert sparse.nrefs == 1 and sparse.path_ids[1, 1] != MISSING
    # A sharded array references whole shards: one per shard object.
    sharded = store.group.arrays["sharded"]
    assert sharded.manifest.shape_chunk_grid == (3, 1)
    assert sharded.metadata.to_dict()["codecs"][0]["name"] == "sharding_indexed"
    inner = store.group.get_node("sub/inner")
    assert isinstance(inner, ManifestArray) and inner.metadata.dimension_names == ("i",)
    assert inner.manifest.urls[0] == (path / "sub" / "inner" / "c" / "0").as_uri()


def test_consolidated_metadata_is_used_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.zarr"
    sample_dataset().to_zarr(path, zarr_format=2, consolidated=True, encoding=ENCODING)
    fetched: list[str] = []
    real_get = obstore.get_async

    async def counting_get(store: Any, key: str, **kwargs: Any) -> Any:
        fetched.append(key)
        return await real_get(store, key, **kwargs)

    monkeypatch.setattr(obstore, "get_async", counting_get)
    ZarrParser()(str(path), registry_for(tmp_path))
    assert fetched == ["c.zarr/.zmetadata"]
    fetched.clear()
    ZarrParser(consolidated=False)(str(path), registry_for(tmp_path))
    assert "c.zarr/temperature/.zarray" in fetched and "c.zarr/.zmetadata" not in fetched


def test_one_listing_and_no_head_per_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "many.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=3)
    for name in ["a", "b", "c"]:
        group.create_array(name, shape=(40, 40), chunks=(4, 4), dtype="u1")[...] = 1
    lists: list[Any] = []
    real_list = obstore.list

    def counting_list(store: Any, prefix: str | None = None, **kwargs: Any) -> Any:
        lists.append(prefix)
        return real_list(store, prefix, **kwargs)

    def no_head(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("head called")

    monkeypatch.setattr(obstore, "list", counting_list)
    monkeypatch.setattr(obstore, "head", no_head)
    store = ZarrParser()(str(path), registry_for(tmp_path))
    assert lists == ["many.zarr/"]
    assert store.group.nrefs == 300


def test_missing_chunk_objects_are_missing_chunks(tmp_path: Path) -> None:
    path = tmp_path / "holes.zarr"
    sample_dataset().to_zarr(path, zarr_format=3, encoding=ENCODING)
    (path / "temperature" / "c" / "1" / "0" / "0").unlink()
    store = ZarrParser()(str(path), registry_for(tmp_path))
    manifest = store.group.arrays["temperature"].manifest
    assert manifest.path_ids[1, 0, 0] == MISSING
    xr.testing.assert_identical(open_virtual(store), open_native(path))


def test_stray_objects_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "stray.zarr"
    sample_dataset().to_zarr(path, zarr_format=2, encoding=ENCODING)
    (path / "temperature" / "notes.txt").write_text("not a chunk")
    (path / "temperature" / "00.0.0").write_bytes(b"x")  # a key zarr never writes
    (path / "temperature" / "99.0.0").write_bytes(b"x")  # outside the chunk grid
    store = ZarrParser()(str(path), registry_for(tmp_path))
    assert store.group.arrays["temperature"].manifest.nrefs == 4 * 2 * 1
    xr.testing.assert_identical(open_virtual(store), open_native(path))


def test_drop_variables(tmp_path: Path) -> None:
    path = tmp_path / "d.zarr"
    sample_dataset().to_zarr(path, zarr_format=3, encoding=ENCODING)
    store = ZarrParser(drop_variables=["counts", "label"])(str(path), registry_for(tmp_path))
    assert "counts" not in store.group.arrays and "label" not in store.group.arrays
    xr.testing.assert_identical(
        open_virtual(store), open_native(path, drop_variables=["counts", "label"])
    )


def test_parser_pickles() -> None:
    parser = ZarrParser(group="a", drop_variables=["x"], consolidated=False, zarr_format=2)
    clone = pickle.loads(pickle.dumps(parser))
    assert repr(clone) == repr(parser)


def test_names_that_need_quoting(tmp_path: Path) -> None:
    folder = tmp_path / "with space"
    folder.mkdir()
    path = folder / "store é+1.zarr"
    ds = xr.Dataset({"air temp": (("t",), np.arange(5.0))})
    ds.to_zarr(path, zarr_format=2, encoding={"air temp": {"chunks": (2,)}})
    store = ZarrParser()(str(path), registry_for(folder))
    assert all("%20" in url for url in store.group.arrays["air temp"].manifest.urls)
    xr.testing.assert_identical(open_virtual(store), open_native(path))


def copy_into_icechunk(store: vz.ManifestStore, session: Any) -> None:
    """Write a ManifestStore's metadata and references into an icechunk session (by hand, so
    that this test doesn't depend on the writers)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    async def copy_metadata() -> None:
        prototype = default_buffer_prototype()
        async for key in store.list():
            if key.endswith("zarr.json"):
                buffer = await store.get(key, prototype)
                assert buffer is not None
                await session.store.set(key, buffer)

    sync(copy_metadata())
    for path, node in store.group.walk():
        if isinstance(node, ManifestArray):
            manifest = node.manifest
            failed = session.store.set_virtual_refs_arr(
                path,
                manifest.shape_chunk_grid,
                manifest.paths_array().ravel().tolist(),
                manifest.offsets.ravel(),
                manifest.lengths.ravel(),
            )
            assert not failed


def migrate(store: vz.ManifestStore, data: Path, repo: Path) -> Any:
    """Write ``store`` into a new Icechunk repository; return a read-only session of it."""
    import icechunk

    container = data.as_uri() + "/"
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(container, icechunk.local_filesystem_store(str(data)))
    )
    access = {container: icechunk.credentials.LocalFileSystemAccess}
    storage = icechunk.local_filesystem_storage(str(repo))
    repository = icechunk.Repository.create(
        storage, config=config, authorize_virtual_chunk_access=access
    )
    session = repository.writable_session("main")
    copy_into_icechunk(store, session)
    session.commit("migrated")
    reader = icechunk.Repository.open(storage, authorize_virtual_chunk_access=access)
    return reader.readonly_session("main")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_migrate_into_icechunk(tmp_path: Path, zarr_format: int) -> None:
    """Zarr store → ZarrParser → Icechunk repository reads like the original store."""
    data = tmp_path / "data"
    path = data / "sample.zarr"
    sample_dataset().to_zarr(path, zarr_format=zarr_format, encoding=ENCODING)
    store = ZarrParser()(str(path), registry_for(data))
    session = migrate(store, data, tmp_path / "repo")
    migrated = xr.open_zarr(session.store, consolidated=False, zarr_format=3, chunks=None)
    xr.testing.assert_identical(migrated.load(), open_native(path))


@pytest.mark.parametrize("write", [v2_arrays, v3_arrays], ids=["v2", "v3"])
def test_migrate_every_codec_into_icechunk(tmp_path: Path, write: Any) -> None:
    """Every array of the codec tests, sharded and Fortran-ordered ones included, reads the
    same from an Icechunk repository of its references."""
    data = tmp_path / "data"
    path = data / "arrays.zarr"
    values = write(path)
    session = migrate(ZarrParser()(str(path), registry_for(data)), data, tmp_path / "repo")
    for name in values:
        np.testing.assert_array_equal(
            zarr.open_array(session.store, path=name, mode="r")[...],
            zarr.open_array(path, path=name, mode="r")[...],
            err_msg=name,
        )


# -- refusals -------------------------------------------------------------------------------


def test_store_outside_the_registry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.zarr"
    sample_dataset().to_zarr(path, zarr_format=3)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(UnauthorizedLocationError) as caught:
        ZarrParser()(str(path), registry_for(elsewhere))
    assert caught.value.url is not None and "store.zarr" in caught.value.url
    with pytest.raises(UnauthorizedLocationError):
        ZarrParser(group="../../")(str(path), registry_for(path))


def write_v2_array_document(path: Path, name: str, **changes: Any) -> None:
    """A v2 array whose .zarray has ``changes`` (zarr-python can't write some of these)."""
    group = zarr.open_group(path, mode="a", zarr_format=2)
    group.create_array(name, shape=(4,), chunks=(2,), dtype="i4", compressors=None)[...] = 1
    document = json.loads((path / name / ".zarray").read_text())
    document.update(changes)
    (path / name / ".zarray").write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"dtype": "|O", "filters": [{"id": "pickle", "protocol": 5}]}, "pickle"),
        ({"dtype": "|O", "filters": [{"id": "json2", "encoding": "utf-8"}]}, "json2"),
        ({"dtype": "|O", "filters": [{"id": "vlen-array", "dtype": "<i4"}]}, "vlen-array"),
        ({"dtype": ">i4", "filters": [{"id": "delta", "dtype": ">i4"}]}, "big-endian"),
        ({"compressor": {"id": "no-such-codec"}}, "no-such-codec"),
    ],
)
def test_unsupported_v2_arrays_are_refused(
    tmp_path: Path, changes: dict[str, Any], reason: str
) -> None:
    path = tmp_path / "bad.zarr"
    zarr.open_group(path, mode="w", zarr_format=2)
    write_v2_array_document(path, "ok")
    write_v2_array_document(path, "bad", **changes)
    registry = registry_for(tmp_path)
    with pytest.raises(UnsupportedFeatureError) as caught:
        ZarrParser()(str(path), registry)
    assert caught.value.variable == "bad"
    assert caught.value.url is not None and caught.value.url.endswith("bad.zarr")
    assert reason in str(caught.value)
    with pytest.warns(SkippedVariableWarning):
        store = ZarrParser(on_unsupported="skip")(str(path), registry)
    assert list(store.group.arrays) == ["ok"]
    assert list(store.skipped) == ["bad"]


def test_unknown_chunk_grid_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "grid.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.create_array("v", shape=(4,), chunks=(2,), dtype="i4")[...] = 1
    document = json.loads((path / "v" / "zarr.json").read_text())
    document["chunk_grid"] = {"name": "hexagonal", "configuration": {}}
    (path / "v" / "zarr.json").write_text(json.dumps(document))
    with pytest.raises(UnsupportedFeatureError, match="hexagonal") as caught:
        ZarrParser()(str(path), registry_for(tmp_path))
    assert caught.value.variable == "v"


def test_not_a_group(tmp_path: Path) -> None:
    registry = registry_for(tmp_path)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InvalidFileError, match="no zarr metadata"):
        ZarrParser()(str(tmp_path / "nothing"), registry)
    zarr.create_array(tmp_path / "array.zarr", shape=(3,), dtype="i1", zarr_format=2)
    with pytest.raises(InvalidFileError, match="an array"):
        ZarrParser()(str(tmp_path / "array.zarr"), registry)
    sample_dataset().to_zarr(tmp_path / "plain.zarr", zarr_format=2, consolidated=False)
    with pytest.raises(InvalidFileError, match="consolidated"):
        ZarrParser(consolidated=True)(str(tmp_path / "plain.zarr"), registry)
    with pytest.raises(InvalidFileError, match="no zarr"):
        ZarrParser(zarr_format=3)(str(tmp_path / "plain.zarr"), registry)


# -- S3 -------------------------------------------------------------------------------------

BUCKET = "zarr-archive"


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_store_on_s3(s3_endpoint: str, tmp_path: Path, zarr_format: int) -> None:
    path = tmp_path / "s.zarr"
    sample_dataset().to_zarr(path, zarr_format=zarr_format, encoding=ENCODING)
    bucket = moto_bucket_store(BUCKET, s3_endpoint)
    for file in path.rglob("*"):
        if file.is_file():
            obstore.put(
                bucket, f"data/s.zarr/{file.relative_to(path).as_posix()}", file.read_bytes()
            )
    registry = vz.ObjectStoreRegistry({f"s3://{BUCKET}/": bucket})
    store = ZarrParser()(f"s3://{BUCKET}/data/s.zarr", registry)
    manifest = store.group.arrays["temperature"].manifest
    key = "c/0/0/0" if zarr_format == 3 else "0.0.0"
    assert f"s3://{BUCKET}/data/s.zarr/temperature/{key}" in manifest.urls
    assert all(source is not None and source.etag for source in manifest.sources)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xr.testing.assert_identical(open_virtual(store), open_native(path))
