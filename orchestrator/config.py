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
    DEFAULT_LOG_MAX_FILES,
    DEFAULT_LOG_MAX_SIZE,
    Condition,
    Dependency,
    ExportSpec,
    ModelLoad,
    ModelsSpec,
    PortSpec,
    ProbeSpec,
    ProjectSpec,
    ResourceSpec,
    RestartPolicy,
    VolumeSpec,
)
from orchestrator.variables import InterpolationError, escaped_short, interpolate, read_env_file

DEFAULT_FILE = "resources.toml"

PROJECT_KEYS = {"name", "state_dir", "health_listen", "health_enabled", "memory_budget", "memory_budget_peak"}
COMMON_KEYS = {
    "runtime", "command", "cwd", "env", "env_file", "ports", "depends_on", "start_timeout",
    "stop_signal", "stop_timeout", "restart", "restart_delay", "restart_max_delay",
    "restart_burst", "restart_window", "enabled", "health", "user", "description",
    "log_max_size", "log_max_files", "models", "model_load", "keep_alive", "model_concurrency", "export",
    "memory_limit", "memory_grace",
}
DOCKER_ONLY_KEYS = {"image", "entrypoint", "volumes"}
RESOURCE_KEYS = COMMON_KEYS | DOCKER_ONLY_KEYS
RUNTIMES = ("process", "docker", "external")
# An external resource is only probed: keys about starting, stopping or restarting it do not apply.
EXTERNAL_KEYS = {"runtime", "depends_on", "start_timeout", "enabled", "health", "description", "export"}
EXPORT_KEYS = {"image", "command", "healthcheck", "env"}
# fullmatch, never `$`: `$` also matches before a trailing newline ("web\n" would pass).
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}", re.ASCII)
PROJECT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
MAX_DEPTH = 32  # tables and lists deeper than this are refused before anything recurses into them
MAX_DURATION = 365 * 24 * 3600.0  # a year: far beyond any timeout, well inside every OS timer
MAX_COUNT = 1_000_000  # restart_burst, failure_threshold, model_concurrency
MAX_SIZE = 1 << 50  # 1 PiB: memory_limit beyond this is a typo (Docker takes an int64)
_DURATION_PART = re.compile(r" *(\d+(?:\.\d*)?|\.\d+) *(h|ms|m|s|us|µs|ns)", re.ASCII)
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_NUMBER_RE = re.compile(r" *(\d{1,30}(?:\.\d{0,30})?|\.\d{1,30}) *", re.ASCII)
_SIZE_RE = re.compile(r"\s*(\d{1,30}(?:\.\d{1,30})?)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE | re.ASCII)


# ---------------------------------------------------------------------------- parsing


def parse_duration(value: object) -> float:
    """Seconds from 5, 0.25, "250ms", "2s", "1m30s", "1h2m3.5s". Raises ValueError with the reason.

    Strings follow Go's time.ParseDuration (as compose does): numbers with units h, m, s,
    ms, us, ns, one after another; a bare number means seconds.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 2 or \"250ms\", got {value!r}")
    if isinstance(value, int):
        seconds = float(value) if abs(value) <= MAX_DURATION else float("inf") * (1 if value > 0 else -1)
    elif isinstance(value, float):
        seconds = value
    elif isinstance(value, str):
        seconds = _duration_text(value)
    else:
        raise ValueError(f"expected a duration like 2 or \"250ms\", got {_type_name(value)}")
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"expected a duration of zero or more seconds, got {_show(value)}")
    if seconds > MAX_DURATION:
        raise ValueError(f"expected a duration of at most 8760h (a year), got {_show(value)}")
    return seconds


def _duration_text(text: str) -> float:
    bare = _NUMBER_RE.fullmatch(text)
    if bare:
        return float(bare.group(1))
    seconds, position = 0.0, 0
    while position < len(text.rstrip(" ")) or position == 0:
        part = _DURATION_PART.match(text, position)
        if part is None or len(part.group(1)) > 30:
            raise ValueError(f"expected a duration like \"250ms\", \"2s\", \"1m\" or \"1m30s\", got {_show(text)}")
        seconds += float(part.group(1)) * _DURATION_UNITS[part.group(2)]
        position = part.end()
    return seconds


def parse_size(value: object) -> int:
    """Bytes from 536870912, "512m", "1g", "256MiB"."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like \"512m\", got {value!r}")
    size = 0.0
    if isinstance(value, int):
        size = value if value <= MAX_SIZE else MAX_SIZE + 1
    elif isinstance(value, str):
        match = _SIZE_RE.fullmatch(value)
        if match:
            scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
            size = float(match.group(1)) * scale[match.group(2).lower()]
    if size > MAX_SIZE:
        raise ValueError(f"expected a size of at most 1024t, got {_show(value)}")
    if size >= 1:
        return int(size)
    raise ValueError(f"expected a size like \"512m\" or \"2g\", got {_show(value)}")


