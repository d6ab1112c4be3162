"""The schema of every dataset gfbench writes (v1): each kind's declaration, validation, and atomic netCDF files.

Every dataset carries the global attrs ``kind``, ``schema_version``, ``gfbench_version``, ``title``
and ``Conventions`` (CF-1.10); ``dataset_attrs`` builds them. The kinds (``KINDS``):

- ``run`` (``gfbench.run``): dims ``time`` (and ``param`` with save_params); coords ``time``
  (t = k·lr) and ``step`` (k); variables ``loss``, ``grad_norm``, ``distance_from_init``,
  ``theta`` (time, param) with save_params, plus whatever the problem's and the run's recorders
  declare, every one with ``time`` first; ``status`` one of RUN_STATUSES. Files written before
  kinds existed have no ``kind`` attribute and are runs.
- ``comparison`` (``gfbench.compare``): distances of runs from a reference run on dims (run, time).
- ``bound`` (``gfbench.theory``): an EC21 bound on dim ``time``, with the run it was evaluated on.
- ``sweep`` (``gfbench.load_sweep``): a merged sweep; every member variable over (swept dims…,
  time, …) and the manifest (``status`` one of MEMBER_STATUSES) over the swept dims (attr
  ``sweep_dims``).

Every data variable, and every coordinate along one of the kind's declared dims, has
``long_name``, and ``units`` unless it holds strings.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import xarray as xr

from . import __version__
from .params import ConfigError

SCHEMA_VERSION = 1
CONVENTIONS = "CF-1.10"
#: How a run can end by itself; it is deterministic, so running it again would end the same way.
FINISHED_STATUSES = ("completed", "diverged", "solver_failed")
#: How a run ended; its dataset holds the recorded prefix in every case (``interrupted``: by Ctrl-C
#: or SIGTERM, never reused by a resume).
RUN_STATUSES = (*FINISHED_STATUSES, "interrupted")
#: A sweep member's status: its run's, or ``failed`` (it raised or its worker died; no file) or
#: ``pending`` (not run yet).
MEMBER_STATUSES = (*RUN_STATUSES, "failed", "pending")
COMMON_ATTRS = ("kind", "schema_version", "gfbench_version", "title", "Conventions")
CORE_VARIABLES = ("loss", "grad_norm", "distance_from_init")


def _check_run(ds: xr.Dataset) -> None:
    if ds.attrs["status"] not in RUN_STATUSES:
        raise ValueError(f"status {ds.attrs['status']!r} is not one of {RUN_STATUSES}")
    for name, var in ds.variables.items():
        if var.dims[:1] != ("time",) and name != "param":
            raise ValueError(f"variable {name!r} has dims {var.dims}, expected 'time' first")


def _check_sweep(ds: xr.Dataset) -> None:
    swept = json.loads(ds.attrs["sweep_dims"])
    if list(ds["status"].dims) != swept:
        raise ValueError(f"status has dims {ds['status'].dims}, expected the swept dims {swept}")
    unknown = sorted(set(ds["status"].values.ravel().tolist()) - set(MEMBER_STATUSES))
    if unknown:
        raise ValueError(f"member statuses {unknown} are not among {MEMBER_STATUSES}")


@dataclass(frozen=True)
class DatasetKind:
    """One kind of dataset: the global attrs, dims and variables (data or coordinate) it must have,
    and ``check``, the kind's own rules beyond those."""

    name: str
    attrs: tuple[str, ...]
    dims: tuple[str, ...]
    variables: tuple[str, ...]
    check: Callable[[xr.Dataset], None] | None = None


KINDS = {kind.name: kind for kind in (
    # "kind" is not required of runs: files from before kinds existed lack it (see validate_dataset)
    DatasetKind("run", (*COMMON_ATTRS[1:], "problem", "problem_params", "solver", "solver_options", "lr", "steps",
                        "seed", "dtype", "device", "torch_version", "created", "wall_time_s", "n_grad_evals",
                        "status"),
                ("time",), ("time", "step", *CORE_VARIABLES), _check_run),
    DatasetKind("comparison", (*COMMON_ATTRS, "reference", "reference_solver", "reference_lr", "problem",
                               "problem_params", "seed"),
                ("run", "time"), ("time", "step", "run", "solver", "lr", "distance", "relative_distance",
                                  "loss_difference", "ref_distance_from_init")),
    DatasetKind("bound", (*COMMON_ATTRS, "bound", "estimate", "problem", "problem_params", "seed"),
                ("time",), ("time",)),
    DatasetKind("sweep", (*COMMON_ATTRS, "sweep_dims"),
                (), ("status", "message", "worker", "wall_time_s", "n_grad_evals", "config_hash"), _check_sweep),
)}


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


def dataset_attrs(kind: str, **attrs: Any) -> dict[str, Any]:
    """The global attrs of a new ``kind`` dataset: ``kind``, ``schema_version``, ``gfbench_version``,
    then ``attrs``, then ``Conventions``, encoded by ``encode_attrs``.

    Raises ValueError (a bug in the writer, not a user mistake) when one the kind requires is missing.
    """
    encoded = encode_attrs({"kind": kind, "schema_version": SCHEMA_VERSION, "gfbench_version": __version__,
                            **attrs, "Conventions": CONVENTIONS})
    missing = [key for key in KINDS[kind].attrs if key not in encoded]
    if missing:
        raise ValueError(f"{kind} dataset attrs lack {missing}")
    return encoded


