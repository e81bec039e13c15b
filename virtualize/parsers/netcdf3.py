"""NetCDF-3 parser: chunk manifests from the classic header, which this module reads itself.

The three classic formats, CDF-1 (classic), CDF-2 (64-bit offset) and CDF-5 (64-bit data),
start with a small big-endian header that lists the dimensions, the attributes and, for each
variable, the file offset of its data; the data that follows is raw big-endian values. The
header is read through obstore (one request, grown if the header is larger), and each variable
becomes a :class:`~virtualize.manifests.ManifestArray` whose chunks are byte ranges of the
file:

- a non-record variable is one contiguous block, cut along its first axis into chunks of at
  most ``max_chunk_bytes`` (a divisor of the axis, so that every chunk is a whole range);
- a record variable has one slab per record, ``recsize`` bytes apart (the sum of every record
  variable's slab, each padded to 4 bytes); in a file with a single record variable the slabs
  follow one another without padding, so consecutive records are grouped into larger chunks;
- ``char`` arrays are bytes ``S1``: xarray's zarr reader stacks their last (string length)
  dimension into fixed-width bytes exactly as its netCDF readers do.

Attributes are stored in the JSON form xarray's zarr reader decodes as ``xr.open_dataset``
shows the file (``char`` attributes as text, ``_FillValue`` encoded, float32 packing as a
codec). References: the netCDF Classic Format Specification (Unidata) and the CDF-5 format
specification (PnetCDF).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import obstore
from zarr.codecs import BytesCodec

from virtualize.errors import InvalidFileError, UnsupportedFeatureError, VirtualizeError
from virtualize.io import head
from virtualize.manifests import ChunkManifest, ManifestArray, ManifestGroup, SourceInfo
from virtualize.parsers.attributes import (
    PACKING_ATTRIBUTES,
    encode_fill_value,
    packing_codec,
    to_json_value,
)
from virtualize.parsers.hdf_common import (
    DEFAULT_MAX_CHUNK_BYTES,
    array_metadata,
    chunk_counts,
    contiguous_manifest,
)
from virtualize.parsers.hdf_types import zarr_data_type
from virtualize.registry import ObjectStoreRegistry, normalize_url
from virtualize.store import ManifestStore

__all__ = ["NetCDF3Parser"]

#: Bytes of the first header request; most headers are a few kilobytes.
DEFAULT_HEADER_BYTES = 64 * 1024

_MAGIC = b"CDF"
_FORMATS = {1: "CDF-1 (classic)", 2: "CDF-2 (64-bit offset)", 5: "CDF-5 (64-bit data)"}
_NC_DIMENSION = 10
_NC_VARIABLE = 11
_NC_ATTRIBUTE = 12
#: Larger counts of bytes are corrupt headers (and would overflow numpy's int64).
_MAX_BYTES = 1 << 62


class _Type(NamedTuple):
    name: str
    dtype: np.dtype[Any]
    #: netCDF's default fill value, used as the zarr fill value when there is no _FillValue.
    fill: Any
    cdf5_only: bool = False


_TYPES = {
    1: _Type("byte", np.dtype("i1"), -127),
    2: _Type("char", np.dtype("S1"), b"\x00"),
    3: _Type("short", np.dtype(">i2"), -32767),
    4: _Type("int", np.dtype(">i4"), -2147483647),
    5: _Type("float", np.dtype(">f4"), 9.9692099683868690e36),
    6: _Type("double", np.dtype(">f8"), 9.9692099683868690e36),
    7: _Type("ubyte", np.dtype("u1"), 255, True),
    8: _Type("ushort", np.dtype(">u2"), 65535, True),
    9: _Type("uint", np.dtype(">u4"), 4294967295, True),
    10: _Type("int64", np.dtype(">i8"), -9223372036854775806, True),
    11: _Type("uint64", np.dtype(">u8"), 18446744073709551614, True),
}


class _Malformed(Exception):
    """The header breaks the format; becomes an :class:`InvalidFileError` naming the file."""

    def __init__(self, reason: str, variable: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.variable = variable


@dataclass(frozen=True, slots=True)
class _Variable:
    name: str
    dimensions: tuple[str, ...]
    #: Dimension lengths; a record variable's first one is the record count.
    shape: tuple[int, ...]
    type: _Type
    attributes: dict[str, Any]
    begin: int
    is_record: bool

    @property
    def slab_bytes(self) -> int:
        """Bytes of the whole variable, or of one record of a record variable (unpadded)."""
        inner = self.shape[1:] if self.is_record else self.shape
        return math.prod(inner) * self.type.dtype.itemsize


@dataclass(frozen=True, slots=True)
class _Header:
    version: int
    #: None when the header says "streaming" (the count was never written).
    numrecs: int | None
    attributes: dict[str, Any]
    variables: list[_Variable]
    #: Where the header ends: every variable's data starts at or after it.
    end: int


class _HeaderReader:
    """The header's fields in order, fetching more of the file whenever it runs out.

    CDF-5 widens every count and length to 8 bytes; CDF-2 and CDF-5 widen offsets.
    """

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, first_bytes: int) -> None:
        self._fetch = fetch
        self._size = size
        self._first = max(first_bytes, 8)
        self._data = bytearray()
        self.position = 0
        self.count_size = 4
        self.offset_size = 4

    def set_version(self, version: int) -> None:
        self.count_size = 8 if version == 5 else 4
        self.offset_size = 4 if version == 1 else 8

    @property
    def remaining(self) -> int:
        """Bytes of the file after the current position."""
        return self._size - self.position

    def take(self, count: int) -> bytes:
        end = self.position + count
        if end > len(self._data):
            self._grow(end)
        data = bytes(self._data[self.position : end])
        self.position = end
        return data

    def _grow(self, end: int) -> None:
        if end > self._size:
            raise _Malformed(
                f"the header is truncated: it needs at least {end:,} bytes and the file has "
                f"{self._size:,}"
            )
        # Doubling keeps a header that outgrows the first request to a few more requests.
        wanted = min(self._size, max(end, 2 * len(self._data), self._first))
        self._data += self._fetch(len(self._data), wanted - len(self._data))

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def int32(self) -> int:
        return int.from_bytes(self.take(4), "big", signed=True)

    def count(self) -> int:
        return self.uint(self.count_size)

    def offset(self) -> int:
        return int.from_bytes(self.take(self.offset_size), "big", signed=True)

    def padded(self, count: int) -> bytes:
        """``count`` bytes followed by the padding to the next multiple of 4."""
        data = self.take(count)
        self.take(-count % 4)
        return data

    def name(self, what: str) -> str:
        length = self.count()
        if length > self.remaining:
            raise _Malformed(f"{what} name of {length:,} bytes runs past the end of the file")
        # netCDF-C holds names as C strings: they end at the first NUL
        raw = self.padded(length).split(b"\0", 1)[0]
        if not raw:
            raise _Malformed(f"{what} name is empty")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise _Malformed(f"{what} name is not valid UTF-8 ({raw!r})") from error

    def list_length(self, tag: int, what: str, smallest_item: int) -> int:
        """The number of items of a header list (0 when it is ABSENT)."""
        at = self.position
        found = self.int32()
        length = self.count()
        if found == 0 and length == 0:
            return 0
        if found != tag:
            raise _Malformed(
                f"expected the {what} list (tag {tag}) or nothing at byte {at}, found tag {found}"
            )
        if length * smallest_item > self.remaining:
            raise _Malformed(f"its header declares {length:,} {what}s, more than the file can hold")
        return length


def _parse_header(reader: _HeaderReader) -> _Header:
    magic = reader.take(4)
    if magic[:3] != _MAGIC:
        raise _Malformed(f"not a netCDF-3 file: it starts with {magic!r}, not b'CDF'")
    version = magic[3]
    if version not in _FORMATS:
        raise _Malformed(
            f"unknown netCDF-3 format version byte {version} (b'CDF' + {magic[3:]!r}); "
            "CDF-1, CDF-2 and CDF-5 are versions 1, 2 and 5"
        )
    reader.set_version(version)
    numrecs: int | None = reader.count()
    if numrecs == (1 << (8 * reader.count_size)) - 1:
        numrecs = None  # streaming: recovered from the file size
    dimensions = _read_dimensions(reader)
    attributes = _read_attributes(reader, version, None)
    variables = _read_variables(reader, version, dimensions, numrecs)
    return _Header(version, numrecs, attributes, variables, reader.position)


def _read_dimensions(reader: _HeaderReader) -> list[tuple[str, int]]:
    count = reader.list_length(_NC_DIMENSION, "dimension", 4 + 2 * reader.count_size)
    dimensions = [(reader.name("a dimension"), reader.count()) for _ in range(count)]
    names = [name for name, _ in dimensions]
    if len(set(names)) != len(names):
        raise _Malformed(f"a dimension name is repeated in {names}")
    unlimited = [name for name, length in dimensions if length == 0]
    if len(unlimited) > 1:
        raise _Malformed(f"it declares several record (unlimited) dimensions: {unlimited}")
    return dimensions


def _read_attributes(reader: _HeaderReader, version: int, owner: str | None) -> dict[str, Any]:
    count = reader.list_length(_NC_ATTRIBUTE, "attribute", 4 + 2 * reader.count_size)
    attributes: dict[str, Any] = {}
    for _ in range(count):
        name = reader.name("an attribute")
        nc_type = _type_of(reader.int32(), version, owner, f"attribute {name!r}")
        length = reader.count()
        nbytes = length * nc_type.dtype.itemsize
        if nbytes > reader.remaining:
            raise _Malformed(
                f"attribute {name!r} declares {length:,} values, past the end of the file", owner
            )
        attributes[name] = _attribute_value(name, nc_type, reader.padded(nbytes))
    return attributes


def _attribute_value(name: str, nc_type: _Type, raw: bytes) -> Any:
    """The value as netCDF4-python returns it: text for ``char`` (NULs removed, bytes for a
    ``_FillValue``), otherwise a native-order numpy array."""
    if nc_type.dtype.kind == "S":
        if name == "_FillValue":
            return raw
        return raw.decode("utf-8", errors="replace").replace("\x00", "")
    return np.frombuffer(raw, nc_type.dtype).astype(nc_type.dtype.newbyteorder("="))


def _type_of(code: int, version: int, variable: str | None, what: str) -> _Type:
    nc_type = _TYPES.get(code)
    if nc_type is None:
        raise _Malformed(f"{what} has the unknown type code {code}", variable)
    if nc_type.cdf5_only and version != 5:
        raise _Malformed(
            f"{what} has the type {nc_type.name} (code {code}), which only CDF-5 files hold, "
            f"and this file is {_FORMATS[version]}",
            variable,
        )
    return nc_type


def _read_variables(
    reader: _HeaderReader,
    version: int,
    dimensions: list[tuple[str, int]],
    numrecs: int | None,
) -> list[_Variable]:
    count = reader.list_length(_NC_VARIABLE, "variable", 8 + 4 * reader.count_size)
    variables = []
    for _ in range(count):
        name = reader.name("a variable")
        if "/" in name:
            raise _Malformed(f"the variable name {name!r} holds a '/', which netCDF forbids")
        rank = reader.count()
        if rank * reader.count_size > reader.remaining:
            raise _Malformed(f"it declares {rank:,} dimensions, more than the file holds", name)
        ids = [reader.count() for _ in range(rank)]
        if any(i >= len(dimensions) for i in ids):
            raise _Malformed(f"it names dimension ids {ids} of {len(dimensions)}", name)
        attributes = _read_attributes(reader, version, name)
        nc_type = _type_of(reader.int32(), version, name, "it")
        reader.count()  # vsize: redundant, and wrong (2^32 - 1) for variables over 4 GiB
        begin = reader.offset()
        names = tuple(dimensions[i][0] for i in ids)
        lengths = [dimensions[i][1] for i in ids]
        if 0 in lengths[1:]:
            raise _Malformed("the record (unlimited) dimension is not its first", name)
        is_record = bool(lengths) and lengths[0] == 0
        if is_record:
            lengths[0] = numrecs or 0
        if begin < 0:
            raise _Malformed(f"its data offset {begin} is negative", name)
        variable = _Variable(name, names, tuple(lengths), nc_type, attributes, begin, is_record)
        if variable.slab_bytes >= _MAX_BYTES:
            raise _Malformed(f"its shape {variable.shape} declares more bytes than any file", name)
        variables.append(variable)
    if len({v.name for v in variables}) != len(variables):
        raise _Malformed("a variable name is repeated")
    return variables


# -- layout ----------------------------------------------------------------------------------


def _record_size(variables: list[_Variable]) -> int:
    """Bytes from one record to the next: every record variable's slab padded to 4 bytes,
    except that a lone record variable's slabs are not padded (the header's vsize still is,
    so it is computed here, as readers must)."""
    records = [v for v in variables if v.is_record]
    if len(records) == 1:
        return records[0].slab_bytes
    return sum(v.slab_bytes + (-v.slab_bytes % 4) for v in records)


def _streaming_numrecs(variables: list[_Variable], recsize: int, file_size: int) -> int:
    """Records whose every slab lies wholly in the file, for a header that never got its
    record count ("streaming"); a last record whose padding was not written counts."""
    records = [v for v in variables if v.is_record]
    if not records or recsize == 0:
        return 0
    counts = [
        (file_size - v.begin - v.slab_bytes) // recsize + 1
        if file_size >= v.begin + v.slab_bytes
        else 0
        for v in records
    ]
    return max(min(counts), 0)


_DIVISOR_BLOCK = 1 << 16


def _largest_divisor(n: int, limit: int) -> int:
    """The largest divisor of ``n`` (> 0) that is at most ``limit`` (>= 1).

    Searched with numpy in blocks, in O(min(limit, sqrt(n))) rather than a Python loop down
    from ``limit``: first among the partners ``n // d`` of small divisors ``d``, then among
    the divisors up to ``sqrt(n)``.
    """
    if limit >= n:
        return n
    root = math.isqrt(n)
    # the partner n // d is at most limit when d >= n / limit; the smallest such d wins
    for low in range(-(-n // limit), root + 1, _DIVISOR_BLOCK):
        candidates = np.arange(low, min(low + _DIVISOR_BLOCK, root + 1), dtype=np.int64)
        found = candidates[n % candidates == 0]
        if found.size:
            return n // int(found[0])
    for high in range(min(limit, root), 0, -_DIVISOR_BLOCK):
        candidates = np.arange(max(high - _DIVISOR_BLOCK + 1, 1), high + 1, dtype=np.int64)
        found = candidates[n % candidates == 0]
        if found.size:
            return int(found[-1])
    return 1


def _rows_that_fit(n: int, row_bytes: int, max_bytes: int) -> int:
    """The largest divisor of ``n`` whose rows take at most ``max_bytes`` (at least 1)."""
    if n * row_bytes <= max_bytes or row_bytes == 0:
        return n
    return _largest_divisor(n, max(max_bytes // row_bytes, 1))


def _contiguous_chunks(shape: tuple[int, ...], itemsize: int, max_bytes: int) -> tuple[int, ...]:
    """The chunk shape of a contiguous block: :func:`hdf_common.contiguous_chunks`' rule (a
    divisor of the first axis close to ``max_bytes``, one chunk when none is within a
    factor 16), with the divisor found in O(sqrt(n))."""
    whole = tuple(max(n, 1) for n in shape)
    if not shape or shape[0] <= 1:
        return whole
    row_bytes = math.prod(shape[1:]) * itemsize
    rows = _rows_that_fit(shape[0], row_bytes, max_bytes)
    if rows == shape[0] or rows * row_bytes < max_bytes // 16:
        return whole
    return (rows, *whole[1:])


def _record_manifest(
    variable: _Variable,
    recsize: int,
    max_bytes: int,
    url: str,
    source: SourceInfo,
) -> tuple[tuple[int, ...], ChunkManifest]:
    """Chunks of a record variable and their manifest, built with numpy for any number of
    records.

    Records are grouped when they follow one another without a gap (a lone record
    variable); a record slab larger than ``max_bytes`` is cut along its first inner axis.
    """
    numrecs, inner = variable.shape[0], variable.shape[1:]
    itemsize = variable.type.dtype.itemsize
    slab = variable.slab_bytes
    contiguous = recsize == slab
    rows = _rows_that_fit(numrecs, slab, max_bytes) if contiguous and numrecs else 1
    inner_chunks = tuple(max(n, 1) for n in inner)
    if rows == 1 and slab > max_bytes:
        inner_chunks = _contiguous_chunks(inner, itemsize, max_bytes)
    chunks = (rows, *inner_chunks)
    grid = chunk_counts(variable.shape, chunks)
    if numrecs == 0:
        return chunks, ChunkManifest.empty(grid)
    piece = math.prod(inner_chunks) * itemsize
    starts = np.uint64(variable.begin) + np.arange(grid[0], dtype=np.uint64) * np.uint64(
        rows * recsize
    )
    pieces = np.arange(grid[1] if inner else 1, dtype=np.uint64) * np.uint64(piece)
    offsets = (starts[:, None] + pieces[None, :]).reshape(grid)
    lengths = np.full(grid, rows * piece, dtype=np.uint64)
    return chunks, ChunkManifest.from_single_url(url, offsets, lengths, source=source)


def _data_end(variable: _Variable, recsize: int) -> int:
    """Where the variable's last byte is (its begin when it has none)."""
    if not variable.is_record:
        return variable.begin + variable.slab_bytes
    if variable.shape[0] == 0:
        return variable.begin
    return variable.begin + (variable.shape[0] - 1) * recsize + variable.slab_bytes


