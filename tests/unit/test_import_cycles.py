"""No import cycle between the modules of ``broker/``.

Every ``import`` and ``from … import`` counts, at module level and inside functions (a lazy
import hides a cycle from the interpreter, not from a reader), except those under
``if TYPE_CHECKING:``. Importing ``a.b`` runs ``a/__init__.py`` too, so a module also depends on
the packages above what it imports. A cycle is printed module by module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "broker"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The broker modules ``name`` imports (resolved to modules that exist)."""
    found: set[str] = set()

    def resolve(target: str) -> None:
        # The module itself or, for ``from module import attr``, the module. A package's
        # __init__ importing its own modules is not counted against them (Python's usual
        # package layout); a package imported by name is.
        parts = target.split(".")
        for i in range(len(parts), 0, -1):
            candidate = ".".join(parts[:i])
            if candidate in known:
                found.add(candidate)
                return

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit_stmt(sub)
                continue
            visit_stmt(child)

    def visit_stmt(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                resolve(f"{prefix}.{alias.name}")
        visit(node)

    visit(tree)
    found.discard(name)
    return {m for m in found if m.startswith(PACKAGE + ".") or m == PACKAGE}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: _imported(ast.parse(path.read_text(), str(path)), name,
                            path.name == "__init__.py", known)
            for name, path in mods.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    import sys
    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_one_cycle(graph, comp) for comp in components]


def describe(graph: dict[str, set[str]], cycle: list[str]) -> str:
    """The cycle, and every module caught in the same knot."""
    knot = _component(graph, cycle[0])
    return " -> ".join(cycle) + (f"\n    (the knot: {', '.join(sorted(knot))})"
                                 if len(knot) > len(cycle) - 1 else "")


def _component(graph: dict[str, set[str]], start: str) -> set[str]:
    def reach(v: str, edges: dict[str, set[str]]) -> set[str]:
        seen, todo = {v}, [v]
        while todo:
            for w in edges.get(todo.pop(), ()):
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return seen
    reverse: dict[str, set[str]] = {}
    for v, ws in graph.items():
        for w in ws:
            reverse.setdefault(w, set()).add(v)
    return reach(start, graph) & reach(start, reverse)


def _one_cycle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start = min(comp)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return sorted(comp)


def test_the_walker_sees_function_level_imports_and_skips_type_checking() -> None:
    source = ("from typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    from broker.b import X\n"
              "def f():\n    from broker.c import Y\n")
    known = {"broker", "broker.a", "broker.b", "broker.c"}
    assert _imported(ast.parse(source), "broker.a", False, known) == {"broker.c"}


def test_the_walker_finds_a_cycle() -> None:
    graph = {"broker.a": {"broker.b"}, "broker.b": {"broker.c"}, "broker.c": {"broker.a"},
             "broker.d": {"broker.a"}}
    assert find_cycles(graph) == [["broker.a", "broker.b", "broker.c", "broker.a"]]


def test_no_import_cycle_in_broker() -> None:
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(describe(graph, c) for c in cycles)
