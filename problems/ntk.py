"""The two-layer ReLU network of Du et al. in the NTK regime (lecture notes, ../shared/seeds)."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from gfbench.mnist import DATA_DIR_PARAM, mnist_tensors
from gfbench.memory import FLOAT64
from gfbench.params import AT_LEAST_ONE, NON_NEGATIVE, ConfigError, Param
from gfbench.problem import Problem
from gfbench.recording import Recorder, RecordPoint, Variable
from gfbench.timeaxis import cumulative_integral

MNIST_DIM = 784


class NTK(Problem):
    """L(w) = (1/n) Σ_i ½ (u_i − y_i)², u_i = (1/√m) Σ_r a_r σ(w_rᵀ x_i), σ = ReLU (Du et al.).

    n unit-norm inputs x_i ∈ R^d: ``data=synthetic`` draws x_i ~ N(0, I) normalised and
    y_i ~ N(0, 1) from ``data_seed``; ``data=mnist`` takes the MNIST training examples
    0, 50, …, 50(n − 1), normalised as for the classifiers and scaled to unit norm, with
    y_i = +1 for digits ≥ 5 and −1 otherwise (d = 784). The output weights a_r ∈ {±1} are
    drawn from ``data_seed`` and fixed; θ = (w_1, …, w_m) row-major, w_r(0) ~ N(0, I) from the
    run's seed. Under GF du/dt = −(1/n) H(t)(u − y) with
    H_ij(t) = (1/m) x_iᵀx_j Σ_r 1{w_rᵀx_i ≥ 0, w_rᵀx_j ≥ 0}, and as m → ∞ H(0) → H* with
    H*_ij = x_iᵀx_j (π − arccos(x_iᵀx_j))/(2π); λ0 = λmin(H*). Records the quantities of
    ``NTKRecorder``.

    GF on a ReLU network: ∇L jumps where some w_rᵀx_i = 0, and the flow can slide along such a
    surface (a Filippov solution), where an adaptive Runge–Kutta method that ignores the kinks
    crawls with tiny steps. ``gf`` therefore integrates it as a Filippov system by default, passing
    transversal crossings inside the steps and locating entries into sliding (``flow_kinks``;
    switching functions Z_ir = w_rᵀx_i, their Jacobian in closed form).
    """

    name = "ntk"
    parameters = (
        Param("width", int, 1000, "hidden width m", bounds=AT_LEAST_ONE),
        Param("n", int, 20, "number of training examples", bounds=AT_LEAST_ONE),
        Param("input_dim", int, None, "input dimension d (auto: 10 for synthetic, 784 for mnist)",
              bounds=AT_LEAST_ONE),
        Param("data", str, "synthetic", "inputs: synthetic Gaussian or MNIST", choices=("synthetic", "mnist")),
        Param("data_seed", int, 0, "seed of the data and of the output weights a", bounds=NON_NEGATIVE),
        DATA_DIR_PARAM,
    )
    # The loss contracts at least like exp(-2 λmin(H) t / n); for the default data (n = 20, d = 10)
    # λ0 ≈ 0.137 and λmax(H*) ≈ 1.31, so GD is stable for η < 2n/λmax ≈ 30 and η = 1 is far inside.
    # T = 500 brings the loss from 0.94 to 7e-5 (measured, seed 0) in a few seconds.
    default_lr = 1.0
    default_steps = 500
    # Crossings passed inside the steps: at width 16384 (2,308 crossings to t = 500) located events
    # cost 14,006 gradients where passing them costs 5,838, at 0.07 % of the GD(lr 1)–flow gap from
    # the located flow; at widths 100–4096 passing errs ≤ 0.27 % of that gap (README).
    flow_kinks = "jump_corrected"
    # Most steps end at an event (an entry into sliding) or a crossing on wide nets, so a step's
    # stages, not its order, set the cost: with events located, bosh3 (3 gradients a step) errs
    # 1.4e-6 of the GD(lr 1)–flow gap at width 1000 to t = 100 where dopri5 (6) errs 6.9e-5, for
    # 29 % fewer gradients (README).
    flow_method = "bosh3"
    switching_linear = True

    def build(self) -> None:
        p = self.params
        self.data_dir = p.pop("data_dir")
        generator = torch.Generator().manual_seed(p["data_seed"])
        if p["data"] == "mnist":
            if p["input_dim"] not in (None, MNIST_DIM):
                raise ConfigError(f"problem 'ntk' with data=mnist has input_dim {MNIST_DIM}, got {p['input_dim']}")
            p["input_dim"] = MNIST_DIM
            images, labels = mnist_tensors("train", p["n"], self.data_dir)
            inputs, targets = images.flatten(1), torch.where(labels >= 5, 1.0, -1.0).double()
        else:
            p["input_dim"] = p["input_dim"] or 10
            inputs = torch.randn(p["n"], p["input_dim"], generator=generator, dtype=torch.float64)
            targets = torch.randn(p["n"], generator=generator, dtype=torch.float64)
        self.inputs = inputs / torch.linalg.vector_norm(inputs, dim=1, keepdim=True)
        self.targets = targets
        self.output_weights = torch.where(torch.rand(p["width"], generator=generator) < 0.5, -1.0, 1.0).double()
        cosines = torch.clamp(self.inputs @ self.inputs.T, -1.0, 1.0)
        self.limit_kernel = cosines * (math.pi - torch.arccos(cosines)) / (2 * math.pi)
        self.lambda0 = float(torch.linalg.eigvalsh(self.limit_kernel)[0])

    def estimated_bytes(self) -> int:
        p = self.params
        inputs = p["input_dim"] or (MNIST_DIM if p["data"] == "mnist" else 10)
        # θ and its gradient (m × d), the data (n × d) and the n × m pre-activations of one evaluation
        return FLOAT64 * (2 * p["width"] * inputs + p["n"] * inputs + 3 * p["n"] * p["width"])

    @property
    def dim(self) -> int:
        return self.params["width"] * self.params["input_dim"]

    def sample_init(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(self.dim, generator=generator, dtype=torch.float64)

    def hidden_weights(self, theta: torch.Tensor) -> torch.Tensor:
        """W = (w_1; …; w_m) ∈ R^{m × d}, a view of θ."""
        return theta.view(self.params["width"], self.params["input_dim"])

    def predictions(self, theta: torch.Tensor) -> torch.Tensor:
        """u = (1/√m) σ(X Wᵀ) a ∈ R^n."""
        return torch.relu(self.inputs @ self.hidden_weights(theta).T) @ self.output_weights / math.sqrt(
            self.params["width"])

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.mean((self.predictions(theta) - self.targets) ** 2)

    def switching_functions(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """[Z], Z_ir = w_rᵀx_i (n × m): ∇L jumps where some Z_ir changes sign."""
        return [self.inputs @ self.hidden_weights(theta).T]

    def gated_loss(self, theta: torch.Tensor, gates: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """L with σ(Z_ir) replaced by D_ir Z_ir: u = (1/√m) (D ⊙ Z) a."""
        residuals, pre_activations = self._gated_residuals(theta, gates, self.inputs, self.targets)
        return 0.5 * torch.mean(residuals ** 2), [pre_activations]

    def gated_loss_of(self, theta: torch.Tensor, gates: Sequence[torch.Tensor], examples: torch.Tensor
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``gated_loss``'s terms of the examples ``examples``: (1/2n) Σ_{i ∈ examples} (u_i − y_i)²."""
        residuals, pre_activations = self._gated_residuals(theta, gates, self.inputs[examples], self.targets[examples])
        return 0.5 * torch.sum(residuals ** 2) / self.params["n"], [pre_activations]

    def _gated_residuals(self, theta: torch.Tensor, gates: Sequence[torch.Tensor], inputs: torch.Tensor,
                         targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u − y, Z) on ``inputs`` with σ(Z_ir) replaced by D_ir Z_ir (``gates`` = [D], rows as ``inputs``)."""
        pre_activations = inputs @ self.hidden_weights(theta).T
        (gate,) = gates
        predictions = (gate * pre_activations) @ self.output_weights / math.sqrt(self.params["width"])
        return predictions - targets, pre_activations

    def gated_gradient(self, theta: torch.Tensor, gates: Sequence[torch.Tensor], pairs: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """With r = (u − y)/n: ∇_{w_r} L_D = (a_r/√m) Σ_i D_ir r_i x_i, i.e. diag(a/√m) Dᵀ diag(r) X,
        and ∂L_D/∂Z_ir = D_ir r_i a_r/√m at the pairs i·m + r."""
        (gate,) = gates
        width = self.params["width"]
        (pre_activations,) = self.switching_functions(theta)
        output_weights = self.output_weights / math.sqrt(width)
        residuals = ((gate * pre_activations) @ output_weights - self.targets) / self.params["n"]
        # (Xᵀ diag(r) D)ᵀ: BLAS takes this tall-skinny product about 2x faster than Dᵀ (diag(r) X)
        gradient = ((residuals[:, None] * self.inputs).T @ gate * output_weights).T
        examples, units = pairs // width, pairs % width
        return gradient.reshape(-1), gate[examples, units] * residuals[examples] * output_weights[units]

    def switching_values(self, theta: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Z_ir = w_rᵀx_i for the pairs i·m + r only."""
        width = self.params["width"]
        return (self.hidden_weights(theta)[pairs % width] * self.inputs[pairs // width]).sum(1)

    def switching_jacobian(self, theta: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """∂Z_ir/∂θ: x_i in the d entries of w_r, zero elsewhere (a sparse row per pair; pair i·m + r is Z_ir)."""
        width, inputs = self.params["width"], self.params["input_dim"]
        examples, units = pairs // width, pairs % width
        rows = torch.arange(len(pairs), device=pairs.device).repeat_interleave(inputs)
        columns = (units[:, None] * inputs + torch.arange(inputs, device=pairs.device)).reshape(-1)
        return torch.sparse_coo_tensor(torch.stack([rows, columns]), self.inputs[examples].reshape(-1),
                                       (len(pairs), self.dim), is_coalesced=True,
                                       check_invariants=False)

    def gram(self, theta: torch.Tensor) -> torch.Tensor:
        """H(θ)_ij = (1/m) x_iᵀx_j Σ_r 1{w_rᵀx_i ≥ 0, w_rᵀx_j ≥ 0} (n × n)."""
        patterns = (self.inputs @ self.hidden_weights(theta).T >= 0).to(self.inputs.dtype)
        return (self.inputs @ self.inputs.T) * (patterns @ patterns.T) / self.params["width"]

    def recorders(self) -> Sequence[Recorder]:
        return (NTKRecorder(self.params["n"]),)


class NTKRecorder(Recorder):
    """The lecture notes' quantities along a trajectory of the ``ntk`` problem.

    ``ntk_min_eig`` λmin(H(t)); ``ntk_change`` ‖H(t) − H(0)‖_F; ``ntk_init_gap`` ‖H(0) − H*‖_F;
    ``weight_movement`` max_r ‖w_r(t) − w_r(0)‖; ``loss_bound_ntk`` L(0) exp(−λ0 t/n), the notes'
    bound with λ0 = λmin(H*); and, added by ``finish``, ``loss_bound_measured``
    L(0) exp(−(2/n) ∫_0^t λmin(H(s)) ds) with the integral taken by the trapezoidal rule over the
    recorded points. Under GF dL/dt = −(1/n²)(u − y)ᵀH(u − y) ≤ −(2/n) λmin(H) L, so the second
    bound holds at every width (up to the quadrature error); the first needs λmin(H(t)) ≥ λ0/2.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.initial_gram: torch.Tensor | None = None
        self.initial_loss = math.nan

    def variables(self) -> Sequence[Variable]:
        return (Variable("ntk_min_eig", "smallest eigenvalue of the Gram matrix H(t)", "1"),
                Variable("ntk_change", "Frobenius norm ||H(t) - H(0)||_F", "1"),
                Variable("ntk_init_gap", "Frobenius norm ||H(0) - H*||_F", "1"),
                Variable("weight_movement", "max_r ||w_r(t) - w_r(0)||", "1"),
                Variable("loss_bound_ntk", "L(0) exp(-lambda_min(H*) t / n)", "1"))

    def record(self, point: RecordPoint) -> Mapping[str, Any]:
        problem = point.problem
        gram = problem.gram(point.theta)
        if point.index == 0:
            self.initial_gram = problem.gram(point.theta0)
            self.initial_loss = float(problem.loss(point.theta0))
        movement = torch.linalg.vector_norm(problem.hidden_weights(point.theta - point.theta0), dim=1).max()
        return {"ntk_min_eig": float(torch.linalg.eigvalsh(gram)[0]),
                "ntk_change": float(torch.linalg.matrix_norm(gram - self.initial_gram)),
                "ntk_init_gap": float(torch.linalg.matrix_norm(self.initial_gram - problem.limit_kernel)),
                "weight_movement": float(movement),
                "loss_bound_ntk": self.initial_loss * math.exp(-problem.lambda0 * point.time / self.n)}

    def finish(self, ds: xr.Dataset) -> xr.Dataset:
        times, eigs = ds["time"].values, ds["ntk_min_eig"].values
        bound = self.initial_loss * np.exp(-2.0 / self.n * cumulative_integral(times, eigs))
        return ds.assign(loss_bound_measured=("time", bound, {
            "long_name": "L(0) exp(-(2/n) integral_0^t lambda_min(H(s)) ds), trapezoidal rule over the recorded "
                         "points", "units": "1"}))
