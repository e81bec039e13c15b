"""FITS parser: chunk manifests from the headers of a FITS file, read with astropy.

Only headers (2880-byte blocks, parsed with :meth:`astropy.io.fits.Header.fromstring`) and,
for tile-compressed images, the rows of the compressed table are read, through obstore and
the :class:`~virtualize.ObjectStoreRegistry`; the file is never opened by a local path.
Values read through the returned store equal ``astropy.io.fits.open(path)[i].data``.

Layout of the store
-------------------
Every HDU is a group; the root group holds no arrays. Group names are the HDU's ``EXTNAME``
(``"PRIMARY"`` for the primary HDU without one, ``"COMPRESSED_IMAGE"`` for a tile-compressed
image without one, ``"HDU<i>"`` for other extensions without one); names shared by several
HDUs get ``_<EXTVER>`` appended (``SCI_1``, ``SCI_2``), and ``_hdu<i>`` if that still
repeats. ``/`` in a name becomes ``_``. ``FITSParser(hdu=...)`` (an index, an ``EXTNAME``, a
group name, or an ``(EXTNAME, EXTVER)`` pair) puts that one HDU in the root group instead, so
``open_virtual_dataset`` returns it as a dataset.

- Images (primary, ``IMAGE`` extensions and tile-compressed images) are the variable
  ``"data"``, with the FITS axes reversed into numpy order (``NAXIS1`` varies fastest and is
  the last dimension). Dimensions: ``("x",)`` in 1-D, ``("y", "x")`` in 2-D, and
  ``("axis<n>", ..., "axis2", "axis1")`` from three dimensions on, numbered as the FITS axes.
  Axes with a linear world coordinate system (no projection or algorithm code in ``CTYPEn``,
  no rotation or coupling through ``PCi_j``/``CDi_j``/``CROTAn``) get a coordinate of the
  dimension's name, ``CRVAL + CDELT * PC * (pixel - CRPIX)`` in the header's ``CUNITn``.
- Binary (``BINTABLE``) and ASCII (``TABLE``) tables: one variable per column, named by
  ``TTYPEn`` (``"col<n>"`` without one), with dimension ``"row"`` followed by
  ``"<column>_dim_0"``, ``"<column>_dim_1"``, ... for vector columns (``TDIMn`` shapes
  reversed into numpy order). Each column carries its ``TFORM``, ``TUNIT``, ``TDIM``,
  ``TNULL``, ``TSCAL``, ``TZERO`` and ``TDISP`` as attributes (without the number).
- The group's attributes are the HDU's header cards (for a tile-compressed image, the image
  header astropy shows): values as JSON (complex numbers as ``[real, imag]``, undefined
  values as null); ``COMMENT`` and ``HISTORY`` as lists of strings; for a repeated keyword
  the first value; cards without a keyword are left out.

Values are astropy's. ``BSCALE``/``BZERO``/``BLANK`` and ``TSCALn``/``TZEROn`` decode
through :class:`~virtualize.codecs.fits.FITSScaleCodec` in astropy's types (``uint=True``:
BZERO = 2**15, 2**31, 2**63 give unsigned integers; BITPIX 8 is unsigned, with
BZERO = -128 signed). Binary-table columns are cut out of whole rows by
:class:`~virtualize.codecs.fits.FITSColumnCodec` (a chunk is a run of rows). The tiles of
compressed images are chunks decoded by :class:`~virtualize.codecs.fits.FITSTileCodec` with
astropy's decompressors and dithering. ASCII tables hold text, so their values are read at
parse time and held inline up to ``max_inline_bytes``.

Refused with :class:`~virtualize.errors.UnsupportedFeatureError` (or left out with
``on_unsupported="skip"``): variable-length array columns (``P``/``Q``), random-groups
primary HDUs, unknown extension types, ASCII tables larger than ``max_inline_bytes``, and
the few layouts astropy itself can't read.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import obstore
from zarr.codecs import BytesCodec
from zarr.core.dtype import get_data_type_from_native_dtype

from virtualize.codecs.fits import (
    BITPIX_TYPES,
    ColumnKind,
    FITSColumnCodec,
    FITSScaleCodec,
    FITSTileCodec,
    TileSpec,
    column_decoded_dtype,
)
from virtualize.errors import (
    InvalidFileError,
    SkippedVariableWarning,
    UnsupportedFeatureError,
)
from virtualize.io import head
from virtualize.manifests import ChunkManifest, ManifestArray, ManifestGroup, SourceInfo
from virtualize.parsers.damaged import library_errors
from virtualize.parsers.hdf_common import (
    DEFAULT_MAX_CHUNK_BYTES,
    array_metadata,
    chunk_counts,
    contiguous_chunks,
    contiguous_manifest,
)
from virtualize.parsers.inline import default_fill_value, inline_array
from virtualize.registry import ObjectStoreRegistry, normalize_url
from virtualize.store import ManifestStore

__all__ = ["FITSParser"]

BLOCK = 2880
CARD = 80
HDUSelector = int | str | tuple[str, int]

#: Column attributes kept on table variables (``<keyword><n>`` in the header).
COLUMN_KEYWORDS = ("TFORM", "TUNIT", "TDIM", "TNULL", "TSCAL", "TZERO", "TDISP")
#: Units xarray would decode as time deltas; not copied to a coordinate's ``units``.
_TIME_UNITS = frozenset(
    {"days", "hours", "minutes", "seconds", "milliseconds", "microseconds", "nanoseconds"}
)
_TFORM = re.compile(r"^\s*(\d*)\s*([LXBIJKAEDCMPQ])(.*)$")
#: Bytes per element and stored numpy type of each binary-table format letter.
_BINARY_FORMATS: dict[str, tuple[int, str]] = {
    "L": (1, "|u1"),
    "B": (1, "|u1"),
    "I": (2, ">i2"),
    "J": (4, ">i4"),
    "K": (8, ">i8"),
    "A": (1, "|S1"),
    "E": (4, ">f4"),
    "D": (8, ">f8"),
    "C": (8, ">c8"),
    "M": (16, ">c16"),
    "P": (8, ">i4"),
    "Q": (16, ">i8"),
}
_PREFIX_READS = (64, 1024)
#: Builders of an HDU's variables, by name (run one by one, so each can be refused alone).
_Variables = dict[str, Callable[[], ManifestArray]]
_PREFIX_CANDIDATES = (4, 8, 16, 32, 64, 128, 256, 512, 1024)


class FITSParser:
    """Parse FITS files (images, binary and ASCII tables, tile-compressed images).

    Parameters
    ----------
    hdu
        Which HDU to open: None (default) for all, one group each; or an index, an
        ``EXTNAME`` (case-insensitive), a group name, or an ``(EXTNAME, EXTVER)`` pair, whose
        variables and header then make up the root group.
    group
        The group to open, by name, as in the other parsers (the same as ``hdu=group``);
        None, ``""`` or ``"/"`` for all.
    drop_variables
        Variables to leave out: a name (``"data"``, a column name) drops it in every HDU, a
        path (``"SCI/data"``) in one.
    max_chunk_bytes
        Images are referenced in chunks of whole rows of about this size; binary tables in
        runs of rows of about this many bytes.
    max_inline_bytes
        ASCII tables (text that must be parsed) up to this size are read and held inline;
        larger ones are refused.
    on_unsupported
        ``"raise"`` (default): a variable that can't be referenced raises
        :class:`~virtualize.errors.UnsupportedFeatureError`. ``"skip"``: it is left out with
        a :class:`~virtualize.errors.SkippedVariableWarning`, and the store's ``skipped``
        maps its path to the reason.
    wcs_coordinates
        Give image axes with a linear world coordinate system a coordinate (default True).

    Examples
    --------
    >>> store = FITSParser()("s3://bucket/image.fits", registry)  # doctest: +SKIP
    >>> xr.open_zarr(store, group="PRIMARY", consolidated=False, zarr_format=3)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        hdu: HDUSelector | None = None,
        group: str | None = None,
        drop_variables: Iterable[str] | None = None,
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
        max_inline_bytes: int = 4 * 1024 * 1024,
        on_unsupported: Literal["raise", "skip"] = "raise",
        wcs_coordinates: bool = True,
    ) -> None:
        if on_unsupported not in ("raise", "skip"):
            raise ValueError(f"on_unsupported must be 'raise' or 'skip', got {on_unsupported!r}")
        if group not in (None, "", "/"):
            if hdu is not None:
                raise ValueError("pass hdu= or group=, not both")
            hdu = str(group).strip("/")
        _check_selector(hdu)
        self.hdu = hdu
        self.drop_variables = frozenset(drop_variables or ())
        self.max_chunk_bytes = max_chunk_bytes
        self.max_inline_bytes = max_inline_bytes
        self.on_unsupported = on_unsupported
        self.wcs_coordinates = wcs_coordinates

    def __repr__(self) -> str:
        return f"FITSParser(hdu={self.hdu!r}, drop_variables={sorted(self.drop_variables)!r})"

    def __call__(self, url: str, registry: ObjectStoreRegistry) -> ManifestStore:
        """Parse ``url`` and return a :class:`~virtualize.ManifestStore` over its HDUs."""
        url = normalize_url(url)
        source = _Source(registry, url)
        with library_errors(url, "astropy"):  # astropy parses header cards as they are used
            hdus = _scan(source)
            names = _group_names(hdus)
            context = _FileContext(self, source)
            if self.hdu is None:
                groups = {
                    name: context.group(hdu, name) for hdu, name in zip(hdus, names, strict=True)
                }
                root = ManifestGroup({}, groups, {})
            else:
                hdu, name = _select(hdus, names, self.hdu, url)
                root = context.group(hdu, name, path="")
        return ManifestStore(root, registry=registry, skipped=context.skipped)


