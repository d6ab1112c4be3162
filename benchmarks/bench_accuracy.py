"""Accuracy tracked across commits: errors against closed forms, and the GD–GF gap."""
import numpy as np
import scipy.linalg

import gfbench
from gfbench.reproduce import GF_OPTIONS

from .common import make_problem


def gd_gf_gap(problem, lr, steps, record_every, gf=None):
    """max over recorded t of ‖θ_k − θ(kη)‖ and the final gap relative to ‖θ(T) − θ0‖, against ``gf``
    (a flow solver or its name; default plain ``gf``)."""
    runs = [gfbench.run(problem, solver, lr=lr, steps=steps, record_every=record_every, save_params=True,
                        progress=False) for solver in ("gd", gf or "gf")]
    gap = np.linalg.norm(runs[0].theta.values - runs[1].theta.values, axis=1)
    return gap.max(), gap[-1] / float(runs[1].distance_from_init[-1])


class QuadraticClosedForms:
    """GF against exp(−tA) and the observed order of the GD–GF gap, on an indefinite quadratic too."""

    params = ([0.01, -0.1],)
    param_names = ["lambda_min"]

    def setup(self, lambda_min):
        self.problem = gfbench.get_problem("quadratic", dim=50, lambda_min=lambda_min, lambda_max=1.0)

    def track_gf_relative_error(self, lambda_min):
        ds = gfbench.run(self.problem, "gf", lr=0.1, steps=200, record_every=10, save_params=True, progress=False)
        a, star = self.problem.hessian().numpy(), self.problem.minimizer().numpy()
        x0 = ds.theta.values[0] - star
        exact = np.stack([star + scipy.linalg.expm(-t * a) @ x0 for t in ds.time.values])
        return float(np.max(np.linalg.norm(ds.theta.values - exact, axis=1) / np.linalg.norm(exact, axis=1)))

    track_gf_relative_error.unit = "relative error"

    def track_gd_gf_observed_order(self, lambda_min):
        lrs = [0.1, 0.05, 0.025]
        gaps = [gd_gf_gap(self.problem, lr, round(4.0 / lr), 1)[0] for lr in lrs]
        return float(np.mean(np.log2(np.array(gaps[:-1]) / np.array(gaps[1:]))))

    track_gd_gf_observed_order.unit = "order"


class GapAtPaperStepSize:
    """‖θ_k − θ(kη)‖ / ‖θ(kη) − θ0‖ at the end of a run with the paper's η0 = 0.001."""

    params = (["deep_linear", "relu_fc"],)
    param_names = ["problem"]
    timeout = 600
    # deep_linear: T = 30 (to its global minimum); relu_fc: T = 0.2 (the first 200 of the paper's 10,000 steps,
    # so that the GF reference, slowed by the ReLU kinks, stays short in a quick CI pass).
    horizon_steps = {"deep_linear": 30_000, "relu_fc": 200}

    def setup(self, problem):
        self.problem = make_problem(problem)

    def track_relative_gap(self, problem):
        steps = self.horizon_steps[problem]
        # The GF reference of Figure 1's reproduction: rtol 1e-8, since ReLU kinks make tighter ones crawl.
        gf = gfbench.get_solver("gf", **GF_OPTIONS)
        return float(gd_gf_gap(self.problem, 1e-3, steps, steps // 10, gf)[1])

    track_relative_gap.unit = "relative distance"


class FlowGapOrder:
    """Observed order of the gap ‖θ_k − θ(kη)‖ at T = kη = 2 for each continuous model of GD (1 for GF,
    2 for IGR and second_order), on a small deep_linear (d = 36, Gaussian init), η = 0.1, 0.05, 0.025."""

    params = (["gf", "igr", "second_order"],)
    param_names = ["solver"]

    def setup(self, solver):
        self.problem = gfbench.get_problem("deep_linear", input_dim=4, width=4, init="gaussian", init_std=0.5)

    def track_observed_order(self, solver):
        lrs = [0.1, 0.05, 0.025]
        # Recording only t = 0 and T makes the "max over recorded t" the gap at T.
        gaps = [gd_gf_gap(self.problem, lr, round(2.0 / lr), round(2.0 / lr), solver)[0] for lr in lrs]
        return float(np.mean(np.log2(np.array(gaps[:-1]) / np.array(gaps[1:]))))

    track_observed_order.unit = "order"
