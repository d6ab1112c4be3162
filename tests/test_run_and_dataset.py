"""The run loop's contracts: schema, file round trip, determinism, statuses, chunked integration, plugins."""
import json

import numpy as np
import pytest
import torch
import xarray as xr
from torchdiffeq import odeint

import gfbench
from zoo_support import Blowup
from plugin_support import write_distribution


def _without_run_facts(ds):
    attrs = {k: v for k, v in ds.attrs.items() if k not in ("created", "wall_time_s")}
    return xr.Dataset(ds.data_vars, ds.coords, attrs)


@pytest.mark.parametrize("solver", ["gd", "gf"])
def test_dataset_follows_schema_and_round_trips(tmp_path, solver):
    ds = gfbench.run("deep_linear", solver, lr=0.05, steps=40, record_every=7, save_params=True, progress=False)
    gfbench.validate_dataset(ds)
    assert list(ds.step.values) == [0, 7, 14, 21, 28, 35, 40]
    np.testing.assert_array_equal(ds.time.values, ds.step.values * 0.05)
    assert ds.theta.dims == ("time", "param") and ds.sizes["param"] == gfbench.get_problem("deep_linear").dim
    path = gfbench.save(ds, tmp_path / "run.nc")
    loaded = gfbench.load(path)
    xr.testing.assert_identical(ds, loaded)
    assert loaded.step.dtype == np.int64
    assert not list(tmp_path.glob("*.tmp"))


def test_problem_is_rebuilt_from_attrs():
    problem = gfbench.get_problem("quadratic", dim=7, lambda_min=-0.5, data_seed=4)
    ds = gfbench.run(problem, "gd", lr=0.1, steps=5, save_params=True, seed=2, progress=False)
    rebuilt = gfbench.get_problem(ds.attrs["problem"], **json.loads(ds.attrs["problem_params"]))
    torch.testing.assert_close(rebuilt.hessian(), problem.hessian(), rtol=0, atol=0)
    torch.testing.assert_close(rebuilt.minimizer(), problem.minimizer(), rtol=0, atol=0)
    np.testing.assert_array_equal(rebuilt.init(ds.attrs["seed"]).numpy(), ds.theta.values[0])
    solver = gfbench.get_solver(ds.attrs["solver"], **json.loads(ds.attrs["solver_options"]))
    assert solver.name == "gd"


def test_seed_draws_only_the_initial_point():
    problem = gfbench.get_problem("deep_linear")
    assert not torch.equal(problem.init(0), problem.init(1))
    assert torch.equal(gfbench.get_problem("deep_linear").target, problem.target)
    assert not torch.equal(gfbench.get_problem("deep_linear", data_seed=1).target, problem.target)


@pytest.mark.parametrize("solver", ["gd", "gf"])
def test_same_seed_gives_identical_datasets(solver):
    runs = [gfbench.run("deep_linear", solver, lr=0.05, steps=60, seed=5, save_params=True, progress=False)
            for _ in range(2)]
    xr.testing.assert_identical(_without_run_facts(runs[0]), _without_run_facts(runs[1]))


def test_divergence_keeps_the_finite_prefix():
    problem = gfbench.get_problem("quadratic", dim=5, lambda_min=0.1, lambda_max=1.0)
    ds = gfbench.run(problem, "gd", lr=2.5, steps=5000, progress=False)  # η·λmax = 2.5 > 2
    assert ds.attrs["status"] == "diverged"
    assert "non-finite" in ds.attrs["message"]
    assert 10 < ds.sizes["time"] < 5001
    assert np.all(np.isfinite(ds.loss.values))
    assert ds.loss.values[-1] > 1e100


@pytest.mark.parametrize("curvature_every", [None, 1])
def test_divergence_never_stores_an_infinite_value(tmp_path, curvature_every):
    # deep_linear at lr 5: the gradient stays finite one step longer than its norm does
    ds = gfbench.run("deep_linear", "gd", lr=5, steps=50, curvature_every=curvature_every, progress=False)
    assert ds.attrs["status"] == "diverged" and "at step" in ds.attrs["message"]
    assert 1 <= ds.sizes["time"] < 51
    for name, var in ds.variables.items():
        assert not np.isinf(var.values).any(), name
    loaded = gfbench.load(gfbench.save(ds, tmp_path / "d.nc"))
    assert all(not np.isinf(var.values).any() for var in loaded.variables.values())


class InfiniteAt(gfbench.Recorder):
    """Records 1.0, then +inf from record index ``index`` on."""

    def __init__(self, index):
        self.index = index

    def variables(self):
        return [gfbench.Variable("blows", "a value that becomes infinite", "1")]

    def record(self, point):
        return {"blows": np.inf if point.index >= self.index else 1.0}


def test_an_infinite_recorded_value_ends_the_run_as_diverged_before_that_point():
    ds = gfbench.run("quadratic", "gd", lr=0.1, steps=10, progress=False, recorders=[InfiniteAt(4)])
    assert ds.attrs["status"] == "diverged" and ds.attrs["message"] == "infinite blows at step 4 (t=0.4)"
    assert list(ds.step.values) == [0, 1, 2, 3] and (ds.blows.values == 1.0).all()


