"""The package's modules import each other in one direction only: no cycle, lazy imports too."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "transferability"


def imports_of(path: Path) -> set[str]:
    """Every transferability module that `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "transferability":
                found |= {a.name for a in node.names}
            elif node.module.startswith("transferability."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {
                a.name.split(".")[1] for a in node.names if a.name.startswith("transferability.")
            }
    return found - {path.stem}


def test_the_import_graph_has_no_cycle():
    graph = {p.stem: imports_of(p) for p in PACKAGE.glob("*.py")}
    assert graph["study"] and "executors" in graph["runner"]  # the scan sees real edges
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        raise AssertionError(f"import cycle: {e.args[1]}") from None
    assert order.index("study") < order.index("executors") < order.index("runner")