def _check_selector(hdu: Any) -> None:
    if hdu is None or isinstance(hdu, str) or (isinstance(hdu, int) and not isinstance(hdu, bool)):
        return
    if isinstance(hdu, tuple) and len(hdu) == 2:
        name, version = hdu
        if isinstance(name, str) and isinstance(version, int) and not isinstance(version, bool):
            return
    raise ValueError(f"hdu must be an index, a name or an (EXTNAME, EXTVER) pair, got {hdu!r}")


# -- reading ----------------------------------------------------------------------------------


class _Source:
    """The file's bytes through the registry, with its parse-time information."""

    def __init__(self, registry: ObjectStoreRegistry, url: str) -> None:
        self.url = url
        self.info: SourceInfo = head(registry, url)
        self.store, self.path = registry.resolve(url)
        self.size = int(self.info.size or 0)

    def read(self, offset: int, length: int) -> bytes:
        return self.read_many([offset], [length])[0]

    def read_many(self, starts: Sequence[int], lengths: Sequence[int]) -> list[bytes]:
        if not starts:
            return []
        if any(s + n > self.size for s, n in zip(starts, lengths, strict=True)):
            raise InvalidFileError(
                "the file is shorter than its headers say (truncated?)", url=self.url
            )
        try:
            if len(starts) == 1:
                return [
                    bytes(
                        obstore.get_range(self.store, self.path, start=starts[0], length=lengths[0])
                    )
                ]
            ranges = obstore.get_ranges(
                self.store, self.path, starts=list(starts), lengths=list(lengths)
            )
        except Exception as error:
            raise InvalidFileError(f"reading the file failed: {error}", url=self.url) from error
        return [bytes(r) for r in ranges]


@dataclass(frozen=True)
class _HDU:
    """One HDU: its header, where its data is and what kind it is."""

    index: int
    header: Any
    header_bytes: bytes
    data_offset: int
    data_size: int
    kind: str  # image | bintable | table | compressed | groups | other

    @property
    def label(self) -> str:
        return f"HDU {self.index}"


