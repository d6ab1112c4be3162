"""Gradient flow, integrated to tolerance by an adaptive Runge–Kutta method; on a piecewise smooth
loss, optionally as a Filippov system event by event."""
from __future__ import annotations

from gfbench.filippov import FilippovSwitching
from gfbench.ode import FLOW_PARAMETERS, Flow, FlowSolver
from gfbench.params import Param

KINKS = ("events", "jump_corrected", "step_control")


class GF(FlowSolver):
    """Gradient flow dθ/dt = −∇f(θ) (EC21 Eq. 5), solved by torchdiffeq's adaptive methods.

    Reported at t = kη on the GD grid, so ``ds_gd.theta - ds_gf.theta`` is ‖θ_k − θ(kη)‖.
    Method and tolerances default to the problem's for the treatment of the kinks in use
    (``Problem.flow_defaults_by_kinks``, else ``flow_method`` and ``flow_tolerances``), else dopri5
    at rtol=1e-9, atol=1e-11 in float64 (1e-5, 1e-7 in float32). The dataset records the function evaluations (``nfe``) and accepted/rejected steps.

    Where f is only piecewise smooth (a ReLU network: ``Problem.switching_functions``), ∇f jumps
    across the surfaces z_k(θ) = 0 and the flow is meant in Filippov's sense, dθ/dt ∈ −∂f(θ).
    ``kinks=events``: between events the flow with the activation pattern frozen, −∇f_D(θ), is
    smooth and is integrated by the adaptive method; an event (a ReLU input z_k reaching 0) is
    located on the step's dense output, the pattern switches there and the integration restarts;
    a sliding pair whose equivalent control α_k reaches 0 or 1 leaves its surface at the end of
    that step (the field is continuous there). Where both one-sided fields point
    into a surface the flow slides on it with the ReLU derivative replaced by α_k ∈ [0, 1] chosen so
    that dz_k/dt = 0: the η → 0 limit of GD, which zig-zags across it (``gfbench.filippov`` for the
    maths and its limits). Piiroinen & Kuznetsov, ACM TOMS 34(3), 2008; Filippov (1988). The
    dataset also records ``n_crossings``, ``n_sliding_entries``, ``n_sliding_exits`` and
    ``n_jacobian_example_passes`` (single-example backward passes that formed ∂z_S/∂θ; n of them
    cost about one gradient, which ``n_grad_evals`` does not count).
    ``kinks=jump_corrected``: as events, but a transversal crossing is not stopped at: at the end
    of the step over which z_k changed sign its gate switches and the state gets the jump the
    step missed, ∫_{τ_k}^{t1} ΔF_k with ΔF_k = −(D'_k − D_k) g_k ∇z_k (τ_k and g_k along the step
    from the dense output), projected so that the sliding pairs stay on their surfaces, computed
    on the crossing examples alone (``Problem.gated_loss_of``); local error O(h²)|ΔF_k| per
    crossing instead of a restart each, for wide or many-example nets crossing by the thousand. Entries
    into sliding (the field beyond the surface points back) still stop the integration and are
    decided as with events; ``n_crossings_in_step`` counts the crossings passed, ``n_passes_declined``
    the steps located instead because the state their pass landed on contradicted it.
    ``kinks=step_control``: −∇f is integrated as if smooth and the step control alone resolves each
    jump (its step collapses where the flow slides). Default: the problem's ``flow_kinks``. On a
    smooth problem both are the same integration: same steps, values and gradient counts.
    """

    name = "gf"
    parameters = (*FLOW_PARAMETERS,
                  Param("kinks", str, None, "events: Filippov flow, switching event by event; jump_corrected: the same, "
                        "transversal crossings passed inside a step with a jump correction; step_control: "
                        "integrate -grad f as if smooth; auto: the problem's", choices=KINKS))

    def flow(self, field, theta0, lr) -> Flow:
        kinks = self.effective_options(field.problem, theta0.dtype)["kinks"]
        if kinks == "step_control" or not field.problem.switching_functions(theta0):
            return Flow(rhs=lambda theta: -field.gradient(theta))
        switching = FilippovSwitching(field, theta0, crossings_in_step=kinks == "jump_corrected")
        return Flow(rhs=switching.rhs, switching=switching)
