"""The run specification: every setting of a run declared once, and all that derives from it.

``RUN_SETTINGS`` declares each setting of ``gfbench.run`` (name, type, default, bounds, help).
From that one declaration come: validation (``RunSpec.resolve``, the only place a run's inputs
are checked), the command-line flags of ``run``, ``sweep`` and ``reproduce``
(``gfbench.cli``), the axes a sweep may vary, the dataset attributes that identify a run
(``RunSpec.identity``), and the one rule by which ``reproduce --resume`` and ``sweep`` reuse a
file instead of running again (``reusable``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .curvature import check_curvature_options
from .curvature.eigen import DEFAULT_MAX_ITER
from .curvature.recorder import CURVATURE_EVERY, CURVATURE_K, CURVATURE_TOL
from .dataset import FINISHED_STATUSES, encode_attrs
from .memory import FLOAT64, check_fits
from .params import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, ConfigError, Param, UnknownNameError, suggest
from .problem import Problem
from .registry import get_problem, get_solver
from .solver import Solver

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _canonical_dtype(value: Any) -> Any:
    """torch.float64 → "float64" (the Python API takes either)."""
    names = {dtype: name for name, dtype in DTYPES.items()}
    return names.get(value, value) if isinstance(value, torch.dtype) else value


def _canonical_device(value: Any) -> Any:
    return str(value) if isinstance(value, torch.device) else value


def _resolve_device(device: str) -> str:
    """``cpu``, ``cuda[:i]`` or ``auto`` (cuda when available) as the device name that runs."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be cpu, cuda or auto, got {device!r}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu, cuda or auto, got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use cpu or auto")
    return str(resolved)


@dataclass(frozen=True)
class Setting(Param):
    """A run setting: a ``Param`` with an optional canonical form and resolution.

    ``canonical`` maps other accepted Python forms to the declared type first (torch.float32 →
    "float32"); ``resolve`` turns the checked value into the one that runs ("auto" → "cpu").
    """

    canonical: Callable[[Any], Any] | None = None
    resolve: Callable[[Any], Any] | None = None

    def check(self, value: Any, *, text: bool = False) -> Any:
        if self.canonical is not None:
            value = self.canonical(value)
        value = super().check(value, text=text)
        return value if self.resolve is None or value is None else self.resolve(value)


#: Every setting of a run. ``None`` defaults: lr and steps take the problem's ``default_lr`` and
#: ``default_steps``; curvature_every None records no curvature (the curvature settings are the
#: curvature recorder's own declarations).
RUN_SETTINGS: tuple[Param, ...] = (
    Setting("lr", float, None, "step size eta; time t = k*eta (auto: the problem's)", bounds=POSITIVE),
    Setting("steps", int, None, "number of GD steps k, so T = steps*lr (auto: the problem's)",
            bounds=AT_LEAST_ONE),
    Setting("seed", int, 0, "seed of the initial point theta0", bounds=NON_NEGATIVE),
    Setting("record_every", int, 1, "record every r steps (and the last)", bounds=AT_LEAST_ONE),
    Setting("save_params", bool, False, "also record theta at every record point"),
    Setting("device", str, "cpu", "cpu, cuda[:i] or auto (cuda when available)",
            requirement="be cpu, cuda or auto", canonical=_canonical_device, resolve=_resolve_device),
    Setting("dtype", str, "float64", "floating-point type of theta and the problem's data",
            choices=tuple(DTYPES), requirement="be float64 or float32", canonical=_canonical_dtype),
    CURVATURE_EVERY,
    replace(CURVATURE_K, bounds=None),  # its bound, 1 or 2k <= d, is checked once the problem is known
    CURVATURE_TOL,
)
SETTINGS_BY_NAME = {setting.name: setting for setting in RUN_SETTINGS}
#: Scalars recorded per point, at most (core variables, a problem's diagnostics, curvature), and
#: copies of θ a solver holds (an adaptive Runge–Kutta method's stages, error and dense output):
#: generous bounds for ``RunSpec.estimated_bytes``.
RECORD_SLOTS, SOLVER_STATE_COPIES = 32, 16
#: Settings that only matter when curvature is recorded, so they identify a run only then.
CURVATURE_SETTINGS = ("curvature_k", "curvature_tol")


def check_setting_names(given: Mapping[str, Any], what: str = "run setting") -> None:
    """UnknownNameError for a key of ``given`` that is not a run setting."""
    for key in given:
        if key not in SETTINGS_BY_NAME:
            raise UnknownNameError(f"unknown {what} {key!r}; allowed: {', '.join(SETTINGS_BY_NAME)}"
                                   + suggest(str(key), SETTINGS_BY_NAME))


