"""The `vrooli` command: parse, call, print, exit code — nothing else.

Over the ~450-line guide (~490) because the typer declarations of all thirteen commands
live together, one function each; what they print is in cli_output.py, which project they
act on in cli_target.py.

Heavy imports (anyio, the docker SDK, httpx) happen inside the commands that need them, so
`vrooli --help` and `vrooli status` start fast.
"""

from __future__ import annotations

import json
import os
import sys
import time
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

from orchestrator import __version__, config, paths, registry, spawn
from orchestrator.cli_output import follow_log, model_line, print_not_running, print_status
from orchestrator.cli_target import target_of
from orchestrator.errors import (
    EXIT_FAILED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    SupervisorGone,
    SupervisorUnavailable,
    UsageError,
    VrooliError,
    check_names,
    from_reply,
)
from orchestrator.spec import ProjectSpec
from orchestrator.up_client import follow as follow_replies
from orchestrator.up_client import report_error, run_up

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
) -> None:
    """Start resources (and their dependencies); return when they are ready."""
    if not foreground:
        raise typer.Exit(run_up(names or [], files or [], no_deps, json_out))
    try:
        project = _load(files)
        check_names(project.resources, names or [])
        from orchestrator import service
        from orchestrator.logging import configure

        configure(log_format, sys.stderr)
        registry.remember(project.files[0], project.state_dir, project.name)
        spawn.retire_idle(project.state_dir)  # a warm supervisor left by `down` gives way
        code = service.run(service.Options(files=list(project.files), mode="foreground",
                                           names=names or [], no_deps=no_deps))
    except VrooliError as exc:
        _fail(exc, json_out)
    raise typer.Exit(code)