def _show(value: object, limit: int = 60) -> str:
    """A value as an error line quotes it: repr (one line, escapes visible), cut to `limit`."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**limit else "a huge number"
    return text if len(text) <= limit else text[:limit - 5] + "…" + text[-4:]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError([f"{path}: invalid TOML: arrays or inline tables nested too deeply "
                           f"(at most {MAX_DEPTH} levels)"]) from None
    except ValueError as exc:
        if isinstance(exc, tomllib.TOMLDecodeError):
            raise ConfigError([_toml_error(path, text, exc)]) from None
        # int() refuses numbers of more than 4,300 digits before tomllib can say where
        raise ConfigError([_huge_number_error(path, text)]) from None


def _toml_error(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    where = re.search(r"\(at line (\d+), column (\d+)\)", message)
    reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
    if where is None and "end of document" in message:
        lines = text.splitlines() or [""]
        where = re.search(r"(\d+):(\d+)", f"{len(lines)}:{len(lines[-1]) + 1}")
    if where:
        return f"{path}:{where.group(1)}:{where.group(2)}: invalid TOML: {reason}"
    return f"{path}: invalid TOML: {reason}"


def _huge_number_error(path: Path, text: str) -> str:
    found = re.search(r"[0-9_]{4000,}", text)
    if found is None:
        return f"{path}: invalid TOML: a number too long to read"
    line = text.count("\n", 0, found.start()) + 1
    column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
    return f"{path}:{line}:{column}: invalid TOML: a number of {len(found.group(0))} digits"


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> tuple[str, ...] | None:
    """The key path of the first value nested deeper than `limit`, found without recursion."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) > limit:
            return path[:limit]
        if isinstance(item, dict):
            stack.extend((child, (*path, str(key))) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, (*path, str(index))) for index, child in enumerate(item))
    return None


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
    """Interpolate every string (see `interpolate`); each failure is one problem line."""
    if isinstance(value, str):
        try:
            return interpolate(value, variables)
        except InterpolationError as exc:
            problems.append(f"{where(path)}: {exc}")
            return ""
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
        line = f"{self.where(path)}: {message}"
        if not line.isprintable():  # one problem, one line: whatever a value held
            line = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in line)
        self.problems.append(line)

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
        try:
            ports.append(parse_port(item))
        except ValueError as exc:
            check.fail(here, str(exc))
    if runtime == "process":
        for port in ports:
            if port.host_port != port.container_port:
                check.fail(path, f"a process cannot remap ports ({port.host_port} != {port.container_port})")
    return tuple(ports)


