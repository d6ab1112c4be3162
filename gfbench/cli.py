"""Command line: ``gfbench run | sweep | list | info``.

Exit codes: 0 completed, 2 bad input (one-line message, nothing computed or written),
3 diverged, 4 solver failed (the recorded prefix is written in both cases), 130 interrupted.
``gfbench sweep``: 0 when every member has a dataset (completed, diverged or solver_failed),
5 when some member failed (its error is in the manifest), 130 interrupted (finished members kept).
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_USAGE, EXIT_DIVERGED, EXIT_SOLVER_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
EXIT_MEMBERS_FAILED = 5
EXIT_BY_STATUS = {"completed": EXIT_OK, "diverged": EXIT_DIVERGED, "solver_failed": EXIT_SOLVER_FAILED}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump), exit code 2."""

    def error(self, message: str) -> None:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


class _UsageError(Exception):
    pass


def _add_run_parser(commands) -> None:
    run = commands.add_parser("run", help="run a solver on a problem and write a netCDF dataset",
                              description="Run SOLVER on PROBLEM from theta0 = init(seed) to t = steps*lr and "
                                          "write the trajectory as a netCDF dataset.")
    run.add_argument("--problem", required=True, help="problem name (see 'gfbench list')")
    run.add_argument("--solver", required=True, help="solver name (see 'gfbench list')")
    run.add_argument("--lr", type=float, help="step size eta; time t = k*eta (default: the problem's)")
    run.add_argument("--steps", type=int, help="number of GD steps k, so T = steps*lr (default: the problem's)")
    run.add_argument("--seed", type=int, default=0, help="seed of the initial point theta0 (default 0)")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="problem parameter (repeatable)")
    run.add_argument("--solver-option", action="append", default=[], metavar="KEY=VALUE",
                     help="solver option (repeatable)")
    run.add_argument("--record-every", type=int, default=1, help="record every r steps (default 1)")
    run.add_argument("--save-params", action="store_true", help="also record theta at every record point")
    run.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    run.add_argument("--dtype", default="float64", help="float64 or float32 (default float64)")
    run.add_argument("--out", help="output file (default runs/<problem>-<solver>-<timestamp>.nc)")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def _add_sweep_parser(commands) -> None:
    sweep = commands.add_parser("sweep", help="run the grid of every combination of the given values on dask",
                                description="Run every combination of the comma-separated values as one dask task "
                                            "each; write DIR/members/<hash>.nc and the manifest DIR/sweep.json. "
                                            "Re-running the same command resumes (finished members are skipped).")
    sweep.add_argument("--problem", required=True, help="problem name(s), comma-separated")
    sweep.add_argument("--solver", required=True, help="solver name(s), comma-separated")
    sweep.add_argument("--lr", help="step size(s) eta (default: the problem's)")
    sweep.add_argument("--steps", help="number(s) of GD steps (default: the problem's)")
    sweep.add_argument("--seed", default="0", help="seed(s) of theta0 (default 0)")
    sweep.add_argument("--record-every", default="1", help="record every r steps (default 1)")
    sweep.add_argument("--param", action="append", default=[], metavar="KEY=V1,V2",
                       help="problem parameter value(s) (repeatable)")
    sweep.add_argument("--solver-option", action="append", default=[], metavar="KEY=V1,V2",
                       help="solver option value(s) (repeatable; solvers without the option ignore it)")
    sweep.add_argument("--save-params", action="store_true", help="also record theta at every record point")
    sweep.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    sweep.add_argument("--dtype", default="float64", help="float64 or float32 (default float64)")
    sweep.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    sweep.add_argument("--scheduler", metavar="ADDRESS",
                       help="address of a running dask scheduler, e.g. tcp://host:8786 (default: a local cluster)")
    sweep.add_argument("--workers", type=int, help="local cluster worker processes (default: one per core)")
    sweep.add_argument("--torch-threads", type=int,
                       help="torch threads per task (default: cores // workers locally)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gfbench", description="Continuous vs. discrete optimisation of neural networks.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run_parser(commands)
    _add_sweep_parser(commands)
    commands.add_parser("list", help="list problems and solvers with their parameters")
    info = commands.add_parser("info", help="print a dataset's attributes and variables")
    info.add_argument("path")
    return parser


def _default_out(problem: str, solver: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S_%f")
    folder = Path("runs")
    folder.mkdir(exist_ok=True)
    return folder / f"{problem}-{solver}-{stamp}.nc"


def cmd_run(args) -> int:
    import gfbench
    from gfbench.dataset import check_writable
    from gfbench.params import parse_assignments
    from gfbench.run import check_run_config

    problem = gfbench.get_problem(args.problem, **parse_assignments(args.param, "--param"))
    solver = gfbench.get_solver(args.solver, **parse_assignments(args.solver_option, "--solver-option"))
    lr = problem.default_lr if args.lr is None else args.lr
    steps = problem.default_steps if args.steps is None else args.steps
    check_run_config(problem, solver, lr=lr, steps=steps, seed=args.seed, record_every=args.record_every,
                     save_params=args.save_params, device=args.device, dtype=args.dtype)
    out = check_writable(args.out) if args.out else _default_out(problem.name, solver.name)

    ds = gfbench.run(problem, solver, lr=lr, steps=steps, seed=args.seed, record_every=args.record_every,
                     save_params=args.save_params, device=args.device, dtype=args.dtype, progress=not args.quiet)
    gfbench.save(ds, out)
    status = ds.attrs["status"]
    if not args.quiet:
        final = ds.isel(time=-1)
        print(f"{status}: {solver.label} on {problem.label}, lr={lr:g}, steps={steps}")
        print(f"  final t={float(final.time):g} (step {int(final.step)}): loss={float(final.loss):.6e}, "
              f"grad_norm={float(final.grad_norm):.3e}, distance_from_init={float(final.distance_from_init):.4g}")
        print(f"  gradient evaluations: {ds.attrs['n_grad_evals']}, wall time: {ds.attrs['wall_time_s']:.2f} s")
        print(f"  wrote {out}")
    if status != "completed":
        print(f"gfbench: {status}: {ds.attrs.get('message', '')}; wrote the recorded prefix to {out}", file=sys.stderr)
    return EXIT_BY_STATUS[status]


def _split(text: str, flag: str, kind: type = str) -> list:
    """``"a,b"`` → ``[kind("a"), kind("b")]`` for comma-separated sweep values."""
    from gfbench.params import ConfigError

    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ConfigError(f"{flag} expects comma-separated values, got {text!r}")
    try:
        return [kind(item) for item in items]
    except ValueError:
        raise ConfigError(f"{flag} values must be {kind.__name__}s, got {text!r}") from None


def cmd_sweep(args) -> int:
    from gfbench.params import parse_assignments
    from gfbench.sweep import MANIFEST, Grid, sweep

    grid = Grid(problem=_split(args.problem, "--problem"), solver=_split(args.solver, "--solver"),
                lr=None if args.lr is None else _split(args.lr, "--lr", float),
                steps=None if args.steps is None else _split(args.steps, "--steps", int),
                seed=_split(args.seed, "--seed", int), record_every=_split(args.record_every, "--record-every", int),
                params={key: _split(values, f"--param {key}")
                        for key, values in parse_assignments(args.param, "--param").items()},
                solver_options={key: _split(values, f"--solver-option {key}")
                                for key, values in parse_assignments(args.solver_option, "--solver-option").items()})
    try:
        summary = sweep(grid, args.out, scheduler=args.scheduler, workers=args.workers,
                        torch_threads=args.torch_threads, save_params=args.save_params, device=args.device,
                        dtype=args.dtype, progress=not args.quiet)
    except ImportError as error:  # dask.distributed is an optional dependency
        print(f"gfbench: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"gfbench: interrupted; finished members are kept in {args.out}; re-run the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    failed = summary.count("failed")
    if not args.quiet:
        counts = ", ".join(f"{status} {summary.count(status)}"
                           for status in ("completed", "diverged", "solver_failed", "failed")
                           if summary.count(status))
        print(f"{len(summary.members)} members ({len(summary.executed)} run, {len(summary.skipped)} already done): "
              f"{counts}; wrote {summary.out}")
    if failed:
        print(f"gfbench: {failed} member(s) failed; see {summary.out / MANIFEST}", file=sys.stderr)
    return EXIT_MEMBERS_FAILED if failed else EXIT_OK


def cmd_list(args) -> int:
    from gfbench.registry import problems, solvers

    for title, table in (("problems", problems()), ("solvers", solvers())):
        print(f"{title}:")
        for name, cls in table.items():
            summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            defaults = (f" [default lr={cls.default_lr:g}, steps={cls.default_steps}]"
                        if hasattr(cls, "default_lr") else "")
            print(f"  {name}: {summary}{defaults}")
            for param in cls.parameters:
                print(f"      {param.describe()}")
    return EXIT_OK


def cmd_info(args) -> int:
    import gfbench

    ds = gfbench.load(args.path)
    print(f"{args.path}")
    print("attributes:")
    for key, value in ds.attrs.items():
        print(f"  {key}: {value}")
    print(f"dimensions: {', '.join(f'{k}={v}' for k, v in ds.sizes.items())}")
    print("variables:")
    for name, var in ds.variables.items():
        print(f"  {name} ({', '.join(var.dims)}) [{var.attrs.get('units', '')}]: {var.attrs.get('long_name', '')}")
    return EXIT_OK


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "list": cmd_list, "info": cmd_info}


def main(argv: Sequence[str] | None = None) -> int:
    from gfbench.params import ConfigError

    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (_UsageError, ConfigError) as error:
        print(f"gfbench: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gfbench: interrupted; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
