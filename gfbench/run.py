"""The one run loop: problem → solver → recorders → dataset."""
from __future__ import annotations

import math
import time as wallclock
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from . import __version__
from .curvature import DEFAULT_TOL as DEFAULT_CURVATURE_TOL
from .curvature import CurvatureRecorder, check_curvature_options
from .dataset import CONVENTIONS, SCHEMA_VERSION, encode_attrs
from .field import GradientField
from .params import ConfigError
from .problem import Problem
from .recording import Recorder, RecordPoint, Recording, TrajectoryRecorder
from .registry import get_problem, get_solver
from .solver import Solver, SolverFailure

DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class RunConfig:
    """A checked run configuration; ``check_run_config`` is the only place that validates inputs."""

    problem: Problem
    solver: Solver
    lr: float
    steps: int
    seed: int
    record_every: int
    save_params: bool
    device: torch.device
    dtype: torch.dtype
    curvature_every: int | None = None
    curvature_k: int = 1
    curvature_tol: float = DEFAULT_CURVATURE_TOL

    @property
    def record_steps(self) -> np.ndarray:
        """0, r, 2r, …, and ``steps`` itself even when r does not divide it."""
        grid = np.arange(0, self.steps + 1, self.record_every, dtype=np.int64)
        return grid if grid[-1] == self.steps else np.append(grid, np.int64(self.steps))

    def identity(self) -> dict[str, Any]:
        """The dataset attributes that pin down what the run computes (not when, where or how fast)."""
        return {"problem": self.problem.name, "problem_params": self.problem.params, "solver": self.solver.name,
                "solver_options": self.solver.effective_options(self.problem, self.dtype), "lr": self.lr,
                "steps": self.steps, "record_every": self.record_every, "save_params": self.save_params,
                "seed": self.seed, "dtype": str(self.dtype).removeprefix("torch."), "device": str(self.device)}

    def produced(self, attrs: Mapping[str, Any]) -> bool:
        """Whether a dataset with ``attrs`` is this configuration's completed run (e.g. a file to reuse)."""
        return attrs.get("status") == "completed" and all(
            attrs.get(key) == value for key, value in encode_attrs(self.identity()).items())


