"""The central flow of gradient descent at the edge of stability: its SDCP, right-hand side and integration.

Cohen, Damian, Talwalkar, Kolter, Lee, "Understanding Optimization in Deep Learning with Central
Flows" (2024–25). On gfbench's time axis t = kη, GD oscillating with covariance Σ along the
Hessian's critical eigenvectors moves on average like

    dθ/dt = −[∇f(θ) + ½ ∇⟨Σ, ∇²f(θ)⟩],   Σ = U X Uᵀ,  X ⪰ 0 (k × k),

(the mean of ∇f(θ + x) over x ~ (0, Σ) to second order), U the eigenvectors u_1..u_k whose
eigenvalues λ_i are at least c·2/η. With G_ij = ∇_θ(u_iᵀ∇²f u_j) (u fixed), ½∇⟨Σ, ∇²f⟩ = ½ Σ_ij
X_ij G_ij, and along the flow d/dt(u_iᵀ∇²f u_j) = ⟨G_ij, dθ/dt⟩ = −(A + B[X])_ij + κ(2/η − λ_i)δ_ij
with

    A_ij = ⟨G_ij, ∇f⟩ + κ (2/η − λ_i) δ_ij,    B[X]_ij = ½ Σ_kl ⟨G_ij, G_kl⟩ X_kl   (B ⪰ 0, a Gram map).

GD is stable while UᵀHU ⪯ (2/η)I; the flow keeps it so: d/dt(UᵀHU) ⪯ κ((2/η)I − UᵀHU), i.e.
A + B[X] ⪰ 0, with X ⪰ 0 and ⟨X, A + B[X]⟩ = 0 (oscillation only along directions held at the
edge): the semidefinite complementarity problem, the optimality conditions of the convex QP
min_{X ⪰ 0} ½⟨X, B[X]⟩ + ⟨A, X⟩. On the active face the critical eigenvalues obey
dλ/dt = κ(2/η − λ): held at 2/η, an overshoot pulled back at rate κ = r/η (Baumgarte
stabilisation of the constraint λ = 2/η; the reference's Euler projection is r = substeps).
k = 1: σ² = max(0, −2A/‖∇λ‖²), at λ = 2/η the closed form 2⟨−∇f, ∇λ⟩/‖∇λ‖². With no critical
eigenvalue the flow is gradient flow. Predicted time-averaged loss f(θ) + ½⟨Σ, H⟩ = f + tr(X)/η.
"""
from __future__ import annotations

import time as wallclock
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from .curvature.eigen import dense_eigenpairs, lanczos
from .curvature.hessian import HessianOperator, dense_hessian, third_derivative_contractions
from .recording import Recorder, RecordPoint, Variable
from .solver import Integration, SolverFailure

#: Projected-gradient iterations of the SDCP between two attempts at an exact face solve.
SDCP_CHECK_EVERY = 25
#: Most projected-gradient iterations before the SDCP solve gives up.
SDCP_MAX_ITER = 20_000
#: Relative tolerance of the SDCP's optimality conditions (PSD-ness of X and of A + B[X], ⟨X, A + B[X]⟩).
SDCP_TOL = 1e-13
#: Most Newton steps polishing a face solution of rank 0 < r < k.
NEWTON_STEPS = 8


class CentralFlowFailure(ArithmeticError):
    """The central flow's right-hand side could not be evaluated (eigensolve or SDCP failed, too many at the edge)."""


