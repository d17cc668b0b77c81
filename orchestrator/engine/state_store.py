"""What the supervisor keeps about each resource, and what it writes to the state dir.

`Record` is the supervisor's mutable view of one resource (only `Supervisor.transition`
writes its state). The state files it leaves behind: running.json (what runs, for the next
supervisor to adopt: read back with suspicion in records.py) and last_start.json (the last
start's timeline for `vrooli analyze`). Every state file's name is in paths.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.from_thread
import anyio.to_thread

from orchestrator.engine import records
from orchestrator.errors import VrooliError
from orchestrator.infra import paths
from orchestrator.infra.logger import get_logger
from orchestrator.infra.logs import LogKeeper, OutputLog
from orchestrator.plan.scheduler import State
from orchestrator.runtimes import Adoptable

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from orchestrator.probes import ProbeResult
    from orchestrator.runtimes import Instance, Runtime
    from orchestrator.spec import ProjectSpec, ResourceSpec

log = get_logger("vrooli.supervisor")

NOT_RUNNING = (State.STOPPED, State.FAILED, State.COMPLETED)
MAX_RECORD = 16 << 20  # last_start.json read back to add a warm-up: ours, but bounded all the same
STATE_EVENT_SETTLE = 0.1  # after a deletion is noticed, let an `rm -rf` finish before rebuilding
StateHook = Callable[[], Awaitable[bool]]


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
    last_crash: str = ""  # why the latest attempt of this start crashed before it was ready
    planned_at: datetime | None = None  # when an `up` asked for it: it waited from then until started_at
    # Its models' warm-up after ready: (the started_at it followed, began, ended), for the plot.
    warmup: tuple[datetime | None, datetime, datetime] | None = None
    # Set when it starts: the optional dependencies it started without ("started without
    # cache (optional: failed)"); shown after the message while this start lasts.
    note: str = ""

    @property
    def shown_message(self) -> str:
        if not self.note or self.state in (State.PENDING, State.BLOCKED, State.STOPPING, State.STOPPED):
            return self.message
        return f"{self.message}; {self.note}" if self.message else self.note

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
            "message": self.shown_message,
            "depends_on": {d.name: d.condition.value for d in self.spec.depends_on},
            "profiles": list(self.spec.profiles),
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
        paths.write_private(paths.last_start_file(state_dir), json.dumps(record))
    except OSError as exc:
        log.warning("cannot record the start", error=str(exc))


def plot_fields(rec: Record) -> dict[str, Any]:
    """A last-start row's timing beyond status: when `up` asked for it, its models' warm-up."""
    fields: dict[str, Any] = {"planned_at": rfc3339(rec.planned_at)}
    if rec.warmup is not None and rec.warmup[0] == rec.started_at:
        fields["warmup"] = {"started_at": rfc3339(rec.warmup[1]), "ready_at": rfc3339(rec.warmup[2])}
    return fields


def add_warmup(state_dir: Path, rec: Record) -> None:
    """Add a resource's model warm-up to the record, if its row is of the same start."""
    path = paths.last_start_file(state_dir)
    try:
        with os.fdopen(paths.open_private(path, os.O_RDONLY), "rb") as handle:
            record = json.loads(handle.read(MAX_RECORD))
        rows = [r for r in record["resources"]
                if r.get("name") == rec.spec.name and r.get("started_at") == rfc3339(rec.started_at)]
    except (OSError, VrooliError, ValueError, KeyError, TypeError, AttributeError):
        return  # no record of this start (or not ours to read): the next start writes a new one
    if rows:
        rows[0].update(plot_fields(rec))
        write_last_start(state_dir, record)


class Adopter(Protocol):
    """What adoption needs of the supervisor: where to look, and where to put what it finds."""

    @property
    def project(self) -> ProjectSpec: ...
    @property
    def state_dir(self) -> Path: ...
    @property
    def records(self) -> Mapping[str, Record]: ...
    @property
    def wanted(self) -> set[str]: ...
    @property
    def task_group(self) -> TaskGroup: ...
    def runtime(self, kind: str) -> Runtime: ...
    def output(self, name: str) -> OutputLog: ...


