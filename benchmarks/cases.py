"""The measured functions: each case runs once in a fresh process and prints one JSON line.

Usage
-----
``python benchmarks/cases.py CASE PATH``

Cases
-----
h5py
    h5py's ``chunk_iter`` over every chunk of ``data`` with a trivial callback: the floor
    for listing chunks through libhdf5.
virtualize, virtualizarr
    Wall and CPU time of ``open_virtual_dataset(path, loadable_variables=[])`` (CPU time
    suffers less from other work on a shared machine), with the process's resident memory
    before and its peak after; then the wall time of a second open in the same process.
virtualize-memory, virtualizarr-memory
    The same open under :mod:`tracemalloc` (which slows it down, hence a separate case):
    bytes still allocated once the dataset is open and kept alive, and the peak, both
    above the baseline taken after imports; the bytes that releasing the dataset frees;
    and each tool's own count of the bytes it holds.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

Opener = Callable[[], Any]
Stats = Callable[[Any], dict[str, int]]


def virtualize_opener(path: Path) -> tuple[Opener, Stats]:
    """``vz.open_virtual_dataset`` with an explicit registry for the file's folder."""
    import obstore.store

    import virtualize as vz
    from virtualize.parsers import HDFParser

    folder = path.parent
    registry = vz.ObjectStoreRegistry(
        {folder.as_uri() + "/": obstore.store.LocalStore(str(folder))}
    )
    url = path.as_uri()

    def open_() -> Any:
        return vz.open_virtual_dataset(
            url, parser=HDFParser(), registry=registry, loadable_variables=[]
        )

    def stats(vds: Any) -> dict[str, int]:
        return {"own_nbytes": vds.virtualize.nbytes, "nrefs": vds.virtualize.nrefs}

    return open_, stats


def virtualizarr_opener(path: Path) -> tuple[Opener, Stats]:
    """VirtualiZarr 2.x's ``open_virtual_dataset`` with its ``HDFParser``."""
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_dataset
    from virtualizarr.manifests import ManifestArray
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({"file://": LocalStore()})
    url = path.as_uri()

    def open_() -> Any:
        return open_virtual_dataset(
            url, registry=registry, parser=HDFParser(), loadable_variables=[]
        )

    def stats(vds: Any) -> dict[str, int]:
        nrefs = sum(
            sum(1 for _ in variable.data.manifest.iter_nonempty_paths())
            for variable in vds.variables.values()
            if isinstance(variable.data, ManifestArray)
        )
        return {"own_nbytes": int(vds.vz.nbytes), "nrefs": nrefs}

    return open_, stats


OPENERS: dict[str, tuple[str, Callable[[Path], tuple[Opener, Stats]]]] = {
    "virtualize": ("virtualize", virtualize_opener),
    "virtualizarr": ("virtualizarr", virtualizarr_opener),
}


def rss_bytes() -> int:
    """The process's resident memory now (Linux), or 0 where it can't be read."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (``ru_maxrss`` is in KiB on Linux)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def time_open(tool: str, path: Path) -> dict[str, Any]:
    """Wall time of the process's first open and of a second one, and how far resident
    memory rose during the first.

    The first open pays for modules the tool imports lazily (h5py, dask through xarray's
    chunk managers); the second is the steady cost per file when many files are opened.
    """
    open_, stats = OPENERS[tool][1](path)
    gc.collect()
    rss_before = rss_bytes()
    cpu_start, start = time.process_time(), time.perf_counter()
    vds = open_()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    result = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "rss_before": rss_before,
        "rss_after": rss_bytes(),
        "peak_rss": peak_rss_bytes(),
    }
    result |= stats(vds)
    del vds
    gc.collect()
    start = time.perf_counter()
    open_()
    result["warm_seconds"] = time.perf_counter() - start
    return result


def trace_open(tool: str, path: Path) -> dict[str, Any]:
    """Bytes allocated (as tracemalloc sees them) that the open dataset keeps, and the peak."""
    open_, stats = OPENERS[tool][1](path)
    tracemalloc.start()
    gc.collect()
    baseline, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    vds = open_()
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    result = {"traced_retained": current - baseline, "traced_peak": peak - baseline}
    result |= stats(vds)
    # What the dataset itself holds is what releasing it frees; the rest of the retained
    # bytes are modules imported and caches filled by the first open.
    del vds
    gc.collect()
    result["traced_held"] = current - tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return result


def h5py_chunk_iter(path: Path) -> dict[str, Any]:
    """Open the file with h5py and visit every chunk's (offset, size) through libhdf5."""
    import h5py

    count = 0

    def visit(_info: Any) -> None:
        nonlocal count
        count += 1

    cpu_start, start = time.process_time(), time.perf_counter()
    with h5py.File(path, "r") as file:
        file["data"].id.chunk_iter(visit)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "nrefs": count}


def run(case: str, path: Path) -> dict[str, Any]:
    """Run ``case`` on ``path``; the result names the case and the measured tool's version."""
    tool, _, mode = case.partition("-")
    if case == "h5py":
        result = h5py_chunk_iter(path)
    elif tool in OPENERS and mode in ("", "memory"):
        result = trace_open(tool, path) if mode else time_open(tool, path)
    else:
        raise SystemExit(f"unknown case {case!r}: h5py, or one of {sorted(OPENERS)}[-memory]")
    return {"case": case, "version": version(OPENERS.get(tool, ("h5py",))[0])} | result


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(json.dumps(run(sys.argv[1], Path(sys.argv[2]).resolve())))


if __name__ == "__main__":
    main()
