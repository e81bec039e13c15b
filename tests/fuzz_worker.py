"""A fuzzing worker: opens the files whose paths arrive on stdin, one per line, with
``virtualize.open_virtual_dataset``, and answers each with a JSON line (see
:mod:`fuzz_support`). Its address space is limited, so that a file declaring an absurd size
makes a ``MemoryError`` rather than exhausting the machine."""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback
import warnings
from pathlib import Path

ADDRESS_SPACE = 8 << 30
METADATA_TIMEOUT = 8.0


def answer(path: Path) -> dict[str, str]:
    import virtualize as vz
    from virtualize.errors import VirtualizeError

    registry = vz.ObjectStoreRegistry.for_urls([path.parent.as_uri() + "/"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = vz.open_virtual_dataset(str(path), registry=registry)
            if os.environ.get("VIRTUALIZE_FUZZ_LOAD"):  # every chunk through its codecs too
                vz.open_virtual_dataset(
                    str(path), registry=registry, loadable_variables=list(dataset.variables)
                ).load()
    except VirtualizeError as error:
        name = type(error).__name__
        # the C libraries' crashes and hangs, contained by virtualize.isolation, counted apart
        if "crashed reading the file's metadata" in str(error):
            name += " (helper crashed)"
        elif "did not finish reading the file's metadata" in str(error):
            name += " (helper stopped)"
        return {"outcome": "typed", "error": name}
    except Exception as error:  # a bug: reported with where it came from
        return {
            "outcome": "untyped",
            "error": f"{type(error).__name__}: {str(error)[:300]}",
            "detail": "".join(traceback.format_exception(error)[-6:]),
        }
    return {"outcome": "parsed"}


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    # ecCodes' and h5py's metadata work stops itself well within the harness's time limit
    # (the harness calls a case that outlives its own limit a hang)
    os.environ.setdefault("VIRTUALIZE_METADATA_TIMEOUT", str(METADATA_TIMEOUT))
    import virtualize  # noqa: F401  (before the first case: its import is not a case's time)

    for line in sys.stdin:
        path = Path(line.strip())
        print(json.dumps(answer(path)), flush=True)


if __name__ == "__main__":
    main()
