"""inspect_file: what each variable of a file becomes, and why some can't be virtualised.

Files are written at test time (netCDF4 through netCDF4-python, HDF5 through h5py); every
count the report gives is checked against the parser's manifests (``open_virtual_dataset``)
and against h5py's own chunk index.
"""

from __future__ import annotations

import json
import warnings
import zlib
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np
import obstore
import pytest

import virtualize
from virtualize.errors import InvalidFileError, UnauthorizedLocationError
from virtualize.inspection import FileReport, VariableReport, inspect_file
from virtualize.parsers import HDFParser


def registry_for(folder: Path) -> virtualize.ObjectStoreRegistry:
    return virtualize.ObjectStoreRegistry({folder.as_uri() + "/": obstore.store.LocalStore(folder)})


# -- files ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inspection")


@pytest.fixture(scope="module")
def netcdf_file(folder: Path) -> Path:
    path = folder / "forecast.nc"
    rng = np.random.default_rng(0)
    with netCDF4.Dataset(path, "w") as nc:
        nc.title = "inspection test"
        nc.history = "written by the tests"
        nc.createDimension("time", None)
        nc.createDimension("x", 10)
        nc.createDimension("y", 6)
        time = nc.createVariable("time", "f8", ("time",))
        time[:] = np.arange(4)
        temp = nc.createVariable(
            "temp",
            "f4",
            ("time", "x", "y"),
            zlib=True,
            complevel=4,
            shuffle=True,
            chunksizes=(1, 5, 6),
        )
        temp[:] = rng.random((4, 10, 6))
        # float32 factors: decoded by the cf_packing codec
        packed = nc.createVariable("packed32", "i2", ("time", "x"), fill_value=np.int16(-999))
        packed.scale_factor = np.float32(0.01)
        packed.add_offset = np.float32(10.0)
        packed[:] = rng.random((4, 10))
        # float64 factors: kept as attributes, decoded by xarray
        packed64 = nc.createVariable("packed64", "i2", ("time", "x"))
        packed64.scale_factor = 0.5
        packed64.add_offset = 1.0
        packed64[:] = np.arange(40).reshape(4, 10)
        contiguous = nc.createVariable("contig", "i4", ("x", "y"), contiguous=True)
        contiguous[:] = np.arange(60).reshape(10, 6)
        forecast = nc.createGroup("forecast")
        forecast.source = "model"
        forecast.createDimension("step", 3)
        t2m = forecast.createVariable("t2m", "f4", ("step", "x"), zlib=True, chunksizes=(1, 10))
        t2m[:] = np.ones((3, 10))
    return path


def _write_direct(dataset: Any, values: np.ndarray, skip_filters_at: tuple[int, int]) -> None:
    """Write a 2-d gzip dataset chunk by chunk, one chunk stored with deflate skipped."""
    rows, cols = dataset.chunks
    for i in range(0, values.shape[0], rows):
        for j in range(0, values.shape[1], cols):
            block = np.ascontiguousarray(values[i : i + rows, j : j + cols])
            if (i, j) == skip_filters_at:
                dataset.id.write_direct_chunk((i, j), block.tobytes(), filter_mask=1)
            else:
                dataset.id.write_direct_chunk((i, j), zlib.compress(block.tobytes()))


