"""The one run loop: problem → solver → recorders → dataset."""
from __future__ import annotations

import time as wallclock
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import torch
import xarray as xr
from tqdm.auto import tqdm

from .curvature import CurvatureRecorder
from .dataset import dataset_attrs
from .field import GradientField
from .problem import Problem
from .recording import Recorder, RecordPoint, Recording, TrajectoryRecorder
from .solver import Solver, SolverFailure
from .spec import RUN_SETTINGS, RunSpec
from .threads import requested_threads, run_threads, torch_threads


def run(problem: Problem | str, solver: Solver | str, *, progress: bool = True, recorders: Sequence[Recorder] = (),
        threads: int | None = None, **settings: Any) -> xr.Dataset:
    """Run ``solver`` on ``problem`` from θ0 = problem.init(seed) up to t = steps · lr.

    ``settings`` are the run settings of ``gfbench.spec.RUN_SETTINGS`` (listed below), checked
    by ``RunSpec.resolve`` before anything is computed. The trajectory is recorded at steps 0,
    r, 2r, …, ``steps`` (r = ``record_every``) on the time axis t = k · lr shared by every
    solver, so datasets of the same problem, seed and lr align point by point. Memory is O(d)
    plus the recorded arrays (O(steps/r · d) only with ``save_params``).

    Stops early, keeping the recorded prefix, when θ, the loss or the gradient becomes
    non-finite or a recorded value is infinite (``status=diverged``; that point is not stored)
    or the solver fails (``status=solver_failed``); ``message`` says why and at what time.
    Ctrl-C raises ``RunInterrupted`` (a KeyboardInterrupt) holding the prefix, ``status=interrupted``.
    ``recorders`` add variables beyond the schema's core and the problem's own.
    ``threads`` is torch's intra-op thread count during the run (restored after it); None: as
    ``gfbench.threads.run_threads`` decides ($GFBENCH_THREADS, else 1 on a small problem, else the
    idle cores). It changes the speed, not the values: the attr ``torch_threads``, outside the identity.
    ``curvature_every=K`` adds λmin/λmax of the Hessian at every K-th record point and the last
    (``curvature_k`` extreme pairs at each end, Lanczos tolerance ``curvature_tol``; see
    ``gfbench.curvature.CurvatureRecorder``) plus the problem's ``curvature_recorders()``.
    Returns the dataset (schema v1, see ``gfbench.dataset``).
    """
    spec = RunSpec.resolve(problem, solver, **settings)
    problem, solver = spec.problem.to(spec.torch_device, spec.torch_dtype), spec.solver
    record_steps = spec.record_steps
    times = record_steps * spec.lr

    requested_threads(threads)  # a bad --threads or $GFBENCH_THREADS is refused before anything is computed
    started = wallclock.perf_counter()
    theta0 = problem.init(spec.seed)
    n_threads = run_threads(problem, theta0, threads)
    field = GradientField(problem)
    curvature = [] if spec.curvature_every is None else [
        CurvatureRecorder(problem.dim, spec.lr, every=spec.curvature_every, k=spec.curvature_k,
                          tol=spec.curvature_tol, final_index=len(record_steps) - 1),
        *problem.curvature_recorders()]
    integration = solver.start(field, theta0, spec.lr)
    recording = Recording([TrajectoryRecorder(problem.dim, spec.save_params), *problem.recorders(), *curvature,
                           *recorders, *integration.recorders()], len(record_steps))
    status, message, interrupt = "completed", "", None
    with torch.no_grad(), torch_threads(n_threads), tqdm(total=spec.steps, disable=not progress, delay=2.0, unit="step",
                               desc=f"{problem.name}/{solver.name}", leave=False) as bar:
        try:
            for index, step in enumerate(record_steps):
                try:
                    theta = integration.advance_to(int(step))
                except SolverFailure as failure:
                    status, message = "solver_failed", f"{solver.name}: {failure}"
                    break
                point = RecordPoint(index, int(step), float(times[index]), theta, theta0, field, problem)
                where = f"at step {int(step)} (t={times[index]:g})"
                if not (torch.isfinite(theta).all() and torch.isfinite(point.loss)
                        and torch.isfinite(point.grad).all()):
                    status, message = "diverged", f"non-finite parameters, loss or gradient {where}"
                    break
                infinite = recording.record(point)
                if infinite:
                    status, message = "diverged", f"infinite {', '.join(infinite)} {where}"
                    break
                bar.update(int(step) - bar.n)
        except KeyboardInterrupt as caught:
            interrupt = caught
            reached = int(record_steps[recording.n_filled - 1]) if recording.n_filled else None
            status, message = "interrupted", f"interrupted after recording step {reached}"
    wall_time = wallclock.perf_counter() - started

    ds = recording.to_dataset(times, record_steps)
    ds.attrs = dataset_attrs(
        "run",
        title=f"{solver.label} on {problem.label}, lr={spec.lr:g}",
        **merge_attrs(spec.identity(),
                      {"torch_version": torch.__version__,
                       "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "wall_time_s": wall_time, "n_grad_evals": field.n_evals, "torch_threads": n_threads},
                      integration.stats(), recording.attrs()),
        status=status,
        message=message,
    )
    if interrupt is not None:
        raise RunInterrupted(ds) from interrupt
    return ds


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C: ``dataset`` holds the recorded prefix with status ``interrupted``.

    A KeyboardInterrupt still, so a script or a loop of runs stops as the user asked.
    """

    def __init__(self, dataset: xr.Dataset) -> None:
        super().__init__(dataset.attrs["message"])
        self.dataset = dataset


def merge_attrs(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """The union of attribute mappings; a key given twice must carry the same value (a solver's stat
    or a recorder's attr never silently replaces the run's identity). None is an absent value."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if value is None:
                continue
            if key in merged and merged[key] != value:
                raise ValueError(f"two sources set the dataset attr {key!r}: {merged[key]!r} and {value!r}")
            merged[key] = value
    return merged


run.__doc__ += "\n    Run settings:\n\n" + "\n".join(f"    - ``{setting.name}``: {setting.describe()}"
                                                 for setting in RUN_SETTINGS) + "\n"
