"""Distances between trajectories of one problem and initial point, on their shared times."""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import xarray as xr

from .dataset import dataset_attrs, load
from .params import ConfigError
from .timeaxis import match_times

#: The variable a flow run with the option ``error_estimate`` records (gfbench.ode.FlowErrorRecorder).
ERROR_ESTIMATE = "flow_error_estimate"


def run_label(ds: xr.Dataset) -> str:
    """``solver lr=η``, with the integration method for continuous solvers, e.g. ``gf[dopri5] lr=0.01``."""
    method = json.loads(ds.attrs.get("solver_options") or "{}").get("method")
    solver = f"{ds.attrs['solver']}[{method}]" if method else ds.attrs["solver"]
    return f"{solver} lr={float(ds.attrs['lr']):g}"


def _as_dataset(item: xr.Dataset | str | os.PathLike) -> xr.Dataset:
    return item if isinstance(item, xr.Dataset) else load(item)


def _check_same_start(ref: xr.Dataset, ds: xr.Dataset, name: str) -> None:
    for key in ("problem", "problem_params", "seed"):
        if ds.attrs.get(key) != ref.attrs.get(key):
            raise ConfigError(f"cannot compare {name}: its {key} {ds.attrs.get(key)!r} differs from the "
                              f"reference's {ref.attrs.get(key)!r}")
    if "theta" not in ds:
        raise ConfigError(f"cannot compare {name}: it has no theta; run it with --save-params (save_params=True)")
    if not np.array_equal(ds.theta.values[0], ref.theta.values[0]):
        raise ConfigError(f"cannot compare {name}: its initial point differs from the reference's")