@pytest.fixture(scope="module")
def hdf5_file(folder: Path) -> Path:
    path = folder / "mixed.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("plain", data=np.arange(10.0), chunks=(5,))
        # unwritten chunks: 2 of 5 written
        sparse = f.create_dataset("sparse", shape=(10,), dtype="i4", chunks=(2,), fillvalue=-1)
        sparse[0:2] = 1
        sparse[6:8] = 2
        # held inline: variable-length strings, compact layout, a filter with no decoder
        f.create_dataset(
            "labels", data=np.array(["a", "bb", "ccc"], dtype=object), dtype=h5py.string_dtype()
        )
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_layout(h5py.h5d.COMPACT)
        compact = h5py.h5d.create(
            f.id, b"compact", h5py.h5t.NATIVE_INT32, h5py.h5s.create_simple((5,)), plist
        )
        compact.write(h5py.h5s.ALL, h5py.h5s.ALL, np.arange(5, dtype="i4"))
        small = np.arange(200, dtype="<i4").reshape(10, 20) % 7
        f.create_dataset("small_so", data=small, chunks=(5, 10), scaleoffset=0)
        # partly inline: one chunk of four stored with deflate skipped
        masked = f.create_dataset(
            "masked", shape=(8, 8), dtype="i4", chunks=(4, 4), compression="gzip"
        )
        _write_direct(masked, np.arange(64, dtype="i4").reshape(8, 8), (4, 4))
        # refused: an array member in a compound, an opaque type with a _FillValue, and a
        # scale-offset dataset too large (4.8 MB > 4 MiB) to hold inline
        f.create_dataset("rec", shape=(2,), dtype=np.dtype([("a", "<i4"), ("v", "<f4", (3,))]))
        blob = f.create_dataset("blob", data=np.frombuffer(b"abcdefgh", dtype="V4"))
        blob.attrs["_FillValue"] = np.void(b"zzzz")
        big = (np.arange(1200 * 1000, dtype="<i4") % 100).reshape(1200, 1000)
        f.create_dataset("big_so", data=big, chunks=(100, 1000), scaleoffset=0)
    return path


@pytest.fixture(scope="module")
def netcdf_report(netcdf_file: Path) -> FileReport:
    return inspect_file(str(netcdf_file), registry=registry_for(netcdf_file.parent))


@pytest.fixture(scope="module")
def hdf5_report(hdf5_file: Path) -> FileReport:
    return inspect_file(str(hdf5_file), registry=registry_for(hdf5_file.parent))


def by_path(report: FileReport) -> dict[str, VariableReport]:
    return {v.path: v for v in report.variables}


def virtual_nrefs(path: Path, name: str, group: str | None = None) -> int:
    """References of one variable as open_virtual_dataset holds them."""
    vds = virtualize.open_virtual_dataset(
        str(path), registry=registry_for(path.parent), group=group, loadable_variables=[]
    )
    return int(vds[name].data.manifest.nrefs)


def h5py_chunks(path: Path, name: str) -> int:
    with h5py.File(path) as f:
        return int(f[name].id.get_num_chunks())


# -- netCDF4 ----------------------------------------------------------------------------------


def test_netcdf4_file_level_fields(netcdf_report: FileReport, netcdf_file: Path) -> None:
    report = netcdf_report
    assert report.url == netcdf_file.as_uri()
    assert report.format == "hdf5" and report.parser == "HDFParser"
    assert report.size == netcdf_file.stat().st_size
    assert report.error is None and report.ok
    assert report.attribute_count == 2  # title, history
    assert report.groups == ("forecast",)
    assert [v.path for v in report.variables] == [
        "time",
        "temp",
        "packed32",
        "packed64",
        "contig",
        "forecast/t2m",
    ]
    assert report.nrefs == sum(v.nrefs for v in report.variables) == 1 + 8 + 4 + 4 + 1 + 3
    assert report.manifest_nbytes > 0
    assert report.status_counts()["referenced"] == 6
    assert report.refused == ()


def test_netcdf4_variables(netcdf_report: FileReport) -> None:
    variables = by_path(netcdf_report)
    expected = {
        # path: dims, shape, dtype, chunks, codecs
        "time": (("time",), (4,), "float64", (512,), ()),
        "temp": (("time", "x", "y"), (4, 10, 6), "float32", (1, 5, 6), None),
        "packed32": (("time", "x"), (4, 10), "float32", (1, 10), None),
        "packed64": (("time", "x"), (4, 10), "int16", (1, 10), ()),
        "contig": (("x", "y"), (10, 6), "int32", (10, 6), ()),
        "forecast/t2m": (("step", "x"), (3, 10), "float32", (1, 10), None),
    }
    for path, (dims, shape, dtype, chunks, codecs) in expected.items():
        variable = variables[path]
        assert (variable.dims, variable.shape, variable.dtype, variable.chunks) == (
            dims,
            shape,
            dtype,
            chunks,
        ), path
        if codecs is not None:
            assert variable.codecs == codecs, path
        assert variable.status == "referenced" and variable.referenceable, path
        assert variable.reason is None and variable.note is None, path
        assert variable.ninline == 0 and variable.nmissing == 0, path
        assert variable.referenced_bytes > 0, path
    assert variables["temp"].codecs == ("shuffle", "zlib(level=4)")
    assert [c["name"] for c in variables["temp"].codec_metadata] == [
        "bytes",
        "numcodecs.shuffle",
        "numcodecs.zlib",
    ]
    assert variables["forecast/t2m"].codecs == ("shuffle", "zlib(level=4)")
    (packing,) = variables["packed32"].codecs
    assert packing == (
        "virtualize.cf_packing(int16->float32, scale_factor=0.01, add_offset=10.0, fill=-999)"
    )


