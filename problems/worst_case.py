"""A worst case for GD following GF: a non-convex objective whose Hessian has λmin = −m along the flow."""
from __future__ import annotations

import math

import torch

from gfbench.params import AT_LEAST_ONE, POSITIVE, Param
from gfbench.problem import Problem


class WorstCase(Problem):
    """f(θ) = g(θ_1) + (μ/2) Σ_{i≥2} θ_i², g even and C², g'' = −m on the band |x| ≤ a (EC21 Section 3).

    g''(x) = −m for |x| ≤ a, rises linearly to +m on a ≤ |x| ≤ 2a and stays m beyond, so
    g(x) = c − (m/2)x² on the band and g ≥ 0 with its minimum 0 at |x| = 3a (c = 13ma²/6).
    Hence f ≥ 0, f is β-smooth with β = max(m, μ), and inf λmin(∇²f) = −m: EC21 Corollary 1
    applies with its m equal to ``m``, and the bound is attained on the whole band.

    θ0: θ_1 = ±``init_scale`` (random sign), θ_i ~ init_scale · N(0, 1) for i ≥ 2, from the seed.
    While θ_1 stays in the band the trajectories are closed-form (``gf_solution``, ``gd_solution``):
    GF   θ_1(t) = θ_1(0) e^{mt},       θ_i(t) = θ_i(0) e^{−μt};
    GD   θ_1,k = θ_1(0) (1 + ηm)^k,    θ_i,k = θ_i(0) (1 − ημ)^k.
    GF leaves the band at t_exit = ln(a/|θ_1(0)|)/m; GD, slower, later. The gap
    θ_1(kη) − θ_1,k = θ_1(0)(e^{mt} − (1 + ηm)^{t/η}) ≈ θ_1(0) e^{mt} m²ηt/2 grows like e^{mt}, so
    staying within ε up to time t needs η = O(ε e^{−mt}) (``step_size_bound`` gives Corollary 1's).
    """

    name = "worst_case"
    parameters = (
        Param("dim", int, 2, "dimension d: one concave coordinate and d-1 convex ones", bounds=AT_LEAST_ONE),
        Param("m", float, 1.0, "negative curvature: Hessian eigenvalue -m on the band |theta_1| <= a",
              bounds=POSITIVE),
        Param("mu", float, 1.0, "curvature of the convex coordinates theta_2..theta_d", bounds=POSITIVE),
        Param("band", float, 1.0, "half-width a of the band where g(x) = c - (m/2) x^2", bounds=POSITIVE),
        Param("init_scale", float, 1e-3, "|theta_1(0)|, and the std of the other coordinates",
              bounds=POSITIVE),
    )
    # With init_scale = 1e-3 and a = 1, GF stays in the band until t_exit = ln(1000) ≈ 6.9; T = 5
    # keeps both runs on the closed forms. At η = 0.01 the GD–GF gap reaches ≈ ηT/2 = 2.5 % of
    # |θ_1(5)| ≈ 0.15, having grown like e^{mt} (the suite's tests use smaller ε to map the threshold).
    default_lr = 0.01
    default_steps = 500

    def build(self) -> None:
        m, a = self.params["m"], self.params["band"]
        self.offset = 13.0 * m * a * a / 6.0

    @property
    def dim(self) -> int:
        return self.params["dim"]

    @property
    def smoothness(self) -> float:
        """β = sup ‖∇²f‖ = max(m, μ)."""
        return max(self.params["m"], self.params["mu"])

    def sample_init(self, generator: torch.Generator) -> torch.Tensor:
        scale = self.params["init_scale"]
        theta0 = scale * torch.randn(self.dim, generator=generator, dtype=torch.float64)
        theta0[0] = scale if torch.rand(1, generator=generator).item() < 0.5 else -scale
        return theta0

    def concave_part(self, x: torch.Tensor) -> torch.Tensor:
        """g(x) piecewise: c − mx²/2 (|x| ≤ a), cubic (a ≤ |x| ≤ 2a), quadratic, minimum 0 at 3a (|x| ≥ 2a)."""
        m, a = self.params["m"], self.params["band"]
        r = torch.abs(x)
        s = torch.clamp(r - a, 0.0, a)           # position inside the cubic piece
        u = torch.clamp(r - 2.0 * a, min=0.0)    # position beyond it
        band = self.offset - 0.5 * m * torch.clamp(r, max=a) ** 2
        cubic = -m * a * s - 0.5 * m * s ** 2 + m * s ** 3 / (3.0 * a)
        outer = -m * a * u + 0.5 * m * u ** 2
        return band + cubic + outer

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        return self.concave_part(theta[0]) + 0.5 * self.params["mu"] * torch.sum(theta[1:] ** 2)

    def exit_time(self, theta0: torch.Tensor) -> float:
        """t_exit = ln(a/|θ_1(0)|)/m, when GF leaves the band (0 if it starts outside)."""
        return max(0.0, math.log(self.params["band"] / abs(float(theta0[0]))) / self.params["m"])

    def _rates(self, theta0: torch.Tensor) -> torch.Tensor:
        rates = torch.full_like(theta0, -self.params["mu"])
        rates[0] = self.params["m"]
        return rates

    def gf_solution(self, t, theta0: torch.Tensor) -> torch.Tensor:
        """θ(t) for times t (scalar or 1-D), shape (len(t), d): θ_i(0) e^{−λ_i t}, λ = (−m, μ, …, μ).

        Raises ValueError beyond t_exit, where the flow leaves the band and the closed form ends.
        """
        t = torch.as_tensor(t, dtype=theta0.dtype).reshape(-1, 1)
        if float(t.max()) > self.exit_time(theta0) * (1 + 1e-12):
            raise ValueError(f"worst_case closed-form GF holds for t <= t_exit = {self.exit_time(theta0):.6g}, "
                             f"got t = {float(t.max()):g}")
        return theta0 * torch.exp(self._rates(theta0) * t)

    def gd_solution(self, k, lr: float, theta0: torch.Tensor) -> torch.Tensor:
        """θ_k for iterations k (scalar or 1-D), shape (len(k), d): θ_i(0)(1 − ηλ_i)^k, λ = (−m, μ, …, μ).

        Raises ValueError once |θ_1,k| would leave the band, where the closed form ends.
        """
        k = torch.as_tensor(k, dtype=theta0.dtype).reshape(-1, 1)
        solution = theta0 * (1.0 + lr * self._rates(theta0)) ** k
        if float(solution[:, 0].abs().max()) > self.params["band"]:
            raise ValueError(f"worst_case closed-form GD holds while |theta_1| <= {self.params['band']:g}; "
                             f"iteration {int(k.max())} at lr={lr:g} leaves the band")
        return solution

    def max_gap(self, horizon: float, lr: float, theta0: torch.Tensor) -> float:
        """max over 1 ≤ k ≤ ⌊t̃/η⌋ of ‖θ_k − θ(kη)‖, from the closed forms (t̃ = ``horizon`` ≤ t_exit)."""
        steps = torch.arange(1, int(math.floor(horizon / lr * (1 + 1e-12))) + 1, dtype=theta0.dtype)
        if steps.numel() == 0:
            return 0.0
        gap = self.gd_solution(steps, lr, theta0) - self.gf_solution(steps * lr, theta0)
        return float(torch.linalg.vector_norm(gap, dim=1).max())

    def threshold_step_size(self, horizon: float, epsilon: float, theta0: torch.Tensor) -> float:
        """The largest η (to 0.1 %) with ``max_gap`` ≤ ε up to t̃ = ``horizon``, by bisection on log η.

        The gap grows with η, so GD ε-follows GF up to t̃ exactly for η below this threshold.
        """
        low, high = 1e-12, horizon
        if self.max_gap(horizon, high, theta0) <= epsilon:
            return high
        while high / low > 1.001:
            middle = math.sqrt(low * high)
            low, high = (middle, high) if self.max_gap(horizon, middle, theta0) <= epsilon else (low, middle)
        return low

    def step_size_bound(self, horizon: float, epsilon: float, theta0: torch.Tensor) -> float:
        """EC21's sufficient step size for ‖θ_k − θ(kη)‖ ≤ ε up to t̃ = ``horizon`` (θ_0 = θ(0)).

        Theorem 3 with Corollary 1's constants, m(·) ≡ m, β = max(m, μ) and
        γ = √(2β f(θ(0))) + βε: η < ε m / (β γ (e^{m t̃} − 1)). (Our copy of Corollary 1 prints an
        extra factor e^{m t̃}, which would keep the bound from shrinking, against the paper's own
        text and Theorem 3; we use the form that Theorem 3 gives.)
        """
        beta, m = self.smoothness, self.params["m"]
        gamma = math.sqrt(2.0 * beta * float(self.loss(theta0))) + beta * epsilon
        return epsilon * m / (beta * gamma * math.expm1(m * horizon))
