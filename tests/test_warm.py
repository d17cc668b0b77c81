"""The warm supervisor: after `down` it idles for keep_warm, holding nothing, and
the next `up` wakes it with that command's files and environment; it never serves a stale
config, and it ends at once on `down --exit`, on SIGTERM, or when keep_warm has passed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import ROOT, Project, free_port, wait_for


def warm_project(project: Project, body: str, keep_warm: str = "5m") -> None:
    project.write(f"""
        [project]
        name = "warm{os.getpid()}"
        state_dir = ".state"
        health_listen = "127.0.0.1:0"
        keep_warm = "{keep_warm}"
        {body}
    """)


SLEEPER = """
[resources.app]
command = ["sleep", "600"]
"""


def supervisor_pid(project: Project) -> int:
    return int((project.state_dir / "supervisor.pid").read_text())


def status_json(project: Project) -> tuple[int, dict[str, Any]]:
    import json

    done = project.run("status", "--json")
    status: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, status


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_down_keeps_the_supervisor_idle_holding_nothing_and_up_reuses_it(project: Project) -> None:
    warm_project(project, SLEEPER)
    project.run("up", check=True)
    pid = supervisor_pid(project)
    app_pid = project.rows()["app"]["pid"]
    health = (project.state_dir / "health.addr").read_text().strip()
    done = project.run("down", check=True)
    assert "stopped app" in done.stderr
    assert psutil.pid_exists(pid) and not gone(pid), "the supervisor should stay warm after down"
    assert gone(app_pid), "an idle supervisor holds no resources"
    # Nothing runs, and status says so (exit 3), plus the supervisor's line.
    code, status = status_json(project)
    assert code == 3
    assert status["running"] is False
    info = status["supervisor"]
    assert isinstance(info, dict) and info["idle"] is True and info["pid"] == pid
    assert 200 < info["exits_in_seconds"] <= 300
    text = project.run("status")
    assert text.returncode == 3 and "not running" in text.stderr and "supervisor: idle, exits in 5m" in text.stderr
    # Its health port is free again, and no address is advertised.
    assert not (project.state_dir / "health.addr").exists()
    host, port = health.rsplit(":", 1)
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0
    # The next up is served by the same process.
    project.run("up", check=True)
    assert supervisor_pid(project) == pid
    code, status = status_json(project)
    assert code == 0 and status["supervisor"]["idle"] is False
    assert (project.state_dir / "health.addr").exists()
    project.run("down", "--exit", check=True)
    assert gone(pid)
    assert not (project.state_dir / "control.sock").exists()
    assert not (project.state_dir / "supervisor.pid").exists()


def test_a_warm_up_reads_the_files_and_the_environment_again(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    out = project.dir / "seen.txt"
    body = f"""
        [resources.app]
        command = ["sh", "-c", "echo \\"$$GREETING $$FROM_FILE $$UNREFERENCED\\" > {out}; exec sleep 600"]
        env = {{ GREETING = "${{GREETING}}", FROM_FILE = "one" }}
    """
    warm_project(project, body)
    monkeypatch.setenv("GREETING", "hello")
    monkeypatch.setenv("UNREFERENCED", "first")
    project.run("up", check=True)
    pid = supervisor_pid(project)
    wait_for(lambda: out.exists() and out.read_text().strip() == "hello one first")
    project.run("down", check=True)
    out.unlink()
    # While it idles: the file is edited, a referenced and an unreferenced variable change.
    warm_project(project, body.replace('FROM_FILE = "one"', 'FROM_FILE = "two"'))
    monkeypatch.setenv("GREETING", "bonjour")
    monkeypatch.setenv("UNREFERENCED", "second")
    project.run("up", check=True)
    assert supervisor_pid(project) == pid
    wait_for(lambda: out.exists() and out.read_text().strip() == "bonjour two second")


def test_an_added_resource_and_a_broken_file_while_idle(project: Project) -> None:
    warm_project(project, SLEEPER)
    project.run("up", check=True)
    pid = supervisor_pid(project)
    project.run("down", check=True)
    project.write("[project]\nname = 'x'\nstate_dir = '.state'\n[resources.app]\ncommand = 5\n")
    broken = project.run("up")
    assert broken.returncode == 2
    assert psutil.pid_exists(pid) and not gone(pid)  # the client refused it; the supervisor stays idle
    warm_project(project, SLEEPER + '\n[resources.more]\ncommand = ["sleep", "601"]\n')
    project.run("up", check=True)
    assert supervisor_pid(project) == pid
    assert {n: r["state"] for n, r in project.rows().items()} == {"app": "ready", "more": "ready"}


def test_idle_supervisor_ends_by_itself_after_keep_warm(project: Project) -> None:
    warm_project(project, SLEEPER, keep_warm="1s")
    project.run("up", check=True)
    pid = supervisor_pid(project)
    project.run("down", check=True)
    wait_for(lambda: gone(pid), timeout=15)
    assert not (project.state_dir / "control.sock").exists()
    assert not (project.state_dir / "supervisor.pid").exists()
    assert project.run("status").returncode == 3


def test_keep_warm_zero_ends_the_supervisor_with_down(project: Project) -> None:
    warm_project(project, SLEEPER, keep_warm="0")
    project.run("up", check=True)
    pid = supervisor_pid(project)
    project.run("down", check=True)
    assert gone(pid)
    assert not (project.state_dir / "supervisor.pid").exists()


def test_a_keep_warm_edited_while_running_decides_the_next_down(project: Project) -> None:
    # The process woke with keep_warm = "5m"; the file now says "0", and an `up` applied it:
    # the next `down` must end the supervisor, and an edit back to "2m" must idle for 2m.
    warm_project(project, SLEEPER)
    project.run("up", check=True)
    pid = supervisor_pid(project)
    warm_project(project, SLEEPER, keep_warm="0")
    project.run("up", check=True)
    project.run("down", check=True)
    wait_for(lambda: gone(pid), timeout=15)
    warm_project(project, SLEEPER, keep_warm="5m")
    project.run("up", check=True)
    warm_project(project, SLEEPER, keep_warm="2m")
    project.run("up", check=True)
    project.run("down", check=True)
    code, status = status_json(project)
    assert code == 3 and 60 < status["supervisor"]["exits_in_seconds"] <= 120


def test_keep_warm_from_the_environment_when_the_file_sets_none(project: Project,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    project.write("[project]\nstate_dir = '.state'\n" + SLEEPER)
    monkeypatch.setenv("VROOLI_KEEP_WARM", "soon")
    bad = project.run("validate")
    assert bad.returncode == 2 and "keep_warm" in bad.stderr and "VROOLI_KEEP_WARM" in bad.stderr
    monkeypatch.setenv("VROOLI_KEEP_WARM", "2m")
    project.run("up", check=True)
    project.run("down", check=True)
    code, status = status_json(project)
    assert code == 3 and 60 < status["supervisor"]["exits_in_seconds"] <= 120


def test_sigterm_and_down_exit_end_an_idle_supervisor_at_once(project: Project) -> None:
    warm_project(project, SLEEPER)
    project.run("up", check=True)
    pid = supervisor_pid(project)
    project.run("down", check=True)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: gone(pid), timeout=10)
    assert not (project.state_dir / "control.sock").exists()
    project.run("up", check=True)
    second = supervisor_pid(project)
    assert second != pid
    project.run("down", check=True)
    done = project.run("down", "--exit", check=True)  # already idle: ends it all the same
    assert gone(second) and "stopped nothing" in done.stderr


def test_requests_an_idle_supervisor_cannot_serve_say_so(project: Project) -> None:
    warm_project(project, SLEEPER)
    project.run("up", check=True)
    project.run("down", check=True)
    done = project.run("restart", "app")
    assert done.returncode == 3 and "idle" in done.stderr and "vrooli up" in done.stderr


def test_an_idle_supervisor_with_older_code_is_replaced(project: Project, tmp_path: Path) -> None:
    """A `pip install -U` between `down` and `up`: the idle supervisor runs the old modules."""
    copy = tmp_path / "site"
    shutil.copytree(ROOT / "orchestrator", copy / "orchestrator",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(copy)}

    def vrooli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=project.dir, env=env,
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    warm_project(project, SLEEPER)
    assert vrooli("up").returncode == 0
    old = supervisor_pid(project)
    assert vrooli("down").returncode == 0
    assert not gone(old)
    upgraded = copy / "orchestrator" / "engine" / "supervisor.py"
    later = max(f.stat().st_mtime_ns for f in copy.rglob("*.py")) + 10**9
    os.utime(upgraded, ns=(later, later))
    done = vrooli("up")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: gone(old), timeout=10)
    new = supervisor_pid(project)
    assert new != old
    # Same code on both sides now: the next down/up keeps the new one.
    assert vrooli("down").returncode == 0
    assert vrooli("up").returncode == 0
    assert supervisor_pid(project) == new
    assert vrooli("down", "--exit").returncode == 0


def test_a_daemon_is_never_kept_warm(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VROOLI_KEEP_WARM")
    warm_project(project, SLEEPER)
    daemon = subprocess.Popen([sys.executable, "-m", "orchestrator", "daemon", "--health-listen", "127.0.0.1:0"],
                              cwd=project.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: project.run("status").returncode == 0, timeout=60)
        project.run("down", check=True)
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def test_up_foreground_after_down_takes_over_from_the_idle_supervisor(project: Project) -> None:
    warm_project(project, SLEEPER)
    project.run("up", check=True)
    idle = supervisor_pid(project)
    project.run("down", check=True)
    foreground = subprocess.Popen([sys.executable, "-m", "orchestrator", "up", "--foreground"], cwd=project.dir,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: project.run("status").returncode == 0 or foreground.poll() is not None, timeout=60)
        assert foreground.poll() is None, foreground.stderr.read() if foreground.stderr else ""
        assert gone(idle)
    finally:
        foreground.send_signal(signal.SIGTERM)
        foreground.wait(timeout=60)


def docker_ready() -> bool:
    done = subprocess.run(["docker", "image", "inspect", "vrooli-test/redis:7"], capture_output=True)
    return done.returncode == 0


@pytest.mark.skipif(not shutil.which("docker") or not docker_ready(), reason="needs dockerd and vrooli-test/redis:7")
def test_an_idle_supervisor_holds_no_container_network_or_engine_connection(project: Project) -> None:
    name = f"warmd{os.getpid()}"
    port = free_port()
    project.write(f"""
        [project]
        name = "{name}"
        state_dir = ".state"
        health_listen = "127.0.0.1:0"
        keep_warm = "5m"
        [resources.cache]
        runtime = "docker"
        image = "vrooli-test/redis:7"
        ports = ["127.0.0.1:{port}:6379"]
        volumes = ["cache-data:/data"]
        health = {{ probe = "redis" }}
    """)
    volume = f"{name}_cache-data"

    def volumes() -> list[str]:
        return subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"name={volume}"],
                              capture_output=True, text=True, check=True).stdout.split()

    try:
        project.run("up", check=True)
        pid = supervisor_pid(project)
        project.run("down", check=True)
        assert not gone(pid)
        for kind in ("container", "network"):
            listed = subprocess.run(["docker", kind, "ls", "-q", *(["-a"] if kind == "container" else []),
                                     "--filter", f"label=dev.vrooli.project={name}"],
                                    capture_output=True, text=True, check=True).stdout.split()
            assert listed == [], kind
        # Sockets left: the control socket's listener and the event loop's own pair, no more
        # (once the session has wound down: `down` answers as soon as the stack is stopped).
        def sockets() -> list[str]:
            return [fd for fd in os.listdir(f"/proc/{pid}/fd")
                    if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")]

        try:
            wait_for(lambda: len(sockets()) <= 3, timeout=10)
        except AssertionError:
            raise AssertionError(f"the idle supervisor keeps sockets open: {sockets()}") from None
        project.run("up", check=True)  # and it serves a docker stack again
        assert supervisor_pid(project) == pid
        assert project.rows()["cache"]["state"] == "ready"
        # `down` keeps the named volume; a later `down --volumes`, served idle, removes it.
        project.run("down", check=True)
        assert volumes() == [volume]
        project.run("down", "--volumes", check=True)
        assert volumes() == [] and not gone(pid)
    finally:
        project.run("down", "--exit", "--volumes")


@pytest.mark.parametrize("value", ['"soon"', '"-1m"', "-5", "true", "[1]", '"10x"', '""', '"9000h"', "{}", '"1m 30"'])
def test_a_bad_keep_warm_is_one_line_naming_file_and_key(project: Project, value: str) -> None:
    project.write(f"[project]\nstate_dir = '.state'\nkeep_warm = {value}\n{SLEEPER}")
    done = project.run("validate")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "resources.toml: project.keep_warm:" in lines[0], lines
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("request_line", [
    {"op": "down", "exit": "yes"}, {"op": "down", "exit": 1}, {"op": "up", "process_environ": "PATH=/bin"},
    {"op": "up", "process_environ": {"A=B": "c"}}, {"op": "up", "process_environ": {"A": 5}},
])
def test_malformed_warm_requests_are_refused_idle_or_not(project: Project, request_line: dict[str, object]) -> None:
    from orchestrator.infra.control import Client

    warm_project(project, SLEEPER)
    project.run("up", check=True)
    client = Client(project.state_dir / "control.sock")
    for _ in range(2):  # running, then idle
        reply = client.call(request_line)
        assert reply["ok"] is False and reply["exit_code"] == 2 and "bad request" in reply["error"], reply
        project.run("down", check=True)
    assert project.run("status").returncode == 3  # still there, idle, and nothing started


PROBE = """
import json, sys
before = set(sys.modules)  # the interpreter's own, and site's (an editable install's finder)
seen = []
def hook(event, args):
    if event == "subprocess.Popen" and not seen:
        seen.append(1)
        with open(sys.argv[1], "w") as out:
            json.dump(sorted(set(sys.modules) - before), out)
