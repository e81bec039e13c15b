"""Kerchunk references: what virtualize writes reads back exactly through kerchunk's and fsspec's
readers, and KerchunkParser reads references (ours and kerchunk's) exactly and safely."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import fsspec
import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr
from obstore.store import LocalStore
from oracle import CORPUS, local_registry, without_nczarr_attributes
from test_hdf_conformance import ENCODINGS, float32_packing_file, sample_dataset

import virtualize as vz
from virtualize.errors import (
    InvalidFileError,
    UnauthorizedLocationError,
    UnsupportedFeatureError,
)
from virtualize.parsers import HDFParser
from virtualize.parsers.kerchunk import KerchunkParser
from virtualize.writers import kerchunk as kerchunk_writer
from virtualize.writers.kerchunk import to_kerchunk

V2_FORMATS = ["dict", "json", "parquet"]


# -- helpers -----------------------------------------------------------------------------------


def registry_for(*folders: Path) -> vz.ObjectStoreRegistry:
    """A registry that authorises exactly ``folders``."""
    return vz.ObjectStoreRegistry(
        {folder.resolve().as_uri() + "/": LocalStore(folder.resolve()) for folder in folders}
    )


def write_sample(tmp_path: Path, encoding: str = "default") -> Path:
    path = tmp_path / f"{encoding}.nc"
    sample_dataset().to_netcdf(path, engine="netcdf4", encoding=ENCODINGS[encoding])
    return path


def native(path: Path, **kwargs: Any) -> xr.Dataset:
    with xr.open_dataset(path, **kwargs) as dataset:
        return without_nczarr_attributes(dataset.load())


def virtual(path: Path, **kwargs: Any) -> xr.Dataset:
    return vz.open_virtual_dataset(path, registry=local_registry(path), **kwargs)


def write(vds: xr.Dataset, tmp_path: Path, fmt: str, **kwargs: Any) -> Any:
    """References in ``fmt``: the dict itself, or the path written."""
    if fmt == "dict":
        return to_kerchunk(vds, format="dict", **kwargs)
    target = tmp_path / f"refs.{fmt}"
    assert to_kerchunk(vds, target, format=fmt, **kwargs) is None  # type: ignore[arg-type]
    return str(target)


def read_with_kerchunk(refs: Any, **kwargs: Any) -> xr.Dataset:
    """kerchunk's xarray backend (Zarr v2 metadata)."""
    options = {"remote_protocol": "file"}  # pandas 3: fsspec can't guess it from Parquet
    return xr.open_dataset(refs, engine="kerchunk", storage_options=options, **kwargs).load()


def read_with_fsspec(refs: Any, *, zarr_format: int, **kwargs: Any) -> xr.Dataset:
    """fsspec's reference file system through zarr's FsspecStore."""
    fs = fsspec.filesystem("reference", fo=refs, remote_protocol="file", asynchronous=True)
    store = zarr.storage.FsspecStore(fs, read_only=True)
    return xr.open_zarr(store, zarr_format=zarr_format, consolidated=False, **kwargs).load()


def read_with_parser(url: str, registry: vz.ObjectStoreRegistry, **kwargs: Any) -> xr.Dataset:
    store = KerchunkParser(**kwargs)(url, registry)
    return xr.open_zarr(store, zarr_format=3, consolidated=False).load()


# -- writing: files written at test time -------------------------------------------------------


@pytest.mark.parametrize("fmt", V2_FORMATS)
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_v2_references_read_back_exactly_with_kerchunk(
    tmp_path: Path, encoding: str, fmt: str
) -> None:
    path = write_sample(tmp_path, encoding)
    refs = write(virtual(path), tmp_path, fmt)
    xr.testing.assert_identical(read_with_kerchunk(refs), native(path))
    xr.testing.assert_identical(read_with_fsspec(refs, zarr_format=2), native(path))


