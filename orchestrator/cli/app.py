"""The `vrooli` command: parse, call, print, exit code — nothing else.

Over the ~450-line guide (~510) because the typer declarations of all the commands live
together, one function each; what they print is in client/output.py, which project they
act on in client/target.py.

Heavy imports (anyio, the docker SDK, httpx) happen inside the commands that need them.
`up`, `down`, `status` and `restart` usually never come here: entry.py runs them (and the
top-level `--help`) without typer, through the same functions (commands.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

# Start-up time is a feature (`vrooli --help` <= 0.2 s, a detached supervisor serving in
# well under half a second). rich comes with typer but we use none of it: plain help, and
# structlog's own console renderer. Importing it costs ~150 ms (structlog probes for it at
# import time), so this process declines it before typer or structlog can look.
os.environ.setdefault("TYPER_USE_RICH", "0")
if "rich" not in sys.modules:
    sys.modules["rich"] = None  # type: ignore[assignment]

import typer

from orchestrator import __version__, config
from orchestrator.cli import remote
from orchestrator.client import commands, spawn
from orchestrator.client.output import model_line
from orchestrator.client.target import target_of
from orchestrator.client.up import report_error, run_up
from orchestrator.errors import (
    ConfigError,
    SupervisorGone,
    SupervisorUnavailable,
    UsageError,
    VrooliError,
    check_names,
    from_reply,
)
from orchestrator.infra import paths, registry
from orchestrator.spec import ProjectSpec

app = typer.Typer(
    name="vrooli",
    help="Bring up a whole backing stack (Postgres, Redis, Qdrant, n8n, Ollama) fast, and keep it healthy.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

FilesOpt = Annotated[list[str] | None, typer.Option(
    "--file", "-f", help="resources.toml to use; repeat to merge overrides (later wins).",
    envvar="VROOLI_FILE")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
NamesArg = Annotated[list[str] | None, typer.Argument(help="Resource names (default: all).", show_default=False)]
LogFormatOpt = Annotated[str, typer.Option("--log-format", help="auto | console | json")]
ProfileOpt = Annotated[list[str] | None, typer.Option(
    "--profile", help="Activate a profile (repeatable; also VROOLI_PROFILES=a,b).", show_default=False)]



def _fail(error: VrooliError, as_json: bool = False) -> NoReturn:
    report_error(error, as_json)
    raise typer.Exit(error.exit_code)


def _load(files: list[str] | None) -> ProjectSpec:
    return config.load(config.find_files(files))


def _project_or_exit(files: list[str] | None, json_out: bool) -> ProjectSpec:
    """The validated project, or its errors printed and the matching exit code."""
    try:
        return _load(files)
    except VrooliError as exc:
        _fail(exc, json_out)


# ------------------------------------------------------------------------ commands


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        print(f"vrooli {__version__}")
        raise typer.Exit(0)


@app.command()
def up(
    names: NamesArg = None,
    files: FilesOpt = None,
    no_deps: Annotated[bool, typer.Option("--no-deps", help="Do not start dependencies of NAMES.")] = False,
    foreground: Annotated[bool, typer.Option(
        "--foreground", help="Keep the supervisor attached; Ctrl-C stops everything.")] = False,
    json_out: JsonOpt = False,
    log_format: LogFormatOpt = "auto",
    profile: ProfileOpt = None,
) -> None:
    """Start resources (and their dependencies); return when they are ready."""
    if not foreground:
        raise typer.Exit(run_up(names or [], files or [], no_deps, json_out, profile or []))
    try:
        project = _load(files)
        check_names(project.resources, names or [])
        from orchestrator.config.profiles import active_profiles
        from orchestrator.daemon import service
        from orchestrator.infra.logger import configure

        configure(log_format, sys.stderr)
        registry.remember(project.files[0], project.state_dir, project.name)
        spawn.retire_idle(project.state_dir)  # a warm supervisor left by `down` gives way
        code = service.run(service.Options(files=list(project.files), mode="foreground",
                                           names=names or [], no_deps=no_deps,
                                           profiles=active_profiles(project, profile or [])))
    except VrooliError as exc:
        _fail(exc, json_out)
    raise typer.Exit(code)


# up (above, unless --foreground), down, status and restart run in commands.py, which
# entry.py also calls without typer: both ways answer alike.


@app.command()
def down(
    names: NamesArg = None,
    files: FilesOpt = None,
    volumes: Annotated[bool, typer.Option("--volumes", "-v", help="Also remove named volumes.")] = False,
    exit_supervisor: Annotated[bool, typer.Option(
        "--exit", help="End the supervisor at once (do not keep it warm).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Stop resources in reverse dependency order; with no names, also end the supervisor."""
    raise typer.Exit(commands.run_down(names or [], files or [], volumes, exit_supervisor, json_out))


