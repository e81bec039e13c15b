"""Committing virtual datasets to Icechunk: references as virtual chunks, values as native ones.

``to_icechunk`` writes into a writable Icechunk session's store and never commits; the caller
commits. If anything fails part-way the session's uncommitted changes are discarded, so a
failed write leaves nothing behind to commit.

Every reference carries the checksum its source had *when it was parsed* (the ETag where the
backend has one, else the last-modified time rounded up to the second), so reading a chunk of
a file that changed since fails instead of returning other bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import xarray as xr
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync

from virtualize.errors import (
    ConcatenationError,
    UnauthorizedLocationError,
    UnsupportedFeatureError,
    VirtualizeError,
)
from virtualize.manifests import INLINE, ChunkManifest, ManifestArray, SourceInfo
from virtualize.manifests.array import replace_metadata
from virtualize.manifests.array_api import check_combinable, concatenate_metadata
from virtualize.manifests.grid import axis_edges, chunk_grid_of, grid_shape
from virtualize.registry import ObjectStoreRegistry, normalize_url
from virtualize.writers.common import plan_write

__all__ = [
    "authorize_containers",
    "checksum_of",
    "repository_config",
    "to_icechunk",
    "virtual_chunk_containers",
]

Mode = Literal["w", "w-", "a"]


def checksum_of(url: str, source: SourceInfo | None) -> str | datetime | None:
    """What Icechunk checks a source against on read: its ETag, or for local files (whose
    ETags Icechunk does not validate) its last-modified time rounded *up* to the second."""
    if source is None:
        return None
    if source.etag and not url.startswith("file://"):
        return source.etag
    if source.last_modified is not None:
        stamp = source.last_modified.timestamp()
        return datetime.fromtimestamp(math.ceil(stamp), tz=UTC)
    return None


def virtual_chunk_containers(registry: ObjectStoreRegistry) -> list[Any]:
    """Icechunk virtual chunk containers for the registry's prefixes (``file://``,
    ``s3://``, ``http(s)://``), to put in a new repository's config."""
    import icechunk

    containers = []
    for prefix in registry.prefixes:
        scheme = urlsplit(prefix).scheme
        store: Any
        if scheme == "file":
            store = icechunk.local_filesystem_store(urlsplit(prefix).path)
        elif scheme == "s3":
            store = _s3_container_store()
        elif scheme in ("http", "https"):
            store = icechunk.http_store()
        else:
            raise VirtualizeError(
                f"no Icechunk virtual chunk container for {scheme!r} locations",
                url=prefix,
            )
        containers.append(icechunk.VirtualChunkContainer(prefix, store))
    return containers


def _s3_container_store() -> Any:
    """An S3 container store; an S3-compatible endpoint comes from ``AWS_ENDPOINT_URL``, as
    obstore and boto3 take it."""
    import icechunk

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not endpoint:
        return icechunk.s3_store(region=region)
    return icechunk.s3_store(
        region=region,
        endpoint_url=endpoint,
        allow_http=endpoint.startswith("http://"),
        s3_compatible=True,
        force_path_style=True,
    )


def repository_config(
    registry: ObjectStoreRegistry,
    *,
    split_along: str | None = None,
    split_size: int = 100_000,
) -> Any:
    """An Icechunk repository config for virtual datasets read through ``registry``.

    Parameters
    ----------
    registry
        Its prefixes become the repository's virtual chunk containers.
    split_along
        A dimension name (the one archives grow along, e.g. ``"time"``): manifests of every
        array are split every ``split_size`` chunks along it, so appending a file rewrites one
        small manifest instead of the array's whole manifest (0.01 s instead of seconds at
        10^6 references).
    split_size
        Chunks per manifest split along ``split_along``.

    Examples
    --------
    >>> config = repository_config(registry, split_along="time")  # doctest: +SKIP
    >>> repo = icechunk.Repository.create(storage, config=config,
    ...     authorize_virtual_chunk_access=authorize_containers(registry))  # doctest: +SKIP
    """
    import icechunk

    config = icechunk.RepositoryConfig.default()
    for container in virtual_chunk_containers(registry):
        config.set_virtual_chunk_container(container)
    if split_along is not None:
        condition = icechunk.ManifestSplitCondition.AnyArray()
        by_dimension: dict[Any, int] = {
            icechunk.ManifestSplitDimCondition.DimensionName(split_along): split_size
        }
        config.manifest = icechunk.ManifestConfig(
            splitting=icechunk.ManifestSplittingConfig.from_dict({condition: by_dimension})
        )
    return config


