"""The command line: the main job, listings, and every class of bad input."""
import pytest

import gfbench


def test_main_job_writes_a_labelled_dataset(run_cli, tmp_path):
    result = run_cli("run", "--problem", "deep_linear", "--solver", "gd")
    assert result.returncode == 0, result.stderr
    files = list((tmp_path / "runs").glob("deep_linear-gd-*.nc"))
    assert len(files) == 1 and str(files[0].relative_to(tmp_path)) in result.stdout
    ds = gfbench.load(files[0])
    gfbench.validate_dataset(ds)
    assert ds.attrs["status"] == "completed" and ds.attrs["steps"] == 3000
    assert float(ds.loss[-1]) < 1e-20  # the global minimum of ½‖W − Λ‖² is 0
    assert "final t=30" in result.stdout and "gradient evaluations: 3001" in result.stdout


def test_run_flags_reach_the_dataset(run_cli, tmp_path):
    out = tmp_path / "x.nc"
    result = run_cli("run", "--problem", "quadratic", "--solver", "gf", "--lr", "0.2", "--steps", "30",
                     "--seed", "4", "--param", "dim=6", "--param", "lambda_min=-0.1", "--solver-option",
                     "method=bosh3", "--solver-option", "rtol=1e-7", "--record-every", "10", "--save-params",
                     "--dtype", "float64", "--device", "cpu", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    ds = gfbench.load(out)
    assert list(ds.step.values) == [0, 10, 20, 30] and ds.sizes["param"] == 6
    assert ds.attrs["seed"] == 4 and ds.attrs["lr"] == 0.2
    assert '"method": "bosh3"' in ds.attrs["solver_options"] and '"rtol": 1e-07' in ds.attrs["solver_options"]
    info = run_cli("info", str(out))
    assert info.returncode == 0 and "problem: quadratic" in info.stdout and "theta (time, param)" in info.stdout


def test_list_shows_parameters(run_cli):
    result = run_cli("list")
    assert result.returncode == 0
    for text in ("quadratic", "deep_linear", "gd", "gf", "lambda_min (float, default 0.01)",
                 "method (str, default auto, one of dopri5|dopri8|bosh3|adaptive_heun)", "kinks (str, default auto, one of events|jump_corrected|step_control)"):
        assert text in result.stdout


@pytest.mark.parametrize("args,message", [
    (["--problem", "deep_lineer", "--solver", "gd"], "unknown problem 'deep_lineer'; available: cnn, deep_linear, "
                                                     "linear_fc, mlp, ntk, quadratic, relu_fc, worst_case (did you "
                                                     "mean 'deep_linear'?)"),
    (["--problem", "quadratic", "--solver", "sgd"], "unknown solver 'sgd'"),
    (["--problem", "quadratic", "--solver", "gd", "--param", "dm=3"], "allowed: dim, lambda_min"),
    (["--problem", "quadratic", "--solver", "gd", "--param", "dim=x"], "'dim' must be an integer, got 'x'"),
    (["--problem", "quadratic", "--solver", "gd", "--param", "dim"], "--param expects key=value"),
    (["--problem", "quadratic", "--solver", "gf", "--solver-option", "rtol=abc"], "'rtol' must be a number"),
    (["--problem", "quadratic", "--solver", "gf", "--solver-option", "order=2"], "unknown solver 'gf' parameter"),
    (["--problem", "quadratic", "--solver", "gd", "--lr", "0"], "lr must be a finite number > 0, got 0.0"),
    (["--problem", "quadratic", "--solver", "gd", "--lr", "-1"], "lr must be a finite number > 0"),
    (["--problem", "quadratic", "--solver", "gd", "--steps", "0"], "steps must be an integer >= 1, got 0"),
    (["--problem", "quadratic", "--solver", "gd", "--out", "/nonexistent/dir/x.nc"], "folder '/nonexistent/dir'"),
    (["--problem", "quadratic", "--solver", "gd", "--dtype", "int8"], "dtype must be float64 or float32"),
    (["--problem", "quadratic", "--solver", "gd", "--device", "cuda:0"], "device"),
    (["--problem", "quadratic"], "the following arguments are required: --solver"),
])
def test_bad_input_exits_2_with_one_line_and_no_file(run_cli, tmp_path, args, message):
    result = run_cli("run", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*.nc")) and not list(tmp_path.rglob("*.tmp"))


def test_unwritable_out_folder(run_cli, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = run_cli("run", "--problem", "quadratic", "--solver", "gd", "--out", str(locked / "x.nc"))
    import os
    if os.geteuid() == 0:  # root can write anywhere; the check then rightly passes
        assert result.returncode == 0
    else:
        assert result.returncode == 2 and "not writable" in result.stderr


def test_info_on_missing_file(run_cli):
    result = run_cli("info", "nope.nc")
    assert result.returncode == 2 and "no such dataset file: 'nope.nc'" in result.stderr


def test_divergence_exits_3_and_writes_the_prefix(run_cli, tmp_path):
    out = tmp_path / "div.nc"
    result = run_cli("run", "--problem", "quadratic", "--solver", "gd", "--lr", "3", "--out", str(out))
    assert result.returncode == 3
    assert "diverged" in result.stderr and str(out) in result.stderr
    ds = gfbench.load(out)
    assert ds.attrs["status"] == "diverged" and ds.sizes["time"] < 10001
