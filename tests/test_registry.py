"""ObjectStoreRegistry: the allow-list of every byte virtualize reads."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from obstore.store import LocalStore, MemoryStore

from virtualize.errors import (
    ChunkReadError,
    ConcatenationError,
    InvalidFileError,
    ManifestError,
    UnauthorizedLocationError,
    UnsupportedFeatureError,
    VirtualArrayAccessError,
    VirtualizeError,
)
from virtualize.registry import ObjectStoreRegistry, normalize_url


@pytest.fixture
def stores() -> dict[str, MemoryStore]:
    return {name: MemoryStore() for name in ("data", "era5", "bucket", "web")}


@pytest.fixture
def registry(stores: dict[str, MemoryStore]) -> ObjectStoreRegistry:
    return ObjectStoreRegistry(
        {
            "file:///data/": stores["data"],
            "file:///data/era5": stores["era5"],  # no trailing slash: one is added
            "s3://bucket/prefix/": stores["bucket"],
            "https://host.example/files/": stores["web"],
        }
    )


# -- resolution -----------------------------------------------------------------------------


def test_longest_prefix_wins_and_paths_are_relative(
    registry: ObjectStoreRegistry, stores: dict[str, MemoryStore]
) -> None:
    store, path = registry.resolve("file:///data/era5/2020/jan.nc")
    assert store is stores["era5"] and path == "2020/jan.nc"
    store, path = registry.resolve("file:///data/gfs/run.grib2")
    assert store is stores["data"] and path == "gfs/run.grib2"
    store, path = registry.resolve("s3://bucket/prefix/a/b.nc")
    assert store is stores["bucket"] and path == "a/b.nc"
    store, path = registry.resolve("https://host.example/files/x.tif")
    assert store is stores["web"] and path == "x.tif"


def test_register_adds_trailing_slash_and_orders_prefixes(
    registry: ObjectStoreRegistry,
) -> None:
    assert "file:///data/era5/" in registry.prefixes
    assert registry.prefixes[0] == "https://host.example/files/"  # longest first
    assert list(registry) == list(registry.prefixes)
    assert len(registry) == 4
    registry.register("s3://other", MemoryStore())
    assert "s3://other/" in registry.prefixes
    assert "file:///data/era5/" in repr(registry)


def test_local_paths_resolve_like_file_urls(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    registry = ObjectStoreRegistry({str(tmp_path): store})
    resolved, path = registry.resolve(str(tmp_path / "sub" / "f.nc"))
    assert resolved is store and path == "sub/f.nc"
    assert registry.resolve((tmp_path / "a b%.nc").as_uri())[1] == "a b%.nc"


def test_unregistered_url_is_refused_naming_it(registry: ObjectStoreRegistry) -> None:
    with pytest.raises(UnauthorizedLocationError) as info:
        registry.resolve("file:///home/user/.ssh/id_rsa")
    assert info.value.url == "file:///home/user/.ssh/id_rsa"
    assert "file:///home/user/.ssh/id_rsa" in str(info.value)
    assert "register" in str(info.value).lower()
    assert isinstance(info.value, PermissionError)
    assert "file:///home/user/.ssh/id_rsa" not in registry
    assert "file:///data/x.nc" in registry
    assert 42 not in registry


@pytest.mark.parametrize(
    "url",
    [
        "file:///data/../etc/passwd",
        "file:///data/era5/../../etc/passwd",
        "file:///data/%2e%2e/etc/passwd",
        "/data/../etc/passwd",
        "s3://bucket/prefix/../secret/key",
        "s3://bucket/prefix/%2E%2E/secret/key",
        "https://host.example/files/../admin",
        "https://host.example/files/./%2e%2e/admin",
    ],
)
def test_dot_dot_cannot_escape_a_prefix(registry: ObjectStoreRegistry, url: str) -> None:
    with pytest.raises(UnauthorizedLocationError):
        registry.resolve(url)
    assert url not in registry


def test_dot_dot_inside_a_prefix_stays_inside(
    registry: ObjectStoreRegistry, stores: dict[str, MemoryStore]
) -> None:
    store, path = registry.resolve("file:///data/era5/../gfs/./x.nc")
    assert store is stores["data"] and path == "gfs/x.nc"


@pytest.mark.parametrize(
    "base", ["gs://bucket", "s3a://bucket", "abfss://container@account.dfs.core.windows.net"]
)
def test_every_scheme_is_normalised(base: str) -> None:
    registry = ObjectStoreRegistry({f"{base}/public/": MemoryStore()})
    with pytest.raises(UnauthorizedLocationError):
        registry.resolve(f"{base}/public/../private/key")
    assert registry.resolve(f"{base}/public/a/../b")[1] == "b"


@pytest.mark.parametrize(
    "url",
    [
        "file:///database/x.nc",
        "file:///data",
        "file:///dat",
        "s3://bucket/prefixes/x",
        "s3://bucket2/prefix/x",
    ],
)
def test_prefix_is_a_folder_not_a_string_prefix(registry: ObjectStoreRegistry, url: str) -> None:
    with pytest.raises(UnauthorizedLocationError):
        registry.resolve(url)


def test_file_url_with_a_host_is_refused(registry: ObjectStoreRegistry) -> None:
    # file://data/x is a typo of file:///data/x; it must not be read as /x
    with pytest.raises(ValueError, match="three slashes"):
        normalize_url("file://data/x.nc")
    with pytest.raises(UnauthorizedLocationError):
        registry.resolve("file://data/x.nc")
    assert "file://data/x.nc" not in registry
    assert normalize_url("file://localhost/data/x.nc") == "file:///data/x.nc"


def test_check(registry: ObjectStoreRegistry) -> None:
    registry.check(["file:///data/a.nc", "s3://bucket/prefix/b.nc"])
    with pytest.raises(UnauthorizedLocationError) as info:
        registry.check(["file:///data/a.nc", "s3://elsewhere/b.nc"])
    assert info.value.url == "s3://elsewhere/b.nc"


# -- normalize_url --------------------------------------------------------------------------


def test_normalize_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_url("a/b.nc") == tmp_path.joinpath("a", "b.nc").as_uri()
    assert normalize_url("./a/../c.nc") == tmp_path.joinpath("c.nc").as_uri()
    assert normalize_url("sub/") == tmp_path.joinpath("sub").as_uri() + "/"
    assert normalize_url(Path("x.nc")) == tmp_path.joinpath("x.nc").as_uri()
    # a colon in a file name is not a url scheme
    assert normalize_url("era5:2020.nc") == tmp_path.as_uri() + "/era5:2020.nc"


def test_normalize_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert normalize_url("~/data/x.nc") == tmp_path.joinpath("data", "x.nc").as_uri()


def test_normalize_file_urls() -> None:
    assert normalize_url("file:///data/x.nc") == "file:///data/x.nc"
    assert normalize_url("FILE:///data//x.nc") == "file:///data/x.nc"
    assert normalize_url("file:///data/sub/") == "file:///data/sub/"
    assert normalize_url("file:///data/a%20b.nc") == "file:///data/a%20b.nc"
    assert normalize_url("/data/a b.nc") == "file:///data/a%20b.nc"
    assert normalize_url("/data/100%.nc") == "file:///data/100%25.nc"
    assert normalize_url("file:////data/x.nc") == "file:///data/x.nc"
    assert normalize_url("file:///") == "file:///"


def test_normalize_remote_urls() -> None:
    assert normalize_url("s3://bucket/a/./b/../c.nc") == "s3://bucket/a/c.nc"
    assert normalize_url("s3://bucket/prefix/") == "s3://bucket/prefix/"
    assert normalize_url("S3://bucket/key") == "s3://bucket/key"
    assert normalize_url("https://host/a/../b?x=1") == "https://host/b?x=1"
    assert normalize_url("memory:///") == "memory:///"
    assert normalize_url("memory:///a/../b") == "memory:///b"
    assert normalize_url("s3://bucket//a") == "s3://bucket/a"


# -- for_urls -------------------------------------------------------------------------------


def test_for_urls_registers_folders_of_local_files(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = tmp_path / "one" / "a.nc"
    second = tmp_path / "one" / "b.nc"
    third = tmp_path / "two" / "c.nc"
    for path in (first, second, third):
        path.write_bytes(b"hello")
    with pytest.warns(UserWarning, match="authorised reads under"):
        registry = ObjectStoreRegistry.for_urls([str(first), second.as_uri(), str(third)])
    assert set(registry.prefixes) == {
        (tmp_path / "one").as_uri() + "/",
        (tmp_path / "two").as_uri() + "/",
    }
    store, path = registry.resolve(str(second))
    assert isinstance(store, LocalStore) and path == "b.nc"
    assert bytes(store.get(path).bytes()) == b"hello"
    with pytest.raises(UnauthorizedLocationError):
        registry.resolve(str(tmp_path / "a.nc"))


def test_for_urls_quiet_and_unknown_scheme(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry = ObjectStoreRegistry.for_urls([str(tmp_path / "x.nc")], quiet=True)
    assert len(registry) == 1
    with pytest.raises(UnauthorizedLocationError, match="no default store"):
        ObjectStoreRegistry.for_urls(["ftp://host/file.nc"], quiet=True)


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls",
    [
        VirtualizeError,
        UnauthorizedLocationError,
        ChunkReadError,
        ConcatenationError,
        ManifestError,
        VirtualArrayAccessError,
        InvalidFileError,
        UnsupportedFeatureError,
    ],
)
def test_errors_pickle_round_trip(cls: type[VirtualizeError]) -> None:
    error = cls("it broke", url="s3://b/k.nc", variable="air", hint="Do this")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert (copy.reason, copy.url, copy.variable, copy.hint) == (
        "it broke",
        "s3://b/k.nc",
        "air",
        "Do this",
    )
    assert str(copy) == str(error) == "s3://b/k.nc: variable 'air': it broke. Do this"
    assert isinstance(copy, VirtualizeError)


def test_error_message_without_location() -> None:
    assert str(ManifestError("bad grid")) == "bad grid"
    assert str(ChunkReadError("short read", url="file:///x")) == "file:///x: short read"
    assert isinstance(ChunkReadError("x"), OSError)
    assert isinstance(ConcatenationError("x"), ValueError)


def test_registry_pickles(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"abc")
    registry = ObjectStoreRegistry({tmp_path.as_uri(): LocalStore(tmp_path)})
    copy = pickle.loads(pickle.dumps(registry))
    assert copy.prefixes == registry.prefixes
    store, path = copy.resolve(str(tmp_path / "f.bin"))
    assert bytes(store.get(path).bytes()) == b"abc"


def test_os_fspath_accepted(tmp_path: Path) -> None:
    assert normalize_url(tmp_path) == tmp_path.as_uri()
    assert os.fspath(tmp_path) in normalize_url(tmp_path).replace("file://", "")


def test_registry_none_allows_plain_http_only_for_http_urls() -> None:
    """obstore refuses ``http://`` unless told to; ``https://`` hosts keep refusing it."""
    plain = ObjectStoreRegistry.for_urls(["http://127.0.0.1:8000/a.nc"], quiet=True)
    store, _ = plain.resolve("http://127.0.0.1:8000/a.nc")
    assert store.client_options["allow_http"] in (True, "true")
    secure = ObjectStoreRegistry.for_urls(["https://example.com/a.nc"], quiet=True)
    store, _ = secure.resolve("https://example.com/a.nc")
    assert store.client_options["allow_http"] in (False, "false")
