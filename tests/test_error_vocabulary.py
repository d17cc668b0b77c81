"""One error vocabulary: every command that takes resource names rejects an
unknown one the same way (exit 2, one line), running or not; errors cross the control
socket as their kind; a supervisor that goes away mid-command is one line, never a traceback."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import orchestrator
from orchestrator import errors
from orchestrator.infra import paths
from orchestrator.infra.control import Client
from tests.conftest import Project

ONE = """
    [resources.one]
    command = ["sh", "-c", "echo ready; exec sleep 1000"]
    health = { probe = "log", pattern = "ready" }
"""
UNKNOWN = "vrooli: unknown resource 'nope' (known: one)"

# Every command that takes resource names, with NOPE where a name goes.
NAMING_COMMANDS = [
    ("up", "nope"), ("down", "nope"), ("restart", "nope"), ("status", "nope"), ("logs", "nope"),
    ("models", "--resource", "nope"),
]


def test_every_exception_class_is_in_errors_or_a_vrooli_error() -> None:
    """What the package raises on purpose is in errors.py, or derives from VrooliError (the
    CLI's one line and exit code); control flow inside a module is a return value, not a
    private exception."""
    outside = []
    for module_info in pkgutil.walk_packages(orchestrator.__path__, "orchestrator."):
        if module_info.name == "orchestrator.__main__":  # runs the CLI when imported
            continue
        module = importlib.import_module(module_info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, BaseException) \
                    and module is not errors and not issubclass(cls, errors.VrooliError):
                outside.append(f"{module.__name__}.{name}")
    assert outside == []


def assert_unknown(done: subprocess.CompletedProcess[str], as_json: bool = False) -> None:
    assert "Traceback" not in done.stderr
    assert done.returncode == 2, (done.stdout, done.stderr)
    if as_json:
        assert json.loads(done.stdout) == {"ok": False, "errors": [UNKNOWN.removeprefix("vrooli: ")],
                                           "exit_code": 2}
    else:
        assert done.stderr.strip() == UNKNOWN


@pytest.mark.parametrize("args", NAMING_COMMANDS, ids=lambda a: a[0])
def test_unknown_name_exits_2_when_nothing_runs(project: Project, args: tuple[str, ...]) -> None:
    project.write(ONE)
    assert_unknown(project.run(*args))
    assert not (project.state_dir / "supervisor.pid").exists()  # nothing was started to find out


def test_unknown_name_exits_2_while_the_stack_runs(project: Project) -> None:
    project.write(ONE)
    project.run("up", check=True)
    for args in NAMING_COMMANDS:
        assert_unknown(project.run(*args))
    for args in NAMING_COMMANDS:
        if args[0] != "logs":  # logs has -f for --follow, and prints JSON lines
            assert_unknown(project.run(*args, "--json"), as_json=True)
    assert project.rows()["one"]["state"] == "ready"  # none of them touched the stack


def test_unknown_name_is_a_usage_error_from_the_supervisor_too(project: Project, shared_tmp: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With the file broken, `down NAME` asks the running supervisor, which checks the name:
    its answer carries the kind, so the exit code is the same 2 as the CLI's own check."""
    monkeypatch.setenv("XDG_STATE_HOME", str(shared_tmp / "xdg-state"))
    project.write(ONE)
    project.run("up", check=True)
    project.file.write_text(project.file.read_text() + "\n[resources.half\n")
    done = project.run("down", "nope")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == UNKNOWN
    assert "Traceback" not in done.stderr


def test_error_replies_carry_their_kind(project: Project) -> None:
    project.write(ONE)
    project.run("up", check=True)
    client = Client(paths.control_socket(project.state_dir))
    for request in ({"op": "restart", "names": ["nope"]}, {"op": "down", "names": ["nope"]},
                    {"op": "status", "names": ["nope"]}, {"op": "models", "resource": "nope"}):
        reply = client.call(request)
        assert (reply["ok"], reply.get("kind"), reply["exit_code"]) == (False, "usage", 2), (request, reply)
    reply = client.call({"op": "restart", "names": []})
    assert (reply.get("kind"), reply["exit_code"]) == ("failed", 1)
    reply = client.call({"op": "no-such-op"})
    assert (reply.get("kind"), reply["exit_code"]) == ("usage", 2)


# A supervisor that answers `ping` (so the CLI goes ahead) and, for anything else, sends
# one progress line and dies: the moment a real one crashes or is killed mid-command.
DYING_SUPERVISOR = '''
import json, os, socket, sys
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen(16)
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    data = b""
    while not data.endswith(b"\\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    if not data.strip():
        conn.close()
        continue
    if json.loads(data).get("op") == "ping":
        conn.sendall(json.dumps({"ok": True, "pid": 1, "project": "x", "files": []}).encode() + b"\\n")
        conn.close()
        continue
    conn.sendall(b'{"event": "progress", "resources": []}\\n')
    os._exit(0)
'''


@pytest.mark.parametrize("args", [("up",), ("restart", "one"), ("down",), ("down", "one"), ("reload",),
                                  ("models", "list")], ids=" ".join)
def test_a_supervisor_that_goes_away_mid_command_is_one_line(project: Project, shared_tmp: Path,
                                                              args: tuple[str, ...]) -> None:
    project.write(ONE)
    socket_path = paths.control_socket(project.state_dir)
    socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    script = shared_tmp / "dying.py"
    script.write_text(DYING_SUPERVISOR)
    server = subprocess.Popen([sys.executable, str(script), str(socket_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        done = project.run(*args, timeout=60)
    finally:
        server.kill()
        server.wait()
        assert server.stdout is not None  # stdout=PIPE
        server.stdout.close()
        socket_path.unlink(missing_ok=True)
    assert "Traceback" not in done.stderr
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines() == [
        "vrooli: the supervisor went away in the middle of the command; see its supervisor.log"]


def test_sighup_and_vrooli_reload_refuse_a_changed_state_dir_alike(project: Project) -> None:
    """Reload is one operation: SIGHUP and `vrooli reload` refuse the same file the same way,
    and neither takes the running stack down (SIGHUP used to let the error end the supervisor)."""
    import os
    import signal

    from tests.conftest import wait_for

    project.write(ONE)
    project.run("up", check=True)
    pid = int((project.state_dir / "supervisor.pid").read_text())
    ready_pid = project.rows()["one"]["pid"]
    project.file.write_text(project.file.read_text().replace('state_dir = ".state"', 'state_dir = ".other"'))
    os.kill(pid, signal.SIGHUP)
    log = project.state_dir / "supervisor.log"
    assert wait_for(lambda: "reload rejected" in log.read_text(), 30)
    client = Client(paths.control_socket(project.state_dir))
    reply = client.call({"op": "reload"})
    assert (reply["ok"], reply["kind"], reply["exit_code"]) == (False, "failed", 1)
    assert "state_dir changed to" in reply["error"]
    rows = client.call({"op": "status"})["resources"]
    assert [(r["name"], r["state"], r["pid"]) for r in rows] == [("one", "ready", ready_pid)]
    project.file.write_text(project.file.read_text().replace('state_dir = ".other"', 'state_dir = ".state"'))
