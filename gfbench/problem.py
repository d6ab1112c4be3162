"""The Problem contract: an objective f on a flat parameter vector θ ∈ R^d."""
from __future__ import annotations

import copy
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Mapping, Sequence

import torch

from .memory import check_fits
from .params import Configurable
from .recording import Recorder


@dataclass(frozen=True)
class GlobalCurvature:
    """Global curvature constants of f: ``beta`` = sup_q ‖∇²f(q)‖ (smoothness),
    ``m`` = −inf_q λmin(∇²f(q)), and ``nonnegative`` whether f ≥ 0 everywhere (EC21 Corollary 1 assumes it)."""

    beta: float
    m: float
    nonnegative: bool


class Problem(Configurable):
    """An objective f: R^d → R on a flat parameter vector, fixed by its parameters alone.

    A subclass sets ``name``, ``parameters`` (``Param`` declarations), ``default_lr`` and
    ``default_steps`` (the CLI's defaults for this problem), and implements:

    - ``build()``: construct the instance's data from ``self.params`` in float64 on the CPU,
      drawing anything random from a generator seeded by a ``data_seed`` parameter;
    - ``dim``: the number of parameters d;
    - ``sample_init(generator)``: θ0 as a float64 CPU tensor of shape (d,);
    - ``loss(theta)``: f(θ) as a differentiable 0-dim tensor.

    A problem whose gradient is only piecewise smooth (a ReLU network) also implements
    ``switching_functions(theta)``, the functions z(θ) across whose zero sets ∇f jumps, and
    ``gated_loss(theta, gates)``, f with each switch frozen, and may give ``switching_jacobian`` in
    closed form; smooth problems keep the defaults (none).
    ``flow_tolerances`` may replace the adaptive flows' default (rtol, atol) for a dtype where the
    generic ones are impractical (a problem whose gradient jumps, e.g. at ReLU kinks), and
    ``flow_method`` and ``flow_kinks`` their default method and treatment of the kinks, chosen
    from measurements (``flow_defaults_by_kinks``: other method and tolerances for a treatment).
    ``estimated_bytes()`` may estimate the memory of ``build`` and a gradient from the parameters.
    ``loss_with_aux(theta)`` may return, beside f(θ), tensors computed on the way that recorders
    reuse instead of evaluating again (a classifier's training logits).
    ``recorders()`` may return problem-specific diagnostics recorded along every trajectory,
    ``curvature_recorders()`` those recorded only with curvature on, and ``global_curvature()``
    closed-form curvature constants.
    Tensors and modules held as attributes are converted by ``to(device, dtype)``.
    docs/plugins.md states the contract for a problem in its own package.
    """

    kind: ClassVar[str] = "problem"
    default_lr: ClassVar[float]
    default_steps: ClassVar[int]
    #: Default (rtol, atol) of the adaptive flows by dtype on this problem; absent dtypes use
    #: gfbench.ode.DEFAULT_TOLERANCES.
    flow_tolerances: ClassVar[dict[torch.dtype, tuple[float, float]]] = {}
    #: Default adaptive method of the flows on this problem (None: gfbench.ode.DEFAULT_METHOD).
    flow_method: ClassVar[str | None] = None
    #: Default treatment of the switching surfaces by ``gf`` (its ``kinks`` option): "events"
    #: (Filippov's flow, event by event), "jump_corrected" (the same, transversal crossings passed
    #: inside a step) or "step_control" (−∇f integrated as if smooth).
    flow_kinks: ClassVar[str] = "step_control"
    #: (method, {dtype: (rtol, atol)}) replacing ``flow_method`` and ``flow_tolerances`` when the
    #: flow treats the kinks as the key says ("events", "jump_corrected"; ``gf`` only): the
    #: accuracy per gradient of a tolerance differs between the treatments.
    flow_defaults_by_kinks: ClassVar[dict[str, tuple[str | None, dict[torch.dtype, tuple[float, float]]]]] = {}
    #: Whether every switching function is linear in θ, z(θ) = Jθ (ntk): then z along a solver
    #: step's polynomial dense output is a polynomial with coefficients z(c_j), and the event search
    #: evaluates a few of them instead of interpolating θ.
    switching_linear: ClassVar[bool] = False

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.device = torch.device("cpu")
        self.dtype = torch.float64
        check_fits(f"problem {self.label} (its data and one gradient)", self.estimated_bytes())
        self.build()

    def estimated_bytes(self) -> int:
        """Memory that ``build`` and one gradient of ``loss`` need, from ``self.params`` alone (before
        ``build``), so that an impossible size is refused before it is allocated. 0: not estimated."""
        return 0

    @abstractmethod
    def build(self) -> None:
        ...

    @property
    @abstractmethod
    def dim(self) -> int:
        ...

    @abstractmethod
    def sample_init(self, generator: torch.Generator) -> torch.Tensor:
        ...

    @abstractmethod
    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        ...

    def loss_with_aux(self, theta: torch.Tensor) -> tuple[torch.Tensor, Mapping[str, torch.Tensor]]:
        """(f(θ), aux): the loss and, by name, tensors computed on the way to it that a recorder may
        reuse (``RecordPoint.aux``); the run's gradients evaluate this. Default: ``loss``, no aux."""
        return self.loss(theta), {}

    def init(self, seed: int) -> torch.Tensor:
        """θ0 for ``seed``: drawn in float64 on the CPU, so it is the same on every device."""
        generator = torch.Generator().manual_seed(int(seed))
        theta0 = self.sample_init(generator)
        if theta0.shape != (self.dim,):
            raise RuntimeError(f"{self.name}.sample_init returned shape {tuple(theta0.shape)}, expected ({self.dim},)")
        return theta0.to(self.device, self.dtype)

    def switching_functions(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """The switching functions z(θ) of a piecewise smooth f: ∇f is smooth while no z changes sign.

        For a ReLU network, the input of every ReLU on every training example, one tensor per
        ReLU layer shaped (examples, units...), in forward order. [] (the default): f is smooth.
        Filippov, *Differential Equations with Discontinuous Righthand Sides* (1988), §1.
        """
        return []

    def gated_loss(self, theta: torch.Tensor, gates: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(f_D(θ), z(θ)): f with every ReLU σ(z) replaced by D·z, and the switching functions.

        ``gates`` D holds one tensor per tensor of ``switching_functions``, of the same shape. With
        D = 1{z > 0} f_D = f near θ and ∇f_D is the one-sided gradient of that activation
        pattern, smooth in θ across the switching surfaces; D ∈ [0, 1] on a surface z = 0 gives
        Filippov's convex combinations of the one-sided gradients. z is returned inside f_D's
        graph, so ∂f_D/∂z = D·∂f/∂σ(z) comes from the same backward pass. Implemented by every
        problem whose ``switching_functions`` are not empty.
        """
        raise NotImplementedError(f"problem {self.name!r} has no switching functions to gate")

    def gated_loss_of(self, theta: torch.Tensor, gates: Sequence[torch.Tensor], examples: torch.Tensor
                      ) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
        """``gated_loss`` on the training examples ``examples`` alone: (their share of f_D,
        (1/n) Σ_{i ∈ examples} ℓ_i, and z on them), where ``gates`` and z hold those examples' rows
        (the first axis of every switching tensor numbers the examples). It makes a pass through a
        few crossing pairs cost a few examples, not a gradient. None (the default): not available,
        the Filippov solver then works on all examples."""
        return None

    def gated_gradient(self, theta: torch.Tensor, gates: Sequence[torch.Tensor], pairs: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(∇f_D(θ), ∂f_D/∂z at the entries ``pairs``, numbered as in ``switching_jacobian``) of
        ``gated_loss`` in closed form, where that is cheaper than autograd through it; None (the
        default): the Filippov solver differentiates ``gated_loss``."""
        return None

    def switching_values(self, theta: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """z_pairs(θ): the entries ``pairs`` of the switching functions, numbered as in
        ``switching_jacobian``. Default: all of them, flattened, then indexed; a problem where a
        few entries cost far less than all (ntk: one dot product each) computes only those."""
        return torch.cat([z.reshape(-1) for z in self.switching_functions(theta)])[pairs]

    def switching_jacobian(self, theta: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor | None:
        """J = ∂z_pairs/∂θ, shape (len(pairs), d), dense or sparse COO, where a closed form is cheaper
        than autograd; None (the default): the Filippov solver differentiates ``switching_functions``.

        ``pairs`` numbers the switching functions' entries flattened tensor after tensor, row-major.
        """
        return None

    def recorders(self) -> Sequence[Recorder]:
        return ()

    def curvature_recorders(self) -> Sequence[Recorder]:
        """Recorders added when a run records curvature, e.g. theoretical lower bounds on λmin."""
        return ()

    def global_curvature(self) -> GlobalCurvature | None:
        """β ≥ ‖∇²f(q)‖ and m ≥ −λmin(∇²f(q)) for all q, when known in closed form (EC21 Corollary 1)."""
        return None

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "Problem":
        """This problem on ``device`` in ``dtype``: self when nothing changes, else a converted copy.

        The original is left as it is, so a problem built in float64 keeps its exact data however
        often it is run in float32.
        """
        device = self.device if device is None else torch.device(device)
        dtype = self.dtype if dtype is None else dtype
        if device == self.device and dtype == self.dtype:
            return self
        moved = copy.copy(self)
        for key, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(moved, key, value.to(device, dtype) if value.is_floating_point() else value.to(device))
            elif isinstance(value, torch.nn.Module):
                setattr(moved, key, copy.deepcopy(value).to(device, dtype))
        moved.device, moved.dtype = device, dtype
        return moved
