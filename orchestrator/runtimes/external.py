"""External resources: services that run elsewhere (a managed Postgres, a shared Redis).

vrooli never starts, stops or restarts them; it only probes them. The "instance" is a
stand-in for the service's presence: it never exits on its own, has no pid, and stopping
it only stops watching. Dependents wait for its probe like for any other resource, and
after it was ready a failing probe makes it `unhealthy` (the supervisor never restarts an
external resource: it is not ours to restart).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from orchestrator.runtimes import Adoptable, Usage

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from orchestrator.infra.logs import OutputLog
    from orchestrator.spec import ProjectSpec, ResourceSpec

KIND = "external"


class ExternalInstance:
    def __init__(self, spec: ResourceSpec) -> None:
        self._where = spec.health.describe() if spec.health else spec.name
        self._config_hash = spec.config_hash()
        self._stopped = anyio.Event()

    def __repr__(self) -> str:
        return f"<ExternalInstance {self._where}>"

    @property
    def pid(self) -> int | None:
        return None

    @property
    def ident(self) -> str:
        return self._where

    async def wait(self) -> int:
        # Never "exits": only its probe says whether it is there. Returns once we stop
        # watching it, so a `down` does not wait on a service that is not ours.
        await self._stopped.wait()
        return 0

    async def stop(self, signal_name: str, timeout: float) -> None:
        self._stopped.set()

    async def exec_inside(self, command: tuple[str, ...], timeout: float) -> tuple[int, str]:
        return 1, "an external resource has no inside to run a command in"

    async def usage(self) -> Usage | None:
        return None

    def adoptable(self) -> Adoptable:
        return Adoptable(KIND, self._where, 0.0, self._config_hash)


class ExternalRuntime:
    async def preflight(self) -> None:
        return None

    async def prepare(self, spec: ResourceSpec) -> None:
        return None

    async def discard(self, spec: ResourceSpec) -> None:
        return None

    async def start(self, spec: ResourceSpec, output: OutputLog, tasks: TaskGroup,
                    report: Callable[[str], None] | None = None) -> ExternalInstance:
        output.write(f"vrooli does not start {spec.name}: it is external; "
                     f"watching {spec.health.describe() if spec.health else 'nothing'}\n".encode())
        return ExternalInstance(spec)

    async def adopt(self, spec: ResourceSpec, record: Adoptable, output: OutputLog,
                    tasks: TaskGroup) -> ExternalInstance | None:
        # Nothing of ours runs, so there is nothing to lose: watch it again.
        return ExternalInstance(spec)

    async def reclaim(self, record: Adoptable) -> ExternalInstance | None:
        return None  # nothing of ours runs: there is nothing to stop

    async def cleanup(self, project: ProjectSpec, remove_volumes: bool) -> None:
        return None
