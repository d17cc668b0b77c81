"""`vrooli --help` (and bare `vrooli`) without the CLI framework.

The top-level help is the first thing a new user runs; typer would spend ~40 ms importing
itself to print this fixed text. Each command's own `--help` still comes from typer.
tests/test_entry.py checks that every typer command is listed here with the first line
of its help, so a new command that is not added here fails that test.
"""

from __future__ import annotations

SUMMARY = ("Bring up a whole backing stack (Postgres, Redis, Qdrant, n8n, Ollama) fast,", "and keep it healthy.")

# (command, first line of its help), in the order typer lists them.
COMMANDS = (
    ('up', 'Start resources (and their dependencies); return when they are ready.'),
    ('down', 'Stop resources in reverse dependency order; with no names, also end the supervisor.'),
    ('status', "Show each resource's state; exit 0 all ready, 1 something is not, 3 nothing runs."),
    ('restart', 'Restart resources (and what depends on them); return when they are ready again.'),
    ('logs', "Print resources' output, interleaved (processes and containers alike)."),
    ('models', 'Ollama models: list shows absent / pulling NN% / present / loaded; ensure pulls and loads.'),
    ('analyze', "The last start's timeline and critical chain (like systemd-analyze critical-chain / plot)."),
    ('report', 'Startup time, memory and CPU per resource as a Markdown table; exit 3 when nothing runs.'),
    ('validate', 'Check resources.toml (and overrides) without starting anything.'),
    ('config', 'Print the effective configuration: every -f file merged, variables expanded (TOML, or --json).'),
    ('schema', 'Print the JSON Schema of resources.toml (for editors: see README, *Editor support*).'),
    ('graph', 'Show the start plan as topological waves (each resource still starts on its own edges).'),
    ('export', 'Write the stack as a Compose file or Kubernetes manifests (nothing is started).'),
    ('daemon', 'Run the supervisor in the foreground for systemd (Type=notify, watchdog, ordered stop).'),
    ('reload', 'Re-read resources.toml and apply only the difference (as SIGHUP does for the daemon).'),
)

OPTIONS = (
    ("-f, --file FILE", "resources.toml to use, before the command as after it; repeat to merge"),
    ("", "overrides (later wins). Default ./resources.toml, or $VROOLI_FILE."),
    ("--json", "Print JSON instead of text (before the command as after it)."),
    ("--version", "Print the version and exit."),
    ("-h, --help", "Show this message and exit."),
)


def text(program: str = "vrooli") -> str:
    """The whole top-level help, ending in a newline."""
    option_width = max(len(o) for o, _ in OPTIONS)
    command_width = max(len(c) for c, _ in COMMANDS)
    lines = [f"Usage: {program} [-f FILE]... [--json] COMMAND [ARGS]...", ""]
    lines += [f"  {part}" for part in SUMMARY]
    lines += ["", "Options:"]
    lines += [f"  {option:<{option_width}}  {meaning}" for option, meaning in OPTIONS]
    lines += ["", "Commands:"]
    lines += [f"  {command:<{command_width}}  {meaning}" for command, meaning in COMMANDS]
    lines += ["", f"Run '{program} COMMAND --help' for a command's options."]
    return "\n".join(lines) + "\n"
