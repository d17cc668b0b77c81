"""Entry point of the detached supervisor: `python -m orchestrator.daemon.detached -f FILE ...`.

Deliberately not the typer CLI (nor argparse): typer (with pydantic) costs ~100 ms of
imports, and a cold `vrooli up` waits for this process before anything starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.errors import VrooliError
    from orchestrator.spec import ProjectSpec

if "rich" not in sys.modules:  # see cli/app.py: structlog would import it, for nothing here
    sys.modules["rich"] = None  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    """`-f FILE`... `[--log-format F] [--up NAMES [--no-deps] [--profile P]... [--invoked-at T]
    [--claim C]]`. Parsed by hand: argparse costs a few ms on the path to the first start.
    A cold `vrooli up` does not come this way: its fork calls `serve` with the files it read."""
    args = list(sys.argv[1:] if argv is None else argv)
    files: list[str] = []
    profiles: list[str] = []
    log_format, up_names, no_deps, invoked_at, claim = "json", None, False, None, None
    while args:
        arg = args.pop(0)
        if arg == "--no-deps":
            no_deps = True
        elif arg in ("-f", "--file", "--log-format", "--up", "--profile", "--invoked-at", "--claim") and args:
            value = args.pop(0)
            if arg in ("-f", "--file"):
                files.append(value)
            elif arg == "--profile":
                profiles.append(value)
            elif arg == "--log-format":
                log_format = value
            elif arg == "--up":
                up_names = value
            elif arg == "--claim":
                claim = value
            else:
                invoked_at = float(value)
        else:
            print(f"vrooli-detached: unexpected argument {arg!r}", file=sys.stderr)
            return 2

    from orchestrator import config
    from orchestrator.errors import VrooliError

    try:
        found = config.find_files(files) if files else [Path(os.getcwd()) / config.DEFAULT_FILE]
    except VrooliError as exc:
        return _failed(exc)
    up = None if up_names is None else [n for n in up_names.split(",") if n]
    return serve(found, log_format, up, no_deps, profiles, invoked_at, claim)


def serve(files: list[Path], log_format: str = "json", up: list[str] | None = None, no_deps: bool = False,
          profiles: list[str] | None = None, invoked_at: float | None = None, claim: str | None = None,
          project: ProjectSpec | None = None) -> int:
    """Be the detached supervisor of `files` until it ends; its exit code. `up` ([] = all)
    is started before any client asks. `project`: the files as the forking `vrooli up` read
    them a moment ago, so that this process does not read them again."""
    from orchestrator.daemon import service
    from orchestrator.errors import VrooliError
    from orchestrator.infra.logger import configure

    configure(log_format, sys.stderr)
    try:
        return service.run(service.Options(
            files=files, mode="detached", names=up or [], no_deps=no_deps, profiles=profiles or [],
            up_at_start=up is not None, invoked_at=invoked_at, claim=claim), project)
    except VrooliError as exc:
        return _failed(exc)


def _failed(exc: VrooliError) -> int:
    for line in exc.lines():
        print(f"vrooli: {line}", file=sys.stderr)
    return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
