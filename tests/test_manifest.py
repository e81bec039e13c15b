"""ChunkManifest: constructors, validation, access, memory, batches and transformations."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from virtualize.errors import ManifestError
from virtualize.manifests import INLINE, MISSING, ChunkEntry, ChunkManifest, SourceInfo
from virtualize.manifests.manifest import concatenate_manifests, stack_manifests

A = "file:///data/a.nc"
B = "file:///data/b.nc"
C = "s3://bucket/c.nc"


def two_file_manifest() -> ChunkManifest:
    """A 2x3 grid: row 0 from A, row 1 from B, with chunk (1, 2) missing."""
    return ChunkManifest.from_arrays(
        paths=[[A, A, A], [B, B, ""]],
        offsets=[[0, 10, 20], [100, 110, 999]],
        lengths=[[10, 10, 10], [10, 10, 999]],
    )


def with_inline() -> ChunkManifest:
    """A 1-d grid of 4: a reference, an inline chunk, a missing chunk, a reference."""
    return ChunkManifest(
        [A],
        np.array([0, INLINE, MISSING, 0], dtype=np.uint32),
        [0, 0, 0, 50],
        [50, 0, 0, 25],
        inline={1: b"inline-bytes"},
    )


# -- constructors ---------------------------------------------------------------------------


def test_from_arrays_dictionary_encodes_urls_and_marks_empty_paths_missing() -> None:
    manifest = two_file_manifest()
    assert manifest.urls == (A, B)
    assert manifest.shape_chunk_grid == (2, 3)
    assert manifest.path_ids.dtype == np.uint32
    np.testing.assert_array_equal(manifest.path_ids, [[0, 0, 0], [1, 1, MISSING]])
    # a missing chunk carries no byte range, whatever was passed for it
    assert manifest.offsets[1, 2] == 0 and manifest.lengths[1, 2] == 0
    assert manifest.offsets.dtype == np.uint64 and manifest.lengths.dtype == np.uint64
    assert manifest.nrefs == 5 and manifest.ninline == 0


def test_from_arrays_all_missing_has_empty_url_table() -> None:
    manifest = ChunkManifest.from_arrays(paths=[["", ""]], offsets=[[1, 2]], lengths=[[3, 4]])
    assert manifest.urls == ()
    assert manifest.nrefs == 0
    assert manifest[0, 0] is None and manifest[0, 1] is None


def test_from_arrays_keeps_source_info_per_url() -> None:
    seen = SourceInfo(size=1234, etag='"abc"', last_modified=datetime(2024, 1, 2, tzinfo=UTC))
    manifest = ChunkManifest.from_arrays(
        paths=[A, B], offsets=[0, 0], lengths=[1, 1], sources={B: seen}
    )
    assert manifest.sources == (None, seen)


def test_from_arrays_refuses_offsets_of_another_shape() -> None:
    # (3,) would broadcast against (2, 3): it must be refused, not silently repeated
    with pytest.raises(ManifestError, match="share one shape"):
        ChunkManifest.from_arrays(
            paths=[[A, A, A], [A, A, A]], offsets=[0, 1, 2], lengths=[1, 1, 1]
        )


def test_from_single_url() -> None:
    offsets = np.arange(6).reshape(2, 3) * 100
    present = np.array([[True, True, False], [True, True, True]])
    manifest = ChunkManifest.from_single_url(A, offsets, np.full((2, 3), 100), present=present)
    assert manifest.urls == (A,)
    assert manifest.nrefs == 5
    assert manifest[0, 2] is None
    assert manifest[1, 1] == ChunkEntry(A, 400, 100)
    assert manifest.offsets[0, 2] == 0  # missing chunks hold no range
    # the same references built the other way compare equal
    other = ChunkManifest.from_arrays(
        paths=np.where(present, A, ""), offsets=offsets, lengths=np.full((2, 3), 100)
    )
    assert manifest == other


def test_from_single_url_refuses_present_of_another_shape() -> None:
    with pytest.raises(ManifestError, match="present"):
        ChunkManifest.from_single_url(A, [0, 1], [1, 1], present=[True])


def test_empty() -> None:
    manifest = ChunkManifest.empty((3, 2))
    assert manifest.shape_chunk_grid == (3, 2)
    assert manifest.nrefs == 0 and manifest.urls == ()
    assert (manifest.path_ids == MISSING).all()
    assert manifest[2, 1] is None


def test_from_entries_virtualizarr_style() -> None:
    manifest = ChunkManifest.from_entries(
        {
            "0.0": {"path": A, "offset": 5, "length": 7},
            "1.1": {"path": B, "offset": 9, "length": 3},
        }
    )
    assert manifest.shape_chunk_grid == (2, 2)  # inferred from the largest key
    assert manifest[0, 0] == ChunkEntry(A, 5, 7)
    assert manifest[1, 1] == ChunkEntry(B, 9, 3)
    assert manifest[0, 1] is None and manifest[1, 0] is None


def test_from_entries_with_grid_shape_and_out_of_grid_key() -> None:
    manifest = ChunkManifest.from_entries({"1": {"path": A, "offset": 0, "length": 4}}, (3,))
    assert manifest.shape_chunk_grid == (3,)
    assert manifest.nrefs == 1
    with pytest.raises(ManifestError, match="outside the chunk grid"):
        ChunkManifest.from_entries({"5": {"path": A, "offset": 0, "length": 4}}, (3,))


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"urls": [A], "path_ids": [0, 0], "offsets": [0], "lengths": [1, 1]}, "one shape"),
        ({"urls": [A], "path_ids": [0, 1], "offsets": [0, 0], "lengths": [1, 1]}, "past the end"),
        ({"urls": [A, A], "path_ids": [0, 1], "offsets": [0, 0], "lengths": [1, 1]}, "repeat"),
        (
            {"urls": [A], "path_ids": [0, INLINE], "offsets": [0, 0], "lengths": [1, 1]},
            "inline map",
        ),
        (
            {
                "urls": [A],
                "path_ids": [0, 0],
                "offsets": [0, 0],
                "lengths": [1, 1],
                "inline": {1: b"x"},
            },
            "inline map",
        ),
        (
            {"urls": [A], "path_ids": [0], "offsets": [0], "lengths": [1], "sources": []},
            "parallel",
        ),
    ],
)
def test_validation_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        ChunkManifest(**kwargs)  # type: ignore[arg-type]


# -- access ---------------------------------------------------------------------------------


def test_getitem_present_missing_inline() -> None:
    manifest = with_inline()
    assert manifest[(0,)] == ChunkEntry(A, 0, 50)
    assert manifest[(1,)] == ChunkEntry(None, 0, len(b"inline-bytes"), b"inline-bytes")
    assert manifest[(2,)] is None
    assert manifest[(3,)] == ChunkEntry(A, 50, 25)
    assert manifest.nrefs == 2 and manifest.ninline == 1


def test_getitem_negative_and_out_of_range() -> None:
    manifest = with_inline()
    assert manifest[(-3,)] == manifest[(1,)]  # an inline chunk through a negative index
    assert manifest[-1] == ChunkEntry(A, 50, 25)
    with pytest.raises(IndexError):
        manifest[(4,)]
    with pytest.raises(IndexError):
        two_file_manifest()[(0,)]  # too few indices for a 2-d grid


# -- equality -------------------------------------------------------------------------------


def test_equality_and_elementwise_equal() -> None:
    first = two_file_manifest()
    assert first == two_file_manifest()
    # the same references with the url table in another order are equal
    reordered = ChunkManifest(
        [B, A], [[1, 1, 1], [0, 0, MISSING]], first.offsets, first.lengths, validate=True
    )
    assert first == reordered
    changed = ChunkManifest.from_arrays(
        paths=[[A, A, A], [B, C, ""]],
        offsets=[[0, 10, 21], [100, 110, 0]],
        lengths=[[10, 10, 10], [10, 10, 0]],
    )
    np.testing.assert_array_equal(
        first.elementwise_equal(changed), [[True, True, False], [True, False, True]]
    )
    assert first != changed
    with pytest.raises(ManifestError, match="cannot compare"):
        first.elementwise_equal(ChunkManifest.empty((3, 2)))


def test_equality_ignores_ranges_of_missing_chunks_and_compares_inline_bytes() -> None:
    one = ChunkManifest([A], [MISSING, 0], [7, 1], [8, 1])
    two = ChunkManifest([A], [MISSING, 0], [0, 1], [0, 1])
    assert one == two
    inline_a = ChunkManifest([], [INLINE], [0], [3], inline={0: b"abc"})
    inline_b = ChunkManifest([], [INLINE], [0], [0], inline={0: b"abc"})
    inline_c = ChunkManifest([], [INLINE], [0], [3], inline={0: b"abd"})
    assert inline_a == inline_b
    assert inline_a != inline_c
    assert not inline_a.elementwise_equal(ChunkManifest.empty((1,))).any()


# -- memory ---------------------------------------------------------------------------------


def test_nbytes_counts_columns_urls_and_inline_data() -> None:
    base = ChunkManifest.from_single_url(A, [0, 10, 20, 30], [10, 10, 10, 10])
    assert base.nbytes >= base.path_ids.nbytes + base.offsets.nbytes + base.lengths.nbytes + len(A)
    long_url = "file:///data/" + "x" * 1000 + ".nc"
    longer_url = base.rename_paths(long_url)
    assert longer_url.nbytes - base.nbytes >= len(long_url) - len(A)
    two_urls = ChunkManifest.from_arrays(
        paths=[A, A, B, B], offsets=[0, 10, 0, 10], lengths=[10, 10, 10, 10]
    )
    assert two_urls.nbytes > base.nbytes + len(B)
    payload = b"z" * 5000
    inlined = ChunkManifest(
        [A], [0, 0, 0, INLINE], [0, 10, 20, 0], [10, 10, 10, 0], inline={3: payload}
    )
    assert inlined.nbytes >= base.nbytes + len(payload)


def test_nbytes_per_reference_at_a_million_chunks() -> None:
    n = 1_000_000
    offsets = np.arange(n, dtype=np.uint64) * 4096
    manifest = ChunkManifest.from_single_url(
        A, offsets.reshape(1000, 1000), np.full((1000, 1000), 4096)
    )
    assert manifest.nrefs == n
    assert manifest.nbytes / n <= 24


# -- batches --------------------------------------------------------------------------------


def test_iter_batches_columnar_skips_missing_and_inline_and_covers_all_refs() -> None:
    rng = np.random.default_rng(0)
    grid = (7, 5)
    ids = rng.integers(0, 3, size=grid).astype(np.uint32)
    ids[rng.random(grid) < 0.2] = MISSING
    ids[0, 1] = INLINE
    ids[4, 4] = INLINE
    offsets = rng.integers(0, 10**9, size=grid).astype(np.uint64)
    lengths = rng.integers(1, 10**6, size=grid).astype(np.uint64)
    manifest = ChunkManifest([A, B, C], ids, offsets, lengths, inline={1: b"a", 24: b"b"})
    batches = list(manifest.iter_batches(batch_size=6))
    assert len(batches) == -(-35 // 6)
    for batch in batches:
        assert isinstance(batch.indices, np.ndarray)
        assert batch.path_ids.dtype == np.uint32 and batch.offsets.dtype == np.uint64
        assert len(batch.indices) == len(batch.path_ids) == len(batch.offsets) == len(batch.lengths)
        assert (batch.path_ids < INLINE).all()
    indices = np.concatenate([b.indices for b in batches])
    expected = np.flatnonzero(ids.reshape(-1) < INLINE)
    np.testing.assert_array_equal(indices, expected)  # every reference once, in C order
    np.testing.assert_array_equal(
        np.concatenate([b.offsets for b in batches]), offsets.reshape(-1)[expected]
    )
    np.testing.assert_array_equal(
        np.concatenate([b.lengths for b in batches]), lengths.reshape(-1)[expected]
    )
    np.testing.assert_array_equal(
        np.concatenate([b.path_ids for b in batches]), ids.reshape(-1)[expected]
    )
    # one big batch gives the same references
    (single,) = manifest.iter_batches()
    np.testing.assert_array_equal(single.indices, expected)
    with pytest.raises(ValueError, match="batch_size"):
        next(manifest.iter_batches(batch_size=0))


def test_paths_array() -> None:
    paths = with_inline().paths_array()
    assert paths.tolist() == [A, "", "", A]
    assert two_file_manifest().paths_array().tolist() == [[A, A, A], [B, B, ""]]


# -- transformations ------------------------------------------------------------------------


def test_rename_paths_with_a_string() -> None:
    renamed = with_inline().rename_paths("s3://bucket/moved.nc")
    assert renamed.urls == ("s3://bucket/moved.nc",)
    assert renamed[(3,)] == ChunkEntry("s3://bucket/moved.nc", 50, 25)
    assert renamed[(1,)] == ChunkEntry(None, 0, 12, b"inline-bytes")  # inline untouched
    with pytest.raises(ManifestError, match="one url"):
        two_file_manifest().rename_paths("s3://bucket/x.nc")


def test_rename_paths_with_mapping_and_callable() -> None:
    manifest = two_file_manifest()
    mapped = manifest.rename_paths({A: "s3://bucket/a.nc"})
    assert mapped.urls == ("s3://bucket/a.nc", B)  # urls not in the mapping stay
    assert mapped[0, 1] == ChunkEntry("s3://bucket/a.nc", 10, 10)
    called = manifest.rename_paths(lambda url: url.replace("file:///data/", "https://h/"))
    assert called.urls == ("https://h/a.nc", "https://h/b.nc")
    assert called[1, 0] == ChunkEntry("https://h/b.nc", 100, 10)
    with pytest.raises(TypeError):
        manifest.rename_paths(42)


def test_rename_paths_merging_urls_that_become_equal() -> None:
    info_a, info_b = SourceInfo(size=1), SourceInfo(size=2)
    manifest = ChunkManifest.from_arrays(
        paths=[[A, B], ["", B]],
        offsets=[[0, 5], [0, 6]],
        lengths=[[1, 1], [0, 1]],
        sources={A: info_a, B: info_b},
    )
    merged = manifest.rename_paths(lambda url: "s3://bucket/same.nc")
    assert merged.urls == ("s3://bucket/same.nc",)
    assert merged.sources == (info_a,)
    np.testing.assert_array_equal(merged.path_ids, [[0, 0], [MISSING, 0]])
    assert merged[1, 1] == ChunkEntry("s3://bucket/same.nc", 6, 1)


def test_subset_compacts_url_table_and_moves_inline_chunks() -> None:
    manifest = two_file_manifest()
    row = manifest.subset((slice(1, 2), slice(None)))
    assert row.shape_chunk_grid == (1, 3)
    assert row.urls == (B,)  # A is no longer referenced
    assert row[0, 0] == ChunkEntry(B, 100, 10) and row[0, 2] is None
    dropped = manifest.subset((0, slice(1, 3)))
    assert dropped.shape_chunk_grid == (2,)
    assert dropped[(1,)] == ChunkEntry(A, 20, 10)
    inline = with_inline().subset((slice(1, 3),))
    assert inline.urls == ()
    assert inline[(0,)] == ChunkEntry(None, 0, 12, b"inline-bytes")
    assert inline[(1,)] is None
    assert inline.inline == {0: b"inline-bytes"}


def test_broadcast_grid_repeats_references_and_inline_chunks() -> None:
    manifest = ChunkManifest([A], [[0, INLINE]], [[8, 0]], [[4, 0]], inline={1: b"xy"})
    broadcast = manifest.broadcast_grid((3, 2))
    assert broadcast.shape_chunk_grid == (3, 2)
    for row in range(3):
        assert broadcast[row, 0] == ChunkEntry(A, 8, 4)
        assert broadcast[row, 1] == ChunkEntry(None, 0, 2, b"xy")
    assert broadcast.inline == {1: b"xy", 3: b"xy", 5: b"xy"}
    leading = ChunkManifest.from_single_url(A, [1, 2], [1, 1]).broadcast_grid((2, 2))
    np.testing.assert_array_equal(leading.offsets, [[1, 2], [1, 2]])


def test_concatenate_manifests_merges_url_tables() -> None:
    info = SourceInfo(size=99, etag="e")
    first = ChunkManifest(
        [A, B],
        [[0, 1], [INLINE, MISSING]],
        [[0, 10], [0, 0]],
        [[5, 5], [0, 0]],
        inline={2: b"first"},
        sources=[None, info],
    )
    second = ChunkManifest(
        [C, B],
        [[1, INLINE], [0, 0]],
        [[20, 0], [30, 40]],
        [[5, 0], [5, 5]],
        inline={1: b"second"},
        sources=[SourceInfo(size=7), None],
    )
    joined = concatenate_manifests([first, second], axis=0)
    assert joined.shape_chunk_grid == (4, 2)
    assert joined.urls == (A, B, C)  # B stored once
    assert joined.sources == (None, info, SourceInfo(size=7))
    assert joined[0, 1] == ChunkEntry(B, 10, 5)
    assert joined[1, 0] == ChunkEntry(None, 0, 5, b"first")
    assert joined[1, 1] is None
    assert joined[2, 0] == ChunkEntry(B, 20, 5)  # path id remapped from 1 to 1 via B
    assert joined[2, 1] == ChunkEntry(None, 0, 6, b"second")
    assert joined[3, 0] == ChunkEntry(C, 30, 5)  # path id 0 of `second` is now 2
    assert joined.inline == {2: b"first", 5: b"second"}
    # the result is a consistent manifest
    ChunkManifest(
        joined.urls,
        joined.path_ids,
        joined.offsets,
        joined.lengths,
        inline=joined.inline,
        sources=joined.sources,
    )
    along_columns = concatenate_manifests([first, second], axis=1)
    assert along_columns.shape_chunk_grid == (2, 4)
    assert along_columns[1, 0] == ChunkEntry(None, 0, 5, b"first")
    assert along_columns[0, 3] == ChunkEntry(None, 0, 6, b"second")
    assert along_columns.inline == {4: b"first", 3: b"second"}
    assert concatenate_manifests([first, second], axis=-1) == along_columns


def test_stack_manifests() -> None:
    first = with_inline()
    second = ChunkManifest.from_single_url(B, [1, 2, 3, 4], [1, 1, 1, 1])
    stacked = stack_manifests([first, second], axis=0)
    assert stacked.shape_chunk_grid == (2, 4)
    assert stacked.urls == (A, B)
    assert stacked[0, 1] == ChunkEntry(None, 0, 12, b"inline-bytes")
    assert stacked[1, 2] == ChunkEntry(B, 3, 1)
    last = stack_manifests([first, second], axis=-1)
    assert last.shape_chunk_grid == (4, 2)
    assert last[1, 0] == ChunkEntry(None, 0, 12, b"inline-bytes")
    assert last[3, 1] == ChunkEntry(B, 4, 1)
    assert last.inline == {2: b"inline-bytes"}
    assert stack_manifests([first, second], axis=1) == last


def test_zero_dimensional_grid() -> None:
    manifest = ChunkManifest.from_single_url(A, np.uint64(8), np.uint64(4))
    assert manifest.shape_chunk_grid == ()
    assert manifest[()] == ChunkEntry(A, 8, 4)
    inline = ChunkManifest([], np.array(INLINE), 0, 0, inline={0: b"scalar"})
    assert inline[()] == ChunkEntry(None, 0, 6, b"scalar")
    (batch,) = manifest.iter_batches()
    np.testing.assert_array_equal(batch.indices, [0])
