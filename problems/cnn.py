"""EC21 Appendix I's convolutional networks on MNIST (the two architectures of the paper's code)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from gfbench.classifier import (ACTIVATION_PARAM, ACTIVATIONS, CLASSIFIER_PARAMETERS, LOSS_PARAM, RELU_FLOW_TOLERANCES,
                                MNISTClassifier, torch_default_init_)
from gfbench.params import Param


def _classifier_head(bias: bool, activation: Callable[[], nn.Module]) -> list[nn.Module]:
    """Flatten, then FC 400-120-84-10 with ``activation`` between."""
    return [nn.Flatten(), nn.Linear(400, 120, bias=bias), activation(), nn.Linear(120, 84, bias=bias), activation(),
            nn.Linear(84, 10, bias=bias)]


def subsample_cnn(activation: Callable[[], nn.Module] = nn.ReLU) -> nn.Sequential:
    """EC21's adapted CNN: pad 2, conv 1→6 5×5 stride 2, ReLU, conv 6→16 5×5 stride 2, ReLU, FC; no biases
    (``activation`` in place of every ReLU)."""
    return nn.Sequential(nn.ZeroPad2d(2), nn.Conv2d(1, 6, 5, stride=2, bias=False), activation(),
                         nn.Conv2d(6, 16, 5, stride=2, bias=False), activation(),
                         *_classifier_head(bias=False, activation=activation))


def lenet5(activation: Callable[[], nn.Module] = nn.ReLU) -> nn.Sequential:
    """LeNet-5 (EC21's off-the-shelf CNN): pad 2, conv 1→6 5×5, ReLU, max-pool 2, conv 6→16 5×5, ReLU,
    max-pool 2, FC; with biases (``activation`` in place of every ReLU)."""
    return nn.Sequential(nn.ZeroPad2d(2), nn.Conv2d(1, 6, 5), activation(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), activation(), nn.MaxPool2d(2),
                         *_classifier_head(bias=True, activation=activation))


ARCHITECTURES = {"subsample": subsample_cnn, "lenet5": lenet5}


class CNN(MNISTClassifier):
    """Convolutional network on MNIST images (EC21 Appendix I), cross-entropy, full batch.

    ``arch=subsample`` (default): the paper's adapted CNN, strided convolutions and no biases
    (28×28 → pad 32×32 → 14×14×6 → 5×5×16 = 400 → 120 → 84 → 10); ``arch=lenet5``: its
    off-the-shelf LeNet-5 with max-pooling and biases. θ = parameters_to_vector in the module's
    order: conv1 [weight, bias], conv2 [weight, bias], then the FC layers.

    ``init=paper`` (the paper's code): Xavier-uniform on the FC weights, while conv weights and all
    biases keep torch's default U(−1/√fan_in, 1/√fan_in); ``init=xavier``: Xavier-uniform on every
    weight. All drawn from the run's seed.

    ``loss=mse`` replaces cross-entropy by ½‖h_θ(x) − onehot(y)‖² averaged over examples (the
    edge-of-stability convention); ``activation`` replaces ReLU (default) everywhere.
    """

    name = "cnn"
    # Measured to t = 0.1 (arch=subsample, 1000 examples, lr 0.001; README, ReLU kinks): the kinks
    # are crossed ~150,000 times per unit time. Left to the step control the flow errs 39 % of the
    # GD–GF gap (dopri5 at rtol 1e-8, 480 gradients) or 20 % (adaptive_heun at 1e-7); with the
    # crossings passed inside bosh3's steps the error falls like the step squared: 20 % at rtol
    # 1e-10, 4.0 % at 1e-11, 1.6 % at 1e-12 against 1e-13, which is 1.7 % from GD's Richardson
    # extrapolation (1,213 gradients and ~132 in single-example passes to t = 0.1).
    # float32, max-pooling (arch=lenet5: its kinks are not switching functions) and smooth
    # activations keep the step control.
    flow_defaults_by_kinks = {"jump_corrected": ("bosh3", {torch.float64: (1e-13, 1e-15)})}
    flow_tolerances = RELU_FLOW_TOLERANCES
    parameters = (
        Param("arch", str, "subsample", "architecture", choices=tuple(ARCHITECTURES)),
        Param("init", str, "paper", "paper: Xavier on FC weights, torch default elsewhere; xavier: on every weight",
              choices=("paper", "xavier")),
        LOSS_PARAM,
        ACTIVATION_PARAM,
        *CLASSIFIER_PARAMETERS,
    )
    flat_inputs = False

    @property
    def flow_kinks(self) -> str:
        """jump_corrected where every kink of the loss is a ReLU's (arch=subsample), else step_control."""
        relu_only = self.params["arch"] == "subsample" and self.params["activation"] == "relu"
        return "jump_corrected" if relu_only else "step_control"

    def make_module(self) -> nn.Module:
        return ARCHITECTURES[self.params["arch"]](ACTIVATIONS[self.params["activation"]])

    def initialize_(self, module: nn.Module, generator: torch.Generator) -> None:
        torch_default_init_(module, generator)
        xavier_on = (nn.Linear,) if self.params["init"] == "paper" else (nn.Linear, nn.Conv2d)
        for layer in module:
            if isinstance(layer, xavier_on):
                nn.init.xavier_uniform_(layer.weight, generator=generator)
