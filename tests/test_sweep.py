"""Sweeps on dask.distributed: merged datasets, recorded failures, resume, an external scheduler."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("distributed")

import gfbench  # noqa: E402
from gfbench.cli import EXIT_MEMBERS_FAILED, EXIT_OK, EXIT_USAGE, main  # noqa: E402
from gfbench.sweep import MANIFEST, load_sweep, member_path, plan_sweep, start_local_cluster, sweep  # noqa: E402
from plugin_support import write_distribution  # noqa: E402
from signal_support import sigint_at_default  # noqa: E402

# A third-party problem, installed for these tests through the real entry-point mechanism (a
# dist-info folder on sys.path and on the workers' PYTHONPATH): the quadratic, except that θ0 for
# the seed ``fail_seed`` raises, so a member fails inside its worker after the grid was checked,
# and θ0 for ``kill_seed`` ends the worker process, as a crash or an out-of-memory kill would.
PLUGIN_MODULE = '''
import os

from gfbench.params import Param
from gfbench.problems import Quadratic


class FailingQuadratic(Quadratic):
    """The quadratic; init(fail_seed) raises and init(kill_seed) kills its process."""

    name = "failing_quadratic"
    parameters = Quadratic.parameters + (Param("fail_seed", int, -1, "seed whose init raises"),
                                         Param("kill_seed", int, -1, "seed whose init kills the process"))

    def init(self, seed):
        if seed == self.params["kill_seed"]:
            os._exit(1)
        if seed == self.params["fail_seed"]:
            raise RuntimeError(f"forced failure for seed {seed}")
        return super().init(seed)
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    root = write_distribution(tmp_path_factory.mktemp("plugin"), "gfbench-sweep-test-plugin",
                              {"gfbench_sweep_test_plugin": PLUGIN_MODULE},
                              {"gfbench.problems": {"failing_quadratic": "gfbench_sweep_test_plugin:FailingQuadratic"}})
    sys.path.insert(0, str(root))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), old]))
    yield root
    sys.path.remove(str(root))
    if old is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def scheduler(plugin_path):
    """One two-process LocalCluster for the module (its workers see the plugin).

    Dask reschedules the task of a dead worker until ``allowed-failures`` more workers died
    running it (default 3), then gives up with KilledWorker; 0 makes the first death final, which
    keeps the killed-worker test short.
    """
    import dask
    import distributed  # noqa: F401  (its config defaults must be loaded before the override below)

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = start_local_cluster(2)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


GRID = {"problem": "quadratic", "solver": ["gd", "gf"], "lr": [0.1, 0.05], "seed": [0, 1], "steps": 40,
        "params": {"dim": 4}}


def test_merged_sweep_equals_individual_runs(scheduler, tmp_path):
    summary = sweep(GRID, tmp_path, scheduler=scheduler, progress=False)
    assert len(summary.executed) == 8 and summary.count("completed") == 8
    for digest in summary.executed:
        gfbench.validate_dataset(gfbench.load(member_path(tmp_path, digest)))
    merged = load_sweep(tmp_path)
    # Times t = 0.1·k (k ≤ 40) and t = 0.05·k (k ≤ 40): the second adds the 20 odd multiples of 0.05 in [0, 2].
    assert dict(merged.sizes) == {"solver": 2, "lr": 2, "seed": 2, "time": 41 + 20}
    assert merged["problem"].item() == "quadratic" and merged["dim"].item() == 4

    problem = gfbench.get_problem("quadratic", dim=4)
    for solver in ("gd", "gf"):
        for lr in (0.1, 0.05):
            for seed in (0, 1):
                reference = gfbench.run(problem, solver, lr=lr, steps=40, seed=seed, progress=False)
                member = merged.sel(solver=solver, lr=lr, seed=seed)
                present = ~np.isnan(member["step"].values)
                np.testing.assert_array_equal(member["step"].values[present], reference["step"].values)
                np.testing.assert_allclose(member["time"].values[present], reference["time"].values, rtol=1e-12)
                for name in ("loss", "grad_norm", "distance_from_init"):
                    np.testing.assert_array_equal(member[name].values[present], reference[name].values)
                assert member["status"].item() == "completed"
                assert member["n_grad_evals"].item() == reference.attrs["n_grad_evals"]

    # An independent anchor: GD's loss from the closed form θ_k = θ* + (I − ηA)^k (θ0 − θ*).
    theta0, a, star = problem.init(1), problem.hessian(), problem.minimizer()
    k = 40
    delta = torch.linalg.matrix_power(torch.eye(4, dtype=torch.float64) - 0.05 * a, k) @ (theta0 - star)
    closed_form = float(0.5 * delta @ a @ delta)
    gd_final = merged["loss"].sel(solver="gd", lr=0.05, seed=1, time=2.0).item()
    assert gd_final == pytest.approx(closed_form, rel=1e-12)


def test_failure_and_divergence_are_recorded_and_the_rest_complete(scheduler, tmp_path):
    grid = {"problem": "failing_quadratic", "solver": "gd", "lr": [0.5, 30.0], "seed": [0, 1], "steps": 200,
            "params": {"dim": 4, "fail_seed": 1}}
    summary = sweep(grid, tmp_path, scheduler=scheduler, progress=False)
    merged = load_sweep(tmp_path)
    assert merged["status"].values.tolist() == [["completed", "failed"], ["diverged", "failed"]]
    assert summary.count("failed") == 2 and summary.count("diverged") == 1 and summary.count("completed") == 1
    assert "RuntimeError: forced failure for seed 1" in merged["message"].sel(lr=0.5, seed=1).item()
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    failed = [record for record in manifest["members"].values() if record["status"] == "failed"]
    assert all("Traceback" in record["traceback"] and record["worker"].startswith("tcp://") for record in failed)
    assert np.isnan(merged["loss"].sel(seed=1).values).all()

    # The diverged member keeps its finite prefix, NaN-padded on the joint time axis (k·0.5 ∪ k·30).
    problem = gfbench.get_problem("failing_quadratic", dim=4, fail_seed=1)
    reference = gfbench.run(problem, "gd", lr=30.0, steps=200, seed=0, progress=False)
    assert reference.attrs["status"] == "diverged" and 0 < reference.sizes["time"] < 201
    diverged = merged.sel(lr=30.0, seed=0)
    present = ~np.isnan(diverged["loss"].values)
    np.testing.assert_array_equal(diverged["loss"].values[present], reference["loss"].values)
    assert diverged["time"].values[present][-1] == pytest.approx(reference["time"].values[-1], rel=1e-12)
    assert "non-finite" in diverged["message"].item()


def test_a_task_that_kills_its_worker_is_recorded_as_failed(scheduler, tmp_path):
    grid = {"problem": "failing_quadratic", "solver": "gd", "lr": 0.1, "seed": [0, 1, 2], "steps": 10,
            "params": {"dim": 3, "kill_seed": 1}}
    summary = sweep(grid, tmp_path, scheduler=scheduler, progress=False)
    merged = load_sweep(tmp_path)
    assert merged["status"].values.tolist() == ["completed", "failed", "completed"]
    assert "KilledWorker" in merged["message"].sel(seed=1).item()
    assert summary.count("completed") == 2


def test_resume_reruns_exactly_the_missing_members(scheduler, tmp_path):
    grid = {**GRID, "lr": 0.1}
    first = sweep(grid, tmp_path, scheduler=scheduler, progress=False)
    assert len(first.executed) == 4 and not first.skipped
    before = load_sweep(tmp_path)
    deleted = set(first.executed[:2])
    for digest in deleted:
        member_path(tmp_path, digest).unlink()
    second = sweep(grid, tmp_path, scheduler=scheduler, progress=False)
    assert set(second.executed) == deleted and len(second.executed) == 2
    assert set(second.skipped) == set(first.executed) - deleted
    after = load_sweep(tmp_path)
    np.testing.assert_array_equal(after["loss"].values, before["loss"].values)
    third = sweep(grid, tmp_path, scheduler=scheduler, progress=False)
    assert third.executed == () and len(third.skipped) == 4


def test_cli_sweep_on_a_running_cluster_exits_0(scheduler, tmp_path, capsys):
    code = main(["sweep", "--problem", "quadratic", "--solver", "gd", "--lr", "0.1", "--seed", "0,1,2", "--steps", "5",
                 "--param", "dim=2", "--scheduler", scheduler, "--out", str(tmp_path / "cli"), "--quiet"])
    assert code == EXIT_OK
    assert load_sweep(tmp_path / "cli")["status"].values.tolist() == ["completed"] * 3


def test_plan_hashes_resolved_configs_and_dedupes_members():
    grid = {"problem": "quadratic", "solver": ["gd", "gf"], "lr": 0.1, "steps": 10,
            "params": {"dim": ["3", "5"]}, "solver_options": {"rtol": [1e-8, 1e-10]}}
    plan = plan_sweep(grid)
    assert list(plan.dims) == ["solver", "dim", "rtol"] and plan.dims["dim"] == (3, 5)
    # GD declares no rtol, so its two rtol points share one member: 2 (gd) + 4 (gf).
    assert len(plan.points) == 8 and len(plan.members) == 6
    same = plan_sweep({"problem": "quadratic", "solver": ["gd", "gf"], "lr": 0.1, "steps": 10,
                       "params": {"dim": [3, 5], "lambda_max": 1.0}, "solver_options": {"rtol": [1e-8, 1e-10]}})
    assert same.points == plan.points  # the default lambda_max given explicitly resolves to the same config


def test_cli_bad_input_exits_2_before_writing(tmp_path, capsys):
    for argv in (["--lr", "0.1,-1"], ["--param", "dimm=3"], ["--seed", "0,0"], ["--solver-option", "rtol=x"]):
        out = tmp_path / "never"
        code = main(["sweep", "--problem", "quadratic", "--solver", "gd,gf", "--out", str(out), *argv])
        assert code == EXIT_USAGE and not out.exists()
        assert capsys.readouterr().err.count("\n") == 1


def test_missing_dask_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"gfbench\[sweep\]"):
        sweep({"problem": "quadratic", "solver": "gd", "steps": 5}, tmp_path / "out")


def test_ctrl_c_keeps_finished_members_and_the_rerun_resumes(scheduler, tmp_path):
    argv = [sys.executable, "-m", "gfbench.cli", "sweep", "--problem", "deep_linear", "--solver", "gd",
            "--steps", "1500", "--seed", "0,1,2,3,4,5", "--scheduler", scheduler, "--out", str(tmp_path), "--quiet"]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_at_default)
    try:
        deadline = time.monotonic() + 120
        while len(list((tmp_path / "members").glob("*.nc"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        stderr = process.communicate(timeout=60)[1]
    finally:
        process.kill()
    assert process.returncode == 130 and "re-run the same command to resume" in stderr
    finished = sorted(path.stem for path in (tmp_path / "members").iterdir())
    assert 2 <= len(finished) < 6  # interrupted midway; no temporary files are left behind
    records = json.loads((tmp_path / MANIFEST).read_text())["members"]
    assert sorted(d for d, r in records.items() if r["status"] == "completed") == finished
    assert all(gfbench.load(member_path(tmp_path, digest)).attrs["status"] == "completed" for digest in finished)
    resumed = sweep({"problem": "deep_linear", "solver": "gd", "steps": 1500, "seed": list(range(6))}, tmp_path,
                    scheduler=scheduler, progress=False)
    assert sorted(resumed.skipped) == finished and len(resumed.executed) == 6 - len(finished)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _dask_cluster(*worker_flags: str):
    """A dask scheduler and one single-threaded worker (``worker_flags`` added) as separate processes;
    yields the scheduler's address and stops both afterwards."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    dask = [sys.executable, "-m", "dask"]
    processes = []
    try:
        processes.append(subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":")[-1],
                                           "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        processes.append(subprocess.Popen([*dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                                           *worker_flags, "--no-dashboard"], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        deadline = time.monotonic() + 15
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_cli_sweep_on_separately_started_scheduler_and_worker(plugin_path, tmp_path):
    with _dask_cluster() as address:
        argv = ["sweep", "--problem", "failing_quadratic", "--solver", "gd", "--lr", "0.1,0.05", "--seed", "0,1",
                "--steps", "20", "--param", "dim=3", "--param", "fail_seed=1", "--scheduler", address,
                "--out", str(tmp_path), "--quiet"]
        completed = subprocess.run([sys.executable, "-m", "gfbench.cli", *argv], timeout=120, capture_output=True,
                                   text=True)
        assert completed.returncode == EXIT_MEMBERS_FAILED, completed.stderr
        assert "2 member(s) failed" in completed.stderr
        merged = load_sweep(tmp_path)
        assert merged["status"].values.tolist() == [["completed", "failed"], ["completed", "failed"]]
        worker = merged["worker"].sel(lr=0.1, seed=0).item()
        assert worker.startswith("tcp://127.0.0.1:") and worker != address

        # The same command again resumes: nothing left but the two failed members, which fail again.
        again = subprocess.run([sys.executable, "-m", "gfbench.cli", *argv[:-1]], timeout=120, capture_output=True,
                               text=True)
        assert again.returncode == EXIT_MEMBERS_FAILED and "(2 run, 2 already done)" in again.stdout


