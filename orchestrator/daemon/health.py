"""Read-only HTTP endpoint for monitors: /livez /readyz /health /metrics.

Served by httpserver.py (anyio + h11) inside the supervisor's event loop, bound to
127.0.0.1 unless configured. Nothing here can change the stack, and nothing here can stop
it: the endpoint runs isolated (`run_endpoint`), so its failures end at its own task.

Anyone who can reach the port may read these answers, so every free text in them goes
through `exposure.public_text`: no resource output, no probe arguments, no URL secrets.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio

from orchestrator import __version__
from orchestrator.daemon.httpserver import Request, Response
from orchestrator.engine.memory import health_check as memory_check
from orchestrator.engine.memory import metric_families as memory_families
from orchestrator.infra.exposure import public_text
from orchestrator.infra.fdlimits import LogOnce, where_raised
from orchestrator.infra.logger import get_logger
from orchestrator.plan.scheduler import SETTLED_OK, State

if TYPE_CHECKING:
    from orchestrator.engine.events import RecordView, StackView
    from orchestrator.runtimes import Usage

log = get_logger("vrooli.health")
STARTUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 10, 15, 20, 30, 45, 60, 90, 120)
LIVENESS_STALE = 5.0  # seconds without a housekeeping beat before /livez fails
USAGE_FRESH = 1.0  # seconds a /metrics scrape may reuse the previous scrape's usage figures
TEXT = "text/plain; charset=utf-8"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # between endpoint restarts; then it stays down


class HealthApp:
    def __init__(self, sup: StackView) -> None:
        self.sup = sup
        self.startups: dict[str, Histogram] = {}  # per resource, start-to-ready durations
        self._observed: dict[str, Any] = {}
        self._usage: dict[str, Usage] = {}
        self._usage_at = -math.inf
        self._usage_lock = anyio.Lock()
        self._errors = LogOnce(log)
        sup.on_change.append(self._observe_startups)

    def close(self) -> None:
        if self._observe_startups in self.sup.on_change:
            self.sup.on_change.remove(self._observe_startups)

    def _observe_startups(self) -> None:
        # Called from inside the supervisor's state changes: it must never raise into them.
        try:
            for name, rec in self.sup.records.items():
                key = rec.ready_at
                if rec.state is State.READY and key is not None and self._observed.get(name) != key:
                    self._observed[name] = key
                    if rec.startup_seconds is not None:
                        self.startups.setdefault(name, Histogram(STARTUP_BUCKETS)).observe(rec.startup_seconds)
        except Exception as exc:
            self._errors.error("observe", "health endpoint: cannot record a start", error=repr(exc)[:300])

    async def __call__(self, request: Request) -> Response:
        query = parse_qs(request.query, keep_blank_values=True)
        path = request.path.rstrip("/") or "/"
        if path == "/livez":
            return _text(*self.livez(query))
        if path == "/readyz":
            return _text(*self.readyz(query))
        if path == "/health":
            status, doc = self.health()
            return Response(status, "application/health+json", (json.dumps(doc, indent=2) + "\n").encode())
        if path == "/metrics":
            await self._refresh_usage()
            return Response(200, PROMETHEUS_TEXT, self.metrics().encode())
        return _text(404, "not found: try /livez /readyz /health /metrics\n")

    # ------------------------------------------------------------------ checks

    def livez(self, query: dict[str, list[str]]) -> tuple[int, str]:
        age = time.monotonic() - self.sup.loop_heartbeat
        ok = age < LIVENESS_STALE
        if "verbose" in query:
            body = f"[+]loop ok (beat {age:.2f}s ago)\n" if ok else f"[-]loop stalled for {age:.1f}s\n"
            body += "livez check passed\n" if ok else "livez check failed\n"
            return (200 if ok else 503), body
        return (200, "ok") if ok else (503, "loop stalled")

    def _considered(self, exclude: Iterable[str] = ()) -> list[RecordView]:
        skip = set(exclude)
        # A profiled resource counts once an `up` wanted it: left out by its profile, it is
        # no more part of the stack than a disabled one.
        return [r for n, r in self.sup.records.items()
                if r.spec.enabled and n not in skip
                and (n in self.sup.wanted or (r.state is not State.STOPPED and not r.spec.profiles))]

    def readyz(self, query: dict[str, list[str]]) -> tuple[int, str]:
        exclude = [n for item in query.get("exclude", []) for n in item.split(",")]
        records = self._considered(exclude)
        ok = bool(records) and all(r.state in SETTLED_OK for r in records)
        if "verbose" not in query:
            return (200, "ok") if ok else (503, "not ready")
        lines = []
        for rec in records:
            if rec.state in SETTLED_OK:
                lines.append(f"[+]{rec.spec.name} ok")
            else:
                reason = public_text(rec.message, rec.spec) or rec.state.value
                lines.append(f"[-]{rec.spec.name} {rec.state.value}: {reason}")
        # Only names of the stack are echoed back: the query is the caller's text.
        lines.extend(f"[+]{name} excluded: ok" for name in exclude if name in self.sup.records)
        lines.append("readyz check passed" if ok else "readyz check failed")
        return (200 if ok else 503), "\n".join(lines) + "\n"

    def health(self) -> tuple[int, dict[str, Any]]:
        checks: dict[str, list[dict[str, Any]]] = {}
        worst = "pass"
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        for rec in self._considered():
            if rec.state in SETTLED_OK:
                status = "pass"
            elif rec.state in (State.STARTING, State.PENDING, State.UNHEALTHY):
                status = "warn"
            else:
                status = "fail"
            if status == "fail" or (status == "warn" and worst == "pass"):
                worst = status
            entry: dict[str, Any] = {
                "componentId": rec.spec.name,
                "componentType": "component",
                "status": status,
                "time": now,
            }
            if rec.last_probe is not None:
                entry["observedValue"] = round(rec.last_probe.duration * 1000, 3)
                entry["observedUnit"] = "ms"
            if status != "pass":
                entry["output"] = public_text(rec.message, rec.spec) or rec.state.value
            checks[f"{rec.spec.name}:responseTime"] = [entry]
        stack = memory_check(self.sup, now)  # over memory_budget: warn
        if stack is not None:
            checks[stack[0]] = [stack[1]]
            worst = "warn" if stack[1]["status"] == "warn" and worst == "pass" else worst
        doc = {
            "status": worst,
            "version": "1",
            "releaseId": __version__,
            "serviceId": self.sup.project.name,
            "description": "vrooli stack health",
            "checks": checks,
        }
        return (200 if worst != "fail" else 503), doc

    # ------------------------------------------------------------------ metrics

    async def _refresh_usage(self) -> None:
        """Memory and CPU per resource, shared by scrapes that come within USAGE_FRESH."""
        async with self._usage_lock:
            if time.monotonic() - self._usage_at < USAGE_FRESH:
                return
            usage: dict[str, Usage] = {}

            async def one(name: str, instance: Any) -> None:
                try:
                    with anyio.move_on_after(3):
                        found = await instance.usage()
                        if found is not None:
                            usage[name] = found
                except Exception as exc:
                    log.debug("usage unavailable", resource=name, error=str(exc))

            async with anyio.create_task_group() as tg:
                for name, rec in self.sup.records.items():
                    if rec.instance is not None:
                        tg.start_soon(one, name, rec.instance)
            self._usage, self._usage_at = usage, time.monotonic()
            self.sup.memory.absorb(usage)

    def metrics(self) -> str:
        """Prometheus text format 0.0.4, as promtool checks it: HELP and TYPE per family,
        counters ending in _total, histograms with cumulative le buckets, _sum and _count."""
        out = Exposition()
        records = self.sup.records
        out.family("vrooli_resource_up", "gauge", "1 when the resource is ready.",
                   [({"resource": n, "runtime": r.spec.runtime}, 1.0 if r.state in SETTLED_OK else 0.0)
                    for n, r in records.items()])
        out.family("vrooli_resource_state", "gauge", "1 for the resource's current state.",
                   [({"resource": n, "state": s.value}, 1.0 if r.state is s else 0.0)
                    for n, r in records.items() for s in State])
        out.family("vrooli_resource_restarts_total", "counter", "Restarts after a crash or failed liveness.",
                   [({"resource": n}, float(r.restarts)) for n, r in records.items()])
        out.histogram("vrooli_resource_startup_duration_seconds", "Time from start to ready, per resource start.",
                      "resource", self.startups)
        out.family("vrooli_probe_duration_seconds", "gauge", "Duration of the latest probe.",
                   [({"resource": n, "probe": r.spec.health.kind}, r.last_probe.duration)
                    for n, r in records.items() if r.last_probe is not None and r.spec.health is not None])
        out.family("vrooli_resource_memory_bytes", "gauge", "Resident memory of the whole process tree or container.",
                   [({"resource": n}, float(u.rss_bytes)) for n, u in self._usage.items() if n in records])
        out.family("vrooli_resource_cpu_seconds_total", "counter", "CPU time of the whole process tree or container.",
                   [({"resource": n}, u.cpu_seconds) for n, u in self._usage.items() if n in records])
        for family in memory_families(self.sup):
            out.family(family.name, family.kind, family.help, family.samples)
        out.family("vrooli_build_info", "gauge", "vrooli version.",
                   [({"project": self.sup.project.name, "version": __version__}, 1.0)])
        return out.text()


class Histogram:
    """Counts per bucket, a sum and a count: constant memory however many starts it sees."""

    def __init__(self, buckets: Iterable[float]) -> None:
        self.bounds = (*sorted(buckets), math.inf)
        self.counts = [0] * len(self.bounds)  # per bucket, not cumulative
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[next((i for i, bound in enumerate(self.bounds) if value <= bound), -1)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[int]:
        running, out = 0, []
        for count in self.counts:
            running += count
            out.append(running)
        return out


class Exposition:
    """Builds Prometheus' text exposition format (no client library: ~40 ms of imports saved)."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]],
               ) -> None:
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")
        self._lines.extend(f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples)

    def histogram(self, name: str, help_text: str, label: str, observed: dict[str, Histogram]) -> None:
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} histogram")
        for key, histogram in observed.items():
            for bound, count in zip(histogram.bounds, histogram.cumulative(), strict=True):
                self._lines.append(f"{name}_bucket{_labels({label: key, 'le': _number(bound)})} {_number(count)}")
            self._lines.append(f"{name}_sum{_labels({label: key})} {_number(histogram.total)}")
            self._lines.append(f"{name}_count{_labels({label: key})} {_number(histogram.count)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _text(status: int, body: str) -> Response:
    return Response(status, TEXT, body.encode())


async def run_endpoint(sup: StackView, sock: socket.socket,
                       serve: Callable[[HealthApp, socket.socket], Awaitable[None]] | None = None,
                       delays: tuple[float, ...] = RESTART_DELAYS) -> None:
    """Serve until cancelled; whatever goes wrong stays here.

    An exception out of the server (a bug: connections and handlers already contain their
    own) is logged once with where it happened, and the endpoint starts again after a
    growing delay (`delays`); after len(delays) restarts in a row it stays down. The
    supervisor, its resources and its control socket never notice.
    """
    app = HealthApp(sup)
    failures = 0
    try:
        while True:
            started = time.monotonic()
            try:
                await (serve or _serve)(app, sock)
                return
            except Exception as exc:
                error, where = repr(exc)[:300], where_raised(exc)
            if time.monotonic() - started > 60:
                failures = 0  # it ran fine for a while: this is a new episode
            if failures >= len(delays):
                log.error("health endpoint failed; it stays down after repeated failures "
                          "(resources are unaffected)", error=error, where=where)
                return
            delay = delays[failures]
            failures += 1
            log.error("health endpoint failed; restarting it (resources are unaffected)",
                      error=error, where=where, restarting_in=delay)
            await anyio.sleep(delay)
    finally:
        app.close()


async def _serve(app: HealthApp, sock: socket.socket) -> None:
    from orchestrator.daemon.httpserver import HttpServer

    await HttpServer(sock, app).serve()
