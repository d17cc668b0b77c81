"""The dependency graph, pure: cycles, topological waves, closures, shutdown order.

`edges` maps each resource to the resources it depends on. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

Edges = Mapping[str, Sequence[str]]


def find_cycle(edges: Edges) -> list[str] | None:
    """Return one cycle as [a, b, ..., a], or None. Deterministic: follows declaration order."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(edges, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for dep in edges.get(node, ()):
            if dep not in color:
                continue
            if color[dep] == grey:
                return [*stack[stack.index(dep):], dep]
            if color[dep] == white:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return None

    for node in edges:
        if color[node] == white:
            found = visit(node)
            if found:
                return found
    return None


def waves(edges: Edges) -> list[list[str]]:
    """Topological layers: wave 0 has no dependencies; wave k depends only on earlier waves.

    This is the plan shown to users. The scheduler does not wait for whole waves: each
    resource starts as soon as its own dependencies are met.
    """
    depth: dict[str, int] = {}

    def level(node: str) -> int:
        if node not in depth:
            deps = [d for d in edges.get(node, ()) if d in edges]
            depth[node] = 1 + max((level(d) for d in deps), default=-1)
        return depth[node]

    for node in edges:
        level(node)
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node in edges:  # declaration order inside a wave
        layers[depth[node]].append(node)
    return layers


def closure(edges: Edges, roots: Iterable[str]) -> set[str]:
    """The roots and everything they depend on, transitively."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(edges.get(node, ()))
    return seen


def dependents(edges: Edges, roots: Iterable[str]) -> set[str]:
    """The roots and everything that depends on them, transitively."""
    reverse: dict[str, list[str]] = {n: [] for n in edges}
    for node, deps in edges.items():
        for dep in deps:
            reverse.setdefault(dep, []).append(node)
    return closure(reverse, roots)


def shutdown_order(edges: Edges) -> list[list[str]]:
    """Waves in reverse: dependents stop before what they depend on."""
    return list(reversed(waves(edges)))


def critical_path(edges: Edges, durations: Mapping[str, float]) -> tuple[float, list[str]]:
    """The longest chain by summed durations: the floor no orchestrator can beat."""
    best: dict[str, tuple[float, list[str]]] = {}

    def finish(node: str) -> tuple[float, list[str]]:
        if node not in best:
            before = [finish(d) for d in edges.get(node, ()) if d in edges]
            start, chain = max(before, default=(0.0, []), key=lambda item: item[0])
            best[node] = (start + durations.get(node, 0.0), [*chain, node])
        return best[node]

    return max((finish(n) for n in edges), default=(0.0, []), key=lambda item: item[0])
