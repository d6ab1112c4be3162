"""Shared helpers of the problem-zoo tests: where the MNIST copy for tests lives."""
from pathlib import Path

import pytest

#: ../shared/data beside the repository (holds MNIST/raw/); the same path from /work/main, a worktree or a CI clone.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

requires_mnist = pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(),
                                    reason=f"MNIST copy for tests not found at {SHARED_DATA}/MNIST/raw")
