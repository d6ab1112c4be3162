"""Built-in solvers, by registry name. Third-party solvers register through the
``gfbench.solvers`` entry-point group."""
from .gd import GD
from .gf import GF

SOLVERS = {cls.name: cls for cls in (GD, GF)}

__all__ = ["SOLVERS", "GD", "GF"]
