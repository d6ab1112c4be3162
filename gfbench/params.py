"""Declared, typed, validated parameters for problems and solvers.

A problem or solver lists its parameters as :class:`Param` declarations. The same declaration
types and checks a value given from Python (``get_problem("quadratic", dim=5)``) or from the
command line (``--param dim=5``, a string), and is what ``gfbench list`` prints.
"""
from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NoReturn

import numpy as np


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


#: Every integer parameter lies in int64: torch, numpy and netCDF store it there.
INT64_MAX = 2 ** 63 - 1


@dataclass(frozen=True)
class Param:
    """One declared parameter: its name, type (int, float, str or bool), default and one-line help.

    ``default=None`` means "chosen automatically" (the help says how; ``auto`` or ``none`` on
    the command line); ``default=...`` means required (None is refused). ``choices`` restricts
    a str; ``bounds`` restricts a number. Integers (numpy's included) must fit in int64; floats
    (numpy's included) must be finite. ``requirement`` words what is allowed where the type,
    bounds and choices cannot say it all (e.g. "be 1 or an integer with 2k <= d").

    Two ways in: ``convert`` for a problem's or solver's parameters (``--param``, keywords of
    ``get_problem``), and ``check`` for a function's or a run's own arguments, whose every error
    states the whole requirement: "steps must be an integer >= 1, got 0".
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | tuple[int, ...] | None = None
    bounds: Bounds | None = None
    requirement: str | None = None

    def describe(self) -> str:
        """``name (type, default X, constraint): help`` for listings."""
        default = "auto" if self.default is None else repr(self.default)
        extra = ""
        if self.choices:
            extra = ", one of " + "|".join(map(str, self.choices))
        elif self.bounds:
            extra = f", {self.bounds}"
        return f"{self.name} ({self.type.__name__}, default {default}{extra}): {self.help}"

    def requires(self) -> str:
        """What is allowed, as the end of "NAME must …": e.g. "be an integer >= 1", "be one of a, b"."""
        if self.requirement is not None:
            return self.requirement
        if self.choices is not None:
            return f"be one of {', '.join(map(str, self.choices))}"
        if self.type is float:
            bounded = self.bounds is not None and None not in (self.bounds.low, self.bounds.high)
            kind = "a number" if bounded else "a finite number"
        else:
            kind = {int: "an integer", bool: "a bool (true/false)"}.get(self.type, f"a {self.type.__name__}")
        return f"be {kind} {self.bounds}" if self.bounds is not None else f"be {kind}"

    def convert(self, value: Any, owner: str) -> Any:
        """``value`` (a Python value or command-line text) as this parameter's type, or ConfigError
        "OWNER parameter 'NAME' must …" naming what it misses."""
        return self._convert(value, f"{owner} parameter {self.name!r}", parse_text=True, whole=False)

    def check(self, value: Any, *, text: bool = False) -> Any:
        """``value`` as this parameter's type, or ConfigError "NAME must REQUIREMENT, got VALUE".

        A Python argument unless ``text``: a string is then refused where a number is declared.
        """
        return self._convert(value, self.name, parse_text=text, whole=True)

    def _convert(self, value: Any, where: str, *, parse_text: bool, whole: bool) -> Any:
        def refuse(missed: str) -> NoReturn:
            raise ConfigError(f"{where} must {self.requires() if whole else missed}, got {value!r}")

        if isinstance(value, str) and self.type is not str and parse_text:
            value = self.parse(value, where)
        if value is None and self.default is None:
            return None
        if self.type is bool:
            if not isinstance(value, (bool, np.bool_)):
                refuse("be a bool")
            value = bool(value)
        elif self.type is int:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
                refuse("be an integer")
            value = int(value)
            if abs(value) > INT64_MAX:
                raise ConfigError(f"{where} must be an integer of magnitude < 2**63 (int64), got {value!r}")
        elif self.type is float:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                refuse("be a float")
            value = float(value)
            if not math.isfinite(value):
                refuse("be finite")
        elif not isinstance(value, self.type):
            refuse(f"be a {self.type.__name__}")
        if self.choices is not None and value not in self.choices:
            if whole:
                refuse("")
            raise ConfigError(f"{where} must be one of {', '.join(map(str, self.choices))}; got {value!r}"
                              + suggest(str(value), tuple(map(str, self.choices))))
        if self.bounds is not None and not self.bounds.contains(value):
            refuse(f"be {self.bounds}")
        return value

    def parse(self, text: str, where: str) -> Any:
        """Command-line ``text`` as this parameter's type (``auto``/``none``: None where the default is automatic)."""
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
