"""GD and GF on the quadratic against their closed forms, and the O(η) gap between them."""
import numpy as np
import pytest
import scipy.linalg

import gfbench


def _closed_forms(problem, theta0, times, lr):
    a = problem.hessian().numpy()
    star = problem.minimizer().numpy()
    x0 = theta0.numpy() - star
    steps = np.rint(times / lr).astype(int)
    gd = np.stack([star + np.linalg.matrix_power(np.eye(len(star)) - lr * a, k) @ x0 for k in steps])
    gf = np.stack([star + scipy.linalg.expm(-t * a) @ x0 for t in times])
    return gd, gf


def _relative(x, ref):
    return np.max(np.linalg.norm(x - ref, axis=1) / np.linalg.norm(ref, axis=1))


@pytest.mark.parametrize("lambda_min", [0.01, -0.2])
def test_gd_equals_closed_form(lambda_min):
    problem = gfbench.get_problem("quadratic", dim=12, lambda_min=lambda_min, lambda_max=2.0)
    ds = gfbench.run(problem, "gd", lr=0.05, steps=200, seed=3, save_params=True, progress=False)
    gd, _ = _closed_forms(problem, problem.init(3), ds.time.values, 0.05)
    assert _relative(ds.theta.values, gd) <= 1e-12


@pytest.mark.parametrize("lambda_min", [0.01, -0.2])
def test_gf_equals_matrix_exponential(lambda_min):
    problem = gfbench.get_problem("quadratic", dim=12, lambda_min=lambda_min, lambda_max=2.0)
    ds = gfbench.run(problem, "gf", lr=0.05, steps=200, seed=3, save_params=True, progress=False)
    _, gf = _closed_forms(problem, problem.init(3), ds.time.values, 0.05)
    assert _relative(ds.theta.values, gf) <= 1e-8
    assert ds.attrs["nfe"] > 0 and ds.attrs["n_steps_accepted"] > 0


def test_gf_error_falls_with_tolerance():
    problem = gfbench.get_problem("quadratic", dim=12, lambda_min=0.01, lambda_max=2.0)
    errors = []
    for rtol in (1e-5, 1e-7, 1e-9, 1e-11):
        solver = gfbench.get_solver("gf", rtol=rtol, atol=rtol * 1e-2)
        ds = gfbench.run(problem, solver, lr=0.05, steps=200, save_params=True, record_every=10, progress=False)
        _, gf = _closed_forms(problem, problem.init(0), ds.time.values, 0.05)
        errors.append(_relative(ds.theta.values, gf))
    assert all(later < earlier / 5 for earlier, later in zip(errors, errors[1:])), errors


def test_gd_gf_gap_is_first_order_in_lr():
    """max_k ‖θ_k − θ(kη)‖ over t ∈ [0, T] shrinks like η: observed order 1.00 ± 0.05."""
    problem = gfbench.get_problem("quadratic", dim=10, lambda_min=0.1, lambda_max=1.0)
    horizon, gaps = 4.0, []
    lrs = [0.1 / 2 ** i for i in range(5)]
    for lr in lrs:
        steps = round(horizon / lr)
        gd = gfbench.run(problem, "gd", lr=lr, steps=steps, save_params=True, progress=False)
        gf = gfbench.run(problem, "gf", lr=lr, steps=steps, save_params=True, progress=False)
        gaps.append(float(np.linalg.norm(gd.theta - gf.theta, axis=1).max()))
    orders = np.log2(np.array(gaps[:-1]) / np.array(gaps[1:]))
    assert np.all(np.abs(orders - 1.0) <= 0.05), orders
