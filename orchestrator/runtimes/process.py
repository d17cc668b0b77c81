"""Native processes: each in its own session, output straight to its log file.

Stopping signals the whole process group (and any descendant that left it), waits
`stop_timeout`, then SIGKILLs and waits until every one of them is gone.

Every start carries a token in its environment (`VROOLI_INSTANCE`) that its descendants
inherit: a daemon that double-forks out of the session and the process group is still
found by it. A main process that exits 0 while such members live on has daemonized;
the instance then follows the eldest of them instead of counting as finished.

Over the ~450-line module guide: finding a process tree's members (by group, session and
token), signalling them and switching users are one mechanism, used by start, stop and
adoption alike; apart, each half would re-derive who the members are.
"""

from __future__ import annotations

import errno
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from anyio.abc import Process

from orchestrator.errors import StartFailed
from orchestrator.infra.logger import get_logger
from orchestrator.runtimes import EXIT_UNKNOWN, Adoptable, Usage, cgroups

if TYPE_CHECKING:
    import psutil
    from anyio.abc import TaskGroup

    from orchestrator.infra.logs import OutputLog
    from orchestrator.spec import PortSpec, ProjectSpec, ResourceSpec

# Variables that belong to the supervisor's own service manager, never to its children:
# a child that inherits NOTIFY_SOCKET could tell systemd we are ready (or stopping).
PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
               "LISTEN_FDNAMES", "INVOCATION_ID")
KILL_WAIT = 10.0  # seconds to wait for SIGKILLed processes to vanish
INSTANCE_ENV = "VROOLI_INSTANCE"  # inherited by every descendant: finds daemons that left the session
# A main process that exits 0 may leave a child finishing its last write; only what is
# still there after this long is taken for a daemon.
DAEMON_GRACE = 0.25

log = get_logger("vrooli.process")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a child runs as: uid, primary gid, supplementary groups, and the login variables."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    env: tuple[tuple[str, str], ...]


def identity_of(user: str) -> Identity:
    """The passwd and group entries of `user` (a name or a numeric uid), as `su` would set them."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError, OverflowError):
        raise StartFailed(f"unknown user {user!r}") from None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    env = (("HOME", entry.pw_dir), ("USER", entry.pw_name), ("LOGNAME", entry.pw_name),
           ("SHELL", entry.pw_shell or "/bin/sh"))
    return Identity(entry.pw_uid, entry.pw_gid, groups, env)


def child_environment(spec: ResourceSpec, base: dict[str, str] | None = None,
                      identity: Identity | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key in PRIVATE_ENV:
        env.pop(key, None)
    if identity is not None:
        env.update(identity.env)  # never root's HOME for `nobody`; explicit `env` still wins
    env.update(spec.env)
    return env


def _switch_user(identity: Identity | None) -> tuple[int | None, int | None, list[int] | None]:
    """The uid, gid and supplementary groups that make a child `identity` (None: stay).

    Without the gid and the groups a child of root would keep gid 0 and root's
    supplementary groups, whatever its uid.
    """
    if identity is None or (os.geteuid() != 0 and identity.uid == os.geteuid()):
        return None, None, None
    return identity.uid, identity.gid, list(identity.groups)


def port_owner(port: int) -> str:
    import psutil  # in each function: a start must not wait for its import (~10 ms)
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
        try:
            probe = socket.socket(family, kind)
        except OSError as exc:  # IPv6 switched off in this kernel: the service could not bind it either
            raise StartFailed(f"port {port.host_port} on {port.host_ip}: {exc.strerror}") from None
        with probe:
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


def own_groups(pid: int) -> frozenset[int]:
    """The process group and session of `pid`, which belong to its resource: never the
    supervisor's own, nor init's."""
    mine = {0, 1, os.getpgrp(), os.getsid(0)}
    found = set()
    for lookup in (os.getpgid, os.getsid):
        try:
            found.add(lookup(pid))
        except OSError:
            continue
    return frozenset(found - mine)


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return marker in b"\0" + handle.read()
    except OSError:
        return False


def _members(pid: int, groups: frozenset[int], token: str | None, born: float = 0.0) -> list[psutil.Process]:
    """The process and everything of its resource, in one pass over the process table:
    members of its process groups and sessions, processes carrying its token, and all
    their descendants (a process that left the group is still found by its ancestry).
    Only processes started since `born` can carry the token: older ones are not read."""
    import psutil
    me = os.getpid()
    marker = f"\0{INSTANCE_ENV}={token}\0".encode() if token else None
    procs: dict[int, psutil.Process] = {}
    children: dict[int, list[int]] = {}
    roots = []
    for proc in psutil.process_iter(["ppid", "create_time"]):
        if proc.pid == me:
            continue
        procs[proc.pid] = proc
        children.setdefault(proc.info["ppid"] or 0, []).append(proc.pid)
        try:
            if proc.pid == pid or os.getpgid(proc.pid) in groups or os.getsid(proc.pid) in groups:
                roots.append(proc.pid)
                continue
        except OSError:
            continue
        if marker is not None and (proc.info["create_time"] or born) >= born and _has_marker(proc.pid, marker):
            roots.append(proc.pid)
    found: set[int] = set()
    while roots:
        current = roots.pop()
        if current not in found and current != me:
            found.add(current)
            roots.extend(children.get(current, ()))
    return [procs[p] for p in found if p in procs]


def _eldest(procs: list[psutil.Process]) -> psutil.Process | None:
    """The first-started process whose parent is not among `procs`: a daemon's root."""
    import psutil
    pids = {p.pid for p in procs}
    candidates = []
    for proc in procs:
        try:
            if proc.ppid() not in pids:
                candidates.append((proc.create_time(), proc))
        except psutil.Error:
            continue
    return min(candidates, key=lambda pair: pair[0])[1] if candidates else None


