"""The GRIB codec, message by message, against cfgrib.

Each GRIB message is read raw from its file (``offset`` to ``offset + totalLength``), decoded
as the only chunk of a zarr array whose serializer is :class:`GRIBCodec`, and compared (NaN
equal to NaN, every bit otherwise) with what cfgrib holds for that message: its
``OnDiskArray`` (``cfgrib.open_file``) for files written here by :mod:`grib_support`, and the
same steps on cfgrib's own messages (``FileStream``, ``get_values_in_order``) for the corpus,
whose files mix variables that one ``open_file`` cannot hold.

cfgrib is not used through xarray here: with ecCodes 2.50, a process that has opened a file
with ``cfgrib.open_dataset(s)`` aborts at exit (``free(): invalid pointer`` in the C exit
handlers), which would fail the run after the tests pass.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.registry
from grib_support import (
    GRIDS,
    PACKINGS,
    Field,
    field_shape,
    grib_messages,
    smooth_field,
    write_grib,
)
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import MemoryStore

from virtualize.codecs.grib import GRIBCodec, decode_message, message_field

cfgrib = pytest.importorskip("cfgrib")
eccodes = pytest.importorskip("eccodes")
from cfgrib import dataset as cfgrib_dataset  # noqa: E402
from cfgrib import messages as cfgrib_messages  # noqa: E402

CORPUS = Path(os.environ.get("VIRTUALIZE_CORPUS", "/work/shared/corpus")) / "grib"
CORPUS_FILES = (
    sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix != ".idx")
    if CORPUS.is_dir()
    else []
)
MESSAGES_PER_FILE = 30
FLOAT32 = np.dtype("float32")


def _decode(message: bytes, chunk: tuple[int, ...], **codec: Any) -> np.ndarray:
    """``message`` decoded as the only chunk of a float32 zarr array of shape ``chunk``."""
    data: dict[str, Any] = {}
    array = zarr.create_array(
        MemoryStore(data),
        shape=chunk,
        chunks=chunk,
        dtype="float32",
        serializer=GRIBCodec(**codec),
        compressors=None,
        fill_value=np.nan,
    )
    data["c/" + "/".join("0" * len(chunk))] = default_buffer_prototype().buffer.from_bytes(message)
    return np.asarray(array[...])


def _field_shape(message: Any) -> tuple[int, ...]:
    """The shape cfgrib gives one message's field (``build_geography_coordinates``)."""
    grid_type = message["gridType"]
    two_dimensional = (
        cfgrib_dataset.GRID_TYPES_DIMENSION_COORDS
        | cfgrib_dataset.GRID_TYPES_2D_NON_DIMENSION_COORDS
    )
    if grid_type in two_dimensional:
        return (message["Ny"], message["Nx"])
    return (message["numberOfPoints"],)


