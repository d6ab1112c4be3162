"""Command line: ``gfbench run | reproduce | sweep | list | info | compare | plot | bound``.

Exit codes: 0 completed, 2 bad input (one-line message, nothing computed or written),
3 diverged, 4 solver failed, 130 interrupted by Ctrl-C, 143 terminated by SIGTERM (``run`` writes
the recorded prefix in these four cases, with status diverged, solver_failed or interrupted).
``gfbench sweep``: 0 when every member has a dataset (completed, diverged or solver_failed),
5 when some member failed (its error is in the manifest), 130 interrupted (finished members kept).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

EXIT_OK, EXIT_USAGE, EXIT_DIVERGED, EXIT_SOLVER_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
EXIT_MEMBERS_FAILED = 5
EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_BY_STATUS = {"completed": EXIT_OK, "diverged": EXIT_DIVERGED, "solver_failed": EXIT_SOLVER_FAILED,
                  "interrupted": EXIT_INTERRUPTED}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that runs keep their prefix and writes clean up after themselves."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated("terminated by SIGTERM")


def _interrupt_exit_code(error: BaseException) -> int:
    """143 when SIGTERM caused ``error`` (directly or as the cause of a RunInterrupted), else 130."""
    terminated = isinstance(error, _Terminated) or isinstance(error.__cause__, _Terminated)
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump), exit code 2."""

    def error(self, message: str) -> None:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


class _UsageError(Exception):
    pass


def _add_setting_flags(parser, names, *, comma_lists: bool = False) -> None:
    """One flag per run setting of ``gfbench.spec.RUN_SETTINGS``, e.g. ``--record-every``, from its declaration.

    Values are read by the setting's type (``comma_lists``: kept as text, comma-separated values
    for sweeps); bool settings are plain switches.
    """
    from gfbench.spec import SETTINGS_BY_NAME

    for name in names:
        setting = SETTINGS_BY_NAME[name]
        flag = "--" + name.replace("_", "-")
        if setting.type is bool:
            parser.add_argument(flag, action="store_true", default=None, help=setting.help)
            continue
        default = "auto" if setting.default is None else setting.default
        plural = ", comma-separated to sweep" if comma_lists else ""
        parser.add_argument(flag, metavar=name.upper(), type=None if comma_lists else _text_type(setting),
                            help=f"{setting.help} (default {default}{plural})")


def _add_threads_flag(parser) -> None:
    """``--threads N``, from its declaration ``gfbench.threads.THREADS``."""
    from gfbench.threads import THREADS

    parser.add_argument("--threads", metavar="N", type=_text_type(THREADS), help=THREADS.help)


def _text_type(setting):
    """An argparse ``type`` reading one value of ``setting``; bounds and choices are checked later.

    It bears the type's name, so that argparse reports e.g. "invalid int value: 'x'".
    """
    def parse(text: str):
        return setting.parse(text, setting.name)

    parse.__name__ = setting.type.__name__
    return parse


