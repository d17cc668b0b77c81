"""A plain `vrooli up` runs without typer: the supervisor is forked sooner, less CPU is spent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from orchestrator.client.argv import ClientCommand, parse
from tests.conftest import Project


@pytest.mark.parametrize(("argv", "expected"), [
    (["up"], ClientCommand("up")),
    (["up", "db", "-f", "a.toml", "--file", "b.toml", "--file=c.toml", "--no-deps", "--json", "cache"],
     ClientCommand("up", ("db", "cache"), ("a.toml", "b.toml", "c.toml"), json_out=True, no_deps=True)),
    (["up", "--foreground"], None),  # attached: the CLI runs the supervisor itself
    (["up", "--help"], None),
    (["up", "-f"], None),  # typer reports the missing value
    (["up", "--log-format", "json"], None),
    (["down"], ClientCommand("down")),
    ([], None),
])
def test_only_a_plain_up_takes_the_early_path(argv: list[str], expected: ClientCommand | None) -> None:
    assert parse(argv, {}) == expected


def test_plain_up_reads_vrooli_file_as_typer_does() -> None:
    assert parse(["up"], {"VROOLI_FILE": "x.toml y.toml"}) == ClientCommand("up", files=("x.toml", "y.toml"))


def supervisors_in(project: Project) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name", "status", "cwd"]) if p.info["name"] == "vrooli-sup"
            and p.info["status"] != psutil.STATUS_ZOMBIE and p.info["cwd"] == str(project.dir)]


def test_plain_up_works_without_importing_typer(project: Project) -> None:
    project.write("""
        [resources.one]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
    """)
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator", "up"], cwd=project.dir,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "orchestrator.client.up" in imported  # the measurement works
    assert "typer" not in imported
    assert "1/1 ready" in done.stderr
    assert len(supervisors_in(project)) == 1
    assert project.rows()["one"]["state"] == "ready"
    again = project.run("up", "--json")  # the running supervisor answers; no second one
    assert again.returncode == 0 and json.loads(again.stdout)["ok"] is True
    assert len(supervisors_in(project)) == 1


def test_unknown_name_starts_nothing(project: Project) -> None:
    project.write("""
        [resources.one]
        command = ["sleep", "1000"]
    """)
    done = project.run("up", "nosuch")
    assert done.returncode == 2
    assert done.stderr.strip() == "vrooli: unknown resource 'nosuch' (known: one)"
    assert not supervisors_in(project)
    assert not (project.state_dir / "supervisor.pid").exists()


def test_ctrl_c_stops_waiting_not_the_stack(project: Project) -> None:
    import signal
    import time

    project.write("""
        [resources.slow]
        command = ["sh", "-c", "sleep 2; echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
    """)
    waiting = subprocess.Popen([sys.executable, "-m", "orchestrator", "up"], cwd=project.dir,
                               stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not (project.state_dir / "supervisor.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    waiting.send_signal(signal.SIGINT)
    _, err = waiting.communicate(timeout=10)
    assert waiting.returncode == 130
    assert err.strip().splitlines()[-1] == "vrooli: interrupted; the supervisor goes on starting (see `vrooli status`)"
    assert "Traceback" not in err
    done = project.run("up")  # the start went on; this just waits for it
    assert done.returncode == 0 and project.rows()["slow"]["state"] == "ready"


def test_analyze_shows_what_a_cold_up_cost_before_the_first_start(project: Project) -> None:
    project.write("""
        [resources.db]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
        [resources.app]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        depends_on = ["db"]
        health = { probe = "log", pattern = "ready" }
    """)
    assert project.run("up").returncode == 0
    done = project.run("analyze", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["critical_chain"] == ["app", "db"]
    phases = report["cold_start"]
    assert 0 < phases["supervisor_running"] < phases["first_start"] < 10
    text = project.run("analyze").stdout
    assert text.startswith("cold start: the supervisor ran ")
    # An `up` answered by the running supervisor has no cold start to show.
    assert project.run("up").returncode == 0
    assert json.loads(project.run("analyze", "--json").stdout)["cold_start"] is None


# A cold `vrooli up` whose supervisor takes SLOW_START seconds before it starts anything
# or listens: the window a `down` can fall into, widened so the test hits it every time.
SLOW_SUPERVISOR_UP = """
import sys
from pathlib import Path
import anyio
from orchestrator.daemon import service
original, delay = service._main, float(sys.argv[1])
async def slow_main(*args, **kwargs):
    await anyio.sleep(delay)
    return await original(*args, **kwargs)
service._main = slow_main
from orchestrator.entry import main
sys.argv = ["vrooli", "up"]
main()
"""


def test_down_during_a_cold_up_stops_what_that_up_starts(project: Project) -> None:
    # A `down` during a cold `up` must not say "nothing is running" and let the stack come up anyway.
    import time

    project.write("""
        [resources.slowish]
        command = ["sh", "-c", "sleep 1; echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
        [resources.quick]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
    """)
    up = subprocess.Popen([sys.executable, "-c", SLOW_SUPERVISOR_UP, "3"], cwd=project.dir,
                          stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (project.state_dir / "supervisor.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not (project.state_dir / "control.sock").exists()  # forked, not listening yet
        down = project.run("down")
        assert down.returncode == 0, down.stderr
        assert "nothing is running" not in down.stderr
        assert down.stderr.strip() == "stopped quick, slowish"
        up.wait(60)
    finally:
        if up.poll() is None:
            up.kill()
        assert up.stderr is not None  # stderr=PIPE
        up.stderr.close()
    assert not (project.state_dir / "supervisor.pid").exists()
    assert not supervisors_in(project)
    time.sleep(1.5)  # past slowish's own start: nothing may come up after the down
    assert project.run("status").returncode == 3


COUNT_READS = """
import os, sys
watched, out = sys.argv[1], sys.argv[2]
def hook(event, args):
    # the fork inherits the hook: the command and its supervisor both count
    if event == "open" and isinstance(args[0], str) and os.path.basename(args[0]) == watched:
        with open(out, "a") as log:
            log.write(f"{os.getpid()}\\n")
sys.addaudithook(hook)
sys.argv = ["vrooli", "up"]
from orchestrator.entry import main
main()
"""


def test_a_cold_up_reads_its_files_once(project: Project, tmp_path: Path) -> None:
    """The forked supervisor takes the project the command loaded, and the command's own `up`
    request is followed, not loaded again: one read of resources.toml in all, not three."""
    project.write("""
        [resources.one]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
    """)
    reads = tmp_path / "reads"
    done = subprocess.run([sys.executable, "-c", COUNT_READS, "resources.toml", str(reads)], cwd=project.dir,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    try:
        assert done.returncode == 0, done.stderr
        readers = reads.read_text().split()  # before `status`: the supervisor reads the files to answer it
        assert len(readers) == 1, f"resources.toml opened {len(readers)} times, by pids {readers}"
        assert project.rows()["one"]["state"] == "ready"
    finally:
        project.run("down", "--exit")
