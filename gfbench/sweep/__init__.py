"""Sweeps: the Cartesian grid of runs (problem × solver × parameters × run settings) on dask.distributed.

Each member of the grid is one ``gfbench.run`` executed as a dask task. By default the tasks run on
a ``distributed.LocalCluster`` of single-threaded worker *processes*, one per core, each with one
torch intra-op thread: the run loop is a Python loop over many small kernels (GD's update, the
adaptive stepper of torchdiffeq) that holds the GIL between kernels, so thread workers would
serialise on it, and torch's own intra-op threads in every worker would oversubscribe the cores.
Any running scheduler can be used instead (``scheduler="tcp://host:port"``); start its workers the
same way, ``dask worker ADDRESS --nworkers N --nthreads 1``.

Output folder layout::

    DIR/sweep.json            the manifest (grid, every member's identity, digest and status)
    DIR/members/<digest>.nc   one schema-v1 dataset per member, written atomically
    DIR/.lock                 held by the sweep running into DIR; a second one is refused meanwhile

A member is a ``gfbench.spec.RunSpec``; its digest is ``RunSpec.digest()`` (SHA-256 of its
identity). Re-running a sweep into the same folder skips members whose file passes the one resume
rule, ``gfbench.spec.reusable``, so an interrupted or partly failed sweep resumes where it stopped.

Member statuses in the manifest: ``completed``, ``diverged`` and ``solver_failed`` (the run's own
status; the file holds the recorded prefix), ``failed`` (the member raised or its worker died;
no file, the message says why) and ``pending`` (not run yet).

The parts: ``plan`` (grid → checked members), ``execute`` (dask), ``manifest`` (the folder and
its JSON), ``merge`` (``load_sweep``: all members as one dataset).
"""
from .execute import SweepSummary, run_member, start_local_cluster, sweep, usable_cores
from .manifest import MANIFEST, MEMBERS, member_path
from .merge import load_sweep
from .plan import Grid, SweepPlan, plan_sweep

__all__ = ["Grid", "SweepPlan", "SweepSummary", "MANIFEST", "MEMBERS", "load_sweep", "member_path", "plan_sweep",
           "run_member", "start_local_cluster", "sweep", "usable_cores"]
