"""Line plots of recorded variables against t = kη, labelled from the datasets' own attributes."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import xarray as xr

from .compare import run_label
from .dataset import atomic_write, load
from .params import ConfigError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("gfbench plot needs matplotlib: pip install 'gfbench[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def axis_label(variable: xr.DataArray) -> str:
    """``long_name [units]``, leaving out the dimensionless unit "1"."""
    units = variable.attrs.get("units", "")
    name = variable.attrs.get("long_name", variable.name)
    return name if units in ("", "1") else f"{name} [{units}]"


#: The dims of a variable ``plot`` draws: one line for a trajectory, one per run of a comparison.
_PLOTTABLE_DIMS = (("time",), ("run", "time"))


def _check_variable(datasets: Sequence[xr.Dataset], var: str) -> None:
    """Raise ConfigError, listing the variables that can be plotted, unless every dataset has ``var`` over
    (time) or (run, time)."""
    for ds in datasets:
        if var not in ds.data_vars or ds[var].dims not in _PLOTTABLE_DIMS:
            available = ", ".join(name for name in ds.data_vars if ds[name].dims in _PLOTTABLE_DIMS)
            raise ConfigError(f"variable {var!r} cannot be plotted for {_label(ds)}; available: {available}")


def _label(ds: xr.Dataset) -> str:
    """The legend entry of a trajectory, or the title of a comparison."""
    return ds.attrs.get("title", "") if ds.attrs.get("kind") == "comparison" else run_label(ds)


def _lines(ds: xr.Dataset, var: str, label: str):
    """(label, time, values) per line: one per run of a comparison, one for a trajectory."""
    if ds[var].dims == ("time",):
        yield label, ds.time.values, ds[var].values
    else:
        for run in ds.run.values:
            yield str(run), ds.time.values, ds[var].sel(run=run).values


def plot(datasets: Sequence[xr.Dataset | str | os.PathLike], var: str = "loss", *, logy: bool = False,
         title: str | None = None):
    """A matplotlib Figure of ``var`` against time, one line per run (a comparison gives one per run).

    Axis labels come from the variables' ``long_name`` and ``units``; legend entries from solver
    and step size. NaN points (not evaluated) are skipped, so sparse curvature series draw as lines.
    """
    plt = _pyplot()
    loaded = [item if isinstance(item, xr.Dataset) else load(item) for item in datasets]
    if not loaded:
        raise ConfigError("plot needs at least one dataset")
    _check_variable(loaded, var)
    figure, axes = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for ds in loaded:
        for label, times, values in _lines(ds, var, _label(ds)):
            finite = np.isfinite(values)
            if logy:
                finite &= values > 0
            axes.plot(times[finite], values[finite], label=label)
    first = loaded[0]
    axes.set_xlabel(axis_label(first.time))
    axes.set_ylabel(axis_label(first[var]))
    if logy:
        axes.set_yscale("log")
    axes.set_title(title or f"{first.attrs.get('problem', '')}: {first[var].attrs.get('long_name', var)}",
                   fontsize="medium")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def save_figure(figure, path: str | os.PathLike):
    """Write ``figure`` as a PNG at ``path``, atomically."""
    return atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=120, format="png"))
