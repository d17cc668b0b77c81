"""What `vrooli graph` and `vrooli validate` say of the start plan: the waves a plain `up`
(with the active profiles) would start, optional edges, and the resources profiles leave
out or a required dependency pulls in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.config.profiles import active_profiles
from orchestrator.plan import graph, scheduler
from orchestrator.plan.scheduler import Selection
from orchestrator.spec import Dependency, ProjectSpec


def selection_of(project: ProjectSpec, named: Sequence[str]) -> tuple[Selection, list[str]]:
    """What a plain `up` with these profiles (and VROOLI_PROFILES) starts; the active profiles."""
    active = active_profiles(project, named)
    return scheduler.select(project.resources, None, False, active), active


def _edge(dep: Dependency) -> str:
    return f"{dep.name} {dep.condition.value}" + ("" if dep.required else " optional")


def _profiles(project: ProjectSpec, name: str) -> str:
    return scheduler.inactive_text(project.resources[name]).removeprefix("inactive ")


def pulled_in_lines(project: ProjectSpec, chosen: Selection) -> list[str]:
    return [f"{name} {_profiles(project, name)} is started by a plain up: required by {', '.join(by)}"
            for name, by in chosen.pulled_in.items()]


def inactive(project: ProjectSpec, chosen: Selection) -> list[str]:
    return [n for n, r in project.resources.items() if r.enabled and n not in chosen.selected]


def graph_lines(project: ProjectSpec, chosen: Selection) -> list[str]:
    edges = {n: list(r.dependency_names) for n, r in project.resources.items() if n in chosen.selected}
    lines = []
    for index, wave in enumerate(graph.waves(edges), start=1):
        parts = []
        for name in wave:
            deps = project.resources[name].depends_on
            after = f" (after {', '.join(_edge(d) for d in deps)})" if deps else ""
            pulled = " [pulled in]" if name in chosen.pulled_in else ""
            parts.append(name + pulled + after)
        lines.append(f"wave {index}: {', '.join(parts)}")
    lines += [f"pulled in: {line}" for line in pulled_in_lines(project, chosen)]
    left = inactive(project, chosen)
    if left:
        lines.append(f"inactive: {', '.join(f'{n} {_profiles(project, n)}' for n in left)}")
    disabled = [n for n, r in project.resources.items() if not r.enabled]
    if disabled:
        lines.append(f"disabled: {', '.join(disabled)}")
    return lines


def graph_json(project: ProjectSpec, chosen: Selection, active: list[str]) -> dict[str, Any]:
    edges = {n: list(r.dependency_names) for n, r in project.resources.items() if n in chosen.selected}
    return {
        "project": project.name, "waves": graph.waves(edges),
        "resources": {n: {"runtime": r.runtime, "enabled": r.enabled,
                          "depends_on": {d.name: d.condition.value for d in r.depends_on},
                          "optional": [d.name for d in r.depends_on if not d.required],
                          "profiles": list(r.profiles), "selected": n in chosen.selected,
                          "pulled_in_by": list(chosen.pulled_in.get(n, ()))}
                      for n, r in project.resources.items()},
        "shutdown": graph.shutdown_order(edges),
        "profiles": {"declared": project.declared_profiles, "active": active},
        "inactive": inactive(project, chosen),
    }
