"""sd_notify in pure Python, and the reporter that tells systemd how the stack is doing.

Protocol: one AF_UNIX datagram of KEY=VALUE lines to $NOTIFY_SOCKET; a leading '@' means
the abstract namespace. See sd_notify(3).
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

import anyio

from orchestrator.infra.exposure import public_text
from orchestrator.infra.logger import get_logger
from orchestrator.plan.scheduler import SETTLED_OK, State

if TYPE_CHECKING:
    from orchestrator.engine.events import ReloadEvents, StackView

log = get_logger("vrooli.notify")
EXTEND_STEP_USEC = 15_000_000  # ask for 15 s more each time a slow start makes progress


def notify(message: str, environ: dict[str, str] | None = None) -> bool:
    """Send one notification; False when not run by systemd (no NOTIFY_SOCKET)."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(target)
            sock.sendall(message.encode())
        except OSError as exc:
            log.warning("sd_notify failed", error=exc.strerror or str(exc))
            return False
    return True


def watchdog_period(environ: dict[str, str] | None = None) -> float | None:
    """Half of WATCHDOG_USEC in seconds, if the watchdog is on and meant for this process."""
    env = environ if environ is not None else os.environ
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2 / 1_000_000
    except ValueError:
        return None


def status_line(sup: StackView) -> str:
    wanted = [r for n, r in sup.records.items() if n in sup.wanted]
    ready = [r for r in wanted if r.state in SETTLED_OK]
    line = f"{len(ready)}/{len(wanted)} ready"
    waiting = [r for r in wanted if r.state not in SETTLED_OK]
    if waiting:
        first = waiting[0]
        verb = "waiting for" if first.state in (State.STARTING, State.PENDING) else ""
        # `systemctl status` shows this line to every user: public text only.
        message = public_text(first.message, first.spec)
        detail = f"{first.state.value}: {message}" if message else first.state.value
        line += f"; {verb + ' ' if verb else ''}{first.spec.name}: {detail}"
        if len(waiting) > 1:
            line += f" (+{len(waiting) - 1} more)"
    return line[:200]


async def systemd_reporter(sup: StackView, handler: ReloadEvents) -> None:
    """READY once settled, STATUS on every change, WATCHDOG while the loop is healthy."""
    last_status = ""
    changed = anyio.Event()

    def on_change() -> None:
        changed.set()

    async def on_reload(phase: str, details: dict[str, Any]) -> None:
        if phase == "reloading":
            notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        elif phase == "reloaded":
            notify("READY=1\nSTATUS=" + status_line(sup))
        else:
            notify("STATUS=reload rejected: " + "; ".join(details.get("errors", []))[:200])

    sup.on_change.append(on_change)
    handler.on_reload.append(on_reload)

    async def watchdog(period: float) -> None:
        while True:
            # The housekeeping task beats every 0.5 s; a stale beat means the loop is stuck
            # or starved, and systemd should see that rather than our cheerful pings.
            if time.monotonic() - sup.loop_heartbeat < max(2.0, period):
                notify("WATCHDOG=1")
            await anyio.sleep(period)

    async def stopping() -> None:
        await sup.shutdown_requested.wait()
        notify("STOPPING=1\nSTATUS=stopping in reverse dependency order")

    async with anyio.create_task_group() as tg:
        period = watchdog_period()
        if period:
            tg.start_soon(watchdog, period)
        tg.start_soon(stopping)
        ready_sent = False
        next_extend = time.monotonic() + 5
        while True:
            line = status_line(sup)
            message = []
            if line != last_status:
                message.append(f"STATUS={line}")
                last_status = line
            settled = sup.settled(sup.wanted)
            # Also with nothing enabled: a stack of zero resources has settled, and systemd
            # would otherwise fail the unit after TimeoutStartSec.
            if settled and not ready_sent:
                message.insert(0, "READY=1")
                ready_sent = True
            elif not ready_sent and time.monotonic() >= next_extend:
                starting = any(r.state is State.STARTING for r in sup.records.values())
                if starting:
                    message.append(f"EXTEND_TIMEOUT_USEC={EXTEND_STEP_USEC}")
                next_extend = time.monotonic() + 5
            if message and not sup.shutdown_requested.is_set():
                notify("\n".join(message))
            changed = anyio.Event()
            with anyio.move_on_after(1.0):
                await changed.wait()
