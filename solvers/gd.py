"""Gradient descent: Euler's method on gradient flow."""
from __future__ import annotations

import torch

from gfbench.solver import Integration, Solver


class GDIntegration(Integration):
    def advance_to(self, step: int) -> torch.Tensor:
        theta, lr, gradient = self.theta, self.lr, self.field.gradient
        for _ in range(step - self.step):
            theta = theta - lr * gradient(theta)
        self.theta, self.step = theta, step
        return theta


class GD(Solver):
    """Gradient descent, θ_{k+1} = θ_k − η ∇f(θ_k) (EC21 Eq. 6): Euler's method on dθ/dt = −∇f(θ).

    Iterate k sits at t = kη. A plain loop on the flat parameter vector; no options.
    """

    name = "gd"
    parameters = ()

    def start(self, field, theta0, lr) -> GDIntegration:
        return GDIntegration(field, theta0, lr)