# -- arrays ----------------------------------------------------------------------------------


def _unsupported(url: str, name: str, reason: str) -> UnsupportedFeatureError:
    return UnsupportedFeatureError(
        f"cannot be referenced: {reason}",
        url=url,
        variable=name,
        hint=f"Pass drop_variables=[{name!r}] to open the rest of the file",
    )


def _fill_value(variable: _Variable, native: np.dtype[Any]) -> Any:
    """The zarr fill value: the variable's _FillValue when it has the variable's type,
    otherwise netCDF's default for the type. (No chunk is ever missing, and xarray masks
    with the _FillValue attribute, so this only informs other readers.)"""
    value = variable.attributes.get("_FillValue")
    if isinstance(value, np.ndarray) and value.dtype == native and value.size:
        return value.reshape(-1)[0].item()
    if native.kind == "S":
        return variable.type.fill
    return np.array(variable.type.fill, dtype=native).item()


def _packing(attributes: dict[str, Any], native: np.dtype[Any]) -> tuple[Any, np.dtype[Any]] | None:
    """:func:`packing_codec` for numeric factors; text ``scale_factor``/``add_offset`` (some
    old files have them) stay attributes, as xarray's netCDF readers see them."""
    factors = [attributes[k] for k in ("scale_factor", "add_offset") if k in attributes]
    if not all(isinstance(f, np.ndarray) and f.size for f in factors):
        return None
    return packing_codec({k: attributes[k] for k in PACKING_ATTRIBUTES if k in attributes}, native)


