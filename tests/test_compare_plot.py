"""compare against closed-form distances; plot checked on the figure object."""
import numpy as np
import pytest
import xarray as xr

import gfbench
from gfbench.reproduce import reproduce_fig1


@pytest.fixture(scope="module")
def quadratic_runs():
    problem = gfbench.get_problem("quadratic", dim=8, lambda_min=0.05, lambda_max=1.5)
    runs = {lr: gfbench.run(problem, "gd", lr=lr, steps=round(6 / lr), seed=1, save_params=True, progress=False)
            for lr in (0.2, 0.1, 0.05)}
    return problem, runs


def test_compare_equals_closed_form_distance(quadratic_runs):
    problem, runs = quadratic_runs
    comparison = gfbench.compare([runs[0.1], runs[0.05]], ref=runs[0.2])
    a, x0 = problem.hessian().numpy(), problem.init(1).numpy() - problem.minimizer().numpy()
    assert list(comparison.run.values) == ["gd lr=0.1", "gd lr=0.05"]
    np.testing.assert_allclose(comparison.time.values, np.arange(31) * 0.2, rtol=1e-12)
    eye = np.eye(8)
    for k, t in enumerate(comparison.time.values):
        ref = np.linalg.matrix_power(eye - 0.2 * a, k) @ x0
        for run, lr in (("gd lr=0.1", 0.1), ("gd lr=0.05", 0.05)):
            other = np.linalg.matrix_power(eye - lr * a, round(t / lr)) @ x0
            expected = np.linalg.norm(other - ref)
            assert float(comparison.distance.sel(run=run)[k]) == pytest.approx(expected, rel=1e-9, abs=1e-14)
            if k:
                travel = np.linalg.norm(ref - x0)
                assert float(comparison.relative_distance.sel(run=run)[k]) == pytest.approx(expected / travel,
                                                                                           rel=1e-9)
    assert np.isnan(comparison.relative_distance.values[:, 0]).all()
    loss = runs[0.05].loss.values[::4] - runs[0.2].loss.values
    np.testing.assert_allclose(comparison.loss_difference.sel(run="gd lr=0.05").values, loss, rtol=1e-12)


def test_compare_rejects_mismatched_runs(quadratic_runs):
    problem, runs = quadratic_runs
    other_seed = gfbench.run(problem, "gd", lr=0.1, steps=10, seed=2, save_params=True, progress=False)
    with pytest.raises(gfbench.ConfigError, match="seed"):
        gfbench.compare([other_seed], ref=runs[0.2])
    no_theta = gfbench.run(problem, "gd", lr=0.1, steps=10, seed=1, progress=False)
    with pytest.raises(gfbench.ConfigError, match="--save-params"):
        gfbench.compare([no_theta], ref=runs[0.2])
    off_grid = gfbench.run(problem, "gd", lr=0.07, steps=2, seed=1, save_params=True, progress=False)
    off_grid = off_grid.isel(time=slice(1, None))
    with pytest.raises(gfbench.ConfigError, match="initial point|shares no point"):
        gfbench.compare([off_grid], ref=runs[0.2])


def test_compare_and_plot_from_the_cli(quadratic_runs, run_cli, tmp_path):
    _, runs = quadratic_runs
    for lr, ds in runs.items():
        gfbench.save(ds, tmp_path / f"gd{lr}.nc")
    result = run_cli("compare", "gd0.2.nc", "gd0.1.nc", "gd0.05.nc", "--out", "cmp.nc")
    assert result.returncode == 0, result.stderr
    assert "reference: gd0.2.nc" in result.stdout and "gd0.05.nc" in result.stdout
    comparison = gfbench.load(tmp_path / "cmp.nc")
    assert comparison.sizes == {"run": 2, "time": 31}
    plotted = run_cli("plot", "cmp.nc", "--logy")
    assert plotted.returncode == 0, plotted.stderr
    assert (tmp_path / "cmp-distance.png").stat().st_size > 10_000
    bad = run_cli("plot", "gd0.1.nc", "--var", "hessian_min_eig")
    assert bad.returncode == 2 and "available: loss, grad_norm, distance_from_init" in bad.stderr
    missing = run_cli("compare", "gd0.1.nc", "nope.nc")
    assert missing.returncode == 2 and "no such dataset file: 'nope.nc'" in missing.stderr


