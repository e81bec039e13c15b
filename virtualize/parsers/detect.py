"""Picking a parser from a file's first bytes."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import obstore

from virtualize.errors import FormatDetectionError, InvalidFileError
from virtualize.registry import ObjectStoreRegistry, normalize_url

__all__ = ["detect", "sniff_format"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SNIFF_BYTES = 8
# HDF5 files may start with a user block of 512, 1024, 2048, ... bytes.
_HDF5_OFFSETS = (0, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def sniff_format(url: str, registry: ObjectStoreRegistry) -> str:
    """The format name of the file at ``url`` from its magic bytes.

    Returns one of ``"hdf5"``, ``"netcdf3"``, ``"tiff"``, ``"grib"``, ``"fits"``.

    Raises
    ------
    FormatDetectionError
        If no known signature is found.
    """
    store, path = registry.resolve(url)
    try:
        first = bytes(obstore.get_range(store, path, start=0, length=_SNIFF_BYTES))
    except FileNotFoundError as error:
        raise InvalidFileError("no such file", url=url) from error
    except Exception as error:
        raise InvalidFileError(
            f"cannot read the file ({error})",
            url=url,
            hint="Check that the path is a readable file, not a directory",
        ) from error
    if not first:
        raise InvalidFileError("the file is empty", url=url)
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


def _builtin_parsers() -> dict[str, Callable[[], Any]]:
    from virtualize.parsers.hdf import HDFParser

    return {"hdf5": HDFParser}


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
    parsers = _builtin_parsers()
    for entry in entry_points(group="virtualize.parsers"):
        parsers.setdefault(entry.name, entry.load)
    factory = parsers.get(name)
    if factory is None:
        raise FormatDetectionError(
            f"the file is {name}, and no parser for {name} is installed yet",
            url=url,
            hint="Install the extra for this format, or pass parser= explicitly",
        )
    return factory(**options)
