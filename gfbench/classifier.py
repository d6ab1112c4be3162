"""Networks classifying MNIST digits as problems: the shared part of linear_fc, relu_fc, mlp and cnn.

θ is ``torch.nn.utils.parameters_to_vector(module.parameters())``: every parameter flattened
row-major, in the module's parameter order. ``loss(θ)`` evaluates the module on views of θ through
``torch.func.functional_call``, so no parameter is ever copied into the module.
"""
from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, Callable, ClassVar, Mapping, NamedTuple, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from .mnist import DATA_DIR_PARAM, TEST_SIZE, TRAIN_SIZE, mnist_tensors
from .params import Bounds, Param
from .problem import Problem
from .recording import Recorder, RecordPoint, Variable

#: The adaptive flows' float64 defaults on the ReLU networks. The gradient jumps wherever a
#: pre-activation crosses 0, and every jump is a discontinuity the step control must resolve:
#: relu_fc (n_train 1000) to T = 1 crosses ~30,000 kinks, and GF takes 3,900 evaluations at
#: rtol 1e-7, 25,600 at 1e-8, several times more again at the generic 1e-9. At 1e-8 the GF
#: reference moves by 1.8e-4 from its 1e-7 value, against a GD–GF gap of 2.0e-3 at η0 = 0.001.
#: relu_fc and cnn now have their own (bosh3, kinks passed, measured); cnn with the kinks left to the
#: step control, and mlp with relu, keep these.
RELU_FLOW_TOLERANCES = {torch.float64: (1e-8, 1e-10)}

CLASSIFIER_PARAMETERS = (
    Param("n_train", int, 1000, "training examples: MNIST indices 0, 50, ..., 50(n-1) for n <= 1001, "
          "else the first n (EC21)", bounds=Bounds(1, TRAIN_SIZE)),
    Param("n_test", int, 0, "test examples (the first n of the test set) for test_loss/test_accuracy; 0: none",
          bounds=Bounds(0, TEST_SIZE)),
    DATA_DIR_PARAM,
)


