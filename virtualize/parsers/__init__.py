"""Parsers: one per format, each a callable ``parser(url, registry) -> ManifestStore``."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from virtualize.parsers.detect import detect, sniff_format
from virtualize.parsers.fits import FITSParser
from virtualize.parsers.grib import GRIBParser
from virtualize.parsers.hdf import HDFParser
from virtualize.parsers.icechunk import IcechunkParser
from virtualize.parsers.kerchunk import KerchunkParser
from virtualize.parsers.netcdf3 import NetCDF3Parser
from virtualize.parsers.tiff import TIFFParser
from virtualize.parsers.zarr import ZarrParser
from virtualize.registry import ObjectStoreRegistry
from virtualize.store import ManifestStore

__all__ = [
    "FITSParser",
    "GRIBParser",
    "HDFParser",
    "IcechunkParser",
    "KerchunkParser",
    "NetCDF3Parser",
    "Parser",
    "TIFFParser",
    "ZarrParser",
    "detect",
    "sniff_format",
]


@runtime_checkable
class Parser(Protocol):
    """What every parser is: a picklable callable from a url to a :class:`ManifestStore`.

    Configuration (``group=``, ``drop_variables=``, ...) lives on the instance, so parsers can
    be shipped to executors.
    """

    def __call__(self, url: str, registry: ObjectStoreRegistry) -> ManifestStore: ...
