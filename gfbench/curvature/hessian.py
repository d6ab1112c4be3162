"""The Hessian ∇²f(θ) of a problem's loss as a linear operator on flat vectors."""
from __future__ import annotations

from typing import Protocol

import torch

from ..field import Evaluation, GradientField, detached
from ..params import ConfigError

#: How a Hessian-vector product is computed. "double_backward": differentiate ⟨∇f(θ), v⟩ by a
#: second reverse pass through the gradient's graph (built once per point, reused for every v).
#: "forward_over_reverse": torch.func.jvp of torch.func.grad, a forward-mode pass per product.
HVP_METHODS = ("double_backward", "forward_over_reverse")
#: Measured on CPU, one thread (benchmarks/curvature_ratios.py, 784-50-50-10 tanh MLP, 1000
#: samples, float64): double backward 1.2 gradients per product (2.3 at a fresh point, graph
#: included), forward-over-reverse 4.0, so double backward is the default.
DEFAULT_HVP = "double_backward"
#: Largest d for which the dense Hessian (d² entries, d reverse passes) is formed.
DENSE_MAX_DIM = 2000


def check_hvp_method(method) -> None:
    if method not in HVP_METHODS:
        raise ConfigError(f"HVP method must be one of {', '.join(HVP_METHODS)}; got {method!r}")


class LinearOperator(Protocol):
    """What the eigensolvers need: ``size`` n, ``dtype``, ``device`` and ``matvec`` on (n,) tensors."""

    size: int
    dtype: torch.dtype
    device: torch.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        ...


class HessianOperator:
    """v ↦ ∇²f(θ) v for ``problem.loss`` at a fixed θ, on flat vectors of θ's shape, dtype and device.

    ``n_matvec`` counts the products. Grad mode is enabled inside, so the operator works under
    the run loop's ``torch.no_grad()``; nothing outside (θ, the problem) is modified. With
    double backward, ``loss`` and ``gradient`` are f(θ) and ∇f(θ) (detached) from the graph built
    for the products, so a caller needing both pays for one gradient; ``aux`` the problem's
    auxiliaries of that evaluation (``Problem.loss_with_aux``).
    """

    def __init__(self, problem, theta: torch.Tensor, method: str = DEFAULT_HVP) -> None:
        check_hvp_method(method)
        self.problem = problem
        self.theta = theta.detach()
        self.method = method
        self.size = self.theta.numel()
        self.dtype = self.theta.dtype
        self.device = self.theta.device
        self.n_matvec = 0
        if method == "double_backward":
            with torch.enable_grad():
                self._leaf = self.theta.clone().requires_grad_(True)
                loss, aux = problem.loss_with_aux(self._leaf)
                (self._grad,) = torch.autograd.grad(loss, self._leaf, create_graph=True)
            self.loss, self.gradient, self.aux = loss.detach(), self._grad.detach(), detached(aux)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """∇²f(θ) v, detached."""
        self.n_matvec += 1
        with torch.enable_grad():
            if self.method == "double_backward":
                if not self._grad.requires_grad:  # f is affine: the gradient does not depend on θ
                    return torch.zeros_like(v)
                (product,) = torch.autograd.grad(self._grad, self._leaf, grad_outputs=v, retain_graph=True,
                                                 allow_unused=True, materialize_grads=True)
            else:
                _, product = torch.func.jvp(torch.func.grad(self.problem.loss), (self.theta,), (v,))
        return product.detach()


