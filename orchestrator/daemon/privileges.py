"""Can this process start a resource as another user (`user =`)? Asked by `vrooli daemon`.

Under the shipped unit (User=vrooli, NoNewPrivileges=yes, CapabilityBoundingSet= empty) it
cannot: switching needs CAP_SETUID and CAP_SETGID (setgroups, setresgid, setresuid in the
child before exec), which an unprivileged process lacks and, with no_new_privs, cannot gain
through a setuid helper either. Found at start, that is one clear line naming the resource
and the key; found at spawn it would be "Operation not permitted" per resource, after the
others had started.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from orchestrator.config.read import read_toml
from orchestrator.errors import ConfigError, StartFailed
from orchestrator.infra.control import user_name
from orchestrator.spec import ProjectSpec

CAP_SETGID, CAP_SETUID = 6, 7


def _status_fields(text: str | None = None) -> dict[str, str]:
    if text is None:
        try:
            with open("/proc/self/status") as handle:
                text = handle.read()
        except OSError:
            return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def switch_blocker(status_text: str | None = None) -> str | None:
    """Why this process cannot switch users, or None if it can (CAP_SETUID and CAP_SETGID
    in its effective set). The reason names NoNewPrivs when it is set."""
    fields = _status_fields(status_text)
    try:
        effective = int(fields.get("CapEff", "0").strip(), 16)
    except ValueError:
        effective = 0
    missing = [name for name, bit in (("CAP_SETUID", CAP_SETUID), ("CAP_SETGID", CAP_SETGID))
               if not effective >> bit & 1]
    if not missing:
        return None
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()} ({user_name(os.geteuid())})"
    why = f"vrooli daemon runs as {who} without {' and '.join(missing)}"
    if fields.get("NoNewPrivs", "0").strip() == "1":
        why += " and with NoNewPrivileges (it cannot gain them)"
    return why


def _is_us(user: str) -> bool:
    """Is `user` who we already are (no switch needed)? Looked up as the start would."""
    from orchestrator.runtimes.process import identity_of

    try:
        identity = identity_of(user)
    except StartFailed:
        return False  # unknown: the start reports that itself
    return identity.uid == os.geteuid() and identity.gid == os.getegid()


def _file_setting(project: ProjectSpec, name: str) -> Path:
    """The last file that sets resources.NAME.user (later files override earlier ones)."""
    for path in reversed(project.files):
        try:
            table = read_toml(path).get("resources", {}).get(name, {})
        except (ConfigError, AttributeError):
            continue
        if isinstance(table, dict) and "user" in table:
            return path
    return project.files[0]


def check_user_switch(project: ProjectSpec, names: Iterable[str] | None = None,
                      status_text: str | None = None) -> None:
    """Refuse native resources with `user =` (another user than ours) when we cannot switch:
    one line each, naming the file, resource and key, and what to change."""
    wanted = set(project.resources if names is None else names)
    needing = [spec for spec in project.resources.values()
               if spec.name in wanted and spec.runtime == "process" and spec.user and not _is_us(spec.user)]
    if not needing:
        return
    blocker = switch_blocker(status_text)
    if blocker is None:
        return
    raise ConfigError([
        f"{_file_setting(project, spec.name)}: resources.{spec.name}.user: cannot start it as user {spec.user!r}: "
        f"{blocker}; "
        f"remove `user` (it then runs as the daemon's user), or run it in a container (runtime = \"docker\"), "
        f"or give the unit AmbientCapabilities=CAP_SETUID CAP_SETGID (and the same in CapabilityBoundingSet=)"
        for spec in needing])
