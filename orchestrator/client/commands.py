"""`vrooli down`, `status` and `restart` as clients of the supervisor: ask, print, exit code.

With `up` (up.py) these are the commands a developer runs all day. Both ways of
running them — entry.py's standard-library path and typer's commands in cli/app.py — call the
functions here, so they answer alike; and nothing here imports more than the standard
library and the project's small client modules (no event loop, no docker, no psutil,
no CLI framework: tests/test_entry.py checks it on real commands).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.client import spawn, thin
from orchestrator.client.argv import ClientCommand
from orchestrator.client.output import print_not_running, print_status, supervisor_line, supervisor_of
from orchestrator.client.up import follow, follow_thin, report_error, run_up
from orchestrator.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    SupervisorGone,
    SupervisorUnavailable,
    VrooliError,
    check_names,
    from_reply,
)
from orchestrator.infra import paths, registry
from orchestrator.infra.control import NotListening

if TYPE_CHECKING:  # the full way's modules: the thin client (thin.py) never imports them
    from orchestrator.client.target import Target
    from orchestrator.spec import ProjectSpec


def target_of(files: list[str] | None, purpose: str) -> Target:
    from orchestrator.client.target import target_of as load_target

    return load_target(files, purpose)


def run(request: ClientCommand) -> int:
    """Run one of the four client commands; its exit code."""
    if request.command == "up":
        return run_up(list(request.names), list(request.files), request.no_deps, request.json_out,
                      list(request.profiles))
    if request.command == "down":
        return run_down(list(request.names), list(request.files), request.volumes, request.exit_supervisor,
                        request.json_out)
    if request.command == "status":
        return run_status(list(request.names), list(request.files), request.json_out)
    return run_restart(list(request.names), list(request.files), request.json_out)


def run_down(names: list[str], files: list[str], volumes: bool, exit_supervisor: bool, json_out: bool) -> int:
    """Stop NAMES (all if empty) in reverse dependency order; with no names, also end the supervisor."""
    try:
        stopped = _down(names, files, volumes, exit_supervisor)
    except VrooliError as exc:
        report_error(exc, json_out)
        return exc.exit_code
    except KeyboardInterrupt:
        return interrupted("a stop already asked for goes on (see `vrooli status`)")
    if stopped is None:
        if json_out:
            print(json.dumps({"ok": True, "stopped": [], "running": False}))
        else:
            print("nothing is running", file=sys.stderr)
    elif json_out:
        print(json.dumps({"ok": True, "stopped": stopped}))
    else:
        print(f"stopped {', '.join(stopped) or 'nothing'}", file=sys.stderr)
    return EXIT_OK


def _down(names: list[str], files: list[str], volumes: bool, exit_supervisor: bool) -> list[str] | None:
    """What the supervisor stopped; None when nothing ran and nothing was left to clean up."""
    served = thin.find(files, "down")
    if served is not None:
        served.client.timeout = None  # a stop takes what it takes (stop_timeout, containers), as below
        try:
            reply: dict[str, Any] | None = served.client.call(
                thin.request(served, "down", names=names, volumes=volumes, exit=exit_supervisor))
        except (SupervisorUnavailable, OSError, ValueError):
            reply = None  # the supervisor went away: the full way finds out what is left
        if reply is not None and not thin.declined(reply):
            return _stopped(reply, names, served.state_dir, served.first_file)
    target = target_of(files or None, "stopping the stack with")
    if target.project is not None:
        check_names(target.project.resources, names)
    client = spawn.client_once_started(target.state_dir, timeout=None)
    if not client.alive():
        # `down --volumes` after a plain `down` must still remove the volumes.
        if target.project is None:
            raise target.broken or SupervisorGone("the supervisor went away")
        if not _has_leftovers(target.project) and not volumes:
            return None
        client = spawn.ensure_supervisor(target.project)  # it adopts what was left, then stops it
        exit_supervisor = True  # started only to clean up: not kept warm
    reply = client.call({"op": "down", "names": names, "volumes": volumes, "exit": exit_supervisor})
    return _stopped(reply, names, target.state_dir, target.first_file)


def _stopped(reply: dict[str, Any], names: list[str], state_dir: Path, first_file: Path) -> list[str]:
    """What a `down` reply stopped, once a supervisor that ends has gone."""
    if not reply.get("ok"):
        raise from_reply(reply, "down failed")
    if not names and reply.get("supervisor") != "idle":  # an idle warm one stays, and findable
        _wait_supervisor_gone(state_dir)
        registry.forget(first_file)
    return list(reply["stopped"])


def _has_leftovers(project: ProjectSpec) -> bool:
    from orchestrator.engine import records

    return records.maybe_running(project.state_dir)


def _wait_supervisor_gone(state_dir: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not _supervisor_left(state_dir) and time.monotonic() < deadline:
        time.sleep(0.01)


def _supervisor_left(state_dir: Path) -> bool:
    try:
        return not paths.pid_file(state_dir).exists()
    except PermissionError:  # a system daemon's state dir is not a member's to enter; its socket goes too
        return not paths.control_socket(state_dir).exists()


def run_status(names: list[str], files: list[str], json_out: bool) -> int:
    """Each resource's state; exit 0 all ready, 1 something is not, 3 nothing runs."""
    try:
        served = thin.find(files, "status")
        if served is not None:
            code = _thin_status(served, names, json_out)
            if code is not None:
                return code
        reply, target = _status_reply(names, files)
    except VrooliError as exc:
        report_error(exc, json_out)
        return exc.exit_code
    except KeyboardInterrupt:
        return interrupted()
    if reply is None:
        assert target.project is not None
        print_not_running(target.project, names, json_out)
        return EXIT_NOT_RUNNING
    supervisor = supervisor_of(reply)
    if supervisor.get("idle"):  # a warm supervisor holding nothing: not a running stack
        _print_idle(reply, supervisor, target, names, json_out)
        return EXIT_NOT_RUNNING
    return _show_running(reply, supervisor, names, json_out)


