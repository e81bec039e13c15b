"""ManifestArray: zarr v3 array metadata plus a ChunkManifest, as a duck array for xarray."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from zarr.core.metadata.v3 import ArrayV3Metadata

from virtualize.errors import VirtualArrayAccessError
from virtualize.manifests.grid import (
    ChunkGrid,
    check_axis,
    chunk_grid_of,
    chunk_sizes,
    grid_document,
    grid_shape,
    is_regular,
)
from virtualize.manifests.manifest import ChunkManifest

__all__ = ["ManifestArray"]

_HANDLED_FUNCTIONS: dict[Callable[..., Any], Callable[..., Any]] = {}


def implements(numpy_function: Callable[..., Any]) -> Callable[[Callable[..., Any]], Any]:
    """Register a ManifestArray implementation of a numpy function."""

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        _HANDLED_FUNCTIONS[numpy_function] = func
        return func

    return decorator


class ManifestArray:
    """A virtual array: where its chunks are, how to decode them, and no data.

    xarray wraps it like any duck array, so virtual datasets can be concatenated, stacked,
    merged and combined with xarray's own functions. Only operations that rearrange whole
    chunks are possible; anything that needs values raises
    :class:`~virtualize.errors.VirtualArrayAccessError`.

    Parameters
    ----------
    metadata
        The zarr v3 metadata of the array (shape, data type, chunk grid, codecs, fill value,
        attributes, dimension names). The chunk grid is regular, or rectilinear along axes
        where files of unequal length were joined.
    manifest
        Where each chunk's bytes are; its grid must match the metadata's chunk grid.
    """

    __slots__ = ("_dtype", "_grid", "_manifest", "_metadata", "_shape")

    def __init__(self, metadata: ArrayV3Metadata, manifest: ChunkManifest) -> None:
        from virtualize.errors import ManifestError

        chunk_grid = chunk_grid_of(metadata)
        try:
            for axis, length in zip(chunk_grid, metadata.shape, strict=True):
                check_axis(axis, int(length))
        except ValueError as error:
            raise ManifestError(f"{error} (array of shape {metadata.shape})") from None
        grid = grid_shape(metadata.shape, chunk_grid)
        if manifest.shape_chunk_grid != grid:
            raise ManifestError(
                f"manifest grid {manifest.shape_chunk_grid} does not match the chunk grid "
                f"{grid} of an array of shape {metadata.shape}"
            )
        self._metadata = metadata
        self._manifest = manifest
        self._grid = chunk_grid
        # xarray asks for these constantly (tens of thousands of times in one combine)
        self._shape = tuple(int(n) for n in metadata.shape)
        self._dtype: np.dtype[Any] = np.dtype(metadata.data_type.to_native_dtype())

    # -- array attributes ---------------------------------------------------------------------

    @property
    def metadata(self) -> ArrayV3Metadata:
        """The zarr v3 array metadata."""
        return self._metadata

    @property
    def manifest(self) -> ChunkManifest:
        """The chunk manifest."""
        return self._manifest

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._dtype

    # Deliberately not called ``chunks``: xarray treats any duck array with ``.chunks`` as a
    # dask-like chunked array and looks for a chunk manager to load it.
    @property
    def chunk_shape(self) -> tuple[int, ...]:
        """The chunk shape of a regular grid (see :attr:`chunk_grid` for rectilinear ones)."""
        if not is_regular(self._grid):
            raise ValueError(
                f"a rectilinear chunk grid {self._grid} has no single chunk shape; "
                "use chunk_grid or chunk_sizes"
            )
        return self._grid  # type: ignore[return-value]

    @property
    def chunk_grid(self) -> ChunkGrid:
        """Per axis, the regular chunk length (``int``) or the tuple of chunk lengths of a
        rectilinear axis."""
        return self._grid

    @property
    def chunk_sizes(self) -> tuple[tuple[int, ...], ...]:
        """Per axis, how many elements of the array each chunk holds (like dask's ``chunks``;
        the last chunk of an axis may be partial)."""
        return chunk_sizes(self.shape, self._grid)

    @property
    def nbytes(self) -> int:
        """Bytes the array would occupy if loaded, as for numpy arrays (what xarray shows).

        The memory the virtual array holds is ``array.manifest.nbytes``.
        """
        return self.size * self.dtype.itemsize

    @property
    def T(self) -> ManifestArray:
        raise _needs_data("transpose", "transposing a virtual array reorders bytes inside chunks")

    def __repr__(self) -> str:
        return (
            f"ManifestArray<shape={self.shape}, dtype={self.dtype}, chunks={_describe(self._grid)}, "
            f"nrefs={self._manifest.nrefs}>"
        )

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d virtual array")
        return self.shape[0]

    # -- numpy protocols ----------------------------------------------------------------------

    def __array_function__(
        self,
        func: Callable[..., Any],
        types: tuple[type, ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if func not in _HANDLED_FUNCTIONS:
            raise _needs_data(f"np.{func.__name__}")
        return _HANDLED_FUNCTIONS[func](*args, **kwargs)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if ufunc is np.equal and method == "__call__" and len(inputs) == 2:
            first, second = inputs
            if isinstance(first, ManifestArray) and isinstance(second, ManifestArray):
                return first.__eq__(second)
        raise _needs_data(f"np.{ufunc.__name__}")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise _needs_data(
            "np.asarray",
            "load the variable (loadable_variables=[...]) or read the store with xarray",
        )

    def __eq__(self, other: object) -> Any:
        """Per element, whether both arrays reference the same bytes (no data is read)."""
        if not isinstance(other, ManifestArray):
            raise _needs_data("==", "only two virtual arrays can be compared (by reference)")
        if self.shape != other.shape:
            return np.zeros(np.broadcast_shapes(self.shape, other.shape), dtype=bool)
        if (
            self.chunk_grid != other.chunk_grid
            or self.dtype != other.dtype
            or self._metadata.codecs != other._metadata.codecs
            or not _same_fill_value(self._metadata.fill_value, other._metadata.fill_value)
        ):
            # Missing chunks read as the fill value, so a different one changes the numbers.
            return np.zeros(self.shape, dtype=bool)
        by_chunk = self._manifest.elementwise_equal(other._manifest)
        expanded = by_chunk
        for axis, sizes in enumerate(self.chunk_sizes):
            expanded = np.repeat(expanded, sizes, axis=axis)
        return expanded

    __hash__ = None  # type: ignore[assignment]

    def astype(self, dtype: Any, /, *, copy: bool = True) -> ManifestArray:
        target = np.dtype(dtype)
        # xarray asks for "S0"/"U0" (the kind, no size) when it joins string arrays
        sizeless_same_kind = target.itemsize == 0 and target.kind == self.dtype.kind
        if target != self.dtype and not sizeless_same_kind:
            raise _needs_data(f"astype({target})", "casting changes the bytes of every chunk")
        return self

    def transpose(self, *axes: Any) -> ManifestArray:
        """Only the identity permutation: reordering axes reorders bytes inside chunks."""
        order = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], tuple | list) else axes
        if not order or tuple(order) == tuple(range(self.ndim)):
            return self
        raise _needs_data("transpose", "reordering axes reorders bytes inside every chunk")

    def copy(self) -> ManifestArray:
        return ManifestArray(self._metadata, self._manifest)

    def __copy__(self) -> ManifestArray:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> ManifestArray:
        return self.copy()

    def __getitem__(self, key: Any) -> ManifestArray:
        from virtualize.manifests.indexing import index_manifest_array

        return index_manifest_array(self, key)

    def _arith(self, *_: Any) -> Any:
        raise _needs_data("arithmetic")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arith
    __truediv__ = __rtruediv__ = __floordiv__ = __pow__ = __neg__ = __abs__ = _arith
    __lt__ = __le__ = __gt__ = __ge__ = __ne__ = _arith

    def __bool__(self) -> bool:
        raise _needs_data("bool()")

    def __float__(self) -> float:
        raise _needs_data("float()")

    def __int__(self) -> int:
        raise _needs_data("int()")

    # -- helpers for the array API module -----------------------------------------------------

    def with_metadata(self, **changes: Any) -> ArrayV3Metadata:
        """A copy of the metadata with ``shape``, ``chunk_shape``, ``chunk_grid``,
        ``dimension_names`` or ``attributes`` replaced."""
        return replace_metadata(self._metadata, **changes)


def _needs_data(operation: str, why: str | None = None) -> VirtualArrayAccessError:
    return VirtualArrayAccessError(
        f"{operation} needs the array's values, and a virtual array holds only references"
        + (f" ({why})" if why else ""),
        hint=(
            "Load the variables you compute with (loadable_variables=[...] in "
            "open_virtual_dataset), or write the references and open them with xr.open_zarr"
        ),
    )


def _same_fill_value(first: Any, second: Any) -> bool:
    a, b = np.asarray(first), np.asarray(second)
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _describe(grid: ChunkGrid) -> str:
    """A chunk grid in a few characters: ``(10, 5)``, or ``([31, 28, ...], 5)``."""
    parts = []
    for axis in grid:
        if isinstance(axis, int):
            parts.append(str(axis))
        else:
            shown = ", ".join(map(str, axis[:3])) + (", ..." if len(axis) > 3 else "")
            parts.append(f"[{shown}]")
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def replace_metadata(metadata: ArrayV3Metadata, **changes: Any) -> ArrayV3Metadata:
    """A copy of zarr v3 metadata with some fields replaced.

    Parameters
    ----------
    metadata
        The metadata to copy.
    **changes
        Any of ``shape``, ``chunk_shape`` (a regular grid), ``chunk_grid`` (per axis an
        ``int`` or a tuple of chunk lengths), ``dimension_names``, ``attributes``,
        ``fill_value``, and ``axis_map`` when axes are added or removed: for each axis of the
        new array, the old axis it was, or None for a new axis of length 1 (removed axes
        must have chunks of one element).
    """
    document = metadata.to_dict()
    if "axis_map" in changes:
        codecs: list[Any] = list(document["codecs"])  # type: ignore[arg-type]
        document["codecs"] = _codecs_for_axes(codecs, changes.pop("axis_map"))
    shape = [int(n) for n in metadata.shape]
    if "shape" in changes:
        shape = [int(n) for n in changes.pop("shape")]
        document["shape"] = list(shape)
        if "chunk_grid" not in changes and "chunk_shape" not in changes:
            # a rectilinear document spells out edges, which depend on the shape
            changes["chunk_grid"] = chunk_grid_of(metadata)
    if "chunk_shape" in changes:
        changes["chunk_grid"] = tuple(int(c) for c in changes.pop("chunk_shape"))
    grid = tuple(changes.pop("chunk_grid")) if "chunk_grid" in changes else None
    if grid is not None:
        document["chunk_grid"] = grid_document(grid, shape)
    if "dimension_names" in changes:
        names = changes.pop("dimension_names")
        document["dimension_names"] = list(names) if names is not None else None
    if "attributes" in changes:
        document["attributes"] = dict(changes.pop("attributes"))
    if "fill_value" in changes:
        document["fill_value"] = changes.pop("fill_value")
    if changes:
        raise TypeError(f"cannot replace {sorted(changes)}")
    document.pop("storage_transformers", None)
    return ArrayV3Metadata.from_dict(document)


def _codecs_for_axes(codecs: list[Any], axis_map: Sequence[int | None]) -> list[Any]:
    """Codec documents after axes of one element were added or removed: a ``transpose``
    order is renumbered (such axes don't change the order of the chunk's bytes, so new
    ones go first)."""
    new_position = {old: new for new, old in enumerate(axis_map) if old is not None}
    added = [new for new, old in enumerate(axis_map) if old is None]
    result = []
    for codec in codecs:
        if isinstance(codec, dict) and codec.get("name") == "transpose":
            order = codec["configuration"]["order"]
            kept = [new_position[axis] for axis in order if axis in new_position]
            codec = {**codec, "configuration": {**codec["configuration"], "order": [*added, *kept]}}
        result.append(codec)
    return result
