"""The supervisor process: one per project, owning the resources and the control socket.

It runs detached (spawned by `vrooli up`), attached to a terminal (`up --foreground`), or
under systemd (`vrooli daemon`). The modes differ only in what reports progress.

This is the composition root: the one place that wires the supervisor to what serves and
watches it (the control API in control_api.py, the health endpoint, the sd_notify
reporter, signals). Those depend on the read-only view in events.py, not on this module.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from orchestrator import config
from orchestrator.daemon import privileges
from orchestrator.daemon.control_api import Handlers, Options
from orchestrator.daemon.endpoint import HealthEndpoint, open_health_endpoint
from orchestrator.daemon.warm import Host
from orchestrator.engine.supervisor import Supervisor
from orchestrator.errors import VrooliError
from orchestrator.infra import control, daemons, paths
from orchestrator.infra.fdlimits import raise_nofile_limit, where_raised
from orchestrator.infra.logger import get_logger
from orchestrator.spec import ProjectSpec

__all__ = ["Handlers", "Options", "run"]  # Options is how callers (cli, detached) describe a run

log = get_logger("vrooli.service")
HEALTH_DEFER_MAX = 1.0  # seconds the health endpoint may hold requests while the stack starts


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


def run(options: Options, project: ProjectSpec | None = None) -> int:
    """The supervisor until it ends. `project`: `options.files` already read (a cold `up`'s
    fork has them from the command that forked it)."""
    raise_nofile_limit()  # before any listener: a burst of connections must not reach the limit
    if project is None:
        project = config.load(options.files, options.environ)
    if options.mode == "daemon":
        privileges.check_user_switch(project)  # one clear line now, not EPERM per resource later
    publication = _discoverable(project) if options.mode == "daemon" else None
    paths.ensure_state_dir(project.state_dir)
    lock = SupervisorLock(project.state_dir)
    lock.acquire()
    endpoint = HealthEndpoint(None, None, None, None)
    try:
        paths.write_private(paths.pid_file(project.state_dir), str(os.getpid()))
        endpoint = open_health_endpoint(project, options.health_listen, options.mode)
        return anyio.run(_main, project, options, endpoint, lock, publication)
    finally:
        endpoint.close()
        if publication is not None and lock.still_ours():
            daemons.withdraw(publication)
        if lock.still_ours():  # never remove what a supervisor that replaced us made
            for leftover in (paths.control_socket(project.state_dir), project.state_dir / "health.addr",
                             paths.pid_file(project.state_dir)):
                try:
                    leftover.unlink()
                except FileNotFoundError:
                    pass
        lock.release()


def _discoverable(project: ProjectSpec) -> daemons.Publication | None:
    """`vrooli daemon` serves its control socket in the discovery dir (daemons.py), for root
    and the control group; the group is admitted by the peer check too."""
    publication = daemons.prepare(project.name, project.files, project.state_dir)
    if publication is not None:
        control.admit_group(publication.gid)
    return publication


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
                lock: SupervisorLock | None = None, publication: daemons.Publication | None = None) -> int:
    """Sessions (a Supervisor each) until the process ends; a detached supervisor waits
    idle between them (warm.py). The control socket and the signals span them all."""
    host = Host(project, options, endpoint)
    exit_code = 0
    try:
        async with anyio.create_task_group() as outer:
            outer.start_soon(_signals, host)
            while True:
                exit_code, lost = await _session(host, lock, outer, publication)
                if lost or not host.keeps_warm():
                    break
                wake = await host.idle_period()
                if wake is None:
                    break
                host.take_over(wake)
                host.endpoint = open_health_endpoint(host.project, options.health_listen, options.mode)
            outer.cancel_scope.cancel()
    finally:
        host.endpoint.close()
    return exit_code


async def _session(host: Host, lock: SupervisorLock | None, outer: TaskGroup,
                   publication: daemons.Publication | None = None) -> tuple[int, bool]:
    """One supervisor's run, from its start to the end of its `down`: (exit code, state dir lost)."""
    project, options = host.project, host.options
    sup = Supervisor(project)
    first = host.sessions == 0
    if options.invoked_at is not None and first:
        sup.cold_start = {"invoked_at": options.invoked_at, "supervisor_at": time.time()}
    extras: list[Callable[[Supervisor, Handlers], Coroutine[Any, Any, None]]] = []
    if options.mode == "daemon":
        from orchestrator.daemon.sd_notify import systemd_reporter
        extras.append(systemd_reporter)

    async with anyio.create_task_group() as tg:
        async def run_supervisor(*, task_status: Any) -> None:
            await sup.run(task_status=task_status)
            tg.cancel_scope.cancel()

        await tg.start(run_supervisor)
        handler = Handlers(sup, options, host.endpoint)
        handler.host = host
        if options.up_at_start and first:
            await handler.start_unasked()
        host.serving(handler)
        if first:
            host.control = ControlEndpoint(outer, paths.control_socket(project.state_dir), host.handle)
            await host.control.start()
            if publication is not None:
                _publish(publication)
        if lock is not None:
            sup.sentinels[lock.path] = paths.identity(lock.path)
            sup.sentinels[host.control.path] = paths.identity(host.control.path)
            sup.on_state_lost.append(_state_rebuilder(sup, lock, host.control, options))
        endpoint = host.endpoint
        if endpoint.address is not None:
            sup.kept_files["health.addr"] = endpoint.address  # written again if the state dir is rebuilt
        if endpoint.sock is not None:
            # Not awaited: resources and the control socket must not wait for its imports.
            tg.start_soon(_health, sup, endpoint.sock)
        for extra in extras:
            tg.start_soon(extra, sup, handler)
        log.info("supervisor started", project=project.name, pid=os.getpid(), mode=options.mode,
                 session=host.sessions)
        if options.mode in ("foreground", "daemon"):
            selected = sup.request_up(options.names or None, options.no_deps, options.profiles)
            if options.mode == "foreground":
                tg.start_soon(_foreground_progress, sup, selected)
            else:
                tg.start_soon(_record_when_settled, sup, selected)
    host.session_ended()
    exit_code = 0
    if options.mode == "foreground":
        failed = [r for r in sup.records.values() if r.state.value in ("failed", "blocked")]
        exit_code = 1 if failed else 0
    log.info("supervisor stopped", project=project.name)
    return exit_code, sup.state_dir_lost


