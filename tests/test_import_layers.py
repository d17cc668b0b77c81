"""The package's import graph, counting imports under TYPE_CHECKING: the low layers
(runtimes, memory, the state store, the pure policy) never import back up."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"
# Below the supervisor: none of them may sit on an import cycle.
LOW_LAYERS = ("orchestrator.runtimes", "orchestrator.engine.memory", "orchestrator.runtimes.cgroups",
              "orchestrator.engine.records", "orchestrator.engine.state_store", "orchestrator.plan.policy",
              "orchestrator.engine.lifecycle", "orchestrator.infra.paths", "orchestrator.plan.scheduler")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every orchestrator module `path` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return found & known


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    # A submodule importing its own package is no cycle: Python imports the package first.
    return {name: {m for m in imports_of(path, set(files)) if name != m and not name.startswith(m + ".")}
            for name, path in files.items()}


def on_a_cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, trail = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return [*trail, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*trail, nxt]))
    return None


def test_low_layers_sit_on_no_import_cycle() -> None:
    graph = import_graph()
    cycles = {name: cycle for name in LOW_LAYERS if (cycle := on_a_cycle(graph, name)) is not None}
    assert cycles == {}


def test_the_process_runtime_knows_nothing_of_the_supervisor() -> None:
    graph = import_graph()
    reach, pending = set(), ["orchestrator.runtimes.process"]
    while pending:
        for nxt in graph[pending.pop()] - reach:
            reach.add(nxt)
            pending.append(nxt)
    assert not reach & {"orchestrator.engine.supervisor", "orchestrator.engine.memory", "orchestrator.engine.models"}
