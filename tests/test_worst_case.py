"""worst_case: closed forms against recorded runs, its curvature, and EC21 Corollary 1's step-size bound."""
import math

import numpy as np
import pytest
import torch

import gfbench

EPSILON = 1e-4


@pytest.fixture(scope="module")
def problem():
    return gfbench.get_problem("worst_case", dim=3)


@pytest.fixture(scope="module")
def theta0(problem):
    return problem.init(0)


def test_recorded_gd_and_gf_equal_the_closed_forms(problem, theta0):
    lr, steps = 0.01, 500
    gd = gfbench.run(problem, "gd", lr=lr, steps=steps, record_every=50, save_params=True, progress=False)
    gf = gfbench.run(problem, "gf", lr=lr, steps=steps, record_every=50, save_params=True, progress=False)
    k = torch.from_numpy(gd.step.values.copy())
    gd_exact = problem.gd_solution(k, lr, theta0).numpy()
    gf_exact = problem.gf_solution(k * lr, theta0).numpy()
    assert np.abs(gd.theta.values - gd_exact).max() <= 1e-14 * np.abs(gd_exact).max()
    assert np.abs(gf.theta.values - gf_exact).max() <= 1e-8 * np.abs(gf_exact).max()
    assert np.abs(gd.theta.values - gf.theta.values).max() > 1e3 * 1e-8 * np.abs(gf_exact).max()


def test_gap_grows_like_exp_mt(problem, theta0):
    lr = 0.01
    ds = gfbench.run(problem, "gd", lr=lr, steps=500, record_every=50, save_params=True, progress=False)
    t = ds.time.values[4:].copy()
    gap = np.linalg.norm(ds.theta.values[4:] - problem.gf_solution(torch.from_numpy(t), theta0).numpy(), axis=1)
    # θ_1 gap = |x0| (e^{mt} − (1 + η)^{t/η}) ≈ |x0| e^{mt} ηt/2 for m = 1 (t ≥ 2, where the convex
    # coordinates' O(|x0| η t e^{-t}) share has died out).
    predicted = abs(float(theta0[0])) * np.exp(t) * lr * t / 2
    assert np.all(np.abs(gap / predicted - 1) < 0.03)
    slope = np.polyfit(t, np.log(gap / t), 1)[0]
    assert abs(slope - problem.params["m"]) < 0.02


def test_hessian_has_lambda_min_minus_m_on_the_band_and_above_everywhere(problem, theta0):
    m = problem.params["m"]
    for t in (0.0, 2.0, 5.0, 6.5):
        point = problem.gf_solution(t, theta0)[0]
        eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(problem.loss, point))
        assert abs(float(eigenvalues[0]) + m) < 1e-12
    generator = torch.Generator().manual_seed(1)
    points = 4 * torch.randn(200, 3, generator=generator, dtype=torch.float64)
    for point in points:
        eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(problem.loss, point))
        assert float(eigenvalues[0]) >= -m - 1e-12 and float(eigenvalues[-1]) <= problem.smoothness + 1e-12
        assert float(problem.loss(point)) >= 0.0
    a = problem.params["band"]
    assert float(problem.loss(torch.tensor([3 * a, 0.0, 0.0], dtype=torch.float64))) == pytest.approx(0.0, abs=1e-15)
    # C²: g'' has no jump at the joints |x| = a and 2a (one-sided second differences agree).
    g, h = problem.concave_part, 1e-4
    for joint in (a, 2 * a):
        x = torch.tensor(joint, dtype=torch.float64)
        left = (g(x) - 2 * g(x - h) + g(x - 2 * h)) / h ** 2
        right = (g(x + 2 * h) - 2 * g(x + h) + g(x)) / h ** 2
        assert abs(float(left - right)) < 1e-3


def test_threshold_step_size_shrinks_like_exp_minus_mt_and_respects_corollary_1(problem, theta0):
    horizons = np.arange(1.0, 7.0)
    measured = np.array([problem.threshold_step_size(t, EPSILON, theta0) for t in horizons])
    bound = np.array([problem.step_size_bound(t, EPSILON, theta0) for t in horizons])
    assert np.all(measured > bound)  # Corollary 1 is sufficient: the true threshold lies above it
    # Small-η asymptotics: η* t e^{mt} → 2ε/|θ_1(0)| (m = 1).
    limit = 2 * EPSILON / abs(float(theta0[0]))
    assert np.all(np.abs(measured[1:] * horizons[1:] * np.exp(horizons[1:]) / limit - 1) < 0.03)
    slope = np.polyfit(horizons, np.log(measured * horizons), 1)[0]
    assert abs(slope + problem.params["m"]) < 0.05
    assert abs(np.polyfit(horizons, np.log(bound), 1)[0] + problem.params["m"]) < 0.1


@pytest.mark.parametrize("factor, within", [(0.5, True), (2.0, False)])
def test_real_gd_runs_confirm_the_threshold(problem, theta0, factor, within):
    horizon = 3.0
    lr = factor * problem.threshold_step_size(horizon, EPSILON, theta0)
    steps = int(math.floor(horizon / lr))
    ds = gfbench.run(problem, "gd", lr=lr, steps=steps, save_params=True, progress=False)
    exact = problem.gf_solution(torch.from_numpy(ds.time.values.copy()), theta0).numpy()
    gap = np.linalg.norm(ds.theta.values - exact, axis=1).max()
    assert (gap <= EPSILON) == within


def test_closed_forms_refuse_to_leave_the_band(problem, theta0):
    with pytest.raises(ValueError, match="t_exit"):
        problem.gf_solution(7.0, theta0)
    with pytest.raises(ValueError, match="leaves the band"):
        problem.gd_solution(800, 0.01, theta0)
