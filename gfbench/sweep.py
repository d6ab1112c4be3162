"""Sweeps: the Cartesian grid of runs (problem × solver × parameters × lr × seed …) on dask.distributed.

Each member of the grid is one ``gfbench.run`` executed as a dask task. By default the tasks run on
a ``distributed.LocalCluster`` of single-threaded worker *processes*, one per core, each with one
torch intra-op thread: the run loop is a Python loop over many small kernels (GD's update, the
adaptive stepper of torchdiffeq) that holds the GIL between kernels, so thread workers would
serialise on it, and torch's own intra-op threads in every worker would oversubscribe the cores.
Any running scheduler can be used instead (``scheduler="tcp://host:port"``); start its workers the
same way, ``dask worker ADDRESS --nworkers N --nthreads 1``.

Output folder layout::

    DIR/sweep.json            the manifest (grid, every member's config, config hash and status)
    DIR/members/<hash>.nc     one schema-v1 dataset per member, written atomically

A member's config hash is the SHA-256 (first 16 hex digits) of the sorted JSON of its resolved
config (problem and solver with every parameter's value, lr, steps, seed, record_every,
save_params, device, dtype). Re-running a sweep into the same folder skips members whose file
exists with the same hash, so an interrupted or partly failed sweep resumes where it stopped.

Member statuses in the manifest: ``completed``, ``diverged`` and ``solver_failed`` (the run's own
status; the file holds the recorded prefix), ``failed`` (the member raised or its worker died;
no file, the message says why) and ``pending`` (not run yet).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import time as wallclock
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from . import __version__
from .dataset import CONVENTIONS, encode_attrs, load, save
from .params import ConfigError, UnknownNameError, suggest
from .registry import _lookup, available_problems, available_solvers, get_problem, get_solver
from .run import check_run_config, run

MANIFEST = "sweep.json"
MEMBERS = "members"
HASH_ATTR = "sweep_config_hash"
EXTRA = "sweep"
# Run settings along which a grid may sweep, besides problem parameters and solver options.
RUN_AXES = ("steps", "record_every", "lr", "seed")
# Names a problem parameter or solver option cannot take, since they name the merged dataset's axes.
RESERVED = ("problem", "solver", *RUN_AXES, "time", "step", "param")
# Significant digits kept when aligning the times t = k·lr of members with different lr.
TIME_DIGITS = 12


def _import_distributed():
    try:
        import distributed
    except ImportError as error:
        raise ImportError(f"gfbench sweeps need dask.distributed: pip install 'gfbench[{EXTRA}]'") from error
    return distributed


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

    ``lr`` and ``steps`` default to the problem's defaults (which must then agree across the
    grid's problems). ``params`` maps a problem parameter to its values and ``solver_options`` a
    solver option to its values; a problem (solver) that does not declare the name ignores it,
    so ``solver=("gd", "gf"), solver_options={"rtol": (1e-8, 1e-10)}`` runs GD once.
    """

    problem: Any
    solver: Any
    lr: Any = None
    seed: Any = 0
    steps: Any = None
    record_every: Any = 1
    params: Mapping[str, Any] = field(default_factory=dict)
    solver_options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, grid: "Grid | Mapping[str, Any]") -> "Grid":
        if isinstance(grid, Grid):
            return grid
        allowed = [f.name for f in fields(cls)]
        if not isinstance(grid, Mapping):
            raise ConfigError(f"a sweep grid is a Grid or a mapping with keys {', '.join(allowed)}; got {grid!r}")
        for key in grid:
            if key not in allowed:
                raise UnknownNameError(f"unknown sweep axis {key!r}; allowed: {', '.join(allowed)}"
                                       + suggest(str(key), allowed))
        if "problem" not in grid or "solver" not in grid:
            raise ConfigError("a sweep grid needs 'problem' and 'solver'")
        return cls(**grid)


