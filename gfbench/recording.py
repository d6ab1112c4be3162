"""What is recorded along a trajectory, and where it is stored while the run goes on.

The run loop knows no quantity by name. It asks each :class:`Recorder` which variables it
declares, hands it a :class:`RecordPoint` at every record time, and stores the values it returns
in arrays preallocated for all record points. Problems contribute recorders
(``Problem.recorders()``), and so can later parts (curvature, NTK) through ``run(recorders=...)``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from .field import Evaluation, GradientField


@dataclass(frozen=True)
class Variable:
    """A recorded quantity: name, CF ``long_name`` and ``units``, and extra dims after ``time``."""

    name: str
    long_name: str
    units: str
    dims: tuple[str, ...] = ()
    shape: tuple[int, ...] = ()
    fill: float = np.nan


@dataclass
class RecordPoint:
    """The state handed to recorders at one record time t = step·lr.

    ``loss``, ``grad`` and ``aux`` (the problem's by-products of f, ``Problem.loss_with_aux``)
    come from the run's GradientField on first use: a recorder that does not need them costs
    nothing, and where the solver already evaluated the gradient at θ (GD steps from the point
    it records) they cost nothing either.
    """

    index: int
    step: int
    time: float
    theta: torch.Tensor
    theta0: torch.Tensor
    field: GradientField
    problem: Any

    @cached_property
    def _evaluation(self) -> Evaluation:
        return self.field.evaluate(self.theta)

    @property
    def loss(self) -> torch.Tensor:
        return self._evaluation.loss

    @property
    def grad(self) -> torch.Tensor:
        return self._evaluation.grad

    @property
    def aux(self) -> Mapping[str, torch.Tensor]:
        return self._evaluation.aux


class Recorder(ABC):
    """Declares variables and computes them at record points.

    ``record`` returns a mapping from variable name to value; a name left out stays at the
    variable's fill value (NaN), which is how "not evaluated at this point" is written.
    ``finish`` may add derived variables to the finished dataset; ``attrs`` adds global attrs
    (for example the cost of the recording itself).
    """

    @abstractmethod
    def variables(self) -> Sequence[Variable]:
        ...

    @abstractmethod
    def record(self, point: RecordPoint) -> Mapping[str, Any]:
        ...

    def finish(self, ds: xr.Dataset) -> xr.Dataset:
        return ds

    def attrs(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Diagnostic(Recorder):
    """A scalar function of θ recorded at every point, e.g. deep_linear's ``balancedness``."""

    variable: Variable
    function: Callable[[torch.Tensor], torch.Tensor | float] = field(compare=False)

    def variables(self) -> Sequence[Variable]:
        return (self.variable,)

    def record(self, point: RecordPoint) -> Mapping[str, Any]:
        return {self.variable.name: float(self.function(point.theta))}


class TrajectoryRecorder(Recorder):
    """The schema's core variables: loss, gradient norm, distance from θ0, and θ itself on request."""

    def __init__(self, dim: int, save_params: bool) -> None:
        self.dim = dim
        self.save_params = save_params

    def variables(self) -> Sequence[Variable]:
        core = [
            Variable("loss", "training loss f(theta)", "1"),
            Variable("grad_norm", "gradient norm ||grad f(theta)||", "1"),
            Variable("distance_from_init", "distance from init ||theta - theta0||", "1"),
        ]
        if self.save_params:
            core.append(Variable("theta", "parameter vector theta", "1", ("param",), (self.dim,)))
        return core

    def record(self, point: RecordPoint) -> Mapping[str, Any]:
        values = {
            "loss": float(point.loss),
            "grad_norm": float(torch.linalg.vector_norm(point.grad)),
            "distance_from_init": float(torch.linalg.vector_norm(point.theta - point.theta0)),
        }
        if self.save_params:
            values["theta"] = point.theta.detach().cpu().double().numpy()
        return values


class Recording:
    """Preallocated storage for every declared variable at ``n_points`` record times."""

    def __init__(self, recorders: Sequence[Recorder], n_points: int) -> None:
        self.recorders = list(recorders)
        self.variables: dict[str, Variable] = {}
        for recorder in self.recorders:
            for var in recorder.variables():
                if var.name in self.variables:
                    raise ValueError(f"two recorders declare the variable {var.name!r}")
                self.variables[var.name] = var
        self.arrays = {name: np.full((n_points, *var.shape), var.fill, dtype=np.float64)
                       for name, var in self.variables.items()}
        self.n_filled = 0

    def record(self, point: RecordPoint) -> list[str]:
        """Store every recorder's values at ``point``, unless one is ±inf: then store nothing.

        Returns the names of the infinite values (empty when the point was stored). NaN is not
        checked here: it is the fill for "not evaluated", and the run loop checks θ, f and ∇f.
        """
        values = {name: value for recorder in self.recorders for name, value in recorder.record(point).items()}
        infinite = [name for name, value in values.items() if np.isinf(value).any()]
        if infinite:
            return infinite
        for name, value in values.items():
            self.arrays[name][point.index] = value
        self.n_filled = point.index + 1
        return []

    def to_dataset(self, times: np.ndarray, steps: np.ndarray) -> xr.Dataset:
        """The filled prefix as a Dataset on the ``time`` axis, finished by each recorder."""
        n = self.n_filled
        data_vars = {
            name: (("time", *var.dims), self.arrays[name][:n], {"long_name": var.long_name, "units": var.units})
            for name, var in self.variables.items()
        }
        coords = {
            "time": ("time", times[:n], {"long_name": "gradient flow time t = step * lr",
                                         "units": "1", "axis": "T"}),
            "step": ("time", steps[:n], {"long_name": "gradient descent iteration k", "units": "1"}),
        }
        ds = xr.Dataset(data_vars, coords)
        for recorder in self.recorders:
            ds = recorder.finish(ds)
        return ds

    def attrs(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for recorder in self.recorders:
            merged.update(recorder.attrs())
        return merged
