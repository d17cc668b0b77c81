"""Ready gates: a resource whose probe passed is READY only once its gates pass (eager
model loading is one); a gate that fails fails the start with its reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from orchestrator import config
from orchestrator.engine.supervisor import Supervisor
from orchestrator.plan.scheduler import State
from orchestrator.runtimes.fake import FakeRuntime, Script
from orchestrator.spec import ResourceSpec

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def state(sup: Supervisor, name: str) -> State:
    """The resource's state now. A call, not an attribute: mypy would carry an earlier
    `assert ... is State.X` over the awaits, across which the supervisor moves it on."""
    return sup.records[name].state


def make(tmp_path: Path) -> Supervisor:
    path = tmp_path / "resources.toml"
    path.write_text('[project]\nname = "fake"\nstate_dir = "state"\n'
                    '[resources.db]\ncommand = ["fake"]\nhealth = { probe = "log", pattern = "ready" }\n'
                    '[resources.app]\ncommand = ["fake"]\ndepends_on = ["db"]\n'
                    'health = { probe = "log", pattern = "ready" }\n')
    fake = FakeRuntime({"db": Script(ready_after=0.01), "app": Script(ready_after=0.01)})
    return Supervisor(config.load([path], {}), runtime_factory=lambda kind, proj: fake)


async def wait_for_state(sup: Supervisor, name: str, state: State) -> None:
    with anyio.fail_after(20):
        while sup.records[name].state is not state:
            version = sup.version
            await sup.wait_change(since=version)


async def test_ready_waits_for_the_gate_and_dependents_wait_with_it(tmp_path: Path) -> None:
    sup = make(tmp_path)
    opened = anyio.Event()
    seen: list[ResourceSpec] = []

    async def gate(spec: ResourceSpec, report: Callable[[str], None]) -> str | None:
        seen.append(spec)
        report("warming the cache")
        await opened.wait()
        return None

    sup.ready_gates["db"] = [gate]
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        selected = sup.request_up()
        with anyio.fail_after(20):
            while sup.records["db"].message != "warming the cache":
                await sup.wait_change()
        assert state(sup, "db") is State.STARTING
        assert state(sup, "app") is State.PENDING  # waits for its dependency's gate
        assert [spec.name for spec in seen] == ["db"]
        opened.set()
        with anyio.fail_after(20):
            await sup.wait_settled(selected)
        assert state(sup, "db") is State.READY and state(sup, "app") is State.READY
        sup.shutdown_requested.set()


async def test_a_gate_that_fails_fails_the_start_with_its_reason(tmp_path: Path) -> None:
    sup = make(tmp_path)

    async def gate(spec: ResourceSpec, report: Callable[[str], None]) -> str | None:
        return "cache: no space left"

    sup.ready_gates["db"] = [gate]
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        with anyio.fail_after(20):
            await sup.wait_settled(sup.request_up())
        assert (sup.records["db"].state, sup.records["db"].message) == (State.FAILED, "cache: no space left")
        assert sup.records["app"].state is State.BLOCKED
        assert sup.records["db"].instance is None  # what a failed gate started is stopped
        sup.shutdown_requested.set()
