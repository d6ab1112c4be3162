"""gfbench: continuous vs. discrete optimisation of neural networks, measured.

Gradient descent (GD) is Euler's method on gradient flow (GF), dθ/dt = −∇f(θ). gfbench runs
registered problems with registered solvers on one time axis t = k·η and records labelled
trajectories as xarray datasets (netCDF files).

Public API: ``get_problem``, ``get_solver``, ``run`` (its settings declared once in
``RUN_SETTINGS``, checked by ``RunSpec``; Ctrl-C raises ``RunInterrupted`` holding the prefix),
``save``, ``load``, ``sweep``, ``load_sweep`` (sweeps need the ``sweep`` extra, dask.distributed,
imported only when a sweep runs), ``available_problems``, ``available_solvers``, the
``Problem``/``Solver`` base classes and ``Param`` for plugins.
"""
__version__ = "0.1.0"

from .compare import compare
from .dataset import load, save, validate_dataset
from .params import Bounds, ConfigError, Param
from .plot import plot
from .problem import Problem
from .recording import Diagnostic, Recorder, RecordPoint, Variable
from .registry import available_problems, available_solvers, get_problem, get_solver
from .run import RunInterrupted, run
from .spec import RUN_SETTINGS, RunSpec
from .sweep import Grid, load_sweep, sweep
from .solver import Integration, Solver, SolverFailure

__all__ = ["__version__", "get_problem", "get_solver", "run", "save", "load", "validate_dataset", "sweep",
           "load_sweep", "Grid", "compare", "plot", "available_problems", "available_solvers", "Problem",
           "Solver", "Integration", "SolverFailure", "Param", "Bounds", "ConfigError", "Recorder",
           "RecordPoint", "Variable", "Diagnostic", "RunSpec", "RUN_SETTINGS", "RunInterrupted"]
