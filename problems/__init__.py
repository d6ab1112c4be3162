"""Built-in problems, by registry name. Third-party problems register through the
``gfbench.problems`` entry-point group."""
from .deep_linear import DeepLinear
from .quadratic import Quadratic

PROBLEMS = {cls.name: cls for cls in (Quadratic, DeepLinear)}

__all__ = ["PROBLEMS", "Quadratic", "DeepLinear"]
