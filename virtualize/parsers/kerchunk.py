"""Kerchunk references (JSON or Parquet) as virtual arrays.

A Kerchunk reference set maps the keys of a Zarr store to metadata documents, byte ranges of
other files (``[url, offset, length]``, or ``[url]`` for a whole file) and inline bytes
(https://fsspec.github.io/kerchunk/spec.html). :class:`KerchunkParser` turns one into a
:class:`~virtualize.ManifestStore`: Zarr v2 metadata becomes zarr v3 metadata (numcodecs
compressor and filters become ``numcodecs.*`` codecs after a ``bytes`` codec with the dtype's
byte order; ``_ARRAY_DIMENSIONS`` becomes the dimension names; the v2 fill value, which
xarray uses as ``_FillValue``, becomes both the fill value and the attribute), so that
``xr.open_zarr(store)`` reads what xarray reads from the references themselves.

Every referenced url is checked against the :class:`~virtualize.ObjectStoreRegistry` when
the references are parsed: a reference set written by someone else can't make virtualize
read a location the user did not register (relative paths and ``..`` are resolved first).
"""

from __future__ import annotations

import base64
import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import obstore
from zarr.abc.codec import ArrayArrayCodec, BytesBytesCodec
from zarr.codecs import BytesCodec, TransposeCodec, VLenBytesCodec, VLenUTF8Codec
from zarr.core.dtype import get_data_type_from_native_dtype
from zarr.core.dtype.npy.bytes import VariableLengthBytes
from zarr.core.dtype.npy.string import VariableLengthUTF8
from zarr.core.metadata.v2 import ArrayV2Metadata
from zarr.core.metadata.v3 import ArrayV3Metadata

