"""What a file would become as virtual arrays, variable by variable, without writing anything.

:func:`inspect_file` parses one file the way :func:`~virtualize.open_virtual_dataset` would and
reports, for every variable of every group, its dimensions, shape, data type, chunk grid and
codecs, how many of its chunks are references into the file, how many are held inline in the
manifest, how many were never written, and — for the variables that cannot be virtualised —
why not. It backs ``virtualize inspect FILE``: :meth:`FileReport.to_text` is the table the
command prints and :meth:`FileReport.to_dict` what ``--json`` prints.
"""

from __future__ import annotations

import copy
import json
import os
import posixpath
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from virtualize.errors import (
    FormatDetectionError,
    InvalidFileError,
    SkippedVariableWarning,
    UnauthorizedLocationError,
    VirtualizeError,
)
from virtualize.io import ObstoreFile, head
from virtualize.manifests import INLINE, MISSING, ManifestArray, ManifestGroup
from virtualize.parsers.detect import detect, sniff_format
from virtualize.parsers.hdf import HDFParser
from virtualize.registry import ObjectStoreRegistry, normalize_url

__all__ = ["FileReport", "Status", "VariableReport", "inspect_file"]

#: What can be done with a variable's chunks.
#:
#: ``"referenced"``: chunks are references into the file (some may be unwritten);
#: ``"partly_inline"``: some chunks are references, others are held inline;
#: ``"inline"``: every stored chunk is held inline in the manifest (usable, but nothing points
#: at the file); ``"empty"``: no chunk was ever written, every value reads as the fill value;
#: ``"refused"``: the variable can't be virtualised (see :attr:`VariableReport.reason`).
Status = Literal["referenced", "partly_inline", "inline", "empty", "refused"]

#: A chunk grid axis: a regular chunk length, or the lengths of the chunks of a rectilinear
#: axis.
AxisChunks = int | tuple[int, ...]

_RECTILINEAR_SHOWN = 4  # edges of a rectilinear axis shown in the text table


