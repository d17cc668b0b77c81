#!/usr/bin/env python3
"""The data paths of a resources.toml, as systemd directives for vrooli.service.

Used by scripts/install-systemd.sh (stdlib only: it runs before and after the package is
installed). The unit's ProtectSystem=strict leaves the service only /var/lib/vrooli (its
StateDirectory=), /run/vrooli and a private /tmp writable; a native resource whose data
lives elsewhere needs ReadWritePaths=. Its data is taken to be where it runs: each native
resource's `cwd`, and `[project] state_dir`.

    python3 scripts/systemd_paths.py CONFIG [STATE_ROOT]

prints one line per finding:
    line DIRECTIVE   for the drop-in (StateDirectory=vrooli/NAME, ReadWritePaths=-PATH)
    dir PATH         a directory outside STATE_ROOT to create for the service user if missing
    warn TEXT        a path the sandbox keeps from the service, or one not known until run time
Exit 0 always: a config this cannot read is the daemon's to report; it is a warning here.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path, PurePosixPath

# What the unit hides or makes private, and why a path there cannot be data.
HIDDEN = {
    "/home": "invisible to the service (ProtectHome=yes)",
    "/root": "invisible to the service (ProtectHome=yes)",
    "/run/user": "invisible to the service (ProtectHome=yes)",
    "/tmp": "the service's private /tmp, emptied at every start (PrivateTmp=yes)",
    "/var/tmp": "the service's private /var/tmp, emptied at every start (PrivateTmp=yes)",
    "/proc": "not a place for data", "/sys": "not a place for data", "/dev": "not a place for data",
}


def named_paths(data: dict[str, object]) -> list[tuple[str, object]]:
    """(key, value) of every setting naming a directory the service writes."""
    found: list[tuple[str, object]] = []
    project = data.get("project")
    if isinstance(project, dict) and "state_dir" in project:
        found.append(("[project] state_dir", project["state_dir"]))
    resources = data.get("resources")
    if not isinstance(resources, dict):
        return found
    for name, resource in sorted(resources.items()):
        if isinstance(resource, dict) and resource.get("runtime", "process") == "process" and "cwd" in resource:
            found.append((f"resources.{name}.cwd", resource["cwd"]))
    return found


def directive_value(path: str) -> str | None:
    """`path` as one word of a systemd list setting, or None if it cannot be one."""
    if any(ord(ch) < 32 or ch in '"\\' for ch in path):
        return None
    escaped = path.replace("%", "%%")
    return f'"{escaped}"' if " " in escaped else escaped


def within(path: PurePosixPath, root: str) -> bool:
    return path == PurePosixPath(root) or PurePosixPath(root) in path.parents


def classify(key: str, raw: object, config_dir: Path, state_root: PurePosixPath) -> list[str]:
    if not isinstance(raw, str) or not raw:
        return []  # the daemon reports a bad value; nothing to make writable
    if "$" in raw or raw.startswith("~"):
        return [f"warn {key} = {raw!r} is only known at run time: list it in a drop-in's ReadWritePaths="]
    path = PurePosixPath(os.path.normpath(config_dir / raw))
    if within(path, str(state_root)):
        if path == state_root:
            return []
        value = directive_value(str(path.relative_to(state_root.parent)))
        return [f"line StateDirectory={value}"] if value else [f"warn {key} = {raw!r}: a path systemd cannot take"]
    if within(path, "/run/vrooli"):
        return []
    if within(path, str(config_dir)):
        return [f"warn {key} = {str(path)!r} is read-only to the service (ProtectSystem=strict); "
                f"keep data under {state_root}"]
    for hidden, why in HIDDEN.items():
        if within(path, hidden):
            return [f"warn {key} = {str(path)!r} is {why}; keep data under {state_root}"]
    value = directive_value(str(path))
    if value is None:
        return [f"warn {key} = {raw!r}: a path systemd cannot take"]
    # "-": a path deleted later fails the resource that needs it, not the whole unit.
    return [f"line ReadWritePaths=-{value}", f"dir {path}"]


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: systemd_paths.py CONFIG [STATE_ROOT]", file=sys.stderr)
        return 2
    config = Path(argv[1])
    state_root = PurePosixPath(argv[2] if len(argv) == 3 else "/var/lib/vrooli")
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        print(f"warn {config}: not read ({exc}); no data paths taken from it")
        return 0
    seen: set[str] = set()
    for key, raw in named_paths(data):
        for finding in classify(key, raw, config.parent.absolute(), state_root):
            if finding not in seen:
                seen.add(finding)
                print(finding)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
