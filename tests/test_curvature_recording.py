"""Curvature recorded along runs: values, NaN layout, μ(t), η·λmax, attrs, deep-linear bounds."""
import numpy as np
import pytest
import torch

import gfbench
from gfbench.curvature import CurvatureRecorder, cumulative_integral
from gfbench.curvature.recorder import FLOAT32_MIN_DIM


def test_cumulative_integral_is_exact_for_piecewise_linear_values():
    times = np.array([0.0, 1.0, 3.0, 4.0])
    values = np.array([1.0, 3.0, -1.0, 0.0])
    query = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 5.0])
    # hand integrals of the broken line: 0, ∫0^.5 (1+2s) = 0.75, 2, 2 + ∫0^1 (3−2s) = 4, 2 + 2 + (−0.5) = 3.5
    expected = [0.0, 0.75, 2.0, 4.0, 3.5, np.nan]
    assert np.allclose(cumulative_integral(times, values, query), expected, rtol=0, atol=1e-14, equal_nan=True)


@pytest.mark.parametrize("solver", ["gd", "gf"])
def test_indefinite_quadratic_curvature_and_exact_integral(solver):
    problem = gfbench.get_problem("quadratic", dim=30, lambda_min=-0.2, lambda_max=1.5)
    lr = 0.1
    ds = gfbench.run(problem, solver, lr=lr, steps=50, record_every=2, curvature_every=3, progress=False)
    gfbench.validate_dataset(ds)
    evaluated = np.isfinite(ds.hessian_min_eig.values)
    indices = np.flatnonzero(evaluated)
    assert list(indices) == [0, 3, 6, 9, 12, 15, 18, 21, 24, 25]  # every 3rd record point and the last
    assert np.isnan(ds.hessian_max_eig.values[~evaluated]).all()
    assert np.allclose(ds.hessian_min_eig.values[evaluated], -0.2, rtol=1e-6, atol=0)
    assert np.allclose(ds.hessian_max_eig.values[evaluated], 1.5, rtol=1e-6, atol=0)
    assert np.allclose(ds.curvature_integral.values, 0.2 * ds.time.values, rtol=1e-6, atol=0)
    assert ds.curvature_integral.values[0] == 0.0
    assert np.allclose(ds.sharpness_times_lr.values[evaluated], lr * 1.5, rtol=1e-6)
    assert ds.hessian_eig_residual.values[evaluated].max() <= 1e-6 * 1.5
    assert ds.attrs["curvature_evaluations"] == 10 and ds.attrs["curvature_n_hvp"] > 0
    assert ds.attrs["curvature_unconverged"] == 0 and ds.attrs["curvature_wall_time_s"] > 0
    assert ds.attrs["n_grad_evals"] == gfbench.run(problem, solver, lr=lr, steps=50, record_every=2,
                                                   progress=False).attrs["n_grad_evals"]  # HVPs are not counted there


def test_k_extreme_eigenvalues_over_time_and_dense_recorder(tmp_path):
    problem = gfbench.get_problem("deep_linear", input_dim=5, width=6, output_dim=2)
    ds = gfbench.run(problem, "gf", lr=0.1, steps=40, record_every=4, curvature_every=2, curvature_k=3,
                     curvature_tol=1e-9, save_params=True, progress=False)
    assert ds.hessian_eigs.dims == ("time", "eig") and ds.sizes["eig"] == 6
    dense = gfbench.run(problem, "gf", lr=0.1, steps=40, record_every=4, progress=False, recorders=[
        CurvatureRecorder(problem.dim, 0.1, every=2, k=3, eigensolver="dense", final_index=10)])
    for index in np.flatnonzero(np.isfinite(ds.hessian_min_eig.values)):
        theta = torch.as_tensor(ds.theta.values[index])
        exact = torch.linalg.eigvalsh(torch.func.hessian(problem.loss)(theta)).numpy()
        expected = np.concatenate([exact[:3], exact[-3:]])
        scale = np.abs(exact).max()
        assert np.allclose(ds.hessian_eigs.values[index], expected, rtol=0, atol=1e-8 * scale)
        assert np.allclose(dense.hessian_eigs.values[index], expected, rtol=0, atol=1e-12 * scale)
    gfbench.save(ds, tmp_path / "c.nc")
    loaded = gfbench.load(tmp_path / "c.nc")
    assert np.array_equal(loaded.hessian_eigs.values, ds.hessian_eigs.values, equal_nan=True)


