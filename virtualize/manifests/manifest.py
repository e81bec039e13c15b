"""ChunkManifest: where every chunk of one array lives, held as columns.

For a chunk grid of shape ``G`` the manifest holds three arrays of shape ``G`` — ``path_ids``
(uint32, an index into a table of unique urls, or a sentinel), ``offsets`` (uint64) and
``lengths`` (uint64) — plus the url table, what each url looked like when it was parsed
(:class:`SourceInfo`) and a small map of chunks whose bytes are held inline. That is 20 bytes
per chunk, with each url stored once per file rather than once per chunk.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from virtualize.errors import ManifestError

__all__ = [
    "INLINE",
    "MISSING",
    "ChunkEntry",
    "ChunkManifest",
    "RefBatch",
    "SourceInfo",
]

#: ``path_ids`` value of a chunk that has no bytes (it reads as the fill value).
MISSING = np.uint32(0xFFFFFFFF)
#: ``path_ids`` value of a chunk whose bytes are held in the manifest itself.
INLINE = np.uint32(0xFFFFFFFE)
_MAX_PATH_ID = int(INLINE) - 1


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What a source file looked like when it was parsed (from obstore's ``head``).

    Writers record it with each reference so that a file changed after parsing is detected
    when the reference is read.
    """

    size: int | None = None
    etag: str | None = None
    last_modified: datetime | None = None


class ChunkEntry(NamedTuple):
    """One chunk's reference: ``url`` and byte range, or inline ``data``."""

    url: str | None
    offset: int
    length: int
    data: bytes | None = None


class RefBatch(NamedTuple):
    """A columnar batch of references, as yielded by :meth:`ChunkManifest.iter_batches`.

    ``indices`` are flat (C-order) positions in the chunk grid; ``path_ids`` index
    :attr:`ChunkManifest.urls`. Missing and inline chunks are not included.
    """

    indices: npt.NDArray[np.intp]
    path_ids: npt.NDArray[np.uint32]
    offsets: npt.NDArray[np.uint64]
    lengths: npt.NDArray[np.uint64]


