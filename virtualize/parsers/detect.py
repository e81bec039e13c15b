"""Picking a parser from a file's first bytes."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import obstore

from virtualize.errors import FormatDetectionError, InvalidFileError
from virtualize.io import read_failure_text
from virtualize.registry import ObjectStoreRegistry, normalize_url

__all__ = ["detect", "sniff_format"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SNIFF_BYTES = 8
# HDF5 files may start with a user block of 512, 1024, 2048, ... bytes.
_HDF5_OFFSETS = (0, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def sniff_format(url: str, registry: ObjectStoreRegistry) -> str:
    """The format name of the file at ``url`` from its magic bytes.

    Returns one of ``"hdf5"``, ``"netcdf3"``, ``"tiff"``, ``"grib"``, ``"fits"``,
    ``"kerchunk"`` (JSON references, or a Parquet reference folder), ``"zarr"`` (a store's
    folder) or ``"icechunk"`` (a repository's folder).

    Raises
    ------
    FormatDetectionError
        If no known signature is found.
    """
    store, path = registry.resolve(url)
    try:
        first = bytes(obstore.get_range(store, path, start=0, length=_SNIFF_BYTES))
    except FileNotFoundError as error:
        folder = _sniff_folder(store, path)
        if folder is not None:
            return folder
        if _is_folder(store, path):
            raise InvalidFileError(
                "this is a folder, not a file (nor a Zarr store, an Icechunk repository or "
                "a Kerchunk Parquet reference folder)",
                url=url,
                hint="Open the files in it with open_virtual_mfdataset and a glob ('folder/*.nc')",
            ) from error
        raise InvalidFileError(
            "no such file", url=url, hint="Check the path or url and the registry's prefix"
        ) from error
    except Exception as error:
        if _size(store, path) == 0:  # some stores refuse any range of an empty object
            raise InvalidFileError("the file is empty (0 bytes)", url=url) from error
        raise InvalidFileError(
            f"cannot read the file ({read_failure_text(error)})",
            url=url,
            hint="Check that the path is a readable file, not a directory",
        ) from error
    if not first:
        raise InvalidFileError("the file is empty (0 bytes)", url=url)
    if first.startswith(_HDF5_SIGNATURE):
        return "hdf5"
    if first[:3] == b"CDF" and first[3:4] in (b"\x01", b"\x02", b"\x05"):
        return "netcdf3"
    if first[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if first[:4] == b"GRIB":
        return "grib"
    if first[:6] == b"SIMPLE":
        return "fits"
    if first.lstrip()[:1] == b"{" and _looks_like_kerchunk(store, path):
        return "kerchunk"
    size = obstore.head(store, path)["size"]
    for offset in _HDF5_OFFSETS[1:]:
        if offset + 8 > size:
            break
        if bytes(obstore.get_range(store, path, start=offset, length=8)) == _HDF5_SIGNATURE:
            return "hdf5"
    raise FormatDetectionError(
        f"unrecognised file format (first bytes {first!r})",
        url=url,
        hint="Pass parser= explicitly if the format is supported",
    )


def _sniff_folder(store: Any, path: str) -> str | None:
    """What a folder holds, from the names directly in it: a Zarr store, an Icechunk
    repository, or Kerchunk Parquet references (whose ``.zmetadata`` has ``record_size``)."""
    prefix = path.rstrip("/") + "/"
    try:
        listing = obstore.list_with_delimiter(store, prefix=prefix)
    except Exception:
        return None
    names = {str(entry["path"])[len(prefix) :] for entry in listing["objects"]}
    folders = {str(name)[len(prefix) :].rstrip("/") for name in listing["common_prefixes"]}
    if "repo" in names and "snapshots" in folders:
        return "icechunk"
    if ".zmetadata" in names:
        try:
            metadata = json.loads(bytes(obstore.get(store, prefix + ".zmetadata").bytes()))
        except Exception:
            metadata = {}
        if isinstance(metadata, dict) and "record_size" in metadata:
            return "kerchunk"
        return "zarr"
    if names & {"zarr.json", ".zgroup", ".zarray"}:
        return "zarr"
    return None


def _looks_like_kerchunk(store: Any, path: str) -> bool:
    """JSON whose first kilobytes mention ``refs`` or a version-0 ``.zgroup`` key."""
    size = int(obstore.head(store, path)["size"])
    head = bytes(obstore.get_range(store, path, start=0, length=min(4096, size)))
    return b'"refs"' in head or b'".zgroup"' in head or b'"version"' in head


def _builtin_parsers() -> dict[str, Callable[[], Any]]:
    from virtualize.parsers.fits import FITSParser
    from virtualize.parsers.grib import GRIBParser
    from virtualize.parsers.hdf import HDFParser
    from virtualize.parsers.icechunk import IcechunkParser
    from virtualize.parsers.kerchunk import KerchunkParser
    from virtualize.parsers.netcdf3 import NetCDF3Parser
    from virtualize.parsers.tiff import TIFFParser
    from virtualize.parsers.zarr import ZarrParser

    return {
        "hdf5": HDFParser,
        "netcdf3": NetCDF3Parser,
        "fits": FITSParser,
        "tiff": TIFFParser,
        "grib": GRIBParser,
        "kerchunk": KerchunkParser,
        "zarr": ZarrParser,
        "icechunk": IcechunkParser,
    }


@functools.cache
def _plugin_parsers() -> dict[str, Callable[[], Any]]:
    """Third-party parsers registered under the ``virtualize.parsers`` entry-point group
    (looked up once per process: scanning installed distributions takes tens of ms)."""
    return {
        entry.name: functools.partial(_build_plugin, entry)
        for entry in entry_points(group="virtualize.parsers")
    }


def _build_plugin(entry: Any, **options: Any) -> Any:
    """Import a plugin parser class only when a file needs it, and instantiate it."""
    return entry.load()(**options)


def detect(url: str, registry: ObjectStoreRegistry, **options: Any) -> Any:
    """Return a parser instance for the file at ``url``, chosen from its magic bytes.

    Parameters
    ----------
    url
        The file to open.
    registry
        The registry it is read through.
    **options
        Passed to the parser's constructor (``group=``, ``drop_variables=``, ...).
    """
    url = normalize_url(url)
    name = sniff_format(url, registry)
    factory = _builtin_parsers().get(name) or _plugin_parsers().get(name)
    if factory is None:
        raise FormatDetectionError(
            f"the file is {name}, and no parser for {name} is installed yet",
            url=url,
            hint="Install the extra for this format, or pass parser= explicitly",
        )
    return factory(**options)


def _is_folder(store: Any, path: str) -> bool:
    """Whether anything is stored under ``path/`` (only to word an error already being
    raised: any failure here means "don't know", and the original error stands)."""
    try:
        return bool(
            next(iter(obstore.list(store, prefix=path.rstrip("/") + "/", chunk_size=1)), [])
        )
    except Exception:
        return False


def _size(store: Any, path: str) -> int | None:
    """The object's size, or None if it can't be had (only to word an error)."""
    try:
        return int(obstore.head(store, path)["size"])
    except Exception:
        return None
