"""The numpy IDX reader against the facts the data README states, and its error paths."""
import gzip
import shutil

import numpy as np
import pytest
import torch

import gfbench
from gfbench import mnist
from gfbench.cli import main
from gfbench.params import ConfigError
from zoo_support import SHARED_DATA, requires_mnist

pytestmark = requires_mnist


def test_reads_the_standard_files(mnist_env):
    images, labels = mnist.load_split("train")
    test_images, test_labels = mnist.load_split("test")
    assert images.shape == (60_000, 28, 28) and test_images.shape == (10_000, 28, 28)
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert abs(images.mean() / 255.0 - mnist.PIXEL_MEAN) < 5e-5
    assert abs(images.std() / 255.0 - mnist.PIXEL_STD) < 5e-5
    assert set(np.unique(test_labels)) == set(range(10))


def test_subset_follows_the_paper_and_normalises(mnist_env):
    images, labels = mnist.load_split("train")
    x, y = mnist.mnist_tensors("train", 1000)
    assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float64
    assert torch.equal(y, torch.from_numpy(labels[0:50_000:50].astype(np.int64)))
    expected = (images[49_950].astype(np.float64) / 255 - 0.1307) / 0.3081
    assert np.allclose(x[-1, 0].numpy(), expected, rtol=0, atol=1e-15)
    assert mnist.subset_indices(1001, "train")[-1] == 50_000
    assert mnist.subset_indices(1002, "train")[-1] == 1001
    assert mnist.subset_indices(5, "test").tolist() == [0, 1, 2, 3, 4]


def test_gzip_variants_are_read(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for source in (SHARED_DATA / "MNIST" / "raw").iterdir():
        if "t10k" in source.name or "labels" in source.name:
            with open(source, "rb") as src, gzip.open(raw / f"{source.name}.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            (raw / source.name).symlink_to(source)
    x, y = mnist.mnist_tensors("test", 7, data_dir=tmp_path)
    x_ref, y_ref = mnist.mnist_tensors("test", 7, data_dir=SHARED_DATA)
    assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_missing_files_name_themselves(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torchvision", None)  # as here: not installed
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte").symlink_to(
        SHARED_DATA / "MNIST" / "raw" / "train-labels-idx1-ubyte")
    with pytest.raises(ConfigError) as error:
        gfbench.get_problem("relu_fc", data_dir=str(tmp_path))
    message = str(error.value)
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "train-labels-idx1-ubyte" not in message.split("(or")[0]
    assert "GFBENCH_DATA" in message and "pip install" in message and "\n" not in message


def test_cli_without_data_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "torchvision", None)
    out = tmp_path / "run.nc"
    code = main(["run", "--problem", "relu_fc", "--solver", "gd", "--steps", "1", "--quiet",
                 "--data-dir", str(tmp_path / "nowhere"), "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "MNIST files missing" in capsys.readouterr().err


def test_data_dir_is_not_part_of_the_problem_identity(mnist_env, tmp_path):
    import json
    problem = gfbench.get_problem("linear_fc", n_train=20, data_dir=str(SHARED_DATA))
    assert "data_dir" not in problem.params and "data_dir" not in problem.label
    ds = gfbench.run(problem, "gd", lr=0.001, steps=1, progress=False)
    again = gfbench.get_problem(ds.attrs["problem"], **json.loads(ds.attrs["problem_params"]))
    theta0 = problem.init(0)
    assert float(again.loss(theta0)) == float(problem.loss(theta0))

