"""Errors of the format libraries on damaged files, as :class:`~virtualize.errors.InvalidFileError`.

h5py, tifffile and astropy parse a damaged file's metadata as far as they can and then raise
whatever their code meets: ``RuntimeError`` and ``KeyError`` from the HDF5 library, a
``TypeError`` from a tag of the wrong type, astropy's ``VerifyError`` on an unparsable card,
a ``MemoryError`` for a size no file can have. A user gets one typed error naming the file
and the library's own words instead (the original stays chained as ``__cause__``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from virtualize.errors import InvalidFileError, VirtualizeError

__all__ = ["library_errors"]


@contextmanager
def library_errors(url: str, library: str) -> Iterator[None]:
    """Raise what ``library`` raises inside the block as an ``InvalidFileError`` on ``url``
    (virtualize's own errors pass through)."""
    try:
        yield
    except VirtualizeError:
        raise
    except MemoryError as error:
        raise InvalidFileError(
            f"{library} ran out of memory reading the file's metadata: it declares sizes "
            "no file of its size can have",
            url=url,
            hint="The file is damaged",
        ) from error
    except Exception as error:
        raise InvalidFileError(
            f"{library} cannot read the file: {type(error).__name__}: {error}",
            url=url,
            hint="The file is damaged or truncated, or not of this format",
        ) from error
