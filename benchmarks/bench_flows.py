"""Adaptive gradient flow: the cost of a solve to a fixed horizon, and of writing a long dataset."""
import tempfile
from pathlib import Path

import gfbench

from .common import DEVICES, make_problem, require_device, synchronize


class GFSolve:
    """Adaptive GF (dopri5, default tolerances) on deep_linear to T = 30, recorded every 100 steps."""

    params = (DEVICES,)
    param_names = ["device"]
    timeout = 300

    def setup(self, device):
        self.problem = make_problem("deep_linear", device)

    def time_gf_solve(self, device):
        gfbench.run(self.problem, "gf", lr=0.01, steps=3000, record_every=100, device=device, progress=False)
        synchronize(device)

    def peakmem_gf_solve(self, device):
        gfbench.run(self.problem, "gf", lr=0.01, steps=3000, record_every=100, device=device, progress=False)

    def track_gf_nfe(self, device):
        ds = gfbench.run(self.problem, "gf", lr=0.01, steps=3000, record_every=100, device=device, progress=False)
        return ds.attrs["nfe"]

    track_gf_nfe.unit = "gradient evaluations"


class WriteDataset:
    """Recording and atomically writing a 10,000-step trajectory with θ (d = 820) at every step."""

    timeout = 300

    def setup(self):
        require_device("cpu")
        self.ds = gfbench.run("deep_linear", "gd", lr=0.01, steps=10_000, save_params=True, progress=False)
        self.folder = tempfile.TemporaryDirectory()

    def teardown(self):
        self.folder.cleanup()

    def time_write_10k_steps(self):
        gfbench.save(self.ds, Path(self.folder.name) / "run.nc")

    def peakmem_write_10k_steps(self):
        gfbench.save(self.ds, Path(self.folder.name) / "run.nc")

    def track_file_megabytes(self):
        path = gfbench.save(self.ds, Path(self.folder.name) / "run.nc")
        return path.stat().st_size / 2 ** 20

    track_file_megabytes.unit = "MiB"