@dataclass(frozen=True)
class SweepPlan:
    """A checked grid: the swept ``dims`` (axis → values), the one-value axes (``constants``),
    every grid point's member hash in C order over ``dims``, and each member's resolved config."""

    dims: dict[str, tuple]
    constants: dict[str, Any]
    points: tuple[str, ...]
    members: dict[str, dict[str, Any]]


def config_hash(config: Mapping[str, Any]) -> str:
    """The first 16 hex digits of the SHA-256 of ``config`` as sorted, compact JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


def _default_axis(name: str, given: Any, problem_classes: Sequence[type]) -> tuple:
    """``lr``/``steps`` values, or the problems' common default when not given."""
    if given is not None:
        return _values(name, given)
    defaults = {getattr(cls, f"default_{name}") for cls in problem_classes}
    if len(defaults) > 1:
        raise ConfigError(f"the sweep's problems have different default {name} ({sorted(defaults)}); give {name}")
    return tuple(defaults)


def plan_sweep(grid: Grid | Mapping[str, Any], *, save_params: bool = False, device: str = "cpu",
               dtype: str = "float64") -> SweepPlan:
    """Resolve and check every member of ``grid`` (ConfigError on any bad value) without running any."""
    grid = Grid.from_mapping(grid)
    for name in ("params", "solver_options"):
        if not isinstance(getattr(grid, name), Mapping):
            raise ConfigError(f"sweep {name} must map names to values, got {getattr(grid, name)!r}")
    problem_classes = [_lookup("problem", name, available_problems()) for name in _values("problem", grid.problem)]
    solver_classes = [_lookup("solver", name, available_solvers()) for name in _values("solver", grid.solver)]
    param_axes = {name: _typed_axis("problem", name, values, problem_classes) for name, values in grid.params.items()}
    option_axes = {name: _typed_axis("solver", name, values, solver_classes)
                   for name, values in grid.solver_options.items()}
    clashes = set(param_axes) & set(option_axes)
    if clashes:
        raise ConfigError(f"{sorted(clashes)} named both as a problem parameter and a solver option; sweep them apart")
    axes = {"problem": problem_classes, "solver": solver_classes, **param_axes, **option_axes,
            "steps": _default_axis("steps", grid.steps, problem_classes),
            "record_every": _values("record_every", grid.record_every),
            "lr": _default_axis("lr", grid.lr, problem_classes), "seed": _values("seed", grid.seed)}

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
        problem = instance(point["problem"], point, param_axes)
        solver = instance(point["solver"], point, option_axes)
        checked = check_run_config(problem, solver, lr=point["lr"], steps=point["steps"], seed=point["seed"],
                                   record_every=point["record_every"], save_params=save_params, device=device,
                                   dtype=dtype)
        config = {"problem": problem.name, "problem_params": problem.params, "solver": solver.name,
                  "solver_options": solver.params, "lr": checked.lr, "steps": checked.steps, "seed": checked.seed,
                  "record_every": checked.record_every, "save_params": save_params, "device": device,
                  "dtype": str(checked.dtype).removeprefix("torch.")}
        digest = config_hash(config)
        members.setdefault(digest, config)
        points.append(digest)
    axes.update(problem=tuple(cls.name for cls in problem_classes), solver=tuple(cls.name for cls in solver_classes))
    dims = {name: values for name, values in axes.items() if len(values) > 1}
    constants = {name: values[0] for name, values in axes.items() if len(values) == 1}
    return SweepPlan(dims, constants, tuple(points), members)


def run_member(config: Mapping[str, Any], torch_threads: int | None = None) -> tuple[dict[str, Any], xr.Dataset | None]:
    """Run one member (the dask task); never raises. Returns its manifest record and dataset (None if it failed)."""
    started = wallclock.perf_counter()
    record: dict[str, Any] = {"worker": _worker_name()}
    try:
        if torch_threads:
            torch.set_num_threads(torch_threads)
        problem = get_problem(config["problem"], **config["problem_params"])
        solver = get_solver(config["solver"], **config["solver_options"])
        ds = run(problem, solver, lr=config["lr"], steps=config["steps"], seed=config["seed"],
                 record_every=config["record_every"], save_params=config["save_params"], device=config["device"],
                 dtype=config["dtype"], progress=False)
    except Exception as error:  # a member's failure is recorded, never propagated to the other members
        record.update(status="failed", message=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(),
                      wall_time_s=wallclock.perf_counter() - started)
        return record, None
    ds.attrs[HASH_ATTR] = config_hash(config)
    record.update(status=ds.attrs["status"], message=ds.attrs.get("message"), wall_time_s=ds.attrs["wall_time_s"],
                  n_grad_evals=ds.attrs["n_grad_evals"])
    return record, ds


