"""The validated shape of a project: frozen dataclasses, built only by `config.load`.

Everything downstream (graph, scheduler, supervisor, runtimes) reads these and never the
raw TOML, so a value that reaches them has already been checked.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_LOG_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_LOG_MAX_FILES = 1


class Condition(enum.StrEnum):
    """What a dependent waits for, per dependency edge (compose's `condition`)."""

    STARTED = "started"
    HEALTHY = "healthy"
    COMPLETED = "completed"


class RestartPolicy(enum.StrEnum):
    NO = "no"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


class ModelLoad(enum.StrEnum):
    LAZY = "lazy"
    BACKGROUND = "background"
    EAGER = "eager"


@dataclass(frozen=True, slots=True)
class Dependency:
    name: str
    condition: Condition = Condition.HEALTHY
    # compose's `restart: true`: when the dependency restarts, restart this resource too.
    restart: bool = False
    # False: an optional dependency. Waited for while it is starting; if it is disabled, left
    # out of the run (profile, selection) or fails, the dependent starts without it.
    required: bool = True


@dataclass(frozen=True, slots=True)
class PortSpec:
    host_port: int
    container_port: int
    host_ip: str = "127.0.0.1"
    protocol: str = "tcp"

    def describe(self) -> str:
        host = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{host}:{self.host_port}->{self.container_port}/{self.protocol}"

    @property
    def probe_host(self) -> str:
        """Where a probe reaches this port: its address, or loopback when bound to all."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host_ip, self.host_ip)


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    source: str  # a named volume, or an absolute host path for a bind mount
    target: str
    read_only: bool = False

    @property
    def is_bind(self) -> bool:
        return self.source.startswith("/")


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    kind: str  # tcp | http | exec | postgres | redis | log
    host: str = "127.0.0.1"
    port: int | None = None
    url: str | None = None
    expect_status: tuple[int, ...] = ()
    command: tuple[str, ...] = ()
    pattern: str | None = None
    inside: bool = False  # exec probe: run inside the container
    user: str = "postgres"  # postgres probe: the role named in the startup packet
    database: str | None = None
    password: str | None = None  # redis probe: AUTH before PING
    interval: float = 0.025  # start-up probing period; probes start at ~10 ms and grow to it
    timeout: float = 1.0
    liveness_interval: float = 10.0  # period once ready
    failure_threshold: int = 3  # consecutive liveness failures before `unhealthy`

    def describe(self) -> str:
        if self.kind == "http":
            return f"http {without_password(self.url or '')}"
        if self.kind == "exec":
            return "exec " + " ".join(self.command)
        if self.kind == "log":
            return f"log /{self.pattern}/"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind} {host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ModelsSpec:
    """Ollama models declared on a resource (see models.py)."""

    names: tuple[str, ...] = ()
    load: ModelLoad = ModelLoad.BACKGROUND
    keep_alive: str = "5m"
    concurrency: int = 1


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """`[resources.NAME.export]`: what `vrooli export` uses in place of the resource's own.

    Only the exporters read it; it never changes how `vrooli up` runs the resource.
    """

    image: str | None = None  # a native process needs one to become a container
    command: tuple[str, ...] | None = None
    healthcheck: tuple[str, ...] | None = None  # ["CMD", ...] | ["CMD-SHELL", "..."] | ["NONE"]
    env: tuple[tuple[str, str], ...] = ()  # laid over `env` (OLLAMA_HOST = "0.0.0.0:11434")


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    name: str
    # "process" | "docker" | "external" (vrooli only probes it: never starts or stops it)
    runtime: str
    command: tuple[str, ...] = ()
    cwd: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[PortSpec, ...] = ()
    depends_on: tuple[Dependency, ...] = ()
    start_timeout: float = 60.0
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 10.0
    restart: RestartPolicy = RestartPolicy.NO
    # Backoff between restarts grows from restart_delay to restart_max_delay (with jitter);
    # more than restart_burst restarts within restart_window and the resource is `failed`,
    # as with systemd's StartLimitBurst / StartLimitIntervalSec.
    restart_delay: float = 0.5
    restart_max_delay: float = 30.0
    restart_burst: int = 5
    restart_window: float = 60.0
    enabled: bool = True
    health: ProbeSpec | None = None
    user: str | None = None
    # Bytes. Docker: the engine enforces it. Process: a cgroup where one can be had, else
    # the RSS watchdog, which recycles once the tree stays above it for memory_grace.
    memory_limit: int | None = None
    memory_grace: float = 10.0
    # Hooks (hooks.py), argv like `command`: post_start runs once the probe passes and must
    # exit 0 before the resource counts as ready; pre_stop runs before the stop signal, within
    # stop_timeout. On the host with the resource's env (a process's cwd and user too), or with
    # hooks_inside (docker only) by docker exec in the container. Not part of config_hash.
    post_start: tuple[str, ...] = ()
    pre_stop: tuple[str, ...] = ()
    hooks_inside: bool = False
    # docker only
    image: str | None = None
    entrypoint: tuple[str, ...] | None = None
    volumes: tuple[VolumeSpec, ...] = ()
    models: ModelsSpec | None = None
    description: str = ""
    export: ExportSpec | None = None
    # The output kept: the live NAME.log and log_max_files older ones, each at most about
    # log_max_size bytes (see logs.py). Not part of config_hash: it never restarts a service.
    log_max_size: int = DEFAULT_LOG_MAX_SIZE
    log_max_files: int = DEFAULT_LOG_MAX_FILES
    # What `vrooli report` holds the resource to (its Status column): seconds from start to
    # ready, and bytes in use. Not part of config_hash: they only judge, never run anything.
    target_startup: float | None = None
    target_memory: int | None = None
    # Left out of a plain `up` unless one of these profiles is active (`up --profile NAME`,
    # VROOLI_PROFILES); empty: always part of it. Steers selection only, never config_hash.
    profiles: tuple[str, ...] = ()

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    @property
    def dependency_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.depends_on)

    def config_hash(self) -> str:
        """A stable digest of everything that decides how the resource runs.

        Used to label containers and to tell, on a second `up` or a reload, whether a
        running resource still matches its declaration. Fields that only steer the
        orchestrator (probes, timeouts, dependencies, models) are left out so changing
        them never restarts a healthy service.
        """
        relevant = {
            "runtime": self.runtime,
            "command": self.command,
            "cwd": self.cwd,
            "env": self.env,
            "ports": [asdict(p) for p in self.ports],
            "user": self.user,
            "image": self.image,
            "entrypoint": self.entrypoint,
            "volumes": [asdict(v) for v in self.volumes],
            "memory_limit": self.memory_limit,
            "stop_signal": self.stop_signal,
        }
        blob = json.dumps(relevant, sort_keys=True, default=str).encode()
        import hashlib  # here, not at the top: a client that never hashes skips its ~2.5 ms import
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ProjectSpec:
    name: str
    state_dir: Path
    project_dir: Path
    files: tuple[Path, ...]
    resources: dict[str, ResourceSpec] = field(default_factory=dict)
    health_listen: str | None = None  # None: not in the file; the supervisor's mode decides
    health_enabled: bool = True
    # Environment variables the files looked up (${VAR}) or the loader reads (HOME, ...).
    environ_names: frozenset[str] = frozenset()
    # The whole stack's memory (bytes): over `memory_budget` /health warns; background
    # model loads wait while they would take it over `memory_budget_peak`.
    memory_budget: int | None = None
    memory_budget_peak: int | None = None
    keep_warm: float = 600.0  # seconds a detached supervisor stays idle after `down`; 0: none

    @property
    def declared_profiles(self) -> list[str]:
        """Every profile some resource declares, sorted."""
        return sorted({p for r in self.resources.values() for p in r.profiles})


def without_password(url: str) -> str:
    """The URL as logs and status may show it: credentials dropped (they may be secrets).

    Conservative on URLs that `validate` would refuse: an '@' past the host part means a
    password with a '/', '?' or '#' in it, so everything up to the last '@' goes; a port
    that is not a number may be a password whose '@host' part is missing, so it goes too.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in tail:
        return f"{scheme}://{rest.rpartition('@')[2]}"
    hostport = authority.rpartition("@")[2]
    host, colon, port = hostport.rpartition(":")
    if colon and not host.endswith("]") and ":" not in host and not (port.isascii() and port.isdigit()):
        hostport = f"{host}:***"
    return f"{scheme}://{hostport}{tail}"
