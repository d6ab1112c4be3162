"""What gfbench writes and where: inputs never overwritten, modes from the umask, no temporary file left
by a signal, compressed datasets, MNIST never half-downloaded, and one-line errors for foreign files."""
import os
import signal
import subprocess
import sys
import time
import types

import netCDF4
import numpy as np
import pytest
import xarray as xr

import gfbench
from gfbench import mnist
from gfbench.cli import _raise_terminated, main
from gfbench.dataset import atomic_write
from signal_support import sigint_at_default


@pytest.fixture(scope="module")
def runs():
    """Two quadratic runs with θ, comparable with each other."""
    problem = gfbench.get_problem("quadratic", dim=4)
    return [gfbench.run(problem, "gd", lr=lr, steps=20, save_params=True, progress=False) for lr in (0.1, 0.05)]


@pytest.fixture
def saved(runs, tmp_path, monkeypatch):
    """a.nc and b.nc in tmp_path, the working folder."""
    monkeypatch.chdir(tmp_path)
    for name, ds in zip("ab", runs):
        gfbench.save(ds, tmp_path / f"{name}.nc")
    return tmp_path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("gfbench: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("spelling", ["b.nc", "./b.nc", "absolute", "link.nc", "hardlink.nc"])
def test_compare_and_plot_refuse_an_output_that_is_an_input(saved, capsys, spelling):
    (saved / "link.nc").symlink_to("b.nc")
    os.link(saved / "b.nc", saved / "hardlink.nc")
    out = str(saved / "b.nc") if spelling == "absolute" else spelling
    before = (saved / "b.nc").read_bytes()
    assert main(["compare", "a.nc", "b.nc", "--out", out]) == 2
    assert repr(out) in _one_line_error(capsys)
    assert main(["compare", "a.nc", "--ref", "b.nc", "--out", out]) == 2
    assert repr(out) in _one_line_error(capsys)
    assert main(["plot", "b.nc", "--out", out]) == 2
    assert repr(out) in _one_line_error(capsys)
    assert (saved / "b.nc").read_bytes() == before and (saved / "link.nc").is_symlink()
    assert sorted(path.name for path in saved.iterdir()) == ["a.nc", "b.nc", "hardlink.nc", "link.nc"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_mode_of_the_umask(runs, saved, umask, mode):
    previous = os.umask(umask)
    try:
        gfbench.save(runs[0], saved / "run.nc")
        atomic_write(saved / "text.json", lambda tmp: open(tmp, "w").write("{}"))  # as the sweep manifest
        assert main(["compare", "a.nc", "b.nc", "--out", "cmp.nc"]) == 0
        assert main(["plot", "a.nc", "--out", "a.png"]) == 0
    finally:
        os.umask(previous)
    for name in ("run.nc", "text.json", "cmp.nc", "a.png"):
        assert (saved / name).stat().st_mode & 0o777 == mode, name


def test_sigterm_during_a_write_removes_the_temporary_file(tmp_path):
    def write(tmp):
        open(tmp, "w").write("partial")
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, _raise_terminated)  # as gfbench.cli.main installs it
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic_write(tmp_path / "x.nc", write)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_a_long_run_keeps_the_prefix_and_leaves_no_temporary_file(tmp_path, signum, code):
    out = tmp_path / "long.nc"
    progress = tmp_path / "stderr.txt"
    with open(progress, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "gfbench.cli", "run", "--problem", "deep_linear",
                                    "--solver", "gd", "--steps", "2000000", "--record-every", "1000",
                                    "--out", str(out)], cwd=tmp_path, stderr=stderr, text=True,
                                   preexec_fn=sigint_at_default)
        try:
            deadline = time.monotonic() + 120
            # the progress bar appears once the run loop has run 2 s, well after the signal handlers are set
            while "deep_linear/gd" not in progress.read_text() and time.monotonic() < deadline:
                assert process.poll() is None, progress.read_text()
                time.sleep(0.1)
            process.send_signal(signum)
            process.wait(timeout=60)
        finally:
            process.kill()
    assert process.returncode == code, progress.read_text()
    assert "wrote the recorded prefix" in progress.read_text()
    ds = gfbench.load(out)
    gfbench.validate_dataset(ds)
    assert ds.attrs["status"] == "interrupted" and 0 < int(ds.step[-1]) < 2_000_000
    assert ds.attrs["message"] == f"interrupted after recording step {int(ds.step[-1])}"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["long.nc", "stderr.txt"]


def test_saved_datasets_are_compressed_and_load_identical(tmp_path):
    ds = gfbench.run("deep_linear", "gd", steps=300, save_params=True, progress=False)
    ds["note"] = ("time", np.full(ds.sizes["time"], "ok", dtype=object), {"long_name": "a string variable"})
    gfbench.save(ds, tmp_path / "run.nc")
    assert (tmp_path / "run.nc").stat().st_size < ds.theta.nbytes / 10
    with netCDF4.Dataset(tmp_path / "run.nc") as nc:
        assert nc["theta"].filters()["zlib"] and nc["theta"].filters()["shuffle"]
        assert nc["step"].filters()["zlib"] and not nc["step"].filters()["shuffle"]
    loaded = gfbench.load(tmp_path / "run.nc")
    xr.testing.assert_identical(ds, loaded)
    assert "zlib" not in ds.theta.encoding  # save leaves the caller's dataset as it was
    # a dataset read from an uncompressed (contiguous) file is written again, compressed
    ds.to_netcdf(tmp_path / "plain.nc", engine="netcdf4")
    gfbench.save(gfbench.load(tmp_path / "plain.nc"), tmp_path / "again.nc")
    xr.testing.assert_identical(gfbench.load(tmp_path / "again.nc"), ds)


