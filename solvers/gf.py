"""Gradient flow, integrated to tolerance by an adaptive Runge–Kutta method."""
from __future__ import annotations

from gfbench.ode import FLOW_PARAMETERS, FlowIntegration, flow_options
from gfbench.solver import Solver


class GF(Solver):
    """Gradient flow dθ/dt = −∇f(θ) (EC21 Eq. 5), solved by torchdiffeq's adaptive methods.

    Reported at t = kη on the GD grid, so ``ds_gd.theta - ds_gf.theta`` is ‖θ_k − θ(kη)‖.
    Tolerances default to rtol=1e-9, atol=1e-11 in float64 (1e-5, 1e-7 in float32). The
    dataset records the function evaluations (``nfe``) and accepted/rejected steps.
    """

    name = "gf"
    parameters = FLOW_PARAMETERS

    def effective_options(self, dtype):
        return flow_options(self.options, dtype)

    def start(self, field, theta0, lr) -> FlowIntegration:
        options = flow_options(self.options, theta0.dtype)
        return FlowIntegration(field, theta0, lr, rhs=lambda theta: -field.gradient(theta), options=options)
