"""Ingesting 2,000 small netCDF4 files into Icechunk end to end: virtualize against VirtualiZarr.

Writes 2,000 hourly files into ``.bench/ingest-2000/`` (once; a marker records the generator's
spec, and a folder whose marker does not match is rewritten): each holds one time step ("hours
since 2000-01-01") of two zlib-compressed float32 variables on a 20 x 30 grid in 10 x 30 chunks
(two chunks per variable, four references per file), with ``time``, ``lat`` and ``lon``
coordinates; sorted by name they are in time order. Then runs every case in its own fresh
process, ``--repeats`` times, interleaved, each into a new local Icechunk repository in a fresh
temporary folder, ``--batch-size`` files per commit:

virtualize ingest
    ``vz.ingest(glob, repo_path, concat_dim="time", batch_size=B, executor="serial")`` with a
    registry for the archive's folder: it creates the repository (virtual chunk container,
    manifests split along ``time``, a first commit holding the root group), then parses,
    combines, appends and commits one batch after another.
virtualize ingest, processes
    The same with ``executor="processes"`` (one worker per CPU); starting the pool and
    importing virtualize in the workers is timed, since a user pays for it.
VirtualiZarr per batch
    VirtualiZarr 2.x's documented pattern: a repository whose config holds a virtual chunk
    container for the archive's folder, then per batch of B files
    ``open_virtual_mfdataset(batch, parser=HDFParser(), registry=...)``, a writable session,
    ``vds.vz.to_icechunk(session.store)`` for the first batch and
    ``to_icechunk(session.store, append_dim="time")`` after, and ``session.commit(...)``.

Both tools combine with the same options (by coordinates, ``data_vars="minimal"``,
``coords="minimal"``, ``compat="override"``, ``join="exact"``, ``combine_attrs="override"``:
virtualize's defaults, passed to VirtualiZarr explicitly) and both load the dimension
coordinates, their default. The wall time runs from before the repository is created to after
the last commit (imports excluded); references are those written (virtualize's
``report.references``; for VirtualiZarr the non-empty entries of every batch's manifests). Peak
memory is read right after the timed part. After it, outside the clock, each case reopens its
repository, checks that ``time`` has all 2,000 steps in order and that both variables at a few
random steps equal ``xr.open_dataset`` of the corresponding files, and counts the commits on
``main`` (Icechunk's initial snapshot left out). Prints a markdown table of wall time (best and
median), files/s and refs/s (best), peak resident memory and commits, then the ratios; writes
``benchmarks/results/ingest.json``.

Usage
-----
``python benchmarks/ingest.py [--repeats R] [--batch-size B] [--output PATH]``

Needs ``netCDF4`` to write the files and VirtualiZarr 2.x for its row (skipped if absent).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
FOLDER = REPO / ".bench" / "ingest-2000"
MARKER = FOLDER / "generator.json"
PREFIX = FOLDER.as_uri() + "/"
HOURS = 2_000
VARIABLES = {
    "tas": ("K", 273.0, 30.0),
    "pr": ("kg m-2 s-1", 2e-5, 1e-5),
}
SIZES = {"time": HOURS, "lat": 20, "lon": 30}
CHUNKS = (1, 10, 30)
SAMPLES = 5
CASES = {
    "virtualize-serial": "virtualize ingest",
    "virtualize-processes": "virtualize ingest, processes",
    "virtualizarr-batches": "VirtualiZarr per batch",
}

sys.path.insert(0, str(BENCHMARKS))
from mfdataset import (  # noqa: E402
    COMBINE,
    DescendantPeaks,
    git_revision,
    machine,
    max_rss_bytes,
    rss_bytes,
    summarise,
    warm_page_cache,
)


def spec() -> dict[str, Any]:
    """The parameters that identify the generated files; changing them regenerates."""
    return {
        # Bump whenever the writer changes in a way these fields do not show.
        "generator_version": 1,
        "files": HOURS,
        "variables": sorted(VARIABLES),
        "shape": [1, SIZES["lat"], SIZES["lon"]],
        "chunks": list(CHUNKS),
        "dtype": "float32",
        "filters": ["shuffle", "zlib(4)"],
        "time_units": "hours since 2000-01-01",
        "writer": "netCDF4",
    }


def hour_path(folder: Path, hour: int) -> Path:
    """The file of hour ``hour`` (0-based) after 2000-01-01T00 in ``folder``."""
    stamp = time.strftime("%Y%m%d%H", time.gmtime(946_684_800 + 3_600 * hour))
    return folder / f"hourly_{stamp}.nc"


def write_hour(folder: Path, hour: int) -> None:
    """Write one hourly file: smooth fields plus noise, rounded as archived output is."""
    import netCDF4
    import numpy as np

    rng = np.random.default_rng(hour)
    lat = np.linspace(-47.5, 47.5, SIZES["lat"])
    lon = np.linspace(0.0, 348.0, SIZES["lon"])
    pattern = np.cos(np.deg2rad(lat))[:, None] * np.sin(np.deg2rad(lon + hour))[None, :]
    with netCDF4.Dataset(hour_path(folder, hour), "w", format="NETCDF4") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", SIZES["lat"])
        nc.createDimension("lon", SIZES["lon"])
        times = nc.createVariable("time", "f8", ("time",))
        times.units = "hours since 2000-01-01"
        times.calendar = "standard"
        times.standard_name = "time"
        times[:] = [float(hour)]
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
                chunksizes=CHUNKS,
            )
            variable.units = units
            field = mean + spread * pattern + rng.normal(0.0, spread / 20, pattern.shape)
            variable[0, :, :] = field.astype("f4")
        nc.title = "synthetic hourly fields for benchmarks/ingest.py"


def ensure_files() -> list[Path]:
    """The hourly files, written first (in parallel, through a temporary folder so that an
    interrupted run leaves no stale files) if they are missing or their marker is stale."""
    paths = [hour_path(FOLDER, hour) for hour in range(HOURS)]
    if (
        MARKER.exists()
        and json.loads(MARKER.read_text()).get("spec") == spec()
        and all(path.exists() for path in paths)
    ):
        return paths
    print(f"writing {HOURS} hourly files into {FOLDER} ...", flush=True)
    partial = FOLDER.with_name(FOLDER.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
        pool.starmap(write_hour, [(partial, hour) for hour in range(HOURS)], chunksize=50)
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


def virtualize_ingest(repo_path: Path, executor: str, batch_size: int) -> tuple[int, int]:
    """``vz.ingest`` of the whole folder into a new repository at ``repo_path``; returns the
    references written and the commits made (one per batch)."""
    from obstore.store import LocalStore

    import virtualize as vz

    registry = vz.ObjectStoreRegistry({PREFIX: LocalStore(FOLDER)})
    report = vz.ingest(
        f"{FOLDER}/*.nc",
        str(repo_path),
        concat_dim="time",
        batch_size=batch_size,
        executor=executor,
        progress=False,
        registry=registry,
    )
    if len(report.ingested) != HOURS or report.skipped:
        raise SystemExit(f"ingested {len(report.ingested)} files, skipped {report.skipped}")
    return report.references, len(report.commits)


def virtualizarr_batches(repo_path: Path, batch_size: int) -> tuple[int, int]:
    """VirtualiZarr's pattern: ``open_virtual_mfdataset`` and ``to_icechunk`` per batch, one
    commit each, into a new repository at ``repo_path``; returns references and commits."""
    import icechunk
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_mfdataset
    from virtualizarr.manifests import ManifestArray
    from virtualizarr.parsers import HDFParser

    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(PREFIX, icechunk.local_filesystem_store(str(FOLDER)))
    )
    repo = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(repo_path)),
        config=config,
        authorize_virtual_chunk_access=icechunk.containers_credentials(
            {PREFIX: icechunk.Credentials.LocalFileSystemAccess()}
        ),
    )
    registry = ObjectStoreRegistry({PREFIX: LocalStore(FOLDER)})
    parser = HDFParser()
    urls = [path.as_uri() for path in sorted(FOLDER.glob("*.nc"))]
    references = commits = 0
    for start in range(0, len(urls), batch_size):
        batch = urls[start : start + batch_size]
        vds = open_virtual_mfdataset(batch, registry=registry, parser=parser, **COMBINE)
        session = repo.writable_session("main")
        if start == 0:
            vds.vz.to_icechunk(session.store)
        else:
            vds.vz.to_icechunk(session.store, append_dim="time")
        session.commit(f"ingest {Path(batch[0]).name} .. {Path(batch[-1]).name}")
        commits += 1
        references += sum(
            sum(1 for _ in variable.data.manifest.iter_nonempty_paths())
            for variable in vds.variables.values()
            if isinstance(variable.data, ManifestArray)
        )
    return references, commits


def verify(repo_path: Path) -> dict[str, Any]:
    """Reopen the repository with Icechunk alone and check it against ``xr.open_dataset`` of
    the files at a few random steps; return the steps checked and the commits on ``main``."""
    import icechunk
    import numpy as np
    import xarray as xr

    repo = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(repo_path)),
        authorize_virtual_chunk_access=icechunk.containers_credentials(
            {PREFIX: icechunk.Credentials.LocalFileSystemAccess()}
        ),
    )
    session = repo.readonly_session("main")
    ds = xr.open_zarr(session.store, consolidated=False)
    sizes = {str(dim): int(size) for dim, size in ds.sizes.items()}
    if sizes != SIZES or sorted(map(str, ds.data_vars)) != sorted(VARIABLES):
        raise SystemExit(f"the repository holds {sizes} with {sorted(ds.data_vars)}")
    expected = np.datetime64("2000-01-01T00", "ns") + np.arange(HOURS) * np.timedelta64(1, "h")
    if not np.array_equal(ds["time"].values, expected):
        raise SystemExit("the repository's time coordinate is not the 2,000 hours in order")
    steps = sorted(int(step) for step in np.random.default_rng().choice(HOURS, SAMPLES, False))
    for step in steps:
        with xr.open_dataset(hour_path(FOLDER, step)) as native:
            for name in VARIABLES:
                virtual = ds[name].isel(time=step).values
                if not np.array_equal(virtual, native[name].isel(time=0).values, equal_nan=True):
                    raise SystemExit(f"{name} at step {step} differs from the file")
    # Icechunk's own first snapshot ("Repository initialized") is not a commit of the run.
    snapshots = list(repo.ancestry(branch="main"))
    return {"checked_steps": steps, "commits_on_main": len(snapshots) - 1}


def run_case(case: str, batch_size: int) -> dict[str, Any]:
    """Child process: time one ingest of all the files into a new repository, measure memory,
    then (untimed) check the repository.

    The tool is imported before the clock starts.
    """
    warnings.simplefilter("ignore")
    tool, _, executor = case.partition("-")
    if tool == "virtualize":
        import virtualize  # noqa: F401
    else:
        import icechunk  # noqa: F401
        import virtualizarr.parsers  # noqa: F401
    workdir = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    repo_path = workdir / "repo"
    try:
        rss_before = rss_bytes()
        with DescendantPeaks() as descendants:
            cpu_start, start = time.process_time(), time.perf_counter()
            if tool == "virtualize":
                references, commits = virtualize_ingest(repo_path, executor, batch_size)
            else:
                references, commits = virtualizarr_batches(repo_path, batch_size)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        peak_self = max_rss_bytes(resource.RUSAGE_SELF)
        peak_children = max_rss_bytes(resource.RUSAGE_CHILDREN)
        checked = verify(repo_path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "case": case,
        "version": version(tool),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "files": HOURS,
        "batch_size": batch_size,
        "nrefs": references,
        "batch_commits": commits,
        "rss_before": rss_before,
        "peak_rss_self": peak_self,
        "peak_rss_children": peak_children,
        "peak_rss_workers": descendants.total,
        "processes_seen": len(descendants.peaks),
    } | checked


def measure_case(case: str, batch_size: int) -> dict[str, Any]:
    """Run one case in a fresh interpreter and return the JSON line it prints."""
    command = [sys.executable, __file__, "--case", case, "--batch-size", str(batch_size)]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"case {case} failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def measure(cases: list[str], repeats: int, batch_size: int) -> dict[str, dict[str, Any]]:
    """Every case, ``repeats`` times; interleaved so that drift hits all alike."""
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    for repeat in range(repeats):
        for case in cases:
            runs[case].append(measure_case(case, batch_size))
            print(
                f"  run {repeat + 1}/{repeats} {CASES[case]}: {runs[case][-1]['seconds']:.2f} s",
                flush=True,
            )
    results = {}
    for case, case_runs in runs.items():
        result = summarise(case_runs)
        result["files_per_second_best"] = HOURS / result["best"]
        result["refs_per_second_best"] = result["nrefs"] / result["best"]
        results[case] = result
    return results


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The headline ratios: VirtualiZarr over virtualize, serial over processes."""
    ours, pool = results["virtualize-serial"], results["virtualize-processes"]
    out = {
        "virtualize_serial_over_processes_best": ours["best"] / pool["best"],
        "virtualize_serial_over_processes_median": ours["median"] / pool["median"],
    }
    if "virtualizarr-batches" in results:
        theirs = results["virtualizarr-batches"]
        for name, result in (("serial", ours), ("processes", pool)):
            out |= {
                f"virtualizarr_over_virtualize_{name}_best": theirs["best"] / result["best"],
                f"virtualizarr_over_virtualize_{name}_median": theirs["median"] / result["median"],
            }
    return out


