"""HDF5 filter pipelines as zarr v3 codecs.

An HDF5 dataset's filters run in pipeline order when writing; zarr's bytes-to-bytes codecs
are listed in encode order too, so the pipeline maps one filter to one codec, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["HDF5Filter", "NoDecoderError", "filter_codecs", "filters_of"]

FILTER_DEFLATE = 1
FILTER_SHUFFLE = 2
FILTER_FLETCHER32 = 3
FILTER_SZIP = 4
FILTER_NBIT = 5
FILTER_SCALEOFFSET = 6
FILTER_BZIP2 = 307
FILTER_LZF = 32000
FILTER_BLOSC = 32001
FILTER_LZ4 = 32004
FILTER_BITSHUFFLE = 32008
FILTER_ZSTD = 32015
FILTER_BLOSC2 = 32026


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

    One codec per filter, in pipeline order. Where a filter's output is the plain library
    format, zarr's own codecs are used (``numcodecs.zlib``, ``numcodecs.shuffle``,
    ``numcodecs.fletcher32``, ``zstd``, ``numcodecs.bz2``, ``blosc``); the HDF5 plugin
    framings use the codecs of :mod:`virtualize.codecs.hdf5`.

    Raises
    ------
    NoDecoderError
        For the first filter no codec decodes (N-bit, scale-offset, lossy or unknown
        plugins, or a decoder library that is not installed).
    """
    codecs: list[Any] = []
    chunk_bytes = int(np.prod(chunk_shape, dtype=np.int64)) * dtype.itemsize
    # the exact size of the next filter's input, while the filters so far keep it known
    size: int | None = chunk_bytes
    for hdf5_filter in pipeline:
        codec, size = _codec_for(hdf5_filter, dtype, chunk_bytes, size)
        if codec is not None:
            codecs.append(codec)
    return codecs


def _value(hdf5_filter: HDF5Filter, index: int, default: int) -> int:
    values = hdf5_filter.values
    return values[index] if len(values) > index else default


def _require(hdf5_filter: HDF5Filter, library: str, available: Any = None) -> None:
    """Raise NoDecoderError unless ``library`` (and its ``available`` flag) can be used."""
    import importlib

    try:
        module = importlib.import_module(library)
    except ImportError as error:
        raise NoDecoderError(hdf5_filter, f"decoding it needs {library} installed") from error
    if available is not None and not getattr(getattr(module, available), "available", False):
        raise NoDecoderError(hdf5_filter, f"the installed {library} lacks {available}")


def _codec_for(
    hdf5_filter: HDF5Filter,
    dtype: np.dtype[Any],
    chunk_bytes: int,
    size: int | None,
) -> tuple[Any, int | None]:
    """The codec undoing one filter (None when it is the identity), and the exact size of
    the filter's output when it is known from ``size``, its input's."""
    from zarr.codecs import ZstdCodec
    from zarr.codecs.numcodecs import BZ2, Fletcher32, Shuffle, Zlib

    from virtualize.codecs import hdf5

    code = hdf5_filter.code
    if code == FILTER_DEFLATE:
        return Zlib(level=_value(hdf5_filter, 0, 6)), None
    if code == FILTER_SHUFFLE:
        element = _value(hdf5_filter, 0, dtype.itemsize) or dtype.itemsize
        if element <= 1:
            return None, size
        # numcodecs refuses inputs that aren't whole elements, which HDF5 shuffles up to the
        # last whole element and leaves the rest: they occur after a filter that changed the
        # size (deflate; fletcher32 for 8-byte elements)
        if size is not None and size % element == 0:
            return Shuffle(elementsize=element), size
        return hdf5.HDF5ShuffleCodec(elementsize=element), size
    if code == FILTER_FLETCHER32:
        return Fletcher32(), None if size is None else size + 4
    if code == FILTER_SZIP:
        _require(hdf5_filter, "imagecodecs", "SZIP")
        if len(hdf5_filter.values) < 4:
            raise NoDecoderError(hdf5_filter, "its stored parameters are incomplete")
        mask, pixels_per_block, bits_per_pixel, pixels_per_scanline = hdf5_filter.values[:4]
        szip = hdf5.HDF5SzipCodec(
            options_mask=mask,
            pixels_per_block=pixels_per_block,
            bits_per_pixel=bits_per_pixel,
            pixels_per_scanline=pixels_per_scanline,
        )
        return szip, None
    if code in (FILTER_NBIT, FILTER_SCALEOFFSET):
        raise NoDecoderError(hdf5_filter, "no library decodes it outside HDF5")
    if code == FILTER_BZIP2:
        return BZ2(level=min(max(_value(hdf5_filter, 0, 9), 1), 9)), None
    if code == FILTER_LZF:
        _require(hdf5_filter, "imagecodecs", "LZF")
        guess = _value(hdf5_filter, 2, 0) or chunk_bytes
        return hdf5.HDF5LZFCodec(size=max(guess, 1)), None
    if code == FILTER_BLOSC:
        return _blosc(hdf5_filter, dtype), None
    if code == FILTER_LZ4:
        _require(hdf5_filter, "imagecodecs", "LZ4H5")
        return hdf5.HDF5LZ4Codec(blocksize=_value(hdf5_filter, 0, 0)), None
    if code == FILTER_BITSHUFFLE:
        _require(hdf5_filter, "imagecodecs", "BITSHUFFLE")
        compression = {0: "none", 2: "lz4", 3: "zstd"}.get(_value(hdf5_filter, 4, 0))
        if compression is None:
            raise NoDecoderError(
                hdf5_filter, f"unknown bitshuffle compression {_value(hdf5_filter, 4, 0)}"
            )
        if compression != "none":
            _require(hdf5_filter, "imagecodecs", compression.upper())
        bitshuffle = hdf5.HDF5BitshuffleCodec(
            elementsize=_value(hdf5_filter, 2, dtype.itemsize) or dtype.itemsize,
            blocksize=_value(hdf5_filter, 3, 0),
            compression=compression,  # type: ignore[arg-type]
            level=_signed(_value(hdf5_filter, 5, 0)),
        )
        return bitshuffle, size if compression == "none" else None
    if code == FILTER_ZSTD:
        return ZstdCodec(level=min(_signed(_value(hdf5_filter, 0, 3)), 22)), None
    if code == FILTER_BLOSC2:
        return _blosc2(hdf5_filter, size), None
    raise NoDecoderError(hdf5_filter)


