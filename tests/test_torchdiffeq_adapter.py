"""The torchdiffeq adapter: a changed private API fails loudly, and no failure depends on ``assert``.

That chunked integration costs what one ``odeint`` call costs is checked in test_run_and_dataset.py.
"""
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchdiffeq
import torchdiffeq._impl.bosh3
import torchdiffeq._impl.misc
import torchdiffeq._impl.rk_common

import gfbench
from gfbench import torchdiffeq_adapter
from gfbench.torchdiffeq_adapter import SUPPORTED_VERSIONS, UnsupportedTorchdiffeq, check_torchdiffeq


def test_installed_torchdiffeq_is_supported_and_pinned_as_declared():
    check_torchdiffeq()
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert f"torchdiffeq{SUPPORTED_VERSIONS}" in project["dependencies"]


def _without_step_callbacks(cls):
    return set()


@pytest.mark.parametrize("change,problem", [
    (lambda mp: mp.delattr(torchdiffeq._impl.misc, "_check_inputs"), "no torchdiffeq._impl.misc._check_inputs"),
    (lambda mp: mp.setattr(torchdiffeq._impl.rk_common.RKAdaptiveStepsizeODESolver, "valid_callbacks",
                           classmethod(_without_step_callbacks)), "dopri5: does not call callback_step"),
    (lambda mp: mp.setattr(torchdiffeq, "__version__", "0.3.0"), "version not in the supported range"),
    (lambda mp: mp.setattr(torchdiffeq, "__version__", "0.2.3"), "version not in the supported range"),
])
def test_a_changed_torchdiffeq_is_refused_naming_version_and_range(monkeypatch, change, problem):
    change(monkeypatch)
    with pytest.raises(UnsupportedTorchdiffeq) as raised:
        check_torchdiffeq()
    message = str(raised.value)
    assert f"torchdiffeq {torchdiffeq.__version__} is not supported" in message
    assert f"torchdiffeq{SUPPORTED_VERSIONS}" in message and problem in message


def test_a_run_refuses_an_unsupported_torchdiffeq(monkeypatch):
    monkeypatch.setattr(torchdiffeq, "__version__", "0.3.0")
    monkeypatch.setattr(torchdiffeq_adapter, "_checked_internals", check_torchdiffeq)  # not the cached result
    with pytest.raises(UnsupportedTorchdiffeq, match="torchdiffeq 0.3.0 is not supported"):
        gfbench.run("quadratic", "gf", lr=0.1, steps=2, progress=False)


FAILURES = textwrap.dedent('''
    import json, sys
    import torch
    import gfbench
    from gfbench.ode import Flow, FlowSolver
    from zoo_support import Blowup


    class Overflowing(FlowSolver):
        """θ stays put while an extra state coordinate drifts at 1e307 from 1.7e308: it overflows in a
        step whose error estimate is zero, so that step is accepted and the state becomes non-finite."""
        name = "overflowing"

        def flow(self, field, theta0, lr):
            return Flow(rhs=lambda y: torch.cat([torch.zeros_like(theta0), y.new_full((1,), 1e307)]),
                        y0=torch.cat([theta0, theta0.new_full((1,), 1.7e308)]), to_theta=lambda y: y[:-1])


    runs = [gfbench.run(Blowup(), "gf", lr=0.01, steps=100, progress=False),
            gfbench.run("quadratic", Overflowing(), lr=1.0, steps=5, progress=False),
            gfbench.run("quadratic", gfbench.get_solver("gf", max_steps=3), lr=1.0, steps=5, progress=False)]
    json.dump({"optimize": sys.flags.optimize,
               "runs": [[ds.attrs["status"], ds.attrs["message"], ds.sizes["time"]] for ds in runs]}, sys.stdout)
''')


