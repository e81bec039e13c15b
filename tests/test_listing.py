"""Globs over object stores: what matches, and the folder that gets listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtualize.listing import flatten_nested, glob_regex, split_glob, unflatten_nested


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("*.nc", ["a.nc", ".nc"], ["a/b.nc", "a.nc4"]),
        ("day?.nc", ["day1.nc"], ["day10.nc", "day/.nc"]),
        ("day[0-2].nc", ["day0.nc", "day2.nc"], ["day3.nc"]),
        ("day[!0].nc", ["day1.nc"], ["day0.nc"]),
        ("**/*.nc", ["a.nc", "x/a.nc", "x/y/a.nc"], ["x/a.grib"]),
        ("2023/**/t2m_*.nc", ["2023/t2m_1.nc", "2023/01/02/t2m_1.nc"], ["2024/t2m_1.nc"]),
        ("a+b(1).nc", ["a+b(1).nc"], ["aab(1).nc"]),
    ],
)
def test_glob_matching(pattern: str, matches: list[str], misses: list[str]) -> None:
    regex = glob_regex(pattern)
    assert all(regex.match(key) for key in matches)
    assert not any(regex.match(key) for key in misses)


def test_the_folder_listed_is_before_the_first_glob_segment(tmp_path: Path) -> None:
    assert split_glob("s3://bucket/era5/2023-*/t2m.nc") == ("s3://bucket/era5/", "2023-*/t2m.nc")
    folder, rest = split_glob(str(tmp_path / "a b" / "*.nc"))
    assert folder == (tmp_path / "a b").as_uri() + "/" and rest == "*.nc"


def test_nesting_round_trips() -> None:
    flat, structure = flatten_nested([["a", "b"], ["c", "d"]])
    assert flat == ["a", "b", "c", "d"]
    assert unflatten_nested(structure, [s.upper() for s in flat]) == [["A", "B"], ["C", "D"]]
