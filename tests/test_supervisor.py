"""Supervisor decisions carried out over time, with the scripted fake runtime (no processes)."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from orchestrator import config
from orchestrator.engine.supervisor import Supervisor
from orchestrator.plan.scheduler import State
from orchestrator.runtimes import EXIT_UNKNOWN
from orchestrator.runtimes.fake import FakeRuntime, Script
from orchestrator.spec import ProjectSpec

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make(tmp_path: Path, body: str, scripts: dict[str, Script]) -> tuple[Supervisor, FakeRuntime]:
    path = tmp_path / "resources.toml"
    path.write_text(f'[project]\nname = "fake"\nstate_dir = "state"\n{body}')
    project = config.load([path], {})
    fake = FakeRuntime(scripts)
    return Supervisor(project, runtime_factory=lambda kind, proj: fake), fake


def res(name: str, deps: str = "[]", extra: str = "") -> str:
    return (f'[resources.{name}]\ncommand = ["fake"]\ndepends_on = {deps}\n'
            f'health = {{ probe = "log", pattern = "ready" }}\n{extra}\n')


async def run_until_settled(sup: Supervisor, names: list[str] | None = None, timeout: float = 10) -> None:
    selected = sup.request_up(names)
    with anyio.fail_after(timeout):
        await sup.wait_settled(selected)


async def test_dependent_starts_when_its_own_dependency_is_ready_not_the_wave(tmp_path: Path) -> None:
    sup, fake = make(tmp_path, res("slow") + res("fast") + res("child", '["fast"]'),
                     {"slow": Script(ready_after=1.0), "fast": Script(ready_after=0.05)})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        t0 = time.monotonic()
        await run_until_settled(sup)
        assert fake.starts["child"][0] - t0 < 0.5  # did not wait for `slow` (1 s)
        assert fake.starts["child"][0] >= fake.starts["fast"][0] + 0.05
        assert all(sup.records[n].state is State.READY for n in ("slow", "fast", "child"))
        sup.shutdown_requested.set()


async def test_failure_blocks_dependents_and_independent_branch_carries_on(tmp_path: Path) -> None:
    sup, fake = make(tmp_path, res("db") + res("app", '["db"]') + res("web", '["app"]') + res("cache"),
                     {"db": Script(fail_start="command not found: postgres")})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await run_until_settled(sup)
        assert sup.records["db"].state is State.FAILED
        assert sup.records["app"].message == "dependency db failed: command not found: postgres"
        assert sup.records["web"].state is State.BLOCKED
        assert "dependency app failed" in sup.records["web"].message
        assert sup.records["cache"].state is State.READY
        assert "app" not in fake.starts
        sup.shutdown_requested.set()


async def test_start_timeout_fails_with_last_probe_message(tmp_path: Path) -> None:
    sup, fake = make(tmp_path, res("never", extra='start_timeout = "300ms"'), {"never": Script(ready_after=60)})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        t0 = time.monotonic()
        await run_until_settled(sup)
        assert 0.25 < time.monotonic() - t0 < 2
        rec = sup.records["never"]
        assert rec.state is State.FAILED
        assert rec.message == "not ready after 0.3s: log: waiting for /ready/"
        assert fake.stops["never"]  # the half-started instance was stopped
        sup.shutdown_requested.set()


async def test_exit_before_ready_is_a_failure_and_zero_exit_completes(tmp_path: Path) -> None:
    body = (res("crash") + res("oneshot") + res("after", '{ oneshot = "completed" }')
            + '[resources.migrate]\ncommand = ["fake"]\n' + res("after_migrate", '{ migrate = "completed" }'))
    sup, _fake = make(tmp_path, body, {"crash": Script(ready_after=5, exit_after=0.05, exit_code=3),
                                      "oneshot": Script(ready_after=0.049, exit_after=0.05, exit_code=0),
                                      "migrate": Script(ready_after=5, exit_after=0.05, exit_code=0)})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await run_until_settled(sup)
        assert sup.records["crash"].state is State.FAILED
        assert sup.records["crash"].message.startswith("exited with code 3")
        # Its line is in the log, whether the probe saw it before the exit or only after.
        assert sup.records["oneshot"].state is State.COMPLETED
        assert sup.records["after"].state is State.READY
        assert sup.records["migrate"].state is State.COMPLETED  # no probe: exit 0 is all it promised
        assert sup.records["after_migrate"].state is State.READY
        sup.shutdown_requested.set()


async def test_zero_exit_before_its_probe_passed_is_not_completed(tmp_path: Path) -> None:
    # A daemon's launcher exits 0 at once; if nothing of it is left and its probe never
    # passed, it did not start: failed, and what waits for it is blocked.
    body = res("launcher") + res("after", '{ launcher = "completed" }')
    sup, _fake = make(tmp_path, body, {"launcher": Script(ready_after=5, exit_after=0.05, exit_code=0)})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await run_until_settled(sup)
        assert sup.records["launcher"].state is State.FAILED
        assert sup.records["launcher"].message == "exited with code 0 before it was ready"
        assert sup.records["after"].state is State.BLOCKED
        sup.shutdown_requested.set()


async def test_crash_before_ready_retries_within_start_timeout_while_dependents_wait(tmp_path: Path) -> None:
    extra = 'restart = "on-failure"\nrestart_delay = "50ms"\nrestart_max_delay = "50ms"\n' \
            'restart_burst = 100\nstart_timeout = "1s"\n'
    sup, fake = make(tmp_path, res("crashy", extra=extra) + res("dependent", '["crashy"]'),
                     {"crashy": Script(ready_after=5, exit_after=0.02, exit_code=1)})
    seen: list[tuple[State, str, State]] = []
    sup.on_change.append(lambda: seen.append((sup.records["crashy"].state, sup.records["crashy"].message,
                                              sup.records["dependent"].state)))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        t0 = time.monotonic()
        sup.request_up()
        with anyio.fail_after(10):
            await sup.wait_settled(["crashy", "dependent"])
        assert 0.9 < time.monotonic() - t0 < 3  # one start_timeout for all the attempts
        rec = sup.records["crashy"]
        assert rec.state is State.FAILED
        # Whether the deadline falls in a backoff or in an attempt, the crash is the reason.
        assert rec.message.startswith("not ready after 1s: exited with code 1"), rec.message
        assert "before it was ready" in rec.message
        assert rec.restarts == len(fake.starts["crashy"]) - 1 >= 5
        assert sup.records["dependent"].state is State.BLOCKED
        assert "dependent" not in fake.starts
        retrying = [(state, dep) for state, message, dep in seen if "before it was ready; restarting in" in message]
        assert len(retrying) >= 5
        assert set(retrying) == {(State.STARTING, State.PENDING)}  # the dependent waited meanwhile
        sup.shutdown_requested.set()


async def test_crash_before_ready_stops_at_the_burst_limit(tmp_path: Path) -> None:
    extra = 'restart = "always"\nrestart_delay = "20ms"\nrestart_burst = 2\n'
    sup, fake = make(tmp_path, res("crashy", extra=extra),
                     {"crashy": Script(ready_after=5, exit_after=0.02, exit_code=2)})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await run_until_settled(sup)
        rec = sup.records["crashy"]
        assert rec.state is State.FAILED
        assert rec.message.startswith("restarted 2 times within 60s; giving up (exited with code 2")
        assert len(fake.starts["crashy"]) == 3 and rec.restarts == 2
        sup.shutdown_requested.set()


async def test_restart_backoff_grows_then_burst_limit_fails(tmp_path: Path) -> None:
    extra = 'restart = "on-failure"\nrestart_delay = "50ms"\nrestart_burst = 3\n'
    sup, fake = make(tmp_path, res("flaky", extra=extra),
                     {"flaky": Script(ready_after=0.0, exit_after=0.02, exit_code=1)})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        sup.request_up()
        with anyio.fail_after(10):
            while sup.records["flaky"].state is not State.FAILED:
                await sup.wait_change()
        starts = fake.starts["flaky"]
        assert len(starts) == 4  # first start + 3 restarts
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert gaps[0] < gaps[1] < gaps[2]  # exponential backoff
        assert sup.records["flaky"].restarts == 3
        assert "restarted 3 times" in sup.records["flaky"].message
        sup.shutdown_requested.set()


async def test_stop_goes_in_reverse_dependency_order(tmp_path: Path) -> None:
    sup, fake = make(tmp_path, res("db") + res("cache") + res("app", '["db", "cache"]') + res("web", '["app"]'), {})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await run_until_settled(sup)
        stopped = await sup.stop(["db"])
        assert stopped == ["app", "db", "web"]  # dependents are stopped with it
        assert fake.stops["web"][0] <= fake.stops["app"][0] <= fake.stops["db"][0]
        assert sup.records["cache"].state is State.READY
        assert {sup.records[n].state for n in stopped} == {State.STOPPED}
        sup.shutdown_requested.set()


async def test_second_up_request_starts_no_duplicates(tmp_path: Path) -> None:
    sup, fake = make(tmp_path, res("db") + res("app", '["db"]'), {"db": Script(ready_after=0.2)})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        async with anyio.create_task_group() as both:
            both.start_soon(run_until_settled, sup)
            both.start_soon(run_until_settled, sup)
        await run_until_settled(sup)
        assert len(fake.starts["db"]) == 1 and len(fake.starts["app"]) == 1
        sup.shutdown_requested.set()


async def test_dependent_with_restart_true_follows_its_dependency(tmp_path: Path) -> None:
    body = (res("db", extra='restart = "always"\nrestart_delay = "50ms"')
            + res("app", '{ db = { condition = "healthy", restart = true } }')
            + res("bystander", '["db"]'))
    sup, fake = make(tmp_path, body, {"db": Script(ready_after=0.0, exit_after=0.3, exit_code=1)})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await run_until_settled(sup)
        with anyio.fail_after(10):
            while len(fake.starts.get("app", [])) < 2:
                await sup.wait_change()
        assert len(fake.starts["bystander"]) == 1  # no restart = true on its edge
        assert fake.stops["app"][0] >= fake.starts["db"][0]
        sup.shutdown_requested.set()


async def test_unknown_exit_status_is_not_mistaken_for_a_signal(tmp_path: Path) -> None:
    # An adopted process is not our child: its exit status is unknown, while -1 means SIGHUP.
    sup, _ = make(tmp_path, res("adopted") + res("hungup"),
                  {"adopted": Script(exit_after=0.05, exit_code=EXIT_UNKNOWN),
                   "hungup": Script(exit_after=0.05, exit_code=-1)})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        sup.request_up()
        with anyio.fail_after(10):
            while {r.state for r in sup.records.values()} != {State.FAILED}:
                await sup.wait_change()
        assert sup.records["adopted"].message.startswith("exited;")
        assert sup.records["hungup"].message.startswith("killed by signal 1 (SIGHUP);")
        sup.shutdown_requested.set()


@dataclass
class ClosingRuntime(FakeRuntime):
    """A fake that, like the Docker runtime, holds something to close."""

    kind: str = ""
    closed: bool = False

    def close(self) -> None:
        self.closed = True


async def test_a_reload_keeps_the_runtimes_still_used_and_closes_the_others(tmp_path: Path) -> None:
    made: list[ClosingRuntime] = []

    def factory(kind: str, project: object) -> ClosingRuntime:
        made.append(ClosingRuntime(kind=kind))
        return made[-1]

    def load(body: str, name: str = "fake") -> ProjectSpec:
        path = tmp_path / "resources.toml"
        path.write_text(f'[project]\nname = "{name}"\nstate_dir = "state"\n{body}')
        return config.load([path], {})

    db = '[resources.db]\nruntime = "docker"\nimage = "postgres:16"\nhealth = { probe = "log", pattern = "ready" }\n'
    sup = Supervisor(load(res("app") + db), runtime_factory=factory)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await run_until_settled(sup)
        assert sorted(r.kind for r in made) == ["docker", "process"]
        process = made[[r.kind for r in made].index("process")]
        assert sup.runtime("process") is process
        await sup.apply_config(load(res("app", extra='env = { A = "1" }') + res("web")))  # no docker now
        await run_until_settled(sup)  # app again, and web: on the runtime kept
        assert sup.runtime("process") is process and len(made) == 2
        assert [r.kind for r in made if r.closed] == ["docker"]
        await sup.apply_config(load(res("app", extra='env = { A = "1" }') + res("web"), name="renamed"))
        assert sup.runtime("process") is not process and not process.closed  # made again; app and web use it
        sup.shutdown_requested.set()


async def test_repr_tells_states(tmp_path: Path) -> None:
    sup, _ = make(tmp_path, res("db"), {})
    assert repr(sup) == "<Supervisor fake: db=pending>"


async def test_running_record_follows_a_burst_of_starts_in_few_writes(tmp_path: Path) -> None:
    import json

    names = [f"r{i:02d}" for i in range(30)]
    sup, _ = make(tmp_path, "".join(res(n) for n in names), {})
    record = sup.state_dir / "running.json"
    calls = 0
    write = sup._write_running

    def counting() -> None:
        nonlocal calls
        calls += 1
        write()

    sup._write_running = counting  # type: ignore[method-assign]  # replacing the method is the point: it counts
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await run_until_settled(sup)
        await anyio.sleep(0.01)
        assert sorted(json.loads(record.read_text())) == names  # what a SIGKILLed supervisor's heir adopts
        assert calls < len(names) // 2  # thirty starts at once are not thirty rewrites of the file
        await sup.stop(names[:10])
        await anyio.sleep(0.01)
        assert sorted(json.loads(record.read_text())) == names[10:]
        sup.shutdown_requested.set()
    assert json.loads(record.read_text()) == {}
