"""Cost of one optimisation step per problem and device: time, peak memory, throughput."""
import gfbench
from gfbench.field import GradientField

from .common import DEVICES, PROBLEMS, best_time, make_problem, synchronize


class GDStep:
    """One GD step θ ← θ − η∇f(θ) through gfbench's GD integration (no recording)."""

    params = (PROBLEMS, DEVICES)
    param_names = ["problem", "device"]
    timeout = 300

    def setup(self, problem, device):
        self.problem = make_problem(problem, device)
        field = GradientField(self.problem)
        self.integration = gfbench.get_solver("gd").start(field, self.problem.init(0), 1e-3)

    def _step(self):
        self.integration.advance_to(self.integration.step + 1)

    def time_gd_step(self, problem, device):
        self._step()
        synchronize(device)

    def peakmem_gd_step(self, problem, device):
        self._step()

    def track_steps_per_second(self, problem, device):
        return 1.0 / best_time(self._step, repeats=3, number=20, device=device)

    track_steps_per_second.unit = "steps/s"