class ChunkManifest:
    """The references of every chunk of one array, columnar and dictionary-encoded.

    Parameters
    ----------
    urls
        The table of unique source urls; ``path_ids`` index into it.
    path_ids
        uint32 array shaped like the chunk grid: an index into ``urls``, :data:`MISSING`, or
        :data:`INLINE`.
    offsets, lengths
        uint64 arrays shaped like ``path_ids``: the byte range of each chunk in its source.
    inline
        Bytes of inlined chunks, keyed by flat (C-order) chunk index.
    sources
        What each url looked like at parse time, parallel to ``urls``.
    validate
        Check shapes, sentinels and the inline map (on by default; constructors that build
        consistent arrays themselves turn it off).
    """

    __slots__ = ("_inline", "_lengths", "_offsets", "_path_ids", "_sources", "_urls")

    def __init__(
        self,
        urls: Sequence[str],
        path_ids: npt.ArrayLike,
        offsets: npt.ArrayLike,
        lengths: npt.ArrayLike,
        *,
        inline: Mapping[int, bytes] | None = None,
        sources: Sequence[SourceInfo | None] | None = None,
        validate: bool = True,
    ) -> None:
        self._urls: tuple[str, ...] = tuple(urls)
        self._path_ids = np.asarray(path_ids, dtype=np.uint32)
        self._offsets = np.asarray(offsets, dtype=np.uint64)
        self._lengths = np.asarray(lengths, dtype=np.uint64)
        self._inline: dict[int, bytes] = dict(inline or {})
        self._sources: tuple[SourceInfo | None, ...] = (
            tuple(sources) if sources is not None else (None,) * len(self._urls)
        )
        if validate:
            self._validate()

    def _validate(self) -> None:
        shape = self._path_ids.shape
        if self._offsets.shape != shape or self._lengths.shape != shape:
            raise ManifestError(
                f"path_ids, offsets and lengths must share one shape, got {shape}, "
                f"{self._offsets.shape} and {self._lengths.shape}"
            )
        if len(self._sources) != len(self._urls):
            raise ManifestError("sources must be parallel to urls")
        if len(self._urls) > _MAX_PATH_ID:
            raise ManifestError(f"a manifest holds at most {_MAX_PATH_ID} distinct urls")
        if len(set(self._urls)) != len(self._urls):
            raise ManifestError("the url table must not repeat a url")
        real = self._path_ids < INLINE
        if real.any() and int(self._path_ids[real].max()) >= len(self._urls):
            raise ManifestError("a path id points past the end of the url table")
        inline_positions = np.flatnonzero(self._path_ids == INLINE)
        if set(inline_positions.tolist()) != set(self._inline):
            raise ManifestError("the inline map must hold exactly the chunks marked INLINE")

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_arrays(
        cls,
        *,
        paths: npt.ArrayLike,
        offsets: npt.ArrayLike,
        lengths: npt.ArrayLike,
        sources: Mapping[str, SourceInfo] | None = None,
    ) -> ChunkManifest:
        """Build a manifest from per-chunk arrays of urls, offsets and lengths.

        Parameters
        ----------
        paths
            Array of url strings shaped like the chunk grid; ``""`` marks a missing chunk.
        offsets, lengths
            Integer arrays of the same shape.
        sources
            Optional parse-time information per url.
        """
        paths_array = np.asarray(paths, dtype=np.str_)
        table, inverse = np.unique(paths_array.ravel(), return_inverse=True)
        urls = [str(url) for url in table]
        path_ids = inverse.astype(np.uint32).reshape(paths_array.shape)
        if urls and urls[0] == "":
            missing = path_ids == 0
            path_ids = path_ids - np.uint32(1)
            path_ids[missing] = MISSING
            urls = urls[1:]
        offsets_array = np.asarray(offsets, dtype=np.uint64)
        lengths_array = np.asarray(lengths, dtype=np.uint64)
        if offsets_array.shape != paths_array.shape or lengths_array.shape != paths_array.shape:
            raise ManifestError(
                f"paths, offsets and lengths must share one shape, got {paths_array.shape}, "
                f"{offsets_array.shape} and {lengths_array.shape}"
            )
        info = sources or {}
        return cls(
            urls,
            path_ids,
            np.where(path_ids == MISSING, np.uint64(0), offsets_array),
            np.where(path_ids == MISSING, np.uint64(0), lengths_array),
            sources=[info.get(url) for url in urls],
        )

    @classmethod
    def from_single_url(
        cls,
        url: str,
        offsets: npt.ArrayLike,
        lengths: npt.ArrayLike,
        *,
        present: npt.ArrayLike | None = None,
        source: SourceInfo | None = None,
    ) -> ChunkManifest:
        """Build the manifest of an array whose chunks all come from one file.

        Parameters
        ----------
        url
            The source url.
        offsets, lengths
            Arrays shaped like the chunk grid.
        present
            Boolean array of the same shape, False where a chunk is missing (default: all
            present).
        source
            Parse-time information about ``url``.
        """
        # np.asarray, not np.ascontiguousarray: the latter turns a 0-d grid into 1-d.
        offsets_array = np.asarray(offsets, dtype=np.uint64, order="C")
        lengths_array = np.asarray(lengths, dtype=np.uint64, order="C")
        if present is None:
            path_ids = np.zeros(offsets_array.shape, dtype=np.uint32)
        else:
            mask = np.asarray(present, dtype=bool)
            if mask.shape != offsets_array.shape:
                raise ManifestError(
                    f"present must be shaped like offsets {offsets_array.shape}, got {mask.shape}"
                )
            path_ids = np.where(mask, np.uint32(0), MISSING).astype(np.uint32, copy=False)
            if not mask.all():
                offsets_array = np.where(mask, offsets_array, np.uint64(0))
                lengths_array = np.where(mask, lengths_array, np.uint64(0))
        return cls([url], path_ids, offsets_array, lengths_array, sources=[source])

    @classmethod
    def empty(cls, grid_shape: tuple[int, ...]) -> ChunkManifest:
        """A manifest in which every chunk is missing."""
        return cls(
            [],
            np.full(grid_shape, MISSING, dtype=np.uint32),
            np.zeros(grid_shape, dtype=np.uint64),
            np.zeros(grid_shape, dtype=np.uint64),
            validate=False,
        )

    @classmethod
    def from_entries(
        cls, entries: Mapping[str, Mapping[str, Any]], grid_shape: tuple[int, ...] | None = None
    ) -> ChunkManifest:
        """Build a manifest from VirtualiZarr-style entries ``{"0.1": {"path", "offset", "length"}}``.

        Parameters
        ----------
        entries
            Chunk keys (indices joined by ``.``) to ``path``/``offset``/``length`` mappings.
        grid_shape
            The chunk grid's shape; inferred from the largest key when omitted.
        """
        keys = [tuple(int(i) for i in key.split(".")) if key else () for key in entries]
        if grid_shape is None:
            ndim = len(keys[0]) if keys else 0
            grid_shape = tuple(max(k[d] for k in keys) + 1 for d in range(ndim)) if keys else ()
        paths = np.full(grid_shape, "", dtype=object)
        offsets = np.zeros(grid_shape, dtype=np.uint64)
        lengths = np.zeros(grid_shape, dtype=np.uint64)
        for key, entry in zip(keys, entries.values(), strict=True):
            if len(key) != len(grid_shape) or not all(
                0 <= i < n for i, n in zip(key, grid_shape, strict=True)
            ):
                raise ManifestError(
                    f"chunk key {'.'.join(map(str, key))!r} lies outside the chunk grid "
                    f"{grid_shape}"
                )
            paths[key] = entry["path"]
            offsets[key] = entry["offset"]
            lengths[key] = entry["length"]
        return cls.from_arrays(paths=paths.astype(np.str_), offsets=offsets, lengths=lengths)

    # -- properties ---------------------------------------------------------------------------

    @property
    def urls(self) -> tuple[str, ...]:
        """The table of unique source urls."""
        return self._urls

    @property
    def sources(self) -> tuple[SourceInfo | None, ...]:
        """Parse-time information per url, parallel to :attr:`urls`."""
        return self._sources

    @property
    def path_ids(self) -> npt.NDArray[np.uint32]:
        """Per-chunk index into :attr:`urls`, or :data:`MISSING` / :data:`INLINE`."""
        return self._path_ids

    @property
    def offsets(self) -> npt.NDArray[np.uint64]:
        """Per-chunk byte offsets."""
        return self._offsets

    @property
    def lengths(self) -> npt.NDArray[np.uint64]:
        """Per-chunk byte lengths."""
        return self._lengths

    @property
    def inline(self) -> Mapping[int, bytes]:
        """Bytes of inlined chunks keyed by flat chunk index."""
        return self._inline

    @property
    def shape_chunk_grid(self) -> tuple[int, ...]:
        """The shape of the chunk grid."""
        return tuple(int(n) for n in self._path_ids.shape)

    @property
    def ndim_chunk_grid(self) -> int:
        """The number of dimensions of the chunk grid."""
        return self._path_ids.ndim

    @property
    def nrefs(self) -> int:
        """How many chunks reference bytes in a source file."""
        return int(np.count_nonzero(self._path_ids < INLINE))

    @property
    def ninline(self) -> int:
        """How many chunks are held inline."""
        return len(self._inline)

    @property
    def nbytes(self) -> int:
        """Bytes held in memory: the columns, the url table, the source info and inline data."""
        total = self._path_ids.nbytes + self._offsets.nbytes + self._lengths.nbytes
        total += sum(sys.getsizeof(url) for url in self._urls)
        total += sys.getsizeof(self._urls) + sys.getsizeof(self._sources)
        total += sum(sys.getsizeof(info) for info in self._sources if info is not None)
        total += sys.getsizeof(self._inline)
        total += sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in self._inline.items())
        return int(total)

    # -- access -------------------------------------------------------------------------------

    def __getitem__(self, index: tuple[int, ...] | int) -> ChunkEntry | None:
        """The reference of the chunk at grid position ``index`` (None if missing)."""
        index = self._chunk_position(index)
        path_id = self._path_ids[index]
        if path_id == MISSING:
            return None
        if path_id == INLINE:
            flat = int(np.ravel_multi_index(index, self._path_ids.shape)) if index else 0
            data = self._inline[flat]
            return ChunkEntry(None, 0, len(data), data)
        return ChunkEntry(
            self._urls[int(path_id)], int(self._offsets[index]), int(self._lengths[index])
        )

    def _chunk_position(self, index: tuple[int, ...] | int) -> tuple[int, ...]:
        """``index`` as a tuple of non-negative grid positions, or IndexError."""
        items = (index,) if isinstance(index, (int, np.integer)) else tuple(index)
        shape = self._path_ids.shape
        if len(items) != len(shape) or not all(isinstance(i, (int, np.integer)) for i in items):
            raise IndexError(
                f"a chunk position needs {len(shape)} integers for the grid {shape}, got {index!r}"
            )
        position = tuple(
            int(i) + n if int(i) < 0 else int(i) for i, n in zip(items, shape, strict=True)
        )
        if not all(0 <= i < n for i, n in zip(position, shape, strict=True)):
            raise IndexError(f"chunk position {index!r} is outside the grid {shape}")
        return position

    def iter_batches(self, batch_size: int = 1 << 20) -> Iterator[RefBatch]:
        """Yield the file references in columnar batches, in C order of the chunk grid.

        Nothing is built per chunk: each batch is four numpy arrays.

        Parameters
        ----------
        batch_size
            Chunk-grid positions covered by each batch.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        flat_ids = self._path_ids.reshape(-1)
        flat_offsets = self._offsets.reshape(-1)
        flat_lengths = self._lengths.reshape(-1)
        for start in range(0, flat_ids.size, batch_size):
            ids = flat_ids[start : start + batch_size]
            keep = np.flatnonzero(ids < INLINE)
            yield RefBatch(
                keep + start,
                ids[keep],
                flat_offsets[start : start + batch_size][keep],
                flat_lengths[start : start + batch_size][keep],
            )

    def paths_array(self) -> npt.NDArray[np.str_]:
        """Per-chunk urls as a string array (``""`` for missing and inline chunks)."""
        table = np.array([*self._urls, "", ""], dtype=np.str_)
        ids = self._path_ids.astype(np.int64)
        ids = np.where(self._path_ids == MISSING, len(self._urls), ids)
        ids = np.where(self._path_ids == INLINE, len(self._urls) + 1, ids)
        return table[ids]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChunkManifest):
            return NotImplemented
        return bool(self.elementwise_equal(other).all())

    __hash__ = None  # type: ignore[assignment]

    def elementwise_equal(self, other: ChunkManifest) -> npt.NDArray[np.bool_]:
        """Per chunk, whether both manifests reference the same bytes.

        Two missing chunks are equal whatever offsets they carry; two inline chunks are equal
        when they hold the same bytes.
        """
        if self.shape_chunk_grid != other.shape_chunk_grid:
            raise ManifestError(
                f"cannot compare chunk grids {self.shape_chunk_grid} and {other.shape_chunk_grid}"
            )
        _, _, (mine, yours) = merge_url_tables([self, other])
        equal = mine == yours
        real = equal & (mine < INLINE)
        real &= self._offsets == other._offsets
        real &= self._lengths == other._lengths
        equal = np.where(mine < INLINE, real, equal)
        for flat in np.flatnonzero(equal & (mine == INLINE)):
            position = np.unravel_index(flat, self._path_ids.shape)
            equal[position] = self._inline.get(int(flat)) == other._inline.get(int(flat))
        return np.asarray(equal, dtype=bool)

    def __repr__(self) -> str:
        return (
            f"ChunkManifest(grid={self.shape_chunk_grid}, nrefs={self.nrefs}, "
            f"inline={self.ninline}, urls={len(self._urls)})"
        )

    # -- transformations ----------------------------------------------------------------------

    def rename_paths(self, new: str | Mapping[str, str] | Any) -> ChunkManifest:
        """Return a manifest whose urls are replaced.

        Parameters
        ----------
        new
            A single url (every chunk then points to it), a mapping old → new, or a callable
            taking and returning a url. Only the url table is rewritten.
        """
        if isinstance(new, str):
            if len(self._urls) > 1:
                raise ManifestError(
                    "rename_paths with one url needs a manifest of one url, got "
                    f"{len(self._urls)}; pass a mapping or a function"
                )
            renamed: list[str] = [new] * len(self._urls)
        elif isinstance(new, Mapping):
            renamed = [new.get(url, url) for url in self._urls]
        elif callable(new):
            renamed = [new(url) for url in self._urls]
        else:
            raise TypeError("new must be a url, a mapping or a callable")
        return _remap(self, renamed)

    def reshape_grid(self, grid_shape: tuple[int, ...]) -> ChunkManifest:
        """The same references on a chunk grid of another shape with the same size."""
        return ChunkManifest(
            self._urls,
            self._path_ids.reshape(grid_shape),
            self._offsets.reshape(grid_shape),
            self._lengths.reshape(grid_shape),
            inline=self._inline,
            sources=self._sources,
            validate=False,
        )

    def broadcast_grid(self, grid_shape: tuple[int, ...]) -> ChunkManifest:
        """Broadcast the chunk grid to ``grid_shape`` (chunks are repeated by reference)."""
        if self._inline:
            ids = np.broadcast_to(
                np.arange(self._path_ids.size).reshape(self.shape_chunk_grid), grid_shape
            )
            inline = {
                int(flat): self._inline[int(src)]
                for flat, src in enumerate(ids.reshape(-1))
                if int(src) in self._inline
            }
        else:
            inline = {}
        return ChunkManifest(
            self._urls,
            np.asarray(np.broadcast_to(self._path_ids, grid_shape), order="C"),
            np.asarray(np.broadcast_to(self._offsets, grid_shape), order="C"),
            np.asarray(np.broadcast_to(self._lengths, grid_shape), order="C"),
            inline=inline,
            sources=self._sources,
            validate=False,
        )

    def subset(self, index: tuple[slice | int | np.ndarray, ...]) -> ChunkManifest:
        """The manifest of a sub-grid selected with basic numpy indexing on the chunk grid."""
        flat_ids = np.arange(self._path_ids.size).reshape(self.shape_chunk_grid)[index]
        path_ids = self._path_ids[index]
        inline = {}
        if self._inline:
            for new_flat, old_flat in enumerate(np.asarray(flat_ids).reshape(-1)):
                if int(old_flat) in self._inline:
                    inline[new_flat] = self._inline[int(old_flat)]
        return _compact(
            ChunkManifest(
                self._urls,
                np.asarray(path_ids, order="C"),
                np.asarray(self._offsets[index], order="C"),
                np.asarray(self._lengths[index], order="C"),
                inline=inline,
                sources=self._sources,
                validate=False,
            )
        )


def _remap(manifest: ChunkManifest, renamed: list[str]) -> ChunkManifest:
    """Rebuild a manifest whose url table became ``renamed`` (which may now repeat urls)."""
    table: dict[str, int] = {}
    sources: list[SourceInfo | None] = []
    lookup = np.empty(len(renamed), dtype=np.uint32)
    for old_id, url in enumerate(renamed):
        if url not in table:
            table[url] = len(table)
            sources.append(manifest.sources[old_id])
        lookup[old_id] = table[url]
    return ChunkManifest(
        list(table),
        _apply_lookup(manifest.path_ids, lookup),
        manifest.offsets,
        manifest.lengths,
        inline=manifest.inline,
        sources=sources,
        validate=False,
    )


def _apply_lookup(path_ids: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    extended = np.concatenate([lookup, np.array([INLINE, MISSING], dtype=np.uint32)])
    index = path_ids.astype(np.int64)
    index[path_ids == INLINE] = len(lookup)
    index[path_ids == MISSING] = len(lookup) + 1
    return extended[index]


def _compact(manifest: ChunkManifest) -> ChunkManifest:
    """Drop urls no chunk references any more."""
    used = np.zeros(len(manifest.urls) + 1, dtype=bool)
    ids = manifest.path_ids
    used[np.unique(ids[ids < INLINE])] = True
    if used[: len(manifest.urls)].all():
        return manifest
    keep = np.flatnonzero(used[: len(manifest.urls)])
    lookup = np.full(len(manifest.urls), MISSING, dtype=np.uint32)
    lookup[keep] = np.arange(len(keep), dtype=np.uint32)
    return ChunkManifest(
        [manifest.urls[i] for i in keep],
        _apply_lookup(ids, lookup),
        manifest.offsets,
        manifest.lengths,
        inline=manifest.inline,
        sources=[manifest.sources[i] for i in keep],
        validate=False,
    )


def merge_url_tables(
    manifests: Iterable[ChunkManifest],
) -> tuple[list[str], list[SourceInfo | None], list[np.ndarray]]:
    """Merge the url tables of several manifests.

    Returns the merged table, its source info and, for each manifest, its ``path_ids``
    translated into the merged table. The work is one dictionary look-up per distinct url per
    manifest and one vectorised gather per manifest, never a loop over chunks.
    """
    table: dict[str, int] = {}
    sources: list[SourceInfo | None] = []
    translated: list[np.ndarray] = []
    for manifest in manifests:
        lookup = np.empty(len(manifest.urls), dtype=np.uint32)
        for old_id, url in enumerate(manifest.urls):
            new_id = table.get(url)
            if new_id is None:
                new_id = table[url] = len(table)
                sources.append(manifest.sources[old_id])
            elif sources[new_id] is None:
                sources[new_id] = manifest.sources[old_id]
            lookup[old_id] = new_id
        translated.append(_apply_lookup(manifest.path_ids, lookup))
    return list(table), sources, translated


def concatenate_manifests(manifests: Sequence[ChunkManifest], axis: int) -> ChunkManifest:
    """Concatenate manifests along an axis of their chunk grids."""
    urls, sources, ids = merge_url_tables(manifests)
    path_ids = np.concatenate(ids, axis=axis)
    offsets = np.concatenate([m.offsets for m in manifests], axis=axis)
    lengths = np.concatenate([m.lengths for m in manifests], axis=axis)
    inline = _combine_inline(
        manifests, [m.shape_chunk_grid for m in manifests], path_ids.shape, axis
    )
    return ChunkManifest(
        urls, path_ids, offsets, lengths, inline=inline, sources=sources, validate=False
    )


def stack_manifests(manifests: Sequence[ChunkManifest], axis: int) -> ChunkManifest:
    """Stack manifests along a new axis of their chunk grids."""
    if manifests and axis < 0:
        axis += manifests[0].ndim_chunk_grid + 1
    expanded = [m.reshape_grid(_insert(m.shape_chunk_grid, axis)) for m in manifests]
    return concatenate_manifests(expanded, axis)


def _insert(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return (*shape[:axis], 1, *shape[axis:])


def _combine_inline(
    manifests: Sequence[ChunkManifest],
    shapes: Sequence[tuple[int, ...]],
    out_shape: tuple[int, ...],
    axis: int,
) -> dict[int, bytes]:
    inline: dict[int, bytes] = {}
    start = 0
    for manifest, shape in zip(manifests, shapes, strict=True):
        for flat, data in manifest.inline.items():
            position = list(np.unravel_index(flat, shape))
            position[axis] += start
            inline[int(np.ravel_multi_index(tuple(position), out_shape))] = data
        start += shape[axis]
    return inline
