"""GRIBParser: virtual datasets equal cfgrib's, on the corpus and on files written here."""

from __future__ import annotations

import collections
import contextlib
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

from grib_support import (  # noqa: E402
    Field,
    field_shape,
    grib_messages,
    smooth_field,
    write_grib,
)

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
    assert path.exists(), f"{path} is missing from the corpus"
    store = GRIBParser(group="isobaricInhPa_26levels")(str(path), registry_for(path))
    v = store.group.arrays["v"]
    assert v.metadata.codecs[0].to_dict()["configuration"] == {"field": 1}
    assert not v.manifest._inline  # every chunk references its message


@pytest.mark.skipif(not CORPUS_FILES, reason="no GRIB corpus")
def test_gfs_group_names() -> None:
    path = CORPUS / "pygrib" / "gfs.grb"
    assert path.exists(), f"{path} is missing from the corpus"
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
    assert path.exists(), f"{path} is missing from the corpus"
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


@pytest.mark.parametrize(
    ("edition", "packing"),
    [
        (1, "grid_simple"),
        (1, "grid_ieee"),
        (2, "grid_simple"),
        (2, "grid_ieee"),
        (2, "grid_ccsds"),  # CCSDS and JPEG 2000 are GRIB 2 packings only
        (2, "grid_jpeg"),
    ],
)
def test_generated_packings(tmp_path: Path, edition: int, packing: str) -> None:
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


@pytest.mark.skipif(not CORPUS_FILES, reason="no GRIB corpus")
def test_scattered_multi_field_chunks_are_inline(tmp_path: Path) -> None:
    # field 0 and field 1 of messages in one array: the later fields are held inline
    path = CORPUS / "pygrib" / "eta.grb"
    assert path.exists(), f"{path} is missing from the corpus"
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


def assert_same_stores(scanned: Any, indexed: Any) -> None:
    """Same groups, arrays, metadata, chunk manifests and data."""

    def walk(a: Any, b: Any) -> None:
        assert sorted(a.groups) == sorted(b.groups)
        assert sorted(a.arrays) == sorted(b.arrays)
        assert a.attributes == b.attributes
        for name, array in a.arrays.items():
            other = b.arrays[name]
            assert array.metadata.to_dict() == other.metadata.to_dict(), name
            assert array.manifest == other.manifest, name
        for name, group in a.groups.items():
            walk(group, b.groups[name])

    walk(scanned.group, indexed.group)
    for name in scanned.group.groups or [None]:
        xr.testing.assert_identical(ours(scanned, name), ours(indexed, name))


def idx_and_scan(path: Path) -> tuple[Any, Any]:
    write_idx(path)
    scanned = GRIBParser(index=False)(str(path), registry_for(path))
    indexed = GRIBParser(index=True)(str(path), registry_for(path))
    return scanned, indexed


IDX_CORPUS = [p for p in CORPUS_FILES if p.name != "era5-2mt-2019-03-uk.grib"]


@pytest.mark.skipif(not CORPUS_FILES, reason="no GRIB corpus")
@pytest.mark.parametrize("source", IDX_CORPUS, ids=lambda p: p.name)
def test_idx_on_corpus_files(tmp_path: Path, source: Path) -> None:
    path = tmp_path / source.name
    path.write_bytes(source.read_bytes())
    try:
        scanned = GRIBParser(index=False)(str(path), registry_for(path))
    except (InvalidFileError, UnsupportedFeatureError) as error:
        write_idx(path)
        with pytest.raises(type(error)):
            GRIBParser(index=True)(str(path), registry_for(path))
        return
    write_idx(path)
    assert_same_stores(scanned, GRIBParser(index=True)(str(path), registry_for(path)))


def fifty_fields(shape: tuple[int, int]) -> list[Field]:
    """5 parameters x 5 levels x 2 steps; every other field of ``q`` has missing points."""
    fields = []
    for name in ("t", "u", "v", "q", "gh"):
        for step in (0, 6):
            for level in (300, 500, 700, 850, 1000):
                seed = len(fields)
                missing = 0.2 if name == "q" and seed % 2 else 0.0
                values = smooth_field(shape, seed=seed, missing=missing)
                fields.append(Field(name, level=level, step=step, values=values))
    return fields


@pytest.mark.parametrize("packing", ["grid_simple", "grid_complex_spatial_differencing"])
def test_idx_of_fifty_messages_gives_the_scan_result(tmp_path: Path, packing: str) -> None:
    shape = (61, 120)  # messages of ~15 KB: their headers are read, not their data
    path = write_grib(tmp_path / "f.grib2", fifty_fields(shape), packing=packing, shape=shape)
    scanned, indexed = idx_and_scan(path)
    assert_same_stores(scanned, indexed)
    assert compare(path, tmp_path, GRIBParser(index=True)) == []


