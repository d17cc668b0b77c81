"""One resource's life: prepare, start, readiness probing, hooks, liveness, restart, stop.

`Lifecycle.run` is the task the supervisor starts for a resource when the scheduler says
so; it carries that resource through starts, probes, its post_start hook, ready gates, the
watch after ready and the restart policy (policy.py) until it stops (pre_stop first), fails
or completes. hooks.py runs the hooks; what their outcome means is decided here. It never writes a state
itself: every change goes to its owner (the supervisor, through `Owner`), which holds the
records, so watchers see each one. Owner is a protocol: this module imports nothing above it.

`Lifecycle` is over the ~300-line class guide (~380): start, probe, hook, gate, watch and
restart share the per-start state of one resource.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from orchestrator.errors import VrooliError
from orchestrator.infra.logger import get_logger
from orchestrator.plan.policy import Backoff, liveness_step, should_restart, within_burst
from orchestrator.plan.scheduler import State
from orchestrator.probes import Probe, ProbeContext, ProbeResult, make_probe, run_once, until_ready
from orchestrator.runtimes import EXIT_UNKNOWN, killed_by
from orchestrator.spec import ResourceSpec, RestartPolicy

if TYPE_CHECKING:
    from orchestrator.engine.memory import MemoryMonitor
    from orchestrator.engine.state_store import Record
    from orchestrator.infra.logs import OutputLog
    from orchestrator.runtimes import Instance, Runtime

log = get_logger("vrooli.supervisor")

# What a stop signal gets at least when a pre_stop hook used up stop_timeout (as Kubernetes
# gives a one-time 2 s after an overrunning preStop): a hung hook never turns a stop into an
# immediate SIGKILL.
STOP_GRACE_FLOOR = 2.0
# Lines of the log read back for a crash's "last output", so a hook's lines after the
# resource's own do not hide them.
HOOK_LINES_SKIPPED = 20
# How long a stop waits to learn whether the instance has already exited (then no pre_stop).
EXITED_CHECK = 0.02

# A ready gate: awaited after the probe passes and before READY (eager model loading is
# one). It reports what it waits for through the callback, and returns None once passed,
# or why the start fails.
ReadyGate = Callable[[ResourceSpec, Callable[[str], None]], Awaitable[str | None]]


class Started(Enum):
    """How one start of a resource ended."""

    READY = "ready"
    FAILED = "failed"  # the state says why (or it completed)
    CRASHED = "crashed"  # exited before it was ready: the restart policy decides
    HOOK_FAILED = "hook failed"  # post_start failed (rec.last_crash says how): as a crash


class Owner(Protocol):
    """What a lifecycle needs of the supervisor that owns the records."""

    @property
    def memory(self) -> MemoryMonitor: ...
    @property
    def ready_gates(self) -> Mapping[str, Sequence[ReadyGate]]: ...
    @property
    def task_group(self) -> TaskGroup: ...
    def change(self, rec: Record, state: State, message: str = "", **fields: Any) -> None: ...
    def persist(self) -> None: ...
    def notify_changed(self) -> None: ...
    def output(self, name: str) -> OutputLog: ...
    def runtime(self, kind: str) -> Runtime: ...
    async def restart_followers(self, rec: Record) -> None: ...


class Lifecycle:
    """Runs each resource's starts for one supervisor (one task per running resource)."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner


    async def run(self, rec: Record) -> None:
        """The task of one start of `rec`, from the scheduler's decision to its stop."""
        try:
            with anyio.CancelScope() as scope:
                rec.scope = scope
                if rec.stop_requested:
                    scope.cancel()
                await self._supervise(rec)
        finally:
            with anyio.CancelScope(shield=True):
                if rec.instance is not None:  # cancelled while it ran: stop it, in order
                    grace = None
                    if rec.state not in (State.FAILED, State.COMPLETED):
                        self.owner.change(rec, State.STOPPING, "stopping")
                        if rec.stop_requested:  # down, restart, reload, shutdown: not a failed start
                            grace = await self._pre_stop(rec)
                    await self._stop_instance(rec, grace)
                    rec.instance = None
                    if rec.state is State.STOPPING:
                        self.owner.change(rec, State.STOPPED, "")
                    else:
                        self.owner.persist()
                elif rec.stop_requested and rec.state not in (State.FAILED, State.COMPLETED):
                    self.owner.change(rec, State.STOPPED, "")
                rec.scope = None
                rec.running_task = False
                rec.stop_requested = False
                rec.done.set()
                self.owner.notify_changed()

    async def _pre_stop(self, rec: Record) -> float | None:
        """Run the pre_stop hook of a live instance, within stop_timeout; a failure is logged
        and the stop goes on. Returns what is left of stop_timeout for the stop signal (None:
        all of it; no hook ran)."""
        spec, instance = rec.spec, rec.instance
        assert instance is not None
        if not spec.pre_stop:
            return None
        with anyio.move_on_after(EXITED_CHECK):
            await instance.wait()
            return None  # it died on its own: nothing to prepare for the stop
        self.owner.change(rec, State.STOPPING, "pre_stop running")
        from orchestrator.engine.hooks import PRE_STOP, run_hook  # only a resource with hooks needs their module

        outcome = await run_hook(spec, PRE_STOP, instance, self.owner.output(spec.name), spec.stop_timeout)
        if not outcome.ok:
            log.warning("pre_stop failed; stopping anyway", resource=spec.name, reason=outcome.reason)
        self.owner.change(rec, State.STOPPING, "stopping")
        return max(spec.stop_timeout - outcome.seconds, min(STOP_GRACE_FLOOR, spec.stop_timeout))

    async def _stop_instance(self, rec: Record, grace: float | None = None) -> None:
        """Stop the instance: the stop signal, `grace` (stop_timeout unless a pre_stop hook
        used part of it) to end, then SIGKILL."""
        assert rec.instance is not None
        started = time.monotonic()
        try:
            await rec.instance.stop(rec.spec.stop_signal, rec.spec.stop_timeout if grace is None else grace)
        except VrooliError as exc:
            log.warning("stop failed", resource=rec.spec.name, error=str(exc))
        self.owner.memory.note_stopped(rec)
        log.info("resource stop finished", resource=rec.spec.name,
                 seconds=round(time.monotonic() - started, 4))

    async def _supervise(self, rec: Record) -> None:
        spec = rec.spec
        while True:
            ready = await self._start_until_ready(rec)
            if not ready:
                return
            reason, code = await self._watch(rec)
            rec.exit_code = code
            restart = should_restart(spec.restart, reason, code)
            if reason == "exit" and rec.instance is not None:
                await self._stop_instance(rec)  # leftovers of its process group
                rec.instance = None
            if not restart:
                if reason == "exit" and code == 0:
                    self.owner.change(rec, State.COMPLETED, "exited with code 0")
                else:
                    self.owner.change(rec, State.FAILED, self._exit_message(rec, code, reason))
                return
            if not await self._back_off(rec, self._exit_message(rec, code, reason)):
                return

    async def _start_until_ready(self, rec: Record) -> bool:
        """Start until ready. A crash before ready follows `restart` like any other
        (backoff, burst limit), within one `start_timeout` for all the attempts; the
        resource stays starting meanwhile, so its dependents wait instead of being blocked.
        `restart = "no"` fails at the first crash."""
        spec = rec.spec
        deadline = time.monotonic() + spec.start_timeout
        rec.last_crash = ""
        while True:
            started = await self._start_once(rec, deadline)
            if started in (Started.READY, Started.FAILED):
                return started is Started.READY
            if started is Started.HOOK_FAILED:
                why = rec.last_crash
            else:
                why = self._exit_message(rec, rec.exit_code, "exit") + " before it was ready"
            rec.last_crash = why
            if spec.restart is RestartPolicy.NO:
                self.owner.change(rec, State.FAILED, why)
                return False
            if not await self._back_off(rec, why, deadline):
                return False

    async def _back_off(self, rec: Record, why: str, deadline: float | None = None) -> bool:
        """Wait out the backoff before a restart; False (and failed) once the burst limit or
        the start deadline leaves no room for another try."""
        spec = rec.spec
        delay = self._next_backoff(rec)
        if delay is None:
            self.owner.change(rec, State.FAILED,
                      f"restarted {spec.restart_burst} times within {spec.restart_window:g}s; giving up ({why})")
            return False
        if deadline is not None and time.monotonic() + delay >= deadline:
            self.owner.change(rec, State.FAILED, f"not ready after {spec.start_timeout:g}s: {why}")
            return False
        if rec.instance is not None:
            await self._stop_instance(rec)
            rec.instance = None
        self.owner.change(rec, State.STARTING, f"{why}; restarting in {delay:.2f}s")
        await self.owner.restart_followers(rec)
        await anyio.sleep(delay)
        rec.restarts += 1
        return True

    def _next_backoff(self, rec: Record) -> float | None:
        """Exponential backoff with jitter, or None when the burst limit is reached."""
        spec = rec.spec
        kept = within_burst(rec.restart_times, time.monotonic(), spec.restart_burst, spec.restart_window)
        if kept is None:
            return None
        rec.restart_times = kept
        return Backoff(spec.restart_delay, spec.restart_max_delay).delay(len(kept), random.random())  # noqa: S311

    def _exit_message(self, rec: Record, code: int | None, reason: str) -> str:
        verdict = self.owner.memory.verdict(rec)  # the memory limit ended it: the kernel or the watchdog
        if verdict is not None:
            return verdict
        if reason == "unhealthy":
            return f"unhealthy: {rec.last_probe.message if rec.last_probe else 'probe failed'}"
        if code is None or code == EXIT_UNKNOWN:
            text = "exited"
        elif code < 0:
            text = killed_by(-code)
        else:
            text = f"exited with code {code}"
        from orchestrator.engine.hooks import is_hook_line

        last = self.owner.output(rec.spec.name).tail(HOOK_LINES_SKIPPED) if code != 0 else []
        last = [line for line in last if not is_hook_line(line)][-1:]  # the resource's own, not its hook's
        return f"{text}; last output: {last[0][:200]}" if last else text

    async def _start_once(self, rec: Record, deadline: float) -> Started:
        """One start, probed until ready, `deadline` or an exit. CRASHED leaves the state
        to the caller (rec.exit_code says how it ended), and so does HOOK_FAILED (rec.last_crash
        says why); every other outcome sets it."""
        adopted = rec.adopt is not None
        instance = await self._launch(rec)
        if instance is None:
            return Started.FAILED
        spec = rec.spec
        if spec.health is None:
            hooked = await self._post_start(rec, instance, deadline, adopted)
            if hooked is not None:
                return hooked
            self._mark_ready(rec)
            return Started.READY
        # Made in a worker thread: the first probe of a kind imports its checker (probes/kinds.py:
        # psutil for exec, regex for log, ssl for http; tens of ms), which must not stall the
        # event loop while other resources are starting and probing.
        probe = await anyio.to_thread.run_sync(
            make_probe, spec.health,
            ProbeContext(log=self.owner.output(spec.name), exec_inside=instance.exec_inside, log_start=rec.log_start))
        try:
            outcome = await self._probe_until_ready(rec, instance, probe, deadline)
            if outcome == "exit" and rec.exit_code == 0:
                # A one-shot whose probe passes one last check (its line is in the log)
                # has completed; one that exited 0 before it was ever ready has not. A fresh
                # probe: a check cut short by the exit may have read past the line already.
                outcome = "completed" if await self._passes_once(rec, instance) else "exit"
        finally:
            with anyio.CancelScope(shield=True):
                await probe.aclose()
        if outcome == "ready":
            hooked = await self._post_start(rec, instance, deadline, adopted)
            return hooked if hooked is not None else await self._pass_gates_then_ready(rec)
        last = rec.last_probe.message if rec.last_probe else "no probe result"
        if rec.last_crash:  # the deadline fell in a retry: why the earlier attempts failed matters most
            last = f"{rec.last_crash} ({rec.restarts} restarts; the last attempt: {last})"
        await self._stop_instance(rec)
        rec.instance = None
        if outcome == "completed":
            self.owner.change(rec, State.COMPLETED, "exited with code 0")
        elif outcome == "exit":
            return Started.CRASHED
        else:
            self.owner.change(rec, State.FAILED, f"not ready after {spec.start_timeout:g}s: {last}")
        return Started.FAILED

    async def _post_start(self, rec: Record, instance: Instance, deadline: float, adopted: bool) -> Started | None:
        """The post_start hook, between the probe and READY, within what is left of
        start_timeout; None once it exited 0 (or there is none to run). Not for an adopted
        instance: its hook ran when that instance started. A failure stops the instance
        (HOOK_FAILED); so does the instance exiting while the hook runs (CRASHED)."""
        spec = rec.spec
        if not spec.post_start or adopted:
            return None
        self.owner.change(rec, State.STARTING, "post_start running")
        from orchestrator.engine.hooks import POST_START, run_hook  # only a resource with hooks needs their module

        ended: dict[str, Any] = {}

        async def hook(tg: TaskGroup) -> None:
            ended["hook"] = await run_hook(spec, POST_START, instance, self.owner.output(spec.name),
                                           max(0.0, deadline - time.monotonic()))
            tg.cancel_scope.cancel()

        async def watch_exit(tg: TaskGroup) -> None:
            ended["exit"] = await instance.wait()
            if ended["exit"] != 0:  # a one-shot that exited 0 lets its hook finish, then completes
                tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(hook, tg)
            tg.start_soon(watch_exit, tg)
        outcome = ended.get("hook")
        if outcome is not None and outcome.ok:
            return None  # an exit 0 meanwhile is the watch's to see: completed
        await self._stop_instance(rec)
        rec.instance = None
        if outcome is None:  # the resource itself ended while its hook ran
            rec.exit_code = ended["exit"]
            return Started.CRASHED
        rec.last_crash = outcome.reason
        return Started.HOOK_FAILED

    async def _passes_once(self, rec: Record, instance: Instance) -> bool:
        assert rec.spec.health is not None
        probe = make_probe(rec.spec.health, ProbeContext(log=self.owner.output(rec.spec.name),
                                                         exec_inside=instance.exec_inside, log_start=rec.log_start))
        try:
            return (await run_once(probe, rec.spec.health.timeout)).ok
        finally:
            with anyio.CancelScope(shield=True):
                await probe.aclose()

    async def _launch(self, rec: Record) -> Instance | None:
        """Start (or take back) the resource's instance; None, and failed, if it cannot start."""
        spec = rec.spec
        output = self.owner.output(spec.name)
        if rec.adopt is None:
            rec.log_start = output.size()
        rec.started_mono = time.monotonic()
        rec.exit_code = None
        rec.last_probe = None
        self.owner.change(rec, State.STARTING, "starting", started_at=datetime.now(UTC), ready_at=None,
                  startup_seconds=None, spawn_failed=False)
        if rec.adopt is not None:
            instance, rec.adopt = rec.adopt, None
        else:
            def report(message: str) -> None:
                rec.message = message
                self.owner.persist()  # a daemon the instance now follows has a new pid to record
                self.owner.notify_changed()

            try:
                instance = await self.owner.runtime(spec.runtime).start(spec, output, self.owner.task_group, report)
            except VrooliError as exc:
                self.owner.change(rec, State.FAILED, str(exc), spawn_failed=True)
                return None
        rec.instance = instance
        waiting_for = spec.health.describe() if spec.health else "nothing"
        self.owner.change(rec, State.STARTING, "started; waiting for " + waiting_for)
        return instance

    async def _probe_until_ready(self, rec: Record, instance: Instance, probe: Probe, deadline: float) -> str:
        """"ready", "exit" (rec.exit_code set) or "timeout", whichever comes first."""
        assert rec.spec.health is not None
        health = rec.spec.health
        outcome: dict[str, Any] = {}

        def on_result(result: ProbeResult) -> None:
            rec.last_probe = result
            if not result.ok and rec.message != result.message:
                rec.message = result.message
                self.owner.notify_changed()

        async def watch_exit(tg: TaskGroup) -> None:
            outcome["exit"] = await instance.wait()
            tg.cancel_scope.cancel()

        async def watch_probe(tg: TaskGroup) -> None:
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                await until_ready(probe, health, on_result)
                outcome["ready"] = True
            tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_exit, tg)
            tg.start_soon(watch_probe, tg)
        if outcome.get("ready"):
            return "ready"
        if "exit" in outcome:
            rec.exit_code = outcome["exit"]
            return "exit"
        return "timeout"

    async def _pass_gates_then_ready(self, rec: Record) -> Started:
        """Probed ready; the gates registered for it (eager models) hold READY back until
        they pass. A gate that fails fails the start, with its reason."""
        for gate in self.owner.ready_gates.get(rec.spec.name, ()):
            def report(message: str) -> None:
                self.owner.change(rec, State.STARTING, message)

            failure = await gate(rec.spec, report)
            if failure is not None:
                self.owner.change(rec, State.FAILED, failure)
                return Started.FAILED
        self._mark_ready(rec)
        return Started.READY

    def _mark_ready(self, rec: Record) -> None:
        assert rec.started_mono is not None
        rec.startup_seconds = time.monotonic() - rec.started_mono
        self.owner.change(rec, State.READY, rec.last_probe.message if rec.last_probe else "",
                  ready_at=datetime.now(UTC))

    async def _watch(self, rec: Record) -> tuple[str, int | None]:
        """After ready: wait for an exit, probing liveness on the slower period."""
        assert rec.instance is not None
        instance, spec = rec.instance, rec.spec
        outcome: dict[str, Any] = {}

        async def watch_exit(tg: TaskGroup) -> None:
            outcome["exit"] = await instance.wait()
            tg.cancel_scope.cancel()

        async def memory_recycle(tg: TaskGroup, requested: anyio.Event) -> None:
            await requested.wait()
            outcome["memory"] = True
            tg.cancel_scope.cancel()

        async def liveness(tg: TaskGroup) -> None:
            assert spec.health is not None
            probe = make_probe(spec.health, ProbeContext(log=self.owner.output(spec.name),
                                                         exec_inside=instance.exec_inside,
                                                         log_start=0))
            failures = 0
            try:
                while True:
                    await anyio.sleep(spec.health.liveness_interval)
                    result = await run_once(probe, spec.health.timeout)
                    rec.last_probe = result
                    failures, unhealthy = liveness_step(failures, result.ok, spec.health.failure_threshold)
                    if result.ok:
                        if rec.state is State.UNHEALTHY:
                            self.owner.change(rec, State.READY, result.message)
                        continue
                    if unhealthy and rec.state is State.READY:
                        self.owner.change(rec, State.UNHEALTHY,
                                  f"{failures} probes failed in a row: {result.message}")
                        # An external resource is not ours to restart: it stays `unhealthy`
                        # (dependents see it) until its probe passes again.
                        if spec.restart is not RestartPolicy.NO and spec.runtime != "external":
                            outcome["unhealthy"] = True
                            tg.cancel_scope.cancel()
                            return
            finally:
                with anyio.CancelScope(shield=True):
                    await probe.aclose()

        rec.memory_recycle = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_exit, tg)
                tg.start_soon(memory_recycle, tg, rec.memory_recycle)
                if spec.health is not None and spec.health.kind != "log":
                    tg.start_soon(liveness, tg)
        finally:
            rec.memory_recycle = None
        if "exit" in outcome:
            return "exit", outcome["exit"]
        return ("memory" if "memory" in outcome else "unhealthy"), None
