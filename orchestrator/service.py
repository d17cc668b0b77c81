"""The supervisor process: one per project, owning the resources and the control socket.

It runs detached (spawned by `vrooli up`), attached to a terminal (`up --foreground`), or
under systemd (`vrooli daemon`). The modes differ only in what reports progress.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import structlog

from orchestrator import config, control, paths
from orchestrator.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, VrooliError
from orchestrator.scheduler import SETTLED_OK
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
    """An flock held for the supervisor's whole life: two supervisors never share a project."""

    def __init__(self, state_dir: Path) -> None:
        self.path = paths.lock_file(state_dir)
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise VrooliError(f"a supervisor is already running for this project (pid {owner})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def run(options: Options) -> int:
    project = config.load(options.files, options.environ)
    paths.ensure_state_dir(project.state_dir)
    lock = SupervisorLock(project.state_dir)
    lock.acquire()
    try:
        (project.state_dir / "supervisor.pid").write_text(str(os.getpid()))
        return anyio.run(_main, project, options)
    finally:
        for leftover in (paths.control_socket(project.state_dir), project.state_dir / "health.addr",
                         project.state_dir / "supervisor.pid"):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass
        lock.release()


async def _main(project: ProjectSpec, options: Options) -> int:
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
        handler = Handlers(sup, options)
        if options.up_at_start:
            try:  # the same checks as a client's `up`: nothing half-started
                await handler._preflight(options.names or None, options.no_deps)
                sup.request_up(options.names or None, options.no_deps)
            except VrooliError as exc:
                log.warning("not starting before the client asks", error=str(exc))
        await tg.start(control.serve, paths.control_socket(project.state_dir), handler.handle)
        if project.health_enabled or options.health_listen:
            # Not awaited: resources and the control socket must not wait for uvicorn's import.
            tg.start_soon(_health, sup, options.health_listen or project.health_listen)
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


async def _health(sup: Supervisor, listen: str) -> None:
    from orchestrator.health import bind_listener, serve_health

    try:
        sock = bind_listener(listen)
    except OSError as exc:
        log.warning("health endpoint not started", listen=listen, error=exc.strerror or str(exc))
        return
    try:
        host, port = sock.getsockname()[:2]
        (sup.state_dir / "health.addr").write_text(f"{host}:{port}")
        log.info("health endpoint listening", listen=f"{host}:{port}")
        # Answering needs uvicorn and prometheus_client: ~50 ms of imports, CPU the resources
        # starting right now need more (measured: ~0.09 s off a cold start of the real
        # stack). The socket already listens, so a monitor's request waits in the backlog,
        # at most HEALTH_DEFER_MAX, instead of being refused. The import runs in a worker
        # thread so the event loop keeps probing and answering the control socket meanwhile.
        with anyio.move_on_after(HEALTH_DEFER_MAX):
            await sup.wait_settled(set(sup.wanted))
        await anyio.to_thread.run_sync(_import_health)
        async with anyio.create_task_group() as tg:
            await tg.start(serve_health, sup, sock)
    finally:
        sock.close()  # also when the supervisor stops before the endpoint ever answered


def _import_health() -> None:
    import prometheus_client  # noqa: F401
    import uvicorn.protocols.http.h11_impl  # noqa: F401


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
                await handler.op_reload({}, None)
            else:
                log.info("shutting down", signal=signal.Signals(signum).name)
                sup.shutdown_requested.set()


Reply = Callable[[dict[str, Any]], Awaitable[None]]


class Handlers:
    """One method per control-API operation."""

    def __init__(self, sup: Supervisor, options: Options) -> None:
        self.sup = sup
        self.options = options
        self.on_reload: list[Callable[[str, dict[str, Any]], Awaitable[None]]] = []

    async def handle(self, request: dict[str, Any], reply: Reply) -> None:
        op = request.get("op")
        method = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if method is None:
            await reply({"ok": False, "error": f"unknown operation {op!r}", "exit_code": EXIT_USAGE})
            return
        try:
            await method(request, reply)
        except VrooliError as exc:
            await reply({"ok": False, "error": str(exc), "errors": exc.lines(), "exit_code": exc.exit_code})

    async def op_ping(self, request: dict[str, Any], reply: Reply) -> None:
        await reply({"ok": True, "pid": os.getpid(), "project": self.sup.project.name,
                     "mode": self.options.mode})

    async def op_status(self, request: dict[str, Any], reply: Reply) -> None:
        names = request.get("names") or None
        self._check_names(names)
        extra = await self._extra_status()  # first: it samples the memory the rows show
        await reply({"ok": True, "project": self.sup.project.name, "supervisor_pid": os.getpid(),
                     "mode": self.options.mode, "resources": self.sup.snapshot(names), "extra": extra})

    async def _extra_status(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"stack_memory": (await self.sup.memory.sample()).to_json()}
        if self.sup.models:
            extra["models"] = [m.summary() for m in self.sup.models.values()]
        return extra

    async def op_models(self, request: dict[str, Any], reply: Reply) -> None:
        """list | pull | ensure | unload, for the resource that declares models."""
        from orchestrator.models import ModelError

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
        unknown = [n for n in names or [] if n not in self.sup.records]
        if unknown:
            raise VrooliError(f"unknown resource '{unknown[0]}' (known: {', '.join(self.sup.records)})")

    async def _load(self, request: dict[str, Any]) -> ProjectSpec:
        files = [Path(f) for f in request.get("files") or [str(f) for f in self.sup.project.files]]
        environ = request.get("environ")
        new = await anyio.to_thread.run_sync(config.load, files, environ)
        if new.state_dir != self.sup.project.state_dir:
            raise VrooliError(f"state_dir changed to {new.state_dir}; run `vrooli down` first")
        return new

    async def op_up(self, request: dict[str, Any], reply: Reply) -> None:
        names = request.get("names") or None
        if request.get("files"):
            project = await self._load(request)
            self._check_names_in(names, project)
            changes = await self.sup.apply_config(project)
            if changes["restarted"] or changes["added"] or changes["removed"]:
                await reply({"event": "config", **changes})
        self._check_names(names)
        await self._preflight(names, bool(request.get("no_deps")))
        selected = self.sup.request_up(names, bool(request.get("no_deps")))
        await self._stream_until_settled(sorted(selected), reply)

    async def _preflight(self, names: list[str] | None, no_deps: bool) -> None:
        """Every runtime the request needs must work before anything starts (no half-started stack)."""
        _, selected = self.sup.selection(names, no_deps)
        for kind in sorted({self.sup.records[n].spec.runtime for n in selected}):
            await self.sup.runtime(kind).preflight()

    def _check_names_in(self, names: list[str] | None, project: ProjectSpec) -> None:
        unknown = [n for n in names or [] if n not in project.resources]
        if unknown:
            raise VrooliError(f"unknown resource '{unknown[0]}' (known: {', '.join(project.resources)})")

    async def _stream_until_settled(self, selected: list[str], reply: Reply) -> None:
        while True:
            version = self.sup.version
            if self.sup.settled(selected):
                break
            await reply({"event": "progress", "resources": self.sup.snapshot(selected)})
            await self.sup.wait_change(since=version)
        rows = self.sup.snapshot(selected)
        self.sup.record_start(selected)
        ok = all(r["state"] in {s.value for s in SETTLED_OK} for r in rows)
        await reply({"ok": ok, "done": True, "resources": rows, "exit_code": EXIT_OK if ok else EXIT_FAILED})

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

    async def op_reload(self, request: dict[str, Any], reply: Reply | None) -> None:
        try:
            project = await self._load(request)
        except ConfigError as exc:
            log.error("reload rejected; the running stack is unchanged", errors=exc.lines())
            for hook in self.on_reload:
                await hook("rejected", {"errors": exc.lines()})
            if reply is not None:
                await reply({"ok": False, "errors": exc.lines(), "exit_code": EXIT_USAGE})
            return
        for hook in self.on_reload:
            await hook("reloading", {})
        changes = await self.sup.apply_config(project)
        log.info("reloaded", **changes)
        for hook in self.on_reload:
            await hook("reloaded", changes)
        if reply is not None:
            await reply({"ok": True, "exit_code": EXIT_OK, **changes})
