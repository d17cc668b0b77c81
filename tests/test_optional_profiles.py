"""Optional dependencies and profiles: the pure core's decisions,
the config's checks, and the supervisor carrying them out on the scripted fake runtime."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from orchestrator import config
from orchestrator.config.profiles import active_profiles
from orchestrator.engine.supervisor import Supervisor
from orchestrator.errors import ConfigError, UsageError
from orchestrator.plan.scheduler import Block, Start, State, View, decide, select, waiting_for
from orchestrator.runtimes.fake import FakeRuntime, Script
from orchestrator.spec import Condition, Dependency, ProjectSpec, ResourceSpec

OPT = Dependency("cache", Condition.HEALTHY, required=False)
DEPENDS = {"cache": (), "db": (), "app": (Dependency("db"), OPT)}


def views(**states: str) -> dict[str, View]:
    return {n: View(State(s)) for n, s in states.items()}


# ------------------------------------------------------------------ the scheduler's decisions


def test_an_optional_dependency_still_starting_is_waited_for() -> None:
    for state in ("pending", "starting"):
        current = views(cache=state, db="ready", app="pending")
        assert decide(DEPENDS, current, frozenset(DEPENDS)) == ([Start("cache")] if state == "pending" else [])
    assert decide(DEPENDS, views(cache="ready", db="ready", app="pending"), frozenset(DEPENDS)) == [Start("app")]


@pytest.mark.parametrize(("state", "why"), [("failed", "failed"), ("blocked", "blocked"), ("stopped", "stopped"),
                                            ("unhealthy", "unhealthy")])
def test_an_optional_dependency_that_will_not_come_is_started_without(state: str, why: str) -> None:
    current = views(cache=state, db="ready", app="pending")
    action = decide(DEPENDS, current, frozenset(DEPENDS))
    assert action == [Start("app", (f"cache (optional: {why})",))]
    assert isinstance(action[0], Start) and action[0].note == f"started without cache (optional: {why})"


def test_an_optional_dependency_left_out_of_the_run_says_why() -> None:
    current = views(cache="pending", db="ready", app="pending")
    wanted = frozenset({"db", "app"})
    assert decide(DEPENDS, current, wanted) == [Start("app", ("cache (optional: not selected)",))]
    assert decide(DEPENDS, current, wanted, left_out={"cache": "disabled"}) == \
        [Start("app", ("cache (optional: disabled)",))]
    # ...but if it runs anyway (an earlier up), it is simply met
    current["cache"] = View(State.READY)
    assert decide(DEPENDS, current, wanted) == [Start("app")]


def test_a_required_dependency_that_fails_still_blocks_whatever_the_optional_one_does() -> None:
    current = views(cache="failed", db="failed", app="pending")
    assert decide(DEPENDS, current, frozenset(DEPENDS)) == [Block("app", "dependency db failed: failed")]
    current = views(cache="ready", db="starting", app="pending")
    assert decide(DEPENDS, current, frozenset(DEPENDS)) == []  # the required one is still coming


def test_no_deps_ignores_optional_edges_as_it_does_required_ones() -> None:
    current = views(cache="stopped", db="stopped", app="pending")
    assert decide(DEPENDS, current, frozenset({"app"}), ignore_deps=True) == [Start("app")]


def test_waiting_for_marks_optional_edges() -> None:
    current = views(cache="starting", db="starting", app="pending")
    assert waiting_for(DEPENDS, current, "app") == "waiting for db (healthy), cache (healthy, optional)"


# ------------------------------------------------------------------ what an up selects


def spec(name: str, *deps: Dependency, profiles: tuple[str, ...] = (), enabled: bool = True) -> ResourceSpec:
    return ResourceSpec(name, "process", ("true",), depends_on=deps, profiles=profiles, enabled=enabled)


STACK = {
    "db": spec("db"),
    "cache": spec("cache"),
    "ollama": spec("ollama", profiles=("ai",)),
    "gpu": spec("gpu", profiles=("ai", "gpu")),
    "app": spec("app", Dependency("db"), OPT, Dependency("ollama", required=False)),
    "worker": spec("worker", Dependency("gpu")),  # a required dependency on a profiled one
    "old": spec("old", enabled=False),
}


def test_profiles_leave_resources_out_of_a_plain_up_and_a_profile_brings_them_in() -> None:
    plain = select({n: s for n, s in STACK.items() if n != "worker"}, None, False)
    assert plain.selected == {"db", "cache", "app"}
    with_ai = select({n: s for n, s in STACK.items() if n != "worker"}, None, False, ["ai"])
    assert with_ai.selected == {"db", "cache", "app", "ollama", "gpu"}
    assert select(STACK, None, False, ["gpu"]).selected == {"db", "cache", "app", "gpu", "worker"}


def test_naming_a_profiled_resource_starts_it() -> None:
    assert select(STACK, ["ollama"], False).selected == {"ollama"}
    assert select(STACK, ["ollama"], False).pulled_in == {}


def test_a_required_dependency_on_an_inactive_profile_is_pulled_in_and_said_so() -> None:
    chosen = select(STACK, None, False)
    assert "gpu" in chosen.selected and "ollama" not in chosen.selected
    assert chosen.pulled_in == {"gpu": ("worker",)}
    assert select(STACK, None, False, ["gpu"]).pulled_in == {}


def test_up_name_pulls_in_its_optional_dependencies_that_are_enabled_and_active() -> None:
    assert select(STACK, ["app"], False).selected == {"app", "db", "cache"}
    assert select(STACK, ["app"], False, ["ai"]).selected == {"app", "db", "cache", "ollama"}
    disabled = {**STACK, "cache": spec("cache", enabled=False)}
    assert select(disabled, ["app"], False).selected == {"app", "db"}
    assert select(STACK, ["app"], True).selected == {"app"}  # --no-deps as before


# ------------------------------------------------------------------ the config


def load(tmp_path: Path, body: str) -> ProjectSpec:
    path = tmp_path / "resources.toml"
    path.write_text(f'[project]\nname = "t"\nstate_dir = "state"\n{body}')
    return config.load([path], {})


def test_required_and_profiles_are_read(tmp_path: Path) -> None:
    project = load(tmp_path, """