def _scan(source: _Source) -> list[_HDU]:
    """Every HDU of the file, from its headers alone."""
    hdus: list[_HDU] = []
    offset = 0
    while offset + BLOCK <= source.size:
        hdu = _read_hdu(source, offset, len(hdus))
        if hdu is None:
            break
        end = hdu.data_offset + hdu.data_size
        if end > source.size:
            raise InvalidFileError(
                f"{hdu.label} is truncated: its data ends at byte {end:,}, the file has "
                f"{source.size:,}",
                url=source.url,
            )
        hdus.append(hdu)
        offset = hdu.data_offset + _padded(hdu.data_size)
    if not hdus:
        raise InvalidFileError(
            "not a FITS file (no complete 2880-byte header block)",
            url=source.url,
            hint="Pick the parser that matches the file's format",
        )
    return hdus


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _read_hdu(source: _Source, offset: int, index: int) -> _HDU | None:
    """The HDU whose header starts at ``offset``, or None if no extension starts there."""
    # most headers fit in a few blocks: read four at once, then more and more
    blocks = bytearray(source.read(offset, min(4 * BLOCK, (source.size - offset) // BLOCK * BLOCK)))
    magic = bytes(blocks[:8])
    if index == 0 and magic != b"SIMPLE  ":
        raise InvalidFileError(
            "not a FITS file (it does not start with SIMPLE)",
            url=source.url,
            hint="Pick the parser that matches the file's format",
        )
    if index > 0 and magic != b"XTENSION":
        if bytes(blocks).strip(b"\0 "):
            warnings.warn(
                f"{source.url}: the {source.size - offset:,} bytes after HDU {index - 1} are "
                "not an HDU and are ignored (as astropy does)",
                stacklevel=4,
            )
        return None
    end = _find_end(blocks, 0)
    batch = 16
    while end is None:
        start = offset + len(blocks)
        length = min(batch * BLOCK, (source.size - start) // BLOCK * BLOCK)
        if length <= 0:
            raise InvalidFileError(f"the header of HDU {index} has no END card", url=source.url)
        scanned = len(blocks)
        blocks += source.read(start, length)
        end = _find_end(blocks, scanned)
        batch = min(batch * 4, 256)
    header = _parse_header(bytes(blocks[:end]), source.url, index)
    kind, size = _layout(header, index, source.url)
    return _HDU(
        index=index,
        header=header,
        header_bytes=bytes(blocks[: _padded(end)]),
        data_offset=offset + _padded(end),
        data_size=size,
        kind=kind,
    )


def _find_end(blocks: bytearray, start: int) -> int | None:
    """Where the header ends (after its END card), searching cards from ``start``."""
    for position in range(start, len(blocks) - CARD + 1, CARD):
        if (
            blocks[position : position + 3] == b"END"
            and not bytes(blocks[position + 3 : position + CARD]).strip()
        ):
            return position + CARD
    return None


def _parse_header(data: bytes, url: str, index: int) -> Any:
    from astropy.io.fits import Header

    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as error:
        raise InvalidFileError(
            f"the header of HDU {index} holds non-ASCII bytes ({error})", url=url
        ) from error
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Header.fromstring(text)
    except Exception as error:
        raise InvalidFileError(
            f"the header of HDU {index} cannot be parsed ({error})", url=url
        ) from error


def _layout(header: Any, index: int, url: str) -> tuple[str, int]:
    """The HDU's kind and the size of its data in bytes (before padding)."""
    bitpix = _keyword(header, "BITPIX", int, url, index)
    naxis = _keyword(header, "NAXIS", int, url, index)
    axes = [_keyword(header, f"NAXIS{i}", int, url, index) for i in range(1, naxis + 1)]
    if bitpix not in BITPIX_TYPES or naxis < 0 or any(n < 0 for n in axes):
        raise InvalidFileError(f"HDU {index} has an invalid BITPIX ({bitpix}) or NAXIS", url=url)
    if index == 0:
        groups = header.get("GROUPS") is True and naxis > 0 and axes[0] == 0
        kind = "groups" if groups else "image"
    else:
        kind = _extension_kind(header)
    if naxis == 0:
        return kind, 0
    elements = math.prod(axes[1:] if kind == "groups" else axes)
    gcount = int(header.get("GCOUNT", 1))
    pcount = int(header.get("PCOUNT", 0))
    return kind, abs(bitpix) // 8 * gcount * (pcount + elements)


def _extension_kind(header: Any) -> str:
    xtension = str(header.get("XTENSION", "")).rstrip()
    if xtension == "IMAGE":
        return "image"
    if xtension in ("BINTABLE", "A3DTABLE"):
        return "compressed" if header.get("ZIMAGE") is True else "bintable"
    if xtension == "TABLE":
        return "table"
    return "other"


def _keyword(header: Any, key: str, kind: type, url: str, index: int) -> Any:
    """A required keyword of the right type, or InvalidFileError."""
    value = header.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        raise InvalidFileError(
            f"HDU {index}: keyword {key} is missing or not {kind.__name__} ({value!r})",
            url=url,
            hint="The file is not valid FITS",
        )
    return value


# -- names ------------------------------------------------------------------------------------


def _extname(hdu: _HDU) -> str:
    name = hdu.header.get("EXTNAME")
    if isinstance(name, str) and name.strip():
        return name.strip()
    if hdu.index == 0:
        return "PRIMARY"
    if hdu.kind == "compressed":
        return "COMPRESSED_IMAGE"
    return f"HDU{hdu.index}"


def _node_name(name: str) -> str:
    """A valid zarr node name for ``name``."""
    name = name.replace("/", "_")
    if name.startswith("__"):
        name = "_" + name.lstrip("_")
    return name if name.strip(".") else f"_{name}"


def _group_names(hdus: Sequence[_HDU]) -> list[str]:
    """One distinct group name per HDU (see the module docstring)."""
    base = [_node_name(_extname(hdu)) for hdu in hdus]
    repeated = Counter(base)
    names = [
        f"{name}_{hdu.header.get('EXTVER', 1)}" if repeated[name] > 1 else name
        for hdu, name in zip(hdus, base, strict=True)
    ]
    repeated = Counter(names)
    return [
        f"{name}_hdu{hdu.index}" if repeated[name] > 1 else name
        for hdu, name in zip(hdus, names, strict=True)
    ]


def _select(
    hdus: Sequence[_HDU], names: Sequence[str], selector: HDUSelector, url: str
) -> tuple[_HDU, str]:
    """The HDU ``selector`` names, as astropy's ``hdul[selector]`` finds it."""
    for hdu, name in zip(hdus, names, strict=True):
        if _selects(selector, hdu, name):
            return hdu, name
    raise InvalidFileError(
        f"no HDU {selector!r}",
        url=url,
        hint=f"HDUs here (index: group name): {dict(enumerate(names))}",
    )


def _selects(selector: HDUSelector, hdu: _HDU, name: str) -> bool:
    if isinstance(selector, bool):
        return False
    if isinstance(selector, int):
        return hdu.index == selector
    if isinstance(selector, tuple):
        extname, extver = selector
        return _extname(hdu).upper() == extname.upper() and hdu.header.get("EXTVER", 1) == extver
    return selector.upper() in (_extname(hdu).upper(), name.upper())


# -- attributes -------------------------------------------------------------------------------


def _header_attributes(header: Any) -> dict[str, Any]:
    """A header's cards as JSON attributes (see the module docstring)."""
    attributes: dict[str, Any] = {}
    for card in header.cards:
        key = card.keyword
        if not key:
            continue
        if key in ("COMMENT", "HISTORY"):
            attributes.setdefault(key, []).append(str(card.value))
        elif key not in attributes:
            attributes[key] = _json_card_value(card.value)
    return attributes


def _json_card_value(value: Any) -> Any:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, complex):
        return [value.real, value.imag]
    if type(value).__name__ == "Undefined":
        return None
    return str(value)


# -- arrays -----------------------------------------------------------------------------------


def _zarr_type(dtype: np.dtype[Any]) -> Any:
    return get_data_type_from_native_dtype(dtype)


def _bytes_codec(dtype: np.dtype[Any], endian: Literal["big", "little"]) -> BytesCodec:
    return BytesCodec(endian=endian if dtype.itemsize > 1 else None)


def _image_dims(ndim: int) -> tuple[str, ...]:
    if ndim == 1:
        return ("x",)
    if ndim == 2:
        return ("y", "x")
    return tuple(f"axis{n}" for n in range(ndim, 0, -1))


def _image_shape(header: Any) -> tuple[int, ...]:
    naxis = int(header.get("NAXIS", 0))
    return tuple(int(header[f"NAXIS{i}"]) for i in range(naxis, 0, -1))


def _image_scale(
    header: Any, stored: np.dtype[Any], refuse: Callable[[str], Exception]
) -> FITSScaleCodec | None:
    """The codec of an image's ``BSCALE``/``BZERO``/``BLANK``, or None when astropy returns
    the stored values."""
    bscale = header.get("BSCALE", 1)
    bzero = header.get("BZERO", 0)
    blank = header.get("BLANK")
    for key, value in (("BSCALE", bscale), ("BZERO", bzero)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise refuse(f"its {key} is not a number ({value!r})")
    # astropy ignores (with a warning) a BLANK that is not an integer or is on float data
    if not isinstance(blank, int | np.integer) or stored.kind == "f":
        blank = None
    if bscale == 1 and bzero == 0 and blank is None:
        return None
    codec = FITSScaleCodec(
        convention="image", stored=stored.name, bscale=bscale, bzero=bzero, blank=blank
    )
    if codec.decoded == np.int8 and blank:
        raise refuse(
            f"BLANK = {blank} on data astropy reads as {codec.decoded} (BZERO = {bzero}): "
            "astropy cannot set NaN in integers and fails to read it too"
        )
    return codec


def _linear_coordinates(
    header: Any, shape: tuple[int, ...], dims: tuple[str, ...]
) -> dict[str, ManifestArray]:
    """Coordinates of the image axes whose world coordinates are linear (see the module
    docstring), by dimension name."""
    naxis = len(shape)
    coupled = _coupled_axes(header, naxis)
    coordinates: dict[str, ManifestArray] = {}
    for axis in range(1, naxis + 1):
        values = _axis_values(header, axis, shape[naxis - axis], coupled)
        if values is None:
            continue
        dim = dims[naxis - axis]
        coordinates[dim] = inline_array(values, (dim,), _axis_attributes(header, axis))
    return coordinates


def _coupled_axes(header: Any, naxis: int) -> set[int]:
    coupled: set[int] = set()
    for i in range(1, naxis + 1):
        for j in range(1, naxis + 1):
            if i == j:
                continue
            for key in (f"PC{i}_{j}", f"CD{i}_{j}"):
                value = header.get(key, 0)
                if not isinstance(value, int | float) or value != 0:
                    coupled |= {i, j}
    return coupled


def _axis_values(header: Any, axis: int, length: int, coupled: set[int]) -> np.ndarray | None:
    keys = (f"CRVAL{axis}", f"CDELT{axis}", f"CRPIX{axis}", f"CD{axis}_{axis}")
    ctype = header.get(f"CTYPE{axis}", "")
    if not any(key in header for key in keys) or axis in coupled:
        return None
    if not isinstance(ctype, str) or "-" in ctype.strip() or header.get(f"CROTA{axis}", 0) != 0:
        return None
    try:
        crval = float(header.get(f"CRVAL{axis}", 0.0))
        crpix = float(header.get(f"CRPIX{axis}", 0.0))
        if f"CD{axis}_{axis}" in header:
            delta, pc = float(header[f"CD{axis}_{axis}"]), 1.0
        else:
            delta = float(header.get(f"CDELT{axis}", 1.0))
            pc = float(header.get(f"PC{axis}_{axis}", 1.0))
    except (TypeError, ValueError):
        return None
    pixels = np.arange(1, length + 1, dtype=np.float64)
    return crval + delta * (pc * (pixels - crpix))


def _axis_attributes(header: Any, axis: int) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    ctype = header.get(f"CTYPE{axis}")
    unit = header.get(f"CUNIT{axis}")
    if isinstance(ctype, str) and ctype.strip():
        attributes["CTYPE"] = ctype.strip()
        attributes["long_name"] = ctype.strip()
    if isinstance(unit, str) and unit.strip():
        attributes["CUNIT"] = unit.strip()
        if unit.strip().lower() not in _TIME_UNITS and "since" not in unit:
            attributes["units"] = unit.strip()
    return attributes


# -- tables -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    """One binary-table column: where it is in a row and its format."""

    number: int
    name: str
    repeat: int
    code: str
    rest: str
    offset: int
    width: int


def _columns(header: Any, refuse: Callable[[str], Exception]) -> list[_Column]:
    """The columns of a binary table, from ``TFIELDS``/``TTYPEn``/``TFORMn``."""
    count = int(header.get("TFIELDS", 0))
    columns: list[_Column] = []
    offset = 0
    for number in range(1, count + 1):
        tform = header.get(f"TFORM{number}")
        match = _TFORM.match(tform.upper()) if isinstance(tform, str) else None
        if match is None:
            raise refuse(f"TFORM{number} = {tform!r} is not a binary-table format")
        repeat = int(match.group(1) or 1)
        code = match.group(2)
        itemsize, _ = _BINARY_FORMATS.get(code, (0, ""))
        width = -(-repeat // 8) if code == "X" else repeat * itemsize
        ttype = header.get(f"TTYPE{number}")
        name = ttype.strip() if isinstance(ttype, str) and ttype.strip() else f"col{number}"
        columns.append(_Column(number, name, repeat, code, match.group(3), offset, width))
        offset += width
    names = [c.name.upper() for c in columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise refuse(f"it repeats column names {repeated} (astropy refuses such tables too)")
    row_bytes = int(header.get("NAXIS1", 0))
    if offset > row_bytes:
        raise refuse(f"its columns need {offset} bytes per row, NAXIS1 is {row_bytes}")
    return columns


def _tdim(header: Any, number: int) -> tuple[int, ...] | None:
    """``TDIMn`` in numpy order (astropy's ``Column._dims``), or None."""
    value = header.get(f"TDIM{number}")
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"\s*\(\s*(\d+(?:\s*,\s*\d+)*)\s*\)\s*", value)
    if match is None:
        return None
    return tuple(int(n) for n in reversed(match.group(1).split(",")))


def _column_layout(
    header: Any, column: _Column, refuse: Callable[[str], Exception]
) -> tuple[tuple[int, ...], ColumnKind, str]:
    """A column's element shape, its :class:`FITSColumnCodec` kind and stored type,
    following astropy's handling of ``TDIMn``."""
    dims = _tdim(header, column.number)
    if column.code == "X":
        return (column.repeat,), "bits", "|u1"
    if column.code == "A":
        if dims is None or math.prod(dims) > column.repeat:
            return (), "string", f"|S{column.repeat}"
        if math.prod(dims) < column.repeat:
            raise refuse(f"its TDIM {dims[::-1]} covers fewer characters than the column holds")
        return dims[:-1], "string", f"|S{dims[-1]}"
    kind: ColumnKind = "logical" if column.code == "L" else "plain"
    stored = _BINARY_FORMATS[column.code][1]
    if dims is not None and math.prod(dims) <= column.repeat:
        if math.prod(dims) < column.repeat:
            raise refuse(f"its TDIM {dims[::-1]} covers fewer elements than the column holds")
        return dims, kind, stored
    return ((column.repeat,) if column.repeat > 1 else ()), kind, stored


def _column_scale(
    header: Any, column: _Column, stored: np.dtype[Any], refuse: Callable[[str], Exception]
) -> FITSScaleCodec | None:
    """The codec of a numeric column's ``TSCALn``/``TZEROn``, or None."""
    if column.code not in "BIJKEDCM":
        return None
    bscale = header.get(f"TSCAL{column.number}")
    bzero = header.get(f"TZERO{column.number}")
    scaled = bscale not in ("", None, 1)
    shifted = bzero not in ("", None, 0)
    if not (scaled or shifted):
        return None
    for key, value in (("TSCAL", bscale), ("TZERO", bzero)):
        if value not in ("", None) and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise refuse(f"its {key}{column.number} is not a number ({value!r})")
    if column.code in "CM":
        raise refuse(
            "it is a scaled complex column, which astropy reads without the imaginary part"
        )
    decoded = column_decoded_dtype(stored, bzero if shifted else 0)
    if decoded.kind == "u" and (scaled or isinstance(bzero, float)):
        raise refuse(
            f"TZERO{column.number} makes it unsigned, but astropy can't apply TSCAL or a "
            "float TZERO to unsigned integers and fails to read it too"
        )
    return FITSScaleCodec(
        convention="column",
        stored=stored.name,
        bscale=bscale if scaled else 1,
        bzero=bzero if shifted else 0,
    )


def _column_attributes(header: Any, number: int) -> dict[str, Any]:
    return {
        key: _json_card_value(header[f"{key}{number}"])
        for key in COLUMN_KEYWORDS
        if f"{key}{number}" in header
    }


# -- one file ---------------------------------------------------------------------------------


class _FileContext:
    """Parsing one file: the parser's options, the source and what was skipped."""

    def __init__(self, parser: FITSParser, source: _Source) -> None:
        self.parser = parser
        self.source = source
        self.url = source.url
        self.skipped: dict[str, str] = {}

    def group(self, hdu: _HDU, name: str, path: str | None = None) -> ManifestGroup:
        """The group of one HDU; ``path`` is its place in the store (its name by default)."""
        prefix = name if path is None else path
        build = {
            "image": self._image,
            "compressed": self._compressed_image,
            "bintable": self._binary_table,
            "table": self._ascii_table,
        }.get(hdu.kind)
        header = hdu.header
        arrays: dict[str, ManifestArray] = {}
        if build is None:
            self._refused(prefix or name, self._unsupported(name, _why_unsupported(hdu)))
        else:
            try:
                header, variables = self._guarded(name, lambda: build(hdu, name))
            except UnsupportedFeatureError as error:
                self._refused(prefix or name, error)
                variables = {}
            for variable, make in variables.items():
                if self._dropped(variable, prefix):
                    continue
                try:
                    arrays[variable] = self._guarded(f"{name}/{variable}", make)
                except UnsupportedFeatureError as error:
                    self._refused(f"{prefix}/{variable}" if prefix else variable, error)
        return ManifestGroup(arrays, {}, _header_attributes(header))

    def _guarded[T](self, label: str, build: Callable[[], T]) -> T:
        """``build()``, with a header that doesn't hold what it must turned into
        :class:`~virtualize.errors.InvalidFileError` naming the HDU or variable."""
        try:
            return build()
        except (KeyError, ValueError, TypeError, IndexError) as error:
            raise InvalidFileError(
                f"its header cannot be interpreted ({type(error).__name__}: {error})",
                url=self.url,
                variable=label,
                hint="The file is not valid FITS",
            ) from error

    def _dropped(self, variable: str, prefix: str) -> bool:
        drop = self.parser.drop_variables
        return variable in drop or f"{prefix}/{variable}" in drop

    def _refused(self, label: str, error: UnsupportedFeatureError) -> None:
        if self.parser.on_unsupported != "skip":
            raise error
        self.skipped[label] = str(error)
        warnings.warn(str(error), SkippedVariableWarning, stacklevel=4)

    def _unsupported(
        self, variable: str, reason: str, hint: str | None = None
    ) -> UnsupportedFeatureError:
        return UnsupportedFeatureError(
            reason,
            url=self.url,
            variable=variable,
            hint=hint
            or "Pass drop_variables=[...] or on_unsupported='skip' to leave it out, or "
            "hdu=... to open another HDU",
        )

    def _refuser(self, variable: str) -> Callable[[str], Exception]:
        return lambda reason: self._unsupported(variable, reason)

    # -- images -------------------------------------------------------------------------------

    def _image(self, hdu: _HDU, name: str) -> tuple[Any, _Variables]:
        header = hdu.header
        shape = _image_shape(header)
        if not shape or 0 in shape:
            return header, {}
        if int(header.get("PCOUNT", 0)) != 0 or int(header.get("GCOUNT", 1)) != 1:
            raise self._unsupported(f"{name}/data", "an image with PCOUNT/GCOUNT groups")
        variables: _Variables = {"data": lambda: self._image_array(hdu, f"{name}/data", shape)}
        variables.update(self._coordinates(header, shape))
        return header, variables

    def _coordinates(self, header: Any, shape: tuple[int, ...]) -> _Variables:
        if not self.parser.wcs_coordinates:
            return {}
        coordinates = _linear_coordinates(header, shape, _image_dims(len(shape)))
        return {dim: functools.partial(_same, array) for dim, array in coordinates.items()}

    def _image_array(self, hdu: _HDU, label: str, shape: tuple[int, ...]) -> ManifestArray:
        stored = np.dtype(BITPIX_TYPES[hdu.header["BITPIX"]])
        chunks = contiguous_chunks(shape, stored.itemsize, self.parser.max_chunk_bytes)
        manifest = contiguous_manifest(
            self.url, self.source.info, hdu.data_offset, shape, chunks, stored
        )
        codecs: list[Any] = [_bytes_codec(stored, "big")]
        scale = _image_scale(hdu.header, stored, self._refuser(label))
        decoded = stored
        if scale is not None:
            codecs.insert(0, scale)
            decoded = scale.decoded
        metadata = array_metadata(
            shape,
            chunks,
            _zarr_type(decoded),
            default_fill_value(decoded),
            codecs,
            {},
            _image_dims(len(shape)),
        )
        return ManifestArray(metadata, manifest)

    def _compressed_image(self, hdu: _HDU, name: str) -> tuple[Any, _Variables]:
        image = _CompressedImage(self, hdu, f"{name}/data")
        header = image.image_header
        shape = image.shape
        if not shape or 0 in shape or image.rows == 0:
            return header, {}
        variables: _Variables = {"data": image.array}
        variables.update(self._coordinates(header, shape))
        return header, variables

    # -- tables -------------------------------------------------------------------------------

    def _binary_table(self, hdu: _HDU, name: str) -> tuple[Any, _Variables]:
        header = hdu.header
        columns = _columns(header, self._refuser(name))
        row_bytes = int(header["NAXIS1"])
        rows = int(header["NAXIS2"])
        per_chunk = max(1, min(rows, self.parser.max_chunk_bytes // max(row_bytes, 1)))
        variables: _Variables = {}
        for column in columns:
            label = f"{name}/{column.name}"
            variable = _node_name(column.name)
            if variable in variables:
                variable = f"{variable}_{column.number}"
            variables[variable] = functools.partial(
                self._column_array, hdu, column, label, rows, per_chunk
            )
        return header, variables

    def _column_array(
        self, hdu: _HDU, column: _Column, label: str, rows: int, per_chunk: int
    ) -> ManifestArray:
        header = hdu.header
        refuse = self._refuser(label)
        if column.code in "PQ":
            raise refuse(
                "it is a variable-length array column (its values are on the heap, one array "
                "per row), which has no fixed shape"
            )
        if column.repeat == 0:
            raise refuse("it is a zero-width column (repeat count 0)")
        elements, kind, stored = _column_layout(header, column, refuse)
        width = (
            column.width if column.code in "AX" else math.prod(elements) * np.dtype(stored).itemsize
        )
        row_bytes = int(header["NAXIS1"])
        codecs: list[Any] = [
            FITSColumnCodec(
                row_bytes=row_bytes, offset=column.offset, width=width, kind=kind, stored=stored
            )
        ]
        decoded = _column_decoded(kind, np.dtype(stored))
        scale = _column_scale(header, column, decoded, refuse) if kind == "plain" else None
        if scale is not None:
            codecs.insert(0, scale)
            decoded = scale.decoded
        shape = (rows, *elements)
        chunks = (per_chunk, *(max(n, 1) for n in elements))
        dims = ("row", *(f"{_node_name(column.name)}_dim_{k}" for k in range(len(elements))))
        metadata = array_metadata(
            shape,
            chunks,
            _zarr_type(decoded),
            default_fill_value(decoded),
            codecs,
            _column_attributes(header, column.number),
            dims,
        )
        return ManifestArray(metadata, self._row_manifest(hdu, shape, chunks, row_bytes))

    def _row_manifest(
        self, hdu: _HDU, shape: tuple[int, ...], chunks: tuple[int, ...], row_bytes: int
    ) -> ChunkManifest:
        """Chunks that are runs of ``chunks[0]`` whole rows."""
        grid = chunk_counts(shape, chunks)
        if any(n == 0 for n in shape):
            return ChunkManifest.empty(grid)
        starts = np.arange(grid[0], dtype=np.uint64) * np.uint64(chunks[0])
        counts = np.minimum(np.uint64(chunks[0]), np.uint64(shape[0]) - starts)
        offsets = np.uint64(hdu.data_offset) + starts * np.uint64(row_bytes)
        lengths = counts * np.uint64(row_bytes)
        return ChunkManifest.from_single_url(
            self.url, offsets.reshape(grid), lengths.reshape(grid), source=self.source.info
        )

    def _ascii_table(self, hdu: _HDU, name: str) -> tuple[Any, _Variables]:
        header = hdu.header
        count = int(header.get("TFIELDS", 0))
        if hdu.data_size > self.parser.max_inline_bytes:
            raise self._unsupported(
                name,
                f"it is an ASCII table (text, parsed at read time by astropy) of "
                f"{hdu.data_size:,} bytes, more than max_inline_bytes="
                f"{self.parser.max_inline_bytes:,} allow to hold inline",
                hint="Raise max_inline_bytes, or pass on_unsupported='skip' or hdu=...",
            )
        names = []
        for number in range(1, count + 1):
            ttype = header.get(f"TTYPE{number}")
            names.append(
                ttype.strip() if isinstance(ttype, str) and ttype.strip() else f"col{number}"
            )
        table: list[Any] = []

        def column_array(index: int) -> ManifestArray:
            if not table:
                table.append(self._read_ascii_table(hdu, name))
            values = np.asarray(table[0].field(index))
            return inline_array(values, ("row",), _column_attributes(header, index + 1))

        return header, {
            _node_name(column): functools.partial(column_array, index)
            for index, column in enumerate(names)
        }

    def _read_ascii_table(self, hdu: _HDU, name: str) -> Any:
        from astropy.io.fits import TableHDU

        data = self.source.read(hdu.data_offset, hdu.data_size) if hdu.data_size else b""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table = TableHDU.fromstring(hdu.header_bytes + data, uint=True)
                return table.data
        except Exception as error:
            raise InvalidFileError(
                f"astropy cannot read ASCII table {name} ({error})", url=self.url, variable=name
            ) from error


def _same(array: ManifestArray) -> ManifestArray:
    return array


def _column_decoded(kind: str, stored: np.dtype[Any]) -> np.dtype[Any]:
    """The type :class:`FITSColumnCodec` decodes a column of ``kind`` to."""
    if kind in ("logical", "bits"):
        return np.dtype(bool)
    if kind == "string":
        return np.dtype(f"U{stored.itemsize}")
    return stored.newbyteorder("=")


def _why_unsupported(hdu: _HDU) -> str:
    if hdu.kind == "groups":
        return "it is a random-groups primary HDU, which has no array layout to reference"
    xtension = str(hdu.header.get("XTENSION", "")).strip()
    return f"it is an extension of type {xtension!r}, which no parser reads"


# -- tile-compressed images -------------------------------------------------------------------


class _CompressedImage:
    """A tile-compressed image: its image header, tiles and the codec that decodes them."""

    def __init__(self, context: _FileContext, hdu: _HDU, label: str) -> None:
        from astropy.io.fits.hdu.compressed._tiled_compression import _check_compressed_header
        from astropy.io.fits.hdu.compressed.header import _bintable_header_to_image_header

        self.context = context
        self.hdu = hdu
        self.label = label
        self.refuse = context._refuser(label)
        header = hdu.header
        try:
            _check_compressed_header(header)
            self.image_header = _bintable_header_to_image_header(header)
        except (KeyError, ValueError, TypeError, OverflowError, RuntimeError) as error:
            raise InvalidFileError(
                f"its compressed-image header is invalid ({error})",
                url=context.url,
                variable=label,
            ) from error
        self.zbitpix = int(header["ZBITPIX"])
        znaxis = int(header["ZNAXIS"])
        self.shape = tuple(int(header[f"ZNAXIS{i}"]) for i in range(znaxis, 0, -1))
        self.tile_shape = tuple(
            int(header.get(f"ZTILE{i}", header[f"ZNAXIS{i}"] if i == 1 else 1))
            for i in range(znaxis, 0, -1)
        )
        self.rows = int(header.get("NAXIS2", 0))

    def array(self) -> ManifestArray:
        header = self.hdu.header
        grid = chunk_counts(self.shape, self.tile_shape)
        if math.prod(grid) != self.rows:
            raise InvalidFileError(
                f"it has {self.rows} tiles, its tile grid {grid} needs {math.prod(grid)}",
                url=self.context.url,
                variable=self.label,
            )
        columns = {c.name.upper(): c for c in _columns(header, self.refuse)}
        table = self._read_rows(columns)
        codec, offsets, lengths = self._tiles(columns, table, grid)
        stored = np.dtype(BITPIX_TYPES[self.zbitpix])
        codecs: list[Any] = [codec]
        decoded = stored
        scale = _image_scale(self.image_header, stored, self.refuse)
        if scale is not None:
            codecs.insert(0, scale)
            decoded = scale.decoded
        manifest = ChunkManifest.from_single_url(
            self.context.url,
            offsets.reshape(grid),
            lengths.reshape(grid),
            source=self.context.source.info,
        )
        metadata = array_metadata(
            self.shape,
            self.tile_shape,
            _zarr_type(decoded),
            default_fill_value(decoded),
            codecs,
            {},
            _image_dims(len(self.shape)),
        )
        return ManifestArray(metadata, manifest)

    def _read_rows(self, columns: dict[str, _Column]) -> np.ndarray:
        """The compressed table's rows (descriptors and per-tile parameters)."""
        header = self.hdu.header
        row_bytes = int(header["NAXIS1"])
        wanted = ("COMPRESSED_DATA", "GZIP_COMPRESSED_DATA", "UNCOMPRESSED_DATA")
        fields: dict[str, tuple[Any, int]] = {}
        for name, column in columns.items():
            if name in wanted and column.code in "PQ":
                fields[name] = ((_BINARY_FORMATS[column.code][1], 2), column.offset)
            elif name in ("ZSCALE", "ZZERO", "ZBLANK") and column.code in "BIJKED":
                fields[name] = (_BINARY_FORMATS[column.code][1], column.offset)
        if "COMPRESSED_DATA" not in fields:
            raise self.refuse("its table has no COMPRESSED_DATA heap column")
        dtype = np.dtype(
            {
                "names": list(fields),
                "formats": [f for f, _ in fields.values()],
                "offsets": [o for _, o in fields.values()],
                "itemsize": row_bytes,
            }
        )
        data = self.context.source.read(self.hdu.data_offset, row_bytes * self.rows)
        return np.frombuffer(data, dtype=dtype)

    def _quantization(self, table: np.ndarray) -> tuple[bool, int, int]:
        """Whether tiles are quantised, astropy's dither method and the dither seed."""
        from astropy.io.fits.hdu.compressed._quantization import DITHER_METHODS

        header = self.hdu.header
        names = table.dtype.names or ()
        quantized = "ZSCALE" in names
        if quantized and "ZZERO" not in names:
            raise self.refuse("it has a ZSCALE column without a ZZERO column")
        if not quantized and ("ZSCALE" in header or "ZZERO" in header):
            raise self.refuse(
                "it gives ZSCALE/ZZERO as header keywords, which astropy ignores (it reads "
                "the quantised integers), so no reading is both standard and astropy's"
            )
        method = header.get("ZQUANTIZ", "NO_DITHER")
        if method not in DITHER_METHODS:
            raise self.refuse(f"its ZQUANTIZ = {method!r} is not a known quantisation method")
        return quantized, DITHER_METHODS[method], int(header.get("ZDITHER0", 0))

    def _tiles(
        self, columns: dict[str, _Column], table: np.ndarray, grid: tuple[int, ...]
    ) -> tuple[FITSTileCodec, np.ndarray, np.ndarray]:
        """The tile codec and each tile's byte range."""
        from astropy.io.fits.hdu.compressed._tiled_compression import _header_to_settings

        header = self.hdu.header
        quantized, dither, seed = self._quantization(table)
        zblank = header.get("ZBLANK", self.image_header.get("BLANK"))
        names = table.dtype.names or ()
        if "ZBLANK" in names and self.zbitpix > 0 and zblank is None:
            raise self.refuse("it has a ZBLANK column but no BLANK value to put in blank pixels")
        try:
            heap = {n: _heap_dtype(columns[n]) for n in names if n.endswith("DATA")}
        except ValueError as error:
            raise self.refuse(str(error)) from error
        heap_start = self.hdu.data_offset + int(
            header.get("THEAP", int(header["NAXIS1"]) * self.rows)
        )
        heap_end = self.hdu.data_offset + self.hdu.data_size
        specs: list[TileSpec] = []
        offsets = np.zeros(self.rows, dtype=np.uint64)
        lengths = np.zeros(self.rows, dtype=np.uint64)
        for row in range(self.rows):
            position = np.unravel_index(row, grid)
            kind, column = self._tile_column(table, row)
            count, start = (int(v) for v in table[column][row])
            length = count * np.dtype(heap[column]).itemsize
            if length <= 0 or heap_start + start + length > heap_end or start < 0:
                raise InvalidFileError(
                    f"tile {row} has an empty or out-of-range heap descriptor "
                    f"(offset {start}, {count} elements)",
                    url=self.context.url,
                    variable=self.label,
                )
            offsets[row] = heap_start + start
            lengths[row] = length
            specs.append(self._spec(table, row, kind, position, quantized, dither, seed, zblank))
        default, entries, prefix = _tile_table(
            self.context.source, specs, offsets, lengths, self.refuse
        )
        codec = FITSTileCodec(
            algorithm=str(header["ZCMPTYPE"]),
            zbitpix=self.zbitpix,
            settings=_header_to_settings(header),
            heap_dtype=heap["COMPRESSED_DATA"],
            quantized=quantized,
            dither_method=dither,
            zblank=None if zblank is None else int(zblank),
            default=default,
            tiles=entries,
            prefix_bytes=prefix,
            gzip_dtype=heap.get("GZIP_COMPRESSED_DATA", "|u1"),
            raw_dtype=heap.get("UNCOMPRESSED_DATA", "|u1"),
        )
        return codec, offsets, lengths

    def _tile_column(
        self, table: np.ndarray, row: int
    ) -> tuple[Literal["compressed", "gzip", "raw"], str]:
        """Where tile ``row`` is: astropy falls back to the lossless columns when its
        COMPRESSED_DATA is empty."""
        names = table.dtype.names or ()
        if int(table["COMPRESSED_DATA"][row][0]) != 0:
            return "compressed", "COMPRESSED_DATA"
        if "GZIP_COMPRESSED_DATA" in names:
            return "gzip", "GZIP_COMPRESSED_DATA"
        if "UNCOMPRESSED_DATA" in names:
            return "raw", "UNCOMPRESSED_DATA"
        raise InvalidFileError(
            f"tile {row} is empty and the table has no fallback column",
            url=self.context.url,
            variable=self.label,
        )

    def _spec(
        self,
        table: np.ndarray,
        row: int,
        kind: Literal["compressed", "gzip", "raw"],
        position: tuple[Any, ...],
        quantized: bool,
        dither: int,
        seed: int,
        zblank: Any,
    ) -> TileSpec:
        shape = tuple(
            min(t, n - int(p) * t)
            for t, n, p in zip(self.tile_shape, self.shape, position, strict=True)
        )
        edge = shape if shape != self.tile_shape else None
        if kind != "compressed":
            return TileSpec(kind, edge)
        names = table.dtype.names or ()
        blank = int(table["ZBLANK"][row]) if "ZBLANK" in names else zblank
        blank = None if blank is None else int(blank)
        if not quantized:
            return TileSpec(kind, edge, zblank=blank)
        return TileSpec(
            kind,
            edge,
            dither_row=row + seed if dither != -1 else 0,
            zscale=float(table["ZSCALE"][row]),
            zzero=float(table["ZZERO"][row]),
            zblank=blank,
        )


def _heap_dtype(column: _Column) -> str:
    """The element type of a heap column (the letter after ``P``/``Q``)."""
    letter = column.rest[:1]
    types = {"B": "|u1", "I": ">i2", "J": ">i4", "E": ">f4", "D": ">f8"}
    if column.code not in "PQ" or letter not in types:
        raise ValueError(f"heap column {column.name} has format {column.code}{column.rest}")
    return types[letter]


def _tile_table(
    source: _Source,
    specs: list[TileSpec],
    offsets: np.ndarray,
    lengths: np.ndarray,
    refuse: Callable[[str], Exception],
) -> tuple[TileSpec, list[tuple[int, str, TileSpec]], int]:
    """The tile codec's default spec, its table and how many leading bytes tell apart tiles
    of equal length that decode differently (read for those tiles only)."""
    default = Counter(specs).most_common(1)[0][0]
    by_length: dict[int, list[int]] = {}
    for row, length in enumerate(lengths.tolist()):
        by_length.setdefault(int(length), []).append(row)
    ambiguous = [rows for rows in by_length.values() if len({specs[r] for r in rows}) > 1]
    prefix, heads = _separating_prefix(source, ambiguous, specs, offsets, lengths, refuse)
    entries: dict[tuple[int, str], TileSpec] = {}
    ambiguous_rows = {r for rows in ambiguous for r in rows}
    for row, spec in enumerate(specs):
        if spec == default:
            continue
        key = heads[row][:prefix].hex() if row in ambiguous_rows else ""
        entries[(int(lengths[row]), key)] = spec
    return default, [(length, key, spec) for (length, key), spec in entries.items()], prefix


def _separating_prefix(
    source: _Source,
    groups: list[list[int]],
    specs: list[TileSpec],
    offsets: np.ndarray,
    lengths: np.ndarray,
    refuse: Callable[[str], Exception],
) -> tuple[int, dict[int, bytes]]:
    """The shortest prefix length after which equal-length tiles with different specs differ,
    and the leading bytes read."""
    if not groups:
        return 0, {}
    rows = sorted(r for group in groups for r in group)
    heads: dict[int, bytes] = {}
    for limit in _PREFIX_READS:
        sizes = [min(int(lengths[r]), limit) for r in rows]
        data = source.read_many([int(offsets[r]) for r in rows], sizes)
        heads = dict(zip(rows, data, strict=True))
        for prefix in (p for p in _PREFIX_CANDIDATES if p <= limit):
            if all(_separates(group, heads, specs, prefix) for group in groups):
                return prefix, heads
    raise refuse(
        "some of its tiles have the same compressed bytes (their first "
        f"{_PREFIX_READS[-1]} bytes) but decode differently, so a codec can't tell them apart"
    )


def _separates(
    group: list[int], heads: dict[int, bytes], specs: list[TileSpec], prefix: int
) -> bool:
    seen: dict[bytes, TileSpec] = {}
    for row in group:
        key = heads[row][:prefix]
        if seen.setdefault(key, specs[row]) != specs[row]:
            return False
    return True
