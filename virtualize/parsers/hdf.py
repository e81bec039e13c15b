"""HDF5 / netCDF4 parser: chunk manifests from h5py's view of the file's layout.

h5py reads only metadata, through :class:`~virtualize.io.ObstoreFile`, so the same code serves
local files and object stores. Each dataset becomes a :class:`ManifestArray` whose codecs
replay the HDF5 filter pipeline; a dataset whose bytes can't be referenced exactly raises
:class:`~virtualize.errors.UnsupportedFeatureError` at parse time naming the file, the
variable and the reason.
"""

from __future__ import annotations

import contextlib
import posixpath
import warnings
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

from virtualize.codecs.hdf5_filters import NoDecoderError, filter_codecs, filters_of
from virtualize.errors import (
    InvalidFileError,
    SkippedVariableWarning,
    UnsupportedFeatureError,
    VirtualizeError,
)
from virtualize.io import DEFAULT_BLOCK_SIZE, ObstoreFile, head
from virtualize.isolation import isolated
from virtualize.manifests import (
    MISSING,
    ChunkManifest,
    ManifestArray,
    ManifestGroup,
    SourceInfo,
)
from virtualize.manifests.manifest import merge_url_tables
from virtualize.parsers.damaged import library_errors
from virtualize.parsers.hdf_common import (
    DEFAULT_MAX_CHUNK_BYTES,
    DIMENSION_ONLY,
    SCALE_ATTRIBUTES,
    UNREAD_ATTRIBUTES,
    PhonyDimensions,
    StoredLayout,
    array_metadata,
    assemble_array,
    chunk_counts,
    chunked_manifest,
    contiguous_chunks,
    contiguous_manifest,
    json_attributes,
)
from virtualize.parsers.hdf_index import (
    ChunkIndex,
    IndexFormatError,
    read_v1_btree_chunk_index,
)
from virtualize.parsers.hdf_types import TypePlan, plan_type
from virtualize.parsers.inline import encode_chunks, inline_manifest
from virtualize.registry import ObjectStoreRegistry, normalize_url, sibling_url
from virtualize.store import ManifestStore

__all__ = ["HDFParser"]


