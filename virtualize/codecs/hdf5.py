"""Zarr v3 codecs that decode HDF5 filter output exactly as HDF5 stores it.

HDF5 filter plugins frame their output their own way, which is not always the framing of the
plain compression library: the LZ4 filter prefixes sizes and splits into blocks, bitshuffle
adds a header and compresses block by block, LZF stores raw liblzf without the size, szip
prefixes the decoded size, the shuffle filter leaves trailing bytes alone. Each codec here
undoes one filter with an existing library (imagecodecs; python-blosc2 for one Blosc2
framing) and only parses the plugin's framing itself; none hand-writes a decompressor.

Filters whose HDF5 output is the library's own format use zarr's codecs instead (``zstd``,
``blosc``, ``numcodecs.zlib``, ``numcodecs.bz2``, ``numcodecs.shuffle``,
``numcodecs.fletcher32``): see :func:`virtualize.codecs.hdf5_filters.filter_codecs`.

Every codec is registered with zarr through the ``zarr.codecs`` entry points, so arrays that
use them decode in plain zarr/xarray once virtualize (and imagecodecs) is installed.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np
from zarr.abc.codec import BytesBytesCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer
from zarr.core.common import JSON, parse_named_configuration

__all__ = [
    "HDF5BitshuffleCodec",
    "HDF5Blosc2Codec",
    "HDF5BloscCodec",
    "HDF5LZ4Codec",
    "HDF5LZFCodec",
    "HDF5ShuffleCodec",
    "HDF5SzipCodec",
]


def _imagecodecs() -> Any:
    import imagecodecs

    return imagecodecs


@dataclass(frozen=True)
class _HDF5BytesCodec(BytesBytesCodec):
    """Shared plumbing: a bytes -> bytes transform run on a worker thread."""

    codec_name: ClassVar[str]
    is_fixed_size = False

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, cls.codec_name)
        return cls(**configuration)

    def to_dict(self) -> dict[str, JSON]:
        return {"name": self.codec_name, "configuration": self.configuration()}

    @abstractmethod
    def configuration(self) -> dict[str, JSON]:
        """The codec's JSON configuration."""

    @abstractmethod
    def decode_bytes(self, data: bytes) -> bytes:
        """Undo the filter."""

    @abstractmethod
    def encode_bytes(self, data: bytes) -> bytes:
        """Apply the filter."""

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer:
        return chunk_spec.prototype.buffer.from_bytes(self.decode_bytes(chunk_bytes.to_bytes()))

    def _encode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer | None:
        return chunk_spec.prototype.buffer.from_bytes(self.encode_bytes(chunk_bytes.to_bytes()))

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    async def _encode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_bytes, chunk_spec)

    def compute_encoded_size(self, _input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable-size output, like zarr's own compressors


def _positive(value: Any, name: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def _set_blosc_settings(
    codec: Any, family: str, typesize: int, cname: str, clevel: int, shuffle: str
) -> None:
    """The settings Blosc and Blosc2 codecs share, checked and set on a frozen codec."""
    if shuffle not in _BLOSC_SHUFFLES:
        raise ValueError(f"unknown {family} shuffle {shuffle!r}")
    object.__setattr__(codec, "typesize", _positive(typesize, "typesize"))
    object.__setattr__(codec, "cname", str(cname))
    object.__setattr__(codec, "clevel", int(clevel))
    object.__setattr__(codec, "shuffle", shuffle)


def _blosc_settings(codec: Any) -> dict[str, JSON]:
    return {
        "typesize": codec.typesize,
        "cname": codec.cname,
        "clevel": codec.clevel,
        "shuffle": codec.shuffle,
    }


# -- shuffle (filter 2) -----------------------------------------------------------------------


@dataclass(frozen=True)
class HDF5ShuffleCodec(_HDF5BytesCodec):
    """HDF5's byte shuffle, which also accepts inputs that are not whole elements.

    The HDF5 filter shuffles the whole elements of its input and leaves the remaining
    ``len % elementsize`` bytes in place at the end; ``numcodecs.shuffle`` refuses such
    inputs. They occur when shuffle follows a filter that changes the size (deflate,
    fletcher32). Uses numcodecs' shuffle for the whole elements.
    """

    codec_name: ClassVar[str] = "virtualize.hdf5_shuffle"
    is_fixed_size = True

    elementsize: int

    def __init__(self, *, elementsize: int) -> None:
        object.__setattr__(self, "elementsize", _positive(elementsize, "elementsize"))

    def configuration(self) -> dict[str, JSON]:
        return {"elementsize": self.elementsize}

    def _apply(self, data: bytes, *, decode: bool) -> bytes:
        from numcodecs import Shuffle

        whole = len(data) - len(data) % self.elementsize
        if self.elementsize <= 1 or whole // self.elementsize <= 1:
            return data
        codec = Shuffle(elementsize=self.elementsize)
        body = np.frombuffer(data, dtype=np.uint8, count=whole)
        done = codec.decode(body) if decode else codec.encode(body)
        return np.asarray(done).tobytes() + data[whole:]

    def decode_bytes(self, data: bytes) -> bytes:
        return self._apply(data, decode=True)

    def encode_bytes(self, data: bytes) -> bytes:
        return self._apply(data, decode=False)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        return input_byte_length


# -- LZF (filter 32000, h5py) -----------------------------------------------------------------


@dataclass(frozen=True)
class HDF5LZFCodec(_HDF5BytesCodec):
    """h5py's LZF filter: raw liblzf output, no header (``imagecodecs.lzf_decode``).

    liblzf needs the decoded size up front; ``size`` is the filter's own guess (the chunk's
    size in bytes). Like h5py's filter, a larger output is retried with a larger buffer.
    """

    codec_name: ClassVar[str] = "virtualize.hdf5_lzf"

    size: int

    def __init__(self, *, size: int) -> None:
        object.__setattr__(self, "size", _positive(size, "size"))

    def configuration(self) -> dict[str, JSON]:
        return {"size": self.size}

    def decode_bytes(self, data: bytes) -> bytes:
        imagecodecs = _imagecodecs()
        out = self.size
        # a liblzf back reference expands 3 bytes into at most 264
        limit = max(self.size, 100 * len(data) + 64)
        while True:
            try:
                return bytes(imagecodecs.lzf_decode(data, header=False, out=out))
            except imagecodecs.LzfError:
                if out >= limit:
                    raise
                out = min(out * 2, limit)

    def encode_bytes(self, data: bytes) -> bytes:
        return bytes(_imagecodecs().lzf_encode(data, header=False))


# -- szip (filter 4) --------------------------------------------------------------------------


@dataclass(frozen=True)
class HDF5SzipCodec(_HDF5BytesCodec):
    """HDF5's szip filter: a 4-byte little-endian decoded size, then the szip (libaec)
    stream (``imagecodecs.szip_decode(..., header=True)``).

    The parameters are the filter's stored values: options mask, pixels per block, bits per
    pixel and pixels per scanline.
    """

    codec_name: ClassVar[str] = "virtualize.hdf5_szip"

    options_mask: int
    pixels_per_block: int
    bits_per_pixel: int
    pixels_per_scanline: int

    def __init__(
        self,
        *,
        options_mask: int,
        pixels_per_block: int,
        bits_per_pixel: int,
        pixels_per_scanline: int,
    ) -> None:
        object.__setattr__(self, "options_mask", int(options_mask))
        object.__setattr__(self, "pixels_per_block", _positive(pixels_per_block, "pixels"))
        object.__setattr__(self, "bits_per_pixel", _positive(bits_per_pixel, "bits"))
        object.__setattr__(self, "pixels_per_scanline", _positive(pixels_per_scanline, "pps"))

    def configuration(self) -> dict[str, JSON]:
        return {
            "options_mask": self.options_mask,
            "pixels_per_block": self.pixels_per_block,
            "bits_per_pixel": self.bits_per_pixel,
            "pixels_per_scanline": self.pixels_per_scanline,
        }

    def _parameters(self) -> tuple[int, int, int, int]:
        return (
            self.options_mask,
            self.pixels_per_block,
            self.bits_per_pixel,
            self.pixels_per_scanline,
        )

    def decode_bytes(self, data: bytes) -> bytes:
        return bytes(_imagecodecs().szip_decode(data, *self._parameters(), header=True))

    def encode_bytes(self, data: bytes) -> bytes:
        return bytes(_imagecodecs().szip_encode(data, *self._parameters(), header=True))


# -- LZ4 (filter 32004) -----------------------------------------------------------------------


@dataclass(frozen=True)
class HDF5LZ4Codec(_HDF5BytesCodec):
    """The HDF5 LZ4 filter's framing (8-byte big-endian total size, 4-byte block size, then
    per block a 4-byte compressed size and the LZ4 block): ``imagecodecs.lz4h5_decode``.

    ``blocksize`` (bytes; 0 for the filter's default of 1 GiB) only matters for encoding.
    """

    codec_name: ClassVar[str] = "virtualize.hdf5_lz4"

    blocksize: int

    def __init__(self, *, blocksize: int = 0) -> None:
        object.__setattr__(self, "blocksize", int(blocksize))

    def configuration(self) -> dict[str, JSON]:
        return {"blocksize": self.blocksize}

    def decode_bytes(self, data: bytes) -> bytes:
        return bytes(_imagecodecs().lz4h5_decode(data))

    def encode_bytes(self, data: bytes) -> bytes:
        return bytes(_imagecodecs().lz4h5_encode(data, blocksize=self.blocksize or None))


# -- bitshuffle (filter 32008) ----------------------------------------------------------------

BitshuffleCompression = Literal["none", "lz4", "zstd"]
_BSHUF_MULTIPLE = 8  # bitshuffle transposes blocks whose element count is a multiple of 8
_BSHUF_TARGET_BLOCK_BYTES = 8192


def _bitshuffle_default_block(elementsize: int) -> int:
    """Elements per block bitshuffle picks when the filter's block size is 0."""
    block = _BSHUF_TARGET_BLOCK_BYTES // elementsize
    block -= block % _BSHUF_MULTIPLE
    return max(block, 128)


@dataclass(frozen=True)
class HDF5BitshuffleCodec(_HDF5BytesCodec):
    """The bitshuffle HDF5 filter, with or without its per-block LZ4 / zstd compression.

    Without compression the chunk is plain bitshuffle output (``imagecodecs.bitshuffle_decode``
    with the filter's block size). With compression it starts with a header (8-byte
    big-endian decoded size, 4-byte big-endian block size in bytes); then each block of
    ``blocksize`` elements, and one last block of the remaining elements rounded down to a
    multiple of 8, is bitshuffled and compressed on its own and stored after a 4-byte
    big-endian compressed size; the last ``n % 8`` elements follow as they are. Blocks are
    decompressed with ``imagecodecs.lz4_decode`` / ``zstd_decode`` and unshuffled with
    ``imagecodecs.bitshuffle_decode``.
    """

    codec_name: ClassVar[str] = "virtualize.hdf5_bitshuffle"

    elementsize: int
    blocksize: int
    compression: BitshuffleCompression
    level: int

    def __init__(
        self,
        *,
        elementsize: int,
        blocksize: int = 0,
        compression: BitshuffleCompression = "none",
        level: int = 0,
    ) -> None:
        if compression not in ("none", "lz4", "zstd"):
            raise ValueError(f"unknown bitshuffle compression {compression!r}")
        object.__setattr__(self, "elementsize", _positive(elementsize, "elementsize"))
        object.__setattr__(self, "blocksize", int(blocksize))
        object.__setattr__(self, "compression", compression)
        object.__setattr__(self, "level", int(level))

    def configuration(self) -> dict[str, JSON]:
        return {
            "elementsize": self.elementsize,
            "blocksize": self.blocksize,
            "compression": self.compression,
            "level": self.level,
        }

    def _blocks(self, count: int, block: int) -> list[int]:
        """Element counts of the transposed blocks of ``count`` elements."""
        sizes = [block] * (count // block)
        last = count % block
        last -= last % _BSHUF_MULTIPLE
        if last:
            sizes.append(last)
        return sizes

    def decode_bytes(self, data: bytes) -> bytes:
        imagecodecs = _imagecodecs()
        if self.compression == "none":
            return bytes(
                imagecodecs.bitshuffle_decode(
                    data, itemsize=self.elementsize, blocksize=self.blocksize
                )
            )
        view = memoryview(data)
        if len(view) < 12:
            raise ValueError("bitshuffle chunk shorter than its 12-byte header")
        total = int.from_bytes(view[:8], "big")
        block_bytes = int.from_bytes(view[8:12], "big")
        size = self.elementsize
        if total % size or block_bytes % size or block_bytes == 0:
            raise ValueError("bitshuffle header does not match the element size")
        decompress = imagecodecs.lz4_decode if self.compression == "lz4" else None
        out = bytearray()
        position = 12
        for elements in self._blocks(total // size, block_bytes // size):
            length = int.from_bytes(view[position : position + 4], "big")
            position += 4
            compressed = view[position : position + length]
            position += length
            if decompress is not None:
                shuffled = decompress(compressed, header=False, out=elements * size)
            else:
                shuffled = imagecodecs.zstd_decode(compressed, out=elements * size)
            if len(shuffled) != elements * size:
                raise ValueError("bitshuffle block decoded to the wrong size")
            out += imagecodecs.bitshuffle_decode(shuffled, itemsize=size, blocksize=elements)
        leftover = total - len(out)
        if leftover != (total // size) % _BSHUF_MULTIPLE * size:
            raise ValueError("bitshuffle chunk is inconsistent with its header")
        out += view[position : position + leftover]
        if len(out) != total:
            raise ValueError("bitshuffle chunk is truncated")
        return bytes(out)

    def encode_bytes(self, data: bytes) -> bytes:
        imagecodecs = _imagecodecs()
        size = self.elementsize
        if self.compression == "none":
            return bytes(
                imagecodecs.bitshuffle_encode(data, itemsize=size, blocksize=self.blocksize)
            )
        if len(data) % size:
            raise ValueError("bitshuffle input is not a whole number of elements")
        block = self.blocksize or _bitshuffle_default_block(size)
        parts = [len(data).to_bytes(8, "big"), (block * size).to_bytes(4, "big")]
        position = 0
        for elements in self._blocks(len(data) // size, block):
            piece = data[position : position + elements * size]
            position += elements * size
            shuffled = imagecodecs.bitshuffle_encode(piece, itemsize=size, blocksize=elements)
            if self.compression == "lz4":
                compressed = imagecodecs.lz4_encode(shuffled, header=False)
            else:
                compressed = imagecodecs.zstd_encode(shuffled, level=self.level or None)
            parts += [len(compressed).to_bytes(4, "big"), bytes(compressed)]
        parts.append(data[position:])
        return b"".join(parts)


# -- Blosc (filter 32001) ---------------------------------------------------------------------

_BLOSC_SHUFFLES = ("noshuffle", "shuffle", "bitshuffle")


@dataclass(frozen=True)
class HDF5BloscCodec(_HDF5BytesCodec):
    """A Blosc 1 frame, decoded with ``imagecodecs.blosc_decode``.

    The HDF5 Blosc filter stores plain Blosc frames, which zarr's ``blosc`` codec decodes
    through numcodecs; numcodecs' Blosc is built without some compressors (snappy), so such
    chunks use this codec instead.
    """

    codec_name: ClassVar[str] = "virtualize.hdf5_blosc"

    typesize: int
    cname: str
    clevel: int
    shuffle: str

    def __init__(
        self,
        *,
        typesize: int = 1,
        cname: str = "blosclz",
        clevel: int = 5,
        shuffle: str = "shuffle",
    ) -> None:
        _set_blosc_settings(self, "blosc", typesize, cname, clevel, shuffle)

    def configuration(self) -> dict[str, JSON]:
        return _blosc_settings(self)

    def decode_bytes(self, data: bytes) -> bytes:
        return bytes(_imagecodecs().blosc_decode(data))

    def encode_bytes(self, data: bytes) -> bytes:
        return bytes(
            _imagecodecs().blosc_encode(
                data,
                self.clevel,
                compressor=self.cname,
                shuffle=_BLOSC_SHUFFLES.index(self.shuffle),
                typesize=min(self.typesize, 255),
            )
        )


# -- Blosc2 (filter 32026) --------------------------------------------------------------------

_FRAME_MAGIC = b"b2frame\x00"
BLOSC2_COMPRESSORS = {0: "blosclz", 1: "lz4", 2: "lz4hc", 4: "zlib", 5: "zstd"}


def is_blosc2_frame(data: bytes | memoryview) -> bool:
    """Whether ``data`` is a Blosc2 super-chunk frame (rather than one Blosc2 chunk)."""
    return bytes(data[2:10]) == _FRAME_MAGIC


def blosc2_frames_decodable() -> bool:
    """Whether python-blosc2 is installed, which frames without the b2nd layer need."""
    try:
        import blosc2  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class HDF5Blosc2Codec(_HDF5BytesCodec):
    """The HDF5 Blosc2 filter's chunks.

    Current writers store each HDF5 chunk as a Blosc2 super-chunk frame: with the ``b2nd``
    layer (decoded with ``imagecodecs.b2nd_decode``) when the filter knows the chunk shape and
    gets the raw chunk, else as a plain one-chunk frame (decoded with python-blosc2, which
    must then be installed: its zero and NaN chunks live only in the frame's index). Early
    writers stored one plain Blosc2 chunk (``imagecodecs.blosc2_decode``).

    ``chunk_shape`` and the compression settings only matter for encoding, which always writes
    a ``b2nd`` frame (the HDF5 filter reads those too).
    """

    codec_name: ClassVar[str] = "virtualize.hdf5_blosc2"

    typesize: int
    cname: str
    clevel: int
    shuffle: str
    chunk_shape: tuple[int, ...] | None

    def __init__(
        self,
        *,
        typesize: int = 1,
        cname: str = "blosclz",
        clevel: int = 5,
        shuffle: str = "shuffle",
        chunk_shape: Any = None,
    ) -> None:
        _set_blosc_settings(self, "blosc2", typesize, cname, clevel, shuffle)
        shape = tuple(int(n) for n in chunk_shape) if chunk_shape is not None else None
        object.__setattr__(self, "chunk_shape", shape)

    def configuration(self) -> dict[str, JSON]:
        shape = list(self.chunk_shape) if self.chunk_shape is not None else None
        return {**_blosc_settings(self), "chunk_shape": shape}

    def decode_bytes(self, data: bytes) -> bytes:
        imagecodecs = _imagecodecs()
        if not is_blosc2_frame(data):
            return bytes(imagecodecs.blosc2_decode(data))
        try:
            return bytes(imagecodecs.b2nd_decode(data).tobytes())
        except imagecodecs.B2ndError as error:
            if "etalayer" not in str(error):
                raise
        try:
            import blosc2
        except ImportError as error:
            raise RuntimeError(
                "this Blosc2 chunk is a super-chunk frame without the b2nd layer; "
                "decoding it needs python-blosc2 (pip install blosc2)"
            ) from error
        schunk = blosc2.schunk_from_cframe(data, copy=True)
        return bytes(schunk.decompress_chunk(0))

    def encode_bytes(self, data: bytes) -> bytes:
        imagecodecs = _imagecodecs()
        itemsize = self.typesize if len(data) % self.typesize == 0 else 1
        values = np.frombuffer(data, dtype=f"V{itemsize}")
        shape = self.chunk_shape
        if shape is None or int(np.prod(shape)) != values.size:
            shape = (values.size,)
        return bytes(
            imagecodecs.b2nd_encode(
                values.reshape(shape),
                self.clevel,
                compressor=self.cname,
                shuffle=_BLOSC_SHUFFLES.index(self.shuffle),
                chunkshape=shape,
            )
        )
