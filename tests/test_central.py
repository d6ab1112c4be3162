"""The central flow: its SDCP solver, the third-derivative contractions, and the solver on and off the edge."""
import numpy as np
import pytest
import scipy.optimize
import torch

import gfbench
from gfbench.central import solve_sdcp
from gfbench.curvature.hessian import hessian_vector_product, third_derivative_contractions
from gfbench.field import GradientField
from gfbench.params import ConfigError
from curvature_problems import SharpeningToy, TanhRegression


def _instance(k, seed, d=12):
    """A (k, k) and the Gram map ½⟨G_ij, G_kl⟩ of random symmetric G (k, k, d), as the central flow builds them."""
    generator = torch.Generator().manual_seed(seed)
    g = torch.randn(k, k, d, generator=generator, dtype=torch.float64)
    g = 0.5 * (g + g.transpose(0, 1))
    shift = torch.randn(k, generator=generator, dtype=torch.float64)
    a = torch.einsum("ijd,d->ij", g, torch.randn(d, generator=generator, dtype=torch.float64)) + torch.diag(shift)
    return a, 0.5 * torch.einsum("ijd,kld->ijkl", g, g)


def _check_complementarity(a, gram, x):
    slack = a + torch.einsum("ijkl,kl->ij", gram, x)
    scale = float(a.abs().max())
    assert float(torch.linalg.eigvalsh(x).min()) >= -1e-12 * scale
    assert float(torch.linalg.eigvalsh(slack).min()) >= -1e-10 * scale
    assert float((slack @ x).abs().max()) <= 1e-10 * scale * max(1.0, float(x.abs().max()))  # SX = 0: ⟨X, S⟩ = 0


@pytest.mark.parametrize("seed", range(6))
def test_sdcp_k1_is_the_closed_form(seed):
    a, gram = _instance(1, seed)
    x = solve_sdcp(a, gram)
    assert float(x) == pytest.approx(max(0.0, -float(a) / float(gram)), rel=1e-13, abs=1e-15)
    _check_complementarity(a, gram, x)


def _brute_force(a, gram, k):
    """min of ½⟨X, B[X]⟩ + ⟨A, X⟩ over X = LLᵀ, L (k × r), by BFGS then Newton (trust-krylov), for each rank r.

    An L with more columns than the solution's rank makes the minimum degenerate (quartic in the
    extra directions) and BFGS slow there, so the lowest rank that reaches the best value wins.
    """
    a_np, b_np = a.numpy(), gram.reshape(k * k, k * k).numpy()

    def objective(flat, rank):
        low = flat.reshape(k, rank)
        x = low @ low.T
        bx = (b_np @ x.reshape(-1)).reshape(k, k)
        return 0.5 * np.sum(x * bx) + np.sum(a_np * x), (2 * (bx + a_np) @ low).reshape(-1)

    def curvature_along(flat, direction, rank):  # d²/ds² at L + sD: 2 B[DLᵀ + LDᵀ] L + 2 (A + B[LLᵀ]) D
        low, move = flat.reshape(k, rank), direction.reshape(k, rank)
        slack = a_np + (b_np @ (low @ low.T).reshape(-1)).reshape(k, k)
        change = (b_np @ (move @ low.T + low @ move.T).reshape(-1)).reshape(k, k)
        return (2 * change @ low + 2 * slack @ move).reshape(-1)

    candidates = [(0.0, np.zeros((k, k)))]
    for rank in range(1, k + 1):
        for start in range(3):
            init = np.random.default_rng(start).standard_normal(k * rank)
            found = scipy.optimize.minimize(objective, init, args=(rank,), jac=True, method="BFGS",
                                            options={"gtol": 1e-12, "maxiter": 20000})
            with np.errstate(invalid="ignore"):  # trust-krylov may stop on a NaN step: keep the better point
                polished = scipy.optimize.minimize(objective, found.x, args=(rank,), jac=True, hessp=curvature_along,
                                                   method="trust-krylov", options={"gtol": 1e-15})
            if np.isfinite(polished.fun) and polished.fun <= found.fun:
                found = polished
            low = found.x.reshape(k, rank)
            candidates.append((found.fun, low @ low.T))
    best = min(value for value, _ in candidates)
    return next(x for value, x in candidates if value <= best + 1e-13 * max(1.0, abs(best)))


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_sdcp_matches_a_brute_force_psd_parametrisation(k, seed):
    a, gram = _instance(k, 10 * k + seed)
    x = solve_sdcp(a, gram)
    _check_complementarity(a, gram, x)
    assert np.abs(x.numpy() - _brute_force(a, gram, k)).max() <= 1e-8


