"""xarray entry points: virtual datasets and the ``.virtualize`` accessor."""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import sys
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, overload

import numpy as np
import xarray as xr

from virtualize.errors import (
    ChunkReadError,
    ConcatenationError,
    InvalidFileError,
    NoFilesError,
    VirtualizeError,
)
from virtualize.io import is_read_failure, read_failure_text
from virtualize.manifests import INLINE, MISSING, ManifestArray, ManifestGroup
from virtualize.manifests.grid import is_regular
from virtualize.parsers.detect import detect
from virtualize.registry import ObjectStoreRegistry, normalize_url
from virtualize.store import ManifestStore

if TYPE_CHECKING:
    from virtualize.executors import Executor, TaskFailure

__all__ = [
    "VirtualizeAccessor",
    "VirtualizeTreeAccessor",
    "construct_virtual_dataset",
    "open_virtual_dataset",
    "open_virtual_datatree",
    "open_virtual_mfdataset",
]

OnError = Literal["raise", "skip", "record"]


def open_virtual_dataset(
    url: str | os.PathLike[str],
    *,
    parser: Any = None,
    registry: ObjectStoreRegistry | None = None,
    group: str | None = None,
    loadable_variables: Iterable[str] | None = None,
    drop_variables: Iterable[str] | None = None,
    decode_times: bool | None = None,
) -> xr.Dataset:
    """Open one file as a dataset of virtual arrays, reading only its metadata.

    Parameters
    ----------
    url
        A local path or a url (``file://``, ``s3://``, ``https://``).
    parser
        A parser instance such as :class:`~virtualize.parsers.HDFParser`; by default one is
        chosen from the file's magic bytes.
    registry
        Where bytes may be read from. By default one is built that authorises the file's
        folder (local files) or bucket (``s3://``).
    group
        The group to open, for formats that have groups.
    loadable_variables
        Variables to read into memory rather than reference. By default the dimension
        coordinates are loaded and indexed, as :func:`xarray.open_dataset` does, and so are
        other coordinates whose values the parser computed and holds inline (a GRIB
        file's ``time`` and ``step``, a GeoTIFF's ``spatial_ref``): they cost no read.
    drop_variables
        Variables to leave out.
    decode_times
        Decode CF times of loaded variables (xarray's default when None).

    Returns
    -------
    xarray.Dataset
        Virtual variables wrap :class:`~virtualize.ManifestArray` and keep their encoded
        attributes; loaded variables are decoded as :func:`xarray.open_dataset` decodes them.
        ``encoding["source"]`` is the file's url, as xarray gives a file's path (so that a
        ``preprocess`` function can tell files apart).

    Examples
    --------
    >>> import virtualize as vz
    >>> vds = vz.open_virtual_dataset("air.nc")  # doctest: +SKIP
    >>> vds.virtualize.nrefs  # doctest: +SKIP
    """
    drop = list(drop_variables or ())
    manifest_group, registry = _parse(url, parser, registry, group, drop)
    if group is None and not manifest_group.arrays and manifest_group.groups:
        holding = [path for path, node in manifest_group.walk() if isinstance(node, ManifestArray)]
        groups = sorted({posixpath.dirname(path) for path in holding})
        if groups:
            warnings.warn(
                f"{url}: the root group holds no variables; these groups do: {groups}. "
                "Pass group=... to open one, or use open_virtual_datatree",
                stacklevel=2,
            )
    dataset = construct_virtual_dataset(
        manifest_group,
        registry=registry,
        loadable_variables=loadable_variables,
        drop_variables=drop,
        decode_times=decode_times,
    )
    dataset.encoding["source"] = normalize_url(url)
    return dataset


@overload
def open_virtual_mfdataset(
    paths: str | os.PathLike[str] | Sequence[Any],
    *,
    parser: Any = ...,
    registry: ObjectStoreRegistry | None = ...,
    concat_dim: Any = ...,
    combine: Literal["by_coords", "nested"] = ...,
    executor: Any = ...,
    preprocess: Callable[[xr.Dataset], xr.Dataset] | None = ...,
    data_vars: Any = ...,
    coords: Any = ...,
    compat: Any = ...,
    join: Any = ...,
    combine_attrs: Any = ...,
    on_error: Literal["raise", "skip"] = ...,
    retries: int = ...,
    progress: bool | Callable[[int, int | None], None] | None = ...,
    group: str | None = ...,
    loadable_variables: Iterable[str] | None = ...,
    drop_variables: Iterable[str] | None = ...,
    decode_times: bool | None = ...,
    group_by_encoding: Literal[False] = ...,
) -> xr.Dataset: ...


@overload
def open_virtual_mfdataset(
    paths: str | os.PathLike[str] | Sequence[Any],
    *,
    parser: Any = ...,
    registry: ObjectStoreRegistry | None = ...,
    concat_dim: Any = ...,
    combine: Literal["by_coords", "nested"] = ...,
    executor: Any = ...,
    preprocess: Callable[[xr.Dataset], xr.Dataset] | None = ...,
    data_vars: Any = ...,
    coords: Any = ...,
    compat: Any = ...,
    join: Any = ...,
    combine_attrs: Any = ...,
    on_error: Literal["record"],
    retries: int = ...,
    progress: bool | Callable[[int, int | None], None] | None = ...,
    group: str | None = ...,
    loadable_variables: Iterable[str] | None = ...,
    drop_variables: Iterable[str] | None = ...,
    decode_times: bool | None = ...,
    group_by_encoding: Literal[False] = ...,
) -> tuple[xr.Dataset, list[TaskFailure]]: ...