@pytest.mark.parametrize("fmt", ["dict", "json"])
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_v3_references_read_back_exactly(tmp_path: Path, encoding: str, fmt: str) -> None:
    path = write_sample(tmp_path, encoding)
    refs = write(virtual(path), tmp_path, fmt, zarr_format=3)
    keys = refs["refs"] if fmt == "dict" else json.loads(Path(refs).read_text())["refs"]
    assert "zarr.json" in keys and "temperature/zarr.json" in keys and ".zgroup" not in keys
    xr.testing.assert_identical(read_with_fsspec(refs, zarr_format=3), native(path))


@pytest.mark.parametrize(
    ("fmt", "zarr_format"), [("json", 2), ("parquet", 2), ("json", 3)], ids=str
)
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_round_trip_through_the_kerchunk_parser(
    tmp_path: Path, encoding: str, fmt: str, zarr_format: int
) -> None:
    """HDF5 -> virtualize -> Kerchunk -> KerchunkParser -> ManifestStore -> xr.open_zarr."""
    path = write_sample(tmp_path, encoding)
    refs = write(virtual(path), tmp_path, fmt, zarr_format=zarr_format)
    got = read_with_parser(refs, registry_for(tmp_path))
    xr.testing.assert_identical(got, native(path))


def test_json_file_holds_the_same_references_as_the_dict(tmp_path: Path) -> None:
    path = tmp_path / "mixed.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 10)
        nc.createDimension("y", 7)
        v = nc.createVariable("v", "f4", ("x", "y"), chunksizes=(3, 2), zlib=True)
        v[:] = np.arange(70, dtype="f4").reshape(10, 7)
        s = nc.createVariable("s", str, ("x",))
        s[:] = np.array([f"text {i}" for i in range(10)], dtype=object)
    vds = virtual(path, loadable_variables=[])
    as_dict = to_kerchunk(vds)
    to_kerchunk(vds, tmp_path / "refs.json", format="json")
    assert as_dict is not None
    assert json.loads((tmp_path / "refs.json").read_text()) == as_dict
    refs = as_dict["refs"]
    assert set(as_dict) == {"version", "refs"}  # never "gen" or "templates"
    assert refs["v/3.3"][1:] == [
        int(vds["v"].data.manifest.offsets[3, 3]),
        int(vds["v"].data.manifest.lengths[3, 3]),
    ]
    assert refs["v/0.0"][0] == str(path.resolve())  # local files as plain paths
    assert isinstance(refs["s/0"], str) and refs["s/0"].startswith("base64:")
    assert all(isinstance(refs[k], str) for k in refs if k.rsplit("/", 1)[-1].startswith(".z"))
    xr.testing.assert_identical(read_with_kerchunk(as_dict), native(path))


def test_v2_metadata_says_what_the_codecs_and_byte_order_are(tmp_path: Path) -> None:
    path = tmp_path / "big_endian.h5"
    with h5py.File(path, "w") as f:
        data = f.create_dataset(
            "data",
            data=np.arange(60, dtype=">i4").reshape(6, 10),
            chunks=(4, 5),
            shuffle=True,
            compression="gzip",
            fillvalue=-9,
        )
        data.attrs["_FillValue"] = np.int32(-9)
        f.create_dataset("x", data=np.arange(6.0))
        f.create_dataset("y", data=np.arange(10.0))
        data.dims[0].attach_scale(f["x"].make_scale("x") or f["x"])
        data.dims[1].attach_scale(f["y"].make_scale("y") or f["y"])
    refs = to_kerchunk(virtual(path, loadable_variables=[]))
    assert refs is not None
    zarray = json.loads(refs["refs"]["data/.zarray"])
    zattrs = json.loads(refs["refs"]["data/.zattrs"])
    assert zarray["dtype"] == ">i4"
    assert zarray["chunks"] == [4, 5] and zarray["shape"] == [6, 10]
    assert zarray["filters"] == [{"id": "shuffle", "elementsize": 4}]
    assert zarray["compressor"] == {"id": "zlib", "level": 4}
    assert zarray["fill_value"] == -9
    assert "_FillValue" not in zattrs  # Zarr v2 says it with fill_value
    assert zattrs["_ARRAY_DIMENSIONS"] == ["x", "y"]
    xr.testing.assert_identical(read_with_kerchunk(refs), native(path, engine="h5netcdf"))


