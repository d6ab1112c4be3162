"""Plugins: the example package of docs/plugins.md installed by pip and run end to end, and what
a broken plugin or a name defined twice does (one line naming it; every other name keeps working)."""
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gfbench
from plugin_support import write_distribution

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "tests" / "plugin_example"


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    """tests/plugin_example pip-installed into a fresh folder (offline; setuptools, the example's
    build backend, is a test dependency). Put the folder on sys.path or PYTHONPATH to use it."""
    source = tmp_path_factory.mktemp("example") / "source"
    shutil.copytree(EXAMPLE, source)  # setuptools writes build/ and *.egg-info beside the sources
    site = source.parent / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                                "--no-build-isolation", "--disable-pip-version-check", "--target", str(site),
                                str(source)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    return site


def test_docs_show_the_example_package_verbatim():
    doc = (REPO / "docs" / "plugins.md").read_text()
    for name, language in (("pyproject.toml", "toml"), ("gfbench_example_plugin.py", "python")):
        assert f"```{language}\n{(EXAMPLE / name).read_text()}```" in doc, name


def test_example_plugin_runs_through_the_cli(example_site, run_cli, tmp_path):
    env = {"PYTHONPATH": str(example_site)}
    listing = run_cli("list", env=env)
    assert listing.returncode == 0 and "unavailable" not in listing.stderr
    assert "\n  quartic: f(θ) = (c/4) Σ_i θ_i⁴" in listing.stdout and "[default lr=0.01, steps=1000]" in listing.stdout
    assert "scale (float, default 1.0, > 0): the factor c" in listing.stdout
    assert "\n  heun: Heun's method on gradient flow" in listing.stdout
    assert "substeps (int, default 1, >= 1): Heun steps per GD step" in listing.stdout

    quartic = ["--problem", "quartic", "--param", "dim=4", "--param", "scale=2", "--lr", "0.01", "--steps", "200",
               "--record-every", "50", "--seed", "3", "--save-params", "--quiet"]
    for solver in ("gd", "gf"):
        result = run_cli("run", *quartic, "--solver", solver, "--out", f"quartic-{solver}.nc", env=env)
        assert result.returncode == 0, result.stderr
    result = run_cli("run", "--problem", "quadratic", "--param", "dim=6", "--solver", "heun", "--solver-option",
                     "substeps=3", "--lr", "0.1", "--steps", "40", "--record-every", "10", "--save-params", "--quiet",
                     "--out", "quadratic-heun.nc", env=env)
    assert result.returncode == 0, result.stderr
    runs = {name: gfbench.load(tmp_path / f"{name}.nc") for name in ("quartic-gd", "quartic-gf", "quadratic-heun")}
    for ds in runs.values():
        gfbench.validate_dataset(ds)
        assert ds.attrs["status"] == "completed"

    # The problem's parameters, its recorder and the solvers' options and stats reach the dataset.
    gd, gf = runs["quartic-gd"], runs["quartic-gf"]
    assert json.loads(gd.attrs["problem_params"]) == {"dim": 4, "scale": 2.0}
    np.testing.assert_array_equal(gd.max_abs_theta.values, np.abs(gd.theta.values).max(axis=1))
    assert gd.max_abs_theta.attrs["long_name"] == "largest coordinate max_i |theta_i|"
    # GD: θ ← θ − η c θ³ coordinate by coordinate, iterated independently of gfbench.
    theta, expected = gd.theta.values[0].copy(), [gd.theta.values[0].copy()]
    for step in range(1, 201):
        theta = theta - 0.01 * 2.0 * theta**3
        if step % 50 == 0:
            expected.append(theta.copy())
    np.testing.assert_allclose(gd.theta.values, np.array(expected), rtol=1e-13)
    # GF against its closed form θ(t) = θ0 / √(1 + 2c θ0² t).
    theta0 = gf.theta.values[0]
    exact = theta0 / np.sqrt(1 + 2 * 2.0 * theta0**2 * gf.time.values[:, None])
    np.testing.assert_allclose(gf.theta.values, exact, rtol=1e-8)
    np.testing.assert_array_equal(gf.theta.values[0], gd.theta.values[0])

    # Heun on the quadratic is θ* + Q diag(p(hλ)^n) Qᵀ (θ0 − θ*) after n steps, p(z) = 1 − z + z²/2.
    heun = runs["quadratic-heun"]
    assert heun.attrs["solver"] == "heun" and json.loads(heun.attrs["solver_options"]) == {"substeps": 3}
    assert heun.attrs["n_substeps"] == 120
    problem = gfbench.get_problem("quadratic", dim=6)
    eigenvalues, q = np.linalg.eigh(problem.hessian().numpy())
    theta_star, h = problem.minimizer().numpy(), 0.1 / 3
    growth = (1 - h * eigenvalues + (h * eigenvalues) ** 2 / 2) ** (3 * heun.step.values[:, None])
    exact = theta_star + (growth * ((heun.theta.values[0] - theta_star) @ q)) @ q.T
    np.testing.assert_allclose(heun.theta.values, exact, rtol=1e-12, atol=1e-14)


