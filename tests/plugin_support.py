"""Plugins for the tests, found through the real entry-point mechanism (importlib.metadata)."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Mapping


def write_distribution(root: Path, name: str, modules: Mapping[str, str],
                       entry_points: Mapping[str, Mapping[str, str]]) -> Path:
    """Lay out distribution ``name`` (version 0.1) in the folder ``root`` (created if missing) as an installer would.

    ``modules`` maps module name → source; ``entry_points`` maps group → {entry name → "module:attr"}.
    With ``root`` on sys.path (or PYTHONPATH), importlib.metadata finds the entry points. For
    throwaway plugins written inline; tests/test_plugins.py installs the example package with pip.
    """
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{entry} = {target}\n" for entry, target in entries.items())
        for group, entries in entry_points.items()))
    return root