def table(results: dict[str, dict[str, Any]], repeats: int, batch_size: int, nbytes: int) -> str:
    """The figures as a markdown table and the ratios below it."""
    first = next(iter(results.values()))
    lines = [
        f"ingest of {HOURS:,} hourly netCDF4 files ({nbytes / 1e6:.0f} MB, "
        f"{first['nrefs']:,} chunk references) into a new Icechunk repository, "
        f"{batch_size} files per commit; wall time best / median of {repeats} runs, "
        f"{os.cpu_count()} CPUs",
        "",
        "| case | version | best s | median s | files/s (best) | refs/s (best) | peak RSS MB "
        "(own process) | peak RSS MB (workers, summed) | commits |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for case, result in results.items():
        lines.append(
            f"| {CASES[case]} | {result['version']} | {result['best']:.2f} | "
            f"{result['median']:.2f} | {result['files_per_second_best']:,.0f} | "
            f"{result['refs_per_second_best']:,.0f} | "
            f"{result['peak_rss_self'] / 1e6:.0f} | "
            f"{result['peak_rss_workers'] / 1e6:.0f} | "
            f"{result['commits_on_main']} |"
        )
    found = ratios(results)
    lines += [
        "",
        "commits: on main after the run, Icechunk's initial snapshot left out (virtualize's",
        "first commit creates the root group, then one per batch). The workers' peak is sampled",
        "from /proc and includes the forkserver.",
        "",
    ]
    if "virtualizarr_over_virtualize_serial_best" in found:
        for name in ("serial", "processes"):
            lines.append(
                f"VirtualiZarr per batch / virtualize ingest{', processes' * (name != 'serial')}: "
                f"{found[f'virtualizarr_over_virtualize_{name}_best']:.2f}x (best), "
                f"{found[f'virtualizarr_over_virtualize_{name}_median']:.2f}x (median)"
            )
    else:
        lines.append("VirtualiZarr is not installed here: its row is skipped")
    lines.append(
        "virtualize ingest / virtualize ingest, processes: "
        f"{found['virtualize_serial_over_processes_best']:.2f}x (best), "
        f"{found['virtualize_serial_over_processes_median']:.2f}x (median)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--output", type=Path, default=BENCHMARKS / "results" / "ingest.json")
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.batch_size)))
        return

    load_at_start = os.getloadavg()
    paths = ensure_files()
    warm_page_cache(paths)
    cases = list(CASES)
    if importlib.util.find_spec("virtualizarr") is None:
        cases.remove("virtualizarr-batches")
    results = measure(cases, args.repeats, args.batch_size)
    generated = json.loads(MARKER.read_text())
    print()
    print(table(results, args.repeats, args.batch_size, generated["bytes"]))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(load_at_start),
        "virtualize_revision": git_revision(),
        "files": {"folder": str(FOLDER)} | generated,
        "batch_size": args.batch_size,
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
