"""A sweep's grid and its plan: every member checked as a ``RunSpec`` before anything runs."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..params import ConfigError, UnknownNameError, suggest
from ..registry import _lookup, available_problems, available_solvers
from ..spec import CURVATURE_SETTINGS, RUN_SETTINGS, SETTINGS_BY_NAME, RunSpec

#: Run settings whose automatic default is the problem's own (``default_lr``, ``default_steps``).
PROBLEM_DEFAULTS = ("lr", "steps")
#: Names a problem parameter or solver option cannot take, since they name the merged dataset's axes.
RESERVED = ("problem", "solver", *SETTINGS_BY_NAME, "time", "step", "param")


def _values(name: str, given: Any) -> tuple:
    """A grid axis as a tuple of distinct values; a scalar is a one-value axis."""
    values = (given,) if isinstance(given, (str, bytes)) or not isinstance(given, Iterable) else tuple(given)
    values = tuple(value.item() if isinstance(value, np.generic) else value for value in values)  # JSON-able
    if not values:
        raise ConfigError(f"sweep axis {name!r} has no values")
    if len(set(values)) != len(values):
        raise ConfigError(f"sweep axis {name!r} repeats a value: {list(values)!r}")
    return values


@dataclass(frozen=True)
class Grid:
    """The axes of a sweep; each is a value or a sequence of values, and the members are their product.

    ``problem`` and ``solver`` are names; ``params`` maps a problem parameter to its values and
    ``solver_options`` a solver option to its values (a problem or solver that does not declare
    the name ignores it, so ``solver=("gd", "gf"), solver_options={"rtol": (1e-8, 1e-10)}`` runs
    GD once); ``settings`` maps any run setting of ``gfbench.spec.RUN_SETTINGS`` to its values.
    Settings not given take their defaults; lr and steps the problems' (which must then agree).
    """

    problem: Any
    solver: Any
    params: Mapping[str, Any] = field(default_factory=dict)
    solver_options: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, grid: "Grid | Mapping[str, Any]") -> "Grid":
        """A Grid from ``{"problem": …, "solver": …, "params": {…}, "solver_options": {…}, <setting>: …}``."""
        if isinstance(grid, Grid):
            return grid
        structural = ("problem", "solver", "params", "solver_options")
        allowed = [*structural, *SETTINGS_BY_NAME]
        if not isinstance(grid, Mapping):
            raise ConfigError(f"a sweep grid is a Grid or a mapping with keys {', '.join(allowed)}; got {grid!r}")
        for key in grid:
            if key not in allowed:
                raise UnknownNameError(f"unknown sweep axis {key!r}; allowed: {', '.join(allowed)}"
                                       + suggest(str(key), allowed))
        if "problem" not in grid or "solver" not in grid:
            raise ConfigError("a sweep grid needs 'problem' and 'solver'")
        return cls(**{key: grid[key] for key in structural if key in grid},
                   settings={key: value for key, value in grid.items() if key not in structural})


@dataclass(frozen=True)
class SweepPlan:
    """A checked grid: the swept ``dims`` (axis → values), the one-value axes (``constants``),
    every grid point's member digest in C order over ``dims``, and each member's identity."""

    dims: dict[str, tuple]
    constants: dict[str, Any]
    points: tuple[str, ...]
    members: dict[str, dict[str, Any]]


def _typed_axis(kind: str, name: str, given: Any, classes: Sequence[type]) -> tuple:
    """Values of a problem-parameter or solver-option axis, converted by the first declaring class."""
    declaring = [cls for cls in classes if any(p.name == name for p in cls.parameters)]
    if not declaring:
        allowed = sorted({p.name for cls in classes for p in cls.parameters})
        raise UnknownNameError(f"no {kind} in the sweep declares the parameter {name!r}; allowed: "
                               f"{', '.join(allowed) or 'none'}" + suggest(name, allowed))
    if name in RESERVED:
        raise ConfigError(f"{kind} parameter {name!r} cannot be swept: the name is one of {', '.join(RESERVED)}")
    declaration = next(p for p in declaring[0].parameters if p.name == name)
    converted = [declaration.convert(value, f"{kind} {declaring[0].name!r}") for value in _values(name, given)]
    return _values(name, converted)


def _setting_axes(given: Mapping[str, Any], problem_classes: Sequence[type]) -> dict[str, tuple]:
    """Every run setting that identifies the members, as checked values: given, else its default."""
    axes = {}
    for setting in RUN_SETTINGS:
        if setting.name in given:
            axes[setting.name] = _values(setting.name, [setting.check(value)
                                                        for value in _values(setting.name, given[setting.name])])
        elif setting.name in PROBLEM_DEFAULTS:
            defaults = {getattr(cls, f"default_{setting.name}") for cls in problem_classes}
            if len(defaults) > 1:
                raise ConfigError(f"the sweep's problems have different default {setting.name} ({sorted(defaults)}); "
                                  f"give {setting.name}")
            axes[setting.name] = tuple(defaults)
        elif setting.default is not None:
            axes[setting.name] = (setting.default,)
    if "curvature_every" not in axes:  # they identify a run only when curvature is recorded
        for name in CURVATURE_SETTINGS:
            axes.pop(name)
    return axes


def plan_sweep(grid: Grid | Mapping[str, Any], **settings: Any) -> SweepPlan:
    """Resolve and check every member of ``grid`` (ConfigError on any bad value) without running any.

    ``settings`` are run settings given apart from the grid (one value each), e.g. ``dtype``.
    """
    grid = Grid.from_mapping(grid)
    for name in ("params", "solver_options", "settings"):
        if not isinstance(getattr(grid, name), Mapping):
            raise ConfigError(f"sweep {name} must map names to values, got {getattr(grid, name)!r}")
    both = set(settings) & set(grid.settings)
    if both:
        raise ConfigError(f"{sorted(both)} given both in the grid and apart from it; give each once")
    problem_classes = [_lookup("problem", name, available_problems()) for name in _values("problem", grid.problem)]
    solver_classes = [_lookup("solver", name, available_solvers()) for name in _values("solver", grid.solver)]
    param_axes = {name: _typed_axis("problem", name, values, problem_classes) for name, values in grid.params.items()}
    option_axes = {name: _typed_axis("solver", name, values, solver_classes)
                   for name, values in grid.solver_options.items()}
    clashes = set(param_axes) & set(option_axes)
    if clashes:
        raise ConfigError(f"{sorted(clashes)} named both as a problem parameter and a solver option; sweep them apart")
    setting_axes = _setting_axes({**grid.settings, **settings}, problem_classes)
    axes = {"problem": problem_classes, "solver": solver_classes, **param_axes, **option_axes, **setting_axes}

    built: dict[tuple, Any] = {}

    def instance(cls, point: Mapping[str, Any], swept: Mapping[str, tuple]):
        """``cls`` built with the point's values of the swept names it declares (built once per config)."""
        declared = {p.name for p in cls.parameters}
        given = {name: point[name] for name in swept if name in declared}
        key = (cls, tuple(sorted(given.items())))
        if key not in built:
            built[key] = cls(**given)
        return built[key]

    members: dict[str, dict[str, Any]] = {}
    points = []
    for combination in itertools.product(*axes.values()):
        point = dict(zip(axes, combination))
        spec = RunSpec.resolve(instance(point["problem"], point, param_axes),
                               instance(point["solver"], point, option_axes),
                               **{name: point[name] for name in setting_axes})
        digest = spec.digest()
        members.setdefault(digest, spec.identity())
        points.append(digest)
    axes.update(problem=tuple(cls.name for cls in problem_classes), solver=tuple(cls.name for cls in solver_classes))
    dims = {name: values for name, values in axes.items() if len(values) > 1}
    constants = {name: values[0] for name, values in axes.items() if len(values) == 1}
    return SweepPlan(dims, constants, tuple(points), members)
