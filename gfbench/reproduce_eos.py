"""The edge of stability and the continuous models of GD there, on one time axis t = kη.

Cohen, Kaur, Li, Kolter, Talwalkar (ICLR 2021): full-batch GD's sharpness λmax(∇²f) rises to 2/η
and hovers there; Cohen, Damian, Talwalkar, Kolter, Lee (2024–25): the central flow tracks GD's
time average there. GD runs with each step size η_i of ``lrs`` to one horizon T = steps·η_1,
recording θ and f at every step and η_i·λmax at about CHECKPOINTS points; gf, igr, second_order,
central (and principal where d ≤ its ``max_dim``) run with η_1 to T, recorded at the CHECKPOINTS
points of the η_1 run (gf's, igr's and second_order's sharpness too). Writes every dataset, the
flows' comparison against GD with η_1, ``eos.png`` (Cohen et al.'s panels) and ``summary.txt``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from .compare import compare
from .dataset import prepare_folder, save
from .params import POSITIVE, ConfigError
from .plot import _pyplot, save_figure
from .registry import get_problem, get_solver
from .reproduce import CHECKPOINTS, check_checkpoint_steps, check_figure_settings, run_plan
from .threads import requested_threads
from .spec import RunSpec, Setting


@dataclass(frozen=True)
class EosPreset:
    """A scale of the reproduction: ``mlp`` parameters, GD step sizes (the first the flows') and GD steps at it."""

    params: dict[str, Any]
    lrs: tuple[float, ...]
    steps: int


#: small: MNIST digits 0-3 average-pooled to 7 × 7 pixels, so a CPU runs every model in minutes;
#: full: the README's 784-input preset (the central flow there: hours of CPU).
SCALES = {
    "small": EosPreset({"classes": "0,1,2,3", "n_train": 200, "hidden": "32,32", "normalize": "none", "pool": 4},
                       (0.2, 0.25), 1200),
    "full": EosPreset({"classes": "0,1,2,3", "n_train": 500, "hidden": "100,100"}, (0.05, 0.04), 2000),
}
FLOWS = ("gf", "igr", "second_order", "central", "principal")
#: The central flow's options: see the README's measured convergence in substeps and eig_tol.
CENTRAL_OPTIONS = {"substeps": 1, "eig_tol": 1e-4}
#: Cohen et al.'s test: η·λmax first reaches ENTRY, then stays in BAND (units of 1/η).
ENTRY, BAND = 1.9, (1.8, 2.3)
#: GD steps over which GD's loss is averaged (centred) to compare with the central flow's prediction.
LOSS_WINDOW = 20
#: The run settings a user may set for every run; the reproduction sets the others.
EOS_SETTINGS = ("seed", "device", "dtype", "curvature_k", "curvature_tol")
SCALE = Setting("scale", str, "small", "problem and step sizes: small (7x7 inputs) or full (784)",
                choices=tuple(SCALES), requirement="be " + " or ".join(SCALES))
LR = Setting("lrs", float, None, "GD step sizes, the first the flows'", bounds=POSITIVE)


@dataclass(frozen=True)
class EosResult:
    """``gd`` runs by step size, ``flows`` by solver name, their ``comparison`` against GD with the
    first step size, the figure's path and the summary's text."""

    gd: dict[float, xr.Dataset]
    flows: dict[str, xr.Dataset]
    comparison: xr.Dataset
    figure_path: Path
    summary: str


def reproduce_eos(out: str | os.PathLike, *, scale: str = "small", lrs: Sequence[float] | None = None,
                  steps: int | None = None, params: dict[str, Any] | None = None, resume: bool = False,
                  progress: bool = True, threads: int | None = None, **settings: Any) -> EosResult:
    """Run GD at ``lrs`` and the flows at ``lrs[0]`` on ``mlp``; write datasets, comparison, eos.png, summary.txt.

    ``scale`` picks the problem parameters, step sizes and steps (SCALES) unless ``lrs``/``steps``
    are given; ``params`` override problem parameters; ``settings`` are EOS_SETTINGS, the same for
    every run. GD with η_i runs T/η_i steps (an integer, else ConfigError). ``resume`` and
    ``threads``: as ``reproduce_fig1``.
    """
    check_figure_settings(settings, EOS_SETTINGS)
    requested_threads(threads)
    preset = SCALES[SCALE.check(scale)]
    lrs = preset.lrs if lrs is None else [LR.check(lr) for lr in lrs]
    if not lrs or len(set(lrs)) != len(lrs):
        raise ConfigError(f"lrs must be distinct step sizes, at least one, got {list(lrs)}")
    steps = preset.steps if steps is None else check_checkpoint_steps(steps)
    horizon, every = steps * lrs[0], steps // CHECKPOINTS
    gd_steps = {lr: round(horizon / lr) for lr in lrs}
    for lr, count in gd_steps.items():
        if abs(count * lr - horizon) > 1e-9 * horizon:
            raise ConfigError(f"lr {lr:g} does not divide the horizon T = {steps} * {lrs[0]:g} = {horizon:g} "
                              f"into whole steps")
    problem = get_problem("mlp", **{**preset.params, **(params or {})})
    flows = [name for name in FLOWS if name != "principal" or problem.dim <= get_solver(name).options["max_dim"]]
    specs = {lr: RunSpec.resolve(problem, "gd", lr=lr, steps=count, record_every=1, save_params=True,
                                 curvature_every=max(1, count // CHECKPOINTS), **settings)
             for lr, count in gd_steps.items()}
    flow_solvers = {name: get_solver(name, **(CENTRAL_OPTIONS if name == "central" else {})) for name in flows}
    specs.update({name: RunSpec.resolve(problem, flow_solvers[name], lr=lrs[0], steps=steps, record_every=every,
                                        save_params=True, **settings,
                                        **({} if name in ("central", "principal") else {"curvature_every": 1}))
                  for name in flows})
    out = prepare_folder(out)
    done = run_plan([(key, spec, out / (f"gd-lr{key:g}.nc" if key in gd_steps else f"{key}.nc"))
                     for key, spec in specs.items()], resume=resume, progress=progress, desc="edge of stability runs",
                    threads=threads)
    gd = {lr: done[lr] for lr in lrs}
    flow_runs = {name: done[name] for name in flows}
    comparison = compare(list(flow_runs.values()), ref=gd[lrs[0]], names=flows)
    save(comparison, out / "comparison.nc")
    summary = summary_text(gd, flow_runs, comparison)
    (out / "summary.txt").write_text(summary + "\n")
    figure_path = save_figure(eos_figure(gd, flow_runs, comparison), out / "eos.png")
    return EosResult(gd, flow_runs, comparison, figure_path, summary)


def edge_entry(gd: xr.Dataset) -> tuple[float | None, float | None]:
    """(first t with η·λmax ≥ ENTRY, share of the later sharpness points in BAND), or (None, None)."""
    scaled = gd.sharpness_times_lr.dropna("time")
    above = np.flatnonzero(scaled.values >= ENTRY)
    if not len(above):
        return None, None
    after = scaled.values[above[0]:]
    return float(scaled.time[above[0]]), float(np.mean((after >= BAND[0]) & (after <= BAND[1])))


def window_average(loss: np.ndarray, window: int = LOSS_WINDOW) -> np.ndarray:
    """Centred moving average of GD's per-step loss: at step k the mean of loss[k − w//2 : k − w//2 + w]
    (w = ``window``), NaN where that window runs off the recorded steps."""
    averaged = np.full(len(loss), np.nan)
    averaged[window // 2: len(loss) - (window - 1) // 2] = np.convolve(loss, np.ones(window) / window, "valid")
    return averaged


def predicted_loss_error(gd: xr.Dataset, central: xr.Dataset, since: float) -> xr.DataArray:
    """(central_predicted_loss − GD's windowed loss) / GD's windowed loss at the central points t ≥ ``since``."""
    averaged = xr.DataArray(window_average(gd.loss.values), coords={"time": gd.time.values})
    at = averaged.sel(time=central.time.values, method="nearest")
    error = (central.central_predicted_loss.values - at.values) / at.values
    return xr.DataArray(error, coords={"time": central.time.values}).sel(time=slice(since, None)).dropna("time")


def _cost(ds: xr.Dataset) -> tuple[int, int, float]:
    """(gradients, HVPs, wall seconds) of the model itself, without the sharpness recording."""
    return (int(ds.attrs["n_grad_evals"]), int(ds.attrs.get("n_hvp", 0)),
            float(ds.attrs["wall_time_s"]) - float(ds.attrs.get("curvature_wall_time_s", 0.0)))


def summary_text(gd: dict[float, xr.Dataset], flows: dict[str, xr.Dataset], comparison: xr.Dataset) -> str:
    """GD's entry into the edge per step size; per flow its final and largest distance to GD with η_1, the
    ratio of the final one to GF's, and its cost per GD step relative to GD (gradients, HVPs, wall time)."""
    reference = next(iter(gd.values()))
    lines = [f"problem mlp {reference.attrs['problem_params']}, T = {float(reference.time[-1]):g}",
             f"{'GD lr':>8} {'2/lr':>8} {'t at lr*S>=' + str(ENTRY):>14} {'in band after':>14} {'max lr*S':>9}"]
    for lr, ds in gd.items():
        entry, fraction = edge_entry(ds)
        lines.append(f"{lr:>8g} {2 / lr:>8.4g} {'never' if entry is None else f'{entry:g}':>14} "
                     f"{'-' if entry is None else f'{fraction:.1%}':>14} "
                     f"{float(ds.sharpness_times_lr.max()):>9.3f}")
    grads, _, wall = _cost(reference)
    gf_final = float(comparison.distance.sel(run="gf")[-1])
    lines.append(f"{'flow':<13} {'status':<14} {'to t':>7} {'final dist':>11} {'/ gf':>7} {'max dist':>10} "
                 f"{'grads/GD':>9} {'HVPs/step':>10} {'wall/GD':>9}")
    for name, ds in flows.items():
        distance = comparison.distance.sel(run=name).dropna("time")
        flow_grads, hvps, flow_wall = _cost(ds)
        lines.append(f"{name:<13} {ds.attrs['status']:<14} {float(distance.time[-1]):>7.4g} "
                     f"{float(distance[-1]):>11.4e} {float(distance[-1]) / gf_final:>7.3f} "
                     f"{float(distance.max()):>10.4e} {flow_grads / grads:>9.2f} "
                     f"{hvps / int(reference.attrs['steps']):>10.1f} {flow_wall / wall:>9.1f}")
    entry = edge_entry(reference)[0]
    if entry is not None:
        error = predicted_loss_error(reference, flows["central"], entry)
        lines.append(f"central_predicted_loss vs GD's loss averaged over {LOSS_WINDOW} steps, t >= {entry:g}: "
                     f"mean |relative error| {float(abs(error).mean()):.3%}, max {float(abs(error).max()):.3%} "
                     f"({error.sizes['time']} points)")
    return "\n".join(lines)


def eos_figure(gd: dict[float, xr.Dataset], flows: dict[str, xr.Dataset], comparison: xr.Dataset):
    """Cohen et al.'s panels against t = kη: sharpness with the 2/η lines (axis up to 3/η, above which a
    catapult's spike would flatten the rest); GD's loss (per step and windowed) with the central
    flow's predicted time-averaged loss; each flow's distance to GD with η_1."""
    plt = _pyplot()
    figure, (sharp, loss, gap) = plt.subplots(1, 3, figsize=(16, 4.5), layout="constrained")
    for index, (lr, ds) in enumerate(gd.items()):
        color = f"C{index}"
        curve = ds.hessian_max_eig.dropna("time")
        sharp.plot(curve.time, curve, color=color, label=f"gd lr={lr:g}")
        sharp.axhline(2 / lr, color=color, linestyle=":", linewidth=1)
    reference = next(iter(gd.values()))
    lr0 = float(reference.attrs["lr"])
    colors = {name: f"C{len(gd) + index}" for index, name in enumerate(flows)}
    for name, ds in flows.items():
        color = colors[name]
        sharpness = ds.central_sharpness if name == "central" else ds.get("hessian_max_eig")
        if sharpness is not None:
            sharp.plot(ds.time, sharpness, color=color, linestyle="--", label=name)
        gap.plot(comparison.time, comparison.distance.sel(run=name), color=color, label=name)
    loss.plot(reference.time, reference.loss, color="C0", linewidth=0.5, alpha=0.6, label=f"gd lr={lr0:g}")
    loss.plot(reference.time, window_average(reference.loss.values), color="black",
              label=f"gd, mean over {LOSS_WINDOW} steps")
    loss.plot(flows["central"].time, flows["central"].central_predicted_loss, color=colors["central"],
              linestyle="--", label="central: predicted time-averaged loss")
    sharp.set(title="sharpness (dotted: 2/lr; axis up to 3/min lr)", ylabel="lambda_max of the Hessian",
              ylim=(0, 3 / min(gd)))
    loss.set(title="training loss", yscale="log", ylabel="loss")
    gap.set(title=f"distance to gd lr={lr0:g}", ylabel="||theta_gd(t) - theta_flow(t)||")
    for ax in (sharp, loss, gap):
        ax.set_xlabel("time t = step * lr")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    figure.suptitle("Edge of stability: GD against gradient flow, IGR, second-order, central flow")
    return figure
