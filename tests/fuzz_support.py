"""Fuzzing every parser: real files, mutated and truncated, opened in worker processes.

Seeds are small files written here by the formats' own libraries (h5py, netCDF4/xarray,
scipy, tifffile, ecCodes, astropy) plus the corpus's small files when it is there. Each case
is a seed changed by one to three mutations (bit flips, bytes set to boundary values, integers
set to boundary values, truncation, a cut, a duplicated or inserted run of bytes), mostly in
the metadata a parser reads (the first 4 KiB and the last 1 KiB), keeping the first 8 bytes
(the format's magic) nine times in ten so that the format's own parser is reached.

Cases run in worker processes (:mod:`fuzz_worker`) that open each with
``virtualize.open_virtual_dataset`` (format detection, parsing, and loading the coordinates)
and report one of:

``parsed``
    it opened;
``typed``
    it raised an error of :mod:`virtualize.errors`;
``untyped``
    it raised anything else (a bug: the traceback is kept);
``crash``
    the worker died (a C library crashed the interpreter);
``hang``
    no answer within the time limit (the worker is killed).

A crashed or killed worker is replaced and goes on with the next case. Run as a script for
the long run (``make fuzz``)::

    python tests/fuzz_support.py --cases 100000 --workers 2 --output fuzz-results.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORPUS = Path(os.environ.get("VIRTUALIZE_CORPUS", HERE.parent.parent / "shared" / "corpus"))
#: corpus files up to this size are seeds (mutating a large file mostly hits its data)
CORPUS_SEED_BYTES = 256 << 10
#: corpus folder -> format
CORPUS_FORMATS = {
    "hdf5": "hdf5",
    "netcdf4": "hdf5",
    "netcdf3": "netcdf3",
    "tiff": "tiff",
    "grib": "grib",
}
OUTCOMES = ("parsed", "typed", "untyped", "crash", "hang")


# -- seeds --------------------------------------------------------------------------------------


def write_seeds(folder: Path) -> dict[str, list[Path]]:
    """Small files of every format, written by the formats' own libraries."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, list[Path]] = collections.defaultdict(list)
    for fmt, writer in _WRITERS:
        try:
            seeds[fmt].extend(writer(folder))
        except ImportError:  # the format's extra is not installed
            continue
    return dict(seeds)


def _hdf5_seeds(folder: Path) -> list[Path]:
    import h5py
    import numpy as np

    chunked = folder / "chunked.nc"
    import xarray as xr

    ds = xr.Dataset(
        {
            "t": (("time", "y", "x"), np.arange(4 * 6 * 8, dtype="f4").reshape(4, 6, 8)),
            "q": (("y", "x"), np.arange(48, dtype="i2").reshape(6, 8)),
        },
        coords={"time": np.arange(4), "y": np.linspace(0, 1, 6), "x": np.arange(8) * 0.5},
        attrs={"title": "fuzz seed"},
    )
    ds["t"].attrs.update(units="K", scale_factor=0.5)
    encoding = {"t": {"zlib": True, "shuffle": True, "chunksizes": (2, 3, 4)}}
    ds.to_netcdf(chunked, engine="h5netcdf", encoding=encoding)
    plain = folder / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("contiguous", data=np.arange(64, dtype="<f8"))
        f.create_dataset("big_endian", data=np.arange(16, dtype=">i4").reshape(4, 4))
        group = f.create_group("group")
        group.create_dataset("fletcher", data=np.arange(100, dtype="u2"), chunks=(25,),
                             fletcher32=True)  # fmt: skip
        group.attrs["note"] = "nested"
        for i in range(10):  # dense attribute storage
            f.attrs[f"attribute_{i}"] = i
    return [chunked, plain]


def _netcdf3_seeds(folder: Path) -> list[Path]:
    import numpy as np
    import xarray as xr

    path = folder / "classic.nc"
    ds = xr.Dataset(
        {
            "t": (("time", "x"), np.arange(12, dtype="f4").reshape(3, 4)),
            "name": (("x",), np.array([b"ab", b"cd", b"ef", b"gh"])),
        },
        coords={"time": np.arange(3), "x": np.arange(4.0)},
    )
    ds.to_netcdf(path, engine="scipy", unlimited_dims=["time"])
    return [path]


