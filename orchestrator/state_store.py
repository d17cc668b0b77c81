"""What the supervisor keeps about each resource, and what it writes to the state dir.

`Record` is the supervisor's mutable view of one resource (only `Supervisor.transition`
writes its state). The state files it leaves behind: running.json (what runs, for the next
supervisor to adopt: read back with suspicion in records.py) and last_start.json (the last
start's timeline for `vrooli analyze`). Every state file's name is in paths.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from orchestrator import paths, records
from orchestrator.errors import VrooliError
from orchestrator.exposure import write_private
from orchestrator.scheduler import State

if TYPE_CHECKING:
    from orchestrator.probes import ProbeResult
    from orchestrator.runtimes import Adoptable, Instance
    from orchestrator.spec import ResourceSpec

log = structlog.get_logger("vrooli.supervisor")

NOT_RUNNING = (State.STOPPED, State.FAILED, State.COMPLETED)


def rfc3339(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z") if moment else None


@dataclass
class Record:
    """The supervisor's mutable view of one resource."""

    spec: ResourceSpec
    state: State = State.PENDING
    message: str = ""
    instance: Instance | None = None
    started_at: datetime | None = None
    ready_at: datetime | None = None
    started_mono: float | None = None
    startup_seconds: float | None = None
    restarts: int = 0
    restart_times: tuple[float, ...] = ()  # recent restarts, for the burst limit
    exit_code: int | None = None
    last_probe: ProbeResult | None = None
    scope: anyio.CancelScope | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    running_task: bool = False
    adopt: Instance | None = None  # an instance to take back instead of starting one
    log_start: int = 0  # where this start's output begins in the log file
    stop_requested: bool = False
    prepared: bool = False  # the runtime made it ready to start (a created container)
    spawn_failed: bool = False  # its last start failed before anything ran (the runtime refused)
    memory_recycle: anyio.Event | None = None  # set while watched after ready: the watchdog ends it

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "runtime": self.spec.runtime,
            "state": self.state.value,
            "pid": self.instance.pid if self.instance else None,
            "id": self.instance.ident if self.instance else None,
            "started_at": rfc3339(self.started_at),
            "ready_at": rfc3339(self.ready_at),
            "startup_seconds": round(self.startup_seconds, 6) if self.startup_seconds is not None else None,
            "restarts": self.restarts,
            "exit_code": self.exit_code,
            "message": self.message,
            "depends_on": {d.name: d.condition.value for d in self.spec.depends_on},
            "ports": [p.host_port for p in self.spec.ports],
            "probe": self.spec.health.describe() if self.spec.health else None,
            "probe_seconds": round(self.last_probe.duration, 6) if self.last_probe else None,
        }


def vars_of(adoptable: Adoptable) -> dict[str, Any]:
    return {"kind": adoptable.kind, "ident": adoptable.ident,
            "create_time": adoptable.create_time, "config_hash": adoptable.config_hash}


class RunningFile:
    """running.json, written only when the set of running instances changes."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._written: dict[str, Any] | None = None

    def forget(self) -> None:
        """Write it at the next chance even if nothing changed (the state dir was rebuilt)."""
        self._written = None

    def write(self, recs: dict[str, Record], state_dir_lost: bool) -> None:
        running = {n: {**vars_of(r.instance.adoptable()), "log_start": r.log_start}
                   for n, r in recs.items() if r.instance is not None and r.state not in NOT_RUNNING}
        if running == self._written or state_dir_lost:
            return
        self._written = running
        try:
            records.write(self.state_dir, running)  # 0600, a fresh file renamed into place
        except (OSError, VrooliError) as exc:
            self._written = None  # try again with the next change
            log.warning("cannot record running resources", error=str(exc))


def write_last_start(state_dir: Path, record: dict[str, Any]) -> None:
    """Keep the last start's timeline for `vrooli analyze`, even after `down`."""
    try:
        write_private(paths.last_start_file(state_dir), json.dumps(record))
    except OSError as exc:
        log.warning("cannot record the start", error=str(exc))
