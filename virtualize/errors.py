"""The errors users catch.

Every error carries the file (``url``) and, where there is one, the ``variable`` it is about,
plus a ``hint`` that says what to do. ``str(error)`` puts all three on one line so that a log
of a 100,000-file ingest says exactly which file and variable failed and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "ChunkReadError",
    "ConcatenationError",
    "FormatDetectionError",
    "InvalidFileError",
    "ManifestError",
    "NoFilesError",
    "SkippedVariableWarning",
    "UnauthorizedLocationError",
    "UnsupportedFeatureError",
    "VirtualArrayAccessError",
    "VirtualizeError",
]


class VirtualizeError(Exception):
    """Base class of every error raised by virtualize.

    Parameters
    ----------
    reason
        What went wrong.
    url
        The file the error is about, if any.
    variable
        The variable (array path) the error is about, if any.
    hint
        What the user can do about it.
    """

    def __init__(
        self,
        reason: str,
        *,
        url: str | None = None,
        variable: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = reason
        self.url = url
        self.variable = variable
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.url is not None:
            where.append(self.url)
        if self.variable is not None:
            where.append(f"variable {self.variable!r}")
        text = ": ".join([*where, self.reason])
        if self.hint:
            text = f"{text}. {self.hint}"
        return text

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross process boundaries in executors: keep the keyword fields.
        return (
            _rebuild_error,
            (type(self), self.reason, self.url, self.variable, self.hint),
        )


def _rebuild_error(
    cls: type[VirtualizeError],
    reason: str,
    url: str | None,
    variable: str | None,
    hint: str | None,
) -> VirtualizeError:
    return cls(reason, url=url, variable=variable, hint=hint)


class UnauthorizedLocationError(VirtualizeError, PermissionError):
    """A url lies under no location registered in the :class:`~virtualize.ObjectStoreRegistry`.

    Raised before any request is made: a manifest written by someone else must not be able to
    make virtualize read a location the user did not authorise.
    """


class FormatDetectionError(VirtualizeError):
    """No parser recognises the file's format (from its magic bytes)."""


class InvalidFileError(VirtualizeError):
    """The file is malformed, truncated, empty, or not of the format its parser reads."""


class NoFilesError(VirtualizeError, FileNotFoundError):
    """A glob or listing matched no files, or none of the files could be opened.

    Attributes
    ----------
    failures
        When files were found but none opened: each one's
        :class:`~virtualize.executors.TaskFailure` (url, error, attempts).
    """

    def __init__(
        self,
        reason: str,
        *,
        url: str | None = None,
        variable: str | None = None,
        hint: str | None = None,
        failures: Sequence[Any] = (),
    ) -> None:
        super().__init__(reason, url=url, variable=variable, hint=hint)
        self.failures = list(failures)


class UnsupportedFeatureError(VirtualizeError):
    """A variable uses a feature whose bytes cannot be referenced exactly (yet).

    Raised at parse time, never at read time, so that nothing reads back as fill values
    because the parser gave up.
    """


class ManifestError(VirtualizeError):
    """A chunk manifest is inconsistent (shapes, sentinels, url table)."""


class ConcatenationError(VirtualizeError, ValueError):
    """Virtual arrays that cannot be concatenated or stacked without changing their numbers.

    Raised when dtypes, codecs, chunk shapes or CF packing (``scale_factor``, ``add_offset``,
    ``_FillValue``) differ; the message names both sides.
    """


class VirtualArrayAccessError(VirtualizeError, TypeError):
    """An operation on a virtual array needs its data, which a virtual array does not hold."""


class ChunkReadError(VirtualizeError, OSError):
    """Fetching a referenced chunk from its source failed."""


class SkippedVariableWarning(UserWarning):
    """A variable was left out because it can't be referenced (``on_unsupported="skip"``)."""
