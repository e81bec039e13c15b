"""ecCodes, imported so that it can't crash the interpreter at exit.

The ``eccodeslib`` wheel's ``libeccodes.so`` carries its own copy of parts of libstdc++ and
exports them as unique symbols, which the dynamic linker binds process-wide. A C++ library
loaded after it (PROJ, through pyproj, which the TIFF parser uses for CRSs) then allocates
with one copy and frees with the other, and the process aborts after the program has
finished ("free(): invalid pointer" / a segfault in PROJ's static destructors). Loading
pyproj first, when it is installed, binds those symbols to the system libstdc++ instead.
Import ecCodes through :func:`eccodes` everywhere.

xarray imports ecCodes too, through cfgrib's backend entry point, the first time it looks
for an engine (any ``xr.open_dataset`` without ``engine=``), and rioxarray's entry point
then imports pyproj: the same crash in a program that never opens a GRIB file.
:func:`load_proj_first`, run when this module is imported (virtualize imports it first), loads pyproj up front where both
are installed (about 0.1 s).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from importlib.util import find_spec
from typing import Any

__all__ = ["eccodes", "load_proj_first"]


def load_proj_first() -> None:
    """Import pyproj now if it and ecCodes are both installed and ecCodes isn't loaded yet."""
    if "eccodes" in sys.modules or "gribapi" in sys.modules:
        return
    if find_spec("pyproj") is not None and find_spec("eccodes") is not None:
        with contextlib.suppress(ImportError):
            import pyproj  # noqa: F401


@functools.cache
def eccodes() -> Any:
    """The ``eccodes`` module, imported after pyproj (if installed)."""
    with contextlib.suppress(ImportError):
        import pyproj  # noqa: F401
    import eccodes as module

    return module


load_proj_first()
