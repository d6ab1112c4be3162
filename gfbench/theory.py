"""EC21's bounds evaluated on recorded runs (Elkabetz & Cohen 2021, Sections 2-4).

- ``theorem3_step_bound``: the step size η*(t̃, ε) below which GD ε-follows GF up to t̃ (Eq. 7),
  with β, γ and m(t) measured on a gradient flow dataset recorded with curvature.
- ``theorem2_bound``: the a-posteriori bound (Eq. 4) on ‖θ(t) − θ̄(t)‖ for a given GD run.
- ``corollary1_step_bound``: Eq. 7 with global constants (strongly convex / convex / non-convex).
- ``lemma2_bound``, ``prop2_bound``: lower bounds on λmin(∇²f(θ)) for deep linear networks
  (Eqs. 13, 14), recorded by ``LambdaMinBounds`` as ``lemma2_bound`` and ``prop2_bound``.
- ``bound_summary``: all of these at one horizon t̃ for one gradient flow run (``gfbench bound``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from .dataset import dataset_attrs
from .field import GradientField
from .params import POSITIVE, Bounds, ConfigError, Param
from .problem import GlobalCurvature, Problem
from .recording import Recorder, RecordPoint, Variable
from .timeaxis import cumulative_integral, match_times

TRAJECTORY_ESTIMATE = ("trajectory estimate: beta = max|lambda|, gamma = max||grad f|| and m(t) = -lambda_min "
                       "are measured on the gradient flow path, not as sups over the eps-tube around it that "
                       "Theorem 3 asks for")
THEOREM2_QUADRATURE = ("delta(t) = ||grad f(theta_bar(t)) - grad f(theta_k)|| evaluated exactly at Gauss-Legendre "
                       "nodes of every GD step and integrated by that rule; m(t) = -lambda_min measured on the "
                       "gradient flow path (exact for a quadratic)")
#: Gauss–Legendre nodes per GD step for ∫ e^{−μ} δ: exact for polynomials of degree 5, and δ is
#: linear on each step for a quadratic.
THEOREM2_NODES = 3
# ... as default: the bounds have no default tolerance. t_tilde's bounds narrow to the recorded
# curvature where a run is at hand (bound_summary).
EPS = Param("eps", float, ..., "tolerance eps on ||theta_k - theta(k lr)||", bounds=POSITIVE)
T_TILDE = Param("t_tilde", float, None, "horizon t~ (auto: the last curvature evaluation)", bounds=POSITIVE)


def _require(ds: xr.Dataset, names: Sequence[str], what: str) -> None:
    missing = [name for name in names if name not in ds.variables]
    if missing:
        raise ConfigError(f"{what} needs a dataset with {', '.join(missing)}; record it with "
                          f"{'--curvature-every' if 'hessian_min_eig' in missing else '--save-params'}")


def _curvature_nodes(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, λmin, λmax) at the points where curvature was evaluated."""
    _require(ds, ("hessian_min_eig", "hessian_max_eig"), "this bound")
    evaluated = np.isfinite(ds.hessian_min_eig.values)
    return (ds.time.values[evaluated], ds.hessian_min_eig.values[evaluated], ds.hessian_max_eig.values[evaluated])


def _bound_attrs(source: xr.Dataset, bound: str, estimate: str, **extra: Any) -> dict[str, Any]:
    """A bound dataset's attrs: which bound, how it is estimated, and the run it was evaluated on."""
    return dataset_attrs("bound", title=f"{bound} for {source.attrs.get('title', 'a run')}", bound=bound,
                         estimate=estimate, problem=source.attrs["problem"],
                         problem_params=source.attrs["problem_params"], seed=source.attrs["seed"], **extra)


def problem_of(ds: xr.Dataset) -> Problem:
    """The problem a dataset was recorded on, rebuilt from its ``problem`` and ``problem_params`` attrs."""
    from .registry import get_problem
    return get_problem(ds.attrs["problem"], **json.loads(ds.attrs["problem_params"]))


