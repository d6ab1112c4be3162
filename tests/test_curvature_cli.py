"""``gfbench run --curvature-every`` and ``gfbench bound`` from the command line, and their bad inputs."""
import numpy as np
import pytest

import gfbench
import gfbench.cli
import gfbench.theory

QUADRATIC = ("--problem", "quadratic", "--param", "dim=8", "--param", "lambda_min=0.1", "--lr", "0.1",
             "--steps", "30", "--quiet")


def test_run_with_curvature_records_it(run_cli, tmp_path):
    out = tmp_path / "gf.nc"
    result = run_cli("run", *QUADRATIC, "--solver", "gf", "--curvature-every", "4", "--curvature-k", "2",
                     "--curvature-tol", "1e-9", "--out", str(out))
    assert result.returncode == 0, result.stderr
    ds = gfbench.load(out)
    gfbench.validate_dataset(ds)
    problem = gfbench.get_problem("quadratic", dim=8, lambda_min=0.1)
    evaluated = np.isfinite(ds.hessian_min_eig.values)
    assert list(np.flatnonzero(evaluated)) == [0, 4, 8, 12, 16, 20, 24, 28, 30]
    expected = problem.eigenvalues.numpy()[[0, 1, -2, -1]]
    assert np.allclose(ds.hessian_eigs.values[evaluated], expected, rtol=1e-8, atol=0)
    assert ds.attrs["curvature_every"] == 4 and ds.attrs["curvature_k"] == 2 and ds.attrs["curvature_tol"] == 1e-9


def test_bound_prints_theorems_for_a_gf_and_gd_pair(run_cli, tmp_path):
    gf, gd = tmp_path / "gf.nc", tmp_path / "gd.nc"
    problem = gfbench.get_problem("quadratic", dim=8, lambda_min=0.1)
    gfbench.save(gfbench.run(problem, "gf", lr=0.1, steps=30, curvature_every=2, save_params=True, progress=False), gf)
    gfbench.save(gfbench.run(problem, "gd", lr=0.1, steps=30, save_params=True, progress=False), gd)
    result = run_cli("bound", str(gf), "--eps", "0.05", "--gd", str(gd), "--t-tilde", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Theorem 3 (Eq. 7), eps=0.05, t~=2: eta* = " in out and "trajectory estimate" in out
    assert "Corollary 1, global beta = 1, m = -0.1, m < 0 (strongly convex): eta < " in out
    assert "Theorem 2 (Eq. 4)" in out and "bound holds at every t: yes" in out
    eta_star = float(out.split("eta* = ")[1].split()[0])
    expected = gfbench.theory.theorem3_step_bound(gfbench.load(gf), 0.05).eta_star.sel(time=2.0)
    assert eta_star == pytest.approx(float(expected), rel=1e-5)


def test_bound_reports_deep_linear_lemma2_margin(run_cli, tmp_path):
    gf = tmp_path / "dl.nc"
    gfbench.save(gfbench.run("deep_linear", "gf", lr=0.1, steps=20, curvature_every=2, progress=False), gf)
    result = run_cli("bound", str(gf), "--eps", "0.1")
    assert result.returncode == 0, result.stderr
    assert "lemma2_bound: min over evaluated points of lambda_min - bound = " in result.stdout
    prefix = "lemma2_bound: min over evaluated points of lambda_min - bound = "
    margin = float(result.stdout.split(prefix)[1].split()[0])
    assert margin >= 0 and "Corollary 1" not in result.stdout


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """A gf run with curvature and one without, written in-process (subprocesses are slow to start)."""
    folder = tmp_path_factory.mktemp("bound")
    problem = gfbench.get_problem("quadratic", dim=8, lambda_min=0.1)
    gfbench.save(gfbench.run(problem, "gf", lr=0.1, steps=30, curvature_every=5, progress=False), folder / "gf.nc")
    gfbench.save(gfbench.run(problem, "gf", lr=0.1, steps=30, progress=False), folder / "plain.nc")
    return folder


BAD_INPUT = [
    (["run", *QUADRATIC, "--solver", "gd", "--curvature-every", "0"], "curvature_every must be an integer >= 1"),
    (["run", *QUADRATIC, "--solver", "gd", "--curvature-every", "1", "--curvature-k", "5"], "2k <= d = 8, got 5"),
    (["run", *QUADRATIC, "--solver", "gd", "--curvature-every", "1", "--curvature-tol", "2"], "curvature_tol"),
    (["run", *QUADRATIC, "--solver", "gd", "--curvature-every", "x"], "invalid int value: 'x'"),
    (["bound", "missing.nc", "--eps", "0.1"], "no such dataset file: 'missing.nc'"),
    (["bound", "gf.nc"], "the following arguments are required: --eps"),
    (["bound", "gf.nc", "--eps", "0"], "eps must be a finite number > 0, got 0.0"),
    (["bound", "plain.nc", "--eps", "0.1"], "record it with --curvature-every"),
    (["bound", "gf.nc", "--eps", "0.1", "--gd", "gf.nc"], "Theorem 2 needs a GD dataset (solver gd)"),
    (["bound", "gf.nc", "--eps", "0.1", "--t-tilde", "99"], "--t-tilde must lie in [0.1, 3]"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT)
def test_bad_curvature_input_exits_2_with_one_line(datasets, monkeypatch, capsys, args, message):
    monkeypatch.chdir(datasets)
    before = sorted(p.name for p in datasets.rglob("*"))
    assert gfbench.cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
    assert sorted(p.name for p in datasets.rglob("*")) == before  # nothing written


def test_bad_curvature_input_in_a_subprocess(run_cli, datasets):
    args, message = BAD_INPUT[1]
    result = run_cli(*args, cwd=datasets)
    assert result.returncode == 2 and "Traceback" not in result.stderr and message in result.stderr
    assert not (datasets / "runs").exists()
