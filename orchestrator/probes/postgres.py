"""Postgres readiness over the wire protocol, like pg_isready, with no client library.

An open port is not enough: while it recovers or starts, Postgres accepts connections
and answers "the database system is starting up" (SQLSTATE 57P03).
"""

from __future__ import annotations

import struct

import anyio
from anyio.abc import ByteStream

from orchestrator.probes import ProbeResult
from orchestrator.spec import ProbeSpec

PROTOCOL_3_0 = 196608
NOT_READY_STATES = {"57P03": "starting up", "57P01": "shutting down"}


def startup_message(user: str, database: str) -> bytes:
    body = struct.pack("!I", PROTOCOL_3_0)
    for key, value in (("user", user), ("database", database), ("application_name", "vrooli-probe")):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def parse_error_fields(payload: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


async def _read_exactly(stream: ByteStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += await stream.receive(size - len(data))
    return data


class PostgresProbe:
    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec

    async def check(self) -> ProbeResult:
        assert self.spec.port is not None
        where = f"postgres {self.spec.host}:{self.spec.port}"
        stream = await anyio.connect_tcp(self.spec.host, self.spec.port)
        try:
            await stream.send(startup_message(self.spec.user, self.spec.database or self.spec.user))
            try:
                header = await _read_exactly(stream, 5)
                kind, length = chr(header[0]), struct.unpack("!I", header[1:])[0]
                payload = await _read_exactly(stream, min(length - 4, 8192))
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return ProbeResult(False, f"{where}: connection closed during startup")
            if kind == "R":
                # An authentication request (or AuthenticationOk): the server takes sessions.
                # Hanging up here (rather than sending Terminate mid-authentication) is
                # what Postgres treats as a silent EOF: no "expected SASL response" noise.
                return ProbeResult(True, f"{where} accepts connections")
            if kind == "E":
                fields = parse_error_fields(payload)
                code, message = fields.get("C", ""), fields.get("M", "error")
                if code in NOT_READY_STATES or code.startswith("08"):
                    return ProbeResult(False, f"{where}: {message}")
                # Wrong role, missing database, too many clients: the server is up and
                # answering sessions, which is what readiness means (pg_isready agrees).
                return ProbeResult(True, f"{where} is up ({message})")
            return ProbeResult(False, f"{where}: unexpected reply {kind!r}")
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        return None
