"""Hardening of what any local user can reach: the health endpoint, the control socket's
accept loop, public text, and request shapes.

Every test drives a real supervisor (`vrooli up`, `vrooli daemon`) with real process
resources; the unit tests at the end use real sockets.
"""

from __future__ import annotations

import json
import os
import re
import resource
import selectors
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest

from tests.conftest import Project, free_port, wait_for

HALF_SENT = b"GET /livez\r\nHost: x\r\n"
# The endpoint's promises (orchestrator/daemon/httpserver.py Limits), stated here so these tests
# also run, and fail, against code that does not have them.
HEAD_TIMEOUT = 5.0
MAX_CONNECTIONS = 256
STEADY = """
    [resources.steady]
    command = ["sh", "-c", "echo up; exec sleep 1000"]
    health = { probe = "log", pattern = "up" }
"""


@pytest.fixture(autouse=True)
def many_fds() -> None:
    """This test process opens ~1,000 sockets at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 8192):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))


def run_with_nofile(project: Project, limit: tuple[int, int], *args: str) -> subprocess.CompletedProcess[str]:
    """`vrooli ARGS` whose detached supervisor inherits RLIMIT_NOFILE = limit."""
    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, limit)

    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=project.dir, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, preexec_fn=set_limit)


def supervisor(project: Project) -> psutil.Process:
    return psutil.Process(int((project.state_dir / "supervisor.pid").read_text()))


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def supervisor_log(project: Project) -> str:
    return (project.state_dir / "supervisor.log").read_text(errors="replace")


def health_address(project: Project) -> tuple[str, int]:
    host, _, port = (project.state_dir / "health.addr").read_text().strip().rpartition(":")
    return host, int(port)


def half_sent(address: tuple[str, int], count: int) -> list[socket.socket]:
    """`count` connections that send the start of a request and never finish it."""
    opened = []
    for _ in range(count):
        sock = socket.create_connection(address, timeout=30)
        try:
            sock.sendall(HALF_SENT)
        except OSError:
            pass  # already closed to make room for the others: fine
        opened.append(sock)
    return opened


def wait_closed_by_server(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """Wait until the server closed each socket; those still open at the deadline."""
    pending = set(socks)
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(0.5):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                try:
                    data = ready.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    pending.discard(ready)
                    selector.unregister(ready)
    return list(pending)


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def no_tracebacks(project: Project) -> None:
    text = supervisor_log(project)
    assert "Traceback" not in text, text[-3000:]


# ------------------------------------------------------------------ item 1: the health endpoint


def test_half_sent_request_is_closed_after_the_header_timeout(project: Project) -> None:
    project.write(STEADY)
    project.run("up", check=True)
    address = health_address(project)
    socks = half_sent(address, 10)
    started = time.monotonic()
    try:
        assert wait_closed_by_server(socks, 30) == []
        took = time.monotonic() - started
        # not at once (a prompt client has a few seconds), and not held for ever
        assert HEAD_TIMEOUT - 1 <= took <= 30, took
    finally:
        close_all(socks)


def test_a_thousand_half_sent_requests_do_not_take_the_stack_down(project: Project) -> None:
    project.write(STEADY)
    # The soft limit a login shell has: ~1,000 held connections would exhaust it.
    done = run_with_nofile(project, (1024, 1024), "up")
    assert done.returncode == 0, done.stderr
    before = project.rows()["steady"]
    sup = supervisor(project)
    fds_before = sup.num_fds()
    log_size = len(supervisor_log(project))
    address = health_address(project)
    url = project.health_url()

    flood = half_sent(address, 1000)
    try:
        held = sup.num_fds() - fds_before
        # bounded: the endpoint keeps at most max_connections, whatever is thrown at it
        assert held <= MAX_CONNECTIONS + 16, held
        # the control socket answers and the resources are untouched, during the flood
        status = project.run("status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["resources"][0]["pid"] == before["pid"]
        # a prompt client is served while the flood holds its connections
        assert httpx.get(url + "/livez", timeout=20).status_code == 200
        assert wait_closed_by_server(flood, 40) == []  # every half-sent connection is closed
    finally:
        close_all(flood)
    wait_for(lambda: sup.num_fds() <= fds_before + 2, 20)
    assert httpx.get(url + "/readyz", timeout=20).status_code == 200
    after = project.rows()["steady"]
    assert after["state"] == "ready" and after["pid"] == before["pid"] and after["restarts"] == 0
    no_tracebacks(project)
    assert len(supervisor_log(project)) - log_size < 16_384  # no log flood


def test_a_burst_of_prompt_clients_is_queued_not_dropped(project: Project) -> None:
    """1,000 clients at once, each with a whole request: more than the connection bound, and
    every one is answered (the bound queues them; only slow clients are ever closed)."""
    import asyncio

    project.write(STEADY)
    project.run("up", check=True)
    host, port = health_address(project)

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
        return answer

    async def burst() -> list[Any]:
        return await asyncio.gather(*(asyncio.wait_for(one(), 60) for _ in range(1000)), return_exceptions=True)

    answers = asyncio.run(burst())
    failed = [a for a in answers if not (isinstance(a, bytes) and a.startswith(b"HTTP/1.1 200 OK\r\n"))]
    assert failed == [], (len(failed), failed[:3])


@pytest.mark.parametrize("target", ["control", "health"])
def test_accept_loops_survive_running_out_of_file_descriptors(project: Project, target: str) -> None:
    project.write(STEADY)
    project.run("up", check=True)
    sup = supervisor(project)
    pid_before = project.rows()["steady"]["pid"]
    soft, hard = sup.rlimit(psutil.RLIMIT_NOFILE)
    spare = 6
    sup.rlimit(psutil.RLIMIT_NOFILE, (sup.num_fds() + spare, hard))
    flood: list[socket.socket] = []
    try:
        for _ in range(spare + 40):
            if target == "control":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(project.state_dir / "control.sock"))
            else:
                sock = socket.create_connection(health_address(project), timeout=10)
            flood.append(sock)
        wait_for(lambda: any(sign in supervisor_log(project) for sign in ("out of file descriptors",
                                                                          "Too many open files"))
                 or not alive(sup), 20)
        assert alive(sup), supervisor_log(project)[-3000:]
        time.sleep(1)  # a second of accept() failing over and over: no log line per failure
        assert alive(sup)
    finally:
        close_all(flood)
    # It recovers by itself once descriptors are free again, still under the low limit.
    status = wait_for(lambda: (done := project.run("status", "--json")).returncode == 0 and done, 40)
    row = json.loads(status.stdout)["resources"][0]
    assert row["state"] == "ready" and row["pid"] == pid_before
    sup.rlimit(psutil.RLIMIT_NOFILE, (soft, hard))
    text = supervisor_log(project)
    assert text.count("out of file descriptors") == 1, text[-3000:]
    no_tracebacks(project)


def test_supervisor_raises_its_soft_file_limit_to_the_hard_limit(project: Project) -> None:
    project.write(STEADY)
    done = run_with_nofile(project, (256, 4096), "up")
    assert done.returncode == 0, done.stderr
    assert supervisor(project).rlimit(psutil.RLIMIT_NOFILE) == (4096, 4096)


def test_endpoint_failure_stays_in_the_endpoint(project: Project) -> None:
    """A handler that raises answers 500 and is logged once; the server keeps serving."""
    from orchestrator.daemon import httpserver
    from orchestrator.daemon.endpoint import bind_listener

    assert (httpserver.Limits().head_timeout, httpserver.Limits().max_connections) == (HEAD_TIMEOUT, MAX_CONNECTIONS)

    calls: list[str] = []

    async def handler(request: httpserver.Request) -> httpserver.Response:
        calls.append(request.path)
        if request.path == "/boom":
            raise RuntimeError("bug in a handler")
        return httpserver.Response(200, "text/plain", b"fine")

    async def main() -> tuple[list[int], int]:
        sock = bind_listener("127.0.0.1", 0)
        port = sock.getsockname()[1]
        server = httpserver.HttpServer(sock, handler)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)

            def requests() -> list[int]:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                    return [client.get(p).status_code for p in ("/boom", "/ok", "/boom", "/ok")]

            codes = await anyio.to_thread.run_sync(requests)
            tg.cancel_scope.cancel()
        sock.close()
        return codes, server.open_connections

    codes, still_open = anyio.run(main)
    assert codes == [500, 200, 500, 200]
    assert still_open == 0


MALFORMED_HTTP = [
    (b"GARBAGE\r\n\r\n", b"HTTP/1.1 400 "),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", b"HTTP/1.1 431 "),
    (b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 400 "),
    (b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", b"HTTP/1.1 400 "),
    (b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", b"HTTP/1.1 400 "),
    (b"GET /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"HTTP/1.1 400 "),
    (b"GET /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"HTTP/1.1 400 "),
    (b"GET /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"HTTP/1.1 200 "),  # empty body
    (b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nx", b"HTTP/1.1 405 "),
    (b"DELETE /livez HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 405 "),
    (b"GET /livez HTTP/1.1\r\nHost: x\r\n" + b"H: v\r\n" * 20_000 + b"\r\n", b"HTTP/1.1 431 "),
    (b"GET /livez HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 "),  # HTTP/1.1 without Host
    (b"GET /ok HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 "),
    (b"HEAD /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"HTTP/1.1 200 "),
]


def test_malformed_http_gets_an_answer_and_a_close() -> None:
    """Each malformed request: one error status, then the connection closes; the server serves on."""
    from orchestrator.daemon import httpserver
    from orchestrator.daemon.endpoint import bind_listener

    async def handler(request: httpserver.Request) -> httpserver.Response:
        return httpserver.Response(200, "text/plain", b"fine")

    def exchange(port: int, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # answered and closed before everything was sent
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass
            return answer

    async def main() -> list[bytes]:
        sock = bind_listener("127.0.0.1", 0)
        port = sock.getsockname()[1]
        server = httpserver.HttpServer(sock, handler)
        answers = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            for data, _ in MALFORMED_HTTP:
                answers.append(await anyio.to_thread.run_sync(exchange, port, data))
            tg.cancel_scope.cancel()
        sock.close()
        return answers

    for (data, expected), answer in zip(MALFORMED_HTTP, anyio.run(main), strict=True):
        assert answer.startswith(expected), (data[:60], answer[:200])


def test_endpoint_restarts_then_stays_down_without_touching_the_supervisor(project: Project) -> None:
    from orchestrator import config
    from orchestrator.daemon.endpoint import bind_listener
    from orchestrator.daemon.health import run_endpoint
    from orchestrator.engine.supervisor import Supervisor

    project.write(STEADY)
    sup = Supervisor(config.load([project.file]))
    attempts: list[float] = []

    async def broken(app: Any, sock: socket.socket) -> None:
        attempts.append(time.monotonic())
        raise ValueError("the endpoint is broken")

    async def main() -> bool:
        sock = bind_listener("127.0.0.1", 0)
        try:
            async with anyio.create_task_group() as tg:  # stands for the supervisor's task group
                tg.start_soon(run_endpoint, sup, sock, broken, (0.01, 0.01))
            return True  # the group ended normally: nothing escaped
        finally:
            sock.close()

    assert anyio.run(main)
    assert len(attempts) == 3  # first try, then one per restart delay, then down for good
    assert not any(cb.__qualname__.startswith("HealthApp") for cb in sup.on_change)


def test_metrics_exposition_parses_with_the_reference_parser() -> None:
    """Our own Prometheus text (no client library): escaping, counters, cumulative buckets."""
    from prometheus_client.parser import text_string_to_metric_families

    from orchestrator.daemon.health import Exposition, Histogram

    histogram = Histogram((0.5, 1, 2))
    for value in (0.1, 0.7, 0.9, 5.0):
        histogram.observe(value)
    out = Exposition()
    out.family("x_up", "gauge", "Help with \\ and\nnewline.", [({"resource": 'we"ird\\na\nme'}, 1.0)])
    out.family("x_restarts_total", "counter", "Restarts.", [({"resource": "a"}, 3.0)])
    out.histogram("x_seconds", "Durations.", "resource", {"a": histogram})
    families = {f.name: f for f in text_string_to_metric_families(out.text())}
    assert families["x_up"].samples[0].labels == {"resource": 'we"ird\\na\nme'}
    assert families["x_restarts"].type == "counter" and families["x_restarts"].samples[0].value == 3
    buckets = {s.labels["le"]: s.value for s in families["x_seconds"].samples if s.name == "x_seconds_bucket"}
    assert buckets == {"0.5": 1, "1.0": 3, "2.0": 3, "+Inf": 4}
    sums = {s.name: s.value for s in families["x_seconds"].samples if s.name != "x_seconds_bucket"}
    assert sums == {"x_seconds_sum": pytest.approx(6.7), "x_seconds_count": 4}


# ------------------------------------------------------------------ item 5: public text

SECRETS = ("hunter2pw", "FATAL", "probe-arg-SECRET", "probe-output-SECRET", "query-SECRET", "urlpw")


def test_public_outputs_carry_no_output_lines_or_probe_secrets(project: Project) -> None:
    port = free_port()
    project.write(f"""
        [resources.steady]
        command = ["sh", "-c", "echo up; exec sleep 1000"]
        health = {{ probe = "log", pattern = "up" }}
        [resources.crash]
        command = ["sh", "-c", "echo 'FATAL: cannot reach postgres://app:hunter2pw@db/x'; exit 1"]
        health = {{ probe = "log", pattern = "never" }}
        [resources.execprobe]
        command = ["sleep", "1000"]
        start_timeout = "3s"
        health = {{ probe = "exec", command = ["sh", "-c", "echo probe-output-SECRET; exit 1", "probe-arg-SECRET"] }}
        [resources.urlprobe]
        command = ["sleep", "1000"]
        start_timeout = "3s"
        health = {{ probe = "http", url = "http://user:urlpw@127.0.0.1:{port}/h?token=query-SECRET" }}
    """)
    done = project.run("up")
    assert done.returncode == 1, done.stderr
    owner = project.run("status", "--json").stdout
    assert "hunter2pw" in owner  # the owner still sees the whole text
    url = project.health_url()
    public = {
        "/health": httpx.get(url + "/health", timeout=20).text,
        "/readyz?verbose": httpx.get(url + "/readyz?verbose", timeout=20).text,
        "/metrics": httpx.get(url + "/metrics", timeout=20).text,
        "last_start.json": (project.state_dir / "last_start.json").read_text(),
    }
    for where, text in public.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} in {where}: {text[:2000]}"
    readyz = public["/readyz?verbose"]
    assert "[-]crash failed: exited with code 1 before it was ready" in readyz  # still says why
    assert "[-]execprobe failed: not ready after 3s: exec sh exited 1" in readyz
    last = json.loads(public["last_start.json"])
    assert {r["name"]: r["probe"] for r in last["resources"]}["execprobe"] == "exec sh ***"


def test_state_files_are_private(project: Project) -> None:
    project.write(STEADY)
    project.run("up", check=True)
    for name in ("health.addr", "supervisor.pid", "last_start.json"):
        mode = stat.S_IMODE((project.state_dir / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))


@pytest.mark.parametrize(("text", "shown"), [
    ("exited with code 1; last output: FATAL postgres://a:pw@db/x", "exited with code 1"),
    ("exited with code 1; last output: x before it was ready", "exited with code 1 before it was ready"),
    ("exited with code 3; last output: x; restarting in 0.52s", "exited with code 3; restarting in 0.52s"),
    ("restarted 5 times within 60s; giving up (killed by signal 9; last output: pw)",
     "restarted 5 times within 60s; giving up (killed by signal 9)"),
    # output that imitates a suffix cannot smuggle text through
    ("exited with code 1; last output: pw; restarting in 1s; restarting in 0.50s",
     "exited with code 1; restarting in 0.50s"),
    ("exited with code 1; last output: line one\nline two", "exited with code 1"),
    ("unhealthy: 3 probes failed in a row: exec check exited 2: token leaked",
     "unhealthy: 3 probes failed in a row: exec check exited 2"),
    ("not ready after 3s: exec check exited -9: x", "not ready after 3s: exec check exited -9"),
    ("http http://127.0.0.1:8080/h?token=abc 503", "http http://127.0.0.1:8080/h?*** 503"),
    ("http http://127.0.0.1:8080/h?token=abc: connection refused",
     "http http://127.0.0.1:8080/h?***: connection refused"),
    ("(see http://h/x?k=v#f), then", "(see http://h/x?***), then"),
    ("http https://u:p@[::1]:8443/h?a=1&b=2#frag: refused", "http https://***@[::1]:8443/h?***: refused"),
    ("see postgres://app:pw@db:5432/x", "see postgres://***@db:5432/x"),
    ("redis://:pw@127.0.0.1:6379/0 down", "redis://***@127.0.0.1:6379/0 down"),
    ("args --password=hunter2 --api-key='x y' TOKEN=abc", "args --password=*** --api-key=*** TOKEN=***"),
    ("waiting for auth: starting", "waiting for auth: starting"),
    ("127.0.0.1:5432: password authentication failed", "127.0.0.1:5432: password authentication failed"),
    ("http http://127.0.0.1:80/health 200", "http http://127.0.0.1:80/health 200"),
    ("", ""),
])
def test_public_text_family(text: str, shown: str) -> None:
    from orchestrator.infra.exposure import public_text

    assert public_text(text) == shown


def test_public_text_masks_what_the_spec_marks_secret() -> None:
    from orchestrator.infra.exposure import public_text
    from orchestrator.spec import ProbeSpec, ResourceSpec

    spec = ResourceSpec("api", "process", command=("api",),
                        env=(("DB_PASSWORD", "s3cretvalue"), ("MODE", "plain-value")),
                        health=ProbeSpec("exec", command=("/bin/check", "--bearer", "abcdef123")))
    assert public_text("started; waiting for exec /bin/check --bearer abcdef123", spec) == \
        "started; waiting for exec /bin/check ***"
    assert public_text("boom s3cretvalue plain-value", spec) == "boom *** plain-value"
    redis = ResourceSpec("cache", "process", command=("redis",), health=ProbeSpec("redis", password="p4ssword!"))
    assert public_text("AUTH failed for p4ssword!", redis) == "AUTH failed for ***"


# ------------------------------------------------------------------ item 6: request shapes

# Well-formed JSON, but no valid request.
BAD_SHAPES: tuple[object, ...] = (
    {"op": "status", "names": 5}, {"op": "status", "names": "steady"}, {"op": "status", "names": [1]},
    {"op": "status", "names": [["steady"]]}, {"op": "status", "names": {"a": 1}},
    {"op": "up", "files": 5}, {"op": "up", "files": [None]}, {"op": "up", "files": ["a\u0000b"]},
    {"op": "up", "names": [True]}, {"op": "up", "no_deps": "yes"}, {"op": "up", "no_deps": 1},
    {"op": "up", "environ": []}, {"op": "up", "environ": {"A": 1}}, {"op": "up", "environ": {"": "x"}},
    {"op": "up", "environ": {"A=B": "x"}}, {"op": "up", "environ": {"A": None}}, {"op": "up", "environ": "A=1"},
    {"op": "down", "volumes": "no"}, {"op": "down", "names": 0}, {"op": "restart", "names": "steady"},
    {"op": "restart", "names": [3.5]}, {"op": "reload", "files": {}}, {"op": "reload", "environ": [["A", "1"]]},
    {"op": "models", "action": 5}, {"op": "models", "action": "explode"}, {"op": "models", "resource": []},
    {"op": "models", "names": [{}]}, {"op": 5}, {"op": None}, {"op": ["status"]}, {"op": "nope"}, {},
    [], 5, "status", None, True,
)
BAD_REQUESTS: list[bytes] = [json.dumps(r).encode() for r in BAD_SHAPES] + [
    b"[" * 100_000 + b"]" * 100_000,  # json.loads: RecursionError
    b'{"op": "status", "names": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b"\xff\xfe{}",  # not UTF-8
    b'{"op": "status"',  # not JSON
    b"",  # an empty line
    b"NaN",
]


def test_every_control_op_has_one_schema_and_one_handler() -> None:
    from orchestrator.daemon.ops import SCHEMAS
    from orchestrator.daemon.service import Handlers

    assert {n.removeprefix("op_") for n in dir(Handlers) if n.startswith("op_")} == set(SCHEMAS)


def ask(path: Path, line: bytes, timeout: float = 30) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        try:
            sock.sendall(line + b"\n")
        except BrokenPipeError:
            pass  # answered and closed before the whole line was sent (oversized): read the answer
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return [json.loads(part) for part in data.splitlines() if part]


def test_control_requests_of_the_wrong_shape_get_one_clear_error(project: Project) -> None:
    project.write(STEADY)
    project.run("up", check=True)
    control = project.state_dir / "control.sock"
    pid_before = project.rows()["steady"]["pid"]
    for line in BAD_REQUESTS:
        replies = ask(control, line)
        assert len(replies) == 1, (line[:80], replies)
        reply = replies[0]
        assert reply["ok"] is False and reply["exit_code"] == 2, (line[:80], reply)
        assert "\n" not in reply["error"] and len(reply["error"]) < 300, reply
        assert reply["error"].startswith("bad request: "), reply
    oversized = ask(control, b'{"op": "status", "names": ["' + b"x" * (5 * 1024 * 1024) + b'"]}')
    assert oversized[0]["exit_code"] == 2 and "longer than" in oversized[0]["error"]
    good = ask(control, b'{"op": "status", "names": null, "future_key": {"ignored": true}}')
    assert good[0]["ok"] is True
    rows = project.rows()
    assert rows["steady"]["state"] == "ready" and rows["steady"]["pid"] == pid_before
    no_tracebacks(project)


def test_control_requests_of_any_shape_never_hurt_the_supervisor(project: Project) -> None:
    """Random JSON in every field of every op: a clear reply each time, never a crash.

    Requests that would change the stack (up, down, restart, reload) are sent only when
    their shape is wrong, so the stack under test stays as it is."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from orchestrator.daemon.ops import SCHEMAS, problem_with

    project.write(STEADY)
    project.run("up", check=True)
    control = project.state_dir / "control.sock"
    pid_before = project.rows()["steady"]["pid"]
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12)
    requests = st.sampled_from(sorted(SCHEMAS)).flatmap(lambda op: st.fixed_dictionaries(
        {"op": st.just(op)}, optional=dict.fromkeys(SCHEMAS[op], json_values)))

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(request=requests)
    def check(request: dict[str, Any]) -> None:
        wrong = problem_with(request)
        if request["op"] in ("up", "down", "restart", "reload") and wrong is None:
            return
        replies = ask(control, json.dumps(request).encode())
        assert replies, request
        last = replies[-1]
        if wrong is not None:
            assert last["ok"] is False and last["exit_code"] == 2 and last["error"].startswith("bad request"), last
        else:
            assert last.get("ok") is True or last["exit_code"] in (1, 2), last

    check()
    row = project.rows()["steady"]
    assert row["state"] == "ready" and row["pid"] == pid_before
    no_tracebacks(project)


