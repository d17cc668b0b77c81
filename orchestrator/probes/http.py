from __future__ import annotations

import httpx

from orchestrator.probes import ProbeResult
from orchestrator.spec import ProbeSpec


class HttpProbe:
    """Ready on an expected status (200-399 unless `expect_status` says otherwise)."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec
        # One client per probe keeps the connection alive between checks; no env proxies,
        # a health check must reach the local service directly.
        self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                         timeout=spec.timeout)

    async def check(self) -> ProbeResult:
        assert self.spec.url is not None
        try:
            response = await self._client.get(self.spec.url)
        except httpx.TransportError as exc:
            return ProbeResult(False, f"http {self.spec.url}: {_transport_reason(exc)}")
        code = response.status_code
        ok = code in self.spec.expect_status if self.spec.expect_status else 200 <= code < 400
        return ProbeResult(ok, f"http {self.spec.url} {code}")

    async def aclose(self) -> None:
        await self._client.aclose()


def _transport_reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection closed without a response"
    return str(exc) or type(exc).__name__