def test_idx_of_a_mixed_file_gives_the_scan_result(tmp_path: Path) -> None:
    # GRIB 1, GRIB 2 of several packings, bitmaps, small and large messages, multi-field
    shape = (61, 120)
    parts = [
        write_grib(tmp_path / "a.grib1", [Field("t", level=300)], edition=1, shape=shape),
        write_grib(tmp_path / "b.grib2", fifty_fields(shape)[:12], shape=shape),
        write_grib(tmp_path / "c.grib2", [Field("t", level=850)], packing="grid_ccsds"),
        write_grib(
            tmp_path / "d.grib2", fifty_fields(shape)[30:40], packing="grid_jpeg", shape=shape
        ),
        write_grib(
            tmp_path / "e.grib2", fifty_fields(shape)[10:14], packing="grid_complex", shape=shape
        ),
    ]
    path = tmp_path / "mixed.grib"
    path.write_bytes(b"".join(p.read_bytes() for p in parts))
    scanned, indexed = idx_and_scan(path)
    assert_same_stores(scanned, indexed)
    gfs = CORPUS / "pygrib" / "gfs.grb"
    if gfs.exists():  # multi-field messages, whether or not the index sub-numbers them
        path.write_bytes(path.read_bytes() + gfs.read_bytes())
        scanned, indexed = idx_and_scan(path)
        assert_same_stores(scanned, indexed)