def authorize_containers(registry: ObjectStoreRegistry) -> dict[str, Any]:
    """The ``authorize_virtual_chunk_access`` mapping that lets a repository read the
    registry's prefixes (local files and http need no credentials; s3 uses the environment)."""
    import icechunk

    access: dict[str, Any] = {}
    for prefix in registry.prefixes:
        scheme = urlsplit(prefix).scheme
        if scheme == "s3":
            access[prefix] = icechunk.s3_from_env_credentials()
        elif scheme in ("http", "https"):
            access[prefix] = icechunk.Credentials.HttpAccess()
        else:
            access[prefix] = icechunk.Credentials.LocalFileSystemAccess()
    return dict(icechunk.containers_credentials(access))


def to_icechunk(
    dataset: xr.Dataset,
    store: Any,
    *,
    group: str | None = None,
    append_dim: str | None = None,
    region: dict[str, slice] | None = None,
    mode: Mode | None = None,
    registry: ObjectStoreRegistry | None = None,
    validate_containers: bool = True,
) -> None:
    """Write a virtual dataset into an Icechunk session's store (the caller commits).

    Parameters
    ----------
    dataset
        A virtual dataset: variables holding :class:`~virtualize.ManifestArray` are written as
        virtual references, loaded variables as native chunks encoded by xarray.
    store
        A writable ``icechunk.IcechunkStore`` (``session.store``).
    group
        The group to write into (the root by default).
    append_dim
        Append along this dimension to arrays already in the group (mode ``"a"``).
    region
        Write into this region of arrays already in the group, ``{dimension: slice}``, as
        ``xarray.Dataset.to_zarr(region=...)`` does; the slices must start and end on chunk
        boundaries (or at the end of the dimension).
    mode
        ``"w"`` replaces the group, ``"w-"`` fails if it exists, ``"a"`` adds or appends;
        ``"w-"`` by default, ``"a"`` with ``append_dim``.
    registry
        If given, every referenced url must be under one of its prefixes.
    validate_containers
        Refuse references no virtual chunk container of the repository covers.

    Raises
    ------
    UnauthorizedLocationError
        A reference lies outside ``registry`` or outside the repository's containers.
    ConcatenationError
        Appended arrays decode differently from the ones in the repository.
    """
    if region is not None and append_dim is not None:
        raise ValueError("pass append_dim or region, not both")
    mode = mode or ("a" if append_dim is not None or region is not None else "w-")
    session = getattr(store, "session", None)
    try:
        if region is not None:
            _write_region(dataset, store, group, region, registry, validate_containers)
        else:
            _write(dataset, store, group, append_dim, mode, registry, validate_containers)
    except BaseException:
        if session is not None:
            session.discard_changes()
        raise


def _write(
    dataset: xr.Dataset,
    store: Any,
    group: str | None,
    append_dim: str | None,
    mode: Mode,
    registry: ObjectStoreRegistry | None,
    validate: bool,
) -> None:
    plan = plan_write(dataset)
    _check_strict_json(plan.attributes, None)
    for name, array in plan.virtual.items():
        _check_strict_json(array.metadata.attributes, name)
    for loaded_name, variable in plan.loaded.variables.items():
        _check_strict_json(variable.attrs, str(loaded_name))
    if registry is not None:
        for array in plan.virtual.values():
            registry.check(array.manifest.urls)
    prefix = f"{group.strip('/')}/" if group and group.strip("/") else ""
    existing = _existing_arrays(store, prefix) if mode == "a" else {}
    loaded = plan.loaded.copy()
    loaded.attrs = dict(plan.attributes)
    loaded_append = append_dim if append_dim in loaded.dims and append_dim is not None else None
    loaded.to_zarr(
        store,
        group=group,
        mode=mode,
        append_dim=loaded_append,
        zarr_format=3,
        consolidated=False,
    )
    for name, array in plan.virtual.items():
        path = f"{prefix}{name}"
        old = existing.get(name)
        if old is not None and append_dim is not None:
            _append_array(store, path, name, old, array, append_dim, validate)
        else:
            _set_metadata(store, path, array.metadata)
            _set_references(store, path, array.manifest, (0,) * array.ndim, validate)


