"""The second-order modified flow of the talk: gradient flow with an η-sized inertia term."""
from __future__ import annotations

import torch

from gfbench.curvature.hessian import gradient_and_hessian_gradient
from gfbench.ode import FLOW_PARAMETERS, Flow, FlowSolver
from gfbench.params import Param

INITIAL_VELOCITIES = ("slow_manifold", "gradient", "zero")
ERROR_CONTROLS = ("theta", "state")


class SecondOrder(FlowSolver):
    """Second-order flow dθ/dt = −∇f(θ) − (η/2) d²θ/dt² (the talk; Kunin et al. 2020).

    That is (η/2) θ̈ + θ̇ = −∇f(θ), integrated as the first-order system θ̇ = v,
    v̇ = (2/η)(−∇f(θ) − v) in y = (θ, v) ∈ R^{2d}.

    Initial velocity (``initial_velocity``): the flow has a slow manifold v = V(θ) and a fast
    mode decaying like e^{−2t/η}. Expanding V = V0 + ηV1 + … in (η/2) DV·V = −∇f − V gives
    V0 = −∇f, V1 = −½ ∇²f ∇f, so ``slow_manifold`` (default) starts at v(0) = −∇f(θ0) −
    (η/2) ∇²f(θ0) ∇f(θ0) (one HVP): the fast mode starts at O(η³) and the slow motion is
    dθ/dt = −∇f − (η/2)∇²f∇f + O(η²), the IGR flow, so the gap to GD is O(η²). On a quadratic
    mode λ the slow rate (−1 + √(1 − 2ηλ))/η differs from GD's log(1 − ηλ)/η by −η²λ³/6, half
    IGR's η²λ³/3. ``gradient`` (v(0) = −∇f(θ0)) excites the fast mode and shifts the slow
    amplitude by +η²λ²/4: still O(η²), and as that offset has the opposite sign to the rate
    error it can sit closer to GD on short horizons. ``zero`` leaves an O(η) offset (order 1).

    Method: the v-equation has eigenvalue ≈ −2/η, so an explicit Runge–Kutta method is
    stability-limited to steps dt ≲ η·R/2 (R ≈ 3.3 for dopri5 on the negative real axis). That
    is about one step per GD step, so on the GD time axis the stiffness is mild and the adaptive
    explicit methods of ``gf`` are used; their step control finds the limit by itself. Measured
    on deep_linear (defaults, η = 0.01, T = 30): 4.4 gradient evaluations per GD step (5.3 with
    ``error_control=state``), i.e. ~28× gf's NFE; NFE grows like 1/η. An implicit method
    (Radau, BDF) would factor the 2d × 2d Jacobian, which holds the Hessian: O(d³) work and
    O(d²) memory, where explicit stepping keeps O(d).
    Same options and tolerances as ``gf``.

    Step control (``error_control``): ``theta`` (default) measures the error estimate of θ alone
    (a seminorm): an error in v relaxes at rate 2/η and reaches θ only through θ̇ = v, where it
    is controlled. ``state`` keeps the error of all of (θ, v) within tolerance; where ∇f jumps
    (ReLU kinks) v̇ jumps by (2/η)·Δ∇f, and resolving that in v costs many rejected steps per
    kink. Measured, theta vs state at rtol 1e-8 unless noted: relu_fc (n_train 1000, η = 0.001)
    to T = 0.02, 368 vs 75,092 evaluations, θ 1e-5 apart (theta at rtol 1e-9: 752 evaluations,
    5e-6 from state; the GD gap there is 5.5e-5); linear_fc to T = 1, 3,722 vs 7,160, same gap
    to GD (1.709e-5); small deep_linear, observed orders identical to 1e-7 at 1.8–2.7× fewer
    evaluations. On the quadratic both meet the closed form to 1e-7.
    """

    name = "second_order"
    parameters = FLOW_PARAMETERS + (
        Param("initial_velocity", str, "slow_manifold", "v(0): slow_manifold = -grad f - (lr/2) H grad f, "
              "gradient = -grad f, zero = 0", choices=INITIAL_VELOCITIES),
        Param("error_control", str, "theta", "step control on the error of theta alone or of (theta, v)",
              choices=ERROR_CONTROLS),
    )

    def flow(self, field, theta0, lr) -> Flow:
        d = theta0.numel()
        choice = self.options["initial_velocity"]
        if choice == "zero":
            v0 = torch.zeros_like(theta0)
        elif choice == "slow_manifold":
            grad0, hessian_grad0 = gradient_and_hessian_gradient(field, theta0)
            v0 = -grad0 - 0.5 * lr * hessian_grad0
        else:
            v0 = -field.gradient(theta0)

        def rhs(y):
            theta, v = y[:d], y[d:]
            return torch.cat([v, (2.0 / lr) * (-field.gradient(theta) - v)])

        def theta_rms(scaled_error):
            return scaled_error[:d].pow(2).mean().sqrt()

        return Flow(rhs=rhs, y0=torch.cat([theta0, v0]), to_theta=lambda y: y[:d],
                    error_norm=theta_rms if self.options["error_control"] == "theta" else None)
