"""Curvature recorded along a trajectory: λmin and λmax of ∇²f(θ(t)), and the integral μ(t)."""
from __future__ import annotations

import time as wallclock
import warnings
from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from ..params import AT_LEAST_ONE, Bounds, ConfigError, Param
from ..recording import Recorder, RecordPoint, Variable
from ..timeaxis import cumulative_integral
from .eigen import DEFAULT_TOL, FLOAT32_MIN_TOL, UNIT_INTERVAL, certified_lanczos, dense_eigenpairs, lanczos
from .hessian import DEFAULT_HVP, DENSE_MAX_DIM, CastOperator, HessianOperator, check_hvp_method, dense_hessian

EIGENSOLVERS = ("lanczos", "dense")
#: Smallest d at which the recorder takes Lanczos' products in float32 by default: on relu_fc
#: (d = 42,200) that makes the solve about 1.5× faster, on deep_linear (d = 820, 5 products a
#: solve) the float32 graph and the float64 certification make it 1.5–3.5× slower
#: (benchmarks/bench_eigs.py).
FLOAT32_MIN_DIM = 10_000
#: The recorder's options, which are also the run settings of ``gfbench.spec.RUN_SETTINGS``; k's
#: upper bound, d/2, is set per problem. curvature_every None (the default) records no curvature.
CURVATURE_EVERY = Param("curvature_every", int, None, "record Hessian lambda_min/lambda_max at every K-th record "
                        "point and the last (auto: none)", bounds=AT_LEAST_ONE)
CURVATURE_K = Param("curvature_k", int, 1, "extreme Hessian eigenvalues per end (1, or 2k <= d)",
                    bounds=AT_LEAST_ONE)
CURVATURE_TOL = Param("curvature_tol", float, DEFAULT_TOL, "Lanczos residual tolerance relative to ||H||",
                      bounds=UNIT_INTERVAL)
EIGENSOLVER = Param("eigensolver", str, "lanczos", "how the eigenvalues are found", choices=EIGENSOLVERS)