def parse_port(text: str) -> PortSpec:
    """ "[HOST_IP:]HOST:CONTAINER[/PROTOCOL]" as docker writes it, HOST_IP v4 or [v6]."""
    usage = f"expected a port like 5433, \"127.0.0.1:5433:5432\" or \"[::1]:5433:5432\", got {_show(text)}"
    spec, slash, protocol = text.partition("/")
    protocol = protocol if slash else "tcp"
    if protocol not in ("tcp", "udp"):
        raise ValueError(f"protocol must be tcp or udp, got {_show(protocol)}")
    host_ip = "127.0.0.1"
    if spec.startswith("["):
        inside, bracket, rest = spec[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(usage)
        host_ip, numbers = _ip_address(inside, text, version=6), rest[1:].split(":")
    else:
        numbers = spec.split(":")
        if len(numbers) > 3:
            raise ValueError(f"{usage} (an IPv6 address goes in brackets)")
        if len(numbers) == 3:
            given = numbers.pop(0)
            host_ip = _ip_address(given, text) if given else host_ip
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or not all(n.isascii() and n.isdigit() and len(n) <= 5 for n in numbers):
        raise ValueError(usage)
    host_port, container_port = (int(n) for n in numbers)
    for number in (host_port, container_port):
        if not 1 <= number <= 65535:
            raise ValueError(f"port {number} is out of range (1-65535)")
    return PortSpec(host_port=host_port, container_port=container_port, host_ip=host_ip, protocol=protocol)


def _ip_address(text: str, whole: str, version: int = 4) -> str:
    import ipaddress  # ~2 ms, and most files write no host address

    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        hint = "; IPv6 goes in brackets: \"[::1]:5433:5432\"" if ":" in text else \
            "; Docker binds an IP address, not a name: use 127.0.0.1 for localhost"
        raise ValueError(f"the host part of {_show(whole)} is not an IP address{hint}") from None
    if address.version != version:
        raise ValueError(f"an IPv{address.version} address is written "
                         + ("in brackets: \"[::1]:5433:5432\"" if address.version == 6 else "without brackets"))
    return str(address)


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
    """A `health` table: the keys every kind takes, then what its kind (probes/kinds.py) requires."""
    from orchestrator.probes.kinds import KINDS, ProbeDraft, all_keys, default

    if not isinstance(raw, dict):
        check.fail(path, f"expected a table, got {_type_name(raw)}")
        return None
    check.unknown_keys(raw, set(all_keys()), path, "a health probe")
    kind = KINDS.get(raw["probe"]) if isinstance(raw.get("probe"), str) else None
    if kind is None:
        shown = "missing" if raw.get("probe") is None else repr(raw["probe"])
        check.fail((*path, "probe"), f"must be one of {', '.join(KINDS)}, got {shown}")
        return None
    host = _probe_host(raw, ports, path, check)
    port: int | None = None
    if "port" in raw:
        port = check.port(raw["port"], (*path, "port"))
    elif ports:
        port = ports[0].host_port
    url = check.string(raw, "url", path)
    command = check.command(raw, "command", path) or ()
    pattern = check.string(raw, "pattern", path)
    statuses = _expect_status(raw, path, check)
    if kind.needs_port and port is None and "port" not in raw:
        check.fail((*path, "port"), f"a {kind.name} probe needs a port (set health.port or ports)")
    if kind.url_from_port and url is None:
        if port is None and "port" not in raw:
            check.fail((*path, "url"), f"an {kind.name} probe needs a url (or a port to probe /)")
        elif port is not None:
            url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
    if url is not None:
        _check_url(url, (*path, "url"), check)
    if kind.validate is not None:
        kind.validate(ProbeDraft(raw, port, url), lambda key, message: check.fail((*path, key), message))
    threshold = _whole(raw, "failure_threshold", path, check, default(kind, "failure_threshold"))
    return ProbeSpec(
        kind=kind.name, host=host, port=port, url=url, expect_status=statuses, command=command,
        pattern=pattern, inside=check.boolean(raw, "inside", path, default(kind, "inside")),
        user=check.string(raw, "user", path) or default(kind, "user"),
        database=check.string(raw, "database", path),
        password=check.string(raw, "password", path),
        interval=check.duration(raw, "interval", path, default(kind, "interval"), minimum=0.001),
        timeout=check.duration(raw, "timeout", path, default(kind, "timeout"), minimum=0.001),
        liveness_interval=check.duration(raw, "liveness_interval", path, default(kind, "liveness_interval"),
                                         minimum=0.01),
        failure_threshold=threshold,
    )


def _expect_status(raw: Mapping[str, Any], path: tuple[str, ...], check: _Checker) -> tuple[int, ...]:
    if "expect_status" not in raw:
        return ()
    value = raw["expect_status"]
    items = value if isinstance(value, list) else [value]
    if items and all(isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in items):
        return tuple(items)
    check.fail((*path, "expect_status"), f"expected an HTTP status (100-599) or a list of them, got {value!r}")
    return ()


def _probe_host(raw: Mapping[str, Any], ports: tuple[PortSpec, ...], path: tuple[str, ...],
                check: _Checker) -> str:
    """`host`, else the address the first port is published on (a probe of a port bound to
    [::1] only must not knock on 127.0.0.1)."""
    default = ports[0].probe_host if ports else "127.0.0.1"
    host = check.string(raw, "host", path, default)
    if host is None:
        return default
    from orchestrator.probes.url import UrlError, check_host

    try:
        check_host(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except UrlError as exc:
        check.fail((*path, "host"), f"{exc}, got {_show(host)}")
        return default
    return host.strip("[]")


def _check_url(url: str, path: tuple[str, ...], check: _Checker) -> None:
    """Parse with the probe's own parser, so a URL that passes here cannot fail it later.
    The line never quotes the URL: it may hold a password."""
    from orchestrator.probes.url import Target, UrlError

    try:
        Target.parse(url)
    except UrlError as exc:
        check.fail(path, f"invalid URL: {exc}")


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
            source = str((project_dir / _home(source)).resolve())
        elif not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", source):
            check.fail(here, f"invalid volume name {source!r}")
            continue
        volumes.append(VolumeSpec(source, target, read_only=bool(mode) and mode[0] == "ro"))
    return tuple(volumes)


def _parse_resource(name: str, raw: object, project_dir: Path, variables: Mapping[str, str],
                    check: _Checker) -> ResourceSpec | None:
    path = ("resources", name)
    if not NAME_RE.fullmatch(name):
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
    if runtime == "external":
        _check_external(raw, path, check)
    if runtime == "process":
        for key in sorted(DOCKER_ONLY_KEYS & raw.keys()):
            check.fail((*path, key), 'only applies to runtime = "docker"')

    command = check.command(raw, "command", path)
    image = check.string(raw, "image", path)
    if runtime == "process" and command is None and "command" not in raw:
        check.fail((*path, "command"), "a process resource needs a command")
    if runtime == "docker" and not image and "image" not in raw:
        check.fail((*path, "image"), "a docker resource needs an image")

    env = _read_env_file(raw["env_file"], project_dir, variables, (*path, "env_file"), check) \
        if "env_file" in raw else {}
    env.update(_parse_env(raw.get("env", {}), (*path, "env"), check))
    cwd = _parse_cwd(raw, runtime, project_dir, path, check)

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
        health=health, user=_parse_user(raw, path, check),
        image=image, entrypoint=entrypoint, volumes=volumes, memory_limit=memory_limit,
        memory_grace=memory_grace, models=models, description=check.string(raw, "description", path, "") or "",
        export=_parse_export(raw["export"], (*path, "export"), check) if "export" in raw else None,
        log_max_size=_log_max_size(raw, path, check), log_max_files=_log_max_files(raw, path, check),
    )


def _check_external(raw: Mapping[str, Any], path: tuple[str, ...], check: _Checker) -> None:
    from orchestrator.probes.kinds import KINDS

    for key in sorted((raw.keys() & RESOURCE_KEYS) - EXTERNAL_KEYS):
        check.fail((*path, key), 'does not apply to runtime = "external" (vrooli never starts, stops or restarts it)')
    health = raw.get("health")
    if health is None:
        check.fail((*path, "health"), "an external resource needs a probe (host and port, or url): "
                                      "it is how vrooli knows it is there")
    elif isinstance(health, dict) and getattr(KINDS.get(str(health.get("probe"))), "reads_output", False):
        # address probes first, then the rest: "use tcp, http, postgres, redis or exec"
        usable = [k.name for k in KINDS.values() if k.probes_address] + \
            [k.name for k in KINDS.values() if not k.probes_address and not k.reads_output]
        check.fail((*path, "health", "probe"), "an external resource has no output to read; use "
                                               f"{', '.join(usable[:-1])} or {usable[-1]}")


def _parse_export(raw: object, path: tuple[str, ...], check: _Checker) -> ExportSpec | None:
    if not isinstance(raw, dict):
        check.fail(path, f"expected a table, got {_type_name(raw)}")
        return None
    check.unknown_keys(raw, EXPORT_KEYS, path, "[export]")
    healthcheck = check.command(raw, "healthcheck", path)
    if healthcheck is not None and (healthcheck[0] not in ("CMD", "CMD-SHELL", "NONE")
                                    or (healthcheck[0] != "NONE" and len(healthcheck) < 2)
                                    or (healthcheck[0] == "CMD-SHELL" and len(healthcheck) != 2)):
        check.fail((*path, "healthcheck"), 'expected ["CMD", "program", ...], ["CMD-SHELL", "a shell line"] '
                                           'or ["NONE"]')
        healthcheck = None
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        check.fail((*path, "env"), 'expected a table of NAME = "value"')
        env = {}
    return ExportSpec(image=check.string(raw, "image", path), command=check.command(raw, "command", path),
                      healthcheck=healthcheck, env=tuple(sorted(env.items())))


LOG_SIZE_RANGE = (1 << 10, 1 << 40)  # below 1 KiB the log would rotate on every line
LOG_FILES_MAX = 1000


def _log_max_size(raw: Mapping[str, Any], path: tuple[str, ...], check: _Checker) -> int:
    if "log_max_size" not in raw:
        return DEFAULT_LOG_MAX_SIZE
    try:
        size = parse_size(raw["log_max_size"])
    except (ValueError, OverflowError):
        size = 0
    if not LOG_SIZE_RANGE[0] <= size <= LOG_SIZE_RANGE[1]:
        check.fail((*path, "log_max_size"), f"expected a size from 1k to 1t like \"10m\", got {raw['log_max_size']!r}")
        return DEFAULT_LOG_MAX_SIZE
    return size


def _log_max_files(raw: Mapping[str, Any], path: tuple[str, ...], check: _Checker) -> int:
    value = raw.get("log_max_files", DEFAULT_LOG_MAX_FILES)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= LOG_FILES_MAX:
        check.fail((*path, "log_max_files"), f"expected a whole number from 0 to {LOG_FILES_MAX}, got {value!r}")
        return DEFAULT_LOG_MAX_FILES
    return value


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
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        check.fail((*path, key), f"expected a whole number from 1 to {MAX_COUNT}, got {_show(value)}")
        return default
    return value


def _read_env_file(env_file: object, project_dir: Path, variables: Mapping[str, str],
                   path: tuple[str, ...], check: _Checker) -> dict[str, str]:
    if not isinstance(env_file, str):
        check.fail(path, f"expected a path, got {_type_name(env_file)}")
        return {}
    env_path = (project_dir / env_file).resolve()
    try:
        return read_env_file(env_path, variables)
    except FileNotFoundError:
        check.fail(path, f"file not found: {env_path}")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        check.fail(path, f"{env_path}: {exc}")
    return {}


def _parse_env(raw_env: object, path: tuple[str, ...], check: _Checker) -> dict[str, str]:
    if not isinstance(raw_env, dict):
        check.fail(path, f"expected a table of NAME = \"value\", got {_type_name(raw_env)}")
        return {}
    env: dict[str, str] = {}
    for key, value in raw_env.items():
        if not key or "=" in key:
            # execve() splits NAME=VALUE at the first '=': such a name cannot be passed on
            check.fail((*path, key), "an environment variable's name must be non-empty and without '='")
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        if isinstance(value, int | float):
            value = _show(value, limit=4400)
        if not isinstance(value, str):
            check.fail((*path, key), f"expected a string, got {_type_name(value)}")
            continue
        env[key] = value
    return env


def _parse_cwd(raw: Mapping[str, Any], runtime: str, project_dir: Path, path: tuple[str, ...],
               check: _Checker) -> str | None:
    cwd = check.string(raw, "cwd", path)
    if cwd is None:
        return None
    if runtime == "docker":  # the container's working_dir: a path inside the image
        if not cwd.startswith("/"):
            check.fail((*path, "cwd"), f"a container's working directory must be an absolute path, got {_show(cwd)}")
        return cwd
    if not cwd:
        check.fail((*path, "cwd"), "must not be empty (leave it out for the project directory)")
        return None
    return str((project_dir / _home(cwd)).resolve())


def _parse_user(raw: Mapping[str, Any], path: tuple[str, ...], check: _Checker) -> str | None:
    user = check.string(raw, "user", path)
    if user is not None and (not user or not user.isprintable() or user != user.strip()):
        check.fail((*path, "user"), f"expected a user name, got {_show(user)}")
        return None
    return user


def _check_on_host(spec: ResourceSpec, project_dir: Path, environ: Mapping[str, str],
                   check: _Checker) -> None:
    """What the process runtime would refuse at start, asked now (a container's command,
    cwd and user live in its image, so only processes are checked)."""
    import pwd
    import shutil

    if spec.runtime != "process" or not spec.enabled:
        return
    path = ("resources", spec.name)
    cwd = Path(spec.cwd) if spec.cwd else project_dir
    if spec.cwd is not None and not cwd.is_dir():
        check.fail((*path, "cwd"), f"{'is not a directory' if cwd.exists() else 'does not exist'}: {cwd}")
    if spec.command:
        program = spec.command[0]
        search = spec.env_dict.get("PATH", environ.get("PATH", os.defpath))
        if "/" in program:
            found = cwd / _home(program)
            if not (found.is_file() and os.access(found, os.X_OK)):
                check.fail((*path, "command"), f"not an executable file: {found}")
        elif shutil.which(program, path=search) is None:
            check.fail((*path, "command"), f"{_show(program)} is not found on PATH ({escaped_short(search)})")
    if spec.user is not None:
        try:
            pwd.getpwnam(spec.user)
        except KeyError:
            check.fail((*path, "user"), f"no such user on this machine: {_show(spec.user)}")


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
    concurrency = _whole(raw, "model_concurrency", path, check, 1)
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
    base = environ.get("XDG_STATE_HOME") or str(_home(environ.get("HOME", "~")) / ".local" / "state")
    return Path(base) / "vrooli" / project


def find_files(explicit: list[str] | None, cwd: Path | None = None) -> list[Path]:
    """The files to load: those given with -f, or ./resources.toml."""
    if explicit:
        return [_home(f).absolute() for f in explicit]
    return [((cwd or Path.cwd()) / DEFAULT_FILE).absolute()]


def _home(text: str) -> Path:
    """`~` expanded; `~nosuchuser` left as it is (Path.expanduser raises RuntimeError)."""
    return Path(os.path.expanduser(text))


def load(files: list[Path], environ: Mapping[str, str] | None = None, *,
         host_checks: bool = False) -> ProjectSpec:
    """Read, merge, expand and validate; raise ConfigError listing every problem.

    `host_checks` adds what only this machine can answer and a start would trip over
    (cwd, command on PATH, user): `vrooli validate` asks for them. Commands that must work
    while a file is merely stale on this machine (`down`, `status`) do not.
    """
    # Both record every name looked up (the files' ${VAR}s, .env's, the default state
    # dir's HOME...): exactly what a client must send a supervisor to load the same config.
    environ = _Recording(os.environ if environ is None else environ)
    if not files:
        raise ConfigError(["no resources.toml given"])
    merged, origins = _read_all(files)
    project_dir = files[0].parent
    variables = _Recording({**_dotenv(project_dir, environ), **environ})  # the environment wins, as in compose

    def where(path: tuple[str, ...]) -> str:
        for cut in range(len(path), 0, -1):
            if path[:cut] in origins:
                return f"{origins[path[:cut]]}: {_dotted(path)}"
        return f"{files[0]}: {_dotted(path)}" if path else str(files[0])

    check = _Checker(where)
    merged = _without_nul(expand(merged, variables, check.problems, where), check)

    check.unknown_keys(merged, {"project", "resources"}, (), "the file")
    project_raw = merged.get("project", {})
    if not isinstance(project_raw, dict):
        check.fail(("project",), f"expected a table, got {_type_name(project_raw)}")
        project_raw = {}
    check.unknown_keys(project_raw, PROJECT_KEYS, ("project",), "[project]")
    name = _project_name(project_raw, project_dir, check)
    state_text = check.string(project_raw, "state_dir", ("project",))
    # Made absolute but not resolved: a state dir that is a symlink must be seen as one.
    state_dir = Path(os.path.normpath(project_dir / _home(state_text))) if state_text else \
        default_state_dir(name, environ)
    _check_path_length(state_dir, ("project", "state_dir" if state_text else "name"), check)
    # Unset stays None: `vrooli daemon` then listens on 127.0.0.1:9500, any other supervisor
    # on a free port (service.health_listen), so two projects never share one port.
    health_listen = check.string(project_raw, "health_listen", ("project",))
    if health_listen is not None and (
            not re.match(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$", health_listen)
            or not 0 <= int(health_listen.rsplit(":", 1)[1]) <= 65535):
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
    if host_checks:
        for spec in resources.values():
            _check_on_host(spec, project_dir, environ, check)
    if check.problems:
        raise ConfigError(_dedupe(check.problems))
    return ProjectSpec(
        name=name, state_dir=state_dir, project_dir=project_dir,
        files=tuple(files), resources=resources,
        health_listen=health_listen, health_enabled=health_enabled,
        environ_names=frozenset(environ.looked_up | variables.looked_up),
        memory_budget=budget, memory_budget_peak=budget_peak,
    )


def read_merged(files: list[Path]) -> dict[str, Any]:
    """The files merged as written, before ${VAR} expansion: `vrooli export` writes the
    references out, never the values they stand for."""
    merged: dict[str, Any] = {}
    for path in files:
        merge(merged, _read_toml(path), str(path), {})
    return merged


def referenced_environ(project: ProjectSpec, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The part of the environment the project's files depend on: what a client sends the
    supervisor so it loads the same config, and nothing else (no unrelated secrets)."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in sorted(project.environ_names) if k in environ}


class _Recording(dict[str, str]):
    """A dict that remembers which names were asked for, found or not. Copying it into
    another dict ({**it}, update) asks for nothing: only real lookups count."""

    def __init__(self, initial: Mapping[str, str] | None = None) -> None:
        super().__init__(initial or {})
        self.looked_up: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.looked_up.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.looked_up.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.looked_up.add(key)
        return super().__contains__(key)


def _dedupe(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def _read_all(files: list[Path]) -> tuple[dict[str, Any], Origins]:
    origins: Origins = {}
    merged: dict[str, Any] = {}
    for path in files:
        document = _read_toml(path)
        deep = _too_deep(document)
        if deep is not None:  # before merge and expand, which recurse
            raise ConfigError([f"{path}: {_dotted(deep)}: nested more than {MAX_DEPTH} levels deep"])
        merge(merged, document, str(path), origins)
    return merged, origins


def _dotenv(project_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    dotenv = project_dir / ".env"
    if not dotenv.is_file():
        return {}
    try:
        return read_env_file(dotenv, environ)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError([f"{dotenv}: {exc}"]) from None


def _dotted(path: tuple[str, ...]) -> str:
    """A key path as an error line shows it: control characters escaped, long keys cut."""
    return ".".join(key if key.isprintable() and len(key) <= 64 else escaped_short(key) for key in path)


def _without_nul(value: Any, check: _Checker, path: tuple[str, ...] = ()) -> Any:
    """Report every string holding a NUL byte (no argv, env or path can carry one), and drop
    the byte so that the checks after this one still run on something a path can hold."""
    if isinstance(value, str):
        if "\x00" in value:
            check.fail(path, "contains a NUL byte (\\u0000)")
            return value.replace("\x00", "")
        return value
    if isinstance(value, dict):
        for key in value:
            if "\x00" in key:
                check.fail((*path, key), "a key containing a NUL byte (\\u0000)")
        return {k.replace("\x00", ""): _without_nul(v, check, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v, check, (*path, str(i))) for i, v in enumerate(value)]
    return value


def _project_name(project_raw: Mapping[str, Any], project_dir: Path, check: _Checker) -> str:
    explicit = "name" in project_raw
    name = check.string(project_raw, "name", ("project",), project_dir.name or "default")
    if name is None:
        return "default"
    if PROJECT_NAME_RE.fullmatch(name):
        return name
    hint = "" if explicit else " (taken from the directory's name: set [project] name)"
    if len(name) > 64:
        check.fail(("project", "name"), f"at most 64 characters, got {len(name)}{hint}")
    else:
        check.fail(("project", "name"), f"expected letters, digits, '-', '_' or '.', got {_show(name)}{hint}")
    return "default"


def _check_path_length(path: Path, key: tuple[str, ...], check: _Checker) -> None:
    encoded = os.fsencode(path)
    if len(encoded) > 4000 or any(len(part) > 255 for part in encoded.split(b"/")):
        check.fail(key, "the state directory's path would be too long for the file system "
                        "(255 bytes per name, 4000 in all)")
