"""Reading source files through obstore: a seekable, block-cached file object for metadata.

Format libraries such as h5py want a file object. :class:`ObstoreFile` gives them one over any
obstore store, fetching aligned blocks (several per request) and keeping the most recently used
ones, so that walking a B-tree of 10^6 chunks costs a few large requests rather than thousands
of tiny ones.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import Any

import obstore

from virtualize.errors import InvalidFileError
from virtualize.manifests import SourceInfo
from virtualize.registry import ObjectStoreRegistry

__all__ = ["ObstoreFile", "head"]

DEFAULT_BLOCK_SIZE = 1 << 20
DEFAULT_CACHE_BLOCKS = 64


def head(registry: ObjectStoreRegistry, url: str) -> SourceInfo:
    """What the source at ``url`` looks like now: size, ETag and last-modified time.

    Raises
    ------
    UnauthorizedLocationError
        If ``url`` is not under a registered prefix.
    InvalidFileError
        If the object does not exist or cannot be read.
    """
    store, path = registry.resolve(url)
    try:
        meta = obstore.head(store, path)
    except FileNotFoundError as error:
        raise InvalidFileError(
            "no such file", url=url, hint="Check the path or url and the registry's prefix"
        ) from error
    except Exception as error:
        raise InvalidFileError(
            f"cannot read the file's metadata: {error}",
            url=url,
            hint="Check that the path is a readable file, not a directory, and credentials",
        ) from error
    return SourceInfo(
        size=int(meta["size"]), etag=meta.get("e_tag"), last_modified=meta.get("last_modified")
    )


class ObstoreFile(io.RawIOBase):
    """A read-only, seekable file object over one object of an obstore store.

    Parameters
    ----------
    store
        The obstore store.
    path
        The object's path in ``store``.
    size
        The object's size in bytes (from :func:`head`).
    block_size
        Bytes per cached block; reads are rounded out to whole blocks.
    cache_blocks
        How many blocks to keep.
    """

    def __init__(
        self,
        store: Any,
        path: str,
        size: int,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        cache_blocks: int = DEFAULT_CACHE_BLOCKS,
    ) -> None:
        super().__init__()
        self._store = store
        self._path = path
        self._size = size
        self._block_size = block_size
        self._cache_blocks = max(cache_blocks, 2)
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._position = 0
        self.requests = 0

    @property
    def store(self) -> Any:
        """The obstore store read from."""
        return self._store

    @property
    def path(self) -> str:
        """The object's path in :attr:`store`."""
        return self._path

    @property
    def size(self) -> int:
        """The object's size in bytes."""
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise ValueError("negative seek position")
        self._position = position
        return position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(self._size - self._position, 0))
        if wanted <= 0:
            return 0
        start = self._position
        first = start // self._block_size
        last = (start + wanted - 1) // self._block_size
        self._load(range(first, last + 1))
        written = 0
        for block_index in range(first, last + 1):
            block = self._blocks[block_index]
            self._blocks.move_to_end(block_index)
            block_start = block_index * self._block_size
            begin = max(start, block_start) - block_start
            end = min(start + wanted, block_start + len(block)) - block_start
            view[written : written + end - begin] = block[begin:end]
            written += end - begin
        self._position += written
        return written

    def read_at(self, offset: int, size: int) -> bytes:
        """Read ``size`` bytes at ``offset`` through the cache, leaving the position as it
        was."""
        position = self._position
        try:
            self._position = offset
            return self.read(size)
        finally:
            self._position = position

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(self._size - self._position, 0)
        buffer = bytearray(size)
        count = self.readinto(buffer)
        return bytes(buffer[:count])

    def _load(self, indices: range) -> None:
        needed = [i for i in indices if i not in self._blocks]
        if not needed:
            return
        starts = [i * self._block_size for i in needed]
        lengths = [min(self._block_size, self._size - s) for s in starts]
        try:
            blocks = obstore.get_ranges(self._store, self._path, starts=starts, lengths=lengths)
        except BaseException as error:
            if not is_read_failure(error):
                raise
            raise InvalidFileError(f"reading the file failed: {error}", url=self._path) from error
        self.requests += 1
        for index, block in zip(needed, blocks, strict=True):
            self._blocks[index] = memoryview(block)  # type: ignore[assignment]
        while len(self._blocks) > max(self._cache_blocks, len(indices)):
            self._blocks.popitem(last=False)


def is_read_failure(error: BaseException) -> bool:
    """Whether ``error`` is obstore failing a read: an ``Exception``, or the ``PanicException``
    (a ``BaseException``) its Rust side raises for some ranges past the end of a local file."""
    return isinstance(error, Exception) or type(error).__name__ == "PanicException"


def read_failure_text(error: BaseException) -> str:
    """obstore's message for a failed read without the ``Debug source:`` dump of its Rust
    error, which repeats the message over a dozen lines of an error meant for one line."""
    return str(error).split("\n\nDebug source:", 1)[0].strip()
