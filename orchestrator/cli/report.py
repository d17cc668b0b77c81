"""`vrooli report`: the performance table upstream Vrooli keeps by hand, measured.

`| Resource | Startup Time | Memory Usage | CPU Usage | Status |`: startup time from the last
start (last_start.json), memory and CPU now (the supervisor's `usage` operation: RSS of the
process tree or cgroup, or the container's stats; CPU as percent of one core over a second),
and a system table (the whole stack's startup, its memory now, resources ready). Printed as
Markdown, or spliced between `<!-- EMBED:...:START -->` / `<!-- EMBED:...:END -->` markers
of an existing file, every other byte of which stays as it was.

The Status column: a resource that is not ready says its state (❌ failed); one with
`target_startup` / `target_memory` is ✅ within them or ⚠️ over (and which); one without
targets is ✅ with its state.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.client import spawn
from orchestrator.errors import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK, SupervisorUnavailable, UsageError
from orchestrator.infra import atomic, paths
from orchestrator.plan import analyze
from orchestrator.runtimes.cgroups import format_size
from orchestrator.spec import ProjectSpec, ResourceSpec

NONE = "—"  # a value that cannot be had (not running, not ours to measure)
SECTIONS = ("RESOURCE_METRICS", "SYSTEM_METRICS")
MAX_EMBED = 64 << 20  # bytes of a document --embed reads whole
OK_STATES = ("ready", "completed")
STATE_MARKS = {"failed": "❌", "blocked": "❌", "unhealthy": "⚠️", "stopped": "⏹", "stopping": "⏹"}


@dataclass(frozen=True, slots=True)
class Line:
    """One resource's row of the table."""

    name: str
    runtime: str
    state: str
    startup_seconds: float | None
    memory_bytes: int | None
    cpu_percent: float | None
    status: str
    over: tuple[str, ...]  # the targets it is over: "startup 6.20s > 5s"


@dataclass(frozen=True, slots=True)
class Report:
    project: str
    running: bool
    lines: tuple[Line, ...]
    stack_startup_seconds: float | None
    stack_memory_bytes: int | None
    ready: int

    @property
    def exit_code(self) -> int:
        """As `status`: 0 every resource ready, 1 some not, 3 nothing runs."""
        if not self.running:
            return EXIT_NOT_RUNNING
        return EXIT_OK if self.ready == len(self.lines) else EXIT_FAILED

    def to_json(self) -> dict[str, Any]:
        return {"project": self.project, "running": self.running,
                "resources": [{"name": ln.name, "runtime": ln.runtime, "state": ln.state,
                               "startup_seconds": ln.startup_seconds, "memory_bytes": ln.memory_bytes,
                               "cpu_percent": ln.cpu_percent, "status": ln.status, "over_target": list(ln.over)}
                              for ln in self.lines],
                "system": {"startup_seconds": self.stack_startup_seconds, "memory_bytes": self.stack_memory_bytes,
                           "ready": self.ready, "resources": len(self.lines)}}


# ---------------------------------------------------------------------------- measuring


def last_start(project: ProjectSpec) -> list[dict[str, Any]]:
    """The last start's rows ([] when none is recorded or the file is unreadable)."""
    try:
        rows = json.loads(paths.last_start_file(project.state_dir).read_text())["resources"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("name"), str)] \
        if isinstance(rows, list) else []


