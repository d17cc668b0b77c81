"""The CLI's promises that are not about starting things: cheap imports, clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, Project, free_port


def imported_by(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator", *args],
                          capture_output=True, text=True, cwd=ROOT)
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_help_imports_neither_docker_nor_the_event_loop_stack() -> None:
    names = imported_by("status", "--help")  # a command's help: typer's (the top-level one: test_entry.py)
    assert "orchestrator.cli.app" in names  # the measurement works
    for heavy in ("docker", "anyio", "httpx", "uvicorn", "prometheus_client", "rich"):
        assert heavy not in names, heavy


def test_validate_does_not_import_docker_even_for_docker_resources() -> None:
    names = imported_by("validate", "-f", str(ROOT / "resources.toml"))
    assert "orchestrator.config" in names
    assert "docker" not in names


def test_bad_file_is_one_line_exit_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "resources.toml"
    path.write_text('[resources.a]\ncommand = ["true"]\ndepends_on = ["b"]\n[resources.b]\ncommand = ["true"]\n'
                    'depends_on = ["a"]\n')
    for command in ("up", "status", "graph", "validate", "down"):
        done = subprocess.run([sys.executable, "-m", "orchestrator", command, "-f", str(path)],
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.strip() == f"{path}: resources.a.depends_on: dependency cycle: a -> b -> a", command


def test_missing_file_is_named(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "orchestrator", "validate"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"{tmp_path / 'resources.toml'}: file not found"


def test_json_errors_for_scripts(tmp_path: Path) -> None:
    path = tmp_path / "resources.toml"
    path.write_text('[resources.a]\ncommand = "true"\n')
    done = subprocess.run([sys.executable, "-m", "orchestrator", "validate", "--json", "-f", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    payload = json.loads(done.stdout)
    assert payload["ok"] is False and payload["exit_code"] == 2
    assert "resources.a.command" in payload["errors"][0]


# ------------------------------------------------------------ who the CLI talks to, and what it sends

FAKE_SUPERVISOR = '''
import json, socket, sys
path, record = sys.argv[1], sys.argv[2]
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen(16)
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        conn.settimeout(3)
        data = b""
        try:
            while not data.endswith(b"\\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        with open(record, "ab") as handle:
            handle.write(data)
        if data.strip():
            op = json.loads(data).get("op")
            reply = {"ok": True, "pid": 1, "project": "x", "files": []}
            if op in ("up", "reload"):
                reply = {"ok": True, "done": True, "resources": [], "exit_code": 0}
            conn.sendall(json.dumps(reply).encode() + b"\\n")
'''


def start_fake_supervisor(where: Path, socket_path: Path, as_nobody: bool) -> tuple[subprocess.Popen[str], Path]:
    """A stand-in that records every byte sent to it and answers "all fine" to anything
    (what a planted socket did). Bound in `where`, then moved to `socket_path`: a socket
    keeps the credentials of the process that listened, wherever its name goes."""
    script, record, bound = where / "fake.py", where / "received", where / "fake.sock"
    script.write_text(FAKE_SUPERVISOR)
    record.write_bytes(b"")
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if as_nobody else []
    if as_nobody:
        os.chown(where, 65534, 65534)
        os.chown(record, 65534, 65534)
    server = subprocess.Popen([*prefix, "/usr/bin/python3", str(script), str(bound), str(record)],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "listening"
    socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.rename(bound, socket_path)
    return server, record


@pytest.mark.skipif(os.getuid() != 0, reason="planting a socket as another user needs root")
def test_cli_sends_nothing_to_a_socket_served_by_another_user(project: Project, shared_tmp: Path) -> None:
    project.write("""
        [resources.one]
        command = ["sleep", "1000"]
    """)
    where = shared_tmp / "planted"
    where.mkdir()
    server, record = start_fake_supervisor(where, project.state_dir / "control.sock", as_nobody=True)
    try:
        for command in (["up"], ["up", "--json"], ["status"], ["down"], ["restart", "one"], ["reload"],
                        ["models"]):
            done = project.run(*command, timeout=60)
            assert done.returncode == 1, (command, done.stdout, done.stderr)
            assert "uid 65534 (nobody)" in done.stdout + done.stderr, command
            assert "Traceback" not in done.stderr
        assert record.read_bytes() == b""  # not even a ping
    finally:
        server.kill()
        server.wait()
        assert server.stdout is not None  # stdout=PIPE
        server.stdout.close()


@pytest.mark.skipif(os.getuid() != 0, reason="the recording stand-in runs as root, as the CLI does")
def test_up_and_reload_send_only_the_variables_the_files_reference(project: Project, shared_tmp: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (project.dir / "app.env").write_text("FROM_ENV_FILE=1\n")
    project.write("""
        [resources.one]
        command = ["sleep", "${SLEEP_SECONDS:-1000}"]
        env = { TOKEN = "${APP_TOKEN}" }
        env_file = "app.env"
    """)
    where = shared_tmp / "recording"
    where.mkdir()
    server, record = start_fake_supervisor(where, project.state_dir / "control.sock", as_nobody=False)
    monkeypatch.setenv("APP_TOKEN", "wanted-token")
    monkeypatch.setenv("SECRET_X", "must-not-leave-this-process")
    try:
        assert project.run("up").returncode == 0
        assert project.run("reload").returncode == 0
    finally:
        server.kill()
        server.wait()
        assert server.stdout is not None  # stdout=PIPE
        server.stdout.close()
    raw = record.read_text()
    assert "must-not-leave-this-process" not in raw
    requests = {r["op"]: r for r in map(json.loads, raw.splitlines())}
    for op in ("up", "reload"):
        sent = requests[op]["environ"]
        assert sent["APP_TOKEN"] == "wanted-token"
        assert "SECRET_X" not in sent and "PATH" not in sent and "VROOLI_TEST_TOKEN" not in sent
        # VROOLI_KEEP_WARM: the default of keep_warm, which the file leaves unset (conftest sets it).
        assert set(sent) <= {"APP_TOKEN", "SLEEP_SECONDS", "HOME", "XDG_STATE_HOME", "STATE_DIRECTORY",
                             "VROOLI_KEEP_WARM"}


# ------------------------------------------------------------ status and down

STACK = """
    [resources.db]
    command = ["sh", "-c", "echo db up; exec sleep 1000"]
    health = { probe = "log", pattern = "db up" }
    [resources.app]
    command = ["sh", "-c", "echo app up; exec sleep 1000"]
    ports = [%d]
    depends_on = { db = "started" }
    health = { probe = "log", pattern = "app up" }
