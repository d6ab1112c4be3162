"""Gradient flow on a piecewise smooth loss as a Filippov system: activation patterns, sliding, events.

A ReLU network's loss f is smooth while no switching function z_k(θ) (a ReLU's input on one
example) changes sign, and ∇f jumps across each surface z_k = 0. :class:`FilippovSwitching`
holds the state of the event-driven integration (Piiroinen & Kuznetsov, ACM TOMS 34(3), 2008):

- a gate D_k ∈ {0, 1} per pair off the sliding set: between events the flow is dθ/dt = −∇f_D(θ)
  (``Problem.gated_loss``), smooth in θ also past the surfaces, so a Runge–Kutta step and its dense
  output stay accurate up to the event, which is located on that dense output;
- a sliding set S of pairs held on their surfaces: there D_S = α, the equivalent control (Utkin)
  that makes dz_S/dt = 0, with 0 ≤ α ≤ 1 (Filippov's convex combination of the one-sided
  fields, Filippov 1988 §2.4). A pair leaves S when its α reaches 0 (to z < 0) or 1 (to z > 0).
  The field is continuous there (α at the bound gives that side's field), so an exit is not
  located: the step across it stands, and the pair leaves S at the step end
  (``FilippovSwitching.pass_events``).

Equivalent control. With g_k = ∂f/∂σ(z_k) and J_S = ∂z_S/∂θ, the field is affine in the gates of
one ReLU layer: F(α) = −∇f_{D(α)} = F(1) + J_Sᵀ(g_S ⊙ (1 − α)) on z_S = 0 (∂∇f_D/∂D_k =
g_k ∇z_k + z_k ∇g_k, and g_k depends on a gate D_l of its own layer only through σ_l = D_l z_l,
so not at all on z_l = 0). So
ż_S = w(1) + K diag(g_S)(1 − α), K = J_S J_Sᵀ, and α solves the box complementarity problem:
α_k ∈ (0, 1) and ż_k = 0, or α_k = 1 and ż_k ≥ 0, or α_k = 0 and ż_k ≤ 0. Exact for the ntk
problem and whenever the sliding pairs lie in one ReLU layer (e.g. the first layer of relu_fc).
Pairs of different layers sliding at once are coupled multilinearly (∇z_k of a deeper pair depends
on shallower gates, g_k of a shallower pair on deeper ones): there Newton's method on the exact ż(α)
solves the same complementarity problem (``FilippovSwitching.field_with``), at a few gradient
evaluations per field evaluation.
Limits: max-pooling (cnn arch=lenet5) switches are not switching functions, so there the field
between events is not smooth and only the step control handles them; a pair that crosses zero and
back within one step goes unseen; with several layers sliding the complementarity problem need not
have a unique solution (its matrix need not be a P-matrix), and the one continued from the
previous evaluation is taken. Sliding pairs whose ∇z coincide (a CNN's pre-activations over
identical patches of one image) make K singular; any α solving the consistent system gives the
same field, and the least-norm one is taken. Between an exit at τ and the end of its step the pair, still in S
with α at its bound, moves off its surface (z_k = O((t − τ)²), as ż_k = 0 at τ), where the
affine evaluation errs O(z_k): a local error O(h³) per exit, seen by the step's error estimate.
With ``kinks=jump_corrected`` a transversal crossing does not stop the integration
(``FilippovSwitching.pass_crossings``): at the end of the step over which z_k changed sign the
gate switches and the state gets the missed jump ∫_{τ_k}^{t1} ΔF_k, ΔF_k = −(D'_k − D_k) g_k ∇z_k,
with g_k followed along the step; its error is O(h²) per crossing (``pass_crossings`` lists the
terms), so O(h²) in all where the crossings per unit time are fixed (cnn: README).
Only gradient flow (``gf`` with ``kinks=events`` or ``jump_corrected``) is integrated this way; the modified flows meet
the kinks by step control. igr's modified loss f + (η/4)‖∇f‖² is itself discontinuous across the
surfaces (‖∇f‖² jumps), so its flow is not the Filippov system of a continuous loss and its
equivalent control would solve a nonlinear complementarity problem; second_order,
(η/2)θ̈ + θ̇ = −∇f, has a continuous velocity, so a trajectory meets a surface it is pushed back
to from both sides through ever smaller oscillations (crossings accumulating in finite time),
which event location cannot pass either. Both are derived by backward error analysis, which
holds inside one activation region only.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable, NamedTuple

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch

from .ode import FlowUndefined
from .problem import Problem

#: Below this fraction of nonzero entries in J_S, K = J_S J_Sᵀ is formed from a sparse J_S.
SPARSE_GRAM_DENSITY = 0.05
#: Most pivots of the complementarity solve; a P-matrix problem of size s needs at most ~2s.
MAX_PIVOTS = 1000
#: Coupled blocks of up to this many pairs are solved together by trying every state (3^s of them).
ENUMERATED_BLOCK_SIZE = 4
#: Newton steps of the equivalent control of sliding pairs in several layers, and the change
#: of α (absolute) below which it has settled: NEWTON_TOL, or NEWTON_EPS_FACTOR units of
#: round-off where the dtype cannot resolve that (float32).
MAX_NEWTON = 40
NEWTON_TOL = 1e-11
NEWTON_EPS_FACTOR = 100
#: a passed step is located instead where the state it lands on puts a crossed pair back on its old
#: side, a pair crossing after the stop across already, or the pair entering sliding off its surface, by
#: more than this share of the largest change in z over the step among the crossing pairs
#: (``pass_crossings``; passes that err O(h²) stayed within 0.12 % of it on relu_fc and cnn, the misjudged
#: passes on a 5-example mlp were off by 3–28 %)
PASS_CONSISTENCY = 1e-2
#: Newton steps for a crossing time on the cubic through four samples (quadratic convergence from the secant root).
CUBIC_ROOT_NEWTON_STEPS = 8


class SlidingSolveFailed(FlowUndefined):
    """No equivalent control was found (the complementarity matrix is not a P-matrix, or the
    several-layer iteration did not settle): the run ends with status solver_failed."""


class CoupledBlocks(NamedTuple):
    """A partition of the pairs that no nonzero entry of a complementarity matrix crosses: ``labels``
    (the block of each pair), ``single`` (the pairs alone in their block) and ``groups`` (the
    blocks of two or more pairs, one (blocks, size) index tensor per block size)."""

    labels: torch.Tensor
    single: torch.Tensor
    groups: list[torch.Tensor]

    def separates(self, matrix: torch.Tensor) -> bool:
        """Whether every nonzero entry of ``matrix`` lies inside a block."""
        crossing = self.labels[:, None] != self.labels[None, :]
        return len(self.labels) == len(matrix) and not ((matrix != 0) & crossing).any()

    def restricted(self, keep: torch.Tensor) -> CoupledBlocks:
        """The blocks of the pairs ``keep`` alone: they separate any principal submatrix on ``keep``."""
        return _grouped(self.labels[keep].cpu().numpy(), self.labels.device)


def coupled_blocks(matrix: torch.Tensor, previous: CoupledBlocks | None = None) -> CoupledBlocks:
    """The connected components of the graph with edges where matrix or its transpose ≠ 0 (a sparse
    COO ``matrix``: its stored entries); ``previous`` itself when it still separates a dense ``matrix``
    (any such partition gives the same solution, and between events the sliding set and so the
    pattern of the matrix stay the same)."""
    if matrix.is_sparse:
        rows, columns = matrix.coalesce().indices().cpu().numpy()
        coupled = scipy.sparse.csr_matrix((np.ones(len(rows), dtype=bool), (rows, columns)), shape=matrix.shape)
    elif previous is not None and previous.separates(matrix):
        return previous
    else:
        coupled = scipy.sparse.csr_matrix((matrix != 0).cpu().numpy())
    _, labels = scipy.sparse.csgraph.connected_components(coupled, directed=False)
    return _grouped(labels, matrix.device)


def _grouped(labels: np.ndarray, device: torch.device) -> CoupledBlocks:
    """The CoupledBlocks whose block of pair k is ``labels[k]``."""
    # pairs sorted by block stay contiguous when filtered by block size: each size is one reshape
    order = np.argsort(labels, kind="stable")
    size_of = np.bincount(labels)[labels[order]] if len(labels) else labels
    return CoupledBlocks(torch.from_numpy(labels).to(device), torch.from_numpy(order[size_of == 1]).to(device),
                         [torch.from_numpy(order[size_of == size].reshape(-1, size)).to(device)
                          for size in np.unique(size_of[size_of > 1])])


class BlockDiagonal(NamedTuple):
    """A square matrix whose nonzero entries lie inside the blocks of ``blocks``: the diagonal entries
    of the pairs alone (``single``) and one (B, s, s) tensor per entry of ``blocks.groups``. Its
    products and its complementarity solve cost O(Σ block size²), not O(n²): ntk's K = J_S J_Sᵀ
    couples only the pairs of one hidden unit, and hundreds of pairs slide at once on wide nets."""

    blocks: CoupledBlocks
    single: torch.Tensor
    groups: list[torch.Tensor]

    @classmethod
    def of(cls, matrix: torch.Tensor, blocks: CoupledBlocks) -> BlockDiagonal:
        """The blocks of a dense or sparse COO ``matrix`` that ``blocks`` separates."""
        if not matrix.is_sparse:
            return cls(blocks, matrix[blocks.single, blocks.single],
                       [matrix[group[:, :, None], group[:, None, :]] for group in blocks.groups])
        matrix = matrix.coalesce()
        (rows, columns), values = matrix.indices(), matrix.values()
        # each pair's place: the entry of ``groups`` holding it (−1: alone), its block there, its slot in that block
        group_of = torch.full((len(matrix),), -1, dtype=torch.long, device=rows.device)
        block_of, slot_of = torch.zeros_like(group_of), torch.zeros_like(group_of)
        for number, group in enumerate(blocks.groups):
            group_of[group] = number
            block_of[group] = torch.arange(len(group), device=rows.device)[:, None].expand_as(group)
            slot_of[group] = torch.arange(group.shape[1], device=rows.device).expand_as(group)
        slot_of[blocks.single] = torch.arange(len(blocks.single), device=rows.device)
        single = torch.zeros(len(blocks.single), dtype=values.dtype, device=values.device)
        alone = group_of[rows] == -1  # only diagonal entries: the blocks separate the matrix
        single[slot_of[rows[alone]]] = values[alone]
        groups = []
        for number, group in enumerate(blocks.groups):
            inside = group_of[rows] == number
            dense = torch.zeros(*group.shape, group.shape[1], dtype=values.dtype, device=values.device)
            dense[block_of[rows[inside]], slot_of[rows[inside]], slot_of[columns[inside]]] = values[inside]
            groups.append(dense)
        return cls(blocks, single, groups)

    def scaled(self, factors: torch.Tensor) -> BlockDiagonal:
        """self diag(factors): column j times factors_j."""
        return BlockDiagonal(self.blocks, self.single * factors[self.blocks.single],
                             [dense * factors[group][:, None, :] for dense, group in zip(self.groups, self.blocks.groups)])

    def __matmul__(self, vector: torch.Tensor) -> torch.Tensor:
        """The matrix times ``vector``, block by block."""
        product = torch.empty_like(vector)
        product[self.blocks.single] = self.single * vector[self.blocks.single]
        for dense, group in zip(self.groups, self.blocks.groups):
            product[group] = (dense @ vector[group][..., None]).squeeze(-1)
        return product

    def diagonal(self) -> torch.Tensor:
        """The diagonal entries, in the pairs' order."""
        diagonal = torch.empty(len(self.blocks.labels), dtype=self.single.dtype, device=self.single.device)
        diagonal[self.blocks.single] = self.single
        for dense, group in zip(self.groups, self.blocks.groups):
            diagonal[group] = dense.diagonal(dim1=1, dim2=2)
        return diagonal


