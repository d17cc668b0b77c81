"""Optional dependencies and profiles through the real CLI, on real processes (small Python
servers and shell scripts), the supervisor detached as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from tests.conftest import Project, free_port, wait_for


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def server(port: int, delay: float = 0.0) -> str:
    """A small HTTP server on `port`, listening after `delay` seconds."""
    serve = f"exec {sys.executable} -m http.server {port} --bind 127.0.0.1"
    return json.dumps(["sh", "-c", f"sleep {delay}; {serve}" if delay else serve])


APP = """
[resources.app]
command = ["sh", "-c", "echo app up; exec sleep 1000"]
depends_on = { cache = { condition = "healthy", required = false } }
health = { probe = "log", pattern = "app up" }
"""


def test_a_disabled_optional_dependency_is_skipped_with_a_note(project: Project) -> None:
    port = free_port()
    project.write(f"""
        [resources.cache]
        command = {server(port)}
        ports = [{port}]
        health = {{ probe = "tcp" }}
        enabled = false
    """ + APP)
    done = project.run("up")
    assert done.returncode == 0, done.stderr
    assert "1/1 ready" in done.stderr
    rows = project.rows()
    assert rows["app"]["state"] == "ready"
    assert rows["app"]["message"].endswith("started without cache (optional: disabled)"), rows["app"]
    assert rows["cache"]["state"] == "pending" and rows["cache"]["pid"] is None
    status = project.run("status")
    assert "started without cache (optional: disabled)" in status.stdout, status.stdout


def test_a_failing_optional_dependency_lets_the_dependent_start_after_it_failed(project: Project) -> None:
    project.write("""
        [resources.cache]
        command = ["sh", "-c", "sleep 1; echo cache gives up >&2; exit 3"]
        health = { probe = "log", pattern = "never printed" }
    """ + APP)
    done = project.run("up")
    assert done.returncode == 1, done.stderr  # cache failed: the up says so...
    assert "vrooli: cache: failed: exited with code 3" in done.stderr
    rows = project.rows()
    app, cache = rows["app"], rows["cache"]
    assert app["state"] == "ready" and psutil.pid_exists(app["pid"])  # ...but app runs
    assert app["message"].endswith("started without cache (optional: failed)"), app
    assert ts(app["started_at"]) >= ts(cache["started_at"]) + 0.9  # it waited for the failure


def test_a_slow_optional_dependency_is_waited_for(project: Project) -> None:
    port = free_port()
    project.write(f"""
        [resources.cache]
        command = {server(port, delay=1.5)}
        ports = [{port}]
        health = {{ probe = "http", url = "http://127.0.0.1:{port}/" }}
    """ + APP)
    done = project.run("up", "app")  # `up app` pulls the optional cache in, and waits for it
    assert done.returncode == 0, done.stderr
    assert "2/2 ready" in done.stderr
    rows = project.rows()
    assert ts(rows["app"]["started_at"]) >= ts(rows["cache"]["ready_at"])
    assert "without" not in rows["app"]["message"]


PROFILED = """
[resources.db]
command = ["sh", "-c", "echo db up; exec sleep 1000"]
health = {{ probe = "log", pattern = "db up" }}

[resources.ollama]
command = {ollama}
ports = [{port}]
health = {{ probe = "tcp" }}
profiles = ["ai"]

[resources.gpu]
command = ["sh", "-c", "echo gpu up; exec sleep 1000"]
health = {{ probe = "log", pattern = "gpu up" }}
profiles = ["gpu"]
"""


def profiled(project: Project) -> None:
    port = free_port()
    project.write(PROFILED.format(ollama=server(port), port=port))


def readyz_of(project: Project) -> tuple[int, str] | None:
    """The health endpoint's verbose /readyz, once it answers (after the start settled)."""
    import httpx

    try:
        answer = httpx.get(project.health_url() + "/readyz?verbose", timeout=5)
    except (OSError, httpx.HTTPError):
        return None
    return answer.status_code, answer.text


def states(project: Project) -> dict[str, tuple[str, str]]:
    return {n: (r["state"], r["message"]) for n, r in project.rows().items()}


def test_profiles_leave_resources_out_until_activated_and_a_plain_up_stops_nothing(project: Project) -> None:
    profiled(project)
    done = project.run("up")
    assert done.returncode == 0, done.stderr
    assert "1/1 ready" in done.stderr
    rows = project.rows()
    assert rows["ollama"]["state"] == "pending" and rows["ollama"]["message"] == "inactive (profile ai)"
    assert rows["ollama"]["profiles"] == ["ai"] and rows["db"]["profiles"] == []
    assert "inactive (profile ai)" in project.run("status").stdout
    assert project.run("status").returncode == 0  # inactive resources do not make the stack unready
    readyz = wait_for(lambda: readyz_of(project), timeout=30)
    assert readyz == (200, "[+]db ok\nreadyz check passed\n")

    done = project.run("up", "--profile", "ai")
    assert done.returncode == 0, done.stderr
    ollama_pid = project.rows()["ollama"]["pid"]
    assert project.rows()["ollama"]["state"] == "ready" and psutil.pid_exists(ollama_pid)

    done = project.run("up")  # a later plain up stops nothing
    assert done.returncode == 0, done.stderr
    rows = project.rows()
    assert rows["ollama"]["pid"] == ollama_pid and rows["ollama"]["state"] == "ready"
    assert rows["gpu"]["message"] == "inactive (profile gpu)"

    pids = [r["pid"] for r in project.rows().values() if r["pid"]]
    assert project.run("down").returncode == 0
    assert not [p for p in pids if psutil.pid_exists(p)]


