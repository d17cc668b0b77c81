"""runtime = "external": vrooli only probes it; dependents wait for it; it is never restarted."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from orchestrator import config
from orchestrator.engine.supervisor import Supervisor
from orchestrator.plan.scheduler import State
from orchestrator.spec import RestartPolicy
from tests.conftest import Project, free_port, wait_for


def state(sup: Supervisor, name: str) -> State:
    """The resource's state now. A call, not an attribute: mypy would carry an earlier
    `assert ... is State.X` over the awaits, across which the supervisor moves it on."""
    return sup.records[name].state


def validate(p: Project) -> subprocess.CompletedProcess[str]:
    return p.run("validate")


@pytest.mark.parametrize(("body", "expected"), [
    ('command = ["x"]', 'resources.db.command: does not apply to runtime = "external"'),
    ('restart = "on-failure"', 'resources.db.restart: does not apply to runtime = "external"'),
    ('ports = [5432]', 'resources.db.ports: does not apply to runtime = "external"'),
    ('image = "postgres:16"', 'resources.db.image: does not apply to runtime = "external"'),
    ('stop_timeout = "5s"', 'resources.db.stop_timeout: does not apply to runtime = "external"'),
    ('env = { A = "b" }', 'resources.db.env: does not apply to runtime = "external"'),
    ('models = ["llama3"]', 'resources.db.models: does not apply to runtime = "external"'),
])
def test_keys_about_running_it_do_not_apply_to_an_external_resource(project: Project, body: str,
                                                                    expected: str) -> None:
    project.write(f'[resources.db]\nruntime = "external"\nhealth = {{ probe = "tcp", port = 5432 }}\n{body}\n')
    done = validate(project)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"{project.file}: {expected} (vrooli never starts, stops or "
                                                "restarts it)"]


def test_an_external_resource_needs_a_probe_that_can_reach_it(project: Project) -> None:
    project.write('[resources.db]\nruntime = "external"\n')
    done = validate(project)
    assert done.returncode == 2 and "resources.db.health: an external resource needs a probe" in done.stderr
    project.write('[resources.db]\nruntime = "external"\nhealth = { probe = "log", pattern = "x" }\n')
    done = validate(project)
    assert done.returncode == 2 and "resources.db.health.probe: an external resource has no output" in done.stderr
    project.write('[resources.db]\nruntime = "external"\nhealth = { probe = "tcp" }\n')
    done = validate(project)
    assert done.returncode == 2 and "resources.db.health.port: a tcp probe needs a port" in done.stderr
    project.write('[resources.db]\nruntime = "external"\nhealth = { probe = "postgres", host = "db.example.com", '
                  'port = 5432 }\n')
    assert validate(project).returncode == 0


@pytest.mark.parametrize(("table", "expected"), [
    ('image = 3', "resources.a.export.image: expected a string"),
    ('command = "serve"', "resources.a.export.command: expected a list of strings"),
    ('command = []', "resources.a.export.command: must not be empty"),
    ('healthcheck = ["pg_isready"]', 'resources.a.export.healthcheck: expected ["CMD", "program", ...]'),
    ('healthcheck = ["CMD"]', 'resources.a.export.healthcheck: expected ["CMD", "program", ...]'),
    ('healthcheck = ["CMD-SHELL", "a", "b"]', 'resources.a.export.healthcheck: expected ["CMD", "program", ...]'),
    ('healthcheck = "CMD true"', "resources.a.export.healthcheck: expected a list of strings"),
    ('env = ["A=b"]', 'resources.a.export.env: expected a table of NAME = "value"'),
    ('env = { A = 1 }', 'resources.a.export.env: expected a table of NAME = "value"'),
    ('imgae = "x"', "resources.a.export.imgae: unknown key in [export] (did you mean 'image'?)"),
])
def test_each_bad_export_key_is_one_line(project: Project, table: str, expected: str) -> None:
    project.write(f'[resources.a]\ncommand = ["true"]\n[resources.a.export]\n{table}\n')
    done = validate(project)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{project.file}: {expected}"), lines


def test_the_export_table_is_checked(project: Project) -> None:
    project.write('[resources.a]\ncommand = ["x"]\n[resources.a.export]\nimage = 3\nhealthcheck = ["pg_isready"]\n'
                  'imgae = "x"\n')
    done = validate(project)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert any("resources.a.export.imgae: unknown key in [export] (did you mean 'image'?)" in x for x in lines)
    assert any("resources.a.export.image: expected a string" in x for x in lines)
    assert any('resources.a.export.healthcheck: expected ["CMD", "program", ...]' in x for x in lines)


# ------------------------------------------------------------------------ a real outside service


SERVER = """
import socket, sys, time
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(16)
while True:
    conn, _ = sock.accept()
    conn.close()
