"""Opening a year of daily netCDF4 files as one virtual dataset: virtualize against VirtualiZarr.

Writes 365 daily files into ``.bench/mfdataset-365/`` (once; a marker records the generator's
spec, and a folder whose marker does not match is rewritten): each holds one time step of three
zlib-compressed float32 variables on a 180 x 360 grid in 90 x 180 chunks, with ``time``, ``lat``
and ``lon`` coordinates. Then runs every case in its own fresh process, ``--repeats`` times,
interleaved:

virtualize serial
    ``vz.open_virtual_mfdataset(glob, executor="serial")``.
virtualize processes
    The same with ``executor="processes"`` (one worker per CPU); starting the pool and
    importing virtualize in the workers is timed, since a user pays for it.
VirtualiZarr serial
    VirtualiZarr 2.x's ``open_virtual_mfdataset(urls, parser=HDFParser())``, not parallel.

All pass the same combine options (by coordinates, ``data_vars="minimal"``,
``coords="minimal"``, ``compat="override"``, ``join="exact"``, ``combine_attrs="override"``),
and each case checks that it got all 365 days. Prints a markdown table of wall time (best and
median), CPU time of the case's own process and peak resident memory, then the speed-ups; writes
``benchmarks/results/mfdataset.json``.

Usage
-----
``python benchmarks/mfdataset.py [--repeats R] [--output PATH]``

Needs ``netCDF4`` to write the files and VirtualiZarr 2.x for its row (skipped if absent).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
FOLDER = REPO / ".bench" / "mfdataset-365"
MARKER = FOLDER / "generator.json"
DAYS = 365
VARIABLES = {
    "tas": ("K", 273.0, 30.0),
    "psl": ("Pa", 101_000.0, 1_500.0),
    "hus": ("1", 0.01, 0.005),
}
SIZES = {"time": DAYS, "lat": 180, "lon": 360}
COMBINE: dict[str, Any] = {
    "combine": "by_coords",
    "data_vars": "minimal",
    "coords": "minimal",
    "compat": "override",
    "join": "exact",
    "combine_attrs": "override",
}
Opener = Callable[[], tuple[Any, int]]
CASES = {
    "virtualize-serial": "virtualize serial",
    "virtualize-processes": "virtualize processes",
    "virtualizarr-serial": "VirtualiZarr serial",
}


def spec() -> dict[str, Any]:
    """The parameters that identify the generated files; changing them regenerates."""
    return {
        # Bump whenever the writer changes in a way these fields do not show.
        "generator_version": 1,
        "files": DAYS,
        "variables": sorted(VARIABLES),
        "shape": [1, SIZES["lat"], SIZES["lon"]],
        "chunks": [1, 90, 180],
        "dtype": "float32",
        "filters": ["shuffle", "zlib(4)"],
        "time_units": "days since 2000-01-01",
        "writer": "netCDF4",
    }


def day_path(folder: Path, day: int) -> Path:
    """The file of day ``day`` (0-based) of the year 2000 in ``folder``."""
    date = time.strftime("%Y%m%d", time.gmtime(946_684_800 + 86_400 * day))
    return folder / f"daily_{date}.nc"


def write_day(folder: Path, day: int) -> None:
    """Write one daily file: smooth fields plus noise, rounded so that they compress as
    archived model output does."""
    import netCDF4
    import numpy as np

    rng = np.random.default_rng(day)
    lat = np.linspace(-89.5, 89.5, SIZES["lat"])
    lon = np.linspace(0.5, 359.5, SIZES["lon"])
    pattern = np.cos(np.deg2rad(lat))[:, None] * np.sin(np.deg2rad(lon + day))[None, :]
    with netCDF4.Dataset(day_path(folder, day), "w", format="NETCDF4") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", SIZES["lat"])
        nc.createDimension("lon", SIZES["lon"])
        times = nc.createVariable("time", "f8", ("time",))
        times.units = "days since 2000-01-01"
        times.calendar = "standard"
        times.standard_name = "time"
        times[:] = [float(day)]
        for name, values, units in (("lat", lat, "degrees_north"), ("lon", lon, "degrees_east")):
            coordinate = nc.createVariable(name, "f8", (name,))
            coordinate.units = units
            coordinate[:] = values
        for name, (units, mean, spread) in VARIABLES.items():
            variable = nc.createVariable(
                name,
                "f4",
                ("time", "lat", "lon"),
                zlib=True,
                complevel=4,
                shuffle=True,
                chunksizes=(1, 90, 180),
            )
            variable.units = units
            field = mean + spread * pattern + rng.normal(0.0, spread / 20, pattern.shape)
            variable[0, :, :] = np.round(field, 3).astype("f4")
        nc.title = "synthetic daily fields for benchmarks/mfdataset.py"


def ensure_files() -> list[Path]:
    """The daily files, written first (in parallel, through a temporary folder so that an
    interrupted run leaves no stale files) if they are missing or their marker is stale."""
    paths = [day_path(FOLDER, day) for day in range(DAYS)]
    if (
        MARKER.exists()
        and json.loads(MARKER.read_text()).get("spec") == spec()
        and all(path.exists() for path in paths)
    ):
        return paths
    print(f"writing {DAYS} daily files into {FOLDER} ...", flush=True)
    partial = FOLDER.with_name(FOLDER.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
        pool.starmap(write_day, [(partial, day) for day in range(DAYS)])
    shutil.rmtree(FOLDER, ignore_errors=True)
    partial.rename(FOLDER)
    MARKER.write_text(
        json.dumps(
            {
                "spec": spec(),
                "bytes": sum(path.stat().st_size for path in paths),
                "write_seconds": round(time.perf_counter() - started, 2),
                "netCDF4": version("netCDF4"),
            },
            indent=2,
        )
    )
    return paths


def rss_bytes() -> int:
    """The process's resident memory now (Linux), or 0 where it can't be read."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


