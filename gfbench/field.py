"""The gradient of a problem's loss as the vector field every solver and recorder evaluates."""
from __future__ import annotations

import torch


class GradientField:
    """Loss and gradient of ``problem.loss`` on flat θ, counted and cached.

    Every gradient of a run goes through one GradientField, so ``n_evals`` is the run's whole
    gradient cost (solver and recording together). The last evaluation is kept: asking again for
    the same tensor object (GD records θ_k and then steps from it) costs nothing and counts once.
    Hessian-vector products are counted apart in ``n_hvp`` (a dense Hessian counts d of them).
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
        self.n_evals += 1
        self._theta, self._loss, self._grad = theta, loss.detach(), grad
        return self._loss, grad

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """∇f(θ)."""
        return self.loss_and_grad(theta)[1]

    def hvp(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """∇²f(θ) v, detached, by double backward: the gradient of ∇f(θ)·v with respect to θ.

        Costs about two gradient evaluations (the gradient with its graph, then its backward);
        counted as one in ``n_hvp``, not in ``n_evals``.
        """
        from .curvature.hessian import HessianOperator  # lazy: gfbench.curvature imports this module

        self.n_hvp += 1
        return HessianOperator(self.problem, theta).matvec(v.detach())

    def gradient_and_hessian_gradient(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇f(θ), ∇²f(θ) ∇f(θ)), both detached, from one gradient graph.

        The product is the double backward of ⟨∇f(θ), g⟩ with g = ∇f(θ) held fixed, so the
        gradient is computed once (with its graph) instead of once plain and once again inside
        ``hvp``. Counts one gradient evaluation in ``n_evals`` and one product in ``n_hvp``; the
        gradient is cached like ``loss_and_grad``'s.
        """
        from .curvature.hessian import HessianOperator  # lazy: gfbench.curvature imports this module

        operator = HessianOperator(self.problem, theta)
        product = operator.matvec(operator.gradient)
        self.n_evals += 1
        self.n_hvp += 1
        self._theta, self._loss, self._grad = theta, operator.loss, operator.gradient
        return operator.gradient, product

    def hessian(self, theta: torch.Tensor) -> torch.Tensor:
        """The dense Hessian ∇²f(θ) (d × d, symmetrised), as d batched Hessian-vector products.

        Memory O(d²); counted as d in ``n_hvp``. Meant for small d only.
        """
        with torch.enable_grad():
            leaf = theta.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.problem.loss(leaf), leaf, create_graph=True)
            basis = torch.eye(theta.numel(), dtype=theta.dtype, device=theta.device)
            (rows,) = torch.autograd.grad(grad, leaf, grad_outputs=basis, is_grads_batched=True)
        self.n_hvp += theta.numel()
        # Row i is H e_i; averaging with the transpose removes the round-off asymmetry eigh ignores.
        return (0.5 * (rows + rows.T)).detach()
