"""`vrooli analyze`: the critical chain follows what actually gated each start."""

from __future__ import annotations

import json

from orchestrator.plan.analyze import critical_chain, render, timeline
from tests.conftest import Project


def row(name: str, start: float, ready: float, **deps: str) -> dict[str, object]:
    def stamp(s: float) -> str:
        return f"2026-01-01T00:00:{s:09.6f}Z"
    return {"name": name, "state": "ready", "started_at": stamp(start), "ready_at": stamp(ready),
            "startup_seconds": ready - start, "depends_on": deps}


ROWS = [
    row("postgres", 10.0, 13.0),
    row("redis", 10.0, 11.0),
    row("qdrant", 10.0, 15.0),
    row("n8n", 13.01, 28.0, postgres="healthy", redis="healthy"),
    row("ollama", 10.0, 11.0),
]


def test_chain_goes_through_the_dependency_that_was_ready_last() -> None:
    assert [c["name"] for c in critical_chain(ROWS)] == ["n8n", "postgres"]


def test_started_edges_gate_on_the_dependency_start() -> None:
    rows = [row("postgres", 10.0, 13.0), row("n8n", 10.01, 25.0, postgres="started")]
    assert [c["name"] for c in critical_chain(rows)] == ["n8n", "postgres"]
    assert timeline(rows)[1]["start"] == 0.01


def test_render_shows_offsets() -> None:
    text = render(ROWS)
    assert "critical chain: 18.000s" in text
    assert "n8n @18.000s +14.990s" in text
    assert "└─postgres @3.000s +3.000s" in text


def test_cold_start_phases_are_measured_from_the_command() -> None:
    from datetime import datetime

    from orchestrator.plan.analyze import cold_start

    invoked = datetime.fromisoformat("2026-01-01T00:00:09.850000+00:00").timestamp()
    marks = {"invoked_at": invoked, "supervisor_at": invoked + 0.09}
    assert cold_start(ROWS, marks) == {"supervisor_running": 0.09, "first_start": 0.15}
    assert "the supervisor ran 0.090s and the first resource started 0.150s after `vrooli up`" in render(ROWS, marks)
    assert cold_start(ROWS, None) is None  # `up` on a running supervisor: nothing to show
    assert "cold start" not in render(ROWS)


def test_chain_through_a_started_dependency_that_never_became_ready() -> None:
    # `cache` gated `app` by its start (condition "started") and has no ready time.
    rows = [row("cache", 10.0, 10.0) | {"state": "starting", "ready_at": None, "startup_seconds": None},
            row("app", 10.2, 12.0, cache="started")]
    assert [c["name"] for c in critical_chain(rows)] == ["app", "cache"]
    text = render(rows)
    assert "app @2.000s +1.800s" in text
    assert "└─cache started @0.000s (not ready: starting)" in text


def test_a_cycle_in_a_hand_edited_record_ends_the_chain() -> None:
    rows = [row("a", 10.0, 11.0, b="healthy"), row("b", 10.0, 10.5, a="healthy")]
    assert [c["name"] for c in critical_chain(rows)] == ["a", "b"]


def test_analyze_command_on_a_started_chain_and_on_a_malformed_record(project: Project) -> None:
    project.write("""
        [resources.cache]
        command = ["sleep", "1000"]
        health = { probe = "log", pattern = "never printed" }
        start_timeout = "1s"
        [resources.app]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        depends_on = { cache = "started" }
        health = { probe = "log", pattern = "ready" }
    """)
    assert project.run("up").returncode == 1  # cache is never ready; app started after its start
    done = project.run("analyze")
    assert done.returncode == 0, done.stderr
    assert "└─cache started @" in done.stdout and "(not ready: failed)" in done.stdout
    assert json.loads(project.run("analyze", "--json").stdout)["critical_chain"] == ["app", "cache"]
    record = project.state_dir / "last_start.json"
    for broken in ('{"resources": 7}', '{"resources": [{"name": "a", "state": "ready", "started_at": "yesterday"}]}',
                   json.dumps({"resources": [{"name": "a", "state": "ready", "started_at": "2026-01-01T00:00:00Z",
                                               "ready_at": "2026-01-01T00:00:01Z", "depends_on": ["b"]}]}),
                   '{"resources": [{"name": "a", "state": "ready", "started_at": 5, "ready_at": 6}]}'):
        record.write_text(broken)
        for args in (("analyze",), ("analyze", "--json")):
            done = project.run(*args)
            assert done.returncode == 1, (broken, done.stderr)
            assert "Traceback" not in done.stderr
            assert "not a start record vrooli can read" in (done.stderr + done.stdout)
