"""The [project] table: name, state directory, health endpoint, memory budget."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config.values import Checker, home, optional_size, parse_duration, show, type_name

PROJECT_KEYS = {"name", "state_dir", "health_listen", "health_enabled", "memory_budget", "memory_budget_peak",
                "keep_warm"}
# How long a detached supervisor stays after `vrooli down`, idle, so the next `vrooli up`
# skips Python's start-up: ten minutes covers a developer's down-edit-up cycle.
DEFAULT_KEEP_WARM = 600.0
# The default when the file sets none, for machines that want no idle supervisor (CI, tests).
KEEP_WARM_ENV = "VROOLI_KEEP_WARM"

PROJECT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)


@dataclass(frozen=True)
class ProjectSettings:
    name: str
    state_dir: Path
    health_listen: str | None  # None: `vrooli daemon` listens on 127.0.0.1:9500, others on a free port
    health_enabled: bool
    memory_budget: int | None
    memory_budget_peak: int | None
    keep_warm: float = DEFAULT_KEEP_WARM  # seconds; 0: the supervisor ends with `down`


def parse_project(raw: object, project_dir: Path, environ: Mapping[str, str], check: Checker) -> ProjectSettings:
    if not isinstance(raw, dict):
        check.fail(("project",), f"expected a table, got {type_name(raw)}")
        raw = {}
    check.unknown_keys(raw, PROJECT_KEYS, ("project",), "[project]")
    name = _project_name(raw, project_dir, check)
    state_text = check.string(raw, "state_dir", ("project",))
    # Made absolute but not resolved: a state dir that is a symlink must be seen as one.
    state_dir = Path(os.path.normpath(project_dir / home(state_text))) if state_text else \
        default_state_dir(name, environ)
    _check_path_length(state_dir, ("project", "state_dir" if state_text else "name"), check)
    # Unset stays None: `vrooli daemon` then listens on 127.0.0.1:9500, any other supervisor
    # on a free port (service.health_listen), so two projects never share one port.
    health_listen = check.string(raw, "health_listen", ("project",))
    if health_listen is not None and (
            not re.match(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$", health_listen)
            or not 0 <= int(health_listen.rsplit(":", 1)[1]) <= 65535):
        check.fail(("project", "health_listen"), f"expected HOST:PORT like \"127.0.0.1:9500\", got {health_listen!r}")
    health_enabled = check.boolean(raw, "health_enabled", ("project",), True)
    budget = optional_size(raw, "memory_budget", ("project",), check)
    budget_peak = optional_size(raw, "memory_budget_peak", ("project",), check)
    if budget is not None and budget_peak is not None and budget_peak < budget:
        check.fail(("project", "memory_budget_peak"),
                   f"must be at least memory_budget ({raw['memory_budget']!r}), "
                   f"got {raw['memory_budget_peak']!r}")
    keep_warm = _keep_warm(raw, environ, check)
    return ProjectSettings(name, state_dir, health_listen, health_enabled, budget, budget_peak, keep_warm)


def _keep_warm(raw: Mapping[str, Any], environ: Mapping[str, str], check: Checker) -> float:
    """[project] keep_warm, else $VROOLI_KEEP_WARM, else ten minutes."""
    from_env = None if "keep_warm" in raw else environ.get(KEEP_WARM_ENV)
    if from_env is None:
        return check.duration(raw, "keep_warm", ("project",), DEFAULT_KEEP_WARM)
    try:
        return parse_duration(from_env)
    except ValueError as exc:
        check.fail(("project", "keep_warm"), f"from ${KEEP_WARM_ENV}: {exc}")
        return DEFAULT_KEEP_WARM


def default_state_dir(project: str, environ: Mapping[str, str]) -> Path:
    # Under systemd (StateDirectory=vrooli) the service manager says where state goes.
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0]) / project
    base = environ.get("XDG_STATE_HOME") or str(home(environ.get("HOME", "~")) / ".local" / "state")
    return Path(base) / "vrooli" / project


def _project_name(project_raw: Mapping[str, Any], project_dir: Path, check: Checker) -> str:
    explicit = "name" in project_raw
    name = check.string(project_raw, "name", ("project",), project_dir.name or "default")
    if name is None:
        return "default"
    if PROJECT_NAME_RE.fullmatch(name):
        return name
    hint = "" if explicit else " (taken from the directory's name: set [project] name)"
    if len(name) > 64:
        check.fail(("project", "name"), f"at most 64 characters, got {len(name)}{hint}")
    else:
        check.fail(("project", "name"), f"expected letters, digits, '-', '_' or '.', got {show(name)}{hint}")
    return "default"


def _check_path_length(path: Path, key: tuple[str, ...], check: Checker) -> None:
    encoded = os.fsencode(path)
    if len(encoded) > 4000 or any(len(part) > 255 for part in encoded.split(b"/")):
        check.fail(key, "the state directory's path would be too long for the file system "
                        "(255 bytes per name, 4000 in all)")
