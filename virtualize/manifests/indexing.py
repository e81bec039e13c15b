"""Indexing a ManifestArray: only selections that keep whole chunks are possible."""

from __future__ import annotations

from typing import Any

import numpy as np

from virtualize.errors import VirtualArrayAccessError
from virtualize.manifests.array import ManifestArray
from virtualize.manifests.grid import AxisGrid, axis_edges, regularize

__all__ = ["index_manifest_array"]


def _normalize_key(key: Any, ndim: int) -> list[Any]:
    items = list(key) if isinstance(key, tuple) else [key]
    if hasattr(key, "tuple") and not isinstance(key, tuple):  # xarray's indexer objects
        items = list(key.tuple)
    ellipses = sum(1 for item in items if item is Ellipsis)
    if ellipses > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    consumed = sum(1 for item in items if item is not None and item is not Ellipsis)
    if consumed > ndim:
        raise IndexError(f"too many indices for a {ndim}-d array")
    if ellipses:
        at = next(i for i, item in enumerate(items) if item is Ellipsis)
        items[at : at + 1] = [slice(None)] * (ndim - consumed)
    else:
        items.extend([slice(None)] * (ndim - consumed))
    return items


def index_manifest_array(array: ManifestArray, key: Any) -> ManifestArray:
    """Select whole chunks of ``array``.

    Slices must start and stop on chunk boundaries (the end of the axis counts as one) and
    have step 1; an integer selects along an axis whose chunks hold one element; ``None``
    adds an axis of length 1.
    """
    items = _normalize_key(key, array.ndim)
    chunk_index: list[Any] = []
    new_shape: list[int] = []
    new_grid: list[AxisGrid] = []
    old_names = array.metadata.dimension_names
    new_names: list[str | None] = []
    axis_map: list[int | None] = []
    axis = 0
    for item in items:
        if item is None:
            axis_map.append(None)
            chunk_index.append(None)
            new_shape.append(1)
            new_grid.append(1)
            new_names.append(None)
            continue
        length, spec = array.shape[axis], array.chunk_grid[axis]
        edges = np.asarray(axis_edges(spec, length), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(edges)]).tolist()
        if isinstance(item, (int, np.integer)):
            position = int(item) + length if int(item) < 0 else int(item)
            if not 0 <= position < length:
                raise IndexError(f"index {item} is out of bounds for axis {axis} of size {length}")
            chunk = int(np.searchsorted(starts, position, side="right")) - 1
            if edges[chunk] != 1:
                raise _unaligned(
                    axis, f"integer index {item} inside a chunk of {edges[chunk]} elements"
                )
            chunk_index.append(chunk)
        elif isinstance(item, slice):
            start, stop, step = item.indices(length)
            if step != 1:
                raise _unaligned(axis, f"step {step}")
            stop = max(stop, start)
            if start == stop:  # an empty selection keeps no chunk, wherever it starts
                first = last = 0
            elif start not in starts or (stop not in starts and stop != length):
                raise _unaligned(axis, f"slice {start}:{stop} with chunks {_text(spec)}")
            else:
                first = starts.index(start)
                last = starts.index(stop) if stop in starts else len(edges)
            chunk_index.append(slice(first, last))
            axis_map.append(axis)
            new_shape.append(stop - start)
            new_grid.append(spec if isinstance(spec, int) else spec[first:last] or spec[:1])
            new_names.append(old_names[axis] if old_names else None)
        else:
            raise _unaligned(axis, f"{type(item).__name__} indexer")
        axis += 1
    manifest = array.manifest.subset(tuple(chunk_index))
    metadata = array.with_metadata(
        shape=tuple(new_shape),
        chunk_grid=regularize(tuple(new_grid), new_shape),
        dimension_names=new_names if any(n is not None for n in new_names) else None,
        axis_map=axis_map,
    )
    return ManifestArray(metadata, manifest)


def _text(spec: AxisGrid) -> str:
    return f"of {spec}" if isinstance(spec, int) else str(list(spec))


def _unaligned(axis: int, what: str) -> VirtualArrayAccessError:
    return VirtualArrayAccessError(
        f"cannot select {what} on axis {axis} of a virtual array: "
        "only selections of whole chunks keep references valid",
        hint="Select on chunk boundaries, or load the variable to index it freely",
    )
