"""EC21 Figure 1's fully connected networks on MNIST: one implementation, linear or ReLU activation."""
from __future__ import annotations

from typing import Callable, ClassVar

import torch
from torch import nn

from gfbench.classifier import CLASSIFIER_PARAMETERS, MNISTClassifier, torch_default_init_
from gfbench.memory import FLOAT64
from gfbench.params import ConfigError, Param


def parse_widths(text: str, owner: str) -> list[int]:
    """"50,50" → [50, 50]; "" → [] (no hidden layer). ConfigError for anything else."""
    if not text.strip():
        return []
    try:
        widths = [int(item) for item in text.split(",")]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise ConfigError(f"problem {owner!r} parameter 'hidden' must be a comma list of positive integers "
                          f"like 50,50; got {text!r}")
    return widths


class FullyConnected(MNISTClassifier):
    """h_θ(x) = W_n σ(W_{n−1} ⋯ σ(W_1 x)) on flattened MNIST (EC21 Eq. 8), cross-entropy, full batch.

    Widths 784-``hidden``-10 (default 784-50-50-10, EC21 Figure 1), no biases unless ``bias``.
    θ = parameters_to_vector of the torch.nn.Sequential of Linear layers: W_1 (row-major),
    [b_1,] W_2, [b_2,] …, W_n[, b_n]. Every weight is Xavier-uniform from the run's seed
    (biases, with ``bias``, keep torch's default U(−1/√fan_in, 1/√fan_in)). Subclasses fix σ.
    """

    parameters = (
        Param("hidden", str, "50,50", "hidden widths, comma separated (EC21 Figure 1: 50,50)"),
        Param("bias", bool, False, "give every layer a bias (EC21: no biases)"),
        *CLASSIFIER_PARAMETERS,
    )
    flat_inputs = True
    activation: ClassVar[Callable[[], nn.Module]]
    #: Outputs of the last layer, one per class.
    n_classes: ClassVar[int] = 10

    def widths(self) -> list[int]:
        """Layer widths: 784 inputs, the hidden widths, ``n_classes`` outputs."""
        return [784, *parse_widths(self.params["hidden"], self.name), self.n_classes]

    def estimated_bytes(self) -> int:
        widths = self.widths()
        weights = sum(fan_in * fan_out for fan_in, fan_out in zip(widths[:-1], widths[1:]))
        examples = self.params["n_train"] + self.params["n_test"]
        # θ and its gradient; the inputs; every layer's activations and their gradients in one evaluation
        return FLOAT64 * (2 * weights + examples * widths[0] + 3 * examples * sum(widths[1:]))

    def make_module(self) -> nn.Module:
        widths = self.widths()
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out, bias=self.params["bias"]), self.activation()]
        return nn.Sequential(*layers[:-1])

    def initialize_(self, module: nn.Module, generator: torch.Generator) -> None:
        torch_default_init_(module, generator)
        for layer in module:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight, generator=generator)


class LinearFC(FullyConnected):
    """Fully connected linear network on MNIST, σ(z) = z (EC21 Figure 1, left)."""

    name = "linear_fc"
    activation = nn.Identity


class ReluFC(FullyConnected):
    """Fully connected ReLU network on MNIST, σ(z) = max(z, 0) (EC21 Figure 1, right)."""

    name = "relu_fc"
    activation = nn.ReLU
    # Measured to t = 1 (1000 examples, lr 0.001; README, ReLU kinks): Filippov's flow with the
    # crossings passed inside bosh3's steps at rtol 1e-10 errs ≤ 1.03 % of the GD–GF gap against
    # GD's Richardson extrapolation (itself ~1 % off; 0.46 % at t = 0.1 against dopri5 at 1e-10)
    # for 6,101 gradients. Kinks left to the step control, a low order pays (adaptive_heun at
    # 1e-7: ≤ 1.7 % for 12,613; dopri5 at 1e-8: 2.7 % for 25,650). With few examples locating
    # every event (dopri5 at 1e-8) is cheaper or more accurate: to t = 0.5 with 5 examples 2,704
    # gradients and 0.13 % against 5,506 and 2–3 %, with 10 examples 375 s and 0.01 % against
    # 548 s (the sliding pairs' J_S in single-example passes) and 0.2 %; from 20 examples on the
    # passes pay (to t = 0.2, 3,398 gradients against 10,734). README.
    # float32, not measured, keeps the step control.
    flow_defaults_by_kinks = {"jump_corrected": ("bosh3", {torch.float64: (1e-10, 1e-12)}),
                              "events": ("dopri5", {torch.float64: (1e-8, 1e-10)})}
    flow_method = "adaptive_heun"
    flow_tolerances = {torch.float64: (1e-7, 1e-9)}
    #: Up to this many training examples the flow locates every event by default (above).
    FEW_EXAMPLES = 10

    @property
    def flow_kinks(self) -> str:
        """events with at most ``FEW_EXAMPLES`` training examples, else jump_corrected (measured; above)."""
        return "events" if self.params["n_train"] <= self.FEW_EXAMPLES else "jump_corrected"
