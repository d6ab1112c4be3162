"""Wrong numbers never stored, nothing lost, impossible sizes refused: the run loop's side of hardening."""
import numpy as np
import pytest

import gfbench
import gfbench.spec
from gfbench.run import RunInterrupted
from gfbench.sweep import plan_sweep


class InterruptAt(gfbench.Recorder):
    """Raises KeyboardInterrupt (a Ctrl-C) when asked to record index ``index``."""

    def __init__(self, index):
        self.index = index

    def variables(self):
        return []

    def record(self, point):
        if point.index == self.index:
            raise KeyboardInterrupt
        return {}


def test_ctrl_c_keeps_the_recorded_prefix_as_an_interrupted_dataset(tmp_path):
    with pytest.raises(RunInterrupted) as caught:
        gfbench.run("quadratic", "gd", lr=0.1, steps=100, record_every=10, progress=False,
                    recorders=[InterruptAt(4)])
    assert isinstance(caught.value, KeyboardInterrupt)  # a script or loop of runs still stops
    ds = caught.value.dataset
    assert ds.attrs["status"] == "interrupted" and ds.attrs["message"] == "interrupted after recording step 30"
    assert list(ds.step.values) == [0, 10, 20, 30]
    reference = gfbench.run("quadratic", "gd", lr=0.1, steps=30, record_every=10, progress=False)
    np.testing.assert_array_equal(ds.loss.values, reference.loss.values)
    gfbench.validate_dataset(gfbench.load(gfbench.save(ds, tmp_path / "i.nc")))
    spec = gfbench.spec.RunSpec.resolve("quadratic", "gd", lr=0.1, steps=100, record_every=10)
    assert not spec.reusable(ds.attrs)  # never reused by a resume: the run did not end by itself


def test_a_completed_run_has_its_message_attribute():
    ds = gfbench.run("quadratic", "gd", lr=0.1, steps=3, progress=False)
    assert ds.attrs["status"] == "completed" and ds.attrs["message"] == ""


@pytest.mark.parametrize("args,message", [
    (["--problem", "quadratic", "--solver", "gd", "--param", "dim=1000000"],
     "problem quadratic[data_seed=0,dim=1000000,lambda_max=1,lambda_min=0.01] (its data and one gradient) "
     "needs about 32 TB of memory"),
    (["--problem", "ntk", "--solver", "gd", "--param", "width=1000000000"], "needs about 640 GB of memory"),
    (["--problem", "deep_linear", "--solver", "gd", "--param", "width=1000000000"], "of memory;"),
    (["--problem", "deep_linear", "--solver", "gd", "--steps", "1000000000000"],
     "the run (1,000,000,000,001 record points, d=820) needs about"),
    (["--problem", "quadratic", "--solver", "gd", "--steps", "1000000000000000000000"], "int64"),
    (["--problem", "quadratic", "--solver", "gd", "--seed", str(2 ** 64)], "seed must be an integer of magnitude"),
    (["--problem", "quadratic", "--solver", "gd", "--record-every", str(2 ** 63)], "record_every must be"),
    (["--problem", "quadratic", "--solver", "gd", "--curvature-every", str(10 ** 30)], "curvature_every must be"),
    (["--problem", "quadratic", "--solver", "gd", "--param", "data_seed=" + str(10 ** 20)], "int64"),
    (["--problem", "quadratic", "--solver", "gd", "--out", ""], "output path must not be empty"),
])
def test_impossible_sizes_and_empty_paths_exit_2_in_one_line(run_cli, tmp_path, args, message):
    result = run_cli("run", *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*.nc"))


def test_sizes_past_int64_are_refused_when_a_sweep_is_planned_not_in_its_members():
    for axis, values in (("seed", [0, 2 ** 63]), ("steps", [5, 10 ** 19]), ("record_every", [1, 2 ** 70])):
        with pytest.raises(gfbench.ConfigError, match="int64"):
            plan_sweep({"problem": "quadratic", "solver": "gd", axis: values})
    with pytest.raises(gfbench.ConfigError, match="int64"):
        plan_sweep({"problem": "quadratic", "solver": "gd", "params": {"data_seed": [0, 10 ** 20]}})


def test_problem_parameters_shown_as_auto_accept_auto(run_cli, tmp_path):
    listing = run_cli("list").stdout
    assert "rtol (float, default auto" in listing
    result = run_cli("run", "--problem", "quadratic", "--solver", "gf", "--steps", "3", "--solver-option", "rtol=auto",
                     "--out", str(tmp_path / "a.nc"), "--quiet")
    assert result.returncode == 0, result.stderr


def test_missing_output_folders_are_created_under_the_working_folder_only(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    ds = gfbench.run("quadratic", "gd", lr=0.1, steps=2, progress=False)
    assert gfbench.save(ds, "runs/deep/gd.nc").is_file()  # the README's gfbench.save(gd, "runs/gd.nc")
    assert gfbench.save(ds, work / "new" / "b.nc").is_file()
    with pytest.raises(gfbench.ConfigError, match="gfbench creates missing folders only under the current folder"):
        gfbench.save(ds, tmp_path / "elsewhere" / "c.nc")
    assert not (tmp_path / "elsewhere").exists()
    (work / "file").write_text("x")
    with pytest.raises(gfbench.ConfigError, match="'file' is not a folder"):
        gfbench.save(ds, "file/d.nc")