from virtualize.errors import (
    InvalidFileError,
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
from virtualize.parsers.attributes import encode_fill_value
from virtualize.registry import ObjectStoreRegistry, normalize_url, sibling_url
from virtualize.store import ManifestStore

__all__ = ["KerchunkParser"]

_V2_METADATA = (".zarray", ".zattrs", ".zgroup", ".zmetadata")
_TEMPLATE = re.compile(r"\{\{(\w+)\}\}")
_REF, _WHOLE, _INLINE, _NONE = 0, 1, 2, 3


class KerchunkParser:
    """Parse Kerchunk references (JSON, or a Parquet reference directory) into virtual arrays.

    Parameters
    ----------
    group
        The group of the reference set to open (the root by default); its subgroups are
        parsed too.
    drop_variables
        Arrays of the opened group to leave out. For Parquet references their record files
        are never read.
    fs_root
        The folder (a url or local path) that relative reference paths are relative to. By
        default they are relative to the folder that holds the reference file (or the
        Parquet reference directory).

    Notes
    -----
    Reference set versions 0 and 1 are read, with ``templates`` expanded (``{{name}}``
    substitutions; jinja expressions are refused). ``gen`` entries, which fsspec ignores
    unless jinja is enabled, are refused with
    :class:`~virtualize.errors.UnsupportedFeatureError` rather than silently dropped.

    Examples
    --------
    >>> store = KerchunkParser()("file:///data/refs.json", registry)  # doctest: +SKIP
    >>> ds = xr.open_zarr(store, consolidated=False, zarr_format=3)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        group: str | None = None,
        drop_variables: Iterable[str] | None = None,
        fs_root: str | None = None,
    ) -> None:
        self.group = group
        self.drop_variables = frozenset(drop_variables or ())
        self.fs_root = fs_root

    def __repr__(self) -> str:
        return (
            f"KerchunkParser(group={self.group!r}, "
            f"drop_variables={sorted(self.drop_variables)!r}, fs_root={self.fs_root!r})"
        )

    def __call__(self, url: str, registry: ObjectStoreRegistry) -> ManifestStore:
        """Parse the references at ``url`` and return a :class:`~virtualize.ManifestStore`.

        Raises
        ------
        UnauthorizedLocationError
            If the reference file, or any location it references, is under no registered
            prefix.
        InvalidFileError
            If the references are malformed.
        UnsupportedFeatureError
            For ``gen`` entries, jinja templates, or codecs with no zarr v3 equivalent.
        """
        url = normalize_url(url).rstrip("/")
        store, path = registry.resolve(url)
        try:
            obstore.head(store, path)
            is_file = True
        except FileNotFoundError:
            is_file = False
        except Exception as error:
            raise InvalidFileError(f"cannot read the references: {error}", url=url) from error
        if is_file:
            source: _Source = _JSONSource.read(url, store, path)
        else:
            source = _ParquetSource.read(url, registry)
        base = _base_folder(url, self.fs_root)
        context = _Context(self, source, registry, url, base)
        return ManifestStore(context.build(), registry=registry)


# -- where the references come from ------------------------------------------------------------


@dataclass
class _Chunks:
    """One array's chunk references, columnar, before urls are resolved."""

    path_ids: npt.NDArray[np.int64]  # per chunk: raw url id, -1 missing, -2 inline
    offsets: npt.NDArray[np.uint64]
    lengths: npt.NDArray[np.uint64]
    whole: npt.NDArray[np.bool_]  # references to whole files (length from the store)
    inline: dict[int, bytes] = field(default_factory=dict)


class _Source(ABC):
    """Metadata documents by key, and the chunks of an array on request."""

    url: str
    metadata: dict[str, Any]
    templates: dict[str, str]

    raw_urls: list[str]

    def prepare(self, arrays: Iterable[str]) -> None:
        """Get ready to be asked for the chunks of ``arrays`` (JSON has nothing to do)."""
        return None

    @abstractmethod
    def chunks(self, array_path: str, grid: tuple[int, ...], keys: _KeySpelling) -> _Chunks:
        """The references of one array's chunks."""


def _decode_document(value: Any, url: str, key: str) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        if value.startswith("base64:"):
            value = base64.b64decode(value[7:]).decode()
        try:
            return json.loads(value)
        except ValueError as error:
            raise InvalidFileError(f"{key!r} is not a JSON document", url=url) from error
    raise InvalidFileError(f"{key!r} is not a metadata document", url=url)


_METADATA_SUFFIXES = tuple(
    [f"/{name}" for name in (*_V2_METADATA, "zarr.json")] + [*_V2_METADATA, "zarr.json"]
)


def _is_metadata_key(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name in _V2_METADATA or name == "zarr.json"


def _load_json(data: bytes) -> Any:
    try:
        import ujson
    except ImportError:  # pragma: no cover - ujson comes with kerchunk
        return json.loads(data)
    try:
        return ujson.loads(data)
    except ValueError:  # NaN and the like, which ujson refuses and json reads
        return json.loads(data)


class _JSONSource(_Source):
    def __init__(self, url: str, refs: dict[str, Any], templates: dict[str, str]) -> None:
        self.url = url
        self.templates = templates
        self.metadata = {}
        self.raw_urls = []
        self._url_ids: dict[str, int] = {}
        metadata_keys = [
            key for key in refs if key.endswith(_METADATA_SUFFIXES) and _is_metadata_key(key)
        ]
        for key in metadata_keys:
            if not key.endswith(".zmetadata"):
                self.metadata[key] = _decode_document(refs[key], url, key)
        self._metadata_keys = frozenset(metadata_keys)
        self._chunk_refs = refs
        self._buckets: dict[str, tuple[list[str], list[Any]]] | None = None

    @classmethod
    def read(cls, url: str, store: Any, path: str) -> _JSONSource:
        try:
            data = obstore.get(store, path).bytes()
        except Exception as error:
            raise InvalidFileError(f"cannot read the references: {error}", url=url) from error
        try:
            document = _load_json(memoryview(data).tobytes())
        except ValueError as error:
            raise InvalidFileError(
                "not Kerchunk JSON references (the file is not JSON)", url=url
            ) from error
        if not isinstance(document, dict):
            raise InvalidFileError("not Kerchunk references (not a JSON object)", url=url)
        version = document.get("version")
        if version is None:
            return cls(url, document, {})
        if version != 1:
            raise InvalidFileError(f"unknown Kerchunk reference version {version!r}", url=url)
        if document.get("gen"):
            raise UnsupportedFeatureError(
                "the references generate keys with 'gen', which virtualize does not expand "
                "(fsspec itself ignores them unless jinja is enabled)",
                url=url,
                hint="Expand them into 'refs' with kerchunk or fsspec first",
            )
        templates = document.get("templates") or {}
        if not isinstance(templates, dict) or not all(
            isinstance(v, str) for v in templates.values()
        ):
            raise InvalidFileError("'templates' must map names to strings", url=url)
        for name, value in templates.items():
            if "{{" in value:
                raise UnsupportedFeatureError(
                    f"template {name!r} is a jinja expression, which virtualize does not evaluate",
                    url=url,
                )
        refs = document.get("refs")
        if not isinstance(refs, dict):
            raise InvalidFileError("version 1 references need a 'refs' object", url=url)
        return cls(url, refs, dict(templates))

    def prepare(self, arrays: Iterable[str]) -> None:
        """Group the chunk keys and values by the array they belong to, in one pass."""
        known = set(arrays)
        buckets: dict[str, tuple[list[str], list[Any]]] = {a: ([], []) for a in known}
        skip = self._metadata_keys
        for key, value in self._chunk_refs.items():
            head, _, tail = key.rpartition("/")
            bucket = buckets.get(head)
            if bucket is None or key in skip:
                if key in skip:
                    continue
                parts = key.split("/")
                for split in range(len(parts) - 1, 0, -1):
                    candidate = "/".join(parts[:split])
                    if candidate in known:
                        bucket, tail = buckets[candidate], "/".join(parts[split:])
                        break
                else:
                    continue  # a key of no parsed array (another file, a dropped array)
            bucket[0].append(tail)
            bucket[1].append(value)
        self._buckets = buckets

    def chunks(self, array_path: str, grid: tuple[int, ...], keys: _KeySpelling) -> _Chunks:
        assert self._buckets is not None
        suffixes, values = self._buckets.pop(array_path, ([], []))
        count = int(np.prod(grid, dtype=np.int64))
        path_ids = np.full(count, -1, dtype=np.int64)
        offsets = np.zeros(count, dtype=np.uint64)
        lengths = np.zeros(count, dtype=np.uint64)
        whole = np.zeros(count, dtype=bool)
        inline: dict[int, bytes] = {}
        if not suffixes:
            return _Chunks(path_ids, offsets, lengths, whole, inline)
        flat = keys.flat_indices(suffixes, grid, self.url, array_path)
        columns = _byte_range_columns(values)
        if columns is not None:
            # the usual case: every value is [url, offset, length]
            urls, starts, sizes = columns
            path_ids[flat] = self._url_id_array(urls)
            offsets[flat] = starts
            lengths[flat] = sizes
            return _Chunks(path_ids, offsets, lengths, whole, inline)
        kinds, urls, starts, sizes = _classify(values, self.url, array_path)
        ids = self._url_id_array(urls)
        refs = kinds == _REF
        wholes = kinds == _WHOLE
        real = refs | wholes
        path_ids[flat[real]] = ids[real]
        offsets[flat[refs]] = starts[refs]
        lengths[flat[refs]] = sizes[refs]
        whole[flat[wholes]] = True
        for position in np.flatnonzero(kinds == _INLINE).tolist():
            path_ids[flat[position]] = -2
            inline[int(flat[position])] = _inline_bytes(values[position])
        return _Chunks(path_ids, offsets, lengths, whole, inline)

    def _url_id_array(self, urls: list[Any]) -> npt.NDArray[np.int64]:
        table = self._url_ids
        raw = self.raw_urls

        def url_id(url: Any) -> int:
            if url is None:
                return -1
            found = table.get(url)
            if found is None:
                if not isinstance(url, str):
                    raise InvalidFileError(f"chunk url {url!r} is not a string", url=self.url)
                found = table[url] = len(raw)
                raw.append(url)
            return found

        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas comes with the kerchunk extra
            return np.fromiter(map(url_id, urls), dtype=np.int64, count=len(urls))
        codes, uniques = pd.factorize(np.array(urls, dtype=object), use_na_sentinel=True)
        lookup = np.array([url_id(u) for u in uniques.tolist()] + [-1], dtype=np.int64)
        return lookup[np.asarray(codes, dtype=np.int64)]


def _byte_range_columns(
    values: list[Any],
) -> tuple[list[Any], npt.NDArray[np.uint64], npt.NDArray[np.uint64]] | None:
    """Columns of urls, offsets and lengths when every value is ``[url, offset, length]``
    with integer offsets and lengths; None otherwise (the caller then looks at each)."""
    try:
        table = np.array(values, dtype=object)
    except ValueError:
        return None
    if table.ndim != 2 or table.shape[1] != 3:
        return None
    try:
        starts = table[:, 1].astype(np.int64)
        sizes = table[:, 2].astype(np.int64)
    except (TypeError, ValueError, OverflowError):
        return None
    if not set(map(type, table[:, 1:].ravel().tolist())) <= {int}:
        return None
    if bool((starts < 0).any() or (sizes < 0).any()):
        return None
    return table[:, 0].tolist(), starts.astype(np.uint64), sizes.astype(np.uint64)


def _classify(
    values: list[Any], url: str, array_path: str
) -> tuple[npt.NDArray[np.int8], list[str | None], npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """Split chunk values into references, whole-file references and inline data."""
    count = len(values)
    kinds = np.empty(count, dtype=np.int8)
    urls: list[str | None] = [None] * count
    starts = np.zeros(count, dtype=np.uint64)
    sizes = np.zeros(count, dtype=np.uint64)
    for position, value in enumerate(values):
        if isinstance(value, list):
            if len(value) == 3 and isinstance(value[0], str):
                start, size = value[1], value[2]
                if type(start) is not int or type(size) is not int or start < 0 or size < 0:
                    raise InvalidFileError(
                        f"chunk reference {value!r} has no valid byte range",
                        url=url,
                        variable=array_path,
                    )
                kinds[position] = _REF
                urls[position] = value[0]
                starts[position] = start
                sizes[position] = size
                continue
            if len(value) == 1 and isinstance(value[0], str):
                kinds[position] = _WHOLE
                urls[position] = value[0]
                continue
            if len(value) == 1 and value[0] is None:
                kinds[position] = _NONE
                continue
            raise InvalidFileError(
                f"malformed chunk reference {value!r}", url=url, variable=array_path
            )
        if isinstance(value, str | bytes):
            kinds[position] = _INLINE
            continue
        raise InvalidFileError(f"malformed chunk reference {value!r}", url=url, variable=array_path)
    return kinds, urls, starts, sizes


def _inline_bytes(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else bytes(value)
    if data.startswith(b"base64:"):
        return base64.b64decode(data[7:])
    return data


class _ParquetSource(_Source):
    """A Parquet reference directory: ``.zmetadata`` and ``<field>/refs.<n>.parq`` files,
    read one record file at a time, only for the arrays that are parsed."""

    def __init__(self, url: str, registry: ObjectStoreRegistry, document: dict[str, Any]):
        self.url = url
        self.templates = {}
        self.raw_urls = []
        self._url_ids: dict[str, int] = {}
        self._registry = registry
        metadata = document.get("metadata")
        record_size = document.get("record_size")
        if not isinstance(metadata, dict) or not isinstance(record_size, int) or record_size < 1:
            raise InvalidFileError(
                ".zmetadata needs 'metadata' and a positive 'record_size'", url=url
            )
        self.record_size = record_size
        self.metadata = {
            key: _decode_document(value, url, key)
            for key, value in metadata.items()
            if not key.endswith(".zmetadata")
        }

    @classmethod
    def read(cls, url: str, registry: ObjectStoreRegistry) -> _ParquetSource:
        zmetadata = f"{url}/.zmetadata"
        store, path = registry.resolve(zmetadata)
        try:
            data = obstore.get(store, path).bytes()
        except FileNotFoundError as error:
            raise InvalidFileError(
                "no such file, and not a Kerchunk Parquet reference directory (no .zmetadata)",
                url=url,
            ) from error
        except Exception as error:
            raise InvalidFileError(f"cannot read the references: {error}", url=url) from error
        try:
            document = json.loads(memoryview(data).tobytes())
        except ValueError as error:
            raise InvalidFileError(".zmetadata is not JSON", url=url) from error
        if not isinstance(document, dict):
            raise InvalidFileError(".zmetadata is not a JSON object", url=url)
        return cls(url, registry, document)

    def chunks(self, array_path: str, grid: tuple[int, ...], keys: _KeySpelling) -> _Chunks:
        parts = array_path.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise InvalidFileError(
                f"array path {array_path!r} can't name a folder of record files", url=self.url
            )
        # fsspec counts a 0-d array as one chunk, and so does the manifest
        count = int(np.prod(grid, dtype=np.int64))
        path_ids = np.full(count, -1, dtype=np.int64)
        offsets = np.zeros(count, dtype=np.uint64)
        lengths = np.zeros(count, dtype=np.uint64)
        whole = np.zeros(count, dtype=bool)
        inline: dict[int, bytes] = {}
        size = self.record_size
        for record in range(math.ceil(count / size)):
            columns = self._read_record(f"{self.url}/{array_path}/refs.{record}.parq", array_path)
            if columns is None:
                continue  # kerchunk writes no file for a record without references
            start = record * size
            rows = min(size, count - start)
            ids, record_urls, starts, sizes, raw = columns
            if ids.size < rows:
                raise InvalidFileError(
                    f"record file {record} holds {ids.size} rows, fewer than the {rows} "
                    "chunks it covers",
                    url=self.url,
                    variable=array_path,
                )
            ids, starts, sizes = ids[:rows], starts[:rows], sizes[:rows]
            lookup = self._url_id_array(record_urls)
            present = ids >= 0
            if bool(((starts < 0) | (sizes < 0))[present].any()):
                raise InvalidFileError(
                    f"record file {record} has negative offsets or sizes",
                    url=self.url,
                    variable=array_path,
                )
            global_ids = np.where(present, lookup[np.where(present, ids, 0)], -1)
            window = slice(start, start + rows)
            path_ids[window] = global_ids
            offsets[window] = np.where(present, starts, 0).astype(np.uint64)
            lengths[window] = np.where(present, sizes, 0).astype(np.uint64)
            # fsspec: a path with offset and size both 0 references the whole file
            whole[window] = present & (starts == 0) & (sizes == 0)
            for row, data in raw.items():
                if row < rows:
                    path_ids[start + row] = -2
                    whole[start + row] = False
                    inline[start + row] = _inline_bytes(data)
        return _Chunks(path_ids, offsets, lengths, whole, inline)

    def _url_id_array(self, urls: list[str]) -> npt.NDArray[np.int64]:
        ids = np.empty(max(len(urls), 1), dtype=np.int64)
        for position, url in enumerate(urls):
            found = self._url_ids.get(url)
            if found is None:
                found = self._url_ids[url] = len(self.raw_urls)
                self.raw_urls.append(url)
            ids[position] = found
        return ids

    def _read_record(
        self, url: str, array_path: str
    ) -> (
        tuple[
            npt.NDArray[np.int64],
            list[str],
            npt.NDArray[np.int64],
            npt.NDArray[np.int64],
            dict[int, bytes],
        ]
        | None
    ):
        """A record file's columns: per row the index of its path in a table of the
        record's distinct paths (-1 for none), the table, offsets, sizes, and raw bytes by
        row. None if the file does not exist."""
        store, path = self._registry.resolve(url)
        try:
            data = obstore.get(store, path).bytes()
        except FileNotFoundError:
            return None
        except Exception as error:
            raise InvalidFileError(
                f"cannot read record file {url}: {error}", url=self.url, variable=array_path
            ) from error
        try:
            return _record_columns(memoryview(data).tobytes())
        except Exception as error:
            raise InvalidFileError(
                f"record file {url} is not a Kerchunk Parquet record: {error}",
                url=self.url,
                variable=array_path,
            ) from error


def _record_columns(
    data: bytes,
) -> tuple[
    npt.NDArray[np.int64], list[str], npt.NDArray[np.int64], npt.NDArray[np.int64], dict[int, bytes]
]:
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        return _record_columns_pandas(data)
    table = pq.read_table(pa.BufferReader(data))
    rows = table.num_rows
    names = set(table.column_names)
    if "path" in names:
        column = table.column("path").combine_chunks()
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        encoded = pc.dictionary_encode(column)
        ids = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        table_urls = [str(u) for u in encoded.dictionary.to_pylist()]
    else:
        ids = np.full(rows, -1, dtype=np.int64)
        table_urls = []
    starts = _int_column(table, "offset", rows, pc)
    sizes = _int_column(table, "size", rows, pc)
    raw: dict[int, bytes] = {}
    if "raw" in names:
        column = table.column("raw").combine_chunks()
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        for row in np.flatnonzero(valid).tolist():
            value = column[row].as_py()
            raw[row] = value.encode() if isinstance(value, str) else bytes(value)
    return ids, table_urls, starts, sizes, raw


def _int_column(table: Any, name: str, rows: int, pc: Any) -> npt.NDArray[np.int64]:
    if name not in table.column_names:
        return np.zeros(rows, dtype=np.int64)
    column = table.column(name).combine_chunks().fill_null(0)
    return np.asarray(column.to_numpy(zero_copy_only=False)).astype(np.int64)


def _record_columns_pandas(
    data: bytes,
) -> tuple[
    npt.NDArray[np.int64], list[str], npt.NDArray[np.int64], npt.NDArray[np.int64], dict[int, bytes]
]:
    """The same with pandas (and fastparquet) when pyarrow is not installed."""
    import io

    import pandas as pd

    frame = pd.read_parquet(io.BytesIO(data))
    rows = len(frame)
    if "path" in frame:
        codes, uniques = pd.factorize(frame["path"], use_na_sentinel=True)
        ids = np.asarray(codes, dtype=np.int64)
        table_urls = [str(u) for u in uniques]
    else:
        ids, table_urls = np.full(rows, -1, dtype=np.int64), []

    def integers(name: str) -> npt.NDArray[np.int64]:
        if name not in frame:
            return np.zeros(rows, dtype=np.int64)
        return np.asarray(frame[name].fillna(0).to_numpy()).astype(np.int64)

    raw: dict[int, bytes] = {}
    if "raw" in frame:
        for row, value in enumerate(frame["raw"].tolist()):
            if isinstance(value, bytes | str):
                raw[row] = value.encode() if isinstance(value, str) else value
    return ids, table_urls, integers("offset"), integers("size"), raw


# -- chunk keys --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _KeySpelling:
    """How the chunk keys of one array are spelled in the references."""

    prefix: str
    separator: str
    scalar: tuple[str, ...]

    def flat_indices(
        self, suffixes: list[str], grid: tuple[int, ...], url: str, array_path: str
    ) -> npt.NDArray[np.intp]:
        """Flat chunk-grid positions of chunk keys (relative to their array)."""
        count = len(suffixes)
        if not grid:
            if any(s not in self.scalar for s in suffixes):
                bad = next(s for s in suffixes if s not in self.scalar)
                raise InvalidFileError(
                    f"chunk key {bad!r} does not name the chunk of a 0-d array",
                    url=url,
                    variable=array_path,
                )
            return np.zeros(count, dtype=np.intp)
        prefix = self.prefix
        if prefix and not all(s.startswith(prefix) for s in suffixes):
            bad = next(s for s in suffixes if not s.startswith(prefix))
            raise InvalidFileError(f"malformed chunk key {bad!r}", url=url, variable=array_path)
        text = self.separator.join(suffixes)
        if prefix:
            text = text[len(prefix) :].replace(self.separator + prefix, self.separator)
        parts = text.split(self.separator)
        ndim = len(grid)
        numbers = _canonical_integers(parts) if len(parts) == count * ndim else None
        if numbers is None:
            bad = next(
                (s for s in suffixes if not _is_canonical_key(s, prefix, self.separator, ndim)),
                suffixes[0],
            )
            raise InvalidFileError(
                f"malformed chunk key {bad!r} for a {ndim}-d chunk grid",
                url=url,
                variable=array_path,
            )
        indices = numbers.reshape(count, ndim)
        if bool((indices >= np.asarray(grid, dtype=np.int64)).any()):
            row = int(np.flatnonzero((indices >= np.asarray(grid)).any(axis=1))[0])
            raise InvalidFileError(
                f"chunk key {suffixes[row]!r} lies outside the chunk grid {grid}",
                url=url,
                variable=array_path,
            )
        flat = np.ravel_multi_index(tuple(indices.T), grid)
        return np.asarray(flat, dtype=np.intp)


_POWERS_OF_TEN = np.array([10**i for i in range(1, 19)], dtype=np.int64)


def _canonical_integers(parts: list[str]) -> npt.NDArray[np.int64] | None:
    """The integers spelled by ``parts``, or None unless every part is a non-negative
    decimal without sign, spaces, underscores or leading zeros (the only spelling zarr asks
    for)."""
    if not all(map(str.isascii, parts)):
        return None
    try:
        numbers = np.fromiter(map(int, parts), dtype=np.int64, count=len(parts))
    except (ValueError, OverflowError):
        return None
    if bool((numbers < 0).any()):
        return None
    digits = 1 + np.searchsorted(_POWERS_OF_TEN, numbers, side="right")
    lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    if not np.array_equal(lengths, digits):
        return None
    return numbers


def _is_canonical_key(key: str, prefix: str, separator: str, ndim: int) -> bool:
    if not key.startswith(prefix):
        return False
    parts = key[len(prefix) :].split(separator)
    return len(parts) == ndim and _canonical_integers(parts) is not None


def _v2_spelling(separator: str) -> _KeySpelling:
    return _KeySpelling(prefix="", separator=separator, scalar=("0", ""))


def _v3_spelling(metadata: ArrayV3Metadata) -> _KeySpelling:
    encoding = metadata.chunk_key_encoding.to_dict()
    configuration = cast(dict[str, Any], encoding.get("configuration") or {})
    if encoding.get("name") == "v2":
        return _v2_spelling(str(configuration.get("separator", ".")))
    separator = str(configuration.get("separator", "/"))
    return _KeySpelling(prefix="c" + separator, separator=separator, scalar=("c",))


# -- building the group ------------------------------------------------------------------------


def _base_folder(url: str, fs_root: str | None) -> str:
    """A url inside the folder relative reference paths are resolved against."""
    if fs_root is not None:
        return normalize_url(fs_root).rstrip("/") + "/_"
    return url


class _Context:
    def __init__(
        self,
        parser: KerchunkParser,
        source: _Source,
        registry: ObjectStoreRegistry,
        url: str,
        base: str,
    ) -> None:
        self.parser = parser
        self.source = source
        self.registry = registry
        self.url = url
        self.base = base

    def build(self) -> ManifestGroup:
        metadata = self.source.metadata
        arrays: dict[str, tuple[int, Any]] = {}
        groups: dict[str, dict[str, Any]] = {"": {}}
        for key, document in metadata.items():
            node, _, name = key.rpartition("/")
            if name == ".zarray":
                arrays[node] = (2, document)
            elif name == ".zgroup":
                groups.setdefault(node, {})
            elif name == "zarr.json":
                kind = document.get("node_type") if isinstance(document, dict) else None
                if kind == "array":
                    arrays[node] = (3, document)
                elif kind == "group":
                    groups[node] = dict(document.get("attributes") or {})
        for key, document in metadata.items():
            node, _, name = key.rpartition("/")
            if name == ".zattrs" and node in groups and node not in arrays:
                if not isinstance(document, dict):
                    raise InvalidFileError(f"{key!r} is not a JSON object", url=self.url)
                groups[node] = {**groups[node], **document}
        # groups that are only implied by the paths of arrays
        for path in [*arrays, *groups]:
            parts = path.split("/") if path else []
            for depth in range(len(parts)):
                groups.setdefault("/".join(parts[:depth]), {})

        root = "/".join(p for p in (self.parser.group or "").split("/") if p)
        if root and root not in groups:
            raise InvalidFileError(
                f"no group {root!r}",
                url=self.url,
                hint=f"Groups here: {sorted(g for g in groups if g)}",
            )
        prefix = f"{root}/" if root else ""
        selected = {
            path: spec
            for path, spec in arrays.items()
            if (path.startswith(prefix) or not root)
            and not (
                path[len(prefix) :] in self.parser.drop_variables and "/" not in path[len(prefix) :]
            )
        }
        self.source.prepare(selected)
        pending = {path: self.array(path, *spec) for path, spec in selected.items()}
        self.check_urls()
        built = {path: self.finish(array) for path, array in pending.items()}
        return self.assemble(root, groups, built)

    def assemble(
        self,
        root: str,
        groups: dict[str, dict[str, Any]],
        arrays: dict[str, ManifestArray],
    ) -> ManifestGroup:
        nodes = {path: ManifestGroup(attributes=attrs) for path, attrs in groups.items()}
        for path in sorted(nodes, key=lambda p: p.count("/") if p else -1):
            if not path:
                continue
            parent, _, name = path.rpartition("/")
            nodes[parent].groups[name] = nodes[path]
        for path, array in arrays.items():
            parent, _, name = path.rpartition("/")
            nodes[parent].arrays[name] = array
        for node in nodes.values():
            for name in set(node.groups) & set(node.arrays):
                raise InvalidFileError(f"{name!r} is both a group and an array", url=self.url)
        return nodes[root]

    # -- arrays ---------------------------------------------------------------------------

    def array(self, path: str, zarr_format: int, document: Any) -> _PendingArray:
        if zarr_format == 2:
            attributes = self.source.metadata.get(f"{path}/.zattrs", {}) if path else {}
            if not isinstance(attributes, dict):
                raise InvalidFileError(f"{path}/.zattrs is not a JSON object", url=self.url)
            metadata, separator = _v3_from_v2(document, attributes, self.url, path)
            spelling = _v2_spelling(separator)
        else:
            try:
                metadata = ArrayV3Metadata.from_dict(document)
            except Exception as error:
                raise InvalidFileError(
                    f"invalid zarr.json: {error}", url=self.url, variable=path
                ) from error
            spelling = _v3_spelling(metadata)
        chunk_shape = getattr(metadata.chunk_grid, "chunk_shape", None)
        if chunk_shape is None:
            raise UnsupportedFeatureError(
                "only regular chunk grids are supported", url=self.url, variable=path
            )
        grid = tuple(-(-int(n) // int(c)) for n, c in zip(metadata.shape, chunk_shape, strict=True))
        chunks = self.source.chunks(path, grid, spelling)
        return _PendingArray(metadata, grid, chunks, path)

    def check_urls(self) -> None:
        """Resolve every distinct url (templates, relative paths, ``..``) and check that the
        registry authorises it; refuse the references otherwise."""
        resolved: list[str] = []
        for raw in self.source.raw_urls:
            expanded = self.expand(raw)
            url = self.absolute(expanded)
            try:
                self.registry.resolve(url)
            except UnauthorizedLocationError as error:
                raise UnauthorizedLocationError(
                    f"the references point at {raw!r} ({url}), which is not under a "
                    "registered location, so they are refused",
                    url=self.url,
                    hint=(
                        "Register that location with ObjectStoreRegistry.register(prefix, "
                        "store) if you trust these references"
                    ),
                ) from error
            resolved.append(url)
        self.table, self.lookup = _url_table(resolved)

    def expand(self, raw: str) -> str:
        templates = self.source.templates
        if "{{" not in raw:
            return raw

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in templates:
                raise InvalidFileError(
                    f"reference {raw!r} uses the undefined template {name!r}", url=self.url
                )
            return templates[name]

        expanded = _TEMPLATE.sub(substitute, raw)
        if "{{" in expanded:
            raise UnsupportedFeatureError(
                f"reference {raw!r} uses a jinja expression, which virtualize does not evaluate",
                url=self.url,
            )
        return expanded

    def absolute(self, raw: str) -> str:
        scheme = raw.split("://", 1)[0] if "://" in raw else ""
        # "~/x" is a home folder to fsspec, which wrote these references: read it as one (and
        # so refuse it unless the home folder is registered), not as a folder named "~".
        if len(scheme) > 1 or raw.startswith(("/", "~")):
            try:
                return normalize_url(raw)
            except ValueError as error:
                raise UnauthorizedLocationError(
                    f"the references point at {raw!r}, which is not a valid location",
                    url=self.url,
                ) from error
        return sibling_url(self.base, raw)

    def finish(self, pending: _PendingArray) -> ManifestArray:
        """The array's manifest, with its url ids translated into resolved urls."""
        chunks = pending.chunks
        ids = chunks.path_ids
        real = ids >= 0
        resolved_ids = self.lookup[ids[real]]
        # this array's own url table: the urls its chunks use, each once
        used, compact = np.unique(resolved_ids, return_inverse=True)
        table = [self.table[int(i)] for i in used]
        path_ids = np.full(ids.shape, MISSING, dtype=np.uint32)
        path_ids[real] = compact.astype(np.uint32)
        path_ids[ids == -2] = INLINE
        offsets = np.where(real, chunks.offsets, np.uint64(0)).astype(np.uint64)
        lengths = np.where(real, chunks.lengths, np.uint64(0)).astype(np.uint64)
        sizes: dict[int, int] = {}
        for position in np.flatnonzero(chunks.whole & real).tolist():
            url_id = int(path_ids[position])
            if url_id not in sizes:
                sizes[url_id] = _object_size(self.registry, table[url_id], self.url)
            offsets[position] = 0
            lengths[position] = sizes[url_id]
        manifest = ChunkManifest(
            table,
            path_ids.reshape(pending.grid),
            offsets.reshape(pending.grid),
            lengths.reshape(pending.grid),
            inline=chunks.inline,
        )
        return ManifestArray(pending.metadata, manifest)


@dataclass
class _PendingArray:
    """An array whose chunk urls are not resolved yet."""

    metadata: ArrayV3Metadata
    grid: tuple[int, ...]
    chunks: _Chunks
    path: str


def _url_table(resolved: list[str]) -> tuple[list[str], npt.NDArray[np.uint32]]:
    table: dict[str, int] = {}
    lookup = np.empty(max(len(resolved), 1), dtype=np.uint32)
    for position, url in enumerate(resolved):
        lookup[position] = table.setdefault(url, len(table))
    return list(table), lookup


def _object_size(registry: ObjectStoreRegistry, url: str, references: str) -> int:
    store, path = registry.resolve(url)
    try:
        return int(obstore.head(store, path)["size"])
    except Exception as error:
        raise InvalidFileError(
            f"a reference to the whole of {url} needs its size, and it can't be read: {error}",
            url=references,
        ) from error


# -- Zarr v2 metadata as zarr v3 ---------------------------------------------------------------


def _v3_from_v2(
    zarray: Any, zattrs: dict[str, Any], url: str, path: str
) -> tuple[ArrayV3Metadata, str]:
    """zarr v3 metadata that reads as xarray reads the v2 array, and the v2 key separator."""
    if not isinstance(zarray, dict):
        raise InvalidFileError(".zarray is not a JSON object", url=url, variable=path)
    try:
        v2 = ArrayV2Metadata.from_dict({**zarray, "zarr_format": 2, "attributes": zattrs})
    except Exception as error:
        raise UnsupportedFeatureError(
            f"its .zarray can't be read: {error}", url=url, variable=path
        ) from error
    native = np.dtype(v2.dtype.to_native_dtype())
    filters = list(v2.filters or ())
    codecs: list[Any] = []
    if v2.order == "F" and v2.ndim > 1:
        codecs.append(TransposeCodec(order=tuple(reversed(range(v2.ndim)))))
    if isinstance(v2.dtype, VariableLengthUTF8 | VariableLengthBytes):
        object_codec = filters.pop(0) if filters else None
        codec_id = getattr(object_codec, "codec_id", None)
        if codec_id not in ("vlen-utf8", "vlen-bytes"):
            raise UnsupportedFeatureError(
                f"its object codec {codec_id!r} has no zarr v3 equivalent",
                url=url,
                variable=path,
            )
        data_type: Any = v2.dtype
        serializer: Any = VLenUTF8Codec() if codec_id == "vlen-utf8" else VLenBytesCodec()
    else:
        endian = _byte_order(native, url, path)
        data_type = get_data_type_from_native_dtype(_native_order(native))
        serializer = BytesCodec(endian=endian)
    array_codecs: list[Any] = []
    bytes_codecs: list[Any] = []
    for numcodec in [*filters, *([v2.compressor] if v2.compressor is not None else [])]:
        codec = _v3_codec(numcodec, url, path)
        if isinstance(codec, ArrayArrayCodec):
            if bytes_codecs:
                raise UnsupportedFeatureError(
                    f"its array filter {codec.to_dict()['name']!r} follows a bytes filter, "
                    "which zarr v3 can't order",
                    url=url,
                    variable=path,
                )
            array_codecs.append(codec)
        else:
            bytes_codecs.append(codec)
    codecs.extend([*array_codecs, serializer, *bytes_codecs])

    attributes = {k: v for k, v in zattrs.items() if k != "_ARRAY_DIMENSIONS"}
    dims = zattrs.get("_ARRAY_DIMENSIONS")
    dimension_names = (
        tuple(str(d) for d in dims)
        if isinstance(dims, list) and len(dims) == len(v2.shape)
        else None
    )
    # xarray reads a v2 array's fill value as its _FillValue (it masks with it)
    mask = v2.fill_value if v2.fill_value is not None else attributes.get("_FillValue")
    if mask is not None:
        value = mask.item() if isinstance(mask, np.generic) else mask
        if isinstance(value, str) and native.kind == "S":
            value = value.encode()
        try:
            encoded = encode_fill_value(value, native)
        except (TypeError, ValueError):
            encoded = None
        if encoded is not None:
            attributes["_FillValue"] = encoded
        else:
            attributes.pop("_FillValue", None)
    fill_value = v2.fill_value if v2.fill_value is not None else data_type.default_scalar()
    chunk_shape = tuple(max(int(c), 1) for c in v2.chunks)
    try:
        metadata = ArrayV3Metadata(
            shape=tuple(int(n) for n in v2.shape),
            data_type=data_type,
            chunk_grid={"name": "regular", "configuration": {"chunk_shape": chunk_shape}},
            chunk_key_encoding={"name": "default", "configuration": {"separator": "/"}},
            fill_value=fill_value,
            codecs=codecs,
            attributes=attributes,
            dimension_names=dimension_names,
        )
    except Exception as error:
        raise UnsupportedFeatureError(
            f"its metadata has no zarr v3 form: {error}", url=url, variable=path
        ) from error
    return metadata, str(v2.dimension_separator or ".")


def _byte_order(dtype: np.dtype[Any], url: str, path: str) -> Any:
    orders = _orders(dtype)
    if len(orders) > 1:
        raise UnsupportedFeatureError(
            "its structured dtype mixes byte orders", url=url, variable=path
        )
    if not orders:
        return None
    return "big" if orders.pop() == ">" else "little"


def _orders(dtype: np.dtype[Any]) -> set[str]:
    base = dtype.base
    if base.fields is None:
        order = base.byteorder
        if order == "|":
            return set()
        if order == "=":
            return {"<" if np.little_endian else ">"}
        return {order}
    result: set[str] = set()
    for field_spec in base.fields.values():
        result |= _orders(field_spec[0])
    return result


def _native_order(dtype: np.dtype[Any]) -> np.dtype[Any]:
    return dtype.newbyteorder("=") if _orders(dtype) else dtype


def _v3_codec(numcodec: Any, url: str, path: str) -> Any:
    from zarr.registry import get_codec_class

    config = dict(numcodec.get_config())
    codec_id = str(config.pop("id"))
    try:
        cls = get_codec_class(f"numcodecs.{codec_id}")
    except KeyError:
        cls = None
    if cls is None:
        raise UnsupportedFeatureError(
            f"its codec {codec_id!r} has no zarr v3 equivalent here",
            url=url,
            variable=path,
            hint="Install the package that registers it as a zarr v3 codec, or drop the variable",
        )
    codec = cls.from_dict({"name": f"numcodecs.{codec_id}", "configuration": config})
    if not isinstance(codec, ArrayArrayCodec | BytesBytesCodec):
        raise UnsupportedFeatureError(
            f"its codec {codec_id!r} can't be a zarr v2 filter", url=url, variable=path
        )
    return codec
