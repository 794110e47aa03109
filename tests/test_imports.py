"""The package's shape (issue 12): no import cycles, no module far over 400 lines, and every
import made inside a function says why (start-up time, an optional dependency, a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).parents[1] / "attnbench"
MAX_LINES = 420  # "about 400"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PKG.rglob("*.py"):
        name = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _top_level_edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> attnbench modules it imports at its top level (what runs on import)."""
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        out = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("attnbench"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    out.add(full if full in mods else node.module)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("attnbench"))
        edges[name] = {m for m in out if m in mods and m != name}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative enough here)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def _has_reason(lines: list[str], node: ast.stmt) -> bool:
    """A comment on the import's own lines, or on a comment line above its block of imports."""
    if any("#" in line for line in lines[node.lineno - 1 : node.end_lineno]):
        return True
    j = node.lineno - 2
    while j >= 0:
        s = lines[j].strip()
        if s.startswith("#"):
            return True
        if s.startswith(("import ", "from ")) or s == "" or s.startswith(")") or s.endswith(","):
            if "#" in s:
                return True
            j -= 1
            continue
        return False
    return False


def test_no_import_cycles():
    assert _cycles(_top_level_edges(_modules())) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_far_over_400_lines():
    long = {
        str(p.relative_to(PKG.parent)): n
        for p in PKG.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_function_level_import_gives_its_reason():
    missing = []
    for path in sorted(PKG.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)) and not _has_reason(lines, sub):
                        missing.append(f"{path.relative_to(PKG.parent)}:{sub.lineno}")
    assert sorted(set(missing)) == []


def test_the_reason_rule_reads_comments():
    src = (
        "def f():\n    # deferred: torch\n    import json\n    import os\n\n    import sys\n    x = 1\n    import re\n"
    )
    tree = ast.parse(src)
    lines = src.splitlines()
    verdicts = {n.lineno: _has_reason(lines, n) for n in ast.walk(tree) if isinstance(n, ast.Import)}
    assert verdicts == {3: True, 4: True, 6: True, 8: False}
