"""A gfbench plugin: the problem ``quartic`` and the solver ``heun``."""
from __future__ import annotations

import torch

from gfbench import Diagnostic, Integration, Param, Problem, Solver, Variable
from gfbench.params import AT_LEAST_ONE, POSITIVE


class Quartic(Problem):
    """f(θ) = (c/4) Σ_i θ_i⁴, whose gradient flow is θ_i(t) = θ_i(0) / √(1 + 2c θ_i(0)² t).

    θ0 ~ N(0, I) from the run's seed. GD is stable while η·3c θ_i² < 2.
    """

    name = "quartic"
    parameters = (
        Param("dim", int, 5, "dimension d of theta", bounds=AT_LEAST_ONE),
        Param("scale", float, 1.0, "the factor c", bounds=POSITIVE),
    )
    default_lr = 0.01
    default_steps = 1000

    def build(self) -> None:
        self.scale = self.params["scale"]  # nothing random to draw: f is fixed by its parameters

    @property
    def dim(self) -> int:
        return self.params["dim"]

    def sample_init(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(self.dim, generator=generator, dtype=torch.float64)

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        return self.scale / 4 * (theta**4).sum()

    def recorders(self):
        return [Diagnostic(Variable("max_abs_theta", "largest coordinate max_i |theta_i|", "1"),
                           lambda theta: theta.abs().max())]


class HeunIntegration(Integration):
    def __init__(self, field, theta0, lr, substeps: int) -> None:
        super().__init__(field, theta0, lr)
        self.substeps = substeps
        self.n_substeps = 0

    def advance_to(self, step: int) -> torch.Tensor:
        theta, h, gradient = self.theta, self.lr / self.substeps, self.field.gradient
        for _ in range((step - self.step) * self.substeps):
            g = gradient(theta)
            theta = theta - h / 2 * (g + gradient(theta - h * g))
            self.n_substeps += 1
        self.theta, self.step = theta, step
        return theta

    def stats(self) -> dict:
        return {"n_substeps": self.n_substeps}


class Heun(Solver):
    """Heun's method on gradient flow, θ⁺ = θ − (h/2)(∇f(θ) + ∇f(θ − h∇f(θ))), h = η/substeps.

    Second order in h (Hairer, Nørsett & Wanner, Solving ODEs I, §II.1), fixed steps.
    """

    name = "heun"
    parameters = (Param("substeps", int, 1, "Heun steps per GD step", bounds=AT_LEAST_ONE),)

    def start(self, field, theta0, lr) -> HeunIntegration:
        return HeunIntegration(field, theta0, lr, self.params["substeps"])
