"""The `vrooli` console entry point: `main`, and the typer-free fast path of a plain `up`.

Nothing in the package imports this module (it imports the CLI, never the other way), so
the entry point cannot take part in an import cycle. `main` runs a plain `vrooli up` (the
command a developer runs most, and the one whose speed is the point) without the CLI
framework: typer costs ~40 ms of imports before the supervisor could be forked, and ~40 ms
of CPU while the stack's processes start. Every other command goes to typer (cli.py).
tests/test_entry.py checks that both ways accept the same options and answer alike.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PlainUp:
    names: list[str]
    files: list[str]
    no_deps: bool
    json_out: bool
    profiles: list[str] = field(default_factory=list)


def plain_up(argv: Sequence[str]) -> PlainUp | None:
    """`vrooli up [NAMES] [-f FILE]... [--no-deps] [--json]`, or None for anything else.

    Deliberately narrow: --help, --foreground, unknown options and the VROOLI_FILE
    variable all go the ordinary way, where typer parses and reports.
    """
    if not argv or argv[0] != "up" or "VROOLI_FILE" in os.environ:
        return None
    names: list[str] = []
    files: list[str] = []
    no_deps = json_out = False
    profiles: list[str] = []
    rest = list(argv[1:])
    while rest:
        arg = rest.pop(0)
        if arg in ("-f", "--file") and rest:
            files.append(rest.pop(0))
        elif arg.startswith("--file="):
            files.append(arg.partition("=")[2])
        elif arg == "--profile" and rest:
            profiles.append(rest.pop(0))
        elif arg.startswith("--profile="):
            profiles.append(arg.partition("=")[2])
        elif arg == "--no-deps":
            no_deps = True
        elif arg == "--json":
            json_out = True
        elif arg.startswith("-") or not arg:
            return None
        else:
            names.append(arg)
    return PlainUp(names, files, no_deps, json_out, profiles)


def main() -> None:
    request = plain_up(sys.argv[1:])
    if request is None:
        from orchestrator.cli import main as cli_main

        cli_main()
        return
    from orchestrator.up_client import run_up

    code = run_up(request.names, request.files, request.no_deps, request.json_out, request.profiles)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as cli.main: no interpreter teardown once the output is out