[resources.cache]
command = ["true"]
enabled = false
profiles = ["ai", "gpu.x", "ai"]
[resources.app]
command = ["true"]
depends_on = { cache = { condition = "started", required = false, restart = true } }
""")
    assert project.resources["app"].depends_on == (Dependency("cache", Condition.STARTED, True, False),)
    assert project.resources["cache"].profiles == ("ai", "gpu.x")
    assert project.declared_profiles == ["ai", "gpu.x"]
    external = load(tmp_path, '[resources.db]\nruntime = "external"\nprofiles = ["remote"]\n'
                              'health = { probe = "tcp", port = 5432 }')
    assert external.resources["db"].profiles == ("remote",)
    assert load(tmp_path, '[resources.a]\ncommand = ["true"]\ndepends_on = ["b"]\n'
                          '[resources.b]\ncommand = ["true"]').resources["a"].depends_on[0].required


def test_a_required_dependency_on_a_disabled_resource_is_still_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, '[resources.cache]\ncommand = ["true"]\nenabled = false\n'
                       '[resources.app]\ncommand = ["true"]\ndepends_on = { cache = { required = true } }')
    assert caught.value.lines() == [f"{tmp_path / 'resources.toml'}: resources.app.depends_on: depends on 'cache', "
                                    "which has enabled = false (or make it optional: required = false)"]


def test_the_cycle_check_follows_optional_edges(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, '[resources.a]\ncommand = ["true"]\ndepends_on = { b = { required = false } }\n'
                       '[resources.b]\ncommand = ["true"]\ndepends_on = ["a"]')
    assert caught.value.lines()[0].endswith("resources.a.depends_on: dependency cycle: a -> b -> a "
                                            "(optional: a -> b; an optional dependency is still waited for)")


def test_a_profile_named_on_the_command_line_must_be_declared(tmp_path: Path) -> None:
    project = load(tmp_path, '[resources.ollama]\ncommand = ["true"]\nprofiles = ["ai"]')
    assert active_profiles(project, ["ai"], {"VROOLI_PROFILES": "gpu, ai,,x"}) == ["ai", "gpu", "x"]
    with pytest.raises(UsageError, match=r"^unknown profile 'aii' \(did you mean 'ai'\? declared: ai\)$"):
        active_profiles(project, ["aii"], {})
    with pytest.raises(UsageError, match=r"^unknown profile 'AI' \(did you mean 'ai'\? declared: ai\)$"):
        active_profiles(project, ["AI"], {})
    with pytest.raises(UsageError, match=r"^unknown profile 'gpu' \(declared: ai\)$"):
        active_profiles(project, ["gpu"], {})
    bare = load(tmp_path, '[resources.db]\ncommand = ["true"]')
    with pytest.raises(UsageError, match="no resource declares profiles"):
        active_profiles(bare, ["ai"], {})


# ------------------------------------------------------------------ the supervisor, on the fake runtime

@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make(tmp_path: Path, body: str, scripts: dict[str, Script]) -> tuple[Supervisor, FakeRuntime]:
    project = load(tmp_path, body)
    fake = FakeRuntime(scripts)
    return Supervisor(project, runtime_factory=lambda kind, proj: fake), fake


def res(name: str, deps: str = "[]", extra: str = "") -> str:
    return (f'[resources.{name}]\ncommand = ["fake"]\ndepends_on = {deps}\n'
            f'health = {{ probe = "log", pattern = "ready" }}\n{extra}\n')


OPTIONAL_CACHE = '{ cache = { condition = "healthy", required = false } }'


async def settle(sup: Supervisor, names: list[str] | None = None, profiles: tuple[str, ...] = ()) -> frozenset[str]:
    selected = sup.request_up(names, profiles=profiles)
    with anyio.fail_after(20):
        await sup.wait_settled(selected)
    return selected


@pytest.mark.anyio
async def test_a_failed_optional_dependency_lets_the_dependent_start_with_a_note(tmp_path: Path) -> None:
    sup, fake = make(tmp_path, res("cache", extra='start_timeout = "300ms"') + res("app", OPTIONAL_CACHE),
                     {"cache": Script(ready_after=60)})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await settle(sup)
        assert sup.records["cache"].state is State.FAILED
        app = sup.records["app"]
        assert app.state is State.READY
        assert fake.starts["app"][0] >= fake.starts["cache"][0] + 0.25  # after the failure, not before
        row = sup.snapshot(["app"])[0]
        assert row["message"].endswith("started without cache (optional: failed)"), row["message"]
        sup.shutdown_requested.set()


@pytest.mark.anyio
async def test_a_slow_optional_dependency_is_waited_for(tmp_path: Path) -> None:
    sup, fake = make(tmp_path, res("cache") + res("app", OPTIONAL_CACHE), {"cache": Script(ready_after=0.5)})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        t0 = time.monotonic()
        await settle(sup, ["app"])  # `up app` pulls the optional cache in
        assert fake.starts["app"][0] - t0 >= 0.5
        assert sup.records["app"].state is sup.records["cache"].state is State.READY
        assert "without" not in sup.snapshot(["app"])[0]["message"]
        sup.shutdown_requested.set()


@pytest.mark.anyio
async def test_a_disabled_optional_dependency_is_not_started_nor_waited_for(tmp_path: Path) -> None:
    sup, fake = make(tmp_path, res("cache", extra="enabled = false") + res("app", OPTIONAL_CACHE), {})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        assert await settle(sup) == {"app"}
        assert "cache" not in fake.starts
        assert sup.snapshot(["app"])[0]["message"].endswith("started without cache (optional: disabled)")
        sup.shutdown_requested.set()


@pytest.mark.anyio
async def test_profiles_on_the_supervisor_and_a_later_plain_up_keeps_them(tmp_path: Path) -> None:
    sup, fake = make(tmp_path, res("db") + res("ollama", extra='profiles = ["ai"]')
                     + res("app", '{ ollama = { required = false } }'), {})
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        assert await settle(sup) == {"db", "app"}
        rows = {r["name"]: r for r in sup.snapshot()}
        assert rows["ollama"]["state"] == "pending" and rows["ollama"]["message"] == "inactive (profile ai)"
        assert rows["ollama"]["profiles"] == ["ai"]
        assert rows["app"]["message"].endswith("started without ollama (optional: profile ai inactive)")
        assert await settle(sup, profiles=("ai",)) == {"db", "app", "ollama"}
        assert sup.records["ollama"].state is State.READY
        with anyio.fail_after(20):
            await sup.wait_settled(await sup.restart(["db"]))  # a restart keeps the profiles of the up
        assert sup.profiles == {"ai"}
        await settle(sup)  # a plain up again: ollama stays
        assert sup.records["ollama"].state is State.READY and "ollama" in sup.wanted
        assert len(fake.starts["ollama"]) == 1
        sup.shutdown_requested.set()
