"""Keyword arguments of library functions (Lanczos, the curvature recorder, EC21's bounds) checked
against ``gfbench.params`` declarations, so every bounded number is checked by one ``Param``/``Bounds``."""
from __future__ import annotations

from typing import Any

import numpy as np

from .params import ConfigError, Param


def _requirement(param: Param) -> str:
    """``be one of a, b`` or ``be an integer >= 1`` / ``be a number in (0, 1)``: what ``param`` accepts."""
    if param.choices is not None:
        return f"be one of {', '.join(param.choices)}"
    kind = {int: "an integer", float: "a number"}.get(param.type, f"a {param.type.__name__}")
    return f"be {kind} {param.bounds}" if param.bounds is not None else f"be {kind}"


def check_argument(param: Param, value: Any, must: str | None = None) -> Any:
    """``value`` converted by ``param.convert``, or ConfigError ``NAME must MUST, got VALUE``.

    A Python argument, unlike command-line text: a string is refused where a number is declared
    (``convert`` would parse it), and a numpy scalar counts as the Python number it holds
    (np.int64 is an integer, np.bool_ is not). None passes only where the declared default is
    None ("chosen automatically"); declare a required argument with default ``...``. ``must``
    replaces the generated requirement (e.g. ``be a finite number > 0``) where it says more.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if not (isinstance(value, str) and param.type is not str):
        try:
            return param.convert(value, param.name)
        except ConfigError:
            pass
    raise ConfigError(f"{param.name} must {must or _requirement(param)}, got {value!r}")