def _cli(*argv: str, timeout: float = 120, setup: str = "") -> subprocess.CompletedProcess:
    """``gfbench ARGV`` in a subprocess, after the Python statements ``setup``; killed after ``timeout`` s."""
    code = f"{setup}\nfrom gfbench.cli import main\nraise SystemExit(main({list(argv)!r}))"
    return subprocess.run([sys.executable, "-c", code], timeout=timeout, capture_output=True, text=True)


def test_local_cluster_listens_on_loopback_only():
    psutil = pytest.importorskip("psutil")
    from urllib.parse import urlparse

    with start_local_cluster(1) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert all(listener.listen_address.startswith("tcp://127.0.0.1:") for listener in cluster.scheduler.listeners)
        assert urlparse(cluster.dashboard_link).hostname == "127.0.0.1"
        # every socket this process and its workers (and nannies) listen on, the dashboard's included
        processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
        listening = [connection.laddr for process in processes for connection in process.net_connections("inet")
                     if connection.status == psutil.CONN_LISTEN]
        assert len(listening) >= 3 and {address.ip for address in listening} == {"127.0.0.1"}


def test_members_end_recorded_when_every_worker_has_died(plugin_path, tmp_path):
    # One worker without a nanny: the member that kills it leaves the scheduler with no worker at all,
    # and dask (allowed-failures 3) waits for one forever; the sweep must still end, every member recorded.
    with _dask_cluster("--no-nanny") as address:
        completed = _cli("sweep", "--problem", "failing_quadratic", "--solver", "gd", "--lr", "0.1", "--seed", "0,1,2",
                         "--steps", "5", "--param", "dim=3", "--param", "kill_seed=1", "--scheduler", address,
                         "--out", str(tmp_path), "--quiet",
                         setup="from gfbench.sweep import execute; execute.NO_WORKERS_S = 3", timeout=150)
        assert completed.returncode == EXIT_MEMBERS_FAILED, completed.stderr
        merged = load_sweep(tmp_path)
        assert set(merged["status"].values.tolist()) <= {"completed", "failed"}
        assert merged["status"].sel(seed=1).item() == "failed"
        assert "no dask worker" in merged["message"].sel(seed=1).item()