def compare(datasets: Sequence[xr.Dataset | str | os.PathLike], ref: xr.Dataset | str | os.PathLike | int = 0,
            names: Sequence[str] | None = None) -> xr.Dataset:
    """Distances of each run from the reference run on the times both recorded.

    ``datasets`` are datasets or paths of one problem, seed and θ0, each recorded with θ;
    ``ref`` is one of them (index, dataset or path) or another such run. Returns a dataset on
    dims (run, time), time being the reference's recorded times shared with at least one run:

    - ``distance``: ‖θ_run(t) − θ_ref(t)‖ (NaN where the run did not record t),
    - ``relative_distance``: distance / ‖θ_ref(t) − θ0‖ (NaN at t = 0),
    - ``loss_difference``: f(θ_run(t)) − f(θ_ref(t)),
    - ``ref_distance_from_init``: ‖θ_ref(t) − θ0‖ (time),
    - ``flow_error_estimate`` (run, time) and ``ref_flow_error_estimate`` (time): the runs' and the
      reference's own estimates of their flow's global error (units of θ), where they were run with
      the flow option ``error_estimate`` (NaN for a run without it); by the triangle inequality
      the distance is resolved to within their sum,

    with coords ``run`` (labels), ``solver`` and ``lr`` per run.
    """
    loaded = [_as_dataset(item) for item in datasets]
    if not loaded:
        raise ConfigError("compare needs at least one dataset besides the reference")
    labels = list(names) if names is not None else [
        str(item) if isinstance(item, (str, os.PathLike)) else run_label(ds) for item, ds in zip(datasets, loaded)]
    if isinstance(ref, int):
        if not -len(loaded) <= ref < len(loaded):
            raise ConfigError(f"ref index {ref} is out of range for {len(loaded)} datasets")
        reference, ref_label = loaded[ref], labels[ref]
    else:
        reference = _as_dataset(ref)
        ref_label = str(ref) if isinstance(ref, (str, os.PathLike)) else run_label(reference)
    if "theta" not in reference:
        raise ConfigError(f"cannot compare against {ref_label}: it has no theta; run it with --save-params")

    ref_times = reference.time.values
    rows, estimates, shared = [], [], np.zeros(len(ref_times), bool)
    for ds, label in zip(loaded, labels):
        _check_same_start(reference, ds, label)
        i_ref, i_run = match_times(ref_times, ds.time.values)
        if len(i_ref) == 0:
            raise ConfigError(f"cannot compare {label}: its time grid shares no point with the reference's")
        distance = np.full(len(ref_times), np.nan)
        loss_difference = np.full(len(ref_times), np.nan)
        distance[i_ref] = np.linalg.norm(ds.theta.values[i_run] - reference.theta.values[i_ref], axis=1)
        loss_difference[i_ref] = ds.loss.values[i_run] - reference.loss.values[i_ref]
        rows.append((distance, loss_difference))
        estimate = np.full(len(ref_times), np.nan)
        if ERROR_ESTIMATE in ds:
            estimate[i_ref] = ds[ERROR_ESTIMATE].values[i_run]
        estimates.append(estimate)
        shared[i_ref] = True

    ref_travel = np.linalg.norm(reference.theta.values - reference.theta.values[0], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.array([d for d, _ in rows]) / np.where(ref_travel > 0, ref_travel, np.nan)
    keep = np.flatnonzero(shared)
    unit = {"units": "1"}
    result = xr.Dataset(
        {
            "distance": (("run", "time"), np.array([d for d, _ in rows])[:, keep],
                         {"long_name": "distance from the reference ||theta_run(t) - theta_ref(t)||", **unit}),
            "relative_distance": (("run", "time"), relative[:, keep],
                                  {"long_name": "relative distance ||theta_run(t) - theta_ref(t)|| / "
                                                "||theta_ref(t) - theta0||", **unit}),
            "loss_difference": (("run", "time"), np.array([l for _, l in rows])[:, keep],
                                {"long_name": "loss difference f(theta_run(t)) - f(theta_ref(t))", **unit}),
            "ref_distance_from_init": ("time", ref_travel[keep],
                                       {"long_name": "reference distance from init ||theta_ref(t) - theta0||",
                                        **unit}),
        },
        coords={
            "time": ("time", ref_times[keep], reference.time.attrs),
            "step": ("time", reference.step.values[keep], {"long_name": "reference iteration k", "units": "1"}),
            "run": ("run", labels, {"long_name": "compared run"}),
            "solver": ("run", [ds.attrs["solver"] for ds in loaded], {"long_name": "solver"}),
            "lr": ("run", [float(ds.attrs["lr"]) for ds in loaded], {"long_name": "step size eta", "units": "1"}),
        },
        attrs=dataset_attrs("comparison", title=f"comparison against {ref_label}", reference=ref_label,
                            reference_solver=reference.attrs["solver"], reference_lr=float(reference.attrs["lr"]),
                            problem=reference.attrs["problem"], problem_params=reference.attrs["problem_params"],
                            seed=int(reference.attrs["seed"])),
    )
    if any(ERROR_ESTIMATE in ds for ds in loaded):
        result[ERROR_ESTIMATE] = (("run", "time"), np.array(estimates)[:, keep],
                                  {"long_name": "the run's estimated flow error ||theta(t) - theta_tight(t)||", **unit})
    if ERROR_ESTIMATE in reference:
        result[f"ref_{ERROR_ESTIMATE}"] = ("time", reference[ERROR_ESTIMATE].values[keep],
                                           {"long_name": "the reference's estimated flow error "
                                                         "||theta_ref(t) - theta_ref,tight(t)||", **unit})
    return result


def summary_table(comparison: xr.Dataset) -> str:
    """One line per run: final shared time, distance, relative distance (final and max), loss difference.

    Where the runs or the reference carry error estimates, a last column "flow err est." gives, at
    that time, the run's estimate plus the reference's (those present; "-" if neither is): the
    distance is resolved when it is much larger. A run without an estimate adds nothing to it,
    which is exact for GD (no integration error) and an omission for a flow run without the option.
    """
    run_estimates = comparison.get(ERROR_ESTIMATE)
    ref_estimate = comparison.get(f"ref_{ERROR_ESTIMATE}")
    with_estimates = run_estimates is not None or ref_estimate is not None
    header = f"{'run':<40} {'t':>10} {'distance':>12} {'rel.dist':>10} {'max rel.':>10} {'loss diff':>12}"
    lines = [f"reference: {comparison.attrs['reference']}",
             header + (f" {'flow err est.':>13}" if with_estimates else "")]
    for run in comparison.run.values:
        row = comparison.sel(run=run)
        valid = np.flatnonzero(np.isfinite(row.distance.values))
        last = valid[-1]
        line = (f"{str(run)[-40:]:<40} {float(row.time[last]):>10.4g} {float(row.distance[last]):>12.4e} "
                f"{float(row.relative_distance[last]):>10.3e} {float(np.nanmax(row.relative_distance)):>10.3e} "
                f"{float(row.loss_difference[last]):>12.4e}")
        if with_estimates:
            terms = [float(values[last]) for values in (None if run_estimates is None else run_estimates.sel(run=run),
                                                        ref_estimate) if values is not None]
            terms = [term for term in terms if np.isfinite(term)]
            line += f" {sum(terms):>13.3e}" if terms else f" {'-':>13}"
        lines.append(line)
    return "\n".join(lines)
