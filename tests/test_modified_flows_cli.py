"""The modified flows through the command line's entry point (in process: the CLI code path
without a Python start-up per case): every new solver on both problems, and bad input."""
import pytest

import gfbench
from gfbench.cli import main

SMALL = {"quadratic": ["--param", "dim=6"], "deep_linear": ["--param", "input_dim=4", "--param", "width=4"]}


@pytest.mark.parametrize("problem", ["quadratic", "deep_linear"])
@pytest.mark.parametrize("solver", ["igr", "second_order", "principal"])
def test_new_solver_runs_from_the_cli(tmp_path, problem, solver):
    out = tmp_path / "run.nc"
    code = main(["run", "--problem", problem, "--solver", solver, *SMALL[problem], "--steps", "20",
                 "--out", str(out), "--quiet"])
    assert code == 0
    ds = gfbench.load(out)
    gfbench.validate_dataset(ds)
    assert ds.attrs["status"] == "completed" and ds.attrs["solver"] == solver and ds.sizes["time"] == 21
    assert ds.attrs["nfe"] > 0 and ds.attrs["n_hvp"] > 0


@pytest.mark.parametrize("args,message", [
    (["--problem", "quadratic", "--solver", "igr", "--solver-option", "initial_velocity=zero"],
     "unknown solver 'igr' parameter 'initial_velocity'"),
    (["--problem", "quadratic", "--solver", "second_order", "--solver-option", "initial_velocity=rest"],
     "'initial_velocity' must be one of slow_manifold, gradient, zero; got 'rest'"),
    (["--problem", "quadratic", "--solver", "principal", "--solver-option", "max_dim=0"], "'max_dim' must be >= 1"),
    (["--problem", "deep_linear", "--solver", "principal"],
     "solver 'principal' needs a dense Hessian eigendecomposition and accepts d <= max_dim=200; "
     "problem 'deep_linear' has d=820"),
])
def test_bad_solver_input_exits_2_before_computing(capsys, monkeypatch, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *args]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and message in stderr, stderr
    assert not list(tmp_path.rglob("*.nc"))


def test_complex_principal_flow_exits_4_with_the_reason(capsys, tmp_path):
    out = tmp_path / "pf.nc"
    assert main(["run", "--problem", "quadratic", "--solver", "principal", "--lr", "1.5", "--out", str(out)]) == 4
    assert "lr*lambda_max = 1.5 >= 1: the principal flow is complex" in capsys.readouterr().err
    assert gfbench.load(out).attrs["status"] == "solver_failed"