def test_a_second_sweep_into_the_same_folder_is_refused_and_the_first_completes(scheduler, tmp_path, capsys):
    argv = ["sweep", "--problem", "deep_linear", "--solver", "gd", "--steps", "1500", "--seed", "0,1,2,3",
            "--scheduler", scheduler, "--out", str(tmp_path), "--quiet"]
    first = subprocess.Popen([sys.executable, "-m", "gfbench.cli", *argv], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / MANIFEST).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert main(argv) == EXIT_USAGE
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "another sweep" in err and str(tmp_path) in err
        stderr = first.communicate(timeout=120)[1]
    finally:
        first.kill()
    assert first.returncode == EXIT_OK, stderr
    assert load_sweep(tmp_path)["status"].values.tolist() == ["completed"] * 4


def test_load_sweep_refuses_manifest_keys_that_are_not_digests(tmp_path):
    out = tmp_path / "a" / "b"
    out.mkdir(parents=True)
    (out.parent / "outside.nc").write_text("what members/../../outside.nc would read")
    record = {"config": {}, "file": "members/x.nc", "status": "completed"}
    for points, members in ((["../../outside"], {"../../outside": record}), (["0123456789abcdef"], {})):
        (out / MANIFEST).write_text(json.dumps({"gfbench_version": gfbench.__version__, "dims": [],
                                                "constants": {}, "points": points, "members": members}))
        with pytest.raises(gfbench.ConfigError) as error:
            load_sweep(out)
        assert "\n" not in str(error.value) and str(out) in str(error.value)
        assert "digest" in str(error.value) or "does not list" in str(error.value)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "notaurl::x"])
def test_unreachable_scheduler_exits_2_and_leaves_nothing(tmp_path, address):
    out = tmp_path / "never"
    completed = _cli("sweep", "--problem", "quadratic", "--solver", "gd", "--steps", "5", "--scheduler", address,
                     "--out", str(out), timeout=60)
    assert completed.returncode == EXIT_USAGE
    assert completed.stderr.count("\n") == 1 and address in completed.stderr and "Traceback" not in completed.stderr
    assert not out.exists()
