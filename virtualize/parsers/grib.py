"""GRIB parser: chunk manifests from the messages of a GRIB 1 or GRIB 2 file, grouped into
hypercubes by cfgrib's own code.

Reading
-------
The file is read through obstore only (:class:`~virtualize.ObjectStoreRegistry`), front to
back in large ranged reads (GRIB metadata is spread through the whole file: every message
carries its own). :mod:`virtualize.parsers.grib_scan` finds the messages (``"GRIB"`` to
``"7777"``) and the fields inside them. A one-field GRIB 2 message is handed to ecCodes as
its *header-only message* (below): ecCodes parses it a third faster than the whole message.

Each field becomes an ecCodes handle (``codes_new_from_message``), released when the parse
ends, except a field that differs from an earlier one in its reference and forecast time
only (:mod:`virtualize.parsers.grib_kinds`: its header sections equal but for the time
octets). Such a field takes the earlier field's time-free index keys (parameter, level, grid,
...), and its time keys are read from a copy of the earlier field's handle set to its times,
once the copy's header sections are byte for byte its own; its handle is made only if
cfgrib reads another of its keys. A file of ``p`` parameters on ``l`` levels at ``s`` steps
then costs ecCodes ``p * l`` message parses and concept evaluations instead of
``p * l * s``.

With a ``.idx`` sidecar (``index=``), the messages are where the index says, and a GRIB 2
message the index lists as one field is read only in part: its first 4 KiB (more, in a
second round, if its sections 1 to 5 run further), its last 4 bytes (``"7777"``), and, when
a bitmap lies between, the 5 bytes heading section 7 (to check that one field fills the
message). Its indicator section must give the length the index does (next offset minus this
one), else the index does not match the file. Its field is then a *header-only message*:
sections 0 to 5 as they are, section 6 with the same bitmap indicator (and, for a bitmap, one
of the same length with every point present), section 7 without its data (empty; in zeros
of its real length for packings whose section 7 ecCodes lays out as it parses, such as
complex packing), ``"7777"``. Every key cfgrib reads has the same value in it as in the whole
message (:data:`HEADER_KEYS`; the tests compare them key by key); a ``filter_by_keys`` on
another key makes every message be read whole. GRIB 1 messages, messages of several fields,
of 4 KiB or less, or followed by other bytes, are read whole. Chunks reference the whole
messages in both cases.

Grouping
--------
The handles are handed to cfgrib as a *fieldset* (a sequence of dict-like messages, wrapped in
cfgrib's own :class:`cfgrib.messages.Message`), and cfgrib builds the datasets exactly as
``cfgrib.open_datasets(path)`` does: one dataset per ``paramId`` split with
``filter_by_keys`` until each is one hypercube, merged per ``typeOfLevel``, squeezed. So the
variables, dimensions, coordinates (names, values, attributes) and attributes are cfgrib's.
cfgrib indexes its input once per dataset it opens; here the fieldset is indexed once, each
open is a sub-index of it (what cfgrib's opens filter the file's index to), and cfgrib's
dataset components become xarray variables as its xarray backend makes them, without a
round trip through ``xr.open_dataset``.

Each data variable of cfgrib's dataset is backed by cfgrib's ``OnDiskArray``, whose
``field_id_index`` maps each position of the hypercube (its non-geographic dimensions) to
the fields found there. That position is one chunk of shape ``(1, ..., 1, *field_shape)``
referencing the field's message (its offset and length in the file); a position without a
field is a missing chunk and reads as NaN, as in cfgrib. Chunks decode with
:class:`~virtualize.codecs.grib.GRIBCodec` (a whole message to float32, missing values as
NaN). A GRIB 2 message may hold several fields (NCEP's U and V in one message): when all the
chunks of an array are field ``k`` of their messages, they reference the messages and the
codec is ``GRIBCodec(field=k)``; otherwise the fields after the first of their message are
rebuilt as standalone messages and held inline (see :mod:`~virtualize.parsers.grib_scan`).

Coordinates (``time``, ``step``, ``valid_time``, levels, ``number``, ``latitude``,
``longitude``, ...) are held inline, CF-encoded by xarray's own encoder, so that
``xr.open_zarr`` decodes them to cfgrib's values and types; the data variables' CF
``coordinates`` attribute makes the scalar ones coordinates.

Layout of the store
-------------------
One dataset: the root group. Several: one group per dataset under an empty root, named by
the keys that set them apart, in this order until names are unique:

1. ``typeOfLevel`` (cfgrib merges per type of level), e.g. ``"surface"``;
2. then ``_<stepType>`` when datasets of one type of level differ in it, e.g.
   ``"surface_instant"``, ``"surface_accum"``;
3. then ``_<level>`` (the level value, ``%g``) when the level is one value, or
   ``_<n>levels`` when it is a dimension, e.g. ``"heightAboveGround_2"``,
   ``"heightAboveGround_10"``, ``"isobaricInhPa_26levels"``;
4. then ``_<i>``, ``i`` = 1, 2, ... in cfgrib's order.

``GRIBParser(group=name)`` returns one of them as the root; ``filter_by_keys`` selects
messages before grouping, as cfgrib's ``backend_kwargs={"filter_by_keys": ...}``.

Messages ecCodes can't parse and grids cfgrib can't represent are refused with an error
naming the file, the message (number and byte offset) or variable, and what to do.
"""

from __future__ import annotations

import functools
import hashlib
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import obstore

from virtualize._eccodes import eccodes as load_eccodes
from virtualize.errors import InvalidFileError, UnsupportedFeatureError
from virtualize.io import head
from virtualize.isolation import isolated
from virtualize.manifests import (
    INLINE,
    MISSING,
    ChunkManifest,
    ManifestArray,
    ManifestGroup,
    SourceInfo,
)
from virtualize.parsers.attributes import encode_fill_value, to_json_value
from virtualize.parsers.grib_kinds import (
    TIME_FREE_INDEX_KEYS,
    TIME_INDEX_KEYS,
    header_sections,
    time_free_signature,
    time_settings,
)
from virtualize.parsers.grib_scan import (
    END,
    MAGIC,
    Field,
    Message,
    fields_of,
    grib1_length,
    scan,
)
from virtualize.parsers.hdf_common import array_metadata
from virtualize.parsers.hdf_types import zarr_data_type
from virtualize.parsers.inline import inline_array
from virtualize.registry import ObjectStoreRegistry, normalize_url
from virtualize.store import ManifestStore

