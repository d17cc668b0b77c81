from __future__ import annotations

import anyio

from orchestrator.probes import ProbeResult
from orchestrator.spec import ProbeSpec


class TcpProbe:
    """Ready when a TCP connection is accepted. Cheap, but says nothing of the protocol."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec

    async def check(self) -> ProbeResult:
        assert self.spec.port is not None
        stream = await anyio.connect_tcp(self.spec.host, self.spec.port)
        await stream.aclose()
        return ProbeResult(True, f"tcp {self.spec.host}:{self.spec.port} accepts connections")

    async def aclose(self) -> None:
        return None
