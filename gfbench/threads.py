"""How many torch intra-op threads a run uses: the one asked for, or a rule that does not oversubscribe.

Threads change how fast a run is, not what it computes (on a 2-core CPU, 1 and 2 threads gave
bit-identical float64 datasets; README), so the count is written to the attr ``torch_threads`` and is
no part of a run's identity. Asked for, in this order: ``gfbench.run(..., threads=N)`` (``--threads``;
a sweep's ``--torch-threads``), ``$GFBENCH_THREADS``, ``$OMP_NUM_THREADS`` (torch's own count, as the
environment set it: a dask worker's 1, say). Otherwise ``automatic_threads`` decides: one thread
for a problem whose gradient is too small to split (torch's threads then mostly wait for each
other, and runs sharing the cores slow each other down many times over), else the cores not
running another thread at the start of the run.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from .field import GradientField
from .params import AT_LEAST_ONE, ConfigError
from .spec import Setting

THREADS = Setting("threads", int, None, "torch threads of the run (auto: 1 for a small problem, else the idle "
                  "cores; or $GFBENCH_THREADS)", bounds=AT_LEAST_ONE)
THREADS_ENV = "GFBENCH_THREADS"
#: CPU seconds of one gradient on one thread from which a run takes more than one thread: below it
#: a second thread does not pay even on an idle core (README, "Threads"). Set well above the
#: small problems' 0.2–0.6 ms, which a slower or busier machine can double.
PARALLEL_GRADIENT_S = 2e-3
#: Timed evaluations in ``gradient_seconds``; their least is taken, so one interrupted evaluation
#: does not decide the count.
GRADIENT_TIMINGS = 3

#: The kernel's load figures; the fourth field is "running/total" threads at the moment of reading.
LOADAVG = Path("/proc/loadavg")
#: Reads of the running count averaged by ``running_elsewhere``, and the seconds between them: the
#: count is instantaneous, so runs started together see each other (a load average would lag a minute).
LOAD_SAMPLES, LOAD_SAMPLE_S = 5, 0.002


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def running_elsewhere() -> float:
    """Threads running on the machine now besides the caller: the mean over ``LOAD_SAMPLES`` reads of
    the running count in /proc/loadavg (Linux; the reader itself taken off), ``LOAD_SAMPLE_S`` apart.
    Without that file, the 1-minute load average."""
    counts = []
    try:
        for _ in range(LOAD_SAMPLES):
            counts.append(int(LOADAVG.read_text().split()[3].split("/")[0]) - 1)
            time.sleep(LOAD_SAMPLE_S)
    except OSError:
        return os.getloadavg()[0]
    return sum(counts) / len(counts)


def idle_cores() -> int:
    """Usable cores minus the threads running elsewhere, rounded, at least 1."""
    return max(1, min(usable_cores(), round(usable_cores() - running_elsewhere())))


def requested_threads(threads: int | None = None) -> int | None:
    """The thread count asked for: ``threads``, else $GFBENCH_THREADS, else torch's count when
    $OMP_NUM_THREADS is set; None when nothing asks (``automatic_threads`` decides).
    ConfigError names a bad value (0, −1, "x")."""
    if threads is not None:
        return THREADS.check(threads)
    text = os.environ.get(THREADS_ENV, "")
    if text:
        try:
            return THREADS.check(text, text=True)
        except ConfigError as error:
            raise ConfigError(f"${THREADS_ENV}: {error}") from None
    return torch.get_num_threads() if os.environ.get("OMP_NUM_THREADS") else None


def gradient_seconds(problem, theta: torch.Tensor) -> float:
    """CPU seconds of one evaluation of f and ∇f at θ on one torch thread: the least of
    ``GRADIENT_TIMINGS`` evaluations after one that warms up.

    The calling thread's CPU time, so time the machine gives to other processes meanwhile does not
    count. Costs ``GRADIENT_TIMINGS`` + 1 gradients.
    """
    field = GradientField(problem)
    with torch_threads(1):
        field.evaluate(theta.clone())
        timings = []
        for _ in range(GRADIENT_TIMINGS):
            started = time.thread_time()
            field.evaluate(theta.clone())
            timings.append(time.thread_time() - started)
        return min(timings)


def automatic_threads(problem, theta: torch.Tensor) -> int:
    """1 when a gradient of ``problem`` at θ takes less than ``PARALLEL_GRADIENT_S`` of CPU time, else
    ``idle_cores()``."""
    return 1 if gradient_seconds(problem, theta) < PARALLEL_GRADIENT_S else idle_cores()


def run_threads(problem, theta: torch.Tensor, threads: int | None = None) -> int:
    """The thread count of a run of ``problem`` from θ: ``requested_threads(threads)``, else automatic."""
    requested = requested_threads(threads)
    return automatic_threads(problem, theta) if requested is None else requested


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` inside the block, restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
