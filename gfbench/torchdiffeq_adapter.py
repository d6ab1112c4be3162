"""The one place gfbench touches torchdiffeq's private API.

gfbench advances one adaptive Runge–Kutta solver record time by record time, so the accepted
step size, the FSAL derivative and the dense output carry across record times. Public ``odeint``
cannot do that (it takes the whole time grid at once), so :class:`AdaptiveRungeKutta` builds the
solver with torchdiffeq's own input normalisation and advances it through the private methods
``odeint`` itself calls. Event-driven integration (``advance_until``) stops it at events located
on the dense output of its steps, and takes those steps itself (``AdaptiveRungeKutta._step``:
torchdiffeq's tableau, error ratio, step-size rule and dense output, with the stage derivatives
laid out for large states). bosh3's dense output, on both paths, takes the cubic Hermite midpoint
value (HERMITE_MIDPOINT_METHODS) in place of torchdiffeq's first-order one. Before first use, :func:`check_torchdiffeq` verifies the installed
version and every private name relied on, and raises :class:`UnsupportedTorchdiffeq` naming the
version found and SUPPORTED_VERSIONS rather than integrate with an API it does not know.

torchdiffeq guards its steps with ``assert`` (step-size underflow, non-finite state, step count),
which ``python -O`` strips; the solver here checks each of them itself and raises SolverFailure.
"""
from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable

import torch
import torchdiffeq

from .solver import SolverFailure

#: Keep equal to the torchdiffeq requirement in pyproject.toml. 0.2.4 is the first release that
#: calls the step callbacks (0.2.3 accepts them and never calls them, so step counts and limits
#: would silently do nothing); the private API relied on is unchanged up to 0.2.5, the latest.
OLDEST_SUPPORTED, FIRST_UNSUPPORTED = (0, 2, 4), (0, 3)
SUPPORTED_VERSIONS = f">={'.'.join(map(str, OLDEST_SUPPORTED))},<{'.'.join(map(str, FIRST_UNSUPPORTED))}"

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun")
STEP_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")

#: torchdiffeq asserts on its own count of steps in one advance; its limit is set one step above
#: this, so a caller that stops within this many steps is never stopped by that assert.
MAX_STEPS_PER_ADVANCE = 10 ** 9

_CHECK_INPUTS_PARAMETERS = ("func", "y0", "t", "rtol", "atol", "method", "options", "event_fn", "SOLVERS")
_STATE_FIELDS = ("y1", "f1", "t0", "t1", "dt", "interp_coeff")
#: What ``AdaptiveRungeKutta._step`` reads from a torchdiffeq adaptive solver.
_SOLVER_ATTRIBUTES = ("func", "tableau", "mid", "rtol", "atol", "norm", "safety", "ifactor", "dfactor", "order",
                      "min_step", "max_step")
#: torchdiffeq's dense output is the quartic through y0, y1, f0, f1 and a midpoint value
#: y_mid = y0 + h Σ_j m_j k_j. For bosh3 its m gives y0 + (h/2) f(y0 + (h/2) f0), a first-order
#: estimate of y(t0 + h/2) with local error O(h²) where the step's is O(h⁴), so a state
#: interpolated inside a step (at a record time, or at an event where the integration restarts)
#: carried an error the tolerance did not control.
#: There the midpoint of the cubic Hermite interpolant, (y0 + y1)/2 + h (f0 − f1)/8, is used
#: instead: with y1 = y0 + h Σ b_j k_j and, bosh3 being FSAL, f0 = k_0 and f1 = k_last, its
#: weights are m = b/2 + (e_0 − e_last)/8, and the quartic reduces to that cubic (error O(h⁴)).
HERMITE_MIDPOINT_METHODS = ("bosh3",)
#: Most iterations of the event-time search (Illinois regula falsi); it needs ~10 to reach round-off.
MAX_EVENT_ITERATIONS = 100


class UnsupportedTorchdiffeq(ImportError):
    """The installed torchdiffeq is outside SUPPORTED_VERSIONS or lacks a private name relied on."""


@dataclass(frozen=True)
class _Internals:
    check_inputs: Callable[..., tuple]
    solvers: dict[str, type]
    state_type: type
    error_ratio: Callable[..., torch.Tensor]
    optimal_step_size: Callable[..., torch.Tensor]
    perturb: Any