def test_plot_of_an_unknown_variable_lists_those_it_can_plot(saved, capsys):
    for var in ("a/b", "theta", "nope"):
        assert main(["plot", "a.nc", "--var", var]) == 2
        err = _one_line_error(capsys)
        assert repr(var) in err and "available: loss, grad_norm, distance_from_init" in err
    assert sorted(path.name for path in saved.iterdir()) == ["a.nc", "b.nc"]


def test_plot_default_path_keeps_an_odd_variable_name_in_one_file_name(runs, saved):
    ds = runs[0].assign({"loss: x y": runs[0].loss})
    gfbench.save(ds, saved / "odd.nc")
    assert main(["plot", "odd.nc", "--var", "loss: x y"]) == 0
    assert (saved / "odd-loss__x_y.png").is_file()


@pytest.mark.parametrize("command", [["info"], ["plot"], ["compare", "a.nc"]])
def test_commands_refuse_a_foreign_netcdf_in_one_line(saved, capsys, command):
    xr.Dataset({"x": ("n", [1.0])}, attrs={"schema_version": 1}).to_netcdf(saved / "foreign.nc")
    assert main([*command, "foreign.nc"]) == 2
    assert "'foreign.nc' is not a valid gfbench run dataset: dataset lacks attrs" in _one_line_error(capsys)


class _FailingDownload:
    """torchvision.datasets.MNIST as it fails without network: the raw folder and a partial file made, then
    RuntimeError; ``calls`` counts the attempts."""

    calls = 0

    def __init__(self, root, train, download):
        type(self).calls += 1
        raw = os.path.join(root, "MNIST", "raw")
        os.makedirs(raw, exist_ok=True)
        open(os.path.join(raw, "train-images-idx3-ubyte.gz"), "wb").write(b"\x1f\x8b partial")
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://example/, got:\n"
                           "<urlopen error [Errno -2] Name or service not known>\n")


@pytest.fixture
def failing_torchvision(monkeypatch):
    _FailingDownload.calls = 0
    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(MNIST=_FailingDownload))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    return _FailingDownload


@pytest.mark.parametrize("how", ["--data-dir", "--param", "env"])
def test_a_named_mnist_folder_that_does_not_exist_is_refused(tmp_path, monkeypatch, capsys, failing_torchvision,
                                                             how):
    folder = tmp_path / "nonexistent"
    monkeypatch.delenv(mnist.ENV_VAR, raising=False)
    given = {"--data-dir": ["--data-dir", str(folder)], "--param": ["--param", f"data_dir={folder}"], "env": []}[how]
    if how == "env":
        monkeypatch.setenv(mnist.ENV_VAR, str(folder))
    out = tmp_path / "run.nc"
    assert main(["run", "--problem", "relu_fc", "--solver", "gd", "--steps", "1", "--quiet", "--out", str(out),
                 *given]) == 2
    err = _one_line_error(capsys)
    assert repr(str(folder)) in err and "does not exist" in err and "MNIST/raw" in err
    assert failing_torchvision.calls == 0 and list(tmp_path.iterdir()) == []


def test_a_failed_download_names_the_files_and_leaves_nothing_behind(tmp_path, capsys, failing_torchvision):
    (tmp_path / "MNIST").mkdir()
    (tmp_path / "MNIST" / "mine.txt").write_text("kept")
    assert main(["run", "--problem", "relu_fc", "--solver", "gd", "--steps", "1", "--quiet",
                 "--data-dir", str(tmp_path), "--out", str(tmp_path / "run.nc")]) == 2
    err = _one_line_error(capsys)
    assert repr(str(tmp_path / "MNIST" / "raw")) in err and "t10k-labels-idx1-ubyte" in err
    assert "could not download them (Error downloading train-images-idx3-ubyte.gz)" in err
    assert failing_torchvision.calls == 1
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == ["MNIST", "MNIST/mine.txt"]


def test_the_default_folder_is_downloaded_into_and_removed_when_that_fails(tmp_path, monkeypatch,
                                                                          failing_torchvision):
    monkeypatch.delenv(mnist.ENV_VAR, raising=False)
    monkeypatch.setattr(mnist, "DEFAULT_ROOT", tmp_path / "home" / ".cache" / "gfbench")
    with pytest.raises(gfbench.ConfigError, match="could not download"):
        mnist.load_split("test")
    assert failing_torchvision.calls == 1 and list(tmp_path.iterdir()) == []

    def download(root, train, download):  # a working download writes the IDX files
        raw = os.path.join(root, "MNIST", "raw")
        os.makedirs(raw, exist_ok=True)
        for images, labels in mnist._FILES.values():
            open(os.path.join(raw, images), "wb").write(np.array([2051, 3, 28, 28], ">i4").tobytes() + bytes(3 * 784))
            open(os.path.join(raw, labels), "wb").write(np.array([2049, 3], ">i4").tobytes() + bytes([7, 1, 4]))

    monkeypatch.setattr(sys.modules["torchvision"].datasets, "MNIST", download)
    assert mnist.load_split("test")[1].tolist() == [7, 1, 4]