def _tiff_seeds(folder: Path) -> list[Path]:
    import numpy as np
    import tifffile

    tiled = folder / "tiled.tif"
    image = (np.arange(64 * 64, dtype="u2").reshape(64, 64) % 251).astype("u2")
    tifffile.imwrite(tiled, image, tile=(32, 32), compression="zlib", predictor=True)
    strips = folder / "strips.tif"
    tifffile.imwrite(strips, np.arange(3 * 20 * 10, dtype="u1").reshape(20, 10, 3),
                     photometric="rgb", rowsperstrip=7)  # fmt: skip
    return [tiled, strips]


def _grib_seeds(folder: Path) -> list[Path]:
    sys.path.insert(0, str(HERE))
    from grib_support import Field, write_grib

    grib2 = write_grib(
        folder / "fields.grib2",
        [Field("t", level=level, step=step) for level in (500, 850) for step in (0, 6)],
        packing="grid_ccsds",
    )
    grib1 = write_grib(folder / "fields.grib1", [Field("t", level=500)], edition=1)
    return [grib2, grib1]


def _fits_seeds(folder: Path) -> list[Path]:
    import numpy as np
    from astropy.io import fits

    path = folder / "image.fits"
    primary = fits.PrimaryHDU(np.arange(20 * 30, dtype=">i2").reshape(20, 30))
    primary.header["BSCALE"] = 2.0
    extension = fits.ImageHDU(np.linspace(0, 1, 50, dtype=">f4").reshape(5, 10), name="SCI")
    fits.HDUList([primary, extension]).writeto(path)
    return [path]


_WRITERS = (
    ("hdf5", _hdf5_seeds),
    ("netcdf3", _netcdf3_seeds),
    ("tiff", _tiff_seeds),
    ("grib", _grib_seeds),
    ("fits", _fits_seeds),
)


def corpus_seeds(limit_per_format: int = 12) -> dict[str, list[Path]]:
    """The corpus's small files (the smallest first, up to ``limit_per_format``)."""
    if not CORPUS.is_dir():
        return {}
    seeds: dict[str, list[Path]] = collections.defaultdict(list)
    for folder, fmt in CORPUS_FORMATS.items():
        files = sorted(
            (p for p in (CORPUS / folder).rglob("*") if p.is_file() and _is_data(p)),
            key=lambda p: (p.stat().st_size, str(p)),
        )
        small = [p for p in files if p.stat().st_size <= CORPUS_SEED_BYTES]
        seeds[fmt].extend(small[: limit_per_format - len(seeds[fmt])])
    return dict(seeds)


def _is_data(path: Path) -> bool:
    return path.suffix.lower() not in {".idx", ".dmrpp", ".md", ".txt", ".json", ".xml", ".aux"}


# -- mutations ----------------------------------------------------------------------------------

_BOUNDARY_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
_BOUNDARY_INTEGERS = (0, 1, 2**15 - 1, 2**16 - 1, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1)


def _position(rng: random.Random, size: int) -> int:
    """Mostly in the metadata: the first 4 KiB, the last 1 KiB; anywhere otherwise."""
    roll = rng.random()
    if roll < 0.6:
        return rng.randrange(min(size, 4096))
    if roll < 0.8:
        return size - 1 - rng.randrange(min(size, 1024))
    return rng.randrange(size)


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """``data`` changed by one to three mutations, and what they were."""
    out = bytearray(data)
    keep_magic = rng.random() < 0.9
    done = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        if len(out) < 16:
            break
        kind = rng.choice(("flip", "byte", "integer", "truncate", "cut", "duplicate", "insert"))
        at = _position(rng, len(out))
        if keep_magic and at < 8 and kind not in ("truncate",):
            at = 8 + rng.randrange(max(1, min(len(out) - 8, 4096)))
            at = min(at, len(out) - 1)
        if kind == "flip":
            out[at] ^= 1 << rng.randrange(8)
        elif kind == "byte":
            out[at] = rng.choice((*_BOUNDARY_BYTES, rng.randrange(256)))
        elif kind == "integer":
            width = rng.choice((2, 4, 8))
            value = rng.choice(_BOUNDARY_INTEGERS) % (1 << (8 * width))
            order = rng.choice(("little", "big"))
            out[at : at + width] = value.to_bytes(width, order)
        elif kind == "truncate":
            at = max(at, 8) if keep_magic else at
            del out[at:]
        elif kind == "cut":
            del out[at : at + rng.choice((1, 4, 16, 256))]
        elif kind == "duplicate":
            length = rng.choice((4, 16, 256))
            out[at:at] = out[at : at + length]
        else:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 4, 16))))
        done.append(f"{kind}@{at}")
    return bytes(out), done


