"""resources.toml → ProjectSpec: parse → merge override files → expand ${VAR} → validate.

Each stage is a small function. Validation collects every problem instead of stopping at
the first, and each problem is one line naming the file, the resource and the key, so a
user fixes a broken file in one pass.
"""

from __future__ import annotations

import difflib
import os
import re
import signal
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import graph
from orchestrator.errors import ConfigError
from orchestrator.spec import (
    Condition,
    Dependency,
    ModelLoad,
    ModelsSpec,
    PortSpec,
    ProbeSpec,
    ProjectSpec,
    ResourceSpec,
    RestartPolicy,
    VolumeSpec,
)

DEFAULT_FILE = "resources.toml"

PROJECT_KEYS = {"name", "state_dir", "health_listen", "health_enabled", "memory_budget", "memory_budget_peak"}
COMMON_KEYS = {
    "runtime", "command", "cwd", "env", "env_file", "ports", "depends_on", "start_timeout",
    "stop_signal", "stop_timeout", "restart", "restart_delay", "restart_max_delay",
    "restart_burst", "restart_window", "enabled", "health", "user", "description",
    "models", "model_load", "keep_alive", "model_concurrency", "memory_limit", "memory_grace",
}
DOCKER_ONLY_KEYS = {"image", "entrypoint", "volumes"}
RESOURCE_KEYS = COMMON_KEYS | DOCKER_ONLY_KEYS
RUNTIMES = ("process", "docker")
PROBE_KINDS = ("tcp", "http", "exec", "postgres", "redis", "log")
PROBE_KEYS = {
    "probe", "host", "port", "url", "expect_status", "command", "pattern", "inside", "user",
    "database", "password", "interval", "timeout", "liveness_interval", "failure_threshold",
}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


# ---------------------------------------------------------------------------- parsing


def parse_duration(value: object) -> float:
    """Seconds from 5, 0.25, "250ms", "2s", "1m", "1h". Raises ValueError with the reason."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 2 or \"250ms\", got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ValueError(f"expected a duration like \"250ms\", \"2s\" or \"1m\", got {value!r}")
        number, unit = float(match.group(1)), match.group(2) or "s"
        seconds = number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
    else:
        raise ValueError(f"expected a duration like 2 or \"250ms\", got {type(value).__name__}")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"expected a duration of zero or more seconds, got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from 536870912, "512m", "1g", "256MiB"."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like \"512m\", got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"expected a positive size, got {value}")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
            size = int(float(match.group(1)) * scale[match.group(2).lower()])
            if size > 0:
                return size
    raise ValueError(f"expected a size like \"512m\" or \"2g\", got {value!r}")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose reads them: comments, `export`, optional quotes."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ValueError(f"line {number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = re.search(r"\(at line (\d+), column (\d+)\)", message)
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
        if where is None and "end of document" in message:
            lines = text.splitlines() or [""]
            where = re.search(r"(\d+):(\d+)", f"{len(lines)}:{len(lines[-1]) + 1}")
        if where:
            raise ConfigError(
                [f"{path}:{where.group(1)}:{where.group(2)}: invalid TOML: {reason}"]
            ) from None
        raise ConfigError([f"{path}: invalid TOML: {reason}"]) from None


# ---------------------------------------------------------------------------- merging


Origins = dict[tuple[str, ...], str]


def merge(base: dict[str, Any], override: Mapping[str, Any], origin: str, origins: Origins,
          path: tuple[str, ...] = ()) -> dict[str, Any]:
    """Deep-merge tables; any other value (lists included) is replaced, as compose does."""
    for key, value in override.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value, origin, origins, here)
        else:
            base[key] = value
            _record_origins(value, origin, origins, here)
    return base


def _record_origins(value: object, origin: str, origins: Origins, path: tuple[str, ...]) -> None:
    origins[path] = origin
    if isinstance(value, dict):
        for key, child in value.items():
            _record_origins(child, origin, origins, (*path, key))


# ---------------------------------------------------------------------------- expansion


def expand(value: Any, variables: Mapping[str, str], problems: list[str],
           where: Callable[[tuple[str, ...]], str], path: tuple[str, ...] = ()) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string; `$$` is a literal `$`."""
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            found = variables.get(name)
            if found is not None and (found != "" or default is None):
                return found
            if default is not None:
                return default
            problems.append(
                f"{where(path)}: ${{{name}}} is not set; set it in the environment or .env, "
                f"or write ${{{name}:-default}}"
            )
            return ""
        return _VAR_RE.sub(replace, value)
    if isinstance(value, dict):
        return {k: expand(v, variables, problems, where, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, variables, problems, where, (*path, str(i))) for i, v in enumerate(value)]
    return value


