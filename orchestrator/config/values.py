"""The words of a resources.toml: durations, sizes, ports, and the checker that collects
one problem line per bad value (naming file, resource and key) instead of stopping."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config.variables import escaped_short
from orchestrator.spec import PortSpec

MAX_DURATION = 365 * 24 * 3600.0  # a year: far beyond any timeout, well inside every OS timer

MAX_COUNT = 1_000_000  # restart_burst, failure_threshold, model_concurrency

MAX_SIZE = 1 << 50  # 1 PiB: memory_limit beyond this is a typo (Docker takes an int64)

_DURATION_PART = re.compile(r" *(\d+(?:\.\d*)?|\.\d+) *(h|ms|m|s|us|µs|ns)", re.ASCII)

_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}

_NUMBER_RE = re.compile(r" *(\d{1,30}(?:\.\d{0,30})?|\.\d{1,30}) *", re.ASCII)

_SIZE_RE = re.compile(r"\s*(\d{1,30}(?:\.\d{1,30})?)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE | re.ASCII)


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
        raise ValueError(f"expected a duration like 2 or \"250ms\", got {type_name(value)}")
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"expected a duration of zero or more seconds, got {show(value)}")
    if seconds > MAX_DURATION:
        raise ValueError(f"expected a duration of at most 8760h (a year), got {show(value)}")
    return seconds


def _duration_text(text: str) -> float:
    bare = _NUMBER_RE.fullmatch(text)
    if bare:
        return float(bare.group(1))
    seconds, position = 0.0, 0
    while position < len(text.rstrip(" ")) or position == 0:
        part = _DURATION_PART.match(text, position)
        if part is None or len(part.group(1)) > 30:
            raise ValueError(f"expected a duration like \"250ms\", \"2s\", \"1m\" or \"1m30s\", got {show(text)}")
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
        raise ValueError(f"expected a size of at most 1024t, got {show(value)}")
    if size >= 1:
        return int(size)
    raise ValueError(f"expected a size like \"512m\" or \"2g\", got {show(value)}")


def show(value: object, limit: int = 60) -> str:
    """A value as an error line quotes it: repr (one line, escapes visible), cut to `limit`."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**limit else "a huge number"
    return text if len(text) <= limit else text[:limit - 5] + "…" + text[-4:]


def type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def home(text: str) -> Path:
    """`~` expanded; `~nosuchuser` left as it is (Path.expanduser raises RuntimeError)."""
    return Path(os.path.expanduser(text))


def dotted(path: tuple[str, ...]) -> str:
    """A key path as an error line shows it: control characters escaped, long keys cut."""
    return ".".join(key if key.isprintable() and len(key) <= 64 else escaped_short(key) for key in path)


def parse_port(text: str) -> PortSpec:
    """ "[HOST_IP:]HOST:CONTAINER[/PROTOCOL]" as docker writes it, HOST_IP v4 or [v6]."""
    usage = f"expected a port like 5433, \"127.0.0.1:5433:5432\" or \"[::1]:5433:5432\", got {show(text)}"
    spec, slash, protocol = text.partition("/")
    protocol = protocol if slash else "tcp"
    if protocol not in ("tcp", "udp"):
        raise ValueError(f"protocol must be tcp or udp, got {show(protocol)}")
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
        raise ValueError(f"the host part of {show(whole)} is not an IP address{hint}") from None
    if address.version != version:
        raise ValueError(f"an IPv{address.version} address is written "
                         + ("in brackets: \"[::1]:5433:5432\"" if address.version == 6 else "without brackets"))
    return str(address)


@dataclass
class Checker:
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
        self.fail((*path, key), f"expected a string, got {type_name(value)}")
        return default

    def boolean(self, table: Mapping[str, Any], key: str, path: tuple[str, ...],
                default: bool) -> bool:
        value = table.get(key, default)
        if isinstance(value, bool):
            return value
        self.fail((*path, key), f"expected true or false, got {type_name(value)}")
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
            self.fail(path, f"expected a port number, got {type_name(value)}")
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


def whole(raw: Mapping[str, Any], key: str, path: tuple[str, ...], check: Checker,
           default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        check.fail((*path, key), f"expected a whole number from 1 to {MAX_COUNT}, got {show(value)}")
        return default
    return value


def optional_size(raw: Mapping[str, Any], key: str, path: tuple[str, ...], check: Checker) -> int | None:
    if key not in raw:
        return None
    try:
        return parse_size(raw[key])
    except ValueError as exc:
        check.fail((*path, key), str(exc))
        return None
