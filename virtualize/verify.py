"""Verify a repository: read a random sample of virtual chunks both ways and compare exactly.

:func:`verify_repository` picks chunks uniformly at random among every *virtual* chunk of
every array in an Icechunk repository (references to source files; inline chunks and chunks
stored in the repository itself are not sampled), and reads each one twice:

* **through the repository**, exactly as a user's zarr reader does: ``zarr.open_array`` on a
  read-only session's store, indexed by the chunk's region, so that Icechunk resolves the
  reference (checking the checksum it recorded) and zarr applies the array's codecs;
* **through the native reader of the source format** (h5py / xarray for HDF5 and netCDF4,
  tifffile for TIFF, GeoTIFF and COG, cfgrib for GRIB 1 and 2), opened through the
  :class:`~virtualize.ObjectStoreRegistry`, at the same variable and the region the chunk
  covers in that file.

What is compared, and why
-------------------------
Values are compared *in the array's stored (encoded) data type*, not as xarray decodes them,
because that is the exact test of what virtualize is responsible for: the byte ranges and the
codec chain. CF decoding (``scale_factor``/``add_offset``, ``_FillValue`` masking, times) is
done by xarray from the attributes on both sides alike, so comparing decoded values would add
float rounding and masking on top without testing anything more, and would hide a wrong fill
value behind NaN. The oracle is therefore h5py reading the source dataset's region: h5py
applies the HDF5 filter pipeline (deflate, shuffle, Fletcher-32, scale-offset, ...) but no CF
conventions, just as zarr applies the repository's codecs.

For TIFF the oracle is tifffile decoding the tiles or strips of the region from the IFD the
array was made from (the first image, its internal mask, an overview; band first, as the
parser presents interleaved pixels), with its own codecs and fill value for sparse tiles.

For GRIB the oracle is cfgrib (with ecCodes) opening a temporary copy of the file fetched
through the registry, ``cfgrib.open_datasets`` as the parser groups it, reading the region
of the variable: float32 with missing values as NaN, as virtualize's GRIB codec promises.
GRIB has no CF packing, so stored and decoded values are the same.

The one exception is an array carrying virtualize's ``virtualize.cf_packing`` codec: its
packing *is* part of the codec chain (zarr returns decoded floats), so there the oracle is
xarray's own decoding of that variable from the source file (the ``h5netcdf`` backend with
``mask_and_scale=True``), which the codec promises to reproduce bit for bit.

Equality is exact: the same shape, the same data type (byte order aside), every element equal,
NaN equal to NaN. A difference is reported with the number of differing elements and the
largest absolute difference.

What this proves: that each sampled reference still points at the bytes its source file
holds *now* for that chunk, and that the repository's codecs decode them as the format's own
library does. A source file that was deleted, moved, truncated, rewritten with another layout
or reordered is reported (a failed read is a mismatch of kind ``"error"``, never an
exception); so is one whose checksum Icechunk finds changed. A file regenerated with other
values but byte-for-byte the same layout, and the same modification time or ETag, reads the
same both ways and is not: the repository faithfully serves what the file now holds.

Where a chunk lies in its source file
-------------------------------------
The chunk's url names the file and the array's path names the variable (tried relative to
``group`` first, then as the repository path). Along each axis the chunk's region is located
by coordinates: the repository's values of the coordinate named like the dimension (decoded
by xarray, so files with different time units still match) over the chunk's region are found
in the file's own values of that coordinate. Axes without a coordinate keep the same region
when the file has the array's length there; otherwise the chunk's offset in the run of chunks
from the same file along that axis is used. Leading dimensions the file's variable lacks
(``time`` given to single images, or to GRIB forecast runs whose reference ``time`` is a
scalar coordinate, by a ``preprocess`` function) must be covered one element per chunk, and
map to nothing in the file.

Adding formats
--------------
Native readers are looked up in :data:`NATIVE_READERS` by the format name that
:func:`virtualize.parsers.sniff_format` gives for the chunk's url. A reader opens a file and
returns a :class:`NativeSource`. Chunks whose source format has no reader (or isn't
recognised) are reported as *not checked*, never counted as equal.
"""

from __future__ import annotations

import os
import posixpath
import re
import secrets
import shutil
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

import numpy as np
import numpy.typing as npt

from virtualize.codecs.cf import CFPackingCodec
from virtualize.errors import (
    FormatDetectionError,
    SkippedVariableWarning,
    UnsupportedFeatureError,
    VirtualizeError,
)
from virtualize.io import ObstoreFile, head
from virtualize.manifests import INLINE, ManifestArray
from virtualize.parsers.detect import sniff_format
from virtualize.parsers.icechunk import IcechunkParser
from virtualize.parsers.tiff import MASK_VARIABLE as _TIFF_MASK
from virtualize.parsers.tiff import VARIABLE as _TIFF_DATA
from virtualize.parsers.tiff import TIFFParser, _plan
from virtualize.registry import ObjectStoreRegistry, normalize_url
from virtualize.store import ManifestStore

if TYPE_CHECKING:
    import icechunk

__all__ = [
    "NATIVE_READERS",
    "GRIBSource",
    "HDF5Source",
    "Mismatch",
    "NativeSource",
    "SampledChunk",
    "TIFFSource",
    "Unchecked",
    "VerifyReport",
    "verify_repository",
]

MismatchKind = Literal["values", "shape", "dtype", "error"]


# -- report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampledChunk:
    """One virtual chunk picked for verification.

    Attributes
    ----------
    path
        The array's path in the repository (including ``group``).
    name
        The array's path relative to ``group`` (the variable's name in the source file).
    chunk
        The chunk's index in the array's chunk grid.
    url, offset, length
        Where the chunk's bytes are.
    region
        The elements of the array the chunk covers.
    """

    path: str
    name: str
    chunk: tuple[int, ...]
    url: str
    offset: int
    length: int
    region: tuple[slice, ...]

    @property
    def label(self) -> str:
        """``path[i,j,...] url bytes start-end``, for reports."""
        index = ",".join(str(i) for i in self.chunk)
        end = self.offset + self.length
        return f"{self.path}[{index}] {self.url} bytes {self.offset}-{end}"


