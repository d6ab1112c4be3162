"""Eigensolves along GD trajectories: our warm-started Lanczos (λmin and λmax from one Krylov space)
against scipy's ``eigsh`` (ARPACK, ``which="LA"`` then ``which="SA"``) on the same HVP operator.

Both stop at the residual tolerance 1e-6 (ours: ‖Hy − λy‖ ≤ tol·‖H‖ at both ends; ARPACK's
tol·|λ|, as strict at λmax and stricter at λmin — a matched tol·‖H‖/|λmin| for SA changes
eigsh's products by ≤ 2 % on relu_fc). Every value is checked against the other solver, and
against dense ``eigvalsh`` where d ≤ DENSE_MAX_DIM, before any ratio is reported.
"""
import time

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

from gfbench.curvature import (DENSE_MAX_DIM, CastOperator, HessianOperator, certified_lanczos, dense_hessian,
                               lanczos)
from gfbench.field import GradientField

from .common import SkipNotImplemented, make_problem

TOL = 1e-6
POINTS = 6


def eigsh_min_max(operator, tol=TOL):
    """(λmin, λmax) of ``operator`` by two ARPACK runs on it, LA then SA."""
    scipy_operator = LinearOperator((operator.size, operator.size), dtype=np.float64,
                                    matvec=lambda x: operator.matvec(torch.from_numpy(
                                        np.ascontiguousarray(x.reshape(-1)))).numpy())
    largest = eigsh(scipy_operator, k=1, which="LA", tol=tol, return_eigenvectors=False)[0]
    smallest = eigsh(scipy_operator, k=1, which="SA", tol=tol, return_eigenvectors=False)[0]
    return float(smallest), float(largest)


def gd_trajectory(problem, gap, points=POINTS):
    """``points`` GD iterates at the problem's default step η, ``gap`` apart in t = kη, from θ0 (seed 0)."""
    field, theta = GradientField(problem), problem.init(0)
    steps = max(1, round(gap / problem.default_lr))
    trajectory = []
    for _ in range(points):
        trajectory.append(theta)
        for _ in range(steps):
            theta = theta - problem.default_lr * field.gradient(theta)
    return trajectory


def _agree(values, reference, scale, what):
    """Both ends within 2·TOL·‖H‖ (each solver's Weyl bound) of the reference; else the benchmark fails."""
    error = max(abs(a - b) for a, b in zip(values, reference))
    if error > 2 * TOL * scale:
        raise AssertionError(f"{what}: (λmin, λmax) {values} vs {reference}, error {error:.2e} > 2·tol·‖H‖")


def measure(problem, gap, rounds):
    """{solver: [seconds, HVPs]} summed over the trajectory: Lanczos ``warm`` and ``cold`` on float64
    products, ``float32``: warm ``certified_lanczos`` on float32 products (the recorder's default), and ``eigsh``.

    Each solve is timed ``rounds`` times, the solvers taking turns, and the fastest kept, so that
    load from elsewhere falls on all alike. The float64 gradient graph the operator builds first is
    outside the timing (every solver uses it alike); the float32 operator's graph is inside.
    """
    totals = {name: [0.0, 0] for name in ("warm", "cold", "float32", "eigsh")}
    starts = {"warm": None, "float32": None}
    low = problem.to(dtype=torch.float32)

    def certified(operator, theta, v0):
        fast = CastOperator(HessianOperator(low, theta.float()), torch.float64)
        result = certified_lanczos(fast, operator, tol=TOL, seed=0, v0=v0)
        operator.n_matvec += fast.n_matvec  # counted with the float64 products
        return result

    lanczos(HessianOperator(problem, problem.init(0)))  # one-time setup of the first calls
    certified(HessianOperator(problem, problem.init(0)), problem.init(0), None)
    eigsh_min_max(HessianOperator(problem, problem.init(0)))
    for index, theta in enumerate(gd_trajectory(problem, gap)):
        solvers = {"warm": lambda operator, v0=starts["warm"]: lanczos(operator, tol=TOL, seed=index, v0=v0),
                   "cold": lambda operator: lanczos(operator, tol=TOL, seed=index),
                   "float32": lambda operator, v0=starts["float32"]: certified(operator, theta, v0),
                   "eigsh": eigsh_min_max}
        results, best, products = {}, dict.fromkeys(solvers, float("inf")), {}
        for _ in range(rounds):
            for name, solve in solvers.items():
                operator = HessianOperator(problem, theta)
                began = time.perf_counter()
                results[name] = solve(operator)
                best[name] = min(best[name], time.perf_counter() - began)
                products[name] = operator.n_matvec
        for name in solvers:
            totals[name][0] += best[name]
            totals[name][1] += products[name]
        for name in starts:
            starts[name] = results[name].eigenvectors
        reference = results["eigsh"]
        scale = max(abs(value) for value in reference)
        for name in ("warm", "cold", "float32"):
            _agree((results[name].min, results[name].max), reference, scale, f"{name} vs eigsh at point {index}")
        if problem.dim <= DENSE_MAX_DIM:
            exact = torch.linalg.eigvalsh(dense_hessian(problem, theta))
            _agree(reference, (float(exact[0]), float(exact[-1])), scale, f"eigsh vs eigvalsh at point {index}")
    return totals


class LanczosVsEigsh:
    """Time and HVPs of our Lanczos along POINTS GD iterates ``gap`` apart in t / eigsh LA + SA (< 1: faster).

    Ours warm-starts every solve from the previous point's Ritz vectors (``cold``: from a random
    vector); ``float32``: products in float32, certified by one float64 product per pair.
    Measured once for all parameters (``setup_cache``), the tiny deep_linear solves over 5 rounds.
    """

    params = (["deep_linear", "relu_fc"], [0.01, 0.1])
    param_names = ["problem", "gap"]
    unit = "ratio"

    def setup_cache(self):
        measured = {}
        for name in self.params[0]:
            try:
                problem = make_problem(name)
            except SkipNotImplemented:
                continue
            for gap in self.params[1]:
                measured[name, gap] = measure(problem, gap, rounds=5 if name == "deep_linear" else 1)
        return measured

    setup_cache.timeout = 1800

    def setup(self, measured, problem, gap):
        if (problem, gap) not in measured:
            raise SkipNotImplemented(f"problem {problem!r} not available")
        self.totals = measured[problem, gap]

    def track_lanczos_over_eigsh_time(self, measured, problem, gap):
        return self.totals["warm"][0] / self.totals["eigsh"][0]

    def track_lanczos_over_eigsh_hvps(self, measured, problem, gap):
        return self.totals["warm"][1] / self.totals["eigsh"][1]

    def track_cold_lanczos_over_eigsh_time(self, measured, problem, gap):
        return self.totals["cold"][0] / self.totals["eigsh"][0]

    def track_warm_over_cold_hvps(self, measured, problem, gap):
        return self.totals["warm"][1] / self.totals["cold"][1]

    def track_float32_lanczos_over_eigsh_time(self, measured, problem, gap):
        return self.totals["float32"][0] / self.totals["eigsh"][0]

    def track_float32_lanczos_over_eigsh_hvps(self, measured, problem, gap):
        return self.totals["float32"][1] / self.totals["eigsh"][1]
