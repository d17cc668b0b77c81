"""The `usage` operation: each resource's memory now and its CPU over a short window.

Memory comes from the same sampler as `status` (a process tree's RSS, or its cgroup's
members; a container's usage from the engine), CPU from two readings of the instance's
cumulative CPU time (psutil over the process tree, or the container's stats), `window`
seconds apart: percent of one core, so a busy two-threaded service can read 200%.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio

from orchestrator.infra.logger import get_logger

if TYPE_CHECKING:
    from orchestrator.engine.supervisor import Supervisor
    from orchestrator.runtimes import Instance

log = get_logger("vrooli.usage")

WINDOW = 1.0  # seconds between the two CPU readings
READ_TIMEOUT = 5.0  # one reading of a container's stats may be slow; never longer than this


async def _cpu_seconds(instances: dict[str, Instance]) -> dict[str, tuple[float, float]]:
    """name -> (cumulative CPU seconds, when read); a resource that cannot be read is left out."""
    found: dict[str, tuple[float, float]] = {}

    async def read(name: str, instance: Instance) -> None:
        try:
            with anyio.move_on_after(READ_TIMEOUT):
                usage = await instance.usage()
                if usage is not None:
                    found[name] = (usage.cpu_seconds, time.monotonic())
        except Exception as exc:  # a vanished process or container: no reading, not an error
            log.debug("cpu unavailable", resource=name, error=repr(exc)[:200])

    async with anyio.create_task_group() as tg:
        for name, instance in instances.items():
            tg.start_soon(read, name, instance)
    return found


async def sample(sup: Supervisor, names: list[str] | None, window: float = WINDOW) -> dict[str, Any]:
    """`{"window_seconds", "resources": {name: {"memory_bytes", "cpu_percent"}}, "stack_memory_bytes"}`."""
    chosen = names or list(sup.records)
    instances = {n: rec.instance for n in chosen if (rec := sup.records[n]).instance is not None
                 and rec.spec.runtime != "external"}
    before = await _cpu_seconds(instances)
    await anyio.sleep(window)
    after = await _cpu_seconds(instances)
    stack = await sup.memory.sample(max_age=0.0)
    rows: dict[str, dict[str, Any]] = {}
    for name in chosen:
        cpu = None
        if name in before and name in after and after[name][1] > before[name][1]:
            busy = max(0.0, after[name][0] - before[name][0])
            cpu = round(100.0 * busy / (after[name][1] - before[name][1]), 2)
        memory = sup.memory.resource(name).used if name in instances else None
        rows[name] = {"memory_bytes": memory, "cpu_percent": cpu}
    return {"window_seconds": window, "resources": rows, "stack_memory_bytes": stack.used}
