"""The command line of the four client commands, read without a CLI framework.

`vrooli up`, `down`, `status` and `restart` are what a developer runs all day, and each
asks the supervisor one question: importing typer (and click) for them costs more than
the question. So entry.py reads their arguments here, with the standard library only,
and hands everything else — `--help`, anything unusual, every other command — to typer
(cli/app.py), which parses and reports errors as it always did. This parser only ever
*accepts* what typer would read the same way (tests/test_entry.py holds the two to it);
whatever it is unsure of, it declines (None).

Also here: the compose habit of naming the files before the command
(`vrooli -f a.toml -f b.toml graph`), rewritten for every command into the command's own
`--file` option, which `logs` keeps too (its `-f` means follow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from orchestrator.errors import UsageError

CLIENT_COMMANDS = ("up", "down", "status", "restart")
USAGE = "vrooli [-f FILE]... [--json] COMMAND [ARGS]..."

# Flags each command reads here (anything else goes to typer), and the options that take a value.
_FLAGS = {
    "up": {"--json": "json_out", "--no-deps": "no_deps"},
    "down": {"--json": "json_out", "--volumes": "volumes", "-v": "volumes", "--exit": "exit_supervisor"},
    "status": {"--json": "json_out"},
    "restart": {"--json": "json_out"},
}
_VALUED = {"up": ("--file", "--profile")}


class ClientCommand(NamedTuple):  # not a dataclass: its import alone is ~7 ms of a ~30 ms command
    """One of the four client commands, with every option it can take."""

    command: str
    names: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    json_out: bool = False
    no_deps: bool = False  # up
    profiles: tuple[str, ...] = ()  # up: those named with --profile (run_up adds $VROOLI_PROFILES)
    volumes: bool = False  # down
    exit_supervisor: bool = False  # down --exit


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> ClientCommand | None:
    """The client command `argv` asks for, or None to leave it to typer.

    Read as click reads it: options and names in any order, `-f`'s value taken whatever it
    looks like (`-f --json` names a file "--json"), `-fFILE` and `--file=FILE` too, and
    $VROOLI_FILE (split on whitespace) when no -f is given. Declined: --help, `--`, option
    clusters, an option without its value, an unknown option, and `restart` without names
    (typer's "missing argument" error says it best).
    """
    if not argv or argv[0] not in CLIENT_COMMANDS:
        return None
    command, flags = argv[0], _FLAGS[argv[0]]
    valued = _VALUED.get(command, ("--file",))
    names: list[str] = []
    values: dict[str, list[str]] = {"--file": [], "--profile": []}
    seen: dict[str, bool] = {}
    rest = list(argv[1:])
    while rest:
        arg = rest.pop(0)
        option, value = _option_value(arg)
        if option in valued:
            if value is None:
                if not rest:
                    return None  # typer: "Option '-f' requires an argument."
                value = rest.pop(0)
            values[option].append(value)
        elif arg in flags:
            seen[flags[arg]] = True
        elif arg.startswith("-") or not arg:
            return None
        else:
            names.append(arg)
    if command == "restart" and not names:
        return None
    files = values["--file"] or environ.get("VROOLI_FILE", "").split()
    return ClientCommand(command, tuple(names), tuple(files), json_out=seen.get("json_out", False),
                         no_deps=seen.get("no_deps", False), profiles=tuple(values["--profile"]),
                         volumes=seen.get("volumes", False), exit_supervisor=seen.get("exit_supervisor", False))


def _option_value(arg: str) -> tuple[str, str | None]:
    """("--file", value or None) for every spelling of the file option; likewise --profile."""
    if arg in ("-f", "--file", "--profile"):
        return arg if arg != "-f" else "--file", None
    if arg.startswith(("--file=", "--profile=")):
        option, _, value = arg.partition("=")
        return option, value
    if arg.startswith("-f") and len(arg) > 2:
        return "--file", arg[2:]  # click reads `-fFILE` as `-f FILE`
    return arg, None


def hoist_global_options(argv: Sequence[str]) -> list[str]:
    """`-f FILE` (and `--json`) before the command, moved to the command's own options.

    `vrooli -f a.toml -f b.toml graph --json` reads as `vrooli graph --file=a.toml
    --file=b.toml --json`: the files keep their order, before any the command names
    itself. Always spelt `--file=FILE`, the one spelling every command reads as a file
    (after `logs`, `-f` means follow). An argv that starts with anything else is left as
    it is. Raises UsageError (one line, exit 2) for an -f without its file, or no command.
    """
    moved: list[str] = []
    rest = list(argv)
    while rest:
        option, value = _option_value(rest[0])
        if option == "--file":
            shown = rest.pop(0)
            if value is None:
                if not rest:
                    raise UsageError(f"option {shown} needs a file name ({USAGE})")
                value = rest.pop(0)
            if not value:
                raise UsageError(f"option {shown.partition('=')[0]} needs a file name ({USAGE})")
            moved.append(f"--file={value}")
        elif rest[0] == "--json":
            moved.append(rest.pop(0))
        else:
            break
    if not moved:
        return rest
    if not rest:
        raise UsageError(f"no command after the options ({USAGE})")
    if rest[0] in ("-h", "--help"):
        return rest[:1]  # the top-level help: the files change nothing in it
    if rest[0].startswith("-"):
        raise UsageError(f"no such option before the command: {rest[0]} ({USAGE})")
    return [rest[0], *moved, *rest[1:]]
