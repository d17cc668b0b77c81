"""The pure core: graph shape and scheduling decisions, with no I/O."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.plan import graph
from orchestrator.plan.scheduler import Block, Start, State, View, decide, up_settled, waiting_for
from orchestrator.spec import Condition, Dependency

STACK = {"postgres": [], "redis": [], "qdrant": [], "n8n": ["postgres", "redis"], "ollama": []}


def test_waves_of_the_vrooli_stack() -> None:
    assert graph.waves(STACK) == [["postgres", "redis", "qdrant", "ollama"], ["n8n"]]
    assert graph.shutdown_order(STACK)[0] == ["n8n"]


def test_cycle_is_named_in_order() -> None:
    assert graph.find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert graph.find_cycle(STACK) is None


def test_closure_and_dependents() -> None:
    assert graph.closure(STACK, ["n8n"]) == {"n8n", "postgres", "redis"}
    assert graph.dependents(STACK, ["redis"]) == {"redis", "n8n"}


def test_critical_path() -> None:
    seconds = {"postgres": 3, "redis": 1, "qdrant": 5, "n8n": 15, "ollama": 1}
    total, chain = graph.critical_path(STACK, seconds)
    assert total == 18 and chain == ["postgres", "n8n"]


@given(st.dictionaries(st.sampled_from("abcdefgh"), st.lists(st.sampled_from("abcdefgh"), max_size=3), max_size=8))
def test_waves_respect_every_edge_when_acyclic(edges: dict[str, list[str]]) -> None:
    edges = {n: [d for d in deps if d in edges] for n, deps in edges.items()}
    if graph.find_cycle(edges):
        return
    level = {n: i for i, wave in enumerate(graph.waves(edges)) for n in wave}
    assert set(level) == set(edges)
    for node, deps in edges.items():
        for dep in deps:
            assert level[dep] < level[node]


def deps(**edges: dict[str, str]) -> dict[str, tuple[Dependency, ...]]:
    return {name: tuple(Dependency(d, Condition(c)) for d, c in on.items()) for name, on in edges.items()}


DEPENDS = deps(postgres={}, redis={}, n8n={"postgres": "healthy", "redis": "healthy"},
               worker={"postgres": "started"}, migrate={"postgres": "healthy"}, api={"migrate": "completed"})
ALL = frozenset(DEPENDS)


def views(**states: str) -> dict[str, View]:
    return {n: View(State(s)) for n, s in states.items()}


def test_roots_start_at_once() -> None:
    current = views(postgres="pending", redis="pending", n8n="pending", worker="pending",
                    migrate="pending", api="pending")
    assert decide(DEPENDS, current, ALL) == [Start("postgres"), Start("redis")]


def test_each_resource_starts_on_its_own_edges_not_a_wave() -> None:
    # postgres has only *started*: worker may go, n8n must wait for healthy.
    current = views(postgres="starting", redis="ready", n8n="pending", worker="pending",
                    migrate="pending", api="pending")
    assert decide(DEPENDS, current, ALL) == [Start("worker")]
    current["postgres"] = View(State.READY)
    assert decide(DEPENDS, current, ALL) == [Start("migrate"), Start("n8n"), Start("worker")]


def test_completed_condition_waits_for_a_zero_exit() -> None:
    current = views(postgres="ready", redis="ready", n8n="ready", worker="ready", migrate="ready", api="pending")
    assert decide(DEPENDS, current, ALL) == []  # still running: may yet complete
    current["migrate"] = View(State.COMPLETED)
    assert decide(DEPENDS, current, ALL) == [Start("api")]


def test_failure_blocks_dependents_with_reason_and_spares_other_branches() -> None:
    current = views(postgres="failed", redis="pending", n8n="pending", worker="pending",
                    migrate="pending", api="pending")
    current["postgres"] = View(State.FAILED, "exited with code 1")
    actions = decide(DEPENDS, current, ALL)
    assert Start("redis") in actions
    assert Block("n8n", "dependency postgres failed: exited with code 1") in actions
    assert Block("worker", "dependency postgres failed: exited with code 1") in actions
    # blocked propagates transitively
    current["migrate"] = View(State.BLOCKED, "blocked: dependency postgres failed: exited with code 1")
    assert any(isinstance(a, Block) and a.name == "api" and "migrate" in a.reason
               for a in decide(DEPENDS, current, ALL))


def test_no_deps_ignores_edges_outside_the_request() -> None:
    current = views(postgres="stopped", redis="stopped", n8n="pending", worker="stopped",
                    migrate="stopped", api="stopped")
    assert decide(DEPENDS, current, frozenset({"n8n"}), ignore_deps=True) == [Start("n8n")]
    assert isinstance(decide(DEPENDS, current, frozenset({"n8n"}))[0], Block)


def test_waiting_for_and_settled() -> None:
    current = views(postgres="starting", redis="ready", n8n="pending", worker="pending",
                    migrate="pending", api="pending")
    assert waiting_for(DEPENDS, current, "n8n") == "waiting for postgres (healthy)"
    assert not up_settled(current, frozenset({"postgres", "redis"}))
    assert up_settled(views(postgres="ready", redis="failed"), frozenset({"postgres", "redis"}))