class CountingReads:
    """Counts the bytes obstore returns for one file (wrapping obstore's real reads)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        import obstore

        # obstore is wrapped in this process: the parse must run here, not in a helper
        monkeypatch.setenv("VIRTUALIZE_ISOLATION", "off")
        self.name = name
        self.bytes = 0
        self.requests = 0
        for function in ("get_range", "get_ranges"):
            monkeypatch.setattr(obstore, function, self._wrap(getattr(obstore, function)))

    def _wrap(self, read: Any) -> Any:
        def counted(store: Any, path: str, *args: Any, **kwargs: Any) -> Any:
            result = read(store, path, *args, **kwargs)
            if path.endswith(self.name):
                blocks = result if isinstance(result, list) else [result]
                self.bytes += sum(len(memoryview(block)) for block in blocks)
                self.requests += 1
            return result

        return counted


@pytest.mark.parametrize("packing", ["grid_simple", "grid_complex", "grid_ccsds"])
def test_idx_reads_only_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, packing: str
) -> None:
    shape = (181, 360)
    fields = fifty_fields(shape)[::5]  # q with and without missing points among them
    path = write_grib(tmp_path / "big.grib2", fields, packing=packing, shape=shape)
    write_idx(path)
    size = path.stat().st_size
    reads = CountingReads(monkeypatch, path.name)
    scanned = GRIBParser(index=False)(str(path), registry_for(path))
    assert reads.bytes >= size
    reads.bytes = 0
    indexed = GRIBParser(index=True)(str(path), registry_for(path))
    # per message: the first 4 KiB, its last 4 bytes, section 7's 5-byte header after a bitmap
    assert 0 < reads.bytes <= len(fields) * (4096 + 4 + 5), (reads.bytes, size)
    if packing != "grid_ccsds":  # CCSDS packs these smooth fields in ~36 KB
        assert reads.bytes < 0.1 * size, (reads.bytes, size)
    assert_same_stores(scanned, indexed)


def test_idx_filter_on_a_data_key_reads_whole_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shape = (61, 120)
    path = write_grib(tmp_path / "f.grib2", fifty_fields(shape)[:10], shape=shape)
    write_idx(path)
    reads = CountingReads(monkeypatch, path.name)
    keys = {"numberOfMissing": 0}  # counted in the data: not in a header-only message
    scanned = GRIBParser(index=False, filter_by_keys=keys)(str(path), registry_for(path))
    reads.bytes = 0
    indexed = GRIBParser(index=True, filter_by_keys=keys)(str(path), registry_for(path))
    assert reads.bytes >= path.stat().st_size
    assert_same_stores(scanned, indexed)


@pytest.mark.parametrize("index", [False, True])
def test_a_filter_on_a_data_key_sees_the_whole_messages(tmp_path: Path, index: bool) -> None:
    """numberOfMissing counts the bitmap, which header-only messages don't carry: filtering
    on it must see the real value, by scan as through an index."""
    shape = (61, 120)
    path = write_grib(tmp_path / "f.grib2", fifty_fields(shape), shape=shape)
    write_idx(path)
    with_missing = GRIBParser(index=index, filter_by_keys={"shortName": "q"})
    store = with_missing(str(path), registry_for(path))
    assert np.isnan(ours(store, None)["q"].values).any()
    parser = GRIBParser(index=index, filter_by_keys={"shortName": "q", "numberOfMissing": 0})
    complete = ours(parser(str(path), registry_for(path)), None)["q"]
    expected = reference(path, tmp_path, filter_by_keys=parser.filter_by_keys)[0]["q"]
    xr.testing.assert_equal(complete, expected)  # the q fields with missing points left out


def test_idx_length_that_does_not_match_is_refused(tmp_path: Path) -> None:
    shape = (61, 120)
    path = write_grib(tmp_path / "f.grib2", fifty_fields(shape)[:3], shape=shape)
    write_idx(path)
    lines = Path(f"{path}.idx").read_text().splitlines()
    offset = int(lines[1].split(":")[1])
    lines[1] = lines[1].replace(f":{offset}:", f":{offset - 8}:", 1)
    Path(f"{path}.idx").write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidFileError, match=r"message 0 .*does not match the file"):
        GRIBParser(index=True)(str(path), registry_for(path))


# -- header-only messages -----------------------------------------------------------------------


def header_key_files(tmp_path: Path) -> list[Path]:
    """GRIB 2 files of the corpus, and written here with every packing, grids and bitmaps."""
    paths = [p for p in CORPUS_FILES if p.read_bytes()[7:8] == b"\x02"]
    shape = (13, 17)
    for packing in (
        "grid_simple",
        "grid_complex",
        "grid_complex_spatial_differencing",
        "grid_second_order",
        "grid_ccsds",
        "grid_jpeg",
        "grid_ieee",
    ):
        for grid in ("regular_ll", "rotated_ll", "reduced_gg", "lambert", "polar_stereographic"):
            fields = []
            for seed, missing in enumerate((0.0, 0.3)):
                values = smooth_field(field_shape(grid, shape), seed=seed, missing=missing)
                fields.append(Field("t", level=500 + seed, step=6 * seed, values=values))
            fields.append(Field("2t", level_type="heightAboveGround", level=2, member=3))
            paths.append(
                write_grib(
                    tmp_path / f"{packing}-{grid}.grib2",
                    fields,
                    packing=packing,
                    grid=grid,
                    shape=shape,
                )
            )
    return paths


def cfgrib_keys(path: Path) -> set[str]:
    """The keys cfgrib reads from the fields of ``path`` as it builds its datasets."""
    from virtualize.parsers.grib import _cfgrib_datasets, _Handles, _Reader, _scan_fields

    url = f"file://{path}"
    store, key = registry_for(path).resolve(url)
    fields = _scan_fields(_Reader(store, key, path.stat().st_size, url), url)
    with _Handles(fields, url) as fieldset:
        with contextlib.suppress(UnsupportedFeatureError):
            _cfgrib_datasets(fieldset, {}, url)
        return {k.split(":")[0] for field in fieldset.fields for k in field._cache}


def header_only_message(data: bytes) -> bytes | None:
    from virtualize.parsers.grib import _header_only

    built = _header_only(data, None, len(data))
    assert built is None or isinstance(built, bytes)
    return built


def key_values(message: bytes, keys: set[str]) -> dict[str, Any]:
    from cfgrib import cfmessage, messages

    handle = eccodes.codes_new_from_message(message)
    field = messages.ComputedKeysAdapter(messages.Message(codes_id=handle), cfmessage.COMPUTED_KEYS)
    values: dict[str, Any] = {}
    for key in sorted(keys):
        try:
            values[key] = field[key]
        except Exception as error:  # the same failure on both sides is the same value
            values[key] = f"{type(error).__name__}"
    return values


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return type(a) is type(b) and bool(a == b)


def test_header_only_messages_have_the_keys_of_the_whole_message(tmp_path: Path) -> None:
    from virtualize.parsers.grib import HEADER_KEYS

    read_by_cfgrib: set[str] = set()
    compared = collections.Counter[str]()
    wrong = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in header_key_files(tmp_path):
            read_by_cfgrib |= cfgrib_keys(path)
            data = path.read_bytes()
            for message in scan(lambda o, n, d=data: d[o : o + n], len(data), str(path)):
                whole = data[message.offset : message.offset + message.length]
                header = header_only_message(whole) if message.edition == 2 else None
                if header is None:
                    compared["not one field"] += 1
                    continue
                expected = key_values(whole, set(HEADER_KEYS))
                got = key_values(header, set(HEADER_KEYS))
                wrong.extend(
                    f"{path.name}@{message.offset}: {key} {expected[key]!r} != {got[key]!r}"
                    for key in HEADER_KEYS
                    if not same_value(expected[key], got[key])
                )
                compared["messages"] += 1
                compared["bitmaps"] += int(expected["bitmapPresent"] == 1)
    print(dict(compared), len(read_by_cfgrib), "keys read by cfgrib")
    assert not read_by_cfgrib - HEADER_KEYS, sorted(read_by_cfgrib - HEADER_KEYS)
    assert not wrong, wrong[:20]
    assert compared["messages"] >= 100 and compared["bitmaps"] >= 10


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


def test_a_program_that_lets_xarray_load_eccodes_exits_cleanly(tmp_path: Path) -> None:
    """xarray's engine discovery imports cfgrib (ecCodes) and then rioxarray (pyproj); in
    that order the interpreter aborts at exit unless virtualize loaded PROJ first."""
    import subprocess
    import sys

    pytest.importorskip("pyproj")
    script = (
        "import virtualize, xarray\n"
        "xarray.backends.list_engines()\n"
        "import pyproj\n"
        "pyproj.CRS.from_epsg(4326).to_wkt()\n"
        "print('done')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert (run.returncode, run.stdout.strip()) == (0, "done"), run.stderr[-500:]
