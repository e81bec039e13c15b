"""Zarr v3 codecs that formats need and zarr lacks.

They are registered with zarr through the ``zarr.codecs`` entry points, so a repository
written by virtualize decodes in any zarr reader once this package is installed.
"""

from virtualize.codecs.cf import CFPackingCodec
from virtualize.codecs.fits import FITSColumnCodec, FITSScaleCodec, FITSTileCodec
from virtualize.codecs.hdf5 import (
    HDF5BitshuffleCodec,
    HDF5Blosc2Codec,
    HDF5BloscCodec,
    HDF5LZ4Codec,
    HDF5LZFCodec,
    HDF5ShuffleCodec,
    HDF5SzipCodec,
)

__all__ = [
    "CFPackingCodec",
    "FITSColumnCodec",
    "FITSScaleCodec",
    "FITSTileCodec",
    "HDF5BitshuffleCodec",
    "HDF5Blosc2Codec",
    "HDF5BloscCodec",
    "HDF5LZ4Codec",
    "HDF5LZFCodec",
    "HDF5ShuffleCodec",
    "HDF5SzipCodec",
]
