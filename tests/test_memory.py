"""Memory limits for native processes, the stack budget, and background loads below the peak.

Real processes that really allocate, real cgroups (as root here: cgroup v1's memory
controller), the real RSS watchdog, the Ollama stand-in reporting a model size.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import ROOT, Project, free_port, wait_for

STANDIN = ROOT / "tests" / "standins" / "ollama.py"
LIMIT = 150 << 20

# Allocates (and touches) HOG_STEP_MB every 100 ms up to HOG_CAP_MB, printing its own RSS
# after each step: the log shows when it crossed a limit. The cap keeps a test whose
# limit does not act from eating the machine.
HOG = r"""
import os, sys, time
step, cap = int(os.environ.get("HOG_STEP_MB", "5")) << 20, int(os.environ.get("HOG_CAP_MB", "400")) << 20
page = os.sysconf("SC_PAGE_SIZE")
chunks, held = [], 0
print(f"hog {os.getpid()} started", flush=True)
while True:
    if held < cap:
        block = bytearray(step)
        for i in range(0, step, 4096):
            block[i] = 1
        chunks.append(block)
        held += step
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * page
        print(f"hog {os.getpid()} rss={rss} t={time.time():.3f}", flush=True)
    time.sleep(0.1)
"""


def write_hog(project: Project, extra: str = "", project_keys: str = "", **env: str) -> None:
    (project.dir / "hog.py").write_text(HOG)
    env_toml = ", ".join(f'{k} = "{v}"' for k, v in env.items())
    project.write(f"""
        [project]
        name = "mem{os.getpid()}"
        state_dir = ".state"
        health_listen = "127.0.0.1:0"
        {project_keys}

        [resources.hog]
        command = ["{sys.executable}", "hog.py"]
        env = {{ {env_toml} }}
        restart = "on-failure"
        restart_delay = "100ms"
        restart_burst = 20
        health = {{ probe = "log", pattern = "rss=" }}
        {extra}
    """)


def own_memory_cgroup() -> Path | None:
    """The memory cgroup this test (and so the supervisor it forks) runs in: cgroup v1 here."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            found = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            return found if found.is_dir() else None
    return None


def our_cgroups(base: Path | None) -> list[Path]:
    return sorted(base.glob("vrooli.hog.*")) if base is not None else []


def supervisor_events(project: Project, event: str) -> list[dict[str, Any]]:
    lines = (project.state_dir / "supervisor.log").read_text().splitlines()
    found = []
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if item.get("event") == event:
            found.append(item)
    return found


def epoch(item: dict[str, Any]) -> float:
    return datetime.fromisoformat(item["timestamp"].replace("Z", "+00:00")).timestamp()


def hog_lines(project: Project) -> dict[int, list[tuple[int, float]]]:
    """Per hog pid: (rss, time) after each allocation."""
    found: dict[int, list[tuple[int, float]]] = {}
    for match in re.finditer(r"hog (\d+) rss=(\d+) t=([\d.]+)", (project.state_dir / "logs" / "hog.log").read_text()):
        found.setdefault(int(match.group(1)), []).append((int(match.group(2)), float(match.group(3))))
    return found


def hog_row(project: Project) -> dict[str, Any]:
    return project.rows()["hog"]