def test_plot_figure_has_labelled_axes_and_one_line_per_run(quadratic_runs):
    _, runs = quadratic_runs
    figure = gfbench.plot(list(runs.values()), "grad_norm", logy=True)
    (axes,) = figure.axes
    assert axes.get_xlabel() == "gradient flow time t = step * lr"
    assert axes.get_ylabel() == "gradient norm ||grad f(theta)||"
    assert axes.get_yscale() == "log" and axes.get_title().startswith("quadratic")
    assert [line.get_label() for line in axes.get_lines()] == ["gd lr=0.2", "gd lr=0.1", "gd lr=0.05"]
    np.testing.assert_allclose(axes.get_lines()[1].get_ydata(), runs[0.1].grad_norm.values)


def test_reproduce_fig1_end_to_end_at_tiny_scale(run_cli, tmp_path):
    """The CLI path on small problems (the MNIST nets are exercised where their data is available)."""
    result = run_cli("reproduce", "fig1", "--net", "deep_linear", "--ratios", "2,4", "--steps", "200",
                     "--lr", "0.01", "--out", "fig", "--quiet")
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "fig"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["deep_linear-comparison.nc", "deep_linear-gd-eta0.nc", "deep_linear-gd-eta0_2.nc",
                     "deep_linear-gd-eta0_4.nc", "deep_linear-gf.nc", "fig1.png", "summary.txt"]
    comparison = gfbench.load(folder / "deep_linear-comparison.nc")
    assert list(comparison.run.values) == ["gd lr=eta0/2", "gd lr=eta0/4", "gf"]
    assert comparison.sizes["time"] == 101
    # GD with eta0/r approaches GF as r grows: the drift from eta0 grows towards the GF one, and the
    # gap to GF shrinks like eta0/r (first order).
    final = comparison.distance.isel(time=-1)
    assert float(final.sel(run="gd lr=eta0/2")) < float(final.sel(run="gd lr=eta0/4")) < float(final.sel(run="gf"))
    runs = {name: gfbench.load(folder / f"deep_linear-{name}.nc") for name in ("gd-eta0_2", "gd-eta0_4", "gf")}
    gaps = [float(np.linalg.norm(runs[name].theta[-1] - runs["gf"].theta[-1])) for name in ("gd-eta0_2", "gd-eta0_4")]
    assert gaps[0] / gaps[1] == pytest.approx(2.0, rel=0.05)
    assert "deep_linear" in (folder / "summary.txt").read_text() and "gd lr=eta0/4" in result.stdout
    bad = run_cli("reproduce", "fig1", "--net", "resnet", "--out", "x")
    assert bad.returncode == 2 and "unknown net 'resnet'" in bad.stderr and not (tmp_path / "x").exists()


def test_reproduce_fig1_resume_reuses_only_matching_completed_runs(tmp_path):
    settings = dict(nets=["deep_linear"], ratios=[2], steps=100, lr=0.01, progress=False)
    first = reproduce_fig1(tmp_path, **settings)
    created = {p.name: gfbench.load(p).attrs["created"] for p in tmp_path.glob("deep_linear-*-*.nc")}
    stamp = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.nc")}
    # Corrupt the eta0/2 run's file: resume must run it again; a changed GF tolerance must rerun GF.
    (tmp_path / "deep_linear-gd-eta0_2.nc").write_bytes(b"not netcdf")
    again = reproduce_fig1(tmp_path, **settings, gf_options={"rtol": 1e-7, "atol": 1e-9}, resume=True)
    rerun = {p.name for p in tmp_path.glob("deep_linear-*.nc") if p.stat().st_mtime_ns != stamp.get(p.name)}
    assert rerun == {"deep_linear-gd-eta0_2.nc", "deep_linear-gf.nc", "deep_linear-comparison.nc"}
    assert gfbench.load(tmp_path / "deep_linear-gd-eta0.nc").attrs["created"] == created["deep_linear-gd-eta0.nc"]
    before, after = first.runs["deep_linear"], again.runs["deep_linear"]
    assert after["gf"].attrs["solver_options"] != before["gf"].attrs["solver_options"]
    xr.testing.assert_identical(after["gd lr=eta0"], before["gd lr=eta0"])
    np.testing.assert_array_equal(after["gd lr=eta0/2"].theta, before["gd lr=eta0/2"].theta)
