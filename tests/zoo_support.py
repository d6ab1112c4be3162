"""Shared helpers of the tests: where the MNIST copy lives, and a problem whose gradient flow blows up."""
import pytest
import torch

from gfbench.mnist import resolve_root
from gfbench.problem import Problem

#: Exactly where gfbench itself looks: $GFBENCH_DATA, else ~/.cache/gfbench (CI points
#: GFBENCH_DATA at ../shared/data, the copy beside the repository).
SHARED_DATA = resolve_root()

requires_mnist = pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(),
                                    reason=f"no MNIST copy at {SHARED_DATA}/MNIST/raw (set GFBENCH_DATA)")


class Blowup(Problem):
    """f(θ) = −θ⁴/4: GF θ' = θ³ from θ0 = 1.05 reaches infinity at t_e = 1/(2θ0²) ≈ 0.4535."""

    name = "blowup"
    default_lr, default_steps = 0.01, 100

    def build(self):
        pass

    @property
    def dim(self):
        return 1

    def sample_init(self, generator):
        return torch.full((1,), 1.05, dtype=torch.float64)

    def loss(self, theta):
        return -(theta ** 4).sum() / 4
