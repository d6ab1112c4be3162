"""The modified flows (igr, second_order, principal) against closed forms on the quadratic."""
import numpy as np
import pytest
import scipy.linalg
import torch

import gfbench
from gfbench.curvature.hessian import dense_hessian, gradient_and_hessian_gradient, hessian_vector_product
from gfbench.field import GradientField
from gfbench.problem import Problem
from gfbench.solvers.principal import principal_coefficient
from curvature_problems import TanhRegression


def _quadratic(lambda_min=0.01, lambda_max=2.0):
    return gfbench.get_problem("quadratic", dim=12, lambda_min=lambda_min, lambda_max=lambda_max)


def _offset0(problem, seed):
    return problem.init(seed).numpy() - problem.minimizer().numpy()


def _relative(x, ref):
    return np.max(np.linalg.norm(x - ref, axis=1) / np.linalg.norm(ref, axis=1))


def test_hvp_and_hessian_match_the_quadratic_matrix_and_finite_differences():
    quadratic = _quadratic()
    field = GradientField(quadratic)
    theta, v = quadratic.init(1), torch.randn(12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.allclose(hessian_vector_product(field, theta, v), quadratic.hessian() @ v, rtol=0, atol=1e-13)
    assert torch.allclose(dense_hessian(quadratic, theta, field=field), quadratic.hessian(), rtol=0, atol=1e-13)
    assert field.n_hvp == 1 + 12 and field.n_evals == 0

    net = gfbench.get_problem("deep_linear", input_dim=3, width=3, init="gaussian", init_std=0.5)
    field = GradientField(net)
    theta = net.init(0)
    v = torch.randn(net.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    h = 1e-5  # central difference of the gradient: error O(h²) ~ 1e-10, round-off ~ 1e-11
    difference = (GradientField(net).gradient(theta + h * v) - GradientField(net).gradient(theta - h * v)) / (2 * h)
    assert torch.allclose(hessian_vector_product(field, theta, v), difference, rtol=0, atol=1e-8)
    assert torch.allclose(dense_hessian(net, theta, field=field) @ v, difference, rtol=0, atol=1e-8)



class Affine(Problem):
    """f(θ) = c·θ: the gradient does not depend on θ, so autograd has no second-order graph."""

    name = "affine"
    default_lr, default_steps = 0.1, 10

    def build(self):
        self.c = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)

    @property
    def dim(self):
        return 5

    def sample_init(self, generator):
        return torch.randn(5, generator=generator, dtype=torch.float64)

    def loss(self, theta):
        return self.c @ theta


@pytest.mark.parametrize("problem", [
    gfbench.get_problem("quadratic", dim=12),
    gfbench.get_problem("deep_linear", input_dim=3, width=3, init="gaussian", init_std=0.5),
    TanhRegression(),
    Affine(),
], ids=["quadratic", "deep_linear", "tanh_regression", "affine"])
def test_gradient_and_hessian_gradient_from_one_graph(problem):
    """The fused (∇f, ∇²f∇f) equals a plain gradient followed by a separate HVP, at one gradient's count."""
    theta = problem.init(4)
    fused, separate = GradientField(problem), GradientField(problem)
    grad, hessian_grad = gradient_and_hessian_gradient(fused, theta)
    reference_grad = separate.gradient(theta)
    assert torch.allclose(grad, reference_grad, rtol=0, atol=1e-14)
    assert torch.allclose(hessian_grad, hessian_vector_product(separate, theta, reference_grad), rtol=1e-12, atol=1e-14)
    assert (fused.n_evals, fused.n_hvp) == (1, 1)
    fused.gradient(theta)  # served from the cache the fused call filled
    assert fused.n_evals == 1

@pytest.mark.parametrize("lambda_min", [0.01, -0.2])
def test_igr_equals_the_modified_exponential(lambda_min):
    """θ(t) = θ* + exp(−t(A + ηA²/2))(θ0 − θ*)."""
    problem, lr = _quadratic(lambda_min), 0.05
    ds = gfbench.run(problem, "igr", lr=lr, steps=200, seed=3, save_params=True, record_every=10, progress=False)
    a, x0 = problem.hessian().numpy(), _offset0(problem, 3)
    exact = np.stack([problem.minimizer().numpy() + scipy.linalg.expm(-t * (a + lr * a @ a / 2)) @ x0
                      for t in ds.time.values])
    assert _relative(ds.theta.values, exact) <= 1e-8
    assert ds.attrs["n_hvp"] == ds.attrs["nfe"]  # one HVP per evaluation of the right-hand side


@pytest.mark.parametrize("lambda_min", [0.01, -0.2])
def test_principal_reproduces_gd_iterates(lambda_min):
    """On a quadratic with η·λmax < 1 the principal flow at t = kη is GD's θ* + (I − ηA)^k(θ0 − θ*)."""
    problem, lr = _quadratic(lambda_min), 0.4  # η·λmax = 0.8
    solver = gfbench.get_solver("principal", rtol=1e-11, atol=1e-13)  # integration error well below 1e-9
    ds = gfbench.run(problem, solver, lr=lr, steps=60, seed=3, save_params=True, progress=False)
    gd = gfbench.run(problem, "gd", lr=lr, steps=60, seed=3, save_params=True, progress=False)
    a, x0 = problem.hessian().numpy(), _offset0(problem, 3)
    exact = np.stack([problem.minimizer().numpy() + np.linalg.matrix_power(np.eye(12) - lr * a, int(k)) @ x0
                      for k in ds.step.values])
    assert _relative(gd.theta.values, exact) <= 1e-12
    assert _relative(ds.theta.values, exact) <= 1e-9
    assert ds.attrs["n_hvp"] == 12 * ds.attrs["nfe"]  # one dense Hessian (d HVPs) per evaluation


def test_principal_coefficient_limit_and_sign():
    z = torch.tensor([-1.0, -1e-12, 0.0, 1e-12, 0.5, 0.99], dtype=torch.float64)
    expected = torch.tensor([np.log(2.0) / -1.0, -1.0, -1.0, -1.0, np.log(0.5) / 0.5, np.log(0.01) / 0.99],
                            dtype=torch.float64)
    assert torch.allclose(principal_coefficient(z), expected, rtol=1e-12, atol=1e-12)


def test_principal_stops_where_the_flow_turns_complex():
    problem = _quadratic()
    ds = gfbench.run(problem, "principal", lr=0.6, steps=10, save_params=True, progress=False)  # η·λmax = 1.2
    assert ds.attrs["status"] == "solver_failed"
    assert "lr*lambda_max = 1.2 >= 1: the principal flow is complex" in ds.attrs["message"]
    assert ds.sizes["time"] == 1  # only θ0 was recorded: no real continuation was invented


def _second_order_closed_form(problem, x0, v0, lr, times):
    """Per eigendirection: (η/2)x'' + x' + λx = 0, x = c₊e^{r₊t} + c₋e^{r₋t}, r± = (−1 ± √(1 − 2ηλ))/η."""
    q, lam = problem.eigenvectors.numpy(), problem.eigenvalues.numpy()
    c0, w0 = q.T @ x0, q.T @ v0
    root = np.sqrt((1 - 2 * lr * lam).astype(complex))
    plus, minus = (-1 + root) / lr, (-1 - root) / lr
    c_plus = (w0 - minus * c0) / (plus - minus)
    c_minus = c0 - c_plus
    modes = c_plus * np.exp(np.outer(times, plus)) + c_minus * np.exp(np.outer(times, minus))
    assert np.abs(modes.imag).max() < 1e-12
    return problem.minimizer().numpy() + modes.real @ q.T


@pytest.mark.parametrize("lr,lambda_max", [(0.05, 2.0), (0.6, 2.0)])  # 2ηλmax = 0.2 (real roots), 2.4 (complex)
@pytest.mark.parametrize("initial_velocity", ["slow_manifold", "gradient", "zero"])
@pytest.mark.parametrize("error_control", ["state", "theta"])
def test_second_order_equals_the_linear_ode_solution(lr, lambda_max, initial_velocity, error_control):
    problem = _quadratic(lambda_max=lambda_max)
    solver = gfbench.get_solver("second_order", initial_velocity=initial_velocity, error_control=error_control)
    ds = gfbench.run(problem, solver, lr=lr, steps=100, seed=3, save_params=True, record_every=5, progress=False)
    a, x0 = problem.hessian().numpy(), _offset0(problem, 3)
    v0 = {"slow_manifold": -a @ x0 - lr / 2 * a @ a @ x0, "gradient": -a @ x0, "zero": 0 * x0}[initial_velocity]
    exact = _second_order_closed_form(problem, x0, v0, lr, ds.time.values)
    assert _relative(ds.theta.values, exact) <= 1e-7
    assert ds.attrs["n_hvp"] == (1 if initial_velocity == "slow_manifold" else 0)


def test_second_order_slow_manifold_start_halves_the_igr_gap_on_a_quadratic():
    """GD's rate per mode is log(1 − ηλ)/η; IGR's misses it by η²λ³/3, the slow second-order root by η²λ³/6."""
    problem, lr, steps = _quadratic(lambda_min=0.5, lambda_max=1.0), 0.01, 100
    gd = gfbench.run(problem, "gd", lr=lr, steps=steps, save_params=True, progress=False)
    gaps = {}
    for name in ("igr", "second_order"):
        flow = gfbench.run(problem, gfbench.get_solver(name, rtol=1e-12, atol=1e-14), lr=lr, steps=steps,
                           save_params=True, progress=False)
        gaps[name] = np.linalg.norm(gd.theta.values[-1] - flow.theta.values[-1])
    assert gaps["second_order"] / gaps["igr"] == pytest.approx(0.5, abs=0.03), gaps
