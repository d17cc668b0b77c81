"""Where a project's supervisor keeps its socket, lock, logs and records, and how it
touches them safely.

The state dir holds the control socket and files a root `vrooli up` writes to. A
directory someone else owns or may write into would let them plant a symlink there
(`logs/NAME.log -> /etc/shadow`) and have root append to, truncate or replace its target.
So every directory we use must be ours and writable by us alone (like OpenSSH's
StrictModes, its parents too), and every file in it is opened without following
symlinks and replaced by rename, never rewritten in place.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from orchestrator.errors import VrooliError

DEFAULT_FILE = "resources.toml"  # what a command reads without -f
DAEMON_DIR = Path("/run/vrooli")  # where a system daemon publishes itself (daemons.py)
SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes on Linux; keep a margin
PRIVATE_FILE_MODE = 0o600
# Names the supervisor and the CLI create in the state dir: none of them may be a symlink.
STATE_FILES = ("control.sock", "supervisor.lock", "supervisor.pid", "supervisor.log", "spawn.lock",
               "running.json", "health.addr", "last_start.json")
_temp_names = itertools.count()


class DaemonLink(NamedTuple):  # not a dataclass: the client path skips its ~7 ms import
    """A project served by a system daemon (daemons.py): its state dir and control socket
    are the daemon's, not those this user's environment would name."""

    first_file: Path  # resolved
    state_dir: Path
    socket: Path
    uid: int  # who serves the socket: trusted by the client besides itself and root


# first file (resolved) -> link. Filled once per process: by the CLI when a daemon's record
# names its files, by `vrooli daemon` for its own project.
_daemon_links: dict[Path, DaemonLink] = {}


def link_daemon(link: DaemonLink) -> None:
    _daemon_links[link.first_file] = link


def daemon_link(first_file: Path) -> DaemonLink | None:
    try:
        return _daemon_links.get(first_file.resolve())
    except OSError:
        return None


def daemon_link_of(state_dir: Path) -> DaemonLink | None:
    return next((link for link in _daemon_links.values() if link.state_dir == state_dir), None)


def daemon_discovery_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where clients look for a system daemon: $VROOLI_DAEMON_DIR (tests, a unit with
    another RuntimeDirectory=), else /run/vrooli."""
    env = os.environ if environ is None else environ
    return Path(env["VROOLI_DAEMON_DIR"]) if env.get("VROOLI_DAEMON_DIR") else DAEMON_DIR


class UnsafePath(VrooliError):
    """A state, log or socket directory (or a file in one) that someone else could control."""


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _refuse(what: str, path: Path, problem: str) -> UnsafePath:
    return UnsafePath(f"{what} {path} {problem}; refusing to use it")


def _check_ancestors(path: Path, what: str) -> None:
    """Every directory above `path` is owned by us or root and not open to others' writes
    (sticky ones like /tmp excepted): else its owner could swap our directory for another."""
    me = os.geteuid()
    for parent in [path.parent.resolve(), *path.parent.resolve().parents]:
        info = os.lstat(parent)
        if info.st_uid not in (me, 0):
            raise _refuse(what, path, f"is inside {parent}, which belongs to uid {info.st_uid} "
                                      f"(neither you, uid {me}, nor root)")
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise _refuse(what, path, f"is inside {parent}, which others may write to")


def ensure_private_dir(path: Path, what: str, *, create: bool = True, tighten: bool = True) -> bool:
    """Check (creating it 0700 if asked) that `path` is a real directory of ours that no one
    else may write to. Returns whether it exists. Raises UnsafePath otherwise."""
    info = _lstat(path)
    if info is None:
        if not create:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # someone was quicker: it is checked like any existing directory
        info = os.lstat(path)
    me = os.geteuid()
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(what, path, "is a symbolic link")
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(what, path, "is not a directory")
    if info.st_uid != me:
        raise _refuse(what, path, f"belongs to uid {info.st_uid}, not to you (uid {me})")
    if info.st_mode & 0o022:
        raise _refuse(what, path, f"may be written by group or others (mode {info.st_mode & 0o777:o}; "
                                  f"chmod 700 it)")
    _check_ancestors(path, what)
    if tighten and info.st_mode & 0o077:
        os.chmod(path, 0o700, follow_symlinks=False)
    return True


def _refuse_symlinks(directory: Path, names: list[str] | tuple[str, ...], what: str) -> None:
    for name in names:
        info = _lstat(directory / name)
        if info is not None and stat.S_ISLNK(info.st_mode):
            raise _refuse(what, directory / name, "is a symbolic link (remove it)")


