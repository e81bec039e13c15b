"""HDF5 filters: every lossless filter a library decodes is referenced and reads back exactly.

Files are written at test time with h5py and hdf5plugin's filters; each variable is parsed,
must be held as references (not inline), and must read back through zarr exactly as h5py
reads it. Filters nothing decodes outside HDF5 (scale-offset, N-bit) are inlined when small
and refused, naming the filter and its id, when large.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # registers the plugin filters with HDF5 before h5py writes
import numpy as np
import obstore
import pytest
import zarr
from h5py import h5d, h5p, h5s, h5t, h5z
from zarr.core.metadata.v3 import ArrayV3Metadata

import virtualize
from virtualize.codecs import hdf5 as hdf5_codecs
from virtualize.codecs.hdf5_filters import HDF5Filter, NoDecoderError, filter_codecs
from virtualize.errors import UnsupportedFeatureError
from virtualize.parsers import HDFParser

CORPUS_SZIP = Path(__file__).resolve().parents[1].parent / "shared/corpus/hdf5/netcdf-c/ref_szip.h5"

Pipeline = Sequence[tuple[int, tuple[int, ...]]]


def registry_for(path: Path) -> virtualize.ObjectStoreRegistry:
    return virtualize.ObjectStoreRegistry(
        {path.parent.as_uri() + "/": obstore.store.LocalStore(path.parent)}
    )


def parse(path: Path, **options: Any) -> virtualize.ManifestStore:
    return HDFParser(**options)(str(path), registry_for(path))


def sample(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    """Compressible values (so no filter gives up on a chunk) that still vary."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape))
    index = np.arange(count)
    base = (index % 8) * 3 + index // 64 % 5 + (rng.random(count) < 0.05)
    values = base.astype(dtype).reshape(shape)
    if np.dtype(dtype).kind == "f":
        values = values / 4  # exact in binary
    return values


def assert_referenced_and_exact(path: Path, name: str = "v") -> virtualize.ManifestStore:
    store = parse(path)
    manifest = store.group.arrays[name].manifest
    assert manifest.nrefs > 0, "chunks should be referenced"
    assert manifest.ninline == 0, "no chunk should be inlined"
    got = zarr.open_array(store, path=name, mode="r")[...]
    with h5py.File(path) as f:
        expected = f[name][...]
    assert got.dtype.newbyteorder("=") == expected.dtype.newbyteorder("=")
    assert np.array_equal(got, expected)
    return store


def bytes_codecs(store: virtualize.ManifestStore, name: str = "v") -> list[dict[str, Any]]:
    codecs = store.group.arrays[name].metadata.to_dict()["codecs"]
    return [c for c in codecs if c["name"] != "bytes"]


def write(
    path: Path,
    values: np.ndarray,
    chunks: tuple[int, ...],
    pipeline: Pipeline = (),
    **options: Any,
) -> None:
    """Write ``values`` as dataset ``v``: with h5py's high-level ``options``, or with the
    filter ``pipeline`` (id, values) set in that order through the low-level API."""
    with h5py.File(path, "w") as f:
        if not pipeline:
            f.create_dataset("v", data=values, chunks=chunks, **options)
            return
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_chunk(chunks)
        for code, filter_values in pipeline:
            dcpl.set_filter(code, h5z.FLAG_OPTIONAL, filter_values)
        dataset = h5d.create(
            f.id,
            b"v",
            h5t.py_create(values.dtype),
            h5s.create_simple(values.shape),
            dcpl=dcpl,
        )
        dataset.write(h5s.ALL, h5s.ALL, np.ascontiguousarray(values))


DEFLATE = (h5z.FILTER_DEFLATE, (6,))
SHUFFLE = (h5z.FILTER_SHUFFLE, ())
FLETCHER32 = (h5z.FILTER_FLETCHER32, ())

# -- one filter at a time ---------------------------------------------------------------------

SHAPES = [((37, 23), (8, 10)), ((500,), (160,)), ((5, 9, 11), (2, 8, 8))]