sys.addaudithook(hook)
from orchestrator.daemon.detached import main
sys.exit(main(["-f", sys.argv[2], "--up", ""]))
"""


def test_a_cold_supervisor_spawns_its_first_resource_before_heavy_imports(project: Project, tmp_path: Path) -> None:
    """Nothing the first spawn does not need is imported before it."""
    warm_project(project, SLEEPER, keep_warm="0")
    seen = tmp_path / "modules.json"
    supervisor = subprocess.Popen([sys.executable, "-c", PROBE, str(seen), str(project.file)], cwd=project.dir,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(seen.exists, timeout=60)
        wait_for(lambda: project.run("status").returncode == 0, timeout=60)
    finally:
        project.run("down", "--exit")
        supervisor.wait(timeout=60)
    import json

    modules = set(json.loads(seen.read_text()))
    heavy = {"structlog", "psutil", "argparse", "docker", "httpx", "h11", "typer", "orchestrator.daemon.health",
             "shutil", "bz2", "lzma", "uuid",  # shared libraries a fresh boot would read from disk
             "orchestrator.engine.hooks", "orchestrator.engine.models"}  # what only some resources need
    assert not heavy & modules, sorted(heavy & modules)


def test_the_runtimes_own_which_finds_what_shutil_which_finds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process runtime looks commands up without shutil (off a cold start's way): the
    same answers, whatever PATH holds (empty entries mean the current directory)."""
    from orchestrator.runtimes.process import which

    bin_dir, other = tmp_path / "bin", tmp_path / "other"
    bin_dir.mkdir()
    other.mkdir()
    (bin_dir / "tool").write_text("#!/bin/sh\n")
    (bin_dir / "tool").chmod(0o755)
    (bin_dir / "plain").write_text("not executable\n")
    (bin_dir / "adir").mkdir()
    (other / "tool").write_text("#!/bin/sh\n")
    (other / "tool").chmod(0o755)
    monkeypatch.chdir(bin_dir)
    paths = [None, "", f"{other}:{bin_dir}", f"{bin_dir}:{other}", f"{tmp_path}::{other}", ":", "/nonexistent",
             f"{bin_dir}:{bin_dir}"]
    commands = ["tool", "plain", "adir", "sleep", "sh", "nope", "./tool", str(bin_dir / "tool"),
                str(bin_dir / "plain"), "bin/tool", ""]
    for path in paths:
        for command in commands:
            assert which(command, path) == shutil.which(command, path=path), (command, path)
    monkeypatch.setenv("PATH", f"{other}:/usr/bin:/bin")
    assert which("tool", None) == shutil.which("tool") == str(other / "tool")
    monkeypatch.delenv("PATH")
    for command in ("sh", "tool"):  # the system's default path: /bin:/usr/bin, not the current directory
        assert which(command, None) == shutil.which(command), command
