"""Built-in solvers, by registry name. Third-party solvers register through the
``gfbench.solvers`` entry-point group."""
from .central import Central
from .gd import GD
from .gf import GF
from .igr import IGR
from .principal import Principal
from .second_order import SecondOrder

SOLVERS = {cls.name: cls for cls in (GD, GF, IGR, SecondOrder, Principal, Central)}

__all__ = ["SOLVERS", "GD", "GF", "IGR", "SecondOrder", "Principal", "Central"]
