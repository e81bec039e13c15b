"""Writing 10^6 references as Kerchunk Parquet and JSON: virtualize against VirtualiZarr 2.8.

Each tool opens the 10^6-chunk benchmark file (``benchmarks/generate.py``) with its own
``open_virtual_dataset(..., loadable_variables=[])`` (not timed), then writes the references
(timed): virtualize with ``virtualize.writers.kerchunk.to_kerchunk``, VirtualiZarr with
``vds.vz.to_kerchunk``; both Zarr v2 metadata and the default record size (100,000). Every
case runs in its own fresh process, ``--repeats`` times, interleaved.

Memory is reported two ways: the process's peak resident memory (which includes opening the
file), and how far resident memory rose above where it stood just before the write, sampled
every few milliseconds while writing (this is what the writer itself needs).

Usage: ``python benchmarks/kerchunk_write.py [--repeats R]`` with an interpreter that has
both packages (``make bench`` sets up ``.venv-bench``).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
FILE = BENCHMARKS.parent / ".bench" / "chunks-1000000.nc"
FORMATS = ("parquet", "json")


def rss_mb() -> float:
    """Resident memory now (Linux), in MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RSSSampler:
    """Highest resident memory seen while the ``with`` block runs, sampled in a thread."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.interval)

    def __enter__(self) -> RSSSampler:
        self.peak = rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def open_virtualize() -> tuple[Any, Callable[[Path, str], None]]:
    from obstore.store import LocalStore

    import virtualize as vz
    from virtualize.parsers import HDFParser
    from virtualize.writers.kerchunk import to_kerchunk

    prefix = FILE.parent.as_uri() + "/"
    registry = vz.ObjectStoreRegistry({prefix: LocalStore(FILE.parent)})
    vds = vz.open_virtual_dataset(
        FILE.as_uri(), parser=HDFParser(), registry=registry, loadable_variables=[]
    )

    def write(target: Path, fmt: str) -> None:
        to_kerchunk(vds, target, format=fmt)  # type: ignore[arg-type]

    return vds, write


def open_virtualizarr() -> tuple[Any, Callable[[Path, str], None]]:
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({"file://": LocalStore()})
    vds = open_virtual_dataset(
        FILE.as_uri(), registry=registry, parser=HDFParser(), loadable_variables=[]
    )

    def write(target: Path, fmt: str) -> None:
        vds.vz.to_kerchunk(str(target), format=fmt)

    return vds, write


OPENERS = {"virtualize": open_virtualize, "virtualizarr": open_virtualizarr}


def size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_case(tool: str, fmt: str) -> dict[str, Any]:
    warnings.simplefilter("ignore")
    vds, write = OPENERS[tool]()
    folder = Path(tempfile.mkdtemp(prefix="kerchunk-bench-"))
    target = folder / f"refs.{fmt}"
    try:
        gc.collect()
        before = rss_mb()
        with RSSSampler() as sampler:
            started = time.perf_counter()
            write(target, fmt)
            seconds = time.perf_counter() - started
        written = size_on_disk(target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    del vds
    return {
        "seconds": seconds,
        "write_rss_increase_mb": sampler.peak - before,
        "peak_rss_mb": peak_rss_mb(),
        "bytes_written": written,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        tool, fmt = args.case.split(":")
        print(json.dumps(run_case(tool, fmt)))
        return
    if not FILE.exists():
        raise SystemExit(f"{FILE} is missing: run benchmarks/run.py first (it writes it)")
    tools = ["virtualize"]
    if importlib.util.find_spec("virtualizarr") is not None:
        tools.append("virtualizarr")
    else:
        print("VirtualiZarr is not installed here: measuring virtualize alone", flush=True)
    cases = [f"{tool}:{fmt}" for fmt in FORMATS for tool in tools]
    results: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    for _ in range(args.repeats):
        for case in cases:
            command = [sys.executable, __file__, "--case", case]
            proc = subprocess.run(command, capture_output=True, text=True, env=os.environ)
            if proc.returncode:
                raise SystemExit(f"{case} failed:\n{proc.stderr}")
            results[case].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print("writing 10^6 references as Kerchunk references (Zarr v2 metadata)")
    best = {case: min(r["seconds"] for r in runs) for case, runs in results.items()}
    for case in cases:
        runs = results[case]
        increase = max(r["write_rss_increase_mb"] for r in runs)
        peak = max(r["peak_rss_mb"] for r in runs)
        size = runs[0]["bytes_written"] / 2**20
        print(
            f"  {case:22s} best {best[case]:6.2f} s, write +{increase:5.0f} MB RSS, "
            f"process peak {peak:5.0f} MB, {size:6.1f} MB written"
        )
    for fmt in FORMATS:
        if f"virtualizarr:{fmt}" in best:
            ratio = best[f"virtualizarr:{fmt}"] / best[f"virtualize:{fmt}"]
            print(f"  {fmt}: VirtualiZarr / virtualize = {ratio:.1f}x")
    out = BENCHMARKS / "results" / "kerchunk_write.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