__all__ = ["HEADER_KEYS", "TIME_FREE_INDEX_KEYS", "TIME_INDEX_KEYS", "GRIBParser"]

# A scan reads the file front to back in large blocks: a request costs a round trip from an
# object store, and a fraction of a millisecond even from a local file (small reads around
# each message's headers were slower than reading everything, locally too)
_READ_BLOCK = 32 << 20
_HINT = "Open the file with cfgrib to see what it holds, or pick messages with filter_by_keys"


class GRIBParser:
    """Parse GRIB 1 and GRIB 2 files into virtual datasets, as cfgrib opens them.

    The store holds what ``cfgrib.open_datasets(path)`` returns: one dataset as the root
    group, or several as groups of the root named by their distinguishing keys (see the
    module documentation: ``"surface"``, ``"heightAboveGround_2"``, ...). Every message is
    a chunk, decoded by :class:`~virtualize.codecs.grib.GRIBCodec`.

    Parameters
    ----------
    group
        One group (dataset) to return as the root, by name; None for all.
    drop_variables
        Variable names to leave out of every group.
    filter_by_keys
        Keep only messages whose GRIB keys have these values, as cfgrib's
        ``filter_by_keys``, e.g. ``{"typeOfLevel": "surface"}`` or
        ``{"shortName": ["u", "v"]}``.
    index
        Use a NOAA-style ``.idx`` sidecar (``url + ".idx"``) to find the messages:
        ``"auto"`` (default) when one exists, ``True`` to require it, ``False`` to scan the
        whole file. With the index, a one-field GRIB 2 message is read only in part (its
        first 4 KiB, or up to the end of its section 5 if further, its last 4 bytes, and 5
        bytes at its section 7 after a bitmap); GRIB 1 messages and messages of several
        fields are read whole (see the module documentation). The result is the same.

    Examples
    --------
    >>> store = GRIBParser()("s3://bucket/era5.grib", registry)  # doctest: +SKIP
    >>> xr.open_zarr(store, consolidated=False, zarr_format=3)  # doctest: +SKIP
    >>> GRIBParser(filter_by_keys={"typeOfLevel": "surface"})(url, registry)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        group: str | None = None,
        drop_variables: Iterable[str] | None = None,
        filter_by_keys: Mapping[str, Any] | None = None,
        index: bool | Literal["auto"] = "auto",
    ) -> None:
        if index not in ("auto", True, False):
            raise ValueError(f"index must be 'auto', True or False, got {index!r}")
        if isinstance(drop_variables, str):
            drop_variables = [drop_variables]
        self.group = None if group in (None, "", "/") else str(group).strip("/")
        self.drop_variables = frozenset(drop_variables or ())
        self.filter_by_keys = dict(filter_by_keys or {})
        self.index = index

    def __repr__(self) -> str:
        return (
            f"GRIBParser(group={self.group!r}, drop_variables={sorted(self.drop_variables)!r}, "
            f"filter_by_keys={self.filter_by_keys!r}, index={self.index!r})"
        )

    def __call__(self, url: str, registry: ObjectStoreRegistry) -> ManifestStore:
        """Parse ``url`` and return a :class:`~virtualize.ManifestStore` over its datasets."""
        url = normalize_url(url)
        # ecCodes crashes or hangs on some damaged messages: see virtualize.isolation
        root = isolated(_parse, self, url, registry, url=url, library="ecCodes")
        return ManifestStore(root, registry=registry)

    def _parse(self, url: str, registry: ObjectStoreRegistry) -> ManifestGroup:
        source = head(registry, url)
        store, path = registry.resolve(url)
        reader = _Reader(store, path, int(source.size or 0), url)
        sidecar = self._sidecar(url, registry)
        # header-only messages hold every key of HEADER_KEYS, not the ones data decide
        headers = set(self.filter_by_keys) <= HEADER_KEYS
        if sidecar is not None:
            entries = _idx_entries(sidecar, reader.size, url)
            fields = _indexed_fields(reader, entries, url, headers=headers)
        else:
            fields = _scan_fields(reader, url, headers=headers)
        with _Handles(fields, url) as fieldset:
            datasets = _cfgrib_datasets(fieldset, self.filter_by_keys, url)
            coordinates: dict[Any, ManifestArray] = {}
            groups = [
                _group(dataset, fieldset, url, source, self.drop_variables, coordinates)
                for dataset in datasets
            ]
        if not groups:
            raise InvalidFileError(
                f"no message matches filter_by_keys={self.filter_by_keys!r}"
                if self.filter_by_keys
                else "cfgrib finds no variable in the file",
                url=url,
                hint=_HINT,
            )
        if len(groups) == 1:
            root = groups[0]
        else:
            names = group_names(datasets)
            root = ManifestGroup({}, dict(zip(names, groups, strict=True)), {})
        if self.group is not None:
            node = root.get_node(self.group) if root.groups else None
            if not isinstance(node, ManifestGroup):
                raise InvalidFileError(
                    f"no group {self.group!r}",
                    url=url,
                    hint=f"Groups here: {sorted(root.groups)}"
                    if root.groups
                    else "The file is one dataset: leave group unset",
                )
            root = node
        return root

    def _sidecar(self, url: str, registry: ObjectStoreRegistry) -> str | None:
        """The ``.idx`` sidecar's text, when it is to be used."""
        if self.index is False:
            return None
        sidecar = url + ".idx"
        try:
            store, path = registry.resolve(sidecar)
            text = bytes(obstore.get(store, path).bytes()).decode("utf-8")
        except FileNotFoundError:
            text = None
        except Exception as error:
            if self.index is True:
                raise InvalidFileError(
                    f"cannot read the index {sidecar}: {error}", url=url, hint="Pass index=False"
                ) from error
            text = None
        if text is None and self.index is True:
            raise InvalidFileError(
                f"no index {sidecar}", url=url, hint="Pass index=False to scan the file"
            )
        return text


