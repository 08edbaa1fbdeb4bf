"""The package's modules import each other in one direction only: no cycle, lazy imports too.
A subpackage (analysis/, tracking/) is one node of the package's graph, and its own modules
keep one direction among themselves too."""

from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from .factories import package_imports

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "transferability"
SUBPACKAGES = [p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]


def imports_of(path: Path, depth: int = 1) -> set[str]:
    return package_imports(path.read_text(), depth)


def order(graph: dict[str, set[str]]) -> list[str]:
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        raise AssertionError(f"import cycle: {e.args[1]}") from None


def test_the_import_graph_has_no_cycle():
    graph = {p.stem: imports_of(p) - {p.stem} for p in PACKAGE.glob("*.py")}
    for package in SUBPACKAGES:
        graph[package.name] = set().union(*map(imports_of, package.glob("*.py"))) - {package.name}
    assert graph["networks"] and "executors" in graph["runner"]  # the scan sees real edges
    assert "tracking" in graph["runner"] and "analysis" in graph["aggregate"]
    ordered = order(graph)
    assert ordered.index("networks") < ordered.index("executors") < ordered.index("runner")
    assert ordered.index("runner") < ordered.index("aggregate")


def test_a_subpackage_imports_its_own_modules_in_one_direction():
    for package in SUBPACKAGES:
        graph = {}
        for path in package.glob("*.py"):
            name = f"{package.name}.{path.stem}"
            own = {m for m in imports_of(path, 2) if m.startswith(f"{package.name}.")}
            graph[name] = own - {name, f"{package.name}.__init__"}
        order(graph)
    assert imports_of(PACKAGE / "tracking" / "tracker.py", 2) >= {
        "tracking.store",
        "tracking.provenance",
    }
