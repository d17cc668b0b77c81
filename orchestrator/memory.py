"""Memory: limits for native processes, and a budget for the whole stack.

A process resource with `memory_limit` runs in a cgroup of its own when the supervisor can
make one (cgroup v2, or the v1 memory controller, writable: as root, or delegated by
systemd); the kernel enforces the limit, and its OOM kill reads "killed: memory limit
512 MiB". Where no cgroup can be had (or VROOLI_MEMORY_CGROUPS=off), a watchdog samples the
tree's RSS every second and recycles the resource once it has stayed above the limit for
`memory_grace`. Containers are limited by their engine.

The same samples give the stack's total against `[project] memory_budget` (over it,
/health warns) and `memory_budget_peak` (background model loads wait below it).

Nothing here runs unless asked for: no cgroup is touched without a process memory_limit,
and the sampler only samples while a watchdog limit or a budget is set, or while someone
looked (status, /metrics) within the last minute.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from orchestrator.scheduler import State

if TYPE_CHECKING:
    from orchestrator.events import StackView
    from orchestrator.runtimes import Instance
    from orchestrator.spec import ProjectSpec, ResourceSpec
    from orchestrator.supervisor import Record, Supervisor

log = structlog.get_logger("vrooli.memory")

CGROUPS_ENV = "VROOLI_MEMORY_CGROUPS"  # "off": never use cgroups; the watchdog enforces every limit
PREFIX = "vrooli."  # a resource's cgroup: vrooli.<resource>.<pid>, in the supervisor's own cgroup
SUPERVISOR_LEAF = "vrooli.supervisor"  # cgroup v2: where the supervisor moves to free its own cgroup
SAMPLE_PERIOD = 1.0  # seconds between samples of process trees
CONTAINER_PERIOD = 5.0  # container stats cost the engine real work: sampled less often
DEMAND_WINDOW = 60.0  # after a status or scrape, keep sampling this long
USAGE_TIMEOUT = 3.0
REMOVE_WAIT = 5.0  # seconds for a cgroup's last members to go before we give up removing it
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


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
        table = _process_table()
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


def _cgroup(instance: Instance | None) -> Cgroup | None:
    cgroup = getattr(instance, "cgroup", None)
    return cgroup if isinstance(cgroup, Cgroup) else None


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie lingers until init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def enforced_by(spec: ResourceSpec, instance: Instance | None) -> str | None:
    """Who holds the resource to its memory_limit: cgroup-v1 | cgroup-v2 | watchdog | docker."""
    if spec.memory_limit is None:
        return None
    if spec.runtime == "docker":
        return "docker"
    if spec.runtime != "process":
        return None
    cgroup = _cgroup(instance)
    if cgroup is not None:
        return cgroup.label
    if instance is not None:
        return "watchdog"
    root = cgroup_root()
    return root.label if root else "watchdog"


# ---------------------------------------------------------------------------- sampling


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent, process group, RSS bytes) of a process from /proc/PID/stat: one read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rpartition(b")")[2].split()
        return int(fields[1]), int(fields[2]), int(fields[21]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def _process_table() -> dict[int, tuple[int, int, int]]:
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (found := _stat(int(name))) is not None:
            table[int(name)] = found
    return table


def tree_rss(roots: dict[str, tuple[int, Cgroup | None]]) -> dict[str, int | None]:
    """RSS of each resource's processes, in at most one pass over the process table.

    In a cgroup: its members, exactly. Otherwise: the process, the members of its
    process group (it leads one: every process starts in its own session), and all their
    descendants. One pass for every resource, not one per resource: the watchdog's cost
    does not grow with the stack (3 ms a second here for ~120 processes).
    """
    table = _process_table() if any(cgroup is None for _, cgroup in roots.values()) else {}
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    result: dict[str, int | None] = {}
    for name, (root, cgroup) in roots.items():
        if cgroup is not None:
            stats = [_stat(pid) for pid in cgroup.pids() or [root]]
            result[name] = sum(s[2] for s in stats if s is not None) if any(stats) else None
            continue
        if root not in table:
            result[name] = None
            continue
        seen: set[int] = set()
        pending = [root, *(pid for pid, (_, group, _) in table.items() if group == root)]
        while pending:
            pid = pending.pop()
            if pid not in seen:
                seen.add(pid)
                pending.extend(children.get(pid, ()))
        result[name] = sum(table[pid][2] for pid in seen if pid in table)
    return result



@dataclass(frozen=True, slots=True)
class ResourceMemory:
    name: str
    used: int | None  # bytes: RSS of the process tree, or the container's usage
    limit: int | None
    enforced_by: str | None
    recycles: int = 0  # restarts its memory_limit forced
    last_recycle: str | None = None  # why the latest of them happened

    def fields(self) -> dict[str, Any]:
        return {"memory_bytes": self.used, "memory_limit_bytes": self.limit,
                "memory_enforced_by": self.enforced_by, "memory_recycles": self.recycles,
                "memory_last_recycle": self.last_recycle}


@dataclass(frozen=True, slots=True)
class StackMemory:
    used: int  # the sum over resources with a sample
    budget: int | None
    peak: int | None
    resources: tuple[ResourceMemory, ...]
    complete: bool  # every running resource has a current sample

    def warning(self) -> str | None:
        if self.peak is not None and self.used > self.peak:
            return f"stack memory {format_size(self.used)} is over its peak budget {format_size(self.peak)}"
        if self.budget is not None and self.used > self.budget:
            return f"stack memory {format_size(self.used)} is over its budget {format_size(self.budget)}"
        return None

    def to_json(self) -> dict[str, Any]:
        return {"bytes": self.used, "budget_bytes": self.budget, "peak_budget_bytes": self.peak,
                "warning": self.warning()}


@dataclass(frozen=True, slots=True)
class _Sample:
    ident: str  # the instance it was taken of: a restart makes it stale
    used: int | None
    at: float


class MemoryMonitor:
    """Samples memory, enforces watchdog limits, and keeps the verdicts status shows."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.recycles: dict[str, int] = {}  # resource -> restarts forced by its memory_limit
        self._last_recycle: dict[str, str] = {}
        self._samples: dict[str, _Sample] = {}
        self._over: dict[str, tuple[str, float]] = {}  # resource -> (instance, over the limit since)
        self._verdicts: dict[str, tuple[object, str]] = {}  # resource -> (its start, why it ended)
        self._demand_until = 0.0
        self._over_budget = False

    # -------------------------------------------------------------- the loop

    async def run(self) -> None:
        while True:
            await anyio.sleep(SAMPLE_PERIOD)
            try:
                await self._tick()
            except Exception as exc:  # a sampling bug must never take the supervisor down
                log.warning("memory sampling failed", error=repr(exc)[:300])

    async def _tick(self) -> None:
        project = self.sup.project
        everything = project.memory_budget is not None or project.memory_budget_peak is not None \
            or time.monotonic() < self._demand_until
        watched = self._watchdog_records()
        if not everything and not watched:
            return
        await self._refresh(None if everything else {r.spec.name for r in watched}, SAMPLE_PERIOD / 2)
        self._enforce(watched)
        if everything:
            self._note_budget(self.stack(demand=False))

    def _watchdog_records(self) -> list[Record]:
        """Running processes with a limit and no cgroup: the watchdog holds them to it."""
        return [rec for rec in self.sup.records.values()
                if rec.spec.runtime == "process" and rec.spec.memory_limit is not None
                and rec.instance is not None and _cgroup(rec.instance) is None
                and rec.state in (State.READY, State.UNHEALTHY)]

    async def _refresh(self, names: set[str] | None, max_age: float) -> None:
        now = time.monotonic()
        due: list[tuple[str, Instance]] = []
        for name, rec in self.sup.records.items():
            instance = rec.instance
            if instance is None or (names is not None and name not in names):
                continue
            period = max(max_age, CONTAINER_PERIOD) if rec.spec.runtime == "docker" else max_age
            old = self._samples.get(name)
            if old is None or old.ident != instance.ident or now - old.at >= period:
                due.append((name, instance))
        processes = {name: (instance.pid, _cgroup(instance)) for name, instance in due
                     if self.sup.records[name].spec.runtime == "process" and instance.pid}
        if processes:
            found = await anyio.to_thread.run_sync(tree_rss, processes)
            at = time.monotonic()
            for name, instance in due:
                if name in found:
                    self._samples[name] = _Sample(instance.ident, found[name], at)
        others = [(name, instance) for name, instance in due if name not in processes]
        if others:
            async with anyio.create_task_group() as tg:
                for name, instance in others:
                    tg.start_soon(self._sample_one, name, instance)

    async def _sample_one(self, name: str, instance: Instance) -> None:
        used = None
        try:
            with anyio.move_on_after(USAGE_TIMEOUT):
                usage = await instance.usage()
                used = usage.rss_bytes if usage is not None else None
        except Exception as exc:
            log.debug("memory unavailable", resource=name, error=repr(exc)[:200])
        self._samples[name] = _Sample(instance.ident, used, time.monotonic())

    def absorb(self, usage: dict[str, Any]) -> None:
        """Take samples someone else just made (a /metrics scrape's usage, by resource)."""
        now = time.monotonic()
        for name, found in usage.items():
            rec = self.sup.records.get(name)
            if rec is not None and rec.instance is not None:
                self._samples[name] = _Sample(rec.instance.ident, int(found.rss_bytes), now)

    # -------------------------------------------------------------- what it found

    async def sample(self, max_age: float = SAMPLE_PERIOD) -> StackMemory:
        """The stack's memory now (process trees at most `max_age` old; containers 5 s)."""
        await self._refresh(None, max_age)
        return self.stack()

    def stack(self, demand: bool = True) -> StackMemory:
        """The latest samples, without sampling; `demand` keeps the sampler going a while."""
        if demand:
            self._demand_until = time.monotonic() + DEMAND_WINDOW
        rows = tuple(self.resource(name) for name in self.sup.records)
        running = [n for n, r in self.sup.records.items() if r.instance is not None]
        complete = all(row.used is not None for row in rows if row.name in running)
        project = self.sup.project
        return StackMemory(sum(row.used or 0 for row in rows), project.memory_budget,
                           project.memory_budget_peak, rows, complete)

    def resource(self, name: str) -> ResourceMemory:
        rec = self.sup.records[name]
        sample, instance = self._samples.get(name), rec.instance
        used = sample.used if sample is not None and instance is not None and sample.ident == instance.ident \
            else None
        return ResourceMemory(name, used, rec.spec.memory_limit, enforced_by(rec.spec, instance),
                              self.recycles.get(name, 0), self._last_recycle.get(name))

    # -------------------------------------------------------------- enforcing

    def _enforce(self, watched: list[Record]) -> None:
        now = time.monotonic()
        for name in set(self._over) - {rec.spec.name for rec in watched}:
            del self._over[name]
        for rec in watched:
            spec, instance = rec.spec, rec.instance
            sample = self._samples.get(spec.name)
            if instance is None or spec.memory_limit is None or sample is None or sample.used is None \
                    or sample.ident != instance.ident:
                continue
            if sample.used <= spec.memory_limit:
                self._over.pop(spec.name, None)
                continue
            ident, since = self._over.get(spec.name, (instance.ident, now))
            since = since if ident == instance.ident else now
            self._over[spec.name] = (instance.ident, since)
            if now - since >= spec.memory_grace:
                del self._over[spec.name]
                self._recycle(rec, sample.used)

    def _recycle(self, rec: Record, used: int) -> None:
        spec = rec.spec
        assert spec.memory_limit is not None
        if not self.sup.recycle_for_memory(rec):
            return  # not watched right now (just stopping, or not ready yet): nothing to end
        self._record_verdict(rec, f"recycled: memory {format_size(used)} over limit "
                                  f"{format_size(spec.memory_limit)} for {spec.memory_grace:g}s")
        log.warning("memory over limit; recycling", resource=spec.name, rss_bytes=used,
                    limit_bytes=spec.memory_limit, grace_seconds=spec.memory_grace)

    def _record_verdict(self, rec: Record, text: str) -> None:
        self._verdicts[rec.spec.name] = (rec.started_at, text)
        self._last_recycle[rec.spec.name] = text
        self.recycles[rec.spec.name] = self.recycles.get(rec.spec.name, 0) + 1

    def note_stopped(self, rec: Record) -> None:
        """An instance has stopped: if the kernel killed in its cgroup, that is why it ended."""
        cgroup = _cgroup(rec.instance)
        if cgroup is not None and not cgroup.reported and cgroup.oom_killed():
            cgroup.reported = True
            log.warning("the kernel killed the resource at its memory limit", resource=rec.spec.name,
                        limit_bytes=cgroup.limit, cgroup=str(cgroup.path))
            self._record_verdict(rec, f"killed: memory limit {format_size(cgroup.limit)}")

    def verdict(self, rec: Record) -> str | None:
        """Why this start of the resource ended, when its memory limit ended it (once)."""
        found = self._verdicts.pop(rec.spec.name, None)
        return found[1] if found is not None and found[0] == rec.started_at else None

    def _note_budget(self, stack: StackMemory) -> None:
        warning = stack.warning()
        if (warning is not None) != self._over_budget:
            self._over_budget = warning is not None
            if warning:
                log.warning(warning, stack_bytes=stack.used, budget_bytes=stack.budget,
                            peak_budget_bytes=stack.peak)
            else:
                log.info("stack memory within budget again", stack_bytes=stack.used)

    # -------------------------------------------------------------- model loads

    async def load_wait(self, size: int) -> tuple[bool, str | None]:
        """Whether loading `size` more bytes must wait for the peak budget: (never fits, why)."""
        peak = self.sup.project.memory_budget_peak
        if peak is None:
            return False, None
        if size > peak:
            return True, f"needs {format_size(size)}, more than memory_budget_peak {format_size(peak)}"
        stack = await self.sample()
        if stack.used + size <= peak:
            return False, None
        return False, (f"needs {format_size(size)}; stack at {format_size(stack.used)} of "
                       f"{format_size(peak)} peak budget")