def check_curvature_options(dim: int, every: Any, k: Any, tol: Any, hvp: Any = DEFAULT_HVP,
                            eigensolver: Any = "lanczos") -> tuple[int, int, float, str]:
    """(every, k, tol, eigensolver) checked for a problem of dimension ``dim``; ConfigError names the first bad one.

    k = 1 always, else 2k ≤ d: the k smallest and k largest eigenvalues must be distinct ones.
    """
    every = replace(CURVATURE_EVERY, default=..., requirement="be an integer >= 1 (or None for no curvature)"
                    ).check(every)
    k = replace(CURVATURE_K, bounds=Bounds(1, max(1, dim // 2)),
                requirement=f"be 1 or an integer with 2k <= d = {dim}").check(k)
    tol = CURVATURE_TOL.check(tol)
    check_hvp_method(hvp)
    eigensolver = EIGENSOLVER.check(eigensolver)
    if eigensolver == "dense" and dim > DENSE_MAX_DIM:
        raise ConfigError(f"eigensolver 'dense' needs d <= {DENSE_MAX_DIM}, got d={dim}; use lanczos")
    return every, k, tol, eigensolver


class CurvatureRecorder(Recorder):
    """λmin and λmax of ∇²f(θ) at every ``every``-th record point (and at ``final_index``).

    ``dim`` is the problem's d and ``lr`` the run's step size η (for ``sharpness_times_lr``).

    Variables: ``hessian_min_eig``, ``hessian_max_eig`` (NaN where not evaluated or not converged),
    ``hessian_eig_residual`` (largest Lanczos residual ‖Hy − λy‖ of the pairs), and with k > 1
    ``hessian_eigs`` (time, eig): the k smallest then the k largest eigenvalues. ``finish`` adds
    ``curvature_integral`` μ(t) = ∫_0^t −λmin(s) ds (λmin linear between evaluated points, NaN
    after the last one) and ``sharpness_times_lr`` η·λmax (GD on a quadratic is stable iff < 2).

    Each evaluation runs ``lanczos`` on a HessianOperator (``hvp`` method, at most ``max_iter``
    products; default ``lanczos``'s), warm-started from the previous evaluation's Ritz vectors,
    or, with ``eigensolver="dense"``, ``eigh`` of the dense Hessian (d ≤ 2000). With ``float32``
    (None: when d ≥ FLOAT32_MIN_DIM) a float64 run at tol ≥ FLOAT32_MIN_TOL takes the products in
    float32 on a float32 copy of the problem, certified by one float64 product per pair
    (``certified_lanczos``). A solve that
    misses the tolerance stores NaN eigenvalues (its residual is kept, so the miss is visible),
    counts in ``curvature_unconverged`` and warns (RuntimeWarning); it is never stored as a value. The HVPs do not go through the run's GradientField: attrs report their
    count and wall time separately (``curvature_n_hvp``, ``curvature_wall_time_s``; the run's
    ``wall_time_s`` includes the latter).
    """

    def __init__(self, dim: int, lr: float, *, every: int = 1, k: int = 1, tol: float = DEFAULT_TOL,
                 hvp: str = DEFAULT_HVP, eigensolver: str = "lanczos", final_index: int | None = None,
                 seed: int = 0, max_iter: int | None = None, float32: bool | None = None) -> None:
        self.every, self.k, self.tol, self.eigensolver = check_curvature_options(dim, every, k, tol, hvp, eigensolver)
        self.lr = lr
        self.hvp = hvp
        self.final_index = final_index
        self.seed = seed
        self.max_iter = max_iter
        self.n_hvp = 0
        self.n_evaluations = 0
        self.n_unconverged = 0
        self.wall_time = 0.0
        self._previous_vectors = None
        self.float32 = (dim >= FLOAT32_MIN_DIM if float32 is None else float32) and self.tol >= FLOAT32_MIN_TOL
        self._float32_problem = None

    def variables(self) -> Sequence[Variable]:
        declared = [
            Variable("hessian_min_eig", "minimal eigenvalue of the loss Hessian lambda_min(hess f(theta))", "1"),
            Variable("hessian_max_eig", "maximal eigenvalue of the loss Hessian lambda_max(hess f(theta))", "1"),
            Variable("hessian_eig_residual", "largest eigenpair residual ||H y - lambda y|| of the curvature solve",
                     "1"),
        ]
        if self.k > 1:
            declared.append(Variable("hessian_eigs", f"{self.k} smallest then {self.k} largest Hessian eigenvalues",
                                     "1", ("eig",), (2 * self.k,)))
        return declared

    def record(self, point: RecordPoint) -> Mapping[str, Any]:
        if point.index % self.every and point.index != self.final_index:
            return {}
        started = wallclock.perf_counter()
        if self.eigensolver == "dense":
            result = dense_eigenpairs(dense_hessian(point.problem, point.theta), k=self.k)
        else:
            operator = HessianOperator(point.problem, point.theta, self.hvp)
            options = dict(k=self.k, tol=self.tol, seed=self.seed, max_iter=self.max_iter, v0=self._previous_vectors)
            if self.float32 and point.theta.dtype == torch.float64:
                if self._float32_problem is None:
                    self._float32_problem = point.problem.to(dtype=torch.float32)
                fast = CastOperator(HessianOperator(self._float32_problem, point.theta.float(), self.hvp),
                                    torch.float64)
                result = certified_lanczos(fast, operator, **options)
                self.n_hvp += fast.n_matvec
            else:
                result = lanczos(operator, **options)
            self._previous_vectors = result.eigenvectors
            self.n_hvp += operator.n_matvec
        self.n_evaluations += 1
        self.wall_time += wallclock.perf_counter() - started
        values = {"hessian_eig_residual": float(result.residuals.max())}
        if not result.converged:
            self.n_unconverged += 1
            warnings.warn(f"Hessian eigensolve at t={point.time:g} (step {point.step}) missed curvature_tol="
                          f"{self.tol:g} after {result.iterations} products (largest residual "
                          f"{values['hessian_eig_residual']:.3g}); its eigenvalues are stored as NaN",
                          RuntimeWarning, stacklevel=2)
            return values
        values.update(hessian_min_eig=result.min, hessian_max_eig=result.max)
        if self.k > 1:
            values["hessian_eigs"] = result.eigenvalues.detach().cpu().double().numpy()
        return values

    def finish(self, ds: xr.Dataset) -> xr.Dataset:
        evaluated = np.isfinite(ds.hessian_min_eig.values)
        times = ds.time.values
        mu = (cumulative_integral(times[evaluated], -ds.hessian_min_eig.values[evaluated], times)
              if evaluated.any() else np.full(times.shape, np.nan))
        return ds.assign(
            curvature_integral=("time", mu, {"long_name": "mu(t) = integral from 0 to t of -lambda_min dt "
                                                          "(trapezoid over converged evaluations)", "units": "1"}),
            sharpness_times_lr=("time", self.lr * ds.hessian_max_eig.values,
                                {"long_name": "lr * lambda_max (2 is GD's stability edge on a quadratic)",
                                 "units": "1"}),
        )

    def attrs(self) -> dict[str, Any]:
        return {
            "curvature_every": self.every,
            "curvature_k": self.k,
            "curvature_tol": self.tol,
            "curvature_eigensolver": self.eigensolver,
            "curvature_hvp": self.hvp,
            "curvature_float32_products": int(self.float32),
            "curvature_evaluations": self.n_evaluations,
            "curvature_n_hvp": self.n_hvp,
            "curvature_unconverged": self.n_unconverged,
            "curvature_wall_time_s": self.wall_time,
        }