class HDFParser:
    """Parse HDF5 and netCDF4 files into virtual arrays.

    Parameters
    ----------
    group
        The group to open (``"/"`` by default); its subgroups are parsed too.
    drop_variables
        Variables (dataset names in the opened group) to leave out, for example ones whose
        encoding is not supported yet.
    max_chunk_bytes
        Contiguous (unchunked) datasets larger than this are referenced as several chunks
        along their first axis, so readers don't fetch one giant range.
    max_inline_bytes
        Datasets whose bytes can't be referenced (compact layout, a type stored on the HDF5
        heap, a filter with no zarr decoder) are read at parse time and held inline up to
        this size; larger ones are refused.
    max_rewritten_share, max_rewritten_bytes
        Chunks stored with some filters skipped (a per-chunk filter mask) are read decoded
        and re-encoded inline; an array with a larger share of such chunks, or more bytes of
        them, than these limits is refused.
    on_unsupported
        ``"raise"`` (default): a variable that can't be referenced or inlined raises
        :class:`~virtualize.errors.UnsupportedFeatureError`. ``"skip"``: it is left out with a
        :class:`~virtualize.errors.SkippedVariableWarning`, and the returned store's
        ``skipped`` maps its path to the reason.
    block_size
        Bytes per request when reading the file's metadata.
    metadata_reader
        ``"auto"`` (default): files in the common netCDF-4 layout (numeric variables,
        chunked or contiguous, gzip/shuffle/fletcher32, dimension scales, plain attributes)
        are read straight from their metadata bytes, several times faster than through
        h5py; any other file is read with h5py. Both give the same arrays. ``"h5py"``: always
        read with h5py.

    Examples
    --------
    >>> parser = HDFParser(group="forecast")
    >>> store = parser("s3://bucket/file.nc", registry)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        group: str | None = None,
        drop_variables: Iterable[str] | None = None,
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
        max_inline_bytes: int = 4 * 1024 * 1024,
        max_rewritten_share: float = 0.25,
        max_rewritten_bytes: int = 16 * 1024 * 1024,
        on_unsupported: Literal["raise", "skip"] = "raise",
        block_size: int = DEFAULT_BLOCK_SIZE,
        metadata_reader: Literal["auto", "h5py"] = "auto",
    ) -> None:
        if on_unsupported not in ("raise", "skip"):
            raise ValueError(f"on_unsupported must be 'raise' or 'skip', got {on_unsupported!r}")
        if metadata_reader not in ("auto", "h5py"):
            raise ValueError(f"metadata_reader must be 'auto' or 'h5py', got {metadata_reader!r}")
        self.metadata_reader = metadata_reader
        self.on_unsupported = on_unsupported
        self.group = group
        self.drop_variables = frozenset(drop_variables or ())
        self.max_chunk_bytes = max_chunk_bytes
        self.max_inline_bytes = max_inline_bytes
        self.max_rewritten_share = max_rewritten_share
        self.max_rewritten_bytes = max_rewritten_bytes
        self.block_size = block_size

    def __repr__(self) -> str:
        return f"HDFParser(group={self.group!r}, drop_variables={sorted(self.drop_variables)!r})"

    def __call__(self, url: str, registry: ObjectStoreRegistry) -> ManifestStore:
        """Parse ``url`` and return a :class:`~virtualize.ManifestStore` over its datasets."""
        url = normalize_url(url)
        files = _OpenFiles(self, registry)
        try:
            if self.metadata_reader == "auto":
                from virtualize.parsers.hdf_fast import parse_natively
                from virtualize.parsers.hdf_native import NativeUnsupported

                source, reader = files.reader(url)
                try:
                    group = parse_natively(
                        url=url,
                        source=source,
                        reader=reader,
                        group=self.group,
                        drop=self.drop_variables,
                        max_chunk_bytes=self.max_chunk_bytes,
                    )
                except NativeUnsupported:
                    pass  # parsed below with h5py, from the bytes already cached
                except MemoryError as error:
                    raise InvalidFileError(
                        "the file's metadata declares sizes no file of its size can have",
                        url=url,
                        hint="The file is damaged",
                    ) from error
                else:
                    return ManifestStore(group, registry=registry, skipped={})
        finally:
            files.close()
        # the HDF5 library loops forever on some damaged metadata: see virtualize.isolation
        group, skipped = isolated(_parse_with_h5py, self, url, registry, url=url, library="h5py")
        return ManifestStore(group, registry=registry, skipped=skipped)

    def _parse_with_h5py(
        self, url: str, registry: ObjectStoreRegistry
    ) -> tuple[ManifestGroup, dict[str, str]]:
        import h5py

        # the HDF5 library reads a few values (fill values, small datasets) itself
        with contextlib.suppress(ImportError):
            import hdf5plugin  # noqa: F401  (registers the filters of the [hdf] extra)
        files = _OpenFiles(self, registry)
        try:
            context = files.open(url)
            h5file = context.file
            root = h5file
            with library_errors(url, "h5py"):  # the HDF5 library on damaged metadata
                if self.group not in (None, "", "/"):
                    node = h5file.get(str(self.group))
                    if not isinstance(node, h5py.Group):
                        raise InvalidFileError(
                            f"no group {self.group!r}",
                            url=url,
                            hint=f"Groups here: {sorted(_group_paths(h5file))}",
                        )
                    root = node
                group = context.parse_group(root, drop=self.drop_variables)
        finally:
            files.close()
        return group, files.skipped


def _parse_with_h5py(
    parser: HDFParser, url: str, registry: ObjectStoreRegistry
) -> tuple[ManifestGroup, dict[str, str]]:
    return parser._parse_with_h5py(url, registry)


class _OpenFiles:
    """The HDF5 files one parse reads: the file itself and any it links to (external links,
    external storage, virtual dataset sources), each opened once through the registry."""

    def __init__(self, parser: HDFParser, registry: ObjectStoreRegistry) -> None:
        self.parser = parser
        self.registry = registry
        self.contexts: dict[str, _Context] = {}
        self.readers: dict[str, tuple[SourceInfo, ObstoreFile]] = {}
        self.sources: dict[str, SourceInfo] = {}
        self.skipped: dict[str, str] = {}

    def open(self, url: str) -> _Context:
        import h5py

        url = normalize_url(url)
        if url in self.contexts:
            return self.contexts[url]
        source, reader = self.reader(url)
        try:
            h5file = h5py.File(reader, "r")
        except OSError as error:
            raise InvalidFileError(
                f"not a readable HDF5/netCDF4 file ({error})",
                url=url,
                hint="Check the file is complete; pick the parser that matches its format",
            ) from error
        context = _Context(url=url, source=source, files=self, file=h5file, reader=reader)
        self.contexts[url] = context
        return context

    def reader(self, url: str) -> tuple[SourceInfo, ObstoreFile]:
        """The file's parse-time information and a block-cached reader of its bytes."""
        if url not in self.readers:
            source = head(self.registry, url)
            store, path = self.registry.resolve(url)
            size = source.size or 0
            self.readers[url] = (
                source,
                ObstoreFile(store, path, size, block_size=self.parser.block_size),
            )
        return self.readers[url]

    def source_of(self, url: str) -> SourceInfo:
        """Parse-time information of a raw file referenced by a dataset (checked against the
        registry)."""
        url = normalize_url(url)
        if url not in self.sources:
            self.sources[url] = head(self.registry, url)
        return self.sources[url]

    def close(self) -> None:
        for context in self.contexts.values():
            context.file.close()
        self.contexts.clear()
        self.readers.clear()


