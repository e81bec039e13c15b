"""Opening a GRIB2 file of 300 messages virtually: virtualize against cfgrib and Kerchunk.

Writes ``.bench/grib-300/fields.grib2`` (once; a marker records the generator's spec, and a
folder whose marker does not match is rewritten) with ecCodes from its
``regular_ll_pl_grib2`` sample: 5 parameters (``t``, ``u``, ``v``, ``q``, ``gh``) x 10
isobaric levels x 6 forecast steps = 300 messages on a 1-degree global grid (181 x 360),
``grid_simple`` packing with 16 bits per value, smooth random fields. When the corpus is
there, two of its files are inputs too: ``grib/pygrib/gfs.grb`` (NCEP GFS, 308 messages in 38
datasets) and ``grib/xarray-data/era5-2mt-2019-03-uk.grib`` (ERA5 2 m temperature, GRIB 1,
744 hourly messages); skipped quietly otherwise. Then runs every case on every input in its own fresh process, ``--repeats``
times, interleaved:

virtualize
    ``virtualize.open_virtual_datatree(path, registry=registry)``: ``GRIBParser`` (scan the
    messages, group them with cfgrib's code, chunk manifests) and the virtual datasets.
virtualize (parser only)
    ``virtualize.parsers.GRIBParser()(url, registry)``, the ManifestStore alone: the share
    of the row above that is parsing.
virtualize, in process
    The first row with ``VIRTUALIZE_ISOLATION=off``: ecCodes' work in the calling process,
    not in the helper process that keeps a damaged file from crashing it
    (:mod:`virtualize.isolation`); the difference is what that protection costs per open.
cfgrib, fresh index
    ``cfgrib.open_datasets(path, backend_kwargs={"indexpath": ...})`` with a new index path
    per open, so that cfgrib builds its index every time (what virtualize does: a cold open).
cfgrib, pre-built index
    The same with an index built beforehand (by the parent process, outside the clock), so
    that cfgrib only reads it: cfgrib's best case, for honesty.
Kerchunk
    ``kerchunk.grib2.scan_grib(path)``: one reference set per message.

In each process everything the case uses (ecCodes, cfgrib, xarray, dask, which xarray
imports when it makes its first variable, and the tool itself) is imported before the clock
starts, and so is virtualize's helper process started (with the same imports; the time it
takes is printed apart); the first open is timed (what a fresh worker pays per
file), then ``--warm`` more opens of the same file in the same process (their median). Each
case checks what it made: virtualize and cfgrib the number of data variables and of fields
behind them (5 and 300 for the generated file; the two must agree on the corpus files),
Kerchunk one reference set per message. Prints, per input, a markdown table of the first
open (best and median over the processes) and the warm median, then the ratios of the others'
times over virtualize's; writes ``benchmarks/results/grib_open.json``.

Usage
-----
``python benchmarks/grib_open.py [--repeats R] [--warm W] [--output PATH]``

Run it with the interpreter that has all the tools (``.venv-bench/bin/python``); a tool that
is not installed has its rows skipped. Needs ``eccodes`` to write the file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
FOLDER = REPO / ".bench" / "grib-300"
PATH = FOLDER / "fields.grib2"
MARKER = FOLDER / "generator.json"  # written by ensure_generated
CORPUS = REPO.parent / "shared" / "corpus" / "grib"
#: corpus inputs, when the corpus is there: name -> (path, what it is)
CORPUS_INPUTS = {
    "gfs": (CORPUS / "pygrib" / "gfs.grb", "NCEP GFS"),
    "era5": (CORPUS / "xarray-data" / "era5-2mt-2019-03-uk.grib", "ECMWF ERA5, hourly"),
}
SAMPLE = "regular_ll_pl_grib2"
PACKING = "grid_simple"
BITS = 16
#: (Nj, Ni): a 1-degree global grid
SHAPE = (181, 360)
#: parameter -> (mean, amplitude) of its smooth random fields
PARAMETERS = {
    "t": (250.0, 20.0),
    "u": (5.0, 15.0),
    "v": (0.0, 10.0),
    "q": (0.004, 0.003),
    "gh": (0.0, 60.0),  # plus the height of the level, see write_file
}
LEVELS = (1000, 925, 850, 700, 500, 400, 300, 250, 200, 100)
STEPS = (0, 6, 12, 18, 24, 30)
MESSAGES = len(PARAMETERS) * len(LEVELS) * len(STEPS)
CASES = {
    "virtualize": "virtualize",
    "virtualize-parser": "virtualize (parser only)",
    "virtualize-in-process": "virtualize, in process (VIRTUALIZE_ISOLATION=off)",
    "cfgrib-cold": "cfgrib, fresh index",
    "cfgrib-warm": "cfgrib, pre-built index",
    "kerchunk": "Kerchunk",
}
#: the case's distribution, for its version and for skipping it when it is missing
PACKAGES = {
    "virtualize": "virtualize",
    "virtualize-parser": "virtualize",
    "virtualize-in-process": "virtualize",
    "cfgrib-cold": "cfgrib",
    "cfgrib-warm": "cfgrib",
    "kerchunk": "kerchunk",
}
#: dimensions of the grid; every other dimension of a variable counts fields
GRID_DIMENSIONS = frozenset({"latitude", "longitude", "values", "x", "y"})
Open = Callable[[], Any]


sys.path.insert(0, str(Path(__file__).resolve().parent))
from fresh_process import ensure_generated, run_in_fresh_process, summarise  # noqa: E402
from mfdataset import git_revision, machine  # noqa: E402


def spec() -> dict[str, Any]:
    """The parameters that identify the generated file; changing them regenerates."""
    return {
        # Bump whenever the writer changes in a way these fields do not show.
        "generator_version": 1,
        "messages": MESSAGES,
        "sample": SAMPLE,
        "shape": list(SHAPE),
        "packing": PACKING,
        "bits_per_value": BITS,
        "parameters": list(PARAMETERS),
        "levels": list(LEVELS),
        "steps": list(STEPS),
        "writer": "eccodes",
    }


def eccodes() -> Any:
    """ecCodes, imported as virtualize does (after pyproj, see ``virtualize/_eccodes.py``)."""
    from virtualize._eccodes import eccodes as load

    return load()


def smooth_random(rng: np.random.Generator, mean: float, amplitude: float) -> np.ndarray:
    """A field of ``SHAPE``: a few random low waves in latitude and longitude."""
    latitude = np.radians(np.linspace(90.0, -90.0, SHAPE[0]))[:, None]
    longitude = np.radians(np.arange(SHAPE[1], dtype=float))[None, :]
    field = np.zeros(SHAPE)
    waves = 6
    for _ in range(waves):
        m, n = rng.integers(1, 6, 2)
        phase_m, phase_n = rng.uniform(0.0, 2 * np.pi, 2)
        field += rng.normal() * np.cos(m * longitude + phase_m) * np.cos(n * latitude + phase_n)
    return mean + amplitude * field / math.sqrt(waves)


def write_file(path: Path) -> None:
    codes = eccodes()
    rng = np.random.default_rng(0)
    nj, ni = SHAPE
    template = codes.codes_grib_new_from_samples(SAMPLE)
    try:
        for key, value in {
            "Ni": ni,
            "Nj": nj,
            "latitudeOfFirstGridPointInDegrees": 90.0,
            "longitudeOfFirstGridPointInDegrees": 0.0,
            "latitudeOfLastGridPointInDegrees": -90.0,
            "longitudeOfLastGridPointInDegrees": float(ni - 1),
            "iDirectionIncrementInDegrees": 1.0,
            "jDirectionIncrementInDegrees": 1.0,
            "typeOfLevel": "isobaricInhPa",
            "dataDate": 20240101,
            "dataTime": 0,
            "stepUnits": 1,
            "bitsPerValue": BITS,
        }.items():
            codes.codes_set(template, key, value)
        with path.open("wb") as file:
            for step in STEPS:
                for name, (mean, amplitude) in PARAMETERS.items():
                    for level in LEVELS:
                        if name == "gh":  # the height of the level in a standard atmosphere
                            mean = 44331.0 * (1 - (level / 1013.25) ** 0.1903)
                        handle = codes.codes_clone(template)
                        try:
                            codes.codes_set(handle, "shortName", name)
                            codes.codes_set(handle, "level", level)
                            codes.codes_set(handle, "step", step)
                            values = smooth_random(rng, mean, amplitude)
                            codes.codes_set_values(handle, values.reshape(-1))
                            if codes.codes_get(handle, "packingType") != PACKING:
                                raise SystemExit(f"ecCodes did not pack with {PACKING}")
                            codes.codes_write(handle, file)
                        finally:
                            codes.codes_release(handle)
    finally:
        codes.codes_release(template)


def ensure_file() -> Path:
    """The file, written first if missing or its marker is stale."""
    return ensure_generated(PATH, spec(), write_file, "eccodes")


def inputs() -> dict[str, Path]:
    """The generated file, and the corpus's files when they are there."""
    found = {"generated": ensure_file()}
    for name, (path, _) in CORPUS_INPUTS.items():
        if path.is_file():
            found[name] = path
    return found