# -- running ------------------------------------------------------------------------------------


@dataclass
class Case:
    number: int
    format: str
    seed: str
    mutations: list[str]
    path: str


@dataclass
class Result:
    case: Case
    outcome: str
    error: str = ""
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)

    def count(self, outcome: str, fmt: str | None = None) -> int:
        return sum(1 for r in self.results if r.outcome == outcome and fmt in (None, r.case.format))

    def failures(self) -> list[Result]:
        return [r for r in self.results if r.outcome in ("untyped", "crash", "hang")]

    def summary(self) -> str:
        """A markdown table of outcomes per format, and the failures."""
        formats = sorted({r.case.format for r in self.results})
        lines = [
            "| format | cases | " + " | ".join(OUTCOMES) + " |",
            "|---|--:|" + "--:|" * len(OUTCOMES),
        ]
        for fmt in [*formats, None]:
            cases = sum(1 for r in self.results if fmt in (None, r.case.format))
            counts = " | ".join(str(self.count(o, fmt)) for o in OUTCOMES)
            lines.append(f"| {fmt or 'all'} | {cases} | {counts} |")
        errors = collections.Counter(r.error for r in self.results if r.outcome == "typed")
        lines.append("")
        lines.append("typed errors: " + ", ".join(f"{e} {n}" for e, n in errors.most_common()))
        for result in self.failures()[:20]:
            case = result.case
            lines.append(
                f"- {result.outcome} #{case.number} {case.format} {case.seed} "
                f"{case.mutations}: {result.error} {result.detail[-600:]}"
            )
        return "\n".join(lines)


def make_cases(
    seeds: dict[str, list[Path]], count: int, folder: Path, seed: int = 0
) -> Iterator[Case]:
    """``count`` mutated files written to ``folder``, spread evenly over the formats."""
    rng = random.Random(seed)
    formats = sorted(fmt for fmt, paths in seeds.items() if paths)
    contents = {path: path.read_bytes() for paths in seeds.values() for path in paths}
    for number in range(count):
        fmt = formats[number % len(formats)]
        source = rng.choice(seeds[fmt])
        data, mutations = mutate(contents[source], rng)
        path = folder / f"case-{number:06d}{source.suffix}"
        path.write_bytes(data)
        yield Case(number, fmt, source.name, mutations, str(path))


