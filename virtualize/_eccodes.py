"""ecCodes, imported so that it can't crash the interpreter at exit.

The ``eccodeslib`` wheel's ``libeccodes.so`` carries its own copy of parts of libstdc++ and
exports them as unique symbols, which the dynamic linker binds process-wide. A C++ library
loaded after it (PROJ, through pyproj, which the TIFF parser uses for CRSs) then allocates
with one copy and frees with the other, and the process aborts after the program has
finished ("free(): invalid pointer" / a segfault in PROJ's static destructors). Loading
pyproj first, when it is installed, binds those symbols to the system libstdc++ instead.
Import ecCodes through :func:`eccodes` everywhere.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

__all__ = ["eccodes"]


@functools.cache
def eccodes() -> Any:
    """The ``eccodes`` module, imported after pyproj (if installed)."""
    with contextlib.suppress(ImportError):
        import pyproj  # noqa: F401
    import eccodes as module

    return module