def _write_region(
    dataset: xr.Dataset,
    store: Any,
    group: str | None,
    region: dict[str, slice],
    registry: ObjectStoreRegistry | None,
    validate: bool,
) -> None:
    plan = plan_write(dataset)
    if registry is not None:
        for array in plan.virtual.values():
            registry.check(array.manifest.urls)
    prefix = f"{group.strip('/')}/" if group and group.strip("/") else ""
    existing = _existing_arrays(store, prefix)
    if plan.loaded.variables:
        loaded_region = {d: s for d, s in region.items() if d in plan.loaded.dims}
        plan.loaded.to_zarr(
            store, group=group, mode="r+", region=loaded_region, zarr_format=3, consolidated=False
        )
    for name, array in plan.virtual.items():
        old = existing.get(name)
        if old is None:
            raise VirtualizeError(
                "a region can only be written into an array that exists",
                variable=name,
                hint="Write the whole array first (mode 'w' or 'a')",
            )
        dims = tuple(str(d) for d in array.metadata.dimension_names or ())
        old_grid = chunk_grid_of(old)
        offset = []
        for axis, dim in enumerate(dims):
            length = array.shape[axis]
            start, stop, _ = region.get(dim, slice(None)).indices(old.shape[axis])
            if stop - start != length:
                raise ConcatenationError(
                    f"the region of {dim!r} holds {stop - start} elements, the data {length}",
                    variable=name,
                )
            edges = axis_edges(old_grid[axis], old.shape[axis])
            starts = np.concatenate([[0], np.cumsum(edges, dtype=np.int64)]).tolist()
            aligned = start in starts and (stop in starts or stop == old.shape[axis])
            first = starts.index(start) if aligned else 0
            last = starts.index(stop) if stop in starts else len(edges)
            if not aligned or axis_edges(array.chunk_grid[axis], length) != edges[first:last]:
                raise ConcatenationError(
                    f"the region {start}:{stop} of {dim!r} must start and end on chunk "
                    "boundaries of the array in the repository, and the data must be chunked "
                    "like it there",
                    variable=name,
                    hint="Only whole chunks can be replaced by references",
                )
            offset.append(first)
        empty = ChunkManifest.empty(grid_shape(old.shape, old_grid))
        previous = ManifestArray(old, empty)
        like_old = ManifestArray(
            replace_metadata(array.metadata, shape=tuple(old.shape), chunk_grid=old_grid), empty
        )
        check_combinable([previous, like_old], axis=None)
        _set_references(store, f"{prefix}{name}", array.manifest, tuple(offset), validate)


def _check_strict_json(attributes: Any, variable: str | None) -> None:
    """Icechunk stores metadata as strict JSON, which has no NaN or infinity; zarr-python
    writes them anyway and Icechunk then rejects the whole document."""
    for key, value in dict(attributes).items():
        values: Any = [] if isinstance(value, str) else np.ravel(np.asarray(value, dtype=object))
        for item in values:
            if isinstance(item, float | np.floating) and not math.isfinite(float(item)):
                raise UnsupportedFeatureError(
                    f"attribute {key!r} is {item}, which Icechunk's strict JSON metadata "
                    "cannot hold",
                    variable=variable,
                    hint="Change or drop the attribute before writing "
                    "(e.g. ds[name].attrs.pop(key))",
                )


