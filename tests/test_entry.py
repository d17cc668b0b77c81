"""The entry point's two ways of running `up`, `down`, `status` and `restart`: the standard-
library path (entry.py, client/argv.py) and the typer commands (cli/app.py) accept the same
arguments, send the supervisor the same requests and answer alike; and the standard-library
path never imports the CLI framework or the supervisor's own libraries."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import typer.core
import typer.main

from orchestrator.cli import help_text
from orchestrator.cli.app import app
from orchestrator.client import spawn
from orchestrator.client.argv import CLIENT_COMMANDS, ClientCommand, parse
from orchestrator.client.output import supervisor_line
from orchestrator.config.resource import RESOURCE_KEYS
from tests.conftest import Project, wait_for

# Options of typer's commands that the standard-library path leaves to typer on purpose:
# `up --foreground` runs the supervisor attached (with its log format), --help prints help.
LEFT_TO_TYPER = {"up": {"--foreground", "--log-format", "--help"}, "down": {"--help"}, "status": {"--help"},
                 "restart": {"--help"}}
# What a client command must not import: the CLI framework and its parts, the
# event loop, logging, Docker, process inspection, HTTP.
HEAVY = {"typer", "click", "rich", "anyio", "sniffio", "structlog", "docker", "psutil", "httpx", "httpcore", "h11",
         "regex"}


def typer_command(name: str) -> Any:
    """typer's command NAME (a click command from the copy of click typer carries)."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return group.commands[name]


def typer_parse(argv: Sequence[str]) -> ClientCommand:
    """What typer reads from argv, in the standard-library parser's terms."""
    command = argv[0]
    params = typer_command(command).make_context(command, list(argv[1:])).params
    if command == "up":
        assert not params["foreground"] and params["log_format"] == "auto"
    return ClientCommand(command, tuple(params["names"] or ()), tuple(params["files"] or ()),
                         json_out=params["json_out"], no_deps=params.get("no_deps", False),
                         profiles=tuple(params.get("profile") or ()),
                         volumes=params.get("volumes", False), exit_supervisor=params.get("exit_supervisor", False))


PARSED_ALIKE = [
    ["up"], ["up", "db"], ["up", "-f", "a.toml"], ["up", "--file", "a.toml", "--file=b.toml"], ["up", "-fa.toml"],
    ["up", "--no-deps", "db"], ["up", "--json"], ["up", "db", "--json", "cache", "--no-deps", "-f", "x.toml"],
    ["up", "-f", "--json"],  # the value of -f, for both
    ["up", "--profile", "ai"], ["up", "--profile=ai", "db", "--profile", "gpu"], ["up", "--profile", "-f"],
    ["down"], ["down", "db"], ["down", "-v"], ["down", "--volumes", "--exit", "--json"],
    ["down", "-f", "a.toml", "db", "--exit", "cache"], ["down", "--file=a.toml", "-fb.toml", "-v", "-v"],
    ["status"], ["status", "db", "cache"], ["status", "--json", "-f", "x.toml"], ["status", "--file=", "db"],
    ["restart", "db"], ["restart", "db", "cache", "--json", "-f", "x.toml"], ["restart", "-f", "restart", "db"],
]


@pytest.mark.parametrize("environ", [{}, {"VROOLI_FILE": "env.toml"}, {"VROOLI_FILE": " a.toml  b.toml "},
                                     {"VROOLI_FILE": ""}, {"VROOLI_PROFILES": "ai, gpu,,"}])
