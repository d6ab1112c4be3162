"""Adaptive gradient flow: the cost of a solve to a fixed horizon, and of writing a long dataset."""
import json
import tempfile
from pathlib import Path

import numpy as np

import gfbench

from .common import DEVICES, SkipNotImplemented, make_problem, require_device, synchronize


class GFSolve:
    """Adaptive GF (dopri5, default tolerances) on deep_linear to T = 30, recorded every 100 steps."""

    params = (DEVICES,)
    param_names = ["device"]
    timeout = 300

    def setup(self, device):
        self.problem = make_problem("deep_linear", device)

    def time_gf_solve(self, device):
        gfbench.run(self.problem, "gf", lr=0.01, steps=3000, record_every=100, device=device, progress=False)
        synchronize(device)

    def peakmem_gf_solve(self, device):
        gfbench.run(self.problem, "gf", lr=0.01, steps=3000, record_every=100, device=device, progress=False)

    def track_gf_nfe(self, device):
        ds = gfbench.run(self.problem, "gf", lr=0.01, steps=3000, record_every=100, device=device, progress=False)
        return ds.attrs["nfe"]

    track_gf_nfe.unit = "gradient evaluations"


class WriteDataset:
    """Recording and atomically writing a 10,000-step trajectory with θ (d = 820) at every step."""

    timeout = 300

    def setup(self):
        require_device("cpu")
        self.ds = gfbench.run("deep_linear", "gd", lr=0.01, steps=10_000, save_params=True, progress=False)
        self.folder = tempfile.TemporaryDirectory()

    def teardown(self):
        self.folder.cleanup()

    def time_write_10k_steps(self):
        gfbench.save(self.ds, Path(self.folder.name) / "run.nc")

    def peakmem_write_10k_steps(self):
        gfbench.save(self.ds, Path(self.folder.name) / "run.nc")

    def track_file_megabytes(self):
        path = gfbench.save(self.ds, Path(self.folder.name) / "run.nc")
        return path.stat().st_size / 2 ** 20

    track_file_megabytes.unit = "MiB"


def _completed(ds) -> bool:
    return ds.attrs["status"] == "completed"


class FilippovFlows:
    """Gradient flow on ReLU networks as a Filippov system (``gf`` with ``kinks=events``, every event
    located, or ``jump_corrected``, crossings passed inside the steps; default tolerances):
    gradients to the horizon, and the flow's error (against the same solve at rtol and atol ÷ 100)
    as a fraction of the GD–flow gap it is meant to resolve, at the final time. A solve that stops short
    of the horizon (``status`` other than completed) tracks NaN, not the numbers of its prefix.

    ``ntk``: width 100, n 20, lr 0.01 to t = 2 (crossings and one-layer sliding);
    ``ntk_wide``: width 4096, n 20, lr 1 to t = 10 (an event about every step, on a state of 40,960
    entries: the solver's O(d) work per event);
    ``relu_mlp``: mlp 784-8-8-2 (relu, mse, 5 examples of digits 0, 1), lr 0.01 to t = 1, where
    pairs of both hidden layers slide at once;
    ``cnn``: the paper's CNN (arch=subsample) on 20 examples, lr 0.001 to t = 0.02 (~90 crossings of
    convolutional pre-activations and several sliding pairs).
    """

    CASES = {
        "ntk": ("ntk", {"width": 100, "n": 20}, 0.01, 200),
        "ntk_wide": ("ntk", {"width": 4096, "n": 20}, 1.0, 10),
        "relu_mlp": ("mlp", {"hidden": "8,8", "activation": "relu", "n_train": 5, "classes": "0,1"}, 0.01, 100),
        "cnn": ("cnn", {"n_train": 20}, 0.001, 20),
    }
    params = (list(CASES), ["events", "jump_corrected"])
    param_names = ["case", "kinks"]
    timeout = 600

    def setup(self, case, kinks):
        name, params, self.lr, self.steps = self.CASES[case]
        try:
            gfbench.get_solver("gf", kinks=kinks)
        except gfbench.ConfigError:
            raise SkipNotImplemented(f"gf has no kinks={kinks} in this commit") from None
        self.problem, self.kinks = make_problem(name, params=params), kinks
        self.flow = self._solve()

    def _solve(self, **options):
        return gfbench.run(self.problem, gfbench.get_solver("gf", kinks=self.kinks, **options), lr=self.lr,
                           steps=self.steps, record_every=self.steps, save_params=True, progress=False)

    def time_solve(self, case, kinks):
        self._solve()

    def track_gradients(self, case, kinks):
        return self.flow.attrs["n_grad_evals"] if _completed(self.flow) else float("nan")

    track_gradients.unit = "gradient evaluations"

    def track_error_over_gap(self, case, kinks):
        options = json.loads(self.flow.attrs["solver_options"])
        tight = self._solve(rtol=options["rtol"] / 100, atol=options["atol"] / 100)
        if not (_completed(self.flow) and _completed(tight)):
            return float("nan")
        gd = gfbench.run(self.problem, "gd", lr=self.lr, steps=self.steps, record_every=self.steps, save_params=True,
                         progress=False)
        final = self.flow.theta.values[-1]
        return float(np.linalg.norm(final - tight.theta.values[-1]) / np.linalg.norm(final - gd.theta.values[-1]))

    track_error_over_gap.unit = "flow error / GD-flow gap"


class ReluFcFlow:
    """``gf`` on relu_fc, EC21 Figure 1's network with its 1000 examples, lr 0.001 to t = 0.01: the
    gradients the flow costs where kinks are crossed by the thousand per unit time, at the problem's
    defaults (Filippov's flow with the crossings passed inside bosh3's steps, rtol 1e-10) and with
    the kinks left to the step control (adaptive_heun, rtol 1e-7), which resolve the GD–flow gap
    about as well to t = 1 (errors in the README)."""

    SOLVERS = {"defaults": {}, "step_control": {"kinks": "step_control"}}
    params = (list(SOLVERS),)
    param_names = ["solver"]
    timeout = 300

    def setup(self, solver):
        try:
            gf = gfbench.get_solver("gf", **self.SOLVERS[solver])
        except ValueError as error:  # gfbench's ConfigError: an option this commit does not have
            raise SkipNotImplemented(str(error)) from None
        self.problem = make_problem("relu_fc", params={})
        self.flow = gfbench.run(self.problem, gf, lr=0.001, steps=10, record_every=10, progress=False)

    def track_gradients(self, solver):
        return self.flow.attrs["n_grad_evals"] if _completed(self.flow) else float("nan")

    track_gradients.unit = "gradient evaluations"
