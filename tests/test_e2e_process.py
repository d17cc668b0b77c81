"""The real CLI on real processes: Postgres 15, redis-server, shell scripts."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    Project,
    free_port,
    postgres_command,
    postgres_data_dir,
    processes_with_token,
    wait_for,
)

PG = Path("/usr/lib/postgresql/15/bin/postgres")


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.mark.skipif(not PG.exists(), reason="needs Postgres 15")
def test_real_postgres_and_redis_start_concurrently_and_dependent_waits_for_both(project: Project) -> None:
    data = postgres_data_dir(project.dir)
    pg_port, redis_port = free_port(), free_port()
    project.write(f"""
        [resources.postgres]
        command = {json.dumps(postgres_command(data, pg_port))}
        user = "postgres"
        ports = [{pg_port}]
        stop_signal = "SIGINT"
        health = {{ probe = "postgres" }}

        [resources.redis]
        command = ["redis-server", "--port", "{redis_port}", "--save", "", "--appendonly", "no"]
        ports = [{redis_port}]
        health = {{ probe = "redis" }}

        [resources.app]
        command = ["sh", "-c", "echo app up; exec sleep 1000"]
        depends_on = ["postgres", "redis"]
        health = {{ probe = "log", pattern = "app up" }}

        [resources.slowpoke]
        command = ["sh", "-c", "sleep 3; echo slow ready; exec sleep 1000"]
        health = {{ probe = "log", pattern = "slow ready" }}
    """)
    done = project.run("up")
    assert done.returncode == 0, done.stderr
    assert "4/4 ready" in done.stderr
    rows = project.rows()
    assert {r["state"] for r in rows.values()} == {"ready"}
    pg, redis, app, slow = rows["postgres"], rows["redis"], rows["app"], rows["slowpoke"]
    # independent resources start together, not one after another
    assert abs(ts(pg["started_at"]) - ts(redis["started_at"])) < 0.5
    assert abs(ts(pg["started_at"]) - ts(slow["started_at"])) < 0.5
    # the dependent starts after both dependencies are ready, and does not wait for slowpoke
    assert ts(app["started_at"]) >= max(ts(pg["ready_at"]), ts(redis["ready_at"]))
    assert ts(app["started_at"]) < ts(slow["ready_at"])
    for row in rows.values():
        assert psutil.pid_exists(row["pid"])
        assert row["startup_seconds"] > 0 and row["restarts"] == 0
        assert row["ready_at"].endswith("Z") and "." in row["ready_at"]
    assert psutil.Process(pg["pid"]).username() == "postgres"
    assert project.run("status").returncode == 0
    pids = [r["pid"] for r in rows.values()]
    done = project.run("down")
    assert done.returncode == 0, done.stderr
    assert not [p for p in pids if psutil.pid_exists(p)]
    assert project.run("status").returncode == 3


def test_failure_propagates_and_independent_branch_carries_on(project: Project) -> None:
    project.write("""
        [resources.bad]
        command = ["sh", "-c", "echo boom >&2; exit 1"]
        health = { probe = "log", pattern = "never" }

        [resources.dependent]
        command = ["sleep", "1000"]
        depends_on = ["bad"]

        [resources.fine]
        command = ["sh", "-c", "echo ok; exec sleep 1000"]
        health = { probe = "log", pattern = "ok" }
    """)
    done = project.run("up")
    assert done.returncode == 1
    assert "bad: failed: exited with code 1; last output: boom before it was ready" in done.stderr
    assert "dependent: blocked: dependency bad failed: exited with code 1" in done.stderr
    rows = project.rows()
    assert rows["fine"]["state"] == "ready"
    assert rows["dependent"]["pid"] is None
    assert project.run("status").returncode == 1


def test_start_timeout_names_the_last_probe_result(project: Project) -> None:
    port = free_port()
    project.write(f"""
        [resources.never]
        command = ["sleep", "1000"]
        start_timeout = "500ms"
        health = {{ probe = "tcp", port = {port} }}
    """)
    done = project.run("up", "--json")
    assert done.returncode == 1
    row = json.loads(done.stdout)["resources"][0]
    assert row["state"] == "failed"
    assert row["message"] == "not ready after 0.5s: connection refused"


def test_process_ignoring_sigterm_is_killed_after_stop_timeout(project: Project) -> None:
    project.write("""
        [resources.stubborn]
        command = ["sh", "-c", "trap '' TERM; echo started; while true; do sleep 0.1; done"]
        stop_timeout = "700ms"
        health = { probe = "log", pattern = "started" }
    """)
    project.run("up", check=True)
    pid = project.rows()["stubborn"]["pid"]
    started = time.monotonic()
    project.run("down", "stubborn", check=True)
    took = time.monotonic() - started
    assert not psutil.pid_exists(pid)
    assert took >= 0.6
    assert project.rows()["stubborn"]["state"] == "stopped"


def test_grandchildren_are_gone_after_down(project: Project) -> None:
    project.write("""
        [resources.forker]
        command = ["sh", "-c", "(sleep 1001 &); sleep 1002 & echo forked; wait"]
        health = { probe = "log", pattern = "forked" }
    """)
    project.run("up", check=True)
    leader = psutil.Process(project.rows()["forker"]["pid"])
    group = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and
             p.info["cmdline"][:2] in (["sleep", "1001"], ["sleep", "1002"]) and os.getpgid(p.pid) == leader.pid]
    assert len(group) == 2  # one of them was reparented away from the leader
    project.run("down", check=True)
    assert not [p for p in group if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_port_in_use_is_named(project: Project) -> None:
    port = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    try:
        project.write(f"""
            [resources.redis]
            command = ["redis-server", "--port", "{port}", "--save", ""]
            ports = [{port}]
            health = {{ probe = "redis" }}
        """)
        done = project.run("up")
    finally:
        blocker.close()
    assert done.returncode == 1
    assert f"redis: failed: port {port} is already in use by pid {os.getpid()}" in done.stderr


def test_two_concurrent_ups_start_one_of_each(project: Project) -> None:
    project.write("""
        [resources.one]
        command = ["sh", "-c", "sleep 0.5; echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
    """)
    cmd = [sys.executable, "-m", "orchestrator", "up"]
    first = subprocess.Popen(cmd, cwd=project.dir, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(cmd, cwd=project.dir, stderr=subprocess.PIPE, text=True)
    assert first.wait(60) == 0 and second.wait(60) == 0
    assert first.stderr is not None and second.stderr is not None  # stderr=PIPE
    first.stderr.close()
    second.stderr.close()
    supervisors = [p for p in psutil.process_iter(["name", "status", "cwd"]) if p.info["name"] == "vrooli-sup"
                   and p.info["status"] != psutil.STATUS_ZOMBIE and p.info["cwd"] == str(project.dir)]
    assert len(supervisors) == 1
    pid = project.rows()["one"]["pid"]
    shells = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "1000"]
              and p.environ().get("VROOLI_TEST_TOKEN") == os.environ["VROOLI_TEST_TOKEN"]]
    assert len(shells) == 1 and shells[0].pid == pid


def test_logs_tail_and_json(project: Project) -> None:
    project.write("""
        [resources.talker]
        command = ["sh", "-c", "for i in 1 2 3 4 5; do echo line $$i; done; echo done; exec sleep 1000"]
        health = { probe = "log", pattern = "done" }
    """)
    project.run("up", check=True)
    done = project.run("logs", "talker", "--tail", "2", check=True)
    assert done.stdout.splitlines() == ["line 5", "done"]
    payload = json.loads(project.run("logs", "talker", "--json", check=True).stdout)
    assert payload["lines"][0] == "line 1"
    assert project.run("logs", "nobody").returncode == 2


def test_restart_policy_brings_a_killed_process_back(project: Project) -> None:
    project.write("""
        [resources.phoenix]
        command = ["sh", "-c", "echo alive; exec sleep 1000"]
        restart = "always"
        restart_delay = "100ms"
        health = { probe = "log", pattern = "alive" }
    """)
    project.run("up", check=True)
    first = project.rows()["phoenix"]["pid"]
    os.kill(first, signal.SIGKILL)
    row = wait_for(lambda: (r := project.rows()["phoenix"])["state"] == "ready" and r["pid"] != first and r, 10)
    assert row["restarts"] == 1


def test_foreground_stops_everything_on_sigterm(project: Project) -> None:
    project.write("""
        [resources.base]
        command = ["sh", "-c", "echo base; exec sleep 1000"]
        health = { probe = "log", pattern = "base" }
        [resources.top]
        command = ["sh", "-c", "echo top; exec sleep 1000"]
        depends_on = ["base"]
        health = { probe = "log", pattern = "top" }
    """)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "up", "--foreground", "--log-format", "json"],
                            cwd=project.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: project.run("status").returncode == 0, 30)
        pids = [r["pid"] for r in project.rows().values()]
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert not [p for p in pids if psutil.pid_exists(p)]
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    stops = [e["resource"] for e in events if e.get("event") == "resource stop finished"]
    assert stops == ["top", "base"]  # reverse dependency order


def test_status_exit_code_3_when_nothing_runs(project: Project) -> None:
    project.write('[resources.x]\ncommand = ["true"]\n')
    done = project.run("status", "--json")
    assert done.returncode == 3
    assert json.loads(done.stdout)["running"] is False


def test_unknown_resource_on_up_is_a_usage_error(project: Project) -> None:
    project.write('[resources.x]\ncommand = ["true"]\n')
    done = project.run("up", "nope")
    assert done.returncode == 2
    assert done.stderr.strip() == "vrooli: unknown resource 'nope' (known: x)"


def test_secrets_never_reach_the_logs(project: Project) -> None:
    port = free_port()
    (project.dir / ".env").write_text("REDIS_SECRET=s3cr3t-value-xyz\n")
    project.write(f"""
        [resources.redis]
        command = ["redis-server", "--port", "{port}", "--save", "", "--requirepass", "${{REDIS_SECRET}}"]
        ports = [{port}]
        env = {{ API_TOKEN = "${{REDIS_SECRET}}" }}
        health = {{ probe = "redis", password = "${{REDIS_SECRET}}" }}
    """)
    done = project.run("up")
    assert done.returncode == 0, done.stderr
    assert project.run("restart", "redis").returncode == 0
    status = project.run("status", "--json").stdout
    supervisor_log = (project.state_dir / "supervisor.log").read_text()
    for text in (done.stdout, done.stderr, status, supervisor_log):
        assert "s3cr3t-value-xyz" not in text


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_user_runs_with_that_users_groups_and_login_environment(project: Project) -> None:
    nobody = pwd.getpwnam("nobody")
    groups = sorted(os.getgrouplist("nobody", nobody.pw_gid))
    # `$$` is a `$` for the shell: resources.toml interpolates `$NAME` itself, as compose does.
    script = ('echo "ids $$(id -u) $$(id -g) $$(id -G)"; '
              'echo "env HOME=$$HOME USER=$$USER LOGNAME=$$LOGNAME SHELL=$$SHELL"; exec sleep 1000')
    project.write(f"""
        [resources.plain]
        command = ["sh", "-c", {json.dumps(script)}]
        user = "nobody"
        health = {{ probe = "log", pattern = "^env " }}

        [resources.explicit]
        command = ["sh", "-c", {json.dumps(script)}]
        user = "nobody"
        env = {{ HOME = "/tmp/elsewhere" }}
        health = {{ probe = "log", pattern = "^env " }}
    """)
    done = project.run("up")
    assert done.returncode == 0, done.stderr
    plain = project.run("logs", "plain", check=True).stdout.splitlines()
    assert f"ids {nobody.pw_uid} {nobody.pw_gid} {' '.join(map(str, groups))}" in plain
    assert f"env HOME={nobody.pw_dir} USER=nobody LOGNAME=nobody SHELL={nobody.pw_shell}" in plain
    explicit = project.run("logs", "explicit", check=True).stdout.splitlines()
    assert f"env HOME=/tmp/elsewhere USER=nobody LOGNAME=nobody SHELL={nobody.pw_shell}" in explicit  # env wins
    for row in project.rows().values():
        proc = psutil.Process(row["pid"])
        assert set(proc.uids()) == {nobody.pw_uid} and set(proc.gids()) == {nobody.pw_gid}
        status = Path(f"/proc/{row['pid']}/status").read_text()
        supplementary = next(line for line in status.splitlines() if line.startswith("Groups:"))
        assert sorted(int(g) for g in supplementary.split()[1:]) == groups  # none of root's
        assert proc.environ()["HOME"] in (nobody.pw_dir, "/tmp/elsewhere")


DAEMON = """
import os, socket, sys, time
port = int(sys.argv[1])
if os.fork():
    os._exit(0)          # the launcher: exits 0 at once
os.setsid()              # out of the session and the process group it was started in
if os.fork():
    os._exit(0)
time.sleep(1)            # the launcher is long gone before the port opens
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen(16)
print("daemon serving", flush=True)
while True:
    server.accept()[0].close()
"""


def test_double_forking_daemon_is_ready_not_completed_and_down_stops_it(project: Project) -> None:
    port = free_port()
    project.write(f"""
        [resources.daemon]
        command = ["{sys.executable}", "-c", {json.dumps(DAEMON)}, "{port}"]
        health = {{ probe = "tcp", port = {port} }}

        [resources.client]
        command = ["sh", "-c", "echo client up; exec sleep 1000"]
        depends_on = ["daemon"]
        health = {{ probe = "log", pattern = "client up" }}
    """)
    done = project.run("up")
    assert done.returncode == 0, done.stderr
    rows = project.rows()
    daemon, client = rows["daemon"], rows["client"]
    assert daemon["state"] == "ready" and daemon["restarts"] == 0
    assert ts(client["started_at"]) >= ts(daemon["ready_at"])
    serving = psutil.Process(daemon["pid"])  # the daemon itself, not its long-gone launcher
    assert any(c.laddr.port == port for c in serving.net_connections("tcp"))
    assert os.getsid(serving.pid) != os.getsid(0)

    # A supervisor killed with SIGKILL: its heir takes the daemon back, no duplicate.
    supervisor = next(p for p in psutil.process_iter(["name", "cwd", "status"]) if p.info["name"] == "vrooli-sup"
                      and p.info["cwd"] == str(project.dir) and p.info["status"] != psutil.STATUS_ZOMBIE)
    supervisor.kill()
    supervisor.wait(10)
    assert project.run("up").returncode == 0
    again = project.rows()["daemon"]
    assert again["state"] == "ready" and again["pid"] == serving.pid

    assert project.run("down").returncode == 0
    assert not serving.is_running() or serving.status() == psutil.STATUS_ZOMBIE


def test_launcher_leaving_a_background_process_is_followed_and_adopted(project: Project) -> None:
    # No probe: ready at once; the launcher's exit 0 leaves `sleep` behind, which is the
    # service now. A supervisor killed with SIGKILL right after must not lose track of it.
    project.write("""
        [resources.bg]
        command = ["sh", "-c", "sleep 1000 & echo launched"]
    """)
    assert project.run("up").returncode == 0

    def cmdline(pid: int) -> list[str]:
        try:
            return psutil.Process(pid).cmdline()
        except psutil.Error:
            return []

    sleeper = wait_for(lambda: (r := project.rows()["bg"])["state"] == "ready"
                       and cmdline(r["pid"]) == ["sleep", "1000"] and r, 10)
    supervisor = next(p for p in psutil.process_iter(["name", "cwd", "status"]) if p.info["name"] == "vrooli-sup"
                      and p.info["cwd"] == str(project.dir) and p.info["status"] != psutil.STATUS_ZOMBIE)
    supervisor.kill()
    supervisor.wait(10)
    assert project.run("up").returncode == 0
    assert project.rows()["bg"]["pid"] == sleeper["pid"]
    token = os.environ["VROOLI_TEST_TOKEN"]
    sleeps = [p for p in processes_with_token(token) if p.cmdline() == ["sleep", "1000"]]
    assert [p.pid for p in sleeps] == [sleeper["pid"]]  # taken back, not started twice
    assert project.run("down").returncode == 0
    assert not psutil.pid_exists(sleeper["pid"]) or psutil.Process(sleeper["pid"]).status() == psutil.STATUS_ZOMBIE


def test_zero_exit_with_nothing_left_before_its_probe_passed_is_a_failure(project: Project) -> None:
    port = free_port()
    project.write(f"""
        [resources.gone]
        command = ["sh", "-c", "echo launched"]
        health = {{ probe = "tcp", port = {port} }}

        [resources.migrate]
        command = ["sh", "-c", "echo migrated"]

        [resources.after]
        command = ["sh", "-c", "echo after up; exec sleep 1000"]
        depends_on = {{ migrate = "completed" }}
        health = {{ probe = "log", pattern = "after up" }}
    """)
    done = project.run("up")
    assert done.returncode == 1
    rows = project.rows()
    assert rows["gone"]["state"] == "failed"
    assert rows["gone"]["message"] == "exited with code 0 before it was ready"
    assert rows["migrate"]["state"] == "completed"  # a one-shot with no probe: exit 0 is its success
    assert rows["after"]["state"] == "ready"


FLAKY = ('n=$$(cat count 2>/dev/null || echo 0); n=$$((n+1)); echo $$n > count; '
         'if [ $$n -le 2 ]; then echo "crash $$n"; exit 1; fi; echo serving; exec sleep 1000')  # $$: a shell $


def flaky_stack(project: Project, restart: str) -> None:
    project.write(f"""
        [resources.flaky]
        command = ["sh", "-c", {json.dumps(FLAKY)}]
        restart = "{restart}"
        restart_delay = "100ms"
        start_timeout = "60s"
        health = {{ probe = "log", pattern = "^serving" }}

        [resources.dependent]
        command = ["sh", "-c", "echo dependent up; exec sleep 1000"]
        depends_on = ["flaky"]
        health = {{ probe = "log", pattern = "dependent up" }}
    """)


def test_crash_before_ready_follows_the_restart_policy(project: Project) -> None:
    flaky_stack(project, "on-failure")
    done = project.run("up")
    assert done.returncode == 0, done.stderr
    rows = project.rows()
    flaky, dependent = rows["flaky"], rows["dependent"]
    assert flaky["state"] == "ready" and flaky["restarts"] == 2
    assert dependent["state"] == "ready" and ts(dependent["started_at"]) >= ts(flaky["ready_at"])
    assert (project.dir / "count").read_text().strip() == "3"


def test_the_forking_ups_own_request_does_not_start_again_what_already_failed(project: Project) -> None:
    """A cold `up` forks the supervisor, which starts at once; the command's request comes
    after. A client slow to send it (a loaded machine: CI lost this race) must not make a
    resource with `restart = "no"` that crashed meanwhile run a second time."""
    from orchestrator import config
    from orchestrator.client import spawn
    from orchestrator.client.up import follow

    flaky_stack(project, "no")
    loaded = config.load([project.file])
    client = spawn.ensure_supervisor(loaded, up=[], no_deps=False, profiles=[])
    wait_for(lambda: (project.dir / "count").exists() and project.rows()["flaky"]["state"] == "failed", timeout=30)
    assert client.claim  # this command forked it: its request says so
    code = follow(client, {"op": "up", "names": [], "no_deps": False, "profiles": [], "claim": client.claim,
                           "files": [str(f) for f in loaded.files], "environ": config.referenced_environ(loaded)},
                  json_out=True)
    assert code == 1
    assert (project.dir / "count").read_text().strip() == "1"
    assert project.rows()["flaky"]["message"] == "exited with code 1; last output: crash 1 before it was ready"
    # Any other `up` (another terminal's, the same words) gives the failed resource its next chance.
    project.run("up")
    assert (project.dir / "count").read_text().strip() == "2"


def test_crash_before_ready_with_restart_no_fails_at_once(project: Project) -> None:
    flaky_stack(project, "no")
    done = project.run("up")
    assert done.returncode == 1
    rows = project.rows()
    assert rows["flaky"]["state"] == "failed"
    assert rows["flaky"]["message"] == "exited with code 1; last output: crash 1 before it was ready"
    assert rows["dependent"]["state"] == "blocked"
    assert (project.dir / "count").read_text().strip() == "1"


def test_catastrophic_log_pattern_leaves_the_supervisor_responsive(project: Project) -> None:
    from orchestrator.infra import paths
    from orchestrator.infra.control import Client

    printer = f"{sys.executable} -c \"print('a' * 5000 + '!', flush=True)\"; exec sleep 1000"
    project.write(f"""
        [resources.nested]
        command = ["sh", "-c", {json.dumps(printer)}]
        start_timeout = "120s"
        health = {{ probe = "log", pattern = "^(a+)+$", timeout = "500ms" }}

        [resources.alternation]
        command = ["sh", "-c", {json.dumps(printer)}]
        start_timeout = "120s"
        health = {{ probe = "log", pattern = "^(a|aa)+$", timeout = "500ms" }}
    """)
    up = subprocess.Popen([sys.executable, "-m", "orchestrator", "up"], cwd=project.dir,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: project.run("status").returncode == 1, 60)  # the supervisor runs
        client = Client(paths.control_socket(project.state_dir), timeout=10)
        wait_for(lambda: "skipped" in json.dumps(client.call({"op": "status", "names": []})), 30)
        slowest = 0.0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            started = time.monotonic()
            reply = client.call({"op": "status", "names": []})
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.1)
        assert slowest < 1.0, slowest
        rows = {r["name"]: r for r in reply["resources"]}
        assert {r["state"] for r in rows.values()} == {"starting"}
        assert "line(s) skipped: matching took longer than 0.125s" in rows["alternation"]["message"]
        timed = time.monotonic()
        assert project.run("status", timeout=30).returncode == 1
        assert time.monotonic() - timed < 10
    finally:
        up.terminate()
        up.wait(30)


def test_relative_command_is_found_in_the_resources_cwd(project: Project) -> None:
    # `./serve.sh` runs from `cwd`, so that is where the start must look for it, not
    # in the project directory (where validate found it and up then refused it).
    sub = project.dir / "svc"
    sub.mkdir()
    script = sub / "serve.sh"
    script.write_text("#!/bin/sh\necho serving\nexec sleep 1000\n")
    script.chmod(0o755)
    project.write("""
        [resources.svc]
        command = ["./serve.sh"]
        cwd = "svc"
        health = { probe = "log", pattern = "serving" }
    """)
    assert project.run("validate").returncode == 0
    done = project.run("up")
    assert done.returncode == 0, done.stderr
    project.run("down", check=True)


def supervisor_alive(project: Project) -> bool:
    return (project.state_dir / "supervisor.pid").exists() or project.run("status").returncode != 3


def test_up_that_cannot_spawn_a_resource_stops_the_rest_and_its_supervisor(project: Project) -> None:
    # `up` failing at start leaves nothing starting and no idle supervisor.
    project.write("""
        [resources.base]
        command = ["sh", "-c", "echo base; exec sleep 1000"]
        health = { probe = "log", pattern = "base" }
        [resources.slow]
        command = ["sh", "-c", "sleep 30; echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
        [resources.nowhere]
        command = ["sleep", "1000"]
        cwd = "gone"
        depends_on = ["base"]
    """)
    (project.dir / "gone").mkdir()  # exists for `validate`, gone by the time it starts
    assert project.run("validate").returncode == 0
    (project.dir / "gone").rmdir()
    started = time.monotonic()
    done = project.run("up")
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 20  # it did not wait for `slow` to finish starting
    assert f"vrooli: nowhere: failed: cwd does not exist: {project.dir / 'gone'}" in done.stderr
    assert "vrooli: nowhere could not be started; stopped what this up had started: base, slow" in done.stderr
    wait_for(lambda: not (project.state_dir / "supervisor.pid").exists(), 30)
    assert project.run("status").returncode == 3
    assert not [p for p in psutil.process_iter(["cmdline"])
                if p.info["cmdline"] and "sleep 1000" in " ".join(p.info["cmdline"])
                and p.environ().get("VROOLI_TEST_TOKEN") == os.environ["VROOLI_TEST_TOKEN"]]


def test_up_failing_its_checks_leaves_no_idle_supervisor(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{project.dir}/no-docker.sock")
    project.write("""
        [resources.box]
        runtime = "docker"
        image = "vrooli-test/redis:7"
        [resources.plain]
        command = ["sh", "-c", "echo ok; exec sleep 1000"]
        health = { probe = "log", pattern = "ok" }
    """)
    done = project.run("up")
    assert done.returncode == 1
    assert "cannot reach the Docker engine" in done.stderr
    wait_for(lambda: not (project.state_dir / "supervisor.pid").exists(), 30)
    assert project.run("status").returncode == 3


def test_warm_up_that_cannot_spawn_stops_only_what_it_started(project: Project) -> None:
    project.write("""
        [resources.keep]
        command = ["sh", "-c", "echo keep; exec sleep 1000"]
        health = { probe = "log", pattern = "keep" }
        [resources.extra]
        command = ["sh", "-c", "sleep 30; echo extra; exec sleep 1000"]
        health = { probe = "log", pattern = "extra" }
        [resources.broken]
        command = ["no-such-binary-for-vrooli"]
    """)
    assert project.run("up", "keep").returncode == 0
    keep = project.rows()["keep"]["pid"]
    done = project.run("up")
    assert done.returncode == 1
    assert "vrooli: broken: failed: command not found: no-such-binary-for-vrooli" in done.stderr
    rows = project.rows()
    assert rows["keep"]["state"] == "ready" and rows["keep"]["pid"] == keep  # it ran before this up
    assert rows["extra"]["state"] == "stopped"
    assert rows["broken"]["state"] == "failed"
