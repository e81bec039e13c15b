"""Running a benchmark case in a fresh interpreter, and summarising repeated runs.

A case prints one JSON line as its last output: ``first_seconds`` (the first call, what a
fresh worker pays), ``first_cpu_seconds`` and ``warm_seconds`` (more calls in the same
process), plus whatever the case checked.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_in_fresh_process(script: str, arguments: list[str], what: str) -> dict[str, Any]:
    """Run ``script`` with ``arguments`` in a new interpreter; return its last JSON line."""
    command = [sys.executable, script, *arguments]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"{what} failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best and median first call over the processes, and the median warm call."""
    first = [run["first_seconds"] for run in runs]
    warm = [s for run in runs for s in run["warm_seconds"]]
    return runs[0] | {
        "first_seconds": first,
        "best": min(first),
        "median": statistics.median(first),
        "best_cpu": min(run["first_cpu_seconds"] for run in runs),
        "warm_seconds": warm,
        "warm_median": statistics.median(warm) if warm else float("nan"),
    }


def ensure_generated(
    path: Path, spec: dict[str, Any], write: Callable[[Path], None], library: str
) -> Path:
    """``path``, written by ``write`` (through a temporary name) if it is missing or its
    marker (``generator.json`` beside it, recording ``spec``) is stale."""
    marker = path.parent / "generator.json"
    if marker.exists() and json.loads(marker.read_text()).get("spec") == spec and path.exists():
        return path
    print(f"writing {path} ...", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    write(partial)
    partial.rename(path)
    document = {"spec": spec, "bytes": path.stat().st_size, library: version(library)}
    marker.write_text(json.dumps(document, indent=2))
    return path
