"""Inputs that are not a readable file of a known format get a typed error naming them."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from obstore.store import LocalStore

import virtualize as vz
from virtualize.errors import FormatDetectionError, InvalidFileError


def open_path(path: Path) -> None:
    registry = vz.ObjectStoreRegistry.for_urls([path.parent.as_uri() + "/"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vz.open_virtual_dataset(str(path), registry=registry)


def test_an_empty_file_is_named_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.nc"
    path.write_bytes(b"")
    with pytest.raises(InvalidFileError, match=r"empty\.nc: the file is empty \(0 bytes\)"):
        open_path(path)


def test_a_file_of_no_known_format_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.nc"
    path.write_text("these are notes, not data\n")
    with pytest.raises(FormatDetectionError, match=r"notes\.nc: unrecognised file format"):
        open_path(path)


def test_a_folder_of_files_is_named_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / "a.nc").write_bytes(b"CDF\x01")
    with pytest.raises(InvalidFileError, match=r"archive: this is a folder, not a file") as info:
        open_path(folder)
    assert "open_virtual_mfdataset" in str(info.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidFileError, match=r"missing\.nc: no such file"):
        open_path(tmp_path / "missing.nc")


def test_a_path_through_a_file_is_named(tmp_path: Path) -> None:
    """Running as root, permissions can't make a file unreadable here; a path whose folder
    is a file can't be read by anyone."""
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    registry = vz.ObjectStoreRegistry({tmp_path.as_uri() + "/": LocalStore(tmp_path)})
    with pytest.raises(
        InvalidFileError, match=r"notes\.txt/data\.nc: cannot read the file"
    ) as info:
        vz.open_virtual_dataset(str(tmp_path / "notes.txt" / "data.nc"), registry=registry)
    assert "Not a directory" in str(info.value) and "Debug source" not in str(info.value)


def test_a_dangling_link_is_named(tmp_path: Path) -> None:
    (tmp_path / "data.nc").symlink_to(tmp_path / "gone.nc")
    with pytest.raises(InvalidFileError, match=r"data\.nc: no such file"):
        open_path(tmp_path / "data.nc")


def test_a_tiff_without_an_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "noimage.tif"
    path.write_bytes(b"II*\x00" + (0).to_bytes(4, "little"))  # the first IFD offset is 0
    with pytest.raises(InvalidFileError, match=r"noimage\.tif"):
        open_path(path)


def test_chunks_past_the_end_of_the_file_are_a_read_error(tmp_path: Path) -> None:
    """A damaged offset puts a chunk after the file's end; obstore panics on such a local
    range, and the panic (a BaseException) must become a typed error."""
    import numpy as np
    import xarray as xr

    path = tmp_path / "short.nc"
    xr.Dataset({"t": ("x", np.arange(4.0))}, coords={"x": np.arange(4.0)}).to_netcdf(
        path, engine="h5netcdf"
    )
    size = path.stat().st_size
    vds = vz.open_virtual_dataset(
        str(path),
        registry=vz.ObjectStoreRegistry.for_urls([tmp_path.as_uri() + "/"]),
        loadable_variables=[],
    )
    manifest = vds["x"].data.manifest
    manifest.offsets[...] = size + (1 << 20)
    store = vz.ManifestStore(
        vz.ManifestGroup({"x": vds["x"].data}, {}, {}),
        registry=vz.ObjectStoreRegistry.for_urls([tmp_path.as_uri() + "/"]),
    )
    with pytest.raises(vz.errors.ChunkReadError, match=r"short\.nc"):
        xr.open_zarr(store, consolidated=False, zarr_format=3).load()


CORPUS_GRIB = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "grib"


@pytest.mark.skipif(not CORPUS_GRIB.is_dir(), reason="no GRIB corpus")
def test_a_grib_grid_without_points_is_refused(tmp_path: Path) -> None:
    """Found by the fuzzer: four bytes of a GRIB 1 grid section zeroed (the case as it was
    made) gave the grid 0 points, and zarr refused the chunk shape with a ValueError."""
    pytest.importorskip("cfgrib")
    data = bytearray((CORPUS_GRIB / "pygrib" / "spherical_pressure_level.grib1").read_bytes())
    for offset in (62, 64, 65, 67):
        data[offset] = 0
    path = tmp_path / "nogrid.grib1"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidFileError, match=r"nogrid\.grib1: variable '.*': .*no points"):
        open_path(path)


def test_a_chunk_that_does_not_decompress_is_an_invalid_file(tmp_path: Path) -> None:
    """Loading a variable whose gzip chunk is damaged names the file and the variable, not
    zlib's error alone."""
    import h5py
    import numpy as np

    path = tmp_path / "damaged.h5"
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset("x", data=np.arange(1000.0), chunks=(1000,), compression="gzip")
        offset = dataset.id.get_chunk_info(0).byte_offset
    with path.open("r+b") as file:  # the stream's header: zlib's check fails on it
        file.seek(offset)
        file.write(b"\x00\x00")
    registry = vz.ObjectStoreRegistry({tmp_path.as_uri() + "/": LocalStore(tmp_path)})
    assert vz.open_virtual_dataset(str(path), registry=registry).sizes  # virtually, it opens
    with pytest.raises(InvalidFileError, match=r"damaged\.h5: variable 'x': a chunk can't be"):
        vz.open_virtual_dataset(str(path), registry=registry, loadable_variables=["x"])
