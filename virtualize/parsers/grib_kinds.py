"""Fields that differ in time only: the bytes that set a GRIB field's reference and forecast
time, and everything else cfgrib indexes it by.

A forecast file repeats the same parameters on the same levels and grid at many steps (and
runs at many reference times). cfgrib reads about twenty keys of every field to index it;
ecCodes evaluates the parameter and level concepts for each (a third of a millisecond per
key), after parsing the message (half a millisecond). Two fields whose headers are equal but
for the octets of their times have the same :data:`TIME_FREE_INDEX_KEYS`: only the time keys
(:data:`TIME_INDEX_KEYS`) need reading. :mod:`virtualize.parsers.grib` reads those from a copy
of the first field's handle set to the other field's times with :func:`time_settings`, once
that copy's :func:`header_sections` are byte for byte the other field's.

The octets are those of GRIB 1's product definition section and of GRIB 2's product
definition templates 4.0, 4.1, 4.8 and 4.11 (point in time and statistics over an interval,
deterministic or ensemble); fields of any other template, or malformed ones, get no
signature and are read in full.
"""

from __future__ import annotations

__all__ = [
    "TIME_FREE_INDEX_KEYS",
    "TIME_INDEX_KEYS",
    "header_sections",
    "time_free_signature",
    "time_settings",
]

#: The keys cfgrib indexes every field by that depend on its reference and forecast time.
TIME_INDEX_KEYS = ("dataDate", "dataTime", "endStep:int", "stepUnits:int")

#: The other keys cfgrib indexes every field by: functions of the octets
#: :func:`time_free_signature` keeps.
TIME_FREE_INDEX_KEYS = (
    "centre", "centreDescription", "dataType", "directionNumber", "edition",
    "frequencyNumber", "gridType", "level:float", "md5GridSection", "number", "numberOfPoints",
    "paramId", "stepType", "subCentre", "typeOfLevel", "uvRelativeToGrid",
)  # fmt: skip

# Time octets, 1-based within their section, with the ecCodes key that sets each.
_GRIB1_TIMES = {  # in the product definition section
    "yearOfCentury": (13, 13),
    "month": (14, 14),
    "day": (15, 15),
    "hour": (16, 16),
    "minute": (17, 17),
    "P1": (19, 19),
    "P2": (20, 20),
    "centuryOfReferenceTimeOfData": (25, 25),
}
_GRIB2_REFERENCE_TIME = {  # in section 1
    "year": (13, 14),
    "month": (15, 15),
    "day": (16, 16),
    "hour": (17, 17),
    "minute": (18, 18),
    "second": (19, 19),
}
_FORECAST_TIME = {"forecastTime": (19, 22)}  # in section 4, templates 4.0 to 4.15
_END_OF_INTERVAL = {  # in section 4 of template 4.8 (4.11: 3 octets later)
    "yearOfEndOfOverallTimeInterval": (35, 36),
    "monthOfEndOfOverallTimeInterval": (37, 37),
    "dayOfEndOfOverallTimeInterval": (38, 38),
    "hourOfEndOfOverallTimeInterval": (39, 39),
    "minuteOfEndOfOverallTimeInterval": (40, 40),
    "secondOfEndOfOverallTimeInterval": (41, 41),
}
#: GRIB 2 product definition templates whose time octets are known: template -> (keys and
#: octets, shift of the end-of-interval octets)
_GRIB2_TEMPLATES: dict[int, dict[str, tuple[int, int]]] = {
    0: _FORECAST_TIME,  # analysis or forecast at a point in time
    1: _FORECAST_TIME,  # individual ensemble forecast
    8: {**_FORECAST_TIME, **_END_OF_INTERVAL},  # statistics over an interval
    11: {  # the same for an individual ensemble forecast (4.8 with 4.1's three octets)
        **_FORECAST_TIME,
        **{key: (first + 3, last + 3) for key, (first, last) in _END_OF_INTERVAL.items()},
    },
}


def header_sections(data: bytes) -> dict[int, bytes] | None:
    """The sections of a field that its index keys come from, by number: GRIB 1's product
    definition (1) and grid description (2) sections, GRIB 2's sections 1 to 4. None when
    they don't parse."""
    if len(data) < 16 or data[:4] != b"GRIB":
        return None
    if data[7] == 1:
        return _grib1_sections(data)
    if data[7] == 2:
        return _grib2_sections(data)
    return None


def _grib1_sections(data: bytes) -> dict[int, bytes] | None:
    size = int.from_bytes(data[8:11], "big")
    if size < 28 or 8 + size > len(data):
        return None
    found = {1: data[8 : 8 + size]}
    if data[8 + 7] & 0x80:  # a grid description section follows
        start = 8 + size
        grid = int.from_bytes(data[start : start + 3], "big")
        if grid < 3 or start + grid > len(data):
            return None
        found[2] = data[start : start + grid]
    return found


def _grib2_sections(data: bytes) -> dict[int, bytes] | None:
    found: dict[int, bytes] = {}
    position = 16
    while position + 5 <= len(data):
        size = int.from_bytes(data[position : position + 4], "big")
        number = data[position + 4]
        if number >= 5:  # packing, bitmap and data: no index key depends on them
            return found if 1 in found and 4 in found else None
        if size < 5 or position + size > len(data) or number in found:
            return None
        found[number] = data[position : position + size]
        position += size
    return None


def _time_octets(data: bytes, sections: dict[int, bytes]) -> dict[int, dict[str, tuple[int, int]]]:
    """The time keys and their octets, per section (empty if unknown)."""
    if data[7] == 1:
        return {1: _GRIB1_TIMES}
    section4 = sections[4]
    template = int.from_bytes(section4[7:9], "big") if len(section4) >= 9 else -1
    if template not in _GRIB2_TEMPLATES:
        return {}
    return {1: _GRIB2_REFERENCE_TIME, 4: _GRIB2_TEMPLATES[template]}


def time_free_signature(data: bytes) -> bytes | None:
    """The field's :func:`header_sections` with the octets of its reference and forecast
    time zeroed, and its edition and discipline: fields with the same signature differ in
    time only, and have the same :data:`TIME_FREE_INDEX_KEYS`. None when the field's time
    octets are not known (see the module documentation)."""
    sections = header_sections(data)
    if sections is None:
        return None
    octets = _time_octets(data, sections)
    if not octets:
        return None
    parts = [data[6:8]]  # GRIB 2's discipline and the edition
    for number in sorted(sections):
        section = bytearray(sections[number])
        for first, last in octets.get(number, {}).values():
            if last > len(section):
                return None
            section[first - 1 : last] = bytes(last - first + 1)
        parts.append(number.to_bytes(1, "big") + bytes(section))
    return b"".join(parts)


def time_settings(data: bytes) -> list[tuple[str, int]] | None:
    """The ecCodes keys, and their values in ``data``, that set a field's reference and
    forecast time: the octets :func:`time_free_signature` zeroes, as plain numbers."""
    sections = header_sections(data)
    if sections is None:
        return None
    settings = []
    for number, keys in _time_octets(data, sections).items():
        section = sections[number]
        for key, (first, last) in keys.items():
            if last > len(section):
                return None
            settings.append((key, int.from_bytes(section[first - 1 : last], "big")))
    return settings or None
