"""The project's import graph: no import loops, and the runtime never imports training or measurement code.

The graph is read from the source files with ``ast`` (nothing is imported), so it also sees the imports that run
late, inside functions: a loop closed by a function-level import is still a loop, and a runtime module that
imports training code there still drags it in when that function runs. pyproject.toml maps the folders to
``facecast.*`` (``engine`` -> ``facecast.engine``, ...); the module names here are the installed ones.

Three kinds of module:
- **training, evaluation and benchmark** (``OFF_RUNTIME``): training, its data and enrolment (``engine/training/``:
  enrolment fits adapters; loading them is ``engine/avatar/adapters.py``, runtime), evaluation and the quality
  studies (``engine/evaluation/``, ``engine/evaluation/studies/``), and speed and cost measurement
  (``streaming/benchmark/``). They may import the runtime, and each other.
- **entry points** (``ENTRY_POINTS``): the command line dispatches to every command, so it may import both sides.
- **runtime**: everything else (the frame pipeline, avatars, the models, export and the backends, streaming and
  its integrations). A runtime module imports only runtime modules.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent

OFF_RUNTIME = re.compile(
    r"""^(
        facecast\.engine\.training(\..+)?
      | facecast\.engine\.evaluation(\..+)?
      | facecast\.streaming\.benchmark(\..+)?
    )$""",
    re.VERBOSE,
)
ENTRY_POINTS = {"facecast.cli"}
# Where measurement code lives: quality (evaluation and its studies) and speed/cost (benchmark). No other place.
MEASUREMENT_PACKAGES = (
    "facecast.engine.evaluation",
    "facecast.engine.evaluation.studies",
    "facecast.streaming.benchmark",
)


def project_modules() -> dict[str, Path]:
    """Installed module name -> source file, from pyproject's package-dir."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    modules = {}
    for package, folder in setuptools["package-dir"].items():
        for path in sorted((REPO / folder).glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def imported_names(module: str, path: Path) -> list[tuple[str, int]]:
    """Every module name an import statement anywhere in the file may load (top level, in functions, under
    TYPE_CHECKING), with its line: ``from a.b import c`` may load ``a.b`` and ``a.b.c``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if path.stem == "__init__" else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            names.append((base, node.lineno))
            names += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return names


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Module -> {project module it imports: line of the (first) import}."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for name, line in imported_names(module, path):
            if name in modules and name != module:
                edges.setdefault(name, line)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]] | dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each holds at least one import loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def runtime_imports_off_runtime(graph: dict[str, dict[str, int]]) -> list[str]:
    return [
        f"{module} imports {target} (line {line})"
        for module, edges in sorted(graph.items())
        if module not in ENTRY_POINTS and not OFF_RUNTIME.match(module)
        for target, line in sorted(edges.items())
        if OFF_RUNTIME.match(target)
    ]


def _graph() -> dict[str, dict[str, int]]:
    graph = import_graph(project_modules())
    # The walk must see the project: a broken remap or a pattern that matches nothing would pass vacuously.
    assert len(graph) > 50
    for module in ("facecast.engine.training.enroll", "facecast.streaming.live.engine", "facecast.export.backends"):
        assert module in graph  # the sub-packages are walked too
    assert "facecast.engine.checkpoint" in graph["facecast.export.backends.torch_backend"]
    assert "facecast.engine.audio" in graph["facecast.engine.evaluation.evaluate"]  # relative import, two dots
    assert any(OFF_RUNTIME.match(m) for m in graph) and sum(not OFF_RUNTIME.match(m) for m in graph) > 30
    for package in MEASUREMENT_PACKAGES:  # walked, with their modules, and all off the runtime path
        assert OFF_RUNTIME.match(package) and sum(m.startswith(package + ".") for m in graph) >= 2, package
    return graph


def test_every_source_file_is_in_a_walked_package() -> None:
    """Every tracked Python file outside tests/ and examples/ (scripts that use the package) sits in a folder that
    pyproject's package-dir maps, so the walk sees it (and an install ships it): no script folder beside the packages
    (measurement code lives in MEASUREMENT_PACKAGES), and no sub-package forgotten in pyproject.toml."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True)
    folders = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    stray = [
        name
        for name in tracked.stdout.split()
        if not name.startswith(("tests/", "examples/")) and str(Path(name).parent) not in folders
    ]
    assert not stray, "Python files outside the packages pyproject.toml maps:\n" + "\n".join(stray)


def test_no_import_loops() -> None:
    loops = cycles(_graph())
    assert not loops, "import loops (modules that import each other, directly or around a ring):\n" + "\n".join(
        " <-> ".join(c) for c in loops
    )


def test_runtime_does_not_import_training_or_measurement() -> None:
    bad = runtime_imports_off_runtime(_graph())
    assert not bad, "runtime modules importing training/evaluation/benchmark code:\n" + "\n".join(bad)


def test_the_checks_can_fail() -> None:
    """The checkers themselves, on graphs with a planted loop and a planted runtime -> training import."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    planted = {
        "facecast.export.backends.torch_backend": {"facecast.engine.training.enroll": 3},
        "facecast.engine.pipeline": {"facecast.engine.evaluation.studies.render_fidelity": 7},
        "facecast.cli": {"facecast.streaming.benchmark.device_check": 1},
    }
    assert runtime_imports_off_runtime(planted) == [
        "facecast.engine.pipeline imports facecast.engine.evaluation.studies.render_fidelity (line 7)",
        "facecast.export.backends.torch_backend imports facecast.engine.training.enroll (line 3)",
    ]