def count_messages(path: Path) -> dict[str, Any]:
    """The number of messages, and the edition, grid and packing of the first."""
    codes = eccodes()
    with path.open("rb") as file:
        found: dict[str, Any] = {"messages": int(codes.codes_count_in_file(file))}
        file.seek(0)
        handle = codes.codes_grib_new_from_file(file)
        try:
            for key in ("edition", "Nj", "Ni", "packingType", "bitsPerValue"):
                found[key] = codes.codes_get(handle, key)
        finally:
            codes.codes_release(handle)
    return found


def count_fields(datasets: list[Any]) -> dict[str, int]:
    """Data variables, and the fields behind them (their positions off the grid)."""
    variables = [variable for ds in datasets for variable in ds.data_vars.values()]
    fields = sum(
        math.prod(size for dim, size in variable.sizes.items() if dim not in GRID_DIMENSIONS)
        for variable in variables
    )
    return {"variables": len(variables), "fields": fields}


def registry_for(path: Path) -> Any:
    from obstore.store import LocalStore

    import virtualize as vz

    return vz.ObjectStoreRegistry({path.parent.as_uri() + "/": LocalStore(path.parent)})


def virtualize_open(path: Path) -> tuple[Open, Callable[[Any], dict[str, int]]]:
    eccodes()
    # virtualize imports these on first use: before the clock, as for cfgrib's own rows
    import cfgrib.dataset
    import cfgrib.xarray_store  # noqa: F401

    import virtualize as vz
    import virtualize.parsers.grib

    registry = registry_for(path)

    def found(tree: Any) -> dict[str, int]:
        return count_fields([node.ds for node in tree.subtree])

    return (lambda: vz.open_virtual_datatree(path, registry=registry)), found