def test_vrooli_profiles_and_naming_a_profiled_resource_start_it(project: Project,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    profiled(project)
    done = project.run("up", "gpu")  # named: started though its profile is inactive
    assert done.returncode == 0, done.stderr
    assert states(project)["gpu"][0] == "ready" and states(project)["db"][0] == "pending"
    monkeypatch.setenv("VROOLI_PROFILES", "ai, elsewhere")  # names from the variable are not checked
    done = project.run("up")
    assert done.returncode == 0, done.stderr
    assert {n: s for n, (s, _) in states(project).items()} == {"db": "ready", "ollama": "ready", "gpu": "ready"}


def test_a_profile_no_resource_declares_is_a_one_line_error(project: Project) -> None:
    profiled(project)
    for args in (["up", "--profile", "aii"], ["up", "--profile=ai", "--profile", "gpux", "--foreground"],
                 ["graph", "--profile", "x"], ["validate", "--profile", "x"]):
        done = project.run(*args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vrooli: unknown profile '"), (args, done.stderr)
    assert "did you mean 'ai'?" in project.run("up", "--profile", "aii").stderr
    assert not (project.state_dir / "supervisor.pid").exists()  # nothing was started


def test_graph_and_validate_know_optional_edges_and_profiles(project: Project) -> None:
    project.write("""
        [resources.db]
        command = ["true"]
        [resources.cache]
        command = ["true"]
        [resources.ollama]
        command = ["true"]
        profiles = ["ai"]
        [resources.embed]
        command = ["true"]
        profiles = ["ai", "gpu"]
        [resources.app]
        command = ["true"]
        depends_on = { db = "healthy", cache = { condition = "started", required = false } }
        [resources.worker]
        command = ["true"]
        depends_on = ["embed"]
    """)
    text = project.run("graph", check=True).stdout.splitlines()
    assert text == ["wave 1: db, cache, embed [pulled in]",
                    "wave 2: app (after db healthy, cache started optional), worker (after embed healthy)",
                    "pulled in: embed (profiles ai, gpu) is started by a plain up: required by worker",
                    "inactive: ollama (profile ai)"]
    data = json.loads(project.run("graph", "--json", check=True).stdout)
    assert data["resources"]["app"]["optional"] == ["cache"]
    assert data["resources"]["ollama"] == {"runtime": "process", "enabled": True, "depends_on": {},
                                           "optional": [], "profiles": ["ai"], "selected": False,
                                           "pulled_in_by": []}
    assert data["resources"]["embed"]["pulled_in_by"] == ["worker"]
    assert data["inactive"] == ["ollama"] and data["profiles"] == {"declared": ["ai", "gpu"], "active": []}
    active = json.loads(project.run("graph", "--json", "--profile", "ai", check=True).stdout)
    assert active["inactive"] == [] and active["resources"]["embed"]["pulled_in_by"] == []
    assert "ollama" in active["waves"][0]

    done = project.run("validate", check=True)
    assert done.stdout.splitlines()[1:] == [
        "note: embed (profiles ai, gpu) is started by a plain up: required by worker"]
    data = json.loads(project.run("validate", "--json", check=True).stdout)
    assert data["pulled_in"] == {"embed": ["worker"]} and data["profiles"]["declared"] == ["ai", "gpu"]


def test_status_of_a_stack_not_running_carries_profiles(project: Project) -> None:
    profiled(project)
    done = project.run("status", "--json")
    assert done.returncode == 3
    rows = {r["name"]: r for r in json.loads(done.stdout)["resources"]}
    assert rows["ollama"]["profiles"] == ["ai"] and rows["db"]["profiles"] == []


def test_the_request_schema_refuses_profiles_of_the_wrong_shape(tmp_path: Path) -> None:
    from orchestrator.daemon.ops import problem_with

    assert problem_with({"op": "up", "profiles": ["ai"]}) is None
    assert problem_with({"op": "up", "profiles": "ai"}) == "up: 'profiles': expected a list of strings, got a string"
    assert problem_with({"op": "up", "profiles": [1]}) == "up: 'profiles': item 0: expected a string, got a number"


def test_a_cold_up_with_a_profile_hands_it_to_the_supervisor_it_forks(project: Project) -> None:
    profiled(project)
    done = project.run("up", "--profile", "gpu")
    assert done.returncode == 0, done.stderr
    assert "2/2 ready" in done.stderr
    rows = project.rows()
    assert rows["gpu"]["state"] == "ready" and rows["ollama"]["message"] == "inactive (profile ai)"
    supervisor = psutil.Process(project.status()["supervisor_pid"])
    assert "--profile" in supervisor.cmdline() and "gpu" in supervisor.cmdline()


def test_the_daemon_takes_its_profiles_from_vrooli_profiles_as_a_unit_sets_them(project: Project) -> None:
    profiled(project)
    env = {**os.environ, "VROOLI_PROFILES": "ai"}
    with open(project.dir / "daemon.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "daemon"], cwd=project.dir, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        wait_for(lambda: project.run("status").returncode == 0, timeout=60, interval=0.2)
        rows = project.rows()
        assert rows["ollama"]["state"] == "ready" and rows["db"]["state"] == "ready"
        assert rows["gpu"]["message"] == "inactive (profile gpu)"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_a_plain_up_with_every_resource_in_an_inactive_profile_starts_nothing_and_says_so(project: Project) -> None:
    project.write("""
        [resources.ollama]
        command = ["sh", "-c", "echo up; exec sleep 1000"]
        health = { probe = "log", pattern = "up" }
        profiles = ["ai"]
    """)
    done = project.run("up")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == ("vrooli: nothing to start: every resource is disabled or in an "
                                           "inactive profile (ai); use --profile or name one")
    assert "0/0 ready" in done.stderr and "pending" not in done.stderr
    assert project.rows()["ollama"]["message"] == "inactive (profile ai)"
