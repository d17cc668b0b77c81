"""Probes against real servers (redis-server, Postgres 15) and small real sockets."""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import psutil
import pytest

from orchestrator.infra.logs import OutputLog
from orchestrator.probes import ProbeContext, ProbeResult, make_probe, run_once, until_ready
from orchestrator.spec import ProbeSpec
from tests.conftest import (
    Project,
    close_listener,
    free_port,
    postgres_command,
    postgres_data_dir,
    processes_with_token,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def check(spec: ProbeSpec, context: ProbeContext | None = None) -> tuple[bool, str]:
    probe = make_probe(spec, context or ProbeContext())
    try:
        result = await run_once(probe, spec.timeout)
    finally:
        await probe.aclose()
    return result.ok, result.message


@pytest.fixture
def redis_server() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.e2e
async def test_redis_probe_waits_for_pong(redis_server: int) -> None:
    spec = ProbeSpec("redis", port=redis_server)
    probe = make_probe(spec, ProbeContext())
    with anyio.fail_after(10):
        result = await until_ready(probe, spec, lambda r: None)
    assert result.ok and result.message.endswith("PONG")


async def test_redis_probe_refused_when_down() -> None:
    ok, message = await check(ProbeSpec("redis", port=free_port()))
    assert not ok and "connection refused" in message


class LineServer:
    """A real TCP server that answers every connection with canned bytes."""

    def __init__(self, reply: bytes) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(self.reply)

    def close(self) -> None:
        close_listener(self.sock, self._thread)


async def test_redis_loading_is_not_ready() -> None:
    server = LineServer(b"-LOADING Redis is loading the dataset in memory\r\n")
    try:
        ok, message = await check(ProbeSpec("redis", port=server.port))
    finally:
        server.close()
    assert not ok and "LOADING" in message


async def test_postgres_starting_up_is_not_ready() -> None:
    # What Postgres sends while it starts: ErrorResponse with SQLSTATE 57P03.
    fields = b"SFATAL\0C57P03\0Mthe database system is starting up\0\0"
    reply = b"E" + (len(fields) + 4).to_bytes(4, "big") + fields
    server = LineServer(reply)
    try:
        ok, message = await check(ProbeSpec("postgres", port=server.port))
    finally:
        server.close()
    assert not ok and "the database system is starting up" in message


@pytest.mark.skipif(not Path("/usr/lib/postgresql/15/bin/postgres").exists(), reason="needs Postgres 15")
async def test_postgres_probe_against_real_postgres(shared_tmp: Path) -> None:
    data = postgres_data_dir(shared_tmp)
    port = free_port()
    spec = ProbeSpec("postgres", port=port, user="postgres")
    assert not (await check(spec))[0]
    proc = subprocess.Popen(["runuser", "-u", "postgres", "--", *postgres_command(data, port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = make_probe(spec, ProbeContext())
        started = time.monotonic()
        with anyio.fail_after(30):
            result = await until_ready(probe, spec, lambda r: None)
        assert result.ok, result.message
        assert time.monotonic() - started < 30
        # An unknown role still finds a server taking sessions: ready, as pg_isready agrees.
        ok, _ = await check(ProbeSpec("postgres", port=port, user="nobody_here"))
        assert ok
    finally:
        proc.terminate()
        proc.wait(30)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = 503 if self.path == "/busy" else 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"x")

    def log_message(self, *args: object) -> None:
        return


async def test_http_probe_status_rules() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert (await check(ProbeSpec("http", url=base + "/ok")))[0]
        ok, message = await check(ProbeSpec("http", url=base + "/busy"))
        assert not ok and message.endswith("503")
        assert (await check(ProbeSpec("http", url=base + "/busy", expect_status=(503,))))[0]
    finally:
        server.shutdown()
        server.server_close()
    ok, message = await check(ProbeSpec("http", url=base + "/ok"))
    assert not ok and "connection refused" in message


async def test_tcp_probe() -> None:
    server = LineServer(b"")
    try:
        assert (await check(ProbeSpec("tcp", port=server.port)))[0]
    finally:
        server.close()
    assert not (await check(ProbeSpec("tcp", port=server.port)))[0]


@pytest.mark.e2e
async def test_exec_probe_reports_exit_and_output(tmp_path: Path) -> None:
    assert (await check(ProbeSpec("exec", command=("true",))))[0]
    ok, message = await check(ProbeSpec("exec", command=("sh", "-c", "echo not yet; exit 4")))
    assert not ok and message == "exec sh exited 4: not yet"
    ok, message = await check(ProbeSpec("exec", command=("no-such-binary-here",)))
    assert not ok and "not found" in message


@pytest.mark.e2e
async def test_hung_probe_is_cut_at_its_timeout() -> None:
    started = time.monotonic()
    ok, message = await check(ProbeSpec("exec", command=("sleep", "10"), timeout=0.2))
    assert not ok and "timed out after 0.2s" in message
    assert time.monotonic() - started < 2


async def test_log_probe_sees_only_output_after_start(tmp_path: Path) -> None:
    log = OutputLog(tmp_path / "x.log")
    log.write(b"old run: ready to accept connections\n")
    spec = ProbeSpec("log", pattern="ready to accept")
    context = ProbeContext(log=log, log_start=log.size())
    probe = make_probe(spec, context)
    assert not (await run_once(probe, 1)).ok
    log.write(b"Ready to accept connections partial")  # no newline yet: not a whole line
    assert not (await run_once(probe, 1)).ok
    log.write(b"\nready to accept connections tcp\n")
    assert (await run_once(probe, 1)).ok


async def test_first_checks_are_milliseconds_apart() -> None:
    # A server that appears 100 ms in must be seen within a few tens of milliseconds.
    port = free_port()
    spec = ProbeSpec("tcp", port=port, interval=0.05)
    listener: list[socket.socket] = []

    def open_later() -> None:
        time.sleep(0.1)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        # Both recorded before listen(): the probe may connect the instant it listens.
        listener.append(sock)
        opened.append(time.monotonic())
        sock.listen(1)

    opened: list[float] = []
    threading.Thread(target=open_later, daemon=True).start()
    probe = make_probe(spec, ProbeContext())
    with anyio.fail_after(5):
        await until_ready(probe, spec, lambda r: None)
    seen = time.monotonic()
    listener[0].close()
    assert seen - opened[0] < 0.2  # generous for a loaded CI machine; typical is < 0.05


def test_redis_binary_present() -> None:
    assert shutil.which("redis-server"), "redis-server must be installed (.ci/run installs it)"


def live_sleepers(token: str) -> list[psutil.Process]:
    found = []
    for proc in processes_with_token(token):
        try:
            if proc.cmdline() == ["sleep", "1000"] and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.mark.e2e
@pytest.mark.parametrize("script", ["sleep 1000", "setsid sleep 1000"])
async def test_hung_exec_probe_is_killed_with_its_whole_group(no_leaked_processes: str, script: str) -> None:
    # `sh -c 'sleep 1000'`: cutting the probe at its timeout must take the sleep along,
    # or every check leaves one more orphan behind; also one that left the group.
    spec = ProbeSpec("exec", command=("sh", "-c", script), timeout=0.2)
    probe = make_probe(spec, ProbeContext())
    checks = 0
    with anyio.move_on_after(3):
        while True:
            result = await run_once(probe, spec.timeout)
            assert not result.ok and "timed out after 0.2s" in result.message
            checks += 1
            # Killed and reaped before the check returned: at most the SIGKILL in flight.
            with anyio.fail_after(2):
                while live_sleepers(no_leaked_processes):
                    await anyio.sleep(0.02)
    await probe.aclose()
    assert checks >= 5
    assert live_sleepers(no_leaked_processes) == []


@pytest.mark.e2e
async def test_exec_probe_leaves_no_background_child_of_a_passing_check(no_leaked_processes: str) -> None:
    spec = ProbeSpec("exec", command=("sh", "-c", "sleep 1000 & echo started"), timeout=5)
    ok, message = await check(spec)
    assert ok and message == "exec sh exited 0"
    with anyio.fail_after(2):
        while live_sleepers(no_leaked_processes):
            await anyio.sleep(0.02)


async def test_log_probe_with_a_catastrophic_pattern_keeps_the_event_loop_responsive(tmp_path: Path) -> None:
    # `(a|aa)+$` backtracks exponentially: on 36 a's Python's `re` needs seconds, on 5,000
    # it never ends. The check must stay within its timeout and the loop keep running.
    log = OutputLog(tmp_path / "x.log")
    log.write(b"a" * 36 + b"!\n" + b"a" * 5000 + b"!\n")
    spec = ProbeSpec("log", pattern=r"^(a|aa)+$", timeout=0.5)
    probe = make_probe(spec, ProbeContext(log=log))
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        for _ in range(20):
            started = time.monotonic()
            result = await run_once(probe, spec.timeout)
            assert not result.ok
            assert time.monotonic() - started < 2
            if "2 line(s) skipped: matching took longer than" in result.message:
                break
        assert "2 line(s) skipped: matching took longer than 0.125s" in result.message
        log.write(b"aaaa\n")  # a line it does match, after the ones given up on
        with anyio.fail_after(5):
            while not (await run_once(probe, spec.timeout)).ok:
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert max(gaps) < 0.3, max(gaps)


async def test_log_probe_caps_lines_and_reads_a_huge_line_once(tmp_path: Path) -> None:
    log = OutputLog(tmp_path / "x.log")
    log.write(b"x" * (3 * 1024 * 1024) + b"ready\n")  # 3 MiB on one line: no match beyond 8 KiB
    probe = make_probe(ProbeSpec("log", pattern="ready"), ProbeContext(log=log))
    for _ in range(5):
        assert not (await run_once(probe, 1)).ok
    log.write(b"ready\n")
    assert (await run_once(probe, 1)).ok


# --------------------------------------------- containment: a probe's bug or bad URL is a failed check, no secret shown

SECRET = "Zq8pwSecret"


class _BuggyProbe:
    """A probe with a bug: its check raises what no probe is meant to raise."""

    spec = ProbeSpec("tcp", port=1)

    async def check(self) -> ProbeResult:
        raise KeyError("no such field")

    async def aclose(self) -> None:
        return None


async def test_unexpected_error_in_a_check_is_a_failed_result_logged_once(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A check that raises what no probe expects fails its own resource; it must not
    propagate into the supervisor, and a probe failing every 10 ms logs it once."""
    probe = _BuggyProbe()
    results = [await run_once(probe, 1) for _ in range(3)]
    assert all(not r.ok for r in results)
    assert results[0].message.startswith("tcp probe failed unexpectedly: KeyError"), results[0]
    assert capsys.readouterr().out.count("probe error contained") == 1


async def test_probe_that_cannot_be_built_fails_without_showing_the_password() -> None:
    """urlsplit reads 'Zq8pw' of 'app:Zq8pw/x@host' as the port, then quotes it in its error."""
    for url, reason in ((f"http://app:{SECRET}/x@127.0.0.1:1/", "'@' after the host"),
                        (f"http://app:{SECRET}@[::1:5432/", "'[' without its ']'"),
                        (f"http://app:{SECRET}@127.0.0.1:99999/", "the port must be a number from 1 to 65535"),
                        (f"http://app:{SECRET}/health", "the port must be a number")):
        probe = make_probe(ProbeSpec("http", url=url), ProbeContext())
        result = await run_once(probe, 1)
        await probe.aclose()
        assert not result.ok and result.message.startswith(f"http probe cannot be used: {reason}"), result
        assert SECRET not in result.message and SECRET[:5] not in result.message, result


def test_password_in_a_probe_url_reaches_no_log_and_no_status(project: Project) -> None:
    """The whole path of a URL with a password: probing, failing, status, supervisor.log."""
    port = free_port()
    url = f"http://app:{SECRET}%2Fx@127.0.0.1:{port}/health"
    project.write(f"""
        [resources.web]
        command = ["{sys.executable}", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
        start_timeout = "3s"
        health = {{ probe = "http", url = "{url}", expect_status = [200] }}
    """)
    validated = project.run("validate")
    assert validated.returncode == 0, validated.stderr
    up = project.run("up")
    assert up.returncode == 1, up.stdout + up.stderr  # 404 is not 200: failed after 3 s
    seen = [up.stdout, up.stderr, project.run("status").stdout, project.run("status", "--json").stdout]
    assert "http://127.0.0.1:" in "".join(seen)  # the URL is shown, its credentials are not
    project.run("down", check=True)
    for path in project.state_dir.rglob("*"):
        if path.is_file():
            seen.append(path.read_text(errors="replace"))
    assert len(seen) > 4
    for text in seen:
        assert SECRET not in text and SECRET[:5] not in text


def test_url_that_used_to_crash_the_supervisor_is_refused_before_anything_starts(project: Project) -> None:
    """'app:SECRET/x@host': urlsplit took SECRET for the port, the probe raised in the
    supervisor (a traceback quoting it in supervisor.log, every resource stopped)."""
    project.write(f"""
        [resources.web]
        command = ["sleep", "30"]
        health = {{ probe = "http", url = "http://app:{SECRET}/x@127.0.0.1:{free_port()}/health" }}
    """)
    for command in ("validate", "up"):
        done = project.run(command)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr.strip().endswith("resources.web.health.url: invalid URL: '@' after the host: "
                                            "percent-encode '/', '?' and '#' in a user name or password "
                                            "(%2F, %3F, %23) and '@' in the path (%40)"), done.stderr
        assert SECRET[:5] not in done.stdout + done.stderr
    assert not (project.state_dir / "supervisor.log").exists()
