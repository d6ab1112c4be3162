"""Extreme eigenpairs of a symmetric operator: Lanczos with full reorthogonalisation, and a dense reference."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..params import AT_LEAST_ONE, Bounds, Param
from .hessian import LinearOperator

WHICH = ("both", "smallest", "largest")
#: Default stopping tolerance: every wanted Ritz pair (θ, y) has ‖H y − θ y‖ ≤ tol · ‖H‖.
DEFAULT_TOL = 1e-6
#: Default cap on Lanczos iterations (= products with the operator), before the n cap.
DEFAULT_MAX_ITER = 500
#: Convergence is checked (an eigendecomposition of the projected matrix, O(size³)) after every
#: block while size < 2·CHECK_SPACING, then every size / CHECK_SPACING products: at most
#: 1/CHECK_SPACING (5 %) products beyond the first point where the stopping rule holds.
CHECK_SPACING = 20
#: Weight of a fresh random direction mixed into a warm start, so that a start vector that lacks
#: the new extreme eigendirection (eigenvalues crossing along a trajectory) still reaches it.
WARM_START_NOISE = 1e-2
#: Projection passes after which a new basis column still cancelling counts as inside the span.
MAX_PROJECTIONS = 4
#: Smallest tolerance at which ``certified_lanczos`` runs on float32 products: their rounding,
#: about 1e-7·‖H‖, must stay below the tol/2 it solves to.
FLOAT32_MIN_TOL = 1e-6
UNIT_INTERVAL = Bounds(0, 1, low_open=True, high_open=True)
#: The eigensolvers' arguments; k's upper bound, the operator size n, is set per call.
K = Param("k", int, 1, "eigenpairs wanted at each end of the spectrum", bounds=AT_LEAST_ONE)
WHICH_END = Param("which", str, "both", "which end(s) of the spectrum", choices=WHICH)
TOL = Param("tol", float, DEFAULT_TOL, "residual tolerance relative to ||H||", bounds=UNIT_INTERVAL)
MAX_ITER = Param("max_iter", int, None, "cap on operator products (auto: min(n, 500))", bounds=AT_LEAST_ONE)


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


def _check(size: int, k, which, tol) -> tuple[int, str, float]:
    """(k, which, tol) checked against K, WHICH_END and TOL for an operator of size ``size``."""
    sized = replace(K, bounds=Bounds(1, size), requirement=f"be an integer in [1, {size}] (the operator size)")
    return sized.check(k), WHICH_END.check(which), TOL.check(tol)


def lanczos(operator: LinearOperator, *, k: int = 1, which: str = "both", tol: float = DEFAULT_TOL,
            max_iter: int | None = None, seed: int = 0, v0: torch.Tensor | None = None) -> EigenResult:
    """The k smallest and/or k largest eigenpairs of a symmetric operator H by block Lanczos.

    Builds an orthonormal basis Q of the block Krylov space span{V, HV, H²V, …} of a start block
    V with k columns (k = 1: plain Lanczos), reorthogonalising every new block against all
    previous ones (classical Gram–Schmidt, repeated only where a pass cancels more than half
    the norm: as in ARPACK, two passes over Q per product), and takes Ritz pairs
    (θ_i, y_i = Q s_i) of the projection QᵀHQ. The block size k lets an eigenvalue of
    multiplicity up to k appear k times. Each residual ‖H y_i − θ_i y_i‖ = ‖R s_i‖, R the last
    block's component outside Q, is exact up to rounding. Stopping rule: every wanted pair has
    residual ≤ tol · ‖H‖ (‖H‖ estimated by the largest |θ_i|); then each θ_i is within tol · ‖H‖
    of an eigenvalue of H (Weyl), and within residual²/gap when separated from the rest of the
    spectrum by gap.

    ``v0``: a warm start, e.g. the previous point's eigenvectors (n,) or (n, m); column i of the
    start block is the normalised sum of columns i, i + k, … of v0, plus WARM_START_NOISE of a
    random unit vector. Otherwise the start block is random from ``seed``. Directions in which
    the Krylov space becomes invariant are replaced by fresh random vectors orthogonal to it.
    The rule is checked after every block while size < 2·CHECK_SPACING, then every
    size/CHECK_SPACING products (at most 5 % more products than checking always). ``max_iter``
    caps the operator products (default min(n, 500)); an unconverged result is returned with
    ``converged=False``. Memory O(n · iterations).
    """
    n = operator.size
    k, which, tol = _check(n, k, which, tol)
    max_iter = MAX_ITER.check(max_iter)
    limit = min(n, DEFAULT_MAX_ITER if max_iter is None else max_iter)
    dtype, device = operator.dtype, operator.device
    generator = torch.Generator().manual_seed(int(seed))

    def random_block(columns: int) -> torch.Tensor:
        return torch.randn(n, columns, generator=generator, dtype=torch.float64).to(device, dtype)

    block = random_block(k)
    if v0 is not None:
        columns = v0.reshape(n, -1).to(device, dtype)
        groups = torch.zeros(n, k, dtype=dtype, device=device).index_add_(
            1, torch.arange(columns.shape[1], device=device) % k, columns)
        block = (groups / torch.linalg.vector_norm(groups, dim=0).clamp_min(torch.finfo(dtype).tiny)
                 + WARM_START_NOISE * block / torch.linalg.vector_norm(block, dim=0))
    block = torch.linalg.qr(block[:, : min(k, limit)])[0]

    basis = torch.empty(0, n, dtype=dtype, device=device)
    projection = torch.empty(0, 0, dtype=dtype, device=device)
    size, converged, next_check = 0, False, 0
    wanted_count = len(_wanted(n, k, which))
    while True:
        width = block.shape[1]
        if size + width > basis.shape[0]:  # grow by doubling: most solves stop far below the limit
            capacity = min(limit, max(2 * basis.shape[0], 32 * k))
            grown_basis = torch.empty(capacity, n, dtype=dtype, device=device)
            grown_basis[:size] = basis[:size]
            basis = grown_basis
            grown = torch.zeros(capacity, capacity, dtype=dtype, device=device)
            grown[:size, :size] = projection[:size, :size]
            projection = grown
        basis[size: size + width] = block.T
        size += width
        product = torch.stack([operator.matvec(column) for column in block.T], dim=1)
        coupling = basis[:size] @ product
        projection[:size, size - width: size] = coupling
        projection[size - width: size, :size] = coupling.T
        remainder = product - basis[:size].T @ coupling  # the first Gram–Schmidt pass, from the coupling
        if size >= next_check or size == limit:
            ritz, vectors = torch.linalg.eigh(projection[:size, :size])
            wanted = _wanted(size, k, which)
            residuals = torch.linalg.vector_norm(remainder @ vectors[size - width:, wanted], dim=0)
            scale = ritz.abs().max().clamp_min(torch.finfo(dtype).tiny)
            if len(wanted) == wanted_count and bool((residuals <= tol * scale).all()):
                converged = True
                break
            next_check = size + max(width, size // CHECK_SPACING)
        if size == limit:
            break
        block = _next_block(remainder[:, : limit - size], torch.linalg.vector_norm(product, dim=0), basis[:size],
                            scale, random_block)
    eigenvectors = basis[:size].T @ vectors[:, wanted]
    return EigenResult(ritz[wanted], eigenvectors, residuals, size, converged)


def certified_lanczos(fast: LinearOperator, exact: LinearOperator, *, k: int = 1, which: str = "both",
                      tol: float = DEFAULT_TOL, max_iter: int | None = None, seed: int = 0,
                      v0: torch.Tensor | None = None) -> EigenResult:
    """``lanczos`` on ``fast``, a cheap approximation of ``exact`` (e.g. float32 products), certified on ``exact``.

    Lanczos on ``fast`` stops at tol/2 (if it misses that within ``max_iter``, its unconverged
    result is returned); then each wanted vector y costs one product with ``exact``, H: its
    Rayleigh quotient θ = yᵀHy (within residual²/gap of an eigenvalue) and residual ‖Hy − θy‖.
    Where every residual is ≤ tol · ‖H‖ (‖H‖ estimated by the largest |θ|), the pairs meet
    ``lanczos(exact)``'s stopping rule and are returned; otherwise ``lanczos`` on ``exact`` takes
    over, warm-started from them. ``iterations`` counts the products with both operators.
    """
    approximate = lanczos(fast, k=k, which=which, tol=tol / 2, max_iter=max_iter, seed=seed, v0=v0)
    if not approximate.converged:
        return approximate
    vectors = approximate.eigenvectors
    products = torch.stack([exact.matvec(column) for column in vectors.T], dim=1)
    values = (vectors * products).sum(0)
    order = torch.argsort(values)
    values, vectors, products = values[order], vectors[:, order], products[:, order]
    residuals = torch.linalg.vector_norm(products - vectors * values, dim=0)
    spent = approximate.iterations + len(values)
    if bool((residuals <= tol * values.abs().max()).all()):
        return EigenResult(values, vectors, residuals, spent, True)
    result = lanczos(exact, k=k, which=which, tol=tol, max_iter=max_iter, seed=seed, v0=vectors)
    return replace(result, iterations=result.iterations + spent)


def _next_block(remainder: torch.Tensor, norms: torch.Tensor, basis: torch.Tensor, scale: torch.Tensor,
                random_block) -> torch.Tensor:
    """Orthonormal columns spanning range(remainder) and orthogonal to ``basis``; deflated ones made random.

    ``remainder`` is the product block after one Gram–Schmidt pass against ``basis``, ``norms``
    its columns' norms before that pass. The pass leaves rounding relative to the product, ‖HQ‖ ε,
    inside span(basis); normalising a column that the pass shrank (the Krylov space nearly
    invariant in that direction, as for a low-rank Hessian) magnifies it by ‖HQ‖/‖column‖:
    without a further projection the new block lies partly inside span(basis), the basis stops
    being orthonormal and Ritz values leave the spectrum (seen: −0.466 for a true λmin of −0.128).
    So each column, projected against the block's earlier columns, is projected against the
    basis again until a pass keeps at least half its norm (Daniel–Gragg–Kaufman–Stewart: the
    result is then orthogonal to working precision), then normalised. A column below rounding
    (ε · ‖H‖ · n), or one that cancels in every pass (it lies in the span), is replaced by a
    random direction.
    """
    floor = torch.finfo(remainder.dtype).eps * scale * remainder.shape[0]
    accepted: list[torch.Tensor] = []
    for column, before in zip(remainder.T, norms):
        unit = _project_out(column, before, basis, accepted) if torch.linalg.vector_norm(column) > floor else None
        while unit is None:
            candidate = random_block(1)[:, 0]
            unit = _project_out(candidate - basis.T @ (basis @ candidate), torch.linalg.vector_norm(candidate),
                                basis, accepted)
        accepted.append(unit)
    return torch.stack(accepted, dim=1)


def _project_out(vector: torch.Tensor, before: torch.Tensor, basis: torch.Tensor,
                 accepted: list[torch.Tensor]) -> torch.Tensor | None:
    """``vector`` (once projected off ``basis``, norm ``before`` until then) made orthogonal to
    the orthonormal rows of ``basis`` and to ``accepted``, normalised; None if it lies in their span."""
    for _ in range(MAX_PROJECTIONS):
        for unit in accepted:
            vector = vector - (unit @ vector) * unit
        after = torch.linalg.vector_norm(vector)
        if after == 0:
            return None
        if after >= 0.5 * before:
            return vector / after
        before = after
        vector = vector - basis.T @ (basis @ vector)
    return None


def dense_eigenpairs(matrix: torch.Tensor, *, k: int = 1, which: str = "both") -> EigenResult:
    """The same selection as ``lanczos`` from a dense symmetric matrix by ``torch.linalg.eigh``."""
    n = matrix.shape[0]
    k, which, _ = _check(n, k, which, DEFAULT_TOL)
    values, vectors = torch.linalg.eigh(matrix)
    wanted = _wanted(n, k, which)
    values, vectors = values[wanted], vectors[:, wanted]
    residuals = torch.linalg.vector_norm(matrix @ vectors - vectors * values, dim=0)
    return EigenResult(values, vectors, residuals, 0, True)
