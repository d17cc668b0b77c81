"""Where a project's supervisor keeps its socket, lock, logs and records."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes on Linux; keep a margin


def ensure_state_dir(state_dir: Path) -> Path:
    """Create the state dir readable by its owner only: it holds the control socket."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(state_dir, 0o700)
    return state_dir


def control_socket(state_dir: Path) -> Path:
    path = state_dir / "control.sock"
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        return path
    # A deep state dir cannot hold a unix socket; use a per-user directory instead.
    digest = hashlib.sha256(os.fsencode(state_dir.resolve())).hexdigest()[:20]
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/vrooli-{os.getuid()}")  # noqa: S108
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(base, 0o700)
    return base / f"{digest}.sock"


def supervisor_log(state_dir: Path) -> Path:
    return state_dir / "supervisor.log"


def lock_file(state_dir: Path) -> Path:
    return state_dir / "supervisor.lock"


def resource_log(state_dir: Path, name: str) -> Path:
    return state_dir / "logs" / f"{name}.log"
