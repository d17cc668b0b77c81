"""A read-only view of the stack and its changes: what the features that watch it rely on.

Model warm-up (models.py), the systemd reporter (sd_notify.py), the health endpoint (health.py)
and memory's health and metrics helpers depend on these Protocols, not on the supervisor or
the service: the Supervisor satisfies them structurally, and the composition root
(service.py) hands it to them. A leaf module: it imports nothing of the package at run time,
so nothing that watches the stack can pull the supervisor (or an import cycle) in with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from datetime import datetime

    import anyio

    from orchestrator.plan.scheduler import State
    from orchestrator.spec import ProjectSpec, ResourceSpec

# What a change subscriber is called with (nothing: it reads the view again).
ChangeHook = Callable[[], None]
# A reload's phases ("reloading", "reloaded", "rejected") and what came with each.
ReloadHook = Callable[[str, dict[str, Any]], Awaitable[None]]


class RecordView(Protocol):
    """One resource as the watchers read it (supervisor's Record satisfies it)."""

    @property
    def spec(self) -> ResourceSpec: ...
    @property
    def state(self) -> State: ...
    @property
    def message(self) -> str: ...
    @property
    def instance(self) -> Any: ...  # runtimes.Instance, or None while nothing runs
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def ready_at(self) -> datetime | None: ...
    @property
    def startup_seconds(self) -> float | None: ...
    @property
    def restarts(self) -> int: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def last_probe(self) -> Any: ...


class MemoryView(Protocol):
    """The stack's memory as the watchers read it (memory.MemoryMonitor satisfies it).

    `stack()` returns memory.StackMemory; typed loosely here so this module stays a leaf."""

    recycles: dict[str, int]

    def stack(self, demand: bool = True) -> Any: ...
    def absorb(self, usage: dict[str, Any]) -> None: ...
    async def load_wait(self, size: int) -> tuple[bool, str | None]: ...


class StackView(Protocol):
    """The stack and its change feed: read, wait for a change, say that one happened.

    `notify_changed` is the one write a watcher may do: model progress lives in the model
    manager, and the feed must wake whoever shows it."""

    @property
    def project(self) -> ProjectSpec: ...
    @property
    def records(self) -> Mapping[str, RecordView]: ...
    @property
    def wanted(self) -> AbstractSet[str]: ...
    @property
    def version(self) -> int: ...
    @property
    def loop_heartbeat(self) -> float: ...
    @property
    def shutdown_requested(self) -> anyio.Event: ...
    @property
    def memory(self) -> MemoryView: ...
    @property
    def on_change(self) -> list[ChangeHook]: ...

    def settled(self, names: Iterable[str]) -> bool: ...
    async def wait_change(self, since: int) -> None: ...
    def notify_changed(self) -> None: ...
    def record_warmup(self, name: str, began: datetime, ended: datetime) -> None: ...


class ReloadEvents(Protocol):
    """Where a reload announces its phases (the service's reload operation)."""

    @property
    def on_reload(self) -> list[ReloadHook]: ...
