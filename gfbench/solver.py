"""The Solver contract: how a trajectory advances from one record time to the next."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

import torch

from .field import GradientField
from .params import Configurable
from .recording import Recorder


class SolverFailure(RuntimeError):
    """The solver could not continue (step-size underflow, endless rejections, step limit).

    ``time`` is the time the trajectory had reached; the run keeps the recorded prefix and
    writes ``status=solver_failed``.
    """

    def __init__(self, message: str, time: float) -> None:
        super().__init__(message)
        self.time = time


class Integration(ABC):
    """One trajectory in progress, owned by the run loop.

    ``theta`` is the current point, at t = ``step`` · lr. ``advance_to(step)`` moves it forward to
    a later grid step; ``stats()`` gives solver-specific counters for the dataset attrs;
    ``recorders()`` the solver's own per-record-point variables (e.g. the central flow's
    predicted oscillation), recorded after the run's other recorders at each record point.
    """

    def __init__(self, field: GradientField, theta0: torch.Tensor, lr: float) -> None:
        self.field = field
        self.theta = theta0
        self.lr = lr
        self.step = 0

    @abstractmethod
    def advance_to(self, step: int) -> torch.Tensor:
        ...

    def stats(self) -> dict[str, Any]:
        return {}

    def recorders(self) -> Sequence[Recorder]:
        return ()


class Solver(Configurable):
    """A named way to follow (or approximate) gradient flow, with declared options.

    A subclass sets ``name``, ``parameters`` and implements ``start``. The run loop calls
    ``start(field, theta0, lr)`` once and then ``advance_to`` at each record step. It may refuse a
    problem (``check_problem``) and report automatic option values (``effective_options``).
    docs/plugins.md states the contract for a solver in its own package.
    """

    kind: ClassVar[str] = "solver"

    @property
    def options(self) -> dict[str, Any]:
        return self.params

    @abstractmethod
    def start(self, field: GradientField, theta0: torch.Tensor, lr: float) -> Integration:
        ...

    def check_problem(self, problem) -> None:
        """Raise ConfigError if this solver cannot run on ``problem``; called by ``check_run_config``
        before any computation. Every problem is accepted unless a solver says otherwise."""

    def effective_options(self, problem, dtype: torch.dtype) -> dict[str, Any]:
        """Options as used on ``problem`` in ``dtype`` (automatic defaults filled in), written to the dataset."""
        return dict(self.params)