def test_solver_failures_are_the_same_under_python_O(tmp_path):
    """``python -O`` strips torchdiffeq's asserts: each failure they would catch is caught without them."""
    script = tmp_path / "failures.py"
    script.write_text(FAILURES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                     os.environ.get("PYTHONPATH")]))}
    plain, optimized = [json.loads(subprocess.run([sys.executable, *flags, str(script)], capture_output=True,
                                                  text=True, check=True, env=env).stdout)
                        for flags in ([], ["-O"])]
    assert (plain["optimize"], optimized["optimize"]) == (0, 1)
    assert plain["runs"] == optimized["runs"]
    assert [(status, message.split(" at t=")[0]) for status, message, _ in plain["runs"]] == [
        ("solver_failed", "gf: step size underflow"),
        ("solver_failed", "overflowing: non-finite values in state `y`"),
        ("solver_failed", "gf: more than max_steps=3 steps between record times,")]


class _Counting:
    """A nonlinear right-hand side with the step callbacks, counting accepted and rejected steps."""

    def __init__(self):
        self.accepted = self.rejected = 0

    def __call__(self, t, y):
        return -torch.sin(y) * torch.arange(1, len(y) + 1, dtype=y.dtype) + 0.1 * y.roll(1)

    def callback_step(self, t0, y0, dt):
        pass

    def callback_accept_step(self, t0, y0, dt):
        self.accepted += 1

    def callback_reject_step(self, t0, y0, dt):
        self.rejected += 1


@pytest.mark.parametrize("method", torchdiffeq_adapter.ADAPTIVE_METHODS)
def test_the_event_path_step_is_torchdiffeqs_adaptive_step(method):
    """AdaptiveRungeKutta._step against torchdiffeq's own _adaptive_step from the same states: an
    accepted step (state, derivative, dense output, next step size) and a rejected one."""
    y0 = torch.linspace(0.3, 2.0, 50, dtype=torch.float64)
    ours, theirs = _Counting(), _Counting()
    stepper = torchdiffeq_adapter.AdaptiveRungeKutta(ours, y0, method=method, rtol=1e-6, atol=1e-8)
    reference = torchdiffeq_adapter.AdaptiveRungeKutta(theirs, y0, method=method, rtol=1e-6, atol=1e-8)
    stepper.advance(0.05)
    reference.advance(0.05)
    start = stepper._solver.rk_state
    before = (ours.accepted, ours.rejected)
    for dt in (start.dt, torch.tensor(0.8, dtype=torch.float64)):
        state = start._replace(dt=dt)
        mine, expected = stepper._step(state), reference._solver._adaptive_step(state)
        for field in ("y1", "f1", "t0", "t1"):
            assert torch.allclose(getattr(mine, field), getattr(expected, field), rtol=1e-13, atol=1e-15), field
        # the next step size goes like error^(-1/order), the error being a difference of stages
        assert float(mine.dt) == pytest.approx(float(expected.dt), rel=1e-9)
        for ours_coefficient, theirs_coefficient in zip(mine.interp_coeff, expected.interp_coeff):
            assert torch.allclose(ours_coefficient, theirs_coefficient, rtol=1e-12, atol=1e-14)
    assert (ours.accepted, ours.rejected) == (theirs.accepted, theirs.rejected)
    assert (ours.accepted - before[0], ours.rejected - before[1]) == (1, 1)


def _interior_error(method, dt, midpoint=None):
    """‖dense(t0 + 0.3 dt) − exact‖ after one step of y' = A y from y0 (A with a spread of rates)."""
    matrix = torch.tensor([[-1.0, 2.0, 0.0], [-2.0, -1.0, 0.5], [0.0, -0.5, -3.0]], dtype=torch.float64)
    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    linear = type("Linear", (_Counting,), {"__call__": lambda self, t, y: matrix @ y})()
    stepper = torchdiffeq_adapter.AdaptiveRungeKutta(linear, y0, method=method, rtol=1.0, atol=1.0)
    if midpoint is not None:
        stepper._solver.mid = midpoint
        stepper._dense_weights = torchdiffeq_adapter._dense_output_weights(stepper._solver.tableau.c_sol, midpoint)
    stepper.advance(0.0)
    start = stepper._solver.rk_state._replace(dt=torch.tensor(dt, dtype=torch.float64))
    state = stepper._step(start)
    assert float(state.t1) == pytest.approx(dt)  # accepted: the tolerances are loose
    dense = torchdiffeq_adapter.DenseOutput(state.interp_coeff, float(state.t0), float(state.t1), state.y1)
    return float(torch.linalg.vector_norm(dense(0.3 * dt) - torch.linalg.matrix_exp(0.3 * dt * matrix) @ y0))


