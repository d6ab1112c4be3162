"""The package's import graph: one-way dependencies, no cycle, every module importable alone."""
import ast
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
#: Package name → source folder (pyproject's package-dir).
PACKAGES = {"gfbench": ROOT / "gfbench", "gfbench.problems": ROOT / "problems", "gfbench.solvers": ROOT / "solvers"}
#: A lazy import inside ``theory.problem_of`` (theory → registry → problems.deep_linear → theory);
#: it goes when ``problem_of`` moves into the registry.
KNOWN_LAZY_EDGES = {("gfbench.theory", "gfbench.registry")}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [part for part in path.relative_to(folder).with_suffix("").parts if part != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """gfbench modules that ``name`` imports anywhere in its source (function bodies included)."""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = ".".join(base[:len(base) - node.level + 1] + [node.module or ""]).rstrip(".") \
                if node.level else node.module
            targets |= {module, *(f"{module}.{alias.name}" for alias in node.names)}
    return {target for target in targets if target in MODULES and target != name}


def _graph() -> dict[str, set[str]]:
    # The top-level package is the public facade: it imports nearly every module, and modules read
    # only __version__ from it, so it is left out.
    return {name: {target for target in _imports(name, path) if target != "gfbench"
                   and (name, target) not in KNOWN_LAZY_EDGES}
            for name, path in MODULES.items() if name != "gfbench"}


def test_field_does_not_import_the_curvature_code():
    assert not {target for target in _imports("gfbench.field", MODULES["gfbench.field"])
                if target.startswith("gfbench.curvature")}


def test_import_graph_has_no_cycle():
    graph, state, cycles = _graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, " ; ".join(" -> ".join(cycle) for cycle in cycles)


def test_every_module_imports_alone_in_a_fresh_interpreter():
    # One interpreter per module would cost a torch import each; the child re-imports every module
    # after dropping the gfbench modules loaded before it, so each starts from an empty package.
    script = ("import importlib, sys\n"
              "for name in sys.argv[1:]:\n"
              "    for loaded in [m for m in sys.modules if m == 'gfbench' or m.startswith('gfbench.')]:\n"
              "        del sys.modules[loaded]\n"
              "    importlib.import_module(name)\n")
    result = subprocess.run([sys.executable, "-c", script, *sorted(MODULES)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
