"""ManifestArray: a duck array of references that xarray can concatenate, stack and merge."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xarray as xr
from zarr.core.dtype import get_data_type_from_native_dtype
from zarr.core.metadata.v3 import ArrayV3Metadata

from virtualize.errors import ConcatenationError, ManifestError, VirtualArrayAccessError
from virtualize.manifests import INLINE, ChunkEntry, ChunkManifest, ManifestArray, ManifestGroup

A = "file:///data/a.nc"
B = "file:///data/b.nc"

BYTES = {"name": "bytes", "configuration": {"endian": "little"}}
ZLIB = {"name": "numcodecs.zlib", "configuration": {"level": 4}}


def metadata(
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    *,
    dtype: str = "<i4",
    fill_value: Any = 0,
    codecs: list[dict[str, Any]] | None = None,
    attributes: dict[str, Any] | None = None,
    dims: tuple[str, ...] | None = ("time", "x"),
) -> ArrayV3Metadata:
    """Zarr v3 array metadata built the way the parsers build it."""
    return ArrayV3Metadata(
        shape=shape,
        data_type=get_data_type_from_native_dtype(np.dtype(dtype)),
        chunk_grid={"name": "regular", "configuration": {"chunk_shape": chunks}},
        chunk_key_encoding={"name": "default", "configuration": {"separator": "/"}},
        fill_value=fill_value,
        codecs=codecs or [BYTES],
        attributes=attributes or {},
        dimension_names=dims,
    )


def virtual(
    url: str, shape: tuple[int, ...] = (4, 6), chunks: tuple[int, ...] = (2, 3), **kwargs: Any
) -> ManifestArray:
    """A ManifestArray whose chunk ``k`` (C order) is at offset ``1000 * k`` of ``url``."""
    grid = tuple(-(-n // c) for n, c in zip(shape, chunks, strict=True))
    count = int(np.prod(grid))
    offsets = (np.arange(count) * 1000).reshape(grid)
    manifest = ChunkManifest.from_single_url(url, offsets, np.full(grid, 24))
    if "dims" not in kwargs and len(shape) != 2:
        kwargs["dims"] = None
    return ManifestArray(metadata(shape, chunks, **kwargs), manifest)


# -- basic attributes -----------------------------------------------------------------------


def test_shape_dtype_chunks() -> None:
    array = virtual(A, (5, 6), (2, 3), dtype="<f8")
    assert array.shape == (5, 6)
    assert array.ndim == 2 and array.size == 30 and len(array) == 5
    assert array.dtype == np.dtype("float64")
    assert array.chunk_shape == (2, 3)
    assert array.manifest.shape_chunk_grid == (3, 2)
    assert array.nbytes == 30 * 8, "numpy's meaning: the bytes it would take if loaded"
    assert array.manifest.nbytes > 0
    assert "shape=(5, 6)" in repr(array)


def test_manifest_grid_must_match_metadata() -> None:
    with pytest.raises(ManifestError, match="does not match"):
        ManifestArray(metadata((4, 6), (2, 3)), ChunkManifest.empty((2, 3)))


# -- numpy functions through __array_function__ ---------------------------------------------


def test_concatenate() -> None:
    first, second = virtual(A), virtual(B, (3, 6))
    joined = np.concatenate([first, second], axis=0)
    assert isinstance(joined, ManifestArray)
    assert joined.shape == (7, 6) and joined.chunk_shape == (2, 3)
    assert joined.manifest.urls == (A, B)
    assert joined.manifest[1, 1] == ChunkEntry(A, 3000, 24)
    assert joined.manifest[2, 0] == ChunkEntry(B, 0, 24)
    assert joined.manifest[3, 1] == ChunkEntry(B, 3000, 24)  # the partial last chunk
    assert joined.metadata.dimension_names == ("time", "x")
    columns = np.concatenate([first, virtual(B)], axis=-1)
    assert columns.shape == (4, 12)
    assert columns.manifest[0, 2] == ChunkEntry(B, 0, 24)


def test_stack() -> None:
    stacked = np.stack([virtual(A), virtual(B)], axis=0)
    assert stacked.shape == (2, 4, 6)
    assert stacked.chunk_shape == (1, 2, 3)
    assert stacked.metadata.dimension_names == (None, "time", "x")
    assert stacked.manifest[1, 0, 1] == ChunkEntry(B, 1000, 24)
    last = np.stack([virtual(A), virtual(B)], axis=-1)
    assert last.shape == (4, 6, 2) and last.chunk_shape == (2, 3, 1)
    assert last.manifest[1, 1, 0] == ChunkEntry(A, 3000, 24)
    assert last.manifest[1, 1, 1] == ChunkEntry(B, 3000, 24)


def test_expand_dims() -> None:
    expanded = np.expand_dims(virtual(A), 0)
    assert expanded.shape == (1, 4, 6) and expanded.chunk_shape == (1, 2, 3)
    assert expanded.metadata.dimension_names == (None, "time", "x")
    assert expanded.manifest[0, 1, 0] == ChunkEntry(A, 2000, 24)
    both = np.expand_dims(virtual(A), (0, -1))
    assert both.shape == (1, 4, 6, 1)
    with pytest.raises(np.exceptions.AxisError):
        np.expand_dims(virtual(A), 5)


def test_broadcast_to() -> None:
    array = virtual(A, (1, 6), (1, 3))
    broadcast = np.broadcast_to(array, (3, 5, 6))
    assert broadcast.shape == (3, 5, 6)
    assert broadcast.manifest.shape_chunk_grid == (3, 5, 2)
    assert broadcast.manifest[2, 4, 1] == ChunkEntry(A, 1000, 24)
    assert np.broadcast_to(array, (1, 6)) is array
    with pytest.raises(ValueError, match="cannot broadcast"):
        np.broadcast_to(virtual(A), (4, 7))


def test_broadcast_refuses_axes_whose_chunks_hold_more_than_one_element() -> None:
    array = ManifestArray(
        metadata((1, 6), (2, 3)), ChunkManifest.from_single_url(A, [[0, 1]], [[1, 1]])
    )
    with pytest.raises(VirtualArrayAccessError, match="broadcasting axis 0"):
        np.broadcast_to(array, (4, 6))


def test_result_type_shape_ndim_size() -> None:
    array = virtual(A, dtype="<i2")
    assert np.result_type(array, np.float32) == np.float32
    assert np.result_type(array, virtual(B, dtype="<i4")) == np.int32
    assert np.shape(array) == (4, 6) and np.ndim(array) == 2 and np.size(array) == 24


# -- indexing -------------------------------------------------------------------------------


def test_indexing_on_chunk_boundaries() -> None:
    array = virtual(A, (5, 6), (2, 3))
    sub = array[2:5, 3:]
    assert sub.shape == (3, 3) and sub.chunk_shape == (2, 3)
    assert sub.manifest[0, 0] == ChunkEntry(A, 3000, 24)  # chunk (1, 1)
    assert sub.manifest[1, 0] == ChunkEntry(A, 5000, 24)  # chunk (2, 1), partial
    assert sub.metadata.dimension_names == ("time", "x")
    assert array[...].shape == (5, 6)
    assert array[..., 0:3].manifest == array.manifest.subset((slice(None), slice(0, 1)))
    assert array[None, :2].shape == (1, 2, 6)
    assert array[None, :2].metadata.dimension_names == (None, "time", "x")
    empty = array[5:5]
    assert empty.shape == (0, 6) and empty.manifest.nrefs == 0


def test_integer_index_on_axis_of_one_element_chunks() -> None:
    stacked = np.stack([virtual(A), virtual(B)])
    second = stacked[1]
    assert second.shape == (4, 6)
    assert second.manifest.urls == (B,)
    assert second.manifest[1, 1] == ChunkEntry(B, 3000, 24)
    assert stacked[-1].manifest == second.manifest
    assert second.metadata.dimension_names == ("time", "x")
    with pytest.raises(IndexError):
        stacked[2]


@pytest.mark.parametrize(
    "key",
    [
        (slice(1, 4),),  # starts inside a chunk
        (slice(0, 3),),  # stops inside a chunk that is not the last
        (slice(None, None, 2),),  # a step
        (0,),  # an integer inside chunks of 2
        (np.array([0, 1]),),  # fancy indexing
    ],
)
def test_indexing_off_chunk_boundaries_is_refused(key: tuple[Any, ...]) -> None:
    with pytest.raises(VirtualArrayAccessError, match="whole chunks"):
        virtual(A, (5, 6), (2, 3))[key]


def test_too_many_indices() -> None:
    with pytest.raises(IndexError):
        virtual(A)[:, :, :]
    with pytest.raises(IndexError):
        virtual(A)[..., ...]


# -- anything that needs values raises ------------------------------------------------------


@pytest.mark.parametrize(
    "operation",
    [
        np.asarray,
        np.array,
        lambda a: a + 1,
        lambda a: 2 * a,
        lambda a: -a,
        lambda a: a < 3,
        lambda a: np.sin(a),
        lambda a: np.add(a, a),
        lambda a: np.sum(a),
        lambda a: np.mean(a),
        lambda a: a.T,
        lambda a: a.astype("float64"),
        lambda a: bool(a),
        lambda a: a == 3,
    ],
)
def test_operations_needing_values_raise(operation: Any) -> None:
    with pytest.raises(VirtualArrayAccessError) as info:
        operation(virtual(A))
    message = str(info.value)
    assert "virtual array" in message
    assert "loadable_variables" in message  # says what to do
    assert isinstance(info.value, TypeError)  # what numpy and xarray users expect


def test_astype_to_same_dtype_and_copy() -> None:
    array = virtual(A)
    assert array.astype("<i4") is array
    copied = array.copy()
    assert copied is not array and copied.manifest is array.manifest


def test_equality_compares_references() -> None:
    first, same, other = virtual(A), virtual(A), virtual(B)
    assert (first == same).all()
    assert (first == same).shape == (4, 6)
    assert not (first == other).any()
    assert not (first == virtual(A, fill_value=-1)).any()  # missing chunks would read differently
    assert not (first == virtual(A, codecs=[BYTES, ZLIB])).any()
    assert np.equal(first, same).all()


# -- combining refuses what would change the numbers -----------------------------------------


@pytest.mark.parametrize(
    ("changes", "what"),
    [
        ({"dtype": "<i8"}, "dtype"),
        ({"codecs": [BYTES, ZLIB]}, "codecs"),
        ({"chunks": (2, 2)}, "chunk shape"),
        ({"fill_value": -9}, "fill value"),
        ({"attributes": {"scale_factor": 0.5}}, "scale_factor"),
        ({"attributes": {"add_offset": 10.0}}, "add_offset"),
        ({"attributes": {"_FillValue": -1}}, "_FillValue"),
    ],
)
def test_concatenate_mismatch_names_both_files(changes: dict[str, Any], what: str) -> None:
    first = virtual(A)
    second = virtual(B, **changes)
    for join in (lambda: np.concatenate([first, second]), lambda: np.stack([first, second])):
        with pytest.raises(ConcatenationError) as info:
            join()
        message = str(info.value)
        assert A in message and B in message
        assert what in message


def test_codec_configuration_mismatch() -> None:
    first = virtual(A, codecs=[BYTES, ZLIB])
    second = virtual(B, codecs=[BYTES, {"name": "numcodecs.zlib", "configuration": {"level": 9}}])
    with pytest.raises(ConcatenationError, match="codec configurations differ"):
        np.concatenate([first, second])


def test_same_packing_attributes_concatenate() -> None:
    attrs = {"scale_factor": 0.1, "add_offset": 5.0, "_FillValue": -1}
    joined = np.concatenate([virtual(A, attributes=attrs), virtual(B, attributes=attrs)])
    assert joined.shape == (8, 6)
    assert joined.metadata.attributes["scale_factor"] == 0.1


def test_nan_fill_values_are_equal() -> None:
    first = virtual(A, dtype="<f4", fill_value=float("nan"))
    second = virtual(B, dtype="<f4", fill_value=float("nan"))
    assert np.concatenate([first, second]).shape == (8, 6)


def test_partial_last_chunk_before_another_array_is_refused() -> None:
    partial, full = virtual(A, (3, 6)), virtual(B, (4, 6))
    with pytest.raises(ConcatenationError) as info:
        np.concatenate([partial, full])
    assert A in str(info.value) and B in str(info.value)
    assert "partial" in str(info.value)
    assert np.concatenate([full, partial]).shape == (7, 6)  # last is fine


def test_other_axis_lengths_must_match() -> None:
    with pytest.raises(ConcatenationError, match="length 6 vs 3"):
        np.concatenate([virtual(A), virtual(B, (4, 3))], axis=0)


def test_concatenating_with_a_numpy_array_is_refused() -> None:
    with pytest.raises(VirtualArrayAccessError, match="ndarray"):
        np.concatenate([virtual(A), np.zeros((4, 6), dtype="<i4")])


# -- xarray ---------------------------------------------------------------------------------


def dataset(url: str, **kwargs: Any) -> xr.Dataset:
    return xr.Dataset(
        {"temp": xr.Variable(("time", "x"), virtual(url, **kwargs), attrs={"units": "K"})},
        attrs={"source": url},
    )


def test_xarray_concat() -> None:
    combined = xr.concat([dataset(A), dataset(B)], dim="time", coords="minimal", compat="override")
    data = combined["temp"].data
    assert isinstance(data, ManifestArray)
    assert combined.sizes == {"time": 8, "x": 6}
    assert data.manifest.urls == (A, B)
    expected = np.concatenate(
        [virtual(A).manifest.paths_array(), virtual(B).manifest.paths_array()]
    )
    np.testing.assert_array_equal(data.manifest.paths_array(), expected)
    np.testing.assert_array_equal(data.manifest.offsets[2:], virtual(B).manifest.offsets)
    assert combined["temp"].attrs == {"units": "K"}


def test_xarray_concat_new_dimension_and_isel() -> None:
    combined = xr.concat([dataset(A), dataset(B)], dim="run", coords="minimal", compat="override")
    assert combined["temp"].dims == ("run", "time", "x")
    assert combined["temp"].data.manifest.shape_chunk_grid == (2, 2, 2)
    second = combined.isel(run=1)["temp"].data
    assert second.manifest == virtual(B).manifest
    halves = combined.isel(time=slice(2, 4))["temp"].data
    assert halves.manifest[1, 0, 1] == ChunkEntry(B, 3000, 24)


def test_xarray_concat_mismatch_raises_concatenation_error() -> None:
    with pytest.raises(ConcatenationError) as info:
        xr.concat(
            [dataset(A), dataset(B, attributes={"scale_factor": 2.0})],
            dim="time",
            coords="minimal",
            compat="override",
        )
    assert A in str(info.value) and B in str(info.value)


def test_xarray_merge() -> None:
    other = xr.Dataset({"wind": xr.Variable(("time", "x"), virtual(B))})
    merged = xr.merge([dataset(A), other], compat="override")
    assert set(merged.data_vars) == {"temp", "wind"}
    assert merged["temp"].data.manifest.urls == (A,)
    assert merged["wind"].data.manifest.urls == (B,)


def test_xarray_merge_shared_variable() -> None:
    first = dataset(A)
    second = first.rename(temp="other")  # shares the very same ManifestArray
    second["temp"] = first["temp"]
    merged = xr.merge([first, second], join="exact", compat="equals")
    assert set(merged.data_vars) == {"temp", "other"}
    assert merged["temp"].data.manifest == virtual(A).manifest
    # differing references are kept apart only when asked to override
    overridden = xr.merge([dataset(A), dataset(B)], compat="override")
    assert overridden["temp"].data.manifest.urls == (A,)


# -- groups ---------------------------------------------------------------------------------


def test_group_nodes_and_totals() -> None:
    inner = ManifestGroup({"w": virtual(B)}, attributes={"level": 2})
    group = ManifestGroup({"v": virtual(A)}, {"inner": inner}, {"title": "t"})
    assert group.get_node("v") is group.arrays["v"]
    assert group.get_node("inner/w") is inner.arrays["w"]
    assert group.get_node("") is group
    assert group.get_node("inner/missing") is None
    assert group.get_node("v/below") is None
    assert [path for path, _ in group.walk()] == ["", "v", "inner", "inner/w"]
    assert group.nrefs == 8
    assert group.nbytes == virtual(A).manifest.nbytes + virtual(B).manifest.nbytes
    with pytest.raises(ValueError, match="both an array and a group"):
        ManifestGroup({"x": virtual(A)}, {"x": ManifestGroup()})


def test_group_equality() -> None:
    def build(url: str) -> ManifestGroup:
        return ManifestGroup({"v": virtual(url)}, {"g": ManifestGroup({"w": virtual(B)})}, {"a": 1})

    assert build(A) == build(A)
    assert build(A) != build(B)
    assert build(A) != ManifestGroup({"v": virtual(A)}, attributes={"a": 1})


def test_inline_chunk_survives_indexing() -> None:
    manifest = ChunkManifest([A], [[0, INLINE]], [[0, 0]], [[24, 0]], inline={1: b"x" * 24})
    array = ManifestArray(metadata((2, 6), (2, 3)), manifest)
    right = array[:, 3:]
    assert right.manifest[0, 0] == ChunkEntry(None, 0, 24, b"x" * 24)


def test_different_time_units_refuse_to_concatenate() -> None:
    """Times stored as 'days since <each file's start>' would all decode with the first epoch."""
    first = virtual(A, attributes={"units": "days since 2020-01-01"})
    second = virtual(B, attributes={"units": "days since 2020-02-01"})
    with pytest.raises(ConcatenationError, match="units") as caught:
        np.concatenate([first, second], axis=0)
    assert A in str(caught.value) and B in str(caught.value)


