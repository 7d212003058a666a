"""The package layout stays readable: modules of bounded size, imports in one direction, no cycles.

The import graph is read from the source (every ``import`` statement, those inside
functions included), so a cycle hidden behind a function-level import fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lbpcore", "analysis")
MAX_LINES = 700


def _modules():
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            mods[".".join(parts)] = (path, is_pkg)
    return mods


MODULES = _modules()


def _imports(name):
    """Modules of this project that module ``name`` imports (absolute names)."""
    path, is_pkg = MODULES[name]
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from pkg import sub" imports the submodule pkg.sub when there is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def test_the_graph_is_not_empty():
    assert len(MODULES) > 20
    assert "lbpcore._validation" in GRAPH["lbpcore._linear"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name):
    path, _ = MODULES[name]
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (limit {MAX_LINES}): split it by concept"


def test_lbpcore_never_imports_analysis():
    bad = sorted((m, t) for m, ts in GRAPH.items() if m.startswith("lbpcore") for t in ts if t.startswith("analysis"))
    assert not bad, bad


def _cycle():
    """One import cycle among the modules as a list of names, or None.

    A package's ``__init__`` re-exporting its submodules and a submodule importing a
    sibling through the package are the usual Python idiom, so edges from a package
    to its own submodules are left out.
    """
    def edges(m):
        return [t for t in GRAPH[m] if not (MODULES[m][1] and t.startswith(m + "."))]

    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in edges(m):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_check_can_fail(monkeypatch):
    monkeypatch.setitem(GRAPH, "lbpcore._bases", GRAPH["lbpcore._bases"] | {"lbpcore._select"})
    monkeypatch.setitem(GRAPH, "lbpcore._select", GRAPH["lbpcore._select"] | {"lbpcore._bases"})
    assert _cycle() is not None