def _group_paths(h5file: Any) -> list[str]:
    import h5py

    paths = ["/"]
    h5file.visit(
        lambda name: paths.append("/" + name) if isinstance(h5file[name], h5py.Group) else None
    )
    return paths


class _Context:
    """What parsing one file needs: the url, its parse-time info, and netCDF's dimension ids."""

    def __init__(
        self, *, url: str, source: SourceInfo, files: _OpenFiles, file: Any, reader: ObstoreFile
    ) -> None:
        self.url = url
        self.source = source
        self.files = files
        self.parser = files.parser
        self.file = file
        self.reader = reader
        plist = file.id.get_create_plist()
        self.base_address = int(plist.get_userblock())
        self.offset_size, self.length_size = (int(n) for n in plist.get_sizes())
        self._dimension_ids: dict[int, str] | None = None
        self._paths_by_address: dict[int, str] | None = None
        self.skipped = files.skipped

    # -- groups -------------------------------------------------------------------------------

    def parse_group(self, h5group: Any, *, drop: frozenset[str] = frozenset()) -> ManifestGroup:
        import h5py

        arrays: dict[str, ManifestArray] = {}
        groups: dict[str, ManifestGroup] = {}
        phony = PhonyDimensions()
        group_path = (h5group.name or "/").strip("/")
        for name, link, owner in self.members(h5group):
            if isinstance(link, h5py.Dataset):
                if name in drop or _is_dimension_only(link):
                    continue
                label = f"{group_path}/{name}" if group_path else name
                try:
                    arrays[name] = owner.parse_dataset(link, label, phony)
                except UnsupportedFeatureError as error:
                    if self.parser.on_unsupported != "skip":
                        raise
                    self.skipped[label] = str(error)
                    warnings.warn(str(error), SkippedVariableWarning, stacklevel=2)
                except VirtualizeError:
                    raise
                except (OSError, RuntimeError, ValueError, KeyError, TypeError) as error:
                    raise InvalidFileError(
                        f"its metadata could not be read ({type(error).__name__}: {error})",
                        url=self.url,
                        variable=label,
                        hint=f"The file may be damaged; pass drop_variables=[{name!r}] to skip it",
                    ) from error
            elif isinstance(link, h5py.Group):
                groups[name] = owner.parse_group(link)
        attributes = json_attributes(self.raw_attributes(h5group), is_scale=False)
        return ManifestGroup(arrays, groups, attributes)

    def members(self, h5group: Any) -> list[tuple[str, Any, _Context]]:
        """A group's members with the file context that holds each one.

        Hard and soft links resolve inside this file. External links are followed only
        through the registry (h5py would open the target itself, outside it); dangling links
        are skipped.
        """
        import h5py

        members = []
        for name in h5group:
            link = h5group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                target_url = sibling_url(self.url, link.filename)
                other = self.files.open(target_url)
                node = other.file.get(link.path)
                if node is None:
                    continue  # the target file exists but the object doesn't
                members.append((name, node, other))
                continue
            try:
                node = h5group[name]
            except (KeyError, OSError):
                continue  # a dangling soft link: nothing to reference
            members.append((name, node, self))
        return members

    # -- attributes ---------------------------------------------------------------------------

    def raw_attributes(
        self, node: Any, name: str = "", unread: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """A node's attributes as h5py reads them, each read once.

        Dimension-scale bookkeeping (``DIMENSION_LIST``, ``REFERENCE_LIST``) and netCDF-4's
        hidden attributes are listed with the value None: nothing shows them, and the
        references are for the dimension API.
        """
        raw: dict[str, Any] = {}
        attrs = node.attrs
        for key in attrs:
            if key in UNREAD_ATTRIBUTES or key in unread:
                raw[key] = None
                continue
            try:
                raw[key] = attrs[key]
            except (OSError, TypeError, ValueError) as error:
                warnings.warn(
                    f"{self.url}: {name or 'group'}: attribute {key!r} cannot be read "
                    f"({error}) and is left out",
                    stacklevel=2,
                )
        return raw

    # -- datasets -----------------------------------------------------------------------------

    def parse_dataset(self, dset: Any, name: str, phony: PhonyDimensions) -> ManifestArray:
        import h5py
        from h5py import h5d

        shape = dset.shape
        if shape is None:
            raise UnsupportedFeatureError(
                "the dataset has a null dataspace (no shape)",
                url=self.url,
                variable=name,
                hint=f"Pass drop_variables=[{name!r}] to open the rest of the file",
            )
        shape = tuple(int(n) for n in shape)
        is_scale = bool(h5py.h5ds.is_scale(dset.id))
        raw = self.raw_attributes(dset, name, SCALE_ATTRIBUTES if is_scale else frozenset())
        dims = self.dimension_names(dset, raw, name, shape, is_scale, phony)
        plist = dset.id.get_create_plist()
        external = plist.get_external_count() > 0
        layout = plist.get_layout()
        if layout == h5d.VIRTUAL:
            return self._virtual_dataset(dset, raw, name, shape, dims, is_scale)
        if layout not in (h5d.CHUNKED, h5d.CONTIGUOUS, h5d.COMPACT):
            raise self._unsupported(name, f"its storage layout ({layout}) is unknown")
        raw_fill, fill_defined = _fill_value(dset, np.dtype(dset.dtype))
        plan = plan_type(dset, url=self.url, name=name, fill_value=raw_fill)
        external_manifest = None
        if external:
            if not plan.referenceable:
                raise self._unsupported(name, "its type can't be referenced in external storage")
            chunks, external_manifest = self._external_storage(name, plist, shape, plan.stored)
        elif layout == h5d.CHUNKED:
            chunks = tuple(int(c) for c in dset.chunks)
        elif layout == h5d.CONTIGUOUS and plan.referenceable:
            chunks = contiguous_chunks(shape, plan.stored.itemsize, self.parser.max_chunk_bytes)
        else:
            chunks = tuple(max(n, 1) for n in shape)
        why_inline = None
        filters: list[Any] = []
        if not plan.referenceable:
            why_inline = "its type can't be referenced"
        elif layout == h5d.COMPACT:
            why_inline = "compact data lives in the object header"
        else:
            try:
                filters = filter_codecs(filters_of(plist), dtype=plan.stored, chunk_shape=chunks)
            except NoDecoderError as error:
                why_inline = str(error)
        storage = StoredLayout(
            shape, chunks, plan.data_type, plan.fill_value, [plan.serializer, *filters]
        )
        if external_manifest is not None:
            manifest = external_manifest
        elif why_inline is not None:
            manifest = self._materialize(dset, name, plan, storage, why_inline)
        elif layout == h5d.CHUNKED:
            manifest = self._chunked_manifest(dset, name, plan, storage)
        else:
            manifest = self._contiguous_manifest(dset, storage, plan.stored)
        if why_inline is None and not fill_defined and bool((manifest.path_ids == MISSING).any()):
            raise self._unsupported(
                name,
                "some of its chunks were never written and its fill value is undefined or its "
                "fill time is NEVER, so HDF5 itself gives no defined value for them",
            )
        return assemble_array(raw, is_scale, plan, shape, chunks, filters, dims, manifest)

    def _unsupported(self, name: str, reason: str) -> UnsupportedFeatureError:
        return UnsupportedFeatureError(
            f"cannot be referenced: {reason}",
            url=self.url,
            variable=name,
            hint=f"Pass drop_variables=[{name!r}] to open the rest of the file",
        )

    def _virtual_dataset(
        self,
        dset: Any,
        raw: dict[str, Any],
        name: str,
        shape: tuple[int, ...],
        dims: tuple[str, ...],
        is_scale: bool,
    ) -> ManifestArray:
        """A virtual dataset (VDS) as references into its sources' chunks.

        Possible when every mapping places a whole source dataset at a chunk boundary of the
        virtual one and all sources share data type, chunk shape and codecs; then each source
        chunk is a chunk of the virtual dataset. Anything else is refused.
        """
        import h5py

        def refuse(why: str) -> UnsupportedFeatureError:
            return self._unsupported(name, f"it is a virtual dataset (VDS) and {why}")

        placed: list[tuple[tuple[int, ...], ManifestArray]] = []
        for mapping in dset.virtual_sources():
            if "%" in mapping.file_name or "%" in mapping.dset_name:
                raise refuse("its source names are patterns")
            other = (
                self
                if mapping.file_name == "."
                else self.files.open(sibling_url(self.url, mapping.file_name))
            )
            source = other.file.get(mapping.dset_name)
            if not isinstance(source, h5py.Dataset):
                raise refuse(f"its source {mapping.dset_name!r} is missing")
            array = other.parse_dataset(source, f"{name} <- {mapping.dset_name}", PhonyDimensions())
            whole = mapping.src_space.get_select_type() == h5py.h5s.SEL_ALL or (
                mapping.src_space.get_select_npoints() == array.size
            )
            if not whole:
                raise refuse("a mapping selects part of its source")
            if mapping.vspace.get_select_type() != h5py.h5s.SEL_HYPERSLABS:
                raise refuse("a mapping's destination is not a hyperslab")
            start, stride, count, block = mapping.vspace.get_regular_hyperslab()
            extent = tuple(c * b for c, b in zip(count, block, strict=True))
            contiguous = all(
                c == 1 or st == b for c, st, b in zip(count, stride, block, strict=True)
            )
            if not contiguous or extent != array.shape:
                raise refuse("a mapping's destination is not one block the size of its source")
            placed.append((tuple(int(i) for i in start), array))
        if not placed:
            raise refuse("it maps no sources")
        first = placed[0][1]
        chunks = first.chunk_shape
        for start, array in placed:
            if (
                array.dtype != np.dtype(dset.dtype).newbyteorder("=")
                or array.chunk_shape != chunks
                or array.metadata.codecs != first.metadata.codecs
            ):
                raise refuse("its sources differ in data type, chunk shape or codecs")
            for axis, (offset, length, chunk) in enumerate(
                zip(start, array.shape, chunks, strict=True)
            ):
                ends_inside = offset + length < shape[axis]
                if offset % chunk or (ends_inside and length % chunk):
                    raise refuse("a source is not placed on chunk boundaries")
        grid = chunk_counts(shape, chunks)
        urls, sources, translated = merge_url_tables([a.manifest for _, a in placed])
        path_ids = np.full(grid, MISSING, dtype=np.uint32)
        offsets = np.zeros(grid, dtype=np.uint64)
        lengths = np.zeros(grid, dtype=np.uint64)
        inline: dict[int, bytes] = {}
        for (start, array), ids in zip(placed, translated, strict=True):
            region = tuple(
                slice(o // c, o // c + n)
                for o, c, n in zip(start, chunks, array.manifest.shape_chunk_grid, strict=True)
            )
            path_ids[region] = ids
            offsets[region] = array.manifest.offsets
            lengths[region] = array.manifest.lengths
            sub_grid = array.manifest.shape_chunk_grid
            for flat, data in array.manifest.inline.items():
                local = np.unravel_index(flat, sub_grid)
                position = tuple(int(i) + r.start for i, r in zip(local, region, strict=True))
                inline[int(np.ravel_multi_index(position, grid))] = data
        # Unmapped regions read as the VDS's fill value, a source's unwritten chunks as that
        # source's: every source with unwritten chunks must agree with the one we present.
        raw_fill, _ = _fill_value(dset, np.dtype(dset.dtype))
        for _, array in placed:
            unwritten = bool((array.manifest.path_ids == MISSING).any())
            if unwritten and not _same_value(array.metadata.fill_value, raw_fill):
                raise refuse("a source has unwritten chunks whose fill value differs from its own")
        manifest = ChunkManifest(urls, path_ids, offsets, lengths, inline=inline, sources=sources)
        attributes = json_attributes(raw, is_scale=is_scale, dtype=first.dtype)
        metadata = array_metadata(
            shape,
            chunks,
            first.metadata.data_type,
            raw_fill,
            list(first.metadata.codecs),
            attributes,
            dims,
        )
        return ManifestArray(metadata, manifest)

    def _external_storage(
        self, name: str, plist: Any, shape: tuple[int, ...], dtype: np.dtype[Any]
    ) -> tuple[tuple[int, ...], ChunkManifest]:
        """Chunks of a dataset whose raw bytes sit in external files, one after another.

        Relative file names resolve next to the HDF5 file (HDF5 itself resolves them against
        the reader's working directory), and every file must be under the registry.
        """
        row_shape = shape[1:]
        row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
        total_rows = shape[0] if shape else 1
        segments = []
        remaining = total_rows * row_bytes
        for index in range(plist.get_external_count()):
            file_name, offset, size = plist.get_external(index)
            size = min(int(size), remaining)
            if size <= 0:
                break
            label = file_name.decode() if isinstance(file_name, bytes) else str(file_name)
            segments.append((sibling_url(self.url, label), int(offset), size))
            remaining -= size
        if remaining > 0:
            raise InvalidFileError(
                f"its external files hold {remaining:,} bytes fewer than the dataset needs",
                url=self.url,
                variable=name,
            )
        if not shape:
            url, offset, size = segments[0]
            return (), self._segment_manifest(((), [(url, offset, size)]))
        if any(size % max(row_bytes, 1) for _, _, size in segments) or row_bytes == 0:
            raise self._unsupported(name, "its external files split rows between them")
        rows = [size // row_bytes for _, _, size in segments]
        step = int(np.gcd.reduce(np.array(rows, dtype=np.int64)))
        pieces = []
        for (url, offset, _size), count in zip(segments, rows, strict=True):
            for k in range(count // step):
                pieces.append((url, offset + k * step * row_bytes, step * row_bytes))
        chunks = (step, *(max(n, 1) for n in row_shape))
        return chunks, self._segment_manifest(((len(pieces), *(1 for _ in row_shape)), pieces))

    def _segment_manifest(
        self, layout: tuple[tuple[int, ...], list[tuple[str, int, int]]]
    ) -> ChunkManifest:
        grid, pieces = layout
        urls = sorted({url for url, _, _ in pieces})
        sources = [self.files.source_of(url) for url in urls]
        ids = np.array([urls.index(url) for url, _, _ in pieces], dtype=np.uint32)
        offsets = np.array([offset for _, offset, _ in pieces], dtype=np.uint64)
        lengths = np.array([length for _, _, length in pieces], dtype=np.uint64)
        return ChunkManifest(
            urls,
            ids.reshape(grid),
            offsets.reshape(grid),
            lengths.reshape(grid),
            sources=sources,
        )

    def _materialize(
        self, dset: Any, name: str, plan: TypePlan, storage: StoredLayout, why: str
    ) -> ChunkManifest:
        """Read the whole dataset with h5py and hold it inline, encoded with ``storage``."""
        shape = storage.shape
        grid = chunk_counts(shape, storage.chunks)
        if any(n == 0 for n in shape):
            return ChunkManifest.empty(grid)
        size = plan.estimate_nbytes(dset, limit=self.parser.max_inline_bytes)
        if size > self.parser.max_inline_bytes:
            raise self._unsupported(
                name,
                f"{why}, and at {size:,} bytes it is too large to hold inline "
                f"(max_inline_bytes={self.parser.max_inline_bytes:,})",
            )
        return inline_manifest(grid, encode_chunks(storage.metadata(), plan.read(dset)))

    def dimension_names(
        self,
        dset: Any,
        raw: dict[str, Any],
        name: str,
        shape: tuple[int, ...],
        is_scale: bool,
        phony: PhonyDimensions,
    ) -> tuple[str, ...]:
        if not shape:
            return ()
        if is_scale:
            coordinates = dset.attrs.get("_Netcdf4Coordinates") if len(shape) > 1 else None
            if coordinates is not None:
                ids = self._netcdf_dimension_ids()
                return tuple(ids.get(int(i), f"phony_dim_{int(i)}") for i in coordinates)
            if len(shape) == 1:
                return (posixpath.basename(name),)
        names: list[str | None] = []
        if "DIMENSION_LIST" in raw:
            for axis in range(len(shape)):
                attached = dset.dims[axis]
                names.append(self._scale_name(attached[0]) if len(attached) else None)
        else:
            names = [None] * len(shape)
        return phony.fill(names, shape)

    def _scale_name(self, scale: Any) -> str:
        """A dimension scale's name, from a map of object addresses to paths built once per
        file (``scale.name`` searches the file for a path, milliseconds per call)."""
        if self._paths_by_address is None:
            import h5py

            paths: dict[int, str] = {}

            def visit(path: str, link: Any) -> None:
                if isinstance(link, h5py.HardLink):
                    info = self.file.id.links.get_info(path.encode())
                    paths.setdefault(int(info.u), path)

            self.file.visititems_links(visit)
            self._paths_by_address = paths
        path = self._paths_by_address.get(_object_address(scale))
        return posixpath.basename(path if path is not None else scale.name)

    def _netcdf_dimension_ids(self) -> dict[int, str]:
        if self._dimension_ids is None:
            import h5py

            ids: dict[int, str] = {}

            def visit(path: str, node: Any) -> None:
                if isinstance(node, h5py.Dataset) and "_Netcdf4Dimid" in node.attrs:
                    ids[int(node.attrs["_Netcdf4Dimid"])] = posixpath.basename(path)

            self.file.visititems(visit)
            self._dimension_ids = ids
        return self._dimension_ids

    # -- layouts ------------------------------------------------------------------------------

    def _chunked_manifest(
        self, dset: Any, name: str, plan: TypePlan, storage: StoredLayout
    ) -> ChunkManifest:
        return chunked_manifest(
            self.url,
            self.source,
            name,
            storage.shape,
            storage.chunks,
            lambda: self._chunk_index(dset, len(storage.shape)),
            lambda positions: self._rewrite_masked_chunks(dset, name, plan, storage, positions),
        )

    def _rewrite_masked_chunks(
        self,
        dset: Any,
        name: str,
        plan: TypePlan,
        storage: StoredLayout,
        positions: np.ndarray,
    ) -> dict[int, bytes]:
        """Chunks stored with some filters skipped can't share the array's codecs: read them
        decoded with h5py and re-encode them with the array's codecs, inline."""
        shape, chunks = storage.shape, storage.chunks
        grid = chunk_counts(shape, chunks)
        count = len(positions)
        total = int(np.prod(grid, dtype=np.int64))
        chunk_bytes = int(np.prod(chunks, dtype=np.int64)) * plan.stored.itemsize
        share = count / total
        if share > self.parser.max_rewritten_share or count * chunk_bytes > (
            self.parser.max_rewritten_bytes
        ):
            raise self._unsupported(
                name,
                f"{count} of its {total} chunks were stored with filters skipped (per-chunk "
                f"filter mask); rewriting them inline would hold {count * chunk_bytes:,} bytes, "
                f"more than max_rewritten_share={self.parser.max_rewritten_share} or "
                f"max_rewritten_bytes={self.parser.max_rewritten_bytes:,} allow",
            )
        wanted = [tuple(int(i) for i in position) for position in positions]
        encoded = encode_chunks(storage.metadata(), plan.values(dset), chunks=wanted)
        rewritten = {}
        for position in wanted:
            if position in encoded:
                rewritten[int(np.ravel_multi_index(position, grid))] = encoded[position]
        return rewritten

    def _chunk_index(self, dset: Any, ndim: int) -> ChunkIndex:
        """The dataset's chunks: read from its B-tree directly when it has a version-1 B-tree
        index, otherwise listed by h5py."""

        try:
            index = read_v1_btree_chunk_index(
                self.reader.store,
                self.reader.path,
                header_address=_object_address(dset),
                base_address=self.base_address,
                file_size=self.reader.size,
                ndim=ndim,
                offset_size=self.offset_size,
                length_size=self.length_size,
                read_cached=self.reader.read_at,
            )
        except IndexFormatError:
            index = None
        if index is not None:
            return index
        records: list[Any] = []
        if dset.id.get_storage_size() > 0:
            dset.id.chunk_iter(records.append)
        if not records:
            return ChunkIndex(
                np.zeros((0, ndim), dtype=np.uint64),
                np.zeros(0, dtype=np.uint64),
                np.zeros(0, dtype=np.uint64),
                np.zeros(0, dtype=np.uint32),
            )
        chunk_offsets, filter_masks, byte_offsets, sizes = zip(*records, strict=True)
        return ChunkIndex(
            np.array(chunk_offsets, dtype=np.uint64).reshape(len(records), ndim),
            np.array(byte_offsets, dtype=np.uint64),
            np.array(sizes, dtype=np.uint64),
            np.array(filter_masks, dtype=np.uint32),
        )

    def _contiguous_manifest(
        self, dset: Any, storage: StoredLayout, dtype: np.dtype[Any]
    ) -> ChunkManifest:
        return contiguous_manifest(
            self.url, self.source, dset.id.get_offset(), storage.shape, storage.chunks, dtype
        )


def _same_value(first: Any, second: Any) -> bool:
    a, b = np.asarray(first), np.asarray(second)
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _object_address(node: Any) -> int:
    """Where an object's header is (relative to the superblock).

    ``h5o.get_info`` also computes storage sizes, which walks a dataset's whole chunk B-tree,
    and ``.name`` searches the file for a path; ``H5Gget_objinfo`` gives the address alone.
    """
    import h5py

    low, high = h5py.h5g.get_objinfo(node.id).objno
    return int(low) | (int(high) << 64)


def _is_dimension_only(dset: Any) -> bool:
    value = dset.attrs.get("NAME") if "NAME" in dset.attrs else None
    return isinstance(value, bytes | np.bytes_) and bytes(value).startswith(DIMENSION_ONLY)


def _fill_value(dset: Any, dtype: np.dtype[Any]) -> tuple[Any, bool]:
    """The dataset's fill value, and whether HDF5 defines what unallocated storage reads as.

    With an undefined fill value, or fill time NEVER, HDF5 leaves the reader's buffer as it
    was: h5py shows zeros and netCDF-C shows whatever memory held.
    """
    from h5py import h5d

    plist = dset.id.get_create_plist()
    defined = plist.fill_value_defined() != h5d.FILL_VALUE_UNDEFINED
    defined = defined and plist.get_fill_time() != h5d.FILL_TIME_NEVER
    if dtype.subdtype is not None:
        return None, defined  # array-typed elements: plan_type refuses them with a reason
    try:
        value = dset.fillvalue
    except (RuntimeError, OSError):  # undefined, or a type h5py can't convert
        value = None
    if dtype.kind == "S":
        return (bytes(value) if value is not None else b""), defined
    if value is None:
        return 0, defined
    return np.asarray(value, dtype=dtype).reshape(()).item(), defined
