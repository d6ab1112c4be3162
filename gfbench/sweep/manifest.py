"""A sweep's folder: the manifest ``sweep.json`` and the member files ``members/<digest>.nc``."""
from __future__ import annotations

import fcntl
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import xarray as xr

from .. import __version__
from ..dataset import FINISHED_STATUSES, atomic_write
from ..params import ConfigError
from ..spec import reusable
from .plan import SweepPlan

MANIFEST = "sweep.json"
MEMBERS = "members"
#: Held (flock) by the one sweep running into the folder.
LOCK = ".lock"
#: A member digest (``RunSpec.digest``): the only form of file name the manifest may point to.
DIGEST = re.compile(r"[0-9a-f]{16}")


def member_path(out: Path, digest: str) -> Path:
    """``out/members/<digest>.nc``; ConfigError for anything but a digest (never a path outside ``out``)."""
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise ConfigError(f"sweep manifest in {str(out)!r} names a member {digest!r} that is not a 16-hex-digit "
                          "digest; the manifest is damaged or not gfbench's")
    return Path(out) / MEMBERS / f"{digest}.nc"


def finished_record(path: Path, identity: Mapping[str, Any]) -> dict[str, Any] | None:
    """The manifest record of the member whose file ``path`` is ``identity``'s finished run, else None."""
    if not path.is_file():
        return None
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            attrs = dict(ds.attrs)
    except (OSError, ValueError):
        return None
    if not reusable(attrs, identity):
        return None
    return {"status": attrs["status"], "message": attrs.get("message"), "wall_time_s": attrs["wall_time_s"],
            "n_grad_evals": int(attrs["n_grad_evals"]), "worker": None}


def read_manifest(out: Path) -> dict[str, Any]:
    """The manifest of the sweep folder ``out``; ConfigError when there is none or it is unreadable."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{str(out)!r} is not a gfbench sweep folder (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the sweep manifest {str(path)!r}: {error}") from None
    missing = [key for key in ("dims", "constants", "points", "members")
               if not isinstance(manifest, dict) or key not in manifest]
    if missing:
        raise ConfigError(f"the sweep manifest {str(path)!r} lacks {', '.join(missing)}")
    unknown = sorted(set(manifest["points"]) - set(manifest["members"]))
    if unknown:
        raise ConfigError(f"the sweep manifest {str(path)!r} points to members it does not list: {unknown[:3]}")
    return manifest


def previous_records(out: Path) -> dict[str, dict[str, Any]]:
    """Records of the members an earlier sweep into ``out`` finished (status, worker, …), by digest."""
    try:
        members = read_manifest(out)["members"]
    except ConfigError:
        return {}
    return {digest: {key: value for key, value in record.items() if key not in ("config", "file")}
            for digest, record in members.items() if record.get("status") in FINISHED_STATUSES}


def write_manifest(out: Path, plan: SweepPlan, records: Mapping[str, dict[str, Any]]) -> None:
    """Write ``out/sweep.json`` atomically: the plan and every member's record."""
    members = {digest: {"config": config, "file": f"{MEMBERS}/{digest}.nc", **records[digest]}
               for digest, config in plan.members.items()}
    # dims as [name, values] pairs: their order is the C order of "points", which sorted JSON keys would lose
    manifest = {"gfbench_version": __version__, "dims": [[name, values] for name, values in plan.dims.items()],
                "constants": plan.constants, "points": plan.points, "members": members}
    text = json.dumps(manifest, indent=1, sort_keys=True)
    atomic_write(out / MANIFEST, lambda tmp: Path(tmp).write_text(text))


@contextmanager
def claim_out(out: Path) -> Iterator[Path]:
    """Create ``out/members`` and hold the lock ``out/.lock`` for the block.

    A second sweep into the same folder is refused at once (ConfigError) rather than made to
    wait: two sweeps would run the same members twice. The lock is the kernel's (``flock``), so
    a sweep that dies releases it; the empty lock file stays.
    """
    (out / MEMBERS).mkdir(parents=True, exist_ok=True)
    # read-only suffices for flock, and works on a lock file another user created in a shared folder
    handle = os.open(out / LOCK, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another sweep is running into {str(out)!r}; wait for it to end, or use "
                              "another --out") from None
        yield out
    finally:
        os.close(handle)
