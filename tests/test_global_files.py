"""`vrooli -f FILE [-f OVERRIDE] COMMAND ...`, the compose habit: files named
before the command are the command's own files, for every command; for `logs`, a `-f`
after the command still means follow."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from orchestrator.client.argv import hoist_global_options
from orchestrator.errors import UsageError
from tests.conftest import Project, masked, wait_for


@pytest.mark.parametrize(("argv", "expected"), [
    (["-f", "a.toml", "graph"], ["graph", "--file=a.toml"]),
    (["-f", "a.toml", "-f", "b.toml", "up", "-f", "c.toml", "db"],
     ["up", "--file=a.toml", "--file=b.toml", "-f", "c.toml", "db"]),
    (["--file", "a.toml", "logs", "db", "-f"], ["logs", "--file=a.toml", "db", "-f"]),
    (["-f", "a.toml", "logs", "-f", "db"], ["logs", "--file=a.toml", "-f", "db"]),
    (["--file=a.toml", "status"], ["status", "--file=a.toml"]),
    (["-fa.toml", "status"], ["status", "--file=a.toml"]),
    (["-f", "-odd name.toml", "status"], ["status", "--file=-odd name.toml"]),
    (["--json", "-f", "a.toml", "status", "db"], ["status", "--json", "--file=a.toml", "db"]),
    (["--json", "graph"], ["graph", "--json"]),
    (["-f", "a.toml", "export", "compose", "--", "x"], ["export", "--file=a.toml", "compose", "--", "x"]),
    (["-f", "a.toml", "--help"], ["--help"]),
    # Nothing before the command: left exactly as it is (typer reads it).
    (["status", "-f", "a.toml"], ["status", "-f", "a.toml"]),
    (["--version"], ["--version"]), (["--bogus", "status"], ["--bogus", "status"]), ([], []),
])
def test_files_before_the_command_become_its_own(argv: list[str], expected: list[str]) -> None:
    assert hoist_global_options(argv) == expected


@pytest.mark.parametrize(("argv", "error"), [
    (["-f"], "option -f needs a file name"),
    (["--file"], "option --file needs a file name"),
    (["-f", ""], "option -f needs a file name"),
    (["--file=", "up"], "option --file needs a file name"),
    (["-f", "a.toml"], "no command after the options"),
    (["-f", "a.toml", "--json"], "no command after the options"),
    (["-f", "a.toml", "--bogus", "status"], "no such option before the command: --bogus"),
])
def test_a_bad_global_option_is_a_usage_error(argv: list[str], error: str) -> None:
    with pytest.raises(UsageError) as caught:
        hoist_global_options(argv)
    assert str(caught.value).startswith(error)


STACK = """
    [resources.db]
    command = ["sh", "-c", "echo db line 1; echo db line 2; echo ready; exec sleep 1000"]
    health = { probe = "log", pattern = "ready" }
    [resources.app]
    command = ["sh", "-c", "echo ready; exec sleep 1000"]
    depends_on = ["db"]
    health = { probe = "log", pattern = "ready" }
"""


def stack_elsewhere(project: Project) -> None:
    """The stack in other.toml (so ./resources.toml, the default, is not what is read),
    with an override file that adds a resource."""
    project.write(STACK)
    (project.dir / "resources.toml").rename(project.dir / "other.toml")
    project.write('[resources.extra]\ncommand = ["sh", "-c", "echo ready; exec sleep 1000"]\n'
                  'health = { probe = "log", pattern = "ready" }\n', name="override.toml")


def test_every_command_reads_files_before_it_as_after_it(project: Project) -> None:
    stack_elsewhere(project)
    files = ("-f", "other.toml", "-f", "override.toml")
    after = ("--file", "other.toml", "--file", "override.toml")  # logs' spelling; every command has it
    try:
        up = project.run(*files, "up")
        assert up.returncode == 0, up.stderr
        assert "3/3 ready" in up.stderr
        for command in (["status"], ["status", "--json"], ["graph"], ["graph", "--json"], ["validate"],
                        ["analyze"], ["logs", "db"], ["logs", "db", "--tail", "1"], ["logs", "db", "--json"],
                        ["restart", "app"], ["reload"], ["up"], ["up", "--json"], ["export", "compose"], ["models"],
                        ["down", "extra"]):
            before_it = project.run(*files, *command)
            after_it = project.run(*command, *after)
            assert masked(before_it) == masked(after_it), command
            assert "not found" not in before_it.stderr and "Traceback" not in before_it.stderr, command
        assert json.loads(project.run("--json", *files, "status").stdout)["running"] is True
        assert project.run("-f", "other.toml", "logs", "db").stdout.splitlines()[:2] == ["db line 1", "db line 2"]
    finally:
        down = project.run(*files, "down")
    assert down.returncode == 0 and set(down.stderr.strip().removeprefix("stopped ").split(", ")) == {
        "extra", "app", "db"}


@pytest.mark.parametrize("args", [
    ("-f", "other.toml", "logs", "db", "-f"),  # docker compose -f FILE logs -f
    ("-f", "other.toml", "logs", "-f", "db"),
    ("--file=other.toml", "logs", "db", "--follow"),
])
def test_logs_f_after_the_command_still_follows(project: Project, args: tuple[str, ...]) -> None:
    stack_elsewhere(project)
    project.run("-f", "other.toml", "up", check=True)
    try:
        follow_logs(project, args)
    finally:
        wait_for(lambda: project.run("-f", "other.toml", "down").returncode == 0, timeout=60)


def follow_logs(project: Project, args: tuple[str, ...]) -> None:
    follower = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=project.dir,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert follower.stdout is not None
        assert [follower.stdout.readline().strip() for _ in range(3)] == ["db line 1", "db line 2", "ready"]
        time.sleep(0.5)
        assert follower.poll() is None  # following, not done
    finally:
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=30)
    assert follower.returncode == 0 and "Traceback" not in err


@pytest.mark.parametrize(("args", "line"), [
    (("-f",), "vrooli: option -f needs a file name (vrooli [-f FILE]... [--json] COMMAND [ARGS]...)"),
    (("--file",), "vrooli: option --file needs a file name (vrooli [-f FILE]... [--json] COMMAND [ARGS]...)"),
    (("-f", "other.toml"), "vrooli: no command after the options (vrooli [-f FILE]... [--json] COMMAND [ARGS]...)"),
    (("-f", "other.toml", "--tail", "5", "logs"),
     "vrooli: no such option before the command: --tail (vrooli [-f FILE]... [--json] COMMAND [ARGS]...)"),
    (("-f", "missing.toml", "status"), "{dir}/missing.toml: file not found"),
    (("-f", "missing.toml", "logs", "db"), "{dir}/missing.toml: file not found"),
])
def test_a_bad_global_file_option_is_one_line_exit_2(project: Project, args: tuple[str, ...], line: str) -> None:
    stack_elsewhere(project)
    done = project.run(*args)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [line.format(dir=project.dir)]
    assert done.stdout == ""
