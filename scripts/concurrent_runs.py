"""Wall time of N ``gfbench run`` processes started at once, under several thread settings.

    python scripts/concurrent_runs.py --runs 4 -- --problem deep_linear --solver gd --steps 20000

Each batch starts ``runs`` copies of ``gfbench run ARGS --quiet`` together and waits for the last;
its wall time is from the start to the last exit. The settings, run in alternating rounds so that
load from elsewhere falls on each alike: ``default`` (gfbench's thread policy, neither variable
set), ``omp1`` (OMP_NUM_THREADS=1: one thread each, the reference), ``gfbench1``
(GFBENCH_THREADS=1: one thread set by gfbench once torch has started) and ``all_cores``
(GFBENCH_THREADS = the usable cores: torch's own default, what gfbench did before the policy).
Reported: per setting the best batch wall time, every batch's, each run's own wall time
(``wall_time_s``) and thread count, the 1-minute load average before each batch, and the ratio of
each best to omp1's.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gfbench
from gfbench.threads import THREADS_ENV, usable_cores

SETTINGS = {"default": {}, "omp1": {"OMP_NUM_THREADS": "1"}, "gfbench1": {THREADS_ENV: "1"},
            "all_cores": {THREADS_ENV: str(usable_cores())}}


def batch(runs: int, args: list[str], extra_env: dict[str, str], out: Path) -> tuple[float, list[float], list[int]]:
    """(batch wall time, each run's wall_time_s, each run's torch_threads) of ``runs`` concurrent runs."""
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", THREADS_ENV)}
    env.update(extra_env)
    paths = [out / f"run{index}.nc" for index in range(runs)]
    started = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, "-m", "gfbench.cli", "run", *args, "--quiet", "--out", str(path)],
                                  env=env) for path in paths]
    codes = [process.wait() for process in processes]
    wall = time.perf_counter() - started
    if any(codes):
        raise SystemExit(f"a run failed: exit codes {codes}")
    attrs = [gfbench.load(path).attrs for path in paths]
    return wall, [a["wall_time_s"] for a in attrs], [a["torch_threads"] for a in attrs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2 * usable_cores(), help="concurrent runs (default 2 per core)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--settings", default="default,omp1,all_cores", help=f"comma list of {', '.join(SETTINGS)}")
    parser.add_argument("run_args", nargs="+", help="arguments of gfbench run (after --)")
    args = parser.parse_args()
    settings = args.settings.split(",")

    walls: dict[str, list[float]] = {name: [] for name in settings}
    details: dict[str, list[str]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for name in settings:
                load = os.getloadavg()[0]
                wall, run_walls, run_threads = batch(args.runs, args.run_args, SETTINGS[name], Path(folder))
                walls[name].append(wall)
                details[name].append(f"{wall:.2f} s (load {load:.2f}; runs {min(run_walls):.2f}-{max(run_walls):.2f} s, "
                                     f"threads {sorted(set(map(int, run_threads)))})")
    print(f"{args.runs} concurrent 'gfbench run {' '.join(args.run_args)}' on {usable_cores()} cores")
    reference = min(walls["omp1"]) if "omp1" in walls else None
    for name in settings:
        ratio = f", {min(walls[name]) / reference:.2f}x omp1" if reference else ""
        print(f"  {name:<10} best {min(walls[name]):.2f} s{ratio}; batches: {'; '.join(details[name])}")


if __name__ == "__main__":
    main()
