"""``load_sweep``: every member of a sweep folder as one dataset over the swept axes."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..dataset import MEMBER_STATUSES, RUN_STATUSES, dataset_attrs, load, validate_dataset
from ..timeaxis import common_time_labels
from .manifest import finished_record, member_path, read_manifest


def _member_dataset(path: Path) -> xr.Dataset:
    """A member file with an integer index on every dim but time (for the outer join)."""
    ds = load(path).reset_coords("step")
    for dim, size in ds.sizes.items():
        if dim not in ds.indexes:
            ds = ds.assign_coords({dim: np.arange(size)})
    ds.attrs = {}
    return ds


def load_sweep(out: str | os.PathLike) -> xr.Dataset:
    """A sweep as one Dataset: every member variable over (swept dims…, time, …), with the manifest.

    Missing members (failed or not run) are NaN; members that stopped early (diverged) are
    NaN-padded along ``time``, the outer join of all members' times t = k·lr
    (``gfbench.timeaxis.common_time_labels``: different lr share points). ``step`` (k) becomes a float variable
    over the swept dims and time. The manifest appears as variables over the swept dims:
    ``status``, ``message``, ``config_hash``, ``worker``, ``wall_time_s`` (s), ``n_grad_evals``;
    one-value axes are scalar coordinates.
    """
    out = Path(out)
    manifest = read_manifest(out)
    dims = {name: list(values) for name, values in manifest["dims"]}
    shape = tuple(len(values) for values in dims.values())
    points = np.array(manifest["points"], dtype=object).reshape(shape)
    records = manifest["members"]
    paths = {digest: member_path(out, digest) for digest in records}
    for digest, record in records.items():
        if record["status"] == "pending":  # written after the manifest's last update (e.g. interrupted)
            records[digest] = {**record, **(finished_record(paths[digest], record["config"]) or {})}

    loaded = {digest: _member_dataset(paths[digest]) for digest in records
              if records[digest]["status"] in RUN_STATUSES and paths[digest].is_file()}
    labels = common_time_labels([ds["time"].values for ds in loaded.values()])
    loaded = {digest: ds.assign_coords(time=("time", times, ds["time"].attrs))
              for (digest, ds), times in zip(loaded.items(), labels)}
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
        status=manifest_var("status", "", f"member status ({'|'.join(MEMBER_STATUSES)})", "1"),
        message=manifest_var("message", "", "member status message", "1"),
        worker=manifest_var("worker", "", "dask worker that ran the member", "1"),
        wall_time_s=manifest_var("wall_time_s", np.nan, "member wall time", "s"),
        n_grad_evals=manifest_var("n_grad_evals", np.nan, "member gradient evaluations", "1"),
    )
    data_vars["config_hash"] = (tuple(dims), points.astype(str).astype(object),
                                {"long_name": "member config hash (file members/<hash>.nc)", "units": "1"})
    ds = xr.Dataset(data_vars, coords).set_coords([name for name in ("step",) if name in data_vars])
    ds.attrs = dataset_attrs("sweep", title=f"gfbench sweep over {', '.join(dims) or 'one member'}",
                             gfbench_version=manifest["gfbench_version"], sweep_dims=json.dumps(list(dims)))
    validate_dataset(ds)
    return ds
