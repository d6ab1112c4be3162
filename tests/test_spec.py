"""The run specification: one declaration drives validation, the CLI, sweeps, identity and resume."""
import json

import numpy as np
import pytest
import torch

import gfbench
from gfbench.cli import build_parser, main
from gfbench.reproduce import FIGURE_SETTINGS, reproduce_fig1
from gfbench.reproduce_eos import EOS_SETTINGS
from gfbench.spec import RUN_SETTINGS, SETTINGS_BY_NAME, RunSpec, reusable
from gfbench.sweep import member_path, plan_sweep

QUADRATIC = gfbench.get_problem("quadratic", dim=6, lambda_min=-0.2, lambda_max=1.5)


def _flags(*path):
    """The option strings of the parser of ``gfbench PATH...`` (e.g. "reproduce", "eos")."""
    parser = build_parser()
    for name in path:
        parser = next(a for a in parser._actions if a.dest in ("command", "figure")).choices[name]
    return {option for action in parser._actions for option in action.option_strings}


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_every_run_setting_is_a_flag_of_run_and_sweep(command):
    flags = _flags(command)
    assert {"--" + setting.name.replace("_", "-") for setting in RUN_SETTINGS} <= flags


def test_reproduce_takes_the_figure_settings_dtype_and_device_among_them():
    assert {"--seed", "--dtype", "--device", "--curvature-every"} <= _flags("reproduce", "fig1")
    assert set(FIGURE_SETTINGS) <= set(SETTINGS_BY_NAME) and {"dtype", "device"} <= set(FIGURE_SETTINGS)
    # eos sets the curvature schedule itself (sharpness at the checkpoints), so it takes no --curvature-every
    assert {"--seed", "--dtype", "--device", "--curvature-tol"} <= _flags("reproduce", "eos")
    assert "--curvature-every" not in _flags("reproduce", "eos") and set(EOS_SETTINGS) <= set(SETTINGS_BY_NAME)


def test_identity_holds_every_setting_and_curvature_only_when_recorded():
    plain = RunSpec.resolve(QUADRATIC, "gd", lr=0.1, steps=5)
    assert set(plain.identity()) == {"problem", "problem_params", "solver", "solver_options",
                                     *(set(SETTINGS_BY_NAME) - {"curvature_k", "curvature_tol"})}
    curved = RunSpec.resolve(QUADRATIC, "gd", lr=0.1, steps=5, curvature_every=2)
    assert {"curvature_every", "curvature_k", "curvature_tol"} <= set(curved.identity())
    assert plain.digest() != curved.digest()
    ds = gfbench.run(QUADRATIC, "gd", lr=0.1, steps=5, curvature_every=2, progress=False)
    assert curved.reusable(ds.attrs) and not plain.reusable(ds.attrs)


def test_defaults_come_from_the_problem_and_python_values_are_not_parsed():
    spec = RunSpec.resolve("deep_linear", "gd", seed=np.int64(3), dtype=torch.float32)
    problem = gfbench.get_problem("deep_linear")
    assert (spec.lr, spec.steps, spec.seed, spec.dtype) == (problem.default_lr, problem.default_steps, 3, "float32")
    assert isinstance(spec.seed, int) and spec.torch_dtype is torch.float32 and spec.device == "cpu"
    with pytest.raises(gfbench.ConfigError, match=r"^lr must be a finite number > 0, got '0.1'$"):
        RunSpec.resolve(QUADRATIC, "gd", lr="0.1")
    with pytest.raises(gfbench.ConfigError, match=r"unknown run setting 'lrr'.*did you mean 'lr'"):
        RunSpec.resolve(QUADRATIC, "gd", lrr=0.1)


@pytest.mark.parametrize("name,value,message", [
    ("seed", 2 ** 63, "seed must be an integer of magnitude < 2**63 (int64), got 9223372036854775808"),
    ("steps", 10 ** 30, "steps must be an integer of magnitude < 2**63"),
    ("record_every", 2 ** 64, "record_every must be an integer of magnitude < 2**63"),
    ("curvature_every", 10 ** 30, "curvature_every must be an integer of magnitude < 2**63"),
])
def test_integers_past_int64_are_refused_at_the_boundary(name, value, message):
    with pytest.raises(gfbench.ConfigError, match=message.replace("*", r"\*").replace("(", r"\(").replace(")", r"\)")):
        RunSpec.resolve(QUADRATIC, "gd", **{"lr": 0.1, "steps": 5, name: value})
    with pytest.raises(gfbench.ConfigError, match="int64"):
        plan_sweep({"problem": "quadratic", "solver": "gd", name: [1, value]})


def test_problem_parameters_take_numpy_integers_and_auto():
    assert gfbench.get_problem("quadratic", dim=np.int64(5)).params["dim"] == 5
    assert gfbench.get_solver("gf", rtol="auto").params["rtol"] is None  # `gfbench list` shows "default auto"
    assert gfbench.get_solver("gf", rtol=np.float32(1e-6)).params["rtol"] == pytest.approx(1e-6)


