"""Where the health endpoint listens, bound before anything starts.

`vrooli daemon` serves where monitors expect it (127.0.0.1:9500 unless told otherwise);
every other supervisor takes a free port, so two projects on one machine never fight over
one (health.addr and `vrooli status` say which). Binding needs nothing beyond `socket`: the
endpoint's own modules load later, once the start has settled (service._health).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.errors import UsageError, VrooliError
from orchestrator.infra.logger import get_logger
from orchestrator.infra.paths import write_private

if TYPE_CHECKING:
    from orchestrator.spec import ProjectSpec

log = get_logger("vrooli.service")
DAEMON_HEALTH_LISTEN = "127.0.0.1:9500"
ANY_FREE_PORT = "127.0.0.1:0"
LISTEN_FORM = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$")


@dataclass(frozen=True)
class HealthEndpoint:
    """The health endpoint's socket, bound before anything starts, and what `status` says of it."""

    listen: str | None  # the address asked for; None when the endpoint is off
    sock: socket.socket | None
    address: str | None  # where it listens, as written to health.addr
    error: str | None  # why it does not listen, when it was asked to

    def status(self) -> dict[str, Any]:
        return {"listen": self.listen, "address": self.address, "error": self.error}

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def health_listen(project: ProjectSpec, override: str | None, mode: str) -> str | None:
    """Where the endpoint listens: --health-listen, else [project], else the mode's default."""
    if override:
        return override
    if project.health_listen:
        return project.health_listen
    if not project.health_enabled:
        return None
    return DAEMON_HEALTH_LISTEN if mode == "daemon" else ANY_FREE_PORT


def open_health_endpoint(project: ProjectSpec, override: str | None, mode: str) -> HealthEndpoint:
    """Bind now, so requests wait in the backlog from our first moment instead of being refused.

    A daemon that cannot bind exits with one line (monitors watch that port); any other
    supervisor runs without the endpoint and says why in its log and in `vrooli status`.
    """
    listen = health_listen(project, override, mode)
    if listen is None:
        return HealthEndpoint(None, None, None, None)
    form = LISTEN_FORM.match(listen)
    if form is None or not 0 <= int(form.group(2)) <= 65535:
        raise UsageError(f"--health-listen: expected HOST:PORT like \"127.0.0.1:9500\", got {listen!r}")
    host, port = form.group(1).strip("[]"), int(form.group(2))
    try:
        sock = bind_listener(host, port)
    except OSError as exc:
        error = f"cannot listen on {listen} for the health endpoint: {exc.strerror or exc}"
        if mode == "daemon":
            raise VrooliError(error) from None
        log.warning("health endpoint not started", listen=listen, error=error)
        return HealthEndpoint(listen, None, None, error)
    bound_host, bound_port = sock.getsockname()[:2]
    address = f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
    try:
        write_private(project.state_dir / "health.addr", address)
    except OSError:
        sock.close()
        raise
    log.info("health endpoint listening", listen=address)
    return HealthEndpoint(listen, sock, address, None)


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket, non-blocking; bound with no import beyond `socket`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)  # not inherited by resources (O_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