def test_netcdf4_reference_counts_match_the_parser_and_h5py(
    netcdf_report: FileReport, netcdf_file: Path
) -> None:
    variables = by_path(netcdf_report)
    for name in ("time", "temp", "packed32", "packed64", "contig"):
        assert variables[name].nrefs == virtual_nrefs(netcdf_file, name), name
    for name in ("time", "temp", "packed32", "packed64"):
        assert variables[name].nrefs == h5py_chunks(netcdf_file, name), name
    assert variables["forecast/t2m"].nrefs == virtual_nrefs(netcdf_file, "t2m", "forecast") == 3
    assert variables["forecast/t2m"].nrefs == h5py_chunks(netcdf_file, "forecast/t2m")
    assert variables["temp"].nrefs == 8 and variables["contig"].nrefs == 1


def test_one_group(netcdf_file: Path) -> None:
    report = inspect_file(netcdf_file, registry=registry_for(netcdf_file.parent), group="forecast")
    assert report.group == "forecast"
    assert [v.path for v in report.variables] == ["forecast/t2m"]
    assert report.attribute_count == 1  # source
    assert report.groups == ()
    assert report.nrefs == 3
    assert "forecast/t2m" in report.to_text()


def test_missing_group_is_a_file_level_error(netcdf_file: Path) -> None:
    report = inspect_file(netcdf_file, registry=registry_for(netcdf_file.parent), group="nope")
    assert report.error is not None and "nope" in report.error
    assert report.error_type == "InvalidFileError"
    assert report.variables == () and not report.ok


# -- HDF5: inline, partly inline, missing and refused ------------------------------------------


def test_hdf5_statuses(hdf5_report: FileReport) -> None:
    statuses = {v.path: v.status for v in hdf5_report.variables}
    assert statuses == {
        "plain": "referenced",
        "sparse": "referenced",
        "labels": "inline",
        "compact": "inline",
        "small_so": "inline",
        "masked": "partly_inline",
        "rec": "refused",
        "blob": "refused",
        "big_so": "refused",
    }
    assert not hdf5_report.ok
    assert {v.path for v in hdf5_report.refused} == {"rec", "blob", "big_so"}
    assert hdf5_report.status_counts() == {
        "referenced": 2,
        "partly_inline": 1,
        "inline": 3,
        "empty": 0,
        "refused": 3,
    }


@pytest.mark.filterwarnings("ignore::virtualize.errors.SkippedVariableWarning")
def test_hdf5_reference_counts(hdf5_report: FileReport, hdf5_file: Path) -> None:
    variables = by_path(hdf5_report)
    counts = {p: (v.nrefs, v.ninline, v.nmissing) for p, v in variables.items() if v.referenceable}
    assert counts == {
        "plain": (2, 0, 0),
        "sparse": (2, 0, 3),
        "labels": (0, 1, 0),
        "compact": (0, 1, 0),
        "small_so": (0, 4, 0),
        "masked": (3, 1, 0),
    }
    assert variables["plain"].nrefs == h5py_chunks(hdf5_file, "plain")
    assert variables["sparse"].nrefs == h5py_chunks(hdf5_file, "sparse")
    assert variables["masked"].nrefs + variables["masked"].ninline == h5py_chunks(
        hdf5_file, "masked"
    )
    # the same numbers as the parser's own manifests
    store = HDFParser(on_unsupported="skip")(str(hdf5_file), registry_for(hdf5_file.parent))
    for path, (nrefs, ninline, _) in counts.items():
        manifest = store.group.arrays[path].manifest
        assert (manifest.nrefs, manifest.ninline) == (nrefs, ninline), path
    assert hdf5_report.nrefs == store.group.nrefs == 2 + 2 + 3
    assert variables["plain"].referenced_bytes == 80