def test_bosh3_dense_output_is_as_accurate_as_its_step():
    """Inside a bosh3 step the dense output errs O(h⁴), like the step (the cubic Hermite midpoint);
    with torchdiffeq's own midpoint, y0 + (h/2) f(y0 + (h/2) f0), it errs O(h²) there."""
    torchdiffeqs = torchdiffeq._impl.bosh3._BS_C_MID.to(torch.float64)
    ours = [_interior_error("bosh3", dt) for dt in (0.04, 0.02)]
    theirs = [_interior_error("bosh3", dt, torchdiffeqs) for dt in (0.04, 0.02)]
    assert math.log2(ours[0] / ours[1]) == pytest.approx(4, abs=0.3)
    assert math.log2(theirs[0] / theirs[1]) == pytest.approx(2, abs=0.3)
    assert ours[1] < theirs[1] / 10


class _Stands:
    """What ``pass_events`` returns for events the right-hand side is continuous at: the step stands."""

    displacement, stop, entering = None, None, None


@pytest.mark.parametrize("answer", ["locate_first_only", "step_stands"])
def test_pass_events_may_name_the_events_to_locate_or_keep_the_step(answer):
    """y' = −y from (1, 1), events y_0 − e^{−0.3} and y_1 − e^{−0.2} (the second comes first).
    ``pass_events`` returning a tensor has only those components located: the integration stops
    where y_0 = e^{−0.3}, t = 0.3, having kept the steps over t = 0.2; returning a result whose
    displacement is None keeps the step as taken, its end derivative too (no extra evaluation)."""
    class Decay(_Counting):
        calls = 0

        def __call__(self, t, y):
            self.calls += 1
            return -y

    func = Decay()
    stepper = torchdiffeq_adapter.AdaptiveRungeKutta(func, torch.ones(2, dtype=torch.float64), method="bosh3",
                                                     rtol=1e-10, atol=1e-12)
    thresholds = torch.tensor([math.exp(-0.3), math.exp(-0.2)], dtype=torch.float64)
    offered, taken = [], torch.zeros(2, dtype=torch.bool)

    def pass_events(dense, fired):
        offered.append(fired.tolist())
        if answer == "locate_first_only" and 0 in fired:
            return fired[fired == 0]
        taken[fired] = True  # taken at the step end, as a sliding exit leaves the sliding set
        return _Stands()

    def events(t, y, components):
        values = torch.where(taken, math.inf, y - thresholds)
        return values if components is None else values[components]
    if answer == "locate_first_only":
        time, y, fired = stepper.advance_until(1.0, events, 1e-13, pass_events=pass_events)
        assert fired.tolist() == [0] and time == pytest.approx(0.3, abs=1e-9)
        assert torch.allclose(y, torch.full((2,), math.exp(-time), dtype=torch.float64), rtol=1e-9, atol=0)
        assert any(1 in components for components in offered)
    else:
        calls_before = func.calls
        time, y, fired = stepper.advance_until(0.25, events, 1e-13, pass_events=pass_events)
        assert fired is None and time == 0.25 and offered == [[1]]
        assert torch.allclose(y, torch.full((2,), math.exp(-0.25), dtype=torch.float64), rtol=1e-9, atol=0)
        steps = func.accepted + func.rejected
        # three new evaluations per bosh3 step (first same as last), two to pick the first step
        assert func.calls - calls_before == 3 * steps + 2
