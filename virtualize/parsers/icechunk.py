"""Icechunk parser: the virtual, native and inline chunk references of a repository snapshot.

The repository is opened read-only with icechunk, at a branch, tag or snapshot. Each node's
``zarr.json`` is read through the session's store and every chunk reference through
``IcechunkStore.array_chunk_iterator`` (columnar batches; missing chunks are not yielded):

* virtual references keep their url, offset and length;
* inline chunks (bytes held in the repository's manifests) become inline manifest bytes;
* native chunks are objects of the repository itself, ``<repository>/chunks/<chunk id>``:
  they are referenced there (``native_chunks="reference"``), read and held inline
  (``"inline"``), or refused (``"raise"``).

Every url a manifest ends up with, the repository's own included, must lie under the
:class:`~virtualize.registry.ObjectStoreRegistry`, or the parse raises
:class:`~virtualize.errors.UnauthorizedLocationError`. icechunk itself never reads a virtual
chunk here, so no virtual chunk container is authorised when the repository is opened.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import numpy as np
import obstore
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync

from virtualize.errors import (
    InvalidFileError,
    SkippedVariableWarning,
    UnauthorizedLocationError,
    UnsupportedFeatureError,
)
from virtualize.manifests import (
    INLINE,
    MISSING,
    ChunkManifest,
    ManifestArray,
    ManifestGroup,
)
from virtualize.manifests.grid import chunk_grid_of, grid_shape
from virtualize.registry import ObjectStoreRegistry, normalize_url
from virtualize.store import ManifestStore

__all__ = ["IcechunkParser"]

_GRIDS = ("regular", "rectilinear")

#: ``kinds`` values of ``array_chunk_iterator`` (``icechunk.ChunkType``).
_NATIVE, _VIRTUAL, _INLINE = 1, 2, 3
_METADATA_KEY = "zarr.json"
_CONCURRENT_GETS = 64


class IcechunkParser:
    """Read the chunk references of an Icechunk repository back into virtual arrays.

    Parameters
    ----------
    branch, tag, snapshot_id
        Which version to read: at most one of them (default: the tip of ``"main"``).
    group
        The group to open, as a path in the repository (the root by default); its subgroups
        are parsed too.
    drop_variables
        Arrays to leave out, as paths relative to the opened group.
    native_chunks
        What to do with chunks stored in the repository itself. ``"reference"`` (default):
        reference the chunk objects under ``<repository url>/chunks/``, which the registry
        must authorise like any other location. ``"inline"``: read their bytes now and hold
        them in the manifest (for repositories that readers of the result can't reach).
        ``"raise"``: raise :class:`~virtualize.errors.UnsupportedFeatureError`.
    max_inline_bytes
        With ``native_chunks="inline"``, an array whose native chunks hold more bytes than
        this is refused rather than read into memory.
    batch_size
        References per batch read from icechunk's chunk iterator.
    storage_options
        Keyword arguments for ``icechunk.s3_storage`` (``endpoint_url``, ``region``,
        ``force_path_style``, ``allow_http``, credentials, ...) that override what is taken
        from the registry's ``S3Store`` for the repository's bucket.
    on_unsupported
        ``"raise"`` (default) or ``"skip"`` an array that can't be read exactly (a
        non-regular chunk grid, native chunks with ``native_chunks="raise"``); skipped arrays
        are listed in the returned store's ``skipped``.

    Notes
    -----
    Virtual references carry no :class:`~virtualize.manifests.SourceInfo`: icechunk's chunk
    iterator doesn't return the checksums (ETag / last-modified) stored with them.

    Examples
    --------
    >>> parser = IcechunkParser(branch="main")
    >>> store = parser("s3://bucket/repo", registry)  # doctest: +SKIP
    >>> ds = xr.open_zarr(store, consolidated=False, zarr_format=3)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        branch: str | None = None,
        tag: str | None = None,
        snapshot_id: str | None = None,
        group: str | None = None,
        drop_variables: Iterable[str] | None = None,
        native_chunks: Literal["reference", "inline", "raise"] = "reference",
        max_inline_bytes: int = 64 * 1024 * 1024,
        batch_size: int = 1_000_000,
        storage_options: Mapping[str, Any] | None = None,
        on_unsupported: Literal["raise", "skip"] = "raise",
    ) -> None:
        chosen = [
            name
            for name, v in (("branch", branch), ("tag", tag), ("snapshot_id", snapshot_id))
            if v
        ]
        if len(chosen) > 1:
            raise ValueError(f"pass at most one of branch, tag and snapshot_id, got {chosen}")
        if native_chunks not in ("reference", "inline", "raise"):
            raise ValueError(
                f"native_chunks must be 'reference', 'inline' or 'raise', got {native_chunks!r}"
            )
        if on_unsupported not in ("raise", "skip"):
            raise ValueError(f"on_unsupported must be 'raise' or 'skip', got {on_unsupported!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.branch = branch if chosen else "main"
        self.tag = tag
        self.snapshot_id = snapshot_id
        self.group = group
        self.drop_variables = frozenset(v.strip("/") for v in drop_variables or ())
        self.native_chunks = native_chunks
        self.max_inline_bytes = max_inline_bytes
        self.batch_size = batch_size
        self.storage_options = dict(storage_options or {})
        self.on_unsupported = on_unsupported

    def __repr__(self) -> str:
        version = (
            f"snapshot_id={self.snapshot_id!r}"
            if self.snapshot_id
            else f"tag={self.tag!r}"
            if self.tag
            else f"branch={self.branch!r}"
        )
        return f"IcechunkParser({version}, group={self.group!r})"

    def __call__(self, url: str, registry: ObjectStoreRegistry) -> ManifestStore:
        """Read the repository at ``url`` and return a :class:`~virtualize.ManifestStore`.

        Parameters
        ----------
        url
            The repository's location: a local path, ``file://`` or ``s3://`` url.
        registry
            Must authorise the repository and every location its references point to.

        Raises
        ------
        UnauthorizedLocationError
            If the repository, or a url one of its references points to, lies under no
            registered prefix.
        InvalidFileError
            If there is no repository, version or group at ``url``.
        UnsupportedFeatureError
            For an array that can't be read exactly (with ``on_unsupported="raise"``).
        """
        repo_url = normalize_url(url).rstrip("/")
        registry.resolve(repo_url + "/")  # refuse an unregistered repository up front
        session = self._open(repo_url, registry)
        reader = _Reader(self, repo_url, registry, session.store)
        group = sync(reader.read())
        return ManifestStore(group, registry=registry, skipped=reader.skipped)

    def _open(self, repo_url: str, registry: ObjectStoreRegistry) -> Any:
        import icechunk

        storage = _storage_for(repo_url, registry, self.storage_options)
        try:
            repository = icechunk.Repository.open(storage)
        except Exception as error:
            raise InvalidFileError(
                f"cannot open an Icechunk repository here ({error})",
                url=repo_url,
                hint="Check the url and the storage options (endpoint, region, credentials)",
            ) from error
        try:
            if self.snapshot_id:
                return repository.readonly_session(snapshot_id=self.snapshot_id)
            if self.tag:
                return repository.readonly_session(tag=self.tag)
            return repository.readonly_session(self.branch)
        except Exception as error:
            try:
                hint = (
                    f"Branches: {sorted(repository.list_branches())}; "
                    f"tags: {sorted(repository.list_tags())}"
                )
            except Exception:
                hint = "Check branch=, tag= or snapshot_id="
            raise InvalidFileError(
                f"no such version in the repository ({error})", url=repo_url, hint=hint
            ) from error


def _storage_for(repo_url: str, registry: ObjectStoreRegistry, options: Mapping[str, Any]) -> Any:
    """The icechunk ``Storage`` of the repository at ``repo_url``."""
    import icechunk

    parts = urlsplit(repo_url)
    if parts.scheme == "file":
        return icechunk.local_filesystem_storage(unquote(parts.path))
    if parts.scheme == "s3":
        store, _ = registry.resolve(repo_url + "/")
        settings: dict[str, Any] = _s3_settings(store)
        settings.update(options)
        settings.setdefault("prefix", parts.path.strip("/") or None)
        return icechunk.s3_storage(bucket=parts.netloc, **settings)
    raise UnsupportedFeatureError(
        f"repositories at {parts.scheme}:// urls are not supported yet",
        url=repo_url,
        hint="Open repositories on the local file system or S3",
    )


def _s3_settings(store: Any) -> dict[str, Any]:
    """icechunk ``s3_storage`` keywords from an obstore ``S3Store``'s configuration."""
    config = {str(k).lower(): v for k, v in (getattr(store, "config", None) or {}).items()}
    client = {str(k).lower(): v for k, v in (getattr(store, "client_options", None) or {}).items()}
    settings: dict[str, Any] = {}
    for source, target in (
        ("region", "region"),
        ("endpoint", "endpoint_url"),
        ("access_key_id", "access_key_id"),
        ("secret_access_key", "secret_access_key"),
        ("session_token", "session_token"),
        ("token", "session_token"),
    ):
        if config.get(source):
            settings[target] = str(config[source])
    if str(config.get("virtual_hosted_style_request", "")).lower() == "false":
        settings["force_path_style"] = True
    if str(client.get("allow_http", "")).lower() == "true":
        settings["allow_http"] = True
    if str(config.get("skip_signature", "")).lower() == "true":
        settings["anonymous"] = True
    elif "access_key_id" not in settings:
        settings["from_env"] = True
    return settings


class _Reader:
    """Reads one snapshot's metadata and references (in zarr's event loop)."""

    def __init__(
        self, parser: IcechunkParser, repo_url: str, registry: ObjectStoreRegistry, store: Any
    ) -> None:
        self.parser = parser
        self.repo_url = repo_url
        self.registry = registry
        self.store = store
        self.skipped: dict[str, str] = {}
        self.prototype = default_buffer_prototype()

    async def document(self, node_path: str) -> dict[str, Any] | None:
        key = f"{node_path}/{_METADATA_KEY}" if node_path else _METADATA_KEY
        buffer = await self.store.get(key, self.prototype)
        if buffer is None:
            return None
        document = json.loads(buffer.to_bytes())
        return document if isinstance(document, dict) else None

    async def read(self) -> ManifestGroup:
        base = (self.parser.group or "").strip("/")
        root_document = await self.document(base)
        if root_document is None or root_document.get("node_type") != "group":
            raise InvalidFileError(
                f"no group {base or '/'!r} in this snapshot",
                url=self.repo_url,
                hint="Check group=",
            )
        root = ManifestGroup(attributes=dict(root_document.get("attributes") or {}))
        await self.read_group(base, "", root)
        return root

    async def read_group(self, base: str, relative: str, group: ManifestGroup) -> None:
        node_path = posixpath.join(base, relative) if relative else base
        names = [name async for name in self.store.list_dir(node_path)]
        names = sorted(n.rstrip("/") for n in names if n.rstrip("/") != _METADATA_KEY)
        limit = asyncio.Semaphore(_CONCURRENT_GETS)

        async def fetch(name: str) -> tuple[str, dict[str, Any] | None]:
            async with limit:
                child = posixpath.join(node_path, name) if node_path else name
                return name, await self.document(child)

        children = await asyncio.gather(*(fetch(n) for n in names))
        for name, document in children:
            if document is None:
                continue
            child_relative = posixpath.join(relative, name) if relative else name
            if document.get("node_type") == "group":
                subgroup = ManifestGroup(attributes=dict(document.get("attributes") or {}))
                group.groups[name] = subgroup
                await self.read_group(base, child_relative, subgroup)
            elif document.get("node_type") == "array":
                if child_relative in self.parser.drop_variables:
                    continue
                array_path = posixpath.join(base, child_relative) if base else child_relative
                try:
                    group.arrays[name] = await self.read_array(array_path, document)
                except UnsupportedFeatureError as error:
                    if self.parser.on_unsupported == "raise":
                        raise
                    self.skipped[child_relative] = error.reason
                    warnings.warn(str(error), SkippedVariableWarning, stacklevel=2)

    async def read_array(self, path: str, document: dict[str, Any]) -> ManifestArray:
        grid_document = document.get("chunk_grid")
        if not isinstance(grid_document, Mapping) or grid_document.get("name") not in _GRIDS:
            name = grid_document.get("name") if isinstance(grid_document, Mapping) else None
            raise UnsupportedFeatureError(
                f"chunk grid {name!r} is not supported (only regular and rectilinear grids)",
                url=self.repo_url,
                variable=path,
            )
        try:
            metadata = ArrayV3Metadata.from_dict(document)
        except Exception as error:
            raise UnsupportedFeatureError(
                f"zarr cannot read this array's metadata ({error})",
                url=self.repo_url,
                variable=path,
                hint="If a codec is missing, install the package that registers it with zarr",
            ) from error
        grid = grid_shape(metadata.shape, chunk_grid_of(metadata))
        manifest = await self.read_manifest(path, grid)
        return ManifestArray(metadata, manifest)

    async def read_manifest(self, path: str, grid: tuple[int, ...]) -> ChunkManifest:
        total = int(np.prod(grid, dtype=np.int64))
        path_ids = np.full(total, MISSING, dtype=np.uint32)
        offsets = np.zeros(total, dtype=np.uint64)
        lengths = np.zeros(total, dtype=np.uint64)
        inline: dict[int, bytes] = {}
        table: dict[str, int] = {}
        native: list[tuple[int, str, int, int]] = []
        iterator = self.store.array_chunk_iterator(path, batch_size=self.parser.batch_size)
        try:
            async for coords, kinds, paths, starts, sizes, inlined in iterator:
                if len(kinds) == 0:
                    continue
                coords = np.asarray(coords, dtype=np.int64).reshape(len(kinds), len(grid))
                kinds = np.asarray(kinds)
                # References outside the grid (left behind by a shrinking resize) read as
                # nothing in zarr: drop them.
                outside = ~np.all(coords < np.array(grid, dtype=np.int64), axis=1)
                if outside.any():
                    kinds = np.where(outside, 0, kinds)
                    coords = np.where(outside[:, None], 0, coords)
                    inlined = {row: data for row, data in inlined.items() if not outside[row]}
                flat = (
                    np.ravel_multi_index(tuple(coords.T), grid)
                    if grid
                    else np.zeros(len(kinds), dtype=np.intp)
                )
                for row, data in inlined.items():
                    position = int(flat[row])
                    path_ids[position] = INLINE
                    inline[position] = bytes(data)
                rows = np.flatnonzero((kinds == _VIRTUAL) | (kinds == _NATIVE))
                if rows.size == 0:
                    continue
                is_native = kinds[rows] == _NATIVE
                if is_native.any() and self.parser.native_chunks != "reference":
                    if self.parser.native_chunks == "raise":
                        raise UnsupportedFeatureError(
                            "chunks are stored in the repository itself (native chunks)",
                            url=self.repo_url,
                            variable=path,
                            hint="Pass native_chunks='reference' or 'inline' to IcechunkParser",
                        )
                    native.extend(
                        (int(flat[i]), paths[i], int(starts[i]), int(sizes[i]))
                        for i in rows[is_native].tolist()
                    )
                    rows = rows[~is_native]
                    is_native = is_native[~is_native]
                if rows.size == len(paths):
                    locations = np.asarray(paths, dtype=object)
                else:
                    locations = np.asarray(paths, dtype=object)[rows]
                ids = self.intern(locations, is_native, table, path)
                path_ids[flat[rows]] = ids
                offsets[flat[rows]] = np.asarray(starts)[rows]
                lengths[flat[rows]] = np.asarray(sizes)[rows]
        finally:
            await iterator.aclose()  # stops icechunk's stream when a batch raised
        if native:
            inline.update(await self.read_native(path, native))
            for position in (n[0] for n in native):
                path_ids[position] = INLINE
        urls = list(table)
        return ChunkManifest(
            urls,
            path_ids.reshape(grid),
            np.where(path_ids < INLINE, offsets, np.uint64(0)).reshape(grid),
            np.where(path_ids < INLINE, lengths, np.uint64(0)).reshape(grid),
            inline=inline,
            sources=[None] * len(urls),
            validate=False,
        )

    def intern(
        self,
        locations: np.ndarray,
        is_native: np.ndarray,
        table: dict[str, int],
        path: str,
    ) -> np.ndarray:
        """Path ids in ``table`` (extended with new urls, each checked against the registry)
        of ``locations``: urls of virtual chunks, chunk ids of native ones."""
        import pandas as pd

        codes, uniques = pd.factorize(locations)
        first = np.full(len(uniques), len(codes), dtype=np.int64)
        np.minimum.at(first, codes, np.arange(len(codes)))
        lookup = np.empty(len(uniques), dtype=np.uint32)
        chunk_root = self.repo_url + "/chunks/"
        for unique, (location, native) in enumerate(
            zip(uniques.tolist(), is_native[first].tolist(), strict=True)
        ):
            url = chunk_root + location if native else normalize_url(location)
            found = table.get(url)
            if found is None:
                self.authorise(url, path)
                found = table[url] = len(table)
            lookup[unique] = found
        return lookup[codes]

    def authorise(self, url: str, path: str) -> None:
        try:
            self.registry.resolve(url)
        except UnauthorizedLocationError as error:
            raise UnauthorizedLocationError(
                "a chunk reference points to a location that is not registered",
                url=url,
                variable=path,
                hint=error.hint,
            ) from error

    async def read_native(
        self, path: str, native: list[tuple[int, str, int, int]]
    ) -> dict[int, bytes]:
        total = sum(n[3] for n in native)
        if total > self.parser.max_inline_bytes:
            raise UnsupportedFeatureError(
                f"its native chunks hold {total} bytes, more than max_inline_bytes="
                f"{self.parser.max_inline_bytes}",
                url=self.repo_url,
                variable=path,
                hint="Pass native_chunks='reference', or raise max_inline_bytes",
            )
        limit = asyncio.Semaphore(_CONCURRENT_GETS)

        async def fetch(chunk_id: str, start: int, length: int) -> bytes:
            url = f"{self.repo_url}/chunks/{chunk_id}"
            self.authorise(url, path)
            store, key = self.registry.resolve(url)
            async with limit:
                try:
                    data = await obstore.get_range_async(store, key, start=start, length=length)
                except Exception as error:
                    raise InvalidFileError(
                        f"reading native chunk {chunk_id!r} failed ({error})",
                        url=url,
                        variable=path,
                    ) from error
            return bytes(data)

        contents = await asyncio.gather(*(fetch(c, s, n) for _, c, s, n in native))
        return {position: data for (position, *_), data in zip(native, contents, strict=True)}
