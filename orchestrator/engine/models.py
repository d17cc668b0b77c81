"""Lazy Ollama models: pulled and warmed without ever holding up `vrooli up`.

Ollama is ready when its API answers; models are separate work. In "background" mode
they are pulled (POST /api/pull, streamed progress) and loaded (POST /api/generate with
only `model` and `keep_alive`, or /api/embed for embedding models) once the rest of the
stack is ready, so warm-up never competes for CPU and disk in the startup window. In
"lazy" mode nothing happens until someone asks (`vrooli models ensure`). In "eager" mode
the resource is not ready until its models are loaded.

Concurrent requests for the same model share one pull and one load. With
`[project] memory_budget_peak`, a background load waits while the model's size (as Ollama
reports it) would take the stack over that budget; a load someone asked for does not.

Over the ~450-line guide: the Ollama client, the shared pulls and the warm-up policy are
one state machine per model; the client alone could move out if it grows.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from orchestrator.errors import VrooliError
from orchestrator.infra.logger import get_logger
from orchestrator.plan.policy import Backoff
from orchestrator.plan.scheduler import SETTLED_BAD, SETTLED_OK, State
from orchestrator.spec import ModelLoad, ModelsSpec, ResourceSpec

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from orchestrator.engine.events import StackView

log = get_logger("vrooli.models")

PULL_ATTEMPTS = 4  # of one ensure
PULL_BACKOFF = Backoff(1.0, 4.0)  # 1, 2, 4 s between them, plus jitter: pulls that failed together spread
WARM_UP_DELAY = 0.25  # seconds after the stack settles before background warm-up begins
PERMANENT = ("file does not exist", "not found", "invalid model name", "no space left",
             "more than memory_budget_peak")
MEMORY_RECHECK = 2.0  # seconds between looks at the stack's memory while a load waits for room


class ModelError(VrooliError):
    """Ollama refused or failed a model operation; the message is Ollama's own."""


