"""A battery of bad or odd inputs across every subcommand and the Python API.

Every CLI case must exit 2 with one line on stderr that starts ``gfbench: error:``, no traceback,
and leave nothing behind in its folder; every Python case must raise ConfigError with a one-line
message. The fixtures are made once per module: a GD and a GF run of a small quadratic with θ, a
GF run with curvature, a text file, a foreign netCDF and a folder.
"""
import math

import numpy as np
import pytest
import xarray as xr

import gfbench
import gfbench.curvature
import gfbench.theory
from gfbench.cli import main
from gfbench.sweep import plan_sweep

Q = ["--problem", "quadratic", "--solver", "gd"]
QF = ["--problem", "quadratic", "--solver", "gf"]
SWEEP = ["sweep", "--problem", "quadratic", "--solver", "gd", "--steps", "2"]
FIG = ["reproduce", "fig1", "--net", "deep_linear", "--steps", "100"]
EOS = ["reproduce", "eos", "--steps", "100"]

RUN_CASES = [
    # names
    ["--problem", "nope", "--solver", "gd"], ["--problem", "quadratic", "--solver", "nope"], ["--problem", "", "--solver",
                                                                                              "gd"],
    ["--problem", "QUADRATIC", "--solver", "gd"], ["--problem", "quadratic", "--solver", "GD"], ["--problem", "quadratic"],
    ["--solver", "gd"], [], ["--problem", "quadratic", "--solver", "gd", "extra"],
    # problem parameters
    [*Q, "--param", "dim=x"], [*Q, "--param", "dim=0"], [*Q, "--param", "dim=-3"], [*Q, "--param", "dim=2.5"],
    [*Q, "--param", "dim="], [*Q, "--param", "=3"], [*Q, "--param", "dim"], [*Q, "--param", "dimm=3"],
    [*Q, "--param", "lambda_min=nan"], [*Q, "--param", "lambda_min=inf"], [*Q, "--param", "lambda_min=x"],
    [*Q, "--param", "lambda_min=2", "--param", "lambda_max=1"], [*Q, "--param", "data_seed=-1"],
    [*Q, "--param", "data_seed=99999999999999999999999"], [*Q, "--param", "dim=10000000"],
    ["--problem", "deep_linear", "--solver", "gd", "--param", "depth=1"],
    ["--problem", "deep_linear", "--solver", "gd", "--param", "init=zeros"],
    ["--problem", "deep_linear", "--solver", "gd", "--param", "init_scale=0"],
    ["--problem", "deep_linear", "--solver", "gd", "--param", "width=1", "--param", "output_dim=3",
     "--param", "input_dim=3"],
    ["--problem", "deep_linear", "--solver", "gd", "--param", "width=100000000"],
    ["--problem", "ntk", "--solver", "gd", "--param", "width=0"], ["--problem", "ntk", "--solver", "gd", "--param",
                                                                   "data=cifar"],
    ["--problem", "ntk", "--solver", "gd", "--param", "width=10000000000"],
    ["--problem", "relu_fc", "--solver", "gd", "--param", "hidden=a,b"],
    ["--problem", "relu_fc", "--solver", "gd", "--param", "hidden=0"],
    ["--problem", "relu_fc", "--solver", "gd", "--param", "n_train=0"],
    ["--problem", "relu_fc", "--solver", "gd", "--param", "bias=maybe"],
    ["--problem", "cnn", "--solver", "gd", "--param", "arch=resnet"],
    ["--problem", "worst_case", "--solver", "gd", "--param", "mu=0"],
    # solver options
    [*Q, "--solver-option", "rtol=1e-9"], [*QF, "--solver-option", "rtol=0"], [*QF, "--solver-option", "rtol=-1"],
    [*QF, "--solver-option", "rtol=x"], [*QF, "--solver-option", "method=euler"], [*QF, "--solver-option",
                                                                                  "max_steps=0"],
    [*QF, "--solver-option", "max_rejections=-1"], [*QF, "--solver-option", "atol=nan"],
    ["--problem", "quadratic", "--solver", "principal", "--solver-option", "max_dim=0"],
    ["--problem", "quadratic", "--solver", "second_order", "--solver-option", "error_control=x"],
    # run settings
    [*Q, "--lr", "0"], [*Q, "--lr", "-0.1"], [*Q, "--lr", "nan"], [*Q, "--lr", "inf"], [*Q, "--lr", "x"],
    [*Q, "--lr", ""], [*Q, "--steps", "0"], [*Q, "--steps", "-1"], [*Q, "--steps", "1.5"], [*Q, "--steps", "x"],
    [*Q, "--steps", "1e3"], [*Q, "--steps", "99999999999999999999"], [*Q, "--steps", "10000000000000"],
    [*Q, "--seed", "-1"], [*Q, "--seed", "x"], [*Q, "--seed", "18446744073709551616"], [*Q, "--record-every", "0"],
    [*Q, "--record-every", "x"], [*Q, "--record-every", "-5"], [*Q, "--dtype", "float16"], [*Q, "--dtype", "int8"],
    [*Q, "--dtype", ""], [*Q, "--device", "tpu"], [*Q, "--device", "cuda:0"], [*Q, "--device", ""],
    [*Q, "--device", "cpu:x"], [*Q, "--curvature-every", "0"], [*Q, "--curvature-every", "x"],
    [*Q, "--curvature-every", "1000000000000000000000000000000"], [*Q, "--curvature-every", "1", "--curvature-k",
                                                                   "0"],
    [*Q, "--curvature-every", "1", "--curvature-k", "11"], [*Q, "--curvature-every", "1", "--curvature-tol", "0"],
    [*Q, "--curvature-every", "1", "--curvature-tol", "1"], [*Q, "--curvature-every", "1", "--curvature-tol", "x"],
    [*Q, "--save-params", "yes"], [*Q, "--lr"], [*Q, "--quiet=1"],
    [*Q, "--threads", "0"], [*Q, "--threads", "-1"], [*Q, "--threads", "x"], [*Q, "--threads", ""],
    [*Q, "--threads", "1.5"], [*Q, "--threads"],
    # paths
    [*Q, "--out", ""], [*Q, "--out", "."], [*Q, "--out", "/nonexistent-gfbench/x.nc"], [*Q, "--out", "folder"],
    ["--problem", "relu_fc", "--solver", "gd", "--data-dir", "no/such/data"],
    ["--problem", "relu_fc", "--solver", "gd", "--param", "data_dir=no/such/data"],
]