def equivalent_control(velocity_on: torch.Tensor, matrix: torch.Tensor | BlockDiagonal,
                       blocks: CoupledBlocks | None = None) -> torch.Tensor:
    """α ∈ [0, 1]^s solving the box complementarity problem for ż(α) = ``velocity_on`` + ``matrix`` (1 − α):
    α_k ∈ (0, 1) and ż_k = 0, or α_k = 1 and ż_k ≥ 0, or α_k = 0 and ż_k ≤ 0 (module docstring;
    for one ReLU layer ``matrix`` = K diag(g)).

    Pairs couple only through nonzero entries of ``matrix`` (on ntk, pairs of one hidden unit), so
    each block is solved on its own: blocks of up to ENUMERATED_BLOCK_SIZE pairs all at once by
    ``_solve_small_blocks``, larger ones by ``_solve_block``. The blocks are a ``BlockDiagonal``
    matrix's own, else ``blocks`` (default: ``coupled_blocks(matrix)``).
    """
    if not isinstance(matrix, BlockDiagonal):
        matrix = BlockDiagonal.of(matrix, coupled_blocks(matrix) if blocks is None else blocks)
    alpha = torch.empty_like(velocity_on)
    single = matrix.blocks.single
    # One pair alone: ż = v + m β; β = −v/m clipped to [0, 1] if it attracts (m > 0), else it
    # goes to the side its velocity points to.
    v, m = velocity_on[single], matrix.single
    beta = torch.where(m > 0, (-v / torch.where(m > 0, m, 1.0)).clamp(0, 1), (v < 0).to(v.dtype))
    alpha[single] = 1 - beta
    for group, dense in zip(matrix.blocks.groups, matrix.groups):
        if group.shape[1] <= ENUMERATED_BLOCK_SIZE:
            alpha[group] = _solve_small_blocks(velocity_on[group], dense)
        else:
            for block, block_matrix in zip(group, dense):
                alpha[block] = _solve_block(velocity_on[block], block_matrix)
    return alpha


