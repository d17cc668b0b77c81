"""Shared fixtures: real servers on free ports, a project in a temp dir, and leak checks.

Every process a test starts inherits VROOLI_TEST_TOKEN; after each test any process still
carrying the test's token is a leak: it is killed and the test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import psutil
import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def close_listener(sock: socket.socket, acceptor: threading.Thread) -> None:
    """Stop listening for real before the test asserts the port is closed.

    close() alone does not interrupt a thread blocked in accept(): the kernel keeps the
    listening socket alive until that call returns, so the port still accepts connections
    (the cause of test_tcp_probe failing now and then). shutdown() wakes accept() at once.
    """
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
    acceptor.join(timeout=5)
    assert not acceptor.is_alive(), "the test server's accept thread did not stop"


def processes_with_token(token: str) -> list[psutil.Process]:
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("VROOLI_TEST_TOKEN") == token:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


# Every token this session handed out: at its end, no process may carry one (a supervisor
# kept warm past its test, say). Only ours: other checkouts' tests may run meanwhile.
SESSION_TOKENS: set[str] = set()


@pytest.fixture(autouse=True)
def no_leaked_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    token = uuid.uuid4().hex
    SESSION_TOKENS.add(token)
    monkeypatch.setenv("VROOLI_TEST_TOKEN", token)
    # A supervisor idles for ten minutes after `down` by default; where warmth is not the
    # point a test's supervisor ends with its `down`, as before (tests of warmth unset it).
    monkeypatch.setenv("VROOLI_KEEP_WARM", "0")
    # Subprocesses (`python -m orchestrator`) must run this checkout, whatever is installed.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    yield token
    deadline = time.monotonic() + 3
    leaked = processes_with_token(token)
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = processes_with_token(token)
    if leaked:
        described = [f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in leaked if p.is_running()]
        for proc in leaked:
            try:
                proc.kill()
            except psutil.Error:
                pass
        if described:
            pytest.fail(f"test left processes running: {described}")


@pytest.fixture(autouse=True)
def private_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Nothing a test runs writes below the real $HOME: the per-user registry of running
    projects (and any default state dir) goes to a directory of the test's own."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir other users can traverse (Postgres refuses to run as root)."""
    path = Path(tempfile.mkdtemp(prefix="vrooli-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


_PG_TEMPLATE: dict[str, Path] = {}


def postgres_template() -> Path:
    """initdb once per session; each test copies the cluster (much faster than initdb)."""
    if "path" not in _PG_TEMPLATE:
        base = Path(tempfile.mkdtemp(prefix="vrooli-pgtemplate-", dir="/tmp"))
        base.chmod(0o755)
        data = base / "data"
        data.mkdir()
        shutil.chown(data, "postgres", "postgres")
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data),
                        "-A", "trust", "-U", "postgres", "--no-sync"],
                       check=True, capture_output=True)
        _PG_TEMPLATE["path"] = data
    return _PG_TEMPLATE["path"]


# The two lanes. `e2e`: a test that starts processes or servers (the real CLI, Postgres,
# redis-server, Docker, systemd); `unit`: everything else, no subprocess and no server,
# `python3 -m pytest -m unit` in well under a minute. A test is e2e when its module is
# listed here (every test in it starts something), when it uses one of these fixtures, or
# when it is marked `@pytest.mark.e2e` (or `docker`). A unit test that starts a process
# fails and says so, so the fast lane stays fast.
E2E_MODULES = frozenset({
    "test_cli", "test_config_view", "test_daemon", "test_docker", "test_e2e_optional_profiles", "test_e2e_process",
    "test_error_vocabulary", "test_export", "test_external", "test_import_contract", "test_install_systemd",
    "test_memory", "test_report", "test_running_records", "test_setup_script", "test_state_dir_deleted",
    "test_state_safety", "test_systemd_real", "test_thin_client", "test_warm",
})
E2E_FIXTURES = frozenset({"project", "shared_tmp", "need_docker", "system_daemon"})
SPAWNING = ("subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn", "os.system")
_UNIT_RUNNING: list[str] = []  # the unit test running now, if one is


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        e2e = (module in E2E_MODULES or bool(E2E_FIXTURES & set(getattr(item, "fixturenames", ())))
               or item.get_closest_marker("e2e") is not None or item.get_closest_marker("docker") is not None)
        item.add_marker(pytest.mark.e2e if e2e else pytest.mark.unit)