@pytest.mark.skipif(os.geteuid() != 0, reason="making cgroups needs root (or a delegated cgroup)")
def test_kernel_limit_recycles_every_time_and_leaves_no_cgroup(project: Project) -> None:
    base = own_memory_cgroup()
    assert base is not None, "no memory cgroup visible; this machine is expected to have one"
    write_hog(project, 'memory_limit = "150m"')
    assert project.run("up").returncode == 0
    row = hog_row(project)
    assert row["memory_enforced_by"] == "cgroup-v1" and row["memory_limit_bytes"] == LIMIT
    cgroup = base / f"vrooli.hog.{row['pid']}"
    assert int((cgroup / "memory.limit_in_bytes").read_text()) == LIMIT  # the kernel holds the limit
    assert str(row["pid"]) in (cgroup / "cgroup.procs").read_text().split()

    done = wait_for(lambda: (r := hog_row(project))["restarts"] >= 3 and r, timeout=90, interval=0.2)
    assert done["memory_recycles"] >= 3  # every restart was one
    assert done["memory_last_recycle"] == "killed: memory limit 150 MiB"
    text = project.run("status").stdout
    assert "150M cgroup-v1" in text and "killed: memory limit 150 MiB" in text

    kills = supervisor_events(project, "the kernel killed the resource at its memory limit")
    assert len(kills) >= 3
    assert not supervisor_events(project, "memory over limit; recycling")  # the watchdog never acted
    lines = hog_lines(project)
    for kill in kills[:3]:
        pid = int(kill["cgroup"].rpartition(".")[2])
        samples = lines[pid]
        # The kernel stopped it at the limit and at once: its last allocation came moments
        # before the kill. (RSS also counts the interpreter's shared file pages, which
        # whoever read them first was charged for: up to ~20 MiB more than the cgroup's.)
        assert max(rss for rss, _ in samples) <= LIMIT + (24 << 20)
        assert epoch(kill) - samples[-1][1] < 3.0, (kill, samples[-3:])
    assert len(our_cgroups(base)) <= 1  # each recycled instance's cgroup went with it

    assert project.run("down").returncode == 0
    assert our_cgroups(base) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="making cgroups needs root (or a delegated cgroup)")
def test_adopted_process_keeps_its_cgroup_and_down_removes_it(project: Project) -> None:
    """A supervisor killed with SIGKILL leaves the cgroup; the next one adopts it with the
    process, still enforces and reports it, and removes it when the resource stops."""
    base = own_memory_cgroup()
    assert base is not None, "no memory cgroup visible; this machine is expected to have one"
    write_hog(project, 'memory_limit = "150m"', HOG_STEP_MB="20", HOG_CAP_MB="20")
    assert project.run("up").returncode == 0
    pid = hog_row(project)["pid"]
    os.kill(int((project.state_dir / "supervisor.pid").read_text()), signal.SIGKILL)
    wait_for(lambda: project.run("status").returncode == 3, timeout=30, interval=0.1)
    assert our_cgroups(base) == [base / f"vrooli.hog.{pid}"]

    assert project.run("up").returncode == 0
    row = hog_row(project)
    assert row["pid"] == pid and row["memory_enforced_by"] == "cgroup-v1"
    assert project.run("down").returncode == 0
    assert our_cgroups(base) == []
    assert gone(pid)


@pytest.mark.skipif(os.geteuid() != 0, reason="making cgroups needs root (or a delegated cgroup)")
def test_down_sweeps_the_cgroup_of_a_process_that_died_with_its_supervisor(project: Project) -> None:
    base = own_memory_cgroup()
    assert base is not None, "no memory cgroup visible; this machine is expected to have one"
    write_hog(project, 'memory_limit = "150m"', HOG_STEP_MB="20", HOG_CAP_MB="20")
    assert project.run("up").returncode == 0
    pid = hog_row(project)["pid"]
    os.kill(int((project.state_dir / "supervisor.pid").read_text()), signal.SIGKILL)
    wait_for(lambda: project.run("status").returncode == 3, timeout=30, interval=0.1)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: gone(pid), timeout=10)
    assert our_cgroups(base) == [base / f"vrooli.hog.{pid}"]  # nobody left to remove it

    assert project.run("down").returncode == 0
    assert our_cgroups(base) == []


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie that init has yet to reap."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_watchdog_recycles_when_cgroups_are_off(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VROOLI_MEMORY_CGROUPS", "off")
    base = own_memory_cgroup()
    write_hog(project, 'memory_limit = "150m"\nmemory_grace = "1s"')
    assert project.run("up").returncode == 0
    assert hog_row(project)["memory_enforced_by"] == "watchdog"

    done = wait_for(lambda: (r := hog_row(project))["restarts"] >= 3 and r, timeout=90, interval=0.2)
    assert done["memory_recycles"] >= 3
    assert re.fullmatch(r"recycled: memory \d+ MiB over limit 150 MiB for 1s", done["memory_last_recycle"])
    assert "over limit 150 MiB for 1s" in project.run("status").stdout
    assert our_cgroups(base) == []  # switched off: no cgroup at all

    recycles = supervisor_events(project, "memory over limit; recycling")
    assert len(recycles) >= 3
    instances = sorted(hog_lines(project).values(), key=lambda samples: samples[0][1])
    for recycle in recycles[:3]:
        # The instance it ended: the latest one started before it.
        samples = [s for s in instances if s[0][1] < epoch(recycle)][-1]
        crossed = next(t for rss, t in samples if rss > LIMIT)
        # memory_grace (1 s), plus up to a sample period, plus slack for a loaded machine.
        assert 1.0 <= epoch(recycle) - crossed < 5.0, (crossed, recycle, samples[-3:])

    metrics = httpx.get(project.health_url() + "/metrics", timeout=10).text
    counted = re.search(r'vrooli_resource_recycles_total\{reason="memory",resource="hog"\} (\S+)', metrics) or \
        re.search(r'vrooli_resource_recycles_total\{resource="hog",reason="memory"\} (\S+)', metrics)
    assert counted is not None, metrics
    assert float(counted.group(1)) >= 3