@overload
def open_virtual_mfdataset(
    paths: str | os.PathLike[str] | Sequence[Any],
    *,
    parser: Any = ...,
    registry: ObjectStoreRegistry | None = ...,
    concat_dim: Any = ...,
    combine: Literal["by_coords", "nested"] = ...,
    executor: Any = ...,
    preprocess: Callable[[xr.Dataset], xr.Dataset] | None = ...,
    data_vars: Any = ...,
    coords: Any = ...,
    compat: Any = ...,
    join: Any = ...,
    combine_attrs: Any = ...,
    on_error: Literal["raise", "skip"] = ...,
    retries: int = ...,
    progress: bool | Callable[[int, int | None], None] | None = ...,
    group: str | None = ...,
    loadable_variables: Iterable[str] | None = ...,
    drop_variables: Iterable[str] | None = ...,
    decode_times: bool | None = ...,
    group_by_encoding: Literal[True],
) -> list[xr.Dataset]: ...


@overload
def open_virtual_mfdataset(
    paths: str | os.PathLike[str] | Sequence[Any],
    *,
    parser: Any = ...,
    registry: ObjectStoreRegistry | None = ...,
    concat_dim: Any = ...,
    combine: Literal["by_coords", "nested"] = ...,
    executor: Any = ...,
    preprocess: Callable[[xr.Dataset], xr.Dataset] | None = ...,
    data_vars: Any = ...,
    coords: Any = ...,
    compat: Any = ...,
    join: Any = ...,
    combine_attrs: Any = ...,
    on_error: Literal["record"],
    retries: int = ...,
    progress: bool | Callable[[int, int | None], None] | None = ...,
    group: str | None = ...,
    loadable_variables: Iterable[str] | None = ...,
    drop_variables: Iterable[str] | None = ...,
    decode_times: bool | None = ...,
    group_by_encoding: Literal[True],
) -> tuple[list[xr.Dataset], list[TaskFailure]]: ...


