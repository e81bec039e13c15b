"""Chunk grids of virtual arrays: regular, or rectilinear along axes where files were joined.

A grid is described per axis by either an ``int`` (a regular chunk length that repeats) or a
tuple of chunk lengths (the edges of a rectilinear axis), exactly as zarr's
``RectilinearChunkGridMetadata.chunk_shapes``. Rectilinear axes appear when files of unequal
length are concatenated (monthly files of daily data: 31, 28, 31, ... days); only the last
edge may reach past the end of the axis, as in a regular grid's last chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
from zarr.core.metadata.v3 import (
    ArrayV3Metadata,
    RectilinearChunkGridMetadata,
    RegularChunkGridMetadata,
)

__all__ = [
    "AxisGrid",
    "ChunkGrid",
    "axis_edges",
    "chunk_grid_of",
    "chunk_sizes",
    "grid_document",
    "grid_shape",
    "is_regular",
    "tiles_exactly",
]

#: One axis: a regular chunk length, or the lengths of its chunks.
AxisGrid = int | tuple[int, ...]
#: A whole grid, one entry per axis.
ChunkGrid = tuple[AxisGrid, ...]

# zarr gates rectilinear grids behind an experimental flag, checked whenever metadata is read
# or stored. Virtual datasets of unequal-length files need them, and every reader in this
# process (ManifestStore, Icechunk, xarray) must accept what virtualize produces.
zarr.config.set({"array.rectilinear_chunks": True})


def chunk_grid_of(metadata: ArrayV3Metadata) -> ChunkGrid:
    """The chunk grid of zarr v3 array metadata, one entry per axis."""
    grid = metadata.chunk_grid
    if isinstance(grid, RegularChunkGridMetadata):
        return tuple(int(c) for c in grid.chunk_shape)
    if isinstance(grid, RectilinearChunkGridMetadata):
        # Axes whose edges repeat one length are regular, however the document spells them
        # (Icechunk needs them spelled out), so grids compare equal by what they mean.
        return regularize(
            tuple(
                int(spec) if isinstance(spec, int) else tuple(int(e) for e in spec)
                for spec in grid.chunk_shapes
            ),
            metadata.shape,
        )
    raise TypeError(f"unsupported chunk grid {grid!r}")


def is_regular(grid: ChunkGrid) -> bool:
    """Whether every axis has one repeating chunk length."""
    return all(isinstance(axis, int) for axis in grid)


def axis_edges(axis: AxisGrid, length: int) -> tuple[int, ...]:
    """The chunk lengths along one axis of ``length`` elements (the last may reach past it)."""
    if isinstance(axis, int):
        return (axis,) * (-(-length // axis)) if axis else ()
    return axis


def grid_shape(shape: Sequence[int], grid: ChunkGrid) -> tuple[int, ...]:
    """How many chunks lie along each axis."""
    return tuple(
        (-(-int(n) // axis) if axis else 0) if isinstance(axis, int) else len(axis)
        for n, axis in zip(shape, grid, strict=True)
    )


def chunk_sizes(shape: Sequence[int], grid: ChunkGrid) -> tuple[tuple[int, ...], ...]:
    """The number of elements of the array in each chunk, per axis (like dask's ``chunks``)."""
    sizes = []
    for n, axis in zip(shape, grid, strict=True):
        edges = np.asarray(axis_edges(axis, int(n)), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(edges)[:-1]]) if edges.size else edges
        sizes.append(tuple(int(s) for s in np.minimum(edges, int(n) - starts)))
    return tuple(sizes)


def tiles_exactly(axis: AxisGrid, length: int) -> bool:
    """Whether the chunks of an axis end exactly at its end (no partial last chunk)."""
    if isinstance(axis, int):
        return (axis > 0 and length % axis == 0) or length == 0
    return sum(axis) == length


def check_axis(axis: AxisGrid, length: int) -> None:
    """Raise ValueError unless the edges of a rectilinear axis cover ``length`` elements with
    only the last edge reaching past the end."""
    if isinstance(axis, int):
        return
    if not axis or any(edge < 1 for edge in axis):
        raise ValueError(f"chunk edges {axis} must be positive")
    if (sum(axis[:-1]) >= length and length > 0) or sum(axis) < length:
        raise ValueError(f"chunk edges {list(axis)} do not cover an axis of {length} elements")


def grid_document(grid: ChunkGrid, shape: Sequence[int]) -> dict[str, Any]:
    """The zarr v3 ``chunk_grid`` document: regular when every axis is, else rectilinear with
    every axis spelled out (Icechunk does not read the bare-integer shorthand)."""
    if is_regular(grid):
        return {"name": "regular", "configuration": {"chunk_shape": list(grid)}}
    edges = tuple(axis_edges(axis, int(n)) or (1,) for axis, n in zip(grid, shape, strict=True))
    document = RectilinearChunkGridMetadata(chunk_shapes=edges).to_dict()
    return {
        "name": "rectilinear",
        "configuration": {
            "kind": "inline",
            "chunk_shapes": [
                list(spec) if isinstance(spec, list | tuple) else [spec]
                for spec in document["configuration"]["chunk_shapes"]
            ],
        },
    }


def regularize(grid: ChunkGrid, shape: Sequence[int]) -> ChunkGrid:
    """Turn rectilinear axes whose edges are one repeating length (bar a last partial one
    that the length explains) back into regular axes."""
    out: list[AxisGrid] = []
    for axis, n in zip(grid, shape, strict=True):
        if isinstance(axis, int) or not axis:
            out.append(axis)
            continue
        first = axis[0]
        if all(edge == first for edge in axis) and len(axis) == -(-int(n) // first):
            out.append(first)
        else:
            out.append(axis)
    return tuple(out)
