"""The import graph of pyml's own modules, built from the sources, has no cycle; no module
hides one behind a function-level import of another pyml module."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"pyml": ROOT / "pyml", "pyml.kernels": ROOT / "kernels",
                "pyml.benchmarks": ROOT / "benchmarks"}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg, base in PACKAGE_DIRS.items():
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg, *parts])
            if name.startswith("pyml.pyml"):
                continue
            mods[name] = path
    # pyml/kernels would shadow kernels/: the installed layout maps pyml.kernels -> kernels/
    return mods


def _resolve(module: str, node: ast.ImportFrom | ast.Import, is_pkg: bool, mods) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    # "from . import x" imports the submodule x; "from .m import f" imports m
    subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
    return subs or [target]


def _graph(top_level_only: bool):
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    late: list[tuple[str, str, int]] = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        is_pkg = path.name == "__init__.py"
        top = set(id(n) for n in tree.body)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _resolve(name, node, is_pkg, mods):
                # a package is always initialised before its submodules: not an edge
                if target in mods and target != name and not name.startswith(target + "."):
                    if id(node) in top or not top_level_only:
                        graph[name].add(target)
                    if id(node) not in top:
                        late.append((name, target, node.lineno))
    return graph, late


def _find_cycle(graph):
    WHITE, GREY, BLACK = 0, 1, 2
    color = {m: WHITE for m in graph}
    stack: list[str] = []

    def visit(m):
        color[m] = GREY
        stack.append(m)
        for t in sorted(graph[m]):
            if color[t] == GREY:
                return stack[stack.index(t):] + [t]
            if color[t] == WHITE:
                cyc = visit(t)
                if cyc:
                    return cyc
        stack.pop()
        color[m] = BLACK
        return None

    for m in sorted(graph):
        if color[m] == WHITE:
            cyc = visit(m)
            if cyc:
                return cyc
    return None


def test_no_import_cycle_counting_late_imports():
    # A function-level import still forms a cycle at run time: count it too.
    graph, _ = _graph(top_level_only=False)
    cyc = _find_cycle(graph)
    assert cyc is None, "import cycle: " + " -> ".join(cyc)


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
