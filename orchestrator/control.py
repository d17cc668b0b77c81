"""The control API: JSON lines over a unix socket the user owns (mode 0600).

The server side runs inside the supervisor; the client side is plain blocking sockets so
the CLI starts fast and never imports the event loop for a one-shot question.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from orchestrator.errors import VrooliError

MAX_LINE = 4 * 1024 * 1024

Handler = Callable[[dict[str, Any], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


class ControlError(Exception):
    pass


class UntrustedSocket(VrooliError):
    """The control socket is served by another user: we send it nothing (not even a ping)."""


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket, as the kernel saw it."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "no such user"


# ------------------------------------------------------------------------ server


async def serve(path: Path, handler: Handler, *, task_status: Any) -> None:
    import anyio
    from anyio.abc import SocketAttribute
    from anyio.streams.buffered import BufferedByteReceiveStream

    if path.exists() or path.is_symlink():
        path.unlink()  # stale: we hold the supervisor lock, so no one else serves here
    old_umask = os.umask(0o177)
    try:
        listener = await anyio.create_unix_listener(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)

    async def connection(stream: Any) -> None:
        async with stream:
            raw = stream.extra(SocketAttribute.raw_socket)
            creds = raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", creds)
            if uid not in (0, os.getuid()):
                return
            reader = BufferedByteReceiveStream(stream)

            async def reply(message: dict[str, Any]) -> None:
                await stream.send(json.dumps(message, default=str).encode() + b"\n")

            try:
                line = await reader.receive_until(b"\n", MAX_LINE)
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("request must be an object")
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound, ValueError):
                return
            try:
                await handler(request, reply)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, BrokenPipeError):
                return  # the client went away (Ctrl-C on `vrooli up`): nothing to do

    async with listener:
        task_status.started()
        await listener.serve(connection)


# ------------------------------------------------------------------------ client


class Client:
    def __init__(self, path: Path, timeout: float | None = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def stream(self, request: dict[str, Any], timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Send one request; yield reply lines until the server closes."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise ControlError(f"no supervisor is listening on {self.path}") from exc
            except OSError as exc:
                raise ControlError(f"cannot reach the supervisor at {self.path}: {exc.strerror}") from exc
            self._check_peer(sock)
            sock.sendall(json.dumps(request).encode() + b"\n")
            sock.settimeout(timeout)
            buffer = b""
            while True:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    yield {"tick": True}
                    continue
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line:
                        yield json.loads(line)
        finally:
            sock.close()

    def _check_peer(self, sock: socket.socket) -> None:
        """Talk only to a supervisor run by this user or root: a socket planted by someone
        else would otherwise receive our requests (the files we use, the variables they
        reference) and could answer anything."""
        uid = peer_uid(sock)
        if uid not in (0, os.getuid()):
            raise UntrustedSocket(
                f"refusing the control socket {self.path}: it is served by uid {uid} ({_user_name(uid)}), "
                f"not by you or root; nothing was sent (remove it if it is not yours)")

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        last: dict[str, Any] = {}
        for message in self.stream(request, timeout=self.timeout):
            if message.get("tick"):
                raise ControlError("the supervisor did not answer in time")
            last = message
        if not last:
            raise ControlError("the supervisor closed the connection without answering")
        return last

    def alive(self) -> bool:
        try:
            return bool(self.call({"op": "ping"}).get("ok"))
        except (ControlError, OSError, ValueError):
            return False
