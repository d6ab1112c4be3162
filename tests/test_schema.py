"""Every dataset kind gfbench writes is declared and validated in one place; load refuses anything else."""
import json

import numpy as np
import pytest
import xarray as xr

import gfbench
import gfbench.cli
from gfbench import theory
from gfbench.dataset import KINDS, MEMBER_STATUSES, RUN_STATUSES, dataset_attrs, validate_dataset

LR = 0.1


@pytest.fixture(scope="module")
def runs():
    problem = gfbench.get_problem("quadratic", dim=6, lambda_min=0.1)
    gf = gfbench.run(problem, "gf", lr=LR, steps=10, curvature_every=2, save_params=True, progress=False)
    gd = gfbench.run(problem, "gd", lr=LR, steps=10, save_params=True, progress=False)
    return gf, gd


def _sweep(statuses):
    """A merged sweep over lr as load_sweep builds it, with the schema's attrs."""
    lrs = [0.1, 0.2][:len(statuses)]
    text = ("lr",), np.array(["x"] * len(statuses), dtype=object), {"long_name": "member text", "units": "1"}
    return xr.Dataset(
        {"loss": (("lr", "time"), np.ones((len(statuses), 3)), {"long_name": "loss f(theta)", "units": "1"}),
         "status": (("lr",), np.array(statuses, dtype=object), {"long_name": "member status", "units": "1"}),
         "message": text, "worker": text, "config_hash": text,
         "wall_time_s": (("lr",), np.ones(len(statuses)), {"long_name": "member wall time", "units": "s"}),
         "n_grad_evals": (("lr",), np.ones(len(statuses)), {"long_name": "member gradient evaluations",
                                                            "units": "1"})},
        {"lr": ("lr", lrs), "time": ("time", [0.0, 0.1, 0.2], {"long_name": "time t", "units": "1"})},
        dataset_attrs("sweep", title="gfbench sweep over lr", sweep_dims=json.dumps(["lr"])))


def test_every_kind_written_by_gfbench_validates_and_round_trips(runs, tmp_path):
    gf, gd = runs
    written = {"run": gd, "comparison": gfbench.compare([gd], ref=gf), "bound": theory.theorem3_step_bound(gf, 0.05),
               "sweep": _sweep(["completed", "failed"])}
    assert set(written) == set(KINDS)
    written["theorem2"] = theory.theorem2_bound(gf, gd)
    for name, ds in written.items():
        validate_dataset(ds)
        loaded = gfbench.load(gfbench.save(ds, tmp_path / f"{name}.nc"))
        assert loaded.attrs.get("kind", "run") == ds.attrs.get("kind", "run")
    assert written["bound"].attrs["problem"] == "quadratic" and written["theorem2"].attrs["kind"] == "bound"


@pytest.mark.parametrize("spoil,message", [
    (lambda ds: ds.drop_vars("distance"), "lacks variable 'distance'"),
    (lambda ds: ds.drop_attrs(deep=False), "lacks attrs"),
    (lambda ds: ds.assign_attrs(kind="nonsense"), "kind 'nonsense' is not one of run, comparison, bound, sweep"),
    (lambda ds: ds.assign_attrs(schema_version=7), "schema_version 7 is not 1"),
    (lambda ds: ds.assign(distance=ds.distance.drop_attrs()), "variable 'distance' lacks the attribute 'long_name'"),
])
def test_a_spoiled_comparison_is_refused(runs, spoil, message):
    gf, gd = runs
    with pytest.raises(ValueError, match=message):
        validate_dataset(spoil(gfbench.compare([gd], ref=gf)))


def _run_with_status(status):
    return gfbench.run("quadratic", "gd", lr=LR, steps=2, progress=False).assign_attrs(status=status)


def test_statuses_are_declared_once():
    assert MEMBER_STATUSES[:len(RUN_STATUSES)] == RUN_STATUSES and {"failed", "pending"} <= set(MEMBER_STATUSES)
    assert set(gfbench.cli.EXIT_BY_STATUS) == set(RUN_STATUSES)  # every run status has its exit code
    with pytest.raises(ValueError, match="status 'exploded' is not one of"):
        validate_dataset(_run_with_status("exploded"))
    with pytest.raises(ValueError, match=r"member statuses \['exploded'\]"):
        validate_dataset(_sweep(["completed", "exploded"]))


def test_dataset_attrs_refuses_a_missing_required_attr():
    with pytest.raises(ValueError, match=r"comparison dataset attrs lack \['reference'"):
        dataset_attrs("comparison", title="t")


@pytest.fixture
def foreign(tmp_path):
    """A netCDF file that is not gfbench's, though it has a schema_version attribute."""
    path = tmp_path / "foreign.nc"
    xr.Dataset({"x": ("t", np.arange(3.0))}, attrs={"schema_version": 1}).to_netcdf(path, engine="netcdf4")
    return path


def test_load_refuses_a_foreign_netcdf_in_one_line(foreign):
    with pytest.raises(gfbench.ConfigError) as error:
        gfbench.load(foreign)
    message = str(error.value)
    assert "\n" not in message and str(foreign) in message
    assert "is not a valid gfbench run dataset: dataset lacks attrs" in message


@pytest.mark.parametrize("command", ["info", "plot"])
def test_info_and_plot_on_a_foreign_netcdf_exit_2_in_one_line(foreign, capsys, command):
    assert gfbench.cli.main([command, str(foreign)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "is not a valid gfbench" in captured.err
    assert sorted(p.name for p in foreign.parent.iterdir()) == ["foreign.nc"]  # no plot written
