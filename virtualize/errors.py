"""The errors users catch.

Every error carries the file (``url``) and, where there is one, the ``variable`` it is about,
plus a ``hint`` that says what to do. ``str(error)`` puts all three on one line so that a log
of a 100,000-file ingest says exactly which file and variable failed and why.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

__all__ = [
    "ChunkReadError",
    "ConcatenationError",
    "FormatDetectionError",
    "IngestConflictError",
    "InvalidFileError",
    "ManifestError",
    "NoFilesError",
    "RepositoryAccessError",
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
        # Messages quote what servers and libraries said, which can echo a credential (S3's
        # 403 names the access key id); they end up in logs and in ingest commits.
        self.reason = redact_credentials(reason)
        self.url = redact_credentials(url) if url is not None else None
        self.variable = variable
        self.hint = redact_credentials(hint) if hint is not None else None
        _redact_handled_exception()
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


#: Names of environment variables (and store settings) that hold a credential.
_CREDENTIAL_NAME = re.compile(
    r"(SECRET|SECRET_KEY|TOKEN|PASSWORD|ACCESS_KEY|KEY_ID|ACCOUNT_KEY|API_KEY|SAS_KEY)$",
    re.IGNORECASE,
)
_CREDENTIAL_PATTERNS = (
    # S3's answer to an unknown key quotes it
    (re.compile(r"(<AWSAccessKeyId>)[^<]*(</AWSAccessKeyId>)"), r"\1[redacted]\2"),
    # AWS access key ids (long-term and temporary)
    (re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{12,}\b"), "[redacted]"),
    # signed requests and presigned urls
    (
        re.compile(
            r"\b((?:X-Amz-)?(?:Credential|Signature|Security-Token)=)[^&\s,;\"'<>]+",
            re.IGNORECASE,
        ),
        r"\1[redacted]",
    ),
    # a password in a url's user information
    (re.compile(r"(://[^/@\s:]*:)[^/@\s]+@"), r"\1[redacted]@"),
)
_known_credentials: set[str] = set()


def remember_credentials(settings: Any) -> None:
    """Redact, from now on, the credential values among ``settings`` (a store's ``config``
    mapping, say) wherever an error message quotes them."""
    for name, value in dict(settings or {}).items():
        if _CREDENTIAL_NAME.search(str(name)) and isinstance(value, str) and len(value) >= 8:
            _known_credentials.add(value)


def redact_credentials(text: str) -> str:
    """``text`` with credentials replaced by ``[redacted]``: the values of credential
    environment variables (``AWS_SECRET_ACCESS_KEY``, ``*_TOKEN``, ...) and of stores'
    settings seen by :func:`remember_credentials`, access key ids, request signatures and
    url passwords."""
    secrets = set(_known_credentials)
    secrets.update(
        value
        for name, value in os.environ.items()
        if _CREDENTIAL_NAME.search(name) and len(value) >= 8
    )
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    for pattern, replacement in _CREDENTIAL_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_handled_exception() -> None:
    # A virtualize error is raised from the exception being handled (``raise ... from
    # error``): tracebacks print that one too, so its message is redacted in place.
    error: BaseException | None = sys.exception()
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if not isinstance(error, VirtualizeError):
            # an exception type whose args can't be set keeps its text
            with contextlib.suppress(Exception):
                error.args = tuple(
                    redact_credentials(a) if isinstance(a, str) else a for a in error.args
                )
        error = error.__cause__ or error.__context__


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


class IngestConflictError(VirtualizeError):
    """Another writer committed to the branch while a batch was being ingested, and the batch
    can't be committed on top of it.

    Either the other commit's data comes after this batch along the concatenation dimension
    (two ingests of interleaved files raced, and the other one appended first), or the branch
    kept moving for every attempt. Nothing of the batch was committed; batches committed
    earlier in the run stay committed.
    """


class VirtualArrayAccessError(VirtualizeError, TypeError):
    """An operation on a virtual array needs its data, which a virtual array does not hold."""


class ChunkReadError(VirtualizeError, OSError):
    """Fetching a referenced chunk from its source failed."""


class RepositoryAccessError(VirtualizeError, OSError):
    """An Icechunk repository could not be reached: its requests kept failing (connection
    errors, ``5xx`` answers, timeouts) until the retries of
    :class:`~virtualize.NetworkSettings` ran out. Nothing was committed."""


class SkippedVariableWarning(UserWarning):
    """A variable was left out because it can't be referenced (``on_unsupported="skip"``)."""