def test_sdcp_instances_cover_every_rank():
    """The random instances above are not all interior: their solutions have ranks 0 to k."""
    ranks = {k: {int((torch.linalg.eigvalsh(solve_sdcp(*_instance(k, 10 * k + s))) > 1e-9).sum()) for s in range(5)}
             for k in (2, 3)}
    assert len(ranks[2]) >= 2 and len(ranks[3]) >= 2, ranks


def _tiny(name):
    if name == "tanh_regression":
        return TanhRegression(inputs=3, hidden=4, outputs=2, samples=6)
    if name == "linear_fc":
        return gfbench.get_problem("linear_fc", hidden="2", n_train=5)
    return gfbench.get_problem(name, **{"quadratic": dict(dim=6), "worst_case": dict(dim=3),
                                        "deep_linear": dict(input_dim=3, width=3, init="gaussian",
                                                            init_std=0.5)}[name])


@pytest.mark.parametrize("name", ["quadratic", "deep_linear", "worst_case", "linear_fc", "tanh_regression"])
def test_third_derivatives_match_finite_differences_of_hvps(name):
    """G_ij[m] = ∂_m(u_iᵀHu_j) against (u_iᵀH(θ + h e_m)u_j − u_iᵀH(θ − h e_m)u_j)/(2h), h = 1e-4."""
    problem = _tiny(name)
    theta = problem.init(3)
    if name == "worst_case":
        theta[0] = 1.5 * problem.params["band"]  # on the ramp, where g''' ≠ 0
    generator = torch.Generator().manual_seed(5)
    vectors = torch.linalg.qr(torch.randn(problem.dim, 2, generator=generator, dtype=torch.float64))[0]
    field = GradientField(problem)
    grad, g = third_derivative_contractions(field, theta, vectors)
    assert torch.allclose(grad, GradientField(problem).gradient(theta), rtol=0, atol=1e-14)
    assert (field.n_evals, field.n_hvp) == (1, 2)
    if name == "quadratic":
        assert float(g.abs().max()) == 0.0
        return
    coordinates = range(problem.dim) if problem.dim <= 60 else \
        torch.randperm(problem.dim, generator=generator)[:40].tolist()
    h, reference = 1e-4, GradientField(problem)
    for m in coordinates:
        step = torch.zeros(problem.dim, dtype=torch.float64)
        step[m] = h
        for j in range(2):
            difference = (hessian_vector_product(reference, theta + step, vectors[:, j])
                          - hessian_vector_product(reference, theta - step, vectors[:, j])) / (2 * h)
            fd = vectors.T @ difference
            assert torch.allclose(g[:, j, m], fd, rtol=0, atol=1e-6 * float(g[:, j].abs().max())), (m, j)
    assert float(g.abs().max()) > 0


def test_central_is_gradient_flow_below_the_edge():
    problem, lr = TanhRegression(inputs=5, hidden=6, outputs=2, samples=10), 0.02
    central = gfbench.run(problem, gfbench.get_solver("central", substeps=4), lr=lr, steps=40, save_params=True,
                          progress=False)
    gf = gfbench.run(problem, gfbench.get_solver("gf", rtol=1e-12, atol=1e-14), lr=lr, steps=40,
                     save_params=True, progress=False)
    assert lr * central.central_sharpness.max() < 1.9  # precondition: never near the edge
    assert (central.central_n_critical == 0).all() and (central.central_variance == 0).all()
    assert np.allclose(central.central_predicted_loss, central.loss, rtol=0, atol=0)
    assert np.abs(central.theta.values - gf.theta.values).max() <= 1e-8
    assert central.attrs["n_third_order"] == 0
    assert central.attrs["n_hvp"] == problem.dim * central.attrs["nfe"]  # one dense Hessian per evaluation


