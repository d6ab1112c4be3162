"""The trajectory dataset schema (v1), its validation, and atomic netCDF files.

Schema v1
---------
dims ``time`` (and ``param`` with save_params); coords ``time`` (t = k·lr) and ``step`` (k).
Variables: ``loss``, ``grad_norm``, ``distance_from_init``, ``theta`` (time, param) with
save_params, plus whatever the problem's and the run's recorders declare. Every variable has
``long_name`` and ``units``. Global attrs: see ``REQUIRED_ATTRS``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import xarray as xr

from .params import ConfigError

SCHEMA_VERSION = 1
CONVENTIONS = "CF-1.10"
STATUSES = ("completed", "diverged", "solver_failed")
REQUIRED_ATTRS = ("gfbench_version", "schema_version", "problem", "problem_params", "solver", "solver_options",
                  "lr", "steps", "seed", "dtype", "device", "torch_version", "created", "wall_time_s",
                  "n_grad_evals", "status", "Conventions")
CORE_VARIABLES = ("loss", "grad_norm", "distance_from_init")


def encode_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """netCDF-safe attrs: dicts become JSON strings, bools ints, and None values are dropped."""
    encoded = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        elif isinstance(value, bool):
            value = int(value)
        encoded[key] = value
    return encoded


def validate_dataset(ds: xr.Dataset) -> None:
    """Raise ValueError unless ``ds`` follows schema v1."""
    missing = [key for key in REQUIRED_ATTRS if key not in ds.attrs]
    if missing:
        raise ValueError(f"dataset lacks attrs {missing}")
    if ds.attrs["status"] not in STATUSES:
        raise ValueError(f"status {ds.attrs['status']!r} is not one of {STATUSES}")
    for name in ("time", "step", *CORE_VARIABLES):
        if name not in ds.variables:
            raise ValueError(f"dataset lacks variable {name!r}")
    for name, var in ds.variables.items():
        if var.dims[:1] != ("time",) and name != "param":
            raise ValueError(f"variable {name!r} has dims {var.dims}, expected 'time' first")
        for key in ("long_name", "units"):
            if name != "param" and key not in var.attrs:
                raise ValueError(f"variable {name!r} lacks the attribute {key!r}")


def check_writable(path: str | os.PathLike) -> Path:
    """Raise ConfigError unless a file can be created at ``path`` (its folder exists and is writable)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"output path {str(path)!r} is a directory; give a file name ending in .nc")
    if not folder.is_dir():
        raise ConfigError(f"cannot write {str(path)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {str(path)!r}: folder {str(folder)!r} is not writable")
    return path


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, then rename it to ``path``.

    An interrupted or failed write never leaves a truncated file at ``path``.
    """
    path = check_writable(path)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to ``path`` as netCDF4, atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="netcdf4"))


def load(path: str | os.PathLike) -> xr.Dataset:
    """Read a gfbench dataset fully into memory (the file is closed on return)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such dataset file: {str(path)!r}")
    try:
        ds = xr.load_dataset(path, engine="netcdf4")
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {str(path)!r} as netCDF: {error}") from None
    if "schema_version" not in ds.attrs:
        raise ConfigError(f"{str(path)!r} is not a gfbench dataset (no schema_version attribute)")
    return ds