@dataclass(frozen=True)
class Mismatch:
    """A sampled chunk that reads differently through the repository and natively.

    Attributes
    ----------
    path, chunk, url, offset, length
        Which chunk (see :class:`SampledChunk`).
    kind
        ``"values"``, ``"shape"``, ``"dtype"`` or ``"error"`` (a read failed).
    detail
        What differs, in words.
    max_abs_difference
        For ``"values"``: the largest absolute difference between elements that are both
        numbers (None when only NaN placement differs or the type has no subtraction).
    """

    path: str
    chunk: tuple[int, ...]
    url: str
    offset: int
    length: int
    kind: MismatchKind
    detail: str
    max_abs_difference: float | None = None

    def __str__(self) -> str:
        index = ",".join(str(i) for i in self.chunk)
        where = f"{self.path}[{index}] {self.url} bytes {self.offset}-{self.offset + self.length}"
        what = f"error: {self.detail}" if self.kind == "error" else self.detail
        return f"MISMATCH {where}: {what}"


@dataclass(frozen=True)
class Unchecked:
    """A sampled chunk that could not be compared (no native reader for its format).

    Attributes
    ----------
    path, chunk, url, offset, length
        Which chunk (see :class:`SampledChunk`).
    reason
        Why it was not checked.
    """

    path: str
    chunk: tuple[int, ...]
    url: str
    offset: int
    length: int
    reason: str

    def __str__(self) -> str:
        index = ",".join(str(i) for i in self.chunk)
        where = f"{self.path}[{index}] {self.url} bytes {self.offset}-{self.offset + self.length}"
        return f"NOT CHECKED {where}: {self.reason}"