def canonical(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


OLLAMA_PORT = 11434


def base_url(spec: ResourceSpec) -> str:
    """Where Ollama's API answers, as the supervisor reaches it.

    In order: the http health probe's URL (the user wrote down where the API answers);
    for a process, OLLAMA_HOST (what Ollama binds, read as Ollama reads it); a published
    port (for a container, the one mapped to the port OLLAMA_HOST names inside, else
    11434); else Ollama's default, 127.0.0.1:11434. Wildcard addresses become loopback.
    """
    probe = spec.health
    if probe is not None and probe.kind == "http" and probe.url and not probe.inside:
        from_probe = _from_probe_url(probe.url)
        if from_probe is not None:
            return from_probe
    scheme, host, port = _ollama_host(spec.env_dict.get("OLLAMA_HOST", ""))
    if spec.runtime != "docker" and spec.env_dict.get("OLLAMA_HOST", "").strip():
        return f"{scheme}://{_connectable(host)}:{port}"
    if spec.ports:
        wanted = port if spec.runtime == "docker" else OLLAMA_PORT
        mapped = next((p for p in spec.ports if p.container_port == wanted), spec.ports[0])
        return f"http://{_connectable(mapped.host_ip)}:{mapped.host_port}"
    return f"http://127.0.0.1:{OLLAMA_PORT}"


def _from_probe_url(url: str) -> str | None:
    """scheme://host:port of a probe URL, plus any path before /api/ (a reverse proxy's
    prefix); credentials dropped: Ollama has none, and the URL is shown in messages."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    prefix = parts.path.partition("/api/")[0].rstrip("/") if "/api/" in parts.path else ""
    port = port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{_connectable(parts.hostname)}:{port}{prefix}"


def _ollama_host(value: str) -> tuple[str, str, int]:
    """OLLAMA_HOST as Ollama parses it (envconfig.Host): [scheme://]host[:port][/path],
    port 11434 without a scheme, 80 or 443 with one, host 127.0.0.1 when empty."""
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    default = {"http": 80, "https": 443}.get(scheme, OLLAMA_PORT) if sep else OLLAMA_PORT
    if not sep:
        scheme, rest = "http", text
    hostport = rest.partition("/")[0]
    host, port_text = hostport, ""
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    elif hostport.count(":") == 1:
        host, port_text = hostport.split(":")
    port = int(port_text) if port_text.isdigit() and int(port_text) <= 65535 else default
    return scheme if scheme in ("http", "https") else "http", host, port


def _connectable(host: str) -> str:
    """A listening address as an address to connect to, bracketed if IPv6."""
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


@dataclass
class ModelState:
    name: str
    status: str = "unknown"  # absent | pulling | present | waiting | loading | loaded | failed | unknown
    completed: int = 0
    total: int = 0
    error: str = ""
    attempts: int = 0
    waiting: str = ""  # why a load waits for memory

    def describe(self) -> str:
        if self.status == "waiting":
            return f"waiting for memory: {self.waiting}"
        if self.status == "pulling":
            percent = int(100 * self.completed / self.total) if self.total else 0
            return f"pulling {percent}%"
        if self.status == "failed":
            return f"failed: {self.error}"
        return self.status

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "describe": self.describe(),
                "completed": self.completed, "total": self.total, "error": self.error or None,
                "attempts": self.attempts, "waiting": self.waiting or None}


@dataclass
class _Shared:
    """One ensure in flight; every caller for the same model waits on it."""

    done: anyio.Event = field(default_factory=anyio.Event)
    error: str | None = None
    background: bool = False  # a warm-up nobody waits for: its load may wait for memory
    asked: anyio.Event = field(default_factory=anyio.Event)  # someone joined who does wait


class OllamaClient:
    """The few Ollama API calls we need, over httpx."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: Any = None  # made on first use: the supervisor starts without httpx

    async def _http(self) -> Any:
        if self._client is None:
            # Built in a worker thread: an httpx client sets up TLS (tens of ms of CPU) even
            # for http:// URLs, and the first use comes right when the stack turns ready.
            def make() -> Any:
                import httpx

                return httpx.AsyncClient(base_url=self.url, trust_env=False,
                                         timeout=httpx.Timeout(30.0, read=None))

            client = await anyio.to_thread.run_sync(make)
            if self._client is None:
                self._client = client
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        try:
            response = await (await self._http()).request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ModelError(f"ollama at {self.url} is not answering: {exc or type(exc).__name__}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": response.text.strip() or f"HTTP {response.status_code}"}
        if response.status_code >= 400 or (isinstance(payload, dict) and "error" in payload):
            raise ModelError(str(payload.get("error") if isinstance(payload, dict) else payload))
        return payload if isinstance(payload, dict) else {}

    async def _names(self, path: str) -> set[str]:
        models = (await self._json("GET", path)).get("models", [])
        return {canonical(m.get("name") or m.get("model", "")) for m in models}

    async def tags(self) -> set[str]:
        """Models present on disk."""
        return await self._names("/api/tags")

    async def running(self) -> set[str]:
        """Models loaded in memory."""
        return await self._names("/api/ps")

    async def size(self, name: str) -> int | None:
        """The model's size as Ollama reports it (GET /api/tags): about what loading it takes."""
        for model in (await self._json("GET", "/api/tags")).get("models", []):
            if canonical(model.get("name") or model.get("model", "")) == name:
                size = model.get("size")
                return size if isinstance(size, int) and size > 0 else None
        return None

    async def pull(self, name: str, on_progress: Callable[[int, int], None]) -> None:
        import httpx

        layers: dict[str, tuple[int, int]] = {}
        try:
            http = await self._http()
            async with http.stream("POST", "/api/pull", json={"model": name, "stream": True}) as response:
                if response.status_code >= 400:
                    body = (await response.aread()).decode(errors="replace")
                    raise ModelError(_error_text(body, response.status_code))
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if "error" in event:
                        raise ModelError(str(event["error"]))
                    if event.get("digest") and event.get("total"):
                        layers[event["digest"]] = (int(event.get("completed") or 0), int(event["total"]))
                        on_progress(sum(c for c, _ in layers.values()), sum(t for _, t in layers.values()))
                    if event.get("status") == "success":
                        return
        except httpx.TransportError as exc:
            raise ModelError(f"pull of {name} interrupted: {exc or type(exc).__name__}") from None
        raise ModelError(f"pull of {name} ended without success")

    async def load(self, name: str, keep_alive: str) -> None:
        try:
            await self._json("POST", "/api/generate", {"model": name, "keep_alive": _keep_alive(keep_alive)})
        except ModelError as exc:
            if "does not support generate" not in str(exc):
                raise
            await self._json("POST", "/api/embed", {"model": name, "keep_alive": _keep_alive(keep_alive)})

    async def unload(self, name: str) -> None:
        try:
            await self._json("POST", "/api/generate", {"model": name, "keep_alive": 0})
        except ModelError as exc:
            if "does not support generate" not in str(exc):
                raise
            await self._json("POST", "/api/embed", {"model": name, "keep_alive": 0})


def _keep_alive(value: str) -> str | int:
    text = value.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def _error_text(body: str, status: int) -> str:
    try:
        payload = json.loads(body)
        if isinstance(payload, dict) and "error" in payload:
            return str(payload["error"])
    except ValueError:
        pass
    return body.strip() or f"HTTP {status}"


class ModelManager:
    def __init__(self, sup: StackView, resource: str, spec: ModelsSpec, url: str) -> None:
        self.sup = sup
        self.resource = resource
        self.spec = spec
        self.client = OllamaClient(url)
        self.models: dict[str, ModelState] = {canonical(n): ModelState(canonical(n)) for n in spec.names}
        self._inflight: dict[str, _Shared] = {}
        self._limiter = anyio.CapacityLimiter(spec.concurrency)
        self._tg: TaskGroup | None = None
        self._warmed_for: object = None  # the incarnation (started_at) we warmed up
        self._was_loaded: set[str] = set()
        # Why Ollama could not be asked at all (warm-up's first call failed), for `status`:
        # "models: 0/1 loaded" alone says nothing when every call fails.
        self.problem = ""

    def __repr__(self) -> str:
        return f"<ModelManager {self.resource}: {self.summary()['line']}>"

    def state(self, name: str) -> ModelState:
        key = canonical(name)
        if key not in self.models:
            self.models[key] = ModelState(key)
        return self.models[key]

    def summary(self) -> dict[str, Any]:
        loaded = sum(1 for m in self.models.values() if m.status == "loaded")
        declared = [self.models[canonical(n)] for n in self.spec.names]
        busy = [m for m in self.models.values() if m.status in ("pulling", "waiting", "loading", "failed")]
        line = f"models: {loaded}/{len(declared)} loaded ({self.spec.load.value})"
        if self.problem:
            line += f"; {self.problem}"
        if busy:
            line += "; " + ", ".join(f"{m.name} {m.describe()}" for m in busy[:3])
        return {"resource": self.resource, "line": line, "url": self.client.url, "error": self.problem or None,
                "models": [m.to_json() for m in self.models.values()]}

    # ------------------------------------------------------------------ inventory

    async def refresh(self) -> None:
        """Ask Ollama what is present and loaded (GET /api/tags and /api/ps)."""
        present, running = await self.client.tags(), await self.client.running()
        if self.problem:
            self.problem = ""
            self.sup.notify_changed()
        for name in set(self.models) | present | running:
            state = self.state(name)
            if state.status in ("pulling", "loading", "waiting"):
                continue
            if name in running:
                state.status = "loaded"
                self._was_loaded.add(name)
            elif name in present:
                state.status = "present"
            elif state.status != "failed":
                state.status = "absent"

    # ------------------------------------------------------------------ ensure

    async def ensure(self, name: str, load: bool = True, background: bool = False) -> ModelState:
        """Pull if absent, then load; concurrent calls for one model share the work.

        `background`: a warm-up; its load waits while it would exceed memory_budget_peak,
        until someone joins who asked for the model (they do not wait for the budget).
        """
        key = canonical(name) + ("" if load else "#pull")
        shared = self._inflight.get(key)
        if shared is None:
            shared = _Shared(background=background)
            self._inflight[key] = shared
            assert self._tg is not None, "model manager is not running"
            self._tg.start_soon(self._ensure_once, canonical(name), load, key, shared)
        elif not background and shared.background:
            shared.background = False
            shared.asked.set()
        await shared.done.wait()
        if shared.error:
            raise ModelError(shared.error)
        return self.state(name)

    async def _ensure_once(self, name: str, load: bool, key: str, shared: _Shared) -> None:
        state = self.state(name)
        try:
            for attempt in range(1, PULL_ATTEMPTS + 1):
                state.attempts = attempt
                try:
                    async with self._limiter:
                        await self._pull(state)
                    if load and state.status != "loaded":
                        await self._wait_for_memory(state, shared)  # outside the limiter: others may fit
                        async with self._limiter:
                            await self._load(state)
                    self.sup.notify_changed()
                    return
                except ModelError as exc:
                    state.status, state.error = "failed", str(exc)
                    log.warning("model operation failed", resource=self.resource, model=name,
                                error=str(exc), attempt=attempt)
                    self.sup.notify_changed()
                    if attempt == PULL_ATTEMPTS or any(p in str(exc) for p in PERMANENT):
                        shared.error = str(exc)
                        return
                    await anyio.sleep(PULL_BACKOFF.delay(attempt, random.random()))  # noqa: S311
        finally:
            self._inflight.pop(key, None)
            shared.done.set()
            self.sup.notify_changed()

    async def _pull(self, state: ModelState) -> None:
        await self.refresh()
        if state.status in ("absent", "failed", "unknown"):
            state.status, state.error, state.completed, state.total = "pulling", "", 0, 0
            self.sup.notify_changed()
            started = time.monotonic()

            def progress(completed: int, total: int) -> None:
                state.completed, state.total = completed, total
                self.sup.notify_changed()

            await self.client.pull(state.name, progress)
            state.status = "present"
            log.info("model pulled", resource=self.resource, model=state.name,
                     seconds=round(time.monotonic() - started, 3))

    async def _wait_for_memory(self, state: ModelState, shared: _Shared) -> None:
        """A background load waits while the model would take the stack over its peak budget."""
        while shared.background and self.sup.project.memory_budget_peak is not None:
            size = await self.client.size(state.name)
            if size is None:
                break  # Ollama does not say how big it is: nothing to weigh
            never, why = await self.sup.memory.load_wait(size)
            if why is None:
                break
            if never:
                raise ModelError(why)
            if state.status != "waiting":
                log.info("model load waits for memory", resource=self.resource, model=state.name, reason=why)
            if (state.status, state.waiting) != ("waiting", why):
                state.status, state.waiting = "waiting", why
                self.sup.notify_changed()
            with anyio.move_on_after(MEMORY_RECHECK):
                await shared.asked.wait()
        if state.status == "waiting":
            state.status, state.waiting = "present", ""

    async def _load(self, state: ModelState) -> None:
        if state.status != "loaded":
            state.status = "loading"
            self.sup.notify_changed()
            started = time.monotonic()
            await self.client.load(state.name, self.spec.keep_alive)
            state.status = "loaded"
            self._was_loaded.add(state.name)
            log.info("model loaded", resource=self.resource, model=state.name,
                     seconds=round(time.monotonic() - started, 3))

    async def unload(self, name: str) -> None:
        await self.client.unload(canonical(name))
        self._was_loaded.discard(canonical(name))
        state = self.state(name)
        state.status = "present"
        self.sup.notify_changed()

    async def ready_gate(self, spec: ResourceSpec, report: Callable[[str], None]) -> str | None:
        """The resource's ready gate: with model_load = eager, it is READY only once every
        model is loaded (None), or the start fails with why (lifecycle.ReadyGate)."""
        if spec.models is None or spec.models.load is not ModelLoad.EAGER:
            return None
        report("loading models (model_load = eager)")
        try:
            await self.ensure_all()
        except ModelError as exc:
            return f"models: {exc}"
        return None

    async def ensure_all(self) -> None:
        """Every declared model, bounded by model_concurrency; raises the first failure."""
        errors: list[str] = []

        async def one(name: str) -> None:
            try:
                await self.ensure(name)
            except ModelError as exc:
                errors.append(f"{name}: {exc}")

        async with anyio.create_task_group() as tg:
            for name in self.spec.names:
                tg.start_soon(one, name)
        if errors:
            raise ModelError("; ".join(errors))

    # ------------------------------------------------------------------ background

    def _resource_ready(self) -> bool:
        rec = self.sup.records.get(self.resource)
        return rec is not None and rec.state is State.READY

    def _still_ready(self, incarnation: object) -> bool:
        """Ready, and the same start as `incarnation` (not a restart since)."""
        return self._resource_ready() and self.sup.records[self.resource].started_at == incarnation

    def _rest_settled(self) -> bool:
        others = [r for n, r in self.sup.records.items() if n in self.sup.wanted and n != self.resource]
        return all(r.state in SETTLED_OK | SETTLED_BAD for r in others)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            try:
                await self._watch()
            finally:
                with anyio.CancelScope(shield=True):
                    await self.client.aclose()

    async def _watch(self) -> None:
        while True:
            version = self.sup.version
            rec = self.sup.records.get(self.resource)
            incarnation = rec.started_at if rec else None
            if self._resource_ready() and incarnation != self._warmed_for and self._rest_settled():
                self._warmed_for = incarnation
                assert self._tg is not None
                self._tg.start_soon(self._warm_up)
            await self.sup.wait_change(since=version)

    async def _warm_up(self) -> None:
        """After a (re)start: reload what was loaded before; in background mode, the rest."""
        # The stack has just settled: let `vrooli up` answer before we spend CPU (and the
        # GIL) on HTTP clients and pulls. A quarter second is nothing to a model load.
        incarnation = self._warmed_for
        await anyio.sleep(WARM_UP_DELAY)
        if not self._still_ready(incarnation):
            return  # stopped or restarted meanwhile (`up` then `down` at once): nothing to warm
        try:
            await self.refresh()
        except ModelError as exc:
            if self._still_ready(incarnation):  # not just stopping under us
                log.warning("cannot list models", resource=self.resource, error=str(exc))
                self.problem = f"cannot list models: {exc}"
                self.sup.notify_changed()
            return
        wanted = set(self._was_loaded)
        if self.spec.load is ModelLoad.BACKGROUND:
            wanted |= {canonical(n) for n in self.spec.names}
        if not wanted:
            return
        began = datetime.now(UTC)
        async with anyio.create_task_group() as tg:
            for name in sorted(wanted):
                tg.start_soon(self._ensure_quietly, name)
        if self._still_ready(incarnation):  # `analyze --plot` draws it after the resource's ready
            self.sup.record_warmup(self.resource, began, datetime.now(UTC))

    async def _ensure_quietly(self, name: str) -> None:
        try:
            await self.ensure(name, background=True)
        except ModelError:
            pass  # already logged and shown in the model's state



def managers_for(sup: StackView) -> dict[str, ModelManager]:
    return {name: ModelManager(sup, name, rec.spec.models, base_url(rec.spec))
            for name, rec in sup.records.items() if rec.spec.models is not None and rec.spec.models.names}
