"""ntk: H*, H(t) and the lecture notes' claims (1/√m concentration and laziness, the convergence bounds)."""
import json
import math

import numpy as np
import pytest
import torch
from torch.func import jacrev

import gfbench


def _limit_kernel_monte_carlo(inputs, samples, seed):
    """x_iᵀx_j · mean_s 1{w_sᵀx_i ≥ 0, w_sᵀx_j ≥ 0} over ``samples`` draws w_s ~ N(0, I)."""
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(samples, inputs.shape[1], generator=generator, dtype=torch.float64)
    patterns = (inputs @ w.T >= 0).double()
    return (inputs @ inputs.T) * (patterns @ patterns.T) / samples


@pytest.mark.parametrize("samples", [4_000, 64_000])
def test_limit_kernel_matches_monte_carlo_within_its_standard_error(samples):
    problem = gfbench.get_problem("ntk", n=8, input_dim=5)
    estimate = _limit_kernel_monte_carlo(problem.inputs, samples, seed=samples)
    cosines = problem.inputs @ problem.inputs.T
    probability = (math.pi - torch.arccos(torch.clamp(cosines, -1, 1))) / (2 * math.pi)
    standard_error = cosines.abs() * torch.sqrt(probability * (1 - probability) / samples)
    upper = torch.triu_indices(8, 8)
    z = ((estimate - problem.limit_kernel) / standard_error)[upper[0], upper[1]]
    assert 0.6 < float(torch.sqrt(torch.mean(z ** 2))) < 1.4
    assert torch.allclose(torch.diagonal(problem.limit_kernel), torch.full((8,), 0.5, dtype=torch.float64))


def test_gram_formula_equals_gram_of_autograd_per_example_gradients():
    problem = gfbench.get_problem("ntk", width=50, n=6, input_dim=4)
    generator = torch.Generator().manual_seed(3)
    theta = problem.init(0) + 0.3 * torch.randn(problem.dim, generator=generator, dtype=torch.float64)
    jacobian = jacrev(problem.predictions)(theta)  # (n, m·d): row i is ∂u_i/∂θ
    assert torch.allclose(problem.gram(theta), jacobian @ jacobian.T, rtol=0, atol=1e-14)
    # and the notes' prediction dynamics: du/dt = J(−∇L) = −(1/n) H (u − y)
    grad = torch.func.grad(problem.loss)(theta)
    residual = problem.predictions(theta) - problem.targets
    assert torch.allclose(jacobian @ -grad, -problem.gram(theta) @ residual / 6, rtol=0, atol=1e-14)


def test_initial_gap_falls_like_one_over_sqrt_width():
    widths = np.array([64, 256, 1024, 4096, 16384])
    rms_gap = []
    for width in widths:
        problem = gfbench.get_problem("ntk", width=int(width), n=10)
        gaps = [float(torch.linalg.matrix_norm(problem.gram(problem.init(seed)) - problem.limit_kernel))
                for seed in range(16)]
        rms_gap.append(math.sqrt(np.mean(np.square(gaps))))
    slope = np.polyfit(np.log(widths), np.log(rms_gap), 1)[0]
    assert abs(slope + 0.5) < 0.1


def test_weight_movement_at_fixed_time_falls_like_one_over_sqrt_width():
    widths = np.array([256, 1024, 4096, 16384])
    movement = []
    for width in widths:
        problem = gfbench.get_problem("ntk", width=int(width), n=10)
        runs = [gfbench.run(problem, "gd", lr=1.0, steps=20, record_every=20, seed=seed, progress=False)
                for seed in range(3)]
        for ds in runs:  # the recorder against θ itself
            assert float(ds.weight_movement[0]) == 0.0 and float(ds.ntk_change[0]) == 0.0
        movement.append(np.mean([float(ds.weight_movement[-1]) for ds in runs]))
    slope = np.polyfit(np.log(widths), np.log(movement), 1)[0]
    assert abs(slope + 0.5) < 0.1


