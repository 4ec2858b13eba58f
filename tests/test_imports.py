"""The house has no import circles: no fineprune module imports, directly or through others, a module that imports
it back, counting imports inside functions and under ``TYPE_CHECKING``; and the pruning engine imports no export."""

from __future__ import annotations

import ast
from pathlib import Path

import fineprune

PACKAGE = Path(fineprune.__file__).parent


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The fineprune modules that ``name`` imports anywhere in its file: ``from a import b`` counts as the module
    ``a.b`` where that is a module, else ``a``; relative imports are resolved against the module's package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, set(modules)) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path ``[a, b, ..., a]``, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    return next((cycle for node in sorted(graph) if node not in state and (cycle := visit(node))), None)


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_engine_imports_no_export():
    graph = import_graph()
    engine = {name for name in graph if name == "fineprune.pruning" or name.startswith("fineprune.pruning.")}
    wrong = {
        f"{name} -> {target}" for name in engine for target in graph[name] if target.startswith("fineprune.export")
    }
    assert not wrong, sorted(wrong)


def test_the_check_sees_every_kind_of_import(tmp_path):
    """Absolute, relative, inside a function and under TYPE_CHECKING: each is an edge, and a circle is found."""
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import x\n",
        "pkg/b.py": "def f():\n    from . import c\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub.d import y\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/d.py": "import pkg.a\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.sub", "pkg.sub.d"}
    graph = {
        name: imports_of(
            name,
            tmp_path / (name.replace(".", "/") + ("/__init__.py" if name in ("pkg", "pkg.sub") else ".py")),
            modules,
        )
        for name in modules
    }
    assert graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.sub.d"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.sub.d", "pkg.a"]
    graph["pkg.sub.d"] = set()
    assert find_cycle(graph) is None