# ---------------------------------------------------------------------------- health, metrics


@dataclass(frozen=True, slots=True)
class MetricFamily:
    name: str  # counters end in _total
    kind: str  # gauge | counter
    help: str
    samples: tuple[tuple[dict[str, str], float], ...]


def health_check(sup: StackView, now: str) -> tuple[str, dict[str, Any]] | None:
    """The /health check of the stack's memory against its budget (None: no budget set)."""
    if sup.project.memory_budget is None and sup.project.memory_budget_peak is None:
        return None
    stack: StackMemory = sup.memory.stack()
    warning = stack.warning()
    entry: dict[str, Any] = {"componentId": "stack", "componentType": "system", "observedValue": stack.used,
                             "observedUnit": "bytes", "status": "warn" if warning else "pass", "time": now}
    if warning:
        entry["output"] = warning
    return "stack:memory", entry


def metric_families(sup: StackView) -> list[MetricFamily]:
    stack: StackMemory = sup.memory.stack()
    budgets = tuple(({"kind": kind}, float(value)) for kind, value in (("idle", stack.budget), ("peak", stack.peak))
                    if value is not None)
    limited = [n for n, r in sup.records.items() if r.spec.memory_limit is not None and r.spec.runtime == "process"]
    return [
        MetricFamily("vrooli_stack_memory_bytes", "gauge",
                     "Memory of the whole stack: every process tree's RSS plus every container's usage.",
                     (({}, float(stack.used)),) if stack.complete else ()),
        MetricFamily("vrooli_stack_memory_budget_bytes", "gauge",
                     "[project] memory_budget (kind=idle) and memory_budget_peak (kind=peak).", budgets),
        MetricFamily("vrooli_resource_recycles_total", "counter",
                     "Restarts forced by memory_limit: a kernel OOM kill, or the RSS watchdog.",
                     tuple(({"resource": n, "reason": "memory"}, float(sup.memory.recycles.get(n, 0)))
                           for n in limited)),
    ]
