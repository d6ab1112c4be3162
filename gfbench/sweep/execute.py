"""Running a sweep's members as dask tasks: the local cluster, one task per member, the summary."""
from __future__ import annotations

import os
import socket
import time as wallclock
import traceback
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import xarray as xr

from ..dataset import check_folder, save
from ..params import AT_LEAST_ONE, ConfigError
from ..run import run
from ..spec import RunSpec, Setting
from ..threads import usable_cores
from .manifest import claim_out, finished_record, member_path, previous_records, write_manifest
from .plan import Grid, plan_sweep

EXTRA = "sweep"
#: The sweep's own settings (not the members'): where and how wide the members run.
WORKERS = Setting("workers", int, None, "local cluster worker processes (auto: one per core)", bounds=AT_LEAST_ONE)
TORCH_THREADS = Setting("torch_threads", int, None, "torch threads per task (auto: cores // workers locally)",
                      bounds=AT_LEAST_ONE)
#: Interface that a local cluster's scheduler, workers and dashboard listen on: this machine only.
LOCAL_HOST = "127.0.0.1"
#: Seconds between checks on the running members and on the scheduler's workers.
POLL_S = 5.0
#: Seconds a scheduler may have no worker at all before the members still pending are recorded as
#: failed: long enough for a nanny to restart a worker that died, on a busy machine.
NO_WORKERS_S = 60.0


def _import_distributed():
    try:
        import distributed
    except ImportError as error:
        raise ImportError(f"gfbench sweeps need dask.distributed: pip install 'gfbench[{EXTRA}]'") from error
    return distributed


def run_member(config: Mapping[str, Any], torch_threads: int | None = None) -> tuple[dict[str, Any], xr.Dataset | None]:
    """Run one member from its identity (the dask task); never raises. Returns its record and dataset (None if it failed)."""
    started = wallclock.perf_counter()
    record: dict[str, Any] = {"worker": _worker_name()}
    try:
        spec = RunSpec.from_identity(config)
        ds = run(spec.problem, spec.solver, progress=False, threads=torch_threads, **spec.settings)
    except Exception as error:  # a member's failure is recorded, never propagated to the other members
        record.update(status="failed", message=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(),
                      wall_time_s=wallclock.perf_counter() - started)
        return record, None
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


def start_local_cluster(workers: int | None = None):
    """A LocalCluster of ``workers`` single-threaded worker processes (default: one per usable core).

    Everything listens on 127.0.0.1 only (the dashboard, when bokeh is installed, on a free
    port, so clusters never collide): a sweep's cluster is not reachable from the network.
    """
    distributed = _import_distributed()
    return distributed.LocalCluster(n_workers=workers or usable_cores(), threads_per_worker=1, processes=True,
                                    host=LOCAL_HOST, dashboard_address=f"{LOCAL_HOST}:0")


@dataclass(frozen=True)
class SweepSummary:
    """What a ``sweep`` call did: every member's manifest record, and which members it ran or skipped."""

    out: Path
    members: dict[str, dict[str, Any]]
    executed: tuple[str, ...]
    skipped: tuple[str, ...]

    def count(self, status: str) -> int:
        return sum(record["status"] == status for record in self.members.values())