def virtualize_parse(path: Path) -> tuple[Open, Callable[[Any], dict[str, int]]]:
    eccodes()
    # virtualize imports these on first use: before the clock, as for cfgrib's own rows
    import cfgrib.dataset
    import cfgrib.xarray_store  # noqa: F401

    from virtualize.parsers import GRIBParser

    registry = registry_for(path)
    url = path.as_uri()

    def found(store: Any) -> dict[str, int]:
        arrays = [
            node
            for _, node in store.group.walk()
            if not hasattr(node, "arrays") and "GRIB_paramId" in node.metadata.attributes
        ]
        fields = sum(math.prod(array.shape[:-2]) for array in arrays)
        return {"variables": len(arrays), "fields": fields}

    return (lambda: GRIBParser()(url, registry)), found


def cfgrib_open(path: Path, index: Path | None) -> tuple[Open, Callable[[Any], dict[str, int]]]:
    """cfgrib, with a fresh index path per open (``index`` None) or with ``index``."""
    eccodes()
    import cfgrib
    import cfgrib.xarray_plugin
    import xarray  # noqa: F401

    # removed when the process ends (the closure keeps it alive until then)
    folder = tempfile.TemporaryDirectory(prefix="grib-open-")
    opened = 0

    def open_datasets() -> list[Any]:
        nonlocal opened
        opened += 1
        indexpath = index if index is not None else Path(folder.name) / f"open-{opened}.idx"
        return list(cfgrib.open_datasets(str(path), backend_kwargs={"indexpath": str(indexpath)}))

    return open_datasets, count_fields


