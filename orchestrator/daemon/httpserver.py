"""A small HTTP/1.1 server on anyio + h11, made to live inside the supervisor.

Chosen over uvicorn by measurement (docs/PERFORMANCE.md, "Health endpoint"): it answers
1,000 concurrent requests as well, imports in a fraction of the time, and, unlike driving
uvicorn through its internal methods, lets us bound what a client can hold. h11 does the
parsing (a well-kept HTTP/1.1 state machine); this module only owns sockets and limits.

What it promises the process it runs in, whatever clients do:
- at most `max_connections` open connections. When full, new connections wait in the
  kernel's backlog (no descriptor of ours) until a slot frees, and a connection that has
  waited `evict_after` or more for its request head (an idle keep-alive, a half-sent
  request) is closed to free one. A burst of prompt clients is queued, never dropped; a
  flood of slow ones delays a prompt client by about evict_after per max_connections of
  them ahead of it in the backlog, and never holds descriptors without bound;
- a request head must be complete within `head_timeout` of the connection being accepted
  (or of the previous answer), else the connection is closed;
- an answer must be taken within `send_timeout`, else the connection is closed;
- running out of file descriptors in accept() backs off and retries (fdlimits.py);
- an exception in a handler answers 500 and is logged once per kind; nothing escapes a
  connection's task, so the server's task group only ever ends by cancellation.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import anyio
import h11

from orchestrator.infra.fdlimits import CLIENT_GONE, OUT_OF_FDS, AcceptPressure, LogOnce, where_raised
from orchestrator.infra.logger import get_logger

log = get_logger("vrooli.http")
RECV_SIZE = 65536


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 256
    evict_after: float = 1.0  # a loopback client sends its request within milliseconds
    head_timeout: float = 5.0
    send_timeout: float = 10.0
    handler_timeout: float = 10.0
    max_head_bytes: int = 16 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Response]]


class HttpServer:
    def __init__(self, sock: socket.socket, handler: Handler, limits: Limits | None = None) -> None:
        self._sock = sock
        self._handler = handler
        self._limits = limits or Limits()
        self._open = 0
        # Connections waiting for a request head, and since when; oldest first (dicts keep
        # insertion order, and a connection is re-inserted each time it starts waiting).
        self._waiting: dict[int, tuple[anyio.CancelScope, float]] = {}
        self._slot_freed = anyio.Event()
        self._next_id = 0
        self._pressure = AcceptPressure(log, "health endpoint")
        self._errors = LogOnce(log)

    @property
    def open_connections(self) -> int:
        return self._open

    async def serve(self) -> None:
        self._sock.setblocking(False)
        async with anyio.create_task_group() as tg:
            while True:
                await anyio.wait_readable(self._sock)
                await self._make_room()
                conn = await self._accept()
                if conn is not None:
                    self._open += 1
                    self._next_id += 1
                    tg.start_soon(self._connection, self._next_id, conn)

    async def _make_room(self) -> None:
        """Return once a connection may be accepted (see the module docstring)."""
        while self._open >= self._limits.max_connections:
            freed = self._slot_freed = anyio.Event()
            patience = math.inf
            if self._waiting:
                oldest = next(iter(self._waiting))
                scope, since = self._waiting[oldest]
                patience = since + self._limits.evict_after - time.monotonic()
                if patience <= 0:
                    del self._waiting[oldest]
                    scope.cancel()  # its task closes the connection and sets `freed` soon
                    patience = math.inf
            with anyio.move_on_after(max(0.0, patience)):
                await freed.wait()

    async def _accept(self) -> socket.socket | None:
        try:
            conn, _ = self._sock.accept()
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in OUT_OF_FDS:
                await self._pressure.failed(exc)
                return None
            if exc.errno in CLIENT_GONE:
                return None
            raise
        self._pressure.accepted()
        conn.setblocking(False)
        return conn

    async def _connection(self, key: int, conn: socket.socket) -> None:
        try:
            with conn:
                await self._converse(key, conn)
        except OSError:
            pass  # resets, broken pipes, timeouts: the client's business
        except Exception as exc:
            self._errors.error(type(exc).__name__, "health endpoint connection failed",
                               error=repr(exc)[:300], where=where_raised(exc))
        finally:
            self._waiting.pop(key, None)
            self._open -= 1
            self._slot_freed.set()

    async def _converse(self, key: int, conn: socket.socket) -> None:
        proto = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.max_head_bytes)
        while True:
            try:
                request = await self._read_request(key, conn, proto)
            except h11.RemoteProtocolError as exc:
                await self._send(conn, proto, "GET", _plain(exc.error_status_hint, "bad request\n"), close=True)
                return
            if request is None:
                return
            method = request.method.decode("ascii", "replace")
            target = request.target.decode("ascii", "replace")
            path, _, query = target.partition("?")
            if method not in ("GET", "HEAD"):
                # No body is ever read: answer and close, so leftovers are never parsed.
                await self._send(conn, proto, method, _plain(405, "read-only endpoint: GET only\n",
                                                             (("allow", "GET, HEAD"),)), close=True)
                return
            response = await self._answer(Request(method, path, query))
            await self._send(conn, proto, method, response, close=False)
            if proto.our_state is not h11.DONE or proto.their_state is not h11.DONE:
                return  # the client asked to close, or the cycle cannot go on
            proto.start_next_cycle()

    async def _read_request(self, key: int, conn: socket.socket, proto: h11.Connection) -> h11.Request | None:
        """The next request, or None on EOF, timeout or eviction. A GET's (empty) body is read
        to its end; any other method returns at once, to be refused without reading more."""
        request: h11.Request | None = None
        try:
            with anyio.CancelScope() as evict, anyio.move_on_after(self._limits.head_timeout):
                self._waiting[key] = (evict, time.monotonic())
                while True:
                    event = proto.next_event()
                    if event is h11.NEED_DATA:
                        proto.receive_data(await _recv(conn))
                    elif isinstance(event, h11.Request):
                        request = event
                        if request.method not in (b"GET", b"HEAD"):
                            return request
                    elif isinstance(event, h11.EndOfMessage):
                        return request
                    elif isinstance(event, h11.Data):
                        raise h11.RemoteProtocolError("a GET with a body", error_status_hint=400)
                    else:  # ConnectionClosed
                        return None
            return None
        finally:
            self._waiting.pop(key, None)

    async def _answer(self, request: Request) -> Response:
        try:
            with anyio.fail_after(self._limits.handler_timeout):
                return await self._handler(request)
        except Exception as exc:
            self._errors.error(f"handler {type(exc).__name__}", "health endpoint handler failed",
                               path=request.path[:100], error=repr(exc)[:300], where=where_raised(exc))
            return _plain(500, "internal error; see the supervisor log\n")

    async def _send(self, conn: socket.socket, proto: h11.Connection, method: str, response: Response,
                    close: bool) -> None:
        headers = [("content-type", response.content_type), ("content-length", str(len(response.body))),
                   ("cache-control", "no-store"), *response.headers]
        if close:
            headers.append(("connection", "close"))
        try:
            phrase = HTTPStatus(response.status).phrase.encode()
        except ValueError:
            phrase = b""
        data = proto.send(h11.Response(status_code=response.status, headers=headers, reason=phrase)) or b""
        if method != "HEAD":
            data += proto.send(h11.Data(data=response.body)) or b""
        data += proto.send(h11.EndOfMessage()) or b""
        with anyio.fail_after(self._limits.send_timeout):
            await _sendall(conn, data)


def _plain(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, "text/plain; charset=utf-8", text.encode(), headers)


async def _recv(conn: socket.socket) -> bytes:
    while True:
        try:
            return conn.recv(RECV_SIZE)
        except BlockingIOError:
            await anyio.wait_readable(conn)
        except (ConnectionResetError, ConnectionAbortedError):
            return b""


async def _sendall(conn: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = conn.send(view)
        except BlockingIOError:
            await anyio.wait_writable(conn)
            continue
        view = view[sent:]

