"""The import graph of rlaifv_lib has no cycle, counting every import (module level and inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import rlaifv_lib

ROOT = Path(rlaifv_lib.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the rlaifv_lib modules it imports anywhere in its source (``from . import x`` counts as x)."""
    files = {_module_name(f): f for f in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, file in files.items():
        package = mod if file.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            graph[mod] |= {n for n in names if n in files and n != mod}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first = last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_function_local_and_package_relative_imports():
    graph = import_graph()
    assert "rlaifv_lib.engine" in graph["rlaifv_lib.pipeline"]
    assert "rlaifv_lib.toyworld.scenes" in graph["rlaifv_lib.toyworld.grammar"]  # from .scenes import ...
    assert "rlaifv_lib.pipeline" in graph["rlaifv_lib.cli"]  # imported inside functions only


def test_rlaifv_lib_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_readme_module_table_names_every_module():
    readme = (ROOT.parent / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("### The library's modules") :].split("\n\n")[1]
    named = {m for row in table.splitlines()[2:] for m in row.split("|")[1].replace("`", "").replace(",", " ").split()}
    have = {p.name for p in ROOT.glob("*.py") if not p.name.startswith("_")} | {"toyworld/"}
    assert named == have, f"README lacks {sorted(have - named)}, names missing {sorted(named - have)}"