def test_memory_shown_per_resource_and_budget_warns_in_health(project: Project) -> None:
    write_hog(project, project_keys='memory_budget = "1g"', HOG_STEP_MB="60", HOG_CAP_MB="60")
    assert project.run("up").returncode == 0
    url = project.health_url()
    status = project.status()
    assert status["resources"][0]["memory_bytes"] > 60 << 20
    assert status["stack_memory"]["budget_bytes"] == 1 << 30 and status["stack_memory"]["warning"] is None
    assert "stack memory:" in project.run("status").stdout
    health = wait_for(lambda: (h := httpx.get(url + "/health", timeout=10).json())["checks"].get("stack:memory")
                      and h, timeout=15)
    assert health["status"] == "pass" and health["checks"]["stack:memory"][0]["status"] == "pass"

    write_hog(project, project_keys='memory_budget = "20m"\nmemory_budget_peak = "2g"', HOG_STEP_MB="60",
              HOG_CAP_MB="60")
    assert project.run("reload").returncode == 0
    health = wait_for(lambda: (h := httpx.get(url + "/health", timeout=10).json())["status"] == "warn" and h,
                      timeout=15)
    check = health["checks"]["stack:memory"][0]
    assert check["status"] == "warn" and check["observedValue"] > 60 << 20
    assert "is over its budget 20 MiB" in check["output"]
    text = project.run("status").stdout
    assert "of 20M budget (peak 2.0G); stack memory" in text and "over its budget 20 MiB" in text
    metrics = httpx.get(url + "/metrics", timeout=10).text
    assert re.search(r"^vrooli_stack_memory_bytes \d", metrics, re.M), metrics
    budgets = dict(re.findall(r'^vrooli_stack_memory_budget_bytes\{kind="(\w+)"\} (\S+)$', metrics, re.M))
    assert {k: float(v) for k, v in budgets.items()} == {"idle": 20 << 20, "peak": 2 << 30}


