"""Hessian-vector products and the Lanczos eigensolver against dense references."""
import pytest
import torch
from curvature_problems import TanhRegression

import gfbench
from gfbench.curvature import (DENSE_MAX_DIM, HVP_METHODS, CastOperator, HessianOperator, MatrixOperator,
                               certified_lanczos, dense_eigenpairs, dense_hessian, lanczos)


def problems():
    return {
        "quadratic": gfbench.get_problem("quadratic", dim=40, lambda_min=-0.3, lambda_max=2.0),
        "deep_linear": gfbench.get_problem("deep_linear", depth=3, input_dim=6, width=5, output_dim=2,
                                           init="gaussian", init_std=0.5),
        "tanh_regression": TanhRegression(inputs=6, hidden=7, outputs=2, samples=10),
    }


@pytest.mark.parametrize("method", HVP_METHODS)
@pytest.mark.parametrize("name", ["quadratic", "deep_linear", "tanh_regression"])
def test_hvp_equals_dense_hessian_times_v(name, method):
    problem = problems()[name]
    theta = problem.init(3)
    reference = torch.func.hessian(problem.loss)(theta)
    operator = HessianOperator(problem, theta, method)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(problem.dim, generator=generator, dtype=torch.float64)
        product = operator.matvec(v)
        assert torch.allclose(product, reference @ v, rtol=0, atol=1e-10 * (1 + reference.abs().max()))
    assert operator.n_matvec == 3
    if name == "quadratic":  # and the closed form A
        assert torch.allclose(operator.matvec(v), problem.matrix @ v, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["deep_linear", "tanh_regression"])
def test_hvp_matches_finite_differences_of_gradients(name):
    problem = problems()[name]
    theta = problem.init(3)
    v = torch.randn(problem.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    field = gfbench.field.GradientField(problem)
    h = 1e-5
    difference = (field.gradient(theta + h * v) - field.gradient(theta - h * v)) / (2 * h)
    assert torch.allclose(HessianOperator(problem, theta).matvec(v), difference, rtol=0, atol=1e-7)


def test_hvp_works_under_no_grad_and_leaves_theta_alone():
    problem = problems()["tanh_regression"]
    theta = problem.init(0)
    before = theta.clone()
    with torch.no_grad():
        product = HessianOperator(problem, theta).matvec(torch.ones_like(theta))
    assert torch.equal(theta, before) and not theta.requires_grad and not product.requires_grad


def _lanczos_cases():
    quadratic_pd = gfbench.get_problem("quadratic", dim=500, lambda_min=0.02, lambda_max=1.0)
    quadratic_indefinite = gfbench.get_problem("quadratic", dim=600, lambda_min=-0.7, lambda_max=1.5)
    deep_linear = gfbench.get_problem("deep_linear")  # d = 820
    tanh = TanhRegression()  # d = 575
    return {"quadratic_pd": (quadratic_pd, quadratic_pd.init(0)),
            "quadratic_indefinite": (quadratic_indefinite, quadratic_indefinite.init(0)),
            "deep_linear": (deep_linear, deep_linear.init(0)),
            "tanh_regression": (tanh, tanh.init(0))}


@pytest.mark.parametrize("case", ["quadratic_pd", "quadratic_indefinite", "deep_linear", "tanh_regression"])
def test_lanczos_extremes_match_eigvalsh(case):
    problem, theta = _lanczos_cases()[case]
    if case.startswith("quadratic"):  # the closed form: A's eigenvalues as built
        exact = torch.sort(problem.eigenvalues).values
    else:
        exact = torch.linalg.eigvalsh(torch.func.hessian(problem.loss)(theta))
    result = lanczos(HessianOperator(problem, theta), k=1, tol=1e-6, seed=0)
    assert result.converged and result.iterations < problem.dim
    for ours, reference in ((result.min, exact[0]), (result.max, exact[-1])):
        assert abs(ours - float(reference)) <= 1e-6 * abs(float(reference))
    if case in ("quadratic_indefinite", "deep_linear", "tanh_regression"):
        assert exact[0] < 0 and result.min < 0  # a negative lambda_min exists and is found


def test_lanczos_k_pairs_with_vectors_and_true_residuals():
    problem, theta = _lanczos_cases()["tanh_regression"]
    hessian = dense_hessian(problem, theta)
    exact = torch.linalg.eigvalsh(hessian)
    tol = 1e-8
    result = lanczos(HessianOperator(problem, theta), k=3, which="both", tol=tol, seed=1)
    reference = torch.cat([exact[:3], exact[-3:]])
    assert result.converged and result.eigenvalues.shape == (6,)
    assert torch.allclose(result.eigenvalues, reference, rtol=1e-6, atol=0)
    vectors = result.eigenvectors
    assert torch.allclose(vectors.T @ vectors, torch.eye(6, dtype=torch.float64), atol=1e-8)
    true_residuals = torch.linalg.vector_norm(hessian @ vectors - vectors * result.eigenvalues, dim=0)
    norm = float(exact.abs().max())
    assert float(true_residuals.max()) <= 2 * tol * norm
    assert torch.allclose(true_residuals, result.residuals, rtol=0, atol=1e-3 * tol * norm)
    dense = dense_eigenpairs(hessian, k=3)
    assert torch.allclose(dense.eigenvalues, reference, rtol=1e-12, atol=0)


@pytest.mark.parametrize("which,expected", [("smallest", slice(0, 2)), ("largest", slice(-2, None))])
def test_lanczos_one_end(which, expected):
    generator = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(300, 300, generator=generator, dtype=torch.float64))
    values = torch.linspace(-3.0, 2.0, 300, dtype=torch.float64)
    result = lanczos(MatrixOperator((q * values) @ q.T), k=2, which=which, tol=1e-9)
    assert torch.allclose(result.eigenvalues, values[expected], rtol=1e-8, atol=0)


