"""Explaining why files cannot be combined: which files disagree on how a variable decodes.

xarray joins virtual variables pairwise-checked in :mod:`virtualize.manifests.array_api`,
which names the first two files that disagree. Over an archive the useful answer is the whole
picture: each distinct way a variable is encoded, and which files use it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import xarray as xr

from virtualize.manifests import ManifestArray
from virtualize.manifests.array_api import DECODING_ATTRIBUTES

__all__ = ["encoding_groups", "explain_disagreements", "partition_by_encoding"]

#: Files named per group in a message; the rest are counted.
_SHOWN_FILES = 3


def _signature(array: ManifestArray, fixed_axes: Sequence[int]) -> dict[str, str]:
    attributes = array.metadata.attributes
    signature = {
        "dtype": str(array.dtype),
        "codecs": json.dumps([codec.to_dict() for codec in array.metadata.codecs], default=str),
        "fill value": repr(array.metadata.fill_value),
    }
    for name in DECODING_ATTRIBUTES:
        if name in attributes:
            signature[name] = repr(attributes[name])
    for axis in fixed_axes:
        signature[f"chunks on axis {axis}"] = str(array.chunk_grid[axis])
    return signature


def encoding_groups(
    datasets: Sequence[xr.Dataset], urls: Sequence[str], variable: str, along: set[str]
) -> list[tuple[dict[str, str], list[str]]]:
    """The distinct encodings of ``variable`` across ``datasets`` and the files of each.

    Chunking is compared on every axis whose dimension is not in ``along`` (the dimensions
    the files are joined along, where chunks may differ).
    """
    groups: dict[str, tuple[dict[str, str], list[str]]] = {}
    for dataset, url in zip(datasets, urls, strict=True):
        if variable not in dataset.variables:
            continue
        data = dataset.variables[variable].data
        if not isinstance(data, ManifestArray):
            continue
        dims = dataset.variables[variable].dims
        fixed = [axis for axis, dim in enumerate(dims) if dim not in along]
        signature = _signature(data, fixed)
        key = json.dumps(signature, sort_keys=True)
        groups.setdefault(key, (signature, []))[1].append(url)
    return sorted(groups.values(), key=lambda group: -len(group[1]))


def partition_by_encoding(datasets: Sequence[xr.Dataset], along: set[str]) -> list[list[int]]:
    """Indices of ``datasets`` split into runs that encode every virtual variable the same
    way (each group in order of its first file, files in their own order)."""
    groups: dict[str, list[int]] = {}
    for position, dataset in enumerate(datasets):
        signature = {}
        for name, variable in dataset.variables.items():
            if isinstance(variable.data, ManifestArray):
                fixed = [axis for axis, dim in enumerate(variable.dims) if dim not in along]
                signature[str(name)] = _signature(variable.data, fixed)
        key = json.dumps(signature, sort_keys=True)
        groups.setdefault(key, []).append(position)
    return list(groups.values())


def explain_disagreements(
    datasets: Sequence[xr.Dataset], urls: Sequence[str], along: set[str]
) -> list[tuple[str, str]]:
    """For every virtual variable encoded in more than one way, its name and a description
    of each encoding with the files that use it (only the fields that differ)."""
    names: dict[str, None] = {}
    for dataset in datasets:
        for name, variable in dataset.variables.items():
            if isinstance(variable.data, ManifestArray):
                names.setdefault(str(name))
    found = []
    for name in names:
        groups = encoding_groups(datasets, urls, name, along)
        if len(groups) < 2:
            continue
        fields = [
            field
            for field in {f: None for signature, _ in groups for f in signature}
            if len({signature.get(field) for signature, _ in groups}) > 1
        ]
        lines = []
        for signature, files in groups:
            what = ", ".join(f"{field} {signature.get(field, 'absent')}" for field in fields)
            shown = ", ".join(files[:_SHOWN_FILES])
            more = f" and {len(files) - _SHOWN_FILES} more" if len(files) > _SHOWN_FILES else ""
            count = f"{len(files)} file{'s' if len(files) != 1 else ''}"
            lines.append(f"  - {count} ({shown}{more}): {what}")
        found.append((name, "\n".join(lines)))
    return found


def along_dimensions(datasets: Sequence[xr.Dataset], concat_dim: Any) -> set[str]:
    """The dimensions files are joined along: ``concat_dim`` if given, else every dimension
    whose index differs between the datasets (what ``combine_by_coords`` concatenates)."""
    if concat_dim is not None:
        dims = concat_dim if isinstance(concat_dim, list | tuple) else [concat_dim]
        return {str(d) for d in dims if d is not None}
    along: set[str] = set()
    first = datasets[0]
    for name, index in first.indexes.items():
        for other in datasets[1:]:
            if name not in other.indexes or not index.equals(other.indexes[name]):
                along.add(str(name))
                break
    return along
