"""The HDF5 parser's fast path: arrays straight from the metadata bytes, without h5py.

Most netCDF-4 files are plain: numeric variables, chunked or contiguous, gzip/shuffle/
fletcher32, attributes of numbers and strings, dimension scales. For those,
:func:`~virtualize.parsers.hdf_native.read_metadata` reads everything the parser needs in a
fraction of the time h5py takes (opening a file through h5py, reading attributes one call at
a time and resolving dimension scales cost milliseconds per file, which is most of the time
spent on an archive of small files).

Anything else — a type, layout, filter or link the fast path does not cover, or any
condition that would make the h5py path raise or warn — raises
:class:`~virtualize.parsers.hdf_native.NativeUnsupported`, and the caller parses the whole
file with h5py instead. The arrays are assembled by the same code
(:mod:`virtualize.parsers.hdf_common`) either way, and a test checks that both paths give
identical arrays for every file in the test corpus.
"""

from __future__ import annotations

import posixpath
from typing import Any

import numpy as np

from virtualize.codecs.hdf5_filters import NoDecoderError, filter_codecs
from virtualize.errors import VirtualizeError
from virtualize.io import ObstoreFile
from virtualize.manifests import MISSING, ChunkManifest, ManifestArray, ManifestGroup, SourceInfo
from virtualize.parsers.hdf_common import (
    DIMENSION_ONLY,
    SCALE_ATTRIBUTES,
    UNREAD_ATTRIBUTES,
    PhonyDimensions,
    assemble_array,
    chunked_manifest,
    contiguous_chunks,
    contiguous_manifest,
    json_attributes,
)
from virtualize.parsers.hdf_index import IndexFormatError, read_v1_btree
from virtualize.parsers.hdf_native import (
    NativeDataset,
    NativeFile,
    NativeGroup,
    NativeUnsupported,
    read_metadata,
)
from virtualize.parsers.hdf_types import numeric_plan

__all__ = ["parse_natively"]


def parse_natively(
    *,
    url: str,
    source: SourceInfo,
    reader: ObstoreFile,
    group: str | None,
    drop: frozenset[str],
    max_chunk_bytes: int,
) -> ManifestGroup:
    """Parse the file behind ``reader`` without h5py.

    Raises
    ------
    NativeUnsupported
        If any part of the file needs the h5py path (which then parses all of it).
    """
    try:
        metadata = read_metadata(reader.read_at, file_size=reader.size)
        root = _find_group(metadata.root, group)
        parse = _FastParse(url, source, reader, metadata, max_chunk_bytes)
        return parse.group(root, drop)
    except NativeUnsupported:
        raise
    except (
        VirtualizeError,
        IndexFormatError,
        NoDecoderError,
        ArithmeticError,
        LookupError,
        TypeError,
        ValueError,
        RecursionError,
    ) as error:
        # the h5py path decides what to say (and whether to skip a variable)
        raise NativeUnsupported(f"{type(error).__name__}: {error}") from error


def _find_group(root: NativeGroup, path: str | None) -> NativeGroup:
    node: NativeGroup | NativeDataset = root
    for part in (path or "").strip("/").split("/"):
        if not part:
            continue
        if not isinstance(node, NativeGroup) or part not in node.members:
            raise NativeUnsupported(f"no group {path!r}; h5py reports it")
        node = node.members[part]
    if not isinstance(node, NativeGroup):
        raise NativeUnsupported(f"{path!r} is not a group; h5py reports it")
    return node


