"""IcechunkParser: repositories written at test time with virtual, native and inline chunks.

Each test reads the parsed ManifestStore with xarray / zarr and compares with reading the
repository directly through an icechunk session.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import icechunk
import numpy as np
import obstore
import pytest
import xarray as xr
import zarr
from obstore.store import LocalStore, S3Store
from zarr.codecs.numcodecs import Zlib

import virtualize as vz
from virtualize.errors import (
    InvalidFileError,
    SkippedVariableWarning,
    UnauthorizedLocationError,
    UnsupportedFeatureError,
)
from virtualize.manifests import INLINE, MISSING, ManifestArray
from virtualize.parsers.icechunk import IcechunkParser

pytestmark = pytest.mark.filterwarnings(
    "ignore:Numcodecs codecs are not in the Zarr version 3 specification:UserWarning",
    "ignore::zarr.errors.ZarrUserWarning",
)

SHAPE = (80, 60)
CHUNKS = (20, 30)
GRID = (4, 2)


def write_source(path: Path) -> dict[str, np.ndarray]:
    """An HDF5 (netCDF4-style) file of deflate-compressed chunked datasets."""
    rng = np.random.default_rng(3)
    values = {
        "temperature": rng.normal(280, 5, size=SHAPE),
        "mixed": rng.normal(size=SHAPE),
        "deep": rng.normal(size=SHAPE),
    }
    with h5py.File(path, "w") as file:
        for name, data in values.items():
            file.create_dataset(name, data=data, chunks=CHUNKS, compression="gzip")
    return values


def chunk_refs(path: Path, name: str) -> dict[tuple[int, ...], tuple[int, int]]:
    """Grid position → (offset, length) of every chunk of an HDF5 dataset."""
    refs = {}
    with h5py.File(path, "r") as file:
        dataset = file[name]
        for i in range(dataset.id.get_num_chunks()):
            info = dataset.id.get_chunk_info(i)
            position = tuple(o // c for o, c in zip(info.chunk_offset, CHUNKS, strict=True))
            refs[position] = (info.byte_offset, info.size)
    return refs


def set_refs(
    store: Any,
    array: str,
    url: str,
    refs: dict[tuple[int, ...], tuple[int, int]],
    rows: range,
) -> None:
    """Virtual references for the chunks of grid rows ``rows``; no chunk elsewhere."""
    locations: list[str] = []
    offsets: list[int] = []
    lengths: list[int] = []
    for i in range(GRID[0]):
        for j in range(GRID[1]):
            offset, length = refs[(i, j)]
            keep = i in rows
            locations.append(url if keep else "")
            offsets.append(offset if keep else 0)
            lengths.append(length if keep else 0)
    failed = store.set_virtual_refs_arr(
        array,
        GRID,
        locations,
        np.array(offsets, dtype=np.uint64),
        np.array(lengths, dtype=np.uint64),
    )
    assert not failed


def create_array(group: zarr.Group, name: str, **options: Any) -> zarr.Array:
    return group.create_array(
        name,
        shape=SHAPE,
        chunks=CHUNKS,
        dtype="f8",
        compressors=Zlib(level=4),  # the HDF5 deflate filter writes zlib streams
        fill_value=np.nan,
        dimension_names=["y", "x"],
        **options,
    )


@dataclass
class Repo:
    folder: Path
    data: Path
    path: Path
    source_url: str
    container: str
    first_snapshot: str
    second_snapshot: str

    def registry(self) -> vz.ObjectStoreRegistry:
        return vz.ObjectStoreRegistry({self.folder.as_uri() + "/": LocalStore(self.folder)})

    def session(self, **version: Any) -> Any:
        repository = icechunk.Repository.open(
            icechunk.local_filesystem_storage(str(self.path)),
            authorize_virtual_chunk_access={
                self.container: icechunk.credentials.LocalFileSystemAccess
            },
        )
        if not version:
            version = {"branch": "main"}
        return repository.readonly_session(**version)


def make_repo(folder: Path) -> Repo:
    """A repository with virtual, native, inline and missing chunks, two commits and a tag.

    ``mixed`` holds all four kinds in one array: grid row 0 virtual (into the HDF5 file),
    row 1 native (random values, too large to inline), row 2 inline (constant values
    compress to a few bytes), row 3 missing.
    """
    data = folder / "data"
    data.mkdir()
    source = data / "source.nc"
    write_source(source)
    source_url = source.as_uri()
    container = data.as_uri() + "/"
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(
            container, icechunk.local_filesystem_store(str(data)), name="data"
        )
    )
    path = folder / "repo"
    repository = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(path)),
        config=config,
        authorize_virtual_chunk_access={container: icechunk.credentials.LocalFileSystemAccess},
    )
    session = repository.writable_session("main")
    store = session.store
    root = zarr.open_group(store, mode="w", attributes={"title": "mixed repository"})
    rng = np.random.default_rng(4)

    create_array(root, "temperature", attributes={"units": "K"})
    set_refs(store, "temperature", source_url, chunk_refs(source, "temperature"), range(4))

    mixed = create_array(root, "mixed")
    set_refs(store, "mixed", source_url, chunk_refs(source, "mixed"), range(1))
    mixed[20:40, :] = rng.normal(size=(20, 60))
    mixed[40:60, :] = 1.25

    y = root.create_array("y", shape=(80,), chunks=(80,), dtype="i4", dimension_names=["y"])
    y[:] = np.arange(80)
    scalar = root.create_array("scalar", shape=(), dtype="f4", dimension_names=[])
    scalar[()] = 7.5

    deeper = root.create_group("nested").create_group("deeper", attributes={"level": 2})
    create_array(deeper, "deep")
    # A relative location in a named container: the chunk iterator yields it resolved.
    relative = "vcc://data/source.nc"
    set_refs(store, "nested/deeper/deep", relative, chunk_refs(source, "deep"), range(2, 4))
    first = session.commit("first")
    repository.create_tag("v1", first)

    session = repository.writable_session("main")
    array = zarr.open_array(session.store, path="temperature", mode="r+")
    array[0:20, 0:30] = rng.normal(size=(20, 30))  # a native chunk replaces a virtual one
    second = session.commit("second")
    return Repo(folder, data, path, source_url, container, first, second)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return make_repo(tmp_path_factory.mktemp("icechunk"))


def open_virtual(store: vz.ManifestStore, **kwargs: Any) -> xr.Dataset:
    return xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None, **kwargs).load()


def open_session(session: Any, **kwargs: Any) -> xr.Dataset:
    return xr.open_zarr(
        session.store, consolidated=False, zarr_format=3, chunks=None, **kwargs
    ).load()


def test_round_trip_references_every_kind_of_chunk(repo: Repo) -> None:
    store = IcechunkParser()(str(repo.path), repo.registry())
    xr.testing.assert_identical(open_virtual(store), open_session(repo.session()))
    assert store.group.attributes == {"title": "mixed repository"}

    mixed = store.group.arrays["mixed"].manifest
    ids = mixed.path_ids
    assert all(mixed.urls[int(i)] == repo.source_url for i in ids[0])
    native_urls = [mixed.urls[int(i)] for i in ids[1]]
    chunk_folder = (repo.path / "chunks").as_uri() + "/"
    assert all(url.startswith(chunk_folder) for url in native_urls)
    for url, length in zip(native_urls, mixed.lengths[1], strict=True):
        # A native chunk is a whole object of the repository's chunks folder.
        assert Path(url.removeprefix("file://")).stat().st_size == int(length)
    assert (ids[2] == INLINE).all() and (ids[3] == MISSING).all()
    assert mixed.ninline == 2
    # The virtual references are the HDF5 chunks' byte ranges.
    refs = chunk_refs(repo.data / "source.nc", "mixed")
    assert [(int(o), int(n)) for o, n in zip(mixed.offsets[0], mixed.lengths[0], strict=True)] == [
        refs[(0, 0)],
        refs[(0, 1)],
    ]
    deep = store.group.get_node("nested/deeper/deep")
    assert isinstance(deep, ManifestArray) and deep.manifest.urls == (repo.source_url,)
    scalar = store.group.arrays["scalar"]
    assert scalar.manifest.path_ids.shape == () and scalar.manifest.ninline == 1


def test_metadata_is_the_repository_s(repo: Repo) -> None:
    store = IcechunkParser()(str(repo.path), repo.registry())
    session = repo.session()
    for path, node in store.group.walk():
        if isinstance(node, ManifestArray):
            expected = zarr.open_array(session.store, path=path, mode="r").metadata
            assert node.metadata.to_dict() == expected.to_dict(), path
            np.testing.assert_array_equal(
                zarr.open_array(store, path=path, mode="r", zarr_format=3)[...],
                zarr.open_array(session.store, path=path, mode="r")[...],
            )


def test_versions(repo: Repo) -> None:
    registry = repo.registry()
    for parser, version in [
        (IcechunkParser(tag="v1"), {"tag": "v1"}),
        (IcechunkParser(snapshot_id=repo.first_snapshot), {"snapshot_id": repo.first_snapshot}),
        (IcechunkParser(branch="main"), {"branch": "main"}),
    ]:
        store = parser(str(repo.path), registry)
        xr.testing.assert_identical(open_virtual(store), open_session(repo.session(**version)))
    old = IcechunkParser(tag="v1")(str(repo.path), registry).group.arrays["temperature"]
    new = IcechunkParser()(str(repo.path), registry).group.arrays["temperature"]
    assert old.manifest.urls == (repo.source_url,)
    assert new.manifest.urls[int(new.manifest.path_ids[0, 0])].startswith(
        (repo.path / "chunks").as_uri()
    )


def test_group(repo: Repo) -> None:
    registry = repo.registry()
    store = IcechunkParser(group="nested/deeper")(repo.path.as_uri(), registry)
    assert store.group.attributes == {"level": 2}
    xr.testing.assert_identical(
        open_virtual(store), open_session(repo.session(), group="nested/deeper")
    )
    whole = IcechunkParser()(str(repo.path), registry)
    xr.testing.assert_identical(
        open_virtual(whole, group="nested/deeper"),
        open_session(repo.session(), group="nested/deeper"),
    )
    with pytest.raises(InvalidFileError, match="no group"):
        IcechunkParser(group="nowhere")(str(repo.path), registry)


def test_native_chunks_inline(repo: Repo) -> None:
    store = IcechunkParser(native_chunks="inline")(str(repo.path), repo.registry())
    chunk_folder = (repo.path / "chunks").as_uri()
    for _, node in store.group.walk():
        if isinstance(node, ManifestArray):
            assert not any(url.startswith(chunk_folder) for url in node.manifest.urls)
    assert store.group.arrays["mixed"].manifest.ninline == 4
    xr.testing.assert_identical(open_virtual(store), open_session(repo.session()))
    with pytest.raises(UnsupportedFeatureError, match="max_inline_bytes") as caught:
        IcechunkParser(native_chunks="inline", max_inline_bytes=100)(
            str(repo.path), repo.registry()
        )
    assert caught.value.variable is not None


def test_native_chunks_refused(repo: Repo) -> None:
    registry = repo.registry()
    with pytest.raises(UnsupportedFeatureError, match="native") as caught:
        IcechunkParser(native_chunks="raise", tag="v1")(str(repo.path), registry)
    assert caught.value.variable == "mixed"
    assert caught.value.url == repo.path.as_uri()
    with pytest.warns(SkippedVariableWarning):
        store = IcechunkParser(native_chunks="raise", on_unsupported="skip", tag="v1")(
            str(repo.path), registry
        )
    assert set(store.skipped) == {"mixed"}
    assert "temperature" in store.group.arrays and "mixed" not in store.group.arrays


def test_references_outside_the_registry_are_refused(repo: Repo) -> None:
    only_repo = vz.ObjectStoreRegistry({repo.path.as_uri() + "/": LocalStore(repo.path)})
    with pytest.raises(UnauthorizedLocationError) as caught:
        IcechunkParser()(str(repo.path), only_repo)
    assert caught.value.url == repo.source_url
    assert caught.value.variable in {"mixed", "temperature", "nested/deeper/deep"}
    only_data = vz.ObjectStoreRegistry({repo.data.as_uri() + "/": LocalStore(repo.data)})
    with pytest.raises(UnauthorizedLocationError) as caught:
        IcechunkParser()(str(repo.path), only_data)
    assert caught.value.url is not None and caught.value.url.startswith(repo.path.as_uri())


def test_small_batches_give_the_same_manifests(repo: Repo) -> None:
    registry = repo.registry()
    one = IcechunkParser(batch_size=1)(str(repo.path), registry)
    many = IcechunkParser()(str(repo.path), registry)
    assert one.group == many.group


def test_drop_variables(repo: Repo) -> None:
    store = IcechunkParser(drop_variables=["mixed", "nested/deeper/deep"])(
        str(repo.path), repo.registry()
    )
    assert "mixed" not in store.group.arrays
    assert store.group.get_node("nested/deeper/deep") is None
    xr.testing.assert_identical(
        open_virtual(store), open_session(repo.session()).drop_vars("mixed")
    )


def test_options_and_pickling(tmp_path: Path) -> None:
    parser = IcechunkParser(tag="v1", group="g", native_chunks="inline")
    clone = pickle.loads(pickle.dumps(parser))
    assert repr(clone) == repr(parser) == "IcechunkParser(tag='v1', group='g')"
    with pytest.raises(ValueError, match="at most one"):
        IcechunkParser(branch="main", tag="v1")
    with pytest.raises(ValueError, match="native_chunks"):
        IcechunkParser(native_chunks="copy")  # type: ignore[arg-type]
    registry = vz.ObjectStoreRegistry({tmp_path.as_uri() + "/": LocalStore(tmp_path)})
    with pytest.raises(InvalidFileError, match="Icechunk repository"):
        IcechunkParser()(str(tmp_path / "no-repo"), registry)


def test_unknown_version(repo: Repo) -> None:
    with pytest.raises(InvalidFileError, match="no such version"):
        IcechunkParser(branch="nope")(str(repo.path), repo.registry())


# -- S3 -------------------------------------------------------------------------------------

BUCKET = "icechunk-archive"
KEYS = {"access_key_id": "testing", "secret_access_key": "testing"}


def test_repository_on_s3(s3_endpoint: str, tmp_path: Path) -> None:
    source = tmp_path / "source.nc"
    write_source(source)
    bucket = S3Store(
        BUCKET,
        endpoint=s3_endpoint,
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
        **KEYS,
    )
    obstore.put(bucket, "data/source.nc", source.read_bytes())
    source_url = f"s3://{BUCKET}/data/source.nc"
    container = f"s3://{BUCKET}/data/"
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(
            container,
            icechunk.s3_store(
                region="us-east-1",
                endpoint_url=s3_endpoint,
                allow_http=True,
                s3_compatible=True,
                force_path_style=True,
            ),
        )
    )
    storage = icechunk.s3_storage(
        bucket=BUCKET,
        prefix="repos/one",
        region="us-east-1",
        endpoint_url=s3_endpoint,
        allow_http=True,
        force_path_style=True,
        **KEYS,
    )
    authorise = icechunk.containers_credentials({container: icechunk.s3_static_credentials(**KEYS)})
    repository = icechunk.Repository.create(
        storage, config=config, authorize_virtual_chunk_access=authorise
    )
    session = repository.writable_session("main")
    root = zarr.open_group(session.store, mode="w")
    mixed = create_array(root, "mixed")
    set_refs(session.store, "mixed", source_url, chunk_refs(source, "mixed"), range(1))
    mixed[20:40, :] = np.random.default_rng(5).normal(size=(20, 60))
    mixed[40:60, :] = 2.0
    session.commit("on s3")

    registry = vz.ObjectStoreRegistry({f"s3://{BUCKET}/": bucket})
    store = IcechunkParser()(f"s3://{BUCKET}/repos/one", registry)
    manifest = store.group.arrays["mixed"].manifest
    native = [url for url in manifest.urls if url != source_url]
    assert len(native) == 2
    assert all(url.startswith(f"s3://{BUCKET}/repos/one/chunks/") for url in native)
    reader = icechunk.Repository.open(storage, authorize_virtual_chunk_access=authorise)
    expected = open_session(reader.readonly_session("main"))
    xr.testing.assert_identical(open_virtual(store), expected)
    inline = IcechunkParser(native_chunks="inline")(f"s3://{BUCKET}/repos/one", registry)
    xr.testing.assert_identical(open_virtual(inline), expected)