def _existing_arrays(store: Any, prefix: str) -> dict[str, ArrayV3Metadata]:
    try:
        found = zarr.open_group(store, path=prefix.rstrip("/") or "/", mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return {}
    return {
        name: member.metadata
        for name, member in found.arrays()
        if isinstance(member.metadata, ArrayV3Metadata)
    }


def _set_metadata(store: Any, path: str, metadata: ArrayV3Metadata) -> None:
    document = metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"]
    sync(store.set(f"{path}/zarr.json", document))


def _append_array(
    store: Any,
    path: str,
    name: str,
    old: ArrayV3Metadata,
    array: ManifestArray,
    append_dim: str,
    validate: bool,
) -> None:
    dims = tuple(array.metadata.dimension_names or ())
    if append_dim not in dims:
        return  # a variable without the append dimension is already there
    axis = dims.index(append_dim)
    previous = ManifestArray(old, ChunkManifest.empty(grid_shape(old.shape, chunk_grid_of(old))))
    try:
        joined = concatenate_metadata([previous, array], axis)
    except ConcatenationError as error:
        raise ConcatenationError(
            f"cannot append to {name!r} along {append_dim!r}: {error.reason}",
            url=error.url,
            variable=name,
            hint=error.hint,
        ) from None
    _set_metadata(store, path, replace_metadata(old, shape=joined.shape, chunk_grid=joined.grid))
    offset = [0] * array.ndim
    offset[axis] = previous.manifest.shape_chunk_grid[axis]
    _set_references(store, path, array.manifest, tuple(offset), validate)


def _set_references(
    store: Any,
    path: str,
    manifest: ChunkManifest,
    grid_offset: tuple[int, ...],
    validate: bool,
) -> None:
    """One bulk ``set_virtual_refs_arr`` call per source file (each carries its own checksum),
    on the smallest block of the chunk grid that holds that file's chunks; inline chunks as
    native chunks."""
    prototype = default_buffer_prototype()
    grid = manifest.shape_chunk_grid
    for flat, data in manifest.inline.items():
        position = np.unravel_index(flat, grid) if grid else ()
        chunk_index = (int(p) + o for p, o in zip(position, grid_offset, strict=True))
        key = "/".join([path, "c", *map(str, chunk_index)])
        sync(store.set(key, prototype.buffer.from_bytes(data)))
    ids = manifest.path_ids
    # Containers are checked once per url here, not once per reference inside Icechunk.
    prefixes = _container_prefixes(store) if validate else None
    for url_id, block in _blocks_by_url(ids):
        # Icechunk resolves ``..`` and ``%2e`` in a location itself: check, and write, the url
        # it will read, or ``<container>/../elsewhere`` would pass a check on the raw text.
        url = normalize_url(manifest.urls[url_id])
        if prefixes is not None and not any(url.startswith(p) for p in prefixes):
            raise UnauthorizedLocationError(
                "the repository has no virtual chunk container for this location",
                url=url,
                variable=path,
                hint=(
                    "Create the repository with virtualize.writers.icechunk."
                    "virtual_chunk_containers(registry), or add a VirtualChunkContainer "
                    "whose prefix covers it"
                ),
            )
        block_ids = ids[block]
        if bool((block_ids == url_id).all()):
            locations = [url] * block_ids.size
        else:
            table = [url, ""]
            locations = [table[i] for i in (block_ids != url_id).ravel().view(np.uint8).tolist()]
        offset = tuple(s.start + o for s, o in zip(block, grid_offset, strict=True))
        refused = store.set_virtual_refs_arr(
            path,
            tuple(int(n) for n in block_ids.shape),
            locations,
            np.ascontiguousarray(manifest.offsets[block], dtype=np.uint64).ravel(),
            np.ascontiguousarray(manifest.lengths[block], dtype=np.uint64).ravel(),
            # our per-url check above replaces Icechunk's per-reference one when it could run
            validate_containers=validate and prefixes is None,
            arr_offset=offset,
            checksum=checksum_of(url, manifest.sources[url_id]),
        )
        if refused:  # only when Icechunk validated: refused references must not vanish
            raise UnauthorizedLocationError(
                f"the repository refused {len(refused)} references to this location",
                url=url,
                variable=path,
                hint="Add a VirtualChunkContainer whose prefix covers it",
            )


def _container_prefixes(store: Any) -> list[str] | None:
    """The url prefixes of the repository's virtual chunk containers (None: unknown, and
    Icechunk checks every reference itself)."""
    session = getattr(store, "session", None)
    config = getattr(session, "config", None)
    containers = getattr(config, "virtual_chunk_containers", None)
    return list(containers) if containers is not None else None


def _blocks_by_url(ids: np.ndarray) -> Iterator[tuple[int, tuple[slice, ...]]]:
    """Each url id with the smallest block of the chunk grid holding its chunks; one sort
    over the grid, so the work grows with the number of chunks, not chunks times files."""
    flat = ids.reshape(-1)
    real = np.flatnonzero(flat < INLINE)
    if real.size == 0:
        return
    order = real[np.argsort(flat[real], kind="stable")]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(flat[order])) + 1])
    for group in np.split(order, starts[1:]):
        if ids.ndim == 0:
            yield int(flat[group[0]]), ()
            continue
        where = np.unravel_index(group, ids.shape)
        yield (
            int(flat[group[0]]),
            tuple(slice(int(w.min()), int(w.max()) + 1) for w in where),
        )