def test_virtual_arrays_are_not_mistaken_for_dask_arrays() -> None:
    """xarray treats duck arrays with ``.chunks`` as chunked and looks for a chunk manager."""
    variable = xr.Variable(("x", "y"), virtual(A))
    assert not hasattr(variable.data, "chunks")
    with pytest.raises(VirtualArrayAccessError):
        _ = variable.values
    assert variable.transpose("x", "y").data is variable.data
    with pytest.raises(VirtualArrayAccessError, match="transpose"):
        variable.transpose("y", "x")


def test_byte_string_arrays_concatenate_through_xarray() -> None:
    chars = metadata((4, 6), (2, 3), dtype="S1", fill_value=b"")
    first = ManifestArray(
        chars, ChunkManifest.from_single_url(A, np.zeros((2, 2)), np.full((2, 2), 6))
    )
    second = ManifestArray(
        chars, ChunkManifest.from_single_url(B, np.zeros((2, 2)), np.full((2, 2), 6))
    )
    joined = xr.concat(
        [xr.Dataset({"c": (("x", "y"), first)}), xr.Dataset({"c": (("x", "y"), second)})],
        dim="x",
        coords="minimal",
        compat="override",
    )
    assert joined["c"].shape == (8, 6) and joined["c"].dtype == np.dtype("S1")
    with pytest.raises(VirtualArrayAccessError):
        first.astype("S2")


