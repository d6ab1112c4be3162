"""Declared, typed, validated parameters for problems and solvers.

A problem or solver lists its parameters as :class:`Param` declarations. The same declaration
types and checks a value given from Python (``get_problem("quadratic", dim=5)``) or from the
command line (``--param dim=5``, a string), and is what ``gfbench list`` prints.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping


class ConfigError(ValueError):
    """A user mistake in a name, a parameter, an option or a path.

    The message is one line that names the bad value and what is allowed; the CLI prints it
    and exits with code 2 before any computation starts.
    """


class UnknownNameError(ConfigError, KeyError):
    """An unknown problem, solver, parameter or option name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def suggest(name: str, allowed: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest allowed name, or ""."""
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class Bounds:
    """An interval constraint on a numeric parameter, e.g. ``Bounds(0, None, low_open=True)`` is > 0."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


POSITIVE = Bounds(0, None, low_open=True)
NON_NEGATIVE = Bounds(0, None)
AT_LEAST_ONE = Bounds(1, None)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One declared parameter: its name, type (int, float, str or bool), default and one-line help.

    ``default=None`` means "chosen automatically" (the help says how). ``choices`` restricts a
    str; ``bounds`` restricts a number.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    bounds: Bounds | None = None

    def describe(self) -> str:
        """``name (type, default X, constraint): help`` for listings."""
        default = "auto" if self.default is None else repr(self.default)
        extra = ""
        if self.choices:
            extra = ", one of " + "|".join(self.choices)
        elif self.bounds:
            extra = f", {self.bounds}"
        return f"{self.name} ({self.type.__name__}, default {default}{extra}): {self.help}"

    def convert(self, value: Any, owner: str) -> Any:
        """Return ``value`` as this parameter's type, or raise ConfigError naming it."""
        where = f"{owner} parameter {self.name!r}"
        if value is None and self.default is None:
            return None
        if isinstance(value, str) and self.type is not str:
            value = self._parse(value, where)
        if self.type is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be a bool, got {value!r}")
        elif self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where} must be an integer, got {value!r}")
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where} must be a float, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{where} must be finite, got {value!r}")
        elif not isinstance(value, self.type):
            raise ConfigError(f"{where} must be a {self.type.__name__}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{where} must be one of {', '.join(self.choices)}; got {value!r}"
                              + suggest(str(value), self.choices))
        if self.bounds is not None and not self.bounds.contains(value):
            raise ConfigError(f"{where} must be {self.bounds}, got {value!r}")
        return value

    def _parse(self, text: str, where: str) -> Any:
        if self.default is None and text.lower() in {"none", "auto"}:
            return None
        try:
            if self.type is bool:
                lowered = text.lower()
                if lowered in _TRUE | _FALSE:
                    return lowered in _TRUE
                raise ValueError
            return self.type(text)
        except ValueError:
            kind = {int: "an integer", float: "a number", bool: "a bool (true/false)"}.get(self.type, self.type.__name__)
            raise ConfigError(f"{where} must be {kind}, got {text!r}") from None


def resolve_params(declared: Iterable[Param], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Fill defaults, convert and check ``given`` against the declarations.

    Unknown keys raise :class:`UnknownNameError` listing the allowed keys.
    """
    by_name = {p.name: p for p in declared}
    for key in given:
        if key not in by_name:
            allowed = ", ".join(by_name) or "none"
            raise UnknownNameError(f"unknown {owner} parameter {key!r}; allowed: {allowed}"
                                   + suggest(key, by_name))
    return {name: p.convert(given[name], owner) if name in given else p.default
            for name, p in by_name.items()}


def parse_assignments(items: Iterable[str], flag: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` → ``{"a": "1", "b": "x"}`` for repeatable ``key=value`` CLI flags."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects key=value, got {item!r}")
        result[key.strip()] = value.strip()
    return result


class Configurable:
    """Base of problems and solvers: a registry name plus declared parameters.

    ``label`` names a configuration as ``name[key=value,...]`` with sorted keys, the form used in
    the CLI, plots and benchmarks alike.
    """

    name: str = ""
    parameters: tuple[Param, ...] = ()
    kind: str = ""

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = resolve_params(self.parameters, params, f"{self.kind} {self.name!r}")

    @property
    def label(self) -> str:
        inner = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in sorted(self.params.items()) if v is not None)
        return f"{self.name}[{inner}]" if inner else self.name

    def __repr__(self) -> str:
        return f"<{self.kind} {self.label}>"
