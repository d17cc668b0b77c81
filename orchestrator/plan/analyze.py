"""The last start's timeline and critical chain, like `systemd-analyze critical-chain`. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def timeline(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Start and ready offsets (seconds) from the first start, in start order."""
    starts = [t for r in rows if (t := _ts(r.get("started_at"))) is not None]
    if not starts:
        return []
    origin = min(starts)
    out = []
    for row in rows:
        start, ready = _ts(row.get("started_at")), _ts(row.get("ready_at"))
        out.append({"name": row["name"], "state": row["state"],
                    "start": round(start - origin, 6) if start is not None else None,
                    "ready": round(ready - origin, 6) if ready is not None else None,
                    "startup_seconds": row.get("startup_seconds"),
                    "depends_on": row.get("depends_on") or {}})
    return sorted(out, key=lambda r: (r["start"] is None, r["start"] or 0.0))


def critical_chain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """From the last resource to become ready back through what gated each start.

    A resource's start was gated by the dependency whose condition was met last: its
    ready time for `healthy`/`completed` edges, its start time for `started` edges.
    """
    items = {r["name"]: r for r in timeline(rows)}
    ready = [r for r in items.values() if r["ready"] is not None]
    if not ready:
        return []
    current = max(ready, key=lambda r: r["ready"])
    chain = [current]
    while True:
        gates = []
        for dep, condition in current["depends_on"].items():
            other = items.get(dep)
            if other is None or any(c["name"] == dep for c in chain):  # a hand-edited record may hold a cycle
                continue
            at = other["start"] if condition == "started" else other["ready"]
            if at is not None:
                gates.append((at, other))
        if not gates:
            return chain
        current = max(gates, key=lambda g: g[0])[1]
        chain.append(current)


def cold_start(rows: list[dict[str, Any]], marks: dict[str, float] | None) -> dict[str, float] | None:
    """What a cold `vrooli up` spent before its first resource started, in seconds from the
    command: when the supervisor ran, and when the first resource started."""
    starts = [t for r in rows if (t := _ts(r.get("started_at"))) is not None]
    if not marks or not starts or "invoked_at" not in marks:
        return None
    invoked = marks["invoked_at"]
    return {"supervisor_running": round(marks.get("supervisor_at", invoked) - invoked, 6),
            "first_start": round(min(starts) - invoked, 6)}


def _chain_entry(item: dict[str, Any]) -> str:
    """`name @ready +own`; a `started` dependency that was never ready gated by its start."""
    if item["ready"] is None:
        return f"{item['name']} started @{item['start']:.3f}s (not ready: {item['state']})"
    own = item["ready"] - item["start"] if item["start"] is not None else 0.0
    return f"{item['name']} @{item['ready']:.3f}s +{own:.3f}s"


def render(rows: list[dict[str, Any]], marks: dict[str, float] | None = None) -> str:
    chain = critical_chain(rows)
    lines = []
    phases = cold_start(rows, marks)
    if phases is not None:
        lines.append(f"cold start: the supervisor ran {phases['supervisor_running']:.3f}s and the first resource "
                     f"started {phases['first_start']:.3f}s after `vrooli up` began (Python start-up)")
    if chain:
        total = chain[0]["ready"]
        lines.append(f"critical chain: {total:.3f}s until the last resource was ready")
        lines.append('(@ = ready after the first start; + = the resource\'s own time from start to ready)')
        for depth, item in enumerate(chain):
            prefix = "" if depth == 0 else "  " * (depth - 1) + "└─"
            lines.append(prefix + _chain_entry(item))
        lines.append("")
    lines.append(f"{'NAME':<16} {'STATE':<10} {'START':>8} {'READY':>8} {'STARTUP':>8}")
    for item in timeline(rows):
        start = f"{item['start']:.3f}" if item["start"] is not None else "-"
        ready = f"{item['ready']:.3f}" if item["ready"] is not None else "-"
        startup = f"{item['startup_seconds']:.3f}" if item["startup_seconds"] is not None else "-"
        lines.append(f"{item['name']:<16} {item['state']:<10} {start:>8} {ready:>8} {startup:>8}")
    return "\n".join(lines)
