"""ManifestStore: zarr and xarray read the exact numbers of files referenced by manifests."""

from __future__ import annotations

import asyncio
import pickle
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import obstore
import pytest
import xarray as xr
import zarr
from obstore.store import LocalStore, MemoryStore
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.dtype import get_data_type_from_native_dtype
from zarr.core.metadata.v3 import ArrayV3Metadata

from virtualize.errors import ChunkReadError, UnauthorizedLocationError
from virtualize.manifests import INLINE, MISSING, ChunkManifest, ManifestArray, ManifestGroup
from virtualize.registry import ObjectStoreRegistry
from virtualize.store import ManifestStore

BYTES = {"name": "bytes", "configuration": {"endian": "little"}}
ZLIB = {"name": "numcodecs.zlib", "configuration": {"level": 5}}
PROTOTYPE = default_buffer_prototype()

TEMP = np.arange(24, dtype="<i4").reshape(4, 6) * 10 - 50  # chunk (1, 1) is left missing
TEMP_FILL = -1
COMPRESSED = np.linspace(-1.5, 2.5, 5)  # float64, chunks of 2: 3 zlib chunks, the last partial
SMALL = np.array([7, -8, 9], dtype="<i2")  # chunk 0 inline, chunks 1 and 2 in the file
DEEP = np.arange(6, dtype="<u2").reshape(2, 3)  # in a MemoryStore


