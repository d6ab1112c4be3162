"""The README's commands, as written and in order, on a fresh folder: each must exit 0."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from zoo_support import requires_mnist

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(text: str, after: str, language: str = "") -> list[str]:
    """The fenced blocks of ``language`` in the README section headed ``after``."""
    section = text.split(after, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    """The shell commands of a block: continuation lines joined, ``#`` comments dropped."""
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def test_the_set_up_block_installs_and_runs_the_main_job_and_the_tests():
    install, tests = _blocks(README.read_text(), "## Set up")[:2]
    assert _commands(install) == [["pip", "install", "-e", ".[test]", "&&", "gfbench", "run", "--problem",
                                   "deep_linear", "--solver", "gd"]]  # .ci/run runs exactly these
    assert _commands(tests) == [["python", "-m", "pytest"]]
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[test]"' in ci and "gfbench run --problem deep_linear --solver gd" in ci
    assert "python -m pytest" in ci


@requires_mnist
def test_the_use_section_runs_as_written_in_order(tmp_path):
    pytest.importorskip("distributed")
    text = README.read_text()
    commands = _commands(_blocks(text, "## Use")[0])
    assert len(commands) >= 9 and all(command[0] == "gfbench" for command in commands)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "gfbench.cli", *command[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{shlex.join(command)}\n{done.stderr[-2000:]}"
    python = _blocks(text, "## Use", "python")[0]
    done = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "runs" / "gd.nc").is_file() and (tmp_path / "sweeps" / "dl" / "sweep.json").is_file()
