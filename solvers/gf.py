"""Gradient flow, integrated to tolerance by an adaptive Runge–Kutta method."""
from __future__ import annotations

from gfbench.ode import Flow, FlowSolver


class GF(FlowSolver):
    """Gradient flow dθ/dt = −∇f(θ) (EC21 Eq. 5), solved by torchdiffeq's adaptive methods.

    Reported at t = kη on the GD grid, so ``ds_gd.theta - ds_gf.theta`` is ‖θ_k − θ(kη)‖.
    Tolerances default to rtol=1e-9, atol=1e-11 in float64 (1e-5, 1e-7 in float32). The
    dataset records the function evaluations (``nfe``) and accepted/rejected steps.
    """

    name = "gf"

    def flow(self, field, theta0, lr) -> Flow:
        return Flow(rhs=lambda theta: -field.gradient(theta))