def test_control_client_that_sends_nothing_is_told_and_closed(project: Project) -> None:
    from orchestrator.infra.control import REQUEST_TIMEOUT

    project.write(STEADY)
    project.run("up", check=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(REQUEST_TIMEOUT + 30)
        sock.connect(str(project.state_dir / "control.sock"))
        sock.sendall(b'{"op": "status"')  # and never the newline
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert json.loads(data)["exit_code"] == 2
    assert project.run("status").returncode == 0


# ------------------------------------------------------------------ item 21: where it listens


@pytest.fixture
def second_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    path = tmp_path_factory.mktemp("second")
    path.chmod(0o755)
    proj = Project(path)
    yield proj
    if (proj.state_dir / "supervisor.pid").exists():
        proj.run("down", timeout=120)


def without_health_listen(project: Project, body: str) -> None:
    project.write(f'[project]\nname = "t{os.urandom(4).hex()}"\nstate_dir = ".state"\n' + body)


def test_projects_without_health_listen_each_get_a_free_port(project: Project, second_project: Project) -> None:
    for proj in (project, second_project):
        without_health_listen(proj, STEADY)
        proj.run("up", check=True)
    urls = [p.health_url() for p in (project, second_project)]
    assert urls[0] != urls[1]
    for url in urls:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert httpx.get(url + "/livez", timeout=20).text == "ok"
    shown = project.run("status")
    assert f"health endpoint: {urls[0]}/" in shown.stdout
    doc = json.loads(project.run("status", "--json").stdout)
    assert doc["health_endpoint"]["address"] == urls[0].removeprefix("http://")


def test_up_with_a_taken_health_port_runs_and_says_so(project: Project) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        project.write(f'[project]\nname = "t{os.urandom(4).hex()}"\nstate_dir = ".state"\n'
                      f'health_listen = "127.0.0.1:{port}"\n' + STEADY)
        done = project.run("up")
        assert done.returncode == 0, done.stderr
        shown = project.run("status").stdout
        assert f"health endpoint: not listening: cannot listen on 127.0.0.1:{port}" in shown
        doc = json.loads(project.run("status", "--json").stdout)
        assert doc["health_endpoint"]["address"] is None and "in use" in doc["health_endpoint"]["error"]


def test_daemon_that_cannot_bind_its_health_port_exits_with_one_line(project: Project) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        project.write(f'[project]\nname = "t{os.urandom(4).hex()}"\nstate_dir = ".state"\n'
                      f'health_listen = "127.0.0.1:{port}"\n' + STEADY)
        done = project.run("daemon", timeout=60)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (project.state_dir / "running.json").exists() or \
        not json.loads((project.state_dir / "running.json").read_text())  # nothing was started


def test_daemon_with_a_malformed_health_listen_option_is_a_usage_error(project: Project) -> None:
    project.write(STEADY)
    done = project.run("daemon", "--health-listen", "nonsense", timeout=60)
    assert done.returncode == 2 and "--health-listen" in done.stderr and "Traceback" not in done.stderr


def test_daemon_defaults_to_port_9500_and_up_to_a_free_port(project: Project) -> None:
    from orchestrator import config
    from orchestrator.daemon.endpoint import health_listen

    without_health_listen(project, STEADY)
    spec = config.load([project.file])
    assert spec.health_listen is None
    assert health_listen(spec, None, "daemon") == "127.0.0.1:9500"
    assert health_listen(spec, None, "detached") == "127.0.0.1:0"
    assert health_listen(spec, None, "foreground") == "127.0.0.1:0"
    assert health_listen(spec, "127.0.0.1:9999", "detached") == "127.0.0.1:9999"