SWEEP_CASES = [
    ["sweep", "--problem", "quadratic", "--solver", "gd"], [*SWEEP], [*SWEEP, "--out", ""],
    [*SWEEP, "--out", "text.txt"], [*SWEEP, "--out", "/nonexistent-gfbench/dir"], [*SWEEP, "--out", "s", "--lr", "0.1,-1"],
    [*SWEEP, "--out", "s", "--lr", "0.1,,0.2"], [*SWEEP, "--out", "s", "--lr", "x"], [*SWEEP, "--out", "s", "--seed",
                                                                                      "0,0"],
    [*SWEEP, "--out", "s", "--seed", "-1"], [*SWEEP, "--out", "s", "--seed", "0,99999999999999999999"],
    [*SWEEP, "--out", "s", "--record-every", "0"], [*SWEEP, "--out", "s", "--dtype", "float16"],
    [*SWEEP, "--out", "s", "--device", "tpu"], [*SWEEP, "--out", "s", "--param", "dimm=3"],
    [*SWEEP, "--out", "s", "--param", "dim=0,3"], [*SWEEP, "--out", "s", "--param", "dim="],
    [*SWEEP, "--out", "s", "--solver-option", "rtol=x"], [*SWEEP, "--out", "s", "--solver-option", "nope=1"],
    [*SWEEP, "--out", "s", "--workers", "0"], [*SWEEP, "--out", "s", "--workers", "x"],
    [*SWEEP, "--out", "s", "--torch-threads", "0"], [*SWEEP, "--out", "s", "--curvature-every", "0"],
    [*SWEEP, "--out", "s", "--curvature-every", "1", "--curvature-k", "100"],
    ["sweep", "--problem", "quadratic,nope", "--solver", "gd", "--out", "s"],
    ["sweep", "--problem", "quadratic", "--solver", "gd,nope", "--out", "s"],
    ["sweep", "--problem", "quadratic,deep_linear", "--solver", "gd", "--out", "s"],
    [*SWEEP, "--out", "s", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
]

REPRODUCE_CASES = [
    ["reproduce"], ["reproduce", "fig2"], [*FIG[:2], "--net", "resnet"], [*FIG, "--ratios", "1"],
    [*FIG, "--ratios", "x"], [*FIG, "--ratios", "2,,5"], [*FIG, "--ratios", "0"], [*FIG[:4], "--steps", "50"],
    [*FIG[:4], "--steps", "0"], [*FIG[:4], "--steps", "x"], [*FIG[:4], "--scale", "huge"], [*FIG, "--lr", "x"],
    [*FIG, "--lr", "0"], [*FIG, "--lr", "-1"], [*FIG, "--dtype", "float16"], [*FIG, "--device", "tpu"],
    [*FIG, "--seed", "-1"], [*FIG, "--param", "nope=1"], [*FIG, "--gf-option", "rtol=x"],
    [*FIG, "--gf-option", "order=2"], [*FIG, "--curvature-every", "0"], [*FIG, "--out", ""],
    [*FIG, "--out", "text.txt"], [*FIG, "--threads", "0"], [*FIG, "--threads", "-1"], [*FIG, "--threads", "x"],
    ["reproduce", "eos", "extra"], [*EOS, "--lrs", "x"], [*EOS, "--lrs", "0"], [*EOS, "--lrs", "-0.1"],
    [*EOS, "--lrs", "0.2,0.2"], [*EOS, "--lrs", "0.2,,0.3"], [*EOS, "--lrs", "0.2,0.3"], [*EOS[:2], "--steps", "150"],
    [*EOS[:2], "--steps", "0"], [*EOS, "--scale", "huge"], [*EOS, "--curvature-every", "1"], [*EOS, "--ratios", "2"],
    [*EOS, "--param", "pool=3"], [*EOS, "--param", "nope=1"], [*EOS, "--seed", "-1"], [*EOS, "--dtype", "float16"],
    [*EOS, "--out", "text.txt"], [*EOS, "--out", ""],
]

READ_CASES = [
    ["info"], ["info", "missing.nc"], ["info", "text.txt"], ["info", "foreign.nc"], ["info", "folder"],
    ["info", ""], ["compare"], ["compare", "missing.nc"], ["compare", "q.nc", "text.txt"],
    ["compare", "q.nc", "foreign.nc"], ["compare", "q.nc", "other.nc"], ["compare", "q.nc", "nothetas.nc"],
    ["compare", "q.nc", "qf.nc", "--ref", "missing.nc"], ["compare", "q.nc", "qf.nc", "--out", "folder"],
    ["compare", "q.nc", "qf.nc", "--out", "/nonexistent-gfbench/c.nc"], ["compare", "q.nc", "qf.nc", "--out", "qf.nc"],
    ["compare", "q.nc", "qf.nc", "--out", ""], ["plot"], ["plot", "missing.nc"], ["plot", "q.nc", "--var", "nope"],
    ["plot", "q.nc", "--var", "a/b"], ["plot", "q.nc", "--var", ""], ["plot", "q.nc", "--out", "q.nc"],
    ["plot", "q.nc", "--out", "/nonexistent-gfbench/p.png"], ["plot", "foreign.nc"], ["plot", "text.txt"],
    ["bound"], ["bound", "qc.nc"], ["bound", "qc.nc", "--eps", "0"], ["bound", "qc.nc", "--eps", "-1"],
    ["bound", "qc.nc", "--eps", "x"], ["bound", "qc.nc", "--eps", "nan"], ["bound", "qc.nc", "--eps", "inf"],
    ["bound", "q.nc", "--eps", "0.1"], ["bound", "missing.nc", "--eps", "0.1"],
    ["bound", "qc.nc", "--eps", "0.1", "--t-tilde", "100"], ["bound", "qc.nc", "--eps", "0.1", "--t-tilde", "-1"],
    ["bound", "qc.nc", "--eps", "0.1", "--t-tilde", "x"], ["bound", "qc.nc", "--eps", "0.1", "--gd", "missing.nc"],
    ["bound", "qc.nc", "--eps", "0.1", "--gd", "other.nc"], ["bound", "qc.nc", "--eps", "0.1", "--gd", "foreign.nc"],
    ["list", "extra"], ["nonsense"], ["--version-nope"],
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder holding the datasets and files the cases name (never written to by a case)."""
    root = tmp_path_factory.mktemp("inputs")
    for name, solver, extra in (("q.nc", "gd", {"save_params": True}), ("qf.nc", "gf", {"save_params": True}),
                                ("qc.nc", "gf", {"curvature_every": 1}), ("nothetas.nc", "gd", {})):
        gfbench.save(gfbench.run("quadratic", solver, lr=0.1, steps=5, progress=False, **extra), root / name)
    other = gfbench.get_problem("quadratic", dim=3)
    gfbench.save(gfbench.run(other, "gd", lr=0.1, steps=5, save_params=True, progress=False), root / "other.nc")
    xr.Dataset({"x": ("t", np.arange(3.0))}, attrs={"schema_version": 1}).to_netcdf(root / "foreign.nc")
    (root / "text.txt").write_text("not a dataset\n")
    (root / "folder").mkdir()
    return root


def _snapshot(root):
    return sorted((str(path.relative_to(root)), path.stat().st_size) for path in root.rglob("*"))


@pytest.mark.parametrize("argv", [["run", *case] for case in RUN_CASES] + SWEEP_CASES + REPRODUCE_CASES + READ_CASES,
                         ids=lambda argv: " ".join(argv)[:80])
def test_bad_cli_input_exits_2_in_one_line_and_leaves_nothing(argv, inputs, monkeypatch, capsys):
    monkeypatch.chdir(inputs)
    before = _snapshot(inputs)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("gfbench: error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert _snapshot(inputs) == before


@pytest.mark.parametrize("argv", [["run", *Q, "--steps", "2"], FIG], ids=["run", "reproduce"])
@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_bad_threads_variable_exits_2_in_one_line_and_leaves_nothing(argv, value, inputs, monkeypatch, capsys):
    monkeypatch.chdir(inputs)
    monkeypatch.setenv("GFBENCH_THREADS", value)
    before = _snapshot(inputs)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("gfbench: error: $GFBENCH_THREADS: ") and captured.err.count("\n") == 1, captured.err
    assert _snapshot(inputs) == before


def _api_cases():
    problem = gfbench.get_problem("quadratic", dim=3)
    run = gfbench.run
    return [
        lambda: gfbench.get_problem("nope"), lambda: gfbench.get_problem(3), lambda: gfbench.get_problem("quadratic",
                                                                                                        dim="x"),
        lambda: gfbench.get_problem("quadratic", dim=0), lambda: gfbench.get_problem("quadratic", dim=2.5),
        lambda: gfbench.get_problem("quadratic", dim=True), lambda: gfbench.get_problem("quadratic", dimm=3),
        lambda: gfbench.get_problem("quadratic", lambda_min=math.nan), lambda: gfbench.get_problem("quadratic",
                                                                                                   dim=10 ** 7),
        lambda: gfbench.get_problem("quadratic", data_seed=2 ** 64), lambda: gfbench.get_solver("nope"),
        lambda: gfbench.get_solver("gf", rtol=0), lambda: gfbench.get_solver("gf", method="rk4"),
        lambda: gfbench.get_solver("gf", max_steps=np.int64(0)),
        lambda: run(problem, "gd", lr="0.1", steps=3), lambda: run(problem, "gd", lr=0.1, steps=3.0),
        lambda: run(problem, "gd", lr=0.1, steps=np.float64(3)), lambda: run(problem, "gd", lr=np.nan, steps=3),
        lambda: run(problem, "gd", lr=0.1, steps=3, seed=-1), lambda: run(problem, "gd", lr=0.1, steps=3, seed=2 ** 63),
        lambda: run(problem, "gd", lr=0.1, steps=3, record_every=True), lambda: run(problem, "gd", lr=0.1, steps=3,
                                                                                    save_params=1),
        lambda: run(problem, "gd", lr=0.1, steps=3, dtype="half"), lambda: run(problem, "gd", lr=0.1, steps=3,
                                                                               device="tpu"),
        lambda: run(problem, "gd", lr=0.1, steps=3, lrr=0.1), lambda: run(problem, 3, lr=0.1, steps=3),
        lambda: run(None, "gd", lr=0.1, steps=3), lambda: run(problem, "gd", lr=0.1, steps=3, curvature_every=0),
        lambda: run(problem, "gd", lr=0.1, steps=3, curvature_every=1, curvature_k=2),
        lambda: run(problem, "gd", lr=0.1, steps=3, curvature_every=1, curvature_tol="1e-6"),
        lambda: run(problem, "gd", lr=0.1, steps=10 ** 13),
        lambda: run(problem, "gd", lr=0.1, steps=3, threads=0), lambda: run(problem, "gd", lr=0.1, steps=3, threads="2"),
        lambda: run(problem, "gd", lr=0.1, steps=3, threads=1.0),
        lambda: gfbench.load("missing.nc"), lambda: gfbench.load("text.txt"), lambda: gfbench.load("foreign.nc"),
        lambda: gfbench.load("folder"), lambda: gfbench.save(gfbench.run(problem, "gd", lr=0.1, steps=1,
                                                                         progress=False), "folder"),
        lambda: gfbench.compare(["q.nc"], ref="other.nc"), lambda: gfbench.compare(["nothetas.nc"], ref="q.nc"),
        lambda: gfbench.load_sweep("folder"), lambda: plan_sweep({"problem": "quadratic"}),
        lambda: plan_sweep({"problem": "quadratic", "solver": "gd", "lr": []}),
        lambda: plan_sweep({"problem": "quadratic", "solver": "gd", "nope": [1]}),
        lambda: plan_sweep({"problem": "quadratic", "solver": "gd", "params": {"dim": [1, 1]}}),
        lambda: plan_sweep({"problem": "quadratic", "solver": "gd", "params": {"lr": [1]}}),
        lambda: plan_sweep("quadratic"),
        lambda: gfbench.curvature.lanczos(gfbench.curvature.MatrixOperator(np.eye(2)), k=3),
        lambda: gfbench.theory.theorem3_step_bound(gfbench.load("qc.nc"), 0),
        lambda: gfbench.theory.theorem3_step_bound(gfbench.load("q.nc"), 0.1),
    ]


API_CASES = _api_cases()


@pytest.mark.parametrize("index", range(len(API_CASES)))
def test_bad_python_input_raises_config_error_in_one_line(index, inputs, monkeypatch):
    monkeypatch.chdir(inputs)
    before = _snapshot(inputs)
    with pytest.raises(gfbench.ConfigError) as raised:
        API_CASES[index]()
    assert "\n" not in str(raised.value) and str(raised.value)
    assert _snapshot(inputs) == before


def test_the_battery_is_large():
    cli = len(RUN_CASES) + len(SWEEP_CASES) + len(REPRODUCE_CASES) + len(READ_CASES)
    assert cli + len(API_CASES) >= 150, (cli, len(API_CASES))
