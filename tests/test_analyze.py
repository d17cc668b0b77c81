"""`vrooli analyze`: the critical chain follows what actually gated each start."""

from __future__ import annotations

from orchestrator.analyze import critical_chain, render, timeline


def row(name: str, start: float, ready: float, **deps: str) -> dict[str, object]:
    stamp = lambda s: f"2026-01-01T00:00:{s:09.6f}Z"  # noqa: E731
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

    from orchestrator.analyze import cold_start

    invoked = datetime.fromisoformat("2026-01-01T00:00:09.850000+00:00").timestamp()
    marks = {"invoked_at": invoked, "supervisor_at": invoked + 0.09}
    assert cold_start(ROWS, marks) == {"supervisor_running": 0.09, "first_start": 0.15}
    assert "the supervisor ran 0.090s and the first resource started 0.150s after `vrooli up`" in render(ROWS, marks)
    assert cold_start(ROWS, None) is None  # `up` on a running supervisor: nothing to show
    assert "cold start" not in render(ROWS)