@functools.cache
def _block_states(size: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(free, off, I): the 3^s states of a block of s pairs as masks (3^s, s), each pair free, on or
    off, and the s × s identity; formed once per size (every field evaluation asks for them)."""
    states = torch.cartesian_prod(*[torch.arange(3, device=device)] * size).reshape(-1, size)
    return states == 0, states == 2, torch.eye(size, dtype=dtype, device=device)


def _solve_small_blocks(velocity_on: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``_solve_block`` for a batch of blocks of one small size s (velocity_on (B, s), matrix (B, s, s)),
    by trying all 3^s states (each pair free, on or off) at once and taking the first that satisfies
    the conditions; a block where none does (no P-matrix) goes to ``_solve_block``."""
    size = velocity_on.shape[1]
    free, off, identity = _block_states(size, matrix.dtype, matrix.device)
    # free rows: (matrix β)_k = −v_k; on/off rows: β_k = 0/1
    system = torch.where(free[None, :, :, None], matrix[:, None], identity)
    rhs = torch.where(free[None], -velocity_on[:, None, :], off[None].to(matrix.dtype))
    beta, singular = torch.linalg.solve_ex(system, rhs)
    velocity = velocity_on[:, None, :] + (matrix[:, None] @ beta[..., None]).squeeze(-1)
    slack = 1e-12 * (velocity_on.abs().amax(1) + matrix.abs().amax((1, 2)))[:, None, None]
    attracting = matrix.diagonal(dim1=1, dim2=2)[:, None, :] > 0
    holds = torch.where(free, attracting & (beta >= 0) & (beta <= 1),
                        torch.where(off, velocity <= slack, velocity >= -slack))
    valid = holds.all(2) & (singular == 0)
    first = valid.to(torch.int8).argmax(1)
    alpha = 1 - beta[torch.arange(len(beta), device=beta.device), first].clamp(0, 1)
    for unsolved in (~valid.any(1)).nonzero().flatten().tolist():
        alpha[unsolved] = _solve_block(velocity_on[unsolved], matrix[unsolved])
    return alpha


def _flat(tensors) -> torch.Tensor:
    """The tensors' entries in one vector, tensor after tensor (the pair numbering)."""
    if len(tensors) == 1:
        return tensors[0].reshape(-1)
    return torch.cat([tensor.reshape(-1) for tensor in tensors])


def _gram(jacobian: torch.Tensor, dense: bool = True) -> torch.Tensor:
    """K = J Jᵀ, dense, or sparse COO where J is (``dense=False``); through a sparse J where most
    entries vanish (ntk: a row touches one unit's weights)."""
    if jacobian.is_sparse:
        with warnings.catch_warnings():  # torch warns once that sparse × sparse goes through its beta CSR
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
            gram = torch.sparse.mm(jacobian, jacobian.t())
        return gram.to_dense() if dense else gram
    if jacobian.numel() and (jacobian != 0).sum() < SPARSE_GRAM_DENSITY * jacobian.numel():
        return torch.sparse.mm(jacobian.to_sparse(), jacobian.T)
    return jacobian @ jacobian.T


def _times(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """matrix @ vector for a dense or sparse COO matrix."""
    return torch.sparse.mm(matrix, vector[:, None]).squeeze(1) if matrix.is_sparse else matrix @ vector


def _cubic_through(nodes: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The coefficients (4, columns), constant first, of the cubic through each column of ``values``
    (samples at the 4 ``nodes``)."""
    return torch.linalg.solve(torch.stack([nodes ** power for power in range(4)], 1), values)


def _cubic_root(nodes: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """For each column of ``values`` (samples at the 4 ``nodes`` in [0, 1], changing sign between the
    first and the last), the root in [0, 1] of the cubic through them: Newton's method from the
    secant root, kept in [0, 1]."""
    coefficients = _cubic_through(nodes, values)
    root = (values[0] / (values[0] - values[-1])).clamp(0, 1)
    for _ in range(CUBIC_ROOT_NEWTON_STEPS):
        value = coefficients[0] + root * (coefficients[1] + root * (coefficients[2] + root * coefficients[3]))
        slope = coefficients[1] + root * (2 * coefficients[2] + 3 * root * coefficients[3])
        root = torch.where(slope != 0, root - value / slope, root).clamp(0, 1)
    return root


def _continued(alpha: torch.Tensor, velocity_on: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """α + ż_S(α) / m_k, m_k = ∂ż_k/∂(1 − α_k) (> 0 where pair k can slide): the equivalent control
    continued past [0, 1] pair by pair. Equal to α while ż_k = 0, and beyond a bound by as much as
    the pair's velocity asks (for one pair alone, the unclipped solution of ż_k = 0), so that
    min(α, 1 − α) of it turns negative when a sliding pair's α reaches 0 or 1: the exit event."""
    return alpha + velocity_on / rate.clamp(min=torch.finfo(rate.dtype).tiny)


def _plus_transposed_times(vector: torch.Tensor, matrix: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """vector + matrixᵀ weights for a dense or sparse COO matrix (sparse: one scatter-add of its
    entries, where a product with the transposed COO tensor costs several passes)."""
    if not matrix.is_sparse:
        return vector + matrix.T @ weights
    matrix = matrix.coalesce()
    rows, columns = matrix.indices()
    return vector.index_add(0, columns, matrix.values() * weights[rows])


def _solve_consistent(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """matrix⁻¹ rhs; where ``matrix`` is singular (sliding pairs whose ∇z coincide: a CNN's
    pre-activations over identical patches of one image cross, and slide, together), the least-norm
    solution of the system, which gives the same field as any other solution; raises
    SlidingSolveFailed where the system has none."""
    solution, info = torch.linalg.solve_ex(matrix, rhs)
    if int(info) == 0 and bool(torch.isfinite(solution).all()):
        return solution
    solution = torch.linalg.pinv(matrix) @ rhs
    scale = rhs.abs().max() + matrix.abs().max() * solution.abs().max()
    if (matrix @ solution - rhs).abs().max() > 1e-9 * scale:
        raise SlidingSolveFailed(f"no equivalent control: the equations of {len(rhs)} sliding pairs are "
                                 "singular and inconsistent")
    return solution


def _solve_block(velocity_on: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """The box complementarity problem of ``equivalent_control`` for one coupled block.

    Least-index principal pivoting (Murty) on the box problem in β = 1 − α: each pair is free
    (ż_k = 0), on (β_k = 0) or off (β_k = 1), and one violated condition, the lowest-indexed, is
    switched per pivot. A pair with matrix_kk ≤ 0 cannot slide (ż_k grows with its own β_k, so its
    surface does not attract from both sides): it is only ever on or off. Unique when ``matrix`` is a
    P-matrix (one layer: K positive definite and g > 0); raises SlidingSolveFailed after MAX_PIVOTS pivots.
    """
    size = len(velocity_on)
    slack = 1e-12 * (velocity_on.abs().max() + matrix.abs().max())
    attracting = matrix.diagonal() > 0
    free_state, on_state, off_state = 0, 1, 2
    state = torch.where(attracting, free_state, on_state)
    for _ in range(MAX_PIVOTS):
        beta = (state == off_state).to(matrix.dtype)
        free = state == free_state
        if free.any():
            rhs = -(velocity_on[free] + matrix[free][:, ~free] @ beta[~free])
            beta[free] = _solve_consistent(matrix[free][:, free], rhs)
        velocity = velocity_on + matrix @ beta
        on_wrong, off_wrong = (state == on_state) & (velocity < -slack), (state == off_state) & (velocity > slack)
        violated = (free & ((beta < 0) | (beta > 1))) | on_wrong | off_wrong
        if not violated.any():
            return 1 - beta.clamp(0, 1)
        k = int(violated.nonzero()[0])
        if free[k]:
            state[k] = on_state if beta[k] < 0 else off_state
        elif attracting[k]:
            state[k] = free_state
        else:
            state[k] = off_state if on_wrong[k] else on_state
    raise SlidingSolveFailed(f"no equivalent control for {size} sliding pairs after {MAX_PIVOTS} pivots")


class _ConstantGeometry(NamedTuple):
    """What the equivalent control needs of a sliding set S and does not depend on θ when the
    switching functions are linear: J_S, K = J_S J_Sᵀ (dense, or sparse COO where J_S is) and K by
    the coupled blocks of K (``blocked``)."""

    sliding: torch.Tensor
    jacobian: torch.Tensor
    gram: torch.Tensor
    blocked: BlockDiagonal

    @classmethod
    def of(cls, sliding: torch.Tensor, jacobian: torch.Tensor, gram: torch.Tensor, blocks: CoupledBlocks
           ) -> _ConstantGeometry:
        return cls(sliding, jacobian, gram, BlockDiagonal.of(gram, blocks))

    def restricted(self, sliding: torch.Tensor, keep: torch.Tensor) -> _ConstantGeometry:
        """The geometry of ``sliding`` = self.sliding[keep]: J's rows, K's principal submatrix, the blocks cut down."""
        # coalesced once here: a sparse J's rows selected are not, and each product would coalesce them
        jacobian = self.jacobian.index_select(0, keep)
        gram = self.gram.index_select(0, keep).index_select(1, keep)
        return _ConstantGeometry.of(sliding, jacobian.coalesce() if jacobian.is_sparse else jacobian,
                                    gram.coalesce() if gram.is_sparse else gram, self.blocked.blocks.restricted(keep))


class SlidingField(NamedTuple):
    """The Filippov field at a point with a sliding set S: ``velocity`` = −∇f_D with D_S = α,
    ``alpha`` (the equivalent control of S, in [0, 1]) and ``continued`` (α continued past
    [0, 1] by ``_continued``; its leaving [0, 1] is the exit event)."""

    velocity: torch.Tensor
    alpha: torch.Tensor
    continued: torch.Tensor

    def kept(self, keep: torch.Tensor) -> SlidingField:
        """The same field with the sliding pairs ``keep`` alone (where the others sit at a bound of α)."""
        return SlidingField(self.velocity, self.alpha[keep], self.continued[keep])


class StepJumps:
    """The transversal crossings passed inside one step of the gated flow (``FilippovSwitching.pass_crossings``).

    Pair k crosses at time τ_k, after which the true field is the gated one plus the jump
    ΔF_k(s) = c_k(s) ∇z_k, c_k = −(D'_k − D_k) g_k (ΔF_k = −(∇f_{D'} − ∇f_D) on z_k = 0; module
    docstring), with c_k(s) along the step the cubic ``rate_coefficients`` (4, pairs) in
    x = (s − t0)/(t1 − t0). Up to terms of second order in the step, y(s) = (the gated step's dense
    output at s) + Σ_k ∫_{τ_k}^{s} ΔF_k: ``displacement(s)`` is that sum, a product Jᵀw with
    w_k = ∫_{τ_k}^{s} c_k and J = ∂z_C/∂θ taken on the examples of the crossing pairs C alone."""

    def __init__(self, t0: float, t1: float, fractions: torch.Tensor, rate_coefficients: torch.Tensor,
                 vjp: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.t0, self.t1, self.fractions, self._vjp = t0, t1, fractions, vjp
        powers = torch.arange(1, 5, dtype=rate_coefficients.dtype, device=rate_coefficients.device)
        #: the antiderivative's coefficients of x, x², x³, x⁴ (times the step: integrals in time)
        self._integral = rate_coefficients * ((t1 - t0) / powers)[:, None]
        self._kept = torch.ones_like(fractions, dtype=torch.bool)
        #: c_k at the step end
        self.end_rates = rate_coefficients.sum(0)
        #: where the integration must stop inside the step for the events ``entering`` (None: it need not)
        self.stop: float | None = None
        self.entering: torch.Tensor | None = None
        self._last: tuple[float, torch.Tensor] | None = None  # the pass's check and the integration ask for the same s

    @property
    def times(self) -> torch.Tensor:
        return self.t0 + self.fractions * (self.t1 - self.t0)

    def keep(self, kept: torch.Tensor) -> None:
        """Pass only the crossings ``kept`` (a mask): the others are left out of the displacement."""
        self._kept = kept
        self.end_rates = torch.where(kept, self.end_rates, 0.0)
        self._last = None

    def _antiderivative(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self._integral[0] + x * (self._integral[1] + x * (self._integral[2] + x * self._integral[3])))

    def displacement(self, s: float) -> torch.Tensor:
        if self._last is not None and self._last[0] == s:
            return self._last[1]
        x = torch.tensor((s - self.t0) / (self.t1 - self.t0), dtype=self.fractions.dtype, device=self.fractions.device)
        weights = self._antiderivative(x) - self._antiderivative(self.fractions)
        self._last = (s, self._vjp(torch.where(self._kept & (self.fractions < x), weights, 0.0)))
        return self._last[1]


class StepStands:
    """The events of a step taken at its end with the step as it is (``displacement`` None: no
    correction, the field there unchanged; ``FilippovSwitching.pass_events``)."""

    displacement = None
    stop: float | None = None
    entering: torch.Tensor | None = None


class FilippovSwitching:
    """The switching state of one gradient-flow trajectory of ``field.problem`` from θ0.

    ``rhs(θ)``: the Filippov field −∇f_D(θ) with the current gates and sliding set;
    ``events(t, θ, components)``: a vector ≥ 0 until an event (a gated pair's z changes sign, a
    sliding α leaves [0, 1]); ``switch(θ, fired)``: at an event, re-decide every pair involved (transversal
    crossing or entry into sliding, exit from sliding) by the complementarity solve.
    Each evaluation of the gated gradient counts one gradient in ``field.n_evals``.
    """

    def __init__(self, field, theta0: torch.Tensor, crossings_in_step: bool = False) -> None:
        self.field = field
        #: whether transversal crossings are passed inside a step (``pass_crossings``) or located
        self.crossings_in_step = crossings_in_step
        self.problem = field.problem
        switching = [z.detach() for z in self.problem.switching_functions(theta0)]
        self.shapes = [z.shape for z in switching]
        self.sizes = [shape.numel() for shape in self.shapes]
        self.layer_of = torch.repeat_interleave(torch.arange(len(self.sizes)), torch.tensor(self.sizes)).to(theta0.device)
        z = _flat(switching)
        self.gates = (z > 0).to(theta0.dtype)
        #: 2 D − 1: the side (±1) of its surface each gated pair is on
        self.sides = 2 * self.gates - 1
        self.sliding = torch.zeros(0, dtype=torch.long, device=theta0.device)
        self.is_sliding = torch.zeros(z.shape, dtype=torch.bool, device=theta0.device)
        self.band = torch.zeros_like(z)
        #: the pairs whose band may be > 0 (a superset): the others' stays 0 at a switch
        self._banded = torch.zeros(0, dtype=torch.long, device=theta0.device)
        #: (θ, the field there) at the last point evaluated
        self._cached: tuple[torch.Tensor, SlidingField] | None = None
        self._blocks: CoupledBlocks | None = None
        #: J_S, K and its blocks while z is linear in θ and the sliding set has not changed
        self._constant: _ConstantGeometry | None = None
        #: (sliding set, gates with D_S overwritten at each evaluation)
        self._gates_buffer: tuple[torch.Tensor, torch.Tensor] | None = None
        self.crossings = self.sliding_entries = self.sliding_exits = 0
        #: crossings switched inside a step (``pass_crossings``), the examples those passes
        #: evaluated (each a forward pass on one example; n of them cost about a gradient), and the
        #: steps whose pass was declined and located instead
        self.passed_crossings = self.example_passes = self.passes_declined = 0
        #: single-example backward passes that formed the sliding pairs' J_S (``_switching_jacobian``)
        self.jacobian_passes = 0
        #: the pairs switched by the last ``pass_crossings``
        self._passed = torch.zeros(0, dtype=torch.long, device=theta0.device)
        #: whether the problem evaluates f_D on a subset of the examples (``Problem.gated_loss_of``)
        self._subsets = type(self.problem).gated_loss_of is not Problem.gated_loss_of

    def _switching(self, theta: torch.Tensor) -> torch.Tensor:
        return _flat(self.problem.switching_functions(theta))

    def field_with(self, theta: torch.Tensor, sliding: torch.Tensor, guess: torch.Tensor | None = None
                   ) -> SlidingField:
        """The Filippov field at θ with the pairs ``sliding`` on their surfaces.

        One evaluation at α = 1 gives F(1), ż(1) and ∂ż/∂α = −K diag(g), in which ż is affine
        when the sliding pairs lie in one ReLU layer. Otherwise ż(α) is multilinear in α (a deeper
        pair's ∇z depends on shallower gates, a shallower pair's g on deeper ones) and Newton's
        method on the box problem of the model ż(α') ≈ ż(α) − K(α) diag(g(α)) (α' − α) refines α,
        from ``guess`` (α at a nearby θ with the same sliding set) when given. A fixed point solves
        the exact problem. The model omits ∂J_k/∂α_j · F, which on fully connected layers is
        w_kj ż_j: zero at the solution for a sliding pair j and irrelevant for a pair held at 0 or
        1, so the convergence is Newton's. Each step costs one gradient with J_S (g_S follows from
        ∂f_D/∂z_S = α ⊙ g_S). It stops when the update is at most NEWTON_TOL (float32: 100 units
        of round-off), or when its square is (then the updated α and the field moved to it to first
        order are returned, both within O(update²) of the solution). Raises SlidingSolveFailed
        when α has not settled after MAX_NEWTON steps.
        """
        multilayer = len(self.sizes) > 1 and self.layer_of[sliding].unique().numel() > 1
        if guess is not None and multilayer:
            alpha = guess
        else:
            velocity, zdot, jacobian, signal = self._evaluate(
                theta, sliding, torch.ones(len(sliding), dtype=theta.dtype, device=theta.device))
            if len(sliding) == 0:
                return SlidingField(velocity, signal, signal)
            matrix = self._geometry(sliding, jacobian).scaled(signal)
            alpha = equivalent_control(zdot, matrix)
            if not multilayer:
                return SlidingField(_plus_transposed_times(velocity, jacobian, signal * (1 - alpha)), alpha,
                                    _continued(alpha, zdot + matrix @ (1 - alpha), matrix.diagonal()))
        tolerance = max(NEWTON_TOL, NEWTON_EPS_FACTOR * torch.finfo(theta.dtype).eps)
        for _ in range(MAX_NEWTON):
            velocity, zdot, jacobian, scaled_signal = self._evaluate(theta, sliding, alpha)
            signal = self._signal_from(theta, sliding, alpha, scaled_signal)
            matrix = self._geometry(sliding, jacobian).scaled(signal)
            # the model ż(α') = ż(α) − M (α' − α), M = K diag(g): in β' = 1 − α' it is [ż(α) − M(1 − α)] + M β'
            updated = equivalent_control(zdot - matrix @ (1 - alpha), matrix)
            change = float((updated - alpha).abs().max())
            if change <= tolerance:
                return SlidingField(velocity, alpha, _continued(alpha, zdot, matrix.diagonal()))
            if change ** 2 <= tolerance:
                # Newton's update lands within O(change²) of the solution; the field moves with
                # it to first order as in one layer, F(α') = F(α) + J_Sᵀ(g ⊙ (α − α')) + O(change²)
                return SlidingField(_plus_transposed_times(velocity, jacobian, signal * (alpha - updated)), updated,
                                    _continued(updated, zdot - matrix @ (updated - alpha), matrix.diagonal()))
            alpha = updated
        raise SlidingSolveFailed(f"the equivalent control of {len(sliding)} sliding pairs in several layers "
                                 f"did not settle in {MAX_NEWTON} Newton steps")

    def _evaluate(self, theta: torch.Tensor, sliding: torch.Tensor, alpha: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """With D_S = α: F = −∇f_D(θ), ż_S = J_S F, J_S = ∂z_S/∂θ and ∂f_D/∂z_S (= α g); the
        problem's ``gated_gradient`` where it has one, else autograd through ``gated_loss``."""
        flat_gates = self._gates_with(sliding, alpha)
        gates = self._split(flat_gates)
        closed_form = self.problem.gated_gradient(theta, gates, sliding)
        graph = None
        with torch.enable_grad():
            if closed_form is None:
                leaf, loss, switching = self._gated_on(theta, flat_gates, None)
                # J_S reuses this graph only where it cannot be taken on the sliding pairs' examples alone
                graph = None if self._subsets else (leaf, switching)
                gradient, *signals = torch.autograd.grad(loss, [leaf, *switching],
                                                         retain_graph=len(sliding) > 0 and graph is not None)
                signal = _flat(signals)[sliding]
            else:
                self.field.n_evals += 1
                gradient, signal = closed_form
            velocity = -gradient
            if len(sliding) == 0:  # ż_S and g_S are empty like S
                return velocity, signal, None, signal
            if self._constant is not None and self._constant.sliding is sliding:
                jacobian = self._constant.jacobian
            else:
                jacobian = self.problem.switching_jacobian(theta, sliding)
            if jacobian is None:
                jacobian = self._switching_jacobian(theta, flat_gates, sliding, graph)
        # z linear in θ: J_S F = z_S(F), a few dot products instead of a product with J_S
        zdot = (self.problem.switching_values(velocity, sliding) if self.problem.switching_linear
                else _times(jacobian, velocity))
        return velocity, zdot, jacobian, signal

    def _geometry(self, sliding: torch.Tensor, jacobian: torch.Tensor) -> BlockDiagonal:
        """K = J_S J_Sᵀ by its coupled blocks. On linear switching functions (``Problem.switching_linear``)
        J_S, K and the blocks of K do not depend on θ (a partition that separates K separates
        K diag(g)), so they are kept while the sliding set is the same tensor, until the next
        switch, and K is formed sparse where J_S is (the blocks from its entries, without s² work);
        otherwise K is formed afresh, and the blocks of the previous evaluation are kept while they
        still separate it."""
        if not self.problem.switching_linear:
            gram = _gram(jacobian)
            self._blocks = coupled_blocks(gram, self._blocks)
            return BlockDiagonal.of(gram, self._blocks)
        if self._constant is None or self._constant.sliding is not sliding:
            gram = _gram(jacobian, dense=False)
            self._constant = _ConstantGeometry.of(sliding, jacobian, gram, coupled_blocks(gram))
        return self._constant.blocked

    def _signal_from(self, theta: torch.Tensor, sliding: torch.Tensor, alpha: torch.Tensor,
                     scaled_signal: torch.Tensor) -> torch.Tensor:
        """g_S(α) = ∂f/∂σ(z_S) with the other sliding gates at α, from ``scaled_signal`` =
        ∂f_D/∂z_S = α ⊙ g_S (σ_k = D_k z_k in ``Problem.gated_loss``; g_k depends only on deeper
        gates); the pairs at α_k = 0 by one gradient per layer holding such a pair, with the
        gates of that layer's sliding pairs at 1."""
        at_zero = alpha == 0
        signal = scaled_signal / torch.where(at_zero, 1.0, alpha)
        layers = self.layer_of[sliding]
        for layer in layers[at_zero].unique().tolist():
            in_layer = layers == layer
            with torch.enable_grad():
                _, loss, switching = self._gated_on(theta, self._gates_with(sliding, torch.where(in_layer, 1.0, alpha)),
                                                    None)
                grads = torch.autograd.grad(loss, switching)
            signal[in_layer] = _flat(grads)[sliding][in_layer]
        return signal

    def _gates_with(self, sliding: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The gates with D_S = α: the gates themselves when S is empty, else a copy kept while S
        is the same tensor (a switch replaces it, after changing the gates) and overwritten on S."""
        if len(sliding) == 0:
            return self.gates
        if self._gates_buffer is None or self._gates_buffer[0] is not sliding:
            self._gates_buffer = (sliding, self.gates.clone())
        buffer = self._gates_buffer[1]
        buffer[sliding] = alpha
        return buffer

    def _split(self, gates: torch.Tensor) -> list[torch.Tensor]:
        return [gate.view(shape) for gate, shape in zip(torch.split(gates, self.sizes), self.shapes)]

    def _switching_jacobian(self, theta: torch.Tensor, gates: torch.Tensor, sliding: torch.Tensor,
                            graph: tuple[torch.Tensor, list[torch.Tensor]] | None) -> torch.Tensor:
        """J_S = ∂z_S/∂θ (rows: the pairs ``sliding``) with the flat ``gates``, by one batched backward
        pass. z_k depends on its own example alone, so where the problem evaluates a subset of the
        examples (``Problem.gated_loss_of``) the pass runs through the examples of S: s rows cost
        s·|E| single-example backward passes (counted in ``jacobian_passes``) instead of s
        gradients. Otherwise through ``graph`` = (θ as a leaf, z on all examples)."""
        examples, local = self._examples_of(sliding)
        if graph is None:
            leaf, _, switching = self._gated_on(theta, gates, examples)
        else:
            leaf, switching = graph
        self.jacobian_passes += len(sliding) * len(switching[0])
        selector = torch.zeros(len(sliding), sum(z.numel() for z in switching), dtype=leaf.dtype, device=leaf.device)
        selector[torch.arange(len(sliding)), local] = 1.0
        outputs = [block.reshape(len(sliding), *z.shape)
                   for block, z in zip(torch.split(selector, [z.numel() for z in switching], dim=1), switching)]
        (jacobian,) = torch.autograd.grad(switching, leaf, grad_outputs=outputs, is_grads_batched=True)
        return jacobian

    def rhs(self, theta: torch.Tensor) -> torch.Tensor:
        """The Filippov field at θ; evaluated once per θ object (the switch leaves the new field at its θ)."""
        return self._field_at(theta).velocity

    def _field_at(self, theta: torch.Tensor) -> SlidingField:
        """The field at θ, from the cache when θ is the point last evaluated (the same object)."""
        if self._cached is None or self._cached[0] is not theta:
            self._cached = (theta, self.field_with(theta, self.sliding,
                                                   None if self._cached is None else self._cached[1].alpha))
        return self._cached[1]

    def events(self, t: float, theta: torch.Tensor, components: torch.Tensor | None) -> torch.Tensor:
        """Event functions ``components`` (None: all): s_k z_k + band_k for every pair k (s = ±1
        its gate's side; +inf while it slides), then min(α_j, 1 − α_j) for the j-th sliding pair,
        α continued past [0, 1] (``_continued``). α costs a gradient evaluation unless θ is the
        point ``rhs`` was last called at."""
        pairs = self.gates.numel()
        if components is not None and components.max() < pairs:
            # the event search asks for a few pairs many times: only theirs are computed
            return self._signed(components, self.problem.switching_values(theta, components))
        values = torch.empty(pairs + len(self.sliding), dtype=self.band.dtype, device=self.band.device)
        torch.addcmul(self.band, self.sides, self._switching(theta), out=values[:pairs])
        if len(self.sliding):
            values[self.sliding] = float("inf")
            alpha = self._field_at(theta).continued
            torch.minimum(alpha, 1 - alpha, out=values[pairs:])
        return values if components is None else values[components]

    def events_along(self, dense, components: torch.Tensor):
        """``events`` at the ``components`` as a function of time along a step's dense output
        (``gfbench.torchdiffeq_adapter.DenseOutput``). Where the switching functions are linear
        (``Problem.switching_linear``) and only pairs are asked for, z_k along the step is the
        polynomial with coefficients z_k(c_j): a few dot products per step instead of θ
        interpolated at every trial time."""
        pairs = self.gates.numel()
        if not (self.problem.switching_linear and components.max() < pairs):
            return lambda s: self.events(s, dense(s), components)
        switching = dense.map(lambda c: self.problem.switching_values(c, components))
        return lambda s: self._signed(components, switching(s))

    def _signed(self, pairs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The event functions s_k z_k + band_k of ``pairs`` from their z (+inf where sliding)."""
        return torch.where(self.is_sliding[pairs], float("inf"), self.sides[pairs] * z + self.band[pairs])

    def pass_events(self, dense, fired: torch.Tensor) -> StepJumps | StepStands | torch.Tensor | None:
        """What the integration does with the events ``fired`` at the end of a step whose
        ``DenseOutput`` is ``dense`` (``AdaptiveRungeKutta.advance_until``).

        Sliding exits are never located: the Filippov field is continuous where a sliding pair's α
        reaches 0 or 1 (α clipped at the bound gives the field of that side, on which the pair then
        moves off its surface), so the step across an exit integrated the true field and is kept.
        Where only exits fired, the pairs leave the sliding set at the step end (``StepStands``);
        otherwise the crossings are passed (``kinks=jump_corrected``, ``pass_crossings``) and the
        exits taken at the step end, or the crossings alone are located, and ``switch`` re-decides
        the sliding pairs (the exits before it among them) at the located event.
        """
        pairs = self.gates.numel()
        crossed, exits = fired[fired < pairs], fired[fired >= pairs] - pairs
        if len(crossed) == 0:
            self._release(exits, dense.end, self._field_at(dense.end))
            return StepStands()
        if not self.crossings_in_step:
            return crossed
        at_end = self._field_at(dense.end) if len(exits) else None
        jumps = self.pass_crossings(dense, crossed)
        if jumps is None:
            return crossed
        if jumps.stop is None and len(exits):
            self._release(exits, dense.end, at_end)
        return jumps

    def _release(self, exits: torch.Tensor, theta: torch.Tensor, field: SlidingField) -> None:
        """Take the sliding pairs numbered ``exits`` (among ``sliding``), whose continued α left
        [0, 1] by θ, off their surfaces, each gated on the side its α reached. ``field``: the field
        at θ before any pass changed the gates. The field at θ stays what it is (the cache keeps
        it, unless a pass has since replaced it)."""
        keep = torch.ones(len(self.sliding), dtype=torch.bool, device=theta.device)
        keep[exits] = False
        released = self.sliding[exits]
        gates = self.gates[self.sliding]
        gates[exits] = (field.continued[exits] > 1).to(gates.dtype)
        self._decide(self.sliding, gates, keep)
        self.band[released] = self._wrong_side(theta, released)
        self._banded = torch.cat([self._banded, released])
        self.sliding_exits += len(released)
        if self._cached is not None and self._cached[1] is field:
            self._cached = (theta, field.kept(keep))

    def _decide(self, pairs: torch.Tensor, gates: torch.Tensor, sliding: torch.Tensor,
                previous: _ConstantGeometry | None = None) -> None:
        """Gate ``pairs`` (every sliding pair among them) at ``gates``, with pairs[sliding] the new
        sliding set; J_S, K and its blocks, where formed for ``pairs``, are cut down to it, or
        ``previous`` (the geometry of the sliding set before, whose pairs lead ``pairs``) is taken
        back where the sliding set is the one before (every other pair crossed)."""
        self.gates[pairs] = gates
        self.sides[pairs] = 2 * gates - 1
        self.is_sliding[pairs] = sliding
        kept = pairs[sliding]
        if previous is not None and len(kept) == len(previous.sliding) and bool(sliding[:len(kept)].all()):
            self._constant, kept = previous, previous.sliding
        elif self._constant is not None and self._constant.sliding is pairs:
            self._constant = self._constant.restricted(kept, sliding.nonzero().flatten())
        self.sliding = kept
        self._blocks = None
        self._gates_buffer = None  # it copied the gates before

    def _wrong_side(self, theta: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """How far ``pairs`` sit on the wrong side of their surfaces at θ (0 where on the right one):
        the band from which their event functions start, so that a pair just released within
        round-off of its surface does not fire at once."""
        return torch.clamp(-self.sides[pairs] * self.problem.switching_values(theta, pairs), min=0)

    def pass_crossings(self, dense, fired: torch.Tensor) -> StepJumps | None:
        """Switch the gated pairs ``fired`` at the end of a step of the gated flow whose ``DenseOutput`` is
        ``dense``, without stopping there, and return their ``StepJumps``; or None, leaving the
        switch to event location, where a pair passed at the step before crosses back (this
        could be an entry into sliding). A pair that the field beyond its
        surface drives back (ż_k, J(F + Σ ΔF) at the step end, turns sign: an entry into
        sliding) is left to ``switch``: the pairs that cross before it are passed and the
        returned jumps stop the integration at its crossing time (None where none crosses before).

        τ_k is the root of the cubic through z_k at four equally spaced times on the dense output,
        and g_k = ∂f/∂σ(z_k) along the step the cubic through its values at the same times with the
        crossing pairs' gates at 1 (g_k depends only on deeper gates), against which the jump is
        integrated from τ_k; ∇z_k is taken at the step end. The local error per crossing is
        O(h²) ‖∂F/∂θ‖ |ΔF_k| (the jump's effect on the rest of the step through the field), plus
        O(h²) |ż_k| ‖∇g_k‖ (off its surface the two gated fields differ by more than g_k ∇z_k: by
        (D'_k − D_k) z_k ∇g_k besides) and O(h²) |∂∇z_k/∂t| |g_k| for a pair below the first layer,
        where a Runge–Kutta step across the kink errs by O(h) |ΔF_k|. On small nets these are not
        small: with 5 examples (mlp 784-8-8-2, relu_fc) passing errs 2–13 % of the GD–flow gap where
        locating the events errs far less for fewer gradients (README). With g_k taken at the step
        end instead, its change over the step erred O(h²) |dg_k/dt| per crossing, on ntk (width
        4096, dopri5, t ≤ 5) 1000 times the error left now. On cnn (~400 crossings per step at
        rtol 1e-10) the error is 20 % of the GD–flow gap there and falls like h² (README); the exact
        jump (each example's gated-gradient difference) or the jump's effect through ∂F/∂θ changed
        it by under a tenth: the dominant term is neither. A pair that crosses and crosses back
        within one step goes unseen, as with event location. While other pairs slide, the jumps are
        projected so that they stay on their surfaces (``_onto_sliding_surfaces``). Where the state
        the pass lands on (at the step end or the stop) contradicts it beyond PASS_CONSISTENCY, the
        step is located instead (None; counted in ``passes_declined``).
        """
        passed_before, self._passed = self._passed, fired.new_empty(0)
        if len(passed_before) and torch.isin(fired, passed_before).any():
            return None
        examples, local = self._examples_of(fired)
        # the sliding pairs' α at the step end (the event check evaluated it)
        alpha = self._field_at(dense.end).alpha if len(self.sliding) else None
        gates = self._gates_with(self.sliding, alpha).clone()
        steps = torch.linspace(0, 1, 4, dtype=gates.dtype, device=gates.device)
        node_times = [dense.t0 + float(x) * (dense.t1 - dense.t0) for x in steps]
        states = [dense(time) for time in node_times]
        if self.problem.switching_linear:  # z_C along the step from its polynomial: a few dot products
            along = dense.map(lambda coefficient: self.problem.switching_values(coefficient, fired))
            samples = torch.stack([along(time) for time in node_times])
        else:
            samples = torch.stack([_flat(self._gated_on(state, gates, examples, graph=False)[2])[local]
                                   for state in states])
        fraction = _cubic_root(steps, samples)
        direction = 1 - 2 * gates[fired]
        gates[fired] = 1.0
        signals = []
        for state in states:
            at_one = self._gated_on(state, gates, examples)
            with torch.enable_grad():
                signals.append(_flat(torch.autograd.grad(at_one[1], at_one[2]))[local])
        # ∇z_k on the new side: a deeper pair's depends on the new gates of shallower ones
        gates[fired] = self.gates[fired] + direction
        leaf, _, switching = self._gated_on(dense.end, gates, examples)

        def vjp(weights: torch.Tensor) -> torch.Tensor:
            full = torch.zeros(sum(z.numel() for z in switching), dtype=weights.dtype, device=weights.device)
            full[local] = weights
            with torch.enable_grad():
                (product,) = torch.autograd.grad(switching, leaf, grad_outputs=self._split_like(full, switching),
                                                 retain_graph=True)
            return product

        def jvp(tangent: torch.Tensor) -> torch.Tensor:  # J tangent, as the derivative of Jᵀw in w
            if self.problem.switching_linear:
                return self.problem.switching_values(tangent, fired)
            with torch.enable_grad():
                weights = torch.zeros(sum(z.numel() for z in switching), dtype=tangent.dtype, device=tangent.device,
                                      requires_grad=True)
                (product,) = torch.autograd.grad(switching, leaf, grad_outputs=self._split_like(weights, switching),
                                                 create_graph=True, retain_graph=True)
                (rates,) = torch.autograd.grad(product, weights, grad_outputs=tangent, retain_graph=True)
            return rates[local]

        onto_surfaces = None if alpha is None else self._onto_sliding_surfaces(dense.end, alpha)

        def displaced(weights: torch.Tensor) -> torch.Tensor:  # Jᵀw, with the sliding pairs' response
            product = vjp(weights)
            return product if onto_surfaces is None else onto_surfaces(product)

        jumps = StepJumps(dense.t0, dense.t1, fraction, _cubic_through(steps, -direction * torch.stack(signals)),
                          displaced)
        times = jumps.times
        # An entry into sliding (the field drives z_k across its surface, and back on the new
        # side) is decided by ``switch``: the crossings before the first one are passed and the
        # integration stops there; where none comes before it, the event is located.
        # ż_C at the step end on the old side (J F there; along's derivative where z is linear)
        rates = along.end_derivative() if self.problem.switching_linear else jvp(dense.end_derivative())
        driven_across = direction * rates > 0
        entering = driven_across & (direction * (rates + jvp(displaced(jumps.end_rates))) <= 0)
        before = torch.ones_like(entering)
        if entering.any():
            jumps.stop = float(times[entering].min())
            # only the first to enter: a later one has not reached its surface at the stop, and
            # its event is found again in the steps from there
            jumps.entering = fired[entering & (times == jumps.stop)]
            before = times < jumps.stop
            if not before.any():
                return None
            jumps.keep(before)
        # Where the jumps are large against the step (few examples, long steps) the first-order
        # pass can misjudge which pairs cross before the stop or enter sliding: then the state it
        # lands on has a crossed pair back on its old side, or the entering pair off its surface.
        # Such a step is located instead.
        end = dense.t1 if jumps.stop is None else jumps.stop
        landed = dense(end) + jumps.displacement(end)
        # the samples, g_k at them, ∇z_k at the end and, on nonlinear switching functions, z at the landing
        self.example_passes += ((self.shapes[0][0] if examples is None else len(examples))
                                * (2 * len(steps) + 1 + (not self.problem.switching_linear)))
        if self.problem.switching_linear:
            z_landed = self.problem.switching_values(landed, fired)
        else:
            z_landed = _flat(self._gated_on(landed, gates, examples, graph=False)[2])[local]
        slack = PASS_CONSISTENCY * float((samples[0] - samples[-1]).abs().max())
        beyond = direction * z_landed
        at_stop = entering & (times == jumps.stop) if jumps.stop is not None else torch.zeros_like(entering)
        consistent = torch.where(before, beyond >= -slack, torch.where(at_stop, beyond.abs() <= slack, beyond <= slack))
        if not bool(consistent.all()):
            self.passes_declined += 1
            return None
        fired, direction = fired[before], direction[before]
        self.gates[fired] = 1 - self.gates[fired]
        self.sides[fired] = -self.sides[fired]
        self.band[fired] = 0.0
        self._passed = fired
        self._gates_buffer = None  # it copied the gates before this switch
        self.crossings += len(fired)
        self.passed_crossings += len(fired)
        self._cached = None
        return jumps

    def _onto_sliding_surfaces(self, theta: torch.Tensor, alpha: torch.Tensor
                               ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The sliding pairs' response to a jump of the field at θ, as a map of the jump v: the pairs
        with α ∈ (0, 1) (F) hold ż_F = 0 by changing α, which adds J_Fᵀ diag(g_F) δβ_F to the field
        with K_FF diag(g_F) δβ_F = −J_F v, so v becomes v − J_Fᵀ K_FF⁻¹ J_F v, its projection on the
        tangent space of their surfaces (Utkin's equivalent control; pairs at a bound of α do not
        respond to first order). Without it a passed jump pushes a sliding pair off its surface by
        (t1 − τ) J_F ΔF, where the sliding motion then holds it. Solved on the coupled blocks of K
        (kept while the switching functions are linear; else one block) that J_F v touches. None
        where no pair is free."""
        free = ((alpha > 0) & (alpha < 1)).nonzero().flatten()
        if not len(free):
            return None
        sliding = self.sliding
        if self._constant is not None and self._constant.sliding is sliding:
            jacobian, labels = self._constant.jacobian, self._constant.blocked.blocks.labels[free]
        else:
            jacobian = self.problem.switching_jacobian(theta, sliding)
            if jacobian is None:
                jacobian = self._switching_jacobian(theta, self._gates_with(sliding, alpha), sliding, None)
            labels = torch.zeros_like(free)
        jacobian = jacobian.index_select(0, free)
        jacobian = jacobian.coalesce() if jacobian.is_sparse else jacobian

        def project(jump: torch.Tensor) -> torch.Tensor:
            rates = _times(jacobian, jump)
            touched = torch.isin(labels, labels[rates != 0]).nonzero().flatten()
            if not len(touched):
                return jump
            rows = jacobian.index_select(0, touched)
            response = _solve_consistent(_gram(rows.coalesce() if rows.is_sparse else rows), rates[touched])
            return _plus_transposed_times(jump, rows, -response)

        return project

    def _examples_of(self, pairs: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(the examples of ``pairs``, each pair's index among the switching functions of those examples
        alone); (None, pairs) where the problem has no ``gated_loss_of``."""
        if not self._subsets:
            return None, pairs
        offsets = torch.tensor([0, *self.sizes], device=pairs.device).cumsum(0)
        per_example = torch.tensor([size // shape[0] for size, shape in zip(self.sizes, self.shapes)],
                                   device=pairs.device)
        layer = torch.bucketize(pairs, offsets[1:], right=True)
        within = pairs - offsets[layer]
        example, unit = within // per_example[layer], within % per_example[layer]
        examples, position = torch.unique(example, return_inverse=True)
        local_offsets = torch.cat([per_example.new_zeros(1), (len(examples) * per_example).cumsum(0)])
        return examples, local_offsets[layer] + position * per_example[layer] + unit

    def _gated_on(self, theta: torch.Tensor, gates: torch.Tensor, examples: torch.Tensor | None, graph: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(θ as a leaf, f_D's share from ``examples`` (None: all), z on them) with the flat ``gates``;
        in autograd's graph unless ``graph`` is False. On all examples it counts one gradient."""
        split = self._split(gates)
        with torch.set_grad_enabled(graph):
            leaf = theta.detach().requires_grad_(graph)
            if examples is None:
                self.field.n_evals += 1
                loss, switching = self.problem.gated_loss(leaf, split)
            else:
                loss, switching = self.problem.gated_loss_of(leaf, [gate[examples] for gate in split], examples)
        return leaf, loss, switching

    @staticmethod
    def _split_like(flat: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [part.view_as(tensor) for part, tensor in zip(torch.split(flat, [t.numel() for t in tensors]), tensors)]

    def switch(self, theta: torch.Tensor, fired: torch.Tensor) -> None:
        """Re-decide the pairs whose event fired at θ (``fired``: the event components negative
        there, as the event search computed them, and any other pair whose z has the wrong sign),
        and every sliding pair with them."""
        pairs = self.gates.numel()
        z = self._switching(theta)
        signed = torch.addcmul(self.band, self.sides, z)
        signed[self.sliding] = float("inf")
        crossed = torch.cat([(signed < 0).nonzero().flatten(), fired[fired < pairs]]).unique()
        candidates = torch.cat([self.sliding, crossed])
        previous = self._constant if self._constant is not None and self._constant.sliding is self.sliding else None
        field = self.field_with(theta, candidates)
        alpha = field.alpha
        sliding = (alpha > 0) & (alpha < 1)
        was_sliding = torch.zeros(len(candidates), dtype=torch.bool, device=theta.device)
        was_sliding[:len(self.sliding)] = True
        self.sliding_entries += int((sliding & ~was_sliding).sum())
        self.sliding_exits += int((~sliding & was_sliding).sum())
        # A crossed pair that the solve would keep on its old side has crossed all the same (it
        # grazed its surface, ż ≈ 0 within round-off): trusting the solve here would stop time.
        old_gates = self.gates[candidates]
        kept_back = ~sliding & ~was_sliding & (alpha.round() == old_gates)
        new_gates = torch.where(sliding, old_gates, torch.where(kept_back, 1 - old_gates, alpha.round()))
        # A pair passed in the step before that this point finds on its old side (its crossing
        # lies beyond it, or rounding put the crossing's root and the state apart) goes back to
        # that side: its pass is undone, not counted again.
        crossed_now = ~sliding & ~was_sliding
        undone = candidates[crossed_now & torch.isin(candidates, self._passed)]
        self.crossings += int(crossed_now.sum()) - 2 * len(undone)
        self.passed_crossings -= len(undone)
        self._passed = self._passed[~torch.isin(self._passed, undone)]
        self._decide(candidates, new_gates, sliding, previous)  # J_S, K and blocks were formed for them by the solve
        # A pair just released may still sit a round-off on the wrong side of its surface: its
        # event function starts from 0 there instead of firing at once, whether computed with
        # all pairs or with these few (``switching_values`` may round differently). Elsewhere the
        # band shrinks to max(0, −s_k z_k): a pair that did not fire has s_k z_k + band_k ≥ 0, so
        # only pairs banded before and the candidates can hold a band > 0.
        banded = torch.cat([self._banded, candidates]).unique()
        band = torch.mul(self.sides[banded], z[banded]).clamp_(max=0).neg_()
        self.band[banded] = band
        self.band[candidates] = torch.maximum(self.band[candidates], self._wrong_side(theta, candidates))
        self._banded = banded[self.band[banded] > 0]
        # With the gates at the solve's α the field is the one just computed: the restart reuses it.
        self._cached = None if kept_back.any() else (theta, field.kept(sliding))

    def stats(self) -> dict:
        return {"n_crossings": self.crossings, "n_sliding_entries": self.sliding_entries,
                "n_sliding_exits": self.sliding_exits, "n_crossings_in_step": self.passed_crossings,
                "n_passes_declined": self.passes_declined,
                "n_crossing_example_passes": self.example_passes, "n_jacobian_example_passes": self.jacobian_passes}