def test_example_solver_is_second_order(example_site, monkeypatch):
    monkeypatch.syspath_prepend(str(example_site))
    assert "quartic" in gfbench.available_problems() and "heun" in gfbench.available_solvers()
    problem = gfbench.get_problem("quartic", dim=3)
    errors = []
    for substeps in (1, 2):
        ds = gfbench.run(problem, gfbench.get_solver("heun", substeps=substeps), lr=0.05, steps=20, seed=1,
                         save_params=True, progress=False)
        theta0, t = ds.theta.values[0], float(ds.time[-1])
        errors.append(np.abs(ds.theta.values[-1] - theta0 / np.sqrt(1 + 2 * theta0**2 * t)).max())
    assert 3.5 < errors[0] / errors[1] < 4.5  # halving h quarters the error


BROKEN_MODULE = '''
from gfbench import Problem
from gfbench.problems import Quadratic

NOT_A_CLASS = 42


class Unfinished(Problem):
    """Declares itself but implements nothing."""
    name = "unfinished"
    default_lr, default_steps = 0.1, 10


class Misnamed(Quadratic):
    """The quadratic under another name than its entry point's."""
    name = "quadratic_copy"
'''

# Entry name → (target, why it is unavailable).
BROKEN_PROBLEMS = {
    "missing": ("gfb_missing_module:Anything",
                "failed to load: ModuleNotFoundError: No module named 'gfb_missing_module'"),
    "raising": ("gfb_raising:Anything", "failed to load: RuntimeError: plugin import failed on purpose"),
    "not_a_class": ("gfb_broken:NOT_A_CLASS", "is 42, not a Problem subclass"),
    "unfinished": ("gfb_broken:Unfinished", "does not implement build, dim, loss, sample_init"),
    "misnamed": ("gfb_broken:Misnamed", "sets name = 'quadratic_copy', not the entry point's 'misnamed'"),
}
BROKEN_SOLVERS = {"wrong_kind": ("gfb_broken:Misnamed", "is <class 'gfb_broken.Misnamed'>, not a Solver subclass")}


def _install_broken(root: Path) -> Path:
    return write_distribution(
        root, "gfb-broken", {"gfb_broken": BROKEN_MODULE, "gfb_raising": 'raise RuntimeError("plugin import failed '
                                                                          'on purpose\\nsecond line")'},
        {"gfbench.problems": {name: target for name, (target, _) in BROKEN_PROBLEMS.items()},
         "gfbench.solvers": {name: target for name, (target, _) in BROKEN_SOLVERS.items()}})


def _unavailable(kind, name, target, why):
    group = f"gfbench.{kind}s"
    return f"{kind} {name!r} is unavailable: its plugin {target} ({group}, distribution gfb-broken 0.1) {why}"


def test_a_broken_plugin_loses_only_its_own_name(tmp_path, monkeypatch, caplog):
    monkeypatch.syspath_prepend(str(_install_broken(tmp_path)))
    with caplog.at_level(logging.WARNING, logger="gfbench.registry"):
        problems, solvers = gfbench.available_problems(), gfbench.available_solvers()
    from gfbench.problems import PROBLEMS
    from gfbench.solvers import SOLVERS
    assert list(problems) == list(PROBLEMS) and list(solvers) == list(SOLVERS)
    expected = [_unavailable("problem", name, *spec) for name, spec in BROKEN_PROBLEMS.items()]
    expected += [_unavailable("solver", name, *spec) for name, spec in BROKEN_SOLVERS.items()]
    assert [record.getMessage() for record in caplog.records] == [f"gfbench: {line}" for line in expected]
    for name, spec in BROKEN_PROBLEMS.items():
        with pytest.raises(gfbench.ConfigError) as error:
            gfbench.get_problem(name)
        assert str(error.value) == _unavailable("problem", name, *spec)
    with pytest.raises(gfbench.ConfigError, match="^solver 'wrong_kind' is unavailable: its plugin gfb_broken"):
        gfbench.get_solver("wrong_kind")
    ds = gfbench.run("quadratic", "gd", lr=0.1, steps=3, progress=False)
    assert ds.attrs["status"] == "completed"