@pytest.mark.parametrize("level", range(1, 10))
@pytest.mark.parametrize("dtype", ["<i2", ">f8"])
def test_gzip_every_level(tmp_path: Path, level: int, dtype: str) -> None:
    path = tmp_path / "gzip.h5"
    write(path, sample((37, 23), dtype), (8, 10), compression="gzip", compression_opts=level)
    store = assert_referenced_and_exact(path)
    assert bytes_codecs(store)[0]["configuration"]["level"] == level


@pytest.mark.parametrize(("shape", "chunks"), SHAPES)
@pytest.mark.parametrize("dtype", ["u1", "<i2", ">i4", "<f4", "<f8"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_lzf(tmp_path: Path, shape: Any, chunks: Any, dtype: str, shuffle: bool) -> None:
    path = tmp_path / "lzf.h5"
    write(path, sample(shape, dtype), chunks, compression="lzf", shuffle=shuffle)
    store = assert_referenced_and_exact(path)
    assert bytes_codecs(store)[-1]["name"] == "virtualize.hdf5_lzf"


def test_lzf_chunk_of_zeros_larger_than_a_guess(tmp_path: Path) -> None:
    path = tmp_path / "lzf.h5"
    values = np.zeros((256, 512), dtype="<f8")
    values[3, 7] = 1.5
    write(path, values, (256, 512), compression="lzf")
    assert_referenced_and_exact(path)


needs_szip = pytest.mark.skipif(
    not h5z.filter_avail(h5z.FILTER_SZIP), reason="HDF5 was built without szip"
)


@needs_szip
@pytest.mark.parametrize(("shape", "chunks"), SHAPES)
@pytest.mark.parametrize("dtype", ["u1", "<u2", ">i2", "<i4", ">i4", "<f4", ">f8"])
@pytest.mark.parametrize("options", [("nn", 8), ("ec", 16), ("nn", 32)])
def test_szip(tmp_path: Path, shape: Any, chunks: Any, dtype: str, options: Any) -> None:
    path = tmp_path / "szip.h5"
    write(path, sample(shape, dtype), chunks, compression="szip", compression_opts=options)
    store = assert_referenced_and_exact(path)
    codec = bytes_codecs(store)[-1]
    assert codec["name"] == "virtualize.hdf5_szip"
    assert codec["configuration"]["pixels_per_block"] == options[1]


@pytest.mark.skipif(not CORPUS_SZIP.exists(), reason="corpus folder is absent")
def test_szip_corpus_file() -> None:
    assert_referenced_and_exact(CORPUS_SZIP, "dset_szip")


@pytest.mark.parametrize(("shape", "chunks"), SHAPES)
@pytest.mark.parametrize("dtype", ["u1", "<i2", ">f8"])
@pytest.mark.parametrize("nbytes", [0, 64, 1000])
def test_lz4(tmp_path: Path, shape: Any, chunks: Any, dtype: str, nbytes: int) -> None:
    path = tmp_path / "lz4.h5"
    write(path, sample(shape, dtype), chunks, **hdf5plugin.LZ4(nbytes=nbytes))
    store = assert_referenced_and_exact(path)
    assert bytes_codecs(store)[-1]["name"] == "virtualize.hdf5_lz4"


def test_lz4_incompressible_blocks(tmp_path: Path) -> None:
    # blocks LZ4 can't shrink are stored raw inside the filter's framing
    path = tmp_path / "lz4.h5"
    values = np.random.default_rng(3).integers(0, 2**32, (64, 64), dtype="<u4")
    values[:8] = 0
    write(path, values, (64, 64), **hdf5plugin.LZ4(nbytes=1024))
    assert_referenced_and_exact(path)


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [*SHAPES, ((7, 13), (7, 13)), ((3000,), (2500,)), ((40, 300), (40, 300))],
)
@pytest.mark.parametrize("dtype", ["u1", "<i2", ">i4", "<f8", "S3"])
@pytest.mark.parametrize("cname", ["none", "lz4", "zstd"])
@pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification")
@pytest.mark.parametrize("nelems", [0, 256])
def test_bitshuffle(
    tmp_path: Path, shape: Any, chunks: Any, dtype: str, cname: str, nelems: int
) -> None:
    """Blocks of ``nelems``, a last partial block and leftover (n % 8) elements."""
    path = tmp_path / "bitshuffle.h5"
    if dtype == "S3":
        values = np.char.mod("%03d", sample(shape, "i4")).astype("S3")
    else:
        values = sample(shape, dtype)
    write(path, values, chunks, **hdf5plugin.Bitshuffle(nelems=nelems, cname=cname))
    store = assert_referenced_and_exact(path)
    codec = bytes_codecs(store)[-1]
    assert codec["name"] == "virtualize.hdf5_bitshuffle"
    assert codec["configuration"]["compression"] == cname
    assert codec["configuration"]["elementsize"] == np.dtype(dtype).itemsize


@pytest.mark.parametrize(("shape", "chunks"), SHAPES)
@pytest.mark.parametrize("clevel", [1, 3, 19])
def test_zstd(tmp_path: Path, shape: Any, chunks: Any, clevel: int) -> None:
    path = tmp_path / "zstd.h5"
    write(path, sample(shape, "<f4"), chunks, **hdf5plugin.Zstd(clevel=clevel))
    store = assert_referenced_and_exact(path)
    assert bytes_codecs(store) == [
        {"name": "zstd", "configuration": {"level": clevel, "checksum": False}}
    ]


@pytest.mark.parametrize("blocksize", [1, 9])
@pytest.mark.parametrize("dtype", ["<i8", "u1"])
def test_bzip2(tmp_path: Path, blocksize: int, dtype: str) -> None:
    path = tmp_path / "bzip2.h5"
    write(path, sample((37, 23), dtype), (8, 10), **hdf5plugin.BZip2(blocksize=blocksize))
    store = assert_referenced_and_exact(path)
    assert bytes_codecs(store)[-1]["name"] == "numcodecs.bz2"


BLOSC_SHUFFLES = {
    "noshuffle": hdf5plugin.Blosc.NOSHUFFLE,
    "shuffle": hdf5plugin.Blosc.SHUFFLE,
    "bitshuffle": hdf5plugin.Blosc.BITSHUFFLE,
}


@pytest.mark.parametrize("cname", ["blosclz", "lz4", "lz4hc", "snappy", "zlib", "zstd"])
@pytest.mark.parametrize("shuffle", list(BLOSC_SHUFFLES))
@pytest.mark.parametrize(
    ("shape", "chunks", "dtype"), [((100, 90), (32, 40), "<f8"), ((3000,), (1000,), ">i2")]
)
def test_blosc(
    tmp_path: Path, cname: str, shuffle: str, shape: Any, chunks: Any, dtype: str
) -> None:
    path = tmp_path / "blosc.h5"
    options = hdf5plugin.Blosc(cname=cname, clevel=5, shuffle=BLOSC_SHUFFLES[shuffle])
    write(path, sample(shape, dtype), chunks, **options)
    store = assert_referenced_and_exact(path)
    codec = bytes_codecs(store)[-1]
    # zarr's own blosc codec wherever numcodecs has the compressor
    assert codec["name"] == ("virtualize.hdf5_blosc" if cname == "snappy" else "blosc")
    assert codec["configuration"]["shuffle"] == shuffle


BLOSC2_FILTERS = {
    "noshuffle": hdf5plugin.Blosc2.NOFILTER,
    "shuffle": hdf5plugin.Blosc2.SHUFFLE,
    "bitshuffle": hdf5plugin.Blosc2.BITSHUFFLE,
}


@pytest.mark.parametrize("cname", ["blosclz", "lz4", "lz4hc", "zlib", "zstd"])
@pytest.mark.parametrize("filters", list(BLOSC2_FILTERS))
@pytest.mark.parametrize(
    ("shape", "chunks", "dtype"),
    [((37, 23), (8, 10), "<f8"), ((5, 9, 11), (2, 4, 4), ">i2"), ((30, 30), (10, 10), "u1")],
)
def test_blosc2_nd(
    tmp_path: Path, cname: str, filters: str, shape: Any, chunks: Any, dtype: str
) -> None:
    """Chunks of rank >= 2 are b2nd frames, decoded by imagecodecs."""
    path = tmp_path / "blosc2.h5"
    values = sample(shape, dtype)
    values[: shape[0] // 2] = 0  # whole zero chunks: stored as special chunks in the frame
    options = hdf5plugin.Blosc2(cname=cname, clevel=5, filters=BLOSC2_FILTERS[filters])
    write(path, values, chunks, **options)
    store = assert_referenced_and_exact(path)
    assert bytes_codecs(store)[-1]["name"] == "virtualize.hdf5_blosc2"


BLOSC2_ZSTD = (32026, (0, 0, 0, 0, 5, 1, 5))


@pytest.mark.parametrize(
    ("shape", "chunks", "pipeline"),
    [((300,), (100,), [BLOSC2_ZSTD]), ((30, 10), (10, 10), [FLETCHER32, BLOSC2_ZSTD])],
)
def test_blosc2_frames_without_b2nd_layer(
    tmp_path: Path, shape: Any, chunks: Any, pipeline: Pipeline
) -> None:
    """1-D chunks, and chunks a size-changing filter saw first, are super-chunk frames without
    the b2nd layer: python-blosc2 decodes them, and without it they are inlined like any
    filter without a decoder."""
    path = tmp_path / "blosc2.h5"
    values = sample(shape, "<f4")
    values[: shape[0] // 3] = 0  # a zero chunk lives only in the frame's index
    values[shape[0] // 3 : 2 * shape[0] // 3] = np.nan
    write(path, values, chunks, pipeline)
    if hdf5_codecs.blosc2_frames_decodable():
        store = parse(path)
        assert store.group.arrays["v"].manifest.nrefs == 3
    else:
        store = parse(path)
        manifest = store.group.arrays["v"].manifest
        assert manifest.nrefs == 0
        with pytest.raises(UnsupportedFeatureError, match=r"'blosc2' \(id 32026\).*python-blosc2"):
            parse(path, max_inline_bytes=10)
    got = zarr.open_array(store, path="v", mode="r")[...]
    np.testing.assert_array_equal(got, values)


def test_lossy_plugin_filters_are_not_referenced(tmp_path: Path) -> None:
    path = tmp_path / "zfp.h5"
    write(path, sample((16, 16), "<f4"), (8, 8), **hdf5plugin.Zfp(reversible=True))
    store = parse(path)
    manifest = store.group.arrays["v"].manifest
    assert manifest.nrefs == 0 and manifest.ninline > 0
    with h5py.File(path) as f:
        np.testing.assert_array_equal(zarr.open_array(store, path="v", mode="r")[...], f["v"][...])
    with pytest.raises(UnsupportedFeatureError, match=r"id 32013"):
        parse(path, max_inline_bytes=10)


# -- filter chains ----------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [(1, 9), (6, 6), (9, 1)])
def test_deflate_twice(tmp_path: Path, levels: tuple[int, int]) -> None:
    path = tmp_path / "twice.h5"
    pipeline = [(h5z.FILTER_DEFLATE, (level,)) for level in levels]
    write(path, sample((37, 23), "<f8"), (8, 10), pipeline)
    store = assert_referenced_and_exact(path)
    assert [c["configuration"]["level"] for c in bytes_codecs(store)] == list(levels)


@pytest.mark.parametrize("order", list(itertools.permutations([SHUFFLE, DEFLATE, FLETCHER32])))
@pytest.mark.parametrize("dtype", ["<f8", ">i2", "<i4", "u1"])
def test_shuffle_deflate_fletcher32_in_any_order(
    tmp_path: Path, order: Pipeline, dtype: str
) -> None:
    """Shuffle after deflate or fletcher32 sees inputs that are not whole elements."""
    path = tmp_path / "chain.h5"
    write(path, sample((37, 23), dtype), (8, 10), order)
    with h5py.File(path) as f:
        plist = f["v"].id.get_create_plist()
        written = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    assert written == [code for code, _ in order]
    assert_referenced_and_exact(path)


@pytest.mark.parametrize(
    "pipeline",
    [
        [SHUFFLE, (32004, (0,))],  # shuffle + LZ4
        [FLETCHER32, (32015, (5,))],  # fletcher32 + zstd
        [(32015, (5,)), FLETCHER32],  # zstd + fletcher32
        [SHUFFLE, (32000, ()), FLETCHER32],  # shuffle + LZF + fletcher32
        [(32008, (0, 0, 0, 0, 2)), DEFLATE],  # bitshuffle/LZ4 + deflate
        [(32008, (0, 0, 0, 0, 0)), (307, (9,))],  # bitshuffle + bzip2
        [SHUFFLE, (32026, (0, 0, 0, 0, 5, 0, 5))],  # shuffle + blosc2 (b2nd frames)
        [SHUFFLE, (32001, (2, 2, 0, 0, 5, 0, 3)), FLETCHER32],  # shuffle + blosc/snappy + f32
        [(32004, (0,)), (32004, (0,))],  # LZ4 twice
    ],
)
def test_plugin_filter_chains(tmp_path: Path, pipeline: Pipeline) -> None:
    path = tmp_path / "chain.h5"
    write(path, sample((64, 50), "<i4"), (32, 25), pipeline)
    assert_referenced_and_exact(path)


# -- the codecs themselves --------------------------------------------------------------------

CODEC_CASES: dict[str, dict[str, Any]] = {
    "lzf": {"compression": "lzf"},
    "lz4": dict(hdf5plugin.LZ4(nbytes=256)),
    "bitshuffle": dict(hdf5plugin.Bitshuffle(cname="none")),
    "bitshuffle-lz4": dict(hdf5plugin.Bitshuffle(nelems=64, cname="lz4")),
    "bitshuffle-zstd": dict(hdf5plugin.Bitshuffle(cname="zstd")),
    "blosc-snappy": dict(hdf5plugin.Blosc(cname="snappy")),
    "blosc2": dict(hdf5plugin.Blosc2(cname="lz4")),
    "shuffle": {"shuffle": True},
}
if h5z.filter_avail(h5z.FILTER_SZIP):
    CODEC_CASES["szip"] = {"compression": "szip", "compression_opts": ("nn", 8)}


@pytest.mark.parametrize("case", list(CODEC_CASES))
def test_codecs_resolve_from_json_names(tmp_path: Path, case: str) -> None:
    """The codecs are found by name in zarr's registry (the entry points work) and survive a
    JSON round trip of the array metadata."""
    path = tmp_path / "codec.h5"
    write(path, sample((64, 50), "<i4"), (32, 25), **CODEC_CASES[case])
    metadata = parse(path).group.arrays["v"].metadata
    restored = ArrayV3Metadata.from_dict(json.loads(json.dumps(metadata.to_dict())))
    assert restored.codecs == metadata.codecs
    for codec in restored.codecs:
        name = codec.to_dict()["name"]
        assert isinstance(codec, zarr.registry.get_codec_class(name))


@pytest.mark.parametrize("case", [c for c in CODEC_CASES if c != "shuffle"])
def test_encoded_chunks_are_read_by_hdf5(tmp_path: Path, case: str) -> None:
    """What the codecs encode (for chunks rewritten inline) is what HDF5 itself decodes."""
    path = tmp_path / "codec.h5"
    values = sample((64, 50), "<i4")
    write(path, values, (32, 25), **CODEC_CASES[case])
    metadata = parse(path).group.arrays["v"].metadata
    codec = metadata.codecs[-1]
    assert isinstance(codec, hdf5_codecs._HDF5BytesCodec)
    target = tmp_path / "rewritten.h5"
    write(target, np.zeros_like(values), (32, 25), **CODEC_CASES[case])
    with h5py.File(target, "r+") as f:
        dataset = f["v"]
        for i in range(0, 64, 32):
            for j in range(0, 50, 25):
                block = np.zeros((32, 25), dtype="<i4")
                part = values[i : i + 32, j : j + 25]
                block[: part.shape[0], : part.shape[1]] = part
                encoded = codec.encode_bytes(block.tobytes())
                assert codec.decode_bytes(encoded) == block.tobytes()
                dataset.id.write_direct_chunk((i, j), encoded)
    with h5py.File(target) as f:
        np.testing.assert_array_equal(f["v"][...], values)


@pytest.mark.parametrize("size", [1, 7, 8, 9, 80, 83])
def test_hdf5_shuffle_leaves_trailing_bytes(size: int) -> None:
    data = bytes(range(size))
    codec = hdf5_codecs.HDF5ShuffleCodec(elementsize=8)
    encoded = codec.encode_bytes(data)
    whole = size - size % 8
    if whole // 8 > 1:
        expected = np.frombuffer(data[:whole], "u1").reshape(-1, 8).T.tobytes() + data[whole:]
    else:
        expected = data
    assert encoded == expected
    assert codec.decode_bytes(encoded) == data


# -- filters without a decoder ----------------------------------------------------------------


def _write_nbit(path: Path, values: np.ndarray) -> None:
    write(path, values, (5, 10), [(h5z.FILTER_NBIT, ())])


def _write_scaleoffset_int(path: Path, values: np.ndarray) -> None:
    write(path, values, (5, 10), scaleoffset=0)


def _write_scaleoffset_float(path: Path, values: np.ndarray) -> None:
    write(path, values.astype("<f8") / 8, (5, 10), scaleoffset=3)


@pytest.mark.parametrize(
    ("writer", "label", "code"),
    [
        (_write_nbit, "nbit", 5),
        (_write_scaleoffset_int, "scaleoffset", 6),
        (_write_scaleoffset_float, "scaleoffset", 6),
    ],
)
def test_filters_without_a_decoder_are_inlined_or_refused(
    tmp_path: Path, writer: Any, label: str, code: int
) -> None:
    path = tmp_path / "nodecoder.h5"
    writer(path, sample((10, 20), "<i4"))
    store = parse(path)
    manifest = store.group.arrays["v"].manifest
    assert manifest.nrefs == 0 and manifest.ninline > 0
    with h5py.File(path) as f:
        expected = f["v"][...]
    got = zarr.open_array(store, path="v", mode="r")[...]
    assert got.dtype == expected.dtype
    assert np.array_equal(got, expected)
    with pytest.raises(UnsupportedFeatureError) as caught:
        parse(path, max_inline_bytes=10)
    message = str(caught.value)
    assert f"'{label}'" in message and f"id {code}" in message and "max_inline_bytes" in message


@pytest.mark.parametrize(("code", "name"), [(5, "nbit"), (6, "scaleoffset"), (32099, "mystery")])
def test_filter_codecs_raises_no_decoder_error(code: int, name: str) -> None:
    with pytest.raises(NoDecoderError, match=rf"'{name}' \(id {code}\)"):
        filter_codecs([HDF5Filter(code, 0, (), name)], dtype=np.dtype("i4"), chunk_shape=(4,))


@pytest.mark.parametrize(
    ("dtype", "shuffle_codec"),
    [
        ("<f4", "numcodecs.shuffle"),
        ("<i2", "numcodecs.shuffle"),
        ("<f8", "virtualize.hdf5_shuffle"),
    ],
)
def test_netcdf_fletcher32_shuffle_zlib(tmp_path: Path, dtype: str, shuffle_codec: str) -> None:
    """netCDF-C puts fletcher32 before shuffle: shuffle then sees the chunk plus a 4-byte
    checksum, whole elements only for element sizes up to 4; zarr's numcodecs shuffle is
    used where that is exact."""
    netCDF4 = pytest.importorskip("netCDF4")
    path = tmp_path / "f32.nc"
    values = sample((37, 23), dtype)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("y", 37)
        nc.createDimension("x", 23)
        variable = nc.createVariable(
            "v", dtype, ("y", "x"), zlib=True, shuffle=True, fletcher32=True, chunksizes=(8, 10)
        )
        variable[...] = values
    store = assert_referenced_and_exact(path)
    names = [c["name"] for c in bytes_codecs(store)]
    assert names == ["numcodecs.fletcher32", shuffle_codec, "numcodecs.zlib"]
