"""linear_fc, relu_fc and cnn against hand-written forward passes and a plain torch.optim.SGD loop."""
import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import gfbench
from gfbench.classifier import ReluCrossings
from gfbench.mnist import mnist_tensors
from zoo_support import requires_mnist

pytestmark = requires_mnist


def _sgd_reference(problem, theta0, lr, steps):
    """θ after ``steps`` of torch.optim.SGD (full batch, no momentum) on a copy of the problem's module."""
    module = copy.deepcopy(problem.module)
    nn.utils.vector_to_parameters(theta0.clone(), module.parameters())
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(module(problem.train_x), problem.train_y).backward()
        optimizer.step()
    return nn.utils.parameters_to_vector(module.parameters()).detach()


@pytest.mark.parametrize("name, params", [("relu_fc", {"n_train": 50}), ("cnn", {"n_train": 20}),
                                          ("cnn", {"n_train": 10, "arch": "lenet5"})])
def test_gd_equals_a_plain_sgd_loop(mnist_env, name, params):
    problem = gfbench.get_problem(name, **params)
    lr, steps = 0.05, 100
    ds = gfbench.run(problem, "gd", lr=lr, steps=steps, record_every=steps, save_params=True, progress=False)
    theta0 = problem.init(0)
    reference = _sgd_reference(problem, theta0, lr, steps).numpy()
    assert np.abs(ds.theta.values[-1] - reference).max() <= 1e-10
    assert np.linalg.norm(reference - theta0.numpy()) > 0.1  # the runs went somewhere
    assert ds.loss.values[-1] < 0.5 * ds.loss.values[0]


@pytest.mark.parametrize("name, params, dim", [
    ("linear_fc", {}, 784 * 50 + 50 * 50 + 50 * 10),
    ("relu_fc", {"bias": True, "hidden": "30"}, 784 * 30 + 30 + 30 * 10 + 10),
    ("cnn", {}, 6 * 25 + 16 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10),
    ("cnn", {"arch": "lenet5"}, 61_706),  # LeNet-5's well-known parameter count
])
def test_dimensions(mnist_env, name, params, dim):
    assert gfbench.get_problem(name, n_train=10, **params).dim == dim


@pytest.mark.parametrize("name, activation", [("linear_fc", lambda z: z), ("relu_fc", torch.relu)])
def test_fully_connected_loss_is_the_written_out_network(mnist_env, name, activation):
    problem = gfbench.get_problem(name, n_train=200)
    theta = problem.init(3)
    w1, w2, w3 = (theta[:39_200].view(50, 784), theta[39_200:41_700].view(50, 50), theta[41_700:].view(10, 50))
    x, y = mnist_tensors("train", 200)
    logits = activation(activation(x.flatten(1) @ w1.T) @ w2.T) @ w3.T
    expected = torch.mean(torch.logsumexp(logits, 1) - logits[torch.arange(200), y])
    assert abs(float(problem.loss(theta)) - float(expected)) <= 1e-13


def test_initialisations_follow_the_paper(mnist_env):
    xavier = lambda fan_in, fan_out: math.sqrt(6 / (fan_in + fan_out))  # noqa: E731
    fc = gfbench.get_problem("relu_fc", n_train=10)
    views = fc.named_views(fc.init(0))
    w1 = views["0.weight"]
    assert float(w1.abs().max()) <= xavier(784, 50)
    assert float(w1.var()) == pytest.approx(xavier(784, 50) ** 2 / 3, rel=0.03)
    for init, conv_bound in (("paper", 1 / math.sqrt(25)), ("xavier", xavier(25, 150))):
        cnn = gfbench.get_problem("cnn", arch="lenet5", init=init, n_train=10)
        views = cnn.named_views(cnn.init(0))
        conv = views["1.weight"]
        assert float(conv.abs().max()) <= conv_bound and float(conv.abs().max()) > 0.9 * conv_bound
        assert float(views["1.bias"].abs().max()) <= 1 / math.sqrt(25)
        assert float(views["8.weight"].abs().max()) <= xavier(400, 120)
        assert float(views["8.weight"].var()) == pytest.approx(xavier(400, 120) ** 2 / 3, rel=0.03)
    torch.manual_seed(123)  # the global RNG plays no part in θ0
    again = cnn.init(0)
    torch.manual_seed(456)
    assert torch.equal(again, cnn.init(0)) and not torch.equal(again, cnn.init(1))


