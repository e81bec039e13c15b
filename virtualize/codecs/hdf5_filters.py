"""HDF5 filter pipelines as zarr v3 codecs.

An HDF5 dataset's filters run in pipeline order when writing; zarr's bytes-to-bytes codecs
are listed in encode order too, so the pipeline maps one filter to one codec, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["HDF5Filter", "NoDecoderError", "filter_codecs", "filters_of"]

FILTER_DEFLATE = 1
FILTER_SHUFFLE = 2
FILTER_FLETCHER32 = 3


@dataclass(frozen=True)
class HDF5Filter:
    """One filter of a dataset's pipeline, as HDF5 reports it."""

    code: int
    flags: int
    values: tuple[int, ...]
    name: str


class NoDecoderError(Exception):
    """No zarr codec decodes this HDF5 filter."""

    def __init__(self, hdf5_filter: HDF5Filter, why: str = "") -> None:
        self.filter = hdf5_filter
        label = hdf5_filter.name or "unnamed"
        super().__init__(
            f"HDF5 filter {label!r} (id {hdf5_filter.code}) has no decoder here"
            + (f": {why}" if why else "")
        )


def filters_of(plist: Any) -> list[HDF5Filter]:
    """The filter pipeline of an h5py dataset creation property list, in order."""
    pipeline = []
    for index in range(plist.get_nfilters()):
        code, flags, values, name = plist.get_filter(index)
        label = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        pipeline.append(HDF5Filter(int(code), int(flags), tuple(int(v) for v in values), label))
    return pipeline


def filter_codecs(
    pipeline: Sequence[HDF5Filter], *, dtype: np.dtype[Any], chunk_shape: tuple[int, ...]
) -> list[Any]:
    """Zarr bytes-to-bytes codecs that undo ``pipeline`` for chunks of ``chunk_shape``.

    Raises
    ------
    NoDecoderError
        For the first filter no codec decodes.
    """
    from zarr.codecs.numcodecs import Fletcher32, Shuffle, Zlib

    codecs: list[Any] = []
    for hdf5_filter in pipeline:
        if hdf5_filter.code == FILTER_DEFLATE:
            level = hdf5_filter.values[0] if hdf5_filter.values else 6
            codecs.append(Zlib(level=level))
        elif hdf5_filter.code == FILTER_SHUFFLE:
            if dtype.itemsize > 1:
                codecs.append(Shuffle(elementsize=dtype.itemsize))
        elif hdf5_filter.code == FILTER_FLETCHER32:
            codecs.append(Fletcher32())
        else:
            raise NoDecoderError(hdf5_filter)
    return codecs