def test_a_sweep_records_curvature_like_a_run(tmp_path):
    pytest.importorskip("distributed")
    from gfbench.sweep import load_sweep, sweep

    grid = {"problem": "quadratic", "solver": ["gd", "gf"], "lr": 0.1, "steps": 6, "params": {"dim": 6,
            "lambda_min": -0.2, "lambda_max": 1.5}, "curvature_every": 2}
    summary = sweep(grid, tmp_path, workers=1, progress=False)
    assert summary.count("completed") == 2
    merged = load_sweep(tmp_path)
    assert merged["curvature_every"].item() == 2
    for solver in ("gd", "gf"):
        member = merged.sel(solver=solver)
        evaluated = np.isfinite(member.hessian_min_eig.values)
        assert evaluated.sum() == 4  # record points 0, 2, 4 and the last, 6
        # the quadratic's Hessian is constant: its extreme eigenvalues are the declared ones
        np.testing.assert_allclose(member.hessian_min_eig.values[evaluated], -0.2, rtol=1e-6)
        np.testing.assert_allclose(member.hessian_max_eig.values[evaluated], 1.5, rtol=1e-6)


def test_reproduce_runs_in_float32_and_records_it(tmp_path):
    result = reproduce_fig1(tmp_path, nets=["deep_linear"], ratios=[2], steps=100, lr=0.01, dtype="float32",
                            progress=False)
    for ds in result.runs["deep_linear"].values():
        assert ds.attrs["dtype"] == "float32" and ds.attrs["status"] == "completed"
    reference = gfbench.run("deep_linear", "gd", lr=0.01, steps=100, record_every=1, save_params=True,
                            progress=False)
    float32 = result.runs["deep_linear"]["gd lr=eta0"]
    # float32 rounding, not a different trajectory: within 1e-4 of the float64 run, yet not equal
    difference = np.abs(float32.theta.values[-1] - reference.theta.values[-1]).max()
    assert 0 < difference < 1e-4
    with pytest.raises(gfbench.ConfigError, match="the figure sets record_every itself"):
        reproduce_fig1(tmp_path, nets=["deep_linear"], steps=100, progress=False, record_every=3)


def test_reproduce_and_sweep_resume_by_the_same_rule(tmp_path):
    """A file written by a plain ``run`` is reused by both, and neither reuses it once its identity differs."""
    pytest.importorskip("distributed")
    from gfbench.sweep import sweep

    settings = dict(lr=0.01, steps=100, record_every=1, save_params=True, seed=0)
    spec = RunSpec.resolve("deep_linear", "gd", **settings)
    ds = gfbench.run(spec.problem, spec.solver, progress=False, **spec.settings)
    assert reusable(ds.attrs, spec.identity())
    # reproduce fig1's eta0 run at steps=100, lr=0.01 is exactly this run
    figure = tmp_path / "fig"
    figure.mkdir()
    gfbench.save(ds, figure / "deep_linear-gd-eta0.nc")
    # and so is the one-member sweep of the same settings
    folder = tmp_path / "sweep"
    (folder / "members").mkdir(parents=True)
    gfbench.save(ds, member_path(folder, spec.digest()))

    summary = sweep({"problem": "deep_linear", "solver": "gd", **settings}, folder, workers=1, progress=False)
    assert summary.skipped == (spec.digest(),) and summary.executed == ()
    again = reproduce_fig1(figure, nets=["deep_linear"], ratios=[2], steps=100, lr=0.01, resume=True, progress=False)
    assert again.runs["deep_linear"]["gd lr=eta0"].attrs["created"] == ds.attrs["created"]

    # the same file with another identity (a different seed) is run again by both
    other = ds.assign_attrs(seed=1)
    gfbench.save(other, figure / "deep_linear-gd-eta0.nc")
    gfbench.save(other, member_path(folder, spec.digest()))
    rerun = sweep({"problem": "deep_linear", "solver": "gd", **settings}, folder, workers=1, progress=False)
    assert rerun.executed == (spec.digest(),)
    fresh = reproduce_fig1(figure, nets=["deep_linear"], ratios=[2], steps=100, lr=0.01, resume=True, progress=False)
    assert fresh.runs["deep_linear"]["gd lr=eta0"].attrs["seed"] == 0


def test_cli_run_settings_flags_reach_the_identity(tmp_path):
    out = tmp_path / "r.nc"
    code = main(["run", "--problem", "quadratic", "--solver", "gd", "--lr", "0.1", "--steps", "4",
                 "--curvature-every", "2", "--curvature-k", "1", "--dtype", "float32", "--out", str(out), "--quiet"])
    assert code == 0
    attrs = gfbench.load(out).attrs
    spec = RunSpec.resolve("quadratic", "gd", lr=0.1, steps=4, curvature_every=2, dtype="float32")
    assert spec.reusable(attrs) and json.loads(attrs["problem_params"])["dim"] == spec.problem.params["dim"]
