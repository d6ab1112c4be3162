"""deep_linear: balanced initialisation, its conservation under GF, and the end-to-end dynamics."""
import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import gfbench


def _balancedness_of_every_pair(problem, theta):
    layers = problem.layers(theta)
    return [float(torch.linalg.matrix_norm(b.T @ b - a @ a.T)) for a, b in zip(layers[:-1], layers[1:])]


@pytest.mark.parametrize("depth,output_dim", [(3, 1), (4, 2)])
def test_balanced_init_is_balanced_and_has_the_requested_scale(depth, output_dim):
    problem = gfbench.get_problem("deep_linear", depth=depth, input_dim=6, width=5, output_dim=output_dim)
    theta0 = problem.init(7)
    assert max(_balancedness_of_every_pair(problem, theta0)) <= 1e-12
    assert float(torch.linalg.matrix_norm(problem.end_to_end(theta0))) == pytest.approx(0.1, rel=1e-12)
    assert float(torch.linalg.matrix_norm(problem.target)) == pytest.approx(1.0, rel=1e-12)


def test_loss_is_half_squared_frobenius_distance():
    problem = gfbench.get_problem("deep_linear", depth=3, input_dim=4, width=3, init="gaussian", init_std=0.7)
    theta = problem.init(1)
    w1, w2, w3 = (w.numpy() for w in problem.layers(theta))
    expected = 0.5 * np.sum((w3 @ w2 @ w1 - problem.target.numpy()) ** 2)
    assert float(problem.loss(theta)) == pytest.approx(expected, rel=1e-13)
    assert problem.dim == 3 * 4 + 3 * 3 + 1 * 3


def test_gf_conserves_balancedness():
    problem = gfbench.get_problem("deep_linear", depth=3, input_dim=6, width=5)
    ds = gfbench.run(problem, "gf", lr=0.05, steps=400, record_every=20, progress=False)
    assert float(ds.balancedness.max()) <= 1e-8
    assert float(ds.loss[-1]) < 1e-6 * float(ds.loss[0])


def _fractional_power(sym, power):
    if power == 0:
        return np.eye(sym.shape[0])
    values, vectors = np.linalg.eigh(sym)
    return (vectors * np.clip(values, 0, None) ** power) @ vectors.T


@pytest.mark.parametrize("depth,output_dim", [(3, 1), (4, 2)])
def test_end_to_end_matrix_follows_arora_dynamics(depth, output_dim):
    """Ẇ = −Σ_j (WWᵀ)^{(j−1)/n} ∇φ(W) (WᵀW)^{(n−j)/n} (Arora, Cohen, Hazan 2018), solved by scipy."""
    problem = gfbench.get_problem("deep_linear", depth=depth, input_dim=5, width=4, output_dim=output_dim)
    lr, steps = 0.05, 300
    ds = gfbench.run(problem, "gf", lr=lr, steps=steps, record_every=30, save_params=True, progress=False)
    target, n = problem.target.numpy(), depth
    shape = target.shape

    def rhs(_, w_flat):
        w = w_flat.reshape(shape)
        grad = w - target
        total = sum(_fractional_power(w @ w.T, (j - 1) / n) @ grad @ _fractional_power(w.T @ w, (n - j) / n)
                    for j in range(1, n + 1))
        return -total.ravel()

    w0 = problem.end_to_end(problem.init(0)).numpy()
    solution = solve_ivp(rhs, (0, lr * steps), w0.ravel(), t_eval=ds.time.values, rtol=1e-12, atol=1e-14,
                         method="DOP853")
    for i in range(ds.sizes["time"]):
        ours = problem.end_to_end(torch.from_numpy(ds.theta.values[i])).numpy().ravel()
        assert np.linalg.norm(ours - solution.y[:, i]) <= 1e-6
    assert float(ds.loss[-1]) < 1e-3


def test_balanced_init_needs_enough_width():
    with pytest.raises(gfbench.ConfigError, match="width"):
        gfbench.get_problem("deep_linear", input_dim=4, output_dim=3, width=2)
