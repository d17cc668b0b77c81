"""The supervisor process: one per project, owning the resources and the control socket.

It runs detached (spawned by `vrooli up`), attached to a terminal (`up --foreground`), or
under systemd (`vrooli daemon`). The modes differ only in what reports progress.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from orchestrator import config, control, ops, paths
from orchestrator.endpoint import HealthEndpoint, open_health_endpoint
from orchestrator.errors import EXIT_FAILED, EXIT_OK, VrooliError, check_names
from orchestrator.fdlimits import raise_nofile_limit, where_raised
from orchestrator.scheduler import SETTLED_OK, State
from orchestrator.spec import ProjectSpec
from orchestrator.supervisor import Supervisor

log = structlog.get_logger("vrooli.service")
HEALTH_DEFER_MAX = 1.0  # seconds the health endpoint may hold requests while the stack starts


@dataclass
class Options:
    files: list[Path]
    mode: str = "detached"  # detached | foreground | daemon
    names: list[str] = field(default_factory=list)
    no_deps: bool = False
    health_listen: str | None = None  # overrides [project].health_listen
    environ: dict[str, str] | None = None
    up_at_start: bool = False  # detached: start `names` before any client asks
    invoked_at: float | None = None  # epoch seconds the `vrooli up` that forked us began


class SupervisorLock:
    """An flock held for the supervisor's whole life: two supervisors never share a project.

    The file is opened without following symlinks and created 0600 for us alone. If the
    state dir is deleted under us, `acquire` again takes a lock on the new file, unless a
    new supervisor was quicker (then that one owns the project).
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = paths.lock_file(state_dir)
        self._fd = -1

    def acquire(self) -> None:
        fd = paths.open_private(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise VrooliError(f"a supervisor is already running for this project (pid {owner})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.release()
        self._fd = fd

    def still_ours(self) -> bool:
        """Is the lock file at its path the one we hold (not deleted, not another's)?"""
        if self._fd < 0:
            return False
        held = os.fstat(self._fd)
        return paths.identity(self.path) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def run(options: Options) -> int:
    raise_nofile_limit()  # before any listener: a burst of connections must not reach the limit
    project = config.load(options.files, options.environ)
    paths.ensure_state_dir(project.state_dir)
    lock = SupervisorLock(project.state_dir)
    lock.acquire()
    endpoint = HealthEndpoint(None, None, None, None)
    try:
        paths.write_private(paths.pid_file(project.state_dir), str(os.getpid()))
        endpoint = open_health_endpoint(project, options.health_listen, options.mode)
        return anyio.run(_main, project, options, endpoint, lock)
    finally:
        endpoint.close()
        if lock.still_ours():  # never remove what a supervisor that replaced us made
            for leftover in (paths.control_socket(project.state_dir), project.state_dir / "health.addr",
                             paths.pid_file(project.state_dir)):
                try:
                    leftover.unlink()
                except FileNotFoundError:
                    pass
        lock.release()


class ControlEndpoint:
    """The control socket, which can be bound again when its file was deleted."""

    def __init__(self, tg: TaskGroup, path: Path, handler: control.Handler) -> None:
        self._tg, self.path, self._handler = tg, path, handler

    async def start(self) -> None:
        # The previous listener (if any) keeps serving the clients it accepted; its
        # deleted socket file accepts no new ones.
        await self._tg.start(control.serve, self.path, self._handler)


def _state_rebuilder(sup: Supervisor, lock: SupervisorLock, endpoint: ControlEndpoint,
                     options: Options) -> Callable[[], Awaitable[bool]]:
    """What the service must redo when its state dir was deleted (see Supervisor)."""
    state_dir = sup.state_dir

    async def rebuild() -> bool:
        if not lock.still_ours():
            if paths.identity(lock.path) is not None:
                return False  # another supervisor has run here since: it may have adopted ours
            try:
                lock.acquire()
            except VrooliError:
                return False
            sup.sentinels[lock.path] = paths.identity(lock.path)
        paths.write_private(paths.pid_file(state_dir), str(os.getpid()))
        if paths.identity(endpoint.path) != sup.sentinels.get(endpoint.path):
            paths.control_socket(state_dir)  # a socket dir of its own is checked and made again
            await endpoint.start()
            sup.sentinels[endpoint.path] = paths.identity(endpoint.path)
        if options.mode == "detached":  # our stdout and stderr were the deleted supervisor.log
            fd = paths.open_private(paths.supervisor_log(state_dir), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        return True

    return rebuild


async def _main(project: ProjectSpec, options: Options, endpoint: HealthEndpoint,
                lock: SupervisorLock | None = None) -> int:
    sup = Supervisor(project)
    if options.invoked_at is not None:
        sup.cold_start = {"invoked_at": options.invoked_at, "supervisor_at": time.time()}
    exit_code = 0
    extras: list[Callable[[Supervisor, Handlers], Coroutine[Any, Any, None]]] = []
    if options.mode == "daemon":
        from orchestrator.notify import systemd_reporter
        extras.append(systemd_reporter)

    async with anyio.create_task_group() as tg:
        async def run_supervisor(*, task_status: Any) -> None:
            await sup.run(task_status=task_status)
            tg.cancel_scope.cancel()

        await tg.start(run_supervisor)
        handler = Handlers(sup, options, endpoint)
        if options.up_at_start:
            await handler.start_unasked()
        control_endpoint = ControlEndpoint(tg, paths.control_socket(project.state_dir), handler.handle)
        await control_endpoint.start()
        if lock is not None:
            sup.sentinels[lock.path] = paths.identity(lock.path)
            sup.sentinels[control_endpoint.path] = paths.identity(control_endpoint.path)
            sup.on_state_lost.append(_state_rebuilder(sup, lock, control_endpoint, options))
        if endpoint.address is not None:
            sup.kept_files["health.addr"] = endpoint.address  # written again if the state dir is rebuilt
        if endpoint.sock is not None:
            # Not awaited: resources and the control socket must not wait for its imports.
            tg.start_soon(_health, sup, endpoint.sock)
        tg.start_soon(_signals, sup, handler)
        for extra in extras:
            tg.start_soon(extra, sup, handler)
        log.info("supervisor started", project=project.name, pid=os.getpid(), mode=options.mode)
        if options.mode in ("foreground", "daemon"):
            selected = sup.request_up(options.names or None, options.no_deps)
            if options.mode == "foreground":
                tg.start_soon(_foreground_progress, sup, selected)
            else:
                tg.start_soon(_record_when_settled, sup, selected)
    if options.mode == "foreground":
        failed = [r for r in sup.records.values() if r.state.value in ("failed", "blocked")]
        exit_code = 1 if failed else 0
    log.info("supervisor stopped", project=project.name)
    return exit_code


async def _health(sup: Supervisor, sock: socket.socket) -> None:
    """The endpoint, isolated: nothing that goes wrong in it reaches the supervisor's task group."""
    try:
        # Answering needs the endpoint's modules: CPU the resources starting right now need
        # more. The socket already listens, so a monitor's request waits in the backlog, at
        # most HEALTH_DEFER_MAX, instead of being refused. The import runs in a worker
        # thread so the event loop keeps probing and answering the control socket meanwhile.
        with anyio.move_on_after(HEALTH_DEFER_MAX):
            await sup.wait_settled(set(sup.wanted))
        await anyio.to_thread.run_sync(_import_health)
        from orchestrator.health import run_endpoint

        log.info("health endpoint answering", listen=_address_of(sock))
        await run_endpoint(sup, sock)
    except Exception as exc:
        log.error("health endpoint failed; it stays down (resources are unaffected)",
                  error=repr(exc)[:300], where=where_raised(exc))
    sock.close()  # down for good: refuse connections rather than let them queue unanswered


def _address_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def _import_health() -> None:
    import orchestrator.health  # noqa: F401  (h11 and the endpoint's own modules)


async def _foreground_progress(sup: Supervisor, selected: frozenset[str]) -> None:
    from orchestrator.progress import Progress

    progress = Progress(sys.stdout)
    started = time.monotonic()
    while True:
        version = sup.version
        if sup.settled(selected):
            break
        progress.update(sup.snapshot(sorted(selected)))
        with anyio.move_on_after(0.1):
            await sup.wait_change(since=version)
    progress.update(sup.snapshot(sorted(selected)))
    sup.record_start(selected)
    rows = sup.snapshot(sorted(selected))
    ok = sum(1 for r in rows if r["state"] in ("ready", "completed"))
    print(f"{ok}/{len(rows)} ready in {time.monotonic() - started:.2f}s; Ctrl-C stops everything",
          flush=True)


async def _record_when_settled(sup: Supervisor, selected: frozenset[str]) -> None:
    await sup.wait_settled(selected)
    sup.record_start(selected)


async def _signals(sup: Supervisor, handler: Handlers) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("reloading on SIGHUP")
                try:
                    await handler.reload({})
                except VrooliError:
                    pass  # logged by reload; the running stack is unchanged
            else:
                log.info("shutting down", signal=signal.Signals(signum).name)
                sup.shutdown_requested.set()


Reply = Callable[[dict[str, Any]], Awaitable[None]]


class Handlers:
    """One method per control-API operation."""

    def __init__(self, sup: Supervisor, options: Options, endpoint: HealthEndpoint | None = None) -> None:
        self.sup = sup
        self.options = options
        self.endpoint = endpoint or HealthEndpoint(None, None, None, None)
        self.on_reload: list[Callable[[str, dict[str, Any]], Awaitable[None]]] = []
        # What a detached supervisor started for the `up` that forked it, before that `up`
        # connected: the first `up` request owns it (and undoes it if it fails at start).
        self._started_unasked: set[str] = set()

    async def start_unasked(self) -> None:
        """Start what the forking `up` asks for without waiting for it to connect (a round
        trip saved), after the same checks as a client's `up`: nothing half-started."""
        names, no_deps = self.options.names or None, self.options.no_deps
        try:
            await self._preflight(names, no_deps)
        except VrooliError as exc:
            log.warning("not starting before the client asks", error=str(exc))
            return
        before = set(self.sup.wanted)
        self.sup.request_up(names, no_deps)
        self._started_unasked = set(self.sup.wanted) - before

    async def handle(self, request: dict[str, Any], reply: Reply) -> None:
        problem = ops.problem_with(request)  # every op's shape, checked in one place
        if problem is not None:
            await reply(control.bad_request(problem))
            return
        method = getattr(self, f"op_{request['op']}")
        try:
            await method(request, reply)
        except VrooliError as exc:
            await reply(exc.reply())

    async def op_ping(self, request: dict[str, Any], reply: Reply) -> None:
        # The files let a client whose own copy is broken check that this is its project.
        await reply({"ok": True, "pid": os.getpid(), "project": self.sup.project.name,
                     "mode": self.options.mode, "files": [str(f) for f in self.sup.project.files]})

    async def op_status(self, request: dict[str, Any], reply: Reply) -> None:
        names = request.get("names") or None
        self._check_names(names)
        extra = await self._extra_status()  # first: it samples the memory the rows show
        await reply({"ok": True, "project": self.sup.project.name, "supervisor_pid": os.getpid(),
                     "mode": self.options.mode, "resources": self.sup.snapshot(names), "extra": extra})

    async def _extra_status(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"health_endpoint": self.endpoint.status(),
                                 "stack_memory": (await self.sup.memory.sample()).to_json()}
        if self.sup.models:
            extra["models"] = [m.summary() for m in self.sup.models.values()]
        return extra

    async def op_models(self, request: dict[str, Any], reply: Reply) -> None:
        """list | pull | ensure | unload, for the resource that declares models."""
        from orchestrator.models import ModelError

        self._check_names([request["resource"]] if request.get("resource") else [])
        if not self.sup.models:
            raise VrooliError("no resource declares models (add models = [...] to the ollama resource)")
        resource = request.get("resource") or next(iter(self.sup.models))
        manager = self.sup.models.get(resource)
        if manager is None:
            raise VrooliError(f"resource '{resource}' declares no models")
        action = request.get("action", "list")
        names = request.get("names") or list(manager.spec.names)
        if action == "list":
            try:
                await manager.refresh()
            except ModelError as exc:
                raise VrooliError(str(exc)) from None
            await reply({"ok": True, "exit_code": EXIT_OK, **manager.summary()})
            return
        if action not in ("pull", "ensure", "unload"):
            raise VrooliError(f"unknown models action {action!r} (list, pull, ensure, unload)")
        errors: list[str] = []

        async def one(name: str) -> None:
            try:
                if action == "unload":
                    await manager.unload(name)
                else:
                    await manager.ensure(name, load=action == "ensure")
            except ModelError as exc:
                errors.append(f"{name}: {exc}")

        async def progress() -> None:
            while True:
                version = self.sup.version
                await reply({"event": "models", **manager.summary()})
                await self.sup.wait_change(since=version)
                await anyio.sleep(0.1)  # at most ~10 progress lines a second

        async with anyio.create_task_group() as outer:
            outer.start_soon(progress)
            async with anyio.create_task_group() as work:
                for name in names:
                    work.start_soon(one, name)
            outer.cancel_scope.cancel()
        summary = manager.summary()
        await reply({"ok": not errors, "errors": errors, "exit_code": EXIT_FAILED if errors else EXIT_OK, **summary})

    def _check_names(self, names: list[str] | None) -> None:
        check_names(self.sup.records, names or [])

    async def _load(self, request: dict[str, Any]) -> ProjectSpec:
        files = [Path(f) for f in request.get("files") or [str(f) for f in self.sup.project.files]]
        environ = request.get("environ")
        new = await anyio.to_thread.run_sync(config.load, files, environ)
        if new.state_dir != self.sup.project.state_dir:
            raise VrooliError(f"state_dir changed to {new.state_dir}; run `vrooli down` first")
        return new

    async def op_up(self, request: dict[str, Any], reply: Reply) -> None:
        """Start, stream progress, answer. An `up` that fails at start (a check, or a
        resource that cannot even be spawned) undoes what it started and leaves no idle
        detached supervisor behind: the user is back where they were, with the reason."""
        names = request.get("names") or None
        no_deps = bool(request.get("no_deps"))
        before = set(self.sup.wanted) - self._started_unasked
        self._started_unasked = set()
        try:
            if request.get("files"):
                project = await self._load(request)
                check_names(project.resources, names or [])
                changes = await self.sup.apply_config(project)
                if changes["restarted"] or changes["added"] or changes["removed"]:
                    await reply({"event": "config", **changes})
            self._check_names(names)
            await self._preflight(names, no_deps)
        except VrooliError as exc:
            await self._undo_start(before, keep=set())
            await reply(exc.reply())
            self._end_if_idle()
            return
        selected = self.sup.request_up(names, no_deps)
        await self._stream_until_settled(sorted(selected), reply, undo_from=before)

    def _failed_to_spawn(self, names: list[str]) -> list[str]:
        return [n for n in names if n in self.sup.wanted and self.sup.records[n].spawn_failed
                and self.sup.records[n].state is State.FAILED]

    async def _undo_start(self, before: set[str], keep: set[str]) -> list[str]:
        """Stop what became wanted since `before`; `keep` (the failures) stay failed, with
        their reasons, though stopping their dependencies passes over them."""
        started = sorted((self.sup.wanted - before) - keep)
        if not started:
            return []
        reasons = {n: self.sup.records[n].message for n in keep}
        stopped = await self.sup.stop(started)
        for name, reason in reasons.items():
            rec = self.sup.records[name]
            if rec.state is State.STOPPED:
                rec.state, rec.message = State.FAILED, reason
        self.sup.notify_changed()
        return [n for n in stopped if n not in keep]

    def _end_if_idle(self) -> None:
        """A detached supervisor with nothing running after a failed `up` ends itself."""
        if self.options.mode != "detached":
            return
        if not any(r.running_task or r.instance is not None for r in self.sup.records.values()):
            log.info("nothing runs after a failed up; the supervisor ends")
            self.sup.shutdown_requested.set()

    async def _preflight(self, names: list[str] | None, no_deps: bool) -> None:
        """Every runtime the request needs must work before anything starts (no half-started stack)."""
        _, selected = self.sup.selection(names, no_deps)
        for kind in sorted({self.sup.records[n].spec.runtime for n in selected}):
            await self.sup.runtime(kind).preflight()

    async def _stream_until_settled(self, selected: list[str], reply: Reply,
                                    undo_from: set[str] | None = None) -> None:
        """Progress lines until `selected` settle. With `undo_from` (an `up`): a resource that
        cannot be spawned fails the whole start, and what it started since then is stopped."""
        while True:
            version = self.sup.version
            failed = self._failed_to_spawn(selected) if undo_from is not None else []
            if failed:
                assert undo_from is not None
                await self._abort_start(selected, failed, undo_from, reply)
                return
            if self.sup.settled(selected):
                break
            await reply({"event": "progress", "resources": self.sup.snapshot(selected)})
            await self.sup.wait_change(since=version)
        rows = self.sup.snapshot(selected)
        self.sup.record_start(selected)
        ok = all(r["state"] in {s.value for s in SETTLED_OK} for r in rows)
        await reply({"ok": ok, "done": True, "resources": rows, "exit_code": EXIT_OK if ok else EXIT_FAILED})

    async def _abort_start(self, selected: list[str], failed: list[str], before: set[str], reply: Reply) -> None:
        log.warning("up failed at start; stopping what it started", failed=failed)
        stopped = await self._undo_start(before, keep=set(failed))
        self.sup.wanted -= set(failed)
        rows = self.sup.snapshot(selected)
        self.sup.record_start(selected)
        await reply({"ok": False, "done": True, "resources": rows, "exit_code": EXIT_FAILED,
                     "aborted": {"failed": failed, "stopped": stopped}})
        self._end_if_idle()

    async def op_down(self, request: dict[str, Any], reply: Reply) -> None:
        names = request.get("names") or None
        self._check_names(names)
        stopped = await self.sup.stop(names or list(self.sup.records))
        if not names:
            for kind in sorted({r.runtime for r in self.sup.project.resources.values()}):
                try:
                    await self.sup.runtime(kind).cleanup(self.sup.project, bool(request.get("volumes")))
                except VrooliError as exc:
                    log.warning("cleanup failed", runtime=kind, error=str(exc))
        await reply({"ok": True, "stopped": stopped, "exit_code": EXIT_OK,
                     "resources": self.sup.snapshot(stopped)})
        if not names:
            self.sup.shutdown_requested.set()

    async def op_restart(self, request: dict[str, Any], reply: Reply) -> None:
        names = request.get("names") or []
        if not names:
            raise VrooliError("restart needs at least one resource name")
        self._check_names(names)
        selected = await self.sup.restart(names)
        await self._stream_until_settled(sorted(selected), reply)

    async def op_reload(self, request: dict[str, Any], reply: Reply) -> None:
        changes = await self.reload(request)  # a refusal is answered by `handle`
        await reply({"ok": True, "exit_code": EXIT_OK, **changes})

    async def reload(self, request: dict[str, Any]) -> dict[str, Any]:
        """The one reload operation (SIGHUP, `vrooli reload`, the control API): read the
        files again and apply only the difference; what changed, or the refusal raised
        with the running stack untouched."""
        try:
            project = await self._load(request)
        except VrooliError as exc:
            log.error("reload rejected; the running stack is unchanged", errors=exc.lines())
            for hook in self.on_reload:
                await hook("rejected", {"errors": exc.lines()})
            raise
        for hook in self.on_reload:
            await hook("reloading", {})
        changes = await self.sup.apply_config(project)
        log.info("reloaded", **changes)
        for hook in self.on_reload:
            await hook("reloaded", changes)
        return changes
