"""GRIBParser: virtual datasets equal cfgrib's, on the corpus and on files written here."""

from __future__ import annotations

import collections
import os
import pickle
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

cfgrib = pytest.importorskip("cfgrib")
eccodes = pytest.importorskip("eccodes")

from grib_support import Field, grib_messages, smooth_field, write_grib  # noqa: E402

import virtualize as vz  # noqa: E402
from virtualize.errors import InvalidFileError, UnsupportedFeatureError  # noqa: E402
from virtualize.parsers.grib import GRIBParser, group_names  # noqa: E402
from virtualize.parsers.grib_scan import scan  # noqa: E402

CORPUS = Path(os.environ.get("VIRTUALIZE_CORPUS", "/work/shared/corpus")) / "grib"
CORPUS_FILES = (
    sorted(p for p in CORPUS.glob("*/*") if p.is_file() and p.suffix != ".idx")
    if CORPUS.is_dir()
    else []
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def registry_for(path: Path) -> vz.ObjectStoreRegistry:
    return vz.ObjectStoreRegistry.for_urls([str(path)])


def reference(path: Path, tmp_path: Path, **backend_kwargs: Any) -> list[xr.Dataset]:
    """cfgrib.open_datasets, with its index in tmp (without one it rescans per variable)."""
    index = tmp_path / f"{path.name}.{{short_hash}}.idx"
    kwargs = {"indexpath": str(index), **backend_kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [ds.load() for ds in cfgrib.open_datasets(str(path), backend_kwargs=kwargs)]


def ours(store: Any, group: str | None) -> xr.Dataset:
    return xr.open_zarr(store, group=group, consolidated=False, zarr_format=3).load()


def compare(
    path: Path, tmp_path: Path, parser: GRIBParser | None = None, counts: list[int] | None = None
) -> list[str]:
    """Compare every dataset; return the names of those that differ."""
    parser = parser or GRIBParser()
    store = parser(str(path), registry_for(path))
    expected = reference(path, tmp_path, filter_by_keys=parser.filter_by_keys)
    root = store.group
    names: list[str | None] = list(root.groups) if root.groups else [None]
    assert len(names) == len(expected), (path, names)
    if counts is not None:
        counts.append(len(expected))
    wrong = []
    for name, ref in zip(names, expected, strict=True):
        ref = ref.copy()
        ref.attrs.pop("history", None)
        try:
            xr.testing.assert_identical(ours(store, name), ref)
        except AssertionError as error:
            wrong.append(f"{path.name}:{name}: {str(error)[:500]}")
    return wrong


# -- corpus -------------------------------------------------------------------------------------


@pytest.mark.skipif(not CORPUS_FILES, reason="no GRIB corpus")
def test_corpus_equals_cfgrib(tmp_path: Path) -> None:
    tally: collections.Counter[str] = collections.Counter()
    wrong: list[str] = []
    start = time.perf_counter()
    for path in CORPUS_FILES:
        counts: list[int] = []
        try:
            bad = compare(path, tmp_path, counts=counts)
        except (UnsupportedFeatureError, InvalidFileError) as error:
            tally[f"refused: {type(error).__name__}"] += 1
            print(f"refused {path.name}: {error}")
            continue
        tally["wrong"] += len(bad)
        tally["exact"] += counts[0] - len(bad)
        wrong.extend(bad)
    total = sum(tally.values())
    print(f"GRIB corpus: {dict(tally)} of {total} datasets in {time.perf_counter() - start:.1f}s")
    assert not wrong, wrong
    assert tally["exact"] >= 0.9 * total


@pytest.mark.skipif(not CORPUS_FILES, reason="no GRIB corpus")
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_scan_matches_eccodes_offsets(path: Path) -> None:
    data = path.read_bytes()
    found = [(m.offset, m.length) for m in scan(lambda o, n: data[o : o + n], len(data), "x")]
    assert found == sorted(set(grib_messages(path)))


@pytest.mark.skipif(not CORPUS_FILES, reason="no GRIB corpus")
def test_multi_field_messages_reference_the_message() -> None:
    path = CORPUS / "pygrib" / "gfs.grb"
    if not path.exists():
        pytest.skip("gfs.grb not in the corpus")
    store = GRIBParser(group="isobaricInhPa_26levels")(str(path), registry_for(path))
    v = store.group.arrays["v"]
    assert v.metadata.codecs[0].to_dict()["configuration"] == {"field": 1}
    assert not v.manifest._inline  # every chunk references its message


@pytest.mark.skipif(not CORPUS_FILES, reason="no GRIB corpus")
def test_gfs_group_names() -> None:
    path = CORPUS / "pygrib" / "gfs.grb"
    if not path.exists():
        pytest.skip("gfs.grb not in the corpus")
    store = GRIBParser()(str(path), registry_for(path))
    names = list(store.group.groups)
    assert len(names) == len(set(names)) == 38
    assert {"surface", "heightAboveGround_2", "heightAboveGround_10", "isobaricInhPa_26levels"}
    assert set(names) >= {"surface", "heightAboveGround_2", "heightAboveGround_10"}
    only = GRIBParser(group="heightAboveGround_2")(str(path), registry_for(path))
    assert "t2m" in only.group.arrays


@pytest.mark.skipif(not CORPUS_FILES, reason="no GRIB corpus")
def test_filter_by_keys(tmp_path: Path) -> None:
    path = CORPUS / "pygrib" / "gfs.grb"
    if not path.exists():
        pytest.skip("gfs.grb not in the corpus")
    parser = GRIBParser(filter_by_keys={"typeOfLevel": "surface"})
    assert compare(path, tmp_path, parser) == []


# -- generated files ----------------------------------------------------------------------------


def levels_steps_members(
    short_names: tuple[str, ...] = ("t",),
    levels: tuple[int, ...] = (500, 850),
    steps: tuple[int, ...] = (0, 6),
    members: tuple[int | None, ...] = (None,),
    missing: float = 0.0,
) -> list[Field]:
    fields = []
    for name in short_names:
        for member in members:
            for step in steps:
                for level in levels:
                    seed = len(fields)
                    values = smooth_field((7, 11), seed=seed, missing=missing)
                    fields.append(Field(name, level=level, step=step, member=member, values=values))
    return fields


@pytest.mark.parametrize("edition", [1, 2])
@pytest.mark.parametrize("packing", ["grid_simple", "grid_ieee", "grid_ccsds", "grid_jpeg"])
def test_generated_packings(tmp_path: Path, edition: int, packing: str) -> None:
    if edition == 1 and packing in ("grid_ccsds", "grid_jpeg"):
        pytest.skip("not a GRIB 1 packing")
    path = write_grib(
        tmp_path / f"p.grib{edition}",
        levels_steps_members(missing=0.1),
        edition=edition,
        packing=packing,
    )
    assert compare(path, tmp_path) == []


@pytest.mark.parametrize("grid", ["regular_ll", "rotated_ll", "reduced_gg", "lambert"])
def test_generated_grids(tmp_path: Path, grid: str) -> None:
    fields = [Field("t", level=level) for level in (500, 850)]
    path = write_grib(tmp_path / "g.grib2", fields, grid=grid)
    assert compare(path, tmp_path) == []


def test_ensemble_members_and_steps(tmp_path: Path) -> None:
    fields = levels_steps_members(("t", "u"), steps=(0, 6, 12), members=(0, 1, 2))
    path = write_grib(tmp_path / "ens.grib2", fields)
    assert compare(path, tmp_path) == []
    ds = ours(GRIBParser()(str(path), registry_for(path)), None)
    assert ds["t"].dims == ("number", "step", "isobaricInhPa", "latitude", "longitude")


def test_mixed_editions(tmp_path: Path) -> None:
    one = write_grib(tmp_path / "a.grib1", [Field("t", level=500)], edition=1)
    two = write_grib(tmp_path / "b.grib2", [Field("t", level=850)], edition=2)
    path = tmp_path / "mixed.grib"
    path.write_bytes(one.read_bytes() + two.read_bytes())
    assert compare(path, tmp_path) == []


def test_several_datasets_become_groups(tmp_path: Path) -> None:
    fields = [
        Field("t", level_type="isobaricInhPa", level=500),
        Field("t", level_type="isobaricInhPa", level=850),
        Field("2t", level_type="heightAboveGround", level=2),
        Field("10u", level_type="heightAboveGround", level=10),
        Field("sp", level_type="surface", level=0),
    ]
    path = write_grib(tmp_path / "split.grib2", fields)
    assert compare(path, tmp_path) == []
    store = GRIBParser()(str(path), registry_for(path))
    assert len(store.group.groups) > 1
    tree = vz.open_virtual_datatree(str(path))
    assert set(tree.children) == set(store.group.groups)


def test_missing_message_reads_nan(tmp_path: Path) -> None:
    fields = levels_steps_members(levels=(500, 850, 1000), steps=(0, 6))
    del fields[4]  # step 6, level 850
    path = write_grib(tmp_path / "holes.grib2", fields)
    assert compare(path, tmp_path) == []
    ds = ours(GRIBParser()(str(path), registry_for(path)), None)
    assert np.isnan(ds["t"].sel(step=np.timedelta64(6, "h"), isobaricInhPa=850)).all()


def test_scattered_multi_field_chunks_are_inline(tmp_path: Path) -> None:
    # field 0 and field 1 of messages in one array: the later fields are held inline
    path = CORPUS / "pygrib" / "eta.grb"
    if not path.exists():
        pytest.skip("eta.grb not in the corpus")
    assert compare(path, tmp_path) == []


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = write_grib(tmp_path / "t.grib2", levels_steps_members())
    cut = tmp_path / "cut.grib2"
    cut.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(InvalidFileError, match="truncated"):
        GRIBParser()(str(cut), registry_for(cut))


def test_not_grib_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.grib"
    path.write_bytes(b"this is not a GRIB file at all" * 10)
    with pytest.raises(InvalidFileError, match="not a GRIB file"):
        GRIBParser()(str(path), registry_for(path))


def test_corrupt_message_is_refused(tmp_path: Path) -> None:
    path = write_grib(tmp_path / "t.grib2", [Field("t")])
    data = bytearray(path.read_bytes())
    data[16:21] = b"\x00\x00\x00\x05\x09"  # section 1 becomes a bogus section 9
    path.write_bytes(bytes(data))
    with pytest.raises((InvalidFileError, UnsupportedFeatureError), match="message 0"):
        GRIBParser()(str(path), registry_for(path))


def test_unknown_group_and_drop_variables(tmp_path: Path) -> None:
    path = write_grib(tmp_path / "t.grib2", levels_steps_members(("t", "u")))
    with pytest.raises(InvalidFileError, match="no group"):
        GRIBParser(group="nope")(str(path), registry_for(path))
    store = GRIBParser(drop_variables=["u"])(str(path), registry_for(path))
    assert "u" not in store.group.arrays and "t" in store.group.arrays


def test_parser_pickles() -> None:
    parser = GRIBParser(group="surface", filter_by_keys={"typeOfLevel": "surface"})
    again = pickle.loads(pickle.dumps(parser))
    assert repr(again) == repr(parser)


def test_group_names_rule() -> None:
    def dataset(type_of_level: str, step_type: str, level: Any) -> xr.Dataset:
        attrs = {"GRIB_typeOfLevel": type_of_level, "GRIB_stepType": step_type}
        ds = xr.Dataset({"v": ((), 0.0, attrs)})
        return ds.assign_coords({type_of_level: level})

    names = group_names(
        [
            dataset("surface", "instant", 0),
            dataset("surface", "accum", 0),
            dataset("heightAboveGround", "instant", 2),
            dataset("heightAboveGround", "instant", 10),
            dataset("isobaricInhPa", "instant", ("isobaricInhPa", [500, 850])),
            dataset("isobaricInhPa", "instant", ("isobaricInhPa", [500, 850])),
            dataset("meanSea", "instant", 0),
        ]
    )
    assert names == [
        "surface_instant",
        "surface_accum",
        "heightAboveGround_2",
        "heightAboveGround_10",
        "isobaricInhPa_1",
        "isobaricInhPa_2",
        "meanSea",
    ]


# -- .idx sidecars ------------------------------------------------------------------------------


def write_idx(path: Path) -> Path:
    """A NOAA-style (wgrib2 -s) inventory of ``path``."""
    lines = []
    with path.open("rb") as file:
        number = 1
        while True:
            handle = eccodes.codes_grib_new_from_file(file)
            if handle is None:
                break
            try:

                def get(key: str, handle: int = handle) -> Any:
                    return eccodes.codes_get(handle, key)

                date = f"{get('dataDate')}{get('dataTime') // 100:02d}"
                lines.append(
                    f"{number}:{int(get('offset'))}:d={date}:{get('shortName').upper()}:"
                    f"{get('level')} {get('typeOfLevel')}:{get('stepRange')} hour fcst:"
                )
            finally:
                eccodes.codes_release(handle)
            number += 1
    idx = Path(f"{path}.idx")
    idx.write_text("\n".join(lines) + "\n")
    return idx


def test_idx_sidecar_gives_the_scan_result(tmp_path: Path) -> None:
    path = write_grib(tmp_path / "f.grib2", levels_steps_members(("t", "u"), steps=(0, 3)))
    write_idx(path)
    scanned = GRIBParser(index=False)(str(path), registry_for(path))
    indexed = GRIBParser(index=True)(str(path), registry_for(path))
    xr.testing.assert_identical(ours(scanned, None), ours(indexed, None))
    assert compare(path, tmp_path, GRIBParser(index="auto")) == []


def test_idx_sidecar_that_does_not_match_is_refused(tmp_path: Path) -> None:
    path = write_grib(tmp_path / "f.grib2", levels_steps_members())
    Path(f"{path}.idx").write_text("1:0:d=2024010100:TMP:500 mb:anl:\n2:17:d=2024010100:TMP:\n")
    with pytest.raises(InvalidFileError, match="idx"):
        GRIBParser(index=True)(str(path), registry_for(path))


def test_idx_required_but_missing(tmp_path: Path) -> None:
    path = write_grib(tmp_path / "f.grib2", levels_steps_members())
    with pytest.raises(InvalidFileError, match="no index"):
        GRIBParser(index=True)(str(path), registry_for(path))


@pytest.mark.skipif(not CORPUS_FILES, reason="no GRIB corpus")
@pytest.mark.parametrize("name", ["gfs.t06z.pgrb2.10p0.f010.grib2", "safrica.grib2", "gfs.grb"])
def test_idx_on_corpus_files(tmp_path: Path, name: str) -> None:
    found = [p for p in CORPUS_FILES if p.name == name]
    if not found:
        pytest.skip(f"{name} not in the corpus")
    path = tmp_path / name
    path.write_bytes(found[0].read_bytes())
    write_idx(path)
    scanned = GRIBParser(index=False)(str(path), registry_for(path))
    indexed = GRIBParser(index=True)(str(path), registry_for(path))
    for name_ in scanned.group.groups or [None]:
        xr.testing.assert_identical(ours(scanned, name_), ours(indexed, name_))


# -- many files ---------------------------------------------------------------------------------


def test_open_virtual_mfdataset_of_forecast_runs(tmp_path: Path) -> None:
    paths = []
    for day in (1, 2, 3):
        fields = [
            Field("t", level=level, step=step, date=20240100 + day)
            for step in (0, 6)
            for level in (500, 850)
        ]
        paths.append(str(write_grib(tmp_path / f"run{day}.grib2", fields)))
    # the scalar time coordinate is computed, held inline, and so loaded by default
    registry = vz.ObjectStoreRegistry.for_urls(paths)
    combined = vz.open_virtual_mfdataset(
        paths,
        registry=registry,
        combine="nested",
        concat_dim="time",
    )
    store = combined.virtualize.to_manifest_store(registry)
    got = xr.open_zarr(store, consolidated=False, zarr_format=3).load()
    refs = [reference(Path(p), tmp_path)[0] for p in paths]
    expected = xr.concat(refs, dim="time", data_vars="minimal", coords="different")
    expected.attrs.pop("history", None)
    # valid_time (time, step) is not concatenated by the default coords="minimal"
    xr.testing.assert_identical(
        got["t"].drop_vars("valid_time"), expected["t"].drop_vars("valid_time")
    )
    np.testing.assert_array_equal(got["time"].values, expected["time"].values)


def with_time_dimension(dataset: xr.Dataset) -> xr.Dataset:
    """A forecast run's scalar reference time as a dimension, to append runs along."""
    return dataset.expand_dims("time")


def test_forecast_runs_ingest_into_icechunk(tmp_path: Path) -> None:
    pytest.importorskip("icechunk")
    from virtualize.ingest import open_repository

    archive = tmp_path / "runs"
    archive.mkdir()
    paths = []
    for day in range(1, 7):
        fields = [
            Field(name, level=level, step=step, date=20240100 + day)
            for name in ("t", "u")
            for step in (0, 6, 12)
            for level in (500, 850)
        ]
        paths.append(write_grib(archive / f"run-{day:02d}.grib2", fields, packing="grid_ccsds"))
    registry = registry_for(archive)
    report = vz.ingest(
        str(archive / "run-*.grib2"),
        str(tmp_path / "repo"),
        concat_dim="time",
        registry=registry,
        preprocess=with_time_dimension,
        batch_size=4,
        progress=False,
    )
    assert (len(report.ingested), len(report.commits)) == (6, 2)
    repository, _ = open_repository(str(tmp_path / "repo"), registry)
    store = repository.readonly_session("main").store
    got = xr.open_zarr(store, consolidated=False, zarr_format=3).load()
    runs = [reference(path, tmp_path)[0].expand_dims("time") for path in paths]
    expected = xr.concat(runs, dim="time", data_vars="minimal", coords="minimal", compat="override")
    for name in ("t", "u"):
        xr.testing.assert_identical(
            got[name].drop_vars("valid_time"), expected[name].drop_vars("valid_time")
        )
    np.testing.assert_array_equal(got["time"].values, expected["time"].values)
    assert got["t"].shape == (6, 3, 2, *got["t"].shape[-2:])
