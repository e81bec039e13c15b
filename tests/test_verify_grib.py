"""verify_repository on GRIB sources: forecast runs ingested along a new time dimension,
read natively with cfgrib."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cfgrib")
pytest.importorskip("icechunk")

from grib_support import Field, smooth_field, write_grib
from oracle import local_registry

import virtualize as vz
from virtualize.verify import NATIVE_READERS, GRIBSource, verify_repository

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

RUNS = 4
STEPS = (0, 6, 12)
LEVELS = (500, 850)
#: one chunk per message: two variables at each step and level of each run
MESSAGES = 2 * len(STEPS) * len(LEVELS)
CHUNKS = RUNS * MESSAGES


def run_fields(day: int, seed: int | None = None) -> list[Field]:
    """The messages of the forecast run of 2024-01-``day``; ``seed`` gives other values."""
    return [
        Field(
            name,
            level=level,
            step=step,
            date=20240100 + day,
            values=None if seed is None else smooth_field((7, 11), seed=seed + i, offset=600.0),
        )
        for i, (name, step, level) in enumerate(
            (name, step, level) for name in ("t", "u") for step in STEPS for level in LEVELS
        )
    ]


def ingest(tmp_path: Path) -> tuple[Path, list[Path]]:
    """``RUNS`` forecast runs in ``tmp_path/runs``, ingested along time into ``tmp_path/repo``
    as the GRIB tests do (the scalar reference ``time`` made a dimension)."""
    folder = tmp_path / "runs"
    folder.mkdir()
    paths = [
        write_grib(folder / f"run-{day:02d}.grib2", run_fields(day), packing="grid_ccsds")
        for day in range(1, RUNS + 1)
    ]
    vz.ingest(
        str(folder / "run-*.grib2"),
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=local_registry(paths[0]),
        preprocess=lambda dataset: dataset.expand_dims("time"),
        progress=False,
    )
    return tmp_path / "repo", paths


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    return ingest(tmp_path_factory.mktemp("grib"))


def test_grib_sources_have_a_native_reader() -> None:
    assert NATIVE_READERS["grib"] is GRIBSource


def test_every_chunk_of_forecast_runs_is_checked_and_equal(
    runs: tuple[Path, list[Path]],
) -> None:
    repo, paths = runs
    report = verify_repository(repo, sample=1000, seed=0)
    assert report.ok and report.complete and not report.unchecked, report.to_text()
    assert report.virtual_chunks == report.checked == len(report.sampled) == CHUNKS
    assert {c.path for c in report.sampled} == {"t", "u"}
    # (time, step, isobaricInhPa, latitude, longitude): one message per chunk
    assert {tuple(r.stop - r.start for r in c.region) for c in report.sampled} == {(1, 1, 1, 7, 11)}
    assert {c.url for c in report.sampled} == {p.as_uri() for p in paths}
    assert report.to_text() == f"verified {CHUNKS} chunks of 2 arrays from {RUNS} files: all equal"
    sample = verify_repository(repo, sample=5, seed=3)
    assert sample.ok and sample.checked == 5 and sample.complete


def keep_modification_time(path: Path, values_seed: int, day: int) -> None:
    """Rewrite the run in ``path`` with other values, its modification time kept, so that
    Icechunk's checksum can't tell: only the values (and where messages now lie) can."""
    stat = path.stat()
    write_grib(path, run_fields(day, seed=values_seed), packing="grid_ccsds")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_run_rewritten_with_other_values_is_reported(tmp_path: Path) -> None:
    repo, paths = ingest(tmp_path)
    target = paths[2]
    before = target.read_bytes()
    keep_modification_time(target, values_seed=40, day=3)
    assert target.read_bytes() != before
    report = verify_repository(repo, sample=1000, seed=0)
    assert not report.ok and report.checked == CHUNKS and report.complete
    assert {m.url for m in report.mismatches} == {target.as_uri()}
    assert {m.chunk[0] for m in report.mismatches} == {2}
    assert all(line.startswith("MISMATCH ") for line in report.to_text().splitlines()[:-1])

    # changed as files are: a later modification time makes Icechunk refuse every reference
    later = target.stat().st_mtime + 5
    os.utime(target, (later, later))
    report = verify_repository(repo, sample=1000, seed=0)
    assert report.checked == CHUNKS and len(report.mismatches) == MESSAGES
    assert {m.url for m in report.mismatches} == {target.as_uri()}
    assert {m.kind for m in report.mismatches} == {"error"}


def test_a_deleted_run_is_reported(tmp_path: Path) -> None:
    repo, paths = ingest(tmp_path)
    paths[1].unlink()
    report = verify_repository(repo, sample=1000, seed=0)
    assert not report.ok and report.checked == CHUNKS
    assert {m.url for m in report.mismatches} == {paths[1].as_uri()}
    assert len(report.mismatches) == MESSAGES
    assert {m.kind for m in report.mismatches} == {"error"}


def test_a_run_with_its_messages_reordered_is_reported_by_value(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    # simple packing: every message has the same length, so a reordered file has the same
    # layout and only cfgrib, reading each field where it now is, can tell
    paths = [
        write_grib(folder / f"run-{day}.grib2", run_fields(day, seed=day), packing="grid_simple")
        for day in (1, 2)
    ]
    vz.ingest(
        str(folder / "run-*.grib2"),
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=local_registry(paths[0]),
        preprocess=lambda dataset: dataset.expand_dims("time"),
        progress=False,
    )
    assert verify_repository(tmp_path / "repo", sample=1000, seed=0).ok
    stat = paths[1].stat()
    write_grib(paths[1], run_fields(2, seed=2)[::-1], packing="grid_simple")
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    report = verify_repository(tmp_path / "repo", sample=1000, seed=0)
    assert report.checked == 2 * MESSAGES and len(report.mismatches) == MESSAGES
    assert {m.url for m in report.mismatches} == {paths[1].as_uri()}
    assert {m.kind for m in report.mismatches} == {"values"}
    assert all(m.max_abs_difference for m in report.mismatches)


def mixed_file(path: Path) -> Path:
    """Temperature on two pressure levels and 2 m temperature: two of cfgrib's datasets."""
    fields = [Field("t", level=level) for level in LEVELS]
    fields.append(Field("2t", level_type="heightAboveGround", level=2))
    return write_grib(path, fields)


