"""How combining virtual datasets scales with the number of files: time and memory per 1,000.

Writes 10,000 tiny netCDF4 files into ``.bench/tiny-10000/`` (once; a marker records the
generator's spec, and a folder whose marker does not match is rewritten): each holds one time
step of a zlib-compressed (4, 4) float32 variable and its ``time`` coordinate. For each N of
``--sizes`` (the first N files in time order) it runs, each in its own fresh process:

combine
    Opens every file with ``vz.open_virtual_dataset(path, parser=HDFParser())`` (not timed),
    then times ``xr.combine_by_coords`` alone, with the options ``open_virtual_mfdataset``
    passes, and the growth of resident memory during it (its peak over the resident memory
    before).
combine-memory
    The same, with :mod:`tracemalloc` started right before the combine (it slows the combine,
    hence a separate case): the peak of the bytes allocated during the combine.
total
    ``vz.open_virtual_mfdataset`` over the list of the first N paths with
    ``executor="processes"``, pool start-up included.

The timed cases run ``--repeats`` times, interleaved, and report the best; the memory case runs
once. Prints a markdown table with the figures per 1,000 files and, as the test of linear
growth, the ratio of the largest N's per-1,000 figure to the smallest N's; writes
``benchmarks/results/combine_scaling.json``.

Usage
-----
``python benchmarks/combine_scaling.py [--sizes 1000,5000,10000] [--repeats R] [--output PATH]``

Needs ``netCDF4`` to write the files.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
import tracemalloc
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
FOLDER = REPO / ".bench" / "tiny-10000"
MARKER = FOLDER / "generator.json"
FILES = 10_000
CASES = ("combine", "combine-memory", "total")

sys.path.insert(0, str(BENCHMARKS))
from mfdataset import (  # noqa: E402
    COMBINE,
    DescendantPeaks,
    git_revision,
    machine,
    rss_bytes,
    warm_page_cache,
)


def spec() -> dict[str, Any]:
    """The parameters that identify the generated files; changing them regenerates."""
    return {
        # Bump whenever the writer changes in a way these fields do not show.
        "generator_version": 1,
        "files": FILES,
        "variable": "data",
        "shape": [1, 4, 4],
        "chunks": [1, 4, 4],
        "dtype": "float32",
        "filters": ["shuffle", "zlib(4)"],
        "time_units": "days since 2000-01-01",
        "writer": "netCDF4",
    }


def file_path(folder: Path, index: int) -> Path:
    """The file of time step ``index``; names sort in time order."""
    return folder / f"tiny_{index:05d}.nc"


def write_files(folder: Path, indexes: range) -> None:
    """Write the files of ``indexes`` (one task of the pool that generates them)."""
    import netCDF4
    import numpy as np

    for index in indexes:
        with netCDF4.Dataset(file_path(folder, index), "w", format="NETCDF4") as nc:
            nc.createDimension("time", None)
            nc.createDimension("y", 4)
            nc.createDimension("x", 4)
            times = nc.createVariable("time", "f8", ("time",))
            times.units = "days since 2000-01-01"
            times.calendar = "standard"
            times[:] = [float(index)]
            data = nc.createVariable(
                "data",
                "f4",
                ("time", "y", "x"),
                zlib=True,
                complevel=4,
                shuffle=True,
                chunksizes=(1, 4, 4),
            )
            data.units = "1"
            data[0, :, :] = np.arange(16, dtype="f4").reshape(4, 4) + index


def ensure_files() -> list[Path]:
    """The tiny files, written first (in parallel, through a temporary folder so that an
    interrupted run leaves no stale files) if they are missing or their marker is stale."""
    paths = [file_path(FOLDER, index) for index in range(FILES)]
    if (
        MARKER.exists()
        and json.loads(MARKER.read_text()).get("spec") == spec()
        and all(path.exists() for path in paths)
    ):
        return paths
    print(f"writing {FILES:,} tiny files into {FOLDER} ...", flush=True)
    partial = FOLDER.with_name(FOLDER.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    started = time.perf_counter()
    batches = [range(start, min(start + 250, FILES)) for start in range(0, FILES, 250)]
    with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
        pool.starmap(write_files, [(partial, batch) for batch in batches])
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


def reset_peak_rss() -> bool:
    """Reset the process's resident-memory high-water mark (Linux >= 4.0); False if not."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """The process's resident-memory high-water mark (``VmHWM``), or 0 where unreadable."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def registry() -> Any:
    """A registry for the folder of tiny files."""
    from obstore.store import LocalStore

    import virtualize as vz

    return vz.ObjectStoreRegistry({FOLDER.as_uri() + "/": LocalStore(FOLDER)})