def test_background_model_load_waits_while_over_the_peak_budget(project: Project) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (project.dir / "hog.py").write_text(HOG)
    standin_env = (f'OLLAMA_HOST = "127.0.0.1:{port}", STANDIN_MODELS = "llama3.1:8b,qwen2:7b", '
                   f'STANDIN_MODEL_SIZE = "{120 << 20}", STANDIN_LOAD_SECONDS = "0.1"')
    project.write(f"""
        [project]
        name = "memmodels{os.getpid()}"
        state_dir = ".state"
        health_listen = "127.0.0.1:0"
        memory_budget_peak = "300m"

        [resources.hog]
        command = ["{sys.executable}", "hog.py"]
        env = {{ HOG_STEP_MB = "200", HOG_CAP_MB = "200" }}
        health = {{ probe = "log", pattern = "rss=" }}

        [resources.ollama]
        command = ["{sys.executable}", "{STANDIN}"]
        ports = [{port}]
        env = {{ {standin_env} }}
        health = {{ probe = "http", url = "http://127.0.0.1:{port}/api/version" }}
        models = ["llama3.1:8b", "qwen2:7b"]
        model_load = "background"
    """)
    assert project.run("up").returncode == 0

    def models() -> dict[str, dict[str, Any]]:
        done = project.run("models", "list", "--json")
        return {m["name"]: m for m in json.loads(done.stdout)["models"]}

    # hog (200 MiB) + the stand-in + 120 MiB for the model is over 300 MiB: both wait.
    def all_waiting() -> dict[str, dict[str, Any]] | None:
        found = models()
        return found if all(m["status"] == "waiting" for m in found.values()) else None

    waiting = wait_for(all_waiting, timeout=30, interval=0.2)
    assert "needs 120 MiB" in waiting["llama3.1:8b"]["describe"]
    assert "300 MiB peak budget" in waiting["llama3.1:8b"]["describe"]
    assert "waiting for memory" in project.run("status").stdout
    assert httpx.get(url + "/standin/stats").json()["loads"] == {}

    # Asked for by name, a model loads at once: the budget holds back warm-ups only.
    done = project.run("models", "ensure", "qwen2:7b")
    assert done.returncode == 0, done.stderr
    assert models()["qwen2:7b"]["status"] == "loaded"
    assert models()["llama3.1:8b"]["status"] == "waiting"

    # With the hog gone there is room: the waiting warm-up loads by itself.
    assert project.run("down", "hog").returncode == 0
    wait_for(lambda: models()["llama3.1:8b"]["status"] == "loaded", timeout=30, interval=0.2)
    assert httpx.get(url + "/standin/stats").json()["loads"] == {"qwen2:7b": 1, "llama3.1:8b": 1}


def test_mountinfo_paths_resolve_for_both_cgroup_versions() -> None:
    """The v2 path cannot run here (no v2 memory controller): its path finding is checked on
    the shapes /proc/self/mountinfo takes on a v2 host, a hybrid host and in a container."""
    from orchestrator.runtimes.cgroups import _directory

    unified = [("/", Path("/sys/fs/cgroup"), "cgroup2", frozenset({"rw"}))]
    assert _directory(unified, 2, "/system.slice/vrooli.service") == Path("/sys/fs/cgroup/system.slice/vrooli.service")
    assert _directory(unified, 1, "/system.slice/vrooli.service") is None
    hybrid = [("/", Path("/sys/fs/cgroup/unified"), "cgroup2", frozenset({"rw"})),
              ("/", Path("/sys/fs/cgroup/memory"), "cgroup", frozenset({"rw", "memory"})),
              ("/", Path("/sys/fs/cgroup/cpu"), "cgroup", frozenset({"rw", "cpu"}))]
    assert _directory(hybrid, 1, "/a/b") == Path("/sys/fs/cgroup/memory/a/b")
    container = [("/docker/abc", Path("/sys/fs/cgroup"), "cgroup2", frozenset({"rw"}))]
    assert _directory(container, 2, "/docker/abc/sub") == Path("/sys/fs/cgroup/sub")
    assert _directory(container, 2, "/docker/abc") == Path("/sys/fs/cgroup")
    assert _directory(container, 2, "/docker/abcd") is None


def test_memory_keys_parse_for_processes_with_their_defaults(tmp_path: Path) -> None:
    from orchestrator import config

    path = tmp_path / "resources.toml"
    path.write_text(textwrap.dedent("""
        [project]
        memory_budget = "2g"
        memory_budget_peak = "8g"

        [resources.ollama]
        command = ["ollama", "serve"]
        memory_limit = "512m"
        memory_grace = "30s"

        [resources.worker]
        command = ["sleep", "100"]
        memory_limit = "1.5g"

        [resources.plain]
        command = ["sleep", "100"]
    """))
    project = config.load([path], environ={})
    assert (project.memory_budget, project.memory_budget_peak) == (2 << 30, 8 << 30)
    ollama, worker, plain = (project.resources[n] for n in ("ollama", "worker", "plain"))
    assert (ollama.memory_limit, ollama.memory_grace) == (512 << 20, 30.0)
    assert (worker.memory_limit, worker.memory_grace) == (int(1.5 * (1 << 30)), 10.0)
    assert plain.memory_limit is None
    # Changing a limit restarts the process (its cgroup is made with it); the grace does not.
    assert ollama.config_hash() != dataclasses.replace(ollama, memory_limit=256 << 20).config_hash()
    assert ollama.config_hash() == dataclasses.replace(ollama, memory_grace=5.0).config_hash()