# ---------------------------------------------------------------------------- validation


@dataclass
class _Checker:
    """Collects problems while building typed values out of one resource's raw table."""

    where: Callable[[tuple[str, ...]], str]
    problems: list[str] = field(default_factory=list)

    def fail(self, path: tuple[str, ...], message: str) -> None:
        self.problems.append(f"{self.where(path)}: {message}")

    def unknown_keys(self, table: Mapping[str, Any], allowed: set[str], path: tuple[str, ...],
                     context: str) -> None:
        for key in table:
            if key in allowed:
                continue
            guess = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            self.fail((*path, key), f"unknown key in {context}{hint}")

    def string(self, table: Mapping[str, Any], key: str, path: tuple[str, ...],
               default: str | None = None) -> str | None:
        value = table.get(key, default)
        if value is None or isinstance(value, str):
            return value
        self.fail((*path, key), f"expected a string, got {_type_name(value)}")
        return default

    def boolean(self, table: Mapping[str, Any], key: str, path: tuple[str, ...],
                default: bool) -> bool:
        value = table.get(key, default)
        if isinstance(value, bool):
            return value
        self.fail((*path, key), f"expected true or false, got {_type_name(value)}")
        return default

    def duration(self, table: Mapping[str, Any], key: str, path: tuple[str, ...],
                 default: float, minimum: float = 0.0) -> float:
        if key not in table:
            return default
        try:
            seconds = parse_duration(table[key])
        except ValueError as exc:
            self.fail((*path, key), str(exc))
            return default
        if seconds < minimum:
            self.fail((*path, key), f"must be at least {minimum:g}s, got {table[key]!r}")
            return default
        return seconds

    def port(self, value: object, path: tuple[str, ...]) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"expected a port number, got {_type_name(value)}")
            return None
        if not 1 <= value <= 65535:
            self.fail(path, f"port {value} is out of range (1-65535)")
            return None
        return value

    def command(self, table: Mapping[str, Any], key: str, path: tuple[str, ...]
                ) -> tuple[str, ...] | None:
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            if not value:
                self.fail((*path, key), "must not be empty")
                return None
            return tuple(value)
        self.fail((*path, key), 'expected a list of strings, like ["redis-server", "--port", "6380"]')
        return None


