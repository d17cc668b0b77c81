"""The control API: JSON lines over a unix socket the user owns (mode 0600; a system
daemon's: 0660 for its control group, see daemons.py).

The server side runs inside the supervisor; the client side is plain blocking sockets so
the CLI starts fast and never imports the event loop for a one-shot question.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from orchestrator.errors import SupervisorGone, SupervisorUnavailable, VrooliError

MAX_LINE = 4 * 1024 * 1024

Handler = Callable[[dict[str, Any], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


class ControlError(SupervisorUnavailable):
    """The control socket cannot be reached or gives no usable answer (exit 3, one line)."""


class NotListening(ControlError):
    """Nothing listens on the socket: nothing was sent (so asking another way is safe)."""


class UntrustedSocket(VrooliError):
    """The control socket is served by another user: we send it nothing (not even a ping)."""


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket, as the kernel saw it."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13 (asm-generic); Python 3.11 lacks the name
MAX_PEER_GROUPS = 256  # getsockopt's buffer is at most 1024 bytes in CPython
DENIED = "denied"  # the kind of a refusal reply: the client raises AccessDenied


class AccessDenied(VrooliError):
    """The supervisor refuses us, or its socket's mode does: not a member of its control group."""


def control_gid() -> int | None:
    """The group whose members may use this supervisor's socket besides root and its own
    user: set by `vrooli daemon` (daemons.py), None for a user's own supervisor."""
    return _control_gid[0]


_control_gid: list[int | None] = [None]


def admit_group(gid: int | None) -> None:
    _control_gid[0] = gid


def peer_groups(sock: socket.socket, pid: int) -> set[int] | None:
    """The peer's supplementary groups, as the kernel recorded them when it connected
    (SO_PEERGROUPS: no race with a process that exits and whose pid is reused, unlike
    reading /proc/PID/status). /proc only on a kernel without it (before 4.13)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * MAX_PEER_GROUPS)
        return set(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    except OSError as exc:
        if exc.errno == errno.ERANGE:
            return None  # more groups than we ask for: refused, with the reason logged by the caller
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return None


def peer_refusal(sock: socket.socket) -> str | None:
    """Why the peer may not use this socket, or None: root, our own user, and (for the
    system daemon) members of its control group, by primary or supplementary group."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    if uid in (0, os.getuid()):
        return None
    group = control_gid()
    if group is not None and (gid == group or group in (peer_groups(sock, pid) or set())):
        return None
    who = f"uid {uid} ({user_name(uid)})"
    if group is None:
        return f"permission denied: {who} is neither root nor the supervisor's user"
    return f"permission denied: {who} is neither root, the supervisor's user, nor in group {_group_name(group)}"


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def user_name(uid: int) -> str:
    """The name of `uid`, for messages that say who someone is."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "no such user"


# ------------------------------------------------------------------------ server

REQUEST_TIMEOUT = 10.0  # seconds a client has to send its one request line


async def serve(path: Path, handler: Handler, *, task_status: Any) -> None:
    """Serve the control socket until cancelled.

    Nothing a client sends can end this loop or the task group it runs in: a line that is
    not a well-formed request gets an error reply (exit code 2), a handler's unexpected
    exception an error reply and one log line per kind, and running out of file descriptors
    in accept() a back-off (fdlimits.py) instead of a crash that would stop every resource.
    """
    import anyio

    from orchestrator.infra.fdlimits import CLIENT_GONE, OUT_OF_FDS, AcceptPressure, LogOnce, os_error_of, where_raised
    from orchestrator.infra.logger import get_logger

    log = get_logger("vrooli.control")
    if path.exists() or path.is_symlink():
        path.unlink()  # stale: we hold the supervisor lock, so no one else serves here
    old_umask = os.umask(0o177)
    try:
        listener = await anyio.create_unix_listener(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    pressure, errors = AcceptPressure(log, "control socket"), LogOnce(log)

    async def connection(stream: Any) -> None:
        try:
            async with stream:
                await _converse(stream, handler, errors)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return  # the client went away (Ctrl-C on `vrooli up`): nothing to do
        except Exception as exc:  # a bug: contain it to this one request
            errors.error(type(exc).__name__, "control request failed", error=repr(exc)[:300],
                         where=where_raised(exc))

    async with listener, anyio.create_task_group() as tg:
        task_status.started()
        while True:
            try:
                stream = await listener.accept()
            except (anyio.BrokenResourceError, OSError) as exc:
                cause = os_error_of(exc)
                if cause is not None and cause.errno in OUT_OF_FDS:
                    await pressure.failed(cause)
                    continue
                if cause is not None and cause.errno in CLIENT_GONE:
                    continue
                raise
            pressure.accepted()
            tg.start_soon(connection, stream)


async def _converse(stream: Any, handler: Handler, errors: Any) -> None:
    import anyio
    from anyio.abc import SocketAttribute
    from anyio.streams.buffered import BufferedByteReceiveStream

    from orchestrator.infra.fdlimits import where_raised

    async def reply(message: dict[str, Any]) -> None:
        await stream.send(json.dumps(message, default=str).encode() + b"\n")

    refusal = peer_refusal(stream.extra(SocketAttribute.raw_socket))
    denied = {"ok": False, "error": refusal, "errors": [refusal], "exit_code": 1, "kind": DENIED}
    reader = BufferedByteReceiveStream(stream)
    with anyio.move_on_after(REQUEST_TIMEOUT) as waited:
        try:
            line = await reader.receive_until(b"\n", MAX_LINE)
        except (anyio.EndOfStream, anyio.IncompleteRead):
            return  # connected and left without asking: the CLI's liveness check does this
        except anyio.DelimiterNotFound:
            await reply(denied if refusal else bad_request(f"request line longer than {MAX_LINE} bytes"))
            await _discard_line(stream)  # closing with unread data would reset, losing the reply
            return
    if refusal is not None:  # answered only now: its line read, our close cannot reset the reply
        await reply(denied)
        return
    if waited.cancelled_caught:
        await reply(bad_request(f"no request line within {REQUEST_TIMEOUT:g}s"))
        return
    request, problem = parse_request(line)
    if problem is not None:
        await reply(bad_request(problem))
        return
    try:
        await handler(request, reply)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, BrokenPipeError, ConnectionResetError):
        raise
    except Exception as exc:
        errors.error(type(exc).__name__, "control request failed", op=str(request.get("op"))[:40],
                     error=repr(exc)[:300], where=where_raised(exc))
        await reply(VrooliError(f"internal error in the supervisor: {type(exc).__name__}; "
                                "see supervisor.log").reply())


async def _discard_line(stream: Any) -> None:
    """Read and drop the rest of an oversized line, for a few seconds at most."""
    import anyio

    with anyio.move_on_after(REQUEST_TIMEOUT):
        try:
            while b"\n" not in await stream.receive():
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return


def parse_request(line: bytes) -> tuple[dict[str, Any], str | None]:
    """Decode one request line; (request, None), or ({}, what is wrong with it).

    Only the encoding is checked here; each op's fields are the handler's (ops.py)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return {}, f"request is not valid UTF-8 (byte {exc.start})"
    try:
        request = json.loads(text)
    except RecursionError:
        return {}, "request is nested too deeply"
    except ValueError as exc:
        return {}, f"request is not valid JSON: {str(exc)[:100]}"
    if not isinstance(request, dict):
        return {}, "a request must be a JSON object"
    return request, None