def test_lemma2_and_prop2_bound_lambda_min_along_deep_linear_flow():
    # init_scale 1e-4 gives ||theta0|| = sqrt(3) * 1e-4^(1/3) = 0.080 <= 1/(2n) = 1/6: Proposition 2 applies
    problem = gfbench.get_problem("deep_linear", init_scale=1e-4)
    ds = gfbench.run(problem, "gf", lr=0.5, steps=80, record_every=2, curvature_every=1, curvature_tol=1e-8,
                     progress=False)
    lambda_min = ds.hessian_min_eig.values
    tolerance = 1e-8 * np.abs(ds.hessian_max_eig.values)  # the Lanczos accuracy
    assert np.isfinite(ds.prop2_bound.values).all()
    assert (ds.lemma2_bound.values <= lambda_min + tolerance).all()
    assert (ds.prop2_bound.values <= lambda_min + tolerance).all()
    assert lambda_min.min() < -0.5 and ds.loss.values[-1] < 1e-6  # a real escape from a saddle and convergence
    # Lemma 2 is tight at the near-zero start: λmin ≈ −(n−1)‖∇φ‖ ... within a factor 2
    assert lambda_min[0] / ds.lemma2_bound.values[0] > 0.4


def test_prop2_is_nan_outside_its_conditions():
    ds = gfbench.run("deep_linear", "gf", lr=0.1, steps=4, curvature_every=1, progress=False)
    assert np.isnan(ds.prop2_bound.values).all()  # default init: ||theta0|| = 0.80 > 1/6
    assert np.isfinite(ds.lemma2_bound.values).all()


@pytest.mark.parametrize("kwargs,message", [
    ({"curvature_every": 0}, "curvature_every must be an integer >= 1"),
    ({"curvature_every": 1.5}, "curvature_every must be an integer >= 1"),
    ({"curvature_every": 1, "curvature_k": 0}, "curvature_k must be 1 or an integer with 2k <= d = 5, got 0"),
    ({"curvature_every": 1, "curvature_k": 3}, "2k <= d = 5, got 3"),
    ({"curvature_every": 1, "curvature_tol": 0.0}, "curvature_tol must be a number in (0, 1), got 0.0"),
    ({"curvature_every": 1, "curvature_tol": "1e-6"}, "curvature_tol must be a number in (0, 1)"),
])
def test_bad_curvature_options_raise_before_running(kwargs, message):
    problem = gfbench.get_problem("quadratic", dim=5)
    with pytest.raises(gfbench.ConfigError) as error:
        gfbench.run(problem, "gd", lr=0.1, steps=3, progress=False, **kwargs)
    assert message in str(error.value)


def test_curvature_recorder_checks_its_options():
    with pytest.raises(gfbench.ConfigError, match="eigensolver 'dense' needs d <= 2000, got d=3000"):
        CurvatureRecorder(3000, 0.1, eigensolver="dense")
    with pytest.raises(gfbench.ConfigError, match="eigensolver must be one of lanczos, dense"):
        CurvatureRecorder(10, 0.1, eigensolver="arpack")


def test_unconverged_eigensolves_are_stored_as_nan_counted_and_warned():
    problem = gfbench.get_problem("quadratic", dim=50, lambda_min=0.1, lambda_max=2.0)
    recorder = CurvatureRecorder(problem.dim, 0.1, every=2, max_iter=3)  # 3 products cannot reach 1e-6
    with pytest.warns(RuntimeWarning, match=r"missed curvature_tol=1e-06 after 3 products .* stored as NaN"):
        ds = gfbench.run(problem, "gd", lr=0.1, steps=4, progress=False, recorders=[recorder])
    assert np.isnan(ds.hessian_min_eig.values).all() and np.isnan(ds.hessian_max_eig.values).all()
    evaluated = [0, 2, 4]
    assert (ds.hessian_eig_residual.values[evaluated] > 1e-6 * 2.0).all()  # the miss stays visible
    assert ds.attrs["curvature_unconverged"] == 3 == ds.attrs["curvature_evaluations"]
    assert np.isnan(ds.curvature_integral.values).all()


def test_float32_products_certified_in_float64_give_the_float64_eigenvalues():
    problem = gfbench.get_problem("deep_linear", input_dim=5, width=6, output_dim=2, init="gaussian", init_std=0.5)
    runs = {float32: gfbench.run(problem, "gd", lr=0.05, steps=20, record_every=5, save_params=True, progress=False,
                                 recorders=[CurvatureRecorder(problem.dim, 0.05, float32=float32, final_index=4)])
            for float32 in (True, False)}
    assert runs[True].attrs["curvature_float32_products"] == 1 and runs[False].attrs["curvature_float32_products"] == 0
    for index in range(5):
        exact = torch.linalg.eigvalsh(torch.func.hessian(problem.loss)(torch.as_tensor(runs[True].theta.values[index])))
        scale = float(exact.abs().max())
        for ds in runs.values():
            assert abs(ds.hessian_min_eig.values[index] - float(exact[0])) <= 1e-6 * scale
            assert abs(ds.hessian_max_eig.values[index] - float(exact[-1])) <= 1e-6 * scale
            assert ds.hessian_eig_residual.values[index] <= 1e-6 * scale
    assert not CurvatureRecorder(problem.dim, 0.05, float32=True, tol=1e-9).float32  # below float32's reach
    assert [CurvatureRecorder(dim, 0.05).float32 for dim in (FLOAT32_MIN_DIM - 1, FLOAT32_MIN_DIM)] == [False, True]