def _edge_runs(problem, lr=0.2, steps=200, **options):
    common = dict(lr=lr, steps=steps, save_params=True, progress=False)
    return (gfbench.run(problem, "gd", curvature_every=1, **common), gfbench.run(problem, "gf", **common),
            gfbench.run(problem, gfbench.get_solver("central", **options), **common))


@pytest.mark.parametrize("params", [dict(m=1), dict(m=2, split=0.0), dict(m=3, split=0.01)],
                         ids=["k1", "k2_double", "k3_split"])
def test_central_holds_the_edge_and_tracks_gd_time_average(params):
    """SharpeningToy(b=11), η = 0.2: GF's sharpness rises to 11 > 2/η = 10, GD's hovers at the edge."""
    lr, window = 0.2, 20
    gd, gf, central = _edge_runs(SharpeningToy(b=11.0, **params), lr)
    edge = 2 / lr
    assert gd.hessian_max_eig.values[-100:].min() > 0.95 * edge and gf.theta.values[-1, -1] > 10.99
    reached = np.argmax(central.central_n_critical.values > 0)
    assert 0 < reached < 50
    later = central.central_sharpness.values[reached + 10:]
    assert np.abs(later - edge).max() <= 1e-3 * edge
    assert central.central_n_critical.values[-1] == params["m"]  # all within the critical fraction
    average = gd.theta.values[-window:].mean(axis=0)
    to_central = np.linalg.norm(average - central.theta.values[-1])
    to_gf = np.linalg.norm(average - gf.theta.values[-1])
    assert to_central <= 0.01 * to_gf, (to_central, to_gf)
    predicted, measured = central.central_predicted_loss.values[-1], gd.loss.values[-window:].mean()
    assert abs(predicted - measured) <= 1e-3 * measured
    assert central.central_variance.values[-1].sum() == pytest.approx(2.0, rel=1e-6)  # σ² = 2(b − 2/η)


@pytest.mark.parametrize("method,order_ratio", [("euler", (1.8, 2.3)), ("rk4", (3.0, np.inf))])
def test_central_converges_in_the_step_size(method, order_ratio):
    """max over t ≤ 4 of |θ_h − θ_{h/2}| across the entry into the edge (t ≈ 2.2) shrinks by ~2 (Euler, order
    1) and by ≥ 3 per halving for rk4, whose order drops from 4 to about 2 at the kink where X switches on."""
    problem, lr, steps = SharpeningToy(b=11.0), 0.2, 20
    substeps = (2, 4, 8, 16)
    thetas = [gfbench.run(problem, gfbench.get_solver("central", method=method, substeps=s), lr=lr, steps=steps,
                          save_params=True, progress=False).theta.values for s in substeps]
    gaps = [np.abs(coarse - fine).max() for coarse, fine in zip(thetas, thetas[1:])]
    ratios = [coarse / fine for coarse, fine in zip(gaps, gaps[1:])]
    assert all(order_ratio[0] <= ratio <= order_ratio[1] for ratio in ratios), (gaps, ratios)


def test_lanczos_and_dense_eigensolvers_agree_at_the_edge():
    problem = SharpeningToy(m=3, b=11.0, split=0.01)
    runs = [gfbench.run(problem, gfbench.get_solver("central", eigensolver=solver), lr=0.2, steps=40,
                        save_params=True, progress=False) for solver in ("dense", "lanczos")]
    assert runs[1].central_n_critical.values.max() == 3
    assert np.abs(runs[0].theta.values - runs[1].theta.values).max() <= 1e-7
    assert runs[1].attrs["n_hvp"] < runs[0].attrs["n_hvp"] * 3


@pytest.mark.parametrize("option,value", [("substeps", 0), ("critical_fraction", 1.5), ("method", "rk45"),
                                          ("max_critical", 40), ("relaxation", 0.0)])
def test_bad_options_are_one_line_config_errors(option, value):
    with pytest.raises(ConfigError) as caught:
        gfbench.get_solver("central", **{option: value})
    assert "\n" not in str(caught.value) and option in str(caught.value)


def test_dense_eigensolver_is_refused_above_its_size():
    with pytest.raises(ConfigError, match="eigensolver=dense"):
        gfbench.run(gfbench.get_problem("linear_fc", hidden="3", n_train=5), gfbench.get_solver(
            "central", eigensolver="dense"), lr=0.1, steps=1, progress=False)