def _parse(parser: GRIBParser, url: str, registry: ObjectStoreRegistry) -> ManifestGroup:
    return parser._parse(url, registry)


# -- reading ----------------------------------------------------------------------------------


class _Reader:
    """Reads a file front to back through obstore in large blocks, keeping one window."""

    def __init__(self, store: Any, path: str, size: int, url: str) -> None:
        self.store = store
        self.path = path
        self.size = size
        self.url = url
        self.bytes_read = 0
        self._start = 0
        self._window = memoryview(b"")

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self.view(offset, size))

    def view(self, offset: int, size: int) -> memoryview:
        """The bytes at ``offset``, without copying them out of the window."""
        end = min(offset + size, self.size)
        if offset < self._start or end > self._start + len(self._window):
            length = max(end - offset, min(_READ_BLOCK, self.size - offset))
            self._window = memoryview(self._get(offset, length))
            self._start = offset
        return self._window[offset - self._start : end - self._start]

    def read_ranges(
        self, starts: Sequence[int], lengths: Sequence[int], *, coalesce: int = 1 << 20
    ) -> list[bytes]:
        """Several ranges at once (concurrently); ranges less than ``coalesce`` bytes apart
        are read in one request."""
        if not starts:
            return []
        try:
            blocks = obstore.get_ranges(
                self.store, self.path, starts=starts, lengths=lengths, coalesce=coalesce
            )
        except Exception as error:
            raise InvalidFileError(f"reading the file failed: {error}", url=self.url) from error
        self.bytes_read += sum(lengths)
        return [bytes(block) for block in blocks]

    def _get(self, offset: int, length: int) -> Any:
        if length <= 0:
            return b""
        try:
            data = obstore.get_range(self.store, self.path, start=offset, length=length)
        except Exception as error:
            raise InvalidFileError(f"reading the file failed: {error}", url=self.url) from error
        self.bytes_read += len(data)
        return data


def _scan_fields(reader: _Reader, url: str, *, headers: bool = True) -> list[Field]:
    """Every field of the file, found by scanning it.

    A one-field GRIB 2 message gets its header-only form too, as through a ``.idx``
    sidecar: ecCodes makes a handle of it about a third faster than of the whole message,
    and the keys cfgrib reads are the same (not with ``headers=False``: a ``filter_by_keys``
    on a key the data decide)."""
    fields: list[Field] = []
    for message in scan(reader.view, reader.size, url):
        if headers and message.edition == 2:
            # only for one field whose sections follow each other to "7777"
            header = _read_header_only(reader, message)
            if header is not None:
                fields.append(Field(message, 0, header))
                continue
        fields.extend(fields_of(message, reader.read(message.offset, message.length), url))
    return fields


def _read_header_only(reader: _Reader, message: Message) -> bytes | None:
    """The header-only form of a message (:func:`_header_only`), reading its first bytes
    and, when they don't reach them, the rest of its headers and section 7's start."""
    length = min(_PREFIX, message.length)
    section7: bytes | None = None
    for _ in range(_MAX_ROUNDS):
        step = _header_only(reader.view(message.offset, length), section7, message.length)
        if isinstance(step, _Extend) and length < min(step.end, message.length):
            length = min(step.end, message.length)
        elif isinstance(step, _Section7) and section7 is None:
            section7 = reader.read(message.offset + step.at, 5)
        else:
            return step if isinstance(step, bytes) else None
    return None


# GRIB 2 data representation templates whose section 7 ecCodes leaves alone until values are
# decoded (simple, IEEE, JPEG 2000, PNG, CCSDS): a header-only message gives them an empty
# section 7. For the others (complex packing, second order, ...) ecCodes lays out the section's
# groups when it parses the message, from section 5, so the section keeps its length (zeros).
_LAZY_DATA_TEMPLATES = frozenset({0, 4, 40, 41, 42})

#: Keys whose values are the same in a header-only message and in the whole message: every key
#: cfgrib reads to build its datasets (tests compare them key by key on the corpus and on
#: generated files), and more header keys that ``filter_by_keys`` may use. A filter on any
#: other key (a data statistic such as ``average``, say) makes the ``.idx`` path read the
#: messages whole.
HEADER_KEYS = frozenset(
    {
        # cfgrib's index, attribute, grid, time and coordinate keys
        "DxInMetres", "DyInMetres", "LaDInDegrees", "Latin1InDegrees", "Latin2InDegrees",
        "LoVInDegrees", "N", "NV", "Ni", "Nj", "Nx", "Ny", "M", "K", "J", "pl", "centre",
        "centreDescription", "cfName", "cfVarName", "dataDate", "dataTime", "dataType",
        "directionNumber", "distinctLatitudes", "distinctLongitudes", "edition", "endStep",
        "frequencyNumber", "gridDefinitionDescription", "gridType",
        "iDirectionIncrementInDegrees", "iScansNegatively", "jDirectionIncrementInDegrees",
        "jPointsAreConsecutive", "jScansPositively", "latitudeOfFirstGridPointInDegrees",
        "latitudeOfLastGridPointInDegrees", "latitudeOfSouthernPoleInDegrees", "latitudes",
        "longitudeOfFirstGridPointInDegrees", "longitudeOfLastGridPointInDegrees",
        "longitudeOfSouthernPoleInDegrees", "longitudes", "angleOfRotationInDegrees", "level",
        "md5GridSection", "missingValue", "name", "number", "numberOfDirections",
        "numberOfFrequencies", "numberOfPoints", "paramId", "shortName", "stepType",
        "stepUnits", "subCentre", "totalNumber", "typeOfLevel", "units", "uvRelativeToGrid",
        "time", "step", "valid_time", "validityDate", "validityTime", "indexing_time",
        "indexingDate", "indexingTime", "verifying_time", "valid_month",
        "monthlyVerificationDate",
        # more header keys
        "discipline", "parameterCategory", "parameterNumber", "productDefinitionTemplateNumber",
        "gridDefinitionTemplateNumber", "dataRepresentationTemplateNumber", "packingType",
        "bitsPerValue", "numberOfValues", "numberOfDataPoints", "bitmapPresent",
        "typeOfFirstFixedSurface", "scaledValueOfFirstFixedSurface", "stepRange", "startStep",
        "forecastTime", "perturbationNumber", "typeOfGeneratingProcess",
        "generatingProcessIdentifier", "productionStatusOfProcessedData",
        "significanceOfReferenceTime", "typeOfProcessedData", "marsClass", "marsType",
        "marsStream", "experimentVersionNumber",
    }
)  # fmt: skip