def _instance(kind: str, value: Any, base: type, lookup: Callable[[str], Any]) -> Any:
    if isinstance(value, str):
        return lookup(value)
    if not isinstance(value, base):
        raise ConfigError(f"{kind} must be a name or a {base.__name__}, got {value!r}")
    return value


@dataclass(frozen=True)
class RunSpec:
    """A checked run: the problem, the solver and every setting's resolved value.

    Settings read as attributes (``spec.lr``, ``spec.curvature_every``); ``torch_dtype`` and
    ``torch_device`` are their torch forms. Build one with ``RunSpec.resolve``.
    """

    problem: Problem
    solver: Solver
    settings: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        settings = self.__dict__.get("settings", {})
        if name in settings:
            return settings[name]
        raise AttributeError(name)

    @classmethod
    def resolve(cls, problem: Problem | str, solver: Solver | str, **given: Any) -> RunSpec:
        """Check every input of a run once, before any computation; ConfigError names the bad value.

        ``given`` holds run settings by name; missing ones take their defaults, lr and steps the
        problem's.
        """
        problem = _instance("problem", problem, Problem, get_problem)
        solver = _instance("solver", solver, Solver, get_solver)
        check_setting_names(given)
        solver.check_problem(problem)
        settings = {setting.name: setting.check(given.get(setting.name, setting.default))
                    for setting in RUN_SETTINGS}
        settings["lr"] = problem.default_lr if settings["lr"] is None else settings["lr"]
        settings["steps"] = problem.default_steps if settings["steps"] is None else settings["steps"]
        if settings["curvature_every"] is not None:
            check_curvature_options(problem.dim, settings["curvature_every"], settings["curvature_k"],
                                    settings["curvature_tol"])
        spec = cls(problem, solver, settings)
        check_fits(f"the run ({spec.record_count:,} record points{', with theta' if spec.save_params else ''}, "
                   f"d={problem.dim:,})", spec.estimated_bytes())
        return spec

    @classmethod
    def from_identity(cls, identity: Mapping[str, Any]) -> RunSpec:
        """The spec whose ``identity()`` is ``identity`` (e.g. a sweep member's stored config)."""
        problem = get_problem(identity["problem"], **identity["problem_params"])
        solver = get_solver(identity["solver"], **identity["solver_options"])
        return cls.resolve(problem, solver, **{name: identity[name] for name in SETTINGS_BY_NAME if name in identity})

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.settings["dtype"]]

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.settings["device"])

    @property
    def record_count(self) -> int:
        """How many points are recorded: 0, r, 2r, … and ``steps``."""
        return self.steps // self.record_every + 1 + bool(self.steps % self.record_every)

    def estimated_bytes(self) -> int:
        """Memory of the run beyond the problem's own data: the record arrays (RECORD_SLOTS values a
        point, plus θ with save_params), the solver's copies of θ and the Lanczos basis with curvature."""
        d = self.problem.dim
        per_point = RECORD_SLOTS + (d if self.save_params else 0) + 2 * self.curvature_k
        basis = min(d, DEFAULT_MAX_ITER) * d if self.curvature_every is not None else 0
        return FLOAT64 * (self.record_count * per_point + SOLVER_STATE_COPIES * d + basis)

    @property
    def record_steps(self) -> np.ndarray:
        """0, r, 2r, …, and ``steps`` itself even when r does not divide it."""
        grid = np.arange(0, self.steps + 1, self.record_every, dtype=np.int64)  # record_count entries
        return grid if grid[-1] == self.steps else np.append(grid, np.int64(self.steps))

    def identity(self) -> dict[str, Any]:
        """The dataset attributes that pin down what the run computes (not when, where or how fast).

        Every setting, except the curvature ones when no curvature is recorded; the solver's
        options as used on this problem and dtype (automatic defaults filled in).
        """
        settings = {name: value for name, value in self.settings.items()
                    if self.curvature_every is not None or name not in CURVATURE_SETTINGS}
        return {"problem": self.problem.name, "problem_params": self.problem.params, "solver": self.solver.name,
                "solver_options": self.solver.effective_options(self.problem, self.torch_dtype), **settings}

    def digest(self) -> str:
        """The first 16 hex digits of the SHA-256 of the identity as sorted, compact JSON."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def reusable(self, attrs: Mapping[str, Any]) -> bool:
        """Whether a dataset with ``attrs`` is this run, finished: see ``reusable``."""
        return reusable(attrs, self.identity())


def reusable(attrs: Mapping[str, Any], identity: Mapping[str, Any]) -> bool:
    """The one resume rule: a stored dataset stands for a run when it ended by itself
    (``gfbench.dataset.FINISHED_STATUSES``) and every identity attribute, present or absent, is
    equal."""
    encoded = encode_attrs(dict(identity))
    return attrs.get("status") in FINISHED_STATUSES and all(
        attrs.get(key) == encoded.get(key) for key in identity)