def _thin_status(served: thin.Served, names: list[str], json_out: bool) -> int | None:
    """The status of a running stack from the supervisor serving the files; None: take the full way."""
    try:
        reply = served.client.call(thin.request(served, "status", names=names))
    except (SupervisorUnavailable, OSError, ValueError):
        return None
    if thin.declined(reply) or not reply.get("ok"):
        return None  # the full client, having read the files, says what is wrong (or "not running")
    supervisor = supervisor_of(reply)
    if supervisor.get("idle"):  # idle since the ping: the full client shows the stopped stack
        return None
    return _show_running(reply, supervisor, names, json_out)


def _show_running(reply: dict[str, Any], supervisor: dict[str, Any], names: list[str], json_out: bool) -> int:
    rows = reply["resources"]
    if json_out:
        print(json.dumps({"project": reply["project"], "running": True, "supervisor_pid": reply["supervisor_pid"],
                          "supervisor": supervisor, "resources": rows, **reply.get("extra", {})}, indent=2))
    else:
        print_status(rows, reply.get("extra", {}), supervisor)
    return _status_code(rows, names)


def _print_idle(reply: dict[str, Any], supervisor: dict[str, Any], target: Target, names: list[str],
                json_out: bool) -> None:
    """Not running, and when the idle supervisor exits (in JSON, its rows from the files as
    they are now: it reads them again on `up`)."""
    if target.project is not None:
        print_not_running(target.project, names, json_out, supervisor)
    elif json_out:
        print(json.dumps({"project": reply["project"], "running": False, "supervisor_pid": supervisor["pid"],
                          "supervisor": supervisor, "resources": reply["resources"], "health_endpoint": None,
                          "stack_memory": None}, indent=2))
    else:
        print(f"{reply['project']}: not running\n{supervisor_line(supervisor)}", file=sys.stderr)


def _status_reply(names: list[str], files: list[str]) -> tuple[dict[str, Any] | None, Target]:
    """The supervisor's status answer (None: nothing runs) and the project it is about."""
    target = target_of(files or None, "showing")
    if target.project is not None:
        check_names(target.project.resources, names)
    try:
        reply: dict[str, Any] | None = spawn.client_once_started(target.state_dir).call(
            {"op": "status", "names": names})
    except SupervisorUnavailable:
        reply = None
    if reply is not None and not reply.get("ok"):
        if target.project is None:
            raise from_reply(reply, "status failed")
        reply = None
    if reply is None and target.project is None:
        raise target.broken or SupervisorGone("the supervisor went away")
    return reply, target


def _status_code(rows: list[dict[str, Any]], names: list[str]) -> int:
    considered = [r for r in rows if r["wanted"] or names]
    if not any(r["state"] not in ("stopped", "pending") for r in considered):
        return EXIT_NOT_RUNNING
    if all(r["state"] in ("ready", "completed") for r in considered):
        return EXIT_OK
    return EXIT_FAILED


def run_restart(names: list[str], files: list[str], json_out: bool) -> int:
    """Restart NAMES and what depends on them; return when they are ready again."""
    try:
        served = thin.find(files, "restart")
        if served is not None:
            try:
                code = follow_thin(served.client, thin.request(served, "restart", names=names), json_out)
            except NotListening:
                code = None  # gone since the ping
            if code is not None:
                return code
            # declined, or gone: nothing was done; the full way
        target = target_of(files or None, "restarting with")  # a file that does not load here: the supervisor's copy
        if target.project is not None:
            check_names(target.project.resources, names)
        client = spawn.client_once_started(target.state_dir, timeout=None)
        if not client.alive():
            raise target.broken or SupervisorUnavailable(f"{target.name} is not running; use `vrooli up`")
        return follow(client, {"op": "restart", "names": names}, json_out)
    except VrooliError as exc:
        report_error(exc, json_out)
        return exc.exit_code
    except KeyboardInterrupt:
        return interrupted("a restart already asked for goes on (see `vrooli status`)")


def interrupted(what_goes_on: str = "") -> int:
    """Ctrl-C while a client waits: one line, exit 130, whichever way the command ran."""
    print(f"vrooli: interrupted{'; ' + what_goes_on if what_goes_on else ''}", file=sys.stderr)
    return EXIT_INTERRUPTED