def run_combine(size: int, traced: bool) -> dict[str, Any]:
    """Open the first ``size`` files one by one, then measure ``combine_by_coords`` alone."""
    import xarray as xr

    import virtualize as vz
    from virtualize.parsers import HDFParser

    files = registry()
    # An explicit parser skips format detection, which here costs as much as the parse and
    # is not what is measured; the datasets are the same.
    parser = HDFParser()
    datasets = [
        vz.open_virtual_dataset(file_path(FOLDER, index), parser=parser, registry=files)
        for index in range(size)
    ]
    options = {key: value for key, value in COMBINE.items() if key != "combine"}
    gc.collect()
    rss_before = rss_bytes()
    peak_reset = reset_peak_rss()
    if traced:
        tracemalloc.start()
    start = time.perf_counter()
    combined = xr.combine_by_coords(datasets, **options)
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"seconds": seconds}
    if traced:
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result |= {"traced_peak": peak, "traced_retained": current}
    else:
        result |= {
            "rss_before": rss_before,
            "rss_growth": rss_bytes() - rss_before,
            # Without the reset the high-water mark may be the opening's, not the combine's.
            "peak_rss_growth": peak_rss_bytes() - rss_before if peak_reset else None,
        }
    if combined.sizes["time"] != size:
        raise SystemExit(f"combining {size} files gave {dict(combined.sizes)}")
    return result


def run_total(size: int) -> dict[str, Any]:
    """``open_virtual_mfdataset`` over the list of the first ``size`` paths, in a pool."""
    import virtualize as vz

    files = registry()
    paths = [str(file_path(FOLDER, index)) for index in range(size)]
    with DescendantPeaks() as descendants:
        start = time.perf_counter()
        combined = vz.open_virtual_mfdataset(
            paths, registry=files, executor="processes", progress=False, **COMBINE
        )
        seconds = time.perf_counter() - start
    if combined.sizes["time"] != size:
        raise SystemExit(f"open_virtual_mfdataset of {size} files gave {dict(combined.sizes)}")
    return {
        "seconds": seconds,
        "peak_rss_self": peak_rss_bytes(),
        "peak_rss_workers": descendants.total,
    }


def run_case(case: str, size: int) -> dict[str, Any]:
    """Child process: one case on the first ``size`` files."""
    warnings.simplefilter("ignore")
    result = run_total(size) if case == "total" else run_combine(size, case == "combine-memory")
    return {"case": case, "size": size, "version": version("virtualize")} | result


def measure_case(case: str, size: int) -> dict[str, Any]:
    """Run one case in a fresh interpreter and return the JSON line it prints."""
    command = [sys.executable, __file__, "--case", case, "--sizes", str(size)]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"case {case} on {size} files failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def measure(sizes: list[int], repeats: int) -> dict[int, dict[str, Any]]:
    """Every case at every size; the timed ones ``repeats`` times, interleaved so that drift
    hits all alike, the memory one once."""
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {
        size: {case: [] for case in CASES} for size in sizes
    }
    for repeat in range(repeats):
        for size in sizes:
            for case in CASES:
                if case == "combine-memory" and repeat:
                    continue
                runs[size][case].append(measure_case(case, size))
                print(
                    f"  run {repeat + 1}/{repeats} {case} N={size:,}: "
                    f"{runs[size][case][-1]['seconds']:.2f} s",
                    flush=True,
                )
    results: dict[int, dict[str, Any]] = {}
    for size, by_case in runs.items():
        combine = [run["seconds"] for run in by_case["combine"]]
        total = [run["seconds"] for run in by_case["total"]]
        memory = by_case["combine-memory"][0]
        growth = [run["peak_rss_growth"] for run in by_case["combine"]]
        results[size] = {
            "combine_seconds": combine,
            "combine_best": min(combine),
            "combine_median": statistics.median(combine),
            "combine_traced_peak": memory["traced_peak"],
            "combine_traced_retained": memory["traced_retained"],
            "combine_peak_rss_growth": None if None in growth else max(growth),
            "combine_rss_growth": max(run["rss_growth"] for run in by_case["combine"]),
            "total_seconds": total,
            "total_best": min(total),
            "total_median": statistics.median(total),
            "total_peak_rss_self": max(run["peak_rss_self"] for run in by_case["total"]),
            "total_peak_rss_workers": max(run["peak_rss_workers"] for run in by_case["total"]),
            "runs": by_case,
        }
    return results