_PREFIX = 4 << 10
# obstore merges ranges less than this apart into one request: a few more bytes rather than
# a request per message header when messages are small, and no whole-file reads when they
# are not (its default, 1 MiB, would read every message of most forecast files whole)
_COALESCE = 32 << 10
_MAX_ROUNDS = 8
_IDX_HINT = "Regenerate the index (wgrib2 -s), or pass index=False to scan the file"


@dataclass(frozen=True, slots=True)
class _Entry:
    """One message listed by a ``.idx`` sidecar: where it starts, how long the index says it
    is (to the next listed offset, the last to the end of the file), how many fields it
    lists there."""

    number: int
    offset: int
    length: int
    fields: int


def _idx_entries(sidecar: str, size: int, url: str) -> list[_Entry]:
    """The messages a NOAA-style ``.idx`` sidecar lists, in order.

    Its lines are ``n:offset:d=YYYYMMDDHH:VAR:LEVEL:FORECAST:...``; the fields of one
    multi-field message are sub-numbered (``n.1``, ``n.2``, ...) at one offset.
    """
    offsets: list[int] = []
    fields: list[int] = []
    for number, line in enumerate(sidecar.splitlines()):
        if not line.strip():
            continue
        parts = line.split(":")
        try:
            offset = int(parts[1])
        except (IndexError, ValueError):
            raise InvalidFileError(
                f"line {number + 1} of the .idx sidecar is not 'n:offset:...': {line!r}",
                url=url,
                hint="Pass index=False to scan the file instead",
            ) from None
        sub_numbered = "." in parts[0]
        if offsets and offset == offsets[-1]:
            fields[-1] += 1
        else:
            offsets.append(offset)
            fields.append(2 if sub_numbered else 1)
    if not offsets or offsets != sorted(offsets) or offsets[-1] >= size:
        raise InvalidFileError(
            "the .idx sidecar's offsets are not increasing offsets within the file",
            url=url,
            hint="Pass index=False to scan the file instead",
        )
    ends = [*offsets[1:], size]
    return [
        _Entry(number, offset, end - offset, count)
        for number, (offset, end, count) in enumerate(zip(offsets, ends, fields, strict=True))
    ]


@dataclass(frozen=True, slots=True)
class _Extend:
    """The header walk needs the message's first ``end`` bytes."""

    end: int


@dataclass(frozen=True, slots=True)
class _Section7:
    """The header walk needs the 5 bytes at ``at`` (section 7's length and number)."""

    at: int


def _header_only(
    prefix: bytes | memoryview, section7: bytes | memoryview | None, length: int
) -> bytes | _Extend | _Section7 | None:
    """The header-only form of a one-field GRIB 2 message of ``length`` bytes, from its first
    bytes ``prefix`` (and the 5 bytes ``section7`` where section 7 starts, when the prefix
    stops before them).

    The header-only message is sections 0 to 5 as they are, section 6 with the same bitmap
    indicator (a bitmap, if the message has one, of the same length with every point
    present), section 7 without its data (of its real length, in zeros, for the packings
    whose section 7 ecCodes lays out when it parses a message), ``"7777"``, and the total
    length in section 0 set to its own length. Returns what more the walk needs to read, or
    None when the message is not one field whose sections 1 to 7 follow each other to its
    end (the caller then reads it whole).
    """
    sections: list[bytes | memoryview] = []
    position = 16
    template = -1
    expected = [1, 2, 3, 4, 5, 6]  # section 2 is optional
    while True:
        if position + 6 > len(prefix):
            return _Extend(position + _PREFIX)
        size = int.from_bytes(prefix[position : position + 4], "big")
        number = prefix[position + 4]
        if number == 3 and expected[0] == 2:
            expected.pop(0)
        if not expected or number != expected.pop(0) or size < 5:
            return None
        if position + size > length - 4:
            return None
        if number == 6:
            break
        if position + size + 6 > len(prefix):
            return _Extend(position + size + _PREFIX)
        section = prefix[position : position + size]
        if number == 5:
            if size < 11:
                return None
            template = int.from_bytes(section[9:11], "big")
        sections.append(section)
        position += size
    if template < 0:
        return None
    indicator = prefix[position + 5]
    if indicator == 0:
        sections.append(bytes(prefix[position : position + 6]) + b"\xff" * (size - 6))
    elif indicator != 254 and size == 6:
        sections.append(bytes(prefix[position : position + 6]))
    else:
        return None  # a bitmap defined earlier in the message: not a one-field message
    position += size
    if section7 is None:
        if position + 5 > len(prefix):
            return _Section7(position)
        section7 = prefix[position : position + 5]
    size = int.from_bytes(section7[0:4], "big")
    if section7[4] != 7 or position + size + 4 != length:
        return None  # more fields follow, or the sections don't add up: read it whole
    sections.append(
        b"\x00\x00\x00\x05\x07"
        if template in _LAZY_DATA_TEMPLATES
        else bytes(section7) + bytes(size - 5)
    )
    body = b"".join(sections)
    return bytes(prefix[:8]) + (16 + len(body) + 4).to_bytes(8, "big") + body + END


