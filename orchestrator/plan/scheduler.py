"""Pure scheduling decisions: (graph, states, wanted) -> actions.

The supervisor calls `decide` after every state change and carries out what it returns.
Keeping this free of I/O lets tests replay any history of events in microseconds.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from orchestrator.plan import graph
from orchestrator.spec import Condition, Dependency, ResourceSpec


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
    # Optional dependencies it starts without, each "NAME (optional: why)".
    without: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        """What its status message says of them, e.g. "started without cache (optional: failed)"."""
        return "started without " + ", ".join(self.without) if self.without else ""


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


def optional_gone(dep: Dependency, view: View | None, wanted: bool, left_out: Mapping[str, str]) -> str | None:
    """Why an optional dependency that has not met its condition will not, or None while
    it still may (it is wanted and starting): then the dependent waits for it."""
    if view is None:
        return "not part of this run"
    if not wanted:
        return left_out.get(dep.name, "not selected")
    if blocking_reason(dep, view) is not None:
        return view.state.value  # failed, blocked, stopped, stopping
    if view.state is State.UNHEALTHY and dep.condition is not Condition.COMPLETED:
        return "unhealthy"
    return None


def decide(depends: Mapping[str, tuple[Dependency, ...]], views: Mapping[str, View],
           wanted: frozenset[str], ignore_deps: bool = False,
           left_out: Mapping[str, str] | None = None) -> list[Action]:
    """Start every wanted pending resource whose dependencies are met; block the hopeless.

    `depends` maps a resource to its dependency edges. A resource is decided on its own
    edges only, never on a whole wave, so a fast branch never waits for a slow one.
    With `ignore_deps` (`up --no-deps`) edges to resources outside `wanted` are ignored.
    An optional edge (required = false) is waited for while its resource is wanted and may
    still meet its condition; otherwise the dependent starts without it, and its Start says
    why (`left_out`: why a resource is not wanted, e.g. "disabled").
    """
    actions: list[Action] = []
    for name in wanted:
        view = views.get(name)
        if view is None or view.state is not State.PENDING:
            continue
        reason = None
        waiting = False
        without: list[str] = []
        for dep in depends.get(name, ()):
            if ignore_deps and dep.name not in wanted:
                continue
            dep_view = views.get(dep.name)
            if dep_view is not None and dep_view.state in SATISFIES[dep.condition]:
                continue
            if not dep.required:
                gone = optional_gone(dep, dep_view, dep.name in wanted, left_out or {})
                if gone:
                    without.append(f"{dep.name} (optional: {gone})")
                else:
                    waiting = True
                continue
            reason = blocking_reason(dep, dep_view)
            if reason:
                break
            waiting = True
        if reason:
            actions.append(Block(name, reason))
        elif not waiting:
            actions.append(Start(name, tuple(without)))
    return sorted(actions, key=lambda a: a.name)


def waiting_for(depends: Mapping[str, tuple[Dependency, ...]], views: Mapping[str, View],
                name: str) -> str:
    """Why a pending resource has not started yet, for `status` and progress lines."""
    missing = [f"{d.name} ({d.condition.value}{'' if d.required else ', optional'})" for d in depends.get(name, ())
               if views.get(d.name, View(State.STOPPED)).state not in SATISFIES[d.condition]]
    return "waiting for " + ", ".join(missing) if missing else ""


def up_settled(views: Mapping[str, View], wanted: frozenset[str]) -> bool:
    return all(views[n].state in SETTLED_OK | SETTLED_BAD for n in wanted if n in views)


# ---------------------------------------------------------------- what an `up` selects


def is_active(spec: ResourceSpec, profiles: Iterable[str]) -> bool:
    """Part of a plain `up` with these profiles active: it has none, or one of them."""
    return not spec.profiles or bool(set(spec.profiles) & set(profiles))


def left_out_reason(spec: ResourceSpec, profiles: Iterable[str] = ()) -> str:
    """Why a resource is not part of a run, as a dependent's note and `status` say it."""
    if not spec.enabled:
        return "disabled"
    if not is_active(spec, profiles):
        return inactive_text(spec).removeprefix("inactive (").removesuffix(")") + " inactive"
    return "not selected"


def inactive_text(spec: ResourceSpec) -> str:
    """ "inactive (profile ai)" / "inactive (profiles ai, gpu)"."""
    return f"inactive (profile{'s' if len(spec.profiles) > 1 else ''} {', '.join(spec.profiles)})"


@dataclass(frozen=True)
class Selection:
    """What `up [NAMES] [--profile P]... [--no-deps]` starts."""

    roots: tuple[str, ...]
    selected: frozenset[str]
    # Inactive (profiled) resources started anyway because a selected resource requires
    # them: name -> the selected resources that require it.
    pulled_in: Mapping[str, tuple[str, ...]]


def select(resources: Mapping[str, ResourceSpec], names: Iterable[str] | None, no_deps: bool,
           profiles: Iterable[str] = ()) -> Selection:
    """The named resources (or every enabled, active one), plus, unless `no_deps`, what they
    require (even when its profile is inactive: a required dependency is always started) and
    their optional dependencies that are enabled and active (so that they are waited for).
    A disabled resource starts only when named."""
    profiles = frozenset(profiles)
    named = list(names or ())
    roots = named or [n for n, r in resources.items() if r.enabled and is_active(r, profiles)]
    if no_deps:
        return Selection(tuple(roots), frozenset(roots), {})

    def followed(dep: Dependency) -> bool:
        target = resources.get(dep.name)
        return target is not None and (dep.required or (target.enabled and is_active(target, profiles)))

    edges = {n: [d.name for d in r.depends_on if followed(d)] for n, r in resources.items()}
    selected = frozenset(n for n in graph.closure(edges, roots)
                         if n in resources and (resources[n].enabled or n in roots))
    pulled_in = {n: tuple(sorted(d for d in selected if n in edges[d] and any(
                     e.name == n and e.required for e in resources[d].depends_on)))
                 for n in sorted(selected - set(named)) if not is_active(resources[n], profiles)}
    return Selection(tuple(roots), selected, pulled_in)
