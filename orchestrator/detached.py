"""Entry point of the detached supervisor: `python -m orchestrator.detached -f FILE ...`.

Deliberately not the typer CLI: typer (with pydantic) costs ~100 ms of imports, and a cold
`vrooli up` waits for this process before anything starts.
"""

from __future__ import annotations

import os
import sys

if "rich" not in sys.modules:  # see cli.py: structlog would import it, for nothing here
    sys.modules["rich"] = None  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="vrooli-detached")
    parser.add_argument("-f", "--file", action="append", default=[])
    parser.add_argument("--log-format", default="json")
    parser.add_argument("--up", dest="up_names", default=None)
    parser.add_argument("--no-deps", action="store_true")
    parser.add_argument("--profile", dest="profiles", action="append", default=[])
    parser.add_argument("--invoked-at", type=float, default=None)
    args = parser.parse_args(argv)

    from orchestrator import config, service
    from orchestrator.errors import VrooliError
    from orchestrator.logging import configure

    configure(args.log_format, sys.stderr)
    names = [n for n in (args.up_names or "").split(",") if n]
    try:
        return service.run(service.Options(
            files=config.find_files(args.file) if args.file else [Path(os.getcwd()) / config.DEFAULT_FILE],
            mode="detached", names=names, no_deps=args.no_deps, profiles=args.profiles,
            up_at_start=args.up_names is not None,
            invoked_at=args.invoked_at))
    except VrooliError as exc:
        for line in exc.lines():
            print(f"vrooli: {line}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