@pytest.mark.parametrize("argv", PARSED_ALIKE)
def test_the_stdlib_path_parses_as_typer_does(argv: list[str], environ: dict[str, str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VROOLI_FILE", "VROOLI_PROFILES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert parse(argv, os.environ) == typer_parse(argv)


@pytest.mark.parametrize("argv", [
    ["up", "--help"], ["status", "-h"], ["down", "--"], ["down", "-vf", "x.toml"], ["status", "-f"],
    ["up", "--profile"], ["restart"], ["restart", "--json"], ["status", "--bogus"], ["status", "--json=1"],
    ["up", "--foreground"], ["up", "--log-format", "json"], ["status", "--profile", "ai"], ["down", "--no-deps"],
    ["status", ""], ["logs", "db"], ["graph"], [],
])
def test_the_stdlib_path_leaves_the_unusual_to_typer(argv: list[str]) -> None:
    assert parse(argv, {}) is None


@pytest.mark.parametrize("command", CLIENT_COMMANDS)
def test_every_option_is_taken_by_the_stdlib_path_or_left_to_typer(command: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An option added to one of typer's four commands must be taught to the standard-library
    parser (or listed here as one it leaves to typer): otherwise `vrooli CMD --new` would be
    parsed differently, or the fast path silently stop being used."""
    monkeypatch.delenv("VROOLI_FILE", raising=False)
    left: set[str] = set()
    typer_cmd = typer_command(command)
    names = ["db"] if command == "restart" else []
    for param in typer_cmd.get_params(typer_cmd.make_context(command, list(names))):
        if not isinstance(param, typer.core.TyperOption):
            continue
        for opt in param.opts + param.secondary_opts:
            argv = [command, *names, opt] + ([] if param.is_flag or param.count else ["value.toml"])
            parsed = parse(argv, os.environ)
            if parsed is None:
                left.add(opt)
            elif not param.is_eager:
                assert parsed == typer_parse(argv), opt
    assert left == LEFT_TO_TYPER[command]


# ------------------------------------------------------------ the same requests


class RecordingSupervisor:
    """Stands in for a supervisor at a project's control socket: records each request and
    answers it as a supervisor would, so what both ways *send* can be compared."""

    def __init__(self, path: Path, answers: dict[str, dict[str, Any]] | None = None) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.answers = answers or {}
        self.requests: list[dict[str, Any]] = []
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                request = json.loads(conn.makefile("rb").readline())
                if request["op"] != "ping":
                    self.requests.append(request)
                answer = self.answers.get(request["op"]) or self.answer(request)
                conn.sendall(json.dumps(answer).encode() + b"\n")

    @staticmethod
    def answer(request: dict[str, Any]) -> dict[str, Any]:
        if request["op"] in ("up", "restart"):
            return {"ok": True, "resources": [], "exit_code": 0}
        if request["op"] == "down":
            return {"ok": True, "stopped": []}
        if request["op"] == "status":
            return {"ok": True, "project": "x", "supervisor_pid": 1, "mode": "detached", "resources": []}
        return {"ok": True, "pid": 1, "project": "x", "files": []}

    def close(self) -> None:
        self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.thread.join(timeout=5)


TYPER = "import sys; from orchestrator.cli.app import main; sys.argv = ['vrooli', *sys.argv[1:]]; main()"


def run_typer(project: Project, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", TYPER, *args], cwd=project.dir, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env=env)


def run_stdlib(project: Project, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=project.dir, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, env=env)


# A resource in the profiles the tests name, where the files know the key (the profiles
# step adds it; a profile named with --profile must be declared).
PROFILED = ('[resources.extra]\ncommand = ["sleep", "1000"]\nprofiles = ["x", "y", "only", "ai", "gpu"]\n'
            if "profiles" in RESOURCE_KEYS else "")


def test_both_ways_send_the_supervisor_the_same_requests(project: Project) -> None:
    project.write("""
        [resources.db]
        command = ["sleep", "1000"]
        [resources.app]
        command = ["sleep", "1000"]
        depends_on = ["db"]
    """ + PROFILED)
    project.state_dir.mkdir(mode=0o700)
    stand_in = RecordingSupervisor(project.state_dir / "control.sock")
    with_profiles = {**os.environ, "VROOLI_PROFILES": " ai , gpu,"}
    agreed: dict[str, dict[str, Any]] = {}
    try:
        for args, env in ((["up"], None), (["up", "db", "--no-deps", "--profile", "x", "--profile=y"], None),
                          (["up"], with_profiles), (["up", "--profile", "only", "--profile", "ai"], with_profiles),
                          (["down", "app", "--exit", "-v"], None), (["down", "db"], None), (["down"], None),
                          (["status", "app"], None), (["restart", "app"], None)):
            sent = []
            for way in (run_stdlib, run_typer):
                stand_in.requests.clear()
                done = way(project, *args, env=env)
                assert done.returncode == (3 if args[0] == "status" else 0), (args, done.stderr)  # no rows
                sent.append(stand_in.requests[:])
            assert sent[0] == sent[1], args
            assert len(sent[0]) == 1, args
            agreed[" ".join(args) + (" (VROOLI_PROFILES)" if env else "")] = sent[0][0]
    finally:
        stand_in.close()
    # ... and what they agree on is what each command must send: `up` the --profile names in
    # order, then those of VROOLI_PROFILES not named yet; `down` its names, --volumes and
    # --exit; `status` and `restart` their names.
    assert agreed["up"]["profiles"] == []
    assert agreed["up db --no-deps --profile x --profile=y"]["profiles"] == ["x", "y"]
    assert agreed["up (VROOLI_PROFILES)"]["profiles"] == ["ai", "gpu"]
    assert agreed["up --profile only --profile ai (VROOLI_PROFILES)"]["profiles"] == ["only", "ai", "gpu"]
    assert agreed["down app --exit -v"] == {"op": "down", "names": ["app"], "volumes": True, "exit": True}
    assert agreed["down db"] == {"op": "down", "names": ["db"], "volumes": False, "exit": False}
    assert agreed["status app"] == {"op": "status", "names": ["app"]}
    assert agreed["restart app"] == {"op": "restart", "names": ["app"]}


IDLE = {"pid": 4242, "mode": "detached", "unit": None, "idle": True, "exits_in_seconds": 299.5}


def test_an_idle_warm_supervisor_is_shown_alike_and_not_waited_for(project: Project) -> None:
    """A warm supervisor holding nothing says so in `status` (exit 3: nothing
    runs), and `down` does not wait for one that stays (idle) to go away."""
    project.write("""
        [resources.db]
        command = ["sleep", "1000"]
    """)
    project.state_dir.mkdir(mode=0o700)
    (project.state_dir / "supervisor.pid").write_text("4242")  # it stays: down must not wait for it to go
    stand_in = RecordingSupervisor(project.state_dir / "control.sock", answers={
        "status": {"ok": True, "project": "t", "supervisor_pid": 4242, "mode": "detached", "supervisor": IDLE,
                   "resources": [], "extra": {}},
        "down": {"ok": True, "stopped": ["db"], "supervisor": "idle"}})
    try:
        for args in (("status",), ("status", "--json"), ("down",), ("down", "--json")):
            started = time.monotonic()
            both(project, *args)
            assert time.monotonic() - started < 20, args  # waiting for it would take 2 x 30 s
        text, shown = run_stdlib(project, "status"), json.loads(run_stdlib(project, "status", "--json").stdout)
    finally:
        stand_in.close()
    assert text.returncode == 3 and text.stdout == ""
    assert text.stderr.splitlines()[1:] == ["supervisor: idle, exits in 5m (pid 4242)"]
    assert shown["running"] is False and shown["supervisor"] == IDLE and shown["supervisor_pid"] == 4242
    assert [(r["name"], r["state"]) for r in shown["resources"]] == [("db", "stopped")]


# ------------------------------------------------------------ the same answers


def timeless(text: str) -> str:
    """Output with what changes from one moment to the next (times, sizes, pids) masked, and
    click's name for the program (`python -m orchestrator` here, `vrooli` there) made one."""
    text = text.replace("python -m orchestrator", "vrooli")
    text = re.sub(r"\d+(\.\d+)?[smKMGT]?\b", "N", text)
    return re.sub(r" +", " ", text)


def shape(stdout: str) -> Any:
    """A JSON answer's keys all the way down, with each resource's name and state and the
    answer's ok and running."""
    def keys(value: Any) -> Any:
        if isinstance(value, dict):
            kept = {k: keys(v) for k, v in value.items()}
            return {**kept, **{k: value[k] for k in ("name", "state", "ok", "running") if k in value}}
        if isinstance(value, list):
            return [keys(v) for v in value]
        return "·"  # a value (a memory sample, a time) may be null one moment and set the next
    return keys(json.loads(stdout))


def assert_alike(fast: subprocess.CompletedProcess[str], slow: subprocess.CompletedProcess[str],
                 args: Sequence[str]) -> None:
    assert fast.returncode == slow.returncode, (args, fast.stderr, slow.stderr)
    assert "Traceback" not in fast.stderr + slow.stderr, args
    if "--json" in args and fast.stdout.strip():
        assert shape(fast.stdout) == shape(slow.stdout), args
    else:
        assert timeless(fast.stdout) == timeless(slow.stdout), args
    assert timeless(fast.stderr) == timeless(slow.stderr), args


def both(project: Project, *args: str) -> None:
    assert_alike(run_stdlib(project, *args), run_typer(project, *args), args)


TWO = """
    [resources.db]
    command = ["sh", "-c", "echo ready; exec sleep 1000"]
    health = { probe = "log", pattern = "ready" }
    [resources.app]
    command = ["sh", "-c", "echo ready; exec sleep 1000"]
    depends_on = ["db"]
    health = { probe = "log", pattern = "ready" }
"""
ERRORS = (("nope",), ("nope", "--json"), ("-f", "broken.toml"), ("-f", "broken.toml", "--json"),
          ("-f", "missing.toml"), ("-f", "missing.toml", "--json"), ("-f",), ("--bogus",))


def test_both_ways_answer_errors_alike(project: Project) -> None:
    project.write(TWO)
    project.write('[resources.x]\ncommand = "not a list"\n', name="broken.toml")
    for command in CLIENT_COMMANDS:
        for args in ERRORS:
            both(project, command, *args)
    for args in (("restart",), ("restart", "--json"), ("restart", "app"), ("restart", "app", "--json")):
        both(project, *args)  # nothing runs (exit 3), or no names (typer's usage error)
    for args in (("status",), ("status", "--json"), ("status", "app", "--json"), ("down",), ("down", "--json"),
                 ("down", "app")):
        both(project, *args)  # nothing runs


def test_both_ways_answer_alike_with_a_stack_running(project: Project) -> None:
    project.write(TWO)
    fast = run_stdlib(project, "up", "--json")  # cold, through the standard-library path
    project.run("down", check=True)
    slow = run_typer(project, "up", "--json")  # cold, through typer
    assert_alike(fast, slow, ["up", "--json"])
    for args in (("up",), ("up", "db", "--no-deps"), ("up", "app"), ("up", "--json"),
                 ("status",), ("status", "db"), ("status", "--json"), ("status", "app", "--json"),
                 ("restart", "app"), ("restart", "db", "--json")):
        both(project, *args)
    # A broken file while the stack runs: both use the running supervisor's own copy.
    good = project.file.read_text()
    project.file.write_text(good + "\n[resources.half\n")
    for args in (("status",), ("status", "--json")):
        both(project, *args)
    project.file.write_text(good)
    # down: a name, then everything; each way on the same running stack.
    answers = []
    for way in (run_stdlib, run_typer):
        project.run("up", check=True)
        answers += [way(project, "down", "app", "--json"), way(project, "down")]
        assert not (project.state_dir / "supervisor.pid").exists()
    assert_alike(answers[0], answers[2], ["down", "app", "--json"])
    assert_alike(answers[1], answers[3], ["down"])
    assert answers[1].stderr.strip().endswith(" db")


def test_ctrl_c_while_waiting_is_answered_alike(project: Project) -> None:
    """Only the waiting stops, and both ways say so (typer's way printed "Aborted!", exit 1)."""
    project.write("""
        [resources.slow]
        command = ["sh", "-c", "sleep 3; echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
    """)
    answers = []
    for command in ([sys.executable, "-m", "orchestrator"], [sys.executable, "-c", TYPER]):
        for args, said in ((["up"], "the supervisor goes on starting (see `vrooli status`)"),
                           (["restart", "slow"], "a restart already asked for goes on (see `vrooli status`)")):
            waiting = subprocess.Popen([*command, *args], cwd=project.dir, stderr=subprocess.PIPE, text=True,
                                       stdin=subprocess.DEVNULL)
            wait_for(lambda: (project.state_dir / "supervisor.pid").exists(), timeout=30)
            time.sleep(0.5)  # into the wait for readiness
            waiting.send_signal(signal.SIGINT)
            _, err = waiting.communicate(timeout=30)
            answers.append((waiting.returncode, err.strip().splitlines()[-1]))
            assert answers[-1] == (130, f"vrooli: interrupted; {said}"), args
        project.run("down", check=True)
    assert answers[:2] == answers[2:]


# ------------------------------------------------------------ imports: the client path loads the standard library only


def imported(done: subprocess.CompletedProcess[str]) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def test_the_client_commands_import_nothing_heavy(project: Project) -> None:
    """`up` on a running stack, `status`, `restart` and `down`, run as a user runs them: not
    one of the heavy packages is imported, before the request or after it."""
    project.write(TWO)
    project.run("up", check=True)
    runs: dict[str, set[str]] = {}
    for args in (("up",), ("up", "--json"), ("status",), ("status", "--json"), ("restart", "app"),
                 ("-f", "resources.toml", "status"), ("down", "app"), ("down",), ("status",)):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator", *args], cwd=project.dir,
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert done.returncode in (0, 3), (args, done.stderr[-2000:])
        runs[" ".join(args)] = imported(done)
    for command, names in runs.items():
        assert "orchestrator.client.commands" in names, command  # the measurement works
        assert {n.split(".")[0] for n in names} & HEAVY == set(), command
        assert "orchestrator.cli.app" not in names, command


def test_the_top_level_help_needs_no_cli_framework(project: Project) -> None:
    for args, code, stream in ((["--help"], 0, "stdout"), (["-h"], 0, "stdout"), ([], 2, "stderr"),
                               (["-f", "x.toml", "--help"], 0, "stdout")):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator", *args], cwd=project.dir,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == code, args
        names = imported(done)
        assert "orchestrator.cli.help_text" in names and not {n.split(".")[0] for n in names} & HEAVY, args
        shown = done.stdout if stream == "stdout" else re.sub(r"(?m)^import time:.*\n", "", done.stderr)
        assert shown == help_text.text(), args


def test_the_top_level_help_lists_every_command_with_its_own_help() -> None:
    """A command added to cli.py must be added to help_text.COMMANDS (with the first line of
    its docstring), or `vrooli --help` would not show it."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    listed = dict(help_text.COMMANDS)
    assert set(listed) == set(group.commands)
    width = max(len(name) for name in listed)
    for name, command in group.commands.items():
        assert command.help is not None, name
        assert listed[name] == command.help.strip().splitlines()[0], name
        assert f"\n  {name:<{width}}  {listed[name]}\n" in help_text.text()


def test_version_both_ways(project: Project) -> None:
    fast, slow = run_stdlib(project, "--version"), run_typer(project, "--version")
    assert (fast.returncode, fast.stdout) == (slow.returncode, slow.stdout) == (0, slow.stdout)
    assert re.fullmatch(r"vrooli \S+\n", fast.stdout)


# ------------------------------------------------------------ the supervisor line: who answers, and how it runs


@pytest.mark.parametrize(("supervisor", "line"), [
    ({"pid": 12, "mode": "detached", "unit": None, "idle": False, "exits_in_seconds": None},
     "supervisor: pid 12 (detached)"),
    ({"pid": 12, "mode": "foreground", "unit": None, "idle": False, "exits_in_seconds": None},
     "supervisor: pid 12 (foreground)"),
    ({"pid": 12, "mode": "detached", "unit": None, "idle": True, "exits_in_seconds": 479.6},
     "supervisor: idle, exits in 8m (pid 12)"),
    ({"pid": 12, "mode": "detached", "unit": None, "idle": True, "exits_in_seconds": 42.2},
     "supervisor: idle, exits in 42s (pid 12)"),
    ({"pid": 12, "mode": "detached", "unit": None, "idle": True, "exits_in_seconds": None},
     "supervisor: idle (pid 12)"),
    ({"pid": 12, "mode": "daemon", "unit": "vrooli.service", "idle": False, "exits_in_seconds": None},
     "supervisor: systemd unit vrooli.service, pid 12"),
    ({"pid": 12, "mode": "daemon", "unit": None, "idle": False, "exits_in_seconds": None},
     "supervisor: pid 12 (daemon)"),
])
def test_the_supervisor_line(supervisor: dict[str, Any], line: str) -> None:
    assert supervisor_line(supervisor) == line


def test_status_shows_the_supervisor(project: Project) -> None:
    project.write(TWO)
    project.run("up", check=True)
    pid = int((project.state_dir / "supervisor.pid").read_text().split()[0])
    text = project.run("status")
    assert f"supervisor: pid {pid} (detached)" in text.stdout.splitlines()
    expected = {"pid": pid, "mode": "detached", "unit": None, "idle": False, "exits_in_seconds": None}
    assert spawn.client_at(project.state_dir).call({"op": "status"})["supervisor"] == expected  # the reply has it
    shown = json.loads(project.run("status", "--json").stdout)
    assert shown["supervisor"] == expected
    assert shown["supervisor_pid"] == pid
    project.run("down", check=True)
    stopped = project.run("status", "--json")
    assert stopped.returncode == 3 and json.loads(stopped.stdout)["supervisor"] is None