class Adoption:
    """Reads the records a previous supervisor left and takes back, or stops, what they name."""

    def __init__(self, owner: Adopter) -> None:
        self.owner = owner

    async def adopt_leftovers(self) -> None:
        """Take back what a supervisor killed with SIGKILL left running, and only that.

        Records of the wrong shape are reported once, the file is moved aside, and the
        processes they should have named are found by the log file they write to, so a
        corrupt record never makes us start a second copy of a running service.
        """
        found = records.read(self.owner.state_dir)
        if found.problems:
            moved = records.set_aside(self.owner.state_dir)
            log.warning("running.json: records of the wrong shape set aside", problems=list(found.problems),
                        moved_to=str(moved) if moved else None)
        for leftover in found.leftovers:
            await self._adopt_one(leftover.name, leftover.record, leftover.log_start)
        if found.problems or not found.present:  # (a `down` leaves `{}`: no scan on its next `up`)
            await self._adopt_unrecorded({leftover.name for leftover in found.leftovers})

    async def _adopt_one(self, name: str, record: Adoptable, log_start: int) -> None:
        rec = self.owner.records.get(name)
        spec = rec.spec if rec else None
        if spec is None or spec.runtime != record.kind:
            await self._stop_stray(name, record)
            return
        try:
            runtime = self.owner.runtime(spec.runtime)
            instance = await runtime.adopt(spec, record, self.owner.output(name), self.owner.task_group)
        except VrooliError as exc:
            log.warning("cannot adopt", resource=name, error=str(exc))
            return
        if instance is None:
            return
        if record.config_hash != spec.config_hash():
            log.info("stopping a leftover whose config changed", resource=name)
            await instance.stop(spec.stop_signal, spec.stop_timeout)
            return
        log.info("adopted", resource=name, id=instance.ident)
        assert rec is not None
        rec.adopt = instance
        rec.log_start = log_start
        self.owner.wanted.add(name)

    async def _adopt_unrecorded(self, recorded: set[str]) -> None:
        """Processes of ours that no valid record names: each leads its session and writes
        to `logs/NAME.log`. One whose command line is still the declared one is adopted;
        any other (or a second copy) is stopped, so nothing runs twice."""
        writers = await anyio.to_thread.run_sync(records.log_writers, self.owner.state_dir / "logs")
        if not writers:
            return  # the usual case: a project's first start must not wait for psutil's import
        import psutil

        for name, pids in writers.items():
            if name in recorded:
                continue
            spec = self.owner.project.resources.get(name)
            for pid in sorted(pids):
                try:
                    proc = psutil.Process(pid)
                    create_time, command = proc.create_time(), proc.cmdline()
                except psutil.Error:
                    continue
                declared = spec is not None and spec.runtime == "process" and command == list(spec.command)
                config_hash = spec.config_hash() if spec is not None and declared else "unverified"
                record = Adoptable("process", str(pid), create_time, config_hash)
                log.warning("found a process of ours with no record", resource=name, pid=pid)
                if self.owner.records.get(name) is not None and self.owner.records[name].adopt is None and declared:
                    await self._adopt_one(name, record, 0)
                elif spec is not None and spec.runtime == "process":  # stopped the way it asks
                    await self._stop_stray(name, record, spec.stop_signal, spec.stop_timeout)
                else:
                    await self._stop_stray(name, record)

    async def _stop_stray(self, name: str, record: Adoptable, signal_name: str = "SIGTERM",
                          timeout: float = 10.0) -> None:
        """A resource left running that the config no longer declares (or not like this): stop it."""
        if record.kind != "process":
            return  # no other runtime stops a leftover without its spec: none is made to say so
        instance = await self.owner.runtime(record.kind).reclaim(record)
        if instance is not None:
            log.info("stopping a leftover we cannot take back", resource=name, pid=instance.pid)
            await instance.stop(signal_name, timeout)


