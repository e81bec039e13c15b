"""Benchmark ``open_virtual_dataset`` on a netCDF4 file of 10^6 chunks against VirtualiZarr.

Generates the file into ``.bench/`` (once), then runs every case of
:mod:`benchmarks.cases` in its own fresh process: h5py's ``chunk_iter`` (the floor),
virtualize and VirtualiZarr (wall time, ``--repeats`` times, interleaved), and one
tracemalloc run of each tool for the bytes held per reference. Prints a table and writes
``benchmarks/results/latest.json``.

Usage
-----
``python benchmarks/run.py [--rows N] [--repeats R] [--output PATH]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
TOOLS = {"virtualize": "virtualize", "virtualizarr": "VirtualiZarr"}

sys.path.insert(0, str(BENCHMARKS))
import generate  # noqa: E402
from fresh_process import run_in_fresh_process  # noqa: E402


def interpreter_with_netcdf4() -> str:
    """This interpreter if it can import netCDF4, else the development venv's."""
    for candidate in (sys.executable, str(REPO / ".venv" / "bin" / "python")):
        if (
            os.path.exists(candidate)
            and not subprocess.run(
                [candidate, "-c", "import netCDF4"], capture_output=True
            ).returncode
        ):
            return candidate
    raise SystemExit(
        f"writing the benchmark file needs netCDF4: {sys.executable} -m pip install netCDF4"
    )


def ensure_file(rows: int) -> Path:
    """The benchmark file, written first if it is missing or stale."""
    path = REPO / ".bench" / f"chunks-{rows}.nc"
    if not generate.is_current(path, rows):
        print(f"writing {path} ({rows:,} chunks) ...", flush=True)
        command = [interpreter_with_netcdf4(), str(BENCHMARKS / "generate.py"), str(path)]
        subprocess.run([*command, "--rows", str(rows)], check=True)
    return path


def git_revision() -> str:
    """The commit measured, marked ``-dirty`` when the working tree has changes."""
    proc = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=REPO
    )
    return proc.stdout.strip() or "unknown"


def warm_page_cache(path: Path) -> None:
    """Read the file once so that no case pays for the first read from disk."""
    with path.open("rb") as file:
        while file.read(1 << 24):
            pass


def run_case(case: str, path: Path) -> dict[str, Any]:
    """Run one case in a fresh interpreter and return the JSON line it prints."""
    return run_in_fresh_process(str(BENCHMARKS / "cases.py"), [case, str(path)], f"case {case}")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best and median wall time over the runs of one case, plus the first run's details."""
    seconds = [run["seconds"] for run in runs]
    cpu_seconds = [run["cpu_seconds"] for run in runs]
    summary = runs[0] | {
        "seconds": seconds,
        "best": min(seconds),
        "median": statistics.median(seconds),
        "cpu_seconds": cpu_seconds,
        "best_cpu": min(cpu_seconds),
    }
    if "warm_seconds" in runs[0]:
        summary["warm_seconds"] = [run["warm_seconds"] for run in runs]
        summary["best_warm"] = min(summary["warm_seconds"])
        summary["peak_rss"] = max(run["peak_rss"] for run in runs)
    return summary


def measure(path: Path, tools: list[str], repeats: int) -> dict[str, dict[str, Any]]:
    """Every case on ``path``; timing runs are interleaved so that drift hits all alike."""
    cases = ["h5py", *tools]
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    for repeat in range(repeats):
        for case in cases:
            runs[case].append(run_case(case, path))
            print(
                f"  run {repeat + 1}/{repeats} {case}: {runs[case][-1]['seconds']:.3f} s",
                flush=True,
            )
    results = {case: summarise(case_runs) for case, case_runs in runs.items()}
    for tool in tools:
        results[tool]["memory"] = run_case(f"{tool}-memory", path)
    return results


def per_ref(nbytes: int, nrefs: int) -> float:
    """Bytes per reference."""
    return nbytes / nrefs if nrefs else float("nan")