def _ask(project: ProjectSpec) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(status reply, usage reply) from the running supervisor; (None, {}) when none runs."""
    try:
        client = spawn.client_once_started(project.state_dir, timeout=30.0)
        status = client.call({"op": "status"})
        # An idle warm supervisor (after `down`) answers, but runs nothing: as not running.
        if not status.get("ok") or (status.get("supervisor") or {}).get("idle"):
            return None, {}
        usage = client.call({"op": "usage"})
    except SupervisorUnavailable:
        return None, {}
    return status, usage if usage.get("ok") else {}  # an older supervisor: no CPU, memory from status


def measure(project: ProjectSpec) -> Report:
    recorded = last_start(project)
    status, usage = _ask(project)
    current = {r["name"]: r for r in status["resources"]} if status else {}
    in_last = {r["name"] for r in recorded}
    if status:  # what it was asked to run, and what of the last start still runs
        names = [n for n in project.resources if n in current and (
            current[n].get("wanted") or (n in in_last and current[n].get("state") != "stopped"))]
    else:
        names = [n for n in project.resources if n in in_last]
    startup = {r["name"]: r.get("startup_seconds") for r in recorded}
    measured = usage.get("resources") or {}
    lines = []
    for name in names:
        row = current.get(name) or {}
        state = str(row.get("state", "stopped")) if status else "stopped"
        seconds = startup.get(name, row.get("startup_seconds"))
        memory = (measured.get(name) or {}).get("memory_bytes", row.get("memory_bytes"))
        cpu = (measured.get(name) or {}).get("cpu_percent")
        lines.append(_line(project.resources[name], state, _number(seconds), _whole(memory), _number(cpu)))
    stack_memory = None
    if status:
        from_status = ((status.get("extra") or {}).get("stack_memory") or {}).get("bytes")
        stack_memory = usage.get("stack_memory_bytes", from_status)
    return Report(project.name, status is not None, tuple(lines), _stack_startup(recorded),
                  _whole(stack_memory), sum(1 for ln in lines if ln.state in OK_STATES))


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _stack_startup(recorded: list[dict[str, Any]]) -> float | None:
    """From the first start to the last resource ready: the critical chain's length."""
    try:
        chain = analyze.critical_chain(recorded)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return round(chain[0]["ready"], 6) if chain else None


def _line(spec: ResourceSpec, state: str, startup: float | None, memory: int | None, cpu: float | None) -> Line:
    if spec.runtime == "external":
        memory = cpu = None  # not ours: nothing of it runs here to measure
    over = []
    if spec.target_startup is not None and startup is not None and startup > spec.target_startup:
        over.append(f"startup {seconds_text(startup)} > {seconds_text(spec.target_startup)}")
    if spec.target_memory is not None and memory is not None and memory > spec.target_memory:
        over.append(f"memory {format_size(memory)} > {format_size(spec.target_memory)}")
    if state not in OK_STATES:
        status = f"{STATE_MARKS.get(state, '⏳')} {state}"
    elif over:
        status = "⚠️ over target: " + ", ".join(over)
    elif spec.target_startup is not None or spec.target_memory is not None:
        status = "✅ within target"
    else:
        status = f"✅ {state}"
    return Line(spec.name, spec.runtime, state, startup, memory, cpu, status, tuple(over))


# ---------------------------------------------------------------------------- Markdown


def seconds_text(seconds: float) -> str:
    """0.0552s, 0.62s, 12.3s, 125s: three significant digits, never an exponent."""
    return f"{seconds:.3g}s" if seconds < 100 else f"{seconds:.0f}s"


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("-" * (len(h) + 2) for h in head) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def resource_table(report: Report) -> str:
    rows = [(ln.name, seconds_text(ln.startup_seconds) if ln.startup_seconds is not None else NONE,
             format_size(ln.memory_bytes) if ln.memory_bytes is not None else NONE,
             f"{ln.cpu_percent:.1f}%" if ln.cpu_percent is not None else NONE, ln.status)
            for ln in report.lines]
    return _table(("Resource", "Startup Time", "Memory Usage", "CPU Usage", "Status"), rows)


def system_table(report: Report) -> str:
    startup = seconds_text(report.stack_startup_seconds) if report.stack_startup_seconds is not None else NONE
    memory = format_size(report.stack_memory_bytes) if report.stack_memory_bytes is not None else NONE
    return _table(("Metric", "Value"), [("Stack startup time", startup), ("Total memory", memory),
                                        ("Resources ready", f"{report.ready}/{len(report.lines)}")])