def open_virtual_mfdataset(
    paths: str | os.PathLike[str] | Sequence[Any],
    *,
    parser: Any = None,
    registry: ObjectStoreRegistry | None = None,
    concat_dim: Any = None,
    combine: Literal["by_coords", "nested"] = "by_coords",
    executor: Any = "serial",
    preprocess: Callable[[xr.Dataset], xr.Dataset] | None = None,
    data_vars: Any = "minimal",
    coords: Any = "minimal",
    compat: Any = "override",
    join: Any = "exact",
    combine_attrs: Any = "override",
    on_error: OnError = "raise",
    retries: int = 2,
    progress: bool | Callable[[int, int | None], None] | None = None,
    group: str | None = None,
    loadable_variables: Iterable[str] | None = None,
    drop_variables: Iterable[str] | None = None,
    decode_times: bool | None = None,
    group_by_encoding: bool = False,
) -> Any:
    """Open many files as one virtual dataset: parse them in parallel, combine with xarray.

    Parameters
    ----------
    paths
        A glob (``"data/*.nc"``, ``"s3://bucket/era5/**/*.nc"``, listed through the
        registry), a list of paths or urls, or for ``combine="nested"`` nested lists of them.
    parser
        A parser instance for every file; by default each file's format is detected.
    registry
        Where bytes may be read from. By default one is built for the files (or the glob's
        folder) and a warning says which locations it authorises.
    concat_dim
        For ``combine="nested"``: the dimension(s) to concatenate along, one per nesting
        level (``None`` to merge at that level), as in :func:`xarray.combine_nested`.
    combine
        ``"by_coords"`` orders files by their coordinate values
        (:func:`xarray.combine_by_coords`); ``"nested"`` keeps the order given.
    executor
        ``"serial"``, ``"threads"``, ``"processes"``, ``"dask"``, ``"lithops"``, an
        :class:`~virtualize.executors.Executor` or any :class:`concurrent.futures.Executor`.
        Executors made from a name are closed afterwards; instances are left to their owner.
    preprocess
        Applied to each file's virtual dataset before combining (in this process, so it
        need not pickle).
    data_vars, coords, compat, join, combine_attrs
        Passed to xarray's combine function. The defaults concatenate only what has the
        concatenation dimension and take everything else from the first file, with no
        reindexing (virtual arrays cannot be reindexed).
    on_error
        What a file that fails to parse does: ``"raise"`` (the default), ``"skip"`` (left
        out, with one warning for all of them) or ``"record"`` (left out and returned).
    retries
        Retries per file for errors that may be transient (I/O, network); malformed files
        fail at once.
    progress
        A progress bar (tqdm) when True, none when False, or a callable
        ``progress(done, total)``; by default a bar when standard error is a terminal.
    group, loadable_variables, drop_variables, decode_times
        As for :func:`open_virtual_dataset`, for every file.
    group_by_encoding
        Files that encode a variable differently (CF packing, codecs, dtype, fill value)
        can't be joined into one virtual variable. By default that raises
        :class:`~virtualize.errors.ConcatenationError`; with True the files are split into
        groups that agree, each combined on its own (``combine="by_coords"`` only).

    Returns
    -------
    xarray.Dataset, list of xarray.Dataset, or either with a list of TaskFailure
        The combined virtual dataset; with ``group_by_encoding=True`` one per group of
        files that encode alike, in order of each group's first file, with the group's urls
        in ``dataset.encoding["source_files"]``. With ``on_error="record"`` also the
        failures, each with the file's url (``item``), the error and the number of attempts.

    Raises
    ------
    ConcatenationError
        Files encode a variable differently (dtype, codecs, fill value, CF packing, units,
        chunks across the joined dimension); the message lists each encoding and its files.
    NoFilesError
        The glob matches nothing, or no file could be opened.

    Examples
    --------
    >>> vds = vz.open_virtual_mfdataset("data/2023-*.nc", executor="processes")  # doctest: +SKIP
    >>> vds, failed = vz.open_virtual_mfdataset(  # doctest: +SKIP
    ...     "s3://bucket/archive/*.nc", on_error="record", executor="lithops")
    """
    from virtualize.executors import resolve_executor

    if combine not in ("by_coords", "nested"):
        raise ValueError(f"combine must be 'by_coords' or 'nested', not {combine!r}")
    if group_by_encoding and combine != "by_coords":
        raise ValueError("group_by_encoding needs combine='by_coords'")
    urls, structure, registry = _expand_paths(paths, registry, nested=combine == "nested")
    task = functools.partial(
        _open_for_combine,
        parser=parser,
        registry=registry,
        group=group,
        loadable_variables=None if loadable_variables is None else list(loadable_variables),
        drop_variables=list(drop_variables or ()),
        decode_times=decode_times,
    )
    runner: Executor
    if executor == "lithops":
        from virtualize.executors import LithopsExecutor

        # Every Lithops call starts a process or a function: spread the files over a few
        # calls per local CPU rather than one call per file.
        per_call = max(1, -(-len(urls) // (4 * (os.cpu_count() or 1))))
        runner, owned = LithopsExecutor(items_per_call=per_call), True
    else:
        runner, owned = resolve_executor(executor)
    callback, finish = _progress_callback(progress, len(urls))
    opened: list[xr.Dataset | None] = [None] * len(urls)
    try:
        results = runner.map(task, urls, on_error=on_error, retries=retries, progress=callback)
        for index, dataset in results:
            opened[index] = preprocess(dataset) if preprocess is not None else dataset
        failures = list(results.failures)
    finally:
        finish()
        if owned:
            runner.close()
    kept = [i for i, dataset in enumerate(opened) if dataset is not None]
    if not kept:
        raise NoFilesError(
            f"none of the {len(urls)} files could be opened",
            url=urls[0] if urls else None,
            hint="Look at the failures (on_error='record', or this error's .failures)",
            failures=failures,
        )
    datasets: list[xr.Dataset] = [opened[i] for i in kept]  # type: ignore[misc]
    kept_urls = [urls[i] for i in kept]
    options = {
        "data_vars": data_vars,
        "coords": coords,
        "compat": compat,
        "join": join,
        "combine_attrs": combine_attrs,
    }
    combined: xr.Dataset | list[xr.Dataset]
    if group_by_encoding:
        combined = _combine_groups(datasets, kept_urls, concat_dim=concat_dim, options=options)
    else:
        combined = _combine(
            datasets,
            kept_urls,
            structure=_without_failed(structure, set(kept)) if structure is not None else None,
            opened=opened,
            combine=combine,
            concat_dim=concat_dim,
            options=options,
        )
    return (combined, failures) if on_error == "record" else combined


def _combine_groups(
    datasets: list[xr.Dataset], urls: list[str], *, concat_dim: Any, options: dict[str, Any]
) -> list[xr.Dataset]:
    """One combined dataset per group of files that encode every variable alike."""
    from virtualize.combine import along_dimensions, partition_by_encoding

    combined = []
    for part in partition_by_encoding(datasets, along_dimensions(datasets, concat_dim)):
        part_urls = [urls[i] for i in part]
        dataset = _combine(
            [datasets[i] for i in part],
            part_urls,
            structure=None,
            opened=[],
            combine="by_coords",
            concat_dim=concat_dim,
            options=options,
        )
        dataset.encoding["source_files"] = part_urls
        combined.append(dataset)
    return combined


def _open_for_combine(
    url: str,
    *,
    parser: Any,
    registry: ObjectStoreRegistry,
    group: str | None,
    loadable_variables: list[str] | None,
    drop_variables: list[str],
    decode_times: bool | None,
) -> xr.Dataset:
    """One task of :func:`open_virtual_mfdataset`: a url in, a virtual dataset out."""
    return open_virtual_dataset(
        url,
        parser=parser,
        registry=registry,
        group=group,
        loadable_variables=loadable_variables,
        drop_variables=drop_variables,
        decode_times=decode_times,
    )


def _expand_paths(
    paths: Any, registry: ObjectStoreRegistry | None, *, nested: bool, network: Any = None
) -> tuple[list[str], Any, ObjectStoreRegistry]:
    """The urls to open, their nesting (for ``combine="nested"``) and the registry."""
    from virtualize.listing import expand_glob, flatten_nested, has_glob, split_glob

    if isinstance(paths, str | os.PathLike):
        text = os.fspath(paths)
        if has_glob(text):
            if registry is None:
                registry = ObjectStoreRegistry.for_urls(
                    [split_glob(text)[0]], stacklevel=4, network=network
                )
            urls = expand_glob(text, registry)
        else:
            urls = [normalize_url(text)]
        structure: Any = list(range(len(urls))) if nested else None
    else:
        flat, structure = flatten_nested(paths)
        if not nested:
            if any(isinstance(p, list | tuple) for p in paths):
                raise ValueError("nested lists of paths need combine='nested'")
            structure = None
        urls = [normalize_url(p) for p in flat]
    if not urls:
        raise NoFilesError("no files to open", hint="Pass at least one path, url or glob")
    if registry is None:
        registry = ObjectStoreRegistry.for_urls(urls, stacklevel=4, network=network)
    else:
        registry.check(urls)
    return urls, structure, registry


def _without_failed(structure: Any, kept: set[int]) -> Any:
    if isinstance(structure, list):
        children = [_without_failed(child, kept) for child in structure]
        return [child for child in children if child != []]
    return structure if structure in kept else []


def _combine(
    datasets: list[xr.Dataset],
    urls: list[str],
    *,
    structure: Any,
    opened: list[xr.Dataset | None],
    combine: str,
    concat_dim: Any,
    options: dict[str, Any],
) -> xr.Dataset:
    """Combine with xarray's public functions; explain a refusal file by file."""
    from virtualize.combine import along_dimensions, explain_disagreements
    from virtualize.listing import unflatten_nested

    try:
        if combine == "nested":
            nested = unflatten_nested(structure, opened)
            return xr.combine_nested(nested, concat_dim=concat_dim, **options)
        return xr.combine_by_coords(datasets, **options)  # type: ignore[return-value]
    except ConcatenationError as error:
        disagreements = explain_disagreements(
            datasets, urls, along_dimensions(datasets, concat_dim)
        )
        if not disagreements:
            raise
        names = ", ".join(repr(name) for name, _ in disagreements)
        details = "\n".join(f"{name}:\n{lines}" for name, lines in disagreements)
        raise ConcatenationError(
            f"the files encode {names} in different ways, so joining them would give wrong "
            f"numbers:\n{details}\n",
            variable=disagreements[0][0],
            hint=(
                "Pass group_by_encoding=True to get one dataset per group of files, open "
                "each group separately, or drop or re-encode the variable"
            ),
        ) from error


def _progress_callback(
    progress: bool | Callable[[int, int | None], None] | None, total: int
) -> tuple[Callable[[int, int | None], None] | None, Callable[[], None]]:
    """The callback to hand the executor, and what to call when done."""
    if callable(progress):
        return progress, lambda: None
    show = sys.stderr.isatty() if progress is None else bool(progress)
    if not show:
        return None, lambda: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="file", desc="parsing")

    def update(done: int, _total: int | None) -> None:
        bar.update(done - bar.n)

    return update, bar.close


def open_virtual_datatree(
    url: str | os.PathLike[str],
    *,
    parser: Any = None,
    registry: ObjectStoreRegistry | None = None,
    group: str | None = None,
    loadable_variables: Iterable[str] | None = None,
    drop_variables: Iterable[str] | None = None,
    decode_times: bool | None = None,
) -> xr.DataTree:
    """Open one file as a tree of virtual datasets, one node per group.

    A parser that holds more on request (``for_tree()``, e.g. a COG's overviews as a
    multiscale tree, see :class:`~virtualize.parsers.TIFFParser`) is asked for it.

    Parameters
    ----------
    url, parser, registry, group, decode_times
        As in :func:`open_virtual_dataset`; ``group`` is the tree's root.
    loadable_variables
        Variable names to load in every group. By default each group's dimension coordinates
        are loaded and indexed, as :func:`xarray.open_datatree` does.
    drop_variables
        Variable names to leave out, in every group.

    Returns
    -------
    xarray.DataTree
    """
    drop = list(drop_variables or ())
    root, registry = _parse(url, parser, registry, group, [], tree=True)
    loadable = list(loadable_variables) if loadable_variables is not None else None
    datasets = {
        "/" + path if path else "/": construct_virtual_dataset(
            node,
            registry=registry,
            loadable_variables=loadable,
            drop_variables=drop,
            decode_times=decode_times,
        )
        for path, node in root.walk()
        if isinstance(node, ManifestGroup)
    }
    return xr.DataTree.from_dict(datasets)


def _parse(
    url: str | os.PathLike[str],
    parser: Any,
    registry: ObjectStoreRegistry | None,
    group: str | None,
    drop_variables: list[str],
    *,
    tree: bool = False,
) -> tuple[ManifestGroup, ObjectStoreRegistry]:
    """Parse ``url`` (detecting the format if no parser is given) and return the selected
    group and the registry used. ``drop_variables`` reach a detected parser, so variables it
    would refuse can be left out before it refuses them. With ``tree``, a parser that
    returns more groups on request (``for_tree()``, e.g. a COG's overviews) is asked to."""
    normalised = normalize_url(url)
    if registry is None:
        registry = ObjectStoreRegistry.for_urls([normalised])
    if parser is None:
        parser = detect(normalised, registry, group=group, drop_variables=drop_variables)
        if tree and hasattr(parser, "for_tree"):
            parser = parser.for_tree()
        return parser(normalised, registry).group, registry
    if tree and hasattr(parser, "for_tree"):
        parser = parser.for_tree()
    return _select_group(parser(normalised, registry).group, group, normalised), registry


def _select_group(root: ManifestGroup, group: str | None, url: str) -> ManifestGroup:
    if group in (None, "", "/"):
        return root
    node = root.get_node(str(group))
    if not isinstance(node, ManifestGroup):
        raise InvalidFileError(
            f"no group {group!r}", url=url, hint=f"Groups here: {sorted(root.groups)}"
        )
    return node


def construct_virtual_dataset(
    manifest_group: ManifestGroup,
    *,
    registry: ObjectStoreRegistry,
    loadable_variables: Iterable[str] | None = None,
    drop_variables: Iterable[str] | None = None,
    decode_times: bool | None = None,
) -> xr.Dataset:
    """Build a virtual dataset from the arrays of one :class:`~virtualize.ManifestGroup`.

    Parameters
    ----------
    manifest_group
        The group whose arrays become variables (subgroups are ignored).
    registry
        Used to read the variables that are loaded.
    loadable_variables, drop_variables, decode_times
        As in :func:`open_virtual_dataset`.
    """
    drop = set(drop_variables or ())
    arrays = {name: a for name, a in manifest_group.arrays.items() if name not in drop}
    if loadable_variables is None:
        loadable = {name for name, a in arrays.items() if _is_dimension_coordinate(name, a)}
        # coordinates whose values the parser computed (GRIB times and levels, GeoTIFF
        # spatial_ref) cost no read: load them too, so they can be concatenated along
        named = set(_coordinates_attribute(manifest_group.attributes))
        for array in arrays.values():
            named.update(_coordinates_attribute(array.metadata.attributes))
        loadable |= {name for name in named & set(arrays) if _held_inline(arrays[name])}
    else:
        loadable = set(loadable_variables) & set(arrays)
    try:
        loaded = _load(
            ManifestGroup({n: arrays[n] for n in arrays if n in loadable}),
            registry=registry,
            decode_times=decode_times,
        )
    except MemoryError as error:
        raise InvalidFileError(
            "the variables to load declare more values than memory holds",
            url=_first_url(manifest_group),
            hint="The file is damaged, or pass loadable_variables=[] to load nothing",
        ) from error
    variables: dict[Hashable, xr.Variable] = {}
    coordinate_names: set[Hashable] = set(loaded.coordinates)
    for name, array in arrays.items():
        if name in loaded.variables:
            variables[name] = loaded.variables[name]
            coordinate_names.update(_coordinates_attribute(variables[name].encoding))
            continue
        attrs = dict(array.metadata.attributes)
        dims = tuple(array.metadata.dimension_names or ())
        variables[name] = xr.Variable(dims, array, attrs=attrs)
        if _is_dimension_coordinate(name, array):
            coordinate_names.add(name)
        coordinate_names.update(_coordinates_attribute(attrs))
    coordinate_names &= set(variables)
    # Loaded dimension coordinates get pandas indexes, as xr.open_dataset gives; virtual
    # ones cannot be indexed.
    indexed = xr.Coordinates(
        {
            name: variables[name]
            for name in coordinate_names
            if name in loaded.variables and variables[name].dims == (name,)
        }
    )
    coords = xr.Coordinates(
        {name: variables[name] for name in variables if name in coordinate_names},
        indexes=dict(indexed.xindexes),
    )
    data_vars = {name: v for name, v in variables.items() if name not in coordinate_names}
    try:
        return xr.Dataset(data_vars, coords=coords, attrs=dict(manifest_group.attributes))
    except ValueError as error:  # e.g. variables that disagree on a dimension's size
        raise InvalidFileError(
            f"the file's variables don't make a dataset: {error}",
            url=_first_url(manifest_group),
            hint="The file is damaged, or pass drop_variables to leave the variables out",
        ) from error


def _held_inline(array: ManifestArray) -> bool:
    """Whether every chunk of ``array`` is held in its manifest (none is a reference)."""
    path_ids = array.manifest.path_ids
    return bool(path_ids.size) and bool(np.all(path_ids == INLINE))


def _is_dimension_coordinate(name: str, array: ManifestArray) -> bool:
    dims = array.metadata.dimension_names
    return dims is not None and tuple(dims) == (name,)


def _coordinates_attribute(attrs: Mapping[str, Any]) -> list[str]:
    value = attrs.get("coordinates")
    return value.split() if isinstance(value, str) else []


class _Loaded(NamedTuple):
    """Decoded variables of a group, and which of them are coordinates."""

    variables: dict[Hashable, xr.Variable]
    coordinates: set[Hashable]


def _load(
    group: ManifestGroup, *, registry: ObjectStoreRegistry, decode_times: bool | None
) -> _Loaded:
    """Read and decode the arrays of ``group`` as :func:`xarray.open_zarr` would.

    Numeric arrays (nearly always: the loaded variables are mostly dimension coordinates) are
    read by zarr all at once and decoded by xarray's CF decoding; that is the same work as
    ``xr.open_zarr(store).load()`` without its per-array round trips, which cost more than
    parsing a small file. Anything else goes through ``xr.open_zarr`` itself.
    """
    if not group.arrays:
        return _Loaded({}, set())
    store = ManifestStore(group, registry=registry)
    decode = decode_times is not False
    if not all(array.dtype.kind in _DIRECTLY_LOADED for array in group.arrays.values()):
        raw = xr.open_zarr(store, consolidated=True, zarr_format=3, chunks=None, decode_cf=False)
        with _decoding_chunks(group, list(group.arrays)):
            raw = raw.load()
        with _decoding(group):
            dataset = xr.decode_cf(raw, decode_times=decode).load()
        return _Loaded(dict(dataset.variables), set(dataset.coords))
    from xarray.backends.zarr import FillValueCoder
    from zarr.core.sync import sync

    plain = _read_plain_arrays(group, registry)
    plain.update(_unwritten_arrays(group, exclude=plain))
    names = [name for name in group.arrays if name not in plain]
    values: dict[str, Any] = {}
    if names:
        with _decoding_chunks(group, names):
            values = dict(zip(names, sync(_read_arrays(store, group, names)), strict=True))
    values.update(plain)
    raw_variables: dict[Hashable, xr.Variable] = {}
    for name in group.arrays:
        data = values[name]
        metadata = group.arrays[name].metadata
        attrs = dict(metadata.attributes)
        if "_FillValue" in attrs:
            attrs["_FillValue"] = FillValueCoder.decode(attrs["_FillValue"], data.dtype)
        dims = tuple(metadata.dimension_names or ())
        raw_variables[name] = xr.Variable(dims, data, attrs, {"fill_value": metadata.fill_value})
    with _decoding(group):
        decoded, _, coordinates = xr.conventions.decode_cf_variables(
            raw_variables, {}, decode_times=decode
        )
        for variable in decoded.values():
            variable.load()  # decoding is lazy: here, where its errors name the file
    dimension_coordinates = {name for name, v in decoded.items() if v.dims == (name,)}
    return _Loaded(dict(decoded), set(coordinates) | dimension_coordinates)


def _first_url(group: ManifestGroup) -> str | None:
    """The file a group's arrays reference (the first, by name), for errors."""
    urls = {url for array in group.arrays.values() for url in array.manifest.urls}
    return min(urls) if urls else None


@contextlib.contextmanager
def _decoding(group: ManifestGroup) -> Iterator[None]:
    """xarray's CF decoding of loaded values that can't be decoded (times beyond what
    datetime64 holds, units it doesn't know), as an :class:`InvalidFileError` on the file."""
    try:
        yield
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidFileError(
            f"the values loaded from the file don't decode: {error}",
            url=_first_url(group),
            hint="Pass decode_times=False, or leave the variable out of loadable_variables",
        ) from error


@contextlib.contextmanager
def _decoding_chunks(group: ManifestGroup, names: list[str]) -> Iterator[None]:
    """A codec failing on a chunk's bytes (a damaged zlib stream, a strip of the wrong
    length, a GRIB message ecCodes can't unpack) as an :class:`InvalidFileError` on the file
    (read failures are already :class:`ChunkReadError`)."""
    try:
        yield
    except VirtualizeError:
        raise
    except Exception as error:
        raise InvalidFileError(
            f"a chunk can't be decoded: {type(error).__name__}: {error}",
            url=_first_url(group),
            variable=names[0] if len(names) == 1 else None,
            hint="The file is damaged, or changed since it was parsed; leave "
            + (f"{names[0]!r}" if len(names) == 1 else f"these variables ({names})")
            + " out of loadable_variables to open it virtually",
        ) from error


def _unwritten_arrays(group: ManifestGroup, *, exclude: Mapping[str, Any]) -> dict[str, Any]:
    """The arrays of ``group`` none of whose chunks were ever written, as their fill value:
    zarr would visit every chunk to find it missing, which takes minutes for an array of
    millions of chunks (a damaged or sparse file can declare one)."""
    unwritten = {}
    for name, array in group.arrays.items():
        if name in exclude or not bool((array.manifest.path_ids == MISSING).all()):
            continue
        fill = array.metadata.fill_value
        unwritten[name] = np.full(array.shape, fill, dtype=array.dtype)
    return unwritten


#: dtype kinds whose values zarr returns as plain numpy arrays xarray decodes as they are.
_DIRECTLY_LOADED = frozenset("biufcmM")


def _read_plain_arrays(
    group: ManifestGroup, registry: ObjectStoreRegistry
) -> dict[str, np.ndarray]:
    """The arrays of ``group`` whose chunks are all stored as plain bytes (no compression, no
    filters: how netCDF and HDF5 usually store coordinates, and how parsers hold computed
    coordinates inline), read with one ranged request per file (or taken from the manifest)
    and laid out with numpy. Others are left to zarr."""
    import obstore
    from zarr.codecs import BytesCodec

    wanted: dict[str, tuple[ManifestArray, np.dtype[Any]]] = {}
    for name, array in group.arrays.items():
        codecs = array.metadata.codecs
        manifest = array.manifest
        if len(codecs) != 1 or not isinstance(codecs[0], BytesCodec):
            continue
        if bool((manifest.path_ids == MISSING).any()):
            continue
        if array.size == 0 or not is_regular(array.chunk_grid):
            continue
        endian = str(codecs[0].endian)
        order: Literal["<", ">", "="] = (
            "<" if endian == "little" else ">" if endian == "big" else "="
        )
        wanted[name] = (array, array.dtype.newbyteorder(order))
    requests: dict[str, list[tuple[str, int, int, int]]] = {}
    chunks: dict[tuple[str, int], bytes] = {}
    for name, (array, _) in wanted.items():
        manifest = array.manifest
        for flat, (path_id, offset, length) in enumerate(
            zip(
                manifest.path_ids.ravel().tolist(),
                manifest.offsets.ravel().tolist(),
                manifest.lengths.ravel().tolist(),
                strict=True,
            )
        ):
            if path_id == INLINE:
                chunks[(name, flat)] = manifest.inline[flat]
            else:
                requests.setdefault(manifest.urls[path_id], []).append((name, flat, offset, length))
    for url, wanted_ranges in requests.items():
        store, path = registry.resolve(url)
        try:
            buffers = obstore.get_ranges(
                store,
                path,
                starts=[offset for _, _, offset, _ in wanted_ranges],
                lengths=[length for _, _, _, length in wanted_ranges],
            )
        except BaseException as error:
            if not is_read_failure(error):
                raise
            raise ChunkReadError(
                f"reading the values of {sorted({n for n, _, _, _ in wanted_ranges})} failed: "
                f"{read_failure_text(error)}",
                url=url,
                hint="Check that the file still exists, is complete, and has not changed "
                "since it was parsed",
            ) from error
        for (name, flat, _, _), buffer in zip(wanted_ranges, buffers, strict=True):
            chunks[(name, flat)] = bytes(buffer)
    out: dict[str, np.ndarray] = {}
    for name, (array, stored) in wanted.items():
        chunk_shape = array.chunk_shape
        grid = array.manifest.shape_chunk_grid
        full = np.empty([g * c for g, c in zip(grid, chunk_shape, strict=True)], dtype=stored)
        expected = int(np.prod(chunk_shape)) * stored.itemsize
        for flat in range(int(np.prod(grid))):
            data = chunks[(name, flat)]
            if len(data) != expected:  # not what a plain chunk of this shape holds
                break
            position = np.unravel_index(flat, grid) if grid else ()
            where = tuple(
                slice(p * c, (p + 1) * c) for p, c in zip(position, chunk_shape, strict=True)
            )
            full[where] = np.frombuffer(data, dtype=stored).reshape(chunk_shape)
        else:
            values = full[tuple(slice(0, n) for n in array.shape)]
            out[name] = values.astype(array.dtype, copy=False)
    return out


async def _read_arrays(store: ManifestStore, group: ManifestGroup, names: list[str]) -> Any:
    import asyncio

    from zarr import AsyncArray
    from zarr.storage import StorePath

    arrays = [
        AsyncArray(metadata=group.arrays[name].metadata, store_path=StorePath(store, name))
        for name in names
    ]
    return await asyncio.gather(*(array.getitem(Ellipsis) for array in arrays))


@xr.register_dataset_accessor("virtualize")
class VirtualizeAccessor:
    """``ds.virtualize``: what a virtual dataset holds, and what can be done with it."""

    def __init__(self, dataset: xr.Dataset) -> None:
        self._dataset = dataset

    def _manifest_arrays(self) -> dict[Hashable, ManifestArray]:
        return {
            name: variable.data
            for name, variable in self._dataset.variables.items()
            if isinstance(variable.data, ManifestArray)
        }

    @property
    def nbytes(self) -> int:
        """Bytes the dataset holds in memory: manifests of virtual variables plus the values
        of loaded ones."""
        total = 0
        for variable in self._dataset.variables.values():
            data = variable.data
            total += (
                data.manifest.nbytes
                if isinstance(data, ManifestArray)
                else int(np.asarray(data).nbytes)
            )
        return total

    @property
    def nrefs(self) -> int:
        """How many chunk references the virtual variables hold."""
        return sum(array.manifest.nrefs for array in self._manifest_arrays().values())

    def rename_paths(self, new: str | Mapping[str, str] | Any) -> xr.Dataset:
        """A copy whose virtual variables point at other urls.

        Parameters
        ----------
        new
            One url, a mapping old → new, or a function from url to url.
        """
        replacements = {
            name: xr.Variable(
                self._dataset.variables[name].dims,
                ManifestArray(array.metadata, array.manifest.rename_paths(new)),
                attrs=self._dataset.variables[name].attrs,
                encoding=self._dataset.variables[name].encoding,
            )
            for name, array in self._manifest_arrays().items()
        }
        return _replace_variables(self._dataset, replacements)

    def to_manifest_group(self) -> ManifestGroup:
        """The dataset as a :class:`~virtualize.ManifestGroup`.

        Dimension names and attributes come from the xarray variables, so renames and
        attribute edits made with xarray are kept. Loaded variables (coordinates, usually)
        are encoded as xarray's ``to_zarr`` would and held inline.
        """
        from virtualize.writers.common import inline_loaded_variables, plan_write

        plan = plan_write(self._dataset)
        inlined, loaded_attributes = inline_loaded_variables(plan.loaded)
        return ManifestGroup(
            {**inlined, **plan.virtual}, attributes={**loaded_attributes, **plan.attributes}
        )

    def to_icechunk(
        self,
        store: Any,
        *,
        group: str | None = None,
        append_dim: str | None = None,
        region: dict[str, slice] | None = None,
        mode: Literal["w", "w-", "a"] | None = None,
        registry: ObjectStoreRegistry | None = None,
        validate_containers: bool = True,
    ) -> None:
        """Write the dataset into an Icechunk session's store; the caller commits.

        Virtual variables become virtual references (with the checksum each source had when
        it was parsed), loaded variables native chunks. On any error the session's changes
        are discarded. See :func:`virtualize.writers.icechunk.to_icechunk` for the parameters.
        """
        from virtualize.writers.icechunk import to_icechunk

        to_icechunk(
            self._dataset,
            store,
            group=group,
            append_dim=append_dim,
            region=region,
            mode=mode,
            registry=registry,
            validate_containers=validate_containers,
        )

    def to_kerchunk(
        self,
        path: str | os.PathLike[str] | None = None,
        format: Literal["dict", "json", "parquet"] = "dict",
        *,
        zarr_format: Literal[2, 3] = 2,
        record_size: int = 100_000,
        group: str | None = None,
    ) -> dict[str, Any] | None:
        """Write the dataset as Kerchunk version-1 references.

        ``format="dict"`` returns the references; ``"json"`` and ``"parquet"`` write them to
        ``path`` (Parquet in record files of ``record_size`` rows, streamed from the
        manifests). See :func:`virtualize.writers.kerchunk.to_kerchunk`.
        """
        from virtualize.writers.kerchunk import to_kerchunk

        return to_kerchunk(
            self._dataset,
            path,
            format=format,
            zarr_format=zarr_format,
            record_size=record_size,
            group=group,
        )

    def to_manifest_store(self, registry: ObjectStoreRegistry) -> ManifestStore:
        """A read-only zarr store over the dataset's references (see :meth:`to_manifest_group`).

        Parameters
        ----------
        registry
            Where the referenced bytes may be read from.
        """
        return ManifestStore(self.to_manifest_group(), registry=registry)


def _replace_variables(
    dataset: xr.Dataset, replacements: Mapping[Hashable, xr.Variable]
) -> xr.Dataset:
    """A copy of ``dataset`` with some variables replaced, keeping its indexes as they are
    (virtual coordinates must not get default indexes, which would need their values)."""
    variables = {name: replacements.get(name, v) for name, v in dataset.variables.items()}
    coords = xr.Coordinates(
        {name: variables[name] for name in dataset.coords},
        indexes=dict(dataset.xindexes),
    )
    data_vars = {name: variables[name] for name in dataset.data_vars}
    return xr.Dataset(data_vars, coords=coords, attrs=dict(dataset.attrs))


@xr.register_datatree_accessor("virtualize")
class VirtualizeTreeAccessor:
    """``tree.virtualize``: a tree of virtual datasets, written as one."""

    def __init__(self, tree: xr.DataTree) -> None:
        self._tree = tree

    @property
    def nrefs(self) -> int:
        """Chunk references held by the virtual variables of every node."""
        return sum(node.to_dataset(inherit=False).virtualize.nrefs for node in self._tree.subtree)

    def to_icechunk(
        self,
        store: Any,
        *,
        group: str | None = None,
        mode: Literal["w", "w-", "a"] | None = None,
        registry: ObjectStoreRegistry | None = None,
        validate_containers: bool = True,
    ) -> None:
        """Write every node of the tree into its group of an Icechunk session's store.

        The nodes are written one after another into one session; the caller commits. If any
        node fails, the session's changes are discarded, so nothing of the tree is left.

        Parameters
        ----------
        store
            A writable ``icechunk.IcechunkStore``.
        group
            The group the tree's root goes into (the store's root by default).
        mode
            As for :meth:`VirtualizeAccessor.to_icechunk`, applied to the tree's root group;
            the nodes below are added to it.
        registry, validate_containers
            As for :meth:`VirtualizeAccessor.to_icechunk`.
        """
        from virtualize.writers.icechunk import to_icechunk

        base = (group or "").strip("/")
        session = getattr(store, "session", None)
        try:
            for node in self._tree.subtree:
                relative = node.relative_to(self._tree).strip("/.")
                path = "/".join(p for p in (base, relative) if p)
                to_icechunk(
                    node.to_dataset(inherit=False),
                    store,
                    group=path or None,
                    mode=(mode or "w-") if node is self._tree else "a",
                    registry=registry,
                    validate_containers=validate_containers,
                )
        except BaseException:
            if session is not None:
                session.discard_changes()
            raise
