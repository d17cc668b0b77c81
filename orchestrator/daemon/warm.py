"""A detached supervisor's life across `down` and `up`: sessions, and the idle time between.

After `vrooli down` a detached supervisor stays for `keep_warm` ([project], default 10m),
holding nothing: no resources, no containers or network, no health endpoint, no timer but
the one that ends it. The next `vrooli up` is sent to it, so no Python start-up lies
between the command and the first resource. Waking, it builds everything from that `up`'s
request, exactly as a cold start would from its fork: the files read again, the
variables they reference and the client's whole process environment (which new
processes inherit) taken from the request, the working directory set again, and a new
Supervisor with fresh records; nothing of the last session is reused but the process,
its lock and its control socket.

`vrooli down --exit`, SIGTERM and the end of `keep_warm` end it at once; `up --foreground`
and `vrooli daemon` never idle (their session ends with the process, as before).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from orchestrator import config
from orchestrator.daemon import ops
from orchestrator.daemon.control_api import from_thin_client, ping_reply
from orchestrator.errors import EXIT_OK, SupervisorUnavailable, VrooliError
from orchestrator.infra import codeid, control
from orchestrator.infra.logger import get_logger

if TYPE_CHECKING:
    from orchestrator.daemon.control_api import Handlers, Options
    from orchestrator.daemon.endpoint import HealthEndpoint
    from orchestrator.spec import ProjectSpec

log = get_logger("vrooli.service")

Reply = Callable[[dict[str, Any]], Awaitable[None]]
# Never inherited from the `up` that woke us: the fork that starts a supervisor drops them too.
NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


@dataclass(frozen=True)
class Wake:
    """What an `up` to an idle supervisor brings: its project, loaded from its request."""

    project: ProjectSpec
    process_environ: dict[str, str] | None


class Host:
    """The process around the sessions: who serves requests now, and the idle period."""

    def __init__(self, project: ProjectSpec, options: Options, endpoint: HealthEndpoint) -> None:
        self.project = project
        self.options = options
        self.endpoint = endpoint
        self.code = codeid.fingerprint()  # the modules this process loaded, for the client to compare
        self.sessions = 0
        self.control: Any = None  # service.ControlEndpoint, bound once, serving every session
        self.handler: Handlers | None = None  # the session serving requests; None between sessions
        self.last: Handlers | None = None  # the session before an idle period (its rows, for status)
        self.exit_requested = False
        self._idle_until: float | None = None  # monotonic; set while idle
        self._wake: Wake | None = None
        self._woken = anyio.Event()  # an `up` (with `_wake`) or an exit ends the idle period
        self._state_changed = anyio.Event()

    # ------------------------------------------------------------------ what clients see

    @property
    def idle(self) -> bool:
        return self._idle_until is not None and self._wake is None

    def keeps_warm(self) -> bool:
        # The session's project, not the one this process woke with: an `up` or `reload`
        # since may have changed keep_warm.
        project = self.handler.sup.project if self.handler is not None else self.project
        return self.options.mode == "detached" and project.keep_warm > 0 and not self.exit_requested

    def info(self) -> dict[str, Any]:
        """The status reply's `supervisor` object as this host knows it (see
        control_api.supervisor_status): whether it idles, and the seconds left before an idle
        one exits (None while a session runs)."""
        left = None if self._idle_until is None else max(0.0, round(self._idle_until - time.monotonic(), 1))
        return {"pid": os.getpid(), "mode": self.options.mode, "unit": None, "idle": self.idle,
                "exits_in_seconds": left if self.idle else None}

    def after_down(self, exit_now: bool) -> str:
        """A `down` of the whole stack: "idle" if this process stays warm after it, else "exiting"."""
        if exit_now:
            self.exit_requested = True
        return "idle" if self.keeps_warm() else "exiting"

    def request_exit(self) -> None:
        """SIGTERM, `down --exit`, a failed start: no idle period, or the end of this one."""
        self.exit_requested = True
        if self.handler is not None:
            self.handler.sup.shutdown_requested.set()
        self._woken.set()

    # ------------------------------------------------------------------ sessions

    def serving(self, handler: Handlers) -> None:
        self.handler, self._idle_until, self._wake = handler, None, None
        self.sessions += 1
        self._changed()

    def session_ended(self) -> None:
        self.last, self.handler = self.handler, None
        if self.last is not None:  # what the session last loaded: its keep_warm decides the idle period
            self.project = self.last.sup.project
        self._changed()

    def _changed(self) -> None:
        event, self._state_changed = self._state_changed, anyio.Event()
        event.set()

    async def idle_period(self) -> Wake | None:
        """Hold nothing until an `up` wakes us (its Wake) or `keep_warm` ends (None)."""
        # The health endpoint's port is freed, not kept: an idle supervisor has nothing to
        # report, a monitor is better told "connection refused" (nothing runs) than "503",
        # and a fixed health_listen port stays free for whichever stack starts next.
        self.endpoint.close()
        try:
            (self.project.state_dir / "health.addr").unlink()
        except OSError:
            pass
        if self.last is not None:  # kept for `status`: its records, all stopped
            from orchestrator.daemon.endpoint import HealthEndpoint

            self.last.endpoint = HealthEndpoint(None, None, None, None)
            self.last.sup.release_runtimes()
        self._woken = anyio.Event()
        self._idle_until = time.monotonic() + self.project.keep_warm
        self._changed()
        _give_back_memory()
        log.info("supervisor idle", keep_warm=self.project.keep_warm)
        with anyio.move_on_after(self.project.keep_warm):
            await self._woken.wait()  # one timer, nothing periodic: an idle process costs no CPU
        wake = None if self.exit_requested else self._wake
        if wake is None:
            self._idle_until = None
            log.info("supervisor ends", reason="exit requested" if self.exit_requested else "keep_warm elapsed")
        return wake

    def take_over(self, wake: Wake) -> None:
        """Become what a supervisor forked by this `up` would be: its environment and cwd."""
        if wake.process_environ is not None:
            os.environ.clear()
            os.environ.update(wake.process_environ)
            for key in NOT_INHERITED:
                os.environ.pop(key, None)
        try:
            os.chdir(wake.project.project_dir)
        except OSError as exc:
            log.warning("cannot enter the project directory", error=str(exc))
        self.project = wake.project

    # ------------------------------------------------------------------ requests

    async def handle(self, request: dict[str, Any], reply: Reply) -> None:
        """The control socket's one handler: the session's, or the idle one's."""
        while True:
            handler = self.handler
            if handler is not None and not handler.sup.shutdown_requested.is_set():
                await handler.handle(request, reply)
                return
            if handler is None and self.idle:
                await self._idle_request(request, reply)
                return
            await self._state_changed.wait()  # a session winding down or starting: ask it once it is settled

    async def _idle_request(self, request: dict[str, Any], reply: Reply) -> None:
        problem = ops.problem_with(request)
        if problem is not None:
            await reply(control.bad_request(problem))
            return
        op = request["op"]
        if op == "up":
            await self._wake_for(request, reply)
        elif op == "ping":
            await reply(ping_reply(self.project, self.options.mode, True, self.code))
        elif op == "status" and self.last is not None:
            await self.last.handle(request, reply)
        elif op in ("down", "retire"):
            if op == "down" and request.get("volumes"):
                await self._remove_volumes()
            exiting = op == "retire" or bool(request.get("exit"))
            await reply({"ok": True, "stopped": [], "resources": [], "exit_code": EXIT_OK, "retired": exiting,
                         "supervisor": "exiting" if exiting else "idle"})
            if exiting:
                self.request_exit()
        else:
            await reply(SupervisorUnavailable(
                f"{self.project.name} is not running (its supervisor is idle); use `vrooli up`").reply())

    async def _remove_volumes(self) -> None:
        """`down --volumes` after a plain `down`: nothing runs, but the named volumes the
        last session's containers used are still there to remove (README: `down`)."""
        if self.last is None:
            return
        await self.last.sup.cleanup_runtimes(remove_volumes=True)
        self.last.sup.release_runtimes()  # idle again: no engine connection held

    async def _wake_for(self, request: dict[str, Any], reply: Reply) -> None:
        log.info("supervisor waking")  # its timestamp: where the `up` reached us (scripts/bench.py)
        try:
            if request.get("thin") is not None:
                full = await from_thin_client(request, self.project.state_dir, self.options.mode, reply)
                if full is None:
                    return
                request, project = full  # the files already read for it
            else:
                files = [Path(f) for f in request.get("files") or [str(f) for f in self.project.files]]
                project = await anyio.to_thread.run_sync(config.load, files, request.get("environ"))
                if project.state_dir != self.project.state_dir:
                    raise VrooliError(f"state_dir changed to {project.state_dir}; run `vrooli down --exit` first")
        except VrooliError as exc:
            await reply(exc.reply())
            return
        if not self.idle:  # another `up` woke us meanwhile: its session answers this one too
            await self.handle(request, reply)
            return
        self._wake = Wake(project, request.get("process_environ"))
        self._woken.set()
        # The session is built from these very files: it need not read them again.
        await self.handle({k: v for k, v in request.items() if k not in ("files", "environ")}, reply)


def _give_back_memory() -> None:
    """Return what the last session freed to the system: an idle supervisor's RSS is its cost."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