def _type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _parse_ports(raw: object, runtime: str, path: tuple[str, ...], check: _Checker
                 ) -> tuple[PortSpec, ...]:
    if not isinstance(raw, list):
        check.fail(path, f"expected a list of ports, got {_type_name(raw)}")
        return ()
    ports: list[PortSpec] = []
    for index, item in enumerate(raw):
        here = (*path, str(index))
        if isinstance(item, int) and not isinstance(item, bool):
            number = check.port(item, here)
            if number is not None:
                ports.append(PortSpec(host_port=number, container_port=number))
            continue
        if not isinstance(item, str):
            check.fail(here, f"expected a port like 5433 or \"127.0.0.1:5433:5432\", got {_type_name(item)}")
            continue
        spec, _, protocol = item.partition("/")
        protocol = protocol or "tcp"
        if protocol not in ("tcp", "udp"):
            check.fail(here, f"protocol must be tcp or udp, got {protocol!r}")
            continue
        parts = spec.rsplit(":", 2) if not spec.startswith("[") else spec.split("]:")
        host_ip = "127.0.0.1"
        if len(parts) == 3:
            host_ip, host_text, container_text = parts
        elif len(parts) == 2:
            host_text, container_text = parts
        else:
            host_text = container_text = parts[0]
        numbers = []
        for text in (host_text, container_text):
            if not text.strip().isdigit():
                check.fail(here, f"expected a port like 5433 or \"127.0.0.1:5433:5432\", got {item!r}")
                break
            number = check.port(int(text), here)
            if number is None:
                break
            numbers.append(number)
        else:
            ports.append(PortSpec(host_port=numbers[0], container_port=numbers[1],
                                  host_ip=host_ip or "127.0.0.1", protocol=protocol))
    if runtime == "process":
        for port in ports:
            if port.host_port != port.container_port:
                check.fail(path, f"a process cannot remap ports ({port.host_port} != {port.container_port})")
    return tuple(ports)


def _parse_depends(raw: object, path: tuple[str, ...], check: _Checker) -> tuple[Dependency, ...]:
    deps: list[Dependency] = []
    if isinstance(raw, list):
        for index, item in enumerate(raw):
            if isinstance(item, str):
                deps.append(Dependency(item))
            else:
                check.fail((*path, str(index)), f"expected a resource name, got {_type_name(item)}")
        return tuple(deps)
    if not isinstance(raw, dict):
        check.fail(path, "expected a list of names or a table of name = \"started\" | \"healthy\" | \"completed\"")
        return ()
    conditions = [c.value for c in Condition]
    for name, value in raw.items():
        here = (*path, name)
        restart = False
        if isinstance(value, dict):
            check.unknown_keys(value, {"condition", "restart"}, here, "a dependency")
            restart = check.boolean(value, "restart", here, False)
            value = value.get("condition", "healthy")
            here = (*here, "condition")
        if not isinstance(value, str) or value not in conditions:
            check.fail(here, f"condition must be one of {', '.join(conditions)}, got {value!r}")
            continue
        deps.append(Dependency(name, Condition(value), restart))
    return tuple(deps)


def _parse_probe(raw: object, resource: str, ports: tuple[PortSpec, ...], path: tuple[str, ...],
                 check: _Checker) -> ProbeSpec | None:
    if not isinstance(raw, dict):
        check.fail(path, f"expected a table, got {_type_name(raw)}")
        return None
    check.unknown_keys(raw, PROBE_KEYS, path, "a health probe")
    kind = raw.get("probe")
    if kind not in PROBE_KINDS:
        shown = "missing" if kind is None else repr(kind)
        check.fail((*path, "probe"), f"must be one of {', '.join(PROBE_KINDS)}, got {shown}")
        return None
    host = check.string(raw, "host", path, "127.0.0.1") or "127.0.0.1"
    port: int | None = None
    if "port" in raw:
        port = check.port(raw["port"], (*path, "port"))
    elif ports:
        port = ports[0].host_port
    url = check.string(raw, "url", path)
    command = check.command(raw, "command", path) or ()
    pattern = check.string(raw, "pattern", path)
    statuses: tuple[int, ...] = ()
    if "expect_status" in raw:
        value = raw["expect_status"]
        items = value if isinstance(value, list) else [value]
        if items and all(isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in items):
            statuses = tuple(items)
        else:
            check.fail((*path, "expect_status"), f"expected an HTTP status (100-599) or a list of them, got {value!r}")
    if kind in ("tcp", "postgres", "redis") and port is None and "port" not in raw:
        check.fail((*path, "port"), f"a {kind} probe needs a port (set health.port or ports)")
    if kind == "http" and url is None:
        if port is None and "port" not in raw:
            check.fail((*path, "url"), "an http probe needs a url (or a port to probe /)")
        elif port is not None:
            url = f"http://{host}:{port}/"
    if url is not None and not re.match(r"^https?://", url):
        check.fail((*path, "url"), f"expected an http:// or https:// URL, got {url!r}")
    if kind == "exec" and not command and "command" not in raw:
        check.fail((*path, "command"), "an exec probe needs a command")
    if kind == "log":
        if pattern is None:
            check.fail((*path, "pattern"), "a log probe needs a pattern")
        else:
            try:
                re.compile(pattern)
            except re.error as exc:
                check.fail((*path, "pattern"), f"invalid regular expression: {exc}")
    threshold = raw.get("failure_threshold", 3)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        check.fail((*path, "failure_threshold"), f"expected a whole number of 1 or more, got {threshold!r}")
        threshold = 3
    return ProbeSpec(
        kind=kind, host=host, port=port, url=url, expect_status=statuses, command=command,
        pattern=pattern, inside=check.boolean(raw, "inside", path, False),
        user=check.string(raw, "user", path, "postgres") or "postgres",
        database=check.string(raw, "database", path),
        password=check.string(raw, "password", path),
        interval=check.duration(raw, "interval", path, 0.025, minimum=0.001),
        timeout=check.duration(raw, "timeout", path, 1.0, minimum=0.001),
        liveness_interval=check.duration(raw, "liveness_interval", path, 10.0, minimum=0.01),
        failure_threshold=threshold,
    )