def run[T](coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def collect(iterator: AsyncIterator[str]) -> list[str]:
    return [key async for key in iterator]


def metadata(
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: str,
    *,
    fill_value: Any = 0,
    codecs: list[dict[str, Any]] | None = None,
    dims: tuple[str, ...] | None = None,
    key_encoding: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
) -> ArrayV3Metadata:
    return ArrayV3Metadata(
        shape=shape,
        data_type=get_data_type_from_native_dtype(np.dtype(dtype)),
        chunk_grid={"name": "regular", "configuration": {"chunk_shape": chunks}},
        chunk_key_encoding=key_encoding or {"name": "default", "configuration": {"separator": "/"}},
        fill_value=fill_value,
        codecs=codecs or [BYTES],
        attributes=attributes or {},
        dimension_names=dims,
    )


class FileWriter:
    """Appends chunks to a file and remembers where each one went."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = bytearray(b"not a chunk: header bytes\n")

    def add(self, payload: bytes) -> tuple[int, int]:
        offset = len(self.data)
        self.data += payload + b"--padding--"
        return offset, len(payload)

    def write(self) -> None:
        self.path.write_bytes(bytes(self.data))


@dataclass
class Archive:
    store: ManifestStore
    data_dir: Path
    url: str
    secret: Path


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    secret = tmp_path / "outside" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(b"S" * 4096)
    path = data_dir / "source.bin"
    url = path.as_uri()
    writer = FileWriter(path)

    # temp: 2x2 grid of raw int32 chunks, (1, 1) missing
    offsets = np.zeros((2, 2), dtype=np.uint64)
    lengths = np.zeros((2, 2), dtype=np.uint64)
    present = np.ones((2, 2), dtype=bool)
    present[1, 1] = False
    for i in range(2):
        for j in range(2):
            if present[i, j]:
                block = np.ascontiguousarray(TEMP[2 * i : 2 * i + 2, 3 * j : 3 * j + 3])
                offsets[i, j], lengths[i, j] = writer.add(block.tobytes())
    temp = ManifestArray(
        metadata(
            (4, 6),
            (2, 3),
            "<i4",
            fill_value=TEMP_FILL,
            dims=("time", "x"),
            attributes={"units": "K"},
        ),
        ChunkManifest.from_single_url(url, offsets, lengths, present=present),
    )

    # compressed: zlib chunks of 2 float64 values, the last one zero-padded to a full chunk
    padded = np.concatenate([COMPRESSED, [0.0]])
    ranges = [writer.add(zlib.compress(padded[k : k + 2].tobytes())) for k in range(0, 6, 2)]
    compressed = ManifestArray(
        metadata((5,), (2,), "<f8", fill_value=float("nan"), codecs=[BYTES, ZLIB], dims=("y",)),
        ChunkManifest.from_single_url(url, [r[0] for r in ranges], [r[1] for r in ranges]),
    )

    # small: chunk 0 inline, chunks 1 and 2 referenced, with the v2 chunk key encoding
    one, two = writer.add(SMALL[1:2].tobytes()), writer.add(SMALL[2:3].tobytes())
    small = ManifestArray(
        metadata(
            (3,),
            (1,),
            "<i2",
            dims=("z",),
            key_encoding={"name": "v2", "configuration": {"separator": "."}},
        ),
        ChunkManifest(
            [url],
            np.array([INLINE, 0, 0], dtype=np.uint32),
            [0, one[0], two[0]],
            [0, one[1], two[1]],
            inline={0: SMALL[0:1].tobytes()},
        ),
    )

    # scalar: a 0-d array
    scalar_range = writer.add(np.float32(3.25).tobytes())
    scalar = ManifestArray(
        metadata((), (), "<f4"),
        ChunkManifest.from_single_url(url, np.uint64(scalar_range[0]), np.uint64(4)),
    )
    writer.write()

    # deep: in a MemoryStore, in a nested group
    memory = MemoryStore()
    obstore.put(memory, "mem/deep.bin", b"xx" + DEEP.tobytes())
    deep = ManifestArray(
        metadata((2, 3), (2, 3), "<u2", dims=("a", "b")),
        ChunkManifest.from_single_url("memory:///mem/deep.bin", [[2]], [[12]]),
    )

    group = ManifestGroup(
        {"temp": temp, "compressed": compressed, "small": small, "scalar": scalar},
        {
            "sub": ManifestGroup(
                {}, {"inner": ManifestGroup({"deep": deep}, attributes={"level": 2})}
            )
        },
        {"title": "test archive"},
    )
    registry = ObjectStoreRegistry({data_dir.as_uri(): LocalStore(data_dir), "memory:///": memory})
    return Archive(ManifestStore(group, registry=registry), data_dir, url, secret)


def expected_temp() -> np.ndarray:
    expected = TEMP.copy()
    expected[2:, 3:] = TEMP_FILL
    return expected


# -- reading --------------------------------------------------------------------------------


def test_zarr_reads_exact_numbers(archive: Archive) -> None:
    store = archive.store
    np.testing.assert_array_equal(
        zarr.open_array(store, path="temp", mode="r")[...], expected_temp()
    )
    np.testing.assert_array_equal(
        zarr.open_array(store, path="compressed", mode="r")[...], COMPRESSED
    )
    np.testing.assert_array_equal(zarr.open_array(store, path="small", mode="r")[...], SMALL)
    assert zarr.open_array(store, path="scalar", mode="r")[()] == np.float32(3.25)
    np.testing.assert_array_equal(
        zarr.open_array(store, path="sub/inner/deep", mode="r")[...], DEEP
    )
    # a selection reads only what it needs, and the numbers still match
    np.testing.assert_array_equal(
        zarr.open_array(store, path="temp", mode="r")[1:3, 2:5], expected_temp()[1:3, 2:5]
    )


def test_xarray_reads_exact_numbers(archive: Archive) -> None:
    ds = xr.open_zarr(archive.store, consolidated=False, zarr_format=3)
    assert ds.attrs == {"title": "test archive"}
    assert ds["temp"].dims == ("time", "x")
    assert ds["temp"].attrs == {"units": "K"}
    np.testing.assert_array_equal(ds["temp"].values, expected_temp())
    np.testing.assert_array_equal(ds["compressed"].values, COMPRESSED)
    np.testing.assert_array_equal(ds["small"].values, SMALL)
    assert ds["compressed"].dtype == np.float64 and ds["small"].dtype == np.int16
    inner = xr.open_zarr(archive.store, group="sub/inner", consolidated=False, zarr_format=3)
    assert inner.attrs == {"level": 2}
    np.testing.assert_array_equal(inner["deep"].values, DEEP)


def test_zarr_group_members(archive: Archive) -> None:
    root = zarr.open_group(archive.store, mode="r", zarr_format=3)
    assert set(root.array_keys()) == {"temp", "compressed", "small", "scalar"}
    assert set(root.group_keys()) == {"sub"}
    assert root.attrs["title"] == "test archive"
    assert root["sub/inner"].attrs["level"] == 2


def test_missing_chunks_are_absent_and_inline_chunks_served(archive: Archive) -> None:
    store = archive.store
    assert run(store.get("temp/c/1/1", PROTOTYPE)) is None
    inline = run(store.get("small/0", PROTOTYPE))
    assert inline is not None and inline.to_bytes() == SMALL[0:1].tobytes()
    chunk = run(store.get("temp/c/0/1", PROTOTYPE))
    assert chunk is not None
    np.testing.assert_array_equal(np.frombuffer(chunk.to_bytes(), "<i4"), TEMP[:2, 3:].ravel())


@pytest.mark.parametrize(
    "key",
    [
        "temp/c/2/0",  # outside the grid
        "temp/c/0",  # too few indices
        "temp/c/0/0/0",  # too many
        "temp/c/x/0",
        "temp/c/01/0",  # a spelling zarr never writes
        "temp/c/-1/0",
        "temp/0.0",  # another array's key encoding
        "small/c/0",
        "nothing/c/0",
        "nothing/zarr.json",
        "sub/c/0",
        "scalar/c/0",
    ],
)
def test_keys_that_name_nothing(archive: Archive, key: str) -> None:
    assert run(archive.store.get(key, PROTOTYPE)) is None
    assert not run(archive.store.exists(key))


def test_byte_range_requests(archive: Archive) -> None:
    store = archive.store
    whole = TEMP[:2, 3:].tobytes()  # chunk (0, 1), 24 bytes

    def get(request: Any, key: str = "temp/c/0/1") -> bytes:
        buffer = run(store.get(key, PROTOTYPE, request))
        assert buffer is not None
        return buffer.to_bytes()

    assert get(RangeByteRequest(4, 12)) == whole[4:12]
    assert get(RangeByteRequest(20, 100)) == whole[20:]  # clipped to the chunk
    assert get(OffsetByteRequest(16)) == whole[16:]
    assert get(SuffixByteRequest(8)) == whole[-8:]
    assert get(SuffixByteRequest(100)) == whole
    inline = SMALL[0:1].tobytes()
    assert get(RangeByteRequest(1, 2), "small/0") == inline[1:2]
    assert get(SuffixByteRequest(1), "small/0") == inline[-1:]
    document = run(store.get("zarr.json", PROTOTYPE))
    assert document is not None
    assert get(OffsetByteRequest(3), "zarr.json") == document.to_bytes()[3:]
    values = run(
        store.get_partial_values(
            PROTOTYPE, [("temp/c/0/1", RangeByteRequest(0, 4)), ("temp/c/1/1", None)]
        )
    )
    assert values[0] is not None and values[0].to_bytes() == whole[:4]
    assert values[1] is None


# -- listing --------------------------------------------------------------------------------


def test_exists(archive: Archive) -> None:
    store = archive.store
    for key in ["zarr.json", "temp/zarr.json", "sub/zarr.json", "sub/inner/deep/zarr.json"]:
        assert run(store.exists(key)), key
    for key in ["temp/c/0/0", "small/0", "small/2", "scalar/c", "sub/inner/deep/c/0/0"]:
        assert run(store.exists(key)), key
    assert not run(store.exists("temp/c/1/1"))  # missing chunk
    assert not run(store.exists("sub/inner/zarr.json/x"))


def test_list_and_list_prefix(archive: Archive) -> None:
    keys = run(collect(archive.store.list()))
    assert len(keys) == len(set(keys))
    assert set(keys) == {
        "zarr.json",
        "temp/zarr.json",
        "temp/c/0/0",
        "temp/c/0/1",
        "temp/c/1/0",
        "compressed/zarr.json",
        "compressed/c/0",
        "compressed/c/1",
        "compressed/c/2",
        "small/zarr.json",
        "small/0",
        "small/1",
        "small/2",
        "scalar/zarr.json",
        "scalar/c",
        "sub/zarr.json",
        "sub/inner/zarr.json",
        "sub/inner/deep/zarr.json",
        "sub/inner/deep/c/0/0",
    }
    # every listed key can be read
    for key in keys:
        assert run(archive.store.get(key, PROTOTYPE)) is not None, key
    assert set(run(collect(archive.store.list_prefix("sub/")))) == {
        "sub/zarr.json",
        "sub/inner/zarr.json",
        "sub/inner/deep/zarr.json",
        "sub/inner/deep/c/0/0",
    }
    assert run(collect(archive.store.list_prefix("nothing"))) == []


def test_list_dir(archive: Archive) -> None:
    store = archive.store

    def listing(prefix: str) -> list[str]:
        return sorted(run(collect(store.list_dir(prefix))))

    assert listing("") == ["compressed", "scalar", "small", "sub", "temp", "zarr.json"]
    assert listing("sub") == ["inner", "zarr.json"]
    assert listing("sub/inner/") == ["deep", "zarr.json"]
    assert listing("temp") == ["c", "zarr.json"]
    assert listing("temp/c") == ["0", "1"]
    assert listing("temp/c/1") == ["0"]  # (1, 1) is missing
    assert listing("small") == ["0", "1", "2", "zarr.json"]
    assert listing("nothing") == []


# -- writes are refused ---------------------------------------------------------------------


def test_writes_raise(archive: Archive) -> None:
    store = archive.store
    assert store.read_only
    assert not store.supports_writes and not store.supports_deletes
    with pytest.raises(ValueError, match="read-only"):
        run(store.set("temp/c/1/1", PROTOTYPE.buffer.from_bytes(b"\0" * 24)))
    with pytest.raises(ValueError, match="read-only"):
        run(store.delete("temp/c/0/0"))
    with pytest.raises(ValueError, match="read-only"):
        store.with_read_only(False)
    assert store.with_read_only(True) is store
    with pytest.raises(Exception):  # noqa: B017  (zarr's own error for a read-only store)
        zarr.open_array(store, path="temp", mode="r+")[0, 0] = 1
    np.testing.assert_array_equal(
        zarr.open_array(store, path="temp", mode="r")[...], expected_temp()
    )


# -- security and failures ------------------------------------------------------------------


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path the store asks obstore for (the real fetch still happens)."""
    paths: list[str] = []
    real: Callable[..., Any] = obstore.get_range_async

    async def spy(store: Any, path: str, **kwargs: Any) -> Any:
        paths.append(path)
        return await real(store, path, **kwargs)

    monkeypatch.setattr(obstore, "get_range_async", spy)
    return paths


def store_for(array_url: str, archive: Archive, *, length: int = 24) -> ManifestStore:
    array = ManifestArray(
        metadata((2, 3), (2, 3), "<i4", dims=("time", "x")),
        ChunkManifest.from_single_url(array_url, [[0]], [[length]]),
    )
    return ManifestStore(ManifestGroup({"stolen": array}), registry=archive.store.registry)


@pytest.mark.parametrize("spelling", ["direct", "dotdot", "percent"])
def test_chunk_outside_the_registry_is_refused_on_read(
    archive: Archive, fetched: list[str], spelling: str
) -> None:
    url = {
        "direct": archive.secret.as_uri(),
        "dotdot": archive.data_dir.as_uri() + "/../outside/secret.bin",
        "percent": archive.data_dir.as_uri() + "/%2e%2e/outside/secret.bin",
    }[spelling]
    store = store_for(url, archive)
    # building the store and reading metadata is fine: nothing is fetched
    array = zarr.open_array(store, path="stolen", mode="r")
    with pytest.raises(UnauthorizedLocationError) as info:
        array[...]
    assert info.value.url == url
    with pytest.raises(UnauthorizedLocationError):
        run(store.get("stolen/c/0/0", PROTOTYPE))
    with pytest.raises(UnauthorizedLocationError):
        xr.open_zarr(store, consolidated=False, zarr_format=3)["stolen"].load()
    assert fetched == []  # the refused file was never requested


def test_truncated_file_raises_chunk_read_error(archive: Archive) -> None:
    path = archive.data_dir / "source.bin"
    path.write_bytes(path.read_bytes()[:40])  # chunk (0, 0) ends past byte 40
    with pytest.raises(ChunkReadError) as info:
        zarr.open_array(archive.store, path="temp", mode="r")[...]
    assert info.value.url == archive.url
    assert info.value.variable == "temp"
    assert archive.url in str(info.value) and "'temp'" in str(info.value)
    assert isinstance(info.value, OSError)


def test_chunk_past_the_end_of_a_short_file(archive: Archive) -> None:
    short = archive.data_dir / "short.bin"
    short.write_bytes(b"\1" * 10)
    store = store_for(short.as_uri(), archive)
    with pytest.raises(ChunkReadError) as info:
        run(store.get("stolen/c/0/0", PROTOTYPE))
    assert info.value.url == short.as_uri() and info.value.variable == "stolen"


def test_deleted_file_raises_chunk_read_error(archive: Archive) -> None:
    (archive.data_dir / "source.bin").unlink()
    with pytest.raises(ChunkReadError, match="temp"):
        run(archive.store.get("temp/c/0/0", PROTOTYPE))


# -- pickling -------------------------------------------------------------------------------


def test_store_pickles_and_reads_after_unpickling(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    values = np.arange(12, dtype="<f4").reshape(3, 4)
    (data_dir / "f.bin").write_bytes(b"12345678" + values.tobytes())
    array = ManifestArray(
        metadata((3, 4), (3, 4), "<f4", dims=("y", "x")),
        ChunkManifest.from_single_url((data_dir / "f.bin").as_uri(), [[8]], [[48]]),
    )
    registry = ObjectStoreRegistry({data_dir.as_uri(): LocalStore(data_dir)})
    store = ManifestStore(ManifestGroup({"v": array}), registry=registry)
    copy = pickle.loads(pickle.dumps(store))
    assert isinstance(copy, ManifestStore) and copy.read_only
    assert copy.registry.prefixes == registry.prefixes
    np.testing.assert_array_equal(zarr.open_array(copy, path="v", mode="r")[...], values)
    np.testing.assert_array_equal(
        xr.open_zarr(copy, consolidated=False, zarr_format=3)["v"].values, values
    )
    assert copy.group.arrays["v"].manifest == array.manifest


def test_store_equality_and_hash(archive: Archive) -> None:
    store = archive.store
    same = ManifestStore(store.group, registry=store.registry)
    assert store == same and hash(store) == hash(same)
    other = ManifestStore(ManifestGroup(), registry=store.registry)
    assert store != other
    assert "ManifestStore" in repr(store)


def test_manifest_sentinels_are_what_the_store_uses(archive: Archive) -> None:
    temp = archive.store.group.arrays["temp"]
    assert temp.manifest.path_ids[1, 1] == MISSING
    assert archive.store.group.arrays["small"].manifest.path_ids[0] == INLINE
