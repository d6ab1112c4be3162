"""EC21 Figure 1: GD with step η0 against GD with η0/r and against gradient flow, at equal t = kη.

For each network, GD runs with η0 for ``steps`` iterations and with η0/r for r·``steps``
iterations (r in ``ratios``), and adaptive GF runs to the same horizon T = steps·η0 as the r → ∞
reference. All record θ on the paper's grid of 100 checkpoints of the η0 run, so every run is
compared with the η0 run at the same times. The figure has the paper's layout: per network, the
training loss of every run, and the distance of the η0 run from its initialisation alongside the
distances between the η0 run and the η0/r (and GF) runs, against the iteration of the η0 run.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Sequence

import xarray as xr
from tqdm.auto import tqdm

from .compare import compare
from .dataset import load, prepare_folder, save
from .field import GradientField
from .params import AT_LEAST_ONE, Bounds, ConfigError
from .plot import _pyplot, save_figure
from .registry import available_problems, get_problem, get_solver
from .run import RunInterrupted, run
from .spec import RunSpec, Setting, check_setting_names
from .threads import requested_threads, run_threads, torch_threads

PAPER_NETS = ("linear_fc", "relu_fc", "cnn")
#: Nets run by default at each scale: small scale leaves out the CNN, whose float64 convolutions
#: took 9 of the 10 minutes of a small-scale run on 2 CPU cores (``--net cnn`` runs it).
DEFAULT_NETS = {"paper": PAPER_NETS, "small": ("linear_fc", "relu_fc")}
PAPER_RATIOS = (2, 5, 10, 20)
PAPER_LR = 1e-3
#: η0 iterations per scale: the paper's 10,000, or a tenth of that, which on a 2-core CPU takes
#: minutes per network and already shows the drift staying far below the distance travelled.
SCALES = {"paper": 10_000, "small": 1_000}
CHECKPOINTS = 100
#: Gradients timed per net for the cost printed before a reproduction starts.
COST_PROBES = 3
#: Method, tolerances and treatment of the kinks of the GF reference, the same for every net (the
#: ReLU nets' default up to this session's relu_fc measurements, gfbench.classifier.RELU_FLOW_TOLERANCES,
#: where the generic rtol 1e-9 crawls at the kinks, with the kinks left to the step control as then);
#: fixed here so that a figure's runs keep their identity when a problem's defaults change.
GF_OPTIONS = {"method": "dopri5", "rtol": 1e-8, "atol": 1e-10, "kinks": "step_control"}
#: The run settings a user may set for every run of the figure; the figure sets the others
#: (lr, steps, record_every, save_params) from eta0, the ratios and the checkpoint grid.
FIGURE_SETTINGS = ("seed", "device", "dtype", "curvature_every", "curvature_k", "curvature_tol")
SCALE = Setting("scale", str, "small", "eta0 iterations: paper 10,000, small 1,000", choices=tuple(SCALES),
                requirement="be " + " or ".join(SCALES))
RATIO = Setting("ratios", int, None, "step-size ratios r of the eta0/r runs", bounds=Bounds(2, None),
                requirement="be integers >= 2")
ITERATIONS = Setting("steps", int, None, "eta0 iterations, a multiple of the checkpoint count", bounds=AT_LEAST_ONE)


@dataclass(frozen=True)
class Figure1Result:
    """Datasets written by ``reproduce_fig1``: per net, the runs by label and the comparison."""

    runs: dict[str, dict[str, xr.Dataset]]
    comparisons: dict[str, xr.Dataset]
    figure_path: Path
    summary: str


def reproduce_fig1(out: str | os.PathLike, *, nets: Sequence[str] | None = None,
                   ratios: Sequence[int] = PAPER_RATIOS, scale: str = "small", steps: int | None = None,
                   lr: float = PAPER_LR, params: dict[str, Any] | None = None,
                   gf_options: dict[str, Any] | None = None, resume: bool = False, progress: bool = True,
                   threads: int | None = None, **settings: Any) -> Figure1Result:
    """Run Figure 1's experiment on ``nets`` and write datasets, comparisons, ``fig1.png`` and ``summary.txt``.

    ``scale`` picks the η0 iteration count (paper: 10,000; small: 1,000) unless ``steps`` is given,
    and the nets unless ``nets`` is given (DEFAULT_NETS); with ``progress``, the GD gradient
    count of each net and its time at a measured gradient's cost are printed before starting;
    ``params`` are problem parameters applied to every net (e.g. ``n_train``); ``gf_options``
    the GF reference's solver options (default GF_OPTIONS); ``settings`` the run settings of
    FIGURE_SETTINGS (seed, device, dtype, curvature), the same for every run; ``threads`` torch's
    thread count of every run (None: ``gfbench.threads.run_threads`` decides per net). With ``resume``, a run whose file in ``out`` passes the resume rule
    (``gfbench.spec.reusable``) is read instead of run again (paper scale is hours of CPU; an
    interrupted reproduction keeps its finished runs).
    """
    check_figure_settings(settings, FIGURE_SETTINGS)
    requested_threads(threads)
    scale = SCALE.check(scale)
    nets = DEFAULT_NETS[scale] if nets is None else nets
    steps = SCALES[scale] if steps is None else check_checkpoint_steps(steps)
    ratios = [RATIO.check(r) for r in ratios]
    known = available_problems()
    for net in nets:
        if net not in known:
            raise ConfigError(f"unknown net {net!r}; available: {', '.join(sorted(known))}")
    problems = {net: get_problem(net, **(params or {})) for net in nets}
    gf_options = GF_OPTIONS if gf_options is None else gf_options
    solvers = {"gd": get_solver("gd"), "gf": get_solver("gf", **gf_options)}
    every = steps // CHECKPOINTS

    # (label, file stem, solver, ratio r): every run records at the η0 run's 100 checkpoints.
    plan = [("gd lr=eta0", "gd-eta0", "gd", 1)]
    plan += [(f"gd lr=eta0/{r}", f"gd-eta0_{r}", "gd", r) for r in ratios]
    plan += [("gf", "gf", "gf", 1)]
    specs = {(net, label): RunSpec.resolve(problems[net], solvers[solver], lr=lr / r, steps=steps * r,
                                           record_every=every * r, save_params=True, **settings)
             for net in nets for label, _, solver, r in plan}
    out = prepare_folder(out)
    if progress:
        for net in nets:
            tqdm.write(_cost_line(problems[net], steps * (1 + sum(ratios)), settings, threads))
    done = run_plan([((net, label), specs[net, label], out / f"{net}-{stem}.nc")
                     for net in nets for label, stem, _, _ in plan], resume=resume, progress=progress,
                    desc="figure 1 runs", threads=threads)
    runs = {net: {label: done[net, label] for label, _, _, _ in plan} for net in nets}

    comparisons = {}
    for net in nets:
        others = {label: ds for label, ds in runs[net].items() if label != "gd lr=eta0"}
        comparisons[net] = compare(list(others.values()), ref=runs[net]["gd lr=eta0"], names=list(others))
        save(comparisons[net], out / f"{net}-comparison.nc")
    summary = summary_lines(comparisons)
    (out / "summary.txt").write_text(summary + "\n")
    figure_path = save_figure(figure1(runs, comparisons, lr), out / "fig1.png")
    return Figure1Result(runs, comparisons, figure_path, summary)


def _cost_line(problem, gradients: int, settings: dict[str, Any], threads: int | None) -> str:
    """``net: N GD gradients, about T at X ms each (measured), plus GF``: what a net's part will cost,
    timed with the thread count its runs will have."""
    spec = RunSpec.resolve(problem, "gd", steps=1, **settings)
    moved = problem.to(spec.torch_device, spec.torch_dtype)
    field = GradientField(moved)
    theta = moved.init(spec.seed)
    with torch_threads(run_threads(moved, theta, threads)):
        field.gradient(theta)  # first call: allocations and caches, not the steady cost
        started = time.perf_counter()
        for _ in range(COST_PROBES):
            field.gradient(theta.clone())
        each = (time.perf_counter() - started) / COST_PROBES
    return (f"{problem.name}: {gradients:,} GD gradients, about {gradients * each / 60:.1f} min at "
            f"{1e3 * each:.2f} ms each (measured), plus GF")


def check_checkpoint_steps(steps: Any) -> int:
    """``steps`` if it is a positive multiple of CHECKPOINTS (the checkpoint grid), else ConfigError."""
    steps = ITERATIONS.check(steps)
    if steps % CHECKPOINTS:
        raise ConfigError(f"steps must be a positive multiple of {CHECKPOINTS} (the checkpoint grid), got {steps}")
    return steps


def check_figure_settings(settings: dict[str, Any], allowed: Sequence[str]) -> None:
    """ConfigError unless every key of ``settings`` is a run setting among ``allowed`` (the figure sets the others)."""
    check_setting_names(settings, "setting of the figure's runs")
    fixed = sorted(set(settings) - set(allowed))
    if fixed:
        raise ConfigError(f"the figure sets {', '.join(fixed)} itself; settings allowed: {', '.join(allowed)}")


def run_plan(jobs: Sequence[tuple[Hashable, RunSpec, Path]], *, resume: bool, progress: bool,
             desc: str, threads: int | None = None) -> dict[Hashable, xr.Dataset]:
    """Run each (key, spec, path) job and save its dataset at path; the datasets by key.

    ``threads``: each run's torch thread count (``gfbench.run``'s). With ``resume``, a file at path
    that passes the resume rule for spec is read instead. An
    interrupted run saves its prefix (status ``interrupted``, so a resume runs it again) and
    re-raises.
    """
    runs = {}
    for key, spec, path in tqdm(jobs, desc=desc, disable=not progress):
        runs[key] = _finished(path, spec) if resume else None
        if runs[key] is None:
            try:
                runs[key] = run(spec.problem, spec.solver, progress=progress, threads=threads, **spec.settings)
            except RunInterrupted as interrupted:
                save(interrupted.dataset, path)
                raise
            save(runs[key], path)
        elif progress:
            tqdm.write(f"reusing {path} (same configuration, finished)")
    return runs


def _finished(path: Path, spec: RunSpec) -> xr.Dataset | None:
    """The dataset in ``path`` when it passes the resume rule for ``spec``, else None."""
    if not path.is_file():
        return None
    try:
        ds = load(path)
    except ConfigError:  # unreadable or not a gfbench dataset: run again and overwrite it
        return None
    return ds if spec.reusable(ds.attrs) else None


def summary_lines(comparisons: dict[str, xr.Dataset]) -> str:
    """Per net and run: final distance to the η0 run, the η0 run's distance from init, and their ratio."""
    lines = [f"{'net':<12} {'run':<16} {'final t':>8} {'dist to eta0':>13} {'eta0 travel':>12} {'ratio':>10}"]
    for net, comparison in comparisons.items():
        travel = float(comparison.ref_distance_from_init[-1])
        for label in comparison.run.values:
            distance = float(comparison.distance.sel(run=label)[-1])
            lines.append(f"{net:<12} {str(label):<16} {float(comparison.time[-1]):>8.4g} {distance:>13.4e} "
                         f"{travel:>12.4e} {distance / travel:>10.3e}")
    return "\n".join(lines)