_BLOSC_CNAMES: dict[int, Literal["blosclz", "lz4", "lz4hc", "snappy", "zlib", "zstd"]] = {
    0: "blosclz",
    1: "lz4",
    2: "lz4hc",
    3: "snappy",
    4: "zlib",
    5: "zstd",
}
_BLOSC_SHUFFLES: dict[int, Literal["noshuffle", "shuffle", "bitshuffle"]] = {
    0: "noshuffle",
    1: "shuffle",
    2: "bitshuffle",
}


def _blosc(hdf5_filter: HDF5Filter, dtype: np.dtype[Any]) -> Any:
    """HDF5 Blosc chunks are plain Blosc 1 frames: zarr's ``blosc`` codec where numcodecs'
    Blosc has the compressor, else imagecodecs' Blosc."""
    from zarr.codecs import BloscCodec

    from virtualize.codecs import hdf5

    typesize = _value(hdf5_filter, 2, dtype.itemsize) or 1
    clevel = min(_value(hdf5_filter, 4, 5), 9)
    shuffle = _BLOSC_SHUFFLES.get(_value(hdf5_filter, 5, 1), "shuffle")
    cname = _BLOSC_CNAMES.get(_value(hdf5_filter, 6, 0))
    if cname is None:
        raise NoDecoderError(hdf5_filter, f"unknown Blosc compressor {_value(hdf5_filter, 6, 0)}")
    if cname != "snappy":
        return BloscCodec(typesize=typesize, cname=cname, clevel=clevel, shuffle=shuffle)
    _require(hdf5_filter, "imagecodecs", "BLOSC")
    return hdf5.HDF5BloscCodec(typesize=typesize, cname=cname, clevel=clevel, shuffle=shuffle)


def _blosc2(hdf5_filter: HDF5Filter, size: int | None) -> Any:
    """HDF5 Blosc2 chunks are b2nd frames when the filter stored the chunk shape (values 7
    and on) and its input was exactly ``type size x chunk elements`` bytes (the filter's own
    test); otherwise plain super-chunk frames, which only python-blosc2 decodes."""
    from virtualize.codecs import hdf5

    _require(hdf5_filter, "imagecodecs", "BLOSC2")
    values = hdf5_filter.values
    typesize = _value(hdf5_filter, 2, 1) or 1
    chunk_shape: tuple[int, ...] | None = None
    if len(values) > 7 and values[7] >= 1 and len(values) >= 8 + values[7]:
        chunk_shape = tuple(values[8 : 8 + values[7]])
    b2nd = chunk_shape is not None and size == typesize * int(np.prod(chunk_shape))
    if not b2nd and not hdf5.blosc2_frames_decodable():
        raise NoDecoderError(
            hdf5_filter,
            "its chunks are Blosc2 frames without the b2nd layer (1-D chunks from some "
            "writers, or a filter before it changed the size), which need python-blosc2 "
            "installed",
        )
    cname = hdf5.BLOSC2_COMPRESSORS.get(_value(hdf5_filter, 6, 0), "blosclz")
    return hdf5.HDF5Blosc2Codec(
        typesize=typesize,
        cname=cname,
        clevel=min(_value(hdf5_filter, 4, 5), 9),
        shuffle=_BLOSC_SHUFFLES.get(_value(hdf5_filter, 5, 1), "shuffle"),
        chunk_shape=chunk_shape,
    )


def _signed(value: int) -> int:
    """A filter value (C unsigned int) that the plugin reads as a signed int."""
    return value - (1 << 32) if value >= 1 << 31 else value
