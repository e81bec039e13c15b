"""The numpy functions xarray calls on virtual arrays to concatenate, stack and broadcast them.

Each one works on chunk manifests only. Arrays can be joined only if every chunk of the
result decodes with the same metadata, so mismatched dtypes, codecs, chunk shapes, fill values
or CF packing raise :class:`~virtualize.errors.ConcatenationError` naming both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.array_utils import normalize_axis_index

from virtualize.errors import ConcatenationError, VirtualArrayAccessError
from virtualize.manifests.array import ManifestArray, implements
from virtualize.manifests.grid import (
    AxisGrid,
    ChunkGrid,
    axis_edges,
    regularize,
    tiles_exactly,
)
from virtualize.manifests.manifest import concatenate_manifests, stack_manifests

__all__ = ["JoinedGrid", "check_combinable", "concatenate_metadata"]

#: Attributes that change how stored numbers decode; they must agree to join arrays.
#: ``units`` and ``calendar`` included: times stored as "days since <each file's start>"
#: would otherwise all decode with the first file's epoch.
DECODING_ATTRIBUTES = (
    "scale_factor",
    "add_offset",
    "_FillValue",
    "missing_value",
    "_Unsigned",
    "units",
    "calendar",
)


def _describe(array: ManifestArray) -> str:
    urls = array.manifest.urls
    if not urls:
        return "an array with no file references"
    return urls[0] if len(urls) == 1 else f"{urls[0]} (+{len(urls) - 1} more files)"


def _attr_equal(first: Any, second: Any) -> bool:
    if first is None or second is None:
        return first is second
    a, b = np.asarray(first), np.asarray(second)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def check_combinable(arrays: Sequence[ManifestArray], *, axis: int | None = None) -> None:
    """Raise :class:`ConcatenationError` unless ``arrays`` decode with the same metadata.

    Parameters
    ----------
    arrays
        The arrays to join.
    axis
        The concatenation axis, whose length may differ; None for stacking (every shape must
        match).
    """
    first = arrays[0]
    for other in arrays[1:]:
        problems = []
        if other.dtype != first.dtype:
            problems.append(f"dtype {first.dtype} vs {other.dtype}")
        if other.ndim == first.ndim:
            for dim, (a, b) in enumerate(zip(first.chunk_grid, other.chunk_grid, strict=True)):
                if dim != axis and a != b:
                    problems.append(
                        f"chunk shape on axis {dim}: {_axis_text(a)} vs {_axis_text(b)}"
                    )
        if other.metadata.codecs != first.metadata.codecs:
            problems.append(
                f"codecs {_codec_names(first)} vs {_codec_names(other)}"
                if _codec_names(first) != _codec_names(other)
                else "codec configurations differ"
            )
        if not _attr_equal(first.metadata.fill_value, other.metadata.fill_value):
            problems.append(
                f"fill value {first.metadata.fill_value!r} vs {other.metadata.fill_value!r}"
            )
        first_attrs = first.metadata.attributes
        other_attrs = other.metadata.attributes
        for name in DECODING_ATTRIBUTES:
            if not _attr_equal(first_attrs.get(name), other_attrs.get(name)):
                problems.append(f"{name} {first_attrs.get(name)!r} vs {other_attrs.get(name)!r}")
        if other.ndim != first.ndim:
            problems.append(f"{first.ndim} vs {other.ndim} dimensions")
        else:
            for dim, (a, b) in enumerate(zip(first.shape, other.shape, strict=True)):
                if dim != axis and a != b:
                    problems.append(f"length {a} vs {b} on axis {dim}")
        if problems:
            raise ConcatenationError(
                f"cannot join {_describe(first)} with {_describe(other)}: " + "; ".join(problems),
                hint=(
                    "Their chunks decode differently, so joining them would give wrong numbers; "
                    "keep them in separate datasets or re-encode one side"
                ),
            )


def _axis_text(axis: AxisGrid) -> str:
    if isinstance(axis, int):
        return str(axis)
    return str(list(axis)) if len(axis) <= 4 else str(list(axis[:3]))[:-1] + ", ...]"


def _codec_names(array: ManifestArray) -> list[str]:
    names = []
    for codec in array.metadata.codecs:
        document = codec.to_dict()
        name = document.get("name") if isinstance(document, dict) else None
        names.append(str(name) if name is not None else type(codec).__name__)
    return names


def _as_manifest_arrays(arrays: Sequence[Any], function: str) -> list[ManifestArray]:
    out = []
    for array in arrays:
        if not isinstance(array, ManifestArray):
            raise VirtualArrayAccessError(
                f"np.{function} of a virtual array with a {type(array).__name__}",
                hint=(
                    "Every input must be virtual; load the other variables too, or make them "
                    "virtual, or drop them"
                ),
            )
        out.append(array)
    return out


@implements(np.concatenate)
def concatenate(arrays: Sequence[Any], /, axis: int | None = 0) -> ManifestArray:
    """Concatenate virtual arrays along an existing axis."""
    if axis is None:
        raise VirtualArrayAccessError("np.concatenate with axis=None flattens chunks")
    virtual = _as_manifest_arrays(arrays, "concatenate")
    if len(virtual) == 1:
        return virtual[0]
    first = virtual[0]
    axis = normalize_axis_index(axis, first.ndim)
    joined = concatenate_metadata(virtual, axis)
    manifest = concatenate_manifests([a.manifest for a in virtual], axis)
    metadata = first.with_metadata(shape=joined.shape, chunk_grid=joined.grid)
    return ManifestArray(metadata, manifest)


class JoinedGrid(NamedTuple):
    """The shape and chunk grid of arrays joined along an axis."""

    shape: tuple[int, ...]
    grid: ChunkGrid


def concatenate_metadata(arrays: Sequence[ManifestArray], axis: int) -> JoinedGrid:
    """Check that ``arrays`` can be joined end to end along ``axis`` and return the joined
    shape and chunk grid (rectilinear along ``axis`` where their lengths or chunks differ).

    Raises
    ------
    ConcatenationError
        The arrays decode differently, or one that is not last ends in a partial chunk.
    """
    check_combinable(arrays, axis=axis)
    for position, array in enumerate(arrays[:-1]):
        if not tiles_exactly(array.chunk_grid[axis], array.shape[axis]):
            raise ConcatenationError(
                f"its length {array.shape[axis]} on axis {axis} ends in a partial chunk (chunks "
                f"of {_axis_text(array.chunk_grid[axis])}), stored padded to a full chunk, so "
                f"{_describe(arrays[position + 1])} cannot follow it",
                url=array.manifest.urls[-1] if array.manifest.urls else None,
                hint=(
                    "Only the last file along the axis may end in a partial chunk; files whose "
                    "length is a whole number of their chunks (or contiguous ones) can be "
                    "joined in any order"
                ),
            )
    shape = list(arrays[0].shape)
    shape[axis] = sum(a.shape[axis] for a in arrays)
    grid = list(arrays[0].chunk_grid)
    grid[axis] = _joined_axis(arrays, axis)
    return JoinedGrid(tuple(shape), regularize(tuple(grid), shape))


def _joined_axis(arrays: Sequence[ManifestArray], axis: int) -> AxisGrid:
    """The chunk lengths along ``axis`` of the arrays joined end to end: regular if they all
    share one chunk length and tile it (bar the last), else their edges in order."""
    lengths = {a.chunk_grid[axis] for a in arrays}
    if len(lengths) == 1 and isinstance(first := next(iter(lengths)), int):
        return first
    edges: list[int] = []
    for array in arrays:
        edges.extend(axis_edges(array.chunk_grid[axis], array.shape[axis]))
    return tuple(edges)


@implements(np.stack)
def stack(arrays: Sequence[Any], /, axis: int = 0) -> ManifestArray:
    """Stack virtual arrays along a new axis (whose chunks hold one element)."""
    virtual = _as_manifest_arrays(arrays, "stack")
    first = virtual[0]
    axis = normalize_axis_index(axis, first.ndim + 1)
    check_combinable(virtual, axis=None)
    manifest = stack_manifests([a.manifest for a in virtual], axis)
    shape = (*first.shape[:axis], len(virtual), *first.shape[axis:])
    chunks = (*first.chunk_grid[:axis], 1, *first.chunk_grid[axis:])
    names = first.metadata.dimension_names
    new_names = (*names[:axis], None, *names[axis:]) if names else None
    axis_map = [*range(axis), None, *range(axis, first.ndim)]
    metadata = first.with_metadata(
        shape=shape, chunk_grid=chunks, dimension_names=new_names, axis_map=axis_map
    )
    return ManifestArray(metadata, manifest)


@implements(np.expand_dims)
def expand_dims(array: ManifestArray, /, axis: int | tuple[int, ...]) -> ManifestArray:
    """Add axes of length 1."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    ndim = array.ndim + len(axes)
    axes = tuple(sorted(normalize_axis_index(a, ndim) for a in axes))
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axis in expand_dims: {axis}")
    shape = list(array.shape)
    chunks: list[AxisGrid] = list(array.chunk_grid)
    names = list(array.metadata.dimension_names or [None] * array.ndim)
    grid = list(array.manifest.shape_chunk_grid)
    for a in axes:
        shape.insert(a, 1)
        chunks.insert(a, 1)
        names.insert(a, None)
        grid.insert(a, 1)
    manifest = array.manifest.reshape_grid(tuple(grid))
    old_axes = iter(range(array.ndim))
    metadata = array.with_metadata(
        shape=tuple(shape),
        chunk_grid=tuple(chunks),
        dimension_names=names if any(n is not None for n in names) else None,
        axis_map=[None if a in axes else next(old_axes) for a in range(ndim)],
    )
    return ManifestArray(metadata, manifest)


