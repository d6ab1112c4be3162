"""The thread policy: which count a run asks for, the automatic rule, and that threads change no value."""
import numpy as np
import pytest
import torch
import xarray as xr

import gfbench
import gfbench.threads as threads
from gfbench.spec import RunSpec
from zoo_support import requires_mnist

#: Inputs, hidden widths and outputs of relu_fc (784-50-50-10, no biases).
RELU_FC_WIDTHS = (784, 50, 50, 10)


@pytest.fixture
def clean_environment(monkeypatch):
    """Neither $GFBENCH_THREADS nor $OMP_NUM_THREADS set: the automatic rule decides."""
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return monkeypatch


def test_requested_threads_in_order_of_precedence(clean_environment):
    assert threads.requested_threads() is None
    clean_environment.setenv("OMP_NUM_THREADS", "1")
    assert threads.requested_threads() == torch.get_num_threads()  # torch's count, as the environment set it
    clean_environment.setenv(threads.THREADS_ENV, "3")
    assert threads.requested_threads() == 3
    assert threads.requested_threads(2) == 2
    clean_environment.setenv(threads.THREADS_ENV, "")  # empty: not set
    assert threads.requested_threads() == torch.get_num_threads()


@requires_mnist
def test_gradient_flops_of_relu_fc_are_its_matrix_products(mnist_env):
    """2·n multiply-adds per weight forward and again for the weight gradients, plus the input gradients of
    every layer but the first (the data needs none): 2n(2·Σ w_l + Σ_{l>1} w_l) for layer sizes w_l."""
    n = 40
    layers = [fan_in * fan_out for fan_in, fan_out in zip(RELU_FC_WIDTHS, RELU_FC_WIDTHS[1:])]
    problem = gfbench.get_problem("relu_fc", n_train=n)
    assert threads.gradient_flops(problem, problem.init(0)) == 2 * n * (2 * sum(layers) + sum(layers[1:]))


@requires_mnist
def test_small_problems_take_one_thread_and_large_ones_the_idle_cores(mnist_env, clean_environment):
    small = gfbench.get_problem("deep_linear")
    large = gfbench.get_problem("relu_fc")
    assert threads.gradient_flops(small, small.init(0)) < threads.PARALLEL_FLOPS
    assert threads.gradient_flops(large, large.init(0)) >= threads.PARALLEL_FLOPS
    clean_environment.setattr(threads, "usable_cores", lambda: 8)
    for running, idle in ((0.0, 8), (2.6, 5), (7.6, 1), (30.0, 1)):
        clean_environment.setattr(threads, "running_elsewhere", lambda running=running: running)
        assert threads.automatic_threads(small, small.init(0)) == 1
        assert threads.automatic_threads(large, large.init(0)) == idle


def test_running_elsewhere_reads_the_running_count_less_the_reader(tmp_path, monkeypatch):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("2.50 1.90 1.20 4/311 81234\n")
    monkeypatch.setattr(threads, "LOADAVG", loadavg)
    assert threads.running_elsewhere() == 3
    monkeypatch.setattr(threads, "LOADAVG", tmp_path / "absent")  # not Linux: the 1-minute load average
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.75, 1.0, 0.5))
    assert threads.running_elsewhere() == 1.75


@requires_mnist
@pytest.mark.parametrize("name, params, solver", [("relu_fc", {"n_train": 200}, "gd"), ("cnn", {"n_train": 20}, "gd"),
                                                  ("deep_linear", {}, "gf")])
def test_thread_count_changes_no_recorded_value_and_no_identity(mnist_env, name, params, solver):
    """1 and 2 torch threads on CPU: the same datasets bit for bit, the same digest; torch's count restored."""
    problem = gfbench.get_problem(name, **params)
    before = torch.get_num_threads()
    datasets = {n: gfbench.run(problem, solver, lr=0.01, steps=20, save_params=True, progress=False, threads=n)
                for n in (1, 2)}
    assert torch.get_num_threads() == before
    assert [ds.attrs["torch_threads"] for ds in datasets.values()] == [1, 2]
    xr.testing.assert_identical(datasets[1].drop_attrs(), datasets[2].drop_attrs())
    assert np.linalg.norm(datasets[1].theta.values[-1] - datasets[1].theta.values[0]) > 1e-3  # it moved
    spec = RunSpec.resolve(problem, solver, lr=0.01, steps=20, save_params=True)
    assert all(spec.reusable(ds.attrs) for ds in datasets.values())
    assert "torch_threads" not in spec.identity()


def test_cli_threads_flag_and_variable_reach_the_dataset(run_cli, tmp_path, clean_environment):
    common = ["run", "--problem", "deep_linear", "--solver", "gd", "--steps", "5", "--quiet"]
    assert run_cli(*common, "--threads", "2", "--out", "a.nc").returncode == 0
    assert run_cli(*common, "--out", "b.nc", env={threads.THREADS_ENV: "2"}).returncode == 0
    assert run_cli(*common, "--out", "c.nc").returncode == 0
    assert [gfbench.load(tmp_path / f"{name}.nc").attrs["torch_threads"] for name in "abc"] == [2, 2, 1]
