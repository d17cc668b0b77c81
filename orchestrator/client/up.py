"""`vrooli up` (and `restart`) as a client: ask the supervisor, show progress, exit code.

Free of typer on purpose: `vrooli up` runs from here without the CLI framework
(see `entry.main`), so a cold start does not spend ~40 ms of CPU importing it while the
stack's own processes start on the same cores.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from orchestrator.client import thin
from orchestrator.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    ConfigError,
    SupervisorGone,
    VrooliError,
    check_names,
    from_reply,
)
from orchestrator.infra.codeid import fingerprint
from orchestrator.infra.control import NotListening


def report_error(error: VrooliError, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps({"ok": False, "errors": error.lines(), "exit_code": error.exit_code}))
    else:
        for text in error.lines():
            print(text if isinstance(error, ConfigError) else f"vrooli: {text}", file=sys.stderr)


def run_up(names: list[str], files: list[str], no_deps: bool, json_out: bool,
           profiles: Sequence[str] = ()) -> int:
    """Start NAMES (all if empty) through the project's supervisor; the exit code.

    Both ways of running `vrooli up` (entry.py's fast path and typer's) come here, so they
    answer alike, Ctrl-C included. `profiles`: those named with --profile (VROOLI_PROFILES
    is added here)."""
    try:
        served = thin.find(files, "up")
        if served is not None and not (served.idle and served.code != fingerprint()):
            try:
                code = _thin_up(served, names, no_deps, json_out, profiles)  # None: declined
            except NotListening:
                code = None  # gone since the ping (keep_warm ended)
            if code is not None:
                return code
            # declined, or gone: nothing was done; the full way
        return _full_up(names, files, no_deps, json_out, profiles)
    except VrooliError as exc:
        report_error(exc, json_out)
        return exc.exit_code
    except KeyboardInterrupt:
        # Only the waiting stops: the supervisor is detached and carries on.
        print("vrooli: interrupted; the supervisor goes on starting (see `vrooli status`)", file=sys.stderr)
        return EXIT_INTERRUPTED


def _thin_up(served: thin.Served, names: list[str], no_deps: bool, json_out: bool,
             profiles: Sequence[str]) -> int | None:
    """The exit code, or None: the supervisor declined (take the full way)."""
    request = thin.request(served, "up", names=names, no_deps=no_deps, profiles=profiles)
    if served.idle:  # as below: an idle supervisor's new processes inherit this environment
        request["process_environ"] = dict(os.environ)
    return follow_thin(served.client, request, json_out)


def _full_up(names: list[str], files: list[str], no_deps: bool, json_out: bool, profiles: Sequence[str]) -> int:
    """`up` having read the files: the supervisor found or started for them."""
    from orchestrator import config
    from orchestrator.client import spawn
    from orchestrator.config.profiles import active_profiles, nothing_to_start

    project = config.load(config.find_files(files or None))
    check_names(project.resources, names)
    active = active_profiles(project, profiles)
    notice = nothing_to_start(project, names, active)
    if notice:
        print(f"vrooli: {notice}", file=sys.stderr)
    client = spawn.ensure_supervisor(project, up=names, no_deps=no_deps, profiles=active)
    request = {"op": "up", "names": names, "no_deps": no_deps, "profiles": active,
               "files": [str(f) for f in project.files], "environ": config.referenced_environ(project)}
    if client.warm_idle:
        # Only to an idle supervisor of ours (the socket's peer is checked): its new
        # processes inherit this environment, as those of one forked by this command would.
        request["process_environ"] = dict(os.environ)
    if client.claim is not None:  # the supervisor this command forked: it started already
        request["claim"] = client.claim
    return follow(client, request, json_out)


def follow(client: Any, request: dict[str, Any], json_out: bool) -> int:
    """Send `request` and show its progress to the end; the exit code."""
    code = _follow(client, request, json_out, declinable=False)
    assert code is not None  # only a thin request can be declined
    return code


def follow_thin(client: Any, request: dict[str, Any], json_out: bool) -> int | None:
    """As `follow`, for a thin request (thin.request); None if the supervisor declined it:
    nothing was done, and the command takes the full way."""
    return _follow(client, request, json_out, declinable=True)


def _follow(client: Any, request: dict[str, Any], json_out: bool, declinable: bool) -> int | None:
    from orchestrator.infra.progress import Progress, one_line

    progress = None if json_out else Progress(sys.stderr)
    started = time.monotonic()
    final: dict[str, Any] = {}
    for message in client.stream(request, timeout=0.1):
        if declinable and thin.declined(message):  # a thin request's first answer, before any output
            return None
        if message.get("tick"):
            if progress:
                progress.tick()
            continue
        if message.get("event") == "notice":  # printed whatever the output, as the full client does
            print(f"vrooli: {message['text']}", file=sys.stderr)
            continue
        if message.get("event") == "config" and progress:
            for key in ("added", "removed", "restarted"):
                if message.get(key):
                    print(f" config: {key} {', '.join(message[key])}", file=sys.stderr)
        if message.get("event") == "progress" and progress:
            progress.update(message["resources"])
        if "exit_code" in message:
            final = message
    if not final:
        raise SupervisorGone("the supervisor went away in the middle of the command; see its supervisor.log")
    if final.get("errors") and not final.get("resources"):
        raise from_reply(final)
    rows = final.get("resources", [])
    if json_out:
        print(json.dumps({"ok": final.get("ok", False), "resources": rows,
                          "seconds": round(time.monotonic() - started, 4),
                          **({"aborted": final["aborted"]} if final.get("aborted") else {})}, indent=2))
    elif progress:
        progress.update(rows)
        ready = [r for r in rows if r["state"] in ("ready", "completed")]
        print(f"{len(ready)}/{len(rows)} ready in {time.monotonic() - started:.2f}s", file=sys.stderr)
        aborted = final.get("aborted") or {}
        for row in rows:
            if row["state"] not in ("ready", "completed") and row["name"] not in aborted.get("stopped", []):
                # The whole reason, once, but on one line (a message may span many).
                print(f"vrooli: {row['name']}: {row['state']}: {one_line(row['message'] or '')}", file=sys.stderr)
        if aborted.get("stopped"):
            print(f"vrooli: {', '.join(aborted['failed'])} could not be started; stopped what this up had "
                  f"started: {', '.join(aborted['stopped'])}", file=sys.stderr)
    return int(final.get("exit_code", EXIT_FAILED))