def _plain(raw: dict[str, Any]) -> dict[str, Any]:
    return {key: to_json_value(value) for key, value in raw.items()}


def _json_attributes(
    raw: dict[str, Any], native: np.dtype[Any], skip: Iterable[str], url: str, name: str
) -> dict[str, Any]:
    skipped = frozenset(skip)
    result: dict[str, Any] = {}
    for key, value in raw.items():
        if key in skipped:
            continue
        if key == "_FillValue" and native.kind == "S":
            raise _unsupported(
                url,
                name,
                "it is a char array with a _FillValue attribute, and xarray's zarr reader "
                "can't decode a _FillValue on a char (S1) array",
            )
        if key == "_FillValue":
            try:
                encoded = encode_fill_value(value, native) if len(value) else None
            except (TypeError, ValueError, OverflowError) as error:
                raise _unsupported(
                    url,
                    name,
                    f"its _FillValue {value!r} does not fit its type {native} ({error}), so "
                    "xarray's zarr reader could not decode it",
                ) from error
        else:
            encoded = to_json_value(value)
        if encoded is not None:
            result[key] = encoded
    return result


def _array(
    variable: _Variable,
    chunks: tuple[int, ...],
    manifest: ChunkManifest,
    url: str,
) -> ManifestArray:
    """The variable's array: big-endian bytes, CF packing as a codec where JSON attributes
    would decode it differently, attributes in xarray's zarr form."""
    native = variable.type.dtype.newbyteorder("=")
    codecs: list[Any] = [BytesCodec(endian="big" if native.itemsize > 1 else None)]
    data_type = zarr_data_type(native)
    fill_value = _fill_value(variable, native)
    packing = _packing(variable.attributes, native)
    skip: tuple[str, ...] = ()
    if packing is not None:
        codec, decoded = packing
        codecs = [codec, *codecs]
        data_type = zarr_data_type(decoded)
        fill_value = codec.decode_array(np.array([fill_value], dtype=native))[0].item()
        skip = PACKING_ATTRIBUTES
    attributes = _json_attributes(variable.attributes, native, skip, url, variable.name)
    metadata = array_metadata(
        variable.shape, chunks, data_type, fill_value, codecs, attributes, variable.dimensions
    )
    return ManifestArray(metadata, manifest)