def validate_dataset(ds: xr.Dataset) -> None:
    """Raise ValueError (one line) unless ``ds`` follows schema v1 for its ``kind`` (no kind: a run)."""
    name = ds.attrs.get("kind", "run")
    if name not in KINDS:
        raise ValueError(f"kind {name!r} is not one of {', '.join(KINDS)}")
    kind = KINDS[name]
    missing = [key for key in kind.attrs if key not in ds.attrs]
    if missing:
        raise ValueError(f"dataset lacks attrs {missing}")
    if ds.attrs["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"schema_version {ds.attrs['schema_version']!r} is not {SCHEMA_VERSION}")
    for dim in kind.dims:
        if dim not in ds.sizes:
            raise ValueError(f"dataset lacks the dimension {dim!r}")
    for var_name in kind.variables:
        if var_name not in ds.variables:
            raise ValueError(f"dataset lacks variable {var_name!r}")
    for var_name, var in ds.variables.items():
        if var_name in ds.coords and not set(var.dims) & set(kind.dims):
            continue  # scalar coords and the index of an undeclared dim (a run's param, a sweep's axes)
        required = ("long_name",) if var.dtype.kind in "OSU" else ("long_name", "units")
        for key in required:
            if key not in var.attrs:
                raise ValueError(f"variable {var_name!r} lacks the attribute {key!r}")
    if kind.check is not None:
        kind.check(ds)


def check_writable(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or ConfigError unless a file can be created there: see ``_check_folder``."""
    if not str(path):
        raise ConfigError("output path must not be empty; give a file name")
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"output path {str(path)!r} is a directory; give a file name ending in .nc")
    _check_folder(path.parent, path)
    return path


def check_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a Path, if an output folder can be used or made there (``_check_folder``);
    ConfigError if not. Creates nothing."""
    if not str(folder):
        raise ConfigError("output folder must not be empty; give a folder name")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output folder {str(folder)!r} exists and is not a folder")
    _check_folder(folder if folder.exists() else folder.parent, folder)  # a new folder is made like a file
    return folder


def prepare_folder(folder: str | os.PathLike) -> Path:
    """The output folder ``folder``, checked by ``check_folder`` and created if missing."""
    folder = check_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _inside_working_folder(folder: Path) -> bool:
    return Path.cwd() in (folder.resolve(), *folder.resolve().parents)


def _check_folder(folder: Path, target: Path) -> None:
    """ConfigError unless ``folder`` exists and is writable, or can be created in a writable one.

    Missing folders are created (at the first write) only under the current folder, as the
    default ``runs/`` is: a missing folder elsewhere, e.g. in an absolute path, is more likely a
    typo than a wish.
    """
    existing = next(ancestor for ancestor in (folder, *folder.resolve().parents) if ancestor.exists())
    if existing != folder and not _inside_working_folder(folder):
        raise ConfigError(f"cannot write {str(target)!r}: folder {str(folder)!r} does not exist (gfbench creates "
                          "missing folders only under the current folder)")
    if not existing.is_dir():
        raise ConfigError(f"cannot write {str(target)!r}: {str(existing)!r} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {str(target)!r}: folder {str(existing)!r} is not writable")


def _create_temporary(path: Path) -> Path:
    """Create an empty, uniquely named hidden file beside ``path``, with the mode the umask gives.

    Not ``tempfile.mkstemp``: its files are always 0600, so collaborators could not read the outputs.
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, then rename it to ``path``.

    A missing folder under the current one is created first (``check_writable``). An
    interrupted or failed write (any exception, Ctrl-C or SIGTERM included) never leaves a
    truncated file at ``path`` nor the temporary file. The file gets the mode the umask gives
    (0644 under umask 022).
    """
    path = check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _compressed(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy of ``ds`` whose numeric arrays are written zlib-compressed (level 4, floats byte-shuffled).

    Level 4 gives nearly all of level 9's gain at a fraction of its write time; shuffling suits
    floats. ``contiguous`` is reset because a dataset loaded from an uncompressed file carries it,
    and netCDF cannot compress contiguous variables.
    """
    ds = ds.copy()
    for var in ds.variables.values():
        if var.ndim and var.dtype.kind in "biuf":
            var.encoding.update(zlib=True, complevel=4, shuffle=var.dtype.kind == "f", contiguous=False)
    return ds


def save(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Validate ``ds`` (``validate_dataset``) and write it to ``path`` as compressed netCDF4, atomically
    (see ``atomic_write``); ``load`` gives back identical values."""
    validate_dataset(ds)
    compressed = _compressed(ds)
    return atomic_write(path, lambda tmp: compressed.to_netcdf(tmp, engine="netcdf4"))


def load(path: str | os.PathLike) -> xr.Dataset:
    """Read a gfbench dataset of any kind fully into memory (the file is closed on return).

    Raises ConfigError, one line naming the file and what is wrong, when the file is missing,
    unreadable as netCDF, or not a valid gfbench dataset (``validate_dataset``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such dataset file: {str(path)!r}")
    try:
        ds = xr.load_dataset(path, engine="netcdf4")
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {str(path)!r} as netCDF: {error}") from None
    if "schema_version" not in ds.attrs:
        raise ConfigError(f"{str(path)!r} is not a gfbench dataset (no schema_version attribute)")
    try:
        validate_dataset(ds)
    except ValueError as error:
        raise ConfigError(f"{str(path)!r} is not a valid gfbench {ds.attrs.get('kind', 'run')} dataset: "
                          f"{error}") from None
    return ds
