"""The quadratic f(θ) = ½ (θ − θ*)ᵀ A (θ − θ*): the suite's analytic test bed."""
from __future__ import annotations

import math

import torch

from gfbench.memory import FLOAT64
from gfbench.params import AT_LEAST_ONE, NON_NEGATIVE, ConfigError, Param
from gfbench.problem import GlobalCurvature, Problem


class Quadratic(Problem):
    """f(θ) = ½ (θ − θ*)ᵀ A (θ − θ*), A = Q diag(λ) Qᵀ.

    Q is a random rotation (QR of a Gaussian matrix, signs fixed) and θ* ~ N(0, I), both drawn
    from ``data_seed``; θ0 ~ N(0, I) from the run's seed. The eigenvalues λ run from
    ``lambda_min`` to ``lambda_max``, log-spaced when both are positive and evenly spaced
    otherwise (a negative ``lambda_min`` gives an indefinite quadratic whose θ* is a saddle).

    Closed forms (used by the tests): GD θ_k = θ* + (I − ηA)^k (θ0 − θ*); GF
    θ(t) = θ* + exp(−tA)(θ0 − θ*). GD is stable iff η·max|λ| < 2 for λ > 0.
    """

    name = "quadratic"
    parameters = (
        Param("dim", int, 20, "dimension d of theta", bounds=AT_LEAST_ONE),
        Param("lambda_min", float, 0.01, "smallest Hessian eigenvalue (negative: indefinite)"),
        Param("lambda_max", float, 1.0, "largest Hessian eigenvalue"),
        Param("data_seed", int, 0, "seed of the rotation Q and the minimiser theta*", bounds=NON_NEGATIVE),
    )
    # η·λmax = 0.1 is well inside GD's stability region; T = 1000 shrinks the slowest mode
    # (λ = 0.01) by e^-10 and the loss by e^-20: the run visibly reaches the minimum.
    default_lr = 0.1
    default_steps = 10_000

    def build(self) -> None:
        d, lo, hi = self.params["dim"], self.params["lambda_min"], self.params["lambda_max"]
        if lo > hi:
            raise ConfigError(f"problem 'quadratic' needs lambda_min <= lambda_max, got {lo!r} > {hi!r}")
        generator = torch.Generator().manual_seed(self.params["data_seed"])
        q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))
        if lo > 0:
            self.eigenvalues = torch.logspace(math.log10(lo), math.log10(hi), d, dtype=torch.float64)
        else:
            self.eigenvalues = torch.linspace(lo, hi, d, dtype=torch.float64)
        self.eigenvectors = q
        self.matrix = (q * self.eigenvalues) @ q.T
        self.theta_star = torch.randn(d, generator=generator, dtype=torch.float64)

    def estimated_bytes(self) -> int:
        return 4 * FLOAT64 * self.params["dim"] ** 2  # the Gaussian draw, Q, R and the matrix A: d × d each

    @property
    def dim(self) -> int:
        return self.params["dim"]

    def sample_init(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(self.dim, generator=generator, dtype=torch.float64)

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        delta = theta - self.theta_star
        return 0.5 * delta @ (self.matrix @ delta)

    def hessian(self) -> torch.Tensor:
        """A (d × d), the constant Hessian."""
        return self.matrix

    def global_curvature(self) -> GlobalCurvature:
        """β = max|λ(A)|, m = −λmin(A); f ≥ 0 iff A is positive semidefinite."""
        lo, hi = float(self.eigenvalues.min()), float(self.eigenvalues.max())
        return GlobalCurvature(beta=max(abs(lo), abs(hi)), m=-lo, nonnegative=lo >= 0)

    def minimizer(self) -> torch.Tensor:
        """θ* (the unique stationary point; a saddle when lambda_min < 0)."""
        return self.theta_star