# ---------------------------------------------------------------------------- embedding


def _marker(section: str, end: str) -> bytes:
    return f"<!-- EMBED:{section}:{end} -->".encode()


def _bounds(data: bytes, section: str, path: Path) -> tuple[int, int] | None:
    """Where the section's content lies (after START, before END); None if neither marker is there."""
    start, end = _marker(section, "START"), _marker(section, "END")
    starts, ends = data.count(start), data.count(end)
    if starts == ends == 0:
        return None
    for marker, count in ((start, starts), (end, ends)):
        if count != 1:
            found = "no" if count == 0 else f"{count} times the"
            raise UsageError(f"{path}: {found} {marker.decode()} marker (each section needs one START and one END)")
    begin, finish = data.index(start) + len(start), data.index(end)
    if finish < begin:
        raise UsageError(f"{path}: {end.decode()} comes before {start.decode()}")
    return begin, finish


def check_markers(path: Path) -> bytes:
    """The file's bytes, once its markers are known to be usable (else UsageError, exit 2)."""
    try:
        # Non-blocking: a FIFO named by mistake must not hang the command.
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(handle).st_mode):
                raise UsageError(f"{path}: not a regular file; --embed writes into an existing Markdown file")
            data = os.read(handle, MAX_EMBED + 1)
        finally:
            os.close(handle)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it to embed the report: {exc.strerror or exc}") from None
    if len(data) > MAX_EMBED:
        raise UsageError(f"{path}: larger than {format_size(MAX_EMBED)}; not a document to embed the report in")
    found = [_bounds(data, section, path) for section in SECTIONS]  # each checked, not just the first
    if all(bounds is None for bounds in found):
        raise UsageError(f"{path}: no {_marker(SECTIONS[0], 'START').decode()} marker "
                         f"(nor {SECTIONS[1]}) to embed the report between")
    return data


def splice(data: bytes, tables: dict[str, str], path: Path) -> bytes:
    """`data` with each section's content replaced by its table, in the file's own line ends."""
    newline = b"\r\n" if b"\r\n" in data else b"\n"
    for section, table in tables.items():
        bounds = _bounds(data, section, path)
        if bounds is None:
            continue
        body = newline + newline.join(line.encode() for line in table.splitlines()) + newline
        data = data[:bounds[0]] + body + data[bounds[1]:]
    return data


def embed(path: Path, report: Report) -> None:
    """Write the tables between the file's markers; the rest of it stays byte for byte."""
    data = check_markers(path)  # again: the file may have changed while we measured
    tables = {"RESOURCE_METRICS": resource_table(report), "SYSTEM_METRICS": system_table(report)}
    try:
        atomic.replace_file(path, splice(data, tables, path))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write it: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------- the command


def run(project: ProjectSpec, embed_into: Path | None, as_json: bool) -> int:
    """Measure, then print or embed; the exit code (see Report.exit_code)."""
    if embed_into is not None:
        check_markers(embed_into)  # before a second of measuring, not after
    report = measure(project)
    if not report.lines:
        raise SupervisorUnavailable(f"no start recorded yet for {project.name} and nothing runs (run `vrooli up`)")
    if embed_into is not None:
        if not report.running:
            raise SupervisorUnavailable(f"{project.name} is not running, so its memory and CPU cannot be measured; "
                                        f"{embed_into} is left as it was")
        embed(embed_into, report)
    if as_json:
        print(json.dumps({**report.to_json(), "embedded": str(embed_into) if embed_into else None}, indent=2))
    elif embed_into is not None:
        print(f"vrooli: wrote the resource and system metrics into {embed_into}", file=sys.stderr)
    else:
        print(resource_table(report) + "\n\n" + system_table(report))
        if not report.running:
            print(f"vrooli: {project.name} is not running: startup times are from its last start; "
                  "memory and CPU are not measured", file=sys.stderr)
    return report.exit_code
