"""Extreme eigenpairs of a symmetric operator: Lanczos with full reorthogonalisation, and a dense reference."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..params import ConfigError
from .hessian import LinearOperator

WHICH = ("both", "smallest", "largest")
#: Default stopping tolerance: every wanted Ritz pair (θ, y) has ‖H y − θ y‖ ≤ tol · ‖H‖.
DEFAULT_TOL = 1e-6
#: Default cap on Lanczos iterations (= products with the operator), before the n cap.
DEFAULT_MAX_ITER = 500
#: Weight of a fresh random direction mixed into a warm start, so that a start vector that lacks
#: the new extreme eigendirection (eigenvalues crossing along a trajectory) still reaches it.
WARM_START_NOISE = 1e-2


@dataclass(frozen=True)
class EigenResult:
    """Eigenpairs from ``lanczos`` or ``dense_eigenpairs``.

    ``eigenvalues`` ascending (for which="both": the k smallest then the k largest, a pair found
    by both counted once); ``eigenvectors`` (n, m) unit columns in the same order; ``residuals``
    ‖H y − λ y‖ for each pair; ``iterations`` the operator products spent; ``converged`` whether
    every residual met the tolerance.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    iterations: int
    converged: bool

    @property
    def min(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def max(self) -> float:
        return float(self.eigenvalues[-1])


def _wanted(count: int, k: int, which: str) -> list[int]:
    """Indices of the wanted values among ``count`` ascending ones."""
    low = list(range(min(k, count))) if which in ("both", "smallest") else []
    high = list(range(max(count - k, 0), count)) if which in ("both", "largest") else []
    return sorted(set(low) | set(high))


def _check(size: int, k, which, tol) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= size:
        raise ConfigError(f"k must be an integer in [1, {size}] (the operator size), got {k!r}")
    if which not in WHICH:
        raise ConfigError(f"which must be one of {', '.join(WHICH)}; got {which!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise ConfigError(f"tol must be a number in (0, 1), got {tol!r}")


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.vector_norm(v)


def lanczos(operator: LinearOperator, *, k: int = 1, which: str = "both", tol: float = DEFAULT_TOL,
            max_iter: int | None = None, seed: int = 0, v0: torch.Tensor | None = None) -> EigenResult:
    """The k smallest and/or k largest eigenpairs of a symmetric operator H by Lanczos.

    Builds an orthonormal Krylov basis Q_j of span{q, Hq, …, H^{j−1}q}, reorthogonalising every
    new vector against all previous ones (classical Gram–Schmidt, twice), so Q_jᵀ H Q_j = T_j is
    tridiagonal to working precision. The Ritz pairs (θ_i, Q_j s_i) of T_j have residuals
    ‖H y_i − θ_i y_i‖ = β_j |s_i[j]|. Stopping rule: every wanted pair has residual ≤ tol · ‖H‖
    (‖H‖ estimated by the largest |θ_i|); then each θ_i is within tol · ‖H‖ of an eigenvalue of H
    (Weyl), and within residual²/gap when it is separated from the rest of the spectrum by gap.

    ``v0``: a warm start, e.g. the previous point's eigenvectors (n,) or (n, m); the start vector
    is their normalised sum plus WARM_START_NOISE of a random unit vector. Otherwise the start
    is random from ``seed``. On an invariant subspace (β_j ≈ 0) the iteration continues from a
    fresh random vector orthogonal to the basis. ``max_iter`` caps the products (default
    min(n, 500)); an unconverged result is returned with ``converged=False``. Memory O(n · iterations).
    """
    n = operator.size
    _check(n, k, which, tol)
    if max_iter is not None and (isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1):
        raise ConfigError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    limit = min(n, DEFAULT_MAX_ITER if max_iter is None else max_iter)
    dtype, device = operator.dtype, operator.device
    generator = torch.Generator().manual_seed(int(seed))

    def random_unit() -> torch.Tensor:
        return _unit(torch.randn(n, generator=generator, dtype=torch.float64).to(device, dtype))

    start = random_unit()
    if v0 is not None:
        columns = v0.reshape(n, -1).to(device, dtype)
        start = _unit(_unit(columns.sum(dim=1)) + WARM_START_NOISE * start)

    basis = torch.zeros(limit + 1, n, dtype=dtype, device=device)
    basis[0] = start
    alphas, betas = [], []
    converged = False
    for j in range(limit):
        w = operator.matvec(basis[j])
        alpha = torch.dot(basis[j], w)
        w = w - alpha * basis[j] - (betas[-1] * basis[j - 1] if j else 0.0)
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = torch.linalg.vector_norm(w)
        alphas.append(alpha)
        tridiagonal = torch.diag(torch.stack(alphas))
        if betas:
            off = torch.stack(betas)
            tridiagonal = tridiagonal + torch.diag(off, 1) + torch.diag(off, -1)
        ritz, vectors = torch.linalg.eigh(tridiagonal)
        scale = ritz.abs().max().clamp_min(torch.finfo(dtype).tiny)
        wanted = _wanted(j + 1, k, which)
        residuals = beta * vectors[-1, wanted].abs()
        enough = len(wanted) == len(_wanted(n, k, which))
        if enough and bool((residuals <= tol * scale).all()):
            converged = True
            break
        if j + 1 == limit:
            break
        if beta <= torch.finfo(dtype).eps * scale * n:  # invariant subspace: restart orthogonally
            fresh = random_unit()
            for _ in range(2):
                fresh = fresh - basis[: j + 1].T @ (basis[: j + 1] @ fresh)
            basis[j + 1] = _unit(fresh)
            betas.append(torch.zeros((), dtype=dtype, device=device))
        else:
            basis[j + 1] = w / beta
            betas.append(beta)
    iterations = len(alphas)
    eigenvectors = basis[:iterations].T @ vectors[:, wanted]
    return EigenResult(ritz[wanted], eigenvectors, residuals, iterations, converged)


def dense_eigenpairs(matrix: torch.Tensor, *, k: int = 1, which: str = "both") -> EigenResult:
    """The same selection as ``lanczos`` from a dense symmetric matrix by ``torch.linalg.eigh``."""
    n = matrix.shape[0]
    _check(n, k, which, DEFAULT_TOL)
    values, vectors = torch.linalg.eigh(matrix)
    wanted = _wanted(n, k, which)
    values, vectors = values[wanted], vectors[:, wanted]
    residuals = torch.linalg.vector_norm(matrix @ vectors - vectors * values, dim=0)
    return EigenResult(values, vectors, residuals, 0, True)
