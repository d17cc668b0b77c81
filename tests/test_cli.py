"""The CLI's promises that are not about starting things: cheap imports, clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Project


def imported_by(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator", *args],
                          capture_output=True, text=True, cwd=ROOT)
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_help_imports_neither_docker_nor_the_event_loop_stack() -> None:
    names = imported_by("--help")
    assert "orchestrator.cli" in names  # the measurement works
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


# ------------------------------------------------------------ who the CLI talks to (issue 10.3)

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
        server.stdout.close()  # type: ignore[union-attr]


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
        server.stdout.close()  # type: ignore[union-attr]
    raw = record.read_text()
    assert "must-not-leave-this-process" not in raw
    requests = {r["op"]: r for r in map(json.loads, raw.splitlines())}
    for op in ("up", "reload"):
        sent = requests[op]["environ"]
        assert sent["APP_TOKEN"] == "wanted-token"
        assert "SECRET_X" not in sent and "PATH" not in sent and "VROOLI_TEST_TOKEN" not in sent
        assert set(sent) <= {"APP_TOKEN", "SLEEP_SECONDS", "HOME", "XDG_STATE_HOME", "STATE_DIRECTORY"}