@dataclass(frozen=True)
class VariableReport:
    """What one variable becomes as a virtual array.

    Parameters
    ----------
    path
        The variable's path from the root of the file, ``/``-separated, e.g.
        ``"forecast/t2m"``.
    dims
        Dimension names, or None when unknown (a refused variable without dimension scales).
    shape
        The array's shape, or None when unknown.
    dtype
        The data type as read (the decoded type for CF packing done by a codec), in short
        form (``"float32"``, ``"str"``, ``"{a: int32, b: float64}"``); None when unknown.
    chunks
        One entry per axis: the chunk length, or for a rectilinear axis the tuple of its
        chunk lengths. For a refused variable, the HDF5 chunk shape when it is chunked;
        otherwise None.
    codecs
        The codec chain in short form, encode order, e.g. ``("shuffle", "zlib(level=4)")``.
        The little-endian ``bytes`` serializer is left out. For a refused HDF5 variable, the
        HDF5 filter pipeline (``"hdf5.scaleoffset"``).
    codec_metadata
        The codecs' zarr metadata documents (``{"name", "configuration"}``), in full.
    nrefs
        Chunks that are references into a source file.
    ninline
        Chunks whose bytes are held in the manifest itself.
    nmissing
        Chunks that were never written (they read as the fill value).
    referenced_bytes
        Bytes of the source file the references cover.
    referenceable
        False when the variable cannot be virtualised at all.
    reason
        Why not, when ``referenceable`` is False.
    note
        Anything else worth knowing: why chunks are held inline, unwritten chunks.
    """

    path: str
    dims: tuple[str, ...] | None
    shape: tuple[int, ...] | None
    dtype: str | None
    chunks: tuple[AxisChunks, ...] | None
    codecs: tuple[str, ...]
    codec_metadata: tuple[dict[str, Any], ...] = ()
    nrefs: int = 0
    ninline: int = 0
    nmissing: int = 0
    referenced_bytes: int = 0
    referenceable: bool = True
    reason: str | None = None
    note: str | None = None

    @property
    def nchunks(self) -> int:
        """Chunks in the grid (references, inline and missing)."""
        return self.nrefs + self.ninline + self.nmissing

    @property
    def status(self) -> Status:
        """One word for what can be done with the variable (see :data:`Status`)."""
        if not self.referenceable:
            return "refused"
        if self.ninline and self.nrefs:
            return "partly_inline"
        if self.ninline:
            return "inline"
        if self.nrefs:
            return "referenced"
        return "empty"

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready built-in types."""
        return {
            "path": self.path,
            "dims": list(self.dims) if self.dims is not None else None,
            "shape": list(self.shape) if self.shape is not None else None,
            "dtype": self.dtype,
            "chunks": (
                [c if isinstance(c, int) else list(c) for c in self.chunks]
                if self.chunks is not None
                else None
            ),
            "codecs": list(self.codecs),
            "codec_metadata": [_jsonable(c) for c in self.codec_metadata],
            "nrefs": self.nrefs,
            "ninline": self.ninline,
            "nmissing": self.nmissing,
            "referenced_bytes": self.referenced_bytes,
            "referenceable": self.referenceable,
            "status": self.status,
            "reason": self.reason,
            "note": self.note,
        }


@dataclass(frozen=True)
class FileReport:
    """What one file becomes as virtual arrays.

    Parameters
    ----------
    url
        The file's normalised url.
    format
        The format its magic bytes say (``"hdf5"``, ``"kerchunk"``, ...), or None when they
        name none (a file read by an explicitly given third-party parser).
    parser
        The parser's class name.
    size
        The file's size in bytes (None for a folder, such as a Zarr store).
    group
        The group inspected (None for the root).
    variables
        One report per variable, in the order of the file, the group's own before its
        subgroups'; refused variables last.
    groups
        Paths of the subgroups found.
    attribute_count
        Attributes of the inspected group itself.
    nrefs
        References in every manifest.
    manifest_nbytes
        Bytes the manifests take in memory.
    error
        When the parser refused the whole file: its message (the report then has no
        variables).
    error_type
        The class name of that error.
    """

    url: str
    format: str | None
    parser: str
    size: int | None
    group: str | None = None
    variables: tuple[VariableReport, ...] = ()
    groups: tuple[str, ...] = ()
    attribute_count: int = 0
    nrefs: int = 0
    manifest_nbytes: int = 0
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the whole file can be virtualised: no file-level error, nothing refused."""
        return self.error is None and all(v.referenceable for v in self.variables)

    @property
    def refused(self) -> tuple[VariableReport, ...]:
        """The variables that can't be virtualised."""
        return tuple(v for v in self.variables if not v.referenceable)

    def status_counts(self) -> dict[str, int]:
        """How many variables have each :attr:`VariableReport.status` (all statuses listed)."""
        counts = dict.fromkeys(("referenced", "partly_inline", "inline", "empty", "refused"), 0)
        for variable in self.variables:
            counts[variable.status] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready built-in types (``json.dumps`` takes it as it is)."""
        return {
            "url": self.url,
            "format": self.format,
            "parser": self.parser,
            "size": self.size,
            "group": self.group,
            "ok": self.ok,
            "error": self.error,
            "error_type": self.error_type,
            "attribute_count": self.attribute_count,
            "groups": list(self.groups),
            "nrefs": self.nrefs,
            "manifest_nbytes": self.manifest_nbytes,
            "status_counts": self.status_counts(),
            "variables": [v.to_dict() for v in self.variables],
        }

    def to_text(self) -> str:
        """A readable report: a header, one aligned table row per variable, then notes.

        Returns
        -------
        str
            Lines separated by ``\\n``, without a trailing newline.
        """
        counts = self.status_counts()
        summary = ", ".join(
            f"{n} {word.replace('_', ' ')}" for word, n in counts.items() if n or word == "refused"
        )
        header = [
            ("file", self.url),
            (
                "format",
                f"{self.format} ({self.parser})" if self.format else self.parser,
            ),
            ("size", _size_label(self.size)),
        ]
        if self.group:
            header.append(("group", self.group))
        if self.error is not None:
            header.append(("error", f"{self.error_type}: {self.error}"))
        else:
            header += [
                (
                    "attributes",
                    f"{self.attribute_count} on the {'group' if self.group else 'root'}",
                ),
                ("groups", ", ".join(self.groups) if self.groups else "-"),
                ("variables", f"{len(self.variables)} ({summary})"),
                ("references", f"{self.nrefs:,} (manifests: {_bytes_label(self.manifest_nbytes)})"),
            ]
        width = max(len(key) for key, _ in header)
        lines = [f"{key:<{width}}  {value}" for key, value in header]
        if self.error is not None:
            return "\n".join(lines)
        if not self.variables:
            lines += ["", "(no variables)"]
            return "\n".join(lines)
        rows = [("variable", "dims", "dtype", "chunks", "codecs", "refs", "status")]
        notes: list[str] = []
        for variable in self.variables:
            status = variable.status.replace("_", " ")
            if variable.ninline:
                status += f" ({variable.ninline:,} chunk{'s' if variable.ninline != 1 else ''})"
            text = variable.reason if not variable.referenceable else variable.note
            if text:
                notes.append(f"[{len(notes) + 1}] {variable.path}: {text}")
                status += f" [{len(notes)}]"
            rows.append(
                (
                    variable.path,
                    _dims_label(variable.dims, variable.shape),
                    variable.dtype or "?",
                    _chunks_label(variable.chunks),
                    ", ".join(variable.codecs) or "-",
                    f"{variable.nrefs:,}" if variable.referenceable else "-",
                    status,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        right = {5}  # refs
        lines.append("")
        for number, row in enumerate(rows):
            cells = [
                cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                for i, cell in enumerate(row)
            ]
            lines.append("  ".join(cells).rstrip())
            if number == 0:
                lines.append("  ".join("-" * w for w in widths))
        if notes:
            lines += ["", "notes:", *(f"  {note}" for note in notes)]
        return "\n".join(lines)


def inspect_file(
    url_or_path: str | os.PathLike[str],
    *,
    registry: ObjectStoreRegistry | None = None,
    parser: Any = None,
    group: str | None = None,
) -> FileReport:
    """Report what each variable of a file becomes as a virtual array, and what can't.

    The file is parsed as :func:`~virtualize.open_virtual_dataset` parses it (its metadata
    only), except that an HDF5/netCDF4 file is parsed with ``on_unsupported="skip"``, so that
    variables that can't be referenced are reported with the reason rather than raised.
    Variables in every subgroup are included.

    Parameters
    ----------
    url_or_path
        The file: a local path or a url.
    registry
        The registry to read it through; None authorises the file's own folder (local
        files) or bucket (``s3://``) and warns which.
    parser
        The parser to use; None detects the format from the file's magic bytes. An
        :class:`~virtualize.parsers.HDFParser` given here is used with its options, but with
        ``on_unsupported="skip"``.
    group
        Inspect only this group (and its subgroups).

    Returns
    -------
    FileReport
        When the parser refuses the whole file with a
        :class:`~virtualize.errors.VirtualizeError`, the report carries that error in
        :attr:`FileReport.error` and has no variables.

    Raises
    ------
    UnauthorizedLocationError
        If the file (or a file it links to) lies outside the registry.
    InvalidFileError
        If there is no such file, or it can't be read.
    FormatDetectionError
        If ``parser`` is None and no installed parser reads the file's format.

    Examples
    --------
    >>> report = inspect_file("data/forecast.nc")  # doctest: +SKIP
    >>> print(report.to_text())  # doctest: +SKIP
    >>> [v.path for v in report.variables if not v.referenceable]  # doctest: +SKIP
    """
    url = normalize_url(url_or_path)
    if registry is None:
        registry = ObjectStoreRegistry.for_urls([url])
    group = None if group in (None, "", "/") else str(group).strip("/")
    try:
        file_format: str | None = sniff_format(url, registry)
    except FormatDetectionError:
        if parser is None:
            raise
        file_format = None  # a third-party format, read by the parser given
    if parser is None:
        parser = detect(url, registry, group=group)
        if isinstance(parser, HDFParser):
            parser = HDFParser(group=group, on_unsupported="skip")
        select, prefix = None, group or ""
    else:
        if isinstance(parser, HDFParser):
            parser = copy.copy(parser)
            parser.on_unsupported = "skip"
        own = str(getattr(parser, "group", None) or "").strip("/")
        select = group
        prefix = "/".join(p for p in (own, group or "") if p)
    try:
        size: int | None = head(registry, url).size
    except InvalidFileError:
        size = None  # a folder (a Zarr store, an Icechunk repository)
    parser_name = type(parser).__name__
    try:
        with warnings.catch_warnings():
            # the report lists what was skipped; the warnings would say it twice
            warnings.simplefilter("ignore", SkippedVariableWarning)
            store = parser(url, registry)
        root = store.group
        if select is not None:
            root = _select_group(root, select, url)
    except UnauthorizedLocationError:
        raise
    except VirtualizeError as error:
        return FileReport(
            url=url,
            format=file_format,
            parser=parser_name,
            size=size,
            group=group,
            error=str(error),
            error_type=type(error).__name__,
        )
    skipped = {
        path.strip("/"): reason
        for path, reason in store.skipped.items()
        if not prefix or path.strip("/").startswith(prefix + "/")
    }
    arrays: list[tuple[str, ManifestArray]] = []
    groups: list[str] = []
    for path, node in root.walk(prefix):
        if isinstance(node, ManifestArray):
            arrays.append((path, node))
        elif path != prefix:
            groups.append(path)
    details: dict[str, _HDF5Details] = {}
    if file_format == "hdf5" and isinstance(parser, HDFParser):
        wanted = [p for p, a in arrays if a.manifest.ninline] + list(skipped)
        details = _hdf5_details(url, registry, wanted)
    variables = [_array_report(path, array, details.get(path)) for path, array in arrays]
    variables += [
        _refused_report(path, reason, url, details.get(path)) for path, reason in skipped.items()
    ]
    return FileReport(
        url=url,
        format=file_format,
        parser=parser_name,
        size=size,
        group=group,
        variables=tuple(variables),
        groups=tuple(groups),
        attribute_count=len(root.attributes),
        nrefs=root.nrefs,
        manifest_nbytes=root.nbytes,
    )


def _select_group(root: ManifestGroup, group: str, url: str) -> ManifestGroup:
    node = root.get_node(group)
    if not isinstance(node, ManifestGroup):
        raise InvalidFileError(
            f"no group {group!r}", url=url, hint=f"Groups here: {sorted(root.groups)}"
        )
    return node


# -- one variable -----------------------------------------------------------------------------


def _array_report(path: str, array: ManifestArray, details: _HDF5Details | None) -> VariableReport:
    manifest = array.manifest
    ids = manifest.path_ids
    referenced = ids < INLINE
    nmissing = int(np.count_nonzero(ids == MISSING))
    metadata = array.metadata
    codec_documents = tuple(_codec_document(codec) for codec in metadata.codecs)
    notes = []
    if manifest.ninline:
        notes.append(_inline_note(array, details))
    if nmissing and manifest.ninline + manifest.nrefs:
        notes.append(
            f"{nmissing:,} of {ids.size:,} chunks were never written (they read as the fill value)"
        )
    dims = metadata.dimension_names
    return VariableReport(
        path=path,
        dims=tuple(str(d) for d in dims) if dims is not None else None,
        shape=array.shape,
        dtype=_dtype_label(array.dtype),
        chunks=tuple(array.chunk_grid),
        codecs=tuple(
            label
            for label in (_codec_label(doc, array.dtype.itemsize) for doc in codec_documents)
            if label
        ),
        codec_metadata=codec_documents,
        nrefs=manifest.nrefs,
        ninline=manifest.ninline,
        nmissing=nmissing,
        referenced_bytes=int(manifest.lengths[referenced].sum(dtype=np.uint64)),
        note="; ".join(notes) or None,
    )


def _refused_report(
    path: str, message: str, url: str, details: _HDF5Details | None
) -> VariableReport:
    return VariableReport(
        path=path,
        dims=details.dims if details else None,
        shape=details.shape if details else None,
        dtype=details.dtype if details else None,
        chunks=details.chunks if details else None,
        codecs=tuple(f"hdf5.{name}" for name in details.filters) if details else (),
        referenceable=False,
        reason=_strip_location(message, url, path),
    )


def _strip_location(message: str, url: str, path: str) -> str:
    """The reason of a skipped variable without the ``url: variable 'x': `` its error
    message starts with (the report already says both)."""
    for variable in (path, posixpath.basename(path)):
        lead = f"{url}: variable {variable!r}: "
        if message.startswith(lead):
            return message[len(lead) :]
    return message


def _inline_note(array: ManifestArray, details: _HDF5Details | None) -> str:
    why = details.inline_reason if details else None
    if why is None:
        if any(
            _codec_document(c).get("name", "").startswith("vlen") for c in array.metadata.codecs
        ):
            why = "it has a variable-length type, whose values are stored outside the chunks"
        elif array.manifest.nrefs:
            why = (
                f"{'it is' if array.manifest.ninline == 1 else 'they are'} stored differently "
                "from the other chunks (for example with filters skipped)"
            )
        else:
            why = "its type or layout can't be referenced as stored"
    count = array.manifest.ninline
    return (
        f"{count:,} chunk{'s' if count != 1 else ''} held inline in the manifest, because "
        f"{why}; read at parse time and usable, but not references into the file"
    )


# -- short forms ------------------------------------------------------------------------------


def _codec_document(codec: Any) -> dict[str, Any]:
    document = codec.to_dict() if hasattr(codec, "to_dict") else {"name": str(codec)}
    return dict(document) if isinstance(document, Mapping) else {"name": str(document)}


def _codec_label(document: Mapping[str, Any], itemsize: int) -> str | None:
    """A codec in short form: ``zlib(level=4)``; None for a codec that says nothing (the
    little-endian ``bytes`` serializer)."""
    name = str(document.get("name", "?"))
    config = dict(document.get("configuration") or {})
    if name.startswith("numcodecs."):
        name = name[len("numcodecs.") :]
    if name == "bytes":
        return (
            None
            if config.get("endian") in (None, "little")
            else f"bytes(endian={config['endian']})"
        )
    if name == "shuffle" and config.get("elementsize") == itemsize:
        config.pop("elementsize")
    if name == "virtualize.cf_packing":
        return _cf_packing_label(config)
    items = [f"{key}={_value_label(value)}" for key, value in config.items() if value is not None]
    return f"{name}({', '.join(items)})" if items else name


def _cf_packing_label(config: Mapping[str, Any]) -> str:
    parts = [f"{config.get('encoded_dtype')}->{config.get('decoded_dtype')}"]
    for key in ("scale_factor", "add_offset"):
        if config.get(key) is not None:
            parts.append(f"{key}={_typed_label(config[key])}")
    fills = config.get("fill_values") or ()
    if fills:
        parts.append("fill=" + "|".join(_typed_label(f) for f in fills))
    if config.get("reinterpret_as"):
        parts.append(f"as={config['reinterpret_as']}")
    return f"virtualize.cf_packing({', '.join(parts)})"


def _typed_label(pair: Any) -> str:
    """A ``(dtype name, value)`` pair as the value in its own type (``0.01``, not
    ``0.009999999776482582``)."""
    try:
        dtype, value = pair
        return str(np.dtype(dtype).type(value))
    except (TypeError, ValueError):
        return _value_label(pair)


_LONGEST_STRING = 24


def _value_label(value: Any) -> str:
    if isinstance(value, str):
        # long strings are tables (JPEG's, in base64), not settings: say how long they are
        if len(value) > _LONGEST_STRING:
            return f"<{len(value)} chars>"
        return value
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value_label(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return json.dumps(_jsonable(value), separators=(",", ":"))
    return str(value)


def _dtype_label(dtype: np.dtype[Any]) -> str:
    """A data type in short form: ``float32``, ``str``, ``S4``, ``{a: int32, v: float32[3]}``."""
    if dtype.names is not None and dtype.fields is not None:
        members = ", ".join(
            f"{name}: {_dtype_label(dtype.fields[name][0])}" for name in dtype.names
        )
        return "{" + members + "}"
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return f"{_dtype_label(base)}[{','.join(str(n) for n in shape)}]"
    if dtype.kind == "T":
        return "str"
    if dtype.kind == "O":
        return _object_dtype_label(dtype)
    if dtype.kind in "SUV":
        size = dtype.itemsize // 4 if dtype.kind == "U" else dtype.itemsize
        return f"{dtype.kind}{size}"
    return dtype.name


def _object_dtype_label(dtype: np.dtype[Any]) -> str:
    import h5py

    if h5py.check_string_dtype(dtype) is not None:
        return "str"
    base = h5py.check_vlen_dtype(dtype)
    if base is not None:
        return f"vlen<{_dtype_label(np.dtype(base))}>"
    if h5py.check_ref_dtype(dtype) is not None:
        return "reference"
    return "object"


def _dims_label(dims: Sequence[str] | None, shape: Sequence[int] | None) -> str:
    if shape is None:
        return "?"
    if dims is None or len(dims) != len(shape):
        return str(tuple(shape))
    return "(" + ", ".join(f"{d}: {n}" for d, n in zip(dims, shape, strict=True)) + ")"


def _chunks_label(chunks: Sequence[AxisChunks] | None) -> str:
    if chunks is None:
        return "-"
    if not chunks:
        return "()"
    parts = []
    for axis in chunks:
        if isinstance(axis, int):
            parts.append(str(axis))
        elif len(axis) <= _RECTILINEAR_SHOWN:
            parts.append("[" + ",".join(str(n) for n in axis) + "]")
        else:
            shown = ",".join(str(n) for n in axis[: _RECTILINEAR_SHOWN - 1])
            parts.append(f"[{shown},...]({len(axis)})")
    return "x".join(parts)


def _size_label(size: int | None) -> str:
    if size is None:
        return "-"
    return f"{size:,} bytes ({_bytes_label(size)})" if size >= 1024 else f"{size:,} bytes"


def _bytes_label(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count:,} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars, arrays, tuples and bytes turned into JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


# -- HDF5 details of what the manifests can't say --------------------------------------------


@dataclass(frozen=True)
class _HDF5Details:
    """What h5py says about a dataset the parser refused or held inline."""

    dims: tuple[str, ...] | None
    shape: tuple[int, ...] | None
    dtype: str | None
    chunks: tuple[int, ...] | None
    filters: tuple[str, ...]
    inline_reason: str | None


def _hdf5_details(
    url: str, registry: ObjectStoreRegistry, paths: Iterable[str]
) -> dict[str, _HDF5Details]:
    """Shape, type, chunks and filters of the datasets at ``paths``, read with h5py through
    the registry, for the report's rows of refused and inline variables.

    Best effort: the report is complete without them, so a dataset h5py can't describe (or
    one reached through an external link, which h5py would open outside the registry) is
    left out.
    """
    paths = list(paths)
    if not paths:
        return {}
    import h5py

    store, key = registry.resolve(url)
    try:
        size = head(registry, url).size or 0
        reader = ObstoreFile(store, key, size)
        h5file = h5py.File(reader, "r")
    except (OSError, VirtualizeError):
        return {}
    details: dict[str, _HDF5Details] = {}
    with h5file:
        for path in paths:
            dataset = _dataset_at(h5file, path)
            if dataset is None:
                continue
            try:
                details[path] = _describe(dataset)
            except (OSError, KeyError, ValueError, TypeError, RuntimeError):
                continue
    return details


def _dataset_at(h5file: Any, path: str) -> Any:
    """The dataset at ``path``, following hard and soft links only."""
    import h5py

    node = h5file
    for part in [p for p in path.split("/") if p]:
        if not isinstance(node, h5py.Group):
            return None
        link = node.get(part, getlink=True)
        if link is None or isinstance(link, h5py.ExternalLink):
            return None
        try:
            node = node[part]
        except (KeyError, OSError):
            return None
    return node if isinstance(node, h5py.Dataset) else None


def _describe(dataset: Any) -> _HDF5Details:
    import h5py
    from h5py import h5d

    from virtualize.codecs.hdf5_filters import NoDecoderError, filter_codecs, filters_of

    shape = tuple(int(n) for n in dataset.shape) if dataset.shape is not None else None
    dtype = np.dtype(dataset.dtype)
    plist = dataset.id.get_create_plist()
    pipeline = filters_of(plist)
    chunks = tuple(int(c) for c in dataset.chunks) if dataset.chunks else None
    dims = None
    if shape:
        names = []
        for axis in range(len(shape)):
            attached = dataset.dims[axis]
            if len(attached) == 0:
                break
            names.append(posixpath.basename(attached[0].name or ""))
        if len(names) == len(shape) and all(names):
            dims = tuple(names)
    layout = plist.get_layout()
    inline_reason = None
    if layout == h5d.COMPACT:
        inline_reason = "it has the compact layout (its data lives in the object header)"
    elif dtype.kind == "O" or h5py.check_vlen_dtype(dtype) is not None:
        inline_reason = "it has a variable-length type (its values are stored on the HDF5 heap)"
    elif pipeline:
        try:
            filter_codecs(pipeline, dtype=dtype, chunk_shape=chunks or shape or ())
        except NoDecoderError as error:
            inline_reason = f"its {error}"
    return _HDF5Details(
        dims=dims,
        shape=shape,
        dtype=_dtype_label(dtype),
        chunks=chunks,
        filters=tuple(f.name or f"filter{f.code}" for f in pipeline),
        inline_reason=inline_reason,
    )