def kerchunk_scan(path: Path) -> tuple[Open, Callable[[Any], dict[str, int]]]:
    eccodes()
    import kerchunk.grib2

    def found(refs: list[dict[str, Any]]) -> dict[str, int]:
        return {"messages": sum(1 for ref in refs if ref.get("refs"))}

    return (lambda: kerchunk.grib2.scan_grib(str(path))), found


def build_index(path: Path, folder: Path) -> Path:
    """A cfgrib index of ``path`` in ``folder``, for the pre-built-index case."""
    eccodes()
    import cfgrib

    index = folder / f"{path.name}.idx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfgrib.open_datasets(str(path), backend_kwargs={"indexpath": str(index)})
    if not index.exists():
        raise SystemExit(f"cfgrib wrote no index at {index}")
    return index


def run_case(case: str, path: Path, index: Path | None, warm: int) -> dict[str, Any]:
    """Child process: time the first open and ``warm`` more, and check what they made."""
    warnings.simplefilter("ignore")
    if importlib.util.find_spec("dask") is not None:
        # xarray imports dask with the first variable it makes, in cfgrib's opens as in
        # virtualize's (about 0.4 s): an import, so before the clock as the others
        import dask.array  # noqa: F401
    helper_seconds = None
    if case == "virtualize-in-process":
        os.environ["VIRTUALIZE_ISOLATION"] = "off"
    elif case in ("virtualize", "virtualize-parser"):
        helper_seconds = start_helper()
    if case in ("virtualize", "virtualize-in-process"):
        open_, check = virtualize_open(path)
    elif case == "virtualize-parser":
        open_, check = virtualize_parse(path)
    elif case == "kerchunk":
        open_, check = kerchunk_scan(path)
    else:
        open_, check = cfgrib_open(path, index if case == "cfgrib-warm" else None)
    cpu_start, start = time.process_time(), time.perf_counter()
    result = open_()
    first, first_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    found = check(result)
    if path == PATH:
        expected = (
            {"messages": MESSAGES}
            if case == "kerchunk"
            else {"variables": len(PARAMETERS), "fields": MESSAGES}
        )
        if found != expected:
            raise SystemExit(f"{case} made {found}, not {expected}")
    del result
    warm_seconds = []
    for _ in range(warm):
        start = time.perf_counter()
        open_()
        warm_seconds.append(time.perf_counter() - start)
    return {
        "case": case,
        "version": version(PACKAGES[case]),
        "first_seconds": first,
        "first_cpu_seconds": first_cpu,
        "warm_seconds": warm_seconds,
        "found": found,
        "helper_start_seconds": helper_seconds,
    }


def start_helper() -> float:
    """Start the process virtualize parses GRIB in (virtualize.isolation) and import there
    what a parse imports: process set-up, before the clock like the imports of every case.
    Returns the seconds it took."""
    from virtualize.isolation import isolated

    start = time.perf_counter()
    for module in ("eccodes", "cfgrib.dataset", "cfgrib.xarray_store", "dask.array"):
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            isolated(exec, f"import {module}", url="-", library="-")
    isolated(exec, "import virtualize.parsers.grib", url="-", library="-")
    return time.perf_counter() - start


