"""A scripted runtime for scheduler and supervisor tests: no processes, real timing.

Each resource gets a `Script`: how long `start` takes, when the "service" prints its
ready line (the log probe sees it), and whether and how it exits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from orchestrator.errors import StartFailed
from orchestrator.runtimes import Adoptable, Usage

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from orchestrator.infra.logs import OutputLog
    from orchestrator.spec import ProjectSpec, ResourceSpec


@dataclass(frozen=True, slots=True)
class Script:
    start_delay: float = 0.0
    ready_after: float = 0.0  # prints "ready" after this long
    exit_after: float | None = None
    exit_code: int = 0
    fail_start: str | None = None


@dataclass
class FakeRuntime:
    scripts: dict[str, Script] = field(default_factory=dict)
    starts: dict[str, list[float]] = field(default_factory=dict)  # monotonic start times
    stops: dict[str, list[float]] = field(default_factory=dict)
    _next_pid: int = 10_000

    async def preflight(self) -> None:
        return None

    async def prepare(self, spec: ResourceSpec) -> None:
        return None

    async def discard(self, spec: ResourceSpec) -> None:
        return None

    async def start(self, spec: ResourceSpec, output: OutputLog, tasks: TaskGroup,
                    report: Callable[[str], None] | None = None) -> FakeInstance:
        script = self.scripts.get(spec.name, Script())
        self.starts.setdefault(spec.name, []).append(time.monotonic())
        await anyio.sleep(script.start_delay)
        if script.fail_start:
            raise StartFailed(script.fail_start)
        self._next_pid += 1
        instance = FakeInstance(self, spec.name, self._next_pid, script)
        tasks.start_soon(instance.play, output)
        return instance

    async def adopt(self, spec: ResourceSpec, record: Adoptable, output: OutputLog,
                    tasks: TaskGroup) -> FakeInstance | None:
        return None

    async def reclaim(self, record: Adoptable) -> FakeInstance | None:
        return None

    async def cleanup(self, project: ProjectSpec, remove_volumes: bool) -> None:
        return None


class FakeInstance:
    def __init__(self, runtime: FakeRuntime, name: str, pid: int, script: Script) -> None:
        self.runtime = runtime
        self.name = name
        self._pid = pid
        self.script = script
        self.exited = anyio.Event()
        self.exit_code = 0
        self._scope = anyio.CancelScope()

    def __repr__(self) -> str:
        return f"<FakeInstance {self.name} pid={self._pid}>"

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def ident(self) -> str:
        return str(self._pid)

    async def play(self, output: OutputLog) -> None:
        events = [(self.script.ready_after, "ready")]
        if self.script.exit_after is not None:
            events.append((self.script.exit_after, "exit"))
        elapsed = 0.0
        with self._scope:
            for at, what in sorted(events):
                await anyio.sleep(max(0.0, at - elapsed))
                elapsed = at
                if what == "ready":
                    output.write(f"{self.name} ready\n".encode())
                else:
                    self.exit_code = self.script.exit_code
                    self.exited.set()
                    return

    async def wait(self) -> int:
        await self.exited.wait()
        return self.exit_code

    async def stop(self, signal_name: str, timeout: float) -> None:
        self.runtime.stops.setdefault(self.name, []).append(time.monotonic())
        if not self.exited.is_set():
            self.exit_code = -15
            self.exited.set()
        self._scope.cancel()

    async def exec_inside(self, command: tuple[str, ...], timeout: float) -> tuple[int, str]:
        return 1, "fake runtime"

    async def usage(self) -> Usage | None:
        return Usage(0, 0.0)

    def adoptable(self) -> Adoptable:
        return Adoptable("fake", str(self._pid), 0.0, "")
