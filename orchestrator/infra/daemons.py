"""How `vrooli` reaches the system daemon: the supervisor `vrooli daemon` runs under systemd.

The daemon keeps its state in $STATE_DIRECTORY (/var/lib/vrooli/PROJECT, 0700, its own),
which no other user's environment names and a group member may not even enter. So the
daemon serves its control socket in a discovery dir, /run/vrooli (systemd's
RuntimeDirectory=vrooli), and writes there one small record per project:

    /run/vrooli/PROJECT.json   0640 owner:GROUP  {project, files, state_dir, socket, pid, uid, unit}
    /run/vrooli/PROJECT.sock   0660 owner:GROUP  the control socket
    /run/vrooli/               0750 owner:GROUP

$VROOLI_DAEMON_DIR names another discovery dir (for the daemon and its clients alike);
with neither it nor $RUNTIME_DIRECTORY set, the daemon publishes nothing and keeps its
socket in its state dir, like any supervisor.

GROUP is $VROOLI_CONTROL_GROUP, `vrooli` by default. A CLI run by root or a member of
GROUP finds the record whose first file is the one it was given (`-f`, resolved), or, with
no `-f` and no ./resources.toml, the only daemon running, and talks to that socket.

Trust: only root can create a directory in /run, so the discovery dir's owner (root, or
the unit's User= to whom systemd gave it) is who the client accepts as the socket's peer,
besides itself and root; the dir must not be writable by anyone else, and a record must
belong to its owner. On the server side the peer check (control.py) admits root, the
daemon's own user, and members of GROUP.
"""

from __future__ import annotations

import grp
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError, VrooliError
from orchestrator.infra import paths
from orchestrator.infra.registry import canonical

DEFAULT_GROUP = "vrooli"
MAX_RECORD = 64 * 1024
SOCKET_MODE, RECORD_MODE, DIR_MODE = 0o660, 0o640, 0o750


class DaemonRefused(VrooliError):
    """The system daemon is there, but this user may not talk to it (exit 1, one line)."""


@dataclass(frozen=True)
class DaemonRecord:
    project: str
    files: tuple[Path, ...]
    state_dir: Path
    socket: Path
    pid: int
    uid: int
    unit: str | None

    def to_json(self) -> dict[str, Any]:
        return {"project": self.project, "files": [str(f) for f in self.files], "state_dir": str(self.state_dir),
                "socket": str(self.socket), "pid": self.pid, "uid": self.uid, "unit": self.unit}


discovery_dir = paths.daemon_discovery_dir


