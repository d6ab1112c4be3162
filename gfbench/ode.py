"""Adaptive ODE integration of a flow, advanced record interval by record interval.

Every continuous solver (gradient flow and the modified flows) is a right-hand side handed to
:class:`FlowIntegration`. It builds one torchdiffeq adaptive Runge–Kutta solver for the whole run
(through :mod:`gfbench.torchdiffeq_adapter`) and advances it to each record time in turn, so the
accepted step size, the FSAL derivative and the dense-output polynomial carry across record
times: chunking costs no extra function evaluations compared with one ``odeint`` call over the
whole grid (tests check the counts are equal), while only O(d) state is held. A flow with a
switching state (``Flow.switching``, e.g. :class:`gfbench.filippov.FilippovSwitching`) is
integrated event by event: the solver stops where an event function changes sign, the state
switches, and the integration restarts there with the step size it had (events the switching
state takes inside a step, ``pass_events``, do not stop it).

With ``error_estimate`` on, a companion integration of the same flow at rtol and atol divided by
ERROR_ESTIMATE_FACTOR advances alongside, and ``flow_error_estimate`` = ‖θ(t) − θ_tight(t)‖ is
recorded at every record time (see :class:`FlowErrorRecorder`).
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from .params import AT_LEAST_ONE, POSITIVE, Bounds, Param
from .recording import Recorder, RecordPoint, Variable
from .solver import Integration, Solver, SolverFailure
from .torchdiffeq_adapter import ADAPTIVE_METHODS, MAX_STEPS_PER_ADVANCE, AdaptiveRungeKutta

#: Default tolerances by dtype: tight enough that the GF reference error is far below the
#: O(η) gap to GD, loose enough that the solver does not chase round-off.
DEFAULT_TOLERANCES = {torch.float64: (1e-9, 1e-11), torch.float32: (1e-5, 1e-7)}

#: The adaptive method where neither the user nor the problem names one.
DEFAULT_METHOD = "dopri5"

#: Width of the bracket an event time is located to, relative to max(1, t): a state error of about
#: this times the jump of the field, far below any tolerance.
EVENT_TIME_TOL = 1e-13

#: The error-estimate companion runs at rtol/FACTOR and atol/FACTOR. The global error of an
#: adaptive Runge–Kutta solve scales about like its tolerance, so the companion is ~100× closer to
#: the exact flow and θ − θ_tight estimates θ's own error to ~1 %.
ERROR_ESTIMATE_FACTOR = 100.0

FLOW_PARAMETERS = (
    Param("method", str, None, "torchdiffeq adaptive Runge-Kutta method; auto: the problem's, else dopri5",
          choices=ADAPTIVE_METHODS),
    Param("rtol", float, None, "relative tolerance; auto: the problem's, else 1e-9 in float64, 1e-5 in float32",
          bounds=POSITIVE),
    Param("atol", float, None, "absolute tolerance; auto: the problem's, else 1e-11 in float64, 1e-7 in float32",
          bounds=POSITIVE),
    Param("max_steps", int, 100_000, "most solver steps (accepted+rejected) between two record times",
          bounds=Bounds(1, MAX_STEPS_PER_ADVANCE)),
    Param("max_rejections", int, 100, "most consecutive rejected steps before giving up", bounds=AT_LEAST_ONE),
    Param("error_estimate", bool, False, "also integrate at rtol, atol / 100 and record flow_error_estimate = "
          "||theta - theta_tight|| (costs the companion's gradients)"),
)


def flow_options(options: dict, problem, dtype: torch.dtype) -> dict:
    """``options`` with automatic values filled in: where the solver has ``kinks``, the problem's
    ``flow_kinks`` (step control where ``flow_defaults_by_kinks`` sets that treatment's tolerances
    for other dtypes only); the method and tolerances the problem sets for that treatment of the kinks
    (``flow_defaults_by_kinks``; flows without the option meet the kinks by step control), else
    its ``flow_method`` (else DEFAULT_METHOD) and its ``flow_tolerances`` for ``dtype`` (else
    DEFAULT_TOLERANCES)."""
    kinks = options.get("kinks") or (problem.flow_kinks if "kinks" in options else "step_control")
    own = problem.flow_defaults_by_kinks.get(kinks)
    if own is not None and dtype not in own[1] and not options.get("kinks"):
        kinks, own = "step_control", None  # the problem's treatment was measured in other dtypes only
    method, tolerances = own or (problem.flow_method, problem.flow_tolerances)
    rtol, atol = tolerances.get(dtype) or DEFAULT_TOLERANCES.get(dtype, DEFAULT_TOLERANCES[torch.float32])
    automatic = {"method": method or DEFAULT_METHOD, "rtol": rtol, "atol": atol, "kinks": kinks}
    return {key: automatic[key] if value is None and key in automatic else value for key, value in options.items()}


class FlowUndefined(ArithmeticError):
    """Raised by a right-hand side where the flow has no real value (e.g. the principal flow when
    some η·λ_i ≥ 1). The integration turns it into a SolverFailure at the time of the evaluation."""


class _CountedRHS:
    """The torchdiffeq right-hand side, with the step callbacks that count and police steps."""

    def __init__(self, rhs: Callable[[torch.Tensor], torch.Tensor], max_steps: int, max_rejections: int) -> None:
        self.rhs = rhs
        self.max_steps = max_steps
        self.max_rejections = max_rejections
        self.nfe = 0
        self.accepted = 0
        self.rejected = 0
        self.consecutive_rejections = 0
        self.steps_this_interval = 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        try:
            return self.rhs(y)
        except FlowUndefined as error:
            raise SolverFailure(f"{error} (at t={float(t):.6g})", float(t)) from None

    def callback_step(self, t0, y0, dt) -> None:
        if self.steps_this_interval >= self.max_steps:
            raise SolverFailure(f"more than max_steps={self.max_steps} steps between record times, "
                                f"at t={float(t0):.6g}", float(t0))
        self.steps_this_interval += 1

    def callback_accept_step(self, t0, y0, dt) -> None:
        self.accepted += 1
        self.consecutive_rejections = 0

    def callback_reject_step(self, t0, y0, dt) -> None:
        self.rejected += 1
        self.consecutive_rejections += 1
        if self.consecutive_rejections >= self.max_rejections:
            raise SolverFailure(f"{self.consecutive_rejections} consecutive rejected steps at t={float(t0):.6g} "
                                f"(dt={float(dt):.3g})", float(t0))


class _Trajectory:
    """One adaptive integration of a flow at given tolerances, advanced from record time to record time."""

    def __init__(self, flow: Flow, y0: torch.Tensor, options: dict, *, rtol: float, atol: float) -> None:
        self.rtol, self.atol = rtol, atol
        self.switching = flow.switching
        self.to_theta = flow.to_theta or (lambda y: y)
        self.func = _CountedRHS(flow.rhs, options["max_steps"], options["max_rejections"])
        self.solver = AdaptiveRungeKutta(self.func, y0, method=options["method"], rtol=rtol, atol=atol,
                                         norm=flow.error_norm)

    def advance(self, target: float) -> torch.Tensor:
        """θ at time ``target`` (≥ the time reached)."""
        self.func.steps_this_interval = 0
        if self.switching is None:
            y = self.solver.advance(target)
        else:
            time = None
            while time != target:
                try:  # the event functions and the switch evaluate the field outside torchdiffeq's calls
                    time, y, fired = self.solver.advance_until(target, self.switching.events,
                                                               EVENT_TIME_TOL * max(1.0, target),
                                                               self.switching.events_along,
                                                               self.switching.pass_events)
                    if fired is not None:
                        self.switching.switch(y, fired)
                except FlowUndefined as error:
                    raise SolverFailure(f"{error} (at t={self.solver.time:.6g})", self.solver.time) from None
                if fired is not None:
                    self.solver.restart(time, y)
        return self.to_theta(y)


class FlowIntegration(Integration):
    """Integrates dy/dt = rhs(y) from y0 and reports θ = ``to_theta(y)`` at t = step · lr.

    ``y`` is θ itself for gradient flow, or a larger state (θ and a velocity) for second-order
    flows. ``options`` are the resolved FLOW_PARAMETERS. ``companion``: the same flow built afresh
    (its own switching state), integrated at tolerances ÷ ERROR_ESTIMATE_FACTOR when
    ``options["error_estimate"]``; its gradients go through the same field, so the run's
    ``n_grad_evals`` includes them, while ``nfe`` and the step counts are the main solve's.
    """

    def __init__(self, field, theta0: torch.Tensor, lr: float, *, flow: Flow, options: dict,
                 companion: Flow | None = None) -> None:
        super().__init__(field, theta0, lr)
        self.main = _Trajectory(flow, theta0 if flow.y0 is None else flow.y0, options,
                                rtol=options["rtol"], atol=options["atol"])
        self.companion = None if companion is None else _Trajectory(
            companion, theta0 if companion.y0 is None else companion.y0, options,
            rtol=options["rtol"] / ERROR_ESTIMATE_FACTOR, atol=options["atol"] / ERROR_ESTIMATE_FACTOR)
        self.companion_theta = theta0

    def advance_to(self, step: int) -> torch.Tensor:
        if step == self.step:
            return self.theta
        target = step * self.lr
        # The companion goes first, so that the field's cache still holds the main solve's last
        # gradient when the record point asks for ∇f(θ): recording costs what it costs without it.
        if self.companion is not None:
            try:
                self.companion_theta = self.companion.advance(target)
            except SolverFailure as failure:
                raise SolverFailure(f"error-estimate companion (tolerances / {ERROR_ESTIMATE_FACTOR:g}): {failure}",
                                    failure.time) from None
        self.theta = self.main.advance(target)
        self.step = step
        return self.theta

    def recorders(self) -> Sequence[Recorder]:
        return () if self.companion is None else (FlowErrorRecorder(self),)

    def stats(self) -> dict:
        main = self.main
        stats = {"nfe": main.func.nfe, "n_steps_accepted": main.func.accepted, "n_steps_rejected": main.func.rejected,
                 "n_hvp": self.field.n_hvp, **({} if main.switching is None else main.switching.stats())}
        if self.companion is not None:
            stats |= {"flow_error_nfe": self.companion.func.nfe,
                      "flow_error_rtol": self.companion.rtol, "flow_error_atol": self.companion.atol}
        return stats


class FlowErrorRecorder(Recorder):
    """``flow_error_estimate`` (time) = ‖θ(t) − θ_tight(t)‖, θ_tight the companion solve at tolerances
    ÷ ERROR_ESTIMATE_FACTOR: an a-posteriori estimate of the flow's global error ‖θ(t) − θ_exact(t)‖
    (units of θ). With e(tol) ≈ C·tol, θ − θ_tight = e(tol) − e(tol/F) = (1 − 1/F)·e(tol)."""

    VARIABLE = Variable("flow_error_estimate", "estimated global error of the flow ||theta(t) - theta_tight(t)||",
                        "1")

    def __init__(self, integration: FlowIntegration) -> None:
        self.integration = integration

    def variables(self) -> Sequence[Variable]:
        return (self.VARIABLE,)

    def record(self, point: RecordPoint) -> Mapping[str, Any]:
        return {self.VARIABLE.name: float(torch.linalg.vector_norm(point.theta - self.integration.companion_theta))}


@dataclass(frozen=True)
class Flow:
    """What a continuous solver integrates: dy/dt = ``rhs(y)`` from ``y0`` (θ0 when None), with
    θ = ``to_theta(y)`` (y itself when None) reported at the record times. ``error_norm`` maps the
    step's error estimate, already divided by atol + rtol·|y|, to the number the step control
    keeps ≤ 1 (None: torchdiffeq's RMS over all of y). ``switching``: an object with
    ``events(t, y, components)`` (event functions, all ≥ 0 until an event) and
    ``events_along(dense, components)`` (see ``AdaptiveRungeKutta.advance_until``),
    ``pass_events`` (None, or the callable ``AdaptiveRungeKutta.advance_until`` offers a step's
    events first), ``switch(y, fired)`` (called at each located event with the components
    negative there, before the integration restarts there) and ``stats()`` (counters for the
    dataset attrs); ``rhs`` may depend on its state."""

    rhs: Callable[[torch.Tensor], torch.Tensor]
    y0: torch.Tensor | None = None
    to_theta: Callable[[torch.Tensor], torch.Tensor] | None = None
    error_norm: Callable[[torch.Tensor], torch.Tensor] | None = None
    switching: Any = None


class FlowSolver(Solver):
    """A solver that is a flow integrated by :class:`FlowIntegration` under FLOW_PARAMETERS.

    A subclass implements ``flow(field, theta0, lr)``; it may add parameters after
    FLOW_PARAMETERS. The dataset records ``nfe``, accepted/rejected steps and ``n_hvp``; with
    ``error_estimate`` also ``flow_error_estimate`` and the companion's ``flow_error_nfe``,
    ``flow_error_rtol`` and ``flow_error_atol``.
    """

    parameters = FLOW_PARAMETERS

    @abstractmethod
    def flow(self, field, theta0: torch.Tensor, lr: float) -> Flow:
        ...

    def effective_options(self, problem, dtype):
        return flow_options(self.options, problem, dtype)

    def start(self, field, theta0, lr) -> FlowIntegration:
        options = flow_options(self.options, field.problem, theta0.dtype)
        flow = self.flow(field, theta0, lr)
        companion = self.flow(field, theta0, lr) if options["error_estimate"] else None
        return FlowIntegration(field, theta0, lr, flow=flow, companion=companion, options=options)
