"""Parsing a netCDF-3 file of 10,000 records: virtualize against VirtualiZarr.

Writes ``.bench/netcdf3-10000/records.nc`` (once; a marker records the generator's spec, and a
folder whose marker does not match is rewritten) with netCDF4-python in the CDF-2 (64-bit
offset) format: three record variables, ``time`` (float64), ``temperature`` (float32, 10
stations) and ``flag`` (int16, 5 stations, so records need padding), over 10,000 records,
plus fixed ``station`` coordinates. Then runs every case in its own fresh process,
``--repeats`` times, interleaved:

virtualize
    ``virtualize.parsers.netcdf3.NetCDF3Parser()(url, registry)``, a ManifestStore.
VirtualiZarr
    VirtualiZarr 2.x's ``virtualizarr.parsers.NetCDF3Parser()(url, registry)``, its
    ManifestStore.

In each process the tool is imported before the clock starts; the first parse is timed
(what a fresh worker pays per file), then ``--warm`` more parses of the same file in the same
process (their median: the steady state of a worker that parses many files). Each case checks
that every record variable has 10,000 records. Prints a markdown table of the first parse
(best and median over the processes) and the warm median, then the ratios; writes
``benchmarks/results/netcdf3_parse.json``.

Usage
-----
``python benchmarks/netcdf3_parse.py [--repeats R] [--warm W] [--output PATH]``

Run it with the interpreter that has both tools (``.venv-bench/bin/python``); VirtualiZarr's
row is skipped where it is not installed. Needs ``netCDF4`` to write the file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
FOLDER = REPO / ".bench" / "netcdf3-10000"
PATH = FOLDER / "records.nc"
MARKER = FOLDER / "generator.json"  # written by ensure_generated
RECORDS = 10_000
STATIONS = 10
#: record variables: name -> (dtype, number of stations per record)
VARIABLES = {"time": ("f8", 0), "temperature": ("f4", STATIONS), "flag": ("i2", 5)}
CASES = {"virtualize": "virtualize", "virtualizarr": "VirtualiZarr"}
Parse = Callable[[], Any]


sys.path.insert(0, str(Path(__file__).resolve().parent))
from fresh_process import ensure_generated, run_in_fresh_process, summarise  # noqa: E402
from mfdataset import git_revision, machine  # noqa: E402


def spec() -> dict[str, Any]:
    """The parameters that identify the generated file; changing them regenerates."""
    return {
        # Bump whenever the writer changes in a way these fields do not show.
        "generator_version": 1,
        "records": RECORDS,
        "variables": {name: list(value) for name, value in VARIABLES.items()},
        "format": "NETCDF3_64BIT_OFFSET",
        "writer": "netCDF4",
    }


def write_file(path: Path) -> None:
    import netCDF4
    import numpy as np

    rng = np.random.default_rng(0)
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as nc:
        nc.createDimension("time", None)
        nc.createDimension("station", STATIONS)
        nc.createDimension("sensor", 5)
        nc.title = "synthetic station records for benchmarks/netcdf3_parse.py"
        station = nc.createVariable("station", "i4", ("station",))
        station[:] = np.arange(STATIONS)
        time = nc.createVariable("time", "f8", ("time",))
        time.units = "hours since 2000-01-01"
        time[:] = np.arange(RECORDS, dtype="f8")
        temperature = nc.createVariable("temperature", "f4", ("time", "station"))
        temperature.units = "K"
        temperature[:] = 280 + rng.normal(0, 5, (RECORDS, STATIONS)).astype("f4")
        flag = nc.createVariable("flag", "i2", ("time", "sensor"))
        flag[:] = rng.integers(0, 4, (RECORDS, 5)).astype("i2")


def ensure_file() -> Path:
    """The file, written first if missing or its marker is stale."""
    return ensure_generated(PATH, spec(), write_file, "netCDF4")


def virtualize_parse() -> tuple[Parse, Callable[[Any], dict[str, int]]]:
    from obstore.store import LocalStore

    import virtualize as vz
    from virtualize.parsers.netcdf3 import NetCDF3Parser

    registry = vz.ObjectStoreRegistry({FOLDER.as_uri() + "/": LocalStore(FOLDER)})
    url = PATH.as_uri()

    def records(store: Any) -> dict[str, int]:
        return {name: store.group.arrays[name].shape[0] for name in VARIABLES}

    return (lambda: NetCDF3Parser()(url, registry)), records


def virtualizarr_parse() -> tuple[Parse, Callable[[Any], dict[str, int]]]:
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr.parsers import NetCDF3Parser

    registry = ObjectStoreRegistry({"file://": LocalStore()})
    url = PATH.as_uri()

    def records(store: Any) -> dict[str, int]:
        return {name: store._group.arrays[name].shape[0] for name in VARIABLES}

    return (lambda: NetCDF3Parser()(url, registry)), records


def run_case(case: str, warm: int) -> dict[str, Any]:
    """Child process: time the first parse and ``warm`` more, and check what they made."""
    warnings.simplefilter("ignore")
    parse, records = virtualize_parse() if case == "virtualize" else virtualizarr_parse()
    cpu_start, start = time.process_time(), time.perf_counter()
    store = parse()
    first, first_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    found = records(store)
    if found != dict.fromkeys(VARIABLES, RECORDS):
        raise SystemExit(f"{case} made {found}, not {RECORDS} records per variable")
    warm_seconds = []
    for _ in range(warm):
        start = time.perf_counter()
        parse()
        warm_seconds.append(time.perf_counter() - start)
    return {
        "case": case,
        "version": version(case),
        "first_seconds": first,
        "first_cpu_seconds": first_cpu,
        "warm_seconds": warm_seconds,
        "records": found,
    }


def measure_case(case: str, warm: int) -> dict[str, Any]:
    """Run one case in a fresh interpreter and return the JSON line it prints."""
    return run_in_fresh_process(__file__, ["--case", case, "--warm", str(warm)], f"case {case}")


def measure(cases: list[str], repeats: int, warm: int) -> dict[str, dict[str, Any]]:
    """Every case, ``repeats`` times; interleaved so that drift hits all alike."""
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    for repeat in range(repeats):
        for case in cases:
            runs[case].append(measure_case(case, warm))
            print(
                f"  run {repeat + 1}/{repeats} {CASES[case]}: "
                f"{runs[case][-1]['first_seconds'] * 1000:.1f} ms",
                flush=True,
            )
    return {case: summarise(case_runs) for case, case_runs in runs.items()}


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """VirtualiZarr's time over virtualize's."""
    if "virtualizarr" not in results:
        return {}
    ours, theirs = results["virtualize"], results["virtualizarr"]
    return {
        "virtualizarr_over_virtualize_first_best": theirs["best"] / ours["best"],
        "virtualizarr_over_virtualize_first_median": theirs["median"] / ours["median"],
        "virtualizarr_over_virtualize_warm_median": theirs["warm_median"] / ours["warm_median"],
    }


def table(results: dict[str, dict[str, Any]], repeats: int, warm: int, size: int) -> str:
    """The figures as a markdown table and the ratios below it."""
    lines = [
        f"Parsing one netCDF-3 (CDF-2) file of {RECORDS:,} records, 3 record variables "
        f"({size / 1e6:.1f} MB, {3 * RECORDS:,} record slabs); first parse in a fresh process, "
        f"best / median of {repeats} processes; warm: median of {warm} more parses per process",
        "",
        "| tool | version | first parse best ms | first parse median ms | first parse CPU ms "
        "(best) | warm parse median ms |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for case, result in results.items():
        lines.append(
            f"| {CASES[case]} | {result['version']} | {result['best'] * 1000:.1f} | "
            f"{result['median'] * 1000:.1f} | {result['best_cpu'] * 1000:.1f} | "
            f"{result['warm_median'] * 1000:.2f} |"
        )
    found = ratios(results)
    lines.append("")
    if found:
        lines.append(
            "VirtualiZarr / virtualize: "
            f"{found['virtualizarr_over_virtualize_first_best']:.1f}x (first parse, best), "
            f"{found['virtualizarr_over_virtualize_first_median']:.1f}x (first parse, median), "
            f"{found['virtualizarr_over_virtualize_warm_median']:.1f}x (warm)"
        )
    else:
        lines.append("VirtualiZarr is not installed here: its row is skipped")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warm", type=int, default=20)
    parser.add_argument(
        "--output", type=Path, default=BENCHMARKS / "results" / "netcdf3_parse.json"
    )
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.warm)))
        return

    load_at_start = os.getloadavg()
    path = ensure_file()
    path.read_bytes()  # warm the page cache so that no case pays for the first read
    cases = list(CASES)
    if importlib.util.find_spec("virtualizarr") is None:
        cases.remove("virtualizarr")
    results = measure(cases, args.repeats, args.warm)
    generated = json.loads(MARKER.read_text())
    print()
    print(table(results, args.repeats, args.warm, generated["bytes"]))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(load_at_start),
        "virtualize_revision": git_revision(),
        "file": {"path": str(PATH)} | generated,
        "repeats": args.repeats,
        "warm": args.warm,
        "skipped": [CASES[case] for case in CASES if case not in cases],
        "results": results,
        "ratios": ratios(results),
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
