"""The pure supervision rules: restart decision, backoff, burst limit, liveness, reload plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import config
from orchestrator.plan.policy import Backoff, liveness_step, plan_reload, should_restart, within_burst
from orchestrator.spec import ProjectSpec, RestartPolicy


def test_backoff_doubles_from_the_first_delay_up_to_the_ceiling() -> None:
    backoff = Backoff(0.5, 3.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_adds_at_most_its_share() -> None:
    backoff = Backoff(1.0, 30.0, jitter=0.1)
    assert backoff.delay(2, draw=0.0) == 2.0
    assert backoff.delay(2, draw=0.999) == pytest.approx(2.1998)


def test_burst_limit_counts_restarts_within_the_window_only() -> None:
    times: tuple[float, ...] | None = ()
    for now in (0.0, 1.0, 2.0):
        assert times is not None
        times = within_burst(times, now, burst=3, window=10.0)
    assert times == (0.0, 1.0, 2.0)
    assert within_burst(times, 3.0, burst=3, window=10.0) is None
    # Once the first restart is older than the window, there is room again.
    assert within_burst(times, 10.5, burst=3, window=10.0) == (1.0, 2.0, 10.5)


@pytest.mark.parametrize(("policy", "reason", "code", "expected"), [
    (RestartPolicy.NO, "exit", 1, False),
    (RestartPolicy.NO, "unhealthy", None, False),
    (RestartPolicy.ON_FAILURE, "exit", 0, False),
    (RestartPolicy.ON_FAILURE, "exit", 1, True),
    (RestartPolicy.ON_FAILURE, "exit", -9, True),
    (RestartPolicy.ON_FAILURE, "unhealthy", None, True),
    (RestartPolicy.ALWAYS, "exit", 0, True),
])
def test_restart_decision(policy: RestartPolicy, reason: str, code: int | None, expected: bool) -> None:
    assert should_restart(policy, reason, code) is expected


def test_liveness_needs_threshold_failures_in_a_row() -> None:
    failures, verdicts = 0, []
    for ok in (False, False, True, False, False, False):
        failures, unhealthy = liveness_step(failures, ok, threshold=3)
        verdicts.append(unhealthy)
    assert verdicts == [False, False, False, False, False, True]


def project(tmp_path: Path, body: str) -> ProjectSpec:
    path = tmp_path / "resources.toml"
    path.write_text(f'[project]\nname = "p"\nstate_dir = "state"\n{body}')
    return config.load([path], {})


def test_reload_plan_moves_only_the_difference(tmp_path: Path) -> None:
    old = project(tmp_path, """
        [resources.db]
        command = ["sh", "-c", "sleep 100"]
        [resources.app]
        command = ["sh", "-c", "sleep 100"]
        depends_on = { db = { condition = "started", restart = true } }
        [resources.web]
        command = ["sh", "-c", "sleep 100"]
        depends_on = { db = "started" }
        [resources.old]
        command = ["sh", "-c", "sleep 100"]
    """)
    new = project(tmp_path, """
        [resources.db]
        command = ["sh", "-c", "sleep 200"]
        [resources.app]
        command = ["sh", "-c", "sleep 100"]
        depends_on = { db = { condition = "started", restart = true } }
        [resources.web]
        command = ["sh", "-c", "sleep 100"]
        depends_on = { db = "started" }
        [resources.fresh]
        command = ["sh", "-c", "sleep 100"]
    """)
    plan = plan_reload(old, new, frozenset({"db", "app", "web", "old"}))
    assert plan.added == ("fresh",)
    assert plan.removed == ("old",)
    assert plan.changed == ("db",)
    # app follows its changed dependency (restart = true); web does not ask to.
    assert plan.restart_now == ("db", "app")
    # A changed resource that is not running is not restarted, and nobody follows it.
    idle = plan_reload(old, new, frozenset({"app", "web"}))
    assert idle.changed == ("db",) and idle.restart_now == ()