def max_rss_bytes(who: int) -> int:
    """``ru_maxrss`` of ``resource.RUSAGE_SELF`` or ``RUSAGE_CHILDREN`` in bytes."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(who).ru_maxrss * scale


class DescendantPeaks:
    """Peak resident memory of this process's descendants, sampled from ``/proc`` (Linux).

    ``RUSAGE_CHILDREN`` misses process-pool workers: with ``forkserver`` they are the
    forkserver's children, not ours, and are reaped by it. So a thread reads every
    descendant's ``VmHWM`` (its own high-water mark) a few times a second and keeps the last
    value seen per process.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DescendantPeaks:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for pid in self._descendants(os.getpid()):
                self._sample(pid)

    def _descendants(self, pid: int) -> list[int]:
        found: list[int] = []
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return found
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    for child in map(int, children.read().split()):
                        found += [child, *self._descendants(child)]
            except OSError:
                continue
        return found

    def _sample(self, pid: int) -> None:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        self.peaks[pid] = int(line.split()[1]) * 1024
                        return
        except OSError:
            pass

    @property
    def total(self) -> int:
        """The sum of the descendants' peaks (all ran at the same time)."""
        return sum(self.peaks.values())


def virtualize_opener(executor: str) -> Opener:
    """``vz.open_virtual_mfdataset`` over the glob, with ``executor``."""
    from obstore.store import LocalStore

    import virtualize as vz

    registry = vz.ObjectStoreRegistry({FOLDER.as_uri() + "/": LocalStore(FOLDER)})

    def open_() -> tuple[Any, int]:
        vds = vz.open_virtual_mfdataset(
            f"{FOLDER}/*.nc", registry=registry, executor=executor, progress=False, **COMBINE
        )
        return vds, vds.virtualize.nrefs

    return open_


def virtualizarr_opener() -> Opener:
    """VirtualiZarr's ``open_virtual_mfdataset`` over the same files, found by a glob."""
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_mfdataset
    from virtualizarr.manifests import ManifestArray
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({"file://": LocalStore()})

    def open_() -> tuple[Any, int]:
        urls = [path.as_uri() for path in sorted(FOLDER.glob("*.nc"))]
        vds = open_virtual_mfdataset(
            urls, registry=registry, parser=HDFParser(), parallel=False, **COMBINE
        )
        nrefs = sum(
            sum(1 for _ in variable.data.manifest.iter_nonempty_paths())
            for variable in vds.variables.values()
            if isinstance(variable.data, ManifestArray)
        )
        return vds, nrefs

    return open_


def run_case(case: str) -> dict[str, Any]:
    """Child process: time one open of all the files, check what it made, measure memory.

    The tool is imported before the clock starts; the chunk references are counted inside
    ``open_`` but take microseconds.
    """
    warnings.simplefilter("ignore")
    tool, _, executor = case.partition("-")
    open_ = virtualize_opener(executor) if tool == "virtualize" else virtualizarr_opener()
    rss_before = rss_bytes()
    with DescendantPeaks() as descendants:
        cpu_start, start = time.process_time(), time.perf_counter()
        vds, nrefs = open_()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    sizes = {str(dim): int(size) for dim, size in vds.sizes.items()}
    if sizes != SIZES or sorted(map(str, vds.data_vars)) != sorted(VARIABLES):
        raise SystemExit(f"{case} made {sizes} with {sorted(vds.data_vars)}, not {SIZES}")
    return {
        "case": case,
        "version": version(tool),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "sizes": sizes,
        "nrefs": nrefs,
        "rss_before": rss_before,
        "peak_rss_self": max_rss_bytes(resource.RUSAGE_SELF),
        # Includes the `uname -p` that importing these libraries forks from a large process.
        "peak_rss_children": max_rss_bytes(resource.RUSAGE_CHILDREN),
        "peak_rss_workers": descendants.total,
        "processes_seen": len(descendants.peaks),
    }