def table(path: Path, results: dict[str, dict[str, Any]], repeats: int) -> str:
    """The figures as plain text."""
    size = path.stat().st_size / 1e6
    floor = results["h5py"]
    lines = [
        f"open_virtual_dataset(loadable_variables=[]) on {path.name}: "
        f"{floor['nrefs']:,} chunks, {size:.1f} MB; wall time best / median of {repeats} runs",
        "",
        f"{'case':<26}{'best s':>9}{'median s':>10}{'best CPU s':>12}{'warm s':>8}{'refs':>11}"
        f"{'B/ref own':>11}{'B/ref held':>12}{'B/ref kept':>12}{'peak traced MB':>16}{'peak RSS MB':>13}",
        f"{'h5py chunk_iter (floor)':<26}{floor['best']:>9.3f}{floor['median']:>10.3f}"
        f"{floor['best_cpu']:>12.3f}{'':>8}{floor['nrefs']:>11,}",
    ]
    for tool in TOOLS:
        if tool not in results:
            continue
        result, memory = results[tool], results[tool]["memory"]
        nrefs = result["nrefs"]
        lines.append(
            f"{TOOLS[tool] + ' ' + result['version']:<26}{result['best']:>9.3f}"
            f"{result['median']:>10.3f}{result['best_cpu']:>12.3f}{result['best_warm']:>8.3f}"
            f"{nrefs:>11,}"
            f"{per_ref(memory['own_nbytes'], nrefs):>11.1f}"
            f"{per_ref(memory['traced_held'], nrefs):>12.1f}"
            f"{per_ref(memory['traced_retained'], nrefs):>12.1f}"
            f"{memory['traced_peak'] / 1e6:>16.1f}"
            f"{(result['peak_rss'] - result['rss_before']) / 1e6:>13.1f}"
        )
    lines += [
        "",
        "best / median / best CPU: the first open in a fresh process (includes lazy imports);",
        "  warm s: best time of a second open in that process (the steady cost per file)",
        "refs: chunk references held (the contiguous `time` coordinate adds one)",
        "B/ref own: the tool's own count (vds.virtualize.nbytes, vds.vz.nbytes) / refs",
        "B/ref held: bytes tracemalloc sees freed when the dataset is released / refs",
        "B/ref kept: bytes tracemalloc sees still allocated after the open (incl. modules",
        "  imported and caches filled by the first open) / refs",
        "peak traced: tracemalloc peak during the open; peak RSS: rise of the process's",
        "  peak resident memory over its resident memory before the open",
        "",
    ]
    ours = results["virtualize"]
    lines.append(f"virtualize / h5py floor:           {ours['best'] / floor['best']:.2f}x (best)")
    if "virtualizarr" in results:
        theirs = results["virtualizarr"]
        lines.append(
            f"VirtualiZarr / virtualize time:    {theirs['best'] / ours['best']:.2f}x (best), "
            f"{theirs['median'] / ours['median']:.2f}x (median), "
            f"{theirs['best_cpu'] / ours['best_cpu']:.2f}x (best CPU), "
            f"{theirs['best_warm'] / ours['best_warm']:.2f}x (warm)"
        )
        lines.append(
            "VirtualiZarr / virtualize B/ref:   "
            f"{theirs['memory']['traced_held'] / ours['memory']['traced_held']:.2f}x (held)"
        )
    else:
        lines.append(
            "VirtualiZarr is not installed here: its rows are skipped (make bench installs it)"
        )
    return "\n".join(lines)


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The headline ratios: against the h5py floor and against VirtualiZarr."""
    ours, floor = results["virtualize"], results["h5py"]
    out = {"virtualize_over_h5py_best": ours["best"] / floor["best"]}
    if "virtualizarr" in results:
        theirs = results["virtualizarr"]
        out |= {
            "virtualizarr_over_virtualize_best": theirs["best"] / ours["best"],
            "virtualizarr_over_virtualize_median": theirs["median"] / ours["median"],
            "virtualizarr_over_virtualize_best_cpu": theirs["best_cpu"] / ours["best_cpu"],
            "virtualizarr_over_virtualize_warm": theirs["best_warm"] / ours["best_warm"],
            "virtualizarr_over_virtualize_bytes_held": theirs["memory"]["traced_held"]
            / ours["memory"]["traced_held"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="chunks in the file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=BENCHMARKS / "results" / "latest.json")
    args = parser.parse_args()

    load_at_start = os.getloadavg()
    path = ensure_file(args.rows)
    warm_page_cache(path)
    tools = [tool for tool in TOOLS if importlib.util.find_spec(tool) is not None]
    if "virtualize" not in tools:
        raise SystemExit(f"virtualize is not importable from {sys.executable}")
    results = measure(path, tools, args.repeats)
    print()
    print(table(path, results, args.repeats))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # Other work on the machine skews wall times: keep the load next to them.
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "virtualize_revision": git_revision(),
        "file": {"path": str(path)} | json.loads(generate.sidecar(path).read_text()),
        "repeats": args.repeats,
        "skipped": [TOOLS[tool] for tool in TOOLS if tool not in tools],
        "results": results,
        "ratios": ratios(results),
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
