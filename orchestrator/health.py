"""Read-only HTTP endpoint for monitors: /livez /readyz /health /metrics.

Served by uvicorn (no HTTP parsing of ours) inside the supervisor's event loop, bound to
127.0.0.1 unless configured. Nothing here can change the stack.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio
import structlog

from orchestrator import __version__
from orchestrator.memory import health_check as memory_check
from orchestrator.memory import metric_families as memory_families
from orchestrator.scheduler import SETTLED_OK, State

if TYPE_CHECKING:

    from orchestrator.runtimes import Usage
    from orchestrator.supervisor import Supervisor

log = structlog.get_logger("vrooli.health")
STARTUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 10, 15, 20, 30, 45, 60, 90, 120)
LIVENESS_STALE = 5.0  # seconds without a housekeeping beat before /livez fails

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class HealthApp:
    def __init__(self, sup: Supervisor) -> None:
        from prometheus_client import CollectorRegistry, Histogram

        self.sup = sup
        self.registry = CollectorRegistry(auto_describe=True)
        self.startup = Histogram("vrooli_resource_startup_duration_seconds",
                                 "Time from start to ready, per resource start.",
                                 ["resource"], buckets=STARTUP_BUCKETS, registry=self.registry)
        self._observed: dict[str, Any] = {}
        self._usage: dict[str, Usage] = {}
        self.registry.register(_StateCollector(self))
        sup.on_change.append(self._observe_startups)

    def _observe_startups(self) -> None:
        for name, rec in self.sup.records.items():
            key = rec.ready_at
            if rec.state is State.READY and key is not None and self._observed.get(name) != key:
                self._observed[name] = key
                if rec.startup_seconds is not None:
                    self.startup.labels(resource=name).observe(rec.startup_seconds)

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await self._send(send, 405, "text/plain", "read-only endpoint: GET only\n",
                             [(b"allow", b"GET, HEAD")])
            return
        query = parse_qs(scope.get("query_string", b"").decode(), keep_blank_values=True)
        path = scope["path"].rstrip("/") or "/"
        if path == "/livez":
            status, body = self.livez(query)
            await self._send(send, status, "text/plain; charset=utf-8", body)
        elif path == "/readyz":
            status, body = self.readyz(query)
            await self._send(send, status, "text/plain; charset=utf-8", body)
        elif path == "/health":
            status, doc = self.health()
            await self._send(send, status, "application/health+json", json.dumps(doc, indent=2) + "\n")
        elif path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            await self._refresh_usage()
            await self._send(send, 200, CONTENT_TYPE_LATEST, generate_latest(self.registry).decode())
        else:
            await self._send(send, 404, "text/plain", "not found: try /livez /readyz /health /metrics\n")

    async def _send(self, send: Send, status: int, content_type: str, body: str,
                    headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        raw = body.encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", content_type.encode()), (b"content-length", str(len(raw)).encode()),
            (b"cache-control", b"no-store"), *headers]})
        await send({"type": "http.response.body", "body": raw})

    # ------------------------------------------------------------------ checks

    def livez(self, query: dict[str, list[str]]) -> tuple[int, str]:
        age = time.monotonic() - self.sup.loop_heartbeat
        ok = age < LIVENESS_STALE
        if "verbose" in query:
            body = f"[+]loop ok (beat {age:.2f}s ago)\n" if ok else f"[-]loop stalled for {age:.1f}s\n"
            body += "livez check passed\n" if ok else "livez check failed\n"
            return (200 if ok else 503), body
        return (200, "ok") if ok else (503, "loop stalled")

    def _considered(self, exclude: Iterable[str] = ()) -> list[Any]:
        skip = set(exclude)
        return [r for n, r in self.sup.records.items()
                if r.spec.enabled and n not in skip and (n in self.sup.wanted or r.state is not State.STOPPED)]

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
                lines.append(f"[-]{rec.spec.name} {rec.state.value}: {rec.message or rec.state.value}")
        lines.extend(f"[+]{name} excluded: ok" for name in exclude)
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
                entry["output"] = rec.message or rec.state.value
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

    async def _refresh_usage(self) -> None:
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
        self._usage = usage
        self.sup.memory.absorb(usage)


class _StateCollector:
    """Gauges and counters built from supervisor state at scrape time."""

    def __init__(self, app: HealthApp) -> None:
        self.app = app

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        sup = self.app.sup
        up = GaugeMetricFamily("vrooli_resource_up", "1 when the resource is ready.", labels=["resource", "runtime"])
        state = GaugeMetricFamily("vrooli_resource_state", "1 for the resource's current state.",
                                  labels=["resource", "state"])
        restarts = CounterMetricFamily("vrooli_resource_restarts", "Restarts after a crash or failed liveness.",
                                       labels=["resource"])
        probe = GaugeMetricFamily("vrooli_probe_duration_seconds", "Duration of the latest probe.",
                                  labels=["resource", "probe"])
        memory = GaugeMetricFamily("vrooli_resource_memory_bytes",
                                   "Resident memory of the whole process tree or container.",
                                   labels=["resource"])
        cpu = CounterMetricFamily("vrooli_resource_cpu_seconds", "CPU time of the whole process tree or container.",
                                  labels=["resource"])
        for name, rec in sup.records.items():
            up.add_metric([name, rec.spec.runtime], 1.0 if rec.state in SETTLED_OK else 0.0)
            for candidate in State:
                state.add_metric([name, candidate.value], 1.0 if rec.state is candidate else 0.0)
            restarts.add_metric([name], float(rec.restarts))
            if rec.last_probe is not None and rec.spec.health is not None:
                probe.add_metric([name, rec.spec.health.kind], rec.last_probe.duration)
            found = self.app._usage.get(name)
            if found is not None:
                memory.add_metric([name], float(found.rss_bytes))
                cpu.add_metric([name], found.cpu_seconds)
        info = InfoMetricFamily("vrooli_build", "vrooli version.")
        info.add_metric([], {"version": __version__, "project": sup.project.name})
        yield from (up, state, restarts, probe, memory, cpu, info)
        for family in memory_families(sup):
            kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
            metric = kind(family.name.removesuffix("_total"), family.help, labels=list(family.samples[0][0])
                          if family.samples else None)
            for labels, value in family.samples:
                metric.add_metric(list(labels.values()), value)
            yield metric


def bind_listener(listen: str) -> socket.socket:
    """The endpoint's socket, bound and listening: from here on a request waits, never fails."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve_health(sup: Supervisor, sock: socket.socket, *, task_status: Any) -> None:
    import uvicorn

    app = HealthApp(sup)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                           http="h11", loop="none", server_header=False))
    server.config.load()
    server.lifespan = server.config.lifespan_class(server.config)
    await server.startup(sockets=[sock])
    task_status.started()
    try:
        await server.main_loop()
    finally:
        with anyio.CancelScope(shield=True):
            server.should_exit = True
            await server.shutdown(sockets=[sock])  # the socket is the caller's to close



