"""verify_repository on TIFF sources: GeoTIFF stacks ingested along a new time dimension and
COGs with internal masks and overviews, read natively with tifffile."""

from __future__ import annotations

import os
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import tifffile
from oracle import local_registry
from test_tiff_stacks import add_time, geokeys, scene, write_geotiff

import virtualize as vz
from virtualize.verify import NATIVE_READERS, TIFFSource, verify_repository
from virtualize.writers.icechunk import authorize_containers, repository_config

SCENES = 12
#: each scene is 32 x 48 pixels in tiles of 16 x 16
TILES = 2 * 3
CHUNKS = SCENES * TILES


def archive(folder: Path) -> list[Path]:
    """``SCENES`` GeoTIFFs, one a day, in ``folder``."""
    folder.mkdir()
    return [
        write_geotiff(
            folder / f"scene-{day:02d}.tif",
            scene(day),
            origin=(500_000.0, 6_000_000.0),
            resolution=(30.0, 30.0),
            when=datetime(2024, 3, 1 + day),
        )
        for day in range(SCENES)
    ]


def ingest(tmp_path: Path) -> tuple[Path, list[Path]]:
    """The scenes of ``tmp_path/archive`` ingested along time into ``tmp_path/repo``."""
    paths = archive(tmp_path / "archive")
    vz.ingest(
        str(tmp_path / "archive" / "scene-*.tif"),
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=local_registry(paths[0]),
        preprocess=add_time,
        progress=False,
    )
    return tmp_path / "repo", paths


def keep_modification_time(path: Path, write: Any) -> None:
    """Run ``write()`` on ``path`` and give the file its former modification time back, so
    that Icechunk's checksum can't tell: only the values can."""
    stat = path.stat()
    write()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_tiff_sources_have_a_native_reader() -> None:
    assert NATIVE_READERS["tiff"] is TIFFSource


def test_every_chunk_of_a_stack_of_geotiffs_is_checked_and_equal(tmp_path: Path) -> None:
    repo, _ = ingest(tmp_path)
    report = verify_repository(repo, sample=1000, seed=0)
    assert report.ok and report.complete and not report.unchecked
    assert report.virtual_chunks == report.checked == len(report.sampled) == CHUNKS
    assert {c.path for c in report.sampled} == {"data"}
    assert {c.region[0].stop - c.region[0].start for c in report.sampled} == {1}
    assert report.to_text() == f"verified {CHUNKS} chunks of 1 array from {SCENES} files: all equal"
    sample = verify_repository(repo, sample=10, seed=7)
    assert sample.ok and sample.checked == 10 and sample.complete


def tile_range(path: Path, tile: int) -> tuple[int, int]:
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages.first
        return int(page.dataoffsets[tile]), int(page.databytecounts[tile])


def test_a_tile_rewritten_in_place_is_reported(tmp_path: Path) -> None:
    repo, paths = ingest(tmp_path)
    target = paths[5]
    offset, length = tile_range(target, 4)  # row 1, column 1
    other = zlib.compress(np.full((16, 16), 7, dtype="<u2").tobytes())
    assert len(other) < length

    def overwrite() -> None:
        with target.open("r+b") as file:
            file.seek(offset)
            file.write(other.ljust(length, b"\0"))  # decoders stop at the stream's end

    # The same bytes, the same layout and the same modification time: both ways read the
    # file as it is now, so nothing differs (what verify can't see, as documented).
    keep_modification_time(target, overwrite)
    report = verify_repository(repo, sample=1000, seed=0)
    assert report.ok and report.checked == CHUNKS

    # As a file is changed in place: its modification time moves on (to another second,
    # as Icechunk compares whole seconds), so Icechunk refuses the references it recorded.
    later = target.stat().st_mtime + 5
    os.utime(target, (later, later))
    report = verify_repository(repo, sample=1000, seed=0)
    assert report.checked == CHUNKS and not report.ok
    assert {m.url for m in report.mismatches} == {target.as_uri()}
    assert {m.chunk for m in report.mismatches} == {(5, y, x) for y in range(2) for x in range(3)}
    assert {m.kind for m in report.mismatches} == {"error"}
    assert all("checksum" in m.detail for m in report.mismatches)
    assert f"MISMATCH data[5,1,1] {target.as_uri()} bytes {offset}-" in report.to_text()


def test_a_file_regenerated_with_other_values_is_reported(tmp_path: Path) -> None:
    repo, paths = ingest(tmp_path)
    target = paths[3]

    def regenerate() -> None:
        write_geotiff(
            target,
            scene(99) // 50,  # more compressible: other tile sizes
            origin=(500_000.0, 6_000_000.0),
            resolution=(30.0, 30.0),
            when=datetime(2024, 3, 4),
        )

    before = [tile_range(target, tile) for tile in range(TILES)]
    keep_modification_time(target, regenerate)
    assert [tile_range(target, tile) for tile in range(TILES)] != before
    report = verify_repository(repo, sample=1000, seed=0)
    assert not report.ok and report.checked == CHUNKS and report.complete
    assert {m.url for m in report.mismatches} == {target.as_uri()}
    # the first tile still starts where it did and is shorter now: its old byte range holds
    # it whole, and zlib ignores the bytes after its stream, so it reads the same both ways
    assert {m.chunk for m in report.mismatches} == {
        (3, y, x) for y in range(2) for x in range(3)
    } - {(3, 0, 0)}
    lines = report.to_text().splitlines()
    assert all(line.startswith("MISMATCH data[3,") for line in lines[:-1])
    assert lines[-1].endswith(f"from {SCENES} files: {TILES - 1} mismatches")


