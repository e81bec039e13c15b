"""Fields that differ from an earlier field in time only get their index keys without an
ecCodes handle of their own: the time-free keys from the earlier field, the time keys from a
copy of its handle set to their times. Every value must be the one ecCodes reads from the
field itself, and the datasets cfgrib's."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import xarray as xr

cfgrib = pytest.importorskip("cfgrib")
eccodes = pytest.importorskip("eccodes")

from grib_support import Field, write_grib  # noqa: E402

import virtualize as vz  # noqa: E402
from virtualize.parsers import grib  # noqa: E402
from virtualize.parsers.grib import TIME_FREE_INDEX_KEYS, TIME_INDEX_KEYS, GRIBParser  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

INDEX_KEYS = (*TIME_INDEX_KEYS, *TIME_FREE_INDEX_KEYS)
ABSENT = "<absent>"


def own_keys(data: bytes) -> dict[str, Any]:
    """The index keys ecCodes reads from a handle of the field itself, through cfgrib."""
    from cfgrib.messages import Message

    handle = eccodes.codes_new_from_message(data)
    message = Message(codes_id=handle)
    values = {}
    for key in INDEX_KEYS:
        try:
            values[key] = message[key]
        except KeyError:
            values[key] = ABSENT
    del message  # releases the handle
    return values


def known_keys(field: Any) -> dict[str, Any]:
    """The index keys a field holds without having read them from a handle of its own."""
    return {key: ABSENT if value is grib._MISSING_KEY else value
            for key, value in field._cache.items() if key in INDEX_KEYS}  # fmt: skip


def fieldset_of(path: Path) -> tuple[grib._Handles, list[Any]]:
    url = path.as_uri()
    registry = vz.ObjectStoreRegistry.for_urls([url])
    store, key = registry.resolve(url)
    reader = grib._Reader(store, key, path.stat().st_size, url)
    handles = grib._Handles(grib._scan_fields(reader, url), url)
    return handles, handles.__enter__().fields


def cfgrib_datasets(path: Path, tmp_path: Path) -> list[xr.Dataset]:
    kwargs = {"indexpath": str(tmp_path / "{short_hash}.idx")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [ds.load() for ds in cfgrib.open_datasets(str(path), backend_kwargs=kwargs)]


def assert_datasets_equal_cfgrib(path: Path, tmp_path: Path, datasets: int) -> None:
    store = GRIBParser()(path.as_uri(), vz.ObjectStoreRegistry.for_urls([path.as_uri()]))
    expected = cfgrib_datasets(path, tmp_path)
    names = list(store.group.groups) or [None]
    assert len(names) == len(expected) == datasets
    for name, reference in zip(names, expected, strict=True):
        reference.attrs.pop("history", None)
        ours = xr.open_zarr(store, group=name, consolidated=False, zarr_format=3).load()
        xr.testing.assert_identical(ours, reference)


TIMES = [
    # point in time (template 4.0): reference times, levels and steps, one leap day
    *[Field("t", level=level, date=date, time=time, step=step)
      for date, time in ((20240101, 0), (20240101, 1230), (20240229, 600))
      for level in (500, 850) for step in (0, 6, 240)],
    # ensemble members (4.1): a kind per member
    *[Field("u", level=500, step=step, member=member) for member in (1, 2) for step in (0, 6)],
    # an accumulation over an hour, in minutes (4.8): ecCodes says 60 minutes is 1 hour
    *[Field("tp", level_type="surface", level=0, step=end, start_step=end - 60,
            step_type="accum", step_units=0) for end in (60, 90, 120, 1440)],
    # ensemble accumulations (4.11) from the start: each length its own kind
    *[Field("cp", level_type="surface", level=0, step=end, step_type="accum", member=member)
      for member in (1, 2) for end in (6, 12)],
    # steps in minutes at a point in time
    *[Field("2t", level_type="heightAboveGround", level=2, step=step, step_units=0)
      for step in (30, 60, 90)],
]  # fmt: skip


def test_shared_keys_are_the_fields_own(tmp_path: Path) -> None:
    path = write_grib(tmp_path / "times.grib2", TIMES)
    handles, fields = fieldset_of(path)
    try:
        shared = [field for field in fields if field._message is None]
        # t: 2 levels x 9 times (16 share); members: 2 x 2 (2); tp in minutes: 4 (3);
        # cp of members: 4 lengths (0); 2t: 3 (2)
        assert len(shared) == 23
        for field in shared:
            known = known_keys(field)
            assert set(known) == set(INDEX_KEYS)
            assert known == own_keys(field.field.data), field.field.message
        for field in fields:
            if field._message is not None:
                assert not [key for key in TIME_INDEX_KEYS if key in field._cache]
        # a key the field was not given makes its handle
        assert shared[0]["shortName"] == "t" and shared[0]._message is not None
    finally:
        handles.__exit__(None, None, None)
    assert_datasets_equal_cfgrib(path, tmp_path, datasets=5)


GRIB1_TIMES = [
    *[Field("t", level=level, date=date, time=time, step=step)
      for date, time in ((19991231, 1800), (20000101, 0), (20240229, 600))
      for level in (500, 850) for step in (0, 6, 240)],
    *[Field("2t", level_type="heightAboveGround", level=2, step=step) for step in (0, 3)],
]  # fmt: skip


def test_shared_keys_of_grib1_fields_are_their_own(tmp_path: Path) -> None:
    path = write_grib(tmp_path / "times.grib1", GRIB1_TIMES, edition=1)
    handles, fields = fieldset_of(path)
    try:
        shared = [field for field in fields if field._message is None]
        assert len(shared) == 16 + 1  # t: 2 levels x 9 times; 2t: 2 steps
        for field in shared:
            assert known_keys(field) == own_keys(field.field.data), field.field.message
    finally:
        handles.__exit__(None, None, None)
    assert_datasets_equal_cfgrib(path, tmp_path, datasets=2)


def test_a_field_whose_times_the_copy_cannot_take_gets_its_own_handle(tmp_path: Path) -> None:
    path = write_grib(tmp_path / "two.grib2", [Field("t", step=0), Field("t", step=6)])
    data = bytearray(path.read_bytes())
    second = data.index(b"GRIB", 4)
    section4 = second + 16 + 21 + 72  # sections 1 and 3 of the sample
    assert data[section4 + 4] == 4 and data[section4 + 18 : section4 + 22] == bytes([0, 0, 0, 6])
    data[section4 + 18] = 0x80  # forecast time -6 hours (sign and magnitude)
    path.write_bytes(bytes(data))
    handles, fields = fieldset_of(path)
    try:
        assert fields[1]._message is not None
        assert fields[1]["endStep:int"] == own_keys(fields[1].field.data)["endStep:int"]
    finally:
        handles.__exit__(None, None, None)
