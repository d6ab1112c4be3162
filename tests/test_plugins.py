"""Plugins: what a broken plugin or a name defined twice does (one line naming it; every other
name keeps working)."""
import logging
import sys
from pathlib import Path

import pytest

import gfbench
from plugin_support import write_distribution

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
