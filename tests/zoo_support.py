"""Shared helpers of the problem-zoo tests: where the MNIST copy for tests lives."""
import pytest

from gfbench.mnist import resolve_root

#: Exactly where gfbench itself looks: $GFBENCH_DATA, else ~/.cache/gfbench (CI points
#: GFBENCH_DATA at ../shared/data, the copy beside the repository).
SHARED_DATA = resolve_root()

requires_mnist = pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(),
                                    reason=f"no MNIST copy at {SHARED_DATA}/MNIST/raw (set GFBENCH_DATA)")
