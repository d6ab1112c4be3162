"""Command line: ``gfbench run | list | info``.

Exit codes: 0 completed, 2 bad input (one-line message, nothing computed or written),
3 diverged, 4 solver failed (the recorded prefix is written in both cases), 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_USAGE, EXIT_DIVERGED, EXIT_SOLVER_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
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
    run.add_argument("--data-dir", help="folder holding MNIST/raw/ for problems that read MNIST "
                                        "(same as --param data_dir=...; default $GFBENCH_DATA)")
    run.add_argument("--solver-option", action="append", default=[], metavar="KEY=VALUE",
                     help="solver option (repeatable)")
    run.add_argument("--record-every", type=int, default=1, help="record every r steps (default 1)")
    run.add_argument("--save-params", action="store_true", help="also record theta at every record point")
    run.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    run.add_argument("--dtype", default="float64", help="float64 or float32 (default float64)")
    run.add_argument("--out", help="output file (default runs/<problem>-<solver>-<timestamp>.nc)")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gfbench", description="Continuous vs. discrete optimisation of neural networks.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run_parser(commands)
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

    problem_params = parse_assignments(args.param, "--param")
    if args.data_dir is not None:
        problem_params["data_dir"] = args.data_dir
    problem = gfbench.get_problem(args.problem, **problem_params)
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


COMMANDS = {"run": cmd_run, "list": cmd_list, "info": cmd_info}


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