def theorem3_step_bound(ds_gf: xr.Dataset, eps: float, initial_gap: float = 0.0) -> xr.Dataset:
    """EC21 Theorem 3 (Eq. 7) for every recorded t̃ > 0 of a gradient flow run with curvature.

    η*(t̃, ε) = inf_{t ∈ (0, t̃]} (ε − e^{μ(t)} g) / (β γ e^{μ(t)} ∫_0^t e^{−μ(s)} ds), with
    g = ‖θ_0 − θ(0)‖ (``initial_gap``), μ the recorded ``curvature_integral``, β(t̃) the largest
    |λmin|, |λmax| and γ(t̃) the largest ‖∇f‖ recorded up to t̃. ∫ e^{−μ} is the trapezoid rule on
    the record grid. η* ≤ 0 means no step size qualifies (g e^{μ} ≥ ε). A GD step size below η*
    keeps ‖θ_k − θ(kη)‖ ≤ ε for k ≤ t̃/η, as far as the path values stand for the ε-tube (attrs
    ``estimate``). Returns ``eta_star``, ``beta``, ``gamma`` on the times up to the last curvature
    evaluation (t > 0).
    """
    eps = EPS.check(eps)
    if ds_gf.attrs.get("solver") != "gf":
        raise ConfigError(f"Theorem 3 needs a gradient flow dataset (solver gf), got solver "
                          f"{ds_gf.attrs.get('solver')!r}")
    nodes, lambda_min, lambda_max = _curvature_nodes(ds_gf)
    times = ds_gf.time.values
    covered = times <= nodes[-1]
    times, grad_norm = times[covered], ds_gf.grad_norm.values[covered]
    mu = cumulative_integral(nodes, -lambda_min, times)
    inner = cumulative_integral(times, np.exp(-mu))
    ratio = (eps - np.exp(mu[1:]) * initial_gap) / (np.exp(mu[1:]) * inner[1:])
    sharpness = np.maximum(np.abs(lambda_min), np.abs(lambda_max))
    beta = np.maximum.accumulate(sharpness)[np.searchsorted(nodes, times[1:], side="right") - 1]
    gamma = np.maximum.accumulate(grad_norm)[1:]
    eta_star = np.minimum.accumulate(ratio) / (beta * gamma)
    attrs = {"units": "1"}
    return xr.Dataset(
        {"eta_star": ("time", eta_star, {**attrs, "long_name": "Theorem 3 step-size bound eta*(t_tilde, eps)"}),
         "beta": ("time", beta, {**attrs, "long_name": "max Hessian spectral norm on the path up to t_tilde"}),
         "gamma": ("time", gamma, {**attrs, "long_name": "max gradient norm on the path up to t_tilde"})},
        coords={"time": ("time", times[1:], {"long_name": "t_tilde", "units": "1"})},
        attrs=_bound_attrs(ds_gf, "EC21 Theorem 3, Eq. 7", TRAJECTORY_ESTIMATE, eps=eps,
                           initial_gap=float(initial_gap)))


def _same_run_setup(ds_gf: xr.Dataset, ds_gd: xr.Dataset) -> None:
    for key in ("problem", "problem_params", "seed", "dtype"):
        if ds_gf.attrs.get(key) != ds_gd.attrs.get(key):
            raise ConfigError(f"the GF and GD datasets differ in {key}: {ds_gf.attrs.get(key)!r} vs "
                              f"{ds_gd.attrs.get(key)!r}")