"""


def test_status_json_has_the_same_keys_running_or_not(project: Project) -> None:
    project.write(STACK % free_port())
    idle = project.run("status", "--json")
    assert idle.returncode == 3
    project.run("up", check=True)
    running = project.run("status", "--json")
    assert running.returncode == 0
    project.run("down", check=True)
    after = project.run("status", "--json")
    assert after.returncode == 3
    shapes = [json.loads(done.stdout) for done in (idle, running, after)]
    assert {frozenset(s) for s in shapes} == {frozenset(shapes[1])}
    for shape in shapes:
        rows = {r["name"]: r for r in shape["resources"]}
        assert set(rows) == {"db", "app"}
        for name, row in rows.items():
            live = next(r for r in shapes[1]["resources"] if r["name"] == name)
            assert set(row) == set(live), name
            for key in ("runtime", "depends_on", "ports", "probe", "enabled"):
                assert row[key] == live[key], (name, key)


def test_status_and_down_work_while_the_file_is_broken(project: Project, shared_tmp: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A user must be able to see and stop a running stack mid-edit.
    monkeypatch.setenv("XDG_STATE_HOME", str(shared_tmp / "xdg-state"))
    project.write(STACK % free_port())
    good = project.file.read_text()
    project.run("up", check=True)
    pids = [r["pid"] for r in project.rows().values()]
    for broken, problem in ((good + "\n[resources.half\n", "invalid TOML"),
                            (good.replace('"started"', '"begun"'), "condition must be one of"),
                            (None, "file not found")):
        if broken is None:
            project.file.unlink()
        else:
            project.file.write_text(broken)
        done = project.run("status")
        assert done.returncode == 0, (problem, done.stderr)
        warning, *rest = done.stderr.splitlines()
        assert warning.startswith("vrooli: warning: the config does not load: ") and problem in warning
        assert warning.endswith("; showing the running supervisor's own copy")
        assert not rest
        table = [line for line in done.stdout.splitlines()[1:]
                 if not line.startswith(("health endpoint:", "stack memory:", "supervisor:"))]
        assert [line.split()[:2] for line in table] == [["db", "ready"], ["app", "ready"]]
        payload = json.loads(project.run("status", "--json").stdout)
        assert payload["running"] is True and {r["state"] for r in payload["resources"]} == {"ready"}
    done = project.run("down")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "stopped app, db"
    assert not [p for p in pids if psutil.pid_exists(p)]
    assert not (project.state_dir / "supervisor.pid").exists()
    # Nothing runs any more: the broken file is an error again, as before.
    done = project.run("status")
    assert done.returncode == 2
    assert done.stderr.strip() == f"{project.file}: file not found"


def test_a_broken_file_never_reaches_another_projects_supervisor(project: Project, shared_tmp: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(shared_tmp / "xdg-state"))
    project.write(STACK % free_port())
    project.run("up", check=True)
    other = shared_tmp / "other"
    other.mkdir()
    (other / "resources.toml").write_text("[resources.x\n")
    from orchestrator.infra import registry

    # A forged entry pointing this file at the running project's state dir: not its supervisor.
    registry.remember(other / "resources.toml", project.state_dir, "forged")
    done = subprocess.run([sys.executable, "-m", "orchestrator", "down"], cwd=other, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "invalid TOML" in done.stderr
    assert project.run("status").returncode == 0


# ------------------------------------------------------------ long messages: one terminal line each

# Redis in protected mode answers every command with one ~900-character error, spread
# here over lines and a tab, as a probe or a crash may quote output.
DENIED = ("DENIED Redis is running in protected mode because protected mode is enabled and no password is set "
          "for the default user. In this mode connections are only accepted from the loopback interface.\t"
          + "If you want to connect from external computers to Redis you may adopt one of the following "
            "solutions: 1) Just disable protected mode sending the command 'CONFIG SET protected-mode no'. " * 7)
DENYING_SERVER = f"""
import socket
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", PORT))
server.listen(16)
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    conn.recv(4096)
    conn.sendall(b"-" + {DENIED.encode()!r} + b"\\r\\n")
    conn.close()
