"""Finding or starting the project's detached supervisor, and reaching its control socket.

This module imports neither typer nor the event loop: a plain `vrooli up` (entry.py)
forks the supervisor from here before any CLI framework is loaded.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from orchestrator.errors import VrooliError
from orchestrator.infra import paths, registry

if TYPE_CHECKING:
    from collections.abc import Callable

    from orchestrator.infra.control import Client
    from orchestrator.spec import ProjectSpec

SPAWN_TIMEOUT = 20.0


class Pending(NamedTuple):  # not a dataclass: the client path skips its ~7 ms import
    """A supervisor forked but not yet answering; the spawn lock stays held until it does."""

    pid: int
    lock: int
    log_path: Path
    offset: int
    claim: str | None  # what this command's `up` request carries to the supervisor it forked


def ensure_supervisor(project: ProjectSpec, up: list[str] | None = None, no_deps: bool = False,
                      profiles: list[str] | None = None) -> Client:
    """Reuse the project's supervisor or start one, detached; never two of them.

    With `up`, a new supervisor starts those resources as soon as it runs ("" = all),
    without waiting for the CLI to connect and ask: a cold `vrooli up` saves a round trip.
    """
    registry.remember(project.files[0], project.state_dir, project.name)
    existing = client(project)
    answer = _ping(existing)
    if answer is not None and not _retired_for_older_code(existing, answer, project.state_dir):
        existing.warm_idle = bool(answer.get("idle"))
        return existing
    started = _spawn(project, up, no_deps, profiles or [])
    return existing if started is None else _wait_answering(project, started)


def _ping(answering: Client) -> dict[str, Any] | None:
    try:
        reply = answering.call({"op": "ping"})
    except (VrooliError, OSError, ValueError):
        return None
    return reply if reply.get("ok") else None


def retire_idle(state_dir: Path) -> None:
    """End the project's supervisor if it idles, warm: `up --foreground` and `vrooli daemon`
    become the project's supervisor themselves, and it would hold the lock they need."""
    answering = client_at(state_dir)
    ping = _ping(answering)
    if ping is not None and ping.get("idle"):
        _retired_for_older_code(answering, ping, state_dir, whatever_code=True)


def _retired_for_older_code(answering: Client, ping: dict[str, Any], state_dir: Path,
                            whatever_code: bool = False) -> bool:
    """An idle warm supervisor whose modules differ from ours (a `pip install -U`, an edit
    of an editable install since it started) is ended, so a fresh one serves this `up`;
    one that holds resources is kept (ending it would stop them). True if it was ended."""
    from orchestrator.infra.codeid import fingerprint

    if not ping.get("idle") or (ping.get("code") == fingerprint() and not whatever_code):
        return False
    try:
        retired = answering.call({"op": "retire"}).get("retired")
    except (VrooliError, OSError, ValueError):
        retired = True  # it went away meanwhile
    if not retired:
        return False  # an `up` woke it meanwhile: it serves that stack now
    deadline = time.monotonic() + SPAWN_TIMEOUT
    while _supervisor_running(state_dir) and time.monotonic() < deadline:
        time.sleep(0.005)
    return True


def client(project: ProjectSpec, timeout: float | None = 5.0) -> Client:
    """A client of the project's control socket (plain blocking sockets: no event loop)."""
    return client_at(project.state_dir, timeout)


def client_at(state_dir: Path, timeout: float | None = 5.0) -> Client:
    """The state dir is checked first: a socket in a directory someone else controls could
    be theirs, and would receive our requests."""
    from orchestrator.infra.control import Client

    paths.check_state_dir(state_dir)
    link = paths.daemon_link_of(state_dir)
    return Client(paths.control_socket(state_dir), timeout=timeout, daemon_uid=link.uid if link else None)


def client_once_started(state_dir: Path, timeout: float | None = 5.0) -> Client:
    """The supervisor's client, after any start in progress has its socket answering.

    A cold `vrooli up` forks the supervisor, which starts resources before its control
    socket listens. A `down` (or `status`) in that moment must not conclude that nothing
    runs: the `up` holds the spawn lock until the socket answers, so wait for that lock;
    and a supervisor that holds its own lock (its pid recorded) but does not answer yet
    (`up --foreground`, `daemon`) is waited for too. Both waits are bounded.
    """
    answering = client_at(state_dir, timeout)
    if answering.alive():
        return answering
    deadline = time.monotonic() + SPAWN_TIMEOUT + 5.0
    _wait_unlocked(state_dir / "spawn.lock", deadline)
    while not answering.alive():
        if time.monotonic() >= deadline or not _supervisor_running(state_dir):
            break
        time.sleep(0.02)
    return answering


