"""The time axis t = k·η shared by every dataset: matching times across runs, and integrals over time.

Runs with different step sizes η meet at the same t only up to rounding (3·0.001 and
6·0.0005 differ in the last bit), so recorded times are matched within a relative tolerance,
never by equality; ``match_times`` is that rule, used for comparisons (``gfbench.compare``),
EC21's bounds (``gfbench.theory``) and merged sweeps (``common_time_labels``). Integrals of
recorded values over time use the trapezoid rule (``cumulative_integral``), exact for values
linear between records.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: Two recorded times t, t' are one time when |t − t'| ≤ TIME_RTOL·|t|. t = k·η from different
#: (k, η) pairs differs by a few ulps (~1e-16·t); distinct record times of one run differ by at
#: least t/k, so they stay apart for any run shorter than 1e9 steps.
TIME_RTOL = 1e-9
#: Significant digits of the times labelling a merged axis: well above TIME_RTOL's 9, and short
#: enough that k·η prints (and selects, ``ds.sel(time=0.3)``) as the decimal it stands for.
LABEL_DIGITS = 12


def match_times(reference: np.ndarray, times: np.ndarray, rtol: float = TIME_RTOL) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i_ref, i) of the times two ascending grids share.

    A pair is |times[i] − reference[i_ref]| ≤ rtol·|reference[i_ref]|. Both index arrays are
    ascending and pair up one to one; a time of either grid with no partner is left out.
    """
    reference, times = np.asarray(reference, dtype=np.float64), np.asarray(times, dtype=np.float64)
    if reference.size == 0 or times.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    tolerance = rtol * np.abs(reference)
    candidates = np.minimum(np.searchsorted(times, reference - tolerance), times.size - 1)
    matched = np.abs(times[candidates] - reference) <= tolerance
    return np.flatnonzero(matched), candidates[matched]


def common_time_labels(grids: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each ascending grid's times relabelled so that times equal under ``match_times`` carry one identical value.

    The labels are the union of the grids (a time counted once, valued as in the first grid that
    has it) rounded to LABEL_DIGITS significant digits, so an outer join on them (``xr.align``)
    puts k·η of every η on one axis. Each label is within 1e-12 (relative) of the times it
    stands for.
    """
    grids = [np.asarray(grid, dtype=np.float64) for grid in grids]
    union = np.zeros(0)
    for grid in grids:
        known, _ = match_times(grid, union)
        union = np.sort(np.concatenate([union, np.delete(grid, known)]))
    labels = np.array([float(f"{t:.{LABEL_DIGITS}g}") for t in union.tolist()], dtype=np.float64)
    return [labels[match_times(grid, union)[1]] for grid in grids]


def cumulative_integral(times: np.ndarray, values: np.ndarray, query: np.ndarray | None = None) -> np.ndarray:
    """∫_{times[0]}^{q} v(s) ds, v the piecewise-linear interpolant of ``values`` over ascending ``times``.

    With ``query`` None, q runs over ``times`` themselves: the cumulative trapezoid rule
    Σ_j ½ (t_{j+1} − t_j)(v_j + v_{j+1}), starting at 0. Otherwise for each q in ``query``: between
    nodes the linear interpolant is integrated exactly; NaN for q outside [times[0], times[-1]].
    Units: those of v times those of t.
    """
    times, values = np.asarray(times, dtype=np.float64), np.asarray(values, dtype=np.float64)
    nodes = np.concatenate([[0.0], np.cumsum(0.5 * np.diff(times) * (values[1:] + values[:-1]))])[:times.size]
    if query is None:
        return nodes
    query = np.asarray(query, dtype=np.float64)
    result = np.full(query.shape, np.nan)
    inside = (query >= times[0]) & (query <= times[-1])
    if times.size == 1:
        result[inside] = 0.0
        return result
    q = query[inside]
    left = np.clip(np.searchsorted(times, q, side="right") - 1, 0, times.size - 2)
    h = q - times[left]
    slope = (values[left + 1] - values[left]) / (times[left + 1] - times[left])
    result[inside] = nodes[left] + h * values[left] + 0.5 * slope * h ** 2
    return result