def linearity(results: dict[int, dict[str, Any]]) -> dict[str, float]:
    """The largest N's per-1,000-files figures over the smallest N's: 1 for linear growth."""
    small, large = min(results), max(results)

    def ratio(key: str) -> float:
        return float((results[large][key] / large) / (results[small][key] / small))

    return {
        "combine_seconds": ratio("combine_best"),
        "combine_traced_peak": ratio("combine_traced_peak"),
        "total_seconds": ratio("total_best"),
    }


def megabytes(nbytes: int | None) -> str:
    """``nbytes`` in MB for the table, or a dash when it was not measured."""
    return "-" if nbytes is None else f"{nbytes / 1e6:.1f}"


def table(results: dict[int, dict[str, Any]], repeats: int) -> str:
    """The figures as a markdown table and the linearity ratios below it."""
    lines = [
        f"xr.combine_by_coords over N virtual datasets of tiny netCDF4 files (one time step "
        f"each); times are the best of {repeats} runs, {os.cpu_count()} CPUs",
        "",
        "| N | combine s | combine s per 1k files | combine peak MB | peak MB per 1k files "
        "| combine RSS growth MB | total open_virtual_mfdataset s (processes) |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for size, result in results.items():
        thousands = size / 1000
        lines.append(
            f"| {size:,} | {result['combine_best']:.3f} | "
            f"{result['combine_best'] / thousands:.3f} | "
            f"{megabytes(result['combine_traced_peak'])} | "
            f"{result['combine_traced_peak'] / 1e6 / thousands:.2f} | "
            f"{megabytes(result['combine_peak_rss_growth'])} | "
            f"{result['total_best']:.2f} |"
        )
    lines += [
        "",
        "combine peak: tracemalloc's peak over the combine (traced from its start, in a run",
        "of its own); RSS growth: the process's peak resident memory during the combine over",
        "its resident memory before (high-water mark reset before the combine)",
        "",
    ]
    if len(results) > 1:
        small, large = min(results), max(results)
        found = linearity(results)
        lines += [
            f"per-1k figure at N={large:,} / per-1k figure at N={small:,} (1.00 = linear):",
            f"  combine time {found['combine_seconds']:.2f}x, "
            f"combine peak memory {found['combine_traced_peak']:.2f}x, "
            f"total time {found['total_seconds']:.2f}x",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,10000", help="comma-separated N")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--output", type=Path, default=BENCHMARKS / "results" / "combine_scaling.json"
    )
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if any(not 1 <= size <= FILES for size in sizes):
        raise SystemExit(f"--sizes must lie between 1 and {FILES:,}")
    if args.case:
        print(json.dumps(run_case(args.case, sizes[0])))
        return

    load_at_start = os.getloadavg()
    paths = ensure_files()
    warm_page_cache(paths[: max(sizes)])
    results = measure(sizes, args.repeats)
    print()
    print(table(results, args.repeats))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(load_at_start),
        "virtualize_revision": git_revision(),
        "files": {"folder": str(FOLDER)} | json.loads(MARKER.read_text()),
        "combine_options": COMBINE,
        "sizes": sizes,
        "repeats": args.repeats,
        "results": results,
        "linearity": linearity(results) if len(results) > 1 else None,
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
