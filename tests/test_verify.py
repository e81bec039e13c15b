"""verify_repository: sampled virtual chunks read the same through the repository and natively."""

from __future__ import annotations

import os
import re
from pathlib import Path

import icechunk
import numpy as np
import obstore
import pandas as pd
import pytest
import xarray as xr
from obstore.store import LocalStore
from oracle import moto_bucket_store

import virtualize as vz
from virtualize.errors import UnauthorizedLocationError
from virtualize.parsers import ZarrParser
from virtualize.verify import VerifyReport, verify_repository
from virtualize.writers.icechunk import authorize_containers, repository_config

DAYS = 6
#: virtual chunks of the archive below: temp 12 x 1 x 2, packed 12 x 1 x 1, packed32 24 x 1 x 1
CHUNKS = 24 + 12 + 24


def day_dataset(day: int, seed: int) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    temp = rng.normal(280.0, 5.0, (4, 5, 6)).astype("f4")
    temp[0, 0, 0] = np.nan  # written as _FillValue
    return xr.Dataset(
        {
            "temp": (("time", "lat", "lon"), temp, {"units": "K"}),
            "packed": (("time", "lat", "lon"), rng.normal(280.0, 5.0, (4, 5, 6)), {"units": "K"}),
            "packed32": (("time", "lat", "lon"), rng.normal(280.0, 5.0, (4, 5, 6))),
        },
        coords={
            "time": pd.date_range("2024-01-01", periods=4, freq="6h") + pd.Timedelta(days=day),
            "lat": np.linspace(-10.0, 10.0, 5),
            "lon": np.linspace(0.0, 50.0, 6),
        },
    )


def write_day(
    path: Path, day: int, seed: int, *, reverse: bool = False, contiguous: bool = False
) -> None:
    """One daily file; each file's times have their own units, so only decoded times match.

    ``reverse`` writes the records in reverse time order; ``contiguous`` stores ``temp``
    unchunked (the same values at other byte ranges).
    """
    dataset = day_dataset(day, seed)
    if reverse:
        dataset = dataset.isel(time=slice(None, None, -1))
    layout = {"contiguous": True} if contiguous else {"chunksizes": (2, 5, 3)}
    dataset.to_netcdf(
        path,
        engine="netcdf4",
        encoding={
            "temp": {**layout, "_FillValue": np.float32(-999.0)},  # uncompressed
            # float64 factors: packing stays in the attributes, values compare as int16
            "packed": {
                "zlib": True,
                "dtype": "i2",
                "scale_factor": 0.01,
                "add_offset": 280.0,
                "_FillValue": np.int16(-32767),
                "chunksizes": (2, 5, 6),
            },
            # float32 factors: the virtualize.cf_packing codec decodes inside zarr
            "packed32": {
                "zlib": True,
                "dtype": "i2",
                "scale_factor": np.float32(0.01),
                "add_offset": np.float32(280.0),
                "_FillValue": np.int16(-32767),
                "chunksizes": (1, 5, 6),
            },
            "time": {"units": f"hours since 2024-01-{day + 1:02d}", "dtype": "i8"},
        },
    )


def registry_for(folder: Path) -> vz.ObjectStoreRegistry:
    return vz.ObjectStoreRegistry({folder.resolve().as_uri() + "/": LocalStore(folder)})


def commit(
    vds: xr.Dataset, repo_path: Path, registry: vz.ObjectStoreRegistry, group: str | None = None
) -> icechunk.Repository:
    repository = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(repo_path)),
        config=repository_config(registry),
        authorize_virtual_chunk_access=authorize_containers(registry),
    )
    session = repository.writable_session("main")
    vds.virtualize.to_icechunk(session.store, group=group)
    session.commit("archive")
    return repository


