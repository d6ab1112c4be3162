"""The gradient of a problem's loss as the vector field every solver and recorder evaluates."""
from __future__ import annotations

import torch


class GradientField:
    """Loss and gradient of ``problem.loss`` on flat θ, counted and cached.

    Every gradient of a run goes through one GradientField, so ``n_evals`` is the run's whole
    gradient cost (solver and recording together). The last evaluation is kept: asking again for
    the same tensor object (GD records θ_k and then steps from it) costs nothing and counts once.
    Hessian-vector products taken for a solver (``gfbench.curvature.hessian``) are counted apart
    in ``n_hvp`` (a dense Hessian counts d of them).
    """

    def __init__(self, problem) -> None:
        self.problem = problem
        self.n_evals = 0
        self.n_hvp = 0
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
        self.remember(theta, loss.detach(), grad)
        return self._loss, grad

    def remember(self, theta: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor) -> None:
        """Count (f(θ), ∇f(θ)), detached, as one evaluation and cache it for ``loss_and_grad``.

        For evaluations made elsewhere, e.g. the gradient of a Hessian operator's graph.
        """
        self.n_evals += 1
        self._theta, self._loss, self._grad = theta, loss, grad

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """∇f(θ)."""
        return self.loss_and_grad(theta)[1]
