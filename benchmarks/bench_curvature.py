"""Curvature: HVP and Lanczos cost, Lanczos accuracy against dense (the peer ratio against eigsh: bench_eigs)."""
import torch

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