def control_group(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("VROOLI_CONTROL_GROUP") or DEFAULT_GROUP


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def unit_name(environ: Mapping[str, str] | None = None, cgroup: str | None = None) -> str | None:
    """The systemd unit we run in ("vrooli.service"), from our cgroup (the innermost unit
    on its path: the daemon may sit in a sub-cgroup of its own, vrooli.supervisor); None
    outside systemd ($INVOCATION_ID is set by systemd for every unit it starts)."""
    env = os.environ if environ is None else environ
    if not env.get("INVOCATION_ID"):
        return None
    if cgroup is None:
        try:
            with open("/proc/self/cgroup") as handle:
                cgroup = handle.read()
        except OSError:
            return None
    for line in cgroup.splitlines():
        for part in reversed(line.rsplit(":", 1)[-1].split("/")):
            if part.endswith((".service", ".scope")):
                return part
    return None


# ------------------------------------------------------------------------ daemon side


def publish_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """Where `vrooli daemon` serves: $VROOLI_DAEMON_DIR, else systemd's $RUNTIME_DIRECTORY
    (RuntimeDirectory=vrooli: /run/vrooli); None (the state dir's own socket, as a
    detached supervisor's) when neither is set: a daemon started by hand publishes
    nothing system-wide unless asked to."""
    env = os.environ if environ is None else environ
    if env.get("VROOLI_DAEMON_DIR"):
        return Path(env["VROOLI_DAEMON_DIR"])
    if env.get("RUNTIME_DIRECTORY"):
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    return None


@dataclass(frozen=True)
class Publication:
    """What the daemon made in the discovery dir, to share with the group and remove at exit."""

    directory: Path
    record: DaemonRecord
    gid: int | None
    group: str

    @property
    def record_path(self) -> Path:
        return self.directory / f"{self.record.project}.json"


def prepare(project_name: str, files: tuple[Path, ...], state_dir: Path,
            environ: Mapping[str, str] | None = None) -> Publication | None:
    """Link the project to a socket in the discovery dir (before the socket is served, so
    every control_socket(state_dir) in this process names it). The dir is checked like a
    state dir (ours, not writable by others, nor a symlink), then opened to the group."""
    directory = publish_dir(environ)
    if directory is None:
        return None
    paths.ensure_private_dir(directory, "daemon socket dir", tighten=False)
    group = control_group(environ)
    gid = group_id(group)
    share(directory, gid, DIR_MODE)
    socket = directory / f"{project_name}.sock"
    record = DaemonRecord(project_name, files, state_dir, socket, os.getpid(), os.geteuid(), unit_name(environ))
    paths.link_daemon(paths.DaemonLink(files[0].resolve(), state_dir, socket, os.geteuid()))
    return Publication(directory, record, gid, group)


def share(path: Path, gid: int | None, mode: int) -> bool:
    """Give `path` to the control group with `mode`; False (owner-only) if that is not
    possible: the group does not exist, or we may not chown to it (not root, not a member)."""
    if gid is None:
        os.chmod(path, mode & 0o700, follow_symlinks=False)
        return False
    try:
        # Under User=vrooli Group=vrooli what we create already has the group; and the unit's
        # SystemCallFilter=~@privileged (which holds @chown) denies chown even to our own group.
        if os.lstat(path).st_gid != gid:
            os.chown(path, -1, gid, follow_symlinks=False)
    except PermissionError:
        os.chmod(path, mode & 0o700, follow_symlinks=False)
        return False
    os.chmod(path, mode, follow_symlinks=False)
    return True


def publish(publication: Publication) -> bool:
    """Open the served socket to the group and write the record; whether the group got it."""
    shared = share(publication.record.socket, publication.gid, SOCKET_MODE)
    paths.write_private(publication.record_path, json.dumps(publication.record.to_json()) + "\n")
    share(publication.record_path, publication.gid, RECORD_MODE)
    return shared


def withdraw(publication: Publication) -> None:
    """Remove our record and socket, unless a newer daemon's replaced them."""
    for path in (publication.record_path, publication.record.socket):
        try:
            if path.suffix == ".json":
                current = json.loads(path.read_text())
                if current.get("pid") != publication.record.pid:
                    continue
            path.unlink()
        except (OSError, ValueError):
            continue


# ------------------------------------------------------------------------ client side


def discover(files: list[Path], defaulted: bool, environ: Mapping[str, str] | None = None) -> list[Path]:
    """The files a command acts on, linked to the system daemon serving them if one does.

    With no -f (`defaulted`) and no ./resources.toml, the only daemon running is the
    target, with its files. Returns `files` unchanged when no daemon serves them.
    """
    directory = discovery_dir(environ)
    if defaulted and files[0].exists():
        defaulted = False
    records = _live_records(directory, files[0], refuse=not defaulted)
    if defaulted:
        if len(records) > 1:
            names = ", ".join(f"{r.project} ({r.files[0]})" for r in records)
            raise UsageError(f"no ./resources.toml, and several system daemons run: {names}; name one with -f")
        chosen = records[:1]
    else:
        wanted = canonical(files[0])
        chosen = [r for r in records if r.files and canonical(r.files[0]) == wanted][:1]
    if not chosen:
        return files
    record = chosen[0]
    paths.link_daemon(paths.DaemonLink(canonical(record.files[0]), record.state_dir, record.socket, record.uid))
    return list(record.files) if defaulted else files


def _live_records(directory: Path, first: Path, refuse: bool) -> list[DaemonRecord]:
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return []
    except PermissionError:
        info = None
    try:
        names = sorted(os.listdir(directory)) if info is not None else None
    except PermissionError:
        names = None
    if names is None:
        if refuse and _not_ours(first, info.st_uid if info is not None else None):
            group = _group_of(info) or control_group()
            raise DaemonRefused(
                f"the system daemon's directory {directory} is for root and members of group {group}; "
                f"you (uid {os.getuid()}) are neither: ask an administrator (usermod -aG {group} USER)")
        return []
    assert info is not None
    if not _trusted_dir(directory, info):
        return []
    found = (_read_record(directory / name, info.st_uid) for name in names if name.endswith(".json"))
    return [r for r in found if r is not None]


def _group_of(info: os.stat_result | None) -> str | None:
    """The discovery dir's group (the daemon gave it to its control group): named in a refusal."""
    if info is None:
        return None
    try:
        return grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        return None


def _not_ours(first: Path, directory_owner: int | None) -> bool:
    """A file of root's or of the daemon's user (/etc/vrooli/resources.toml) that is not
    ours is probably the daemon's: refusing is then clearer than "not running". Our own
    files, and another user's checkout, are ordinary projects."""
    try:
        owner = os.stat(first).st_uid
    except OSError:
        return False  # no such file: the loader says so in its own words
    return owner != os.getuid() and owner in (0, directory_owner)


def _trusted_dir(directory: Path, info: os.stat_result) -> bool:
    """Not a symlink, writable by its owner alone, in directories only root can write."""
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_mode & 0o022:
        return False
    for parent in directory.resolve().parents:
        above = os.lstat(parent)
        if above.st_uid not in (0, info.st_uid) or (above.st_mode & 0o022 and not above.st_mode & stat.S_ISVTX):
            return False
    return True


def _read_record(path: Path, owner: int) -> DaemonRecord | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid not in (0, owner):
            return None
        data = json.loads(os.read(fd, MAX_RECORD))
        if not data["files"]:
            return None
        record = DaemonRecord(str(data["project"]), tuple(Path(f) for f in data["files"]),
                              Path(data["state_dir"]), Path(data["socket"]), int(data["pid"]),
                              int(data["uid"]), data.get("unit") if isinstance(data.get("unit"), str) else None)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)
    texts = [record.project, str(record.state_dir), str(record.socket), *(str(f) for f in record.files)]
    if any("\0" in text for text in texts):
        return None  # no path can hold one; resolving it would raise
    if record.uid not in (0, owner) or record.socket.parent != path.parent or not _alive(record.pid):
        return None
    return record


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False  # kill(0 or -1, ...) would ask about whole process groups
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True