def measure_case(case: str) -> dict[str, Any]:
    """Run one case in a fresh interpreter and return the JSON line it prints."""
    command = [sys.executable, __file__, "--case", case]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"case {case} failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best and median wall time over the runs of one case, the largest peaks, and the
    first run's details."""
    seconds = [run["seconds"] for run in runs]
    return runs[0] | {
        "seconds": seconds,
        "best": min(seconds),
        "median": statistics.median(seconds),
        "cpu_seconds": [run["cpu_seconds"] for run in runs],
        "best_cpu": min(run["cpu_seconds"] for run in runs),
        "peak_rss_self": max(run["peak_rss_self"] for run in runs),
        "peak_rss_workers": max(run["peak_rss_workers"] for run in runs),
        "peak_rss_workers_per_run": [run["peak_rss_workers"] for run in runs],
    }


def measure(cases: list[str], repeats: int) -> dict[str, dict[str, Any]]:
    """Every case, ``repeats`` times; interleaved so that drift hits all alike."""
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    for repeat in range(repeats):
        for case in cases:
            runs[case].append(measure_case(case))
            print(
                f"  run {repeat + 1}/{repeats} {CASES[case]}: {runs[case][-1]['seconds']:.2f} s",
                flush=True,
            )
    return {case: summarise(case_runs) for case, case_runs in runs.items()}


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The headline ratios: VirtualiZarr over virtualize, serial over processes."""
    ours, pool = results["virtualize-serial"], results["virtualize-processes"]
    out = {
        "virtualize_serial_over_processes_best": ours["best"] / pool["best"],
        "virtualize_serial_over_processes_median": ours["median"] / pool["median"],
    }
    if "virtualizarr-serial" in results:
        theirs = results["virtualizarr-serial"]
        out |= {
            "virtualizarr_serial_over_virtualize_serial_best": theirs["best"] / ours["best"],
            "virtualizarr_serial_over_virtualize_serial_median": theirs["median"] / ours["median"],
            "virtualizarr_serial_over_virtualize_serial_best_cpu": theirs["best_cpu"]
            / ours["best_cpu"],
        }
    return out


def table(results: dict[str, dict[str, Any]], repeats: int, folder_bytes: int) -> str:
    """The figures as a markdown table and the ratios below it."""
    first = next(iter(results.values()))
    lines = [
        f"open_virtual_mfdataset over {DAYS} daily netCDF4 files ({folder_bytes / 1e6:.0f} MB, "
        f"{first['nrefs']:,} chunk references); wall time best / median of {repeats} runs, "
        f"{os.cpu_count()} CPUs",
        "",
        "| case | version | best s | median s | best CPU s (own process) | peak RSS MB "
        "(own process) | peak RSS MB (workers, summed) |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for case, result in results.items():
        lines.append(
            f"| {CASES[case]} | {result['version']} | {result['best']:.2f} | "
            f"{result['median']:.2f} | {result['best_cpu']:.2f} | "
            f"{result['peak_rss_self'] / 1e6:.0f} | "
            f"{result['peak_rss_workers'] / 1e6:.0f} |"
        )
    found = ratios(results)
    lines += [
        "",
        "CPU s counts the case's own process only (not the pool's workers); the workers' peak",
        "is sampled from /proc (RUSAGE_CHILDREN misses forkserver workers) and includes the",
        "forkserver.",
        "",
    ]
    if "virtualizarr_serial_over_virtualize_serial_best" in found:
        lines.append(
            "VirtualiZarr serial / virtualize serial:   "
            f"{found['virtualizarr_serial_over_virtualize_serial_best']:.2f}x (best), "
            f"{found['virtualizarr_serial_over_virtualize_serial_median']:.2f}x (median), "
            f"{found['virtualizarr_serial_over_virtualize_serial_best_cpu']:.2f}x (best CPU)"
        )
    else:
        lines.append("VirtualiZarr is not installed here: its row is skipped")
    lines.append(
        "virtualize serial / virtualize processes:  "
        f"{found['virtualize_serial_over_processes_best']:.2f}x (best), "
        f"{found['virtualize_serial_over_processes_median']:.2f}x (median)"
    )
    return "\n".join(lines)


def git_revision() -> str:
    """The commit measured, marked ``-dirty`` when the working tree has changes."""
    proc = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=REPO
    )
    return proc.stdout.strip() or "unknown"


def machine(load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        # Other work on the machine skews wall times: keep the load next to them.
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
    }


def warm_page_cache(paths: list[Path]) -> None:
    """Read every file once so that no case pays for the first read from disk."""
    for path in paths:
        path.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=BENCHMARKS / "results" / "mfdataset.json")
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return

    load_at_start = os.getloadavg()
    paths = ensure_files()
    warm_page_cache(paths)
    cases = list(CASES)
    if importlib.util.find_spec("virtualizarr") is None:
        cases.remove("virtualizarr-serial")
    results = measure(cases, args.repeats)
    generated = json.loads(MARKER.read_text())
    print()
    print(table(results, args.repeats, generated["bytes"]))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(load_at_start),
        "virtualize_revision": git_revision(),
        "files": {"folder": str(FOLDER)} | generated,
        "combine_options": COMBINE,
        "repeats": args.repeats,
        "skipped": [CASES[case] for case in CASES if case not in cases],
        "results": results,
        "ratios": ratios(results),
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