@implements(np.broadcast_to)
def broadcast_to(array: ManifestArray, /, shape: tuple[int, ...]) -> ManifestArray:
    """Broadcast by repeating chunk references: new leading axes and length-1 axes whose
    chunks hold one element."""
    shape = tuple(int(n) for n in shape)
    if shape == array.shape:
        return array
    if len(shape) < array.ndim:
        raise ValueError(f"cannot broadcast shape {array.shape} to {shape}")
    lead = len(shape) - array.ndim
    expanded = expand_dims(array, tuple(range(lead))) if lead else array
    chunks: list[AxisGrid] = list(expanded.chunk_grid)
    grid = list(expanded.manifest.shape_chunk_grid)
    for axis, (old, new) in enumerate(zip(expanded.shape, shape, strict=True)):
        if old == new:
            continue
        if old != 1:
            raise ValueError(f"cannot broadcast shape {array.shape} to {shape}")
        if chunks[axis] not in (1, (1,)):
            raise VirtualArrayAccessError(
                f"broadcasting axis {axis} whose chunk holds {chunks[axis]} elements"
            )
        chunks[axis] = 1
        grid[axis] = new
    manifest = expanded.manifest.broadcast_grid(tuple(grid))
    return ManifestArray(expanded.with_metadata(shape=shape, chunk_grid=tuple(chunks)), manifest)


@implements(np.result_type)
def result_type(*arrays_and_dtypes: Any) -> np.dtype[Any]:
    """The dtype numpy would give; virtual arrays contribute their dtype."""
    return np.result_type(
        *(a.dtype if isinstance(a, ManifestArray) else a for a in arrays_and_dtypes)
    )


@implements(np.full_like)
def full_like(
    array: ManifestArray,
    /,
    fill_value: Any,
    dtype: Any = None,
    order: str = "K",
    subok: bool = True,
    shape: Any = None,
    **kwargs: Any,
) -> np.ndarray:
    """A numpy array of ``fill_value`` shaped like ``array``: needs no values.

    xarray calls it to build the "null" mask of integer variables when it compares variables
    (``xr.merge``), so virtual variables are then compared by reference.
    """
    return np.full(
        array.shape if shape is None else shape,
        fill_value,
        dtype=array.dtype if dtype is None else dtype,
    )


@implements(np.shape)
def shape(array: ManifestArray) -> tuple[int, ...]:
    return array.shape


@implements(np.ndim)
def ndim(array: ManifestArray) -> int:
    return array.ndim


@implements(np.size)
def size(array: ManifestArray) -> int:
    return array.size