def _wait_unlocked(path: Path, deadline: float) -> None:
    """Wait until nobody holds the flock on `path` (or the deadline); never create it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.02)
    finally:
        os.close(fd)  # releases our shared lock at once: an `up` after us takes it freely


def _supervisor_running(state_dir: Path) -> bool:
    """Some process holds the supervisor's lock (it may not be answering yet).

    Read from /proc/locks rather than by trying the lock: even a moment's hold by us could
    make a supervisor starting right then give up ("already running").
    """
    try:
        inode = os.stat(paths.lock_file(state_dir)).st_ino
        with open("/proc/locks") as handle:
            table = handle.read()
    except OSError:
        return False
    for entry in table.splitlines():
        fields = entry.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF" (blocked waiters add "->")
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[5].rsplit(":", 1)[-1] == str(inode):
            return True
    return False


def _spawn(project: ProjectSpec, up: list[str] | None, no_deps: bool, profiles: list[str]) -> Pending | None:
    """Fork a supervisor under the spawn lock; None if another one started meanwhile."""
    paths.ensure_state_dir(project.state_dir)
    spawn_lock = paths.open_private(project.state_dir / "spawn.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(spawn_lock, fcntl.LOCK_EX)  # a second `up` waits here for the first
    if client(project).alive():
        os.close(spawn_lock)
        return None
    log_path = paths.supervisor_log(project.state_dir)
    try:
        log_fd = paths.open_private(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    except BaseException:
        os.close(spawn_lock)
        raise
    offset = os.fstat(log_fd).st_size
    invoked_at = claim = None
    if up is None:
        no_deps, profiles = False, []  # they shape only the start a forking `up` asks for
    else:
        invoked_at = process_started_at()
        claim = os.urandom(8).hex()

    def serve() -> int:  # in the child: what it needs passes as values, the loaded project too
        from orchestrator.daemon.detached import serve

        return serve(list(project.files), up=up, no_deps=no_deps, profiles=profiles,
                     invoked_at=invoked_at, claim=claim, project=project)

    try:
        pid = _fork_supervisor(serve, log_fd, project.project_dir, spawn_lock)
    finally:
        os.close(log_fd)
    return Pending(pid, spawn_lock, log_path, offset, claim)


def process_started_at() -> float:
    """When this process was created (epoch seconds): the moment the user ran `vrooli up`,
    so `vrooli analyze` can show what the start cost before any resource started."""
    try:
        with open("/proc/self/stat") as handle:
            start_ticks = int(handle.read().rpartition(")")[2].split()[19])  # field 22, starttime
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - since_boot
    except (OSError, ValueError, IndexError):
        return time.time()


def _wait_answering(project: ProjectSpec, pending: Pending) -> Client:
    answering = client(project)
    try:
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while time.monotonic() < deadline:
            pid = _answering_pid(answering)
            if pid is not None:
                if pid != pending.pid:
                    # Another supervisor answered first (one rebuilding its deleted state dir
                    # took the lock back): ours must not start after it ends and linger idle.
                    _retire(pending.pid)
                else:
                    answering.claim = pending.claim
                return answering
            done, status = os.waitpid(pending.pid, os.WNOHANG)
            if done:
                tail = _read_from(pending.log_path, pending.offset).strip().splitlines()[-3:]
                code = os.waitstatus_to_exitcode(status)
                detail = "; ".join(_message_of(line) for line in tail) or f"exit code {code}"
                if "already running" in detail and _answers_soon(answering):
                    return answering  # it lost the lock to a supervisor rebuilding its state dir
                raise VrooliError(f"the supervisor did not start: {detail} (see {pending.log_path})")
            time.sleep(0.005)
        raise VrooliError(f"the supervisor did not answer within {SPAWN_TIMEOUT:g}s (see {pending.log_path})")
    finally:
        os.close(pending.lock)


def _answering_pid(answering: Client) -> int | None:
    """The pid of the supervisor answering on the socket, or None if none answers."""
    try:
        reply = answering.call({"op": "ping"})
    except (VrooliError, OSError, ValueError):
        return None
    pid = reply.get("pid")
    return pid if reply.get("ok") and isinstance(pid, int) else None


def _retire(pid: int, timeout: float = 10.0) -> None:
    """End a supervisor we forked that is not needed: SIGTERM (it stops what it holds, which
    is nothing yet), then SIGKILL if it lingers; reaped either way."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except ChildProcessError:
        return  # already reaped
    except ProcessLookupError:
        return


def _answers_soon(answering: Client, within: float = 1.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if answering.alive():
            return True
        time.sleep(0.02)
    return False


def _fork_supervisor(serve: Callable[[], int], log: int, cwd: Path, lock_fd: int) -> int:
    """Fork a child that becomes the supervisor (`serve`): detached, its output in the log file.

    A fork, not a new interpreter: the child already has Python, the config and our
    modules loaded, which takes ~0.1 s off a cold `vrooli up`.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 70
    try:
        os.close(lock_fd)  # the spawn lock is the parent's; the child must not keep it held
        os.setsid()  # own session: survives the terminal closing, gets no terminal signals
        _set_process_name(b"vrooli-sup")
        os.chdir(cwd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, 65536)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"):
            os.environ.pop(key, None)
        code = serve()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _set_process_name(name: bytes) -> None:
    """Name the forked supervisor in ps/top (it would otherwise look like `vrooli up`);
    through /proc rather than prctl, which would need ctypes (a few ms of imports)."""
    try:
        with open("/proc/self/comm", "wb") as handle:
            handle.write(name)
    except OSError:
        pass


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def _message_of(line: str) -> str:
    try:
        event = json.loads(line)
        return str(event.get("event", line))
    except ValueError:
        return line
