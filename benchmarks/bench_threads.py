"""The thread policy and the cost of recording, as ratios measured in one process against named peers."""
import time

import torch

import gfbench
from gfbench.threads import run_threads, usable_cores

from .bench_peers import torch_sgd_step
from .common import make_problem

#: GD steps of a timed run: enough that its fixed costs (θ0, the dataset, the thread policy's probe)
#: stay a few percent of it. deep_linear's gradient is ~0.15 ms, relu_fc's ~8 ms on one core.
RUN_STEPS = {"deep_linear": 500, "relu_fc": 100}
#: Alternating rounds of the functions compared; each keeps its best round.
ROUNDS = 5


def interleaved_best_times(functions, rounds=ROUNDS):
    """Best wall time of one call of each of ``functions`` (a dict), timed in alternating rounds so that
    load from elsewhere on a shared machine falls on all alike."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def gd_run(problem, steps, record_every, threads):
    """A function running GD on ``problem`` for ``steps`` steps (lr 0.001), recording every ``record_every``."""
    return lambda: gfbench.run(problem, "gd", lr=1e-3, steps=steps, record_every=record_every, threads=threads,
                               progress=False)


class RecordingVsTorchSGD:
    """``gfbench.run`` of GD on relu_fc / as many plain ``torch.optim.SGD`` steps on the same network and data.

    Both on one thread. ``every_step`` records loss, ‖∇f‖, distance from θ0 and training accuracy
    at every step (``record_every=1``, the default); ``sparse`` at the first and last step only.
    The run's fixed costs (θ0, building the dataset) are included.
    """

    params = (["every_step", "sparse"],)
    param_names = ["recording"]
    unit = "ratio"
    timeout = 300

    def setup(self, recording):
        self.problem = make_problem("relu_fc")
        steps = RUN_STEPS["relu_fc"]
        self.ours = gd_run(self.problem, steps, 1 if recording == "every_step" else steps, threads=1)
        sgd_step = torch_sgd_step(self.problem, self.problem.init(0), 1e-3)
        self.peer = lambda: [sgd_step() for _ in range(steps)]
        self.threads_before = torch.get_num_threads()
        torch.set_num_threads(1)

    def teardown(self, recording):
        torch.set_num_threads(self.threads_before)

    def track_run_over_sgd_time(self, recording):
        best = interleaved_best_times({"ours": self.ours, "peer": self.peer})
        return best["ours"] / best["peer"]


class ThreadPolicy:
    """A GD run at gfbench's default thread count / the same run at one thread, and / at the fastest count
    in 1..cores (recording only at the ends). Below 1: the default beats one thread; 1: it is the best."""

    params = (["deep_linear", "relu_fc"],)
    param_names = ["problem"]
    unit = "ratio"
    timeout = 600  # on a loaded machine a count above the idle cores runs tens of times slower

    def setup(self, problem):
        self.problem = make_problem(problem)
        steps = RUN_STEPS[problem]
        self.runs = {"default": gd_run(self.problem, steps, steps, threads=None),
                     **{count: gd_run(self.problem, steps, steps, threads=count)
                        for count in range(1, usable_cores() + 1)}}

    def track_default_over_one_thread_time(self, problem):
        best = interleaved_best_times({"default": self.runs["default"], 1: self.runs[1]})
        return best["default"] / best[1]

    def track_default_over_best_thread_time(self, problem):
        best = interleaved_best_times(self.runs)
        return best.pop("default") / min(best.values())

    def track_default_thread_count(self, problem):
        return run_threads(self.problem, self.problem.init(0))

    track_default_thread_count.unit = "threads"
