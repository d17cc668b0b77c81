from __future__ import annotations

import anyio

from orchestrator.probes import ProbeResult
from orchestrator.spec import ProbeSpec


def command(*parts: str) -> bytes:
    out = f"*{len(parts)}\r\n".encode()
    for part in parts:
        raw = part.encode()
        out += b"$%d\r\n%s\r\n" % (len(raw), raw)
    return out


class RedisProbe:
    """Ready when PING answers PONG. While loading its dataset Redis answers -LOADING."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec

    async def _reply(self, stream: anyio.abc.ByteStream) -> str:
        data = b""
        while not data.endswith(b"\r\n"):
            data += await stream.receive(512)
            if len(data) > 4096:
                break
        return data.split(b"\r\n", 1)[0].decode(errors="replace")

    async def check(self) -> ProbeResult:
        assert self.spec.port is not None
        where = f"redis {self.spec.host}:{self.spec.port}"
        stream = await anyio.connect_tcp(self.spec.host, self.spec.port)
        try:
            try:
                if self.spec.password:
                    await stream.send(command("AUTH", self.spec.password))
                    reply = await self._reply(stream)
                    if not reply.startswith("+"):
                        return ProbeResult(False, f"{where}: AUTH failed: {reply.lstrip('-')}")
                await stream.send(command("PING"))
                reply = await self._reply(stream)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return ProbeResult(False, f"{where}: connection closed")
            if reply == "+PONG":
                return ProbeResult(True, f"{where} PONG")
            return ProbeResult(False, f"{where}: {reply.lstrip('-+') or 'no reply'}")
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        return None
