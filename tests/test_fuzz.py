"""The short fuzz run of ``make test``: 2,000 mutated and truncated files across every
parser (files written here and, when it is there, the corpus's small files) either open or
raise an error of :mod:`virtualize.errors`, each in a worker process with a time limit: no
crash, no hang, no other exception; 1,000 more with every chunk read. ``make fuzz`` runs
100,000 with every chunk read."""

from __future__ import annotations

import pytest
from fuzz_support import fuzz, write_seeds

CASES = 2000
READ_CASES = 1000

pytestmark = pytest.mark.xdist_group("fuzz")


def test_seeds_cover_every_parser(tmp_path) -> None:
    seeds = write_seeds(tmp_path)
    assert sorted(seeds) == ["fits", "grib", "hdf5", "netcdf3", "tiff"]


def test_mutated_files_parse_or_raise_typed_errors() -> None:
    report = fuzz(CASES, seed=20261121, workers=2)
    print()
    print(report.summary())
    assert len(report.results) == CASES
    assert {r.case.format for r in report.results} == {"fits", "grib", "hdf5", "netcdf3", "tiff"}
    assert report.failures() == [], report.summary()


def test_mutated_files_read_whole_or_raise_typed_errors() -> None:
    """The same, with every variable's values read: each chunk of a damaged file goes through
    its codecs (zlib, PackBits, ecCodes, ...), which must fail as typed errors too."""
    report = fuzz(READ_CASES, seed=20261122, workers=2, read=True)
    print()
    print(report.summary())
    assert len(report.results) == READ_CASES
    assert report.failures() == [], report.summary()
