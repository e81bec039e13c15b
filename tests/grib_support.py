"""Write small GRIB files at test time with ecCodes, from its bundled samples.

Example::

    fields = [Field(short_name="t", level=level, values=smooth_field((7, 11), seed=level))
              for level in (500, 850)]
    path = write_grib(tmp_path / "t.grib2", fields, packing="grid_ccsds", grid="lambert")

Every :class:`Field` becomes one GRIB message. ``values`` is the field in ``shape`` (``(Nj, Ni)``
for the two-dimensional grids, the whole reduced Gaussian field otherwise, see
:func:`field_shape`); NaN marks missing points, written through a bitmap. Left out, a smooth
field is made from the field's position in the list. Packing is lossy, so tests compare with
cfgrib reading the written file, not with the input values.

Available here (ecCodes 2.50 with AEC, JPEG and PNG): grids ``regular_ll``, ``rotated_ll``,
``reduced_gg`` (N32 sample, 6114 points), ``polar_stereographic``, ``lambert``; packings
:data:`PACKINGS` per edition (``grid_png`` is left out: libpng fails on fields this small).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "GRIDS",
    "PACKINGS",
    "Field",
    "field_shape",
    "grib_messages",
    "smooth_field",
    "write_grib",
]

#: Grid kinds :func:`write_grib` knows.
GRIDS = ("regular_ll", "rotated_ll", "reduced_gg", "polar_stereographic", "lambert")

#: Packings ecCodes writes here, per GRIB edition.
PACKINGS: dict[int, tuple[str, ...]] = {
    1: ("grid_simple", "grid_second_order"),
    2: (
        "grid_simple",
        "grid_complex",
        "grid_complex_spatial_differencing",
        "grid_jpeg",
        "grid_ccsds",
        "grid_ieee",
        "grid_second_order",
    ),
}

#: Grids cfgrib lays out as ``(Ny, Nx)``; the others are ``(numberOfPoints,)``.
TWO_DIMENSIONAL = frozenset(GRIDS) - {"reduced_gg"}

_SAMPLES = {
    ("regular_ll", 1): "regular_ll_pl_grib1",
    ("regular_ll", 2): "regular_ll_pl_grib2",
    ("rotated_ll", 1): "rotated_ll_sfc_grib1",
    ("rotated_ll", 2): "rotated_ll_pl_grib2",
    ("reduced_gg", 1): "reduced_gg_pl_32_grib1",
    ("reduced_gg", 2): "reduced_gg_pl_32_grib2",
    ("polar_stereographic", 1): "polar_stereographic_sfc_grib1",
    ("polar_stereographic", 2): "polar_stereographic_pl_grib2",
    ("lambert", 1): "regular_ll_pl_grib1",
    ("lambert", 2): "regular_ll_pl_grib2",
}
_REDUCED_GG_POINTS = 6114
_MISSING = 9999.0


@dataclass
class Field:
    """One GRIB message.

    Parameters
    ----------
    short_name
        ecCodes ``shortName`` (``"t"``, ``"u"``, ``"2t"``, ...).
    level_type, level
        ``typeOfLevel`` and ``level``.
    date, time
        ``dataDate`` (YYYYMMDD) and ``dataTime`` (HHMM).
    step
        Forecast step (its end, for statistics over an interval), in ``step_units``.
    step_units
        ecCodes ``stepUnits``: 1 hours, 0 minutes, ...
    step_type
        ``"instant"``, or a statistic over an interval from ``start_step`` to ``step``
        (``"accum"``, ``"avg"``, ``"max"``, ...; GRIB 2 product template 4.8, or 4.11 for
        ensemble members).
    start_step
        Start of the interval of a statistic.
    member
        Ensemble ``perturbationNumber`` (``number``), or None for a deterministic field.
    values
        The field (see :func:`field_shape`), NaN where missing; None for a smooth field.
    """

    short_name: str = "t"
    level_type: str = "isobaricInhPa"
    level: int = 500
    date: int = 20240101
    time: int = 0
    step: int = 0
    member: int | None = None
    values: np.ndarray | None = None
    step_units: int = 1
    step_type: str = "instant"
    start_step: int = 0


def field_shape(grid: str = "regular_ll", shape: tuple[int, int] = (7, 11)) -> tuple[int, ...]:
    """The shape cfgrib gives a field of ``grid`` written with ``shape`` ``(Nj, Ni)``."""
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; known: {GRIDS}")
    return tuple(shape) if grid in TWO_DIMENSIONAL else (_REDUCED_GG_POINTS,)


def smooth_field(
    shape: Sequence[int], seed: int = 0, *, missing: float = 0.0, offset: float = 250.0
) -> np.ndarray:
    """A smooth float64 field (waves around ``offset``), with a fraction ``missing`` of NaN.

    Parameters
    ----------
    shape
        The field's shape.
    seed
        Varies the waves and the missing points.
    missing
        Fraction of points set to NaN (written as a bitmap), 0 for none.
    offset
        The field's mean.
    """
    size = math.prod(shape)
    position = np.linspace(0.0, 1.0, size).reshape(shape)
    values = offset + 20.0 * np.sin(2 * np.pi * (position * 3 + seed / 7.0))
    if len(shape) == 2:
        rows = np.linspace(0.0, 1.0, shape[0])[:, None]
        values = values + 5.0 * np.cos(2 * np.pi * (rows + seed / 5.0))
    if missing:
        rng = np.random.default_rng(seed)
        values = np.where(rng.random(size).reshape(shape) < missing, np.nan, values)
    return values


def _eccodes() -> Any:
    import eccodes

    return eccodes


def _set_grid(handle: int, grid: str, edition: int, shape: tuple[int, int]) -> None:
    eccodes = _eccodes()
    nj, ni = shape
    if grid in ("regular_ll", "rotated_ll"):
        eccodes.codes_set(handle, "Ni", ni)
        eccodes.codes_set(handle, "Nj", nj)
        eccodes.codes_set(handle, "latitudeOfFirstGridPointInDegrees", 60.0)
        eccodes.codes_set(handle, "longitudeOfFirstGridPointInDegrees", 0.0)
        eccodes.codes_set(handle, "latitudeOfLastGridPointInDegrees", 60.0 - (nj - 1))
        eccodes.codes_set(handle, "longitudeOfLastGridPointInDegrees", float(ni - 1))
        eccodes.codes_set(handle, "iDirectionIncrementInDegrees", 1.0)
        eccodes.codes_set(handle, "jDirectionIncrementInDegrees", 1.0)
    elif grid == "polar_stereographic":
        eccodes.codes_set(handle, "Nx", ni)
        eccodes.codes_set(handle, "Ny", nj)
    elif grid == "lambert":
        if edition == 1:
            eccodes.codes_set(handle, "dataRepresentationType", 3)
        else:
            eccodes.codes_set(handle, "gridType", "lambert")
        eccodes.codes_set(handle, "Nx", ni)
        eccodes.codes_set(handle, "Ny", nj)
        eccodes.codes_set(handle, "latitudeOfFirstGridPointInDegrees", 40.0)
        eccodes.codes_set(handle, "longitudeOfFirstGridPointInDegrees", 350.0)
        if edition == 2:
            eccodes.codes_set(handle, "LaDInDegrees", 45.0)
        eccodes.codes_set(handle, "LoVInDegrees", 0.0)
        eccodes.codes_set(handle, "Latin1InDegrees", 45.0)
        eccodes.codes_set(handle, "Latin2InDegrees", 45.0)
        eccodes.codes_set(handle, "DxInMetres", 50000)
        eccodes.codes_set(handle, "DyInMetres", 50000)


def _set_product(handle: int, field: Field, edition: int) -> None:
    eccodes = _eccodes()
    if field.member is not None:
        if edition == 2:
            eccodes.codes_set(handle, "productDefinitionTemplateNumber", 1)
            eccodes.codes_set(handle, "typeOfEnsembleForecast", 3)
            eccodes.codes_set(handle, "numberOfForecastsInEnsemble", 51)
        else:
            eccodes.codes_set(handle, "setLocalDefinition", 1)
            eccodes.codes_set(handle, "localDefinitionNumber", 1)
            eccodes.codes_set(handle, "type", "pf")
            eccodes.codes_set(handle, "numberOfForecastsInEnsemble", 51)
        eccodes.codes_set(handle, "perturbationNumber", field.member)
    eccodes.codes_set(handle, "shortName", field.short_name)
    eccodes.codes_set(handle, "typeOfLevel", field.level_type)
    eccodes.codes_set(handle, "level", field.level)
    eccodes.codes_set(handle, "dataDate", field.date)
    eccodes.codes_set(handle, "dataTime", field.time)
    eccodes.codes_set(handle, "stepUnits", field.step_units)
    if field.step_type == "instant":
        eccodes.codes_set(handle, "step", field.step)
    else:
        eccodes.codes_set(handle, "stepType", field.step_type)
        eccodes.codes_set(handle, "startStep", field.start_step)
        eccodes.codes_set(handle, "endStep", field.step)


def _set_values(handle: int, values: np.ndarray, packing: str) -> None:
    eccodes = _eccodes()
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    missing = np.isnan(flat)
    if missing.any():
        eccodes.codes_set(handle, "bitmapPresent", 1)
        eccodes.codes_set(handle, "missingValue", _MISSING)
        flat = np.where(missing, _MISSING, flat)
    if packing != "grid_ieee":
        eccodes.codes_set(handle, "bitsPerValue", 16)
    eccodes.codes_set_values(handle, flat)
    if packing != "grid_simple":
        eccodes.codes_set(handle, "packingType", packing)
    if eccodes.codes_get(handle, "packingType") != packing:
        raise ValueError(f"ecCodes would not pack with {packing!r}")


def write_grib(
    path: str | Path,
    fields: Sequence[Field],
    *,
    edition: int = 2,
    packing: str = "grid_simple",
    grid: str = "regular_ll",
    shape: tuple[int, int] = (7, 11),
) -> Path:
    """Write ``fields`` as GRIB messages to ``path``.

    Parameters
    ----------
    path
        The file to write (overwritten).
    fields
        One message each, in order.
    edition
        GRIB edition, 1 or 2.
    packing
        ``packingType`` (see :data:`PACKINGS`).
    grid
        One of :data:`GRIDS`.
    shape
        ``(Nj, Ni)`` of two-dimensional grids (ignored by ``reduced_gg``).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    eccodes = _eccodes()
    if edition not in PACKINGS:
        raise ValueError(f"GRIB edition must be 1 or 2, got {edition!r}")
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; known: {GRIDS}")
    path = Path(path)
    expected = field_shape(grid, shape)
    with path.open("wb") as file:
        for index, field in enumerate(fields):
            handle = eccodes.codes_grib_new_from_samples(_SAMPLES[grid, edition])
            try:
                _set_grid(handle, grid, edition, shape)
                _set_product(handle, field, edition)
                values = field.values
                if values is None:
                    values = smooth_field(expected, seed=index)
                if np.shape(values) != expected:
                    raise ValueError(f"values of shape {np.shape(values)}, expected {expected}")
                _set_values(handle, values, packing)
                eccodes.codes_write(handle, file)
            finally:
                eccodes.codes_release(handle)
    return path


def grib_messages(path: str | Path) -> list[tuple[int, int]]:
    """``(offset, totalLength)`` of every message of a GRIB file, in order."""
    eccodes = _eccodes()
    found = []
    with Path(path).open("rb") as file:
        while True:
            handle = eccodes.codes_grib_new_from_file(file)
            if handle is None:
                break
            try:
                offset = int(eccodes.codes_get(handle, "offset"))
                length = int(eccodes.codes_get(handle, "totalLength"))
                found.append((offset, length))
            finally:
                eccodes.codes_release(handle)
    return found