def _indexed_fields(
    reader: _Reader, entries: list[_Entry], url: str, *, headers: bool = True
) -> list[Field]:
    """Every field of the file, in the messages its ``.idx`` sidecar lists.

    With ``headers``, a GRIB 2 message the index lists as one field is read only up to the
    start of its section 7 (its first 4 KiB, more if its sections 1 to 6 run further, and
    the 5 bytes of section 7's header when a bitmap lies before it), plus its last 4 bytes
    (``"7777"``), and its field is a header-only message (see :func:`_header_only`).
    Other messages (GRIB 1, several fields, no more than 4 KiB, or anything the header walk
    can't follow) are read whole. Reads are concurrent, in rounds (a round for what the
    first reads showed is missing).

    Raises
    ------
    InvalidFileError
        Where the index lists a message that is not there: no ``"GRIB"`` at its offset, a
        GRIB 2 length longer than the index's, or no ``"7777"`` where it ends.
    """
    found: dict[int, list[Field]] = {}
    whole = {e.number for e in entries if not headers or e.fields > 1 or e.length <= _PREFIX}
    prefixes: dict[int, bytes] = {}
    section7: dict[int, bytes] = {}
    ends: dict[int, bytes] = {}
    requests: list[tuple[int, str, int, int]] = []  # entry, what, start, length
    for entry in entries:
        if entry.number in whole:
            requests.append((entry.number, "whole", entry.offset, entry.length))
        else:
            requests.append((entry.number, "prefix", entry.offset, _PREFIX))
            requests.append((entry.number, "end", entry.offset + entry.length - 4, 4))
    for _ in range(_MAX_ROUNDS):
        if not requests:
            break
        blocks = reader.read_ranges(
            [start for _, _, start, _ in requests],
            [length for _, _, _, length in requests],
            coalesce=_COALESCE,
        )
        for (number, what, _, _), block in zip(requests, blocks, strict=True):
            if what == "whole":
                found[number] = _whole_message(entries[number], block, url)
            elif what == "prefix":
                prefixes[number] = prefixes.get(number, b"") + block
            elif what == "section7":
                section7[number] = block
            else:
                ends[number] = block
        requests = []
        for number in sorted(prefixes.keys() - found.keys()):
            entry = entries[number]
            prefix = prefixes[number]
            step = _header_step(entry, prefix, section7.get(number), ends[number], url)
            if isinstance(step, bytes):
                message = Message(number, entry.offset, entry.length, 2)
                found[number] = [Field(message, 0, step)]
            elif isinstance(step, _Extend) and step.end > len(prefix) < entry.length:
                end = min(step.end, entry.length)
                requests.append((number, "prefix", entry.offset + len(prefix), end - len(prefix)))
            elif isinstance(step, _Section7):
                requests.append((number, "section7", entry.offset + step.at, 5))
            else:
                requests.append((number, "whole", entry.offset, entry.length))
    left = [entry for entry in entries if entry.number not in found]
    if left:
        blocks = reader.read_ranges([e.offset for e in left], [e.length for e in left])
        for entry, block in zip(left, blocks, strict=True):
            found[entry.number] = _whole_message(entry, block, url)
    fields: list[Field] = []
    for entry in entries:
        fields.extend(found[entry.number])
    return fields


def _header_step(
    entry: _Entry, prefix: bytes, section7: bytes | None, end: bytes, url: str
) -> bytes | _Extend | _Section7 | None:
    """Checks the indicator section and walks the headers of a message read in part: its
    header-only message, what more to read, or None to read it whole."""
    if prefix[:4] != MAGIC:
        raise InvalidFileError(
            f"the .idx sidecar lists message {entry.number} at byte {entry.offset}, where no "
            "GRIB message starts: the index does not match the file",
            url=url,
            hint=_IDX_HINT,
        )
    if prefix[7] != 2 or len(prefix) < 16:
        return None
    declared = int.from_bytes(prefix[8:16], "big")
    if declared > entry.length:
        raise InvalidFileError(
            f"message {entry.number} at byte {entry.offset} is {declared} bytes long, but the "
            f".idx sidecar has the next message {entry.length} bytes after its start: the "
            "index does not match the file",
            url=url,
            hint=_IDX_HINT,
        )
    if declared < entry.length:
        return None  # bytes between messages: read it whole, to find where it ends
    if end != END:
        raise InvalidFileError(
            f"message {entry.number} at byte {entry.offset} ({declared} bytes, as the .idx "
            "sidecar says) does not end with '7777': the index does not match the file",
            url=url,
            hint=_IDX_HINT,
        )
    return _header_only(prefix, section7, declared)


def _whole_message(entry: _Entry, data: bytes, url: str) -> list[Field]:
    """The fields of a message the index lists, read whole."""
    edition = data[7] if len(data) > 15 and data[:4] == MAGIC else 0
    length = _declared_length(data, edition)
    if not 0 < length <= len(data) or data[length - 4 : length] != END:
        raise InvalidFileError(
            f"the .idx sidecar lists message {entry.number} at byte {entry.offset}, where no "
            "whole GRIB message is: the index does not match the file",
            url=url,
            hint=_IDX_HINT,
        )
    message = Message(entry.number, entry.offset, length, edition)
    return fields_of(message, data[:length], url)


def _declared_length(data: bytes, edition: int) -> int:
    """The length a message's indicator section declares (0 if not a GRIB 1 or 2 message)."""
    if edition == 1:
        return grib1_length(data[:8], lambda start, size: data[start : start + size], 0)
    if edition == 2:
        return int.from_bytes(data[8:16], "big")
    return 0


# -- cfgrib's view of the fields ----------------------------------------------------------------


@functools.cache
def _message_class() -> type:
    load_eccodes()  # before cfgrib imports it: see virtualize._eccodes
    from cfgrib import messages

    class _Message(messages.Message):
        """cfgrib's message over a handle the parser owns and releases itself."""

        def __del__(self) -> None:
            pass

    return _Message


_MISSING_KEY = object()