def half_squared_error(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(1/n) Σ_i ½‖h(x_i) − e_{y_i}‖²: the edge-of-stability MSE, one-hot targets e_y over the C outputs.

    outputs (n, C), labels (n,) in 0..C−1 (Cohen, Kaur, Li, Kolter, Talwalkar, ICLR 2021, Appendix).
    """
    targets = F.one_hot(labels, outputs.shape[1]).to(outputs.dtype)
    return 0.5 * ((outputs - targets) ** 2).sum(1).mean()


class Criterion(NamedTuple):
    """A classification loss: ``function(outputs, labels)`` averaged over examples, and what it is in words."""

    function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    long_name: str


#: The classifiers' losses, by value of the ``loss`` parameter.
LOSSES = {"ce": Criterion(F.cross_entropy, "mean cross-entropy"),
          "mse": Criterion(half_squared_error, "mean of 1/2 |h(x) - onehot(y)|^2")}
#: Elementwise activations σ, by value of the ``activation`` parameter.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "softplus": nn.Softplus, "linear": nn.Identity}
LOSS_PARAM = Param("loss", str, "ce", "ce: mean cross-entropy; mse: mean of ½‖h(x) − onehot(y)‖² (EoS convention)",
                   choices=tuple(LOSSES))
#: Name of the training logits h_θ(x), shape (n, C), in ``MNISTClassifier.loss_with_aux``'s aux.
TRAIN_LOGITS = "train_logits"
ACTIVATION_PARAM = Param("activation", str, "relu", "elementwise activation between layers (linear: none)",
                         choices=tuple(ACTIVATIONS))


def torch_default_init_(module: nn.Module, generator: torch.Generator) -> None:
    """torch's own initialisation of every Linear and Conv2d, drawn from ``generator``.

    Weights kaiming-uniform with a = √5, i.e. U(−1/√fan_in, 1/√fan_in); biases U(−1/√fan_in, 1/√fan_in)
    (``reset_parameters`` of torch.nn.Linear and Conv2d).
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            if layer.bias is not None:
                bound = 1.0 / math.sqrt(nn.init._calculate_fan_in_and_fan_out(layer.weight)[0])
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class MNISTClassifier(Problem):
    """f(θ) = (1/n) Σ_i ℓ(h_θ(x_i), y_i): mean loss of a network h_θ on n MNIST examples, full batch.

    ℓ is cross-entropy, or the ``loss`` parameter's choice where a subclass declares it (``LOSSES``).
    Inputs are normalised as (pixel/255 − 0.1307)/0.3081 (torchvision's constants). A subclass
    builds the network (``make_module``) and initialises it from a generator (``initialize_``).
    Records ``train_accuracy`` (the largest output is the predicted class), and ``test_loss`` and
    ``test_accuracy`` when ``n_test`` > 0.
    """

    #: EC21 Figure 1: η0 = 0.001 for 10,000 iterations.
    default_lr: ClassVar[float] = 0.001
    default_steps: ClassVar[int] = 10_000
    #: True: the module takes flattened inputs (n, 784); False: images (n, 1, 28, 28).
    flat_inputs: ClassVar[bool]

    @abstractmethod
    def make_module(self) -> nn.Module:
        """A fresh module for ``self.params`` (its initial values do not matter)."""

    @abstractmethod
    def initialize_(self, module: nn.Module, generator: torch.Generator) -> None:
        """Overwrite every parameter of ``module`` in place with the problem's initialisation."""

    def build(self) -> None:
        self.data_dir = self.params.pop("data_dir")
        self.module = self.make_module().to(torch.float64)
        self.shapes = {name: p.shape for name, p in self.module.named_parameters()}
        self.train_x, self.train_y = self._inputs("train", self.params["n_train"])
        if self.params["n_test"] > 0:
            self.test_x, self.test_y = self._inputs("test", self.params["n_test"])

    def _inputs(self, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = mnist_tensors(split, n, self.data_dir)
        return (x.flatten(1) if self.flat_inputs else x), y

    @property
    def dim(self) -> int:
        return sum(shape.numel() for shape in self.shapes.values())

    def sample_init(self, generator: torch.Generator) -> torch.Tensor:
        module = self.make_module().to(torch.float64)
        with torch.no_grad():
            self.initialize_(module, generator)
        return nn.utils.parameters_to_vector(module.parameters()).detach()

    def named_views(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """θ split into views shaped like the module's parameters, by parameter name."""
        sizes = [shape.numel() for shape in self.shapes.values()]
        return {name: chunk.view(shape)
                for (name, shape), chunk in zip(self.shapes.items(), torch.split(theta, sizes))}

    def logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """h_θ(x), shape (n, C): one output per class."""
        return functional_call(self.module, self.named_views(theta), (x,))

    @property
    def criterion(self) -> Criterion:
        """The loss ℓ: the ``loss`` parameter's where declared, else cross-entropy."""
        return LOSSES[self.params.get("loss", "ce")]

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        return self.loss_with_aux(theta)[0]

    def loss_with_aux(self, theta: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """f(θ) and the logits h_θ(x) on the training examples it averages over (``TRAIN_LOGITS``),
        from which ``ClassifierMetrics`` reads the training accuracy without another forward pass."""
        logits = self.logits(theta, self.train_x)
        return self.criterion.function(logits, self.train_y), {TRAIN_LOGITS: logits}

    def relu_inputs(self, theta: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        """The pre-activation entering every ``nn.ReLU`` of the network on inputs x, in forward order."""
        return self._hooked_logits(theta, x, gates=None)[1]

    def switching_functions(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """Every ReLU's input on the training examples (``relu_inputs``); [] for linear_fc."""
        return self.relu_inputs(theta, self.train_x)

    def gated_loss(self, theta: torch.Tensor, gates: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The loss (``criterion``) with the k-th ReLU's output σ(z) replaced by gates[k]·z."""
        logits, pre_activations = self._hooked_logits(theta, self.train_x, gates=gates)
        return self.criterion.function(logits, self.train_y), pre_activations

    def gated_loss_of(self, theta: torch.Tensor, gates: Sequence[torch.Tensor], examples: torch.Tensor
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``gated_loss`` on the training examples ``examples``: the criterion's mean over them times
        their share len(examples)/n of the training set."""
        logits, pre_activations = self._hooked_logits(theta, self.train_x[examples], gates=gates)
        share = len(examples) / len(self.train_x)
        return share * self.criterion.function(logits, self.train_y[examples]), pre_activations

    def _hooked_logits(self, theta: torch.Tensor, x: torch.Tensor,
                       gates: Sequence[torch.Tensor] | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """h_θ(x) and the input of every ``nn.ReLU`` in forward order; with ``gates``, the k-th
        ReLU outputs gates[k]·z instead of max(z, 0) (a forward hook's return value replaces the output)."""
        captured: list[torch.Tensor] = []

        def hook(_, inputs, output):
            captured.append(inputs[0])
            return output if gates is None else gates[len(captured) - 1] * inputs[0]

        handles = [layer.register_forward_hook(hook) for layer in self.module.modules() if isinstance(layer, nn.ReLU)]
        try:
            logits = self.logits(theta, x)
        finally:
            for handle in handles:
                handle.remove()
        return logits, captured

    def recorders(self) -> Sequence[Recorder]:
        return (ClassifierMetrics(with_test=self.params["n_test"] > 0, loss_name=self.criterion.long_name),)


class ClassifierMetrics(Recorder):
    """Training accuracy, and test loss (the problem's ``criterion``) and accuracy when the problem holds
    test examples.

    The training accuracy is read from the logits of the evaluation that gave the point's loss and
    gradient (``RecordPoint.aux``), so on the training set it costs no forward pass of its own.
    """

    def __init__(self, with_test: bool, loss_name: str = LOSSES["ce"].long_name) -> None:
        self.with_test = with_test
        self.loss_name = loss_name

    def variables(self) -> Sequence[Variable]:
        found = [Variable("train_accuracy", "fraction of training examples classified correctly", "1")]
        if self.with_test:
            found += [Variable("test_loss", f"{self.loss_name} on the test examples", "1"),
                      Variable("test_accuracy", "fraction of test examples classified correctly", "1")]
        return found

    def record(self, point: RecordPoint) -> Mapping[str, Any]:
        problem = point.problem
        logits = point.aux[TRAIN_LOGITS]
        values = {"train_accuracy": float((logits.argmax(1) == problem.train_y).double().mean())}
        if self.with_test:
            logits = problem.logits(point.theta, problem.test_x)
            values["test_loss"] = float(problem.criterion.function(logits, problem.test_y))
            values["test_accuracy"] = float((logits.argmax(1) == problem.test_y).double().mean())
        return values


class ReluCrossings(Recorder):
    """Kinks crossed: how many (training example, ReLU unit) pairs switched on or off since the last record.

    A ReLU network's loss is smooth only inside a region of fixed activation pattern; where a
    pre-activation z crosses 0 the gradient jumps. ``relu_crossings`` at record j counts the pairs
    whose state (z > 0) differs from record j − 1 (0 at the first record); ``relu_active_fraction``
    is the fraction of pairs on. GD that zig-zags across a kink (a sliding mode of the flow) shows a
    crossing count that doubles when η halves. Costs one forward pass per record point. Pass it
    to ``gfbench.run(..., recorders=[ReluCrossings()])`` on relu_fc or cnn.
    """

    def __init__(self) -> None:
        self._previous: torch.Tensor | None = None

    def variables(self) -> Sequence[Variable]:
        return [Variable("relu_crossings", "(example, ReLU unit) pairs whose on/off state changed since the "
                         "previous record point", "1"),
                Variable("relu_active_fraction", "fraction of (example, ReLU unit) pairs with positive "
                         "pre-activation", "1")]

    def record(self, point: RecordPoint) -> Mapping[str, Any]:
        inputs = point.problem.relu_inputs(point.theta, point.problem.train_x)
        if not inputs:
            raise ValueError(f"problem {point.problem.name!r} has no ReLU units to record crossings of")
        pattern = torch.cat([z.reshape(-1) > 0 for z in inputs])
        crossings = 0 if self._previous is None else int((pattern != self._previous).sum())
        self._previous = pattern
        return {"relu_crossings": crossings, "relu_active_fraction": float(pattern.double().mean())}
