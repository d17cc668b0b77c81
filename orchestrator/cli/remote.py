"""Commands that read the state dir directly (`logs`, `analyze`), for a project served by a
system daemon: through its control socket, since a member of its control group may not
enter its state dir (/var/lib/vrooli is the daemon's own, 0700)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator import config
from orchestrator.client import spawn
from orchestrator.errors import SupervisorGone, SupervisorUnavailable, from_reply
from orchestrator.infra import paths
from orchestrator.spec import ProjectSpec


def served_by_daemon(files: list[str] | None) -> bool:
    """Do these files (-f) belong to a system daemon (daemons.py)?"""
    return paths.daemon_link(config.find_files(files)[0]) is not None


def logs(project: ProjectSpec, name: str, tail: int, follow: bool, json_out: bool) -> None:
    """Print the lines the daemon sends; with `follow`, until Ctrl-C."""
    client = spawn.client_once_started(project.state_dir)
    if not client.alive():
        raise SupervisorUnavailable(f"the system daemon for {project.name} is not answering")
    try:
        for message in client.stream({"op": "logs", "name": name, "tail": tail, "follow": follow}, timeout=None):
            if "ok" in message and not message["ok"]:
                raise from_reply(message, "logs failed")
            lines = message.get("lines") or []
            if json_out and not follow:
                print(json.dumps({"resource": name, "lines": lines}))
                return
            for text in lines:
                print(json.dumps({"resource": name, "line": text}) if json_out and follow else text, flush=True)
            if "ok" in message and not follow:
                return
    except KeyboardInterrupt:
        return
    if follow:
        raise SupervisorGone("the system daemon went away (stopped or restarted)")


def last_start(state_dir: Path) -> dict[str, Any]:
    """The daemon's last start record, or {} if it has none yet."""
    client = spawn.client_once_started(state_dir)
    reply = client.call({"op": "last_start"})
    if not reply.get("ok"):
        raise from_reply(reply, "analyze failed")
    record = reply.get("record")
    return record if isinstance(record, dict) else {}
