"""Pure supervision policy: when to restart, how long to wait, when a resource is unhealthy,
and what a reload changes.

No I/O and no clock of its own: callers pass the time and the random draw, so every rule
is tested without processes, like scheduler.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.spec import ProjectSpec, RestartPolicy


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: `first`, doubling, capped at `ceiling`.

    Jitter spreads restarts of resources that failed together (a shared dependency went
    away) so they do not all come back in the same instant.
    """

    first: float
    ceiling: float
    jitter: float = 0.1

    def delay(self, attempt: int, draw: float = 0.0) -> float:
        """The wait before attempt number `attempt` (1 = the first retry); `draw` in [0, 1)."""
        base = min(self.ceiling, self.first * 2.0 ** max(0, attempt - 1))
        return base * (1.0 + self.jitter * draw)


def within_burst(recent: Iterable[float], now: float, burst: int, window: float) -> tuple[float, ...] | None:
    """The restart times kept after one more restart now, or None when the burst limit is hit.

    Like systemd's StartLimitBurst/StartLimitIntervalSec: more than `burst` restarts
    within `window` seconds and the resource is given up on.
    """
    kept = tuple(t for t in recent if now - t <= window)
    if len(kept) >= burst:
        return None
    return (*kept, now)


def should_restart(policy: RestartPolicy, reason: str, exit_code: int | None) -> bool:
    """Whether a resource that stopped for `reason` ("exit" or "unhealthy") comes back."""
    if policy is RestartPolicy.ALWAYS:
        return True
    if policy is RestartPolicy.ON_FAILURE:
        return reason == "unhealthy" or exit_code != 0
    return False


def liveness_step(failures: int, ok: bool, threshold: int) -> tuple[int, bool]:
    """One liveness check: (failures in a row now, whether that makes the resource unhealthy)."""
    if ok:
        return 0, False
    failures += 1
    return failures, failures >= threshold


@dataclass(frozen=True)
class ReloadPlan:
    """What a new declaration changes in a running stack; everything else is left alone."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    restart_now: tuple[str, ...]  # running and changed, or following a changed dependency

    def as_dict(self) -> dict[str, list[str]]:
        return {"added": list(self.added), "removed": list(self.removed),
                "restarted": sorted(self.restart_now), "changed": sorted(self.changed)}


def plan_reload(old: ProjectSpec, new: ProjectSpec, running: frozenset[str]) -> ReloadPlan:
    """Old project + new project + what runs now -> what to stop, restart and start."""
    added = tuple(n for n in new.resources if n not in old.resources)
    removed = tuple(n for n in old.resources if n not in new.resources)
    changed = tuple(n for n in new.resources if n in old.resources
                    and new.resources[n].config_hash() != old.resources[n].config_hash())
    running_changed = [n for n in changed if n in running]
    # Dependents that asked to follow a changed dependency (restart = true).
    followers = [n for n, spec in new.resources.items() if n not in changed and n in running
                 and any(d.restart and d.name in running_changed for d in spec.depends_on)]
    return ReloadPlan(added, removed, changed, (*running_changed, *followers))
