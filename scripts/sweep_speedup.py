"""Speed-up of a sweep on a local dask cluster over the same members run serially, in one process.

    python scripts/sweep_speedup.py deep_linear --members 16 --workers 2 --steps 3000

The members are seeds 0 … members−1 of one problem/solver/lr. The peer is a plain loop of
``gfbench.run`` in this process with torch's default thread count (what a user writes without
sweeps); the sweep runs the same members with ``gfbench.sweep`` on ``workers`` single-threaded
processes. Reported: the best of ``repeats`` alternating measurements of each and their ratio
serial / sweep on an already started cluster, plus one end-to-end sweep (cluster start included).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

import gfbench
from gfbench.params import parse_assignments
from gfbench.sweep import start_local_cluster, sweep, usable_cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", help="problem name, e.g. deep_linear or relu_fc")
    parser.add_argument("--solver", default="gd")
    parser.add_argument("--members", type=int, default=16, help="number of members (seeds 0..members-1)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lr", type=float, help="default: the problem's")
    parser.add_argument("--steps", type=int, help="default: the problem's")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--repeats", type=int, default=3, help="alternating serial/sweep repetitions (default 3)")
    args = parser.parse_args()

    problem = gfbench.get_problem(args.problem, **parse_assignments(args.param, "--param"))
    lr = problem.default_lr if args.lr is None else args.lr
    steps = problem.default_steps if args.steps is None else args.steps
    seeds = list(range(args.members))
    grid = {"problem": args.problem, "solver": args.solver, "lr": lr, "steps": steps, "seed": seeds,
            "params": dict(problem.params)}

    def serial_loop() -> float:
        started = time.perf_counter()
        for seed in seeds:
            gfbench.run(problem, args.solver, lr=lr, steps=steps, seed=seed, progress=False)
        return time.perf_counter() - started

    def timed_sweep(out: str, **where) -> tuple[float, float]:
        """(wall time, mean member wall time measured inside the workers)."""
        started = time.perf_counter()
        summary = sweep(grid, out, progress=False, **where)
        wall = time.perf_counter() - started
        return wall, sum(r["wall_time_s"] for r in summary.members.values()) / len(summary.members)

    serial, warm, member_times = [], [], []
    with tempfile.TemporaryDirectory() as out:
        end_to_end, _ = timed_sweep(os.path.join(out, "end_to_end"), workers=args.workers)
        cluster = start_local_cluster(args.workers)
        try:
            # Serial loop and sweep alternate, so a change in the machine's load hits both alike.
            for repeat in range(args.repeats):
                serial.append(serial_loop())
                wall, member = timed_sweep(os.path.join(out, f"warm{repeat}"), scheduler=cluster.scheduler_address,
                                           torch_threads=max(1, usable_cores() // args.workers))
                warm.append(wall)
                member_times.append(member)
        finally:
            cluster.close()

    best_serial, best_warm = min(serial), min(warm)
    print(f"{args.members} members of {args.solver} on {problem.label}, lr={lr:g}, steps={steps}; "
          f"{usable_cores()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"serial loop ({torch.get_num_threads()} torch threads), best of {args.repeats}: {best_serial:.2f} s "
          f"({best_serial / args.members:.2f} s per member); all: {', '.join(f'{t:.2f}' for t in serial)}")
    print(f"sweep on {args.workers} workers, cluster started, best of {args.repeats}: {best_warm:.2f} s; "
          f"all: {', '.join(f'{t:.2f}' for t in warm)}; mean member time in a worker: "
          f"{min(member_times):.2f} s")
    print(f"speed-up serial / sweep: {best_serial / best_warm:.2f}x (cluster started), "
          f"{best_serial / end_to_end:.2f}x end to end ({end_to_end:.2f} s, one run, cluster start included)")

if __name__ == "__main__":
    main()