"""


class Outside:
    """A TCP service started by the test, not by vrooli (a managed database, say)."""

    def __init__(self, directory: Path, port: int) -> None:
        self.script = directory / "outside.py"
        self.script.write_text(SERVER)
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(self.script), str(self.port)], start_new_session=True)
        wait_for(self.answers, timeout=20)

    def answers(self) -> bool:
        import socket
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@pytest.fixture
def outside(project: Project) -> Iterator[Outside]:
    server = Outside(project.dir, free_port())
    yield server
    server.stop()


def rows(p: Project) -> dict[str, dict[str, object]]:
    done = p.run("status", "--json")
    return {r["name"]: r for r in json.loads(done.stdout)["resources"]} if done.stdout.strip() else {}


@pytest.mark.slow
def test_dependents_wait_for_an_external_resource_that_is_never_restarted(project: Project,
                                                                        outside: Outside) -> None:
    app_port = free_port()
    project.write(f"""
        [resources.db]
        runtime = "external"
        start_timeout = "120s"
        health = {{ probe = "tcp", port = {outside.port}, liveness_interval = "200ms", failure_threshold = 2 }}

        [resources.app]
        command = ["{sys.executable}", "-m", "http.server", "{app_port}", "--bind", "127.0.0.1"]
        depends_on = {{ db = "healthy" }}
        restart = "on-failure"
        health = {{ probe = "http", url = "http://127.0.0.1:{app_port}/" }}
        """)
    up = subprocess.Popen([sys.executable, "-m", "orchestrator", "up"], cwd=project.dir,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        waiting = wait_for(lambda: (r := rows(project)) and r.get("db", {}).get("state") == "starting" and r,
                           timeout=60, interval=0.1)
        assert waiting["app"]["state"] == "pending" and "db" in str(waiting["app"]["message"])
        time.sleep(0.5)
        assert up.poll() is None  # still waiting for db
        assert rows(project)["app"]["state"] == "pending"
        outside.start()
        assert up.wait(timeout=120) == 0
    finally:
        if up.poll() is None:
            up.kill()
        up.communicate()
    status = rows(project)
    assert (status["db"]["state"], status["db"]["runtime"], status["db"]["pid"]) == ("ready", "external", None)
    assert status["app"]["state"] == "ready"
    assert str(status["app"]["started_at"]) >= str(status["db"]["ready_at"])
    base = project.health_url()
    assert "[+]db ok" in httpx.get(base + "/readyz?verbose", timeout=30).text
    assert 'vrooli_resource_up{resource="db",runtime="external"} 1.0' in httpx.get(base + "/metrics", timeout=30).text
    assert json.loads(httpx.get(base + "/health", timeout=30).text)["checks"]["db:responseTime"][0]["status"] == "pass"

    outside.stop()
    gone = wait_for(lambda: (r := rows(project))["db"]["state"] == "unhealthy" and r, timeout=30, interval=0.1)
    assert gone["db"]["restarts"] == 0 and "probes failed in a row" in str(gone["db"]["message"])
    assert httpx.get(base + "/readyz", timeout=30).status_code == 503
    time.sleep(1.5)  # several liveness periods: still unhealthy, never restarted
    later = rows(project)["db"]
    assert (later["state"], later["restarts"]) == ("unhealthy", 0)
    assert project.run("status").returncode == 1

    outside.start()
    back = wait_for(lambda: (r := rows(project))["db"]["state"] == "ready" and r, timeout=30, interval=0.1)
    assert back["db"]["restarts"] == 0
    assert project.run("down").returncode == 0
    assert outside.answers()  # not ours to stop
    log = (project.state_dir / "logs" / "db.log").read_text()
    assert "vrooli does not start db: it is external" in log


# ------------------------------------------------------------------------ the supervisor's own guard


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_supervisor_never_restarts_an_external_resource_even_if_told_to(tmp_path: Path,
                                                                              outside: Outside) -> None:
    """Config rejects `restart` on an external resource; the supervisor holds the line too."""
    path = tmp_path / "resources.toml"
    path.write_text(f'[project]\nname = "ext"\nstate_dir = "state"\nhealth_enabled = false\n'
                    f'[resources.db]\nruntime = "external"\n'
                    f'health = {{ probe = "tcp", port = {outside.port}, liveness_interval = "50ms", '
                    f'failure_threshold = 2 }}\n')
    project = config.load([path], {})
    forced = dataclasses.replace(project.resources["db"], restart=RestartPolicy.ALWAYS, restart_delay=0.01)
    project = dataclasses.replace(project, resources={"db": forced})
    outside.start()
    sup = Supervisor(project)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        selected = sup.request_up(None)
        with anyio.fail_after(30):
            await sup.wait_settled(selected)
        assert state(sup, "db") is State.READY
        outside.stop()
        with anyio.fail_after(30):
            while state(sup, "db") is not State.UNHEALTHY:
                await sup.wait_change()
        await anyio.sleep(0.5)  # ten liveness periods
        assert state(sup, "db") is State.UNHEALTHY
        assert sup.records["db"].restarts == 0
        sup.shutdown_requested.set()
