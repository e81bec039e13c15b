"""How an HDF5 dataset's type becomes a zarr data type: referenced, or read and inlined.

Chunks can be referenced when their stored bytes, once the filters are undone, are the
values in a layout a zarr array-to-bytes codec decodes. Types stored elsewhere
(variable-length data lives on the HDF5 heap) or in layouts no zarr codec reads are read with
h5py at parse time and held inline (up to the parser's ``max_inline_bytes``), or refused.

Where netCDF-C (``xr.open_dataset``) and h5py show a type differently, the virtual read
follows ``xr.open_dataset``. What each HDF5 type becomes:

- integers, floats (float16 too), complex numbers (h5py's ``r``/``i`` compounds, HDF5 2
  complex): the same numbers, referenced; inline when the file type has an unusual precision,
  bit offset or float format, which HDF5 converts when reading.
- bitfields: unsigned integers of their size, referenced (netCDF-C hides them).
- enums: their integer base type, referenced, with no attribute: xarray keeps the mapping in
  ``encoding["dtype"].metadata``, which a zarr array can't carry. h5py's booleans (an enum of
  FALSE and TRUE) stay bool.
- one-byte strings (netCDF ``char``): bytes ``S1``, referenced.
- longer fixed-length strings: bytes ``S<n>`` with ``_Encoding: utf-8``, so that xarray decodes
  them to the text netCDF-C returns (it ends at the first NUL; trailing spaces stay);
  referenced, or inline when some element has bytes after its first NUL.
- variable-length strings (ASCII, UTF-8): zarr ``string``, inline.
- compounds, nested too: zarr ``struct``; referenced when stored packed in one byte order,
  else inline.
- opaque: zarr ``raw_bytes`` (or the numpy type h5py's ``NUMPY:`` tag names), referenced
  (netCDF-C hides them).
- object references: the paths of the objects they point to, as zarr ``string``, inline.
- refused: region references, ragged (variable-length) sequences, array-typed elements and
  compound members, time types, and ``_FillValue`` attributes xarray's zarr reader can't decode.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from zarr.codecs import BytesCodec, VLenUTF8Codec
from zarr.core.dtype import (
    NullTerminatedBytes,
    RawBytes,
    Struct,
    VariableLengthUTF8,
    get_data_type_from_native_dtype,
)

from virtualize.errors import UnsupportedFeatureError

__all__ = ["DEFAULT_MAX_SCAN_BYTES", "PlannedValues", "TypePlan", "plan_type", "zarr_data_type"]

#: Fixed-length strings are read once at parse time to check that nothing follows the
#: terminating NUL (see :func:`plan_type`); datasets larger than this are refused.
DEFAULT_MAX_SCAN_BYTES = 64 * 1024 * 1024

#: Elements read at a time when scanning or measuring a dataset.
_SLAB_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class TypePlan:
    """What to do with a dataset's type.

    Parameters
    ----------
    stored
        The numpy dtype of the dataset's elements as stored (its itemsize is the file type's
        size, so chunk lengths and filters use it).
    referenceable
        Whether chunk bytes (after the filters) decode with ``serializer`` to the values.
    data_type
        The zarr data type of the virtual array.
    serializer
        The zarr array-to-bytes codec.
    fill_value
        The zarr fill value.
    attributes
        Attributes the type adds (``_Encoding`` for fixed-length strings, for example).
    convert
        Turns values read by :meth:`read` (or by h5py) into what ``data_type`` holds; ``None``
        casts to the data type's numpy dtype.
    raw
        Read with the file type as the memory type, so HDF5 converts nothing (fixed-length
        strings keep their padding bytes; opaque data needs no conversion path).
    measure
        The bytes a slab of values read by h5py takes inline, for types whose size is not
        fixed (variable-length strings); ``None`` means ``itemsize`` per element.
    """

    stored: np.dtype[Any]
    referenceable: bool
    data_type: Any
    serializer: Any
    fill_value: Any
    attributes: dict[str, Any] = field(default_factory=dict)
    convert: Callable[[np.ndarray], np.ndarray] | None = None
    raw: bool = False
    measure: Callable[[np.ndarray], int] | None = None

    def inline_values(self, values: np.ndarray) -> np.ndarray:
        """Values read by h5py, converted to what ``data_type`` holds."""
        if self.convert is not None:
            return self.convert(np.asarray(values))
        return np.asarray(values, dtype=self.data_type.to_native_dtype())

    def read(self, dset: Any, selection: Any = Ellipsis) -> np.ndarray:
        """``dset[selection]`` (``...`` or a tuple of step-1 slices) as ``data_type`` holds it.

        Use this rather than ``dset[...]``: h5py's own read converts some types in ways the
        virtual array must not (it strips the spaces of space-padded strings, and can't read
        opaque data whose tag it did not write).
        """
        if self.raw:
            values = _read_raw(dset, selection, self.stored)
        else:
            values = np.asarray(dset[selection if selection is not Ellipsis else ...])
        return self.inline_values(values)

    def values(self, dset: Any) -> PlannedValues:
        """The dataset as something ``encode_chunks`` can slice: ``values[region]`` is
        :meth:`read` of that region."""
        return PlannedValues(self, dset)

    def estimate_nbytes(self, dset: Any, limit: int | None = None) -> int:
        """The bytes the dataset's values take when held inline.

        For fixed-size types this is ``size * itemsize`` and reads nothing. For
        variable-length strings the dataset is read slab by slab, and the count stops as
        soon as it passes ``limit`` (so the result is then a lower bound above ``limit``).
        """
        count = math.prod(int(n) for n in (dset.shape or ()))
        if self.measure is None:
            return count * max(self.stored.itemsize, 1)
        total = 0
        for slab in _slabs(dset, element_bytes=64):
            total += self.measure(np.asarray(dset[slab]))
            if limit is not None and total > limit:
                break
        return total


class PlannedValues:
    """A dataset read through its :class:`TypePlan`, one region at a time."""

    def __init__(self, plan: TypePlan, dset: Any) -> None:
        self.plan = plan
        self.dset = dset
        self.shape = tuple(int(n) for n in dset.shape)

    def __getitem__(self, selection: Any) -> np.ndarray:
        if selection is Ellipsis or selection == ():
            return self.plan.read(self.dset)
        if not isinstance(selection, tuple):
            selection = (selection,)
        return self.plan.read(self.dset, selection)


@functools.lru_cache(maxsize=256)
def zarr_data_type(dtype: np.dtype[Any]) -> Any:
    """zarr's data type for a numpy dtype; cached, as matching it costs a third of a
    millisecond and files repeat a few dtypes many times."""
    return get_data_type_from_native_dtype(dtype)


def _unsupported(url: str, name: str, reason: str) -> UnsupportedFeatureError:
    return UnsupportedFeatureError(
        f"cannot be referenced: {reason}",
        url=url,
        variable=name,
        hint=f"Pass drop_variables=[{name!r}] to open the rest of the file",
    )


def plan_type(
    dset: Any,
    *,
    url: str,
    name: str,
    fill_value: Any,
    max_scan_bytes: int = DEFAULT_MAX_SCAN_BYTES,
) -> TypePlan:
    """Decide how the dataset's type is represented.

    Parameters
    ----------
    dset
        The h5py dataset.
    url, name
        For error messages.
    fill_value
        The dataset's fill value as h5py reports it (already a Python scalar or bytes).
    max_scan_bytes
        Fixed-length strings longer than one byte are read at parse time to check that no
        bytes follow the first NUL (netCDF-C ends the text there, a zarr reader would not);
        larger datasets of them are refused.

    Raises
    ------
    UnsupportedFeatureError
        If the type can be neither referenced nor inlined.
    """
    from h5py import h5t

    tid = dset.id.get_type()
    kind = tid.get_class()
    dtype = np.dtype(dset.dtype)
    if kind == h5t.REFERENCE:
        return _reference_plan(dset, tid, url, name)
    if kind == h5t.STRING:
        if tid.is_variable_str():
            return _vlen_string_plan(dset, url, name, fill_value)
        if tid.get_size() > 1:
            return _fixed_string_plan(dset, tid, url, name, fill_value, max_scan_bytes)
        _refuse_string_fill_attribute(dset, url, name, "one-byte strings (netCDF char)")
        return numeric_plan(dtype, referenceable=True, fill_value=fill_value, url=url, name=name)
    if kind == h5t.VLEN:
        raise _unsupported(
            url,
            name,
            "variable-length sequences (ragged arrays) are stored on the HDF5 heap and zarr "
            "has no data type for them",
        )
    if kind == h5t.ARRAY:
        raise _unsupported(
            url, name, f"its elements are arrays ({dtype}), which zarr data types can't hold"
        )
    if kind == h5t.OPAQUE:
        return _opaque_plan(dset, tid, dtype, url, name, fill_value)
    if kind == h5t.COMPOUND and dtype.names is not None:
        return _compound_plan(dset, tid, dtype, url, name, fill_value)
    if kind in (h5t.INTEGER, h5t.FLOAT, h5t.ENUM, h5t.BITFIELD, h5t.COMPOUND, h5t.COMPLEX) and (
        dtype.kind in "biufc" and dtype.subdtype is None
    ):
        standard = _is_standard(tid, dtype)
        return numeric_plan(
            dtype, referenceable=standard, fill_value=fill_value, url=url, name=name
        )
    what = _CLASS_NAMES.get(kind, f"class {kind}")
    raise _unsupported(url, name, f"the HDF5 {what} type ({dtype}) is not supported")


_CLASS_NAMES = {0: "integer", 1: "float", 2: "time", 3: "string", 4: "bitfield", 5: "opaque",
                6: "compound", 7: "reference", 8: "enum", 9: "variable-length", 10: "array",
                11: "complex"}  # fmt: skip


# -- numbers ----------------------------------------------------------------------------------


def numeric_plan(
    dtype: np.dtype[Any], *, referenceable: bool, fill_value: Any, url: str, name: str
) -> TypePlan:
    """Numbers, booleans, one-byte strings: the bytes codec in the stored byte order."""
    plain = np.dtype(dtype.str)  # drops h5py's enum metadata
    try:
        data_type = zarr_data_type(plain.newbyteorder("="))
    except (TypeError, ValueError) as error:  # long double, for one
        raise _unsupported(url, name, f"zarr has no data type for {dtype} ({error})") from error
    return TypePlan(
        stored=plain,
        referenceable=referenceable,
        data_type=data_type,
        serializer=BytesCodec(endian=_endian(plain)),
        fill_value=fill_value,
    )


def _endian(dtype: np.dtype[Any]) -> Literal["little", "big"] | None:
    if dtype.itemsize == 1 or dtype.kind in "SV":
        return None
    order = dtype.byteorder
    if order == "=":
        order = "<" if sys.byteorder == "little" else ">"
    return "big" if order == ">" else "little"


def _is_standard(tid: Any, dtype: np.dtype[Any]) -> bool:
    """Whether the file type stores each value as numpy's ``dtype`` lays it out: no unusual
    precision, bit offset, padding or float format (those HDF5 converts when reading)."""
    from h5py import h5t

    kind = tid.get_class()
    try:
        if kind == h5t.ENUM:
            base = np.dtype(f"{dtype.byteorder}i1") if dtype.kind == "b" else dtype
            return _is_standard(tid.get_super(), np.dtype(base.str))
        if kind == h5t.BITFIELD:
            suffix = "BE" if _endian(dtype) == "big" else "LE"
            standard = getattr(h5t, f"STD_B{8 * dtype.itemsize}{suffix}", None)
            return standard is not None and bool(tid.equal(standard))
        if kind == h5t.COMPLEX:
            suffix = "BE" if _endian(dtype) == "big" else "LE"
            bits = 4 * dtype.itemsize
            standard = getattr(h5t, f"COMPLEX_IEEE_F{bits}{suffix}", None)
            return standard is not None and bool(tid.equal(standard))
        if kind == h5t.STRING:
            return tid.get_size() == dtype.itemsize and tid.get_strpad() == h5t.STR_NULLPAD
        if kind == h5t.OPAQUE:
            return tid.get_size() == dtype.itemsize
        if kind == h5t.COMPOUND and dtype.names is not None:
            if tid.get_size() != dtype.itemsize or tid.get_nmembers() != len(dtype.names):
                return False
            for index, member in enumerate(dtype.names):
                member_dtype, offset = dtype.fields[member][:2]  # type: ignore[index]
                if tid.get_member_offset(index) != offset or member_dtype.subdtype is not None:
                    return False
                if not _is_standard(tid.get_member_type(index), member_dtype):
                    return False
            return True
        if kind == h5t.INTEGER and dtype.itemsize == 1:
            # one byte has no byte order: an 8-bit big-endian type is stored as numpy's
            return tid.get_size() == 1 and tid.get_precision() == 8 and tid.get_offset() == 0
        return bool(tid.equal(h5t.py_create(np.dtype(dtype.str))))
    except (TypeError, ValueError, KeyError):
        return False


# -- strings ----------------------------------------------------------------------------------


def _refuse_string_fill_attribute(dset: Any, url: str, name: str, what: str) -> None:
    if "_FillValue" in dset.attrs:
        raise _unsupported(
            url,
            name,
            f"it has a _FillValue attribute, and xarray's zarr reader can't decode a "
            f"_FillValue on an array of {what}",
        )


def _until_nul(value: bytes) -> bytes:
    end = value.find(b"\0")
    return value if end < 0 else value[:end]


def _decode(value: bytes, url: str, name: str) -> str:
    try:
        return _until_nul(value).decode("utf-8")
    except UnicodeDecodeError as error:
        raise _unsupported(
            url,
            name,
            f"a string in it is not valid UTF-8 ({error}); netCDF-C and xarray can't read it "
            "either",
        ) from error


def _vlen_string_plan(dset: Any, url: str, name: str, fill_value: Any) -> TypePlan:
    """Variable-length strings, ASCII or UTF-8: inline, as zarr's ``string`` data type.

    Text is decoded as UTF-8 and ends at the first NUL, as netCDF-C returns it (h5py would
    keep bytes after a NUL).
    """
    _refuse_string_fill_attribute(dset, url, name, "strings")

    def convert(values: np.ndarray) -> np.ndarray:
        flat = [
            _decode(v if isinstance(v, bytes) else str(v).encode(), url, name)
            for v in values.ravel().tolist()
        ]
        return np.array(flat, dtype=object).reshape(values.shape)

    def measure(values: np.ndarray) -> int:
        return sum(4 + _text_length(v) for v in values.ravel().tolist())

    if isinstance(fill_value, str):
        fill_value = fill_value.encode("utf-8")
    fill = bytes(fill_value) if isinstance(fill_value, bytes | np.bytes_) else b""
    return TypePlan(
        stored=np.dtype(object),
        referenceable=False,
        data_type=VariableLengthUTF8(),
        serializer=VLenUTF8Codec(),
        fill_value=_decode(fill, url, name),
        convert=convert,
        measure=measure,
    )


def _text_length(value: Any) -> int:
    if isinstance(value, bytes):
        return len(value)
    return len(str(value).encode("utf-8", errors="replace"))


def _fixed_string_plan(
    dset: Any, tid: Any, url: str, name: str, fill_value: Any, max_scan_bytes: int
) -> TypePlan:
    """Fixed-length strings longer than one byte, of any padding and character set.

    netCDF-C (so ``xr.open_dataset``) returns them as text that ends at the first NUL, with
    trailing spaces kept, decoded as UTF-8; h5py returns bytes with only trailing NULs
    removed, and strips the spaces of space-padded strings in some layouts. The virtual array
    follows netCDF-C: zarr bytes ``S<n>`` with ``_Encoding: utf-8``, which xarray decodes to
    the same text, while ``zarr`` itself gives the bytes. The stored bytes are referenced when
    no bytes follow the first NUL in any element (zarr removes trailing NULs only); otherwise
    the text is cut at the first NUL and held inline.
    """
    _refuse_string_fill_attribute(dset, url, name, "fixed-length strings")
    size = int(tid.get_size())
    stored = np.dtype(f"S{size}")
    total = math.prod(int(n) for n in dset.shape) * size
    if total > max_scan_bytes:
        raise _unsupported(
            url,
            name,
            f"its fixed-length strings would have to be read ({total:,} bytes, more than "
            f"max_scan_bytes={max_scan_bytes:,}) to check that no bytes follow the "
            "terminating NUL",
        )
    clean = True
    for slab in _slabs(dset, element_bytes=size):
        raw = _read_raw(dset, slab, stored)
        if not _nothing_after_nul(raw, size):
            clean = False
        for value in np.unique(raw.ravel()).tolist():
            _decode(value, url, name)

    def convert(values: np.ndarray) -> np.ndarray:
        flat = [_until_nul(bytes(v)) for v in values.ravel().tolist()]
        return np.array(flat, dtype=stored).reshape(values.shape)

    fill = _until_nul(bytes(fill_value)) if isinstance(fill_value, bytes | np.bytes_) else b""
    return TypePlan(
        stored=stored,
        referenceable=clean,
        data_type=NullTerminatedBytes(length=size),
        serializer=BytesCodec(endian=None),
        fill_value=fill,
        attributes={"_Encoding": "utf-8"},
        convert=convert,
        raw=True,
    )


def _nothing_after_nul(raw: np.ndarray, size: int) -> bool:
    if raw.size == 0:
        return True
    octets = np.ascontiguousarray(raw).reshape(-1).view(np.uint8).reshape(-1, size)
    nul = octets == 0
    after = np.logical_or.accumulate(nul, axis=1)
    return not bool((after & ~nul).any())


# -- compound ---------------------------------------------------------------------------------


def _compound_problem(dtype: np.dtype[Any]) -> str | None:
    """Why zarr's ``struct`` data type can't hold this compound type, or None."""
    import h5py

    for member in dtype.names or ():
        member_dtype, _offset, *title = dtype.fields[member]  # type: ignore[index]
        if title:
            return f"member {member!r} has a title"
        if member_dtype.subdtype is not None:
            return (
                f"member {member!r} is an array ({member_dtype.base}, shape "
                f"{member_dtype.shape}), and zarr's struct data type has no array members"
            )
        if member_dtype.names is not None:
            reason = _compound_problem(member_dtype)
            if reason is not None:
                return f"in member {member!r}: {reason}"
            continue
        if member_dtype.kind == "O":
            what = "a reference" if h5py.check_ref_dtype(member_dtype) else "variable-length"
            return f"member {member!r} is {what} data, which zarr's struct data type can't hold"
        if member_dtype.kind not in "biufcSV":
            return f"member {member!r} has the type {member_dtype}, which is not supported"
    return None


def _byte_orders(dtype: np.dtype[Any]) -> set[str]:
    """The byte orders of the multi-byte numbers in a (nested) compound type."""
    if dtype.names is not None:
        orders: set[str] = set()
        for member in dtype.names:
            orders |= _byte_orders(dtype.fields[member][0])  # type: ignore[index]
        return orders
    endian = _endian(dtype)
    return set() if endian is None else {endian}


def _strip_metadata(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The same layout without h5py's metadata (enum mappings, string encodings)."""
    if dtype.names is None:
        return np.dtype(dtype.str)
    fields = dtype.fields
    assert fields is not None
    return np.dtype(
        {
            "names": list(dtype.names),
            "formats": [_strip_metadata(fields[n][0]) for n in dtype.names],
            "offsets": [fields[n][1] for n in dtype.names],
            "itemsize": dtype.itemsize,
        }
    )