def test_a_deleted_file_is_reported(tmp_path: Path) -> None:
    repo, paths = ingest(tmp_path)
    paths[8].unlink()
    report = verify_repository(repo, sample=1000, seed=0)
    assert not report.ok and report.checked == CHUNKS
    assert {m.url for m in report.mismatches} == {paths[8].as_uri()}
    assert len(report.mismatches) == TILES
    assert {m.kind for m in report.mismatches} == {"error"}


# -- COGs with masks and overviews ------------------------------------------------------------


def write_cog(
    path: Path, seed: int, when: datetime, *, planar: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """An RGB COG as GDAL writes one: pixel-interleaved (or band-separate), an internal
    1-bit mask, one overview with its mask. Returns the image (band first) and the mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(3, 40, 56), dtype=np.uint8)
    mask = rng.integers(0, 5, size=(40, 56)) != 0
    tags: list[tuple[Any, ...]] = [
        (33550, "d", 3, (10.0, 10.0, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, 300_000.0, 5_000_000.0, 0.0), True),
        (34735, "H", len(geokeys(32633)), geokeys(32633), True),
    ]
    options: dict[str, Any] = {"tile": (16, 16), "compression": "zlib"}
    rgb: dict[str, Any] = {"photometric": "rgb", "planarconfig": "separate" if planar else None}
    stored = image if planar else np.moveaxis(image, 0, -1)
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(stored, extratags=tags, datetime=when, **rgb, **options)
        tiff.write(mask, subfiletype=4, **options)
        overview = stored[:, ::2, ::2] if planar else stored[::2, ::2]
        tiff.write(overview, subfiletype=1, **rgb, **options)
        tiff.write(mask[::2, ::2], subfiletype=5, **options)
    return image, mask


def test_cogs_with_masks_ingested_along_time(tmp_path: Path) -> None:
    folder = tmp_path / "cogs"
    folder.mkdir()
    paths = [folder / f"cog-{day}.tif" for day in range(3)]
    for day, path in enumerate(paths):
        write_cog(path, day, datetime(2024, 6, 1 + day), planar=True)
    vz.ingest(
        str(folder / "cog-*.tif"),
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=local_registry(paths[0]),
        preprocess=add_time,
        progress=False,
    )
    report = verify_repository(tmp_path / "repo", sample=1000, seed=0)
    tiles = 3 * 4  # 40 x 56 pixels in tiles of 16 x 16
    assert report.ok and report.complete
    assert report.checked == report.virtual_chunks == 3 * (3 * tiles + tiles)  # band-separate
    assert {c.path for c in report.sampled} == {"data", "mask"}
    assert {len(c.region) for c in report.sampled if c.path == "data"} == {4}  # time, band, y, x

    write_cog(
        paths[1], 41, datetime(2024, 6, 2), planar=True
    )  # regenerated: sizes and mtime change
    report = verify_repository(tmp_path / "repo", sample=1000, seed=0)
    assert {m.url for m in report.mismatches} == {paths[1].as_uri()}
    assert {m.path for m in report.mismatches} == {"data", "mask"}


def test_a_cog_tree_written_with_to_icechunk(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "cog.tif"
    write_cog(path, 5, datetime(2024, 6, 1))
    registry = local_registry(path)
    tree = vz.open_virtual_datatree(path, registry=registry)
    repository = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(tmp_path / "repo")),
        config=repository_config(registry),
        authorize_virtual_chunk_access=authorize_containers(registry),
    )
    session = repository.writable_session("main")
    tree.virtualize.to_icechunk(session.store)
    session.commit("cog")

    report = verify_repository(tmp_path / "repo", sample=1000, seed=0)
    assert report.ok and report.complete
    assert {c.path for c in report.sampled} == {"0/data", "0/mask", "1/data", "1/mask"}
    assert report.checked == report.virtual_chunks == 12 + 12 + 4 + 4
    level1 = verify_repository(tmp_path / "repo", group="1", sample=1000, seed=0)
    assert level1.ok and level1.checked == 8

    truncated = path.read_bytes()[: path.stat().st_size // 2]
    keep_modification_time(path, lambda: path.write_bytes(truncated))
    report = verify_repository(tmp_path / "repo", sample=1000, seed=0)
    assert not report.ok and {m.url for m in report.mismatches} == {path.as_uri()}


def test_the_native_reader_reads_as_tifffile(tmp_path: Path) -> None:
    path = tmp_path / "cog.tif"
    image, mask = write_cog(path, 3, datetime(2024, 6, 1))
    source = TIFFSource(path.as_uri(), local_registry(path))
    try:
        assert source.shape("data") == (3, 40, 56) and source.shape("mask") == (40, 56)
        assert source.shape("1/data") == (3, 20, 28) and source.shape("2/data") is None
        assert source.shape("ifd_1/data") == (40, 56) and source.shape("other") is None
        window = (slice(1, 3), slice(5, 37), slice(0, 20))
        np.testing.assert_array_equal(
            source.read("data", window, decode=False), image[window], strict=True
        )
        np.testing.assert_array_equal(
            source.read("1/mask", window[1:], decode=True), mask[::2, ::2][window[1:]], strict=True
        )
        np.testing.assert_array_equal(source.coordinate("x"), 300_005.0 + 10.0 * np.arange(56))
        np.testing.assert_array_equal(source.coordinate("1/y"), 4_999_990.0 - 20.0 * np.arange(20))
        np.testing.assert_array_equal(source.coordinate("band"), [1, 2, 3])
        assert source.coordinate("time") is None
    finally:
        source.close()
