"""Finding the GRIB messages of a file, and the fields inside them, from their bytes.

A GRIB file is a sequence of messages, each from ``"GRIB"`` to ``"7777"``, maybe with
bytes between them (padding, headers of some archives) that readers skip. The length of a
message is in its indicator section: 3 bytes for GRIB 1 (with ECMWF's rule for messages
over 8 MB: the top bit set, the length counted in units of 120 bytes, corrected by the
length of the binary data section), 8 bytes for GRIB 2.

A GRIB 2 message may hold several *fields*: after section 7 the sections 2, 3 or 4 repeat
(NCEP puts U and V of the wind in one message this way). ecCodes with multi-field support,
and therefore cfgrib, reads each field as a message of its own. Here a field after the first
is rebuilt as a standalone message (sections 0 and 1 of the message, the latest sections 2
and 3, the field's own sections 4 to 7, and the bitmap it refers to): the parser makes its
ecCodes handle from it, and holds it inline when an array's chunks are not all the same
field of their messages (otherwise the chunks reference the messages and the codec's
``field`` option picks the field out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from virtualize.errors import InvalidFileError, UnsupportedFeatureError

__all__ = ["END", "MAGIC", "Field", "Message", "fields_of", "grib1_length", "scan"]

MAGIC = b"GRIB"
END = b"7777"
_LARGE_GRIB1 = 0x800000
_HINT = "Check that the file is a complete GRIB file (it may be truncated or corrupt)"


@dataclass(frozen=True, slots=True)
class Message:
    """One GRIB message: its number in the file, byte range and edition."""

    number: int
    offset: int
    length: int
    edition: int


@dataclass(frozen=True, slots=True)
class Field:
    """One field, as ecCodes with multi-field support (and cfgrib) reads it: field
    ``number`` of ``message``.

    ``data`` is a message whose first field is this one: the message's own bytes for its
    first field, a rebuilt standalone message for a later one; or, when the parser read only
    the message's headers (through a ``.idx`` sidecar), a header-only message (its sections 0
    to 6 without the data, see ``virtualize.parsers.grib``), enough for ecCodes and cfgrib
    to build the datasets but not to decode values.
    """

    message: Message
    number: int
    data: bytes


def grib1_length(
    header: bytes | memoryview, read: Callable[[int, int], bytes | memoryview], offset: int
) -> int:
    """The total length of the GRIB 1 message whose first 8 bytes are ``header``.

    ``read(offset, size)`` reads bytes of the file, for the sections a large message's length
    depends on.
    """
    length = int.from_bytes(header[4:7], "big")
    if not length & _LARGE_GRIB1:
        return length
    # ECMWF's large GRIB 1 messages (ecCodes' read_GRIB): the length counts 120-byte units
    # and the binary data section's (BDS) small length corrects it
    position = offset + 8
    section1 = read(position, 8)
    flags = section1[7]
    position += int.from_bytes(section1[0:3], "big")
    for present in (flags & 0x80, flags & 0x40):  # GDS, BMS
        if present:
            position += int.from_bytes(read(position, 3), "big")
    section4 = int.from_bytes(read(position, 3), "big")
    if section4 < 120:
        return (length & 0x7FFFFF) * 120 - section4 + 4
    return length


def scan(read: Callable[[int, int], bytes | memoryview], size: int, url: str) -> Iterator[Message]:
    """The messages of a file of ``size`` bytes, read with ``read(offset, size)``.

    Bytes between messages are skipped, as ecCodes skips them; bytes after the last message
    that hold no ``"GRIB"`` are ignored.

    Raises
    ------
    InvalidFileError
        If the file holds no message, a message runs past the end of the file (truncated),
        or does not end with ``"7777"``.
    UnsupportedFeatureError
        For GRIB editions other than 1 and 2.
    """
    position = 0
    number = 0
    while position + 16 <= size:
        found = _find_magic(read, position, size)
        if found is None:
            break
        position = found
        header = read(position, 16)
        edition = header[7]
        if edition not in (1, 2, 3):
            position += 1  # "GRIB" in other bytes, not a message: skip, as ecCodes does
            continue
        if edition == 1:
            length = grib1_length(header, read, position)
        elif edition == 2:
            length = int.from_bytes(header[8:16], "big")
        else:
            raise UnsupportedFeatureError(
                f"message {number} at byte {position} is of GRIB edition {edition}; only "
                "editions 1 and 2 are supported",
                url=url,
                hint="Convert the file to GRIB 2 (e.g. with ecCodes' grib_set -s edition=2)",
            )
        if length < 16 + 4 or position + length > size:
            raise InvalidFileError(
                f"message {number} at byte {position} says it is {length} bytes long, but "
                f"the file ends {size - position} bytes after its start (truncated?)",
                url=url,
                hint=_HINT,
            )
        if read(position + length - 4, 4) != END:
            raise InvalidFileError(
                f"message {number} at byte {position} ({length} bytes) does not end with '7777'",
                url=url,
                hint=_HINT,
            )
        yield Message(number, position, length, edition)
        number += 1
        position += length
    if number == 0:
        raise InvalidFileError(
            "not a GRIB file: no 'GRIB' message found",
            url=url,
            hint="Pick the parser that matches the file's format",
        )


def _find_magic(
    read: Callable[[int, int], bytes | memoryview], position: int, size: int
) -> int | None:
    """The offset of the next ``"GRIB"`` at or after ``position``, or None."""
    if read(position, 4) == MAGIC:  # nearly always: messages follow each other
        return position
    step = 1 << 16
    while position + 4 <= size:
        block = bytes(read(position, min(step + 3, size - position)))
        found = block.find(MAGIC)
        if found >= 0:
            return position + found
        position += step
    return None


def fields_of(message: Message, data: bytes, url: str) -> list[Field]:
    """The fields of one message, given its bytes ``data``.

    A GRIB 1 message, and a GRIB 2 message of one field, is one field. Raises
    :class:`~virtualize.errors.InvalidFileError` when the sections of a GRIB 2 message don't
    add up to its length.
    """
    if message.edition != 2:
        return [Field(message, 0, data)]
    groups = _grib2_field_sections(message, data, url)
    if len(groups) == 1:
        return [Field(message, 0, data)]
    fields = [Field(message, 0, data)]
    for number, sections in enumerate(groups[1:], start=1):
        body = b"".join(sections)
        total = 16 + len(body) + 4
        section0 = data[:8] + total.to_bytes(8, "big")
        fields.append(Field(message, number, section0 + body + END))
    return fields


def _grib2_field_sections(message: Message, data: bytes, url: str) -> list[list[bytes]]:
    """For each field of a GRIB 2 message, the sections 1 to 7 of its standalone form."""
    position = 16
    end = len(data) - 4
    latest: dict[int, bytes] = {}
    bitmap: bytes | None = None
    groups: list[list[bytes]] = []
    while position < end:
        if position + 5 > end:
            break
        length = int.from_bytes(data[position : position + 4], "big")
        number = data[position + 4]
        if length < (6 if number == 6 else 5) or position + length > end or not 1 <= number <= 7:
            raise InvalidFileError(
                f"message {message.number} at byte {message.offset}: GRIB 2 section "
                f"{number} at byte {message.offset + position} of length {length} does not "
                "fit in the message",
                url=url,
                hint=_HINT,
            )
        section = data[position : position + length]
        if number == 6:
            indicator = section[5]
            if indicator == 0:
                bitmap = section
            elif indicator == 254:
                if bitmap is None:
                    raise InvalidFileError(
                        f"message {message.number} at byte {message.offset} refers to a "
                        "previous bitmap that it does not define",
                        url=url,
                        hint=_HINT,
                    )
                section = bitmap
        latest[number] = section
        if number == 7:
            groups.append([latest[n] for n in (1, 2, 3, 4, 5, 6, 7) if n in latest])
        position += length
    if data[position:] != END:
        raise InvalidFileError(
            f"message {message.number} at byte {message.offset}: its sections end at byte "
            f"{message.offset + position}, not where '7777' is",
            url=url,
            hint=_HINT,
        )
    if not groups:
        raise InvalidFileError(
            f"message {message.number} at byte {message.offset} has no data section (7)",
            url=url,
            hint=_HINT,
        )
    return groups
