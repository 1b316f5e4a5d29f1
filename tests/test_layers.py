"""Layers point one way: no import cycle between the package's top-level units, and timm only
behind ``frankensplit.backbones``.

A unit is a top-level module (``config``, ``coding``, ``bitstream``...) or a sub-package
(``models``, ``runtime``, ``train``...); an import inside a function counts as much as one at the
top, since either makes the two units depend on each other. Read from the source (``ast``), so the
test needs no imports and names the file that closes a cycle.
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "frankensplit"


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    """The frankensplit units a file imports (absolute imports; the package uses no relative)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "frankensplit" and len(parts) > 1 and (
                    (PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file()):
                found.add(parts[1])
    return found


def _graph() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> files of the first unit that import it."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _unit(path)
        for dst in _imports(path) - {src}:
            graph[src][dst].append(str(path.relative_to(PACKAGE.parent)))
    return graph


def _cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle of units, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(unit: str) -> list[str] | None:
        state[unit] = 1
        stack.append(unit)
        for nxt in sorted(graph.get(unit, {})):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[unit] = 2
        return None

    for unit in sorted(graph):
        if unit not in state and (found := visit(unit)):
            return found
    return None


def test_no_import_cycle_between_units() -> None:
    graph = _graph()
    cycle = _cycle(graph)
    assert cycle is None, "import cycle " + " -> ".join(cycle) + ": " + "; ".join(
        f"{a} -> {b} in {graph[a][b]}" for a, b in itertools.pairwise(cycle))


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": ["x"]}, "b": {}}) is None


def test_timm_only_behind_backbones() -> None:
    users = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n == "timm" or n.startswith("timm.") for n in names):
                users.append(path.name)
    assert set(users) == {"backbones.py"}, users