def test_a_file_of_several_datasets_is_verified_by_group(tmp_path: Path) -> None:
    import icechunk

    from virtualize.writers.icechunk import authorize_containers, repository_config

    folder = tmp_path / "data"
    folder.mkdir()
    path = mixed_file(folder / "mixed.grib2")
    registry = local_registry(path)
    tree = vz.open_virtual_datatree(path, registry=registry)
    repository = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(tmp_path / "repo")),
        config=repository_config(registry),
        authorize_virtual_chunk_access=authorize_containers(registry),
    )
    session = repository.writable_session("main")
    tree.virtualize.to_icechunk(session.store)
    session.commit("mixed")
    report = verify_repository(tmp_path / "repo", sample=1000, seed=0)
    assert report.ok and report.complete, report.to_text()
    assert {c.path for c in report.sampled} == {"isobaricInhPa/t", "heightAboveGround/t2m"}
    assert report.checked == report.virtual_chunks == 3
    level = verify_repository(tmp_path / "repo", group="isobaricInhPa", sample=1000, seed=0)
    assert level.ok and level.checked == 2 and level.complete


def test_the_native_reader_reads_as_cfgrib(tmp_path: Path) -> None:
    path = mixed_file(tmp_path / "mixed.grib2")
    source = GRIBSource(path.as_uri(), local_registry(path))
    folder = Path(source._folder)
    try:
        assert source.shape("isobaricInhPa/t") == (2, 7, 11)
        assert source.shape("t") is None and source.shape("surface/t") is None
        np.testing.assert_array_equal(source.coordinate("isobaricInhPa/isobaricInhPa"), [850, 500])
        assert source.coordinate("isobaricInhPa/time") is None  # a scalar coordinate
        assert source.coordinate("isobaricInhPa/latitude").shape == (7,)
        values = source.read(
            "isobaricInhPa/t", (slice(1, 2), slice(0, 7), slice(2, 5)), decode=True
        )
        assert values.dtype == np.float32 and values.shape == (1, 7, 3)
        attributes = {"GRIB_typeOfLevel": "heightAboveGround", "GRIB_shortName": "2t"}
        assert source.variable("t2m", attributes) == "heightAboveGround/t2m"
        assert source.variable("t", {"GRIB_typeOfLevel": "surface"}) is None
        assert source.variable("isobaricInhPa/t", {}) is None  # the name says already
        assert folder.is_dir() and not list(path.parent.glob("*.idx"))
    finally:
        source.close()
    assert not folder.exists()


def test_a_run_replaced_by_another_run_of_the_same_layout_is_reported(tmp_path: Path) -> None:
    repo, paths = ingest(tmp_path)
    target = paths[0]
    stat = target.stat()
    # the same values and layout, another reference time: both reads agree, the time doesn't
    write_grib(target, run_fields(9), packing="grid_ccsds")
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert target.stat().st_size == paths[1].stat().st_size
    report = verify_repository(repo, sample=1000, seed=0)
    assert report.checked == CHUNKS and len(report.mismatches) == MESSAGES
    assert {m.url for m in report.mismatches} == {target.as_uri()}
    assert {m.kind for m in report.mismatches} == {"error"}
    assert all(
        "time (2024-01-01T00:00:00" in m.detail and "source's time (2024-01-09" in m.detail
        for m in report.mismatches
    ), report.to_text()