def build(tmp_path: Path, group: str | None = None) -> tuple[Path, list[Path]]:
    """Daily files in ``tmp_path/data`` committed to the repository ``tmp_path/repo``."""
    data = tmp_path / "data"
    data.mkdir()
    paths = []
    for day in range(DAYS):
        path = data / f"day{day}.nc"
        write_day(path, day, seed=day)
        paths.append(path)
    registry = registry_for(data)
    vds = vz.open_virtual_mfdataset(sorted(paths), registry=registry)
    commit(vds, tmp_path / "repo", registry, group)
    return tmp_path / "repo", paths


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An intact archive, shared by the tests that only read it."""
    repo, _ = build(tmp_path_factory.mktemp("archive"))
    return repo


def test_every_chunk_is_checked_once_and_equal(archive: Path) -> None:
    report = verify_repository(archive, sample=1000, seed=0)
    assert report.ok and report.complete
    assert report.virtual_chunks == report.checked == len(report.sampled) == CHUNKS
    assert len({(c.path, c.chunk) for c in report.sampled}) == CHUNKS
    assert {c.path for c in report.sampled} == {"temp", "packed", "packed32"}
    assert report.to_text() == f"verified {CHUNKS} chunks of 3 arrays from {DAYS} files: all equal"


def test_a_sample_checks_that_many_chunks(archive: Path) -> None:
    report = verify_repository(str(archive), sample=5, seed=3)
    assert report.checked == 5 and report.ok
    assert re.fullmatch(
        r"verified 5 chunks of \d arrays? from \d files?: all equal", report.summary()
    )


def test_sample_zero_checks_nothing(archive: Path) -> None:
    report = verify_repository(archive, sample=0)
    assert report.checked == 0 and report.sampled == [] and report.ok
    assert report.virtual_chunks == CHUNKS
    with pytest.raises(ValueError, match="negative"):
        verify_repository(archive, sample=-1)


def test_a_seed_makes_the_sample_reproducible(archive: Path) -> None:
    def chunks(report: VerifyReport) -> list[tuple[str, tuple[int, ...]]]:
        return [(c.path, c.chunk) for c in report.sampled]

    first = verify_repository(archive, sample=10, seed=42)
    assert chunks(verify_repository(archive, sample=10, seed=42)) == chunks(first)
    assert chunks(verify_repository(archive, sample=10, seed=43)) != chunks(first)
    unseeded = verify_repository(archive, sample=10)
    again = verify_repository(archive, sample=10, seed=unseeded.seed)
    assert chunks(again) == chunks(unseeded)


def test_repository_object_group_and_explicit_registry(tmp_path: Path) -> None:
    repo, paths = build(tmp_path, group="archive/daily")
    registry = registry_for(paths[0].parent)
    repository = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    report = verify_repository(repository, group="archive/daily", sample=100, registry=registry)
    assert report.ok and report.checked == CHUNKS
    assert {c.path for c in report.sampled} == {
        f"archive/daily/{n}" for n in ("temp", "packed")
    } | {"archive/daily/packed32"}
    elsewhere = vz.ObjectStoreRegistry({tmp_path.as_uri() + "/other/": LocalStore(tmp_path)})
    with pytest.raises(UnauthorizedLocationError):
        verify_repository(repo, group="archive/daily", registry=elsewhere)
    with pytest.raises(UnauthorizedLocationError):  # an empty registry allows nothing
        verify_repository(repo, group="archive/daily", registry=vz.ObjectStoreRegistry())


def rewrite(target: Path, **layout: bool) -> None:
    """Rewrite day 2 in place with another layout, keeping its modification time (so that
    Icechunk's checksum can't tell; only the values can)."""
    stat = target.stat()
    replacement = target.with_suffix(".new")
    write_day(replacement, 2, seed=2, **layout)
    target.write_bytes(replacement.read_bytes())
    replacement.unlink()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_file_rewritten_with_another_layout_is_reported(tmp_path: Path) -> None:
    repo, paths = build(tmp_path)
    target = paths[2]
    rewrite(target, contiguous=True)
    report = verify_repository(repo, sample=1000, seed=0)
    assert not report.ok and report.checked == CHUNKS
    assert report.mismatches and {m.url for m in report.mismatches} == {target.as_uri()}
    # temp is uncompressed: its old byte ranges still decode, to other bytes of the file
    temp = [m for m in report.mismatches if m.path == "temp"]
    assert {m.chunk for m in temp} == {(t, 0, x) for t in (4, 5) for x in (0, 1)}
    assert {m.kind for m in temp} == {"values"}
    text = report.to_text()
    assert f"MISMATCH temp[4,0,0] {target.as_uri()} bytes " in text
    assert re.search(r"temp\[4,0,0\] .*: \d+ of 30 values differ", text)
    assert text.splitlines()[-1] == (
        f"verified {CHUNKS} chunks of 3 arrays from {DAYS} files: "
        f"{len(report.mismatches)} mismatches"
    )


def test_a_file_rewritten_in_another_order_is_reported(tmp_path: Path) -> None:
    repo, paths = build(tmp_path)
    target = paths[2]
    rewrite(target, reverse=True)
    report = verify_repository(repo, sample=1000, seed=0)
    assert {m.url for m in report.mismatches} == {target.as_uri()}
    temp = [m for m in report.mismatches if m.path == "temp"]
    assert len(temp) == 4
    assert all("time values" in m.detail and "are not in the source" in m.detail for m in temp)

    # A later modification time (in another second: Icechunk compares whole seconds):
    # Icechunk refuses the chunks, reported as errors.
    later = target.stat().st_mtime + 5
    os.utime(target, (later, later))
    report = verify_repository(repo, sample=1000, seed=0)
    assert {m.url for m in report.mismatches} == {target.as_uri()}
    assert {m.kind for m in report.mismatches} == {"error"}
    assert all("checksum" in m.detail for m in report.mismatches)


def test_a_deleted_file_is_a_mismatch_not_a_crash(tmp_path: Path) -> None:
    repo, paths = build(tmp_path)
    paths[3].unlink()
    report = verify_repository(repo, sample=1000, seed=0)
    assert not report.ok and report.checked == CHUNKS
    assert {m.url for m in report.mismatches} == {paths[3].as_uri()}
    assert {m.kind for m in report.mismatches} == {"error"}
    assert all("no such file" in m.detail for m in report.mismatches)
    assert "error: the source can't be read" in report.to_text()


def test_files_without_a_coordinate_are_located_by_their_run_of_chunks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    paths = []
    for day, steps in enumerate((4, 6, 7)):  # only the last file may end in a partial chunk
        path = data / f"day{day}.nc"
        values = np.random.default_rng(day).normal(size=(steps, 4))
        xr.Dataset({"v": (("step", "x"), values)}).to_netcdf(
            path, encoding={"v": {"zlib": True, "chunksizes": (2, 4)}}
        )
        paths.append(path)
    registry = registry_for(data)
    vds = vz.open_virtual_mfdataset(paths, registry=registry, combine="nested", concat_dim="step")
    commit(vds, tmp_path / "repo", registry)
    report = verify_repository(tmp_path / "repo", sample=100)
    assert report.ok and report.checked == 2 + 3 + 4


def test_a_source_format_without_a_native_reader_is_not_checked(tmp_path: Path) -> None:
    source = tmp_path / "data" / "source.zarr"
    xr.Dataset({"v": (("y", "x"), np.arange(24.0).reshape(4, 6))}).to_zarr(
        source, zarr_format=3, consolidated=False, encoding={"v": {"chunks": (2, 3)}}
    )
    registry = registry_for(tmp_path / "data")
    vds = vz.open_virtual_dataset(source, parser=ZarrParser(), registry=registry)
    commit(vds, tmp_path / "repo", registry)
    report = verify_repository(tmp_path / "repo", sample=100)
    assert report.ok and not report.complete
    assert report.checked == 0 and len(report.unchecked) == report.virtual_chunks == 4
    assert all("no native reader" in u.reason for u in report.unchecked)
    lines = report.to_text().splitlines()
    assert lines[0].startswith("NOT CHECKED v[")
    assert (
        lines[-1] == "verified 0 chunks of 0 arrays from 0 files: all equal (4 chunks not checked)"
    )


# -- S3 ---------------------------------------------------------------------------------------

BUCKET = "verify-archive"


def test_a_repository_on_s3_with_the_registry_from_its_containers(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = moto_bucket_store(BUCKET, s3_endpoint)
    urls = []
    for day in range(3):
        path = tmp_path / f"day{day}.nc"
        write_day(path, day, seed=day)
        obstore.put(bucket, f"data/day{day}.nc", path.read_bytes())
        urls.append(f"s3://{BUCKET}/data/day{day}.nc")
    registry = vz.ObjectStoreRegistry({f"s3://{BUCKET}/": bucket})
    vds = vz.open_virtual_mfdataset(urls, registry=registry)
    config = icechunk.RepositoryConfig.default()
    container = f"s3://{BUCKET}/data/"
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(
            container,
            icechunk.s3_store(
                region="us-east-1",
                endpoint_url=s3_endpoint,
                allow_http=True,
                s3_compatible=True,
                force_path_style=True,
            ),
        )
    )
    storage = icechunk.s3_storage(
        bucket=BUCKET,
        prefix="repos/daily",
        region="us-east-1",
        endpoint_url=s3_endpoint,
        allow_http=True,
        force_path_style=True,
        access_key_id="testing",
        secret_access_key="testing",
    )
    repository = icechunk.Repository.create(
        storage,
        config=config,
        authorize_virtual_chunk_access=icechunk.containers_credentials(
            {
                container: icechunk.s3_static_credentials(
                    access_key_id="testing", secret_access_key="testing"
                )
            }
        ),
    )
    session = repository.writable_session("main")
    vds.virtualize.to_icechunk(session.store)
    session.commit("on s3")

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    report = verify_repository(f"s3://{BUCKET}/repos/daily", sample=1000, seed=0)
    assert report.ok and report.checked == report.virtual_chunks == CHUNKS // 2
    assert report.to_text() == "verified 30 chunks of 3 arrays from 3 files: all equal"

    obstore.delete(bucket, "data/day1.nc")
    report = verify_repository(f"s3://{BUCKET}/repos/daily", sample=1000, seed=0)
    assert {m.url for m in report.mismatches} == {urls[1]}
    assert {m.kind for m in report.mismatches} == {"error"}
