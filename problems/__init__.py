"""Built-in problems, by registry name. Third-party problems register through the
``gfbench.problems`` entry-point group."""
from .cnn import CNN
from .deep_linear import DeepLinear
from .fully_connected import LinearFC, ReluFC
from .mlp import MLP
from .ntk import NTK
from .quadratic import Quadratic
from .worst_case import WorstCase

PROBLEMS = {cls.name: cls for cls in (Quadratic, DeepLinear, WorstCase, LinearFC, ReluFC, MLP, CNN, NTK)}

__all__ = ["PROBLEMS", "Quadratic", "DeepLinear", "WorstCase", "LinearFC", "ReluFC", "MLP", "CNN", "NTK"]