def _cfgrib_field(message: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """One field as ``OnDiskArray.build_array`` fills it."""
    array = np.full(shape, np.nan, dtype=dtype)
    array.flat[:] = cfgrib_dataset.get_values_in_order(message, shape)
    array[array == cfgrib_messages.MISSING_VAUE_INDICATOR] = np.nan
    return array


def _message_bytes(raw: bytes, offset: int) -> bytes:
    """The whole message at ``offset`` (GRIB 2's length is in section 0, GRIB 1's in 1)."""
    if raw[offset + 7] == 2:
        (length,) = struct.unpack(">Q", raw[offset + 8 : offset + 16])
        return raw[offset : offset + length]
    handle = eccodes.codes_new_from_message(raw[offset:])
    try:
        length = eccodes.codes_get(handle, "totalLength")
    finally:
        eccodes.codes_release(handle)
    return raw[offset : offset + length]


def _check_against_open_file(path: Path, variable: str = "t") -> int:
    """Decode every message of ``path`` and compare with cfgrib's ``OnDiskArray``."""
    raw = path.read_bytes()
    on_disk = cfgrib.open_file(path, indexpath="").variables[variable].data
    field = on_disk.shape[-on_disk.geo_ndim :]
    checked = 0
    for header, ids in on_disk.field_id_index.items():
        offset, index = ids[0] if isinstance(ids[0], tuple) else (ids[0], 0)
        expected = on_disk[tuple(header) + (slice(None),) * on_disk.geo_ndim]
        chunk = (1,) * len(header) + field
        got = _decode(_message_bytes(raw, offset), chunk, field=index)
        assert got.dtype == expected.dtype == FLOAT32
        np.testing.assert_array_equal(got.reshape(field), expected.reshape(field), strict=True)
        checked += 1
    return checked


# -- configuration ------------------------------------------------------------------------


def test_registered_with_zarr() -> None:
    assert zarr.registry.get_codec_class("virtualize.grib") is GRIBCodec


@pytest.mark.parametrize("field", [0, 1, 3])
def test_dict_round_trip(field: int) -> None:
    codec = GRIBCodec(field=field)
    data = codec.to_dict()
    assert data["name"] == "virtualize.grib"
    assert data["configuration"] == ({"field": field} if field else {})
    assert GRIBCodec.from_dict(data) == codec


def test_from_dict_without_configuration() -> None:
    assert GRIBCodec.from_dict({"name": "virtualize.grib"}) == GRIBCodec()


@pytest.mark.parametrize("field", [-1, True, "x"])
def test_bad_field_refused(field: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        GRIBCodec.from_dict({"name": "virtualize.grib", "configuration": {"field": field}})


# -- files written here -------------------------------------------------------------------

_CASES = [
    pytest.param(edition, grid, packing, bitmap, id=f"ed{edition}-{grid}-{packing}-{bitmap}")
    for edition in (1, 2)
    for grid in GRIDS
    for packing in PACKINGS[edition]
    for bitmap in ("full", "bitmap")
]


@pytest.mark.parametrize(("edition", "grid", "packing", "bitmap"), _CASES)
def test_written_file(tmp_path: Path, edition: int, grid: str, packing: str, bitmap: str) -> None:
    shape = field_shape(grid)
    missing = 0.2 if bitmap == "bitmap" else 0.0
    fields = [
        Field(level=level, step=step, values=smooth_field(shape, seed=i, missing=missing))
        for i, (level, step) in enumerate([(500, 0), (850, 0), (500, 6), (850, 6)])
    ]
    path = write_grib(tmp_path / "t.grib", fields, edition=edition, packing=packing, grid=grid)
    assert _check_against_open_file(path) == len(fields)
    if missing:
        raw = path.read_bytes()
        offset, length = grib_messages(path)[0]
        decoded = _decode(raw[offset : offset + length], (1, *shape))
        assert np.isnan(decoded).any()
        # the NaN are where the bitmap says (packing may move other values, never NaN)
        written = fields[0].values
        assert written is not None
        np.testing.assert_array_equal(np.isnan(decoded[0]), np.isnan(written))


@pytest.mark.parametrize("edition", [1, 2])
def test_ensemble_members(tmp_path: Path, edition: int) -> None:
    fields = [Field(member=member, step=step) for step in (0, 12) for member in (1, 2, 3)]
    path = write_grib(tmp_path / "ens.grib", fields, edition=edition, grid="lambert")
    on_disk = cfgrib.open_file(path, indexpath="").variables["t"].data
    assert on_disk.shape == (3, 2, 7, 11)
    assert _check_against_open_file(path) == 6


def test_chunk_without_leading_axes(tmp_path: Path) -> None:
    path = write_grib(tmp_path / "t.grib2", [Field()])
    raw = path.read_bytes()
    offset, length = grib_messages(path)[0]
    whole = _decode(raw[offset : offset + length], (1, 7, 11))
    np.testing.assert_array_equal(_decode(raw[offset : offset + length], (7, 11)), whole[0])
    np.testing.assert_array_equal(_decode(raw[offset : offset + length], (77,)), whole.ravel())


def _rewrite(path: Path, **keys: int) -> Path:
    """``path``'s one message with ``keys`` set (values left as stored)."""
    with path.open("rb") as file:
        handle = eccodes.codes_grib_new_from_file(file)
    try:
        for key, value in keys.items():
            eccodes.codes_set(handle, key, value)
        if keys.get("jScansPositively"):
            # rows now run south to north: swap the first and last latitudes to match
            first = eccodes.codes_get(handle, "latitudeOfFirstGridPointInDegrees")
            last = eccodes.codes_get(handle, "latitudeOfLastGridPointInDegrees")
            eccodes.codes_set(handle, "latitudeOfFirstGridPointInDegrees", last)
            eccodes.codes_set(handle, "latitudeOfLastGridPointInDegrees", first)
        out = path.with_suffix(".rewritten.grib")
        with out.open("wb") as file:
            eccodes.codes_write(handle, file)
    finally:
        eccodes.codes_release(handle)
    return out


@pytest.mark.parametrize(
    "keys",
    [
        {"alternativeRowScanning": 1},
        {"jScansPositively": 1},
        {"iScansNegatively": 1},
        {"jPointsAreConsecutive": 1},
        {"alternativeRowScanning": 1, "jScansPositively": 1},
    ],
    ids=lambda keys: "+".join(keys),
)
@pytest.mark.parametrize("bitmap", ["full", "bitmap"])
def test_scanning_modes(tmp_path: Path, keys: dict[str, int], bitmap: str) -> None:
    values = smooth_field((7, 11), missing=0.2 if bitmap == "bitmap" else 0.0)
    path = write_grib(tmp_path / "t.grib2", [Field(values=values)], shape=(7, 11))
    rewritten = _rewrite(path, **keys)
    for key, value in keys.items():
        handle = eccodes.codes_new_from_message(rewritten.read_bytes())
        try:
            assert eccodes.codes_get(handle, key) == value
        finally:
            eccodes.codes_release(handle)
    assert _check_against_open_file(rewritten) == 1


def test_alternative_row_scanning_reverses_odd_rows(tmp_path: Path) -> None:
    path = write_grib(tmp_path / "t.grib2", [Field()], packing="grid_ieee")
    plain = _decode(path.read_bytes(), (7, 11))
    flipped = _decode(_rewrite(path, alternativeRowScanning=1).read_bytes(), (7, 11))
    np.testing.assert_array_equal(flipped[0::2], plain[0::2])
    np.testing.assert_array_equal(flipped[1::2], plain[1::2, ::-1])
    # a one-dimensional field (or one row) is left as stored, as cfgrib does
    np.testing.assert_array_equal(
        _decode(_rewrite(path, alternativeRowScanning=1).read_bytes(), (1, 77)),
        plain.reshape(1, 77),
    )


def test_float64_array(tmp_path: Path) -> None:
    values = smooth_field((7, 11), missing=0.2)
    path = write_grib(tmp_path / "t.grib2", [Field(values=values)], packing="grid_ieee")
    on_disk = cfgrib.open_file(path, indexpath="", values_dtype=np.dtype("float64"))
    expected = on_disk.variables["t"].data[:, :]
    got = decode_message(path.read_bytes(), (7, 11), np.dtype("float64"))
    assert got.dtype == expected.dtype == np.dtype("float64")
    np.testing.assert_array_equal(got, expected, strict=True)


def test_many_chunks_decode_concurrently(tmp_path: Path) -> None:
    fields = [Field(step=step) for step in range(12)]
    path = write_grib(tmp_path / "t.grib2", fields, packing="grid_ccsds")
    raw = path.read_bytes()
    data: dict[str, Any] = {}
    array = zarr.create_array(
        MemoryStore(data),
        shape=(12, 7, 11),
        chunks=(1, 7, 11),
        dtype="float32",
        serializer=GRIBCodec(),
        compressors=None,
        fill_value=np.nan,
    )
    for i, (offset, length) in enumerate(grib_messages(path)):
        data[f"c/{i}/0/0"] = default_buffer_prototype().buffer.from_bytes(
            raw[offset : offset + length]
        )
    expected = cfgrib.open_file(path, indexpath="").variables["t"].data[:, :, :]
    np.testing.assert_array_equal(np.asarray(array[...]), expected, strict=True)


# -- errors ---------------------------------------------------------------------------------


def test_not_grib_refused() -> None:
    with pytest.raises(ValueError, match="not a GRIB message"):
        _decode(b"\x89HDF\r\n\x1a\n" + bytes(100), (7, 11))


def test_truncated_refused(tmp_path: Path) -> None:
    message = write_grib(tmp_path / "t.grib2", [Field()]).read_bytes()
    with pytest.raises(ValueError, match="not a GRIB message"):
        _decode(message[:-10], (7, 11))


def test_wrong_shape_refused(tmp_path: Path) -> None:
    message = write_grib(tmp_path / "t.grib2", [Field()]).read_bytes()
    with pytest.raises(ValueError, match="77 values"):
        _decode(message, (7, 12))


def test_integer_dtype_refused(tmp_path: Path) -> None:
    message = write_grib(tmp_path / "t.grib2", [Field()]).read_bytes()
    with pytest.raises(ValueError, match="floating point"):
        decode_message(message, (7, 11), np.dtype("int32"))


def test_missing_field_refused(tmp_path: Path) -> None:
    message = write_grib(tmp_path / "t.grib2", [Field()]).read_bytes()
    assert message_field(message, 0) is message
    with pytest.raises(ValueError, match="1 field"):
        message_field(message, 1)
    grib1 = write_grib(tmp_path / "t.grib1", [Field()], edition=1).read_bytes()
    with pytest.raises(ValueError, match="not GRIB 2"):
        message_field(grib1, 1)


def test_encode_refused() -> None:
    array = zarr.create_array(
        MemoryStore(),
        shape=(7, 11),
        chunks=(7, 11),
        dtype="float32",
        serializer=GRIBCodec(),
        compressors=None,
        fill_value=np.nan,
    )
    with pytest.raises(NotImplementedError, match="cannot write GRIB"):
        array[...] = np.zeros((7, 11), dtype="float32")


# -- corpus ---------------------------------------------------------------------------------


def _multi_field_offsets(path: Path) -> list[tuple[int, int]]:
    """``(offset, field)`` of cfgrib's fields in ``path``, as its ``FileStream`` numbers them."""
    fields = []
    for offset, _ in cfgrib_messages.FileStream(str(path)).items():
        fields.append(offset if isinstance(offset, tuple) else (offset, 0))
    return fields


@pytest.mark.skipif(not CORPUS_FILES, reason="no GRIB corpus")
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus(path: Path) -> None:
    raw = path.read_bytes()
    stream = cfgrib_messages.FileStream(str(path))
    # FileStreamItems has no len(), which list() asks for
    fields = [item for item in stream.items()]
    step = max(1, math.ceil(len(fields) / MESSAGES_PER_FILE))
    checked = 0
    for position, (offset, message) in enumerate(fields):
        # every multi-field message's later fields, and an even sample of the rest
        if position % step and not isinstance(offset, tuple):
            continue
        start, index = offset if isinstance(offset, tuple) else (offset, 0)
        shape = _field_shape(message)
        expected = _cfgrib_field(message, shape, FLOAT32)
        got = _decode(_message_bytes(raw, start), (1, *shape), field=index)[0]
        np.testing.assert_array_equal(got, expected, strict=True, err_msg=f"{path} {offset}")
        checked += 1
    assert checked >= min(len(fields), MESSAGES_PER_FILE) // 2


@pytest.mark.skipif(not CORPUS_FILES, reason="no GRIB corpus")
def test_corpus_multi_field_messages_seen() -> None:
    multi = [p for p in CORPUS_FILES if any(k for _, k in _multi_field_offsets(p))]
    assert multi, "the corpus was expected to hold multi-field GRIB 2 messages"


@pytest.mark.skipif(not CORPUS_FILES, reason="no GRIB corpus")
def test_corpus_scanning_mode_file_matches_open_file() -> None:
    path = CORPUS / "pygrib" / "scanning_mode_with_bitmap.grib2"
    assert path.exists(), f"{path} is missing from the corpus"
    dataset = cfgrib.open_file(path, indexpath="")
    names = [name for name, var in dataset.variables.items() if hasattr(var.data, "geo_ndim")]
    assert names
    for name in names:
        assert _check_against_open_file(path, name) >= 1


@pytest.mark.parametrize(
    ("packing", "missing", "octets", "value", "message"),
    [
        # bits per value (octet 20) of 255: ecCodes' bit reader asserts on it
        ("grid_complex_spatial_differencing", 0.0, (19, 20), 255, "255 bits per value"),
        # number of values (octets 6-9) far above the points, with a bitmap: ecCodes
        # allocates for it, and asserts when that fails
        ("grid_simple", 0.2, (5, 9), 0xFFFF0000, "4294901760 packed values for 77 points"),
    ],
)
def test_damaged_value_counts_are_refused_before_ecCodes_aborts(
    tmp_path: Path, packing: str, missing: float, octets: tuple[int, int], value: int, message: str
) -> None:
    """Section 5 of a message damaged so that decoding its values aborts the process in
    ecCodes: the codec refuses it first. Decoded in a child process, so that a regression
    fails this test instead of killing the run."""
    import subprocess
    import sys

    path = write_grib(
        tmp_path / "field.grib2",
        [Field(values=smooth_field((7, 11), seed=3, missing=missing))],
        packing=packing,
    )
    data = bytearray(path.read_bytes())
    at = 16  # after section 0: sections of (length, number)
    while data[at + 4] != 5:
        at += int.from_bytes(data[at : at + 4], "big")
    start, end = octets
    data[at + start : at + end] = value.to_bytes(end - start, "big")
    damaged = tmp_path / "damaged.grib2"
    damaged.write_bytes(bytes(data))
    script = (
        "import sys, numpy as np\n"
        "from virtualize.codecs.grib import decode_message\n"
        "try:\n"
        f"    decode_message(open({str(damaged)!r}, 'rb').read(), (7, 11), np.dtype('f8'))\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]
    assert message in done.stdout
