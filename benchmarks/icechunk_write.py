"""Writing 10^6 virtual references to Icechunk: virtualize against VirtualiZarr 2.8.

Each tool opens the 10^6-chunk benchmark file (``benchmarks/generate.py``) with
``loadable_variables=[]`` (not timed), then writes it into a new local Icechunk repository and
commits (timed), in its own fresh process, three times. Reports the best time and the peak
resident memory of the process. Then, for virtualize only, the cost of appending one more file
to that 10^6-reference array with manifest splitting along the append axis.

Usage: ``python benchmarks/icechunk_write.py [--repeats R]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
FILE = BENCHMARKS.parent / ".bench" / "chunks-1000000.nc"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def repository(path: Path, prefix: str, split_along: str | None = None) -> Any:
    import icechunk

    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(prefix[7:]))
    )
    if split_along is not None:
        condition = icechunk.ManifestSplitCondition.AnyArray()
        dims = [(icechunk.ManifestSplitDimCondition.DimensionName(split_along), 100_000)]
        config.manifest = icechunk.ManifestConfig(
            splitting=icechunk.ManifestSplittingConfig.from_dict({condition: dict(dims)})
        )
    return icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(path)),
        config=config,
        authorize_virtual_chunk_access={prefix: icechunk.Credentials.LocalFileSystemAccess()},
    )


def case_virtualize(folder: Path) -> dict[str, Any]:
    from obstore.store import LocalStore

    import virtualize as vz

    prefix = FILE.parent.as_uri() + "/"
    registry = vz.ObjectStoreRegistry({prefix: LocalStore(FILE.parent)})
    vds = vz.open_virtual_dataset(FILE, registry=registry, loadable_variables=[])
    repo = repository(folder / "repo", prefix)
    started = time.perf_counter()
    session = repo.writable_session("main")
    vds.virtualize.to_icechunk(session.store)
    session.commit("write")
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "nrefs": vds.virtualize.nrefs}


def case_virtualizarr(folder: Path) -> dict[str, Any]:
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import HDFParser

    prefix = FILE.parent.as_uri() + "/"
    registry = ObjectStoreRegistry({"file://": LocalStore()})
    vds = open_virtual_dataset(
        FILE.as_uri(), registry=registry, parser=HDFParser(), loadable_variables=[]
    )
    repo = repository(folder / "repo", prefix)
    started = time.perf_counter()
    session = repo.writable_session("main")
    vds.vz.to_icechunk(session.store)
    session.commit("write")
    return {"seconds": time.perf_counter() - started}


def case_append(folder: Path) -> dict[str, Any]:
    """Append one 16-reference file to the 10^6-reference array, manifests split along it."""
    import numpy as np
    import xarray as xr
    from obstore.store import LocalStore

    import virtualize as vz

    prefix = FILE.parent.as_uri() + "/"
    registry = vz.ObjectStoreRegistry({prefix: LocalStore(FILE.parent)})
    vds = vz.open_virtual_dataset(FILE, registry=registry, loadable_variables=[])
    dim = str(vds["data"].dims[0])
    extra = FILE.parent / "append-one.nc"
    if not extra.exists():
        xr.Dataset({"data": ((dim, "y"), np.ones((16, 16), dtype="f4"))}).to_netcdf(
            extra,
            encoding={
                "data": {"chunksizes": (1, 16), "zlib": True, "shuffle": True, "_FillValue": None}
            },
        )
    small = vz.open_virtual_dataset(extra, registry=registry, loadable_variables=[])
    small = small.drop_vars([n for n in small.variables if n not in vds.variables])
    repo = repository(folder / "repo", prefix, split_along=dim)
    session = repo.writable_session("main")
    vds[["data"]].virtualize.to_icechunk(session.store)
    session.commit("write")
    started = time.perf_counter()
    session = repo.writable_session("main")
    small[["data"]].virtualize.to_icechunk(session.store, append_dim=dim)
    session.commit("append")
    return {"seconds": time.perf_counter() - started}


CASES = {"virtualize": case_virtualize, "virtualizarr": case_virtualizarr, "append": case_append}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        warnings.simplefilter("ignore")
        folder = Path(tempfile.mkdtemp(prefix="icechunk-bench-"))
        try:
            result = CASES[args.case](folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return
    if not FILE.exists():
        raise SystemExit(f"{FILE} is missing: run benchmarks/run.py first (it writes it)")
    cases = ["virtualize", "append"]
    if importlib.util.find_spec("virtualizarr") is not None:
        cases.insert(1, "virtualizarr")
    results: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    for _ in range(args.repeats):
        for case in cases:
            command = [sys.executable, __file__, "--case", case]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[case].append(json.loads(output.strip().splitlines()[-1]))
    print("writing 10^6 virtual references to a local Icechunk repository (write + commit)")
    best = {case: min(r["seconds"] for r in runs) for case, runs in results.items()}
    for case in cases:
        peak = max(r["peak_rss_mb"] for r in results[case])
        print(f"  {case:13s} best {best[case]:.2f} s, peak RSS {peak:.0f} MB")
    if "virtualizarr" in best:
        print(f"  VirtualiZarr / virtualize: {best['virtualizarr'] / best['virtualize']:.2f}x")
    out = BENCHMARKS / "results" / "icechunk_write.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