def test_hdf5_inline_variables_are_usable_with_a_note(hdf5_report: FileReport) -> None:
    variables = by_path(hdf5_report)
    for path, words in [
        ("labels", "variable-length"),
        ("compact", "compact layout"),
        ("small_so", "'scaleoffset'"),
        ("masked", "stored differently"),
    ]:
        variable = variables[path]
        assert variable.referenceable and variable.reason is None, path
        assert variable.note is not None and "inline" in variable.note, path
        assert words in variable.note, path
    assert variables["labels"].dtype == "str" and variables["labels"].codecs == ("vlen-utf8",)
    assert variables["sparse"].note is not None
    assert "3 of 5 chunks were never written" in variables["sparse"].note
    assert variables["plain"].note is None


def test_hdf5_refused_variables_say_why(hdf5_report: FileReport) -> None:
    variables = by_path(hdf5_report)
    rec, blob, big = variables["rec"], variables["blob"], variables["big_so"]
    for variable in (rec, blob, big):
        assert not variable.referenceable and variable.status == "refused"
        assert variable.reason is not None and variable.reason.startswith("cannot be referenced")
        assert variable.nrefs == variable.ninline == 0
        assert "file://" not in variable.reason  # the location is stripped: the report has it
    assert rec.reason is not None and "compound" in rec.reason and "array" in rec.reason
    assert blob.reason is not None and "_FillValue" in blob.reason
    assert big.reason is not None
    assert "'scaleoffset' (id 6)" in big.reason and "max_inline_bytes" in big.reason
    # described from h5py, though the parser made no array of them
    assert (rec.shape, rec.dtype, rec.chunks) == ((2,), "{a: int32, v: float32[3]}", None)
    assert (blob.shape, blob.dtype) == ((2,), "V4")
    assert (big.shape, big.dtype, big.chunks) == ((1200, 1000), "int32", (100, 1000))
    assert big.codecs == ("hdf5.scaleoffset",)


def test_an_explicit_hdf_parser_keeps_its_options_and_skips(hdf5_file: Path) -> None:
    parser = HDFParser(max_inline_bytes=10)
    report = inspect_file(hdf5_file, registry=registry_for(hdf5_file.parent), parser=parser)
    assert parser.on_unsupported == "raise"  # the caller's parser is not changed
    variables = by_path(report)
    assert variables["small_so"].status == "refused"
    reason = variables["small_so"].reason
    assert reason is not None and "max_inline_bytes=10" in reason
    assert variables["plain"].status == "referenced"


# -- text and JSON ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["netcdf_report", "hdf5_report"])
def test_to_text_lists_every_variable_with_its_status(
    which: str, request: pytest.FixtureRequest
) -> None:
    report: FileReport = request.getfixturevalue(which)
    text = report.to_text()
    lines = text.splitlines()
    assert lines[0] == f"file        {report.url}"
    header = next(i for i, line in enumerate(lines) if line.startswith("variable "))
    columns = ["variable", "dims", "dtype", "chunks", "codecs", "refs", "status"]
    assert lines[header].split() == columns
    assert set(lines[header + 1]) == {"-", " "}
    rows = lines[header + 2 : header + 2 + len(report.variables)]
    status_column = lines[header].index("status")
    refs_end = status_column - 2
    for variable, row in zip(report.variables, rows, strict=True):
        assert row.split()[0] == variable.path
        assert row[status_column:].startswith(variable.status.replace("_", " "))
        refs = row[:refs_end].split()[-1]
        assert refs == (str(variable.nrefs) if variable.referenceable else "-")
    # every reason and note is printed, numbered from its row
    for variable in report.variables:
        text_of = variable.reason if not variable.referenceable else variable.note
        if text_of:
            assert f"{variable.path}: {text_of}" in text


def test_hdf5_text_rows(hdf5_report: FileReport) -> None:
    text = hdf5_report.to_text()
    assert "variables   9 (2 referenced, 1 partly inline, 3 inline, 3 refused)" in text
    row = next(line for line in text.splitlines() if line.startswith("big_so "))
    assert row.split() == [
        "big_so",
        "(1200,",
        "1000)",
        "int32",
        "100x1000",
        "hdf5.scaleoffset",
        "-",
        "refused",
        row.split()[-1],
    ]
    assert row.split()[-1].startswith("[")
    row = next(line for line in text.splitlines() if line.startswith("masked "))
    assert "partly inline (1 chunk) [" in row