def _token_of(pid: int) -> str | None:
    """The instance token of an adopted process (None if it has rewritten its environment)."""
    import psutil
    try:
        return psutil.Process(pid).environ().get(INSTANCE_ENV)
    except (psutil.Error, OSError):
        return None


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    import psutil
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


def _signal_all(groups: frozenset[int], procs: list[psutil.Process], signum: int) -> None:
    import psutil
    # A group is signalled only while a process we found still leads or belongs to it
    # (so its id cannot have been reused), which also reaches a child forked meanwhile.
    live_groups = set()
    for proc in procs:
        try:
            live_groups.add(os.getpgid(proc.pid))
        except OSError:
            continue
    for group in groups & live_groups:
        try:
            os.killpg(group, signum)
        except (ProcessLookupError, PermissionError):
            pass
    for proc in procs:
        try:
            proc.send_signal(signum)
        except psutil.Error:
            pass


class ProcessInstance:
    def __init__(self, pid: int, create_time: float, config_hash: str,
                 process: Process | None = None, cgroup: cgroups.Cgroup | None = None, *,
                 groups: frozenset[int] | None = None, token: str | None = None,
                 report: Callable[[str], None] | None = None) -> None:
        self._pid = pid
        self.cgroup = cgroup  # holds memory_limit, when the kernel enforces it (memory.py)
        self._create_time = create_time
        self._born = create_time  # the first process's start: every member started later
        self._config_hash = config_hash
        self._process = process  # None when adopted: we are not its parent
        self._exit_code: int | None = None
        # Process groups and sessions whose members are this resource's.
        self._groups = own_groups(pid) if groups is None else groups
        self._token = token if token is not None else _token_of(pid)
        self._report = report
        self._stopping = False  # a main process that exits 0 on our signal has not daemonized

    def __repr__(self) -> str:
        return f"<ProcessInstance pid={self._pid} exit={self._exit_code}>"

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def ident(self) -> str:
        return str(self._pid)

    async def wait(self) -> int:
        while self._exit_code is None:
            if self._process is None:
                self._exit_code = await self._wait_foreign()
                break
            code = await self._process.wait()
            if code != 0 or self._stopping or not await self._follow_daemon():
                self._exit_code = code
        return self._exit_code

    async def _follow_daemon(self) -> bool:
        """The main process exited 0: if it left processes running it has daemonized
        (double fork), and the eldest of them becomes the process this instance tracks."""
        import psutil
        deadline = time.monotonic() + DAEMON_GRACE
        empty_scans = 0
        while True:
            left = _alive(await anyio.to_thread.run_sync(self._members))
            # One empty scan may fall between a fork and its child's first appearance:
            # "nothing is left" takes two, a few tens of milliseconds apart.
            empty_scans = 0 if left else empty_scans + 1
            if empty_scans >= 2:
                return False
            if left and time.monotonic() >= deadline:
                break
            await anyio.sleep(0.03)
        eldest = _eldest(left)
        if eldest is None:
            return False
        try:
            create_time = eldest.create_time()
        except psutil.NoSuchProcess:
            return False
        previous = self._pid
        self._pid, self._create_time, self._process = eldest.pid, create_time, None
        self._groups = self._groups | own_groups(eldest.pid)
        log.info("main process exited 0 and left a daemon: following it", pid=previous, daemon=eldest.pid)
        if self._report is not None:
            self._report(f"pid {previous} exited 0 and left pid {eldest.pid} running: following it")
        return True

    def _members(self) -> list[psutil.Process]:
        # A second of slack: create times are rounded to clock ticks.
        return _members(self._pid, self._groups, self._token, self._born - 1.0)

    async def _wait_foreign(self) -> int:
        # Not our child, so the kernel gives us no exit status: poll until it is gone.
        while True:
            alive = await anyio.to_thread.run_sync(self._same_process_alive)
            if not alive:
                return EXIT_UNKNOWN
            await anyio.sleep(0.2)

    def _same_process_alive(self) -> bool:
        import psutil
        try:
            proc = psutil.Process(self._pid)
            return proc.create_time() == self._create_time and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    async def stop(self, signal_name: str, timeout: float) -> None:
        signum = signal.Signals[signal_name]
        self._stopping = True
        procs = await anyio.to_thread.run_sync(self._members)
        _signal_all(self._groups, procs, signum)
        if not await self._wait_gone(procs, timeout):
            procs = _alive(procs) + await anyio.to_thread.run_sync(self._members)
            _signal_all(self._groups, procs, signal.SIGKILL)
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
        import psutil
        rss, cpu = 0, 0.0
        procs = _members(self._pid, self._groups, None)  # no environment scan on every scrape
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


