"""Curvature: HVP and Lanczos cost, Lanczos accuracy against dense, and the peer ratio against eigsh."""
import time

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

from gfbench.curvature import HessianOperator, dense_eigenpairs, dense_hessian, lanczos
from gfbench.field import GradientField

from .common import DEVICES, best_time, make_problem, synchronize


class HVP:
    """One Hessian-vector product (default method: double backward) against one gradient."""

    params = (["deep_linear", "relu_fc"], DEVICES)
    param_names = ["problem", "device"]

    def setup(self, problem, device):
        self.problem = make_problem(problem, device)
        self.theta = self.problem.init(0)
        self.vector = torch.randn(self.problem.dim, generator=torch.Generator().manual_seed(1),
                                  dtype=torch.float64).to(self.theta)
        self.operator = HessianOperator(self.problem, self.theta)
        self.field = GradientField(self.problem)
        self.operator.matvec(self.vector)  # builds the gradient graph once, as a Lanczos solve does

    def time_hvp(self, problem, device):
        self.operator.matvec(self.vector)
        synchronize(device)

    def track_hvp_over_gradient_time(self, problem, device):
        hvp = best_time(lambda: self.operator.matvec(self.vector), repeats=5, number=10, device=device)
        gradient = best_time(lambda: self.field.loss_and_grad(self.theta.clone()), repeats=5, number=10,
                             device=device)
        return hvp / gradient

    track_hvp_over_gradient_time.unit = "ratio"


class Lanczos:
    """λmin and λmax at θ0 by one block-Lanczos solve (tol 1e-6 of ‖H‖)."""

    params = (["deep_linear", "relu_fc"], DEVICES)
    param_names = ["problem", "device"]
    timeout = 300

    def setup(self, problem, device):
        self.problem = make_problem(problem, device)
        self.theta = self.problem.init(0)

    def time_lanczos_min_max(self, problem, device):
        lanczos(HessianOperator(self.problem, self.theta), which="both", seed=0)
        synchronize(device)

    def peakmem_lanczos_min_max(self, problem, device):
        lanczos(HessianOperator(self.problem, self.theta), which="both", seed=0)


class LanczosAccuracy:
    """Relative error of Lanczos λmin and λmax against the dense eigvalsh reference (d ≤ 2000)."""

    params = (["quadratic", "deep_linear"],)
    param_names = ["problem"]
    unit = "relative error"

    def setup(self, problem):
        self.problem = make_problem(problem)
        self.theta = self.problem.init(0)
        self.dense = dense_eigenpairs(dense_hessian(self.problem, self.theta), k=1, which="both")
        self.ours = lanczos(HessianOperator(self.problem, self.theta), which="both", seed=0)

    def track_lambda_min_error(self, problem):
        return abs(self.ours.min - self.dense.min) / abs(self.dense.min)

    def track_lambda_max_error(self, problem):
        return abs(self.ours.max - self.dense.max) / abs(self.dense.max)


def _eigsh_min_max(operator, tol):
    scipy_operator = LinearOperator((operator.size, operator.size), dtype=np.float64,
                                    matvec=lambda x: operator.matvec(torch.from_numpy(
                                        np.ascontiguousarray(x.reshape(-1)))).numpy())
    largest = eigsh(scipy_operator, k=1, which="LA", tol=tol, return_eigenvectors=False)[0]
    smallest = eigsh(scipy_operator, k=1, which="SA", tol=tol, return_eigenvectors=False)[0]
    return float(smallest), float(largest)


class LanczosVsEigsh:
    """Time of our Lanczos (warm-started along 5 GD iterates) / scipy eigsh LA+SA on the same HVP operator.

    Both to tolerance 1e-6; < 1 means we are faster. Also the same ratio in HVP counts.
    """

    params = (["deep_linear", "relu_fc"],)
    param_names = ["problem"]
    unit = "ratio"
    timeout = 600

    def setup(self, problem):
        self.problem = make_problem(problem)
        field, theta = GradientField(self.problem), self.problem.init(0)
        self.points = []
        for _ in range(5):
            self.points.append(theta)
            theta = theta - 0.01 * field.gradient(theta)
        self.ours, self.peer = [0.0, 0], [0.0, 0]
        # One untimed solve each: the first linear-algebra calls of a process pay one-time setup.
        lanczos(HessianOperator(self.problem, theta), which="both", seed=0)
        _eigsh_min_max(HessianOperator(self.problem, theta), 1e-6)
        start = None
        for point in self.points:
            operator = HessianOperator(self.problem, point)
            began = time.perf_counter()
            start = lanczos(operator, which="both", tol=1e-6, seed=0, v0=start).eigenvectors
            self.ours = [self.ours[0] + time.perf_counter() - began, self.ours[1] + operator.n_matvec]
            operator = HessianOperator(self.problem, point)
            began = time.perf_counter()
            _eigsh_min_max(operator, 1e-6)
            self.peer = [self.peer[0] + time.perf_counter() - began, self.peer[1] + operator.n_matvec]

    def track_lanczos_over_eigsh_time(self, problem):
        return self.ours[0] / self.peer[0]

    def track_lanczos_over_eigsh_hvps(self, problem):
        return self.ours[1] / self.peer[1]
