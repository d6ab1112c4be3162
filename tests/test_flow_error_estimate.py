"""The flow option error_estimate: a companion solve at tolerances / 100 estimates the flow's global error."""
import numpy as np
import pytest
import scipy.linalg

import gfbench
from gfbench.compare import summary_table
from gfbench.ode import ERROR_ESTIMATE_FACTOR
from gfbench.params import ConfigError

ATTRS = ("nfe", "n_steps_accepted", "n_steps_rejected", "n_hvp")


def _quadratic():
    return gfbench.get_problem("quadratic", dim=12, lambda_min=0.01, lambda_max=2.0)


def _gf(problem, lr, steps, record_every, **options):
    return gfbench.run(problem, gfbench.get_solver("gf", **options), lr=lr, steps=steps, record_every=record_every,
                       save_params=True, progress=False)


def test_the_companion_leaves_the_main_solve_untouched():
    plain = _gf(_quadratic(), 0.05, 100, 10)
    estimated = _gf(_quadratic(), 0.05, 100, 10, error_estimate=True)
    assert "flow_error_estimate" not in plain and not any(key.startswith("flow_error") for key in plain.attrs)
    np.testing.assert_array_equal(estimated.theta.values, plain.theta.values)
    np.testing.assert_array_equal(estimated.loss.values, plain.loss.values)
    assert all(estimated.attrs[key] == plain.attrs[key] for key in ATTRS)
    # The companion's gradients are the run's too, and recording costs no more than without it.
    assert estimated.attrs["n_grad_evals"] == plain.attrs["n_grad_evals"] + estimated.attrs["flow_error_nfe"]
    assert estimated.attrs["flow_error_rtol"] == pytest.approx(1e-9 / ERROR_ESTIMATE_FACTOR, rel=1e-15)
    assert estimated.attrs["flow_error_atol"] == pytest.approx(1e-11 / ERROR_ESTIMATE_FACTOR, rel=1e-15)
    assert estimated.flow_error_estimate.attrs["units"] == "1" and estimated.flow_error_estimate.values[0] == 0


def test_estimate_matches_the_true_error_on_the_quadratic_and_shrinks_with_rtol():
    problem = _quadratic()
    a, star = problem.hessian().numpy(), problem.minimizer().numpy()
    offset0 = problem.init(0).numpy() - star
    true_errors, estimates = [], []
    for rtol in (1e-5, 1e-7):
        ds = _gf(problem, 0.05, 200, 10, rtol=rtol, atol=rtol * 1e-2, error_estimate=True)
        exact = np.stack([star + scipy.linalg.expm(-t * a) @ offset0 for t in ds.time.values])
        true = np.linalg.norm(ds.theta.values - exact, axis=1)[1:]
        estimate = ds.flow_error_estimate.values[1:]
        ratio = estimate / true
        assert ratio.min() >= 1 / 3 and ratio.max() <= 3, ratio  # measured 0.96 ... 1.02 with dopri5
        true_errors.append(true.max())
        estimates.append(estimate.max())
    assert true_errors[1] < true_errors[0] / 10 and estimates[1] < estimates[0] / 10, (true_errors, estimates)


def test_estimate_is_far_below_the_gd_gf_gap_on_deep_linear_and_compare_shows_it(tmp_path):
    common = dict(lr=0.01, steps=200, record_every=20, save_params=True, progress=False)
    gd = gfbench.run("deep_linear", "gd", **common)
    gf = gfbench.run("deep_linear", gfbench.get_solver("gf", error_estimate=True), **common)
    comparison = gfbench.compare([gd], ref=gf)
    gap = comparison.distance.values[0, 1:]
    estimate = comparison.ref_flow_error_estimate.values[1:]
    assert (estimate <= 1e-3 * gap).all(), estimate / gap  # measured ≤ 2.3e-5 of the gap
    assert "flow_error_estimate" not in comparison  # GD carries none
    table = summary_table(comparison).splitlines()
    assert table[1].endswith("flow err est.")
    assert float(table[2].split()[-1]) == pytest.approx(float(estimate[-1]), rel=1e-3)

    # The estimate of a compared flow run is carried per run and added to the reference's.
    both = gfbench.compare([gd, gf], ref=gd)
    np.testing.assert_array_equal(both.flow_error_estimate.sel(run=both.run.values[1]), gf.flow_error_estimate)
    rows = summary_table(both).splitlines()
    assert rows[2].split()[-1] == "-"
    assert float(rows[3].split()[-1]) == pytest.approx(float(gf.flow_error_estimate[-1]), rel=1e-3)

    gfbench.save(gf, tmp_path / "gf.nc")  # the variable survives a file round trip, as compare reads it
    assert "ref_flow_error_estimate" in gfbench.compare([gd], ref=tmp_path / "gf.nc")


def test_filippov_companion_has_its_own_switching_state():
    problem = gfbench.get_problem("ntk", width=20, n=5)
    runs = [gfbench.run(problem, gfbench.get_solver("gf", kinks="events", rtol=1e-7, atol=1e-9, error_estimate=estimate),
                        lr=0.01, steps=200, record_every=50, save_params=True, progress=False)
            for estimate in (False, True)]
    plain, ds = runs
    np.testing.assert_array_equal(ds.theta.values, plain.theta.values)
    assert ds.attrs["n_crossings"] == plain.attrs["n_crossings"] > 0 and ds.attrs["n_sliding_entries"] > 0
    assert 0 < ds.flow_error_estimate.values[-1] < 1e-5


def test_central_has_no_error_estimate():
    with pytest.raises(ConfigError, match="error_estimate"):
        gfbench.get_solver("central", error_estimate=True)