def new_token() -> str:
    """A random instance token: what uuid.uuid4().hex gives, without importing uuid (and,
    through it, platform) on a cold start's way to the first spawn."""
    return os.urandom(16).hex()


def which(command: str, search_path: str | None) -> str | None:
    """shutil.which for POSIX, as the first spawn needs it: shutil would bring zlib, bz2
    and lzma (two shared libraries) onto a cold start's critical path. A name with a slash
    is checked as it is; otherwise each directory of PATH (the system's default path when
    unset) in turn, an empty one meaning the current directory, as shutil.which has it."""
    def runnable(path: str) -> bool:
        return os.access(path, os.X_OK) and not os.path.isdir(path)

    if os.path.dirname(command):
        return command if runnable(command) else None
    entries = search_path if search_path is not None else os.environ.get("PATH")
    if entries is None:
        try:
            entries = os.confstr("CS_PATH")
        except (AttributeError, ValueError):
            entries = os.defpath
    if not entries:
        return None
    for directory in dict.fromkeys(entries.split(os.pathsep)):
        candidate = os.path.join(directory, command)
        if runnable(candidate):
            return candidate
    return None


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
        identity = identity_of(spec.user) if spec.user else None
        env = child_environment(spec, identity=identity)
        token = new_token()
        env[INSTANCE_ENV] = token
        executable = which(spec.command[0], env.get("PATH"))
        # A relative path with a slash is run from the resource's cwd, so look for it there.
        if executable is None and not os.path.isfile(os.path.join(spec.cwd or ".", spec.command[0])):
            raise StartFailed(f"command not found: {spec.command[0]}")
        if spec.cwd is not None and not os.path.isdir(spec.cwd):
            raise StartFailed(f"cwd does not exist: {spec.cwd}")
        uid, gid, groups = _switch_user(identity)
        fd = output.open_for_child()
        try:
            # Shielded: a stop arriving mid-spawn would otherwise leave a process we never
            # recorded (asyncio kills only the direct child, so a shell's children live on).
            # Once returned, the supervisor holds the instance and stops its whole group.
            with anyio.CancelScope(shield=True):
                process = await anyio.open_process(
                    list(spec.command), stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, cwd=spec.cwd, env=env,
                    start_new_session=True, user=uid, group=gid, extra_groups=groups,
                )
        except PermissionError as exc:
            who = f" as user {spec.user}" if spec.user else ""
            raise StartFailed(f"cannot start {spec.command[0]}{who}: {exc.strerror}") from None
        except (OSError, KeyError, ValueError) as exc:
            raise StartFailed(f"cannot start {spec.command[0]}: {exc}") from None
        finally:
            os.close(fd)
        cgroup = cgroups.confine(spec, process.pid)  # at once: what it forks from now on starts inside
        import psutil  # only now: the first spawn does not wait for it

        try:
            create_time = psutil.Process(process.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = 0.0
        return ProcessInstance(process.pid, create_time, spec.config_hash(), process, cgroup,
                               groups=frozenset({process.pid}), token=token, report=report)

    async def adopt(self, spec: ResourceSpec, record: Adoptable, output: OutputLog,
                    tasks: TaskGroup) -> ProcessInstance | None:
        if record.kind != "process":
            return None
        instance = ProcessInstance(int(record.ident), record.create_time, record.config_hash,
                                   cgroup=cgroups.cgroup_of(spec, int(record.ident)))
        return instance if instance._same_process_alive() else None

    async def reclaim(self, record: Adoptable) -> ProcessInstance | None:
        """The process, if the same one still runs (its start time matches the record's)."""
        if record.kind != "process":
            return None
        instance = ProcessInstance(int(record.ident), record.create_time, record.config_hash)
        return instance if instance._same_process_alive() else None

    async def cleanup(self, project: ProjectSpec, remove_volumes: bool) -> None:
        await anyio.to_thread.run_sync(cgroups.sweep, project)