# -- rectilinear chunk grids ----------------------------------------------------------------


def test_unequal_lengths_that_tile_their_chunks_join_rectilinearly() -> None:
    january, february, march = (
        virtual(A, (31, 6), (31, 3)),
        virtual(B, (28, 6), (28, 3)),
        virtual("file:///data/c.nc", (31, 6), (31, 3)),
    )
    joined = np.concatenate([january, february, march])
    assert joined.shape == (90, 6)
    assert joined.chunk_grid == ((31, 28, 31), 3)
    assert joined.chunk_sizes == ((31, 28, 31), (3, 3))
    assert joined.manifest.shape_chunk_grid == (3, 2)
    assert joined.manifest[1, 1] == ChunkEntry(B, 1000, 24)
    document = joined.metadata.to_dict()["chunk_grid"]
    assert document["name"] == "rectilinear"
    with pytest.raises(ValueError, match="rectilinear"):
        _ = joined.chunk_shape


def test_different_chunk_lengths_along_the_axis_join() -> None:
    joined = np.concatenate([virtual(A, (4, 6), (2, 3)), virtual(B, (3, 6), (1, 3))])
    assert joined.chunk_grid == ((2, 2, 1, 1, 1), 3)
    # the last array may end in a partial chunk: its edge reaches past the end
    tail = np.concatenate([virtual(A, (4, 6), (4, 3)), virtual(B, (3, 6), (2, 3))])
    assert tail.chunk_grid == ((4, 2, 2), 3)
    assert tail.chunk_sizes == ((4, 2, 1), (3, 3))