def sweep(grid: Grid | Mapping[str, Any], out: str | os.PathLike, *, scheduler: str | None = None,
          workers: int | None = None, torch_threads: int | None = None, progress: bool = True,
          **settings: Any) -> SweepSummary:
    """Run every member of ``grid`` (see ``Grid``) as a dask task and write it to ``out``.

    ``settings`` are run settings given apart from the grid, one value each (e.g.
    ``save_params=True, dtype="float32"``); any run setting may also be a grid axis.
    ``scheduler`` is the address of a running dask scheduler; without one a LocalCluster of
    ``workers`` single-threaded processes (default: one per core) is started and closed again.
    ``torch_threads`` is torch's intra-op thread count in each task (default on a local cluster:
    cores // workers, at least 1; on a given scheduler: what ``gfbench.run`` chooses on the worker,
    i.e. its $GFBENCH_THREADS or $OMP_NUM_THREADS, which dask's nanny sets to 1).

    Members whose file passes the resume rule (``gfbench.spec.reusable``) are skipped. A member
    that raises, diverges or whose worker dies is recorded in the manifest and the others go on;
    so are the members still pending when the scheduler has had no worker for ``NO_WORKERS_S``.
    A sweep holds ``out``'s lock while it runs: a second sweep into ``out`` meanwhile is refused
    (ConfigError). An unreachable scheduler is a ConfigError before ``out`` is touched.
    On KeyboardInterrupt the running tasks are cancelled, every finished member stays on disk
    and the manifest is written before the interrupt propagates. Returns a ``SweepSummary``;
    ``load_sweep(out)`` reads the results.
    """
    plan = plan_sweep(grid, **settings)
    workers, torch_threads = WORKERS.check(workers), TORCH_THREADS.check(torch_threads)
    if workers is not None and scheduler is not None:
        raise ConfigError("workers sizes the local cluster; it cannot be given with a scheduler address")
    distributed = _import_distributed()
    out = check_folder(out)
    with ExitStack() as stack:
        # before anything is created: an unreachable scheduler leaves no folder or manifest behind
        client = stack.enter_context(_connect(distributed, scheduler)) if scheduler is not None else None
        stack.enter_context(claim_out(out))
        previous = previous_records(out)
        records = {digest: {"status": "pending", "message": None, "wall_time_s": None, "worker": None}
                   for digest in plan.members}
        skipped = []
        for digest, identity in plan.members.items():
            finished = finished_record(member_path(out, digest), identity)
            if finished is not None:
                records[digest] = {**finished, **previous.get(digest, {})}
                skipped.append(digest)
        write_manifest(out, plan, records)
        todo = [digest for digest in plan.members if digest not in skipped]
        if not todo:
            return SweepSummary(out, records, (), tuple(skipped))
        if client is None:
            workers = workers or usable_cores()
            torch_threads = torch_threads or max(1, usable_cores() // workers)
            client = stack.enter_context(_client(distributed, stack.enter_context(start_local_cluster(workers))))
        executed = _execute(distributed, client, plan, todo, records, out, torch_threads, progress)
    return SweepSummary(out, records, tuple(executed), tuple(skipped))


def _execute(distributed, client, plan, todo, records, out: Path, torch_threads: int | None, progress: bool) -> list[str]:
    """Run the members ``todo`` on ``client``, saving each and updating ``records`` and the manifest as it ends.

    Returns the digests run, in the order they ended. Every member ends recorded, even when no
    worker is left to run it (see ``NO_WORKERS_S``).
    """
    from tqdm.auto import tqdm

    if progress and "dashboard" in client.scheduler_info().get("services", {}) \
            and client.run_on_scheduler(_dashboard_can_render):
        print(f"dask dashboard: {client.dashboard_link}")
    futures = {client.submit(run_member, plan.members[digest], torch_threads, pure=False): digest for digest in todo}
    pending = set(futures)
    executed = []
    bar = tqdm(total=len(plan.members), initial=len(plan.members) - len(todo), disable=not progress, unit="member",
               desc="sweep")

    def finish(future, record, ds=None):
        digest = futures[future]
        if ds is not None:
            save(ds, member_path(out, digest))
        records[digest] = record
        executed.append(digest)
        write_manifest(out, plan, records)
        pending.discard(future)
        future.release()
        bar.update()

    # Not as_completed: it waits forever for a member whose workers are all gone, and a finished
    # member's result can be lost with its worker and then wait, recomputing, for a worker again.
    without_workers_since = None
    try:
        while pending:
            for future in _done(distributed, client, pending):
                try:
                    finish(future, *future.result(timeout=POLL_S))
                except TimeoutError:  # its result was lost with its worker: pending again
                    pass
                except Exception as error:  # e.g. KilledWorker after dask's retries on other workers
                    finish(future, _failed(f"{type(error).__name__}: {error}"))
            if client.nthreads():  # any worker (scheduler_info lists only a few)
                without_workers_since = None
            elif without_workers_since is None:
                without_workers_since = wallclock.monotonic()
            elif wallclock.monotonic() - without_workers_since > NO_WORKERS_S:
                client.cancel(list(pending))
                for future in list(pending):
                    finish(future, _failed(f"no dask worker was left to run it for {NO_WORKERS_S:g} s (they died "
                                           "or left); re-run the sweep to retry it"))
    except BaseException:
        client.cancel(list(futures))
        raise
    finally:
        bar.close()
        write_manifest(out, plan, records)
    return executed


def _done(distributed, client, pending: set) -> set:
    """The futures of ``pending`` that end within ``POLL_S`` seconds (maybe none)."""
    try:
        with client.as_current():  # only here: see _client for why it is not the default client
            return distributed.wait(list(pending), timeout=POLL_S, return_when="FIRST_COMPLETED").done
    except TimeoutError:
        return set()


def _failed(message: str) -> dict[str, Any]:
    return {"status": "failed", "message": message, "wall_time_s": None, "worker": None}


def _client(distributed, target):
    """A client of ``target`` (a cluster or an address) that is not dask's default client.

    Not the default: xarray would then guard every netCDF write on this machine with a lock held
    through the scheduler, which a Ctrl-C inside a write can leave held forever.
    """
    return distributed.Client(target, timeout="10s", set_as_default=False)


def _connect(distributed, scheduler: str):
    """A client of the running scheduler at ``scheduler``; ConfigError (nothing left running) if there is none."""
    try:
        # checked first: Client() fails on a malformed address only after starting, and its __del__ then
        # blocks for 20 s and prints a traceback
        distributed.comm.get_address_host_port(scheduler)
    except (ValueError, TypeError, AttributeError) as error:
        raise ConfigError(f"scheduler {scheduler!r} is not a dask scheduler address such as tcp://HOST:PORT "
                          f"({error})") from None
    try:
        return _client(distributed, scheduler)
    except (OSError, TimeoutError, ValueError) as error:
        raise ConfigError(f"cannot connect to the dask scheduler {scheduler!r}: {error}") from None
