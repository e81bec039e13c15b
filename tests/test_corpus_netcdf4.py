"""Every real netCDF4 file in ../shared/corpus/netcdf4 reads back exactly, or is refused loudly.

The table below says which files are refused at parse time and why; every other file must
equal ``xr.open_dataset`` exactly when read through ManifestStore. A file that changes sides
fails the test, so the table stays true.
"""

from __future__ import annotations

import pytest
from oracle import CORPUS, assert_virtual_equals_native, local_registry

from virtualize.errors import UnsupportedFeatureError
from virtualize.parsers import HDFParser

FOLDER = CORPUS / "netcdf4"

#: file (relative to the folder) -> words the refusal must contain
REFUSED = {
    # xarray's zarr reader can't decode a _FillValue on opaque, string or compound arrays
    "bes/ref_tst_opaque_data.nc": "_FillValue",
    "netcdf-c/ref_tst_compounds.nc": "compound",
    # zarr's struct type has no array-typed members
    "netcdf-c/ref_tst_compounds2.nc": "compound",
}

#: files xarray can't decode with default options: both sides are read with these instead
NATIVE_OPTIONS = {
    # 'hour since 0000-01-01' is outside what the default calendar decodes
    "bes/coads_climatology_subset.nc": {"decode_times": False},
}


def corpus_files() -> list[str]:
    if not FOLDER.is_dir():
        return []
    return sorted(
        str(p.relative_to(FOLDER))
        for p in FOLDER.rglob("*")
        if p.is_file() and p.suffix != ".dmrpp"
    )


pytestmark = pytest.mark.skipif(not FOLDER.is_dir(), reason="../shared/corpus is absent")


@pytest.mark.parametrize("name", corpus_files())
def test_corpus_file_matches_or_is_refused(name: str) -> None:
    path = FOLDER / name
    if name in REFUSED:
        with pytest.raises(UnsupportedFeatureError) as caught:
            HDFParser()(str(path), local_registry(path))
        message = str(caught.value)
        assert REFUSED[name] in message
        assert str(path) in message and "variable" in message
    else:
        assert_virtual_equals_native(path, **NATIVE_OPTIONS.get(name, {}))


def test_the_refusal_table_names_real_files() -> None:
    present = set(corpus_files())
    assert set(REFUSED) <= present
    assert set(NATIVE_OPTIONS) <= present
    assert len(present) - len(REFUSED) >= 30, "most of the corpus must read back exactly"