@pytest.mark.parametrize("fmt", V2_FORMATS)
def test_codecs_zarr_v2_cannot_name_are_refused_by_name(tmp_path: Path, fmt: str) -> None:
    path = float32_packing_file(tmp_path)
    vds = virtual(path)
    with pytest.raises(UnsupportedFeatureError) as caught:
        write(vds, tmp_path, fmt)
    message = str(caught.value)
    assert "'v'" in message and "virtualize.cf_packing" in message and "zarr_format=3" in message
    assert not (tmp_path / f"refs.{fmt}").exists()  # nothing unreadable is left behind


@pytest.mark.parametrize("fmt", ["dict", "json"])
def test_zarr_v3_references_keep_virtualize_codecs(tmp_path: Path, fmt: str) -> None:
    path = float32_packing_file(tmp_path)
    refs = write(virtual(path), tmp_path, fmt, zarr_format=3)
    got = read_with_fsspec(refs, zarr_format=3)
    assert got["v"].dtype == np.float32
    xr.testing.assert_identical(got, native(path))


def test_zarr_v3_parquet_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFeatureError, match="Zarr v2"):
        to_kerchunk(
            virtual(write_sample(tmp_path)), tmp_path / "r", format="parquet", zarr_format=3
        )


def partly_written_file(tmp_path: Path, *, fill_attribute: bool) -> Path:
    """A netCDF4 variable of 4 chunks of which only 2 were written."""
    path = tmp_path / f"partial_{fill_attribute}.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", 8)
        options: dict[str, Any] = {"fill_value": np.int16(-7)} if fill_attribute else {}
        variable = nc.createVariable("v", "i2", ("x",), chunksizes=(2,), zlib=True, **options)
        variable[0:2] = np.array([1, 2], dtype="i2")
        variable[6:8] = np.array([3, 4], dtype="i2")
    return path


@pytest.mark.parametrize("fmt", V2_FORMATS)
@pytest.mark.parametrize("fill_attribute", [True, False])
def test_missing_chunks_read_back_as_the_fill_value(
    tmp_path: Path, fill_attribute: bool, fmt: str
) -> None:
    path = partly_written_file(tmp_path, fill_attribute=fill_attribute)
    vds = virtual(path)
    assert vds["v"].data.manifest.nrefs == 2
    refs = write(vds, tmp_path, fmt)
    expected = native(path)
    assert int(np.asarray(expected["v"].isnull()).sum()) == (4 if fill_attribute else 0)
    xr.testing.assert_identical(read_with_kerchunk(refs), expected)
    if fmt != "dict":
        xr.testing.assert_identical(read_with_parser(refs, registry_for(tmp_path)), expected)


def test_missing_chunks_are_left_out_when_the_fill_value_says_it(tmp_path: Path) -> None:
    path = partly_written_file(tmp_path, fill_attribute=True)
    refs = to_kerchunk(virtual(path))
    assert refs is not None
    assert {k for k in refs["refs"] if k.startswith("v/") and ".z" not in k} == {"v/0", "v/3"}


def test_missing_chunks_that_need_too_many_inline_bytes_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = partly_written_file(tmp_path, fill_attribute=False)
    monkeypatch.setattr(kerchunk_writer, "MAX_FILL_BYTES", 8)
    with pytest.raises(UnsupportedFeatureError, match="missing"):
        to_kerchunk(virtual(path))
    assert to_kerchunk(virtual(path), zarr_format=3) is not None