def _apply(gram: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """B[X]_ij = Σ_kl gram[i, j, k, l] X_kl."""
    return torch.einsum("ijkl,kl->ij", gram, x)


def _psd_projection(x: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(0.5 * (x + x.T))
    return (vectors * values.clamp_min(0)) @ vectors.T


def _face_solution(a: torch.Tensor, gram: torch.Tensor, basis: torch.Tensor) -> torch.Tensor | None:
    """The QP's minimiser over {V Y Vᵀ} (V = ``basis``, k × r) if it satisfies the SDCP conditions, else None.

    On the face the conditions are Vᵀ(A + B[VYVᵀ])V = 0, linear in Y (min-norm solution where B
    is singular there: B[X], hence the flow, is still unique); accepted when Y ⪰ 0 and
    A + B[X] ⪰ 0 to SDCP_TOL relative.
    """
    k, r = basis.shape
    if r == 0:
        x = torch.zeros_like(a)
    else:
        reduced = torch.einsum("ia,jb,ijkl,kc,ld->abcd", basis, basis, gram, basis, basis).reshape(r * r, r * r)
        y = (torch.linalg.pinv(reduced, hermitian=True) @ -(basis.T @ a @ basis).reshape(-1)).reshape(r, r)
        y = 0.5 * (y + y.T)
        y_values = torch.linalg.eigvalsh(y)
        if y_values.min() < -SDCP_TOL * max(float(y_values.abs().max()), torch.finfo(a.dtype).tiny):
            return None
        x = basis @ y @ basis.T
    slack = a + _apply(gram, x)
    scale = max(float(a.abs().max()), float(_apply(gram, x).abs().max()), torch.finfo(a.dtype).tiny)
    if torch.linalg.eigvalsh(0.5 * (slack + slack.T)).min() < -SDCP_TOL * scale * k:
        return None
    return x


def _newton_polish(a: torch.Tensor, gram: torch.Tensor, x: torch.Tensor, rank: int) -> torch.Tensor | None:
    """A rank-r face solution made exact, or None if it is not the SDCP's solution.

    The face test of ``_face_solution`` sees a face V off the true range by δ only at O(δ²) in
    the eigenvalues of S = A + B[X]; the complementarity residual SX is O(δ). So X = LLᵀ, L
    (k × r), is refined by Newton's method on φ(L) = ½⟨LLᵀ, B[LLᵀ]⟩ + ⟨A, LLᵀ⟩ (gradient 2SL,
    Hessian D ↦ 2B[DLᵀ + LDᵀ]L + 2SD; pseudo-inverse for the rotations L → LQ) until
    ‖SX‖ ≤ SDCP_TOL·scale·‖X‖, quadratic near a strictly complementary solution.
    """
    k = a.shape[0]
    values, vectors = torch.linalg.eigh(x)
    low = vectors[:, k - rank:] * values[k - rank:].clamp_min(0).sqrt()
    directions = torch.eye(k * rank, dtype=a.dtype, device=a.device).reshape(k * rank, k, rank)
    for _ in range(NEWTON_STEPS):
        x = low @ low.T
        slack = a + _apply(gram, x)
        scale = max(float(a.abs().max()), float(_apply(gram, x).abs().max()), torch.finfo(a.dtype).tiny)
        if float((slack @ x).abs().max()) <= SDCP_TOL * scale * max(float(x.abs().max()), 1.0):
            return x if float(torch.linalg.eigvalsh(slack).min()) >= -SDCP_TOL * scale * k else None
        hessian = torch.stack([(2 * _apply(gram, d @ low.T + low @ d.T) @ low + 2 * slack @ d).reshape(-1)
                               for d in directions])
        low = low - (torch.linalg.pinv(hessian, hermitian=True) @ (2 * slack @ low).reshape(-1)).reshape(k, rank)
    return None


def solve_sdcp(a: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """X ⪰ 0 with A + B[X] ⪰ 0 and ⟨X, A + B[X]⟩ = 0: the minimiser of ½⟨X, B[X]⟩ + ⟨A, X⟩ over X ⪰ 0.

    ``a`` (k, k) symmetric; ``gram`` (k, k, k, k) with B[X]_ij = Σ_kl gram[i,j,k,l] X_kl, symmetric
    and positive semidefinite as an operator on symmetric matrices. Active set in X's eigenbasis:
    the solution's range V is guessed from the eigenvectors of an iterate (first the PSD
    projection of the unconstrained solution), every rank r = 0..k tried, and the QP solved
    exactly on that face (``_face_solution``); between guesses, accelerated projected gradient
    (FISTA with restart, step 1/‖B‖, projection by eigendecomposition) refines the iterate; a face of rank 0 < r < k is polished by
    Newton's method on X = LLᵀ (``_newton_polish``). k = 1:
    the closed form max(0, −a/gram). Raises CentralFlowFailure after SDCP_MAX_ITER iterations.
    """
    k = a.shape[0]
    matrix = gram.reshape(k * k, k * k)
    x = _psd_projection((torch.linalg.pinv(matrix, hermitian=True) @ -a.reshape(-1)).reshape(k, k))
    step = 1.0 / max(float(torch.linalg.eigvalsh(0.5 * (matrix + matrix.T)).max()), torch.finfo(a.dtype).tiny)
    momentum, previous, objective = x, x, float("inf")
    t = 1.0
    for iteration in range(0, SDCP_MAX_ITER + 1, SDCP_CHECK_EVERY):
        vectors = torch.linalg.eigh(x)[1].flip(1)  # descending eigenvalues: the first r span the guessed range
        for rank in range(k + 1):
            solution = _face_solution(a, gram, vectors[:, :rank])
            if solution is not None and 0 < rank < k:
                solution = _newton_polish(a, gram, solution, rank)
            if solution is not None:
                return solution
        for _ in range(SDCP_CHECK_EVERY):
            x = _psd_projection(momentum - step * (a + _apply(gram, momentum)))
            value = float(0.5 * (x * _apply(gram, x)).sum() + (a * x).sum())
            if value > objective:  # restart the momentum (O'Donoghue & Candès)
                t, momentum = 1.0, x
            else:
                t_next = 0.5 * (1 + (1 + 4 * t * t) ** 0.5)
                momentum, t = x + ((t - 1) / t_next) * (x - previous), t_next
            previous, objective = x, value
    raise CentralFlowFailure(f"the oscillation covariance (SDCP, k={k}) did not converge in {SDCP_MAX_ITER} "
                             f"iterations")


@dataclass(frozen=True)
class CentralPoint:
    """The central flow at one θ: ``velocity`` dθ/dt, ``loss`` f(θ), ``sharpness`` λmax(∇²f(θ)),
    ``critical`` the eigenvalues ≥ c·2/η (descending, k of them), ``variances`` the eigenvalues of
    X (descending, k; GD's predicted oscillation variances along the critical directions, units θ²)."""

    velocity: torch.Tensor
    loss: float
    sharpness: float
    critical: torch.Tensor
    variances: torch.Tensor

    def predicted_loss(self, lr: float) -> float:
        """GD's predicted time-averaged loss f(θ) + ½⟨Σ, H⟩ = f(θ) + tr(X)/η (H u = (2/η) u on the edge)."""
        return self.loss + float(self.variances.sum()) / lr


class CentralField:
    """Evaluates the central flow's right-hand side (see the module docstring) for ``field``'s problem.

    ``fraction`` c: eigenvalues ≥ c·2/η are critical; ``relaxation`` r: κ = r/η; at most
    ``max_critical`` of them. Eigenpairs: ``eigensolver`` "dense" (eigh of the dense Hessian, d
    HVPs) or "lanczos" (block Lanczos on the top m = k_previous + 1 pairs, m grown until one is
    below the edge, warm-started from the previous evaluation's vectors, residual ``eig_tol``·‖H‖).
    HVPs count in ``field.n_hvp``; ``n_third_order`` counts the batched third-derivative passes.
    """

    def __init__(self, field, lr: float, *, fraction: float, relaxation: float, max_critical: int,
                 eigensolver: str, eig_tol: float, seed: int = 0) -> None:
        self.field, self.lr = field, lr
        self.threshold = fraction * 2.0 / lr
        self.kappa = relaxation / lr
        self.max_critical, self.eigensolver, self.eig_tol, self.seed = max_critical, eigensolver, eig_tol, seed
        self.n_evaluations = 0
        self.n_third_order = 0
        self.most_critical = 0
        self._vectors: torch.Tensor | None = None
        self._n_critical = 0

    def _top_eigenpairs(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(critical eigenvalues descending, their eigenvectors (d, k), λmax)."""
        problem, d = self.field.problem, theta.numel()
        if self.eigensolver == "dense":
            result = dense_eigenpairs(dense_hessian(problem, theta, field=self.field), k=d, which="largest")
        else:
            wanted = min(d, self._n_critical + 1, self.max_critical + 1)
            while True:
                operator = HessianOperator(problem, theta)
                result = lanczos(operator, k=wanted, which="largest", tol=self.eig_tol, seed=self.seed,
                                 v0=self._vectors)
                self.field.n_hvp += operator.n_matvec
                if not result.converged:
                    raise CentralFlowFailure(f"Lanczos missed eig_tol={self.eig_tol:g} for the top {wanted} "
                                             f"Hessian eigenpairs (largest residual {float(result.residuals.max()):.3g})")
                self._vectors = result.eigenvectors
                if result.eigenvalues[0] < self.threshold or wanted >= min(d, self.max_critical + 1):
                    break
                wanted += 1
        values, vectors = result.eigenvalues.flip(0), result.eigenvectors.flip(1)
        critical = values >= self.threshold
        self._n_critical = int(critical.sum())
        if self._n_critical > self.max_critical:
            raise CentralFlowFailure(f"more than max_critical={self.max_critical} Hessian eigenvalues at the edge "
                                     f"(>= {self.threshold:.6g})")
        return values[critical], vectors[:, critical], float(values[0])

    def evaluate(self, theta: torch.Tensor) -> CentralPoint:
        self.n_evaluations += 1
        critical, vectors, sharpness = self._top_eigenpairs(theta)
        k = critical.numel()
        self.most_critical = max(self.most_critical, k)
        if k == 0:
            loss, grad = self.field.loss_and_grad(theta)
            return CentralPoint(-grad, float(loss), sharpness, critical, critical)
        grad, contractions = third_derivative_contractions(self.field, theta, vectors)
        self.n_third_order += k
        a = (torch.einsum("ijd,d->ij", contractions, grad)
             + torch.diag(self.kappa * (2.0 / self.lr - critical)))
        gram = 0.5 * torch.einsum("ijd,kld->ijkl", contractions, contractions)
        x = solve_sdcp(a, gram)
        velocity = -grad - 0.5 * torch.einsum("ij,ijd->d", x, contractions)
        loss = float(self.field.loss_and_grad(theta)[0])  # cached by third_derivative_contractions
        return CentralPoint(velocity, loss, sharpness, critical, torch.linalg.eigvalsh(x).flip(0).clamp_min(0))


#: Explicit Runge–Kutta tableaux (nodes are implied: each stage is at θ + dt Σ_j a_ij k_j).
TABLEAUX = {
    "euler": ((), (1.0,)),
    "rk4": (((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
}


class CentralIntegration(Integration):
    """The central flow integrated by a fixed-step explicit Runge–Kutta method, ``substeps`` steps per GD step.

    The right-hand side is only piecewise smooth (X switches on and off, eigenvalues join and
    leave the critical set), so the step is fixed rather than error-controlled: halving it shows
    the convergence (tests/test_central.py). An evaluation at the current θ is kept, so the
    recorder's evaluation at a record point is the next step's first stage.
    """

    def __init__(self, field, theta0: torch.Tensor, lr: float, central: CentralField, *, method: str,
                 substeps: int) -> None:
        super().__init__(field, theta0, lr)
        self.central, self.substeps = central, substeps
        self.coupling, self.weights = TABLEAUX[method]
        self.n_substeps = 0
        self.eval_time = 0.0
        self._last: tuple[torch.Tensor, CentralPoint] | None = None

    def evaluate(self, theta: torch.Tensor) -> CentralPoint:
        if self._last is not None and self._last[0] is theta:
            return self._last[1]
        started = wallclock.perf_counter()
        try:
            point = self.central.evaluate(theta)
        except CentralFlowFailure as failure:
            raise SolverFailure(f"{failure} (at t={self.step * self.lr:.6g})", self.step * self.lr) from None
        self.eval_time += wallclock.perf_counter() - started
        self._last = (theta, point)
        return point

    def advance_to(self, step: int) -> torch.Tensor:
        dt = self.lr / self.substeps
        theta = self.theta
        while self.step < step:
            for _ in range(self.substeps):
                slopes = [self.evaluate(theta).velocity]
                for row in self.coupling:
                    stage = theta + dt * sum(c * slope for c, slope in zip(row, slopes) if c)
                    slopes.append(self.evaluate(stage).velocity)
                theta = theta + dt * sum(w * slope for w, slope in zip(self.weights, slopes))
                self.n_substeps += 1
            self.step += 1
            self.theta = theta
        self.evaluate(self.theta)  # a failure here is the solver's; the recorder and the next step reuse it
        return self.theta

    def recorders(self) -> Sequence[Recorder]:
        return (CentralRecorder(self),)

    def stats(self) -> dict[str, Any]:
        return {"nfe": self.central.n_evaluations, "n_substeps": self.n_substeps, "n_hvp": self.field.n_hvp,
                "n_third_order": self.central.n_third_order, "central_max_critical_seen": self.central.most_critical,
                "central_eval_time_s": self.eval_time}


class CentralRecorder(Recorder):
    """The central flow's state at each record point, from the integration's evaluation there."""

    def __init__(self, integration: CentralIntegration) -> None:
        self.integration = integration

    def variables(self) -> Sequence[Variable]:
        slots = self.integration.central.max_critical
        return (
            Variable("central_n_critical", "number of Hessian eigenvalues at the edge (>= c * 2/lr)", "1"),
            Variable("central_variance", "eigenvalues of X: predicted variances of GD's oscillation along the "
                     "critical eigenvectors, descending, 0 past central_n_critical", "1", ("critical",), (slots,)),
            Variable("central_predicted_loss", "predicted time-averaged GD loss f(theta) + tr(X)/lr", "1"),
            Variable("central_sharpness", "lambda_max of the loss Hessian at the central flow's theta", "1"),
        )

    def record(self, point: RecordPoint) -> Mapping[str, Any]:
        central = self.integration.evaluate(point.theta)
        variances = torch.zeros(self.integration.central.max_critical, dtype=torch.float64)
        variances[: central.variances.numel()] = central.variances.detach().cpu().double()
        return {"central_n_critical": central.critical.numel(), "central_variance": variances.numpy(),
                "central_predicted_loss": central.predicted_loss(self.integration.lr),
                "central_sharpness": central.sharpness}