def check_torchdiffeq() -> _Internals:
    """The torchdiffeq internals gfbench uses, after checking the version and each name.

    Raises UnsupportedTorchdiffeq listing every problem found.
    """
    version = getattr(torchdiffeq, "__version__", "unknown")
    problems = []
    release = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if not (release and OLDEST_SUPPORTED <= tuple(map(int, release.groups())) < FIRST_UNSUPPORTED):
        problems.append("version not in the supported range")
    check_inputs = _private("torchdiffeq._impl.misc", "_check_inputs", problems)
    if check_inputs is not None and tuple(inspect.signature(check_inputs).parameters) != _CHECK_INPUTS_PARAMETERS:
        problems.append(f"_check_inputs does not take {_CHECK_INPUTS_PARAMETERS}")
    solvers = _private("torchdiffeq._impl.odeint", "SOLVERS", problems) or {}
    state_type = _private("torchdiffeq._impl.rk_common", "_RungeKuttaState", problems)
    if state_type is not None and getattr(state_type, "_fields", None) != _STATE_FIELDS:
        problems.append(f"_RungeKuttaState does not have the fields {_STATE_FIELDS}")
    error_ratio = _private("torchdiffeq._impl.misc", "_compute_error_ratio", problems)
    optimal_step_size = _private("torchdiffeq._impl.misc", "_optimal_step_size", problems)
    perturb = _private("torchdiffeq._impl.misc", "Perturb", problems)
    if perturb is not None and not {"NONE", "PREV"} <= set(getattr(perturb, "__members__", ())):
        problems.append("misc.Perturb has no NONE and PREV")
    for method in ADAPTIVE_METHODS:
        solver_class = solvers.get(method)
        if solver_class is None:
            problems.append(f"no solver {method!r} in SOLVERS")
            continue
        missing = [name for name in ("_before_integrate", "_advance", "_adaptive_step", "valid_callbacks")
                   if not callable(getattr(solver_class, name, None))]
        problems += [f"{method}: no {name}" for name in missing]
        if "valid_callbacks" not in missing:
            problems += [f"{method}: does not call {name}" for name in STEP_CALLBACKS
                         if name not in solver_class.valid_callbacks()]
        if "max_num_steps" not in inspect.signature(solver_class).parameters:
            problems.append(f"{method}: no max_num_steps option")
    if problems:
        raise UnsupportedTorchdiffeq(f"torchdiffeq {version} is not supported (gfbench needs torchdiffeq"
                                     f"{SUPPORTED_VERSIONS}): {'; '.join(problems)}")
    return _Internals(check_inputs, solvers, state_type, error_ratio, optimal_step_size, perturb)


def _private(module: str, name: str, problems: list[str]) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        problems.append(f"no {module}.{name}")
        return None


_checked_internals = cache(check_torchdiffeq)


class _StepGuard:
    """``func`` as the solver calls it: each step is refused, as SolverFailure, where torchdiffeq
    would ``assert`` against it, before ``func``'s own step callback runs."""

    def __init__(self, func) -> None:
        self.func = func
        self.callback_accept_step = func.callback_accept_step
        self.callback_reject_step = func.callback_reject_step

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.func(t, y)

    def callback_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        start, size = float(t0), float(dt)
        if not start + size > start:
            raise SolverFailure(f"step size underflow at t={start:.6g} (dt={size:.3g})", start)
        if not torch.isfinite(y0).all():
            raise SolverFailure(f"non-finite values in state `y` at t={start:.6g}", start)
        self.func.callback_step(t0, y0, dt)