def test_parquet_layout_is_what_fsspec_reads(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = write_sample(tmp_path, "partial_edge_chunks")
    vds = virtual(path)
    target = tmp_path / "refs.parq"
    to_kerchunk(vds, target, format="parquet", record_size=5)
    document = json.loads((target / ".zmetadata").read_text())
    assert document["record_size"] == 5
    metadata = document["metadata"]
    assert metadata[".zgroup"] == {"zarr_format": 2}
    assert metadata["temperature/.zattrs"]["_ARRAY_DIMENSIONS"] == ["time", "lat", "lon"]
    # temperature: a 3 x 3 x 2 chunk grid = 18 chunks in 4 record files of 5 rows
    records = sorted(p.name for p in (target / "temperature").iterdir())
    assert records == [f"refs.{n}.parq" for n in range(4)]
    table = pq.read_table(target / "temperature" / "refs.3.parq")
    assert table.column_names == ["path", "offset", "size", "raw"]
    assert table.num_rows == 5  # padded
    assert table.column("path").null_count == 2
    # every key reads the same through fsspec's LazyReferenceMapper as from the dict
    refs = to_kerchunk(vds)
    assert refs is not None
    mapper = fsspec.filesystem("reference", fo=str(target), remote_protocol="file").references
    for key, value in refs["refs"].items():
        if key.rsplit("/", 1)[-1].startswith(".z"):
            assert json.loads(mapper[key]) == json.loads(value)
        elif isinstance(value, list):
            assert [value[0], *map(int, mapper[key][1:])] == value
        else:
            assert mapper[key] == base64.b64decode(value[len("base64:") :])
    xr.testing.assert_identical(read_with_kerchunk(str(target)), native(path))


def test_inline_chunks_go_to_the_raw_column(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "inline.h5"
    with h5py.File(path, "w") as f:
        strings = np.array(["a", "bb", "ccc"], dtype=object)
        f.create_dataset("s", data=strings, dtype=h5py.string_dtype())
        layout = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        layout.set_layout(h5py.h5d.COMPACT)
        space = h5py.h5s.create_simple((5,))
        compact = h5py.h5d.create(f.id, b"c", h5py.h5t.STD_I16LE, space, layout)
        compact.write(h5py.h5s.ALL, h5py.h5s.ALL, np.arange(5, dtype="<i2"))
    store = HDFParser()(str(path), local_registry(path))
    assert all(a.manifest.ninline == 1 for a in store.group.arrays.values())
    expected = xr.open_zarr(store, zarr_format=3, consolidated=False).load()
    vds = virtual(path, loadable_variables=[])
    target = write(vds, tmp_path, "parquet")
    raw = pq.read_table(Path(target) / "c" / "refs.0.parq").column("raw")
    assert raw[0].as_py() is not None and raw.null_count == raw.length() - 1
    xr.testing.assert_identical(read_with_kerchunk(target), expected)
    xr.testing.assert_identical(read_with_parser(target, registry_for(tmp_path)), expected)


def test_loaded_variables_are_written_as_xarray_encodes_them(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    vds = virtual(path, loadable_variables=["time", "lat", "lon", "counts"])
    vds = vds.assign_coords(label=("lat", np.array(["a", "b", "c", "d", "e"])))
    refs = to_kerchunk(vds)
    assert refs is not None
    assert json.loads(refs["refs"]["time/.zattrs"])["units"].startswith("days since")
    assert isinstance(refs["refs"]["counts/0.0"], str)  # inline
    expected = native(path).assign_coords(label=("lat", np.array(["a", "b", "c", "d", "e"])))
    xr.testing.assert_identical(read_with_kerchunk(refs), expected)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_group_option_writes_below_a_group(tmp_path: Path, zarr_format: int) -> None:
    path = write_sample(tmp_path)
    target = tmp_path / "refs.json"
    to_kerchunk(virtual(path), target, format="json", zarr_format=zarr_format, group="a/b")
    keys = json.loads(target.read_text())["refs"]
    if zarr_format == 2:
        assert {".zgroup", "a/.zgroup", "a/b/.zgroup", "a/b/temperature/.zarray"} <= set(keys)
        xr.testing.assert_identical(read_with_kerchunk(str(target), group="a/b"), native(path))
    else:
        assert {"zarr.json", "a/zarr.json", "a/b/zarr.json"} <= set(keys)
    got = read_with_parser(str(target), registry_for(tmp_path), group="a/b")
    xr.testing.assert_identical(got, native(path))


def test_source_paths_with_spaces_and_unicode(tmp_path: Path) -> None:
    folder = tmp_path / "with space é"
    folder.mkdir()
    path = write_sample(folder, "zlib_shuffle")
    for fmt in V2_FORMATS:
        refs = write(virtual(path), tmp_path, fmt)
        xr.testing.assert_identical(read_with_kerchunk(refs), native(path))
        if fmt != "dict":
            got = read_with_parser(refs, registry_for(tmp_path))
            xr.testing.assert_identical(got, native(path))


def test_argument_errors(tmp_path: Path) -> None:
    vds = virtual(write_sample(tmp_path))
    with pytest.raises(ValueError, match="format"):
        to_kerchunk(vds, format="yaml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path"):
        to_kerchunk(vds, format="json")
    with pytest.raises(ValueError, match="record_size"):
        to_kerchunk(vds, tmp_path / "r", format="parquet", record_size=0)


# -- writing: the corpus -----------------------------------------------------------------------

CORPUS_FILES = [
    "kerchunk/air.nc",
    "bes/nc4_strings.nc",
    "bes/nc4_unsigned_types_comp.nc",
    "bes/ref_tst_enum_data.nc",
    "bes/zero_length_array.nc",
    "bes/FletcherShuffle.nc4",
    "netcdf-c/nctest_netcdf4_classic.nc",
    "netcdf-c/ref_tst_dims.nc",
    "netcdf4-python/issue671.nc",
    "rioxarray/PLANET_SCOPE_3D.nc",
]
#: files whose Zarr v2 references are refused (float32 CF packing), and why
V2_REFUSED = {"netcdf4-python/issue671.nc": "virtualize.cf_packing"}


@pytest.mark.skipif(not (CORPUS / "netcdf4").is_dir(), reason="../shared/corpus is absent")
@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_files_round_trip_or_are_refused(tmp_path: Path, name: str) -> None:
    path = CORPUS / "netcdf4" / name
    registry = registry_for(path.parent, tmp_path)
    vds = vz.open_virtual_dataset(path, registry=registry, loadable_variables=[])
    expected = native(path)
    for fmt, zarr_format in [("json", 2), ("parquet", 2), ("json", 3)]:
        if zarr_format == 2 and name in V2_REFUSED:
            with pytest.raises(UnsupportedFeatureError, match=V2_REFUSED[name]):
                write(vds, tmp_path, fmt)
            continue
        refs = write(vds, tmp_path, fmt, zarr_format=zarr_format)
        if zarr_format == 2:
            xr.testing.assert_identical(read_with_kerchunk(refs), expected)
        else:
            xr.testing.assert_identical(read_with_fsspec(refs, zarr_format=3), expected)
        xr.testing.assert_identical(read_with_parser(refs, registry), expected)


# -- parsing references others wrote -----------------------------------------------------------


@pytest.mark.parametrize("encoding", ["default", "zlib_shuffle", "packed_int16", "nan_fill"])
def test_references_written_by_kerchunk_parse_exactly(tmp_path: Path, encoding: str) -> None:
    from kerchunk.hdf import SingleHdf5ToZarr

    path = write_sample(tmp_path, encoding)
    refs = SingleHdf5ToZarr(str(path), inline_threshold=100).translate()
    target = tmp_path / "kerchunk.json"
    target.write_text(json.dumps(refs))
    got = read_with_parser(str(target), registry_for(tmp_path))
    xr.testing.assert_identical(got, read_with_kerchunk(str(target)))
    xr.testing.assert_identical(got, native(path))


def test_kerchunk_parquet_written_by_kerchunk_parses(tmp_path: Path) -> None:
    from kerchunk.df import refs_to_dataframe
    from kerchunk.hdf import SingleHdf5ToZarr

    path = write_sample(tmp_path, "partial_edge_chunks")
    refs = SingleHdf5ToZarr(str(path), inline_threshold=100).translate()
    refs_to_dataframe(refs, str(tmp_path / "kerchunk.parq"), record_size=4)
    got = read_with_parser(str(tmp_path / "kerchunk.parq"), registry_for(tmp_path))
    xr.testing.assert_identical(got, native(path))


def hand_written(tmp_path: Path, refs: dict[str, Any], **document: Any) -> str:
    """A JSON reference file next to the sample file, with ``refs`` (and other fields)."""
    target = tmp_path / "hand.json"
    target.write_text(json.dumps({"version": 1, "refs": refs, **document}))
    return str(target)


def single_variable_refs(url: str, offset: int, length: int) -> dict[str, Any]:
    """References to ``counts`` of the default sample file, pointing at ``url``."""
    zarray = {
        "shape": [7, 5],
        "chunks": [7, 5],
        "dtype": "<i4",
        "fill_value": None,
        "order": "C",
        "filters": None,
        "compressor": None,
        "zarr_format": 2,
    }
    return {
        ".zgroup": json.dumps({"zarr_format": 2}),
        "counts/.zarray": json.dumps(zarray),
        "counts/.zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["time", "lat"]}),
        "counts/0.0": [url, offset, length],
    }


def counts_location(path: Path) -> tuple[int, int]:
    manifest = HDFParser()(str(path), local_registry(path)).group.arrays["counts"].manifest
    return int(manifest.offsets[0, 0]), int(manifest.lengths[0, 0])


def expected_counts(path: Path) -> xr.Dataset:
    counts = native(path, decode_times=False)[["counts"]].drop_vars(["time", "lat"])
    counts.attrs = {}
    return counts


def test_relative_paths_templates_and_version_0(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    offset, length = counts_location(path)
    registry = registry_for(tmp_path)
    expected = expected_counts(path)
    for url in ["default.nc", "./default.nc", str(path), path.as_uri()]:
        refs = hand_written(tmp_path, single_variable_refs(url, offset, length))
        xr.testing.assert_identical(read_with_parser(refs, registry), expected)
    templated = single_variable_refs("{{root}}/default.nc", offset, length)
    refs = hand_written(tmp_path, templated, templates={"root": str(tmp_path)})
    xr.testing.assert_identical(read_with_parser(refs, registry), expected)
    version_0 = tmp_path / "v0.json"
    version_0.write_text(json.dumps(single_variable_refs(str(path), offset, length)))
    xr.testing.assert_identical(read_with_parser(str(version_0), registry), expected)
    # relative to fs_root rather than to the reference file
    (tmp_path / "elsewhere").mkdir()
    moved = tmp_path / "elsewhere" / "hand.json"
    moved.write_text(
        json.dumps({"version": 1, "refs": single_variable_refs("default.nc", offset, length)})
    )
    got = read_with_parser(str(moved), registry, fs_root=str(tmp_path))
    xr.testing.assert_identical(got, expected)


def test_whole_file_and_inline_references(tmp_path: Path) -> None:
    raw = np.arange(35, dtype="<i4").reshape(7, 5)
    (tmp_path / "blob.bin").write_bytes(raw.tobytes())
    refs = single_variable_refs("blob.bin", 0, 0)
    refs["counts/0.0"] = ["blob.bin"]
    got = read_with_parser(hand_written(tmp_path, refs), registry_for(tmp_path))
    np.testing.assert_array_equal(got["counts"].values, raw)
    refs["counts/0.0"] = "base64:" + base64.b64encode(raw.tobytes()).decode()
    got = read_with_parser(hand_written(tmp_path, refs), registry_for(tmp_path))
    np.testing.assert_array_equal(got["counts"].values, raw)


def test_gen_jinja_and_unknown_versions_are_refused(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    registry = registry_for(tmp_path)
    refs = single_variable_refs(str(path), *counts_location(path))
    gen = [{"key": "counts/{{i}}.0", "url": "x", "dimensions": {"i": {"stop": 2}}}]
    with pytest.raises(UnsupportedFeatureError, match="gen"):
        KerchunkParser()(hand_written(tmp_path, refs, gen=gen), registry)
    with pytest.raises(UnsupportedFeatureError, match="jinja"):
        KerchunkParser()(hand_written(tmp_path, refs, templates={"a": "{{b}}/x"}), registry)
    with pytest.raises(InvalidFileError, match="version"):
        KerchunkParser()(hand_written(tmp_path, refs, version=2), registry)
    refs["counts/0.0"] = ["{{nowhere}}/x.nc", 0, 4]
    with pytest.raises(InvalidFileError, match="nowhere"):
        KerchunkParser()(hand_written(tmp_path, refs), registry)


@pytest.mark.parametrize("key", ["counts/00.0", "counts/0.0.0", "counts/1.0", "counts/-0.0"])
def test_malformed_chunk_keys_are_refused(tmp_path: Path, key: str) -> None:
    path = write_sample(tmp_path)
    refs = single_variable_refs(str(path), *counts_location(path))
    refs[key] = refs.pop("counts/0.0")
    with pytest.raises(InvalidFileError, match="chunk key"):
        KerchunkParser()(hand_written(tmp_path, refs), registry_for(tmp_path))


def test_drop_variables_never_reads_their_record_files(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    target = tmp_path / "refs.parq"
    to_kerchunk(virtual(path, loadable_variables=[]), target, format="parquet")
    for record in (target / "temperature").iterdir():
        record.write_bytes(b"not parquet")
    with pytest.raises(InvalidFileError, match="temperature"):
        KerchunkParser()(str(target), registry_for(tmp_path))
    store = KerchunkParser(drop_variables=["temperature"])(str(target), registry_for(tmp_path))
    assert "temperature" not in store.group.arrays and "counts" in store.group.arrays


# -- parsing safely: every referenced location must be registered --------------------------


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A secret file in a folder the registry does not authorise."""
    folder = tmp_path_factory.mktemp("secrets")
    secret = folder / "id_rsa"
    secret.write_bytes(b"x" * 140)
    return secret


def unauthorised_urls(tmp_path: Path, secret: Path) -> list[str]:
    relative = Path("..") / ".." / secret.relative_to(secret.anchor)
    climbing = "../" * len(tmp_path.resolve().parts) + str(secret.relative_to(secret.anchor))
    return [
        str(secret),
        secret.as_uri(),
        str(tmp_path / ".." / ".." / secret.relative_to(secret.anchor)),
        f"{tmp_path}/../{secret.parent.name}/{secret.name}",
        climbing,
        str(relative),
        "/etc/passwd",
        "file://otherhost/etc/passwd",
        "s3://bucket/key",
        "https://example.org/file.nc",
    ]


def test_references_to_unregistered_locations_are_refused_at_parse_time(
    tmp_path: Path, outside: Path
) -> None:
    registry = registry_for(tmp_path)
    for url in unauthorised_urls(tmp_path, outside):
        refs = hand_written(tmp_path, single_variable_refs(url, 0, 140))
        with pytest.raises(UnauthorizedLocationError):
            KerchunkParser()(refs, registry)


def test_templates_and_fs_root_cannot_escape_the_registry(tmp_path: Path, outside: Path) -> None:
    registry = registry_for(tmp_path)
    refs = single_variable_refs("{{root}}/id_rsa", 0, 140)
    with pytest.raises(UnauthorizedLocationError):
        KerchunkParser()(
            hand_written(tmp_path, refs, templates={"root": str(outside.parent)}), registry
        )
    relative = hand_written(tmp_path, single_variable_refs("id_rsa", 0, 140))
    with pytest.raises(UnauthorizedLocationError):
        KerchunkParser(fs_root=str(outside.parent))(relative, registry)


def test_parquet_references_to_unregistered_locations_are_refused(
    tmp_path: Path, outside: Path
) -> None:
    path = write_sample(tmp_path)
    vds = virtual(path, loadable_variables=[])
    target = tmp_path / "refs.parq"
    to_kerchunk(vds.virtualize.rename_paths(str(outside)), target, format="parquet")
    with pytest.raises(UnauthorizedLocationError):
        KerchunkParser()(str(target), registry_for(tmp_path))
    # field names that climb out of the reference directory are refused too
    document = json.loads((target / ".zmetadata").read_text())
    document["metadata"] = {
        (k.replace("counts/", "../counts/") if k.startswith("counts/") else k): v
        for k, v in document["metadata"].items()
    }
    (target / ".zmetadata").write_text(json.dumps(document))
    with pytest.raises(InvalidFileError, match="record files"):
        KerchunkParser(drop_variables=["temperature", "flag"])(
            str(target), registry_for(tmp_path.parent)
        )


def test_the_reference_file_itself_must_be_registered(tmp_path: Path, outside: Path) -> None:
    refs = outside.parent / "refs.json"
    refs.write_text(json.dumps({"version": 1, "refs": {".zgroup": '{"zarr_format":2}'}}))
    with pytest.raises(UnauthorizedLocationError):
        KerchunkParser()(str(refs), registry_for(tmp_path))


def test_kerchunk_json_converts_to_parquet_through_a_virtual_dataset(tmp_path: Path) -> None:
    """References kerchunk wrote, opened as a virtual dataset and written again."""
    from kerchunk.hdf import SingleHdf5ToZarr

    path = write_sample(tmp_path, "zlib_shuffle")
    source = tmp_path / "kerchunk.json"
    source.write_text(json.dumps(SingleHdf5ToZarr(str(path)).translate()))
    registry = registry_for(tmp_path)
    vds = vz.open_virtual_dataset(str(source), parser=KerchunkParser(), registry=registry)
    assert vds.virtualize.nrefs > 0
    target = tmp_path / "converted.parq"
    to_kerchunk(vds, target, format="parquet")
    xr.testing.assert_identical(read_with_kerchunk(str(target)), native(path))
    xr.testing.assert_identical(read_with_parser(str(target), registry), native(path))


@pytest.mark.parametrize("fmt", V2_FORMATS)
def test_references_to_several_files(tmp_path: Path, fmt: str) -> None:
    """A dataset combined from several files: each chunk keeps its own url."""
    paths = []
    for number in range(3):
        folder = tmp_path / f"part {number}"
        folder.mkdir()
        path = folder / "part.nc"
        part = sample_dataset().isel(time=slice(2 * number, 2 * number + 2))
        part.to_netcdf(path, encoding={"temperature": {"chunksizes": (1, 5, 3)}})
        paths.append(path)
    registry = registry_for(tmp_path)
    parts = [
        vz.open_virtual_dataset(p, registry=registry, loadable_variables=["time", "lat", "lon"])
        for p in paths
    ]
    combined = xr.concat(
        parts, dim="time", data_vars="minimal", coords="minimal", compat="override"
    )
    refs = write(combined, tmp_path, fmt)
    expected = xr.concat(
        [native(p) for p in paths],
        dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
    )
    xr.testing.assert_identical(read_with_kerchunk(refs), expected)
    if fmt != "dict":
        xr.testing.assert_identical(read_with_parser(refs, registry), expected)


def test_zarr_v2_references_in_fortran_order_and_big_endian(tmp_path: Path) -> None:
    """References to the chunks of a Zarr v2 store, written by hand."""
    store = zarr.storage.LocalStore(tmp_path / "store")
    array = zarr.create_array(
        store,
        shape=(5, 7),
        chunks=(2, 3),
        dtype=">f8",
        order="F",
        fill_value=None,
        zarr_format=2,
        attributes={"_ARRAY_DIMENSIONS": ["y", "x"]},
    )
    array[:] = np.arange(35.0).reshape(5, 7)
    refs: dict[str, Any] = {".zgroup": json.dumps({"zarr_format": 2})}
    for item in sorted((tmp_path / "store").iterdir()):
        if item.name.startswith(".z"):
            refs[f"a/{item.name}"] = item.read_text()
        else:
            refs[f"a/{item.name}"] = [str(item), 0, item.stat().st_size]
    target = hand_written(tmp_path, refs)
    got = read_with_parser(target, registry_for(tmp_path))
    np.testing.assert_array_equal(got["a"].values, np.arange(35.0).reshape(5, 7))
    xr.testing.assert_identical(got, read_with_kerchunk(target))


def test_the_accessor_writes_kerchunk_references(tmp_path: Path) -> None:
    source = tmp_path / "accessor.nc"
    sample_dataset().to_netcdf(source, engine="netcdf4")
    vds = vz.open_virtual_dataset(source, registry=local_registry(source), loadable_variables=[])
    refs = vds.virtualize.to_kerchunk(format="dict")
    assert refs is not None and refs["version"] == 1
    path = tmp_path / "refs.json"
    vds.virtualize.to_kerchunk(path, "json")
    got = xr.open_dataset(str(path), engine="kerchunk").load()
    xr.testing.assert_identical(got, xr.open_dataset(source).load())
