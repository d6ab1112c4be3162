"""The gradient of a problem's loss as the vector field every solver and recorder evaluates."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch


@dataclass(frozen=True)
class Evaluation:
    """f(θ) (0-dim), ∇f(θ) (θ's shape) and ``aux``, the tensors the problem computed on the way to f
    (``Problem.loss_with_aux``, e.g. a classifier's training logits), by name; all detached."""

    loss: torch.Tensor
    grad: torch.Tensor
    aux: Mapping[str, torch.Tensor]


def detached(aux: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``aux`` with every tensor cut from its graph (the values are kept, not copied)."""
    return {name: value.detach() for name, value in aux.items()}


class GradientField:
    """Loss and gradient of ``problem.loss_with_aux`` on flat θ, counted and cached.

    Every gradient of a run goes through one GradientField, so ``n_evals`` is the run's whole
    gradient cost (solver and recording together). The last evaluation is kept: asking again for
    the same tensor object (GD records θ_k and then steps from it) costs nothing and counts once,
    and recorders read the loss and the problem's auxiliaries from it instead of evaluating again.
    Hessian-vector products taken for a solver (``gfbench.curvature.hessian``) are counted apart
    in ``n_hvp`` (a dense Hessian counts d of them).
    """

    def __init__(self, problem) -> None:
        self.problem = problem
        self.n_evals = 0
        self.n_hvp = 0
        self._theta: torch.Tensor | None = None
        self._last: Evaluation | None = None

    def evaluate(self, theta: torch.Tensor) -> Evaluation:
        """f(θ), ∇f(θ) and the problem's auxiliaries from one forward and one backward pass."""
        if theta is self._theta:
            return self._last
        with torch.enable_grad():
            leaf = theta.detach().requires_grad_(True)
            loss, aux = self.problem.loss_with_aux(leaf)
            (grad,) = torch.autograd.grad(loss, leaf)
        self.remember(theta, Evaluation(loss.detach(), grad, detached(aux)))
        return self._last

    def loss_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(θ), ∇f(θ)), both detached; f is 0-dim, ∇f has θ's shape."""
        evaluation = self.evaluate(theta)
        return evaluation.loss, evaluation.grad

    def remember(self, theta: torch.Tensor, evaluation: Evaluation) -> None:
        """Count ``evaluation`` (at θ, detached) as one gradient evaluation and cache it for ``evaluate``.

        For evaluations made elsewhere, e.g. the gradient of a Hessian operator's graph.
        """
        self.n_evals += 1
        self._theta, self._last = theta, evaluation

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """∇f(θ)."""
        return self.evaluate(theta).grad