def _parse_volumes(raw: object, project_dir: Path, path: tuple[str, ...], check: _Checker
                   ) -> tuple[VolumeSpec, ...]:
    if not isinstance(raw, list):
        check.fail(path, f"expected a list like [\"pgdata:/var/lib/postgresql/data\"], got {_type_name(raw)}")
        return ()
    volumes: list[VolumeSpec] = []
    for index, item in enumerate(raw):
        here = (*path, str(index))
        if not isinstance(item, str) or item.count(":") not in (1, 2):
            check.fail(here, f"expected \"source:/target[:ro]\", got {item!r}")
            continue
        source, target, *mode = item.split(":")
        if not target.startswith("/"):
            check.fail(here, f"the target must be an absolute path in the container, got {target!r}")
            continue
        if mode and mode[0] not in ("ro", "rw"):
            check.fail(here, f"mode must be ro or rw, got {mode[0]!r}")
            continue
        if source.startswith((".", "~")) or "/" in source:
            source = str((project_dir / Path(source).expanduser()).resolve())
        elif not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", source):
            check.fail(here, f"invalid volume name {source!r}")
            continue
        volumes.append(VolumeSpec(source, target, read_only=bool(mode) and mode[0] == "ro"))
    return tuple(volumes)


def _parse_resource(name: str, raw: object, project_dir: Path, variables: Mapping[str, str],
                    check: _Checker) -> ResourceSpec | None:
    path = ("resources", name)
    if not NAME_RE.match(name):
        check.fail(path, "a resource name is lowercase letters, digits, '-', '_' or '.', "
                         "starting with a letter or digit")
        return None
    if not isinstance(raw, dict):
        check.fail(path, f"expected a table, got {_type_name(raw)}")
        return None
    runtime = raw.get("runtime", "process")
    if runtime not in RUNTIMES:
        check.fail((*path, "runtime"), f"must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        return None
    check.unknown_keys(raw, RESOURCE_KEYS, path, "a resource")
    if runtime == "process":
        for key in sorted(DOCKER_ONLY_KEYS & raw.keys()):
            check.fail((*path, key), 'only applies to runtime = "docker"')

    command = check.command(raw, "command", path)
    image = check.string(raw, "image", path)
    if runtime == "process" and command is None and "command" not in raw:
        check.fail((*path, "command"), "a process resource needs a command")
    if runtime == "docker" and not image and "image" not in raw:
        check.fail((*path, "image"), "a docker resource needs an image")

    env: dict[str, str] = {}
    if "env_file" in raw:
        env_file = raw["env_file"]
        if isinstance(env_file, str):
            env_path = (project_dir / env_file).resolve()
            try:
                env.update(read_env_file(env_path))
            except FileNotFoundError:
                check.fail((*path, "env_file"), f"file not found: {env_path}")
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                check.fail((*path, "env_file"), f"{env_path}: {exc}")
        else:
            check.fail((*path, "env_file"), f"expected a path, got {_type_name(env_file)}")
    raw_env = raw.get("env", {})
    if isinstance(raw_env, dict):
        for key, value in raw_env.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            if isinstance(value, int | float):
                value = str(value)
            if not isinstance(value, str):
                check.fail((*path, "env", key), f"expected a string, got {_type_name(value)}")
                continue
            env[key] = value
    else:
        check.fail((*path, "env"), f"expected a table of NAME = \"value\", got {_type_name(raw_env)}")

    cwd = check.string(raw, "cwd", path)
    if cwd is not None:
        cwd = str((project_dir / Path(cwd).expanduser()).resolve())

    ports = _parse_ports(raw["ports"], runtime, (*path, "ports"), check) if "ports" in raw else ()
    depends = _parse_depends(raw.get("depends_on", []), (*path, "depends_on"), check)
    health = _parse_probe(raw["health"], name, ports, (*path, "health"), check) if "health" in raw else None
    if health is not None and health.inside and runtime != "docker":
        check.fail((*path, "health", "inside"), 'only applies to runtime = "docker"')

    stop_signal = check.string(raw, "stop_signal", path, "SIGTERM") or "SIGTERM"
    normalized = stop_signal.upper() if stop_signal.upper().startswith("SIG") else "SIG" + stop_signal.upper()
    if normalized not in signal.Signals.__members__:
        check.fail((*path, "stop_signal"), f"unknown signal {stop_signal!r} (try SIGTERM, SIGINT, SIGQUIT)")
        normalized = "SIGTERM"

    restart_raw = raw.get("restart", "no")
    policies = [p.value for p in RestartPolicy]
    if restart_raw is False:
        restart_raw = "no"
    if restart_raw not in policies:
        check.fail((*path, "restart"), f"must be one of {', '.join(policies)}, got {restart_raw!r}")
        restart_raw = "no"

    entrypoint = check.command(raw, "entrypoint", path)
    volumes = _parse_volumes(raw["volumes"], project_dir, (*path, "volumes"), check) if "volumes" in raw else ()
    memory_limit, memory_grace = _parse_memory(raw, runtime, path, check)
    models = _parse_models(raw, path, check)

    return ResourceSpec(
        name=name, runtime=runtime, command=command or (), cwd=cwd,
        env=tuple(sorted(env.items())), ports=ports, depends_on=depends,
        start_timeout=check.duration(raw, "start_timeout", path, 60.0, minimum=0.01),
        stop_signal=normalized,
        stop_timeout=check.duration(raw, "stop_timeout", path, 10.0),
        restart=RestartPolicy(restart_raw),
        restart_delay=check.duration(raw, "restart_delay", path, 0.5),
        restart_max_delay=check.duration(raw, "restart_max_delay", path, 30.0),
        restart_burst=_whole(raw, "restart_burst", path, check, 5),
        restart_window=check.duration(raw, "restart_window", path, 60.0, minimum=0.01),
        enabled=check.boolean(raw, "enabled", path, True),
        health=health, user=check.string(raw, "user", path),
        image=image, entrypoint=entrypoint, volumes=volumes, memory_limit=memory_limit,
        memory_grace=memory_grace, models=models, description=check.string(raw, "description", path, "") or "",
    )


def _parse_memory(raw: Mapping[str, Any], runtime: str, path: tuple[str, ...], check: _Checker
                  ) -> tuple[int | None, float]:
    """memory_limit (any runtime) and memory_grace (the process watchdog's patience)."""
    limit = _size(raw, "memory_limit", path, check)
    grace = check.duration(raw, "memory_grace", path, 10.0)
    if "memory_grace" in raw:
        if runtime != "process":
            check.fail((*path, "memory_grace"), 'only applies to runtime = "process" (the engine enforces a '
                                                "container's memory_limit)")
        elif "memory_limit" not in raw:
            check.fail((*path, "memory_grace"), "needs a memory_limit to be over")
    return limit, grace


def _size(raw: Mapping[str, Any], key: str, path: tuple[str, ...], check: _Checker) -> int | None:
    if key not in raw:
        return None
    try:
        return parse_size(raw[key])
    except ValueError as exc:
        check.fail((*path, key), str(exc))
        return None


def _whole(raw: Mapping[str, Any], key: str, path: tuple[str, ...], check: _Checker,
           default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        check.fail((*path, key), f"expected a whole number of 1 or more, got {value!r}")
        return default
    return value


def _parse_models(raw: Mapping[str, Any], path: tuple[str, ...], check: _Checker) -> ModelsSpec | None:
    keys = {"models", "model_load", "keep_alive", "model_concurrency"}
    if not keys & raw.keys():
        return None
    names = raw.get("models", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        check.fail((*path, "models"), 'expected a list of model names, like ["llama3.1:8b"]')
        names = []
    load = raw.get("model_load", "background")
    loads = [m.value for m in ModelLoad]
    if load not in loads:
        check.fail((*path, "model_load"), f"must be one of {', '.join(loads)}, got {load!r}")
        load = "background"
    keep_alive = raw.get("keep_alive", "5m")
    if isinstance(keep_alive, int) and not isinstance(keep_alive, bool):
        keep_alive = f"{keep_alive}s"
    if not isinstance(keep_alive, str):
        check.fail((*path, "keep_alive"), f"expected a duration like \"5m\" or -1, got {keep_alive!r}")
        keep_alive = "5m"
    concurrency = raw.get("model_concurrency", 1)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        check.fail((*path, "model_concurrency"), f"expected a whole number of 1 or more, got {concurrency!r}")
        concurrency = 1
    return ModelsSpec(tuple(names), ModelLoad(load), keep_alive, concurrency)


def _check_port_conflicts(resources: Mapping[str, ResourceSpec], check: _Checker) -> None:
    claimed: dict[tuple[int, str], str] = {}
    for name, resource in resources.items():
        if not resource.enabled:
            continue
        for port in resource.ports:
            key = (port.host_port, port.protocol)
            if key in claimed and claimed[key] != name:
                check.fail(("resources", name, "ports"),
                           f"host port {port.host_port} is already claimed by resource '{claimed[key]}'")
            claimed.setdefault(key, name)


def _check_dependencies(resources: Mapping[str, ResourceSpec], check: _Checker) -> None:
    for name, resource in resources.items():
        for dep in resource.depends_on:
            here = ("resources", name, "depends_on")
            if dep.name == name:
                check.fail(here, f"'{name}' depends on itself")
            elif dep.name not in resources:
                guess = difflib.get_close_matches(dep.name, list(resources), n=1, cutoff=0.6)
                hint = f" (did you mean '{guess[0]}'?)" if guess else ""
                check.fail(here, f"unknown resource '{dep.name}'{hint}")
            elif resource.enabled and not resources[dep.name].enabled:
                check.fail(here, f"depends on '{dep.name}', which has enabled = false")
    edges = {n: [d.name for d in r.depends_on if d.name in resources and d.name != n]
             for n, r in resources.items()}
    cycle = graph.find_cycle(edges)
    if cycle:
        check.fail(("resources", cycle[0], "depends_on"), "dependency cycle: " + " -> ".join(cycle))


# ---------------------------------------------------------------------------- entry point


def default_state_dir(project: str, environ: Mapping[str, str]) -> Path:
    # Under systemd (StateDirectory=vrooli) the service manager says where state goes.
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0]) / project
    base = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME", "~")).expanduser() / ".local" / "state")
    return Path(base) / "vrooli" / project


def find_files(explicit: list[str] | None, cwd: Path | None = None) -> list[Path]:
    """The files to load: those given with -f, or ./resources.toml."""
    if explicit:
        return [Path(f).expanduser().absolute() for f in explicit]
    return [((cwd or Path.cwd()) / DEFAULT_FILE).absolute()]


def load(files: list[Path], environ: Mapping[str, str] | None = None) -> ProjectSpec:
    """Read, merge, expand and validate; raise ConfigError listing every problem."""
    environ = dict(os.environ if environ is None else environ)
    if not files:
        raise ConfigError(["no resources.toml given"])
    origins: Origins = {}
    merged: dict[str, Any] = {}
    for path in files:
        merge(merged, _read_toml(path), str(path), origins)
    project_dir = files[0].parent

    variables: dict[str, str] = {}
    dotenv = project_dir / ".env"
    if dotenv.is_file():
        try:
            variables.update(read_env_file(dotenv))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError([f"{dotenv}: {exc}"]) from None
    variables.update(environ)  # the environment wins over .env, as in compose

    def where(path: tuple[str, ...]) -> str:
        for cut in range(len(path), 0, -1):
            if path[:cut] in origins:
                return f"{origins[path[:cut]]}: {'.'.join(path)}"
        return f"{files[0]}: {'.'.join(path)}" if path else str(files[0])

    check = _Checker(where)
    merged = expand(merged, variables, check.problems, where)

    check.unknown_keys(merged, {"project", "resources"}, (), "the file")
    project_raw = merged.get("project", {})
    if not isinstance(project_raw, dict):
        check.fail(("project",), f"expected a table, got {_type_name(project_raw)}")
        project_raw = {}
    check.unknown_keys(project_raw, PROJECT_KEYS, ("project",), "[project]")
    name = check.string(project_raw, "name", ("project",), project_dir.name or "default") or "default"
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
        check.fail(("project", "name"), f"expected letters, digits, '-', '_' or '.', got {name!r}")
    state_text = check.string(project_raw, "state_dir", ("project",))
    state_dir = (project_dir / Path(state_text).expanduser()).resolve() if state_text else \
        default_state_dir(name, environ)
    health_listen = check.string(project_raw, "health_listen", ("project",), "127.0.0.1:9500") or ""
    if not re.match(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$", health_listen) or \
            not 0 <= int(health_listen.rsplit(":", 1)[1]) <= 65535:
        check.fail(("project", "health_listen"), f"expected HOST:PORT like \"127.0.0.1:9500\", got {health_listen!r}")
    health_enabled = check.boolean(project_raw, "health_enabled", ("project",), True)
    budget = _size(project_raw, "memory_budget", ("project",), check)
    budget_peak = _size(project_raw, "memory_budget_peak", ("project",), check)
    if budget is not None and budget_peak is not None and budget_peak < budget:
        check.fail(("project", "memory_budget_peak"),
                   f"must be at least memory_budget ({project_raw['memory_budget']!r}), "
                   f"got {project_raw['memory_budget_peak']!r}")

    resources_raw = merged.get("resources", {})
    if not isinstance(resources_raw, dict):
        check.fail(("resources",), f"expected tables [resources.NAME], got {_type_name(resources_raw)}")
        resources_raw = {}
    if not resources_raw and not check.problems:
        check.fail(("resources",), "no resources declared; add a [resources.NAME] table")
    resources: dict[str, ResourceSpec] = {}
    for res_name, res_raw in resources_raw.items():
        spec = _parse_resource(res_name, res_raw, project_dir, variables, check)
        if spec is not None:
            resources[res_name] = spec
    _check_dependencies(resources, check)
    _check_port_conflicts(resources, check)
    if check.problems:
        raise ConfigError(_dedupe(check.problems))
    return ProjectSpec(
        name=name, state_dir=state_dir, project_dir=project_dir,
        files=tuple(files), resources=resources,
        health_listen=health_listen, health_enabled=health_enabled,
        memory_budget=budget, memory_budget_peak=budget_peak,
    )


def _dedupe(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))
