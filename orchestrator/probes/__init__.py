"""Health probes: one small module per kind, all behind the `Probe` protocol.

A probe answers one question once: is the service ready right now? The supervisor owns
the loop (`until_ready`, `run_once`) so every probe gets the same fast start, the same
timeout handling and the same reporting, and a hung probe only ever delays itself.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from orchestrator.spec import ProbeSpec, without_password

FIRST_INTERVAL = 0.01  # seconds; probing starts here and grows to the configured interval
GROWTH = 1.5


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    message: str
    duration: float = 0.0


class Probe(Protocol):
    async def check(self) -> ProbeResult: ...

    async def aclose(self) -> None: ...


ExecInside = Callable[[tuple[str, ...], float], Awaitable[tuple[int, str]]]


class LogWatch(Protocol):
    """A resource's output file, read by the log probe."""

    @property
    def path(self) -> Path: ...


@dataclass
class ProbeContext:
    """What a probe may need from the resource it checks."""

    log: LogWatch | None = None
    exec_inside: ExecInside | None = None
    log_start: int = 0  # only lines written after this counter count
    extra: dict[str, object] = field(default_factory=dict)


def make_probe(spec: ProbeSpec, context: ProbeContext) -> Probe:
    """The probe for `spec`; one that cannot even be built fails every check instead of
    raising, so a bad probe only ever takes its own resource down."""
    try:
        return _build(spec, context)
    except Exception as exc:  # contained: reported as this resource's failure
        return BrokenProbe(spec, unexpected(spec, exc, "cannot be used"))


def _build(spec: ProbeSpec, context: ProbeContext) -> Probe:
    from orchestrator.probes.kinds import KINDS

    kind = KINDS.get(spec.kind)
    if kind is None:
        raise ValueError(f"unknown probe kind {spec.kind!r}")
    return kind.build(spec, context)


async def run_once(probe: Probe, timeout: float) -> ProbeResult:
    """One check, never longer than `timeout`; errors become a failed result."""
    import anyio  # here, not at the top: loading a config imports this package (kinds.py)

    started = time.monotonic()
    try:
        with anyio.fail_after(timeout):
            result = await probe.check()
    except TimeoutError:
        return ProbeResult(False, f"probe timed out after {timeout:g}s", time.monotonic() - started)
    except OSError as exc:
        return ProbeResult(False, _os_error(exc), time.monotonic() - started)
    except Exception as exc:  # a probe's bug must not take the supervisor down
        spec = getattr(probe, "spec", None)
        message = unexpected(spec if isinstance(spec, ProbeSpec) else None, exc, "failed unexpectedly",
                             log_key=id(probe))
        return ProbeResult(False, message, time.monotonic() - started)
    return ProbeResult(result.ok, result.message, time.monotonic() - started)


async def until_ready(probe: Probe, spec: ProbeSpec,
                      on_result: Callable[[ProbeResult], None]) -> ProbeResult:
    """Check at once, then every 10 ms growing to `spec.interval`, until a check passes.

    Starting fast and backing off means readiness is noticed within milliseconds for
    quick services while a slow starter is not hammered.
    """
    import anyio

    delay = FIRST_INTERVAL
    while True:
        result = await run_once(probe, spec.timeout)
        on_result(result)
        if result.ok:
            return result
        await anyio.sleep(min(delay, spec.interval))
        delay *= GROWTH


class BrokenProbe:
    """Stands in for a probe that could not be built: every check fails with the reason."""

    def __init__(self, spec: ProbeSpec, message: str) -> None:
        self.spec = spec
        self.message = message

    async def check(self) -> ProbeResult:
        return ProbeResult(False, self.message)

    async def aclose(self) -> None:
        return None


_logged: set[tuple[int, str]] = set()  # (probe, exception type) already logged
_LOGGED_MAX = 4096  # ids are reused as probes come and go: forget them all now and then


def unexpected(spec: ProbeSpec | None, exc: Exception, what: str, log_key: int | None = None) -> str:
    """A failed check's message for an exception no probe expects, logged once per probe.

    The exception's own text is left out whenever the probe holds a secret (a password in
    the URL or the `password` key): parsers quote the piece they choke on, and that piece
    can be part of the password.
    """
    kind = spec.kind if spec is not None else "probe"
    text = " ".join(str(exc).split())[:200]
    if getattr(exc, "shows_no_secret", False):  # written to be shown (UrlError)
        message = f"{kind} probe {what}: {text}"
    else:
        if spec is None or _has_secret(spec) or not text:
            text = type(exc).__name__
        else:
            text = f"{type(exc).__name__}: {text}"
        message = f"{kind} probe {what}: {text} (at {_raised_at(exc)})"
    key = (log_key if log_key is not None else id(spec), type(exc).__name__)
    if key not in _logged:
        if len(_logged) >= _LOGGED_MAX:
            _logged.clear()
        _logged.add(key)
        from orchestrator.infra.logger import get_logger

        get_logger("vrooli.probes").error("probe error contained", probe=kind, reason=message)
    return message


def _has_secret(spec: ProbeSpec) -> bool:
    return bool(spec.password) or without_password(spec.url or "") != (spec.url or "")


def _raised_at(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "unknown"
    return f"{tb.tb_frame.f_code.co_filename.rpartition('/')[2]}:{tb.tb_lineno}"


def _os_error(exc: OSError) -> str:
    # anyio wraps per-address failures ("all connection attempts failed"): say the cause.
    cause = exc.__cause__
    if isinstance(cause, OSError):
        return _os_error(cause)
    inner = [e for e in getattr(exc, "exceptions", []) if isinstance(e, OSError)]
    if inner:
        return _os_error(inner[0])
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[0].lower() + text[1:] if text else type(exc).__name__