@pytest.mark.parametrize("which", ["netcdf_report", "hdf5_report"])
def test_to_dict_is_json(which: str, request: pytest.FixtureRequest) -> None:
    report: FileReport = request.getfixturevalue(which)
    document = report.to_dict()
    assert json.loads(json.dumps(document)) == document
    assert [v["path"] for v in document["variables"]] == [v.path for v in report.variables]
    assert [v["status"] for v in document["variables"]] == [v.status for v in report.variables]
    assert document["nrefs"] == report.nrefs and document["ok"] == report.ok


def test_rectilinear_chunks_and_unknown_fields_in_text() -> None:
    monthly = VariableReport(
        path="t",
        dims=("time", "x"),
        shape=(151, 10),
        dtype="float32",
        chunks=((31, 28, 31, 30, 31), 10),
        codecs=("zlib(level=1)",),
        nrefs=5,
    )
    short = VariableReport(
        path="u", dims=None, shape=None, dtype=None, chunks=((2, 3), 4), codecs=(), nrefs=0
    )
    report = FileReport(
        url="file:///x.nc", format="hdf5", parser="HDFParser", size=10, variables=(monthly, short)
    )
    text = report.to_text()
    assert "[31,28,31,...](5)x10" in text and "[2,3]x4" in text
    row = next(line for line in text.splitlines() if line.startswith("u "))
    assert row.split() == ["u", "?", "?", "[2,3]x4", "-", "0", "empty"]
    document = report.to_dict()
    assert document["variables"][0]["chunks"] == [[31, 28, 31, 30, 31], 10]
    assert json.loads(json.dumps(document)) == document


# -- errors -----------------------------------------------------------------------------------


def test_missing_file_raises(folder: Path) -> None:
    with pytest.raises(InvalidFileError, match="no such file"):
        inspect_file(folder / "absent.nc", registry=registry_for(folder))


def test_location_outside_the_registry_raises(netcdf_file: Path, tmp_path: Path) -> None:
    with pytest.raises(UnauthorizedLocationError):
        inspect_file(netcdf_file, registry=registry_for(tmp_path))


def test_a_parse_error_is_reported_for_the_file(folder: Path) -> None:
    path = folder / "classic.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as nc:
        nc.createDimension("x", 3)
        nc.createVariable("v", "f4", ("x",))[:] = 1
    report = inspect_file(path, registry=registry_for(folder), parser=HDFParser())
    assert report.format == "netcdf3" and report.parser == "HDFParser"
    assert report.error_type == "InvalidFileError"
    assert report.error is not None and "not a readable HDF5" in report.error
    assert not report.ok and report.variables == ()
    text = report.to_text()
    assert "error   InvalidFileError:" in text and "variable" not in text
    assert json.loads(json.dumps(report.to_dict()))["error_type"] == "InvalidFileError"


def test_kerchunk_parse_error_is_reported(folder: Path) -> None:
    path = folder / "bad.json"
    path.write_text('{"version": 1, "refs": {"v/.zarray": "not json"}}')
    report = inspect_file(path, registry=registry_for(folder))
    assert report.format == "kerchunk" and report.parser == "KerchunkParser"
    assert report.error_type == "InvalidFileError" and not report.ok


def test_registry_none_authorises_the_folder_and_says_so(netcdf_file: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = inspect_file(str(netcdf_file))
    assert any("registry=None" in str(w.message) for w in caught)
    assert len(report.variables) == 6 and report.ok


def test_long_codec_settings_are_shortened() -> None:
    """A JPEG TIFF's tables (base64 in the codec's configuration) show as their length in
    the table; the JSON report keeps the whole configuration."""
    from virtualize.inspection import _codec_label

    document = {"name": "virtualize.tiff_jpeg", "configuration": {"rows": 32, "tables": "A" * 200}}
    assert _codec_label(document, 1) == "virtualize.tiff_jpeg(rows=32, tables=<200 chars>)"
