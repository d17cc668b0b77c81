"""Native processes: each in its own session, output straight to its log file.

Stopping signals the whole process group (and any descendant that left it), waits
`stop_timeout`, then SIGKILLs and waits until every one of them is gone.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import psutil
from anyio.abc import Process

from orchestrator import memory
from orchestrator.errors import StartFailed
from orchestrator.runtimes import EXIT_UNKNOWN, Adoptable, Usage

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from orchestrator.logs import OutputLog
    from orchestrator.spec import PortSpec, ProjectSpec, ResourceSpec

# Variables that belong to the supervisor's own service manager, never to its children:
# a child that inherits NOTIFY_SOCKET could tell systemd we are ready (or stopping).
PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
               "LISTEN_FDNAMES", "INVOCATION_ID")
KILL_WAIT = 10.0  # seconds to wait for SIGKILLed processes to vanish


def child_environment(spec: ResourceSpec, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key in PRIVATE_ENV:
        env.pop(key, None)
    env.update(spec.env)
    return env


def port_owner(port: int) -> str:
    try:
        for conn in psutil.net_connections("inet"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                try:
                    return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
                except psutil.Error:
                    return f" by pid {conn.pid}"
    except psutil.Error:
        pass
    return ""


def check_ports_free(ports: tuple[PortSpec, ...]) -> None:
    """Fail early, with the culprit named, instead of a service dying with EADDRINUSE."""
    for port in ports:
        family = socket.AF_INET6 if ":" in port.host_ip else socket.AF_INET
        kind = socket.SOCK_STREAM if port.protocol == "tcp" else socket.SOCK_DGRAM
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((port.host_ip, port.host_port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise StartFailed(
                        f"port {port.host_port} is already in use{port_owner(port.host_port)}"
                    ) from None
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise StartFailed(f"port {port.host_port}: {exc.strerror}") from None


def _tree(pid: int) -> list[psutil.Process]:
    """The process, its descendants, and every member of its process group."""
    found: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(pid)
        found[pid] = root
        for child in root.children(recursive=True):
            found[child.pid] = child
    except psutil.NoSuchProcess:
        pass
    for proc in psutil.process_iter():
        try:
            if proc.pid not in found and os.getpgid(proc.pid) == pid:
                found[proc.pid] = proc
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return list(found.values())


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


def _signal_all(pid: int, procs: list[psutil.Process], signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
    for proc in procs:
        try:
            proc.send_signal(signum)
        except psutil.Error:
            pass


class ProcessInstance:
    def __init__(self, pid: int, create_time: float, config_hash: str,
                 process: Process | None = None, cgroup: memory.Cgroup | None = None) -> None:
        self._pid = pid
        self.cgroup = cgroup  # holds memory_limit, when the kernel enforces it (memory.py)
        self._create_time = create_time
        self._config_hash = config_hash
        self._process = process  # None when adopted: we are not its parent
        self._exit_code: int | None = None

    def __repr__(self) -> str:
        return f"<ProcessInstance pid={self._pid} exit={self._exit_code}>"

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def ident(self) -> str:
        return str(self._pid)

    async def wait(self) -> int:
        if self._exit_code is None:
            if self._process is not None:
                self._exit_code = await self._process.wait()
            else:
                self._exit_code = await self._wait_foreign()
        return self._exit_code

    async def _wait_foreign(self) -> int:
        # Not our child, so the kernel gives us no exit status: poll until it is gone.
        while True:
            alive = await anyio.to_thread.run_sync(self._same_process_alive)
            if not alive:
                return EXIT_UNKNOWN
            await anyio.sleep(0.2)

    def _same_process_alive(self) -> bool:
        try:
            proc = psutil.Process(self._pid)
            return proc.create_time() == self._create_time and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    async def stop(self, signal_name: str, timeout: float) -> None:
        signum = signal.Signals[signal_name]
        procs = await anyio.to_thread.run_sync(_tree, self._pid)
        _signal_all(self._pid, procs, signum)
        if not await self._wait_gone(procs, timeout):
            procs = _alive(procs) + await anyio.to_thread.run_sync(_tree, self._pid)
            _signal_all(self._pid, procs, signal.SIGKILL)
            await self._wait_gone(procs, KILL_WAIT)
        with anyio.move_on_after(KILL_WAIT):
            await self.wait()
        if self.cgroup is not None:  # also ends what escaped the group and the tree
            await anyio.to_thread.run_sync(self.cgroup.remove)

    async def _wait_gone(self, procs: list[psutil.Process], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            if self._process is not None and self._process.returncode is None:
                # Reap our own child promptly so it is not counted as alive.
                with anyio.move_on_after(0):
                    await self._process.wait()
            if not _alive(procs):
                return True
            if time.monotonic() >= deadline:
                return False
            await anyio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.05)

    async def exec_inside(self, command: tuple[str, ...], timeout: float) -> tuple[int, str]:
        raise NotImplementedError("exec inside applies to containers only")

    async def usage(self) -> Usage | None:
        return await anyio.to_thread.run_sync(self._usage)

    def _usage(self) -> Usage | None:
        rss, cpu = 0, 0.0
        procs = _tree(self._pid)
        if not procs:
            return None
        for proc in procs:
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                    cpu += times.user + times.system
            except psutil.Error:
                continue
        return Usage(rss, cpu)

    def adoptable(self) -> Adoptable:
        return Adoptable("process", str(self._pid), self._create_time, self._config_hash)


class ProcessRuntime:
    async def preflight(self) -> None:
        return None

    async def prepare(self, spec: ResourceSpec) -> None:
        return None

    async def discard(self, spec: ResourceSpec) -> None:
        return None

    async def start(self, spec: ResourceSpec, output: OutputLog, tasks: TaskGroup,
                    report: Callable[[str], None] | None = None) -> ProcessInstance:
        check_ports_free(spec.ports)
        env = child_environment(spec)
        executable = shutil.which(spec.command[0], path=env.get("PATH"))
        if executable is None and not os.path.isfile(spec.command[0]):
            raise StartFailed(f"command not found: {spec.command[0]}")
        if spec.cwd is not None and not os.path.isdir(spec.cwd):
            raise StartFailed(f"cwd does not exist: {spec.cwd}")
        fd = output.open_for_child()
        try:
            process = await anyio.open_process(
                list(spec.command), stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                cwd=spec.cwd, env=env, start_new_session=True, user=spec.user,
            )
        except (OSError, KeyError, ValueError) as exc:
            raise StartFailed(f"cannot start {spec.command[0]}: {exc}") from None
        finally:
            os.close(fd)
        cgroup = memory.confine(spec, process.pid)  # at once: what it forks from now on starts inside
        try:
            create_time = psutil.Process(process.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = 0.0
        return ProcessInstance(process.pid, create_time, spec.config_hash(), process, cgroup)

    async def adopt(self, spec: ResourceSpec, record: Adoptable, output: OutputLog,
                    tasks: TaskGroup) -> ProcessInstance | None:
        if record.kind != "process":
            return None
        instance = ProcessInstance(int(record.ident), record.create_time, record.config_hash,
                                   cgroup=memory.cgroup_of(spec, int(record.ident)))
        return instance if instance._same_process_alive() else None

    async def cleanup(self, project: ProjectSpec, remove_volumes: bool) -> None:
        await anyio.to_thread.run_sync(memory.sweep, project)