class _Worker:
    """One worker process, fed a case at a time."""

    def __init__(self, *, read: bool) -> None:
        environment = dict(os.environ)
        if read:
            environment["VIRTUALIZE_FUZZ_LOAD"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "fuzz_worker.py")],
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.case: Case | None = None
        self.started = 0.0

    def send(self, case: Case) -> None:
        assert self.process.stdin is not None
        self.case = case
        self.started = time.monotonic()
        self.process.stdin.write(case.path + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def run_cases(
    cases: Sequence[Case], *, workers: int = 2, timeout: float = 20.0, read: bool = False
) -> Report:
    """Open every case in worker processes; see the module documentation."""
    report = Report()
    pending = collections.deque(cases)
    pool: list[_Worker] = []
    selector = selectors.DefaultSelector()

    def start() -> _Worker:
        worker = _Worker(read=read)
        assert worker.process.stdout is not None
        selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
        pool.append(worker)
        return worker

    def retire(worker: _Worker) -> None:
        assert worker.process.stdout is not None
        selector.unregister(worker.process.stdout)
        pool.remove(worker)
        worker.stop()

    def feed(worker: _Worker) -> None:
        if pending:
            worker.send(pending.popleft())
        else:
            worker.case = None

    try:
        for _ in range(min(workers, len(pending))):
            feed(start())
        while any(worker.case is not None for worker in pool):
            for key, _ in selector.select(timeout=1.0):
                worker = key.data
                line = worker.process.stdout.readline()
                case = worker.case
                if case is None:
                    continue
                if not line:  # the worker died with the case
                    signal = worker.process.wait()
                    report.results.append(Result(case, "crash", f"exit {signal}"))
                    retire(worker)
                    feed(start())
                    continue
                answer = json.loads(line)
                report.results.append(
                    Result(
                        case,
                        answer["outcome"],
                        answer.get("error", ""),
                        answer.get("detail", ""),
                        time.monotonic() - worker.started,
                    )
                )
                feed(worker)
            now = time.monotonic()
            for worker in list(pool):
                if worker.case is not None and now - worker.started > timeout:
                    report.results.append(Result(worker.case, "hang", f"over {timeout} s"))
                    retire(worker)
                    feed(start())
    finally:
        for worker in list(pool):
            retire(worker)
    report.results.sort(key=lambda r: r.case.number)
    return report


def fuzz(
    count: int,
    *,
    seed: int = 0,
    workers: int = 2,
    corpus: bool = True,
    keep: Path | None = None,
    read: bool = False,
) -> Report:
    """Write the seeds and ``count`` cases in a temporary folder and run them (``read``: open
    each with every variable loaded, so that every chunk goes through its codecs too); the
    files of failed cases are copied to ``keep`` (when given) to be replayed."""
    with tempfile.TemporaryDirectory(prefix="virtualize-fuzz-") as folder:
        root = Path(folder)
        seeds = write_seeds(root / "seeds")
        if corpus:
            for fmt, paths in corpus_seeds().items():
                seeds.setdefault(fmt, []).extend(paths)
        cases_folder = root / "cases"
        cases_folder.mkdir()
        report = Report()
        batch = 2000  # written and run in batches: 100,000 files at once is a lot of disk
        for start in range(0, count, batch):
            cases = list(
                make_cases(seeds, min(batch, count - start), cases_folder, seed=seed + start)
            )
            for offset, case in enumerate(cases):
                case.number = start + offset
            part = run_cases(cases, workers=workers, read=read)
            report.results.extend(part.results)
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                for result in part.failures():
                    source = Path(result.case.path)
                    name = f"case-{result.case.number:06d}-{result.outcome}{source.suffix}"
                    (keep / name).write_bytes(source.read_bytes())
            for case in cases:
                Path(case.path).unlink(missing_ok=True)
        return report


def _json_report(report: Report, seconds: float) -> dict[str, Any]:
    return {
        "cases": len(report.results),
        "seconds": seconds,
        "outcomes": {o: report.count(o) for o in OUTCOMES},
        "per_format": {
            fmt: {o: report.count(o, fmt) for o in OUTCOMES}
            for fmt in sorted({r.case.format for r in report.results})
        },
        "failures": [
            {
                "outcome": r.outcome,
                "format": r.case.format,
                "seed": r.case.seed,
                "mutations": r.case.mutations,
                "error": r.error,
                "detail": r.detail,
            }
            for r in report.failures()
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Fuzz every parser with mutated files.")
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--output", type=Path, default=Path("fuzz-results.json"))
    parser.add_argument("--keep", type=Path, help="copy the files of failed cases here")
    parser.add_argument(
        "--read", action="store_true", help="also read every variable's values (every chunk)"
    )
    args = parser.parse_args()
    started = time.monotonic()
    report = fuzz(args.cases, seed=args.seed, workers=args.workers, keep=args.keep, read=args.read)
    seconds = time.monotonic() - started
    print(report.summary())
    print(f"\n{len(report.results)} cases in {seconds:.0f} s")
    args.output.write_text(json.dumps(_json_report(report, seconds), indent=2) + "\n")
    print(f"wrote {args.output}")
    if report.failures():
        raise SystemExit(1)


if __name__ == "__main__":
    main()