@dataclass
class VerifyReport:
    """What :func:`verify_repository` found.

    Attributes
    ----------
    repository
        The repository's url.
    branch
        The branch read.
    seed
        The seed the sample was drawn with (pass it again to draw the same sample).
    virtual_chunks
        How many virtual chunks the repository's arrays hold (the population sampled from).
    sampled
        The chunks picked.
    checked
        How many sampled chunks were compared (equal or not); chunks reported in
        :attr:`unchecked` are not counted.
    mismatches
        The chunks that differ or could not be read.
    unchecked
        The chunks that could not be compared, and why.
    skipped_arrays
        Arrays left out entirely (path: reason), e.g. a chunk grid the parser can't read.
    """

    repository: str
    branch: str
    seed: int
    virtual_chunks: int = 0
    sampled: list[SampledChunk] = field(default_factory=list)
    checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    unchecked: list[Unchecked] = field(default_factory=list)
    skipped_arrays: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no compared chunk differs or failed to read. Unchecked chunks don't
        make a report fail: see :attr:`unchecked` and :attr:`complete`."""
        return not self.mismatches

    @property
    def complete(self) -> bool:
        """True when every sampled chunk was compared and no array was skipped."""
        return not self.unchecked and not self.skipped_arrays

    def _checked_chunks(self) -> list[SampledChunk]:
        unchecked = {(u.path, u.chunk) for u in self.unchecked}
        return [c for c in self.sampled if (c.path, c.chunk) not in unchecked]

    @property
    def arrays(self) -> int:
        """How many arrays the checked chunks belong to."""
        return len({c.path for c in self._checked_chunks()})

    @property
    def files(self) -> int:
        """How many source files the checked chunks come from."""
        return len({c.url for c in self._checked_chunks()})

    def summary(self) -> str:
        """One line: how much was verified and whether it was all equal."""
        if self.virtual_chunks == 0:
            text = f"no virtual chunks to verify in {self.repository} (branch {self.branch})"
        else:
            outcome = (
                "all equal"
                if self.ok
                else f"{_plural(len(self.mismatches), 'mismatch', 'mismatches')}"
            )
            text = (
                f"verified {_plural(self.checked, 'chunk')} of "
                f"{_plural(self.arrays, 'array')} from {_plural(self.files, 'file')}: {outcome}"
            )
        notes = []
        if self.unchecked:
            notes.append(f"{_plural(len(self.unchecked), 'chunk')} not checked")
        if self.skipped_arrays:
            notes.append(f"{_plural(len(self.skipped_arrays), 'array')} skipped")
        return f"{text} ({'; '.join(notes)})" if notes else text

    def to_text(self) -> str:
        """The report as the ``virtualize verify`` command prints it: one line per mismatch,
        per unchecked chunk and per skipped array, then :meth:`summary`."""
        lines = [str(m) for m in self.mismatches]
        lines += [str(u) for u in self.unchecked]
        lines += [f"SKIPPED {path}: {reason}" for path, reason in self.skipped_arrays.items()]
        lines.append(self.summary())
        return "\n".join(lines)


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


# -- native readers ---------------------------------------------------------------------------


class NativeSource(Protocol):
    """One source file opened with its format's own library.

    Variable names are ``/``-separated paths from the file's root. A source may also have a
    method ``variable(name, attributes) -> str | None`` naming the variable that an array
    with these attributes was made from, when they tell (TIFF arrays record their IFD);
    that name is then tried first. It may also have a method ``scalar(name) -> np.ndarray |
    None`` giving the 0-d coordinate ``name`` (a GRIB run's reference ``time``), checked
    against the repository's value along a leading dimension the file lacks.
    """

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The shape of variable ``name``, or None if the file has no such variable."""
        ...

    def read(self, name: str, region: tuple[slice, ...], *, decode: bool) -> np.ndarray:
        """The values of ``name`` over ``region``: as stored (filters applied, no CF
        conventions) or, with ``decode``, CF-decoded as xarray does (masking and packing,
        not times)."""
        ...

    def coordinate(self, name: str) -> np.ndarray | None:
        """The values of the 1-D variable ``name`` decoded as xarray does (times included),
        or None if there is no such 1-D variable."""
        ...

    def close(self) -> None:
        """Release the file."""
        ...


NativeOpener = Callable[[str, ObjectStoreRegistry], NativeSource]


class HDF5Source:
    """An HDF5 / netCDF4 file read with h5py (raw values) and xarray's ``h5netcdf`` backend
    (decoded values), through obstore.

    Parameters
    ----------
    url
        The file.
    registry
        Authorises and serves ``url``.
    """

    def __init__(self, url: str, registry: ObjectStoreRegistry) -> None:
        import h5py

        self.url = url
        self.registry = registry
        store, path = registry.resolve(url)
        self._size = head(registry, url).size or 0
        self._store, self._path = store, path
        self._file = h5py.File(ObstoreFile(store, path, self._size), "r")
        self._datasets: dict[str, Any] = {}
        self._coordinates: dict[str, np.ndarray | None] = {}

    def _dataset(self, group: str) -> Any:
        """The xarray dataset of ``group`` with nothing decoded (lazily read)."""
        import xarray as xr

        if group not in self._datasets:
            self._datasets[group] = xr.open_dataset(
                ObstoreFile(self._store, self._path, self._size),  # type: ignore[arg-type]
                engine="h5netcdf",
                group=group or None,
                decode_cf=False,
                phony_dims="access",
            )
        return self._datasets[group]

    def _variable(self, name: str) -> Any:
        group, leaf = posixpath.split(name.strip("/"))
        return self._dataset(group).variables[leaf]

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The shape of the dataset ``name`` (see :meth:`NativeSource.shape`)."""
        import h5py

        node = self._file.get(name)
        return tuple(int(n) for n in node.shape) if isinstance(node, h5py.Dataset) else None

    def read(self, name: str, region: tuple[slice, ...], *, decode: bool) -> np.ndarray:
        """Raw values through h5py, or with ``decode`` xarray's CF decoding of them (see
        :meth:`NativeSource.read`)."""
        if not decode:
            return np.asarray(self._file[name][region])
        import xarray as xr

        leaf = posixpath.basename(name)
        decoded = xr.decode_cf(
            xr.Dataset({leaf: self._variable(name)}),
            mask_and_scale=True,
            decode_times=False,
            decode_timedelta=False,
            decode_coords=False,
        )
        return np.asarray(decoded[leaf].variable[region].values)

    def coordinate(self, name: str) -> np.ndarray | None:
        """The decoded values of the 1-D variable ``name`` (see
        :meth:`NativeSource.coordinate`)."""
        if name not in self._coordinates:
            self._coordinates[name] = self._coordinate(name)
        return self._coordinates[name]

    def _coordinate(self, name: str) -> np.ndarray | None:
        import xarray as xr

        group, leaf = posixpath.split(name.strip("/"))
        try:
            variable = self._dataset(group).variables.get(leaf)
        except Exception:
            return None  # no such group
        # netCDF dimensions without a coordinate variable are not variables here
        if variable is None or variable.ndim != 1:
            return None
        try:
            decoded = xr.decode_cf(xr.Dataset({leaf: variable}), decode_coords=False)
            return np.asarray(decoded[leaf].values)
        except Exception:
            return np.asarray(variable.values)

    def close(self) -> None:
        """Close the xarray datasets and the h5py file."""
        for dataset in self._datasets.values():
            dataset.close()
        self._datasets.clear()
        self._file.close()


#: NewSubfileType bits of reduced-resolution images (1) and transparency masks (4)
_OVERVIEW_OR_MASK = 1 | 4
_TIFF_IMAGES = (_TIFF_DATA, _TIFF_MASK)


class TIFFSource:
    """A TIFF, GeoTIFF or COG read with tifffile's own decoding, through obstore.

    Variables are named as :class:`~virtualize.parsers.TIFFParser` names them: ``"data"``
    and ``"mask"`` (the first image and its internal mask), the same in the groups of the
    multiscale tree (``"1/data"``, ``"1/mask"``: overviews, ``"ifd_5/data"``: another
    IFD), and the coordinates ``x``, ``y`` and ``band`` beside them.

    Parameters
    ----------
    url
        The file.
    registry
        Authorises and serves ``url``.

    Notes
    -----
    A region is read with ``zarr.open_array(page.aszarr())``, which decodes only the tiles
    or strips it covers, with tifffile's codecs and its fill value for sparse segments.
    TIFF samples carry no CF packing, so ``read(..., decode=True)`` gives the stored values
    too.
    """

    def __init__(self, url: str, registry: ObjectStoreRegistry) -> None:
        import tifffile

        self.url = url
        self.registry = registry
        store, path = registry.resolve(url)
        self._file = ObstoreFile(store, path, head(registry, url).size or 0)
        try:
            self._tiff = tifffile.TiffFile(self._file)  # type: ignore[arg-type]
        except BaseException:
            self._file.close()
            raise
        self._tiff.pages.useframes = False
        self._plans: dict[bool, Any] = {}
        self._arrays: dict[int, Any] = {}
        self._stores: list[Any] = []
        self._tree: ManifestStore | None = None
        self._coordinates: dict[str, np.ndarray | None] = {}

    def variable(self, name: str, attributes: dict[str, Any]) -> str | None:
        """``"ifd_<index>/<leaf>"``: the IFD an array of the parser records in its
        ``tiff:ifd`` attribute, wherever the array is (an overview written at the root, a
        level's group verified as ``group=``); None without the attribute."""
        index = attributes.get("tiff:ifd")
        leaf = posixpath.basename(name.strip("/"))
        if isinstance(index, bool) or not isinstance(index, int) or leaf not in _TIFF_IMAGES:
            return None
        return f"ifd_{index}/{leaf}"

    def _page(self, name: str) -> Any | None:
        """The IFD of the image or mask ``name``, or None. ``ifd_<index>/data`` (or
        ``/mask``) is the IFD ``index`` itself."""
        group, leaf = posixpath.split(name.strip("/"))
        if leaf not in _TIFF_IMAGES:
            return None
        if group.startswith("ifd_") and group[4:].isdigit():
            try:
                return self._tiff.pages[int(group[4:])]
            except IndexError:
                return None
        if group and not group.isdigit():
            return None
        levels = self._plan(tree=bool(group)).levels
        number = int(group or 0)
        if number >= len(levels):
            return None
        level = levels[number]
        return level.page if leaf == _TIFF_DATA else level.mask

    def _plan(self, *, tree: bool) -> Any:
        """The parser's levels: of every IFD for the multiscale tree, else (as the parser
        opens the first image alone) of the IFDs up to the first that is neither an
        overview nor a mask."""
        if tree not in self._plans:
            pages: list[Any] = []
            while True:
                try:
                    page: Any = self._tiff.pages[len(pages)]
                except IndexError:
                    break
                if not tree and pages and not page.subfiletype & _OVERVIEW_OR_MASK:
                    break
                pages.append(page)
            self._plans[tree] = _plan(pages)
        return self._plans[tree]

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The shape of the image, mask or coordinate ``name``, band first (see
        :meth:`NativeSource.shape`)."""
        page = self._page(name)
        if page is None:
            values = self.coordinate(name)
            return None if values is None else values.shape
        height, width = int(page.imagelength), int(page.imagewidth)
        samples = int(page.samplesperpixel)
        return (samples, height, width) if samples > 1 else (height, width)

    def read(self, name: str, region: tuple[slice, ...], *, decode: bool) -> np.ndarray:
        """The values of ``name`` over ``region`` as tifffile decodes them (see
        :meth:`NativeSource.read`; ``decode`` changes nothing for TIFF)."""
        import zarr

        page = self._page(name)
        if page is None:
            values = self.coordinate(name)
            if values is None:
                raise KeyError(f"the file has no variable {name!r}")
            return values[region]
        if page.index not in self._arrays:
            store = page.aszarr()
            self._stores.append(store)
            self._arrays[page.index] = zarr.open_array(store, mode="r")
        array = self._arrays[page.index]
        if int(page.samplesperpixel) > 1 and page.planarconfig == 1:
            # tifffile gives interleaved pages as (y, x, band); the parser's axes are band first
            band, rows, columns = region
            return np.moveaxis(np.asarray(array[rows, columns, band]), -1, 0)
        return np.asarray(array[region])

    def coordinate(self, name: str) -> np.ndarray | None:
        """The values of the coordinate ``name`` (``x``, ``y``, ``band``, in a level's group
        or at the root for the first image) as the parser gives them (see
        :meth:`NativeSource.coordinate`)."""
        if name not in self._coordinates:
            self._coordinates[name] = self._coordinate(name)
        return self._coordinates[name]

    def _coordinate(self, name: str) -> np.ndarray | None:
        import zarr

        group, leaf = posixpath.split(name.strip("/"))
        if leaf in _TIFF_IMAGES or not leaf:
            return None
        if self._tree is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parser = TIFFParser(multiscales=True, on_unsupported="skip")
                self._tree = parser(self.url, self.registry)
        path = posixpath.join(self._tree_group(group), leaf)
        try:
            array = zarr.open_array(self._tree, path=path, mode="r", zarr_format=3)
        except Exception:
            return None  # no such variable
        return np.asarray(array[...]) if array.ndim == 1 else None

    def _tree_group(self, group: str) -> str:
        """The group of the parser's multiscale tree that holds the coordinates of
        ``group``: ``"0"`` for the root; for ``ifd_<index>``, the level whose image or mask
        that IFD is."""
        if not group:
            return "0"
        if group.startswith("ifd_") and group[4:].isdigit():
            index = int(group[4:])
            for number, level in enumerate(self._plan(tree=True).levels):
                if index in {level.page.index, getattr(level.mask, "index", None)}:
                    return str(number)
        return group

    def close(self) -> None:
        """Close tifffile's zarr stores and the file."""
        for store in self._stores:
            store.close()
        self._stores.clear()
        self._arrays.clear()
        self._tiff.close()
        self._file.close()


class GRIBSource:
    """A GRIB 1 or GRIB 2 file read with cfgrib (and ecCodes), independently of
    virtualize's parser and codec.

    The file's bytes are fetched through obstore into a temporary folder, with cfgrib's
    index beside them, and opened with ``cfgrib.open_datasets``. Variables are named as
    :class:`~virtualize.parsers.GRIBParser` names them: ``"<variable>"`` when the file is
    one dataset, ``"<group>/<variable>"`` (groups named by
    :func:`virtualize.parsers.grib.group_names`) when it is several; coordinates
    (``step``, ``isobaricInhPa``, ``latitude``, ...) likewise.

    Parameters
    ----------
    url
        The file.
    registry
        Authorises and serves ``url``.

    Notes
    -----
    cfgrib gives float32 with missing values as NaN and GRIB has no CF packing, so
    ``read(..., decode=True)`` gives the same values as ``decode=False``. A forecast run's
    reference ``time`` is a scalar coordinate here; a ``time`` dimension that a
    ``preprocess`` function gave the repository's arrays is a leading dimension the file
    lacks (see :func:`verify_repository`).
    """

    def __init__(self, url: str, registry: ObjectStoreRegistry) -> None:
        import obstore

        from virtualize._eccodes import eccodes

        eccodes()  # ecCodes before cfgrib: see virtualize._eccodes
        import cfgrib

        from virtualize.parsers.grib import group_names

        self.url = url
        self.registry = registry
        store, path = registry.resolve(url)
        data = obstore.get(store, path).bytes()
        self._folder = tempfile.mkdtemp(prefix="virtualize-verify-grib-")
        try:
            local = os.path.join(self._folder, "source.grib")
            with open(local, "wb") as file:
                file.write(memoryview(data))
            # never indexpath="": cfgrib would rescan the file for every variable
            index = os.path.join(self._folder, "source.grib.{short_hash}.idx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                datasets = cfgrib.open_datasets(local, backend_kwargs={"indexpath": index})
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        self._datasets: list[Any] = list(datasets)
        self._groups: dict[str, Any] = (
            {"": self._datasets[0]}
            if len(self._datasets) == 1
            else dict(zip(group_names(self._datasets), self._datasets, strict=True))
        )

    def _lookup(self, name: str) -> Any | None:
        """cfgrib's variable (data or coordinate) ``name``, or None."""
        group, leaf = posixpath.split(name.strip("/"))
        dataset = self._groups.get(group)
        if dataset is None or not leaf:
            return None
        return dataset.variables.get(leaf)

    def variable(self, name: str, attributes: dict[str, Any]) -> str | None:
        """The variable of the file an array named ``name`` with these attributes was made
        from, when ``name`` alone doesn't name one: the variable of that leaf name, in the
        one group whose cfgrib attributes (``GRIB_typeOfLevel``, ``GRIB_stepType``, ...)
        agree with the array's. This finds a group the repository holds at its root
        (``GRIBParser(group=...)``); None when there is no such single variable."""
        if self._lookup(name) is not None:
            return None
        leaf = posixpath.basename(name.strip("/"))
        found = [
            f"{group}/{leaf}" if group else leaf
            for group, dataset in self._groups.items()
            if leaf in dataset.data_vars and _agree(dataset[leaf].attrs, attributes)
        ]
        return found[0] if len(found) == 1 else None

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The shape of cfgrib's variable ``name`` (see :meth:`NativeSource.shape`)."""
        variable = self._lookup(name)
        return None if variable is None else tuple(int(n) for n in variable.shape)

    def read(self, name: str, region: tuple[slice, ...], *, decode: bool) -> np.ndarray:
        """The values of ``name`` over ``region`` as cfgrib decodes them (see
        :meth:`NativeSource.read`; ``decode`` changes nothing for GRIB)."""
        variable = self._lookup(name)
        if variable is None:
            raise KeyError(f"the file has no variable {name!r}")
        return np.asarray(variable[region].values)

    def scalar(self, name: str) -> np.ndarray | None:
        """cfgrib's value of the scalar coordinate ``name`` (a forecast run's reference
        ``time``, as ``datetime64``), or None. :func:`verify_repository` checks it against
        the repository's value along a leading dimension the file lacks."""
        variable = self._lookup(name)
        if variable is None or variable.ndim != 0:
            return None
        return np.asarray(variable.values)

    def coordinate(self, name: str) -> np.ndarray | None:
        """cfgrib's values of the 1-D coordinate ``name`` (times as ``datetime64``, steps
        as ``timedelta64``, as xarray decodes the repository's; see
        :meth:`NativeSource.coordinate`)."""
        variable = self._lookup(name)
        if variable is None or variable.ndim != 1:
            return None
        return np.asarray(variable.values)

    def close(self) -> None:
        """Close cfgrib's datasets and delete the temporary copy and its index."""
        for dataset in self._datasets:
            dataset.close()
        self._datasets.clear()
        self._groups.clear()
        shutil.rmtree(self._folder, ignore_errors=True)


def _agree(native: dict[Any, Any], recorded: dict[str, Any]) -> bool:
    """Whether the ``GRIB_*`` attributes the two sides both have are equal."""
    for key, value in native.items():
        if not str(key).startswith("GRIB_") or key not in recorded:
            continue
        try:
            if not bool(np.all(np.asarray(value) == np.asarray(recorded[key]))):
                return False
        except Exception:
            return False
    return True


#: Native readers by format name (as :func:`virtualize.parsers.sniff_format` names formats).
#: Register a reader for another format here: ``NATIVE_READERS["fits"] = FITSSource``.
NATIVE_READERS: dict[str, NativeOpener] = {
    "hdf5": HDF5Source,
    "tiff": TIFFSource,
    "grib": GRIBSource,
}


# -- opening the repository -------------------------------------------------------------------


def _s3_environment() -> dict[str, Any]:
    """Endpoint, region and addressing for S3 from the environment (``AWS_*``)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    allow_http = bool(endpoint and endpoint.startswith("http://")) or (
        os.environ.get("AWS_ALLOW_HTTP", "").lower() == "true"
    )
    hosted = os.environ.get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "").lower()
    path_style = hosted == "false" or (bool(endpoint) and hosted != "true")
    return {
        "endpoint": endpoint,
        "region": region,
        "allow_http": allow_http,
        "path_style": path_style,
    }


def _s3_store(bucket: str, prefix: str | None) -> Any:
    """An obstore ``S3Store`` for ``bucket`` (under ``prefix``), configured from the
    environment; credentials come from the environment too."""
    from obstore.store import S3Store

    env = _s3_environment()
    options: dict[str, Any] = {}
    if env["endpoint"]:
        options["endpoint"] = env["endpoint"]
    if env["region"]:
        options["region"] = env["region"]
    if env["path_style"]:
        options["virtual_hosted_style_request"] = False
    if env["allow_http"]:
        options["client_options"] = {"allow_http": True}
    return S3Store(bucket, prefix=prefix or None, **options)


def _storage(repo_url: str) -> Any:
    """The icechunk ``Storage`` of the repository at ``repo_url`` (file:// or s3://)."""
    import icechunk

    parts = urlsplit(repo_url)
    if parts.scheme == "file":
        return icechunk.local_filesystem_storage(unquote(parts.path))
    if parts.scheme == "s3":
        env = _s3_environment()
        return icechunk.s3_storage(
            bucket=parts.netloc,
            prefix=parts.path.strip("/") or None,
            region=env["region"],
            from_env=True,
            endpoint_url=env["endpoint"],
            allow_http=env["allow_http"],
            force_path_style=env["path_style"],
        )
    raise UnsupportedFeatureError(
        f"repositories at {parts.scheme}:// urls can't be verified yet",
        url=repo_url,
        hint="Pass a local path or an s3:// url",
    )


def _storage_url(storage: Any) -> str | None:
    """The url of an icechunk ``Storage`` (local file system or S3), from its description."""
    text = str(storage)
    fields = dict(re.findall(r"^\s*([a-z_]+):\s*(.*?)\s*$", text, flags=re.MULTILINE))
    kind = fields.get("type", "").lower()
    if kind.startswith("local") and fields.get("path"):
        return normalize_url(fields["path"]).rstrip("/")
    if kind.startswith("s3") and fields.get("bucket"):
        prefix = fields.get("prefix", "").strip("/")
        return f"s3://{fields['bucket']}/{prefix}".rstrip("/")
    return None


def _location_store(prefix: str) -> Any | None:
    """An obstore store serving ``prefix`` (file://, s3:// or http(s)://), or None."""
    from obstore.store import HTTPStore, LocalStore

    parts = urlsplit(prefix)
    try:
        if parts.scheme == "file":
            return LocalStore(unquote(parts.path))
        if parts.scheme == "s3":
            return _s3_store(parts.netloc, parts.path.strip("/") or None)
        if parts.scheme in ("http", "https"):
            return HTTPStore.from_url(prefix)
    except Exception:
        return None  # e.g. a local folder that no longer exists: its chunks are refused
    return None


def _copy_registry(registry: ObjectStoreRegistry) -> ObjectStoreRegistry:
    return ObjectStoreRegistry({p: registry.resolve(p)[0] for p in registry.prefixes})


def _containers_registry(containers: Sequence[str]) -> ObjectStoreRegistry:
    """A registry of the repository's virtual chunk containers."""
    registry = ObjectStoreRegistry()
    for prefix in containers:
        store = _location_store(prefix)
        if store is not None:
            registry.register(prefix, store)
    return registry


def _authorization(containers: Sequence[str], registry: ObjectStoreRegistry) -> dict[str, Any]:
    """``authorize_virtual_chunk_access`` for the containers the registry reaches into.

    Icechunk authorises whole containers, so a container is authorised when the registry
    covers it or a part of it; only chunks the registry resolves are ever requested.
    """
    import icechunk

    access: dict[str, Any] = {}
    for prefix in containers:
        if prefix not in registry and not any(p.startswith(prefix) for p in registry.prefixes):
            continue
        scheme = urlsplit(prefix).scheme
        if scheme == "s3":
            access[prefix] = icechunk.s3_from_env_credentials()
        elif scheme in ("http", "https"):
            access[prefix] = icechunk.Credentials.HttpAccess()
        elif scheme == "file":
            access[prefix] = icechunk.Credentials.LocalFileSystemAccess()
    return icechunk.containers_credentials(access)


def _open(repo: Any, registry: ObjectStoreRegistry | None) -> tuple[Any, str, ObjectStoreRegistry]:
    """The repository (authorised to read its virtual chunks), its url and the registry that
    allows its containers' locations and the repository itself."""
    import icechunk

    if isinstance(repo, icechunk.Repository):
        repo_url = _storage_url(repo.storage)
        if repo_url is None:
            raise UnsupportedFeatureError(
                "can't tell where this repository is stored",
                hint="Pass the repository's path or s3:// url instead",
            )
        repository = repo
    else:
        repo_url = normalize_url(os.fspath(repo)).rstrip("/")
        try:
            repository = icechunk.Repository.open(_storage(repo_url))
        except VirtualizeError:
            raise
        except Exception as error:
            raise VirtualizeError(
                f"cannot open an Icechunk repository here ({_first_line(error)})",
                url=repo_url,
                hint="Check the path or url, and AWS_* variables for s3://",
            ) from error
    containers = sorted((repository.config.virtual_chunk_containers or {}).keys())
    # An explicit registry, even an empty one, is the allow-list; never widen it.
    allowed = _copy_registry(registry) if registry is not None else _containers_registry(containers)
    if repo_url + "/" not in allowed:
        store = _location_store(repo_url + "/")
        if store is not None:
            allowed.register(repo_url + "/", store)
    repository = repository.reopen(
        authorize_virtual_chunk_access=_authorization(containers, allowed) or None
    )
    return repository, repo_url, allowed


# -- sampling ---------------------------------------------------------------------------------


def _is_virtual(array: ManifestArray, repo_url: str) -> npt.NDArray[np.bool_]:
    """Which chunks of ``array`` reference a file outside the repository (flat, C order)."""
    manifest = array.manifest
    own = repo_url + "/"
    outside = np.array([not url.startswith(own) for url in manifest.urls] + [False], dtype=bool)
    ids = manifest.path_ids.ravel()
    return outside[np.where(ids < INLINE, ids, len(manifest.urls))]


def _region(array: ManifestArray, chunk: tuple[int, ...]) -> tuple[slice, ...]:
    region = []
    for sizes, index in zip(array.chunk_sizes, chunk, strict=True):
        start = int(sum(sizes[:index]))
        region.append(slice(start, start + int(sizes[index])))
    return tuple(region)


def _sample(
    arrays: dict[str, ManifestArray],
    group: str,
    repo_url: str,
    sample: int,
    rng: np.random.Generator,
) -> tuple[int, list[SampledChunk]]:
    """(how many virtual chunks there are, a uniform sample of ``sample`` of them)."""
    masks = {name: _is_virtual(array, repo_url) for name, array in arrays.items()}
    counts = np.array([int(m.sum()) for m in masks.values()], dtype=np.int64)
    total = int(counts.sum())
    size = min(max(sample, 0), total)
    if size == 0:
        return total, []
    picked = np.sort(rng.choice(total, size=size, replace=False))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    chosen: list[SampledChunk] = []
    for position, (name, mask) in enumerate(masks.items()):
        inside = picked[(picked >= bounds[position]) & (picked < bounds[position + 1])]
        if inside.size == 0:
            continue
        array = arrays[name]
        manifest = array.manifest
        flat = np.flatnonzero(mask)[inside - bounds[position]]
        grid = manifest.path_ids.shape
        for index in flat.tolist():
            chunk = tuple(int(i) for i in np.unravel_index(index, grid))
            chosen.append(
                SampledChunk(
                    path=posixpath.join(group, name) if group else name,
                    name=name,
                    chunk=chunk,
                    url=manifest.urls[int(manifest.path_ids.flat[index])],
                    offset=int(manifest.offsets.flat[index]),
                    length=int(manifest.lengths.flat[index]),
                    region=_region(array, chunk),
                )
            )
    return total, chosen


# -- comparing --------------------------------------------------------------------------------


class _Failure(Exception):
    """A chunk that can't be compared: becomes a mismatch of kind ``"error"``."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _equal_elements(a: np.ndarray, b: np.ndarray) -> npt.NDArray[np.bool_]:
    equal = np.asarray(a == b, dtype=bool)
    if a.dtype.kind in "fc":
        equal |= np.isnan(a) & np.isnan(b)
    return equal


def _compare(
    repository: np.ndarray, native: np.ndarray
) -> tuple[MismatchKind, str, float | None] | None:
    """None when equal, else (kind, detail, max abs difference)."""
    if repository.shape != native.shape:
        return (
            "shape",
            f"shape {repository.shape} through the repository, {native.shape} in the source",
            None,
        )
    if repository.dtype.newbyteorder("=") != native.dtype.newbyteorder("="):
        return (
            "dtype",
            f"dtype {repository.dtype} through the repository, {native.dtype} in the source",
            None,
        )
    equal = _equal_elements(repository, native)
    if equal.all():
        return None
    differ = int(equal.size - np.count_nonzero(equal))
    detail = f"{differ} of {equal.size} values differ"
    largest: float | None = None
    if repository.dtype.kind in "iufc":
        wide = np.complex128 if repository.dtype.kind == "c" else np.float64
        gap = np.abs(repository.astype(wide) - native.astype(wide))[~equal]
        finite = gap[~np.isnan(gap)]
        if finite.size:
            largest = float(finite.max())
            detail += f", max abs difference {largest:.6g}"
        if finite.size < gap.size:
            detail += f", {gap.size - finite.size} NaN on one side only"
    return "values", detail, largest


# -- locating a chunk in its source file ------------------------------------------------------


def _scopes(path: str) -> Iterator[str]:
    """The groups a dimension's coordinate may live in for the array at ``path``: its own
    group, then each parent up to the root."""
    scope = posixpath.dirname(path)
    while True:
        yield scope
        if not scope:
            return
        scope = posixpath.dirname(scope)


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    try:
        return bool(_equal_elements(a, b).all())
    except Exception:
        return False


def _find_run(haystack: np.ndarray, needle: np.ndarray, guess: int) -> int | None:
    """Where ``needle`` appears as a contiguous run in ``haystack`` (``guess`` first)."""
    n = needle.size
    if n == 0:
        return guess
    if guess + n <= haystack.size and _same_values(haystack[guess : guess + n], needle):
        return guess
    try:
        candidates = np.flatnonzero(_equal_elements(haystack, np.full_like(haystack, needle[0])))
    except Exception:
        candidates = np.flatnonzero([value == needle[0] for value in haystack.tolist()])
    for start in candidates.tolist():
        if start + n <= haystack.size and _same_values(haystack[start : start + n], needle):
            return int(start)
    return None


class _Repository:
    """Reads through the repository's read-only session (arrays and decoded coordinates)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self._arrays: dict[str, Any] = {}
        self._coordinates: dict[str, np.ndarray | None] = {}

    def read(self, path: str, region: tuple[slice, ...]) -> np.ndarray:
        import zarr

        if path not in self._arrays:
            self._arrays[path] = zarr.open_array(
                self.session.store, path=path, mode="r", zarr_format=3
            )
        return np.asarray(self._arrays[path][region])

    def coordinate(self, path: str, dimension: str, length: int) -> np.ndarray | None:
        """The decoded values of the 1-D coordinate ``dimension`` in scope of ``path``."""
        for scope in _scopes(path):
            candidate = posixpath.join(scope, dimension) if scope else dimension
            values = self._coordinate(candidate)
            if values is not None and values.shape == (length,):
                return values
        return None

    def _coordinate(self, path: str) -> np.ndarray | None:
        if path not in self._coordinates:
            self._coordinates[path] = self._load_coordinate(path)
        return self._coordinates[path]

    def _load_coordinate(self, path: str) -> np.ndarray | None:
        import xarray as xr
        import zarr

        store = self.session.store
        try:
            array = zarr.open_array(store, path=path, mode="r", zarr_format=3)
        except Exception:
            return None
        if array.ndim != 1:
            return None
        scope, leaf = posixpath.split(path)
        try:
            siblings = zarr.open_group(store, path=scope, mode="r", zarr_format=3)
            others = [name for name in siblings.array_keys() if name != leaf]
            with xr.open_zarr(
                store,
                group=scope or None,
                consolidated=False,
                zarr_format=3,
                drop_variables=others,
                chunks=None,
            ) as dataset:
                return np.asarray(dataset[leaf].values)
        except Exception:
            return np.asarray(array[...])


def _source_name(source: NativeSource, chunk: SampledChunk, array: ManifestArray) -> str:
    """The source's name of the chunk's variable. The source may lack leading dimensions
    of the repository's array along which the chunk covers one element (see
    :func:`_source_region`)."""
    ndim = array.ndim
    recorded = getattr(source, "variable", None)
    hint = recorded(chunk.name, dict(array.metadata.attributes)) if callable(recorded) else None
    for name in dict.fromkeys(n for n in (hint, chunk.name, chunk.path) if n):
        shape = source.shape(name)
        if shape is not None:
            extra = ndim - len(shape)
            if extra < 0 or any(r.stop - r.start != 1 for r in chunk.region[:extra]):
                raise _Failure(
                    f"variable {name!r} has {len(shape)} dimensions in the source, "
                    f"{ndim} in the repository"
                )
            return name
    raise _Failure(f"the source has no variable {chunk.name!r}")


def _source_coordinate(
    source: NativeSource, name: str, dimension: str, length: int
) -> np.ndarray | None:
    for scope in _scopes(name):
        candidate = posixpath.join(scope, dimension) if scope else dimension
        values = source.coordinate(candidate)
        if values is not None and values.shape == (length,):
            return values
    return None


def _source_region(
    chunk: SampledChunk,
    array: ManifestArray,
    name: str,
    source: NativeSource,
    repository: _Repository,
) -> tuple[slice, ...]:
    """The region of the source variable ``name`` that the sampled chunk covers.

    Leading dimensions of the array that the source variable lacks (``time`` given to
    single images by a ``preprocess`` function) map to nothing: the region has the source
    variable's dimensions only. When the source has a scalar coordinate of that name (a
    GRIB forecast run's reference ``time``), it must be the repository's value there.
    """
    file_shape = source.shape(name) or ()
    extra = array.ndim - len(file_shape)
    dimensions = array.metadata.dimension_names or (None,) * array.ndim
    region = []
    for axis, (dimension, wanted) in enumerate(zip(dimensions, chunk.region, strict=True)):
        if axis < extra:
            if dimension:
                _check_scalar(chunk, array, name, source, repository, axis, dimension)
            continue
        start, stop = int(wanted.start), int(wanted.stop)
        length, file_length = array.shape[axis], file_shape[axis - extra]
        repo_values = repository.coordinate(chunk.path, dimension, length) if dimension else None
        file_values = (
            _source_coordinate(source, name, dimension, file_length)
            if dimension and repo_values is not None
            else None
        )
        if repo_values is not None and file_values is not None:
            found = _find_run(file_values, repo_values[start:stop], start)
            if found is None:
                shown = repo_values[start:stop]
                raise _Failure(
                    f"the chunk's {dimension} values ({shown[0]} .. {shown[-1]}) are not "
                    f"in the source's {dimension}"
                )
            region.append(slice(found, found + stop - start))
        elif file_length == length:
            region.append(wanted)
        else:
            first = _run_start(array, chunk.chunk, axis)
            offset = start - _region(array, first)[axis].start
            region.append(slice(offset, offset + stop - start))
    return tuple(region)


def _check_scalar(
    chunk: SampledChunk,
    array: ManifestArray,
    name: str,
    source: NativeSource,
    repository: _Repository,
    axis: int,
    dimension: str,
) -> None:
    """Fail unless the source's scalar coordinate ``dimension`` (when the source has a
    ``scalar`` method and such a coordinate) is the repository's value of that coordinate
    at the chunk, along a leading dimension that only the repository has: otherwise a file
    replaced by another run of the same layout would read the same both ways."""
    scalar = getattr(source, "scalar", None)
    if not callable(scalar):
        return
    repo_values = repository.coordinate(chunk.path, dimension, array.shape[axis])
    if repo_values is None:
        return
    for scope in _scopes(name):
        value = scalar(posixpath.join(scope, dimension) if scope else dimension)
        if value is not None:
            wanted = repo_values[chunk.region[axis].start]
            if not _same_values(np.asarray(value).reshape(1), np.asarray(wanted).reshape(1)):
                raise _Failure(
                    f"the chunk's {dimension} ({wanted}) is not the source's {dimension} ({value})"
                )
            return


def _run_start(array: ManifestArray, chunk: tuple[int, ...], axis: int) -> tuple[int, ...]:
    """The first chunk of the run of chunks from the same file that ends at ``chunk`` along
    ``axis``."""
    ids = array.manifest.path_ids
    own = ids[chunk]
    index = list(chunk)
    while index[axis] > 0:
        index[axis] -= 1
        if ids[tuple(index)] != own:
            index[axis] += 1
            break
    return tuple(index)


def _has_cf_packing(array: ManifestArray) -> bool:
    """Whether the array's codecs decode CF packing (``virtualize.cf_packing``)."""
    return any(isinstance(codec, CFPackingCodec) for codec in array.metadata.codecs)


# -- the entry point --------------------------------------------------------------------------


def verify_repository(
    repo: icechunk.Repository | str | os.PathLike[str],
    *,
    branch: str = "main",
    group: str | None = None,
    sample: int = 20,
    seed: int | None = None,
    registry: ObjectStoreRegistry | None = None,
) -> VerifyReport:
    """Read a random sample of virtual chunks through the repository and natively; compare.

    Parameters
    ----------
    repo
        An ``icechunk.Repository`` (on the local file system or S3), or the repository's
        location: a local path, ``file://`` url or ``s3://bucket/prefix`` (endpoint, region
        and credentials from ``AWS_*`` environment variables, e.g. ``AWS_ENDPOINT_URL``).
    branch
        The branch to verify.
    group
        Verify only the arrays in this group (and its subgroups); the root by default.
    sample
        How many virtual chunks to check, drawn uniformly at random without replacement over
        every virtual chunk of every array. When there are fewer, each is checked once.
    seed
        Seed of the draw, for a reproducible sample; without it a seed is drawn and recorded
        in :attr:`VerifyReport.seed`.
    registry
        Where source files may be read from. By default, the repository's virtual chunk
        containers (local folders, S3 with credentials from the environment, http). The
        repository's own location is added in either case. Bytes are only ever read from
        locations it allows.

    Returns
    -------
    VerifyReport
        ``report.ok`` is False when a chunk differs or can't be read (a source file changed
        or deleted since it was referenced is a mismatch, not an exception).

    Raises
    ------
    UnauthorizedLocationError
        If a reference of the repository lies outside ``registry``.
    InvalidFileError
        If there is no repository, branch or group there.
    VirtualizeError
        If the repository can't be opened.

    Examples
    --------
    >>> report = verify_repository("archive/repo", sample=50, seed=1)  # doctest: +SKIP
    >>> print(report.to_text())  # doctest: +SKIP
    verified 50 chunks of 3 arrays from 41 files: all equal
    """
    if sample < 0:
        raise ValueError(f"sample must not be negative, got {sample}")
    repository, repo_url, allowed = _open(repo, registry)
    group_path = (group or "").strip("/")
    seed = secrets.randbits(63) if seed is None else int(seed)
    report = VerifyReport(repository=repo_url, branch=branch, seed=seed)
    parser = IcechunkParser(branch=branch, group=group_path or None, on_unsupported="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedVariableWarning)
        store = parser(repo_url, allowed)
    report.skipped_arrays = {
        posixpath.join(group_path, name) if group_path else name: reason
        for name, reason in store.skipped.items()
    }
    arrays = {
        name: node
        for name, node in sorted(store.group.walk(), key=lambda item: item[0])
        if isinstance(node, ManifestArray)
    }
    rng = np.random.default_rng(seed)
    report.virtual_chunks, report.sampled = _sample(arrays, group_path, repo_url, sample, rng)
    if not report.sampled:
        return report
    reader = _Repository(repository.readonly_session(branch))
    by_url: dict[str, list[SampledChunk]] = defaultdict(list)
    for chunk in report.sampled:
        by_url[chunk.url].append(chunk)
    for url, chunks in by_url.items():
        _verify_file(url, chunks, arrays, allowed, reader, report)
    order = {(c.path, c.chunk): i for i, c in enumerate(report.sampled)}
    report.mismatches.sort(key=lambda m: order[(m.path, m.chunk)])
    report.unchecked.sort(key=lambda u: order[(u.path, u.chunk)])
    return report


def _verify_file(
    url: str,
    chunks: list[SampledChunk],
    arrays: dict[str, ManifestArray],
    registry: ObjectStoreRegistry,
    reader: _Repository,
    report: VerifyReport,
) -> None:
    """Check the sampled chunks of one source file, recording results in ``report``."""

    def fail(chunk: SampledChunk, kind: MismatchKind, detail: str, largest: Any = None) -> None:
        report.mismatches.append(
            Mismatch(
                chunk.path,
                chunk.chunk,
                chunk.url,
                chunk.offset,
                chunk.length,
                kind,
                detail,
                largest,
            )
        )

    def skip(chunk: SampledChunk, reason: str) -> None:
        report.unchecked.append(
            Unchecked(chunk.path, chunk.chunk, chunk.url, chunk.offset, chunk.length, reason)
        )

    try:
        format_name = sniff_format(url, registry)
    except FormatDetectionError:
        for chunk in chunks:
            skip(chunk, "the source's format is not recognised, so it has no native reader")
        return
    except Exception as error:
        for chunk in chunks:
            report.checked += 1
            fail(chunk, "error", f"the source can't be read ({_first_line(error)})")
        return
    opener = NATIVE_READERS.get(format_name)
    if opener is None:
        for chunk in chunks:
            skip(chunk, f"no native reader for {format_name} sources yet")
        return
    try:
        source = opener(url, registry)
    except Exception as error:
        for chunk in chunks:
            report.checked += 1
            fail(chunk, "error", f"the source can't be opened ({_first_line(error)})")
        return
    try:
        for chunk in chunks:
            report.checked += 1
            array = arrays[chunk.name]
            try:
                try:
                    through_repository = reader.read(chunk.path, chunk.region)
                except Exception as error:
                    raise _Failure(
                        f"reading through the repository failed ({_first_line(error)})"
                    ) from error
                try:
                    name = _source_name(source, chunk, array)
                    region = _source_region(chunk, array, name, source, reader)
                    native = source.read(name, region, decode=_has_cf_packing(array))
                    native = native[(np.newaxis,) * (array.ndim - len(region))]
                except _Failure:
                    raise
                except Exception as error:
                    raise _Failure(f"reading the source failed ({_first_line(error)})") from error
            except _Failure as failure:
                fail(chunk, "error", str(failure))
                continue
            difference = _compare(through_repository, native)
            if difference is not None:
                fail(chunk, *difference)
    finally:
        source.close()
