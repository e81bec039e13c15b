"""Every dataset of every HDF5 and netCDF4 file in ../shared/corpus: exact, or refused loudly.

The oracle is h5py with hdf5plugin imported. A dataset counts as *exact* when the virtual read
through ManifestStore equals h5py's read, as *refused* when the parser raised a typed error
for it at parse time, and as *not readable* when h5py itself can't read it. No dataset may
read back differently; at least 95% of the readable ones must be exact.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the filters h5py needs for the native read)
import numpy as np
import pytest
import zarr
from oracle import CORPUS, local_registry

from virtualize.codecs import CFPackingCodec
from virtualize.errors import SkippedVariableWarning, VirtualizeError
from virtualize.manifests import ManifestArray
from virtualize.parsers import HDFParser

FOLDERS = [CORPUS / "hdf5", CORPUS / "netcdf4"]
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")

#: files h5py's own native read crashes the interpreter on (netCDF-C too): never opened here
CRASHES_NATIVE_READERS: set[str] = set()


def corpus_files() -> list[Path]:
    return sorted(
        p
        for folder in FOLDERS
        if folder.is_dir()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix != ".dmrpp" and p.name not in CRASHES_NATIVE_READERS
    )


def dataset_paths(h5file: h5py.File) -> list[str]:
    """Paths of the file's own datasets (links to other files are not followed)."""
    paths: list[str] = []

    def visit(name: str, node: Any) -> None:
        if isinstance(node, h5py.Dataset):
            paths.append(name)

    h5file.visititems(visit)
    return paths


def is_dimension_only(dataset: h5py.Dataset) -> bool:
    name = dataset.attrs.get("NAME") if "NAME" in dataset.attrs else None
    return isinstance(name, bytes | np.bytes_) and bytes(name).startswith(
        b"This is a netCDF dimension but not a netCDF variable"
    )


def normalise(values: Any) -> Any:
    """Values in a form both sides share: bytes decoded, object arrays as lists."""
    array = np.asarray(values)
    if array.dtype.kind in "OSU":
        return [
            v.decode("utf-8", "surrogateescape") if isinstance(v, bytes | np.bytes_) else v
            for v in array.ravel().tolist()
        ]
    return array


def same_values(got: Any, expected: Any, array: ManifestArray) -> bool:
    codecs = array.metadata.codecs
    if codecs and isinstance(codecs[0], CFPackingCodec):
        expected = codecs[0].decode_array(np.asarray(expected))
    got_array, expected_array = np.asarray(got), np.asarray(expected)
    if got_array.shape != expected_array.shape:
        return False
    if expected_array.dtype.names:
        if got_array.dtype.names != expected_array.dtype.names:
            return False
        return all(
            same_values(got_array[field], expected_array[field], array)
            for field in expected_array.dtype.names
        )
    left, right = normalise(got_array), normalise(expected_array)
    if isinstance(left, list) or isinstance(right, list):
        as_list = [
            v if isinstance(v, list) else np.asarray(v).ravel().tolist() for v in (left, right)
        ]
        return bool(as_list[0] == as_list[1])
    if left.dtype.kind in "fc" and right.dtype.kind in "fc":
        return bool(np.array_equal(left, right, equal_nan=True))
    return bool(np.array_equal(left, right))


def native_values(h5file: h5py.File, dataset: h5py.Dataset, window: Any) -> Any:
    """h5py's read; object references become the paths they point to, as virtualize
    resolves them."""
    values = dataset[window]
    if h5py.check_ref_dtype(dataset.dtype) is h5py.Reference:
        paths = [h5file[ref].name if ref else "" for ref in np.asarray(values).ravel()]
        return np.array(paths, dtype=object).reshape(np.shape(values))
    return values


def is_space_padded(dataset: h5py.Dataset) -> bool:
    """Fixed strings padded with spaces: h5py strips the padding, netCDF (whose reading
    virtualize follows) keeps it; padding is compared stripped."""
    kind = dataset.id.get_type()
    return (
        isinstance(kind, h5py.h5t.TypeStringID)
        and not kind.is_variable_str()
        and kind.get_strpad() == h5py.h5t.STR_SPACEPAD
    )


def _window(dataset: h5py.Dataset) -> Any:
    """The whole dataset, or for one of more than 10^7 elements its first and last 10^6
    along the first axis (enough to cross chunk boundaries at both ends)."""
    if dataset.shape is None or dataset.size <= 10_000_000 or not dataset.shape:
        return ()
    rows = dataset.shape[0]
    step = max(1, 1_000_000 // max(dataset.size // rows, 1))
    edge = np.r_[0 : min(step, rows), max(rows - step, 0) : rows]
    return (np.unique(edge),)


def tally_file(path: Path) -> dict[str, list[str]]:
    outcome: dict[str, list[str]] = {"exact": [], "refused": [], "unreadable": [], "wrong": []}
    try:
        h5file = h5py.File(path, "r")
    except OSError:
        return outcome
    with h5file, warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedVariableWarning)
        names = [n for n in dataset_paths(h5file) if not is_dimension_only(h5file[n])]
        try:
            store = HDFParser(on_unsupported="skip")(str(path), local_registry(path))
        except VirtualizeError as error:
            outcome["refused"].extend(f"{path.name}:{n} ({error.reason})" for n in names)
            return outcome
        for name in names:
            label = f"{path.name}:{name}"
            window = _window(h5file[name])
            try:
                expected = native_values(h5file, h5file[name], window)
            except (OSError, RuntimeError, ValueError, TypeError):
                outcome["unreadable"].append(label)
                continue
            if name in store.skipped:
                outcome["refused"].append(f"{label} ({store.skipped[name]})")
                continue
            node = store.group.get_node(name)
            if not isinstance(node, ManifestArray):
                outcome["wrong"].append(f"{label} (missing from the store)")
                continue
            if isinstance(expected, h5py.Empty):
                outcome["unreadable"].append(label)
                continue
            got = zarr.open_array(store, path=name, mode="r", zarr_format=3)[window]
            if is_space_padded(h5file[name]):
                got = np.char.rstrip(np.asarray(got), b" ")
            if same_values(got, expected, node):
                outcome["exact"].append(label)
            else:
                outcome["wrong"].append(label)
    return outcome


def test_every_corpus_dataset_is_exact_or_refused(capsys: pytest.CaptureFixture[str]) -> None:
    totals: dict[str, list[str]] = {"exact": [], "refused": [], "unreadable": [], "wrong": []}
    for path in corpus_files():
        for kind, labels in tally_file(path).items():
            totals[kind].extend(labels)
    readable = len(totals["exact"]) + len(totals["refused"]) + len(totals["wrong"])
    share = len(totals["exact"]) / readable if readable else 0.0
    with capsys.disabled():
        print(
            f"\nHDF5/netCDF4 corpus datasets: {len(totals['exact'])} exact, "
            f"{len(totals['refused'])} refused, {len(totals['wrong'])} wrong, "
            f"{len(totals['unreadable'])} unreadable by h5py; exact {share:.1%} of readable"
        )
        for label in totals["refused"]:
            print("  refused:", label[:200])
    assert totals["wrong"] == [], "datasets that read back differently from h5py"
    assert readable > 500
    assert share >= 0.95, f"only {share:.1%} of readable datasets are exact"