class _CachedField(Mapping[str, Any]):
    """One field as cfgrib sees it: its keys read through cfgrib's ``Message`` once and kept,
    since cfgrib reads the keys of every message once per variable it builds."""

    def __init__(
        self, field: Field, message: Any, opener: Callable[[Field], Any] | None = None
    ) -> None:
        self.field = field
        self._message: Any = message
        self._opener = opener  # makes the handle when a key not known yet is read
        self._cache: dict[str, Any] = {}

    def _handle(self) -> Any:
        if self._message is None and self._opener is not None:
            self._message = self._opener(self.field)
            self._opener = None
        return self._message

    def __getitem__(self, key: str) -> Any:
        value = self._cache.get(key, None)
        if value is None and key not in self._cache:
            message = self._handle()
            if message is None:
                raise KeyError(key)
            try:
                value = message[key]
            except KeyError:
                value = _MISSING_KEY
            self._cache[key] = value
        if value is _MISSING_KEY:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        message = self._handle()
        return iter(message) if message is not None else iter(())

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def share(self, other: Mapping[str, Any], keys: Iterable[str]) -> None:
        """Take ``keys``' values from ``other`` (a field, or a cfgrib ``Message``)."""
        for key in keys:
            try:
                self._cache[key] = other[key]
            except KeyError:
                self._cache[key] = _MISSING_KEY
            except Exception:  # unreadable: not known, read from this field where needed
                pass

    def release(self) -> None:
        if self._message is not None:
            eccodes = load_eccodes()
            eccodes.codes_release(self._message.codes_id)
            self._message = None


class _Kind:
    """The first field of those that differ in time only (the same
    :func:`~virtualize.parsers.grib_kinds.time_free_signature`), and a copy of its handle
    that takes the other fields' times, to read their time keys."""

    def __init__(self, leader: _CachedField) -> None:
        self.leader = leader
        self._probe: Any = None

    def fill(self, field: _CachedField) -> bool:
        """Give ``field`` its index keys without a handle of its own: the time-free ones
        from the leader, the time ones from the probe set to its times, once the probe's
        header sections are byte for byte ``field``'s (else False: ``field`` needs its own
        handle)."""
        eccodes = load_eccodes()
        settings = time_settings(field.field.data)
        if settings is None:
            return False
        try:
            if self._probe is None:
                leader = self.leader._handle()
                self._probe = _message_class()(codes_id=eccodes.codes_clone(leader.codes_id))
            for key, value in settings:
                eccodes.codes_set_long(self._probe.codes_id, key, value)
            probe = header_sections(eccodes.codes_get_message(self._probe.codes_id))
        except Exception:
            return False
        if probe is None or probe != header_sections(field.field.data):
            return False
        field.share(self._probe, TIME_INDEX_KEYS)
        field.share(self.leader, TIME_FREE_INDEX_KEYS)
        return True

    def release(self) -> None:
        if self._probe is not None:
            load_eccodes().codes_release(self._probe.codes_id)
            self._probe = None


class _Fieldset(Sequence[_CachedField]):
    """The fields of one file as a cfgrib fieldset (field ids are positions)."""

    def __init__(self, fields: list[_CachedField]) -> None:
        self.fields = fields

    def __getitem__(self, index: Any) -> Any:
        return self.fields[index]

    def __len__(self) -> int:
        return len(self.fields)