def _gf(problem, steps, rtol):
    # Loose tolerances with the kinks left to the step control: a cheap approximate flow, enough
    # for the NTK recorders (the exact Filippov flow is tested in test_filippov.py).
    return gfbench.run(problem, gfbench.get_solver("gf", rtol=rtol, atol=rtol * 1e-2, kinks="step_control"), lr=1.0,
                       steps=steps, progress=False)


def test_wide_network_stays_lazy_and_under_the_notes_bound():
    problem = gfbench.get_problem("ntk", width=4096, n=10)
    ds = _gf(problem, steps=30, rtol=1e-5)
    lambda0 = problem.lambda0
    assert np.all(ds.loss.values <= ds.loss_bound_ntk.values * (1 + 1e-9))
    assert float(ds.loss[-1]) < 0.2 * float(ds.loss[0])
    assert float(ds.ntk_change.max()) < lambda0 / 4
    assert float(ds.ntk_min_eig.min()) > lambda0 / 2
    assert float(ds.ntk_init_gap[0]) == pytest.approx(
        float(torch.linalg.matrix_norm(problem.gram(problem.init(0)) - problem.limit_kernel)), rel=1e-12)
    assert float(ds.loss_bound_ntk[-1]) == pytest.approx(float(ds.loss[0]) * math.exp(-lambda0 * 30 / 10), rel=1e-12)


@pytest.mark.parametrize("width", [8, 16])
def test_flow_never_exceeds_its_measured_gronwall_bound(width):
    problem = gfbench.get_problem("ntk", width=width, n=10)
    ds = _gf(problem, steps=40, rtol=1e-4)
    loss, bound = ds.loss.values, ds.loss_bound_measured.values
    assert bound[0] == loss[0]
    assert np.all(loss <= bound * (1 + 1e-3))
    assert bound[-1] < 0.9 * bound[0]  # λmin(H(t)) > 0 along the way: the bound does bite
    times, eigs = ds.time.values, ds.ntk_min_eig.values
    integral = sum(0.5 * (eigs[k] + eigs[k + 1]) * (times[k + 1] - times[k]) for k in range(len(times) - 1))
    assert bound[-1] == pytest.approx(loss[0] * math.exp(-2 / 10 * integral), rel=1e-12)


def test_mnist_inputs_are_unit_norm_with_sign_labels(monkeypatch):
    from zoo_support import SHARED_DATA
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST copy for tests not found at {SHARED_DATA}/MNIST/raw")
    problem = gfbench.get_problem("ntk", data="mnist", n=12, width=20, data_dir=str(SHARED_DATA))
    assert problem.params["input_dim"] == 784 and "data_dir" not in problem.params
    assert torch.allclose(torch.linalg.vector_norm(problem.inputs, dim=1), torch.ones(12, dtype=torch.float64))
    from gfbench.mnist import load_split
    labels = load_split("train", SHARED_DATA)[1][0:600:50]
    assert problem.targets.tolist() == [1.0 if label >= 5 else -1.0 for label in labels]
    with pytest.raises(gfbench.ConfigError, match="input_dim"):
        gfbench.get_problem("ntk", data="mnist", input_dim=10, data_dir=str(SHARED_DATA))


def test_gf_at_its_defaults_integrates_the_filippov_flow(run_cli, tmp_path):
    """``gfbench run --problem ntk --solver gf``: the kinks are met as a Filippov system, crossings passed
    inside the steps (the problem's ``flow_kinks``), as recorded in the dataset, and the loss stays under
    the measured Grönwall bound."""
    out = tmp_path / "ntk.nc"
    result = run_cli("run", "--problem", "ntk", "--solver", "gf", "--param", "width=50", "--steps", "20",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    ds = gfbench.load(out)
    assert json.loads(ds.attrs["solver_options"])["kinks"] == "jump_corrected"
    assert ds.attrs["n_crossings_in_step"] > 0 and ds.attrs["n_sliding_entries"] > 0
    assert np.all(ds.loss.values <= ds.loss_bound_measured.values * (1 + 1e-6))