class DenseOutput:
    """One step's dense output, torchdiffeq's polynomial y(s) = Σ_j c_j x^j with
    x = (s − t0)/(t1 − t0), ``coefficients`` = [c_0, c_1, …]; exactly c_0 at t0 and ``end`` (the
    step's y1) at t1. ``map(f)`` applies a linear map f to every coefficient: the dense output of
    f(y), for a few entries of f(y) far cheaper than f at each interpolated state."""

    def __init__(self, coefficients: list[torch.Tensor], t0: float, t1: float, end: torch.Tensor) -> None:
        self.coefficients, self.t0, self.t1, self.end = coefficients, t0, t1, end

    def __call__(self, s: float) -> torch.Tensor:
        if s == self.t1:
            return self.end
        if s == self.t0:
            return self.coefficients[0]
        x = (s - self.t0) / (self.t1 - self.t0)
        total = self.coefficients[-1] * x
        for coefficient in reversed(self.coefficients[1:-1]):  # Horner, in place: one pass per coefficient
            total.add_(coefficient).mul_(x)
        return total.add_(self.coefficients[0])

    def end_derivative(self) -> torch.Tensor:
        """dy/ds at t1: Σ_j j c_j / (t1 − t0) (the step's derivative there, f1, to round-off)."""
        return sum(power * coefficient for power, coefficient in enumerate(self.coefficients)) / (self.t1 - self.t0)

    def map(self, linear: Callable[[torch.Tensor], torch.Tensor]) -> DenseOutput:
        return DenseOutput([linear(c) for c in self.coefficients], self.t0, self.t1, linear(self.end))


