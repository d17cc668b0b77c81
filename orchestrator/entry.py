"""The `vrooli` console entry point: `main`, and the way to each command.

Nothing in the package imports this module (it imports the CLI, never the other way), so
the entry point cannot take part in an import cycle. The four client commands (`up`,
`down`, `status`, `restart`: what a developer runs all day) and the top-level `--help`
run without the CLI framework: typer costs ~40 ms of imports, more than the question the
command asks the supervisor, and for a cold `up` ~40 ms of CPU while the stack's
processes start. client/argv.py reads their arguments, client/commands.py runs them.
Everything else (each command's `--help`, an unusual argument, the other commands) goes
to typer (cli/app.py), which parses and reports as it always did. tests/test_entry.py checks
that both ways accept the same arguments and answer alike.

Before either, the compose habit `vrooli -f FILE COMMAND` is rewritten to the command's
own `--file` option (client.argv.hoist_global_options), so it holds for every command.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from orchestrator.errors import EXIT_OK, EXIT_USAGE, UsageError


def main() -> None:
    argv = sys.argv[1:]
    _help_or_version(argv)  # first: they need nothing else imported
    from orchestrator.client.argv import hoist_global_options, parse

    try:
        argv = hoist_global_options(argv)
    except UsageError as exc:
        _exit(EXIT_USAGE, f"vrooli: {exc}\n")
    _help_or_version(argv)
    request = parse(argv, os.environ)
    if request is None:
        from orchestrator.cli.app import main as cli_main

        sys.argv[1:] = argv
        cli_main()
        return
    from orchestrator.client.commands import run

    try:
        code = run(request)
    except BrokenPipeError:  # `vrooli status | head`: the reader had enough (as `vrooli logs` has it)
        code = EXIT_OK
    _exit(code)


def _help_or_version(argv: list[str]) -> None:
    """The top-level help or the version, and exit; else return."""
    if argv in ([], ["-h"], ["--help"]):
        from orchestrator.cli import help_text

        # As typer did: asked for, the help goes to stdout (exit 0); no command at all is a
        # usage error, the help on stderr (exit 2).
        if argv:
            _exit(EXIT_OK, out=help_text.text())
        _exit(EXIT_USAGE, err=help_text.text())
    if argv == ["--version"]:
        from orchestrator import __version__

        _exit(EXIT_OK, out=f"vrooli {__version__}\n")


def _exit(code: int, err: str = "", out: str = "") -> NoReturn:
    """Print, flush, and leave without interpreter teardown (as cli.main: ~30 ms of module
    cleanup a command that is done with its output does not need)."""
    for stream, text in ((sys.stdout, out), (sys.stderr, err)):
        try:
            stream.write(text)
            stream.flush()
        except BrokenPipeError:
            pass  # nobody reads it any more: nothing to say there, and no traceback
    os._exit(code)