@app.command()
def status(
    names: NamesArg = None,
    files: FilesOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show each resource's state; exit 0 all ready, 1 something is not, 3 nothing runs."""
    raise typer.Exit(commands.run_status(names or [], files or [], json_out))


@app.command()
def restart(
    names: Annotated[list[str], typer.Argument(help="Resources to restart.")],
    files: FilesOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Restart resources (and what depends on them); return when they are ready again."""
    raise typer.Exit(commands.run_restart(names, files or [], json_out))


@app.command()
def logs(
    names: NamesArg = None,
    files: Annotated[list[str] | None, typer.Option(
        "--file", help="resources.toml to use; repeat to merge overrides.", envvar="VROOLI_FILE")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new output.")] = False,
    tail: Annotated[int, typer.Option("--tail", "-n", help="Lines from the end, per resource (0: all).")] = 100,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only lines written since: a duration back (10m, 1h30m) or an RFC 3339 time.")] = None,
    timestamps: Annotated[bool, typer.Option("--timestamps", "-t", help="Prefix each line with its time.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines: resource, time, line.")] = False,
) -> None:
    """Print resources' output, interleaved (processes and containers alike)."""
    from orchestrator.cli.logs_view import LogsRequest, run_logs

    try:
        project = _load(files)
        request = LogsRequest(names or [], follow, tail, since, timestamps, json_out)
        if remote.served_by_daemon(files) and not _ours(project.state_dir):
            # The daemon's state dir is its user's: a group member may not enter it, and even
            # root's reads are refused there (state files are opened only when their owner is
            # the reader, so a planted file cannot steer us). Its socket serves one log.
            check_names(project.resources, names or [])
            if len(names or []) != 1 or since or timestamps:
                raise UsageError("through the system daemon's socket, logs takes one resource name "
                                 "(without --since or --timestamps)")
            remote.logs(project, (names or [])[0], tail, follow, json_out)
            return
        code = run_logs(project, request)
    except VrooliError as exc:
        _fail(exc, json_out)
    raise typer.Exit(code)


def _ours(state_dir: Path) -> bool:
    try:
        return state_dir.stat().st_uid == os.getuid()
    except OSError:
        return False


@app.command()
def models(
    action: Annotated[str, typer.Argument(help="list | pull | ensure | unload")] = "list",
    names: Annotated[list[str] | None, typer.Argument(help="Models (default: those declared).",
                                                      show_default=False)] = None,
    files: FilesOpt = None,
    resource: Annotated[str | None, typer.Option("--resource", help="The resource that declares models.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Ollama models: list shows absent / pulling NN% / present / loaded; ensure pulls and loads."""
    if action not in ("list", "pull", "ensure", "unload"):
        _fail(UsageError(f"unknown action '{action}' (list, pull, ensure, unload)"), json_out)
    try:
        target = target_of(files, "asking")  # a file that does not load here: the supervisor's copy
        if target.project is not None:
            check_names(target.project.resources, [resource] if resource else [])
        client = spawn.client_once_started(target.state_dir, timeout=None)
        if not client.alive():
            raise target.broken or SupervisorUnavailable(f"{target.name} is not running; use `vrooli up`")
        from orchestrator.infra.progress import display_width, fit

        final: dict[str, Any] = {}
        shown: dict[str, str] = {}
        tty = sys.stderr.isatty()
        for message in client.stream({"op": "models", "action": action, "names": names or [],
                                      "resource": resource}, timeout=None):
            if message.get("event") == "models" and not json_out:
                for model in message["models"]:
                    if names and model["name"] not in {n if ":" in n else f"{n}:latest" for n in names}:
                        continue
                    text = model_line(model)
                    if shown.get(model["name"]) != text:
                        shown[model["name"]] = text
                        # Redrawn in place on a terminal: it must fit one line, or \r redraws
                        # only its last part.
                        print(("\r\x1b[2K" + fit(text, display_width(sys.stderr))) if tty else text,
                              file=sys.stderr, end="" if tty else "\n", flush=True)
            if "exit_code" in message:
                final = message
        if tty and shown and not json_out:
            print(file=sys.stderr)
        if not final:
            raise SupervisorGone("the supervisor went away in the middle of the command; see its supervisor.log")
        if final.get("error") and "models" not in final:
            raise from_reply(final)
    except VrooliError as exc:
        _fail(exc, json_out)
    if json_out:
        print(json.dumps(final, indent=2))
    else:
        if action == "list":
            for model in final["models"]:
                print(model_line(model))
        for error in final.get("errors") or []:
            print(f"vrooli: {error}", file=sys.stderr)
    raise typer.Exit(int(final.get("exit_code", 1)))


@app.command()
def analyze(
    files: FilesOpt = None,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="FILE.svg", help="Draw the last start as an SVG picture ('-': standard output).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """The last start's timeline and critical chain (like systemd-analyze critical-chain / plot)."""
    from orchestrator.plan import analyze as analysis

    try:
        by_daemon = remote.served_by_daemon(files)
        project = target_of(files, "analyzing") if by_daemon else _load(files)
        path = paths.last_start_file(project.state_dir)
        # A system daemon's state dir may not be ours to read: ask the daemon.
        record = remote.last_start(project.state_dir) if by_daemon else json.loads(path.read_text())
        rows = record["resources"]
    except VrooliError as exc:
        _fail(exc, json_out)
    except (OSError, ValueError, KeyError, TypeError):
        _fail(SupervisorUnavailable(f"no start recorded yet for {project.name} (run `vrooli up`)"), json_out)
    marks = record.get("cold_start")
    try:
        if plot is not None:
            from orchestrator.cli import plot as plotting

            text = plotting.render_svg(record)
        elif json_out:
            text = json.dumps({"project": project.name, "timeline": analysis.timeline(rows),
                               "critical_chain": [c["name"] for c in analysis.critical_chain(rows)],
                               "cold_start": analysis.cold_start(rows, marks)}, indent=2)
        else:
            text = analysis.render(rows, marks)
    except (AttributeError, KeyError, TypeError, ValueError):
        # Written by the supervisor, but a file on disk can be anything by the time we read it.
        _fail(VrooliError(f"{path}: not a start record vrooli can read; the next `vrooli up` rewrites it"),
              json_out)
    if plot is None:
        print(text)
        return
    try:
        plotting.save(text, plot, json_out)
    except VrooliError as exc:
        _fail(exc, json_out)


@app.command()
def report(
    files: FilesOpt = None,
    embed: Annotated[str | None, typer.Option("--embed", metavar="FILE.md", help=(
        "Write the tables between the file's <!-- EMBED:RESOURCE_METRICS:START/END --> (and SYSTEM_METRICS) "
        "markers, leaving the rest of it as it was."))] = None,
    json_out: JsonOpt = False,
) -> None:
    """Startup time, memory and CPU per resource as a Markdown table; exit 3 when nothing runs."""
    from orchestrator.cli import report as reporting

    project = _project_or_exit(files, json_out)
    try:
        code = reporting.run(project, Path(embed) if embed is not None else None, json_out)
    except VrooliError as exc:
        _fail(exc, json_out)
    raise typer.Exit(code)


@app.command()
def validate(files: FilesOpt = None, json_out: JsonOpt = False, profile: ProfileOpt = None) -> None:
    """Check resources.toml (and overrides) without starting anything."""
    from orchestrator.cli.graph_output import pulled_in_lines, selection_of
    from orchestrator.plan import graph

    try:  # host_checks: also what only a start would find out (cwd, command on PATH, user)
        project = config.load(config.find_files(files), host_checks=True)
        chosen, active = selection_of(project, profile or [])
    except VrooliError as exc:
        _fail(exc, json_out)
    edges = {n: list(r.dependency_names) for n, r in project.resources.items()}
    waves = graph.waves(edges)
    if json_out:
        print(json.dumps({"ok": True, "project": project.name, "resources": list(project.resources),
                          "waves": waves, "profiles": {"declared": project.declared_profiles, "active": active},
                          "pulled_in": chosen.pulled_in}))
    else:
        print(f"ok: {project.name}: {len(project.resources)} resources in {len(waves)} waves "
              f"({', '.join(str(f) for f in project.files)})")
        for line in pulled_in_lines(project, chosen):
            print(f"note: {line}")


@app.command("config")
def config_cmd(
    files: FilesOpt = None,
    json_out: JsonOpt = False,
    show_secrets: Annotated[bool, typer.Option("--show-secrets", help="Print secrets instead of ***.")] = False,
) -> None:
    """Print the effective configuration: every -f file merged, variables expanded (TOML, or --json)."""
    from orchestrator.config import view

    try:
        table = view.effective(config.find_files(files), show_secrets=show_secrets)
    except VrooliError as exc:
        _fail(exc, json_out)
    sys.stdout.write(view.render(table, json_out))


@app.command("schema")
def schema_cmd(files: FilesOpt = None) -> None:
    """Print the JSON Schema of resources.toml (for editors: see README, *Editor support*)."""
    from orchestrator.config import schema

    del files  # one schema for every file; taken so that `vrooli -f FILE schema` works as for any command

    sys.stdout.write(schema.text())


@app.command("graph")
def graph_cmd(files: FilesOpt = None, json_out: JsonOpt = False, profile: ProfileOpt = None) -> None:
    """Show the start plan as topological waves (each resource still starts on its own edges)."""
    from orchestrator.cli.graph_output import graph_json, graph_lines, selection_of

    project = _project_or_exit(files, json_out)
    try:
        chosen, active = selection_of(project, profile or [])
    except VrooliError as exc:
        _fail(exc, json_out)
    if json_out:
        print(json.dumps(graph_json(project, chosen, active), indent=2))
        return
    for line in graph_lines(project, chosen):
        print(line)


@app.command("export")
def export_cmd(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="compose | kubernetes")],
    files: FilesOpt = None,
    out: Annotated[str | None, typer.Option(
        "--output", "-o", help="Write here (kubernetes: a directory gets one file per resource); default stdout.")
    ] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", help="kubernetes: the namespace to set.")] = None,
    skip_process: Annotated[bool, typer.Option(
        "--skip-process", help="Leave out native processes that have no [export] image.")] = False,
    conditions: Annotated[bool, typer.Option(
        "--conditions", help="compose: depends_on with conditions (docker-compose only, not Swarm).")] = False,
    endpoint_mode: Annotated[str, typer.Option("--endpoint-mode", metavar="vip|dnsrr", help=(
        "compose: dnsrr for Swarm on a kernel without IPVS (no /proc/net/ip_vs); host-mode ports."))] = "vip",
    json_out: JsonOpt = False,
) -> None:
    """Write the stack as a Compose file or Kubernetes manifests (nothing is started)."""
    from orchestrator import export

    try:
        request = export.Request(fmt, config.find_files(files), Path(out) if out else None,
                                 namespace, skip_process, conditions, directory=bool(out and out.endswith("/")),
                                 endpoint_mode=endpoint_mode)
        result = export.run(request)
    except VrooliError as exc:
        _fail(exc, json_out)
    if json_out:
        print(json.dumps({"ok": True, "format": result.format, "project": result.project,
                          "output": [str(p) for p in result.written] or None, "resources": result.resources,
                          "external": result.external, "skipped": result.skipped, "notes": result.notes.lines,
                          **({} if result.written else {"documents": result.documents})}, indent=2))
        return
    for line in result.notes.lines:
        print(f"vrooli: {line}", file=sys.stderr)
    if result.written:
        print(f"wrote {', '.join(str(p) for p in result.written)}", file=sys.stderr)
    else:
        sys.stdout.write(result.text)


@app.command()
def daemon(
    names: NamesArg = None,
    files: FilesOpt = None,
    health_listen: Annotated[str | None, typer.Option(
        "--health-listen", help="HOST:PORT of the read-only health endpoint (overrides [project]).")] = None,
    log_format: LogFormatOpt = "json",
    profile: ProfileOpt = None,
) -> None:
    """Run the supervisor in the foreground for systemd (Type=notify, watchdog, ordered stop)."""
    from orchestrator.config.profiles import active_profiles
    from orchestrator.daemon import service
    from orchestrator.infra.logger import configure

    configure(log_format, sys.stderr, journal=True)
    try:
        project = _load(files)
        registry.remember(project.files[0], project.state_dir, project.name)
        spawn.retire_idle(project.state_dir)  # a warm supervisor left by `down` gives way
        code = service.run(service.Options(files=list(project.files), mode="daemon", names=names or [],
                                           health_listen=health_listen,
                                           profiles=active_profiles(project, profile or [])))
    except VrooliError as exc:
        for text in exc.lines():  # "<3>": journald files them at priority err (sd-daemon(3))
            print(f"<3>{text}" if isinstance(exc, ConfigError) else f"<3>vrooli: {text}", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    raise typer.Exit(code)


@app.command()
def reload(files: FilesOpt = None, json_out: JsonOpt = False) -> None:
    """Re-read resources.toml and apply only the difference (as SIGHUP does for the daemon)."""
    try:
        found = config.find_files(files)
        link = paths.daemon_link(found[0])
        if link is not None:  # the daemon reads its files itself, with its own environment (its secrets)
            client = spawn.client_once_started(link.state_dir, timeout=None)
            request: dict[str, Any] = {"op": "reload", "files": [str(f) for f in found]}
        else:
            project = _load(files)
            client = spawn.client_once_started(project.state_dir, timeout=None)
            request = {"op": "reload", "files": [str(f) for f in project.files],
                       "environ": config.referenced_environ(project)}
        if not client.alive():
            raise SupervisorUnavailable(f"{found[0]}: nothing is running from this file")
        reply = client.call(request)
        if not reply.get("ok"):
            raise from_reply(reply, "reload failed")
    except VrooliError as exc:
        _fail(exc, json_out)
    if json_out:
        print(json.dumps(reply))
    else:
        moved: dict[str, list[str]] = {k: reply[k] for k in ("added", "removed", "restarted") if reply.get(k)}
        print("reloaded: " + ("; ".join(f"{k} {', '.join(v)}" for k, v in moved.items()) or "nothing changed"),
              file=sys.stderr)


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    else:
        code = 0
    # Skip interpreter teardown (~30 ms of module cleanup): a `vrooli up` that returns the
    # moment the stack is ready is the point. Our output is flushed; we keep no atexit work.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
