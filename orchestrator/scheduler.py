"""Pure scheduling decisions: (graph, states, wanted) -> actions.

The supervisor calls `decide` after every state change and carries out what it returns.
Keeping this free of I/O lets tests replay any history of events in microseconds.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.spec import Condition, Dependency


class State(enum.StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    COMPLETED = "completed"  # a one-shot resource that exited 0
    FAILED = "failed"
    BLOCKED = "blocked"
    STOPPING = "stopping"
    STOPPED = "stopped"


# Which states satisfy each dependency condition.
SATISFIES: dict[Condition, frozenset[State]] = {
    Condition.STARTED: frozenset({State.STARTING, State.READY, State.UNHEALTHY, State.COMPLETED}),
    Condition.HEALTHY: frozenset({State.READY, State.COMPLETED}),
    Condition.COMPLETED: frozenset({State.COMPLETED}),
}
# States from which a dependency can no longer meet its condition in this `up`.
DEAD_ENDS = frozenset({State.FAILED, State.BLOCKED, State.STOPPED, State.STOPPING})
# What `up` waits for: success or a final failure.
SETTLED_OK = frozenset({State.READY, State.COMPLETED})
SETTLED_BAD = frozenset({State.FAILED, State.BLOCKED, State.UNHEALTHY})


@dataclass(frozen=True, slots=True)
class View:
    """What the scheduler needs to know of one resource."""

    state: State
    message: str = ""


@dataclass(frozen=True, slots=True)
class Start:
    name: str


@dataclass(frozen=True, slots=True)
class Block:
    name: str
    reason: str


Action = Start | Block


def blocking_reason(dep: Dependency, view: View | None) -> str | None:
    """Why `dep` will never meet its condition, or None while it still may."""
    if view is None:
        return f"dependency {dep.name} is not part of this run"
    if view.state in SATISFIES[dep.condition]:
        return None
    if dep.condition is Condition.COMPLETED and view.state in (State.READY, State.UNHEALTHY):
        return None  # still running; it may yet complete
    if view.state in DEAD_ENDS:
        why = view.message or view.state.value
        verb = "failed" if view.state in (State.FAILED, State.BLOCKED) else view.state.value
        return f"dependency {dep.name} {verb}: {why}"
    return None


def decide(depends: Mapping[str, tuple[Dependency, ...]], views: Mapping[str, View],
           wanted: frozenset[str], ignore_deps: bool = False) -> list[Action]:
    """Start every wanted pending resource whose dependencies are met; block the hopeless.

    `depends` maps a resource to its dependency edges. A resource is decided on its own
    edges only, never on a whole wave, so a fast branch never waits for a slow one.
    With `ignore_deps` (`up --no-deps`) edges to resources outside `wanted` are ignored.
    """
    actions: list[Action] = []
    for name in wanted:
        view = views.get(name)
        if view is None or view.state is not State.PENDING:
            continue
        reason = None
        waiting = False
        for dep in depends.get(name, ()):
            if ignore_deps and dep.name not in wanted:
                continue
            dep_view = views.get(dep.name)
            if dep_view is not None and dep_view.state in SATISFIES[dep.condition]:
                continue
            reason = blocking_reason(dep, dep_view)
            if reason:
                break
            waiting = True
        if reason:
            actions.append(Block(name, reason))
        elif not waiting:
            actions.append(Start(name))
    return sorted(actions, key=lambda a: a.name)


def waiting_for(depends: Mapping[str, tuple[Dependency, ...]], views: Mapping[str, View],
                name: str) -> str:
    """Why a pending resource has not started yet, for `status` and progress lines."""
    missing = [f"{d.name} ({d.condition.value})" for d in depends.get(name, ())
               if views.get(d.name, View(State.STOPPED)).state not in SATISFIES[d.condition]]
    return "waiting for " + ", ".join(missing) if missing else ""


def up_settled(views: Mapping[str, View], wanted: frozenset[str]) -> bool:
    return all(views[n].state in SETTLED_OK | SETTLED_BAD for n in wanted if n in views)
