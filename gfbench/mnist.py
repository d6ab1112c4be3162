"""MNIST from the standard IDX files, read with numpy in torchvision's folder layout.

The four files live in ``<root>/MNIST/raw/`` as ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (or the
same names with ``.gz``), exactly where ``torchvision.datasets.MNIST(root)`` keeps them. The root
is the ``data_dir`` argument, else the environment variable ``GFBENCH_DATA``, else
``~/.cache/gfbench``. When files are missing and torchvision is installed (``pip install
gfbench[mnist]``), torchvision downloads them (a folder named by ``data_dir`` or ``GFBENCH_DATA``
must exist; a failed download leaves nothing behind); otherwise a ConfigError names the missing files.
"""
from __future__ import annotations

import gzip
import os
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .params import ConfigError, Param

ENV_VAR = "GFBENCH_DATA"
DEFAULT_ROOT = Path.home() / ".cache" / "gfbench"
#: torchvision's normalisation constants: mean and standard deviation of the training pixels in [0, 1].
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081
TRAIN_SIZE, TEST_SIZE = 60_000, 10_000
#: EC21's code takes every 50th training example when at most 1001 are asked for.
STRIDE, MAX_STRIDED = 50, 1001

_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049

#: The ``data_dir`` parameter of every problem that reads MNIST. It says where the files are, not
#: what the problem is, so those problems take it out of ``params`` (labels and a dataset's
#: ``problem_params`` stay the same on every machine).
DATA_DIR_PARAM = Param("data_dir", str, None,
                       f"folder holding MNIST/raw/ (auto: ${ENV_VAR}, else ~/.cache/gfbench)")


def resolve_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir``, else ``$GFBENCH_DATA``, else ``~/.cache/gfbench``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return DEFAULT_ROOT


def _find(raw: Path, stem: str) -> Path | None:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing(root: Path) -> list[str]:
    raw = root / "MNIST" / "raw"
    return [stem for pair in _FILES.values() for stem in pair if _find(raw, stem) is None]


def _missing_message(root: Path, missing: list[str], why: str) -> str:
    return (f"MNIST files missing in {str(root / 'MNIST' / 'raw')!r}: {', '.join(missing)} (or their .gz){why}; "
            f"copy them there, or point --data-dir / ${ENV_VAR} at a folder holding MNIST/raw/")


def _ensure_files(root: Path, named_by: str | None) -> None:
    """Download through torchvision when files are missing and it is installed; else raise ConfigError.

    ``named_by`` says how the user named ``root`` (None: the default folder); a folder the user
    named must exist, since a download into a mistyped path would only hide the typo.
    """
    missing = _missing(root)
    if not missing:
        return
    if named_by is not None and not root.is_dir():
        raise ConfigError(_missing_message(root, missing, f", and the folder {str(root)!r} given by {named_by} "
                                                          "does not exist"))
    try:
        import torchvision
    except ImportError:
        raise ConfigError(_missing_message(root, missing, "") + ", or 'pip install gfbench[mnist]' (torchvision) "
                          "to download them") from None
    _download(torchvision, root, missing)
    if _missing(root):
        raise ConfigError(f"torchvision did not provide {', '.join(_missing(root))} in {str(root)!r}")


def _download(torchvision, root: Path, missing: list[str]) -> None:
    """Download MNIST into ``root`` with torchvision; when that fails (no network, Ctrl-C), remove what it
    created, so that no half-filled folder is left behind, and raise ConfigError for an error."""
    mnist_dir = root / "MNIST"
    created = [folder for folder in (mnist_dir, *mnist_dir.parents) if not folder.exists()]
    before = set() if created else set(mnist_dir.rglob("*"))
    try:
        for train in (True, False):
            torchvision.datasets.MNIST(str(root), train=train, download=True)
    except BaseException as error:
        if created:
            shutil.rmtree(created[-1], ignore_errors=True)
        else:
            for path in sorted(set(mnist_dir.rglob("*")) - before, reverse=True):  # children before their folder
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
        if not isinstance(error, Exception):
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(":")
        raise ConfigError(_missing_message(root, missing, f", and torchvision could not download them ({reason})")
                          ) from None


