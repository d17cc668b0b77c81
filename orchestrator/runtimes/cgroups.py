"""Cgroups for native processes: the kernel's side of `memory_limit`.

A process resource with `memory_limit` runs in a cgroup of its own when the supervisor can
make one (cgroup v2, or the v1 memory controller, writable: as root, or delegated by
systemd). Kept apart from memory.py's sampling and watchdog so the process runtime can
confine what it starts without importing anything that knows the supervisor.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.infra.logger import get_logger

if TYPE_CHECKING:
    from orchestrator.spec import ProjectSpec, ResourceSpec

log = get_logger("vrooli.memory")

CGROUPS_ENV = "VROOLI_MEMORY_CGROUPS"  # "off": never use cgroups; the watchdog enforces every limit
PREFIX = "vrooli."  # a resource's cgroup: vrooli.<resource>.<pid>, in the supervisor's own cgroup
SUPERVISOR_LEAF = "vrooli.supervisor"  # cgroup v2: where the supervisor moves to free its own cgroup
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
REMOVE_WAIT = 5.0  # seconds for a cgroup's last members to go before we give up removing it


def process_stat(pid: int) -> tuple[int, int, int] | None:
    """(parent, process group, RSS bytes) of a process from /proc/PID/stat: one read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rpartition(b")")[2].split()
        return int(fields[1]), int(fields[2]), int(fields[21]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def process_table() -> dict[int, tuple[int, int, int]]:
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (found := process_stat(int(name))) is not None:
            table[int(name)] = found
    return table


def format_size(size: int) -> str:
    """150 MiB, 1.5 GiB: binary units, as `memory_limit = "150m"` means them."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            value = size / (1 << shift)
            text = f"{value:.1f}".rstrip("0").rstrip(".") if value < 10 else f"{value:.0f}"
            return f"{text} {unit}"
    return f"{size} B"


# ---------------------------------------------------------------------------- cgroups


@dataclass(frozen=True, slots=True)
class CgroupRoot:
    """Where resources' cgroups are made: the supervisor's own cgroup, in the hierarchy that
    has the memory controller."""

    version: int  # 1 | 2
    base: Path

    @property
    def label(self) -> str:
        return f"cgroup-v{self.version}"


_detected: list[CgroupRoot | None] = []  # the answer, once asked: it does not change while we run


def cgroups_disabled() -> bool:
    return os.environ.get(CGROUPS_ENV, "").strip().lower() in ("0", "off", "no", "false")


def cgroup_root() -> CgroupRoot | None:
    """The memory cgroup we may create children in, or None (the watchdog then enforces)."""
    if cgroups_disabled():
        return None
    if not _detected:
        try:
            _detected.append(_detect())
        except (OSError, ValueError) as exc:
            log.info("no memory cgroup; the watchdog enforces memory limits", error=str(exc))
            _detected.append(None)
    return _detected[0]


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _cgroup_mounts() -> list[tuple[str, Path, str, frozenset[str]]]:
    """(root inside the hierarchy, mount point, fstype, super options) of each cgroup mount."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append((_unescape(fields[3]), Path(_unescape(fields[4])), tail[0], frozenset(tail[2].split(","))))
    return found


def _cgroups_of(pid: int | str) -> dict[int, str]:
    """A process's cgroup paths: {1: path in the v1 memory hierarchy, 2: path in the v2 one}."""
    paths: dict[int, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and controllers == "":
            paths[2] = path
        elif "memory" in controllers.split(","):
            paths[1] = path
    return paths


def _directory(mounts: list[tuple[str, Path, str, frozenset[str]]], version: int, path: str) -> Path | None:
    """The directory of cgroup `path` where its hierarchy is mounted (None: not visible here)."""
    for root, point, fstype, options in mounts:
        if (fstype, version) not in (("cgroup2", 2), ("cgroup", 1)) or (version == 1 and "memory" not in options):
            continue
        prefix = root.rstrip("/")
        if path == prefix or path.startswith(prefix + "/"):
            relative = path[len(prefix):].strip("/")
            return point / relative if relative else point
    return None


def _words(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


def _detect() -> CgroupRoot | None:
    mounts, own = _cgroup_mounts(), _cgroups_of("self")
    if 2 in own:
        base = _directory(mounts, 2, own[2])
        if base is not None and "memory" in _words(base / "cgroup.controllers") \
                and os.access(base, os.W_OK) and _enable_memory(base):
            return CgroupRoot(2, base)
    if 1 in own:
        base = _directory(mounts, 1, own[1])
        if base is not None and (base / "memory.limit_in_bytes").exists() and os.access(base, os.W_OK):
            return CgroupRoot(1, base)
    log.info("no writable memory cgroup; the watchdog enforces memory limits")
    return None


def _enable_memory(base: Path) -> bool:
    """cgroup v2: hand the memory controller to our children (cgroup.subtree_control).

    The kernel refuses while our cgroup has members of its own ("no internal processes").
    Delegated to us by systemd (Delegate=), the supervisor is its only member: it moves
    into a leaf of its own, as systemd's delegation rules ask. Where others share the
    cgroup (a login session) it moves back and the watchdog enforces instead.
    """
    control = base / "cgroup.subtree_control"
    if "memory" in _words(control):
        return True
    try:
        control.write_text("+memory")
        return True
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            return False
    leaf = base / SUPERVISOR_LEAF
    try:
        leaf.mkdir(exist_ok=True)
        (leaf / "cgroup.procs").write_text(str(os.getpid()))
        control.write_text("+memory")
        return True
    except OSError:
        try:
            (base / "cgroup.procs").write_text(str(os.getpid()))
            leaf.rmdir()
        except OSError:
            pass
        return False


class Cgroup:
    """One resource instance's cgroup: made right after the spawn, removed when it stops."""

    def __init__(self, version: int, path: Path, limit: int) -> None:
        self.version = version
        self.path = path
        self.limit = limit
        self._final_oom_kills: int | None = None
        self._oom_baseline = 0  # kills counted before this instance (a leftover cgroup reused)
        self.reported = False  # its OOM kill was turned into a verdict already

    def __repr__(self) -> str:
        return f"<Cgroup v{self.version} {self.path}>"

    @property
    def label(self) -> str:
        return f"cgroup-v{self.version}"

    @classmethod
    def create(cls, root: CgroupRoot, resource: str, pid: int, limit: int) -> Cgroup:
        path = root.base / f"{PREFIX}{resource}.{pid}"
        path.mkdir(exist_ok=True)  # a leftover of a dead process whose pid came round again
        cgroup = cls(root.version, path, limit)
        cgroup._oom_baseline = cgroup.oom_kills()
        try:
            cgroup._set_limit()
            cgroup._adopt_tree(pid)
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def _set_limit(self) -> None:
        limit = str(self.limit)
        if self.version == 2:
            (self.path / "memory.max").write_text(limit)
            # Swap would let the tree grow past its limit slowly instead of stopping it.
            self._write_optional("memory.swap.max", "0")
            # One OOM kill takes the whole tree, so the resource restarts whole.
            self._write_optional("memory.oom.group", "1")
        else:
            (self.path / "memory.limit_in_bytes").write_text(limit)
            self._write_optional("memory.memsw.limit_in_bytes", limit)  # only with swap accounting

    def _write_optional(self, name: str, value: str) -> None:
        try:
            (self.path / name).write_text(value)
        except OSError:
            pass

    def _adopt_tree(self, pid: int) -> None:
        """Move the process in, then whatever it forked before it moved (new children follow it)."""
        (self.path / "cgroup.procs").write_text(str(pid))
        table = process_table()
        pending = [child for child, (parent, _, _) in table.items() if parent == pid]
        while pending:
            child = pending.pop()
            try:
                (self.path / "cgroup.procs").write_text(str(child))
            except OSError as exc:
                if exc.errno != errno.ESRCH:
                    raise
            pending.extend(grandchild for grandchild, (parent, _, _) in table.items() if parent == child)

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def oom_killed(self) -> bool:
        """The kernel killed a process in here for the memory limit, since we made it."""
        return self.oom_kills() > self._oom_baseline

    def oom_kills(self) -> int:
        """Processes the kernel killed in this cgroup for its memory limit."""
        if self._final_oom_kills is not None:
            return self._final_oom_kills
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = (self.path / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def remove(self) -> bool:
        """Kill what is still inside (it belongs to the resource), then remove the cgroup."""
        if self._final_oom_kills is None:
            self._final_oom_kills = self.oom_kills()
        deadline = time.monotonic() + REMOVE_WAIT
        while True:
            members = self.pids()
            if not members:
                try:
                    self.path.rmdir()
                    return True
                except FileNotFoundError:
                    return True
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        log.warning("cannot remove cgroup", path=str(self.path), error=str(exc))
                        return False
            else:
                self._kill(members)
            if time.monotonic() >= deadline:
                log.warning("cannot remove cgroup: members remain", path=str(self.path), pids=members[:10])
                return False
            time.sleep(0.02)

    def _kill(self, members: list[int]) -> None:
        if self.version == 2 and (self.path / "cgroup.kill").exists():
            self._write_optional("cgroup.kill", "1")
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue


def confine(spec: ResourceSpec, pid: int) -> Cgroup | None:
    """Put a just-started process (and its tree) in a cgroup holding its memory_limit."""
    if spec.memory_limit is None:
        return None
    root = cgroup_root()
    if root is None:
        return None
    try:
        return Cgroup.create(root, spec.name, pid, spec.memory_limit)
    except OSError as exc:
        log.warning("cannot make a cgroup; the watchdog enforces memory_limit", resource=spec.name,
                    error=str(exc))
        return None


def cgroup_of(spec: ResourceSpec, pid: int) -> Cgroup | None:
    """The cgroup an earlier supervisor made for `pid`, when adopting it."""
    if spec.memory_limit is None or cgroups_disabled():
        return None
    try:
        mounts, paths = _cgroup_mounts(), _cgroups_of(pid)
    except (OSError, ValueError):
        return None
    for version in (2, 1):
        found = _directory(mounts, version, paths[version]) if version in paths else None
        if found is not None and found.name == f"{PREFIX}{spec.name}.{pid}":
            cgroup = Cgroup(version, found, spec.memory_limit)
            cgroup._oom_baseline = cgroup.oom_kills()  # only kills from now on are this supervisor's news
            return cgroup
    return None


def sweep(project: ProjectSpec) -> int:
    """Remove cgroups of ours whose process is gone (its supervisor was killed before it could).

    Only where the project limits a process: a stack without limits never touches cgroups.
    """
    if not any(r.memory_limit is not None and r.runtime == "process" for r in project.resources.values()):
        return 0
    root = cgroup_root()
    if root is None:
        return 0
    removed = 0
    try:
        children = list(root.base.iterdir())
    except OSError:
        return 0
    for child in children:
        name, _, pid = child.name.rpartition(".")
        if not child.name.startswith(PREFIX) or not pid.isdigit() or not name:
            continue
        if not _running(int(pid)) and Cgroup(root.version, child, 0).remove():
            removed += 1
    return removed


def held_cgroup(instance: object) -> Cgroup | None:
    """The cgroup a process instance runs in, if it has one (any other instance: None)."""
    cgroup = getattr(instance, "cgroup", None)
    return cgroup if isinstance(cgroup, Cgroup) else None


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie lingers until init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def enforced_by(spec: ResourceSpec, instance: object) -> str | None:
    """Who holds the resource to its memory_limit: cgroup-v1 | cgroup-v2 | watchdog | docker."""
    if spec.memory_limit is None:
        return None
    if spec.runtime == "docker":
        return "docker"
    if spec.runtime != "process":
        return None
    cgroup = held_cgroup(instance)
    if cgroup is not None:
        return cgroup.label
    if instance is not None:
        return "watchdog"
    root = cgroup_root()
    return root.label if root else "watchdog"