def _no_process_in_a_unit_test(event: str, args: tuple[Any, ...]) -> None:
    if _UNIT_RUNNING and event in SPAWNING:
        raise RuntimeError(f"{_UNIT_RUNNING[0]} starts a process ({event}): a unit test may not; "
                           "mark it @pytest.mark.e2e (tests/conftest.py says which lane is which)")


sys.addaudithook(_no_process_in_a_unit_test)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("unit") is None:
        return (yield)
    _UNIT_RUNNING.append(item.nodeid)
    try:
        return (yield)
    finally:
        _UNIT_RUNNING.clear()


def pytest_configure(config: pytest.Config) -> None:
    # Run from a background job (`scripts/test.sh &`, nohup), this process inherits SIGINT
    # ignored, and so would every `vrooli` a test starts: the tests that press Ctrl-C on one
    # would wait for nothing. What a user's terminal gives it is Python's default handler.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if "path" in _PG_TEMPLATE:
        shutil.rmtree(_PG_TEMPLATE["path"].parent, ignore_errors=True)
    left = [proc for token in SESSION_TOKENS for proc in processes_with_token(token)]
    if left:
        names = []
        for proc in left:
            try:
                names.append(f"{proc.pid} {proc.name()}")
                proc.kill()
            except psutil.Error:
                pass
        print(f"\nthe test session left processes running (killed): {names}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def postgres_data_dir(target: Path) -> Path:
    data = target / "pgdata"
    subprocess.run(["cp", "-a", str(postgres_template()), str(data)], check=True)
    sockets = target / "pgsock"
    sockets.mkdir(exist_ok=True)
    shutil.chown(sockets, "postgres", "postgres")
    return data


def postgres_command(data: Path, port: int) -> list[str]:
    return [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(data.parent / "pgsock"),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "shared_buffers=16MB"]


@dataclass
class Project:
    """A resources.toml in a temp dir, driven through the real `vrooli` CLI."""

    dir: Path
    files: list[str] = field(default_factory=list)  # -f arguments, when not ./resources.toml
    name: str = ""

    @property
    def file(self) -> Path:
        return self.dir / "resources.toml"

    @property
    def state_dir(self) -> Path:
        return self.dir / ".state"

    def write(self, body: str, name: str = "resources.toml") -> Path:
        text = textwrap.dedent(body)
        if name == "resources.toml" and "[project]" not in text:
            text = f'[project]\nname = "t{uuid.uuid4().hex[:8]}"\nstate_dir = ".state"\n' \
                   f'health_listen = "127.0.0.1:0"\n\n' + text
        path = self.dir / name
        path.write_text(text)
        return path

    def run(self, *args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=self.dir,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError(f"vrooli {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def status(self, *names: str) -> dict[str, Any]:
        done = self.run("status", "--json", *names)
        status: dict[str, Any] = json.loads(done.stdout)
        return status

    def rows(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self.status()["resources"]}

    def health_url(self) -> str:
        return "http://" + (self.state_dir / "health.addr").read_text().strip()


@pytest.fixture
def project(shared_tmp: Path) -> Iterator[Project]:
    proj = Project(shared_tmp)
    yield proj
    if (proj.state_dir / "supervisor.pid").exists() or (proj.state_dir / "running.json").exists():
        proj.run("down", "--exit", timeout=120)  # a warm supervisor too: nothing outlives its test


def wait_for(predicate: Callable[..., T | Literal[False] | None], timeout: float = 10.0, interval: float = 0.02) -> T:
    """The predicate's first truthy answer; False or None mean not yet.

    Called with no arguments; `...` lets predicates bind loop variables as lambda defaults.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def kill_tree(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def masked(done: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    """A command's answer with every number masked: times, sizes and pids change from run
    to run (and a memory figure not sampled yet, just after a restart, is null)."""
    def mask(text: str) -> str:
        return re.sub(r"\d+(\.\d+)?|\bnull\b", "N", text)
    return done.returncode, mask(done.stdout), mask(done.stderr)
