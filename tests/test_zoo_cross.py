"""Every problem: autograd gradient against finite differences, and every (problem, solver) pair from the CLI."""
import pytest
import torch

import gfbench
from gfbench.cli import main
from zoo_support import requires_mnist

#: Small configurations of every registered problem (MNIST ones with few examples).
TINY = {
    "quadratic": {"dim": 5},
    "deep_linear": {"input_dim": 4, "width": 3},
    "worst_case": {"dim": 3},
    "linear_fc": {"n_train": 20, "hidden": "8,8"},
    "relu_fc": {"n_train": 20, "hidden": "8,8", "bias": True},
    "mlp": {"n_train": 20, "hidden": "8,8", "classes": "0,1,2"},
    "cnn": {"n_train": 5},
    "cnn_lenet5": {"n_train": 5, "arch": "lenet5"},
    "ntk": {"width": 30, "n": 6, "input_dim": 4},
    "ntk_mnist": {"width": 10, "n": 5, "data": "mnist"},
}
MNIST_CASES = {"linear_fc", "relu_fc", "mlp", "cnn", "cnn_lenet5", "ntk_mnist"}


def _case(key):
    marks = (requires_mnist,) if key in MNIST_CASES else ()
    return pytest.param(key.split("_lenet5")[0].split("_mnist")[0], TINY[key], id=key, marks=marks)


CASES = [_case(key) for key in TINY]


def test_every_registered_problem_is_covered():
    assert {case.values[0] for case in CASES} == set(gfbench.available_problems())


@pytest.mark.parametrize("name, params", CASES)
def test_gradient_matches_finite_differences(mnist_env, name, params):
    problem = gfbench.get_problem(name, **params)
    generator = torch.Generator().manual_seed(7)
    theta = problem.init(1) + 0.1 * torch.randn(problem.dim, generator=generator, dtype=torch.float64)
    field = gfbench.field.GradientField(problem)
    grad = field.gradient(theta)
    h = 1e-6
    for _ in range(3):
        direction = torch.randn(problem.dim, generator=generator, dtype=torch.float64)
        direction /= torch.linalg.vector_norm(direction)
        central = (problem.loss(theta + h * direction) - problem.loss(theta - h * direction)) / (2 * h)
        assert abs(float(central - grad @ direction)) <= 1e-7 * max(1.0, float(torch.linalg.vector_norm(grad)))


@pytest.mark.parametrize("solver", ["gd", "gf"])
@pytest.mark.parametrize("name, params", CASES)
def test_every_pair_runs_from_the_cli(mnist_env, tmp_path, name, params, solver):
    out = tmp_path / "run.nc"
    argv = ["run", "--problem", name, "--solver", solver, "--steps", "3", "--quiet", "--out", str(out)]
    for key, value in params.items():
        argv += ["--param", f"{key}={value}"]
    if solver == "gf":  # ReLU kinks make tight tolerances costly (see the ntk docstring)
        argv += ["--solver-option", "rtol=1e-6", "--solver-option", "atol=1e-8"]
    assert main(argv) == 0
    ds = gfbench.load(out)
    gfbench.validate_dataset(ds)
    assert ds.sizes["time"] == 4 and ds.attrs["problem"] == name and ds.attrs["status"] == "completed"


def test_data_dir_flag_reaches_mnist_problems(tmp_path, monkeypatch):
    monkeypatch.delenv("GFBENCH_DATA", raising=False)
    from zoo_support import SHARED_DATA
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST copy for tests not found at {SHARED_DATA}/MNIST/raw")
    out = tmp_path / "run.nc"
    argv = ["run", "--problem", "linear_fc", "--solver", "gd", "--steps", "2", "--param", "n_train=10", "--quiet",
            "--data-dir", str(SHARED_DATA), "--out", str(out)]
    assert main(argv) == 0 and out.exists()
    assert main(["run", "--problem", "quadratic", "--solver", "gd", "--data-dir", str(SHARED_DATA), "--quiet",
                 "--out", str(tmp_path / "q.nc")]) == 2