def test_accuracy_and_test_metrics_are_recorded(mnist_env):
    problem = gfbench.get_problem("relu_fc", n_train=100, n_test=300)
    ds = gfbench.run(problem, "gd", lr=0.05, steps=20, record_every=20, save_params=True, progress=False)
    theta = torch.from_numpy(ds.theta.values[-1].copy())
    train_logits = problem.logits(theta, problem.train_x)
    x_test, y_test = mnist_tensors("test", 300)
    test_logits = problem.logits(theta, x_test.flatten(1))
    assert float(ds.train_accuracy[-1]) == float((train_logits.argmax(1) == problem.train_y).double().mean())
    assert float(ds.test_accuracy[-1]) == float((test_logits.argmax(1) == y_test).double().mean())
    assert float(ds.test_loss[-1]) == pytest.approx(float(nn.functional.cross_entropy(test_logits, y_test)),
                                                     rel=1e-14)
    assert float(ds.train_accuracy[-1]) > float(ds.train_accuracy[0]) and float(ds.test_accuracy[-1]) > 0.3
    assert "test_loss" not in gfbench.run(gfbench.get_problem("relu_fc", n_train=10), "gd", lr=0.001,
                                          steps=1, progress=False)


def test_bad_hidden_widths_are_config_errors(mnist_env):
    for bad in ("50,,50", "a,b", "50,0"):
        with pytest.raises(gfbench.ConfigError, match="hidden"):
            gfbench.get_problem("relu_fc", hidden=bad, n_train=10)
    assert gfbench.get_problem("linear_fc", hidden="", n_train=10).dim == 7840


def test_relu_crossings_match_a_hand_written_forward_pass(mnist_env):
    problem = gfbench.get_problem("relu_fc", n_train=5, hidden="8,6")
    ds = gfbench.run(problem, "gd", lr=0.01, steps=40, save_params=True, recorders=[ReluCrossings()],
                     progress=False)
    x = problem.train_x.flatten(1).numpy()

    def pattern(theta):
        w1, w2 = theta[:784 * 8].reshape(8, 784), theta[784 * 8:784 * 8 + 48].reshape(6, 8)
        z1 = x @ w1.T
        return np.concatenate([(z1 > 0).ravel(), (np.maximum(z1, 0) @ w2.T > 0).ravel()])

    patterns = np.array([pattern(theta) for theta in ds.theta.values])
    expected = np.concatenate([[0], (patterns[1:] != patterns[:-1]).sum(axis=1)])
    np.testing.assert_array_equal(ds.relu_crossings.values, expected)
    np.testing.assert_allclose(ds.relu_active_fraction.values, patterns.mean(axis=1), rtol=0, atol=1e-15)
    assert expected.sum() > 0  # the horizon does cross kinks, so the comparison is not all zeros


def test_gd_zig_zags_across_relu_kinks_once_per_step(mnist_env):
    """Five examples, 8 units: GD sits on a kink (a sliding mode of the flow) and crosses it every
    step, so the crossings to a fixed T double when η halves (measured 120, 225, 450, 899)."""
    problem = gfbench.get_problem("relu_fc", n_train=5, hidden="8")
    totals = [int(gfbench.run(problem, "gd", lr=lr, steps=round(0.5 / lr), recorders=[ReluCrossings()],
                              progress=False).relu_crossings.sum()) for lr in (0.005, 0.0025)]
    assert totals[1] / totals[0] == pytest.approx(2.0, rel=0.05), totals


def test_relu_crossings_need_relu_units(mnist_env):
    with pytest.raises(ValueError, match="no ReLU units"):
        gfbench.run(gfbench.get_problem("linear_fc", n_train=5, hidden="4"), "gd", lr=0.01, steps=2,
                    recorders=[ReluCrossings()], progress=False)