def figure1(runs: dict[str, dict[str, xr.Dataset]], comparisons: dict[str, xr.Dataset], lr: float):
    """The paper's layout: a row per net, training loss (left) and distances in weight space (right)."""
    plt = _pyplot()
    figure, axes = plt.subplots(len(runs), 2, figsize=(11, 3.8 * len(runs)), layout="constrained", squeeze=False)
    for row, (net, net_runs) in enumerate(runs.items()):
        loss_axes, distance_axes = axes[row]
        for label, ds in net_runs.items():
            loss_axes.plot(ds.time.values / lr, ds.loss.values, label=label)
        comparison = comparisons[net]
        iterations = comparison.time.values / lr
        distance_axes.plot(iterations, comparison.ref_distance_from_init.values, color="black",
                           label="eta0 run from init")
        for label in comparison.run.values:
            distance_axes.plot(iterations, comparison.distance.sel(run=label).values, label=f"eta0 vs {label}")
        loss_axes.set(title=f"{net}: training loss", xlabel="iteration of the eta0 run", ylabel="training loss")
        distance_axes.set(title=f"{net}: distance in weight space", xlabel="iteration of the eta0 run",
                          ylabel="Euclidean distance")
        for ax in (loss_axes, distance_axes):
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="x-small")
    figure.suptitle(f"GD with eta0 = {lr:g} against eta0/r and gradient flow (EC21 Figure 1)")
    return figure
