"""ManifestStore: a read-only zarr v3 store over virtual arrays.

Metadata is served from memory; chunk keys are looked up in the manifests and their bytes
fetched through the :class:`~virtualize.registry.ObjectStoreRegistry`, so every byte read
comes from a location the user authorised. Inline chunks are served from memory and missing
chunks are absent, so zarr fills them with the fill value.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import numpy as np
import obstore
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding

from virtualize.errors import ChunkReadError, UnauthorizedLocationError
from virtualize.io import is_read_failure, read_failure_text
from virtualize.manifests import INLINE, MISSING, ManifestArray, ManifestGroup
from virtualize.registry import ObjectStoreRegistry

__all__ = ["ManifestStore"]

_METADATA_KEY = "zarr.json"


class ManifestStore(Store):
    """A read-only zarr v3 store whose chunks are byte ranges of other files.

    Parameters
    ----------
    group
        The virtual arrays and groups the store presents.
    registry
        Where the referenced files may be read from. Chunks under no registered prefix are
        refused with :class:`~virtualize.errors.UnauthorizedLocationError`.

    Examples
    --------
    >>> import xarray as xr
    >>> from virtualize.parsers import HDFParser
    >>> store = HDFParser()("file:///data/air.nc", registry)  # doctest: +SKIP
    >>> ds = xr.open_zarr(store, consolidated=False, zarr_format=3)  # doctest: +SKIP
    """

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = True

    def __init__(
        self,
        group: ManifestGroup,
        *,
        registry: ObjectStoreRegistry,
        skipped: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(read_only=True)
        self._group = group
        self._registry = registry
        self._skipped = dict(skipped or {})
        self._metadata_cache: dict[str, bytes] = {}

    @property
    def group(self) -> ManifestGroup:
        """The virtual arrays and groups the store presents."""
        return self._group

    @property
    def skipped(self) -> dict[str, str]:
        """Variables the parser left out, by path, with the reason."""
        return dict(self._skipped)

    @property
    def registry(self) -> ObjectStoreRegistry:
        """The registry chunks are read through."""
        return self._registry

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ManifestStore)
            and other._group is self._group
            and other._registry is self._registry
        )

    def __hash__(self) -> int:
        return hash((id(self._group), id(self._registry)))

    def __repr__(self) -> str:
        return f"ManifestStore({self._group!r}, registry={self._registry!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"group": self._group, "registry": self._registry, "skipped": self._skipped}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["group"], registry=state["registry"], skipped=state.get("skipped")
        )

    def with_read_only(self, read_only: bool = False) -> ManifestStore:
        if not read_only:
            raise ValueError("a ManifestStore is always read-only")
        return self

    # -- metadata -----------------------------------------------------------------------------

    def _metadata_document(self, node_path: str) -> bytes | None:
        cached = self._metadata_cache.get(node_path)
        if cached is not None:
            return cached
        node = self._group.get_node(node_path)
        if node is None:
            return None
        if isinstance(node, ManifestArray):
            buffers = node.metadata.to_buffer_dict(default_buffer_prototype())
            document = buffers[_METADATA_KEY].to_bytes()
        else:
            content: dict[str, Any] = {
                "zarr_format": 3,
                "node_type": "group",
                "attributes": node.attributes,
            }
            if node_path in ("", "/") and not node.groups:
                # A flat store (most files) also serves its arrays' metadata inline, so that
                # opening it takes one read instead of a listing and one read per array.
                content["consolidated_metadata"] = {
                    "kind": "inline",
                    "must_understand": False,
                    "metadata": {
                        name: json.loads(self._metadata_document(name) or b"{}")
                        for name in node.arrays
                    },
                }
            document = json.dumps(content, allow_nan=True, default=_json_default).encode()
        self._metadata_cache[node_path] = document
        return document

    # -- chunks -------------------------------------------------------------------------------

    def _locate_chunk(self, key: str) -> tuple[str, ManifestArray, tuple[int, ...]] | None:
        """Split a chunk key into its array, and the chunk position decoded with that
        array's own chunk key encoding (``c/0/1``, ``c.0.1``, ``0.1``, ...)."""
        parts = key.split("/")
        for split in range(len(parts) - 1, 0, -1):
            array_path = "/".join(parts[:split])
            node = self._group.get_node(array_path)
            if not isinstance(node, ManifestArray):
                continue
            index = _decode_chunk_key(node, "/".join(parts[split:]))
            if index is None:
                return None
            grid = node.manifest.shape_chunk_grid
            if any(i >= n for i, n in zip(index, grid, strict=True)):
                return None
            return array_path, node, index
        return None

    async def get(
        self,
        key: str,
        prototype: BufferPrototype,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        if key == _METADATA_KEY or key.endswith("/" + _METADATA_KEY):
            document = self._metadata_document(key[: -len(_METADATA_KEY)].rstrip("/"))
            if document is None:
                return None
            return prototype.buffer.from_bytes(_slice(document, byte_range))
        located = self._locate_chunk(key)
        if located is None:
            return None
        array_path, array, index = located
        manifest = array.manifest
        path_id = manifest.path_ids[index]
        if path_id == MISSING:
            return None
        if path_id == INLINE:
            flat = int(np.ravel_multi_index(index, manifest.shape_chunk_grid)) if index else 0
            return prototype.buffer.from_bytes(_slice(manifest.inline[flat], byte_range))
        url = manifest.urls[int(path_id)]
        start = int(manifest.offsets[index])
        length = int(manifest.lengths[index])
        start, length = _narrow(start, length, byte_range)
        data = await self._fetch(url, start, length, array_path, key)
        return prototype.buffer.from_bytes(data)

    async def _fetch(self, url: str, start: int, length: int, array_path: str, key: str) -> Any:
        store, path = self._registry.resolve(url)
        if length == 0:
            return b""
        try:
            data = await obstore.get_range_async(store, path, start=start, length=length)
        except UnauthorizedLocationError:
            raise
        except BaseException as error:
            if not is_read_failure(error):
                raise
            raise ChunkReadError(
                f"reading chunk {key!r} (bytes {start}-{start + length}) failed: "
                f"{read_failure_text(error)}",
                url=url,
                variable=array_path,
                hint="Check that the file still exists and has not changed since it was parsed",
            ) from error
        if len(data) != length:
            raise ChunkReadError(
                f"chunk {key!r} should be {length} bytes at offset {start}, got {len(data)}",
                url=url,
                variable=array_path,
                hint="The file is shorter than when it was parsed; parse it again",
            )
        return memoryview(data)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(
            await asyncio.gather(*(self.get(key, prototype, rng) for key, rng in key_ranges))
        )

    async def exists(self, key: str) -> bool:
        if key == _METADATA_KEY or key.endswith("/" + _METADATA_KEY):
            return self._group.get_node(key[: -len(_METADATA_KEY)].rstrip("/")) is not None
        located = self._locate_chunk(key)
        if located is None:
            return False
        _, array, index = located
        return bool(array.manifest.path_ids[index] != MISSING)

    # -- writes are refused -------------------------------------------------------------------

    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()

    async def delete(self, key: str) -> None:
        self._check_writable()

    # -- listing ------------------------------------------------------------------------------

    def _all_keys(self) -> Iterable[str]:
        for path, node in self._group.walk():
            yield f"{path}/{_METADATA_KEY}" if path else _METADATA_KEY
            if isinstance(node, ManifestArray):
                yield from _chunk_keys(path, node)

    async def list(self) -> AsyncIterator[str]:
        for key in self._all_keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in self._all_keys():
            if key.startswith(prefix):
                yield key

    def _owning_array(self, path: str) -> tuple[str, ManifestArray] | None:
        """The array at ``path`` or at the nearest ancestor of it, with its path."""
        parts = path.split("/")
        for end in range(len(parts), 0, -1):
            array_path = "/".join(parts[:end])
            node = self._group.get_node(array_path)
            if isinstance(node, ManifestArray):
                return array_path, node
        return None

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.strip("/")
        node = self._group.get_node(prefix)
        if isinstance(node, ManifestGroup):
            yield _METADATA_KEY
            for name in (*node.arrays, *node.groups):
                yield name
            return
        if (
            isinstance(node, ManifestArray)
            and isinstance(node.metadata.chunk_key_encoding, DefaultChunkKeyEncoding)
            and node.metadata.chunk_key_encoding.separator == "/"
        ):
            # The usual layout: every chunk key starts with "c/"; no need to list them.
            yield _METADATA_KEY
            if node.manifest.nrefs or node.manifest.ninline:
                yield "c"
            return
        # Below an array (or an array with another key encoding): list its chunk keys.
        owner = self._owning_array(prefix)
        if owner is None:
            return
        if owner[0] == prefix:
            yield _METADATA_KEY
        seen: set[str] = set()
        base = f"{prefix}/"
        for key in _chunk_keys(*owner):
            if key.startswith(base):
                child = key[len(base) :].split("/", 1)[0]
                if child not in seen:
                    seen.add(child)
                    yield child


def _decode_chunk_key(array: ManifestArray, text: str) -> tuple[int, ...] | None:
    """The chunk position a key names, or None if it names no chunk of ``array``."""
    encoding = array.metadata.chunk_key_encoding
    try:
        index = tuple(int(i) for i in encoding.decode_chunk_key(text))
    except (ValueError, TypeError):
        return None
    if array.ndim == 0 and index in ((), (0,)):
        index = ()
    if len(index) != array.ndim or any(i < 0 for i in index):
        return None
    # Refuse spellings zarr never writes ("c/01", "c/+1"): the key must round-trip.
    if encoding.encode_chunk_key(index) != text:
        return None
    return index


def _chunk_keys(path: str, array: ManifestArray) -> Iterable[str]:
    """The keys of the chunks of ``array`` that have bytes (referenced or inline)."""
    encoding = array.metadata.chunk_key_encoding
    base = f"{path}/" if path else ""
    for index in np.argwhere(array.manifest.path_ids != MISSING):
        yield base + encoding.encode_chunk_key(tuple(int(i) for i in index))


def _slice(data: bytes, byte_range: ByteRequest | None) -> bytes:
    if byte_range is None:
        return data
    start, length = _narrow(0, len(data), byte_range)
    return data[start : start + length]


def _narrow(start: int, length: int, byte_range: ByteRequest | None) -> tuple[int, int]:
    """Apply a zarr byte request to the range ``[start, start + length)``."""
    if byte_range is None:
        return start, length
    if isinstance(byte_range, RangeByteRequest):
        begin = min(byte_range.start, length)
        end = min(byte_range.end, length)
        return start + begin, max(end - begin, 0)
    if isinstance(byte_range, OffsetByteRequest):
        begin = min(byte_range.offset, length)
        return start + begin, length - begin
    if isinstance(byte_range, SuffixByteRequest):
        take = min(byte_range.suffix, length)
        return start + length - take, take
    raise TypeError(f"unexpected byte request {byte_range!r}")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
