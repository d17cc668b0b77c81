"""Every probe kind, declared once: the keys it reads, their defaults, what it requires of
its table, and the checker that runs it.

config/health.py validates a `health` table and probes/__init__.py builds the checker
from this table alone, so a new kind is one entry here (and its checker module). The module
stays free of the event loop: loading a resources.toml imports it, and must not pay for anyio.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from orchestrator.spec import ProbeSpec

if TYPE_CHECKING:
    from orchestrator.probes import Probe, ProbeContext

# Keys every kind takes; left out, they take ProbeSpec's defaults (spec.py).
COMMON_KEYS = frozenset({"probe", "host", "port", "interval", "timeout", "liveness_interval",
                         "failure_threshold"})

Fail = Callable[[str, str], None]  # (key, message): one problem line about health.KEY


@dataclass(frozen=True)
class ProbeDraft:
    """A health table as read so far: the raw keys and the port and URL derived for it."""

    raw: Mapping[str, Any]
    port: int | None
    url: str | None


@dataclass(frozen=True)
class ProbeKind:
    name: str
    keys: frozenset[str]  # read by this kind, besides COMMON_KEYS
    build: Callable[[ProbeSpec, ProbeContext], Probe]  # imports its checker on first use
    defaults: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))  # beyond ProbeSpec's
    needs_port: bool = False  # checks host:port; a port comes from health.port or `ports`
    url_from_port: bool = False  # a missing url is http://host:port/
    reads_output: bool = False  # reads the resource's output: not for an external resource
    validate: Callable[[ProbeDraft, Fail], None] | None = None  # what else it requires

    @property
    def probes_address(self) -> bool:
        return self.needs_port or self.url_from_port


def _tcp(spec: ProbeSpec, context: ProbeContext) -> Probe:
    from orchestrator.probes.tcp import TcpProbe  # each checker imported on first use:
    return TcpProbe(spec)  # a stack without an http probe never pays for its imports


def _http(spec: ProbeSpec, context: ProbeContext) -> Probe:
    from orchestrator.probes.http import HttpProbe
    return HttpProbe(spec)


def _exec(spec: ProbeSpec, context: ProbeContext) -> Probe:
    from orchestrator.probes.exec import ExecProbe
    return ExecProbe(spec, context.exec_inside if spec.inside else None)


def _postgres(spec: ProbeSpec, context: ProbeContext) -> Probe:
    from orchestrator.probes.postgres import PostgresProbe
    return PostgresProbe(spec)


def _redis(spec: ProbeSpec, context: ProbeContext) -> Probe:
    from orchestrator.probes.redis import RedisProbe
    return RedisProbe(spec)


def _log(spec: ProbeSpec, context: ProbeContext) -> Probe:
    from orchestrator.probes.log import LogProbe
    return LogProbe(spec, context)


def _needs_command(draft: ProbeDraft, fail: Fail) -> None:
    if "command" not in draft.raw:
        fail("command", "an exec probe needs a command")


def _needs_pattern(draft: ProbeDraft, fail: Fail) -> None:
    pattern = draft.raw.get("pattern")
    if not isinstance(pattern, str):
        fail("pattern", "a log probe needs a pattern")
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        fail("pattern", f"invalid regular expression: {exc}")


# In the order error lines list them ("must be one of tcp, http, ...").
KINDS: dict[str, ProbeKind] = {kind.name: kind for kind in (
    ProbeKind("tcp", frozenset(), _tcp, needs_port=True),
    ProbeKind("http", frozenset({"url", "expect_status"}), _http, url_from_port=True),
    ProbeKind("exec", frozenset({"command", "inside"}), _exec, MappingProxyType({"inside": False}),
              validate=_needs_command),
    ProbeKind("postgres", frozenset({"user", "database"}), _postgres, MappingProxyType({"user": "postgres"}),
              needs_port=True),
    ProbeKind("redis", frozenset({"password"}), _redis, needs_port=True),
    ProbeKind("log", frozenset({"pattern"}), _log, reads_output=True, validate=_needs_pattern),
)}


def all_keys() -> frozenset[str]:
    """Every key a health table may hold (a key of another kind is accepted and unused)."""
    return COMMON_KEYS.union(*(kind.keys for kind in KINDS.values()))


_SPEC_DEFAULTS = {f.name: f.default for f in fields(ProbeSpec) if f.default is not MISSING}


def default(kind: ProbeKind, key: str) -> Any:
    """The value a left-out key takes for this kind: its own default, else ProbeSpec's."""
    return kind.defaults.get(key, _SPEC_DEFAULTS.get(key))
