"""Problems and solvers by name: the built-ins plus entry-point plugins.

A third-party package registers a Problem (or Solver) subclass under the entry-point group
``gfbench.problems`` (or ``gfbench.solvers``), named like the class's ``name``, e.g. in its
pyproject.toml::

    [project.entry-points."gfbench.problems"]
    my_problem = "my_package.module:MyProblem"

docs/plugins.md states the whole contract. A plugin never breaks the other names: one that fails
to load or breaks the contract, and a name registered twice (by a built-in and a plugin, or by two
plugins), makes only that name unavailable. Each is reported once as a one-line warning on the
``gfbench.registry`` logger, and asking for the name raises a ConfigError saying why.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import Any, Mapping

from .params import ConfigError, UnknownNameError, suggest
from .problem import Problem
from .solver import Solver

PROBLEM_GROUP = "gfbench.problems"
SOLVER_GROUP = "gfbench.solvers"
GROUPS = {"problem": (PROBLEM_GROUP, Problem), "solver": (SOLVER_GROUP, Solver)}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Catalog:
    """One kind's names: the usable classes (built-ins first, then plugins) and, for every
    name that cannot be used, the one-line reason."""

    available: Mapping[str, type]
    unavailable: Mapping[str, str]


def _builtins(kind: str) -> dict[str, type]:
    # Imported here: gfbench.problems and gfbench.solvers import the core, which imports this module.
    if kind == "problem":
        from gfbench.problems import PROBLEMS
        return PROBLEMS
    from gfbench.solvers import SOLVERS
    return SOLVERS


def _origin(entry: EntryPoint) -> str:
    dist = f", distribution {entry.dist.name} {entry.dist.version}" if entry.dist is not None else ""
    return f"plugin {entry.value} ({entry.group}{dist})"


def _contract_error(cls: Any, base: type, name: str) -> str | None:
    """Why the loaded object ``cls`` cannot serve as the ``base`` named ``name``, or None."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        return f"is {cls!r}, not a {base.__name__} subclass"
    # Problem and Solver are not ABCs (their metaclass is type), so Python does not refuse an
    # incomplete subclass; it would fail only mid-run.
    unimplemented = [attr for attr in dir(base) if getattr(getattr(cls, attr), "__isabstractmethod__", False)]
    if unimplemented:
        return f"does not implement {', '.join(unimplemented)}"
    if cls.name != name:
        # Datasets store cls.name and are rebuilt by that name (theory, sweeps, --resume).
        return f"sets name = {cls.name!r}, not the entry point's {name!r}"
    missing = [attr for attr in ("default_lr", "default_steps") if base is Problem and not hasattr(cls, attr)]
    if missing:
        return f"does not set {', '.join(missing)}"
    return None


@cache
def _catalog(kind: str, entries: tuple[EntryPoint, ...]) -> Catalog:
    # Cached on the installed entry points, so each plugin is imported and each unavailable name
    # reported once per process, while a plugin installed later (a new set of entries) is still seen.
    base = GROUPS[kind][1]
    builtins = _builtins(kind)
    origins: dict[str, list[str]] = {name: [f"built-in {cls.__module__}:{cls.__qualname__}"]
                                     for name, cls in builtins.items()}
    for entry in entries:
        origins.setdefault(entry.name, []).append(_origin(entry))
    available = {name: cls for name, cls in builtins.items() if len(origins[name]) == 1}
    unavailable = {name: f"it is defined {'twice' if len(found) == 2 else f'{len(found)} times'}, by "
                         f"{' and by '.join(found)}; uninstall all but one" for name, found in origins.items()
                   if len(found) > 1}
    for entry in entries:
        if entry.name in unavailable:
            continue  # a name defined twice is not loaded: neither definition may win
        try:
            cls = entry.load()
        except Exception as error:  # any failure of third-party code: that name only is lost
            first_line = (str(error).strip().splitlines() or [""])[0]
            unavailable[entry.name] = f"its {_origin(entry)} failed to load: {type(error).__name__}: {first_line}"
            continue
        violation = _contract_error(cls, base, entry.name)
        if violation:
            unavailable[entry.name] = f"its {_origin(entry)} {violation}"
        else:
            available[entry.name] = cls
    for name, reason in unavailable.items():
        logger.warning("gfbench: %s %r is unavailable: %s", kind, name, reason)
    return Catalog(MappingProxyType(available), MappingProxyType(unavailable))


def catalog(kind: str) -> Catalog:
    """The ``kind`` ("problem" or "solver") names now installed; see :class:`Catalog`."""
    return _catalog(kind, tuple(entry_points(group=GROUPS[kind][0])))


def available_problems() -> dict[str, type[Problem]]:
    """Every usable problem class by name (built-ins first, then plugins)."""
    return dict(catalog("problem").available)


def available_solvers() -> dict[str, type[Solver]]:
    """Every usable solver class by name (built-ins first, then plugins)."""
    return dict(catalog("solver").available)


def _lookup(kind: str, name: Any, table: Mapping[str, type]) -> type:
    if isinstance(name, str) and name in table:
        return table[name]
    reason = catalog(kind).unavailable.get(name) if isinstance(name, str) else None
    if reason is not None:
        raise ConfigError(f"{kind} {name!r} is unavailable: {reason}")
    hint = suggest(name, table) if isinstance(name, str) else ""
    raise UnknownNameError(f"unknown {kind} {name!r}; available: {', '.join(sorted(table))}{hint}")


def get_problem(name: str, **params: Any) -> Problem:
    """The problem registered as ``name``, built with ``params`` (defaults filled, values checked).

    Raises ConfigError (a ValueError) for an unknown or unavailable name or a bad parameter.
    """
    return _lookup("problem", name, available_problems())(**params)


def get_solver(name: str, **options: Any) -> Solver:
    """The solver registered as ``name`` with ``options`` (defaults filled, values checked).

    Raises ConfigError (a ValueError) for an unknown or unavailable name or a bad option.
    """
    return _lookup("solver", name, available_solvers())(**options)