def ensure_state_dir(state_dir: Path) -> Path:
    """The state dir and its log dir, created 0700 and checked; nothing in them a symlink."""
    ensure_private_dir(state_dir, "state dir")
    logs = state_dir / "logs"
    ensure_private_dir(logs, "log dir")
    _refuse_symlinks(state_dir, STATE_FILES, "state file")
    _refuse_symlinks(logs, sorted(os.listdir(logs)), "log file")
    return state_dir


def check_state_dir(state_dir: Path) -> None:
    """For clients: an existing state dir must be safe before we talk to a socket in it.
    A system daemon's is not ours to check (nor, for a group member, to enter): its socket
    lies in the discovery dir, checked when its record was read (daemons.py)."""
    if daemon_link_of(state_dir) is not None:
        return
    if ensure_private_dir(state_dir, "state dir", create=False, tighten=False):
        _refuse_symlinks(state_dir, ("control.sock",), "state file")


def socket_dir() -> Path:
    """Where sockets go whose state dir is too deep for a unix socket path: checked as the
    state dir is (a planted /tmp/vrooli-<uid> would otherwise receive our requests)."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        # The session's own directory: checked, created if missing, but its mode left alone.
        base = Path(runtime_dir)
        ensure_private_dir(base, "socket dir ($XDG_RUNTIME_DIR)", tighten=False)
        return base
    base = Path(f"/tmp/vrooli-{os.geteuid()}")  # noqa: S108 - checked: ours, 0700, not a symlink
    ensure_private_dir(base, "socket dir")
    return base


def control_socket(state_dir: Path) -> Path:
    link = daemon_link_of(state_dir)
    if link is not None:
        return link.socket
    path = state_dir / "control.sock"
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        return path
    # A deep state dir cannot hold a unix socket; use a per-user directory instead.
    import hashlib  # here, not at the top: a client that never hashes skips its ~2.5 ms import
    digest = hashlib.sha256(os.fsencode(state_dir.resolve())).hexdigest()[:20]
    return socket_dir() / f"{digest}.sock"


def supervisor_log(state_dir: Path) -> Path:
    return state_dir / "supervisor.log"


def lock_file(state_dir: Path) -> Path:
    return state_dir / "supervisor.lock"


def pid_file(state_dir: Path) -> Path:
    return state_dir / "supervisor.pid"


def running_file(state_dir: Path) -> Path:
    return state_dir / "running.json"


def last_start_file(state_dir: Path) -> Path:
    return state_dir / "last_start.json"


def resource_log(state_dir: Path, name: str) -> Path:
    return state_dir / "logs" / f"{name}.log"


# ---------------------------------------------------------------------------- files


def open_private(path: Path, flags: int) -> int:
    """os.open that never follows a symlink and creates files 0600 for us alone.

    With O_CREAT, a missing file is created exclusively (O_EXCL), so a name planted
    between our check and our open can never be taken over; an existing one must be a
    regular file of ours with no other name (a hard link to someone else's file).
    """
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    if flags & os.O_CREAT:
        try:
            return os.open(path, flags | os.O_EXCL, PRIVATE_FILE_MODE)
        except FileExistsError:
            flags &= ~os.O_CREAT
    try:
        fd = os.open(path, flags | os.O_NONBLOCK)  # a planted FIFO must not hang us
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse("file", path, "is a symbolic link (remove it)") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _refuse("file", path, "is not a regular file")
        if info.st_uid != os.geteuid() or info.st_nlink > 1:
            raise _refuse("file", path, f"belongs to uid {info.st_uid} or has other names")
        if info.st_mode & 0o777 != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_exclusive(directory: Path, stem: str) -> tuple[int, Path]:
    """A new 0600 file in `directory` under a name no one else took (O_EXCL, O_NOFOLLOW)."""
    while True:
        path = directory / f".{stem}.{os.getpid()}.{next(_temp_names)}.tmp"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         PRIVATE_FILE_MODE)
        except FileExistsError:
            continue
        return fd, path


def write_private(path: Path, data: str | bytes) -> None:
    """Replace `path` with `data`: written to a fresh temp file, renamed over it.

    rename() replaces whatever is at `path` (a symlink included) without following it,
    and readers see the old or the new content, never half of it.
    """
    fd, temp = create_exclusive(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what is at `path` now, or None: tells a deleted or swapped file."""
    info = _lstat(path)
    return None if info is None else (info.st_dev, info.st_ino)