def resolve_device(device: str | torch.device) -> torch.device:
    """``cpu``, ``cuda[:i]`` or ``auto`` (cuda when available) as a torch.device."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be cpu, cuda or auto, got {device!r}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu, cuda or auto, got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use cpu or auto")
    return resolved


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if dtype in DTYPES.values():
        return dtype
    raise ConfigError(f"dtype must be float64 or float32, got {dtype!r}")


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_run_config(problem, solver, *, lr, steps, seed=0, record_every=1, save_params=False,
                     device="cpu", dtype=torch.float64, curvature_every=None, curvature_k=1,
                     curvature_tol=DEFAULT_CURVATURE_TOL) -> RunConfig:
    """Validate every run input once, before any computation; raise ConfigError naming the bad value."""
    if isinstance(problem, str):
        problem = get_problem(problem)
    elif not isinstance(problem, Problem):
        raise ConfigError(f"problem must be a name or a Problem, got {problem!r}")
    if isinstance(solver, str):
        solver = get_solver(solver)
    elif not isinstance(solver, Solver):
        raise ConfigError(f"solver must be a name or a Solver, got {solver!r}")
    solver.check_problem(problem)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"lr must be a finite number > 0, got {lr!r}")
    if not isinstance(save_params, bool):
        raise ConfigError(f"save_params must be a bool, got {save_params!r}")
    if curvature_every is not None:
        check_curvature_options(problem.dim, curvature_every, curvature_k, curvature_tol)
    return RunConfig(problem, solver, float(lr), _integer("steps", steps, 1), _integer("seed", seed, 0),
                     _integer("record_every", record_every, 1), save_params, resolve_device(device),
                     resolve_dtype(dtype), curvature_every, curvature_k, float(curvature_tol))


def run(problem: Problem | str, solver: Solver | str, *, lr: float, steps: int, seed: int = 0,
        record_every: int = 1, save_params: bool = False, device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float64, progress: bool = True,
        recorders: Sequence[Recorder] = (), curvature_every: int | None = None, curvature_k: int = 1,
        curvature_tol: float = DEFAULT_CURVATURE_TOL) -> xr.Dataset:
    """Run ``solver`` on ``problem`` from θ0 = problem.init(seed) up to t = steps · lr.

    The trajectory is recorded at steps 0, r, 2r, …, ``steps`` (r = ``record_every``) on the
    time axis t = k · lr shared by every solver, so datasets of the same problem, seed and lr
    align point by point. Memory is O(d) plus the recorded arrays (O(steps/r · d) only with
    ``save_params``).

    Stops early, keeping the recorded prefix, when θ, the loss or the gradient becomes
    non-finite or a recorded value is infinite (``status=diverged``; that point is not stored) or the solver fails (``status=solver_failed``, ``message`` says why
    and at what time). ``recorders`` add variables beyond the schema's core and the problem's own.
    ``curvature_every=K`` adds λmin/λmax of the Hessian at every K-th record point and the last
    (``curvature_k`` extreme pairs at each end, Lanczos tolerance ``curvature_tol``; see
    ``gfbench.curvature.CurvatureRecorder``) plus the problem's ``curvature_recorders()``.
    Returns the dataset (schema v1, see ``gfbench.dataset``).
    """
    config = check_run_config(problem, solver, lr=lr, steps=steps, seed=seed, record_every=record_every,
                              save_params=save_params, device=device, dtype=dtype, curvature_every=curvature_every,
                              curvature_k=curvature_k, curvature_tol=curvature_tol)
    problem, solver = config.problem.to(config.device, config.dtype), config.solver
    record_steps = config.record_steps
    times = record_steps * config.lr

    started = wallclock.perf_counter()
    theta0 = problem.init(config.seed)
    field = GradientField(problem)
    curvature = [] if config.curvature_every is None else [
        CurvatureRecorder(problem.dim, config.lr, every=config.curvature_every, k=config.curvature_k,
                          tol=config.curvature_tol, final_index=len(record_steps) - 1),
        *problem.curvature_recorders()]
    recording = Recording([TrajectoryRecorder(problem.dim, config.save_params), *problem.recorders(), *curvature,
                           *recorders], len(record_steps))
    integration = solver.start(field, theta0, config.lr)
    status, message = "completed", None
    with torch.no_grad(), tqdm(total=config.steps, disable=not progress, delay=2.0, unit="step",
                               desc=f"{problem.name}/{solver.name}", leave=False) as bar:
        for index, step in enumerate(record_steps):
            try:
                theta = integration.advance_to(int(step))
            except SolverFailure as failure:
                status, message = "solver_failed", f"{solver.name}: {failure}"
                break
            point = RecordPoint(index, int(step), float(times[index]), theta, theta0, field, problem)
            where = f"at step {int(step)} (t={times[index]:g})"
            if not (torch.isfinite(theta).all() and torch.isfinite(point.loss) and torch.isfinite(point.grad).all()):
                status, message = "diverged", f"non-finite parameters, loss or gradient {where}"
                break
            infinite = recording.record(point)
            if infinite:
                status, message = "diverged", f"infinite {', '.join(infinite)} {where}"
                break
            bar.update(int(step) - bar.n)
    wall_time = wallclock.perf_counter() - started

    ds = recording.to_dataset(times, record_steps)
    ds.attrs = encode_attrs({
        "title": f"{solver.label} on {problem.label}, lr={config.lr:g}",
        "gfbench_version": __version__,
        "schema_version": SCHEMA_VERSION,
        **config.identity(),
        "torch_version": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": wall_time,
        "n_grad_evals": field.n_evals,
        **integration.stats(),
        **recording.attrs(),
        "status": status,
        "message": message,
        "Conventions": CONVENTIONS,
    })
    return ds