def test_a_broken_plugin_is_one_line_of_every_command(tmp_path, run_cli):
    env = {"PYTHONPATH": str(_install_broken(tmp_path / "site"))}
    warnings = [f"gfbench: {_unavailable('problem', name, *spec)}" for name, spec in BROKEN_PROBLEMS.items()]
    warnings += [f"gfbench: {_unavailable('solver', name, *spec)}" for name, spec in BROKEN_SOLVERS.items()]

    listing = run_cli("list", env=env)
    assert listing.returncode == 0
    assert listing.stderr.splitlines() == warnings
    assert "\n  quadratic: f(θ)" in listing.stdout and "\n  gd: Gradient descent" in listing.stdout
    assert f"\n  missing: unavailable: its plugin {BROKEN_PROBLEMS['missing'][0]}" in listing.stdout

    run = run_cli("run", "--problem", "quadratic", "--param", "dim=3", "--solver", "gd", "--steps", "5", "--quiet",
                  "--out", "q.nc", env=env)
    assert run.returncode == 0 and run.stderr.splitlines() == warnings and (tmp_path / "q.nc").is_file()
    asked = run_cli("run", "--problem", "missing", "--solver", "gd", env=env)
    assert asked.returncode == 2
    assert asked.stderr.splitlines() == warnings[:len(BROKEN_PROBLEMS)] + [
        f"gfbench: error: {_unavailable('problem', 'missing', *BROKEN_PROBLEMS['missing'])}"]


CLASH_A = '''
from gfbench.problems import Quadratic
from gfbench.solvers import GD


class MyQuadratic(Quadratic):
    """Another quadratic."""


class MyGD(GD):
    """Another gradient descent."""


class Twin(Quadratic):
    name = "twin"
'''
CLASH_B = '''
from gfbench.problems import Quadratic


class Twin(Quadratic):
    name = "twin"
'''
CLASHES = {
    ("problem", "quadratic"): "built-in gfbench.problems.quadratic:Quadratic and by plugin gfb_clash_a:MyQuadratic "
                              "(gfbench.problems, distribution gfb-clash-a 0.1)",
    ("problem", "twin"): "plugin gfb_clash_a:Twin (gfbench.problems, distribution gfb-clash-a 0.1) and by plugin "
                         "gfb_clash_b:Twin (gfbench.problems, distribution gfb-clash-b 0.1)",
    ("solver", "gd"): "built-in gfbench.solvers.gd:GD and by plugin gfb_clash_a:MyGD "
                      "(gfbench.solvers, distribution gfb-clash-a 0.1)",
}


def _install_clashes(root: Path) -> Path:
    write_distribution(root, "gfb-clash-a", {"gfb_clash_a": CLASH_A},
                       {"gfbench.problems": {"quadratic": "gfb_clash_a:MyQuadratic", "twin": "gfb_clash_a:Twin"},
                        "gfbench.solvers": {"gd": "gfb_clash_a:MyGD"}})
    return write_distribution(root, "gfb-clash-b", {"gfb_clash_b": CLASH_B},
                              {"gfbench.problems": {"twin": "gfb_clash_b:Twin"}})


def _clash(kind, name):
    return f"{kind} {name!r} is unavailable: it is defined twice, by {CLASHES[kind, name]}; uninstall all but one"


def test_a_name_defined_twice_is_an_error_naming_both(tmp_path, monkeypatch, caplog):
    monkeypatch.syspath_prepend(str(_install_clashes(tmp_path)))
    with caplog.at_level(logging.WARNING, logger="gfbench.registry"):
        problems, solvers = gfbench.available_problems(), gfbench.available_solvers()
    assert "quadratic" not in problems and "twin" not in problems and "gd" not in solvers
    assert "deep_linear" in problems and "gf" in solvers
    assert sorted(record.getMessage() for record in caplog.records) == sorted(
        f"gfbench: {_clash(*key)}" for key in CLASHES)
    for (kind, name) in CLASHES:
        with pytest.raises(gfbench.ConfigError) as error:
            (gfbench.get_problem if kind == "problem" else gfbench.get_solver)(name)
        assert str(error.value) == _clash(kind, name)
    # Neither definition of a clashing name is imported, so neither can win.
    assert "gfb_clash_a" not in sys.modules and "gfb_clash_b" not in sys.modules
    assert gfbench.run("deep_linear", "gf", lr=0.05, steps=2, progress=False).attrs["status"] == "completed"


def test_a_name_defined_twice_through_the_cli(tmp_path, run_cli):
    env = {"PYTHONPATH": str(_install_clashes(tmp_path / "site"))}
    listing = run_cli("list", env=env)
    assert listing.returncode == 0
    assert sorted(listing.stderr.splitlines()) == sorted(f"gfbench: {_clash(*key)}" for key in CLASHES)
    assert f"\n  quadratic: unavailable: it is defined twice, by {CLASHES['problem', 'quadratic']}" in listing.stdout
    assert "\n  deep_linear: " in listing.stdout and "\n  gf: " in listing.stdout
    asked = run_cli("run", "--problem", "quadratic", "--solver", "gf", env=env)
    assert asked.returncode == 2 and asked.stderr.splitlines()[-1] == f"gfbench: error: {_clash('problem', 'quadratic')}"
    run = run_cli("run", "--problem", "deep_linear", "--solver", "gf", "--steps", "2", "--quiet", "--out", "d.nc",
                  env=env)
    assert run.returncode == 0 and (tmp_path / "d.nc").is_file()
