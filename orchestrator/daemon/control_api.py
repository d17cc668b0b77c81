"""The control API's operations: one method per request the control socket accepts.

Served by control.serve inside the supervisor process (service.py wires it); every error
a request meets is answered with its kind and exit code (errors.VrooliError.reply).

Over the ~450-line module guide (and `Handlers` over the ~300-line class guide): every
operation shares the session's supervisor, options and the start that a forking `up`
claimed; split by operation, each piece would reach back into the others' state.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from orchestrator import config
from orchestrator.daemon import ops, privileges
from orchestrator.daemon.endpoint import HealthEndpoint
from orchestrator.errors import EXIT_FAILED, EXIT_OK, UsageError, VrooliError, check_names
from orchestrator.infra import control, daemons
from orchestrator.infra.logger import get_logger
from orchestrator.plan.scheduler import SETTLED_OK, State

if TYPE_CHECKING:
    from orchestrator.engine.events import ReloadHook
    from orchestrator.engine.supervisor import Supervisor
    from orchestrator.spec import ProjectSpec

log = get_logger("vrooli.service")


class Host(Protocol):
    """What a session asks of the process around it (warm.Host): declared here, so that
    warm.py, which builds sessions from these handlers, is never imported back by them."""

    code: str

    def info(self) -> dict[str, Any]: ...

    def after_down(self, exit_now: bool) -> str: ...

    def request_exit(self) -> None: ...


@dataclass
class Options:
    files: list[Path]
    mode: str = "detached"  # detached | foreground | daemon
    names: list[str] = field(default_factory=list)
    no_deps: bool = False
    profiles: list[str] = field(default_factory=list)  # active for the start `names` asks for
    health_listen: str | None = None  # overrides [project].health_listen
    environ: dict[str, str] | None = None
    up_at_start: bool = False  # detached: start `names` before any client asks
    invoked_at: float | None = None  # epoch seconds the `vrooli up` that forked us began
    claim: str | None = None  # detached: what that `up`'s own request carries (see op_up)


Reply = Callable[[dict[str, Any]], Awaitable[None]]
FOLLOW_POLL = 0.2  # seconds between looks at a followed log
FOLLOW_ALIVE = 10.0  # seconds between keep-alives: a client that left is noticed on the next send
THIN_MODES = ("detached", "foreground")  # a system daemon reads its own files, whatever a client sends
THIN_OPS = ("status", "up", "down", "restart")  # what a thin client sends (client/commands.py, client/up.py)


async def from_thin_client(request: dict[str, Any], state_dir: Path, mode: str,
                           reply: Reply) -> tuple[dict[str, Any], ProjectSpec] | None:
    """The request the full client would have sent, made here from a thin client's, with
    the files as read for it (an `up` applies them: they are not read twice); or None,
    the thin client told why it must read the files itself after all (it then does, and
    its own load says what is wrong, as it always did). The notice the full client would
    have printed before sending its `up` is sent first, as an event.

    The thin client (client/thin.py) skipped reading the files: it found this
    supervisor serving them and sent their paths, the values of the variables they
    referenced when last read here (`ping`'s environ_names), and what it would have
    checked. Here, with everything imported, the files are read as the full client reads
    them (~1 ms): they must load, refer to no variable the client did not send, and keep
    this state dir. Then the full client's own checks, with its messages: the names are
    the files' resources, the --profile names are declared (raised: the caller answers).
    """
    if request["op"] not in THIN_OPS:
        raise UsageError(f"bad request: {request['op']}: 'thin' is for {', '.join(THIN_OPS)} only")
    loaded = await _load_for_thin(request, state_dir, mode)
    if isinstance(loaded, str):
        await reply({"ok": False, "declined": loaded, "exit_code": EXIT_FAILED,
                     "error": f"the thin client must read the files: {loaded}"})
        return None
    from orchestrator.config.profiles import ENV, active_profiles, nothing_to_start

    thin, project = request["thin"], loaded
    names = request.get("names") or []
    check_names(project.resources, names)
    plain = {k: v for k, v in request.items() if k not in ("thin", "files", "environ")}
    if request["op"] != "up":
        return plain, project
    active = active_profiles(project, thin.get("profiles_named") or [], {ENV: thin.get("profiles_env") or ""})
    notice = nothing_to_start(project, names, active)
    if notice:
        await reply({"event": "notice", "text": notice})
    environ = request.get("environ") or {}
    return ({**plain, "profiles": active, "files": [str(f) for f in project.files],
             "environ": {k: environ[k] for k in sorted(project.environ_names) if k in environ}}, project)


async def _load_for_thin(request: dict[str, Any], state_dir: Path, mode: str) -> ProjectSpec | str:
    """The files as the thin client's command would read them, or why they cannot be."""
    if mode not in THIN_MODES:
        return f"a {mode} supervisor reads its own files"
    files = [Path(f) for f in request.get("files") or []]
    if not files:
        return "no files named"
    try:
        project = await anyio.to_thread.run_sync(config.load, files, request.get("environ") or {})
    except VrooliError as exc:
        return f"the files do not load: {exc.lines()[0]}"
    unsent = sorted(set(project.environ_names) - set(request["thin"].get("environ_names") or []))
    if unsent:
        return f"the files now refer to {', '.join(unsent)}"
    if project.state_dir != state_dir:
        return f"state_dir is now {project.state_dir}"
    return project


def ping_reply(project: ProjectSpec, mode: str, idle: bool, code: str | None) -> dict[str, Any]:
    """Who answers: the files let a client whose own copy is broken check that this is its
    project; environ_names are what a thin client sends the values of (from_thin_client)."""
    return {"ok": True, "pid": os.getpid(), "project": project.name, "mode": mode,
            "files": [str(f) for f in project.files], "environ_names": sorted(project.environ_names),
            "idle": idle, "code": code}


async def follow_output(path: Path, reply: Reply) -> None:
    """Send what is appended to `path` as {"event": "lines"} until sending fails."""
    position = path.stat().st_size if path.exists() else 0
    pending, quiet = b"", 0.0
    while True:
        size = path.stat().st_size if path.exists() else 0
        if size < position:  # rotated: the kept part moved to NAME.log.1
            position = 0
        if size > position:
            with path.open("rb") as handle:
                handle.seek(position)
                pending += handle.read(min(size - position, control.MAX_LINE // 2))
                position = handle.tell()
            *complete, pending = pending.split(b"\n")
            if complete:
                await reply({"event": "lines", "lines": [c.decode(errors="replace") for c in complete]})
                quiet = 0.0
        elif quiet >= FOLLOW_ALIVE:
            await reply({"event": "alive"})
            quiet = 0.0
        await anyio.sleep(FOLLOW_POLL)
        quiet += FOLLOW_POLL


class Handlers:
    """One method per control-API operation."""

    def __init__(self, sup: Supervisor, options: Options, endpoint: HealthEndpoint | None = None) -> None:
        self.sup = sup
        self.options = options
        self.endpoint = endpoint or HealthEndpoint(None, None, None, None)
        self.on_reload: list[ReloadHook] = []
        # The systemd unit we run in ("vrooli.service"), shown by `vrooli status`.
        self.unit = daemons.unit_name() if options.mode == "daemon" else None
        # What a detached supervisor started for the `up` that forked it, before that `up`
        # connected: the first `up` request owns it (and undoes it if it fails at start).
        self._started_unasked: set[str] = set()
        # ...which that `up`'s own request (it carries options.claim) follows, not asks again.
        self._unasked_claim: str | None = None
        self.host: Host | None = None  # the process around this session (warm.py); None in tests

    async def start_unasked(self) -> None:
        """Start what the forking `up` asks for without waiting for it to connect (a round
        trip saved), after the same checks as a client's `up`: nothing half-started."""
        names, no_deps, profiles = self.options.names or None, self.options.no_deps, self.options.profiles
        try:
            await self._preflight(names, no_deps, profiles)
        except VrooliError as exc:
            log.warning("not starting before the client asks", error=str(exc))
            return
        before = set(self.sup.wanted)
        self.sup.request_up(names, no_deps, profiles)
        self._started_unasked = set(self.sup.wanted) - before
        self._unasked_claim = self.options.claim

    async def handle(self, request: dict[str, Any], reply: Reply) -> None:
        problem = ops.problem_with(request)  # every op's shape, checked in one place
        if problem is not None:
            await reply(control.bad_request(problem))
            return
        method = getattr(self, f"op_{request['op']}")
        try:
            if request.get("thin") is not None:
                full = await from_thin_client(request, self.sup.project.state_dir, self.options.mode, reply)
                if full is None:
                    return
                request, loaded = full
                if request["op"] == "up":
                    await self.op_up(request, reply, loaded)
                    return
            await method(request, reply)
        except VrooliError as exc:
            await reply(exc.reply())

    async def op_ping(self, request: dict[str, Any], reply: Reply) -> None:
        await reply(ping_reply(self.sup.project, self.options.mode, False,
                               self.host.code if self.host is not None else None))

    async def op_status(self, request: dict[str, Any], reply: Reply) -> None:
        names = request.get("names") or None
        self._check_names(names)
        extra = await self._extra_status()  # first: it samples the memory the rows show
        await reply({"ok": True, "project": self.sup.project.name, "supervisor_pid": os.getpid(),
                     "mode": self.options.mode, "supervisor": self.supervisor_status(),
                     "resources": self.sup.snapshot(names), "extra": extra})

    def supervisor_status(self) -> dict[str, Any]:
        """The status reply's `supervisor` object: who answers, and how it runs. Every
        supervisor answers the same keys, which the client's supervisor line shows
        (client/output.supervisor_line): `pid`; `mode` (detached, foreground or daemon);
        `unit`, the systemd unit of a daemon run by one, else None; `idle`, true for a warm
        supervisor holding nothing; `exits_in_seconds`, the time an idle one has left, else None."""
        status = {"pid": os.getpid(), "mode": self.options.mode, "unit": self.unit,
                  "idle": False, "exits_in_seconds": None}
        if self.host is not None:  # warm.py: idle between sessions, and until when
            idle = self.host.info()
            status.update(idle=idle["idle"], exits_in_seconds=idle["exits_in_seconds"])
        return status

    async def op_usage(self, request: dict[str, Any], reply: Reply) -> None:
        """Memory now and CPU over a second, per resource (`vrooli report`)."""
        from orchestrator.daemon import usage

        names = request.get("names") or None
        self._check_names(names)
        await reply({"ok": True, **await usage.sample(self.sup, names)})

    async def _extra_status(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"health_endpoint": self.endpoint.status(),
                                 "stack_memory": (await self.sup.memory.sample()).to_json()}
        if self.sup.models:
            extra["models"] = [m.summary() for m in self.sup.models.values()]
        return extra

    async def op_models(self, request: dict[str, Any], reply: Reply) -> None:
        """list | pull | ensure | unload, for the resource that declares models."""
        from orchestrator.engine.models import ModelError

        self._check_names([request["resource"]] if request.get("resource") else [])
        if not self.sup.models:
            raise VrooliError("no resource declares models (add models = [...] to the ollama resource)")
        resource = request.get("resource") or next(iter(self.sup.models))
        manager = self.sup.models.get(resource)
        if manager is None:
            raise VrooliError(f"resource '{resource}' declares no models")
        action = request.get("action", "list")
        names = request.get("names") or list(manager.spec.names)
        if action == "list":
            try:
                await manager.refresh()
            except ModelError as exc:
                raise VrooliError(str(exc)) from None
            await reply({"ok": True, "exit_code": EXIT_OK, **manager.summary()})
            return
        if action not in ("pull", "ensure", "unload"):
            raise VrooliError(f"unknown models action {action!r} (list, pull, ensure, unload)")
        errors: list[str] = []

        async def one(name: str) -> None:
            try:
                if action == "unload":
                    await manager.unload(name)
                else:
                    await manager.ensure(name, load=action == "ensure")
            except ModelError as exc:
                errors.append(f"{name}: {exc}")

        async def progress() -> None:
            while True:
                version = self.sup.version
                await reply({"event": "models", **manager.summary()})
                await self.sup.wait_change(since=version)
                await anyio.sleep(0.1)  # at most ~10 progress lines a second

        async with anyio.create_task_group() as outer:
            outer.start_soon(progress)
            async with anyio.create_task_group() as work:
                for name in names:
                    work.start_soon(one, name)
            outer.cancel_scope.cancel()
        summary = manager.summary()
        await reply({"ok": not errors, "errors": errors, "exit_code": EXIT_FAILED if errors else EXIT_OK, **summary})

    async def op_logs(self, request: dict[str, Any], reply: Reply) -> None:
        """A resource's output, for a client that may not read the state dir (a member of a
        system daemon's control group); with `follow`, new lines until the client leaves."""
        name = request.get("name") or ""
        self._check_names([name])
        output = self.sup.output(name)
        tail = request.get("tail", 100)
        lines = await anyio.to_thread.run_sync(lambda: output.tail(tail) if tail else output.read_all())
        follow = bool(request.get("follow"))
        await reply({"ok": True, "exit_code": EXIT_OK, "resource": name, "lines": lines, "follow": follow})
        if follow:
            await follow_output(output.path, reply)

    async def op_last_start(self, request: dict[str, Any], reply: Reply) -> None:
        """The last start's record (`vrooli analyze`), for a client that may not read it."""
        from orchestrator.infra import paths

        try:
            record = json.loads(paths.last_start_file(self.sup.state_dir).read_text())
        except (OSError, ValueError):
            record = None
        await reply({"ok": True, "exit_code": EXIT_OK, "record": record})

    def _check_names(self, names: list[str] | None) -> None:
        check_names(self.sup.records, names or [])

    async def _load(self, request: dict[str, Any]) -> ProjectSpec:
        files = [Path(f) for f in request.get("files") or [str(f) for f in self.sup.project.files]]
        # A system daemon's config takes its files and variables from the unit (its own -f,
        # its EnvironmentFile= secrets), never from an operator's request: a member of the
        # control group may operate the stack, not redefine it (an override file naming a
        # volume of / or `user = "root"` would hand them the daemon's powers), and an `up`
        # must not restart postgres with the default password their shell happens to give.
        daemon = self.options.mode == "daemon"
        files = list(self.sup.project.files) if daemon else files
        environ = None if daemon else request.get("environ")
        new = await anyio.to_thread.run_sync(config.load, files, environ)
        if self.options.mode == "daemon":  # a reload may add `user =` the daemon cannot honour
            privileges.check_user_switch(new)
        if new.state_dir != self.sup.project.state_dir:
            raise VrooliError(f"state_dir changed to {new.state_dir}; run `vrooli down` first")
        return new

    async def op_up(self, request: dict[str, Any], reply: Reply, loaded: ProjectSpec | None = None) -> None:
        """Start, stream progress, answer. An `up` that fails at start (a check, or a
        resource that cannot even be spawned) undoes what it started and leaves no idle
        detached supervisor behind: the user is back where they were, with the reason.
        `loaded`: the request's files, already read (a thin client's request)."""
        names = request.get("names") or None
        no_deps = bool(request.get("no_deps"))
        profiles = request.get("profiles") or []  # checked against the files by the client
        before = set(self.sup.wanted) - self._started_unasked
        self._started_unasked = set()
        claim, self._unasked_claim = self._unasked_claim, None
        own = claim is not None and request.get("claim") == claim  # the forking `up`'s request
        if claim is not None and not own:
            self._unasked_claim = claim  # another `up` came first: the forking one may still come
        try:
            # The forking `up`'s request names the files this process was forked with, read a
            # moment ago by that command: read once per cold `up`, not again here.
            if not own and (loaded is not None or request.get("files")):
                project = loaded or await self._load(request)
                check_names(project.resources, names or [])
                changes = await self.sup.apply_config(project)
                if changes["restarted"] or changes["added"] or changes["removed"]:
                    await reply({"event": "config", **changes})
            self._check_names(names)
            await self._preflight(names, no_deps, profiles)
        except VrooliError as exc:
            await self._undo_start(before, keep=set())
            await reply(exc.reply())
            self._end_if_idle()
            return
        if own:
            # The forking `up`'s own request: its start is under way since before it
            # connected. Asking again would give what already failed another chance (a
            # crash before ready with `restart = "no"` would run twice): follow it instead.
            selected = frozenset(self.sup.selection(names, no_deps, profiles)[1])
        else:
            selected = self.sup.request_up(names, no_deps, profiles)
        await self._stream_until_settled(sorted(selected), reply, undo_from=before)

    def _failed_to_spawn(self, names: list[str]) -> list[str]:
        return [n for n in names if n in self.sup.wanted and self.sup.records[n].spawn_failed
                and self.sup.records[n].state is State.FAILED]

    async def _undo_start(self, before: set[str], keep: set[str]) -> list[str]:
        """Stop what became wanted since `before`; `keep` (the failures) stay failed, with
        their reasons, though stopping their dependencies passes over them."""
        started = sorted((self.sup.wanted - before) - keep)
        if not started:
            return []
        reasons = {n: self.sup.records[n].message for n in keep}
        stopped = await self.sup.stop(started)
        for name, reason in reasons.items():
            if self.sup.records[name].state is State.STOPPED:
                self.sup.set_state(name, State.FAILED, reason)  # through the one transition
        self.sup.notify_changed()
        return [n for n in stopped if n not in keep]

    def _end_if_idle(self) -> None:
        """A detached supervisor with nothing running after a failed `up` ends itself."""
        if self.options.mode != "detached":
            return
        if not any(r.running_task or r.instance is not None for r in self.sup.records.values()):
            log.info("nothing runs after a failed up; the supervisor ends")
            if self.host is not None:
                self.host.request_exit()  # not warm either: as documented, nothing is left behind
            self.sup.shutdown_requested.set()

    async def _preflight(self, names: list[str] | None, no_deps: bool, profiles: list[str]) -> None:
        """Every runtime the request needs must work before anything starts (no half-started stack)."""
        _, selected = self.sup.selection(names, no_deps, profiles)
        for kind in sorted({self.sup.records[n].spec.runtime for n in selected}):
            await self.sup.runtime(kind).preflight()

    async def _stream_until_settled(self, selected: list[str], reply: Reply,
                                    undo_from: set[str] | None = None) -> None:
        """Progress lines until `selected` settle. With `undo_from` (an `up`): a resource that
        cannot be spawned fails the whole start, and what it started since then is stopped."""
        while True:
            version = self.sup.version
            failed = self._failed_to_spawn(selected) if undo_from is not None else []
            if failed:
                assert undo_from is not None
                await self._abort_start(selected, failed, undo_from, reply)
                return
            if self.sup.settled(selected):
                break
            await reply({"event": "progress", "resources": self.sup.snapshot(selected)})
            await self.sup.wait_change(since=version)
        # Nothing selected (every resource disabled or in an inactive profile): no rows, not all of them.
        rows = self.sup.snapshot(selected) if selected else []
        self.sup.record_start(selected)
        ok = all(r["state"] in {s.value for s in SETTLED_OK} for r in rows)
        await reply({"ok": ok, "done": True, "resources": rows, "exit_code": EXIT_OK if ok else EXIT_FAILED})

    async def _abort_start(self, selected: list[str], failed: list[str], before: set[str], reply: Reply) -> None:
        log.warning("up failed at start; stopping what it started", failed=failed)
        stopped = await self._undo_start(before, keep=set(failed))
        self.sup.wanted -= set(failed)
        rows = self.sup.snapshot(selected)
        self.sup.record_start(selected)
        await reply({"ok": False, "done": True, "resources": rows, "exit_code": EXIT_FAILED,
                     "aborted": {"failed": failed, "stopped": stopped}})
        self._end_if_idle()

    async def op_down(self, request: dict[str, Any], reply: Reply) -> None:
        names = request.get("names") or None
        self._check_names(names)
        stopped = await self.sup.stop(names or list(self.sup.records))
        if not names:
            await self.sup.cleanup_runtimes(bool(request.get("volumes")))
        after = "running"
        if not names:
            # Decided before the reply: the client waits for an exiting supervisor to be gone.
            after = self.host.after_down(bool(request.get("exit"))) if self.host is not None else "exiting"
        await reply({"ok": True, "stopped": stopped, "exit_code": EXIT_OK,
                     "resources": self.sup.snapshot(stopped), "supervisor": after})
        if not names:
            self.sup.shutdown_requested.set()

    async def op_retire(self, request: dict[str, Any], reply: Reply) -> None:
        """End an idle supervisor whose code is older than the client's (warm.py answers it
        while idle); a session that holds resources keeps them."""
        await reply({"ok": True, "retired": False, "exit_code": EXIT_OK})

    async def op_restart(self, request: dict[str, Any], reply: Reply) -> None:
        names = request.get("names") or []
        if not names:
            raise VrooliError("restart needs at least one resource name")
        self._check_names(names)
        selected = await self.sup.restart(names)
        await self._stream_until_settled(sorted(selected), reply)

    async def op_reload(self, request: dict[str, Any], reply: Reply) -> None:
        changes = await self.reload(request)  # a refusal is answered by `handle`
        await reply({"ok": True, "exit_code": EXIT_OK, **changes})

    async def reload(self, request: dict[str, Any]) -> dict[str, Any]:
        """The one reload operation (SIGHUP, `vrooli reload`, the control API): read the
        files again and apply only the difference; what changed, or the refusal raised
        with the running stack untouched."""
        try:
            project = await self._load(request)
        except VrooliError as exc:
            log.error("reload rejected; the running stack is unchanged", errors=exc.lines())
            for hook in self.on_reload:
                await hook("rejected", {"errors": exc.lines()})
            raise
        for hook in self.on_reload:
            await hook("reloading", {})
        changes = await self.sup.apply_config(project)
        log.info("reloaded", **changes)
        for hook in self.on_reload:
            await hook("reloaded", changes)
        return changes
