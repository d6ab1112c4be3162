"""Problems and solvers by name: the built-ins plus entry-point plugins.

A third-party package registers a Problem (or Solver) subclass under the entry-point group
``gfbench.problems`` (or ``gfbench.solvers``), e.g. in its pyproject.toml::

    [project.entry-points."gfbench.problems"]
    my_problem = "my_package.module:MyProblem"
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from .params import UnknownNameError, suggest
from .problem import Problem
from .solver import Solver

PROBLEM_GROUP = "gfbench.problems"
SOLVER_GROUP = "gfbench.solvers"


def _plugins(group: str, base: type) -> dict[str, type]:
    found = {}
    for entry in entry_points(group=group):
        cls = entry.load()
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"entry point {entry.name!r} in {group} is {cls!r}, not a {base.__name__} subclass")
        found[entry.name] = cls
    return found


def available_problems() -> dict[str, type[Problem]]:
    """Every available problem class by name (built-ins first, then plugins)."""
    from gfbench.problems import PROBLEMS
    return {**PROBLEMS, **_plugins(PROBLEM_GROUP, Problem)}


def available_solvers() -> dict[str, type[Solver]]:
    """Every available solver class by name (built-ins first, then plugins)."""
    from gfbench.solvers import SOLVERS
    return {**SOLVERS, **_plugins(SOLVER_GROUP, Solver)}


def _lookup(kind: str, name: Any, table: dict[str, type]) -> type:
    if not isinstance(name, str) or name not in table:
        hint = suggest(name, table) if isinstance(name, str) else ""
        raise UnknownNameError(f"unknown {kind} {name!r}; available: {', '.join(sorted(table))}{hint}")
    return table[name]


def get_problem(name: str, **params: Any) -> Problem:
    """The problem registered as ``name``, built with ``params`` (defaults filled, values checked).

    Raises ConfigError (a ValueError) for an unknown name or a bad parameter.
    """
    return _lookup("problem", name, available_problems())(**params)


def get_solver(name: str, **options: Any) -> Solver:
    """The solver registered as ``name`` with ``options`` (defaults filled, values checked)."""
    return _lookup("solver", name, available_solvers())(**options)
