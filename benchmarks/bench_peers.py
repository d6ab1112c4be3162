"""gfbench against named peers, measured in the same process, reported as ratios."""
import copy
import math

import numpy as np
import scipy.linalg
import torch
from torchdiffeq import odeint

import gfbench
from gfbench.curvature.hessian import gradient_and_hessian_gradient, hessian_vector_product
from gfbench.field import GradientField

from .common import interleaved_ratio, make_problem


def torch_sgd_step(problem, theta0, lr):
    """A plain ``torch.optim.SGD`` step on the problem's own network (or layers) and data, from θ0."""
    if hasattr(problem, "module"):  # the MNIST classifiers: their module and training set
        module = copy.deepcopy(problem.module)
        torch.nn.utils.vector_to_parameters(theta0.clone(), module.parameters())
        parameters = list(module.parameters())

        def loss():
            return torch.nn.functional.cross_entropy(module(problem.train_x), problem.train_y)
    else:  # deep_linear: its weight matrices and end-to-end loss
        parameters = [torch.nn.Parameter(w.clone()) for w in problem.layers(theta0)]

        def loss():
            product = parameters[0]
            for weight in parameters[1:]:
                product = weight @ product
            return problem.end_to_end_loss(product)

    optimizer = torch.optim.SGD(parameters, lr=lr)

    def step():
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()

    return step


class GDStepVsTorchSGD:
    """Our GD step (no recording) / a plain ``torch.optim.SGD`` step on the same network and data (< 1: faster)."""

    params = (["deep_linear", "relu_fc", "cnn"],)
    param_names = ["problem"]
    unit = "ratio"
    timeout = 300

    def setup(self, problem):
        self.problem = make_problem(problem)
        theta0 = self.problem.init(0)
        self.ours = gfbench.get_solver("gd").start(GradientField(self.problem), theta0, 1e-3)
        self.peer = torch_sgd_step(self.problem, theta0, 1e-3)

    def _our_step(self):
        self.ours.advance_to(self.ours.step + 1)

    def track_gd_over_sgd_time(self, problem):
        return interleaved_ratio(self._our_step, self.peer, number=200 if problem == "deep_linear" else 10)


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


class IGREvaluationVsSeparateHVP:
    """One IGR right-hand side, ∇f and ∇²f∇f from one gradient graph / a plain gradient then a separate HVP.

    The peer is what the IGR flow did before: ``field.gradient`` and ``hessian_vector_product`` (which builds
    the gradient's graph again). Below 1: the fused evaluation is faster.
    """

    params = (["deep_linear", "relu_fc"],)
    param_names = ["problem"]
    unit = "ratio"
    timeout = 300

    def setup(self, problem):
        self.problem = make_problem(problem)
        self.theta = self.problem.init(0)

    def _fused(self):
        gradient_and_hessian_gradient(GradientField(self.problem), self.theta)

    def _separate(self):
        field = GradientField(self.problem)
        hessian_vector_product(field, self.theta, field.gradient(self.theta))

    def track_fused_over_separate_time(self, problem):
        return interleaved_ratio(self._fused, self._separate, number=50 if problem == "deep_linear" else 5)