def theorem2_bound(ds_gf: xr.Dataset, ds_gd: xr.Dataset) -> xr.Dataset:
    """EC21 Theorem 2 (Eq. 4) for a GD run: ‖θ(t) − θ̄(t)‖ ≤ e^{μ(t)} ∫_0^t e^{−μ(s)} δ(s) ds.

    θ̄ is the Euler polygon through the GD iterates θ_k (Eq. 3): θ̄(t) = θ_k − (t − t_k)∇f(θ_k) on
    [t_k, t_{k+1}], so its defect is δ(t) = ‖dθ̄/dt − (−∇f(θ̄(t)))‖ = ‖∇f(θ̄(t)) − ∇f(θ_k)‖.
    δ is evaluated at THEOREM2_NODES Gauss–Legendre nodes per step from the GD run's saved θ_k
    (``--save-params``, ``record_every`` 1) on the problem rebuilt from the attrs; μ(t) is the
    integral of −λmin measured on the GF run (which must have curvature covering the GD times).
    Both runs start from the same θ0 (same problem and seed), so the initial gap is 0.

    Returns ``theorem2_bound`` at the GD record times and, when the GF run saved θ at those
    times, the measured ``gd_gf_distance`` and ``tightness`` = bound / distance.
    """
    if ds_gd.attrs.get("solver") != "gd":
        raise ConfigError(f"Theorem 2 needs a GD dataset (solver gd) as the Euler polygon, got solver "
                          f"{ds_gd.attrs.get('solver')!r}")
    _require(ds_gd, ("theta",), "Theorem 2")
    if int(ds_gd.attrs.get("record_every", 0)) != 1:
        raise ConfigError(f"Theorem 2 needs every GD iterate: record the GD run with record_every=1, "
                          f"got {ds_gd.attrs.get('record_every')}")
    _same_run_setup(ds_gf, ds_gd)
    nodes, lambda_min, _ = _curvature_nodes(ds_gf)
    times = ds_gd.time.values
    if times[-1] > nodes[-1] * (1 + 1e-12):
        raise ConfigError(f"the GF curvature ends at t={nodes[-1]:g}, before the GD run's end t={times[-1]:g}")
    problem = problem_of(ds_gd)
    thetas = torch.as_tensor(ds_gd.theta.values, dtype=problem.dtype)
    gauss_nodes, gauss_weights = np.polynomial.legendre.leggauss(THEOREM2_NODES)
    fractions, weights = 0.5 * (gauss_nodes + 1), 0.5 * gauss_weights
    gradient = GradientField(problem).gradient

    increments = np.zeros(len(times))
    for k in range(len(times) - 1):
        h = times[k + 1] - times[k]
        g_k = gradient(thetas[k])
        s = times[k] + fractions * h
        defect = np.array([float(torch.linalg.vector_norm(gradient(thetas[k] - (f * h) * g_k) - g_k))
                           for f in fractions])
        increments[k + 1] = h * np.sum(weights * np.exp(-cumulative_integral(nodes, -lambda_min, s)) * defect)
    mu = cumulative_integral(nodes, -lambda_min, times)
    bound = np.exp(mu) * np.cumsum(increments)
    data = {"theorem2_bound": ("time", bound, {"long_name": "Theorem 2 bound on ||theta(t) - theta_bar(t)||",
                                               "units": "1"})}
    i_gd, i_gf = match_times(times, ds_gf.time.values)
    if "theta" in ds_gf.variables and i_gd.size == times.size:
        distance = np.linalg.norm(ds_gd.theta.values - ds_gf.theta.values[i_gf], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            tightness = np.where(distance > 0, bound / distance, np.nan)
        data["gd_gf_distance"] = ("time", distance, {"long_name": "measured ||theta_k - theta(k lr)||",
                                                     "units": "1"})
        data["tightness"] = ("time", tightness, {"long_name": "theorem2_bound / gd_gf_distance", "units": "1"})
    return xr.Dataset(data, coords={"time": ("time", times, {"long_name": "t = k lr", "units": "1"})},
                      attrs=_bound_attrs(ds_gd, "EC21 Theorem 2, Eq. 4", THEOREM2_QUADRATURE))


def corollary1_step_bound(curvature: GlobalCurvature, f0: float, eps: float, t_tilde: float,
                          initial_gap: float = 0.0) -> tuple[float, str]:
    """EC21 Corollary 1: (η bound, regime) from global β and m, f(θ(0)) = ``f0``, ε and t̃.

    η < c(ε − g)|m| if m < 0 (strongly convex), c(ε − g)/t̃ if m = 0 (convex), and
    c(ε − g e^{m t̃}) m / (e^{m t̃} − 1) if m > 0 (non-convex), with c = (√(2β³f0) + β²ε)^{−1},
    g = ``initial_gap``. The m > 0 case is Eq. 7 with m(·) ≡ m evaluated at its infimum t = t̃
    (with g = 0 it is c ε m / (e^{m t̃} − 1)). The corollary assumes f ≥ 0 (``curvature.nonnegative``).
    """
    eps = EPS.check(eps)
    t_tilde = replace(T_TILDE, default=...).check(t_tilde)
    beta, m = curvature.beta, curvature.m
    c = 1.0 / (math.sqrt(2 * beta ** 3 * max(f0, 0.0)) + beta ** 2 * eps)
    if m < 0:
        return c * (eps - initial_gap) * abs(m), "m < 0 (strongly convex)"
    if m == 0:
        return c * (eps - initial_gap) / t_tilde, "m = 0 (convex)"
    return c * (eps - initial_gap * math.exp(m * t_tilde)) * m / math.expm1(m * t_tilde), "m > 0 (non-convex)"


@dataclass(frozen=True)
class Corollary1Result:
    """Corollary 1's step-size bound η < ``eta`` from the problem's global β and m (``regime`` names the case).

    ``nonnegative``: whether f ≥ 0 holds, which the corollary assumes.
    """

    eta: float
    regime: str
    beta: float
    m: float
    nonnegative: bool


@dataclass(frozen=True)
class Theorem2Result:
    """Theorem 2 for one GD run: the bound at its last time ``t``; with the GF run's θ at the GD times,
    the largest measured ‖θ_k − θ(kη)‖, whether the bound holds at every time, and the (min, max) of
    bound / measured."""

    t: float
    bound: float
    max_distance: float | None
    holds: bool | None
    tightness: tuple[float, float] | None


@dataclass(frozen=True)
class BoundSummary:
    """EC21's bounds at one horizon t̃ for a gradient flow run with curvature (``bound_summary``).

    Theorem 3: ``eta_star``, ``beta``, ``gamma`` at t̃, the recorded μ(t̃) (``mu``) and how the
    constants were estimated (``estimate``); ``lr`` the run's step size. ``corollary1`` where the
    problem declares global curvature constants, ``theorem2`` where a GD run was given, and
    ``lambda_min_margins``: min over evaluated points of λmin − bound for each recorded λmin lower
    bound (``lemma2_bound``, ``prop2_bound``; ≥ 0 where the bound holds).
    """

    eps: float
    t_tilde: float
    eta_star: float
    beta: float
    gamma: float
    mu: float
    estimate: str
    lr: float
    corollary1: Corollary1Result | None
    theorem2: Theorem2Result | None
    lambda_min_margins: dict[str, float]

    @property
    def lr_below_eta_star(self) -> bool:
        return self.lr < self.eta_star


def bound_summary(ds_gf: xr.Dataset, eps: float, t_tilde: float | None = None, ds_gd: xr.Dataset | None = None,
                  *, t_tilde_name: str = "t_tilde") -> BoundSummary:
    """Theorems 3 and 2, Corollary 1 and the λmin bounds' margins for ``ds_gf`` at t̃ (EC21 Sections 3-4).

    ``t_tilde`` must lie in the recorded curvature's times t > 0 (default: its last); Theorem 3 is
    read at the last record time ≤ t̃. ``ds_gd``: a GD run for Theorem 2 (see ``theorem2_bound``).
    ``t_tilde_name`` is what a bad t̃'s ConfigError calls it (the CLI's flag).
    """
    bound3 = theorem3_step_bound(ds_gf, eps)
    first, last = float(bound3.time[0]), float(bound3.time[-1])
    horizon = replace(T_TILDE, name=t_tilde_name, bounds=Bounds(first, last),
                      requirement=f"lie in [{first:g}, {last:g}] (the recorded curvature)")
    t_tilde = horizon.check(t_tilde)
    t_tilde = last if t_tilde is None else t_tilde
    bound2 = theorem2_bound(ds_gf, ds_gd) if ds_gd is not None else None
    at = bound3.sel(time=t_tilde, method="pad")
    eta_star = float(at.eta_star)

    corollary1 = None
    curvature = problem_of(ds_gf).global_curvature()
    if curvature is not None:
        eta, regime = corollary1_step_bound(curvature, float(ds_gf.loss[0]), eps, float(at.time))
        corollary1 = Corollary1Result(eta, regime, curvature.beta, curvature.m, curvature.nonnegative)

    theorem2 = None
    if bound2 is not None:
        measured = "gd_gf_distance" in bound2
        theorem2 = Theorem2Result(
            float(bound2.time[-1]), float(bound2.theorem2_bound[-1]),
            float(bound2.gd_gf_distance.max()) if measured else None,
            bool(np.all(bound2.theorem2_bound.values >= bound2.gd_gf_distance.values)) if measured else None,
            (float(bound2.tightness.min()), float(bound2.tightness.max())) if measured else None)

    margins = {name: float((ds_gf.hessian_min_eig - ds_gf[name]).min()) for name in ("lemma2_bound", "prop2_bound")
               if name in ds_gf and np.isfinite(ds_gf[name].values).any()}
    return BoundSummary(eps=bound3.attrs["eps"], t_tilde=float(at.time), eta_star=eta_star,
                        beta=float(at.beta), gamma=float(at.gamma),
                        mu=float(ds_gf.curvature_integral.sel(time=float(at.time), method="nearest")),
                        estimate=bound3.attrs["estimate"], lr=float(ds_gf.attrs["lr"]), corollary1=corollary1,
                        theorem2=theorem2, lambda_min_margins=margins)


def _deep_linear_terms(problem, theta: torch.Tensor) -> tuple[int, float, float, list[float]]:
    """(n, √min(d0, dn), ‖∇φ(W_{n:1})‖_F, [‖W_j‖_spectral]) for a deep linear network at θ."""
    layers = problem.layers(theta)
    end_to_end = problem.end_to_end(theta)
    with torch.enable_grad():
        grad_phi = torch.func.grad(problem.end_to_end_loss)(end_to_end.detach())
    return (len(layers), math.sqrt(min(end_to_end.shape)), float(torch.linalg.matrix_norm(grad_phi)),
            [float(torch.linalg.matrix_norm(layer, ord=2)) for layer in layers])


def lemma2_bound(problem, theta: torch.Tensor) -> float:
    """EC21 Lemma 2 (Eq. 13):

    λmin(∇²f(θ)) ≥ −(n−1)√min(d0,dn) ‖∇φ(W_{n:1})‖_F max_{|J|=n−2} Π_{j∈J} ‖W_j‖.

    The max over subsets of n − 2 layers is the product of the n − 2 largest spectral norms.
    ``problem`` exposes ``layers``, ``end_to_end`` and ``end_to_end_loss`` (φ) like deep_linear.
    """
    n, root, grad_norm, norms = _deep_linear_terms(problem, theta)
    return -(n - 1) * root * grad_norm * math.prod(sorted(norms)[2:])


def prop2_bound(problem, theta: torch.Tensor, eps: float) -> float:
    """EC21 Proposition 2 (Eq. 14), for θ on a GF trajectory from θ_s with ‖θ_s‖ ≤ ε ≤ 1/(2n):

    λmin ≥ −(n−1)√min(d0,dn) ‖∇φ(W_{n:1})‖_F ‖W_{n:1}‖^{1−2/n} − c ε^{1−2/n},
    c = 4n(n−1)/(4n)^{2/n} √min(d0,dn) ‖∇φ(W_{n:1})‖_F max{1, max_j ‖W_j‖}^{2(n−2)}.
    NaN when ε is outside (0, 1/(2n)] (the proposition does not apply).
    """
    n, root, grad_norm, norms = _deep_linear_terms(problem, theta)
    if not 0 < eps <= 1 / (2 * n):
        return math.nan
    end_to_end_norm = float(torch.linalg.matrix_norm(problem.end_to_end(theta), ord=2))
    c = 4 * n * (n - 1) / (4 * n) ** (2 / n) * root * grad_norm * max(1.0, *norms) ** (2 * (n - 2))
    return -(n - 1) * root * grad_norm * end_to_end_norm ** (1 - 2 / n) - c * eps ** (1 - 2 / n)


class LambdaMinBounds(Recorder):
    """Records ``lemma2_bound`` and ``prop2_bound`` (with ε = ‖θ0‖, the tightest allowed) at every point."""

    def __init__(self, problem) -> None:
        self.problem = problem

    def variables(self) -> Sequence[Variable]:
        return (Variable("lemma2_bound", "EC21 Lemma 2 (Eq. 13) lower bound on lambda_min(hess f(theta))", "1"),
                Variable("prop2_bound", "EC21 Proposition 2 (Eq. 14) lower bound on lambda_min with "
                                        "eps = ||theta0||; valid on gradient flow paths, NaN if eps > 1/(2n)", "1"))

    def record(self, point: RecordPoint) -> Mapping[str, Any]:
        eps = float(torch.linalg.vector_norm(point.theta0))
        return {"lemma2_bound": lemma2_bound(self.problem, point.theta),
                "prop2_bound": prop2_bound(self.problem, point.theta, eps)}