def _packed(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """Members back to back, in native byte order (zarr's struct layout)."""
    fields = dtype.fields
    assert dtype.names is not None and fields is not None
    members = []
    for member in dtype.names:
        member_dtype = fields[member][0]
        if member_dtype.names is not None:
            members.append((member, _packed(member_dtype)))
        else:
            members.append((member, member_dtype.newbyteorder("=")))
    return np.dtype(members)


def _compound_plan(
    dset: Any, tid: Any, dtype: np.dtype[Any], url: str, name: str, fill_value: Any
) -> TypePlan:
    """Compound types (records), nested too: zarr's ``struct`` data type.

    zarr's struct stores members back to back in one byte order. A compound stored that way
    (no padding, no alignment gaps, every multi-byte member in the same byte order, standard
    number formats) is referenced; any other is read with h5py and held inline in that
    layout. ``xr.open_dataset`` shows netCDF compounds with aligned offsets: the values are
    the same.
    """
    reason = _compound_problem(dtype)
    if reason is not None:
        raise _unsupported(url, name, f"compound type: {reason}")
    if "_FillValue" in dset.attrs:
        raise _unsupported(
            url,
            name,
            "it has a _FillValue attribute, and xarray can't decode a _FillValue on a "
            "compound (struct) array",
        )
    plain = _strip_metadata(dtype)
    packed = _packed(plain)
    orders = _byte_orders(plain)
    order = next(iter(orders)) if len(orders) == 1 else None
    as_stored = packed.newbyteorder(">" if order == "big" else "<") if order else packed
    standard = _is_standard(tid, dtype)
    referenceable = len(orders) <= 1 and as_stored == plain and standard
    data_type = Struct.from_native_dtype(packed)

    def convert(values: np.ndarray) -> np.ndarray:
        return np.asarray(values).astype(packed)

    fill = np.zeros((), dtype=packed)
    if fill_value is not None:
        fill = np.asarray(np.array(fill_value, dtype=plain)).astype(packed)
    return TypePlan(
        stored=plain,
        referenceable=referenceable,
        data_type=data_type,
        serializer=BytesCodec(endian="big" if order == "big" else "little"),
        fill_value=fill.reshape(()).item(),
        convert=convert,
        # h5py's dtype has the file's offsets, so standard members read as stored bytes
        # (no conversion path needed for opaque members h5py did not tag)
        raw=standard,
    )


# -- opaque -----------------------------------------------------------------------------------


def _opaque_plan(
    dset: Any, tid: Any, dtype: np.dtype[Any], url: str, name: str, fill_value: Any
) -> TypePlan:
    """Opaque data: zarr's ``raw_bytes`` of the same size, referenced.

    h5py writes numpy types it has no HDF5 type for (datetime64, for example) as opaque data
    tagged ``NUMPY:<dtype>`` and reads them back as that dtype; such datasets become that
    dtype. netCDF-C hides opaque variables (``xr.open_dataset`` skips them with a warning);
    the virtual array shows them as h5py does.
    """
    size = int(tid.get_size())
    if dtype.itemsize != size or dtype.kind not in "VSMmbiuf" or dtype.names is not None:
        dtype = np.dtype(f"V{size}")
    if dtype.kind == "V":
        data_type: Any = RawBytes(length=size)
    else:
        dtype = np.dtype(dtype.str)
        data_type = zarr_data_type(dtype.newbyteorder("="))
    fill: Any = fill_value
    if dtype.kind in "VS":
        fill = bytes(fill_value) if isinstance(fill_value, bytes | np.bytes_ | np.void) else b""
        fill = fill.ljust(size, b"\0") if dtype.kind == "V" else fill
    elif dtype.kind in "Mm":
        fill = np.asarray(fill_value if fill_value is not None else 0).astype(dtype)[()]
    if "_FillValue" in dset.attrs and dtype.kind in "VSMm":
        raise _unsupported(
            url,
            name,
            f"it has a _FillValue attribute, and xarray's zarr reader can't decode a "
            f"_FillValue on an array of {dtype}",
        )
    return TypePlan(
        stored=dtype,
        referenceable=True,
        data_type=data_type,
        serializer=BytesCodec(endian=_endian(dtype)),
        fill_value=fill,
        convert=lambda values: np.asarray(values).view(dtype),
        raw=True,
    )


# -- references -------------------------------------------------------------------------------


def _reference_plan(dset: Any, tid: Any, url: str, name: str) -> TypePlan:
    """Object references: resolved at parse time to the paths of the objects they point to,
    as zarr ``string`` (a null reference becomes ``""``), inline. Region references (and
    HDF5 1.12 references) name parts of datasets, which a path can't express: refused."""
    import h5py

    kind = h5py.check_ref_dtype(np.dtype(dset.dtype))
    if kind is not h5py.Reference or tid.get_size() != 8:
        what = "region references" if kind is h5py.RegionReference else "references"
        raise _unsupported(
            url,
            name,
            f"it holds HDF5 {what}, which point into parts of datasets; only object "
            "references are resolved (to paths)",
        )
    h5file = dset.file

    def resolve(reference: Any) -> str:
        if not reference:
            return ""
        try:
            path = h5file[reference].name
        except (KeyError, OSError, ValueError, TypeError) as error:
            raise _unsupported(
                url, name, f"an object reference in it can't be resolved ({error})"
            ) from error
        if not path:
            raise _unsupported(url, name, "an object reference in it points to an unnamed object")
        return str(path)

    def convert(values: np.ndarray) -> np.ndarray:
        flat = [resolve(v) for v in np.asarray(values, dtype=object).ravel().tolist()]
        return np.array(flat, dtype=object).reshape(np.shape(values))

    def measure(values: np.ndarray) -> int:
        return sum(4 + len(resolve(v).encode()) for v in np.asarray(values).ravel().tolist())

    return TypePlan(
        stored=np.dtype(object),
        referenceable=False,
        data_type=VariableLengthUTF8(),
        serializer=VLenUTF8Codec(),
        fill_value="",
        convert=convert,
        measure=measure,
    )


# -- reading ----------------------------------------------------------------------------------


def _slabs(dset: Any, *, element_bytes: int) -> list[Any]:
    """Selections that cover the dataset a few megabytes at a time, along the first axis."""
    shape = tuple(int(n) for n in dset.shape)
    if not shape:
        return [Ellipsis]
    if 0 in shape:
        return []
    row = math.prod(shape[1:]) * max(element_bytes, 1)
    rows = max(_SLAB_BYTES // max(row, 1), 1)
    whole = tuple(slice(0, n) for n in shape[1:])
    return [
        (slice(start, min(start + rows, shape[0])), *whole) for start in range(0, shape[0], rows)
    ]


def _read_raw(dset: Any, selection: Any, dtype: np.dtype[Any]) -> np.ndarray:
    """Read ``selection`` with the file type as the memory type: the stored bytes, as
    ``dtype`` (whose itemsize is the file type's size)."""
    from h5py import h5s

    shape = tuple(int(n) for n in dset.shape)
    mtype = dset.id.get_type()
    if selection is Ellipsis or not shape:
        out = np.empty(shape, dtype=dtype)
        if out.size:
            dset.id.read(h5s.ALL, h5s.ALL, out, mtype=mtype)
        return out
    starts, counts = [], []
    for part, length in zip(selection, shape, strict=True):
        start, stop, step = part.indices(length)
        if step != 1:
            raise ValueError("only step-1 slices are read")
        starts.append(start)
        counts.append(max(stop - start, 0))
    out = np.empty(tuple(counts), dtype=dtype)
    if out.size == 0:
        return out
    fspace = dset.id.get_space()
    fspace.select_hyperslab(tuple(starts), tuple(counts))
    mspace = h5s.create_simple(tuple(counts))
    dset.id.read(mspace, fspace, out, mtype=mtype)
    return out