def test_equal_chunk_lengths_stay_regular() -> None:
    joined = np.concatenate([virtual(A, (4, 6), (2, 3)), virtual(B, (3, 6), (2, 3))])
    assert joined.chunk_grid == (2, 3)
    assert joined.metadata.to_dict()["chunk_grid"]["name"] == "regular"


def test_rectilinear_arrays_join_index_and_compare() -> None:
    first = np.concatenate([virtual(A, (3, 6), (3, 3)), virtual(B, (2, 6), (2, 3))])
    again = np.concatenate([first, virtual("file:///data/c.nc", (4, 6), (4, 3))])
    assert again.chunk_grid == ((3, 2, 4), 3)
    # whole chunks select; the selection keeps the edges it spans
    middle = again[3:5]
    assert middle.chunk_grid == (2, 3) and middle.manifest[0, 0] == ChunkEntry(B, 0, 24)
    assert again[3:9].chunk_grid == ((2, 4), 3)
    with pytest.raises(VirtualArrayAccessError, match="slice 1:5"):
        _ = again[1:5]
    equal = again == again.copy()
    assert equal.shape == again.shape and bool(equal.all())
    assert np.stack([again, again]).chunk_grid == (1, (3, 2, 4), 3)
    assert np.expand_dims(again, 0).chunk_grid == (1, (3, 2, 4), 3)


def test_rectilinear_other_axes_must_agree() -> None:
    first = np.concatenate([virtual(A, (3, 6), (3, 3)), virtual(B, (2, 6), (2, 3))])
    second = np.concatenate([virtual(A, (2, 6), (2, 3)), virtual(B, (3, 6), (3, 3))])
    with pytest.raises(ConcatenationError, match="chunk shape on axis 0"):
        np.concatenate([first, second], axis=1)
