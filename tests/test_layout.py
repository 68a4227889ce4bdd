"""The floor plan: packages by concern whose imports run one way, no import cycle, no module past ~400 lines,
and the light modules (config schema, --help, the report) free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from .conftest import REPO

SRC = REPO / "src" / "downsample_lab"

# The packages (and top-level modules) from the top down: each may import only those after it.
LAYERS = [
    {"train", "eval", "shapes", "bench", "report", "__main__"},
    {"run"},
    {"engine"},
    {"config"},
    {"models", "data", "optim"},
    {"device"},
    {"errors", "choice", "study", "compat", "console", "__init__"},
]
# Modules allowed past ~400 lines, with the reason.
LONG = {}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def import_graph() -> dict[str, set[str]]:
    """Every module of the package and the modules of the package it imports (function-level imports too; not
    ``if TYPE_CHECKING:`` ones, which never run)."""
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        deps = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # "from pkg import module" depends on the module; "from module import name" on the module
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names}  # fmt: skip
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_packages_import_only_the_layers_below_them():
    layer = {pkg: i for i, pkgs in enumerate(LAYERS) for pkg in pkgs}
    assert len(LAYERS) <= 7
    wrong = []
    for module, deps in import_graph().items():
        src = _package(module)
        assert src in layer, f"{module}: add its package to LAYERS"
        for dep in deps:
            dst = _package(dep)
            if dst != src and layer[dst] <= layer[src]:
                wrong.append(f"{module} -> {dep}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_module_is_longer_than_400_lines_without_a_reason():
    long = {_module(p): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert set(long) <= set(LONG), long


@pytest.mark.parametrize(
    "modules",
    [
        # what a --help, a typo or a refused config needs before the run starts
        ["downsample_lab.train", "downsample_lab.eval", "downsample_lab.shapes", "downsample_lab.bench.main",
         "downsample_lab.run.help", "downsample_lab.config.keys"],
        ["downsample_lab.report", "downsample_lab.report.selection"],
    ],
)  # fmt: skip
def test_the_light_modules_import_neither_torch_nor_lightning(modules):
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