@pytest.mark.parametrize("name,solver,dtype,options,expected", [
    # relu_fc's own defaults: Filippov's flow with the crossings passed inside the steps
    ("relu_fc", "gf", "float64", {}, ("bosh3", "jump_corrected", 1e-10, 1e-12)),
    # kinks left to the step control: the method and tolerances measured for that
    ("relu_fc", "gf", "float64", {"kinks": "step_control"}, ("adaptive_heun", "step_control", 1e-7, 1e-9)),
    # with few examples every event located (measured cheaper or more accurate up to 10 examples)
    ("relu_fc_few", "gf", "float64", {}, ("dopri5", "events", 1e-8, 1e-10)),
    ("relu_fc_few", "gf", "float64", {"kinks": "jump_corrected"}, ("bosh3", "jump_corrected", 1e-10, 1e-12)),
    ("relu_fc", "igr", "float64", {}, ("adaptive_heun", None, 1e-7, 1e-9)),  # no kinks option: step control
    # cnn's own: passed crossings at a tighter tolerance (measured); with max-pooling, whose kinks
    # are no switching functions, or with a smooth activation the step control at the ReLU nets' tolerances
    ("cnn", "gf", "float64", {}, ("bosh3", "jump_corrected", 1e-13, 1e-15)),
    ("cnn_lenet5", "gf", "float64", {}, ("dopri5", "step_control", 1e-8, 1e-10)),
    ("cnn_tanh", "gf", "float64", {}, ("dopri5", "step_control", 1e-8, 1e-10)),
    ("cnn", "gf", "float32", {}, ("dopri5", "step_control", 1e-5, 1e-7)),
    # an explicit option wins, the other stays the problem's
    ("relu_fc", "gf", "float64", {"rtol": 1e-6}, ("bosh3", "jump_corrected", 1e-6, 1e-12)),
    # jump_corrected measured in float64 only: float32 keeps the step control, at the generic tolerances
    ("relu_fc", "gf", "float32", {}, ("adaptive_heun", "step_control", 1e-5, 1e-7)),
    ("relu_fc", "gf", "float32", {"kinks": "jump_corrected"}, ("bosh3", "jump_corrected", 1e-5, 1e-7)),
    ("linear_fc", "gf", "float64", {}, ("dopri5", "step_control", 1e-9, 1e-11)),  # smooth: the generic float64 default
])
def test_flow_defaults_are_the_problems_for_the_kinks_treatment(mnist_env, name, solver, dtype, options, expected):
    variants = {"cnn": ("cnn", {"n_train": 5}), "cnn_lenet5": ("cnn", {"n_train": 5, "arch": "lenet5"}),
                "cnn_tanh": ("cnn", {"n_train": 5, "activation": "tanh"}),
                "relu_fc": ("relu_fc", {"n_train": 11, "hidden": "4"}), "relu_fc_few": ("relu_fc", {"n_train": 10, "hidden": "4"}),
                "linear_fc": ("linear_fc", {"n_train": 5, "hidden": "4"})}
    problem_name, params = variants[name]
    problem = gfbench.get_problem(problem_name, **params)
    ds = gfbench.run(problem, gfbench.get_solver(solver, **options), lr=0.001, steps=2, dtype=dtype, progress=False)
    used = json.loads(ds.attrs["solver_options"])
    assert (used["method"], used.get("kinks"), used["rtol"], used["atol"]) == expected


@pytest.mark.parametrize("name, params", [("relu_fc", {"n_train": 50}), ("cnn", {"n_train": 20}),
                                          ("mlp", {"n_train": 40, "hidden": "30", "classes": "0,1,2"})])
def test_every_step_recording_equals_a_plain_torch_loop_and_reuses_the_steps_forward_pass(mnist_env, name, params):
    """Loss, ‖∇f‖ and training accuracy recorded at every GD step against torch.optim.SGD on a copy of the
    module, and one forward pass of the network per step: the recording adds none (mlp: mean ½‖h − e_y‖²)."""
    problem = gfbench.get_problem(name, **params)
    lr, steps = 0.05, 30
    forwards = []
    hook = problem.module.register_forward_hook(lambda *_: forwards.append(1))
    try:
        # threads given: the automatic policy would time two gradients of its own before the run
        ds = gfbench.run(problem, "gd", lr=lr, steps=steps, progress=False, threads=1)
    finally:
        hook.remove()
    assert len(forwards) == steps + 1 and ds.attrs["n_grad_evals"] == steps + 1

    module = copy.deepcopy(problem.module)
    nn.utils.vector_to_parameters(problem.init(0), module.parameters())
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    losses, grad_norms, accuracies = [], [], []
    for step in range(steps + 1):
        optimizer.zero_grad()
        logits = module(problem.train_x)
        loss = problem.criterion.function(logits, problem.train_y)
        loss.backward()
        losses.append(float(loss.detach()))
        grad_norms.append(float(torch.cat([p.grad.reshape(-1) for p in module.parameters()]).norm()))
        accuracies.append(float((logits.argmax(1) == problem.train_y).double().mean()))
        if step < steps:
            optimizer.step()
    np.testing.assert_allclose(ds.loss.values, losses, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ds.grad_norm.values, grad_norms, rtol=1e-10, atol=0)
    np.testing.assert_array_equal(ds.train_accuracy.values, accuracies)
    assert losses[-1] < 0.9 * losses[0] and accuracies[-1] > accuracies[0]  # the trajectory moved
