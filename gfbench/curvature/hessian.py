"""The Hessian ∇²f(θ) of a problem's loss as a linear operator on flat vectors."""
from __future__ import annotations

from typing import Protocol

import torch

from ..field import GradientField
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
    for the products, so a caller needing both pays for one gradient.
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
                loss = problem.loss(self._leaf)
                (self._grad,) = torch.autograd.grad(loss, self._leaf, create_graph=True)
            self.loss, self.gradient = loss.detach(), self._grad.detach()

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


def dense_hessian(problem, theta: torch.Tensor) -> torch.Tensor:
    """∇²f(θ) as a symmetric (d, d) matrix (``GradientField.hessian``: d batched products); d ≤ DENSE_MAX_DIM."""
    if theta.numel() > DENSE_MAX_DIM:
        raise ConfigError(f"the dense Hessian needs d <= {DENSE_MAX_DIM}, got d={theta.numel()}; use Lanczos")
    return GradientField(problem).hessian(theta)
