"""Per-file parse time over the real HDF5/netCDF4 files of ../shared/corpus.

Each tool runs in its own process and parses every file three times (best time kept):
virtualize's ``HDFParser`` and, when installed, VirtualiZarr 2.x's ``HDFParser``. Prints how
many files each parses, the median, 90th percentile, maximum and total per-file time, and the
ratio on the files both parse; writes ``benchmarks/results/parse_corpus.json``.

Usage: ``python benchmarks/parse_corpus.py [--repeats R]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
CORPUS = BENCHMARKS.parent.parent / "shared" / "corpus"


def corpus_files() -> list[Path]:
    return sorted(
        p
        for folder in ("hdf5", "netcdf4")
        for p in (CORPUS / folder).rglob("*")
        if p.is_file() and p.suffix != ".dmrpp"
    )


def parse_with_virtualize(path: Path) -> Any:
    from obstore.store import LocalStore

    import virtualize as vz

    registry = vz.ObjectStoreRegistry({path.parent.as_uri() + "/": LocalStore(path.parent)})
    return vz.parsers.HDFParser(on_unsupported="skip")(str(path), registry)


def parse_with_virtualizarr(path: Path) -> Any:
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({"file://": LocalStore()})
    return HDFParser()(path.as_uri(), registry)


PARSERS = {"virtualize": parse_with_virtualize, "virtualizarr": parse_with_virtualizarr}


def run_tool(tool: str, repeats: int) -> None:
    """Child process: one JSON line per file with the best time, or the error."""
    parse = PARSERS[tool]
    warnings.simplefilter("ignore")
    for path in corpus_files():
        best = None
        error = None
        for _ in range(repeats):
            started = time.perf_counter()
            try:
                parse(path)
            except Exception as caught:
                error = f"{type(caught).__name__}: {caught}"[:200]
                break
            elapsed = time.perf_counter() - started
            best = elapsed if best is None else min(best, elapsed)
        print(json.dumps({"file": str(path.relative_to(CORPUS)), "seconds": best, "error": error}))


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "files": len(ordered),
        "median_ms": 1000 * statistics.median(ordered),
        "p90_ms": 1000 * ordered[int(0.9 * (len(ordered) - 1))],
        "max_ms": 1000 * ordered[-1],
        "total_s": sum(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tool", choices=sorted(PARSERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tool:
        run_tool(args.tool, args.repeats)
        return
    if not CORPUS.is_dir():
        raise SystemExit(f"{CORPUS} is absent")
    tools = ["virtualize"]
    if importlib.util.find_spec("virtualizarr") is not None:
        tools.append("virtualizarr")
    else:
        print("VirtualiZarr is not installed: its column is skipped")
    results: dict[str, dict[str, Any]] = {}
    for tool in tools:
        command = [sys.executable, __file__, "--tool", tool, "--repeats", str(args.repeats)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[tool] = {row["file"]: row for row in map(json.loads, output.splitlines())}
    print(f"{len(corpus_files())} HDF5/netCDF4 corpus files, best of {args.repeats} per file")
    for tool in tools:
        parsed = [r["seconds"] for r in results[tool].values() if r["seconds"] is not None]
        stats = summary(parsed)
        print(
            f"  {tool:13s} parses {stats['files']:3d}: median {stats['median_ms']:.1f} ms, "
            f"p90 {stats['p90_ms']:.1f} ms, max {stats['max_ms']:.0f} ms, "
            f"total {stats['total_s']:.2f} s"
        )
    report: dict[str, Any] = {"tools": results}
    if len(tools) == 2:
        both = [
            name
            for name, row in results["virtualize"].items()
            if row["seconds"] is not None and results["virtualizarr"][name]["seconds"] is not None
        ]
        ratios = [
            results["virtualizarr"][n]["seconds"] / results["virtualize"][n]["seconds"]
            for n in both
        ]
        total_ratio = sum(results["virtualizarr"][n]["seconds"] for n in both) / sum(
            results["virtualize"][n]["seconds"] for n in both
        )
        print(
            f"  on the {len(both)} files both parse: VirtualiZarr / virtualize time, "
            f"median {statistics.median(ratios):.2f}x, total {total_ratio:.2f}x"
        )
        report["both"] = {"files": len(both), "median_ratio": statistics.median(ratios)}
        report["both"]["total_ratio"] = total_ratio
    out = BENCHMARKS / "results" / "parse_corpus.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
