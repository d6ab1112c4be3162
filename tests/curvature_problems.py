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


class SharpeningToy(Problem):
    """f(x, y) = ½ y ‖x‖² + ½ (y − b)², x ∈ R^m: a 2-D-like toy with progressive sharpening.

    Along gradient flow x decays and y → b, so the sharpness (≈ y for small x) rises to b; GD with
    2/η < b reaches the edge of stability. With ``split`` s > 0 the second x coordinate has
    curvature (1 − s) y, so m = 2 gives two distinct eigenvalues near the edge (s = 0: a double one).
    """

    name = "sharpening_toy"
    parameters = (Param("m", int, 1, "dimension of x"), Param("b", float, 12.0, "limit of y under GF"),
                  Param("split", float, 0.0, "relative gap of the second curvature"))
    default_lr = 0.2
    default_steps = 100

    def build(self) -> None:
        scales = torch.ones(self.params["m"], dtype=torch.float64)
        scales[1:] -= self.params["split"]
        self.scales = scales

    @property
    def dim(self) -> int:
        return self.params["m"] + 1

    def sample_init(self, generator):
        x = 0.5 + 0.1 * torch.rand(self.params["m"], generator=generator, dtype=torch.float64)
        return torch.cat([x, torch.tensor([1.0], dtype=torch.float64)])

    def loss(self, theta):
        x, y = theta[:-1], theta[-1]
        return 0.5 * y * (self.scales * x * x).sum() + 0.5 * (y - self.params["b"]) ** 2
