"""HTTP probe: a minimal HTTP/1.1 GET over one kept-alive connection.

Not httpx: a probe needs the status line and nothing else, and while a stack starts the
supervisor sends one every 10-25 ms per resource. httpx costs ~0.55 ms of CPU per request
and ~80 ms to import; this costs ~0.08 ms and nothing to import, CPU that the services
starting on the same cores get instead (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import ssl

import anyio
from anyio.abc import ByteStream

from orchestrator.errors import UrlError
from orchestrator.probes import ProbeResult, _os_error
from orchestrator.probes.url import Target, check_host
from orchestrator.spec import ProbeSpec

__all__ = ["HttpProbe", "Target", "UrlError", "check_host"]

MAX_HEAD = 64 * 1024  # a status line and headers beyond this are not a health answer
MAX_KEPT_BODY = 64 * 1024  # larger bodies are not read; the connection is dropped instead


class HttpProbe:
    """Ready on an expected status (200-399 unless `expect_status` says otherwise).

    Redirects are not followed: a 3xx already says the server is answering.
    """

    def __init__(self, spec: ProbeSpec) -> None:
        assert spec.url is not None
        self.spec = spec
        self.target = Target.parse(spec.url)
        self._stream: ByteStream | None = None
        self._buffer = b""
        self._tls_context: ssl.SSLContext | None = None

    async def check(self) -> ProbeResult:
        shown = self.target.shown
        reused = self._stream is not None
        try:
            answer = await self._exchange()
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, ssl.SSLError) as exc:
            await self._drop()
            if reused and isinstance(exc, anyio.EndOfStream | anyio.BrokenResourceError | ConnectionResetError):
                # The server closed the idle kept-alive connection since the last check
                # (an idle timeout, a restart): that says nothing about its health now.
                return await self.check()
            return ProbeResult(False, f"http {shown}: {_reason(exc)}")
        except BaseException:
            await self._drop()  # cancelled (the probe timed out) mid-response: start clean
            raise
        if isinstance(answer, str):  # the peer answered, but not with HTTP/1.x
            await self._drop()
            return ProbeResult(False, f"http {shown}: {answer}")
        code = answer
        ok = code in self.spec.expect_status if self.spec.expect_status else 200 <= code < 400
        return ProbeResult(ok, f"http {shown} {code}")

    async def _exchange(self) -> int | str:
        """The status code; or, when the peer answered but not with HTTP/1.x, what it did."""
        if self._stream is None:
            self._stream = await self._connect()
            self._buffer = b""
        await self._stream.send(self.target.request)
        head = await self._read_head()
        if head is None:
            return "response headers too large"
        lines = head.split(b"\r\n")
        status = lines[0].split(None, 2)
        if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or not status[1].isdigit():
            return f"not an HTTP response: {lines[0][:60]!r}"
        code = int(status[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        await self._finish_body(code, status[0], headers)
        return code

    async def _read_head(self) -> bytes | None:
        """The status line and headers; None if they grow past MAX_HEAD."""
        assert self._stream is not None
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > MAX_HEAD:
                return None
            self._buffer += await self._stream.receive()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        return head

    async def _finish_body(self, code: int, version: bytes, headers: dict[bytes, bytes]) -> None:
        """Read the body if that keeps the connection usable; otherwise drop the connection."""
        keep = (headers.get(b"connection") != b"close" and version != b"HTTP/1.0"
                and b"transfer-encoding" not in headers)
        declared = b"0" if code in (204, 304) or 100 <= code < 200 else headers.get(b"content-length", b"")
        if not keep or not declared.isdigit() or int(declared) > MAX_KEPT_BODY:
            await self._drop()
            return
        length = int(declared)
        assert self._stream is not None
        while len(self._buffer) < length:
            self._buffer += await self._stream.receive()
        self._buffer = self._buffer[length:]

    async def _connect(self) -> ByteStream:
        target = self.target
        if not target.tls:
            return await anyio.connect_tcp(target.host, target.port)
        if self._tls_context is None:  # loading the CA store costs ms: once per probe, not per connection
            self._tls_context = ssl.create_default_context()
        return await anyio.connect_tcp(target.host, target.port, tls=True, ssl_context=self._tls_context,
                                       tls_standard_compatible=False)

    async def _drop(self) -> None:
        stream, self._stream, self._buffer = self._stream, None, b""
        if stream is not None:
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    async def aclose(self) -> None:
        await self._drop()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message}"
    if isinstance(exc, anyio.EndOfStream | anyio.BrokenResourceError | ConnectionResetError):
        return "connection closed without a response"
    if isinstance(exc, OSError):
        return _os_error(exc)
    return str(exc) or type(exc).__name__