@app.command()
def down(
    names: NamesArg = None,
    files: FilesOpt = None,
    volumes: Annotated[bool, typer.Option("--volumes", "-v", help="Also remove named volumes.")] = False,
    exit_now: Annotated[bool, typer.Option(
        "--exit", help="Also end the supervisor at once, instead of keeping it warm for keep_warm.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Stop resources in reverse dependency order; with no names, the supervisor idles for keep_warm."""
    try:
        target = target_of(files, "stopping the stack with")
        if target.project is not None:
            check_names(target.project.resources, names or [])
        client = spawn.client_once_started(target.state_dir, timeout=None)
        if not client.alive():
            # `down --volumes` after a plain `down` must still remove the volumes.
            if target.project is None:
                raise target.broken or SupervisorGone("the supervisor went away")
            if not _has_leftovers(target.project) and not volumes:
                if json_out:
                    print(json.dumps({"ok": True, "stopped": [], "running": False}))
                else:
                    print("nothing is running", file=sys.stderr)
                raise typer.Exit(0)
            client = spawn.ensure_supervisor(target.project)  # it adopts what was left, then stops it
            exit_now = True  # started only to clean up: not kept warm
        reply = client.call({"op": "down", "names": names or [], "volumes": volumes, "exit": exit_now})
        if not reply.get("ok"):
            raise from_reply(reply, "down failed")
        if not names and reply.get("supervisor") != "idle":  # an idle warm one stays, and findable
            _wait_supervisor_gone(target.state_dir)
            registry.forget(target.first_file)
    except VrooliError as exc:
        _fail(exc, json_out)
    if json_out:
        print(json.dumps({"ok": True, "stopped": reply["stopped"]}))
    else:
        print(f"stopped {', '.join(reply['stopped']) or 'nothing'}", file=sys.stderr)


def _has_leftovers(project: ProjectSpec) -> bool:
    from orchestrator import records

    return records.maybe_running(project.state_dir)


def _wait_supervisor_gone(state_dir: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    pid_file = paths.pid_file(state_dir)
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


@app.command()
def status(
    names: NamesArg = None,
    files: FilesOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show each resource's state; exit 0 all ready, 1 something is not, 3 nothing runs."""
    try:
        target = target_of(files, "showing")
        if target.project is not None:
            check_names(target.project.resources, names or [])
        try:
            reply = spawn.client_once_started(target.state_dir).call({"op": "status", "names": names or []})
        except SupervisorUnavailable:
            reply = None
        if reply is not None and not reply.get("ok") and target.project is None:
            raise from_reply(reply, "status failed")
        if (reply is None or not reply.get("ok")) and target.project is None:
            raise target.broken or SupervisorGone("the supervisor went away")
    except VrooliError as exc:
        _fail(exc, json_out)
    if reply is None or not reply.get("ok"):
        assert target.project is not None
        print_not_running(target.project, names or [], json_out)
        raise typer.Exit(EXIT_NOT_RUNNING)
    if (reply.get("supervisor") or {}).get("idle"):
        _print_idle(reply, target.project, names or [], json_out)
        raise typer.Exit(EXIT_NOT_RUNNING)  # nothing runs: a warm supervisor is not a running stack
    rows = reply["resources"]
    considered = [r for r in rows if r["wanted"] or names]
    running = [r for r in considered if r["state"] not in ("stopped", "pending")]
    if not running:
        code = EXIT_NOT_RUNNING
    elif all(r["state"] in ("ready", "completed") for r in considered):
        code = EXIT_OK
    else:
        code = EXIT_FAILED
    if json_out:
        print(json.dumps({"project": reply["project"], "running": True,
                          "supervisor_pid": reply["supervisor_pid"], "supervisor": reply.get("supervisor"),
                          "resources": rows,
                          **reply.get("extra", {})}, indent=2))
    else:
        print_status(rows, reply.get("extra", {}))
    raise typer.Exit(code)


def _print_idle(reply: dict[str, Any], project: ProjectSpec | None, names: list[str], json_out: bool) -> None:
    """A warm supervisor with nothing running: "not running", and when it will exit."""
    info = reply["supervisor"]
    left = info.get("exits_in_seconds") or 0.0
    if not json_out:
        print(f"{reply['project']}: not running", file=sys.stderr)
        when = f"{left / 60:.0f}m" if left >= 90 else f"{left:.0f}s"
        print(f"supervisor: idle, exits in {when} (pid {info['pid']})", file=sys.stderr)
        return
    from orchestrator.cli_output import stopped_row

    # The rows of the files as they are now (the supervisor reads them again on `up`).
    rows = [stopped_row(spec) for n, spec in project.resources.items() if not names or n in names] \
        if project is not None else reply["resources"]
    print(json.dumps({"project": reply["project"], "running": False, "supervisor_pid": info["pid"],
                      "supervisor": info, "resources": rows, "health_endpoint": None, "stack_memory": None},
                     indent=2))


@app.command()
def restart(
    names: Annotated[list[str], typer.Argument(help="Resources to restart.")],
    files: FilesOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Restart resources (and what depends on them); return when they are ready again."""
    try:
        project = _load(files)
        check_names(project.resources, names)
        client = spawn.client_once_started(project.state_dir, timeout=None)
        if not client.alive():
            raise SupervisorUnavailable(f"{project.name} is not running; use `vrooli up`")
        code = follow_replies(client, {"op": "restart", "names": names}, json_out)
    except VrooliError as exc:
        _fail(exc, json_out)
    raise typer.Exit(code)


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="Resource name.")],
    files: Annotated[list[str] | None, typer.Option(
        "--file", help="resources.toml to use; repeat to merge overrides.", envvar="VROOLI_FILE")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new output.")] = False,
    tail: Annotated[int, typer.Option("--tail", "-n", help="Lines from the end (0: all).")] = 100,
    json_out: JsonOpt = False,
) -> None:
    """Print a resource's output (processes and containers alike)."""
    from orchestrator.logs import OutputLog

    try:
        project = _load(files)
        check_names(project.resources, [name])
        spec = project.resources[name]
        output = OutputLog(paths.resource_log(project.state_dir, name), spec.log_max_size, spec.log_max_files)
        lines = output.tail(tail) if tail else output.read_all()
    except VrooliError as exc:
        _fail(exc, json_out)
    if json_out and not follow:
        print(json.dumps({"resource": name, "lines": lines}))
        return
    for text in lines:
        print(text, flush=True)
    if follow:
        follow_log(output.path, name, json_out)


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
        project = _load(files)
        check_names(project.resources, [resource] if resource else [])
        client = spawn.client_once_started(project.state_dir, timeout=None)
        if not client.alive():
            raise SupervisorUnavailable(f"{project.name} is not running; use `vrooli up`")
        from orchestrator.progress import display_width, fit

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
def analyze(files: FilesOpt = None, json_out: JsonOpt = False) -> None:
    """The last start's timeline and critical chain (like systemd-analyze critical-chain)."""
    from orchestrator import analyze as analysis

    project = _project_or_exit(files, json_out)
    path = paths.last_start_file(project.state_dir)
    try:
        record = json.loads(path.read_text())
        rows = record["resources"]
    except (OSError, ValueError, KeyError, TypeError):
        _fail(SupervisorUnavailable(f"no start recorded yet for {project.name} (run `vrooli up`)"), json_out)
    marks = record.get("cold_start")
    try:
        if json_out:
            text = json.dumps({"project": project.name, "timeline": analysis.timeline(rows),
                               "critical_chain": [c["name"] for c in analysis.critical_chain(rows)],
                               "cold_start": analysis.cold_start(rows, marks)}, indent=2)
        else:
            text = analysis.render(rows, marks)
    except (AttributeError, KeyError, TypeError, ValueError):
        # Written by the supervisor, but a file on disk can be anything by the time we read it.
        _fail(VrooliError(f"{path}: not a start record vrooli can read; the next `vrooli up` rewrites it"),
              json_out)
    print(text)


@app.command()
def validate(files: FilesOpt = None, json_out: JsonOpt = False) -> None:
    """Check resources.toml (and overrides) without starting anything."""
    from orchestrator import graph

    try:  # host_checks: also what only a start would find out (cwd, command on PATH, user)
        project = config.load(config.find_files(files), host_checks=True)
    except VrooliError as exc:
        _fail(exc, json_out)
    edges = {n: list(r.dependency_names) for n, r in project.resources.items()}
    waves = graph.waves(edges)
    if json_out:
        print(json.dumps({"ok": True, "project": project.name, "resources": list(project.resources),
                          "waves": waves}))
    else:
        print(f"ok: {project.name}: {len(project.resources)} resources in {len(waves)} waves "
              f"({', '.join(str(f) for f in project.files)})")


@app.command("graph")
def graph_cmd(files: FilesOpt = None, json_out: JsonOpt = False) -> None:
    """Show the start plan as topological waves (each resource still starts on its own edges)."""
    from orchestrator import graph

    project = _project_or_exit(files, json_out)
    edges = {n: list(r.dependency_names) for n, r in project.resources.items() if r.enabled}
    waves = graph.waves(edges)
    if json_out:
        print(json.dumps({
            "project": project.name, "waves": waves,
            "resources": {n: {"runtime": r.runtime, "enabled": r.enabled,
                              "depends_on": {d.name: d.condition.value for d in r.depends_on}}
                          for n, r in project.resources.items()},
            "shutdown": graph.shutdown_order(edges),
        }, indent=2))
        return
    for index, wave in enumerate(waves, start=1):
        parts = []
        for name in wave:
            deps = project.resources[name].depends_on
            after = f" (after {', '.join(f'{d.name} {d.condition.value}' for d in deps)})" if deps else ""
            parts.append(name + after)
        print(f"wave {index}: {', '.join(parts)}")
    disabled = [n for n, r in project.resources.items() if not r.enabled]
    if disabled:
        print(f"disabled: {', '.join(disabled)}")


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
) -> None:
    """Run the supervisor in the foreground for systemd (Type=notify, watchdog, ordered stop)."""
    from orchestrator import service
    from orchestrator.logging import configure

    configure(log_format, sys.stderr)
    try:
        project = _load(files)
        registry.remember(project.files[0], project.state_dir, project.name)
        spawn.retire_idle(project.state_dir)  # a warm supervisor left by `down` gives way
        code = service.run(service.Options(files=list(project.files), mode="daemon", names=names or [],
                                           health_listen=health_listen))
    except VrooliError as exc:
        _fail(exc)
    raise typer.Exit(code)


@app.command()
def reload(files: FilesOpt = None, json_out: JsonOpt = False) -> None:
    """Re-read resources.toml and apply only the difference (as SIGHUP does for the daemon)."""
    try:
        project = _load(files)
        client = spawn.client_once_started(project.state_dir, timeout=None)
        if not client.alive():
            raise SupervisorUnavailable(f"{project.name} is not running")
        reply = client.call({"op": "reload", "files": [str(f) for f in project.files],
                             "environ": config.referenced_environ(project)})
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