class _FastParse:
    def __init__(
        self,
        url: str,
        source: SourceInfo,
        reader: ObstoreFile,
        metadata: NativeFile,
        max_chunk_bytes: int,
    ) -> None:
        self.url = url
        self.source = source
        self.reader = reader
        self.metadata = metadata
        self.max_chunk_bytes = max_chunk_bytes
        self._paths_by_address: dict[int, str] | None = None
        self._dimension_ids: dict[int, str] | None = None

    def group(self, node: NativeGroup, drop: frozenset[str] = frozenset()) -> ManifestGroup:
        arrays: dict[str, ManifestArray] = {}
        groups: dict[str, ManifestGroup] = {}
        phony = PhonyDimensions()
        group_path = node.path.strip("/")
        for name, member in node.members.items():
            if isinstance(member, NativeDataset):
                if name in drop or _is_dimension_only(member):
                    continue
                label = f"{group_path}/{name}" if group_path else name
                arrays[name] = self.dataset(member, label, phony)
            else:
                groups[name] = self.group(member)
        attributes = json_attributes(_raw_attributes(node.attributes), is_scale=False)
        return ManifestGroup(arrays, groups, attributes)

    def dataset(self, node: NativeDataset, name: str, phony: PhonyDimensions) -> ManifestArray:
        shape = node.shape
        is_scale = _is_scale(node)
        raw = _raw_attributes(node.attributes, SCALE_ATTRIBUTES if is_scale else frozenset())
        dims = self.dimension_names(node, name, is_scale, phony)
        plan = numeric_plan(
            node.dtype, referenceable=True, fill_value=node.fill_value, url=self.url, name=name
        )
        if node.layout == "chunked":
            if node.chunks is None:
                raise NativeUnsupported(f"{name}: chunked without a chunk shape")
            chunks = node.chunks
        else:
            chunks = contiguous_chunks(shape, plan.stored.itemsize, self.max_chunk_bytes)
        filters = filter_codecs(node.filters, dtype=plan.stored, chunk_shape=chunks)
        manifest = self.manifest(node, name, chunks, plan.stored)
        if not node.fill_defined and bool((manifest.path_ids == MISSING).any()):
            raise NativeUnsupported(f"{name}: unwritten chunks without a defined fill value")
        return assemble_array(raw, is_scale, plan, shape, chunks, filters, dims, manifest)

    def manifest(
        self, node: NativeDataset, name: str, chunks: tuple[int, ...], dtype: np.dtype[Any]
    ) -> ChunkManifest:
        if node.layout == "contiguous":
            return contiguous_manifest(
                self.url, self.source, node.data_address, node.shape, chunks, dtype
            )

        def read_index() -> Any:
            return read_v1_btree(
                self.reader.store,
                self.reader.path,
                btree_address=node.btree_address,
                base_address=self.metadata.base_address,
                file_size=self.reader.size,
                ndim=len(node.shape),
                read_cached=self.reader.read_at,
            )

        def refuse_masked(positions: np.ndarray) -> dict[int, bytes]:
            raise NativeUnsupported(f"{name}: chunks stored with filters skipped")

        return chunked_manifest(
            self.url, self.source, name, node.shape, chunks, read_index, refuse_masked
        )

    # -- dimension names ----------------------------------------------------------------------

    def dimension_names(
        self, node: NativeDataset, name: str, is_scale: bool, phony: PhonyDimensions
    ) -> tuple[str, ...]:
        shape = node.shape
        if not shape:
            return ()
        if is_scale:
            coordinates = node.attributes.get("_Netcdf4Coordinates") if len(shape) > 1 else None
            if coordinates is not None:
                ids = self.dimension_ids()
                return tuple(ids.get(int(i), f"phony_dim_{int(i)}") for i in coordinates)
            if len(shape) == 1:
                return (posixpath.basename(name),)
        names: list[str | None] = [None] * len(shape)
        attached = node.attributes.get("DIMENSION_LIST")
        if attached is not None:
            if len(attached) != len(shape):
                raise NativeUnsupported(f"{name}: DIMENSION_LIST does not match the rank")
            paths = self.paths_by_address()
            for axis, scales in enumerate(attached):
                if scales:
                    path = paths.get(int(scales[0]))
                    if path is None:
                        raise NativeUnsupported(f"{name}: a dimension scale is not linked")
                    names[axis] = posixpath.basename(path)
        return phony.fill(names, shape)

    def paths_by_address(self) -> dict[int, str]:
        """The first path (in h5py's visiting order: by name, depth first) of every object."""
        if self._paths_by_address is None:
            paths: dict[int, str] = {}
            for path, node in _visit(self.metadata.root):
                paths.setdefault(node.address, path)
            self._paths_by_address = paths
        return self._paths_by_address

    def dimension_ids(self) -> dict[int, str]:
        """netCDF's dimension ids (``_Netcdf4Dimid``) and the datasets that carry them."""
        if self._dimension_ids is None:
            ids: dict[int, str] = {}
            seen: set[int] = set()
            for path, node in _visit(self.metadata.root):
                if node.address in seen:
                    continue  # h5py visits each object once
                seen.add(node.address)
                if isinstance(node, NativeDataset) and "_Netcdf4Dimid" in node.attributes:
                    ids[int(node.attributes["_Netcdf4Dimid"])] = posixpath.basename(path)
            self._dimension_ids = ids
        return self._dimension_ids


def _visit(root: NativeGroup) -> list[tuple[str, NativeGroup | NativeDataset]]:
    """Every member below ``root`` in h5py's visiting order: names sorted, each group's
    members right after the group (depth first), each group entered once."""
    found: list[tuple[str, NativeGroup | NativeDataset]] = []
    entered = {root.address}

    def walk(prefix: str, group: NativeGroup) -> None:
        for name in sorted(group.members):
            member = group.members[name]
            found.append((f"{prefix}{name}", member))
            if isinstance(member, NativeGroup) and member.address not in entered:
                entered.add(member.address)
                walk(f"{prefix}{name}/", member)

    walk("", root)
    return found


def _raw_attributes(
    attributes: dict[str, Any], unread: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The attributes as the h5py path lists them: bookkeeping ones present but unread."""
    return {
        key: None if key in UNREAD_ATTRIBUTES or key in unread else value
        for key, value in attributes.items()
    }


def _is_scale(node: NativeDataset) -> bool:
    value = node.attributes.get("CLASS")
    if value is None:
        return False
    if not isinstance(value, bytes | np.bytes_):
        raise NativeUnsupported(f"{node.path}: a CLASS attribute that is not fixed-length text")
    return bytes(value) == b"DIMENSION_SCALE"


def _is_dimension_only(node: NativeDataset) -> bool:
    value = node.attributes.get("NAME")
    return isinstance(value, bytes | np.bytes_) and bytes(value).startswith(DIMENSION_ONLY)