class StateDirGuard:
    """Keeps the state dir reachable: deleted or replaced (`rm -rf .state`), it is rebuilt in
    place (noticed at once through the log keeper's inotify watch, else at the next check)."""

    def __init__(self, project_of: Callable[[], ProjectSpec], on_rebuilt: Callable[[], None],
                 shutdown: anyio.Event) -> None:
        self._project_of = project_of
        self._on_rebuilt = on_rebuilt  # write running.json again
        self._shutdown = shutdown
        self.sentinels: dict[Path, tuple[int, int] | None] = {}
        self.on_state_lost: list[StateHook] = []
        self.kept_files: dict[str, str] = {}
        self.lost = False
        self._event = anyio.Event()
        self._keeper = LogKeeper(project_of().state_dir, self._logs_to_keep, self._event_from_thread)

    @property
    def state_dir(self) -> Path:
        return self._project_of().state_dir

    def establish(self) -> None:
        """Make the state dir (private) and remember what it is."""
        paths.ensure_state_dir(self.state_dir)
        for kept in (self.state_dir, self.state_dir / "logs"):
            self.sentinels[kept] = paths.identity(kept)

    def keep_file(self, name: str, text: str) -> None:
        self.kept_files[name] = text
        paths.write_private(self.state_dir / name, text)

    def _logs_to_keep(self) -> list[OutputLog]:
        """For the log keeper's thread: read only the (immutable) project, never records."""
        project = self._project_of()
        return [OutputLog(paths.resource_log(project.state_dir, n), s.log_max_size, s.log_max_files)
                for n, s in project.resources.items()]

    def _event_from_thread(self) -> None:
        try:
            anyio.from_thread.run_sync(lambda: self._event.set())
        except RuntimeError:  # the event loop is shutting down
            pass

    async def keep_logs(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._keeper.run, abandon_on_cancel=True)
        finally:
            self._keeper.stop()

    async def check(self, period: float) -> None:
        """Wait up to `period` for news of a deletion; rebuild the dir if it is not intact."""
        with anyio.move_on_after(period):
            await self._event.wait()
        if self._event.is_set():
            self._event = anyio.Event()
            await anyio.sleep(STATE_EVENT_SETTLE)
        if not all(paths.identity(path) == ident for path, ident in self.sentinels.items()):
            await self._rebuild()

    def _give_up(self, why: str, error: str | None = None) -> None:
        """Stop everything, writing nothing more into a state dir that is not ours now."""
        log.error(why, state_dir=str(self.state_dir), error=error)
        self.lost = True
        self._shutdown.set()

    async def _rebuild(self) -> None:
        """Make the project reachable again after its state dir was deleted: the dir, the
        records, and (through `on_state_lost`) the service's lock and control socket. If
        that cannot be done, or another supervisor took the new dir, stop ours cleanly: a
        stack no one can reach or see must not keep running."""
        log.warning("the state dir was deleted or replaced; rebuilding it", state_dir=str(self.state_dir))
        try:
            self.establish()
        except (OSError, VrooliError) as exc:
            self._give_up("cannot rebuild the state dir; stopping everything", str(exc))
            return
        for hook in self.on_state_lost:
            try:
                intact = await hook()
            except (OSError, VrooliError) as exc:
                self._give_up("cannot rebuild the state dir; stopping everything", str(exc))
                return
            if not intact:
                self._give_up("another supervisor runs for this project now; stopping ours")
                return
        for name, text in self.kept_files.items():
            self.keep_file(name, text)
        self._on_rebuilt()
        self._keeper.wake()
        log.info("state dir rebuilt; running processes write to their old, deleted log files "
                 "until they restart")
