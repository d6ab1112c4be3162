"""Shared pieces of the asv suites: devices, the registry-driven parameter grid, peer timing."""
import time

import torch

try:
    from asv_runner.benchmarks.mark import SkipNotImplemented
except ImportError:  # older asv
    SkipNotImplemented = NotImplementedError

import gfbench

DEVICES = ["cpu", "cuda"]

#: Small but representative configuration of every problem the suites time; problems a commit
#: does not have yet are skipped there, so one grid serves the whole history.
PROBLEM_CONFIGS = {
    "quadratic": {"dim": 200},
    "deep_linear": {},
    "relu_fc": {"n_train": 1000},
    "linear_fc": {"n_train": 1000},
    "cnn": {"n_train": 1000},
    "ntk": {},
}
PROBLEMS = list(PROBLEM_CONFIGS)


def require_device(device):
    if device == "cuda" and not torch.cuda.is_available():
        raise SkipNotImplemented(f"device={device!r} not available")
    return torch.device(device)


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def make_problem(name, device="cpu", dtype=torch.float64, params=None):
    """``name`` on ``device`` with ``params`` (default: its benchmark configuration); skipped where
    this commit lacks it."""
    if name not in gfbench.available_problems():
        raise SkipNotImplemented(f"problem {name!r} not in this commit")
    try:
        problem = gfbench.get_problem(name, **(PROBLEM_CONFIGS[name] if params is None else params))
    except gfbench.ConfigError as error:  # e.g. MNIST files absent on this machine
        raise SkipNotImplemented(str(error))
    return problem.to(require_device(device), dtype)


def best_time(function, repeats=5, number=20, device="cpu"):
    """Smallest mean wall time of ``number`` calls over ``repeats`` rounds (seconds per call)."""
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(number):
            function()
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / number)
    return best


def interleaved_ratio(ours, peer, number, rounds=5):
    """Best time of ``ours`` / best time of ``peer`` (``number`` calls each), timed in alternating
    rounds so that load from elsewhere on a shared machine falls on both alike."""
    ours_times, peer_times = [], []
    for _ in range(rounds):
        ours_times.append(best_time(ours, repeats=1, number=number))
        peer_times.append(best_time(peer, repeats=1, number=number))
    return min(ours_times) / min(peer_times)