def _end_stages(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The stage weights that pick the first stage (f0) and the last one."""
    first, last = torch.zeros_like(weights), torch.zeros_like(weights)
    first[0], last[-1] = 1.0, 1.0
    return first, last


def _dense_output_weights(solution: torch.Tensor, midpoint: torch.Tensor) -> torch.Tensor:
    """W (4 × stages) with torchdiffeq's dense-output coefficients c_p = h Σ_j W_pj k_j, p = 1…4
    (c_0 = y0): its quartic ``_interp_fit`` of y0, y1 = y0 + h Σ b_j k_j, y_mid = y0 + h Σ m_j k_j,
    f0 = k_0 and f1 = k_last, in which y0's weights cancel, as one product with the stages."""
    first, last = _end_stages(solution)
    return torch.stack([first,
                        -5 * solution + 16 * midpoint - 4 * first + last,
                        14 * solution - 32 * midpoint + 5 * first - 3 * last,
                        -8 * solution + 16 * midpoint - 2 * first + 2 * last])


class AdaptiveRungeKutta:
    """One torchdiffeq adaptive Runge–Kutta solver for dy/dt = func(t, y) from y(0) = y0.

    ``advance(t)`` integrates on to time t and returns y(t) (dense output, so t need not be a
    step end). ``func`` also has the methods ``callback_step``, ``callback_accept_step`` and
    ``callback_reject_step``, each taking ``(t0, y0, dt)``, called before each step and after it
    is accepted or rejected; ``callback_step`` must stop the integration (raise) within
    MAX_STEPS_PER_ADVANCE steps of one advance. ``norm`` maps the error estimate divided by
    atol + rtol·|y| to the number the step control keeps ≤ 1 (None: RMS). The first
    evaluations (initial step selection) happen in the first ``advance``, so an exception from
    ``func`` always comes out of ``advance``.
    """

    def __init__(self, func, y0: torch.Tensor, *, method: str, rtol: float, atol: float,
                 norm: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        internals = self._internals = _checked_internals()
        options = {"max_num_steps": MAX_STEPS_PER_ADVANCE + 1} | ({} if norm is None else {"norm": norm})
        self._device = y0.device
        start = torch.zeros(1, dtype=torch.float64, device=y0.device)
        _, guarded, y0, self._start, rtol, atol, method, options, _, _ = internals.check_inputs(
            _StepGuard(func), y0, start, rtol, atol, method, options, None, internals.solvers)
        self._solver = internals.solvers[method](func=guarded, y0=y0, rtol=rtol, atol=atol, **options)
        missing = [name for name in _SOLVER_ATTRIBUTES if not hasattr(self._solver, name)]
        if missing:
            raise UnsupportedTorchdiffeq(f"torchdiffeq {getattr(torchdiffeq, '__version__', 'unknown')}: "
                                         f"{method} solver has no {', '.join(missing)} (gfbench needs "
                                         f"torchdiffeq{SUPPORTED_VERSIONS})")
        tableau = self._solver.tableau
        if method in HERMITE_MIDPOINT_METHODS:
            first, last = _end_stages(tableau.c_sol)
            self._solver.mid = tableau.c_sol / 2 + (first - last) / 8
        self._dense_weights = _dense_output_weights(tableau.c_sol, self._solver.mid)
        self._now = 0.0
        #: (the end of the last step whose events ``pass_events`` took, what it returned)
        self._passed_step: tuple[float, Any] | None = None

    def advance(self, t: float) -> torch.Tensor:
        if self._start is not None:
            self._solver._before_integrate(self._start)
            self._start = None
        return self._solver._advance(torch.tensor(t, dtype=torch.float64, device=self._device))

    @property
    def time(self) -> float:
        """The time the integration has reached."""
        return self._now

    def _dense_output(self) -> DenseOutput:
        state = self._solver.rk_state
        return DenseOutput(state.interp_coeff, float(state.t0), float(state.t1), state.y1)

    def advance_until(self, t: float, events: Callable[[float, torch.Tensor, torch.Tensor | None], torch.Tensor],
                      time_tol: float, events_along: Callable[[DenseOutput, torch.Tensor], Callable[[float], torch.Tensor]]
                      | None = None, pass_events: Callable[[DenseOutput, torch.Tensor], Any] | None = None
                      ) -> tuple[float, torch.Tensor, torch.Tensor | None]:
        """Integrate on towards t, stopping at the first time some component of ``events`` turns negative.

        ``events(s, y, components)`` maps a time and state to the event functions numbered by
        ``components`` (all of them when None), all ≥ 0 at the current time. They are checked at
        every step end; a sign change is located on that step's dense output, among the
        components negative at the step end, by the Illinois method to a bracket of width
        ≤ ``time_tol``, whose right end is returned: there the event has happened.
        ``events_along(dense, components)`` gives those components as a function of time along a
        step's ``DenseOutput`` (default: ``events`` at ``dense(s)``), where that is cheaper.
        ``pass_events(dense, components)``, when given, is offered the events of a step first: it
        returns None to have them located, a tensor of components to locate instead (the others
        it leaves to be taken at the located event, or at the step end if none is located), or
        takes them inside the step (changing the right-hand side) and returns an object whose
        ``displacement(s)`` is the correction to add to the dense output at s; the integration
        then goes on from the corrected step end, with the derivative evaluated there afresh,
        without stopping (``displacement`` None: the step stands as taken, its end derivative
        too, for events at which the right-hand side is continuous); or, where its ``stop`` is a
        time, stops there as at an event, with its ``entering`` as the components that fired
        (a t before the stop is reached on the way, on the same step, without an event). Returns
        (time reached, y there, the components negative there, by that function, or None when no
        event stopped the integration). A component that changes sign and back within one step is
        not seen. Not to be mixed with ``advance``; ``restart`` continues after an event.
        """
        if events_along is None:
            def events_along(dense, components):
                return lambda s: events(s, dense(s), components)
        if self._start is not None:
            self._solver._before_integrate(self._start)
            self._start = None
        while True:
            state = self._solver.rk_state
            step_end = float(state.t1)
            dense = self._dense_output()
            passed = self._passed_step[1] if self._passed_step and self._passed_step[0] == step_end else None
            if step_end > self._now and passed is None:
                at_end = events(step_end, state.y1, None)
                if at_end.min() < 0:
                    fired = (at_end < 0).nonzero().flatten()
                    passed = None if pass_events is None else pass_events(dense, fired)
                    if passed is None or isinstance(passed, torch.Tensor):
                        fired = fired if passed is None else passed
                        passed = None
                        along = events_along(dense, fired)
                        when = self._locate(lambda s: along(s).min(), self._now, step_end,
                                            float(at_end[fired].min()), time_tol)
                        if when <= t:
                            self._now = when
                            return when, dense(when), fired[along(when) < 0]
                    else:
                        self._passed_step = (step_end, passed)
                        if passed.displacement is not None and passed.stop is None:
                            end = state.y1 + passed.displacement(step_end)
                            self._solver.rk_state = state = state._replace(y1=end, f1=self._solver.func(state.t1, end))
            if step_end > self._now and passed is not None and passed.stop is not None:
                # the events before passed.stop taken: stop there, reporting the times before it on the way
                when = min(passed.stop, t)
                self._now = when
                return when, dense(when) + passed.displacement(when), passed.entering if when == passed.stop else None
            if step_end > self._now:
                if t <= step_end:
                    self._now = t
                    if t == step_end or passed is None or passed.displacement is None:
                        return t, state.y1 if t == step_end else dense(t), None
                    return t, dense(t) + passed.displacement(t), None
                self._now = step_end
            self._solver.rk_state = self._step(state)

    def _step(self, state):
        """One adaptive step from ``state``, as torchdiffeq's ``_adaptive_step`` takes it: the same
        tableau, right-hand side calls, error ratio, step-size rule, callbacks and dense output. Only
        the stage derivatives are stored as the rows of a (stages, *shape) tensor, so each stage's
        combination Σ_j β_ij k_j is one contiguous product; torchdiffeq keeps them as (*shape, stages)
        and sums across the short last axis, which on a state of 10^5 entries costs more than the
        gradient (ntk at width 16384). Used by ``advance_until``; sums in another order than
        torchdiffeq's, so it agrees with ``_adaptive_step`` to round-off."""
        solver, internals = self._solver, self._internals
        y0, f0, _, t0, dt, _ = state
        if not torch.isfinite(dt):
            dt = solver.min_step
        dt = dt.clamp(solver.min_step, solver.max_step)
        solver.func.callback_step(t0, y0, dt)
        t1 = t0 + dt
        tableau, h = solver.tableau, dt.to(y0.dtype)
        stages = torch.empty(len(tableau.alpha) + 1, *y0.shape, dtype=y0.dtype, device=y0.device)
        stages[0] = f0
        for i, (alpha_i, beta_i) in enumerate(zip(tableau.alpha, tableau.beta)):
            at_end = bool(alpha_i == 1.0)  # torchdiffeq evaluates the last stage just before t1
            y_stage = y0 + torch.tensordot(beta_i * h, stages[:i + 1], dims=1)
            stages[i + 1] = solver.func(t1 if at_end else t0 + alpha_i * dt, y_stage,
                                        perturb=internals.perturb.PREV if at_end else internals.perturb.NONE)
        first_same_as_last = bool(tableau.c_sol[-1] == 0 and (tableau.c_sol[:-1] == tableau.beta[-1]).all())
        y1 = y_stage if first_same_as_last else y0 + torch.tensordot(tableau.c_sol * h, stages, dims=1)
        error = torch.tensordot(tableau.c_error * h, stages, dims=1)
        error_ratio = internals.error_ratio(error, solver.rtol, solver.atol, y0, y1, solver.norm)
        accept = bool(error_ratio <= 1 and dt <= solver.max_step) or bool(dt <= solver.min_step)
        if accept:
            solver.func.callback_accept_step(t0, y0, dt)
            interp_coeff = [y0, *torch.tensordot(self._dense_weights * h, stages, dims=1)]
            state = internals.state_type(y1, stages[-1], t0, t1, dt, interp_coeff)
        else:
            solver.func.callback_reject_step(t0, y0, dt)
            state = internals.state_type(y0, f0, t0, t0, dt, state.interp_coeff)
        dt_next = internals.optimal_step_size(dt, error_ratio, solver.safety, solver.ifactor, solver.dfactor,
                                              solver.order).clamp(solver.min_step, solver.max_step)
        return state._replace(dt=dt_next)

    def _locate(self, first_event: Callable[[float], torch.Tensor], left: float, right: float, right_value: float,
                time_tol: float) -> float:
        """Shrink [left, right] (``first_event`` ≥ 0 at left, < 0 at right) around its sign change."""
        left_value, stale_side = float(first_event(left)), 0
        for _ in range(MAX_EVENT_ITERATIONS):
            if right - left <= time_tol:
                break
            # equal ends (in float32 the event at ``left`` may round to the value at ``right``): bisect
            trial = (right - right_value * (right - left) / (right_value - left_value) if right_value != left_value
                     else 0.5 * (left + right))
            if not left < trial < right:
                trial = 0.5 * (left + right)
            value = float(first_event(trial))
            if value < 0:
                right, right_value = trial, value
                left_value *= 0.5 if stale_side == 1 else 1.0  # Illinois: halve the end that stays
                stale_side = 1
            else:
                left, left_value = trial, value
                right_value *= 0.5 if stale_side == -1 else 1.0
                stale_side = -1
        return right

    def restart(self, t: float, y: torch.Tensor) -> None:
        """Continue from y at time t ≤ the last step end, with the right-hand side as it is now
        (evaluated once there), keeping the step size the step control had reached."""
        state = self._solver.rk_state
        start = torch.tensor(t, dtype=torch.float64, device=self._device)
        self._solver.rk_state = self._internals.state_type(y, self._solver.func(start, y), start, start, state.dt,
                                                           state.interp_coeff)
        self._now = t
