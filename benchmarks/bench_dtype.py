"""float32 against float64 on the classifiers: GD step time, and the trajectory difference against
EC21 Figure 1's smallest drift (GD at η0 against GD at η0/2), in one process."""
import numpy as np
import torch

import gfbench
from gfbench.field import GradientField

from .common import interleaved_ratio, make_problem

LR = 1e-3
#: η0 steps of the trajectory comparison (t = 0.1).
STEPS = 100


class Float32VsFloat64:
    """GD step time in float32 / float64 (< 1: float32 faster), and ‖θ32 − θ64‖ / ‖θ(η0) − θ(η0/2)‖
    at t = STEPS·η0 (float64 drift; ≪ 1: float32 resolves EC21 Figure 1's distances)."""

    params = (["relu_fc", "cnn"],)
    param_names = ["problem"]
    unit = "ratio"
    timeout = 900

    def setup(self, problem):
        self.problems = {dtype: make_problem(problem, dtype=dtype) for dtype in (torch.float64, torch.float32)}

    def _stepper(self, dtype):
        problem = self.problems[dtype]
        solver = gfbench.get_solver("gd").start(GradientField(problem), problem.init(0), LR)
        return lambda: solver.advance_to(solver.step + 1)

    def track_float32_over_float64_step_time(self, problem):
        return interleaved_ratio(self._stepper(torch.float32), self._stepper(torch.float64),
                                 number=20 if problem == "relu_fc" else 5)

    def track_float32_difference_over_drift(self, problem):
        def final(dtype, ratio):
            ds = gfbench.run(self.problems[torch.float64], "gd", lr=LR / ratio, steps=STEPS * ratio,
                             record_every=STEPS * ratio, save_params=True, dtype=str(dtype)[6:], progress=False)
            return ds.theta.values[-1].astype(np.float64)

        reference = final(torch.float64, 1)
        return (np.linalg.norm(final(torch.float32, 1) - reference)
                / np.linalg.norm(final(torch.float64, 2) - reference))
