"""The HTTP probe against real sockets: keep-alive, servers that close, chunked bodies,
credentials in the URL, TLS. A probe that fails spuriously restarts healthy services."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import anyio
import pytest

from orchestrator.probes import ProbeContext, make_probe, run_once
from orchestrator.probes.http import HttpProbe
from orchestrator.spec import ProbeSpec
from tests.conftest import close_listener, free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Reply = Callable[[bytes], bytes | None]  # request head -> raw response (None: close)


class RawServer:
    """A scripted HTTP server on a real socket, counting connections and keeping requests."""

    def __init__(self, reply: Reply, close_after_each: bool = False,
                 wrap: ssl.SSLContext | None = None) -> None:
        self.reply, self.close_after_each, self.wrap = reply, close_after_each, wrap
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []
        self._conns: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.wrap is not None:
                conn = self.wrap.wrap_socket(conn, server_side=True)
            self._conns.append(conn)
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                self.requests.append(head)
                response = self.reply(head)
                if response is None:
                    return
                conn.sendall(response)
                if self.close_after_each:
                    return
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def close_idle_connections(self) -> None:
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        close_listener(self.sock, self._acceptor)  # shutdown first: close() leaves accept() listening
        self.close_idle_connections()


def response(code: int, body: bytes = b"ok", extra: str = "") -> bytes:
    return f"HTTP/1.1 {code} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


class Serve(Protocol):
    """The `serve` fixture: start a RawServer, closed when the test ends."""

    def __call__(self, reply: Reply, close_after_each: bool = False,
                 wrap: ssl.SSLContext | None = None) -> RawServer: ...


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[RawServer] = []

    def start(reply: Reply, close_after_each: bool = False, wrap: ssl.SSLContext | None = None) -> RawServer:
        server = RawServer(reply, close_after_each=close_after_each, wrap=wrap)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


async def checks(spec: ProbeSpec, count: int) -> list[tuple[bool, str]]:
    probe = make_probe(spec, ProbeContext())
    try:
        results = [await run_once(probe, spec.timeout) for _ in range(count)]
    finally:
        await probe.aclose()
    return [(r.ok, r.message) for r in results]


async def test_one_connection_serves_every_check(serve: Serve) -> None:
    server = serve(lambda head: response(503 if len(server.requests) < 3 else 200))
    results = await checks(ProbeSpec("http", url=f"http://127.0.0.1:{server.port}/ready?x=1"), 5)
    assert [ok for ok, _ in results] == [False, False, True, True, True]
    assert results[0][1] == f"http http://127.0.0.1:{server.port}/ready?x=1 503"
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /ready?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}".encode() in server.requests[0]


async def test_server_closing_an_idle_connection_is_not_a_failure(serve: Serve) -> None:
    server = serve(lambda head: response(200))
    spec = ProbeSpec("http", url=f"http://127.0.0.1:{server.port}/")
    probe = make_probe(spec, ProbeContext())
    try:
        assert (await run_once(probe, 1.0)).ok
        server.close_idle_connections()  # e.g. the server's keep-alive timeout
        await anyio.sleep(0.05)
        result = await run_once(probe, 1.0)
        assert result.ok, result.message
        assert server.connections == 2
    finally:
        await probe.aclose()


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\n\r\nno length, the end is the close",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200000,
])
async def test_any_response_framing_gives_the_status(serve: Serve, reply: bytes) -> None:
    server = serve(lambda head: reply, close_after_each=b"close" in reply or b"1.0" in reply)
    results = await checks(ProbeSpec("http", url=f"http://127.0.0.1:{server.port}/"), 3)
    assert all(ok for ok, _ in results), results


async def test_not_http_and_silent_servers_fail_clearly(serve: Serve) -> None:
    server = serve(lambda head: b"+PONG\r\n\r\n")
    [(ok, message)] = await checks(ProbeSpec("http", url=f"http://127.0.0.1:{server.port}/"), 1)
    assert not ok and "not an HTTP response" in message
    closer = serve(lambda head: None)
    [(ok, message)] = await checks(ProbeSpec("http", url=f"http://127.0.0.1:{closer.port}/"), 1)
    assert not ok and message.endswith("connection closed without a response")
    [(ok, message)] = await checks(ProbeSpec("http", url=f"http://127.0.0.1:{free_port()}/"), 1)
    assert not ok and message.endswith("connection refused")


async def test_a_check_cut_off_by_its_timeout_leaves_the_next_one_clean(serve: Serve) -> None:
    slow = threading.Event()

    def reply(head: bytes) -> bytes:
        if not slow.is_set():
            slow.set()
            threading.Event().wait(0.5)  # answers the first request after the probe gave up
            return response(500)
        return response(200)

    server = serve(reply)
    spec = ProbeSpec("http", url=f"http://127.0.0.1:{server.port}/", timeout=0.2)
    results = await checks(spec, 2)
    assert results[0] == (False, "probe timed out after 0.2s")
    assert results[1][0], results  # not the first request's late 500


async def test_credentials_are_sent_but_never_shown(serve: Serve) -> None:
    server = serve(lambda head: response(401 if b"Authorization: Basic dXNlcjpzM2NyZXQh" not in head else 200))
    spec = ProbeSpec("http", url=f"http://user:s3cret%21@127.0.0.1:{server.port}/health")
    [(ok, message)] = await checks(spec, 1)
    assert ok, message
    assert "s3cret" not in message and message == f"http http://127.0.0.1:{server.port}/health 200"
    assert spec.describe() == f"http http://127.0.0.1:{server.port}/health"


async def test_https_verifies_the_certificate(serve: Serve, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    server = serve(lambda head: response(200), wrap=server_context)
    url = f"https://localhost:{server.port}/"
    [(ok, message)] = await checks(ProbeSpec("http", url=url), 1)
    assert not ok and "TLS certificate not accepted" in message
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # how a user trusts a private CA
    [(ok, message)] = await checks(ProbeSpec("http", url=url), 1)
    assert ok, message


def test_ipv6_host_header() -> None:
    probe = HttpProbe(ProbeSpec("http", url="http://[::1]:8080/x"))
    assert probe.target.host == "::1" and b"Host: [::1]:8080\r\n" in probe.target.request


def test_non_ascii_path_is_percent_encoded() -> None:
    probe = HttpProbe(ProbeSpec("http", url="http://127.0.0.1:8080/sant\u00e9/\u2713?q=a%20b&x=%2F"))
    assert probe.target.request.startswith(b"GET /sant%C3%A9/%E2%9C%93?q=a%20b&x=%2F HTTP/1.1\r\n")
    named = HttpProbe(ProbeSpec("http", url="http://b\u00fccher.example/"))
    assert b"Host: xn--bcher-kva.example\r\n" in named.target.request

