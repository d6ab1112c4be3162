"""gfbench against named peers, measured in the same process, reported as ratios."""
import math

import numpy as np
import scipy.linalg
import torch
from torchdiffeq import odeint

import gfbench
from gfbench.field import GradientField

from .common import best_time, make_problem


class GDStepVsTorchSGD:
    """Our GD step / a plain ``torch.optim.SGD`` step on the same weights and loss (< 1: we are faster)."""

    params = (["deep_linear"],)
    param_names = ["problem"]
    unit = "ratio"

    def setup(self, problem):
        self.problem = make_problem(problem)
        theta0 = self.problem.init(0)
        self.ours = gfbench.get_solver("gd").start(GradientField(self.problem), theta0, 1e-3)
        self.weights = [torch.nn.Parameter(w.clone()) for w in self.problem.layers(theta0)]
        self.sgd = torch.optim.SGD(self.weights, lr=1e-3)

    def _sgd_step(self):
        self.sgd.zero_grad()
        product = self.weights[0]
        for weight in self.weights[1:]:
            product = weight @ product
        self.problem.end_to_end_loss(product).backward()
        self.sgd.step()

    def _our_step(self):
        self.ours.advance_to(self.ours.step + 1)

    def track_gd_over_sgd_time(self, problem):
        ours = best_time(self._our_step, repeats=7, number=200)
        peer = best_time(self._sgd_step, repeats=7, number=200)
        return ours / peer


class AdaptiveGFVsRK4:
    """Gradient evaluations of adaptive GF (dopri5, default tolerances) / fixed-step RK4 at equal global error.

    On a 50-dimensional quadratic to T = 20, errors against exp(−tA) at the 200 grid points.
    """

    unit = "ratio"
    timeout = 300

    def setup(self):
        self.problem = gfbench.get_problem("quadratic", dim=50, lambda_min=0.01, lambda_max=1.0)
        self.lr, self.steps = 0.1, 200
        self.grid = torch.arange(self.steps + 1, dtype=torch.float64) * self.lr
        a, star = self.problem.hessian().numpy(), self.problem.minimizer().numpy()
        x0 = self.problem.init(0).numpy() - star
        self.exact = np.stack([star + scipy.linalg.expm(-t * a) @ x0 for t in self.grid.numpy()])

    def _error(self, trajectory):
        return float(np.max(np.linalg.norm(trajectory - self.exact, axis=1)))

    def _rk4(self, substeps):
        field = GradientField(self.problem)
        solution = odeint(lambda t, y: -field.gradient(y), self.problem.init(0), self.grid, method="rk4",
                          options={"step_size": self.lr / substeps})
        return self._error(solution.numpy()), field.n_evals

    def track_gf_over_rk4_gradient_evaluations(self):
        ds = gfbench.run(self.problem, "gf", lr=self.lr, steps=self.steps, save_params=True, progress=False)
        target = self._error(ds.theta.values)
        coarse_error, _ = self._rk4(1)
        substeps = max(1, math.ceil((coarse_error / target) ** 0.25))  # RK4's global error is O(h^4)
        error, evaluations = self._rk4(substeps)
        while error > target:
            substeps += 1
            error, evaluations = self._rk4(substeps)
        return ds.attrs["nfe"] / evaluations
