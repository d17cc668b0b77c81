"""What the `vrooli` command prints: the status table, a stack that is not running, model
lines. Plain functions of the supervisor's replies, apart from cli/app.py so
the command module stays about parsing and exit codes."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the thin client prints status without importing the config model
    from orchestrator.spec import ProjectSpec, ResourceSpec


def print_not_running(project: ProjectSpec, names: list[str], json_out: bool,
                      supervisor: dict[str, Any] | None = None) -> None:
    """Nothing runs; `supervisor`: an idle (warm) one waits, holding nothing."""
    if not json_out:
        print(f"{project.name}: not running", file=sys.stderr)
        if supervisor:
            print(supervisor_line(supervisor), file=sys.stderr)
        return
    rows = [stopped_row(spec) for n, spec in project.resources.items() if not names or n in names]
    # The same top-level keys as a running supervisor's answer (`extra` included).
    extra: dict[str, Any] = {"health_endpoint": None, "stack_memory": None}
    if any(spec.models is not None for spec in project.resources.values()):
        extra["models"] = []
    print(json.dumps({"project": project.name, "running": False,
                      "supervisor_pid": supervisor["pid"] if supervisor else None, "supervisor": supervisor,
                      "resources": rows, **extra}, indent=2))


def stopped_row(spec: ResourceSpec) -> dict[str, Any]:
    """A resource's `status --json` row when no supervisor runs: the same keys as a
    running supervisor's rows (supervisor.Record.to_json and snapshot), so a script reads
    one shape whatever the state."""
    return {"name": spec.name, "runtime": spec.runtime, "state": "stopped", "pid": None, "id": None,
            "started_at": None, "ready_at": None, "startup_seconds": None, "restarts": 0, "exit_code": None,
            "message": "not running", "depends_on": {d.name: d.condition.value for d in spec.depends_on},
            "profiles": list(spec.profiles),
            "ports": [p.host_port for p in spec.ports],
            "probe": spec.health.describe() if spec.health else None, "probe_seconds": None,
            "enabled": spec.enabled, "wanted": False,
            "memory_bytes": None, "memory_limit_bytes": spec.memory_limit, "memory_enforced_by": None,
            "memory_recycles": 0, "memory_last_recycle": None}


def print_status(rows: list[dict[str, Any]], extra: dict[str, Any], supervisor: dict[str, Any] | None = None) -> None:
    from orchestrator.infra.progress import display_width, elapsed, fit, one_line

    columns = display_width(sys.stdout)
    width = max([len(r["name"]) for r in rows] + [4])
    limits = {r["name"]: limit_text(r) for r in rows}
    limit_width = max([len(t) for t in limits.values()] + [5])
    print(fit(f"{'NAME':<{width}}  {'STATE':<9}  {'PID':>7}  {'STARTUP':>8}  {'RESTARTS':>8}  {'MEMORY':>6}  "
              f"{'LIMIT':<{limit_width}}  MESSAGE", columns))
    for row in rows:
        pid = str(row["pid"] or "-")
        message = row["message"] or ""
        for models in extra.get("models", []):
            if row["name"] == models.get("resource"):
                message = (message + "; " if message else "") + models["line"]
        recycled = row.get("memory_last_recycle")
        if recycled and recycled not in message:  # a resource that keeps hitting its limit says so
            message += f"{'; ' if message else ''}last recycle: {recycled} ({row['memory_recycles']} so far)"
        used = short_size(row.get("memory_bytes"))
        print(fit(f"{row['name']:<{width}}  {row['state']:<9}  {pid:>7}  {elapsed(row):>8}  "
                  f"{row['restarts']:>8}  {used:>6}  {limits[row['name']]:<{limit_width}}  {one_line(message)}",
                  columns))
    if supervisor:
        print(supervisor_line(supervisor))
    stack = extra.get("stack_memory")
    if stack:
        line = f"stack memory: {short_size(stack['bytes'])}"
        if stack.get("budget_bytes"):
            line += f" of {short_size(stack['budget_bytes'])} budget"
        if stack.get("peak_budget_bytes"):
            line += f" (peak {short_size(stack['peak_budget_bytes'])})"
        print(line + (f"; {stack['warning']}" if stack.get("warning") else ""))
    endpoint = extra.get("health_endpoint") or {}
    if endpoint.get("address"):
        print(f"health endpoint: http://{endpoint['address']}/")
    elif endpoint.get("error"):
        print(f"health endpoint: not listening: {endpoint['error']}")


def supervisor_of(reply: dict[str, Any]) -> dict[str, Any]:
    """The status reply's `supervisor` object; built from `supervisor_pid` and `mode` when
    the supervisor answering is older than the object (the same keys either way)."""
    given = reply.get("supervisor")
    if isinstance(given, dict) and isinstance(given.get("pid"), int):
        return given
    return {"pid": reply.get("supervisor_pid"), "mode": reply.get("mode") or "detached", "unit": None,
            "idle": False, "exits_in_seconds": None}


def supervisor_line(supervisor: dict[str, Any]) -> str:
    """`supervisor: pid 123 (detached)`, `supervisor: idle, exits in 8m (pid 123)`,
    `supervisor: systemd unit vrooli.service, pid 123`."""
    pid = supervisor.get("pid")
    if supervisor.get("mode") == "daemon" and supervisor.get("unit"):
        return f"supervisor: systemd unit {supervisor['unit']}, pid {pid}"
    if supervisor.get("idle"):
        exits = supervisor.get("exits_in_seconds")
        when = f", exits in {short_duration(exits)}" if isinstance(exits, int | float) else ""
        return f"supervisor: idle{when} (pid {pid})"
    return f"supervisor: pid {pid} ({supervisor.get('mode') or 'detached'})"


def short_duration(seconds: float) -> str:
    """8m, 45s, 2h: how long until something happens, as a person says it."""
    if seconds < 90:
        return f"{max(0, round(seconds))}s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)}m"
    return f"{round(seconds / 3600)}h"


def limit_text(row: dict[str, Any]) -> str:
    """The memory limit and who enforces it: the kernel (a cgroup), the watchdog, or docker."""
    limit = row.get("memory_limit_bytes")
    return f"{short_size(limit)} {row.get('memory_enforced_by') or ''}".rstrip() if limit else "-"


def short_size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift:
            value = size / (1 << shift)
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return f"{size}B"


def model_line(model: dict[str, Any]) -> str:
    from orchestrator.infra.progress import one_line

    text = f"{model['name']:<28} {one_line(model['describe'])}"
    if model["status"] == "pulling" and model["total"]:
        filled = int(30 * model["completed"] / model["total"])
        text += f"  [{'#' * filled}{'.' * (30 - filled)}] {model['completed'] / 1e6:.1f}/{model['total'] / 1e6:.1f} MB"
    return text
