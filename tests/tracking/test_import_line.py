"""``tracking/`` imports in one direction: no module imports back one that imports it (no cycle).

Function-level imports count too (they run, and a cycle among them is an order in which the
package can break); ``if TYPE_CHECKING:`` imports do not. The journal's line is
``records`` -> ``jsonl`` -> ``journal`` -> ``replay``.
"""

from __future__ import annotations

import ast
from pathlib import Path

TRACKING = Path(__file__).resolve().parents[2] / "mlflow_energy" / "tracking"


def _imports(path: Path) -> set[str]:
    """The ``tracking`` modules that ``path`` imports at run time."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "mlflow_energy.tracking":
                out.update(a.name for a in node.names if (TRACKING / f"{a.name}.py").exists())
            elif node.module.startswith("mlflow_energy.tracking."):
                out.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[2] for a in node.names if a.name.startswith("mlflow_energy.tracking."))
    return out - {path.stem}


def _graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) for p in TRACKING.glob("*.py") if p.stem != "__init__"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_tracking_has_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle in tracking/: " + " -> ".join(cycle or [])


def test_the_journal_line_runs_one_way() -> None:
    graph = _graph()
    assert "journal" not in graph["jsonl"] and "journal" not in graph["records"]
    assert "replay" not in graph["journal"] and "journal" in graph["replay"]
    assert not graph["records"]  # the lowest: nothing of tracking
