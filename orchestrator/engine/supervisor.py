"""The supervisor: the one owner of the records, the commands, and the change feed.

Every state write goes through `transition` (logged, told to `on_transition`); `change`
adds what follows one: the scheduler is asked again at once (a dependent starts the
moment its dependency is ready), watchers (the CLI, systemd notify, the health endpoint)
are woken, and the adoption record on disk stays current.

Its neighbours: lifecycle.py runs each resource's starts (it changes state only through
this owner), state_store.py keeps the state dir and what is written to it (running.json,
adoption, last_start.json), policy.py decides restarts, backoff, liveness and the reload plan.

Over the ~450-line module guide: it is one class (see `Supervisor` for why that is one piece).
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from orchestrator.engine import state_store
from orchestrator.engine.lifecycle import Lifecycle, ReadyGate
from orchestrator.engine.state_store import Adoption, Record, RunningFile, StateDirGuard, write_last_start
from orchestrator.errors import VrooliError
from orchestrator.infra import paths
from orchestrator.infra.exposure import public_rows
from orchestrator.infra.logger import get_logger
from orchestrator.infra.logs import OutputLog
from orchestrator.plan import graph, scheduler
from orchestrator.plan.policy import plan_reload
from orchestrator.plan.scheduler import State, View
from orchestrator.runtimes import Runtime, runtime_for
from orchestrator.spec import ProjectSpec

if TYPE_CHECKING:  # both imported when first needed: a cold start spawns its first resource sooner
    from orchestrator.engine.memory import MemoryMonitor
    from orchestrator.engine.models import ModelManager

log = get_logger("vrooli.supervisor")

RuntimeFactory = Callable[[str, ProjectSpec], Runtime]
HOUSEKEEPING_PERIOD = 0.5  # heartbeat, and how often the state dir is checked to be intact


class Supervisor:
    """The records and the commands on them (up, stop, restart, reload) and their change feed.

    Bigger than the ~300-line guide (~420): its public surface (the attributes and methods
    service.py, models.py, health.py and sd_notify.py use) is kept as it was; what it does
    beyond owning the records (one resource's life, the state dir, adoption, the rules)
    lives in lifecycle.py, state_store.py and policy.py.
    """

    def __init__(self, project: ProjectSpec, runtime_factory: RuntimeFactory = runtime_for) -> None:
        self.project = project
        self._runtime_factory = runtime_factory
        self._runtimes: dict[str, Runtime] = {}
        self.records: dict[str, Record] = {n: Record(s) for n, s in project.resources.items()}
        self.wanted: set[str] = set()
        self.no_deps = False
        self.profiles: frozenset[str] = frozenset()  # of the latest `up`
        self._tg: TaskGroup | None = None
        self._change = anyio.Event()
        self.version = 0
        self.started_at = datetime.now(UTC)
        self.loop_heartbeat = time.monotonic()
        self.shutdown_requested = anyio.Event()
        self.on_change: list[Callable[[], None]] = []
        # Every state change of every resource, as (name, before, after): metrics and
        # tests see each one, even those a batch (one scheduler pass) wakes watchers for once.
        self.on_transition: list[Callable[[str, State, State], None]] = []
        self.models: dict[str, ModelManager] = {}
        self._lifecycle = Lifecycle(self)
        # Gates a resource passes between its probe and READY (eager models register one).
        self.ready_gates: dict[str, list[ReadyGate]] = {}
        self._running_file = RunningFile(project.state_dir)
        self._persist_scheduled = False
        self._guard = StateDirGuard(lambda: self.project, self._state_dir_rebuilt, self.shutdown_requested)
        # What must stay where it is for the project to remain reachable: path -> (dev, inode).
        # The service adds its control socket and lock; `on_state_lost` hooks rebuild them.
        self.sentinels = self._guard.sentinels
        self.on_state_lost = self._guard.on_state_lost
        self.kept_files = self._guard.kept_files  # state files to write again if the dir is rebuilt
        # When the `vrooli up` that forked this supervisor began, and when the supervisor
        # ran (epoch seconds): what a cold start cost before the first resource started.
        self.cold_start: dict[str, float] | None = None

    def __repr__(self) -> str:
        states = ", ".join(f"{n}={r.state.value}" for n, r in self.records.items())
        return f"<Supervisor {self.project.name}: {states}>"

    # ------------------------------------------------------------------ plumbing

    @property
    def state_dir(self) -> Path:
        return self.project.state_dir

    def output(self, name: str) -> OutputLog:
        spec = self.project.resources.get(name)
        if spec is None:
            return OutputLog(paths.resource_log(self.state_dir, name))
        return OutputLog(paths.resource_log(self.state_dir, name), spec.log_max_size, spec.log_max_files)

    def keep_file(self, name: str, text: str) -> None:
        """Write a state file (0600, by rename) and write it again if the state dir is rebuilt."""
        self._guard.keep_file(name, text)

    @property
    def state_dir_lost(self) -> bool:
        """Not ours any more (someone else's, or another supervisor's): nothing more is written."""
        return self._guard.lost

    def runtime(self, kind: str) -> Runtime:
        if kind not in self._runtimes:
            self._runtimes[kind] = self._runtime_factory(kind, self.project)
        return self._runtimes[kind]

    def views(self) -> dict[str, View]:
        return {n: View(r.state, r.message) for n, r in self.records.items()}

    def depends(self) -> dict[str, tuple[Any, ...]]:
        return {n: r.spec.depends_on for n, r in self.records.items()}

    def edges(self) -> dict[str, list[str]]:
        return {n: list(r.spec.dependency_names) for n, r in self.records.items()}

    async def wait_change(self, since: int | None = None) -> None:
        """Wait for the next change; with `since`, return at once if one happened after it.

        Callers that yield between checking a condition and waiting (to send a progress
        line, say) pass the version they checked, so no change is ever missed.
        """
        if since is not None and since != self.version:
            return
        await self._change.wait()

    def notify_changed(self) -> None:
        """For collaborators (model loading) whose progress should reach watchers."""
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        event, self._change = self._change, anyio.Event()
        event.set()
        for callback in list(self.on_change):
            callback()

    def transition(self, rec: Record, state: State, message: str = "", **fields: Any) -> None:
        """The one place a resource's state is written: logged, and told to `on_transition`.

        Callers that change several records at once (the scheduler's pass, a stop, a
        reload) write through here and then wake watchers once; everyone else uses `_set`.
        """
        previous = rec.state
        rec.state = state
        rec.message = message
        for key, value in fields.items():
            setattr(rec, key, value)
        if previous != state:
            # A failure is an error (journalctl -p err shows it); blocked or unhealthy may pass.
            event_log = log.error if state is State.FAILED else \
                log.warning if state in (State.BLOCKED, State.UNHEALTHY) else log.info
            extra: dict[str, Any] = {}
            if state is State.READY and rec.startup_seconds is not None:
                extra["startup_seconds"] = round(rec.startup_seconds, 4)
            event_log("resource " + state.value, resource=rec.spec.name, reason=message or None, **extra)
            for callback in list(self.on_transition):
                callback(rec.spec.name, previous, state)

    def change(self, rec: Record, state: State, message: str = "", **fields: Any) -> None:
        """A transition, then everything that follows one: the record on disk, the
        scheduler's next pass, and the watchers."""
        self.transition(rec, state, message, **fields)
        self.persist()
        self._reconcile()
        self._changed()

    def set_state(self, name: str, state: State, message: str = "") -> None:
        """For collaborators (the service keeping a failure's reason after an undone start)."""
        self.change(self.records[name], state, message)

    def _reconcile(self) -> None:
        """Ask the scheduler what to do now, and do it (start tasks, mark blocked)."""
        if self._tg is None:
            return
        while True:
            actions = scheduler.decide(self.depends(), self.views(), frozenset(self.wanted), self.no_deps,
                                       self.left_out())
            if not actions:
                self._prepare_waiting()
                return
            for action in actions:
                rec = self.records[action.name]
                if isinstance(action, scheduler.Block):
                    self.transition(rec, State.BLOCKED, action.reason)
                else:
                    if action.without:
                        log.info("starting without optional dependencies", resource=action.name,
                                 without=list(action.without))
                    self.transition(rec, State.STARTING, "starting", prepared=False, started_at=datetime.now(UTC),
                                    ready_at=None, startup_seconds=None, done=anyio.Event(), running_task=True,
                                    note=action.note)
                    self._tg.start_soon(self._lifecycle.run, rec, name=f"resource {action.name}")

    def left_out(self) -> dict[str, str]:
        """Why each resource that is not wanted is not (what a dependent's note says)."""
        return {n: scheduler.left_out_reason(r.spec, self.profiles) for n, r in self.records.items()
                if n not in self.wanted}

    def _prepare_waiting(self) -> None:
        """Let runtimes prepare resources that wait for dependencies (create containers)."""
        assert self._tg is not None
        for name in self.wanted:
            rec = self.records[name]
            if rec.state is State.PENDING and not rec.prepared and not rec.running_task:
                rec.prepared = True
                self._tg.start_soon(self._prepare, rec, name=f"prepare {name}")

    async def _prepare(self, rec: Record) -> None:
        try:
            await self.runtime(rec.spec.runtime).prepare(rec.spec)
        except VrooliError as exc:
            # Not fatal: starting will try again and report the problem properly.
            log.debug("prepare failed", resource=rec.spec.name, error=str(exc))

    def persist(self) -> None:
        """Record what runs, so a supervisor killed with SIGKILL can adopt it on restart.

        Coalesced to one write per event-loop pass: ten resources starting in the same
        moment are one write, not ten (with a hundred resources the per-start writes of a
        growing file were half the scheduling cost). The window this adds is one pass,
        the same kind as the one between a spawn and its record.
        """
        if self._persist_scheduled:
            return
        if self._tg is None:
            self._write_running()
            return
        self._persist_scheduled = True
        self._tg.start_soon(self._persist_soon, name="persist running.json")

    async def _persist_soon(self) -> None:
        try:
            await anyio.lowlevel.checkpoint()  # let this pass's other changes land first
        finally:
            self._persist_scheduled = False
            self._write_running()

    def _write_running(self) -> None:
        self._running_file.write(self.records, self.state_dir_lost)

    # ------------------------------------------------------------------ main loop

    @functools.cached_property
    def memory(self) -> MemoryMonitor:
        from orchestrator.engine.memory import MemoryMonitor

        return MemoryMonitor(self)

    async def _watch_memory(self) -> None:
        # Its module is imported in a worker thread, as the health endpoint's is: the event
        # loop goes on to a cold start's first spawn meanwhile, which waits for no import it
        # does not need.
        await anyio.to_thread.run_sync(importlib.import_module, "orchestrator.engine.memory")
        await self.memory.run()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until `shutdown_requested`; then stop everything in reverse order."""
        self._guard.establish()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            if any(rec.spec.models is not None for rec in self.records.values()):
                from orchestrator.engine.models import managers_for

                self.models = managers_for(self)
            for name, manager in self.models.items():
                self.ready_gates.setdefault(name, []).append(manager.ready_gate)
                await tg.start(manager.run)
            await self._adopt_leftovers()
            tg.start_soon(self._housekeeping)
            tg.start_soon(self._guard.keep_logs)
            tg.start_soon(self._watch_memory)
            task_status.started()
            await self.shutdown_requested.wait()
            await self.stop(list(self.records), remove_wanted=True)
            await self.cleanup_runtimes(remove_volumes=False, every_kind=False)
            tg.cancel_scope.cancel()
        self._tg = None
        self._write_running()  # a write still scheduled was cancelled with the task group

    async def _housekeeping(self) -> None:
        """The loop's heartbeat, and a state dir that stays reachable (StateDirGuard)."""
        while True:
            self.loop_heartbeat = time.monotonic()
            await self._guard.check(HOUSEKEEPING_PERIOD)

    def _state_dir_rebuilt(self) -> None:
        self._running_file.forget()
        self._write_running()

    def release_runtimes(self) -> None:
        """Let go of the runtimes' connections (the Docker engine's) once nothing runs."""
        for rt in self._runtimes.values():
            _close(rt)
        self._runtimes.clear()

    def _keep_runtimes(self, project: ProjectSpec) -> None:
        """For a new declaration: keep the runtime of each kind its resources still use, and
        close and let go of the others (nothing runs on them: a resource that went, or changed
        kind, was stopped already). Under a new project name the kept ones are let go too, not
        closed: they are made again with the new name (the Docker runtime names containers,
        network and volumes after the project), and what still runs keeps using the old one."""
        kinds = {r.runtime for r in project.resources.values()}
        for kind in list(self._runtimes):
            if kind not in kinds:
                _close(self._runtimes.pop(kind))
            elif project.name != self.project.name:
                del self._runtimes[kind]

    async def cleanup_runtimes(self, remove_volumes: bool, *, every_kind: bool = True) -> None:
        """Remove what the runtimes keep for the project (containers, network; volumes if
        asked): of every kind its resources use (`down`), or only of the runtimes this
        session created (shutdown). A failure is logged: nothing is left running by it."""
        kinds = sorted({r.runtime for r in self.project.resources.values()}) if every_kind else list(self._runtimes)
        for kind in kinds:
            try:
                await self.runtime(kind).cleanup(self.project, remove_volumes)
            except VrooliError as exc:
                log.warning("cleanup failed", runtime=kind, error=str(exc))

    async def _adopt_leftovers(self) -> None:
        """Take back what a supervisor killed with SIGKILL left running (state_store.py)."""
        await Adoption(self).adopt_leftovers()
        self._reconcile()
        self._changed()

    @property
    def task_group(self) -> TaskGroup:
        assert self._tg is not None, "supervisor is not running"
        return self._tg

    # ------------------------------------------------------------------ commands

    def selection(self, names: Iterable[str] | None, no_deps: bool,
                  profiles: Iterable[str] = ()) -> tuple[list[str], set[str]]:
        """What `up NAMES` means (scheduler.select): the named (or all enabled, active)
        resources, plus, unless `no_deps`, what they depend on. Returns (roots, selected)."""
        names = list(names or ())
        for name in names:
            if name not in self.records:
                raise VrooliError(f"unknown resource '{name}'")
        chosen = scheduler.select(self.project.resources, names, no_deps, profiles)
        return list(chosen.roots), set(chosen.selected)

    def request_up(self, names: Iterable[str] | None = None, no_deps: bool = False,
                   profiles: Iterable[str] | None = None) -> frozenset[str]:
        """Mark resources wanted; failed/blocked/stopped ones get another chance. What an
        earlier `up` made wanted stays wanted (a plain `up` after `up --profile ai` stops nothing).
        `profiles` None (a restart): those of the latest `up` stay active."""
        if profiles is not None:
            self.profiles = frozenset(profiles)
        _, selected = self.selection(names, no_deps, self.profiles)
        self.no_deps = no_deps
        for name in selected:
            rec = self.records[name]
            if rec.state in (State.FAILED, State.BLOCKED, State.STOPPED) and not rec.running_task:
                self.transition(rec, State.PENDING, "", restart_times=())
            if rec.state is State.PENDING and (name not in self.wanted or rec.planned_at is None):
                rec.planned_at = datetime.now(UTC)
            self.wanted.add(name)
        self._reconcile()
        self._changed()
        return frozenset(selected)

    def settled(self, names: Iterable[str]) -> bool:
        return scheduler.up_settled(self.views(), frozenset(names))

    async def wait_settled(self, names: Iterable[str]) -> None:
        names = list(names)
        while True:
            version = self.version
            if self.settled(names):
                return
            await self.wait_change(since=version)

    async def stop(self, names: Iterable[str], remove_wanted: bool = True) -> list[str]:
        """Stop `names` and whatever depends on them, dependents first, branches in parallel."""
        edges = self.edges()
        targets = graph.dependents(edges, names)
        targets = {n for n in targets if n in self.records}
        if remove_wanted:
            self.wanted -= targets
        discard = []
        for name in targets:  # nothing new may start among them while we stop
            rec = self.records[name]
            if rec.state in (State.PENDING, State.BLOCKED) and not rec.running_task:
                self.transition(rec, State.STOPPED, "")
            if rec.prepared and not rec.running_task:
                discard.append(rec)
        reverse: dict[str, set[str]] = {n: set() for n in targets}
        for name in targets:
            for dep in edges[name]:
                if dep in reverse:
                    reverse[dep].add(name)
        finished = {n: anyio.Event() for n in targets}

        async def stop_one(name: str) -> None:
            for dependent in reverse[name]:
                await finished[dependent].wait()
            await self._stop_resource(self.records[name])
            finished[name].set()

        async def discard_one(rec: Record) -> None:
            rec.prepared = False
            try:
                await self.runtime(rec.spec.runtime).discard(rec.spec)
            except VrooliError as exc:
                log.warning("cannot discard a prepared resource", resource=rec.spec.name, error=str(exc))

        async with anyio.create_task_group() as tg:
            for name in targets:
                tg.start_soon(stop_one, name)
            for rec in discard:
                tg.start_soon(discard_one, rec)
        self._changed()
        return sorted(targets)

    async def _stop_resource(self, rec: Record) -> None:
        if rec.running_task and rec.scope is not None:
            rec.stop_requested = True
            rec.scope.cancel()
            await rec.done.wait()
        elif rec.running_task:
            # The task is scheduled but has not entered its scope yet.
            rec.stop_requested = True
            await rec.done.wait()
        elif rec.state not in (State.STOPPED, State.COMPLETED):
            self.change(rec, State.STOPPED)

    async def restart(self, names: Iterable[str]) -> frozenset[str]:
        names = list(names)
        stopped = await self.stop(names, remove_wanted=False)
        for name in stopped:
            self.transition(self.records[name], State.PENDING, "")
        return self.request_up(stopped, no_deps=True)

    async def apply_config(self, project: ProjectSpec) -> dict[str, list[str]]:
        """Make the running stack match a new declaration; only the difference moves."""
        running = frozenset(n for n, r in self.records.items() if r.running_task)
        plan = plan_reload(self.project, project, running)
        removed, restart_now = list(plan.removed), list(plan.restart_now)
        if removed:
            await self.stop(removed)
        if restart_now:
            await self.stop(restart_now, remove_wanted=False)
        self._keep_runtimes(project)
        self.project = project
        for name in removed:
            del self.records[name]
        for name, spec in project.resources.items():
            if name in self.records:
                rec = self.records[name]
                rec.spec = spec
                if name in restart_now and rec.state is State.STOPPED:
                    self.transition(rec, State.PENDING, rec.message)
            else:
                self.records[name] = Record(spec)
        self.wanted &= set(self.records)
        for name, manager in self.models.items():
            if name in project.resources and project.resources[name].models is not None:
                manager.spec = project.resources[name].models  # type: ignore[assignment]
        self._reconcile()
        self._changed()
        return plan.as_dict()

    # ------------------------------------------------------------------ one resource

    async def restart_followers(self, rec: Record) -> None:
        """Stop the running dependents that asked to follow `rec` (restart = true); the
        scheduler starts them again once it is ready."""
        followers = [r.spec.name for r in self.records.values()
                     if r.running_task and any(d.restart and d.name == rec.spec.name for d in r.spec.depends_on)]
        if followers:
            log.info("restarting dependents with their dependency", resource=rec.spec.name,
                     dependents=followers)
            await self.stop(followers, remove_wanted=False)
            for name in followers:
                follower = self.records[name]
                self.transition(follower, State.PENDING, follower.message)
            self._reconcile()

    def recycle_for_memory(self, rec: Record) -> bool:
        """The watchdog found it over memory_limit for memory_grace: end this instance.

        `_watch` returns "memory"; the restart policy, backoff and burst limit then apply
        as to a crash, and the watchdog's verdict is the message. False: not being watched.
        """
        if rec.memory_recycle is None or rec.memory_recycle.is_set():
            return False
        rec.memory_recycle.set()
        return True

    # ------------------------------------------------------------------ reporting

    def snapshot(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        chosen = list(names) if names else list(self.records)
        views, depends = self.views(), self.depends()
        rows = []
        for name in chosen:
            rec = self.records.get(name)
            if rec is None:
                continue
            row = rec.to_json()
            if rec.state is State.PENDING and name in self.wanted:
                row["message"] = scheduler.waiting_for(depends, views, name) or rec.message
            elif name not in self.wanted and rec.state in (State.PENDING, State.STOPPED) \
                    and not scheduler.is_active(rec.spec, self.profiles):
                row["message"] = row["message"] or scheduler.inactive_text(rec.spec)
            row["enabled"] = rec.spec.enabled
            row.update(self.memory.resource(name).fields())
            row["wanted"] = name in self.wanted
            rows.append(row)
        return rows

    def record_start(self, names: Iterable[str]) -> None:
        """Keep the last start's timeline for `vrooli analyze`, even after `down`."""
        # The file outlives the run and the owner may share it: no output lines or secrets.
        rows = public_rows(self.snapshot(sorted(set(names) | set(self.wanted))), self.project.resources)
        for row in rows:  # when each was asked for, and its models' warm-up (`analyze --plot`)
            row.update(state_store.plot_fields(self.records[row["name"]]))
        record: dict[str, Any] = {"project": self.project.name, "resources": rows,
                                  "recorded_at": state_store.rfc3339(datetime.now(UTC))}
        if self.cold_start is not None:  # only the start that this supervisor was forked for
            record["cold_start"], self.cold_start = self.cold_start, None
        write_last_start(self.state_dir, record)

    def record_warmup(self, name: str, began: datetime, ended: datetime) -> None:
        """Add a resource's model warm-up to the last start's record, when it followed that start."""
        rec = self.records[name]
        rec.warmup = (rec.started_at, began, ended)
        state_store.add_warmup(self.state_dir, rec)


def _close(runtime: Runtime) -> None:
    """Close what a runtime holds open (the Docker runtime: its engine client), if anything."""
    close = getattr(runtime, "close", None)
    if close is not None:
        close()
