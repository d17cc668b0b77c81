"""Hooks on real components: post_start against a real Postgres 15, pre_stop before the stop
signal, failures and timeouts, and hooks_inside a real container (docker exec)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from orchestrator import config
from orchestrator.errors import ConfigError
from tests.conftest import PG_BIN, Project, free_port, postgres_command, postgres_data_dir, wait_for

PSQL = PG_BIN / "psql"


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def pids_in(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()]


def databases(data: Path, port: int) -> list[str]:
    done = subprocess.run(["runuser", "-u", "postgres", "--", str(PSQL), "-h", str(data.parent / "pgsock"),
                           "-p", str(port), "-U", "postgres", "-Atc", "SELECT datname FROM pg_database"],
                          capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.split()


# ------------------------------------------------------------------ post_start


@pytest.mark.skipif(not (PG_BIN / "postgres").exists(), reason="needs Postgres 15")
def test_post_start_creates_a_database_before_postgres_counts_as_ready(project: Project) -> None:
    data = postgres_data_dir(project.dir)
    sockets, port = data.parent / "pgsock", free_port()
    done_file = sockets / "hook-done"  # the postgres user may write there
    hook = (f"sleep 1; {PSQL} -h {sockets} -p {port} -U postgres -c 'CREATE DATABASE app' "
            f"&& date +%s.%N > {done_file}")
    project.write(f"""
        [resources.postgres]
        command = {json.dumps(postgres_command(data, port))}
        user = "postgres"
        ports = [{port}]
        stop_signal = "SIGINT"
        health = {{ probe = "postgres" }}
        post_start = ["sh", "-c", {json.dumps(hook)}]

        [resources.app]
        command = ["sh", "-c", "echo app up; exec sleep 1000"]
        depends_on = ["postgres"]
        health = {{ probe = "log", pattern = "app up" }}
    """)
    up = subprocess.Popen([sys.executable, "-m", "orchestrator", "up"], cwd=project.dir,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # While the hook runs, status says so, and the dependent still waits.
        seen = wait_for(lambda: (r := project.rows())["postgres"]["message"] == "post_start running" and r, 60)
        assert seen["postgres"]["state"] == "starting"
        assert seen["app"]["state"] == "pending" and seen["app"]["pid"] is None
        _out, err = up.communicate(timeout=120)
    finally:
        if up.poll() is None:
            up.kill()
            up.communicate()
    assert up.returncode == 0, err
    assert "app" in databases(data, port)
    rows = project.rows()
    hook_done = float(done_file.read_text())
    assert ts(rows["postgres"]["ready_at"]) >= hook_done
    assert ts(rows["app"]["started_at"]) >= hook_done
    assert rows["postgres"]["state"] == rows["app"]["state"] == "ready"
    log = project.run("logs", "postgres").stdout
    assert "[post_start] running" in log and "[post_start] CREATE DATABASE" in log
    assert "[post_start] exited with code 0 after" in log


def test_failing_post_start_fails_the_resource_with_its_output(project: Project) -> None:
    hook = "echo first try; echo 'ERROR: no bucket for sekrit-value-42' >&2; exit 3"
    project.write(f"""
        [resources.store]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        env = {{ STORE_TOKEN = "sekrit-value-42" }}
        health = {{ probe = "log", pattern = "ready" }}
        post_start = ["sh", "-c", {json.dumps(hook)}]

        [resources.app]
        command = ["sleep", "1000"]
        depends_on = ["store"]
    """)
    done = project.run("up", "--json")
    assert done.returncode == 1, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)["resources"]}
    store = rows["store"]
    assert store["state"] == "failed"
    assert store["message"] == "post_start exited with code 3; last output: first try | ERROR: no bucket for ***"
    assert rows["app"]["state"] == "blocked"
    assert store["pid"] is None  # the failed start was stopped
    assert "sekrit-value-42" not in done.stdout + done.stderr
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "1000"]
                and p.environ().get("VROOLI_TEST_TOKEN") == _token()]
    # The public view (health endpoint) drops the hook's output, as it drops a crash's.
    import httpx

    verbose = httpx.get(project.health_url() + "/readyz?verbose", timeout=30).text
    assert "[-]store failed: post_start exited with code 3" in verbose
    assert "bucket" not in verbose


def test_a_failing_hooks_message_is_one_bounded_line(project: Project) -> None:
    script = "import sys; print('\\x1b[31m' + 'x' * 5000); print('tab\\there'); sys.exit(2)"
    project.write(f"""
        [resources.svc]
        command = ["sleep", "1000"]
        post_start = ["python3", "-c", {json.dumps(script)}]
    """)
    done = project.run("up", "--json")
    assert done.returncode == 1
    message = json.loads(done.stdout)["resources"][0]["message"]
    assert message.startswith("post_start exited with code 2; last output: …xxx")
    assert message.endswith("xxx | tab here") and message.isprintable()
    assert len(message) <= len("post_start exited with code 2; last output: ") + 300
    assert "\x1b[31m" + "x" * 5000 in project.run("logs", "svc").stdout  # the log keeps it whole


def _token() -> str:
    import os

    return os.environ["VROOLI_TEST_TOKEN"]


def test_failing_post_start_follows_the_restart_policy(project: Project) -> None:
    # Fails on the first start, passes on the second: a restart as for a crash before ready.
    counter = project.dir / "tries"
    hook = f"echo x >> {counter}; [ $$(wc -l < {counter}) -ge 2 ]"
    project.write(f"""
        [resources.store]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        health = {{ probe = "log", pattern = "ready" }}
        restart = "on-failure"
        restart_delay = "50ms"
        post_start = ["sh", "-c", {json.dumps(hook)}]
    """)
    done = project.run("up", "--json")
    assert done.returncode == 0, done.stderr
    store = json.loads(done.stdout)["resources"][0]
    assert store["state"] == "ready" and store["restarts"] == 1
    assert counter.read_text().count("x") == 2


def test_post_start_does_not_run_again_when_a_new_supervisor_adopts(project: Project) -> None:
    # The hook belongs to a start: a supervisor killed with SIGKILL and replaced takes the
    # running instance back without running it again (a second CREATE DATABASE would fail).
    counter = project.dir / "runs"
    project.write(f"""
        [resources.svc]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        health = {{ probe = "log", pattern = "ready" }}
        post_start = ["sh", "-c", "echo x >> {counter}"]
    """)
    assert project.run("up").returncode == 0
    pid = project.rows()["svc"]["pid"]
    supervisor = int((project.state_dir / "supervisor.pid").read_text().split()[0])
    psutil.Process(supervisor).kill()
    wait_for(lambda: gone(supervisor), 10)
    assert project.run("up").returncode == 0
    row = project.rows()["svc"]
    assert row["pid"] == pid and row["state"] == "ready"
    assert counter.read_text() == "x\n"


def test_post_start_timeout_fails_and_leaves_no_hook_process(project: Project) -> None:
    pids = project.dir / "hook-pids"
    # a child in its group, and one that leaves the group and the session (setsid)
    hook = (f"echo waiting; echo $$$$ >> {pids}; sleep 1000 & echo $$! >> {pids}; "
            f"setsid sleep 1000 & echo $$! >> {pids}; wait")
    project.write(f"""
        [resources.slow]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        start_timeout = "3s"
        health = {{ probe = "log", pattern = "ready" }}
        post_start = ["sh", "-c", {json.dumps(hook)}]
    """)
    started = time.monotonic()
    done = project.run("up", "--json")
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    row = json.loads(done.stdout)["resources"][0]
    assert row["state"] == "failed"
    assert row["message"].startswith("post_start did not finish within "), row["message"]
    assert row["message"].endswith("s; last output: waiting"), row["message"]
    assert took < 30
    found = pids_in(pids)
    assert len(found) == 3
    assert wait_for(lambda: all(gone(p) for p in found), 10)
    log = project.run("logs", "slow").stdout
    assert "[post_start] did not finish within" in log


def test_a_hook_that_exits_leaves_nothing_running(project: Project) -> None:
    # Exits 0 at once, leaving one child in its group and one that left group and session:
    # both ended (by the group, and by the token its environment carries).
    pids = project.dir / "hook-pids"
    hook = f"sleep 1000 & echo $$! >> {pids}; setsid sleep 1000 & echo $$! >> {pids}; sleep 0.2"
    project.write(f"""
        [resources.svc]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        health = {{ probe = "log", pattern = "ready" }}
        post_start = ["sh", "-c", {json.dumps(hook)}]
    """)
    assert project.run("up").returncode == 0
    found = pids_in(pids)
    assert len(found) == 2
    assert wait_for(lambda: all(gone(p) for p in found), 10)


def test_a_resource_that_dies_during_its_post_start_is_a_crash_with_its_own_output(project: Project) -> None:
    pids = project.dir / "hook-pids"
    project.write(f"""
        [resources.svc]
        command = ["sh", "-c", "echo ready; sleep 1; echo dying; exit 7"]
        health = {{ probe = "log", pattern = "ready" }}
        post_start = ["sh", "-c", "echo $$$$ >> {pids}; echo hook waits; exec sleep 1000"]
    """)
    done = project.run("up", "--json")
    assert done.returncode == 1
    row = json.loads(done.stdout)["resources"][0]
    assert row["message"] == "exited with code 7; last output: dying before it was ready"
    assert all(gone(p) for p in pids_in(pids))
    assert "[post_start] cut short after" in project.run("logs", "svc").stdout


def test_a_one_shot_that_exits_0_during_its_post_start_completes(project: Project) -> None:
    project.write("""
        [resources.migrate]
        command = ["sh", "-c", "echo migrated"]
        post_start = ["sh", "-c", "sleep 0.5; echo checked"]

        [resources.app]
        command = ["sleep", "1000"]
        depends_on = { migrate = "completed" }
    """)
    done = project.run("up", "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)["resources"]}
    assert rows["migrate"]["state"] == "completed" and rows["app"]["state"] == "ready"
    assert "[post_start] checked" in project.run("logs", "migrate").stdout


def test_post_start_not_found_fails_with_one_line(project: Project) -> None:
    project.write("""
        [resources.svc]
        command = ["sh", "-c", "exec sleep 1000"]
        post_start = ["no-such-hook-program", "--now"]
    """)
    done = project.run("up", "--json")
    assert done.returncode == 1
    row = json.loads(done.stdout)["resources"][0]
    assert row["message"] == "post_start command not found: no-such-hook-program"


# ------------------------------------------------------------------ pre_stop


# Records the stop signal once (the runtime signals its group and each member).
SERVICE = """
trap 'trap "" TERM; echo TERM $(date +%s.%N) >> {record}; exit 0' TERM
echo ready
while true; do sleep 0.05; done
"""


def test_pre_stop_runs_before_the_stop_signal_on_down_and_restart(project: Project) -> None:
    record = project.dir / "order"
    project.write(f"""
        [resources.svc]
        command = ["sh", "-c", {json.dumps(SERVICE.format(record=record))}]
        health = {{ probe = "log", pattern = "ready" }}
        env = {{ GREETING = "flushing" }}
        pre_stop = ["sh", "-c", "echo $$GREETING; echo pre_stop $(date +%s.%N) >> {record}"]
    """)
    project.run("up", check=True)
    project.run("restart", "svc", check=True)
    project.run("down", check=True)
    steps = [line.split()[0] for line in record.read_text().splitlines()]
    assert steps == ["pre_stop", "TERM", "pre_stop", "TERM"]
    log = project.run("logs", "svc").stdout
    assert log.count("[pre_stop] flushing") == 2


def test_pre_stop_runs_on_reload_restart_and_daemon_shutdown(project: Project) -> None:
    record = project.dir / "order"
    body = f"""
        [resources.svc]
        command = ["sh", "-c", {json.dumps(SERVICE.format(record=record))}]
        health = {{{{ probe = "log", pattern = "ready" }}}}
        env = {{{{ VERSION = "{{version}}" }}}}
        pre_stop = ["sh", "-c", "echo pre_stop $$VERSION >> {record}"]
    """
    project.write(body.format(version="1"))
    daemon = subprocess.Popen([sys.executable, "-m", "orchestrator", "daemon"], cwd=project.dir,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first = wait_for(lambda: (r := project.rows()["svc"])["state"] == "ready" and r, 60)
        project.write(body.format(version="2"))
        assert project.run("reload").returncode == 0
        wait_for(lambda: (r := project.rows()["svc"])["state"] == "ready" and r["pid"] != first["pid"], 60)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    steps = [" ".join(line.split()[:2]) if line.startswith("pre_stop") else line.split()[0]
             for line in record.read_text().splitlines()]
    assert steps == ["pre_stop 1", "TERM", "pre_stop 2", "TERM"], record.read_text()


def test_hanging_pre_stop_is_bounded_by_stop_timeout_and_killed(project: Project) -> None:
    record, pids = project.dir / "order", project.dir / "hook-pids"
    hook = f"echo $$$$ >> {pids}; sleep 1000 & echo $$! >> {pids}; wait"
    project.write(f"""
        [resources.svc]
        command = ["sh", "-c", {json.dumps(SERVICE.format(record=record))}]
        health = {{ probe = "log", pattern = "ready" }}
        stop_timeout = "3s"
        pre_stop = ["sh", "-c", {json.dumps(hook)}]
    """)
    project.run("up", check=True)
    pid = project.rows()["svc"]["pid"]
    started = time.monotonic()
    down = subprocess.Popen([sys.executable, "-m", "orchestrator", "down"], cwd=project.dir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        row = wait_for(lambda: (r := project.rows()["svc"])["message"] == "pre_stop running" and r, 30)
        assert row["state"] == "stopping"
        _out, err = down.communicate(timeout=60)
    finally:
        if down.poll() is None:
            down.kill()
            down.communicate()
    took = time.monotonic() - started
    assert down.returncode == 0, err
    assert 2.9 <= took < 3 + 10  # the hook had its stop_timeout; the stop then went on
    assert gone(pid)
    assert record.read_text().startswith("TERM")  # the stop signal came, after the hook was cut
    assert all(gone(p) for p in pids_in(pids))
    assert "pre_stop failed; stopping anyway" in (project.state_dir / "supervisor.log").read_text()


def test_pre_stop_does_not_run_when_the_process_already_died(project: Project) -> None:
    marker = project.dir / "pre-stop-ran"
    project.write(f"""
        [resources.short]
        command = ["sh", "-c", "echo ready; sleep 0.5; exit 4"]
        health = {{ probe = "log", pattern = "ready" }}
        pre_stop = ["touch", "{marker}"]
    """)
    project.run("up", check=True)
    wait_for(lambda: project.rows()["short"]["state"] == "failed", 30)
    project.run("down", check=True)
    assert not marker.exists()


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(("body", "line"), [
    ('command = ["x"]\npost_start = "psql"',
     'resources.r.post_start: expected a list of strings, like ["redis-server", "--port", "6380"]'),
    ('command = ["x"]\npre_stop = []', "resources.r.pre_stop: must not be empty"),
    ('command = ["x"]\npre_stop = ["a", 1]',
     'resources.r.pre_stop: expected a list of strings, like ["redis-server", "--port", "6380"]'),
    ('command = ["x"]\nhooks_inside = true', 'resources.r.hooks_inside: only applies to runtime = "docker"'),
    ('runtime = "docker"\nimage = "x"\nhooks_inside = "yes"',
     "resources.r.hooks_inside: expected true or false, got a string"),
    ('runtime = "external"\nhealth = { probe = "tcp", port = 5 }\npost_start = ["x"]',
     'resources.r.post_start: does not apply to runtime = "external" (vrooli never starts, stops or restarts it)'),
    ('runtime = "external"\nhealth = { probe = "tcp", port = 5 }\npre_stop = ["x"]',
     'resources.r.pre_stop: does not apply to runtime = "external" (vrooli never starts, stops or restarts it)'),
    ('command = ["x"]\npost_stat = ["x"]',
     "resources.r.post_stat: unknown key in a resource (did you mean 'post_start'?)"),
])
def test_bad_hook_keys_are_one_line_naming_resource_and_key(tmp_path: Path, body: str, line: str) -> None:
    path = tmp_path / "resources.toml"
    path.write_text(f'[project]\nname = "t"\n[resources.r]\n{body}\n')
    with pytest.raises(ConfigError) as caught:
        config.load([path], {})
    assert caught.value.lines() == [f"{path}: {line}"]


def test_hook_keys_load_into_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "resources.toml"
    path.write_text('[project]\nname = "t"\n[resources.r]\nruntime = "docker"\nimage = "x"\n'
                    'post_start = ["redis-cli", "ping"]\npre_stop = ["redis-cli", "save"]\nhooks_inside = true\n')
    spec = config.load([path], {}).resources["r"]
    assert (spec.post_start, spec.pre_stop, spec.hooks_inside) == (("redis-cli", "ping"), ("redis-cli", "save"), True)


@pytest.mark.parametrize(("body", "line"), [
    ('command = ["true"]\npost_start = ["vrooli-no-such-hook"]',
     "resources.r.post_start: 'vrooli-no-such-hook' is not found on PATH"),
    ('command = ["true"]\npre_stop = ["./missing.sh"]', "resources.r.pre_stop: not an executable file"),
    ('command = ["/bin/true"]\npost_start = ["hook"]\nenv = { PATH = "/nonexistent" }',
     "resources.r.post_start: 'hook' is not found on PATH (/nonexistent)"),
    ('runtime = "docker"\nimage = "x"\npre_stop = ["vrooli-no-such-hook"]',
     "resources.r.pre_stop: 'vrooli-no-such-hook' is not found on PATH"),
])
def test_validate_refuses_a_hook_a_start_could_not_run(tmp_path: Path, body: str, line: str) -> None:
    path = tmp_path / "resources.toml"
    path.write_text(f'[project]\nname = "t"\n[resources.r]\n{body}\n')
    with pytest.raises(ConfigError) as caught:
        config.load([path], {"PATH": "/usr/bin:/bin"}, host_checks=True)
    assert len(caught.value.lines()) == 1 and line in caught.value.lines()[0], caught.value.lines()


def test_validate_leaves_hooks_inside_a_container_to_the_image(tmp_path: Path) -> None:
    path = tmp_path / "resources.toml"
    path.write_text('[project]\nname = "t"\n[resources.r]\nruntime = "docker"\nimage = "x"\n'
                    'hooks_inside = true\npost_start = ["vrooli-only-in-the-image"]\n')
    assert config.load([path], {"PATH": "/usr/bin:/bin"}, host_checks=True).resources["r"].hooks_inside


def test_export_names_the_hooks_it_cannot_carry(project: Project) -> None:
    project.write("""
        [resources.cache]
        runtime = "docker"
        image = "redis:7"
        post_start = ["redis-cli", "ping"]
        pre_stop = ["redis-cli", "save"]
    """)
    for kind in ("compose", "kubernetes"):
        done = project.run("export", kind, "-o", str(project.dir / f"out-{kind}"))
        assert done.returncode == 0, done.stderr
        assert "vrooli: resources.cache.post_start: not exported: only vrooli runs hooks; run it yourself" \
            in done.stderr.splitlines()
        assert "vrooli: resources.cache.pre_stop: not exported: only vrooli runs hooks; run it yourself" \
            in done.stderr.splitlines()


# ------------------------------------------------------------------ docker


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def redis_image() -> Iterator[str]:
    try:
        docker("image", "inspect", "vrooli-test/redis:7")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a running Docker engine and `scripts/build-test-images.sh`")
    yield "vrooli-test/redis:7"


@pytest.mark.docker
def test_hooks_inside_run_redis_cli_in_the_container(project: Project, redis_image: str) -> None:
    name, port = f"t{uuid.uuid4().hex[:8]}", free_port()
    project.write(f"""
        [project]
        name = "{name}"
        state_dir = ".state"
        health_listen = "127.0.0.1:0"

        [resources.cache]
        runtime = "docker"
        image = "{redis_image}"
        ports = ["127.0.0.1:{port}:6379"]
        health = {{ probe = "redis" }}
        hooks_inside = true
        post_start = ["redis-cli", "SET", "hooked", "inside"]
        pre_stop = ["redis-cli", "GET", "hooked"]

        [resources.host]
        runtime = "docker"
        image = "{redis_image}"
        ports = ["127.0.0.1:{free_port()}:6379"]
        env = {{ TARGET_PORT = "{port}" }}
        depends_on = ["cache"]
        post_start = ["sh", "-c", "redis-cli -p $$TARGET_PORT SET from-host yes"]
    """)
    try:
        done = project.run("up", timeout=180)
        assert done.returncode == 0, done.stderr
        value = subprocess.run(["redis-cli", "-p", str(port), "GET", "hooked"], capture_output=True, text=True,
                               check=True).stdout.strip()
        assert value == "inside"
        assert subprocess.run(["redis-cli", "-p", str(port), "GET", "from-host"], capture_output=True, text=True,
                              check=True).stdout.strip() == "yes"
        assert project.run("down", timeout=180).returncode == 0
        log = (project.state_dir / "logs" / "cache.log").read_text()
        assert "[post_start] running inside the container" in log and "[post_start] OK" in log
        assert "[pre_stop] inside" in log
    finally:
        project.run("down", timeout=180)
        left = docker("ps", "-aq", "--filter", f"label=dev.vrooli.project={name}").split()
        for ident in left:
            subprocess.run(["docker", "rm", "-f", ident], capture_output=True)
        assert not left


@pytest.mark.docker
def test_a_hanging_pre_stop_inside_the_container_is_bounded_by_stop_timeout(project: Project, redis_image: str) -> None:
    name = f"t{uuid.uuid4().hex[:8]}"
    project.write(f"""
        [project]
        name = "{name}"
        state_dir = ".state"
        health_listen = "127.0.0.1:0"

        [resources.cache]
        runtime = "docker"
        image = "{redis_image}"
        ports = ["127.0.0.1:{free_port()}:6379"]
        health = {{ probe = "redis" }}
        hooks_inside = true
        stop_timeout = "2s"
        pre_stop = ["sh", "-c", "echo flushing; sleep 1000"]
    """)
    try:
        assert project.run("up", timeout=180).returncode == 0
        started = time.monotonic()
        assert project.run("down", timeout=180).returncode == 0
        took = time.monotonic() - started
        assert 1.9 <= took < 2 + 15, took
        log = (project.state_dir / "logs" / "cache.log").read_text()
        assert "[pre_stop] did not finish within 2s" in log
    finally:
        project.run("down", timeout=180)
        left = docker("ps", "-aq", "--filter", f"label=dev.vrooli.project={name}").split()
        for ident in left:
            subprocess.run(["docker", "rm", "-f", ident], capture_output=True)
        assert not left
