"""The implicit-gradient-regularisation flow: gradient flow on a modified loss."""
from __future__ import annotations

from gfbench.curvature.hessian import gradient_and_hessian_gradient
from gfbench.ode import Flow, FlowSolver


class IGR(FlowSolver):
    """IGR flow dθ/dt = −∇f̃(θ), f̃ = f + (η/4)‖∇f‖², i.e. −∇f − (η/2) ∇²f ∇f (Barrett & Dherin 2021).

    GD's modified equation to first order in η: θ_k − θ(kη) = O(η²) on a fixed horizon, where
    gradient flow has O(η). On a quadratic θ(t) = θ* + exp(−t(A + ηA²/2))(θ0 − θ*). Each
    evaluation is one gradient with its graph and one double backward through it (counted in
    ``n_evals`` and ``n_hvp``), 0.66–0.71 of the time of a plain gradient followed by a separate
    HVP (asv ``IGREvaluationVsSeparateHVP``); integrated like ``gf`` (same options and tolerances).
    """

    name = "igr"

    def flow(self, field, theta0, lr) -> Flow:
        def rhs(theta):
            grad, hessian_grad = gradient_and_hessian_gradient(field, theta)
            return -grad - 0.5 * lr * hessian_grad

        return Flow(rhs=rhs)
