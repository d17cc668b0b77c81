"""Runtimes run one resource: a native process, a Docker container, an external service
(only probed), or a fake for tests.

Each is a small plug-in behind `Runtime`; the supervisor never knows which one it drives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from orchestrator.infra.logs import OutputLog
    from orchestrator.spec import ProjectSpec, ResourceSpec


# Instance.wait() returns an exit code, or minus the signal that killed it. When the
# status cannot be known (an adopted process is not our child; a container vanished)
# it returns this, which no real exit status or signal can be.
EXIT_UNKNOWN = 256


def killed_by(number: int) -> str:
    """One wording for a process, a container and a hook killed by a signal."""
    import signal

    try:
        return f"killed by signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"killed by signal {number}"


@dataclass(frozen=True, slots=True)
class Usage:
    rss_bytes: int
    cpu_seconds: float


@dataclass(frozen=True, slots=True)
class Adoptable:
    """What the supervisor records so a restarted supervisor can take a resource back."""

    kind: str  # "process" | "docker"
    ident: str  # pid, or container id
    create_time: float  # process start time (psutil), or 0 for containers
    config_hash: str


class Instance(Protocol):
    """One running incarnation of a resource."""

    @property
    def pid(self) -> int | None: ...

    @property
    def ident(self) -> str: ...

    async def wait(self) -> int:
        """Wait for the exit and return its code (negative: killed by that signal)."""
        ...

    async def stop(self, signal_name: str, timeout: float) -> None:
        """Ask it to stop, escalate to SIGKILL after `timeout`, return when nothing is left."""
        ...

    async def exec_inside(self, command: tuple[str, ...], timeout: float) -> tuple[int, str]: ...

    async def usage(self) -> Usage | None: ...

    def adoptable(self) -> Adoptable: ...


class Runtime(Protocol):
    async def preflight(self) -> None:
        """Fail fast, before anything starts, if the runtime cannot work at all."""
        ...

    async def start(self, spec: ResourceSpec, output: OutputLog, tasks: TaskGroup,
                    report: Callable[[str], None] | None = None) -> Instance:
        """Start one instance. `report` shows progress (an image pull) as the resource's message."""
        ...

    async def prepare(self, spec: ResourceSpec) -> None:
        """Get ready to start, while the resource still waits for its dependencies."""
        ...

    async def discard(self, spec: ResourceSpec) -> None:
        """Undo `prepare` for a resource that will not start after all."""
        ...

    async def adopt(self, spec: ResourceSpec, record: Adoptable, output: OutputLog,
                    tasks: TaskGroup) -> Instance | None:
        """Take back a resource left running by an earlier supervisor, if it is still ours."""
        ...

    async def reclaim(self, record: Adoptable) -> Instance | None:
        """What a record left by an earlier supervisor names, only to stop it: the config no
        longer declares that resource (or not like this), so there is no spec to adopt it
        with. None if it is gone, or not this runtime's to stop that way."""
        ...

    async def cleanup(self, project: ProjectSpec, remove_volumes: bool) -> None:
        """After a full `down`: remove what the runtime made for the project (networks, volumes)."""
        ...


def runtime_for(kind: str, project: ProjectSpec) -> Runtime:
    if kind == "process":
        from orchestrator.runtimes.process import ProcessRuntime
        return ProcessRuntime()
    if kind == "docker":
        from orchestrator.runtimes.docker import DockerRuntime
        return DockerRuntime(project)
    if kind == "external":
        from orchestrator.runtimes.external import ExternalRuntime
        return ExternalRuntime()
    raise ValueError(f"unknown runtime {kind!r}")