def _read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    header_ints = 2 + len(item_shape)
    header = np.frombuffer(data, dtype=">i4", count=header_ints) if len(data) >= 4 * header_ints else None
    if header is None or header[0] != magic or tuple(header[2:]) != item_shape:
        raise ConfigError(f"{str(path)!r} is not an MNIST IDX file (expected magic {magic}, items {item_shape})")
    count = int(header[1])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 * header_ints)
    if body.size != count * int(np.prod(item_shape, dtype=np.int64)):
        raise ConfigError(f"{str(path)!r} is truncated: header says {count} items")
    return body.reshape(count, *item_shape)


@lru_cache(maxsize=4)
def _load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    raw = root / "MNIST" / "raw"
    images_stem, labels_stem = _FILES[split]
    images = _read_idx(_find(raw, images_stem), _IMAGE_MAGIC, (28, 28))
    labels = _read_idx(_find(raw, labels_stem), _LABEL_MAGIC, ())
    if len(images) != len(labels):
        raise ConfigError(f"MNIST {split} files in {str(raw)!r} disagree: {len(images)} images, {len(labels)} labels")
    return images, labels


def load_split(split: str, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All images (uint8, N × 28 × 28) and labels (uint8, N) of ``split`` ("train" or "test").

    Read once per process and root (cached); the arrays are read-only.
    """
    named_by = "data_dir" if data_dir is not None else f"${ENV_VAR}" if os.environ.get(ENV_VAR) else None
    root = resolve_root(data_dir).resolve()
    _ensure_files(root, named_by)
    return _load_split(root, split)


def subset_indices(n: int, split: str) -> np.ndarray:
    """Indices of the ``n`` examples taken from ``split``.

    Training set: 0, 50, …, 50(n − 1) for n ≤ 1001 and 0, …, n − 1 beyond (EC21's code). Test
    set: the first n.
    """
    if split == "train" and n <= MAX_STRIDED:
        return np.arange(n) * STRIDE
    return np.arange(n)


def mnist_pixels(split: str, n: int, data_dir: str | os.PathLike | None = None,
                 classes: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): ``n`` examples of ``split`` whose digit is in ``classes`` (None: all ten), unnormalised.

    The examples of those digits, in file order, are indexed by ``subset_indices`` (the first n
    where its strided indices run past them; with all ten digits it is exactly ``subset_indices``).
    x = pixel/255 ∈ [0, 1], float64 of shape (n, 1, 28, 28); y = the position of each example's
    digit in ``classes`` (the digit itself for None), int64 of shape (n,).
    """
    images, labels = load_split(split, data_dir)
    digits = np.arange(10) if classes is None else np.asarray(classes)
    pool = np.flatnonzero(np.isin(labels, digits))
    if not 1 <= n <= len(pool):
        which = "" if classes is None else f" of digits {','.join(map(str, classes))}"
        raise ConfigError(f"MNIST {split} set has {len(pool)} examples{which}; asked for {n}")
    index = subset_indices(n, split)
    chosen = pool[index if index[-1] < len(pool) else np.arange(n)]
    position = np.zeros(10, dtype=np.int64)
    position[digits] = np.arange(len(digits))
    x = torch.from_numpy(images[chosen].astype(np.float64) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(position[labels[chosen]])


def mnist_tensors(split: str, n: int, data_dir: str | os.PathLike | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): ``n`` examples of ``split`` (see ``subset_indices``).

    x = (pixel/255 − 0.1307)/0.3081, float64 of shape (n, 1, 28, 28); y the digits, int64 of shape (n,).
    """
    x, y = mnist_pixels(split, n, data_dir)
    return (x - PIXEL_MEAN) / PIXEL_STD, y