def _given_settings(args, names) -> dict[str, Any]:
    """The run settings given on the command line, by name."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _add_run_parser(commands) -> None:
    from gfbench.spec import SETTINGS_BY_NAME

    run = commands.add_parser("run", help="run a solver on a problem and write a netCDF dataset",
                              description="Run SOLVER on PROBLEM from theta0 = init(seed) to t = steps*lr and "
                                          "write the trajectory as a netCDF dataset.")
    run.add_argument("--problem", required=True, help="problem name (see 'gfbench list')")
    run.add_argument("--solver", required=True, help="solver name (see 'gfbench list')")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="problem parameter (repeatable)")
    run.add_argument("--data-dir", help="folder holding MNIST/raw/ for problems that read MNIST "
                                        "(same as --param data_dir=...; default $GFBENCH_DATA)")
    run.add_argument("--solver-option", action="append", default=[], metavar="KEY=VALUE",
                     help="solver option (repeatable)")
    _add_setting_flags(run, SETTINGS_BY_NAME)
    _add_threads_flag(run)
    run.add_argument("--out", help="output file (default runs/<problem>-<solver>-<timestamp>.nc)")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def _add_sweep_parser(commands) -> None:
    from gfbench.spec import SETTINGS_BY_NAME

    sweep = commands.add_parser("sweep", help="run the grid of every combination of the given values on dask",
                                description="Run every combination of the comma-separated values as one dask task "
                                            "each; write DIR/members/<digest>.nc and the manifest DIR/sweep.json. "
                                            "Re-running the same command resumes (finished members are skipped).")
    sweep.add_argument("--problem", required=True, help="problem name(s), comma-separated")
    sweep.add_argument("--solver", required=True, help="solver name(s), comma-separated")
    sweep.add_argument("--param", action="append", default=[], metavar="KEY=V1,V2",
                       help="problem parameter value(s) (repeatable)")
    sweep.add_argument("--solver-option", action="append", default=[], metavar="KEY=V1,V2",
                       help="solver option value(s) (repeatable; solvers without the option ignore it)")
    _add_setting_flags(sweep, SETTINGS_BY_NAME, comma_lists=True)
    sweep.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    sweep.add_argument("--scheduler", metavar="ADDRESS",
                       help="address of a running dask scheduler, e.g. tcp://host:8786 (default: a local cluster)")
    sweep.add_argument("--workers", help="local cluster worker processes (default: one per core)")
    sweep.add_argument("--torch-threads", help="torch threads per task (default: cores // workers locally)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def _add_figure_flags(parser, settings, default_out: str) -> None:
    """The flags every ``reproduce`` figure takes: problem parameters, run settings, output, resume, quiet."""
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="problem parameter applied to every run (repeatable)")
    parser.add_argument("--data-dir", help="folder holding MNIST/raw/ (same as --param data_dir=...)")
    _add_setting_flags(parser, settings)
    _add_threads_flag(parser)
    parser.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    parser.add_argument("--resume", action="store_true",
                        help="reuse runs already in --out whose stored configuration is this run's")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    from gfbench.reproduce import FIGURE_SETTINGS
    from gfbench.reproduce_eos import EOS_SETTINGS

    parser = _Parser(prog="gfbench", description="Continuous vs. discrete optimisation of neural networks.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run_parser(commands)
    _add_sweep_parser(commands)
    commands.add_parser("list", help="list problems and solvers with their parameters")
    info = commands.add_parser("info", help="print a dataset's attributes and variables")
    info.add_argument("path")
    compare = commands.add_parser("compare", help="distances between runs of one problem and initial point",
                                  description="Align runs on their shared times and print (and write) each run's "
                                              "distance from the reference run.")
    compare.add_argument("paths", nargs="+", metavar="PATH", help="datasets recorded with --save-params")
    compare.add_argument("--ref", help="the reference dataset (default: the first PATH)")
    compare.add_argument("--out", help="also write the comparison as netCDF here")
    plot = commands.add_parser("plot", help="plot a variable against time as a PNG")
    plot.add_argument("paths", nargs="+", metavar="PATH", help="run or comparison datasets")
    plot.add_argument("--var", default=None, help="variable to plot (default: loss, or distance for comparisons)")
    plot.add_argument("--logy", action="store_true", help="logarithmic y axis")
    plot.add_argument("--out", help="PNG path (default: beside the first PATH, named after it and the variable)")
    reproduce = commands.add_parser("reproduce", help="reproduce a figure: fig1 (EC21) or eos (edge of stability)")
    figures = reproduce.add_subparsers(dest="figure", required=True, parser_class=_Parser)
    fig1 = figures.add_parser("fig1", help="EC21 Figure 1: GD at eta0 vs eta0/r and gradient flow")
    fig1.add_argument("--net", help="comma list of problems (default: linear_fc,relu_fc at small scale, "
                                    "and cnn too at paper scale)")
    fig1.add_argument("--ratios", default="2,5,10,20", help="comma list of step-size ratios r >= 2")
    fig1.add_argument("--scale", default="small", help="paper (10,000 eta0 iterations) or small (1,000)")
    fig1.add_argument("--steps", type=int, help="eta0 iterations, overriding --scale (multiple of 100)")
    fig1.add_argument("--lr", type=float, default=1e-3, help="eta0 (default 0.001, the paper's)")
    fig1.add_argument("--gf-option", action="append", default=[], metavar="KEY=VALUE",
                      help="option of the GF reference (repeatable; default rtol=1e-8, atol=1e-10)")
    _add_figure_flags(fig1, FIGURE_SETTINGS, "runs/fig1")
    eos = figures.add_parser("eos", help="edge of stability: GD at several step sizes against gf, igr, "
                                         "second_order, central (and principal where d is small)")
    eos.add_argument("--scale", default="small", help="small (mlp on 7x7-pooled MNIST, minutes) or full "
                                                      "(784 inputs, hours)")
    eos.add_argument("--lrs", help="comma list of GD step sizes, the first the flows' (default: the scale's)")
    eos.add_argument("--steps", type=int, help="GD steps at the first step size (multiple of 100)")
    _add_figure_flags(eos, EOS_SETTINGS, "runs/eos")
    bound = commands.add_parser("bound", help="evaluate EC21's bounds on a gradient flow dataset with curvature",
                                description="Theorem 3's step-size bound eta*(t, eps) from a gf dataset recorded "
                                            "with --curvature-every; Corollary 1 where the problem has global "
                                            "curvature constants; Theorem 2's bound for a GD run (--gd).")
    bound.add_argument("path", help="gradient flow dataset recorded with --curvature-every")
    bound.add_argument("--eps", type=float, required=True, help="tolerance eps on ||theta_k - theta(k lr)||")
    bound.add_argument("--t-tilde", type=float, help="horizon t~ (default: the last curvature evaluation)")
    bound.add_argument("--gd", metavar="PATH",
                       help="GD dataset (same problem and seed, --save-params, record every 1) for Theorem 2")
    return parser


def _default_out(problem: str, solver: str) -> Path:
    """``runs/<problem>-<solver>-<timestamp>.nc`` (``runs/`` is created when the file is written)."""
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S_%f")
    return Path("runs") / f"{problem}-{solver}-{stamp}.nc"


def _problem_params(args) -> dict[str, str]:
    """``--param`` assignments, with ``--data-dir`` as the ``data_dir`` parameter."""
    from gfbench.params import parse_assignments

    params = parse_assignments(args.param, "--param")
    if args.data_dir is not None:
        params["data_dir"] = args.data_dir
    return params


def cmd_run(args) -> int:
    import gfbench
    from gfbench.dataset import check_writable
    from gfbench.params import parse_assignments
    from gfbench.run import RunInterrupted
    from gfbench.spec import SETTINGS_BY_NAME, RunSpec

    problem = gfbench.get_problem(args.problem, **_problem_params(args))
    solver = gfbench.get_solver(args.solver, **parse_assignments(args.solver_option, "--solver-option"))
    spec = RunSpec.resolve(problem, solver, **_given_settings(args, SETTINGS_BY_NAME))
    out = check_writable(args.out) if args.out is not None else _default_out(problem.name, solver.name)

    try:
        ds = gfbench.run(problem, solver, progress=not args.quiet, threads=args.threads, **spec.settings)
    except RunInterrupted as interrupted:
        gfbench.save(interrupted.dataset, out)
        print(f"gfbench: {interrupted}; wrote the recorded prefix to {out}", file=sys.stderr)
        return _interrupt_exit_code(interrupted)
    gfbench.save(ds, out)
    status = ds.attrs["status"]
    if not args.quiet:
        final = ds.isel(time=-1)
        print(f"{status}: {solver.label} on {problem.label}, lr={spec.lr:g}, steps={spec.steps}")
        print(f"  final t={float(final.time):g} (step {int(final.step)}): loss={float(final.loss):.6e}, "
              f"grad_norm={float(final.grad_norm):.3e}, distance_from_init={float(final.distance_from_init):.4g}")
        print(f"  gradient evaluations: {ds.attrs['n_grad_evals']}, wall time: {ds.attrs['wall_time_s']:.2f} s "
              f"(torch threads: {ds.attrs['torch_threads']})")
        print(f"  wrote {out}")
    if status != "completed":
        print(f"gfbench: {status}: {ds.attrs.get('message', '')}; wrote the recorded prefix to {out}", file=sys.stderr)
    return EXIT_BY_STATUS[status]


def _split(text: str, flag: str) -> list[str]:
    """``"a,b"`` → ``["a", "b"]`` for comma-separated sweep values."""
    from gfbench.params import ConfigError

    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ConfigError(f"{flag} expects comma-separated values, got {text!r}")
    return items


def cmd_sweep(args) -> int:
    from gfbench.dataset import MEMBER_STATUSES
    from gfbench.params import parse_assignments
    from gfbench.spec import SETTINGS_BY_NAME
    from gfbench.sweep import MANIFEST, Grid, sweep
    from gfbench.sweep.execute import TORCH_THREADS, WORKERS

    settings = {name: [SETTINGS_BY_NAME[name].check(value, text=True)
                       for value in ([text] if isinstance(text, bool) else _split(text, "--" + name.replace("_", "-")))]
                for name, text in _given_settings(args, SETTINGS_BY_NAME).items()}
    grid = Grid(problem=_split(args.problem, "--problem"), solver=_split(args.solver, "--solver"),
                params={key: _split(values, f"--param {key}")
                        for key, values in parse_assignments(args.param, "--param").items()},
                solver_options={key: _split(values, f"--solver-option {key}")
                                for key, values in parse_assignments(args.solver_option, "--solver-option").items()},
                settings=settings)
    try:
        summary = sweep(grid, args.out, scheduler=args.scheduler, workers=WORKERS.check(args.workers, text=True),
                        torch_threads=TORCH_THREADS.check(args.torch_threads, text=True), progress=not args.quiet)
    except ImportError as error:  # dask.distributed is an optional dependency
        print(f"gfbench: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as interrupt:
        print(f"gfbench: interrupted; finished members are kept in {args.out}; re-run the same command to resume",
              file=sys.stderr)
        return _interrupt_exit_code(interrupt)
    failed = summary.count("failed")
    if not args.quiet:
        counts = ", ".join(f"{status} {summary.count(status)}" for status in MEMBER_STATUSES if summary.count(status))
        print(f"{len(summary.members)} members ({len(summary.executed)} run, {len(summary.skipped)} already done): "
              f"{counts}; wrote {summary.out}")
    if failed:
        print(f"gfbench: {failed} member(s) failed; see {summary.out / MANIFEST}", file=sys.stderr)
    return EXIT_MEMBERS_FAILED if failed else EXIT_OK


def cmd_list(args) -> int:
    from gfbench.registry import catalog

    for kind in ("problem", "solver"):
        names = catalog(kind)
        print(f"{kind}s:")
        for name, cls in names.available.items():
            summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            defaults = (f" [default lr={cls.default_lr:g}, steps={cls.default_steps}]"
                        if hasattr(cls, "default_lr") else "")
            print(f"  {name}: {summary}{defaults}")
            for param in cls.parameters:
                print(f"      {param.describe()}")
        for name, reason in names.unavailable.items():
            print(f"  {name}: unavailable: {reason}")
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


def _check_out(out: str | Path, inputs: Sequence[str]) -> Path:
    """``check_writable(out)``, refusing an ``out`` that is one of the ``inputs`` (however spelled or linked)."""
    from gfbench.dataset import check_writable
    from gfbench.params import ConfigError

    path = check_writable(out)
    for given in inputs:
        if path.exists() and Path(given).exists() and os.path.samefile(path, given):
            raise ConfigError(f"output {str(out)!r} is the input {given!r}; give another output path")
    return path


def cmd_compare(args) -> int:
    import gfbench
    from gfbench.compare import summary_table

    ref = args.ref or args.paths[0]
    out = None if args.out is None else _check_out(args.out, [*args.paths, ref])
    runs = [path for path in args.paths if path != ref]
    comparison = gfbench.compare(runs, ref=ref)
    print(summary_table(comparison))
    if out is not None:
        gfbench.save(comparison, out)
        print(f"wrote {out}")
    return EXIT_OK


def cmd_plot(args) -> int:
    import re

    import gfbench
    from gfbench.plot import save_figure

    datasets = [gfbench.load(path) for path in args.paths]
    var = args.var if args.var is not None else (
        "distance" if datasets[0].attrs.get("kind") == "comparison" else "loss")
    figure = gfbench.plot(datasets, var, logy=args.logy)  # first: it refuses a var the datasets lack
    first = Path(args.paths[0])
    suffix = re.sub(r"[^\w.-]", "_", var)  # netCDF allows names (spaces, colons, ...) unfit for a file name
    default = first.with_name(f"{first.stem}-{suffix}.png")
    out = _check_out(default if args.out is None else args.out, args.paths)
    save_figure(figure, out)
    print(f"wrote {out}")
    return EXIT_OK


def cmd_reproduce(args) -> int:
    from gfbench.params import parse_assignments
    from gfbench.reproduce import FIGURE_SETTINGS, RATIO, reproduce_fig1
    from gfbench.reproduce_eos import EOS_SETTINGS, LR, reproduce_eos

    if args.figure == "eos":
        lrs = None if args.lrs is None else [LR.check(lr, text=True) for lr in _split(args.lrs, "--lrs")]
        result = reproduce_eos(args.out, scale=args.scale, lrs=lrs, steps=args.steps, params=_problem_params(args),
                               resume=args.resume, progress=not args.quiet, threads=args.threads,
                               **_given_settings(args, EOS_SETTINGS))
    else:
        nets = None if args.net is None else _split(args.net, "--net")
        result = reproduce_fig1(args.out, nets=nets, scale=args.scale, steps=args.steps,
                                ratios=[RATIO.check(ratio, text=True) for ratio in _split(args.ratios, "--ratios")],
                                lr=args.lr, params=_problem_params(args),
                                gf_options=parse_assignments(args.gf_option, "--gf-option") or None,
                                resume=args.resume, progress=not args.quiet, threads=args.threads,
                                **_given_settings(args, FIGURE_SETTINGS))
    print(result.summary)
    print(f"wrote {args.out}/ (datasets, comparisons, summary.txt) and {result.figure_path}")
    return EXIT_OK


def cmd_bound(args) -> int:
    import gfbench
    from gfbench import theory

    ds = gfbench.load(args.path)
    ds_gd = gfbench.load(args.gd) if args.gd else None
    summary = theory.bound_summary(ds, args.eps, args.t_tilde, ds_gd, t_tilde_name="--t-tilde")
    print(f"{args.path}: {ds.attrs['title']}")
    print(f"Theorem 3 (Eq. 7), eps={summary.eps:g}, t~={summary.t_tilde:g}: eta* = {summary.eta_star:.6g}")
    print(f"  beta = {summary.beta:.6g}, gamma = {summary.gamma:.6g}, mu(t~) = {summary.mu:.6g} ({summary.estimate})")
    print(f"  run lr = {summary.lr:g}: {'below' if summary.lr_below_eta_star else 'not below'} eta*")
    corollary = summary.corollary1
    if corollary is not None:
        caveat = "" if corollary.nonnegative else " (f is not non-negative here: the corollary's assumption fails)"
        print(f"Corollary 1, global beta = {corollary.beta:g}, m = {corollary.m:g}, {corollary.regime}: "
              f"eta < {corollary.eta:.6g}{caveat}")
    theorem2 = summary.theorem2
    if theorem2 is not None:
        print(f"Theorem 2 (Eq. 4) for {args.gd}: bound at t={theorem2.t:g} is {theorem2.bound:.6g}")
        if theorem2.holds is not None:
            print(f"  measured ||theta_k - theta(k lr)|| max {theorem2.max_distance:.6g}; bound holds at every t: "
                  f"{'yes' if theorem2.holds else 'NO'}; tightness bound/measured in "
                  f"[{theorem2.tightness[0]:.4g}, {theorem2.tightness[1]:.4g}]")
    for name, margin in summary.lambda_min_margins.items():
        print(f"{name}: min over evaluated points of lambda_min - bound = {margin:.6g}")
    return EXIT_OK


COMMANDS = {"run": cmd_run, "reproduce": cmd_reproduce, "sweep": cmd_sweep, "list": cmd_list, "info": cmd_info,
            "compare": cmd_compare, "plot": cmd_plot, "bound": cmd_bound}


def main(argv: Sequence[str] | None = None) -> int:
    from gfbench.params import ConfigError

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (_UsageError, ConfigError) as error:
        print(f"gfbench: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as interrupt:
        print(f"gfbench: {'terminated' if isinstance(interrupt, _Terminated) else 'interrupted'}; "
              "nothing more written", file=sys.stderr)
        return _interrupt_exit_code(interrupt)
    except BrokenPipeError:  # the reader stopped early (`gfbench list | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return EXIT_OK
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
