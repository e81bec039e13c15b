"""Where virtualize's ``open_virtual_dataset`` spends its time: cProfile, top entries.

Usage
-----
``python benchmarks/profile_open.py PATH [--top N] [--output FILE.prof]``

Prints the top entries by cumulative and by own time; ``--output`` keeps the raw profile
for ``snakeviz`` or ``python -m pstats``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
from pathlib import Path

from cases import virtualize_opener


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    open_, stats = virtualize_opener(args.path.resolve())
    profiler = cProfile.Profile()
    vds = profiler.runcall(open_)
    print(stats(vds))
    if args.output:
        profiler.dump_stats(args.output)
    for key in ("cumulative", "tottime"):
        pstats.Stats(profiler).sort_stats(key).print_stats(args.top)


if __name__ == "__main__":
    main()