def _worker_name() -> str:
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def _dashboard_can_render() -> bool:
    """Whether the scheduler's process has bokeh, without which its dashboard pages are empty."""
    import importlib.util
    return importlib.util.find_spec("bokeh") is not None


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def start_local_cluster(workers: int | None = None):
    """A LocalCluster of ``workers`` single-threaded worker processes (default: one per usable core).

    Its dashboard (when bokeh is installed) listens on a free port, so clusters never collide.
    """
    distributed = _import_distributed()
    return distributed.LocalCluster(n_workers=workers or usable_cores(), threads_per_worker=1, processes=True,
                                    dashboard_address=":0")


@dataclass(frozen=True)
class SweepSummary:
    """What a ``sweep`` call did: every member's manifest record, and which members it ran or skipped."""

    out: Path
    members: dict[str, dict[str, Any]]
    executed: tuple[str, ...]
    skipped: tuple[str, ...]

    def count(self, status: str) -> int:
        return sum(record["status"] == status for record in self.members.values())


def member_path(out: Path, digest: str) -> Path:
    return out / MEMBERS / f"{digest}.nc"


def _finished_record(path: Path, digest: str) -> dict[str, Any] | None:
    """The manifest record of a member whose file exists with hash ``digest``, else None."""
    if not path.is_file():
        return None
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            attrs = dict(ds.attrs)
    except (OSError, ValueError):
        return None
    if attrs.get(HASH_ATTR) != digest:
        return None
    return {"status": attrs["status"], "message": attrs.get("message"), "wall_time_s": attrs["wall_time_s"],
            "n_grad_evals": int(attrs["n_grad_evals"]), "worker": None}


def _previous_records(out: Path) -> dict[str, dict[str, Any]]:
    """Records of the members an earlier sweep into ``out`` finished (status, worker, …), by hash."""
    try:
        members = json.loads((out / MANIFEST).read_text())["members"]
    except (OSError, ValueError, KeyError):
        return {}
    return {digest: {key: value for key, value in record.items() if key not in ("config", "file")}
            for digest, record in members.items() if record.get("status") not in ("pending", "failed")}


def _write_manifest(out: Path, plan: SweepPlan, records: Mapping[str, dict[str, Any]]) -> None:
    members = {digest: {"config": config, "file": f"{MEMBERS}/{digest}.nc", **records[digest]}
               for digest, config in plan.members.items()}
    # dims as [name, values] pairs: their order is the C order of "points", which sorted JSON keys would lose
    manifest = {"gfbench_version": __version__, "dims": [[name, values] for name, values in plan.dims.items()],
                "constants": plan.constants,
                "points": plan.points, "members": members}
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, out / MANIFEST)


