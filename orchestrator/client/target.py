"""Which project a command acts on: from its files or, while they are broken, from the
running supervisor they started (found through the registry)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator import config
from orchestrator.client import spawn
from orchestrator.errors import ConfigError, SupervisorUnavailable
from orchestrator.infra import paths
from orchestrator.spec import ProjectSpec


@dataclass(frozen=True)
class Target:
    """The project a command acts on: from its files or, while they are broken, from the
    running supervisor they started (found through the registry)."""

    project: ProjectSpec | None  # None: the files do not load; the supervisor's own copy rules
    name: str
    state_dir: Path
    first_file: Path
    broken: ConfigError | None = None


def target_of(files: list[str] | None, purpose: str) -> Target:
    """The project from its files; if they do not load but the supervisor they started
    runs, that supervisor (with one warning line), so a broken file never keeps a user
    from seeing or stopping a running stack."""
    first = config.find_files(files)[0]
    try:
        project = config.load(config.find_files(files))
    except ConfigError as exc:
        running = running_despite(exc, first)
        if running is None:
            raise
        problems = exc.lines()
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        print(f"vrooli: warning: the config does not load: {problems[0]}{more}; {purpose} "
              f"the running supervisor's own copy", file=sys.stderr)
        return running
    return Target(project, project.name, project.state_dir, first)


def running_despite(error: ConfigError, first: Path) -> Target | None:
    """The supervisor started from `first`: a system daemon serving it (daemons.py; its
    file may not load here for want of the unit's environment), or one of this user's."""
    from orchestrator.infra import registry

    link = paths.daemon_link(first)
    entry = registry.lookup(first) if link is None else \
        registry.Entry(link.first_file, link.state_dir, "the system daemon's project")
    if entry is None:
        return None
    try:
        ping = spawn.client_at(entry.state_dir).call({"op": "ping"})
        served = [Path(f).resolve() for f in ping.get("files") or []]
    except (SupervisorUnavailable, OSError, TypeError, ValueError):
        return None
    if not ping.get("ok") or served[:1] != [entry.file]:
        return None  # another project's supervisor uses that state dir now
    return Target(None, str(ping.get("project", entry.project)), entry.state_dir, first, error)
