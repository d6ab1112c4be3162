"""A small random non-linear problem for the curvature tests: neither quadratic nor multilinear."""
import torch

from gfbench.params import Param
from gfbench.problem import Problem


class TanhRegression(Problem):
    """f(θ) = ½ mean_i ‖W_2 tanh(W_1 x_i) − y_i‖², random x_i, y_i; θ = (W_1, W_2) flattened."""

    name = "tanh_regression"
    parameters = (Param("inputs", int, 20, "input dimension"), Param("hidden", int, 25, "hidden width"),
                  Param("outputs", int, 3, "output dimension"), Param("samples", int, 40, "data points"))
    default_lr = 0.1
    default_steps = 100

    def build(self) -> None:
        p = self.params
        generator = torch.Generator().manual_seed(7)
        self.x = torch.randn(p["samples"], p["inputs"], generator=generator, dtype=torch.float64)
        self.y = torch.randn(p["samples"], p["outputs"], generator=generator, dtype=torch.float64)

    @property
    def dim(self) -> int:
        p = self.params
        return p["hidden"] * (p["inputs"] + p["outputs"])

    def sample_init(self, generator):
        return torch.randn(self.dim, generator=generator, dtype=torch.float64) * 0.5

    def loss(self, theta):
        p = self.params
        first = theta[: p["hidden"] * p["inputs"]].view(p["hidden"], p["inputs"])
        second = theta[p["hidden"] * p["inputs"]:].view(p["outputs"], p["hidden"])
        prediction = torch.tanh(self.x @ first.T) @ second.T
        return 0.5 * torch.mean(torch.sum((prediction - self.y) ** 2, dim=1))