def _spectrum_matrix(values: torch.Tensor, seed: int) -> torch.Tensor:
    """Q diag(values) Qᵀ with Q a random orthogonal matrix."""
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return (q * values) @ q.T


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("spectrum", ["low_rank", "indefinite"])
def test_lanczos_matches_eigvalsh_on_low_rank_and_indefinite_matrices_cold_and_warm(spectrum, k):
    """Rank 12 of n = 400 (the Krylov space turns invariant: deflated directions restart it) and an
    indefinite spectrum crowded at λmin (hundreds of products, where one Gram–Schmidt pass per
    product loses orthogonality); then a nearby matrix, warm-started from the first solve."""
    generator = torch.Generator().manual_seed(7)
    n = 400
    if spectrum == "low_rank":
        values = torch.zeros(n, dtype=torch.float64)
        values[:12] = torch.linspace(-0.128, 3.0, 12, dtype=torch.float64)
    else:
        values = torch.logspace(-1.7, 0, n, dtype=torch.float64) - 0.1
    matrix = _spectrum_matrix(values, 3)
    perturbation = 1e-3 * _spectrum_matrix(torch.randn(n, generator=generator, dtype=torch.float64), 4)
    tol, start = 1e-9, None
    for current in (matrix, matrix + perturbation):
        exact = torch.linalg.eigvalsh(current)
        result = lanczos(MatrixOperator(current), k=k, tol=tol, seed=2, v0=start)
        start = result.eigenvectors
        assert result.converged and result.iterations < n
        norm = float(exact.abs().max())
        assert torch.allclose(result.eigenvalues, torch.cat([exact[:k], exact[-k:]]), rtol=0, atol=tol * norm)
        assert torch.allclose(start.T @ start, torch.eye(2 * k, dtype=torch.float64), rtol=0, atol=1e-10)
        true_residuals = torch.linalg.vector_norm(current @ start - start * result.eigenvalues, dim=0)
        assert float(true_residuals.max()) <= 2 * tol * norm


def test_certified_lanczos_on_float32_products_meets_the_float64_stopping_rule():
    problem, theta = _lanczos_cases()["tanh_regression"]
    hessian = dense_hessian(problem, theta)
    exact = torch.linalg.eigvalsh(hessian)
    fast = CastOperator(HessianOperator(problem.to(dtype=torch.float32), theta.float()), torch.float64)
    reference = HessianOperator(problem, theta)
    tol, norm = 1e-6, float(exact.abs().max())
    result = certified_lanczos(fast, reference, tol=tol, seed=0)
    assert result.converged and reference.n_matvec == 2 and result.iterations == fast.n_matvec + 2
    assert torch.allclose(result.eigenvalues, exact[[0, -1]], rtol=0, atol=tol * norm)
    vectors = result.eigenvectors
    true_residuals = torch.linalg.vector_norm(hessian @ vectors - vectors * result.eigenvalues, dim=0)
    assert torch.allclose(result.residuals, true_residuals, rtol=1e-6, atol=0)
    assert float(true_residuals.max()) <= tol * norm


