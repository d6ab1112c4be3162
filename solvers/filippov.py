"""Gradient flow on a piecewise smooth loss, integrated as a Filippov system event by event."""
from __future__ import annotations

from gfbench.filippov import FilippovSwitching
from gfbench.ode import Flow, FlowSolver


class Filippov(FlowSolver):
    """Gradient flow dθ/dt ∈ −∂f(θ) in Filippov's sense, for f piecewise smooth (ReLU networks).

    Between events the flow with the activation pattern frozen, −∇f_D(θ), is smooth and is
    integrated by the adaptive method of ``gf``; an event (a ReLU input z_k(θ) reaching 0, or a
    sliding pair's equivalent control α_k reaching 0 or 1) is located on the step's dense output,
    the pattern switches there, and the integration restarts. Where both one-sided fields point
    into a surface z_k = 0 the flow slides on it with the ReLU derivative replaced by α_k ∈ [0, 1]
    chosen so that dz_k/dt = 0: the η → 0 limit of GD, which zig-zags across it. See
    ``gfbench.filippov`` for the maths and its limits (the equivalent control is solved exactly,
    in closed form within one ReLU layer and by Newton's method across layers).
    Piiroinen & Kuznetsov, ACM TOMS 34(3), 2008; Filippov (1988).

    On a problem without switching functions (``Problem.switching_functions`` empty) it is ``gf``
    itself: same steps, values and gradient counts. Same options and tolerances as ``gf``; the
    dataset also records ``n_crossings``, ``n_sliding_entries`` and ``n_sliding_exits``.
    """

    name = "filippov"

    def flow(self, field, theta0, lr) -> Flow:
        if not field.problem.switching_functions(theta0):
            return Flow(rhs=lambda theta: -field.gradient(theta))
        switching = FilippovSwitching(field, theta0)
        return Flow(rhs=switching.rhs, switching=switching)