def _publish(publication: daemons.Publication) -> None:
    shared = daemons.publish(publication)
    record = publication.record
    if shared:
        log.info("control socket open to group", socket=str(record.socket), group=publication.group)
    else:
        log.warning("control socket for root and our own user only: cannot give it to group "
                    f"{publication.group} (no such group, or we are neither root nor a member)",
                    socket=str(record.socket))


async def _health(sup: Supervisor, sock: socket.socket) -> None:
    """The endpoint, isolated: nothing that goes wrong in it reaches the supervisor's task group."""
    try:
        # Answering needs the endpoint's modules: CPU the resources starting right now need
        # more. The socket already listens, so a monitor's request waits in the backlog, at
        # most HEALTH_DEFER_MAX, instead of being refused. The import runs in a worker
        # thread so the event loop keeps probing and answering the control socket meanwhile.
        with anyio.move_on_after(HEALTH_DEFER_MAX):
            await sup.wait_settled(set(sup.wanted))
        await anyio.to_thread.run_sync(importlib.import_module, "orchestrator.daemon.health")  # h11 and its own
        from orchestrator.daemon.health import run_endpoint

        log.info("health endpoint answering", listen=_address_of(sock))
        await run_endpoint(sup, sock)
    except Exception as exc:
        log.error("health endpoint failed; it stays down (resources are unaffected)",
                  error=repr(exc)[:300], where=where_raised(exc))
    sock.close()  # down for good: refuse connections rather than let them queue unanswered


def _address_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


async def _foreground_progress(sup: Supervisor, selected: frozenset[str]) -> None:
    from orchestrator.infra.progress import Progress

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


async def _signals(host: Host) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            handler = host.handler
            if signum == signal.SIGHUP:
                if handler is None:
                    log.info("SIGHUP while idle: nothing to reload (the next up reads the files)")
                    continue
                log.info("reloading on SIGHUP")
                try:
                    await handler.reload({})
                except VrooliError:
                    pass  # logged by reload; the running stack is unchanged
            else:
                # At once, also when idle: SIGTERM (systemd, `kill`) never leaves a warm period.
                log.info("shutting down", signal=signal.Signals(signum).name)
                host.request_exit()
