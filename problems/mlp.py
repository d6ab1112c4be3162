"""A general multilayer perceptron on MNIST: activation, loss, biases, initialisation, digits, normalisation."""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from gfbench.classifier import (ACTIVATION_PARAM, ACTIVATIONS, CLASSIFIER_PARAMETERS, LOSS_PARAM, RELU_FLOW_TOLERANCES,
                                torch_default_init_)
from gfbench.mnist import PIXEL_MEAN, PIXEL_STD, mnist_pixels
from gfbench.params import ConfigError, Param

from .fully_connected import FullyConnected

ALL_DIGITS = ",".join(map(str, range(10)))
NORMALIZATIONS = ("standard", "feature", "none")
#: Pooling factors s that divide MNIST's 28 × 28 images: inputs of (28/s)² pixels.
POOLS = (1, 2, 4, 7, 14)


def parse_classes(text: str, owner: str) -> tuple[int, ...]:
    """"0,1,2,3" → (0, 1, 2, 3): at least two distinct digits in increasing order, else ConfigError."""
    try:
        digits = tuple(int(item) for item in text.split(","))
    except ValueError:
        digits = ()
    if len(digits) < 2 or list(digits) != sorted(set(digits)) or not 0 <= digits[0] <= digits[-1] <= 9:
        raise ConfigError(f"problem {owner!r} parameter 'classes' must be at least two distinct digits 0-9 in "
                          f"increasing order, comma separated, like 0,1,2,3; got {text!r}")
    return digits


class MLP(FullyConnected):
    """h_θ(x) = W_L σ(⋯ σ(W_1 x + b_1) ⋯) + b_L on flattened MNIST, full batch, f(θ) = (1/n) Σ_i ℓ(h_θ(x_i), y_i).

    Widths P-``hidden``-C with P = (28/s)² inputs, the images average-pooled over s × s blocks
    (``pool`` s, 1: the 784 pixels), C = the number of ``classes``: the n training examples are taken
    among those digits (EC21's every-50th rule within them, else the first n) and labelled
    y = the digit's position in ``classes`` (0..C−1). ℓ (``loss``): ``ce`` cross-entropy, or
    ``mse`` ½‖h_θ(x) − e_y‖² with one-hot targets e_y ∈ R^C, the convention of the edge-of-stability
    experiments (Cohen, Kaur, Li, Kolter, Talwalkar, ICLR 2021). σ (``activation``) between the
    layers; ``bias`` adds b_l. ``init=torch``: PyTorch's default Linear init, weights and biases
    U(−1/√fan_in, 1/√fan_in) (as Cohen et al.); ``init=xavier``: weights Xavier-uniform instead
    (as linear_fc/relu_fc). Inputs x ∈ R^784 from pixels p ∈ [0, 1] (``normalize``): ``standard``
    (p − 0.1307)/0.3081 (torchvision's constants), ``feature`` each pixel standardised by its mean
    and standard deviation (1/n) over the training examples (test examples with the training
    statistics; a constant pixel is only centred), ``none`` p itself. θ = parameters_to_vector:
    W_1 (row-major), [b_1,] …, W_L[, b_L].

    Edge-of-stability preset (README, "Problems and solvers", has what it measures): the defaults
    (tanh, mse, biases, torch init) with classes=0,1,2,3, n_train=500, hidden=100,100, GD at
    η = 0.05 for 2000 steps with ``--curvature-every`` on: the sharpness λmax rises to 2/η = 40
    and stays there while gradient flow's goes on rising.
    """

    name = "mlp"
    parameters = (
        Param("hidden", str, "200,200", "hidden widths, comma separated (Cohen et al.: 200,200)"),
        dataclasses.replace(ACTIVATION_PARAM, default="tanh"),
        dataclasses.replace(LOSS_PARAM, default="mse"),
        Param("bias", bool, True, "give every layer a bias"),
        Param("init", str, "torch", "torch: PyTorch's default Linear init; xavier: Xavier-uniform weights",
              choices=("torch", "xavier")),
        Param("classes", str, ALL_DIGITS, "digits to classify, increasing, comma separated (labels 0..C-1)"),
        Param("pool", int, 1, "average-pool the 28x28 images over s x s blocks: (28/s)^2 inputs",
              choices=POOLS),
        Param("normalize", str, "standard", "inputs: standard (torchvision mean/std), feature (per pixel), "
              "none (pixel/255)", choices=NORMALIZATIONS),
        *CLASSIFIER_PARAMETERS,
    )

    @property
    def activation(self) -> Callable[[], nn.Module]:
        return ACTIVATIONS[self.params["activation"]]

    @property
    def flow_tolerances(self) -> dict[torch.dtype, tuple[float, float]]:
        """The ReLU networks' tolerances with ``activation=relu`` (the gradient jumps), else the generic ones."""
        return RELU_FLOW_TOLERANCES if self.params["activation"] == "relu" else {}

    def widths(self) -> list[int]:
        """Layer widths: (28/pool)² inputs, the hidden widths, C outputs."""
        return [(28 // self.params["pool"]) ** 2, *super().widths()[1:]]

    @property
    def classes(self) -> tuple[int, ...]:
        return parse_classes(self.params["classes"], self.name)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def _inputs(self, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, labels = mnist_pixels(split, n, self.data_dir, self.classes)
        pixels = F.avg_pool2d(pixels, self.params["pool"]).flatten(1)
        if split == "train":  # read first (MNISTClassifier.build): the statistics of the test inputs too
            self.input_shift, self.input_scale = self._normalization(pixels)
        return (pixels - self.input_shift) / self.input_scale, labels

    def _normalization(self, pixels: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(shift, scale) with x = (p − shift)/scale for ``normalize``, from the training pixels."""
        kind = self.params["normalize"]
        if kind == "standard":
            return PIXEL_MEAN, PIXEL_STD
        if kind == "feature":
            scale = pixels.std(0, correction=0)
            return pixels.mean(0), torch.where(scale > 0, scale, 1.0)
        return 0.0, 1.0

    def initialize_(self, module: nn.Module, generator: torch.Generator) -> None:
        if self.params["init"] == "xavier":
            super().initialize_(module, generator)
        else:
            torch_default_init_(module, generator)
