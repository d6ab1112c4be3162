import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_cli(tmp_path):
    """Run ``gfbench ARGS`` in a subprocess inside tmp_path; returns CompletedProcess."""

    def _run(*args, cwd=None, env=None, timeout=300):
        full_env = {**os.environ, **(env or {})}
        return subprocess.run([sys.executable, "-m", "gfbench.cli", *args], cwd=cwd or tmp_path, env=full_env,
                              capture_output=True, text=True, timeout=timeout)

    return _run