class MatrixOperator:
    """v ↦ M v for an explicit symmetric matrix (tests, and the dense reference)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix = matrix
        self.size = matrix.shape[0]
        self.dtype = matrix.dtype
        self.device = matrix.device
        self.n_matvec = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.n_matvec += 1
        return self.matrix @ v


class CastOperator:
    """``operator`` (built in another dtype, e.g. float32) on vectors of ``dtype``: v ↦ A v, cast both ways."""

    def __init__(self, operator: LinearOperator, dtype: torch.dtype) -> None:
        self.operator = operator
        self.size = operator.size
        self.dtype = dtype
        self.device = operator.device

    @property
    def n_matvec(self) -> int:
        return self.operator.n_matvec

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.operator.matvec(v.to(self.operator.dtype)).to(self.dtype)


def hessian_vector_product(field: GradientField, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """∇²f(θ) v for ``field``'s problem, detached, by double backward (the gradient of ⟨∇f(θ), v⟩).

    Costs about two gradient evaluations (the gradient with its graph, then its backward);
    counted as one in ``field.n_hvp``, not in ``n_evals``.
    """
    field.n_hvp += 1
    return HessianOperator(field.problem, theta).matvec(v.detach())


def gradient_and_hessian_gradient(field: GradientField, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇f(θ), ∇²f(θ) ∇f(θ)), both detached, from one gradient graph (IGR's and second_order's need).

    The product is the double backward of ⟨∇f(θ), g⟩ with g = ∇f(θ) held fixed, so the gradient
    is computed once (with its graph) instead of once plain and once again inside
    ``hessian_vector_product``. Counts one evaluation in ``field.n_evals`` (the gradient is cached
    there like ``loss_and_grad``'s) and one product in ``field.n_hvp``.
    """
    operator = HessianOperator(field.problem, theta)
    product = operator.matvec(operator.gradient)
    field.n_hvp += 1
    field.remember(theta, Evaluation(operator.loss, operator.gradient, operator.aux))
    return operator.gradient, product


def dense_hessian(problem, theta: torch.Tensor, *, max_dim: int = DENSE_MAX_DIM,
                  field: GradientField | None = None) -> torch.Tensor:
    """∇²f(θ) as a symmetric (d, d) matrix, from d Hessian-vector products batched in one backward.

    Row i is H e_i, the double backward of ∇f(θ) with the basis vector e_i; the result is
    ½(H + Hᵀ), which removes the round-off asymmetry ``eigh`` would ignore. Memory O(d²);
    ConfigError for d > ``max_dim``. With ``field`` (the run's), counted as d in ``field.n_hvp``.
    """
    d = theta.numel()
    if d > max_dim:
        raise ConfigError(f"the dense Hessian needs d <= {max_dim}, got d={d}; use Lanczos")
    with torch.enable_grad():
        leaf = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(problem.loss(leaf), leaf, create_graph=True)
        basis = torch.eye(d, dtype=theta.dtype, device=theta.device)
        (rows,) = torch.autograd.grad(grad, leaf, grad_outputs=basis, is_grads_batched=True)
    if field is not None:
        field.n_hvp += d
    return (0.5 * (rows + rows.T)).detach()


def third_derivative_contractions(field: GradientField, theta: torch.Tensor, vectors: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇f(θ), G) with G[i, j] = ∇_θ(u_iᵀ ∇²f(θ) u_j) for the columns u_i of ``vectors`` (d, k), u held fixed.

    G[i, j] = ∇³f(θ)[u_i, u_j, ·], symmetric in (i, j), shape (k, k, d): the gradient of the
    curvature u_iᵀHu_j along the trajectory (for i = j and u an eigenvector, ∇λ_i). Computed
    from one gradient graph: k Hessian-vector products H u_j kept differentiable (double
    backward with ``create_graph``), then per j one batched backward of ⟨u_i, H u_j⟩ over i.
    Counts one gradient in ``field.n_evals`` and k products in ``field.n_hvp``; the k third-order
    backward passes are the caller's to count. f affine or quadratic: G = 0.
    """
    d, k = vectors.shape
    with torch.enable_grad():
        leaf = theta.detach().requires_grad_(True)
        loss, aux = field.problem.loss_with_aux(leaf)
        (grad,) = torch.autograd.grad(loss, leaf, create_graph=True)
        contractions = torch.zeros(k, k, d, dtype=theta.dtype, device=theta.device)
        for j in range(k):
            if not grad.requires_grad:  # f affine: no second-order graph
                break
            (product,) = torch.autograd.grad(grad, leaf, grad_outputs=vectors[:, j], create_graph=True,
                                             materialize_grads=True)
            if product.requires_grad:  # else H does not depend on θ (f quadratic): G = 0
                (rows,) = torch.autograd.grad(product, leaf, grad_outputs=vectors.T.contiguous(), retain_graph=True,
                                              is_grads_batched=True, allow_unused=True, materialize_grads=True)
                contractions[:, j] = rows
    field.n_hvp += k
    field.remember(theta, Evaluation(loss.detach(), grad.detach(), detached(aux)))
    return grad.detach(), 0.5 * (contractions + contractions.transpose(0, 1)).detach()