class _SubFieldset(Mapping[int, _CachedField]):
    """Some fields of a fieldset, keyed by their position in it (a cfgrib mapping fieldset,
    whose field ids are then the positions in the file's list of fields)."""

    def __init__(self, fieldset: _Fieldset, ids: list[int]) -> None:
        self.fieldset = fieldset
        self.ids = ids

    def __getitem__(self, field_id: int) -> _CachedField:
        return self.fieldset.fields[field_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


class _Handles:
    """ecCodes handles of the fields, released on exit whatever happens."""

    def __init__(self, fields: list[Field], url: str) -> None:
        self.fields = fields
        self.url = url
        self.fieldset = _Fieldset([])
        self.kinds: dict[bytes, _Kind] = {}

    def __enter__(self) -> _Fieldset:
        """The fields, each with its handle, or, when an earlier field differs from it in
        time only, with its index keys known and its handle made when another key is read
        (``p`` parameters on ``l`` levels at ``s`` steps then cost ecCodes ``p * l`` parses
        of a message and evaluations of its parameter and level concepts, not
        ``p * l * s``)."""
        try:
            for field in self.fields:
                signature = time_free_signature(field.data)
                kind = self.kinds.get(signature) if signature is not None else None
                if kind is not None:
                    cached = _CachedField(field, None, opener=self._message)
                    if kind.fill(cached):
                        self.fieldset.fields.append(cached)
                        continue
                cached = _CachedField(field, self._message(field))
                self.fieldset.fields.append(cached)
                if signature is not None and kind is None:
                    self.kinds[signature] = _Kind(cached)
        except BaseException:
            self._release()
            raise
        return self.fieldset

    def _message(self, field: Field) -> Any:
        """The field's handle, as cfgrib's ``Message``."""
        eccodes = load_eccodes()
        try:
            handle = eccodes.codes_new_from_message(field.data)
        except Exception as error:
            raise InvalidFileError(
                f"ecCodes can't parse message {field.message.number} (field "
                f"{field.number}) at byte {field.message.offset}: {error}",
                url=self.url,
                hint="Check the file with ecCodes' grib_dump, or remove the message",
            ) from error
        try:
            return _message_class()(codes_id=handle)
        except Exception:
            eccodes.codes_release(handle)
            raise

    def __exit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        for kind in self.kinds.values():
            kind.release()
        for field in self.fieldset.fields:
            field.release()


def _cfgrib_datasets(fieldset: _Fieldset, filter_by_keys: dict[str, Any], url: str) -> list[Any]:
    """``cfgrib.open_datasets`` of the fieldset: cfgrib's steps (``open_variable_datasets``,
    ``raw_open_datasets``, ``merge_datasets``), with the fieldset where cfgrib takes a path.

    cfgrib indexes its input anew for every dataset it opens (once per ``paramId``, again
    for every split of a ``paramId`` into hypercubes): here the fieldset is indexed once,
    and every open is a sub-index of that index, which is what cfgrib's opens filter the
    file's index to."""
    load_eccodes()  # before cfgrib imports it: see virtualize._eccodes
    from cfgrib import cfmessage, dataset, messages, xarray_store

    index_keys = sorted({*dataset.INDEX_KEYS, "time", "step"} | set(filter_by_keys))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            index = messages.FieldsetIndex.from_fieldset(
                fieldset, index_keys, cfmessage.COMPUTED_KEYS
            ).subindex(filter_by_keys)
            datasets: list[Any] = []
            for param_id in sorted(index["paramId"]) if index.field_ids_index else []:
                datasets.extend(_raw_open_datasets(index, {**filter_by_keys, "paramId": param_id}))
            by_level: dict[str, list[Any]] = {}
            for ds in datasets:
                for _, da in ds.data_vars.items():
                    by_level.setdefault(da.attrs.get("GRIB_typeOfLevel", "undef"), []).append(ds)
            merged: list[Any] = []
            for type_of_level in sorted(by_level):
                for ds in xarray_store.merge_datasets(
                    by_level[type_of_level], join="exact", combine_attrs="identical"
                ):
                    merged.append(ds.squeeze())
        except (InvalidFileError, UnsupportedFeatureError):
            raise
        except Exception as error:
            raise UnsupportedFeatureError(
                f"cfgrib can't build datasets from the file: {type(error).__name__}: {error}",
                url=url,
                hint=_HINT,
            ) from error
    return merged


def _raw_open_datasets(index: Any, filter_by_keys: dict[str, Any]) -> list[Any]:
    """cfgrib's ``raw_open_datasets``: the dataset of the fields matching
    ``filter_by_keys``, or, when they are several hypercubes, the datasets cfgrib splits
    them into (by the key whose values differ, recursively)."""
    from cfgrib.dataset import DatasetBuildError

    try:
        return [_open_index(index.subindex(filter_by_keys))]
    except DatasetBuildError as error:
        splits = list(error.args[2])
    datasets: list[Any] = []
    for split in splits:
        datasets.extend(_raw_open_datasets(index, split))
    return datasets


def _open_index(index: Any) -> Any:
    """What ``xr.open_dataset(..., engine="cfgrib", backend_kwargs={"squeeze": False})``
    makes of the fields of ``index``: cfgrib's dataset components as xarray variables
    (backed by cfgrib's ``OnDiskArray``), CF-decoded by xarray, with its coordinates set."""
    import xarray as xr
    from cfgrib import dataset

    components = dataset.open_from_index(index, squeeze=False)
    store = _store_class()(components)
    variables, attributes = store.load()
    variables, attributes, coord_names = xr.conventions.decode_cf_variables(variables, attributes)
    ds = xr.Dataset(variables, attrs=attributes)
    ds = ds.set_coords(coord_names.intersection(variables))
    ds.encoding = store.get_encoding()
    return ds


@functools.cache
def _store_class() -> type:
    from cfgrib import xarray_plugin
    from xarray.backends.locks import ensure_lock

    class _Store(xarray_plugin.CfGribDataStore):
        """cfgrib's xarray store over a dataset already built (not over a file)."""

        def __init__(self, ds: Any) -> None:
            self.lock = ensure_lock(xarray_plugin.ECCODES_LOCK)
            self.ds = ds

    return _Store


# -- datasets to groups -------------------------------------------------------------------------


def _group(
    ds: Any,
    fieldset: _Fieldset,
    url: str,
    source: SourceInfo,
    drop: frozenset[str],
    encoded: dict[Any, ManifestArray],
) -> ManifestGroup:
    """One cfgrib dataset as a group: data variables referencing messages, inline coordinates
    (``encoded`` keeps those made for other groups: the datasets of a file mostly share
    their grid and times)."""
    import xarray as xr

    arrays: dict[str, ManifestArray] = {}
    coordinates = [str(name) for name in ds.coords if name not in drop]
    for name in coordinates:
        variable = ds.variables[name]
        key = _coordinate_key(name, variable)
        if key not in encoded:
            encoded[key] = _coordinate(xr.conventions.encode_cf_variable(variable, name=name))
        arrays[name] = encoded[key]
    unused = {c for c in coordinates if c not in ds.dims}
    for name, variable in ds.data_vars.items():
        if name in drop:
            continue
        listed = [
            c for c in coordinates if c not in ds.dims and set(ds[c].dims) <= set(variable.dims)
        ]
        unused -= set(listed)
        arrays[str(name)] = _data_array(str(name), variable.variable, listed, fieldset, url, source)
    attributes = _json_attributes(ds.attrs)
    if unused:
        attributes["coordinates"] = " ".join(sorted(unused))
    return ManifestGroup(arrays, {}, attributes)


#: The encoding entries xarray's CF encoder reads (cfgrib's others, such as the
#: ``filter_by_keys`` of the dataset, differ between datasets but change nothing).
_CF_ENCODING = frozenset(
    {"dtype", "units", "calendar", "_FillValue", "missing_value", "scale_factor", "add_offset"}
)


def _coordinate_key(name: str, variable: Any) -> tuple[Any, ...]:
    """What a coordinate's encoded form depends on: its name, dimensions, values, attributes
    and CF encoding."""
    values = np.asarray(variable.values)
    digest = (
        hashlib.blake2b(np.ascontiguousarray(values).view(np.uint8).tobytes()).hexdigest()
        if values.dtype.kind != "O"
        else repr(values.tolist())
    )
    return (
        name,
        variable.dims,
        values.dtype.str,
        values.shape,
        digest,
        repr(sorted(variable.attrs.items())),
        repr(sorted((k, v) for k, v in variable.encoding.items() if k in _CF_ENCODING)),
    )


def _json_attributes(attrs: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        converted = to_json_value(value)
        if converted is None and value is not None:
            converted = str(value)
        out[str(key)] = converted
    return out


def _coordinate(encoded: Any) -> ManifestArray:
    values = np.asarray(encoded.values)
    if values.dtype.kind == "O":
        values = values.astype(str)
    attributes = _json_attributes(encoded.attrs)
    if "_FillValue" in encoded.attrs:
        attributes["_FillValue"] = encode_fill_value(encoded.attrs["_FillValue"], values.dtype)
    return inline_array(values, tuple(str(d) for d in encoded.dims), attributes)


def _data_array(
    name: str,
    variable: Any,
    coordinates: list[str],
    fieldset: _Fieldset,
    url: str,
    source: SourceInfo,
) -> ManifestArray:
    """The data variable ``name``: a chunk per field of its hypercube."""
    from virtualize.codecs.grib import GRIBCodec

    on_disk, key = _on_disk_array(variable, url, name)
    geo_ndim = int(on_disk.geo_ndim)
    full_header = tuple(on_disk.shape[:-geo_ndim])
    field_shape = tuple(int(n) for n in on_disk.shape[-geo_ndim:])
    if not all(field_shape):
        raise InvalidFileError(
            f"the messages' grid has no points (shape {field_shape})",
            url=url,
            variable=name,
            hint="The file is damaged: check it with ecCodes' grib_dump",
        )
    ids = np.full(full_header, -1, dtype=np.int64)
    for header_indexes, field_ids in on_disk.field_id_index.items():
        ids[tuple(header_indexes)] = int(field_ids[0])
    if key is not None:
        for axis, item in enumerate(key[len(full_header) :]):
            if not isinstance(item, slice) or range(field_shape[axis])[item] != range(
                field_shape[axis]
            ):
                raise UnsupportedFeatureError(
                    "cfgrib presents part of the fields' grid", url=url, variable=name, hint=_HINT
                )
        ids = ids[tuple(key[: len(full_header)])]
    shape = tuple(int(n) for n in variable.shape)
    if ids.shape + field_shape != shape:
        raise UnsupportedFeatureError(
            f"the hypercube {ids.shape} of fields {field_shape} does not match cfgrib's shape "
            f"{shape}",
            url=url,
            variable=name,
            hint=_HINT,
        )
    numbers = {fieldset.fields[i].field.number for i in np.unique(ids[ids >= 0]).tolist()}
    # one field position for the whole array: the codec picks it out of the referenced
    # message; else later fields are held inline as standalone messages
    codec_field = numbers.pop() if len(numbers) == 1 else 0
    offsets = np.zeros(ids.shape, dtype=np.uint64)
    lengths = np.zeros(ids.shape, dtype=np.uint64)
    path_ids = np.full(ids.shape, MISSING, dtype=np.uint32)
    inline: dict[int, bytes] = {}
    for position in np.ndindex(*ids.shape):
        field_id = int(ids[position])
        if field_id < 0:
            continue
        field = fieldset.fields[field_id].field
        if field.number != codec_field:
            path_ids[position] = INLINE
            lengths[position] = len(field.data)
            inline[int(np.ravel_multi_index(position, ids.shape)) if ids.shape else 0] = field.data
        else:
            path_ids[position] = 0
            offsets[position] = field.message.offset
            lengths[position] = field.message.length
    grid = ids.shape + (1,) * len(field_shape)
    manifest = ChunkManifest(
        [url],
        path_ids.reshape(grid),
        offsets.reshape(grid),
        lengths.reshape(grid),
        inline=inline,
        sources=[source],
        validate=False,
    )
    attributes = _json_attributes(variable.attrs)
    if coordinates:
        attributes["coordinates"] = " ".join(coordinates)
    metadata = array_metadata(
        shape,
        (1,) * len(ids.shape) + field_shape,
        zarr_data_type(np.dtype(on_disk.dtype)),
        math.nan,
        [GRIBCodec(field=codec_field)],
        attributes,
        tuple(str(d) for d in variable.dims),
    )
    return ManifestArray(metadata, manifest)


def _on_disk_array(variable: Any, url: str, name: str) -> tuple[Any, tuple[Any, ...] | None]:
    """cfgrib's ``OnDiskArray`` under an xarray variable's lazy wrappers, and the basic index
    (squeezing) xarray applies to it."""
    load_eccodes()  # before cfgrib imports it: see virtualize._eccodes
    from cfgrib.dataset import OnDiskArray
    from xarray.core import indexing

    data = variable._data
    key: tuple[Any, ...] | None = None
    for _ in range(16):
        if isinstance(data, OnDiskArray):
            return data, key
        if isinstance(data, indexing.LazilyIndexedArray):
            if key is not None or not isinstance(data.key, indexing.BasicIndexer):
                break
            key = tuple(data.key.tuple)
            data = data.array
        elif hasattr(data, "array"):
            data = data.array
        else:
            break
    raise UnsupportedFeatureError(
        f"cfgrib's data is not in the expected form ({type(data).__name__})",
        url=url,
        variable=name,
        hint="Report this with the versions of cfgrib and xarray",
    )


# -- group names --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Keys:
    type_of_level: str
    step_type: str
    level: str


def _keys(ds: Any) -> _Keys:
    first = next(iter(ds.data_vars.values()), None)
    attrs = first.attrs if first is not None else {}
    type_of_level = str(attrs.get("GRIB_typeOfLevel", "undef"))
    step_type = str(attrs.get("GRIB_stepType", "undef"))
    level = ""
    if type_of_level in ds.coords:
        values = np.asarray(ds.coords[type_of_level].values)
        level = f"{values.item():g}" if values.ndim == 0 else f"{values.size}levels"
    return _Keys(type_of_level, step_type, level)


def group_names(datasets: Sequence[Any]) -> list[str]:
    """The group name of each of cfgrib's datasets (the rule in the module documentation)."""
    keys = [_keys(ds) for ds in datasets]
    names = [k.type_of_level for k in keys]
    for extra in ("step_type", "level"):
        for name in {n for n in names if names.count(n) > 1}:
            clash = [i for i, n in enumerate(names) if n == name]
            values = {getattr(keys[i], extra) for i in clash}
            if len(values) > 1:
                for i in clash:
                    value = getattr(keys[i], extra)
                    names[i] = f"{names[i]}_{value}" if value else names[i]
    for name in {n for n in names if names.count(n) > 1}:
        clash = [i for i, n in enumerate(names) if n == name]
        for number, i in enumerate(clash, start=1):
            names[i] = f"{name}_{number}"
    return names