def _prepare_out(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"sweep output {str(out)!r} exists and is not a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"cannot create sweep folder {str(out)!r}: folder {str(parent)!r} does not exist")
    if not os.access(out if out.is_dir() else parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the sweep folder {str(out)!r}: permission denied")
    (out / MEMBERS).mkdir(parents=True, exist_ok=True)
    return out


def sweep(grid: Grid | Mapping[str, Any], out: str | os.PathLike, *, scheduler: str | None = None,
          workers: int | None = None, torch_threads: int | None = None, save_params: bool = False,
          device: str = "cpu", dtype: str = "float64", progress: bool = True) -> SweepSummary:
    """Run every member of ``grid`` (see ``Grid``) as a dask task and write it to ``out``.

    ``scheduler`` is the address of a running dask scheduler; without one a LocalCluster of
    ``workers`` single-threaded processes (default: one per core) is started and closed again.
    ``torch_threads`` is torch's intra-op thread count in each task (default on a local cluster:
    cores // workers, at least 1; on a given scheduler: left to the workers' own setting).

    Members whose file already exists with the same config hash are skipped (resume). A member
    that raises, diverges or whose worker dies is recorded in the manifest and the others go on.
    On KeyboardInterrupt the running tasks are cancelled, every finished member stays on disk
    and the manifest is written before the interrupt propagates. Returns a ``SweepSummary``;
    ``load_sweep(out)`` reads the results.
    """
    plan = plan_sweep(grid, save_params=save_params, device=device, dtype=dtype)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    if torch_threads is not None and (isinstance(torch_threads, bool) or not isinstance(torch_threads, int)
                                      or torch_threads < 1):
        raise ConfigError(f"torch_threads must be an integer >= 1, got {torch_threads!r}")
    if workers is not None and scheduler is not None:
        raise ConfigError("workers sizes the local cluster; it cannot be given with a scheduler address")
    distributed = _import_distributed()
    out = _prepare_out(out)

    previous = _previous_records(out)
    records = {digest: {"status": "pending", "message": None, "wall_time_s": None, "worker": None}
               for digest in plan.members}
    skipped = []
    for digest in plan.members:
        finished = _finished_record(member_path(out, digest), digest)
        if finished is not None:
            records[digest] = {**finished, **previous.get(digest, {})}
            skipped.append(digest)
    _write_manifest(out, plan, records)
    todo = [digest for digest in plan.members if digest not in skipped]
    if not todo:
        return SweepSummary(out, records, (), tuple(skipped))

    from tqdm.auto import tqdm

    cluster = None
    if scheduler is None:
        workers = workers or usable_cores()
        torch_threads = torch_threads or max(1, usable_cores() // workers)
        cluster = start_local_cluster(workers)
    executed = []
    try:
        try:
            # Not the default dask scheduler: xarray would then guard every netCDF write on this machine
            # with a lock held through the scheduler, which a Ctrl-C inside a write can leave held forever.
            client = distributed.Client(cluster if cluster is not None else scheduler, timeout="10s",
                                        set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            raise ConfigError(f"cannot connect to the dask scheduler {scheduler!r}: {error}") from None
        with client:
            if progress and "dashboard" in client.scheduler_info().get("services", {}) \
                    and client.run_on_scheduler(_dashboard_can_render):
                print(f"dask dashboard: {client.dashboard_link}")
            futures = {client.submit(run_member, plan.members[digest], torch_threads, pure=False): digest
                       for digest in todo}
            bar = tqdm(total=len(plan.members), initial=len(skipped), disable=not progress, unit="member",
                       desc="sweep")
            try:
                for future in distributed.as_completed(futures, loop=client.loop):
                    digest = futures[future]
                    try:
                        record, ds = future.result()
                    except Exception as error:  # e.g. KilledWorker after dask's retries on other workers
                        record, ds = {"status": "failed", "message": f"{type(error).__name__}: {error}",
                                      "wall_time_s": None, "worker": None}, None
                    if ds is not None:
                        save(ds, member_path(out, digest))
                    records[digest] = record
                    executed.append(digest)
                    _write_manifest(out, plan, records)
                    future.release()
                    bar.update()
            except BaseException:
                client.cancel(list(futures))
                raise
            finally:
                bar.close()
                _write_manifest(out, plan, records)
    finally:
        if cluster is not None:
            cluster.close()
    return SweepSummary(out, records, tuple(executed), tuple(skipped))


def _time_keys(times: np.ndarray) -> np.ndarray:
    """Times rounded to TIME_DIGITS significant digits, so k·lr of different lr meet on one axis."""
    return np.array([float(f"{t:.{TIME_DIGITS}g}") for t in times.tolist()], dtype=np.float64)


def _member_dataset(path: Path) -> xr.Dataset:
    """A member file on the aligned time axis, with an integer index on every other dim (for the outer join)."""
    ds = load(path)
    ds = ds.assign_coords(time=("time", _time_keys(ds["time"].values), ds["time"].attrs)).reset_coords("step")
    for dim, size in ds.sizes.items():
        if dim not in ds.indexes:
            ds = ds.assign_coords({dim: np.arange(size)})
    ds.attrs = {}
    return ds


def load_sweep(out: str | os.PathLike) -> xr.Dataset:
    """A sweep as one Dataset: every member variable over (swept dims…, time, …), with the manifest.

    Missing members (failed or not run) are NaN; members that stopped early (diverged) are
    NaN-padded along ``time``, the outer join of all members' times t = k·lr (rounded to 12
    significant digits so that different lr share points). ``step`` (k) becomes a float variable
    over the swept dims and time. The manifest appears as variables over the swept dims:
    ``status``, ``message``, ``config_hash``, ``worker``, ``wall_time_s`` (s), ``n_grad_evals``;
    one-value axes are scalar coordinates.
    """
    out = Path(out)
    manifest_path = out / MANIFEST
    if not manifest_path.is_file():
        raise ConfigError(f"{str(out)!r} is not a gfbench sweep folder (no {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    dims = {name: list(values) for name, values in manifest["dims"]}
    shape = tuple(len(values) for values in dims.values())
    points = np.array(manifest["points"], dtype=object).reshape(shape)
    records = manifest["members"]
    for digest, record in records.items():
        if record["status"] == "pending":  # written after the manifest's last update (e.g. interrupted)
            records[digest] = {**record, **(_finished_record(member_path(out, digest), digest) or {})}

    loaded = {digest: _member_dataset(member_path(out, digest)) for digest in records
              if records[digest]["status"] not in ("failed", "pending") and member_path(out, digest).is_file()}
    aligned = dict(zip(loaded, xr.align(*loaded.values(), join="outer"))) if loaded else {}
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {name: (name, values) for name, values in dims.items()}
    coords.update({name: value for name, value in manifest["constants"].items()})
    if aligned:
        names = list(dict.fromkeys(name for ds in aligned.values() for name in ds.data_vars))
        first = next(iter(aligned.values()))
        for dim in first.dims:
            coords[dim] = first[dim]
        for name in names:
            example = next(ds[name] for ds in aligned.values() if name in ds)
            values = np.full(shape + example.shape, np.nan)
            for index in np.ndindex(shape):
                member = aligned.get(points[index])
                if member is not None and name in member:
                    values[index] = member[name].values
            data_vars[name] = ((*dims, *example.dims), values, example.attrs)

    def manifest_var(key, default, long_name, units):
        values = np.empty(shape, dtype=object if isinstance(default, str) else np.float64)
        for index in np.ndindex(shape):
            value = records[points[index]].get(key)
            values[index] = default if value is None else value
        return (tuple(dims), values, {"long_name": long_name, "units": units})

    data_vars.update(
        status=manifest_var("status", "", "member status (completed|diverged|solver_failed|failed|pending)", "1"),
        message=manifest_var("message", "", "member status message", "1"),
        worker=manifest_var("worker", "", "dask worker that ran the member", "1"),
        wall_time_s=manifest_var("wall_time_s", np.nan, "member wall time", "s"),
        n_grad_evals=manifest_var("n_grad_evals", np.nan, "member gradient evaluations", "1"),
    )
    data_vars["config_hash"] = (tuple(dims), points.astype(str).astype(object),
                                {"long_name": "member config hash (file members/<hash>.nc)", "units": "1"})
    ds = xr.Dataset(data_vars, coords).set_coords([name for name in ("step",) if name in data_vars])
    ds.attrs = encode_attrs({"title": f"gfbench sweep over {', '.join(dims) or 'one member'}",
                             "gfbench_version": manifest["gfbench_version"], "sweep_dims": json.dumps(list(dims)),
                             "Conventions": CONVENTIONS})
    return ds