def test_solver_failure_is_a_status_with_the_time_reached():
    ds = gfbench.run(Blowup(), "gf", lr=0.01, steps=100, progress=False)
    assert ds.attrs["status"] == "solver_failed"
    reached = float(ds.attrs["message"].split("t=")[1].split()[0].rstrip(")"))
    assert reached == pytest.approx(1 / (2 * 1.05 ** 2), abs=1e-3), ds.attrs["message"]
    assert list(ds.step.values) == list(range(46))
    gfbench.validate_dataset(ds)


def test_chunked_integration_costs_what_one_odeint_call_costs():
    """Advancing one solver record interval by record interval costs the same NFE as one odeint over the grid."""
    problem = gfbench.get_problem("deep_linear")
    lr, steps = 0.01, 2000
    ds = gfbench.run(problem, "gf", lr=lr, steps=steps, progress=False)
    field = gfbench.field.GradientField(problem)
    grid = torch.arange(steps + 1, dtype=torch.float64) * lr
    count = {"nfe": 0}

    def rhs(t, theta):
        count["nfe"] += 1
        return -field.gradient(theta)

    whole = odeint(rhs, problem.init(0), grid, rtol=1e-9, atol=1e-11, method="dopri5")
    assert ds.attrs["nfe"] == count["nfe"]
    assert float(whole[-1].sub(problem.init(0)).norm()) == pytest.approx(float(ds.distance_from_init[-1]), rel=1e-12)


def test_gd_costs_one_gradient_per_step():
    ds = gfbench.run("quadratic", "gd", lr=0.1, steps=100, progress=False)
    assert ds.attrs["n_grad_evals"] == 101  # recording reuses the step's gradient; +1 at the final point


def test_float32_runs_in_float32():
    ds = gfbench.run("deep_linear", "gf", lr=0.05, steps=50, dtype="float32", progress=False)
    assert ds.attrs["dtype"] == "float32" and ds.attrs["status"] == "completed"
    assert json.loads(ds.attrs["solver_options"])["rtol"] == 1e-5


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=0.0), "lr must be"), (dict(lr=float("nan")), "lr must be"), (dict(steps=0), "steps must be"),
    (dict(steps=2.5), "steps must be"), (dict(seed=-1), "seed must be"), (dict(record_every=0), "record_every"),
    (dict(dtype="float16"), "dtype must be"), (dict(device="tpu"), "device must be"),
])
def test_bad_run_arguments_raise_config_error(kwargs, match):
    config = dict(lr=0.1, steps=10, progress=False) | kwargs
    with pytest.raises(gfbench.ConfigError, match=match):
        gfbench.run("quadratic", "gd", **config)


def test_bad_names_and_parameters_raise_config_error():
    with pytest.raises(gfbench.ConfigError, match="did you mean 'quadratic'"):
        gfbench.get_problem("quadratc")
    with pytest.raises(gfbench.ConfigError, match="allowed: method, rtol"):
        gfbench.get_solver("gf", rtl=1e-3)
    with pytest.raises(gfbench.ConfigError, match="must be > 0"):
        gfbench.get_solver("gf", rtol=-1.0)
    with pytest.raises(gfbench.ConfigError, match="lambda_min <= lambda_max"):
        gfbench.get_problem("quadratic", lambda_min=2.0, lambda_max=1.0)


def test_entry_point_plugin_is_found(tmp_path, monkeypatch, run_cli):
    write_distribution(tmp_path, "gfb-plugin", {"gfb_plugin_mod": '''
        import torch
        from gfbench import Param, Problem

        class Bowl(Problem):
            """f(θ) = ½ scale ‖θ‖²."""
            name = "bowl"
            parameters = (Param("scale", float, 2.0, "curvature"),)
            default_lr, default_steps = 0.1, 10

            def build(self):
                pass

            @property
            def dim(self):
                return 3

            def sample_init(self, generator):
                return torch.randn(3, generator=generator, dtype=torch.float64)

            def loss(self, theta):
                return 0.5 * self.params["scale"] * theta @ theta
    '''}, {"gfbench.problems": {"bowl": "gfb_plugin_mod:Bowl"}})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "bowl" in gfbench.available_problems()
    ds = gfbench.run(gfbench.get_problem("bowl", scale=1.0), "gd", lr=0.5, steps=3, save_params=True, progress=False)
    np.testing.assert_allclose(ds.theta.values[-1], ds.theta.values[0] * 0.5 ** 3, rtol=1e-15)
    listing = run_cli("list", env={"PYTHONPATH": str(tmp_path)})
    assert listing.returncode == 0 and "bowl" in listing.stdout and "scale (float, default 2.0" in listing.stdout


def test_a_float32_run_leaves_the_problem_exact():
    problem = gfbench.get_problem("quadratic", dim=6)
    matrix = problem.hessian().clone()
    gfbench.run(problem, "gd", lr=0.1, steps=3, dtype="float32", progress=False)
    assert problem.dtype == torch.float64 and torch.equal(problem.hessian(), matrix)
    assert problem.to(dtype=torch.float32).hessian().dtype == torch.float32
