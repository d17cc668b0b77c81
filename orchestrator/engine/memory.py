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

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from orchestrator.infra.logger import get_logger
from orchestrator.plan.scheduler import State
from orchestrator.runtimes.cgroups import Cgroup, enforced_by, format_size, held_cgroup, process_stat, process_table

if TYPE_CHECKING:
    from collections.abc import Mapping

    from orchestrator.engine.events import StackView
    from orchestrator.engine.state_store import Record
    from orchestrator.runtimes import Instance
    from orchestrator.spec import ProjectSpec

log = get_logger("vrooli.memory")

SAMPLE_PERIOD = 1.0  # seconds between samples of process trees
CONTAINER_PERIOD = 5.0  # container stats cost the engine real work: sampled less often
DEMAND_WINDOW = 60.0  # after a status or scrape, keep sampling this long
USAGE_TIMEOUT = 3.0


# ---------------------------------------------------------------------------- sampling


def tree_rss(roots: dict[str, tuple[int, Cgroup | None]]) -> dict[str, int | None]:
    """RSS of each resource's processes, in at most one pass over the process table.

    In a cgroup: its members, exactly. Otherwise: the process, the members of its
    process group (it leads one: every process starts in its own session), and all their
    descendants. One pass for every resource, not one per resource: the watchdog's cost
    does not grow with the stack (3 ms a second here for ~120 processes).
    """
    table = process_table() if any(cgroup is None for _, cgroup in roots.values()) else {}
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    result: dict[str, int | None] = {}
    for name, (root, cgroup) in roots.items():
        if cgroup is not None:
            stats = [process_stat(pid) for pid in cgroup.pids() or [root]]
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


class Watched(Protocol):
    """What the monitor needs of the supervisor (which satisfies it structurally), so this
    module never imports the supervisor back."""

    @property
    def project(self) -> ProjectSpec: ...
    @property
    def records(self) -> Mapping[str, Record]: ...
    def recycle_for_memory(self, rec: Record) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Sample:
    ident: str  # the instance it was taken of: a restart makes it stale
    used: int | None
    at: float


class MemoryMonitor:
    """Samples memory, enforces watchdog limits, and keeps the verdicts status shows."""

    def __init__(self, sup: Watched) -> None:
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
                and rec.instance is not None and held_cgroup(rec.instance) is None
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
        processes = {name: (instance.pid, held_cgroup(instance)) for name, instance in due
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
        cgroup = held_cgroup(rec.instance)
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