def measure_case(case: str, path: Path, index: Path, warm: int) -> dict[str, Any]:
    """Run one case in a fresh interpreter and return the JSON line it prints."""
    arguments = ["--case", case, "--input", str(path), "--index", str(index), "--warm", str(warm)]
    return run_in_fresh_process(__file__, arguments, f"case {case} on {path}")


def check_agreement(results: dict[str, dict[str, Any]], messages: int, name: str) -> None:
    """The tools found the same variables and fields, and Kerchunk every message."""
    counts = {case: result["found"] for case, result in results.items() if case != "kerchunk"}
    if len({json.dumps(found, sort_keys=True) for found in counts.values()}) > 1:
        raise SystemExit(f"the tools disagree on {name}: {counts}")
    if "kerchunk" in results and results["kerchunk"]["found"] != {"messages": messages}:
        raise SystemExit(f"Kerchunk made {results['kerchunk']['found']} of {messages} messages")


def cases_for(cases: list[str], file: dict[str, Any]) -> list[str]:
    """The cases that read a file: Kerchunk's ``scan_grib`` reads GRIB 2 only (it takes
    every message's length from GRIB 2's indicator section)."""
    return [case for case in cases if case != "kerchunk" or file["edition"] == 2]


def measure(
    files: dict[str, Path],
    indexes: dict[str, Path],
    cases: dict[str, list[str]],
    repeats: int,
    warm: int,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every case on every input, ``repeats`` times; interleaved so that drift hits all
    alike."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {case: [] for case in cases[name]} for name in files
    }
    for repeat in range(repeats):
        for name, path in files.items():
            for case in cases[name]:
                runs[name][case].append(measure_case(case, path, indexes[name], warm))
                print(
                    f"  run {repeat + 1}/{repeats} {name} {CASES[case]}: "
                    f"{runs[name][case][-1]['first_seconds'] * 1000:.0f} ms",
                    flush=True,
                )
    return {
        name: {
            case: summarise(case_runs)
            | {
                "helper_start_seconds": [
                    run["helper_start_seconds"]
                    for run in case_runs
                    if run.get("helper_start_seconds") is not None
                ]
            }
            for case, case_runs in by_case.items()
        }
        for name, by_case in runs.items()
    }


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Each other tool's time over virtualize's (above 1: virtualize is faster)."""
    ours = results["virtualize"]
    found = {}
    for case in ("cfgrib-cold", "cfgrib-warm", "kerchunk"):
        if case not in results:
            continue
        theirs = results[case]
        key = case.replace("-", "_")
        found[f"{key}_over_virtualize_first_best"] = theirs["best"] / ours["best"]
        found[f"{key}_over_virtualize_first_median"] = theirs["median"] / ours["median"]
        if ours["warm_seconds"] and theirs["warm_seconds"]:
            warm = theirs["warm_median"] / ours["warm_median"]
            found[f"{key}_over_virtualize_warm_median"] = warm
    return found


def faster(ratio: float) -> str:
    """``2.30x faster``, ``1.70x slower`` or ``the same``: virtualize against the other tool."""
    if f"{ratio:.2f}" == f"{1 / ratio:.2f}" == "1.00":
        return "the same"
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def describe(name: str, path: Path, file: dict[str, Any]) -> str:
    """The input, in words."""
    what = (
        f"a generated GRIB{file['edition']} file of {file['messages']} messages "
        f"({len(PARAMETERS)} parameters x {len(LEVELS)} isobaric levels x {len(STEPS)} steps"
        if name == "generated"
        else f"`{path.name}` from the corpus ({CORPUS_INPUTS[name][1]}, "
        f"GRIB{file['edition']}, {file['messages']} messages"
    )
    return (
        f"{what}, {file['Nj']} x {file['Ni']} grid, {file['packingType']} "
        f"{file['bitsPerValue']} bits, {path.stat().st_size / 1e6:.1f} MB)"
    )


def table(results: dict[str, dict[str, Any]], description: str, repeats: int, warm: int) -> str:
    """The figures of one input as a markdown table and the ratios below it."""
    found = results["virtualize"]["found"]
    lines = [
        f"Opening {description}: {found['variables']} data variables; first open in a fresh "
        f"process, best / median of {repeats} processes; warm: median of {warm} more opens per "
        "process",
        "",
        "| tool | version | first open best ms | first open median ms | first open CPU ms "
        "(best) | warm open median ms |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for case, result in results.items():
        warm_cell = f"{result['warm_median'] * 1000:.0f}" if result["warm_seconds"] else "-"
        lines.append(
            f"| {CASES[case]} | {result['version']} | {result['best'] * 1000:.0f} | "
            f"{result['median'] * 1000:.0f} | {result['best_cpu'] * 1000:.0f} | {warm_cell} |"
        )
    lines.append("")
    starts = [
        seconds
        for case in ("virtualize", "virtualize-parser")
        for seconds in results.get(case, {}).get("helper_start_seconds", [])
    ]
    if starts:
        lines.append(
            "Once per process, before the first open (not in the times above, like the imports): "
            f"starting the helper process that parses GRIB, median {statistics.median(starts) * 1000:.0f} ms."
        )
        lines.append("")
    found_ratios = ratios(results)
    for case in ("cfgrib-cold", "cfgrib-warm", "kerchunk"):
        key = case.replace("-", "_")
        if f"{key}_over_virtualize_first_best" not in found_ratios:
            lines.append(
                f"- {CASES[case]}: not run (not installed here, or it does not read the file: "
                "Kerchunk's scan_grib reads GRIB 2 only)"
            )
            continue
        line = (
            f"- virtualize against {CASES[case]}: "
            f"{faster(found_ratios[f'{key}_over_virtualize_first_best'])} (first open, best), "
            f"{faster(found_ratios[f'{key}_over_virtualize_first_median'])} (first open, median)"
        )
        if f"{key}_over_virtualize_warm_median" in found_ratios:
            line += f", {faster(found_ratios[f'{key}_over_virtualize_warm_median'])} (warm)"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warm", type=int, default=2)
    parser.add_argument("--output", type=Path, default=BENCHMARKS / "results" / "grib_open.json")
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.input.resolve(), args.index, args.warm)))
        return

    load_at_start = os.getloadavg()
    files = inputs()
    for path in files.values():
        path.read_bytes()  # warm the page cache so that no case pays for the first read
    about = {name: count_messages(path) for name, path in files.items()}
    cases = [case for case in CASES if importlib.util.find_spec(PACKAGES[case]) is not None]
    with tempfile.TemporaryDirectory(prefix="grib-open-index-") as folder:
        indexes = {name: build_index(path, Path(folder)) for name, path in files.items()}
        per_file = {name: cases_for(cases, about[name]) for name in files}
        results = measure(files, indexes, per_file, args.repeats, args.warm)
    for name, by_case in results.items():
        check_agreement(by_case, about[name]["messages"], name)
    descriptions = {name: describe(name, path, about[name]) for name, path in files.items()}
    for name, by_case in results.items():
        print()
        print(table(by_case, descriptions[name], args.repeats, args.warm))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    generated = json.loads(MARKER.read_text())
    document = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(load_at_start),
        "virtualize_revision": git_revision(),
        "eccodes": version("eccodes"),
        "files": {
            name: {"path": str(path), "bytes": path.stat().st_size}
            | about[name]
            | ({"generator": generated} if name == "generated" else {})
            for name, path in files.items()
        },
        "repeats": args.repeats,
        "warm": args.warm,
        "skipped": [CASES[case] for case in CASES if case not in cases],
        "results": results,
        "ratios": {name: ratios(by_case) for name, by_case in results.items()},
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
