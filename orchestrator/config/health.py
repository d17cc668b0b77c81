"""A resource's `health` table: the keys every probe takes, then what its kind requires
(each kind is declared once, in orchestrator/probes/kinds.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.config.values import Checker, show, type_name, whole
from orchestrator.errors import UrlError
from orchestrator.spec import PortSpec, ProbeSpec


def parse_probe(raw: object, resource: str, ports: tuple[PortSpec, ...], path: tuple[str, ...],
                 check: Checker) -> ProbeSpec | None:
    """A `health` table: the keys every kind takes, then what its kind (probes/kinds.py) requires."""
    from orchestrator.probes.kinds import KINDS, ProbeDraft, all_keys, default

    if not isinstance(raw, dict):
        check.fail(path, f"expected a table, got {type_name(raw)}")
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
    threshold = whole(raw, "failure_threshold", path, check, default(kind, "failure_threshold"))
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


def _expect_status(raw: Mapping[str, Any], path: tuple[str, ...], check: Checker) -> tuple[int, ...]:
    if "expect_status" not in raw:
        return ()
    value = raw["expect_status"]
    items = value if isinstance(value, list) else [value]
    if items and all(isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in items):
        return tuple(items)
    check.fail((*path, "expect_status"), f"expected an HTTP status (100-599) or a list of them, got {value!r}")
    return ()


def _probe_host(raw: Mapping[str, Any], ports: tuple[PortSpec, ...], path: tuple[str, ...],
                check: Checker) -> str:
    """`host`, else the address the first port is published on (a probe of a port bound to
    [::1] only must not knock on 127.0.0.1)."""
    default = ports[0].probe_host if ports else "127.0.0.1"
    host = check.string(raw, "host", path, default)
    if host is None:
        return default
    from orchestrator.probes.url import check_host

    try:
        check_host(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except UrlError as exc:
        check.fail((*path, "host"), f"{exc}, got {show(host)}")
        return default
    return host.strip("[]")


def _check_url(url: str, path: tuple[str, ...], check: Checker) -> None:
    """Parse with the probe's own parser, so a URL that passes here cannot fail it later.
    The line never quotes the URL: it may hold a password."""
    from orchestrator.probes.url import Target

    try:
        Target.parse(url)
    except UrlError as exc:
        check.fail(path, f"invalid URL: {exc}")
