"""The gradient of a problem's loss as the vector field every solver and recorder evaluates."""
from __future__ import annotations

import torch


class GradientField:
    """Loss and gradient of ``problem.loss`` on flat θ, counted and cached.

    Every gradient of a run goes through one GradientField, so ``n_evals`` is the run's whole
    gradient cost (solver and recording together). The last evaluation is kept: asking again for
    the same tensor object (GD records θ_k and then steps from it) costs nothing and counts once.
    """

    def __init__(self, problem) -> None:
        self.problem = problem
        self.n_evals = 0
        self._theta: torch.Tensor | None = None
        self._loss: torch.Tensor | None = None
        self._grad: torch.Tensor | None = None

    def loss_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(θ), ∇f(θ)), both detached; f is 0-dim, ∇f has θ's shape."""
        if theta is self._theta:
            return self._loss, self._grad
        with torch.enable_grad():
            leaf = theta.detach().requires_grad_(True)
            loss = self.problem.loss(leaf)
            (grad,) = torch.autograd.grad(loss, leaf)
        self.n_evals += 1
        self._theta, self._loss, self._grad = theta, loss.detach(), grad
        return self._loss, grad

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """∇f(θ)."""
        return self.loss_and_grad(theta)[1]