def bad_request(problem: str) -> dict[str, Any]:
    return {"ok": False, "error": f"bad request: {problem}", "errors": [f"bad request: {problem}"],
            "exit_code": 2, "kind": "usage"}


# ------------------------------------------------------------------------ client


class Client:
    def __init__(self, path: Path, timeout: float | None = 5.0, daemon_uid: int | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self.daemon_uid = daemon_uid  # a system daemon's user (daemons.py), trusted as its server
        # Set by spawn.ensure_supervisor: the supervisor answered that it idles, warm (warm.py).
        self.warm_idle = False
        # Set by spawn for a supervisor this command forked: its `up` request carries it.
        self.claim: str | None = None

    def stream(self, request: dict[str, Any], timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Send one request; yield reply lines until the server closes."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise NotListening(f"no supervisor is listening on {self.path}") from exc
            except PermissionError as exc:
                raise AccessDenied(f"permission denied: {self.path} is for root and the members of its group "
                                   f"only (you are uid {os.getuid()}); nothing was sent") from exc
            except OSError as exc:
                raise ControlError(f"cannot reach the supervisor at {self.path}: {exc.strerror}") from exc
            self._check_peer(sock)
            try:
                sock.sendall(json.dumps(request).encode() + b"\n")
            except OSError as exc:
                raise self._gone(exc) from exc
            sock.settimeout(timeout)
            yield from self._replies(sock)
        finally:
            sock.close()

    def _replies(self, sock: socket.socket) -> Iterator[dict[str, Any]]:
        buffer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                yield {"tick": True}
                continue
            except OSError as exc:
                raise self._gone(exc) from exc
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line:
                    try:
                        message = json.loads(line)
                    except ValueError as exc:
                        raise ControlError(f"the supervisor at {self.path} sent a reply that is not JSON") from exc
                    if isinstance(message, dict) and message.get("kind") == DENIED:
                        raise AccessDenied(str(message.get("error") or "permission denied"))
                    yield message

    def _gone(self, exc: OSError | None = None) -> SupervisorGone:
        how = f" ({exc.strerror or type(exc).__name__})" if exc is not None else ""
        return SupervisorGone(f"the supervisor went away in the middle of the command{how}; see its supervisor.log")

    def _check_peer(self, sock: socket.socket) -> None:
        """Talk only to a supervisor run by this user or root: a socket planted by someone
        else would otherwise receive our requests (the files we use, the variables they
        reference) and could answer anything."""
        uid = peer_uid(sock)
        if uid not in (0, os.getuid(), self.daemon_uid):
            raise UntrustedSocket(
                f"refusing the control socket {self.path}: it is served by uid {uid} ({user_name(uid)}), "
                f"not by you or root; nothing was sent (remove it if it is not yours)")

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        last: dict[str, Any] = {}
        for message in self.stream(request, timeout=self.timeout):
            if message.get("tick"):
                raise ControlError("the supervisor did not answer in time")
            last = message
        if "ok" not in last:  # closed before its answer (a progress line is not one)
            raise self._gone()
        return last

    def alive(self) -> bool:
        try:
            return bool(self.call({"op": "ping"}).get("ok"))
        except (SupervisorUnavailable, OSError, ValueError):
            return False
