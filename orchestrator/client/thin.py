"""The thin client: a command answered by the supervisor already serving its files, which
the client then never reads.

`vrooli status`, `up`, `down` and `restart` on a running stack (or `up` after a `down`,
with the supervisor kept warm) ask a supervisor that has the files read and every module
imported. Reading them here too — the config model, the TOML parser, the checks: ~25 ms
of imports and a load, more than the question costs — only found the state dir and
checked the names. So, when the registry (registry.py) names a supervisor for the first
file, that supervisor says it serves exactly these files, and it is a detached or
foreground one of this user's: the request goes to it with the files' paths, the values
of the variables the files referred to when it last read them, and the command's own
arguments. It reads the files again as this client would (control_api.from_thin_client)
and either answers exactly as the full client's request would be answered, or declines:
the files no longer load, refer to a variable not sent, or moved the state dir. Declined,
or whenever anything here is unsure (no registry entry, a system daemon on this machine,
an idle supervisor for any command but `up`, an idle one running older code), the
command takes the full way, which reads the files and says what is wrong as it always did.

Standard library and the project's small client modules only (tests/test_entry.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from orchestrator.client import spawn
from orchestrator.errors import VrooliError
from orchestrator.infra import paths, registry

if TYPE_CHECKING:
    from collections.abc import Sequence

    from orchestrator.infra.control import Client

class Served(NamedTuple):
    """A supervisor serving the command's files, and what its ping said."""

    client: Client
    state_dir: Path
    first_file: Path
    files: list[str]  # as the supervisor names them: what the request sends
    environ: dict[str, str]  # this process's values of the variables the files referred to
    environ_names: list[str]
    idle: bool
    code: str | None


def find(files: Sequence[str], command: str) -> Served | None:
    """The supervisor to ask without reading the files, or None: take the full way."""
    if _system_daemon_may_serve():
        return None  # its files are linked to it (daemons.discover): the full client knows how
    wanted = [Path(os.path.expanduser(f)).absolute() for f in files] or [Path.cwd() / paths.DEFAULT_FILE]
    entry = registry.lookup(wanted[0])
    if entry is None:
        return None
    try:
        client = spawn.client_at(entry.state_dir)  # the state dir's owner and mode checked first
        ping = client.call({"op": "ping"})
    except (VrooliError, OSError, ValueError):
        return None
    names = ping.get("environ_names")  # absent: an older supervisor, which cannot check a thin request
    served = ping.get("files")
    if not ping.get("ok") or ping.get("mode") not in ("detached", "foreground") or not isinstance(names, list) \
            or not isinstance(served, list) or _resolved(served) != _resolved(wanted):
        return None
    idle = bool(ping.get("idle"))
    if idle and command != "up":
        return None  # the full client shows a stopped stack from the files
    values = {n: os.environ[n] for n in names if n in os.environ}
    return Served(client, entry.state_dir, wanted[0], [str(f) for f in served], values, [str(n) for n in names],
                  idle, ping.get("code"))


def request(served: Served, op: str, **fields: Any) -> dict[str, Any]:
    """The thin request for `op`: the files, the variables' values, and `fields`."""
    thin: dict[str, Any] = {"environ_names": served.environ_names}
    if op == "up":
        thin.update(profiles_named=list(fields.pop("profiles", ())),
                    profiles_env=os.environ.get("VROOLI_PROFILES", ""))
    return {"op": op, **fields, "files": served.files, "environ": served.environ, "thin": thin}


def declined(reply: dict[str, Any]) -> bool:
    """Whether the supervisor will not serve this thin request (the reply says why): nothing
    was done, and the command takes the full way."""
    return bool(reply.get("declined"))


def _system_daemon_may_serve() -> bool:
    try:
        return bool(os.listdir(paths.daemon_discovery_dir()))
    except FileNotFoundError:
        return False
    except OSError:
        return True  # there, but not ours to read: the full client tells what that means


def _resolved(files: Sequence[str | Path]) -> list[Path] | None:
    if not all(isinstance(f, str | Path) for f in files):
        return None  # a reply of the wrong shape matches nothing
    return [registry.canonical(Path(f)) for f in files]