# -- the parser ------------------------------------------------------------------------------


class NetCDF3Parser:
    """Parse netCDF-3 files (CDF-1 classic, CDF-2 64-bit offset, CDF-5 64-bit data) into
    virtual arrays.

    Only the header is read. Every variable is referenced where its bytes are: non-record
    variables as contiguous blocks, record variables record by record (or several records
    at a time where records follow one another without a gap).

    Parameters
    ----------
    group
        netCDF-3 files have only the root group: ``None``, ``""`` or ``"/"``.
    drop_variables
        Variables to leave out.
    max_chunk_bytes
        Non-record variables larger than this are referenced as several chunks along their
        first axis (a divisor of its length), so that readers don't fetch one giant range;
        the records of a lone record variable are grouped into chunks up to this size; a
        record larger than this is cut along its first inner axis.
    header_bytes
        Bytes of the first read of the header; a larger header is read in a few more
        requests.

    Raises
    ------
    InvalidFileError
        (when called) If the file is not netCDF-3, is truncated, or its header breaks the
        format (a type only CDF-5 has in a CDF-1/2 file, for example).
    UnsupportedFeatureError
        (when called) If a variable can't be presented exactly: a ``_FillValue`` of another
        type than the variable's, or on a ``char`` array (xarray's zarr reader can't decode
        those); the message names it, and ``drop_variables`` skips it.

    Examples
    --------
    >>> parser = NetCDF3Parser(drop_variables=["time_bnds"])
    >>> store = parser("s3://bucket/file.nc", registry)  # doctest: +SKIP
    >>> ds = xr.open_zarr(store, consolidated=False, zarr_format=3)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        group: str | None = None,
        drop_variables: Iterable[str] | None = None,
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
        header_bytes: int = DEFAULT_HEADER_BYTES,
    ) -> None:
        if max_chunk_bytes <= 0:
            raise ValueError(f"max_chunk_bytes must be positive, got {max_chunk_bytes}")
        self.group = group
        self.drop_variables = frozenset(drop_variables or ())
        self.max_chunk_bytes = max_chunk_bytes
        self.header_bytes = header_bytes

    def __repr__(self) -> str:
        return (
            f"NetCDF3Parser(drop_variables={sorted(self.drop_variables)!r}, "
            f"max_chunk_bytes={self.max_chunk_bytes})"
        )

    def __call__(self, url: str, registry: ObjectStoreRegistry) -> ManifestStore:
        """Parse ``url`` and return a :class:`~virtualize.ManifestStore` over its variables."""
        url = normalize_url(url)
        if self.group not in (None, "", "/"):
            raise InvalidFileError(
                f"no group {self.group!r}: netCDF-3 files have only the root group",
                url=url,
                hint="Pass group=None",
            )
        source = head(registry, url)
        size = source.size or 0
        header = self._read_header(url, registry, size)
        recsize = _record_size(header.variables)
        numrecs = header.numrecs
        if numrecs is None:
            numrecs = _streaming_numrecs(header.variables, recsize, size)
        arrays: dict[str, ManifestArray] = {}
        for variable in header.variables:
            if variable.name in self.drop_variables:
                continue
            if variable.is_record and variable.shape[0] != numrecs:
                variable = replace(variable, shape=(numrecs, *variable.shape[1:]))
            self._check_extent(url, variable, recsize, header.end, size)
            arrays[variable.name] = self._variable_array(url, source, variable, recsize)
        attributes = {k: v for k, v in _plain(header.attributes).items() if v is not None}
        group = ManifestGroup(arrays, {}, attributes)
        return ManifestStore(group, registry=registry, skipped={})

    def _read_header(self, url: str, registry: ObjectStoreRegistry, size: int) -> _Header:
        store, path = registry.resolve(url)

        def fetch(start: int, length: int) -> bytes:
            try:
                return bytes(obstore.get_range(store, path, start=start, length=length))
            except Exception as error:
                raise InvalidFileError(f"reading the header failed: {error}", url=url) from error

        reader = _HeaderReader(fetch, size, self.header_bytes)
        try:
            return _parse_header(reader)
        except _Malformed as error:
            raise InvalidFileError(
                error.reason,
                url=url,
                variable=error.variable,
                hint="The file is not a valid netCDF-3 file (damaged or truncated?)",
            ) from None
        except VirtualizeError:
            raise
        except (ValueError, OverflowError, IndexError, MemoryError) as error:
            raise InvalidFileError(
                f"its header could not be read ({type(error).__name__}: {error})",
                url=url,
                hint="The file is not a valid netCDF-3 file (damaged or truncated?)",
            ) from error

    def _check_extent(
        self, url: str, variable: _Variable, recsize: int, header_end: int, size: int
    ) -> None:
        end = _data_end(variable, recsize)
        if end == variable.begin:
            return  # no data (no records yet): nothing to find in the file
        if variable.begin < header_end:
            raise InvalidFileError(
                f"its data offset {variable.begin:,} lies inside the header "
                f"(which ends at {header_end:,})",
                url=url,
                variable=variable.name,
                hint="The file is damaged",
            )
        if end > size:
            raise InvalidFileError(
                f"its data ends at byte {end:,}, past the end of the file ({size:,} bytes): "
                "the file is truncated",
                url=url,
                variable=variable.name,
                hint=f"Pass drop_variables=[{variable.name!r}] to open the rest of the file",
            )

    def _variable_array(
        self, url: str, source: SourceInfo, variable: _Variable, recsize: int
    ) -> ManifestArray:
        itemsize = variable.type.dtype.itemsize
        if variable.is_record:
            chunks, manifest = _record_manifest(
                variable, recsize, self.max_chunk_bytes, url, source
            )
        else:
            chunks = _contiguous_chunks(variable.shape, itemsize, self.max_chunk_bytes)
            manifest = contiguous_manifest(
                url, source, variable.begin, variable.shape, chunks, variable.type.dtype
            )
        return _array(variable, chunks, manifest, url)