def test_certified_lanczos_falls_back_to_the_exact_operator():
    """A fast operator 1e-4·‖H‖ off converges to wrong pairs; the check sends the solve to ``exact``."""
    values = torch.linspace(-1.0, 2.0, 300, dtype=torch.float64)
    matrix = _spectrum_matrix(values, 5)
    off = matrix + 2e-4 * _spectrum_matrix(torch.randn(300, generator=torch.Generator().manual_seed(6),
                                                       dtype=torch.float64), 7)
    fast, exact = MatrixOperator(off), MatrixOperator(matrix)
    result = certified_lanczos(fast, exact, k=2, tol=1e-6, seed=1)
    assert exact.n_matvec > 4 and result.iterations == fast.n_matvec + exact.n_matvec
    assert result.converged and torch.allclose(result.eigenvalues, values[[0, 1, -2, -1]], rtol=0, atol=2e-6)
    unconverged = certified_lanczos(fast, exact, tol=1e-6, max_iter=3)
    assert not unconverged.converged and unconverged.iterations == 3


def test_lanczos_warm_start_needs_fewer_products():
    problem = TanhRegression()
    theta = problem.init(0)
    field = gfbench.field.GradientField(problem)
    cold = lanczos(HessianOperator(problem, theta), tol=1e-8, seed=0)
    nearby = theta - 0.01 * field.gradient(theta)
    cold_next = lanczos(HessianOperator(problem, nearby), tol=1e-8, seed=1)
    warm_next = lanczos(HessianOperator(problem, nearby), tol=1e-8, seed=1, v0=cold.eigenvectors)
    assert warm_next.iterations < cold_next.iterations
    assert abs(warm_next.min - cold_next.min) <= 1e-7 * abs(cold_next.min)
    assert abs(warm_next.max - cold_next.max) <= 1e-7 * abs(cold_next.max)


def test_lanczos_on_a_small_and_degenerate_spectrum():
    matrix = torch.diag(torch.tensor([2.0, 2.0, 2.0, -1.0], dtype=torch.float64))
    result = lanczos(MatrixOperator(matrix), tol=1e-10)  # Krylov space of dim 2, then restarts
    assert result.converged and (result.min, result.max) == pytest.approx((-1.0, 2.0), rel=1e-12)
    one = lanczos(MatrixOperator(torch.tensor([[3.0]], dtype=torch.float64)))
    assert one.min == one.max == pytest.approx(3.0)


def test_lanczos_reports_non_convergence():
    problem, theta = _lanczos_cases()["quadratic_pd"]
    result = lanczos(HessianOperator(problem, theta), tol=1e-12, max_iter=5)
    assert not result.converged and result.iterations == 5


@pytest.mark.parametrize("kwargs,message", [
    ({"k": 0}, "k must be an integer in [1, 4]"), ({"k": 5}, "got 5"), ({"which": "LM"}, "which must be one of"),
    ({"tol": 0}, "tol must be a number in (0, 1)"), ({"tol": 1.5}, "got 1.5"), ({"max_iter": 0}, "max_iter"),
])
def test_lanczos_bad_arguments(kwargs, message):
    with pytest.raises(gfbench.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        lanczos(MatrixOperator(torch.eye(4, dtype=torch.float64)), **kwargs)


def test_dense_path_refuses_large_d_and_unknown_hvp():
    big = TanhRegression(inputs=20, hidden=100, outputs=3)  # d = 2300
    with pytest.raises(gfbench.ConfigError, match=f"d <= {DENSE_MAX_DIM}, got d=2300"):
        dense_hessian(big, big.init(0))
    with pytest.raises(gfbench.ConfigError, match="HVP method must be one of"):
        HessianOperator(big, big.init(0), "finite_difference")


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("seed", range(4))
def test_lanczos_keeps_its_basis_orthonormal_on_a_low_rank_operator(seed, k):
    # A low-rank Hessian (deep linear nets have one) makes the Krylov space nearly invariant after
    # ~rank products; normalising the tiny remainder then magnified rounding into span(basis) and
    # Ritz values left the spectrum. Every Ritz value of an orthonormal basis lies inside it.
    generator = torch.Generator().manual_seed(seed)
    n, rank = 120, 14
    factor = torch.linalg.qr(torch.randn(n, rank, generator=generator, dtype=torch.float64))[0]
    spectrum = torch.linspace(-0.3, 2.5, rank, dtype=torch.float64)
    matrix = factor @ torch.diag(spectrum) @ factor.T
    exact = torch.linalg.eigvalsh(matrix)
    result = lanczos(MatrixOperator(matrix), k=k, tol=1e-10, seed=seed)
    assert result.converged
    expected = torch.cat([exact[:k], exact[-k:]])
    assert torch.allclose(result.eigenvalues, expected, rtol=0, atol=1e-9 * 2.5)
    vectors = result.eigenvectors
    assert torch.allclose(vectors.T @ vectors, torch.eye(2 * k, dtype=torch.float64), rtol=0, atol=1e-9)
    true_residuals = torch.linalg.vector_norm(matrix @ vectors - vectors * result.eigenvalues, dim=0)
    assert (true_residuals <= 1e-9 * 2.5).all()