"""


def write_denying_stack(project: Project) -> None:
    port = free_port()
    project.write(f"""
        [resources.cache]
        command = {json.dumps([sys.executable, "-c", DENYING_SERVER.replace("PORT", str(port))])}
        start_timeout = "3s"
        health = {{ probe = "redis", port = {port} }}
        [resources.x]
        command = ["sh", "-c", "echo up; exec sleep 1000"]
        health = {{ probe = "log", pattern = "up" }}
    """)


def run_on_a_terminal(project: Project, *args: str, columns: int = 80) -> tuple[int, str]:
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=project.dir, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=env)
    os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    return proc.wait(60), output.decode(errors="replace")


def test_a_long_message_is_one_terminal_line_in_progress_and_table(project: Project) -> None:
    import re

    write_denying_stack(project)
    code, screen = run_on_a_terminal(project, "up", columns=80)
    assert code == 1
    drawn = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", part) for part in screen.replace("\r\n", "\n").split("\n")]
    progress = [line for line in drawn if line.startswith(" ")]
    assert any("DENIED Redis is running" in line for line in progress)  # shown while starting
    assert max(len(line) for line in progress) <= 79
    assert any(line.endswith("…") for line in progress)
    # The reason, once, whole, and on one line, after the progress.
    reason = next(line for line in drawn if line.startswith("vrooli: cache: failed: "))
    assert DENIED.replace("\t", " ").strip() in reason
    code, table = run_on_a_terminal(project, "status", columns=100)
    assert code == 1
    lines = [line for line in table.replace("\r\n", "\n").splitlines() if line]
    assert lines[-1].startswith("health endpoint: ") and lines[-2].startswith("stack memory: ")  # footers
    assert lines[-3].startswith("supervisor: pid ")
    assert len(lines) == 6 and max(len(line) for line in lines) <= 99
    # The whole text stays where it is read by programs and people looking closely.
    row = next(r for r in json.loads(project.run("status", "--json").stdout)["resources"] if r["name"] == "cache")
    assert DENIED in row["message"]
    assert json.dumps(DENIED)[1:-1] in (project.state_dir / "supervisor.log").read_text()


def test_a_long_message_in_a_pipe_is_one_bounded_line_per_change(project: Project) -> None:
    write_denying_stack(project)
    done = project.run("up")
    assert done.returncode == 1
    progress = [line for line in done.stderr.splitlines() if line.startswith(" ")]
    assert progress and max(len(line) for line in progress) <= 200
    assert any("cache" in line and line.endswith("…") for line in progress)
    assert len(done.stderr.splitlines()) < 12  # a handful of lines, not a flood
