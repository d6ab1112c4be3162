"""Deep linear network on whitened data: the setting of EC21 Section 5."""
from __future__ import annotations

import torch

from gfbench.memory import FLOAT64
from gfbench.params import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Bounds, ConfigError, Param
from gfbench.problem import Problem
from gfbench.recording import Diagnostic, Variable
from gfbench.theory import LambdaMinBounds


class DeepLinear(Problem):
    """f(θ) = φ(W_{n:1}) = ½ ‖W_n ⋯ W_1 − Λyx‖_F² (EC21 Eq. 16 with the constant c = 0).

    Layers W_1 ∈ R^{width × input_dim}, W_j ∈ R^{width × width} (1 < j < n),
    W_n ∈ R^{output_dim × width}; θ is W_1, …, W_n each flattened row-major, concatenated.
    Training inputs are whitened (Λxx = I), so the loss depends on the data only through the
    target Λyx ∈ R^{output_dim × input_dim}, drawn N(0, 1) from ``data_seed`` and normalised to
    ‖Λyx‖_F = 1.

    ``init=balanced`` is EC21 Procedure 1: A ~ N(0, 1) scaled to ‖A‖_F = ``init_scale``, SVD
    A = U Σ Vᵀ, W_n ≃ U Σ^{1/n}, W_j ≃ Σ^{1/n}, W_1 ≃ Σ^{1/n} Vᵀ (≃: zero padding), so
    W_{n:1} = A and W_{j+1}ᵀ W_{j+1} = W_j W_jᵀ exactly. Proposition 3 asks for
    ‖W_{n:1}(0)‖_F ∈ (0, 0.2]. ``init=gaussian`` draws every entry N(0, init_std²).

    Records ``balancedness`` = max_j ‖W_{j+1}ᵀ W_{j+1} − W_j W_jᵀ‖_F, conserved by gradient flow,
    and with curvature on EC21's lower bounds on λmin, ``lemma2_bound`` and ``prop2_bound``.
    """

    name = "deep_linear"
    parameters = (
        Param("depth", int, 3, "number of layers n", bounds=Bounds(2, None)),
        Param("input_dim", int, 20, "input dimension d_0", bounds=AT_LEAST_ONE),
        Param("width", int, 20, "width of every hidden layer d_1 = ... = d_{n-1}", bounds=AT_LEAST_ONE),
        Param("output_dim", int, 1, "output dimension d_n (EC21 Section 5: 1)", bounds=AT_LEAST_ONE),
        Param("data_seed", int, 0, "seed of the target Lambda_yx", bounds=NON_NEGATIVE),
        Param("init", str, "balanced", "initialisation", choices=("balanced", "gaussian")),
        Param("init_scale", float, 0.1, "balanced: ||W_{n:1}(0)||_F (Proposition 3: in (0, 0.2])", bounds=POSITIVE),
        Param("init_std", float, 0.1, "gaussian: standard deviation of every weight", bounds=POSITIVE),
    )
    # From ‖W_{n:1}‖_F = 0.1 the depth-3 flow escapes the origin by t ≈ 5 and reaches loss < 1e-12
    # by t ≈ 30 (measured); η = 0.01 keeps GD within ~1e-2 of GF, and 3000 steps take a few seconds.
    default_lr = 0.01
    default_steps = 3000

    def build(self) -> None:
        p = self.params
        n = p["depth"]
        self.shapes = ([(p["width"], p["input_dim"])] + [(p["width"], p["width"])] * (n - 2)
                       + [(p["output_dim"], p["width"])])
        rank = min(p["input_dim"], p["output_dim"])
        if p["init"] == "balanced" and p["width"] < rank:
            raise ConfigError(f"problem 'deep_linear' with init=balanced needs width >= min(input_dim, output_dim)"
                              f" = {rank}, got width={p['width']}")
        generator = torch.Generator().manual_seed(p["data_seed"])
        target = torch.randn(p["output_dim"], p["input_dim"], generator=generator, dtype=torch.float64)
        self.target = target / torch.linalg.matrix_norm(target)

    def estimated_bytes(self) -> int:
        p = self.params
        weights = p["width"] * (p["input_dim"] + p["output_dim"]) + (p["depth"] - 2) * p["width"] ** 2
        return 4 * FLOAT64 * weights  # θ, its gradient and the products W_{j:1} of one evaluation

    @property
    def dim(self) -> int:
        return sum(rows * cols for rows, cols in self.shapes)

    @property
    def depth(self) -> int:
        return self.params["depth"]

    def sample_init(self, generator: torch.Generator) -> torch.Tensor:
        p = self.params
        if p["init"] == "gaussian":
            return p["init_std"] * torch.randn(self.dim, generator=generator, dtype=torch.float64)
        a = torch.randn(p["output_dim"], p["input_dim"], generator=generator, dtype=torch.float64)
        a = a * (p["init_scale"] / torch.linalg.matrix_norm(a))
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        root = torch.diag(s ** (1.0 / self.depth))
        r = s.numel()
        layers = [torch.zeros(shape, dtype=torch.float64) for shape in self.shapes]
        layers[0][:r, :] = root @ vh
        for layer in layers[1:-1]:
            layer[:r, :r] = root
        layers[-1][:, :r] = u @ root
        return torch.cat([layer.reshape(-1) for layer in layers])

    def layers(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """[W_1, …, W_n] as views of θ."""
        sizes = [rows * cols for rows, cols in self.shapes]
        return [chunk.view(shape) for chunk, shape in zip(torch.split(theta, sizes), self.shapes)]

    def end_to_end(self, theta: torch.Tensor) -> torch.Tensor:
        """W_{n:1} = W_n W_{n−1} ⋯ W_1 ∈ R^{output_dim × input_dim}."""
        product = None
        for layer in self.layers(theta):
            product = layer if product is None else layer @ product
        return product

    def end_to_end_loss(self, w: torch.Tensor) -> torch.Tensor:
        """φ(W) = ½ ‖W − Λyx‖_F²."""
        return 0.5 * torch.sum((w - self.target) ** 2)

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        return self.end_to_end_loss(self.end_to_end(theta))

    def balancedness(self, theta: torch.Tensor) -> torch.Tensor:
        """max_j ‖W_{j+1}ᵀ W_{j+1} − W_j W_jᵀ‖_F (0 for a balanced point, EC21 Eq. 15)."""
        layers = self.layers(theta)
        return max(torch.linalg.matrix_norm(upper.T @ upper - lower @ lower.T)
                   for lower, upper in zip(layers[:-1], layers[1:]))

    def recorders(self):
        variable = Variable("balancedness", "max_j ||W_{j+1}^T W_{j+1} - W_j W_j^T||_F", "1")
        return (Diagnostic(variable, self.balancedness),)

    def curvature_recorders(self):
        """``lemma2_bound`` and ``prop2_bound``: EC21's lower bounds on λmin (Eqs. 13, 14)."""
        return (LambdaMinBounds(self),)
