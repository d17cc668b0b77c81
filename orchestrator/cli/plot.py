"""`vrooli analyze --plot`: the last start as an SVG picture, like `systemd-analyze plot`.

One row per resource on a common time axis (seconds from the first moment of the start):
a light segment while it waited for its dependencies (from when `up` asked for it to its
start), a bar from start to ready, the critical chain's bars in a colour of their own, and,
where the record holds it, model warm-up after ready. A resource that never became ready
runs to the moment the record was written and is marked with its state. Pure: a record in,
SVG text out; no fonts, images or scripts from anywhere else.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from orchestrator.errors import UsageError
from orchestrator.infra import atomic
from orchestrator.plan.analyze import critical_chain

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
ROW_HEIGHT = 24
BAR_HEIGHT = 16
AXIS_HEIGHT = 40  # the tick labels above the rows
LEGEND_HEIGHT = 30
PLOT_WIDTH = 900  # pixels the longest start spans
CHAR_WIDTH = 7.5  # of the 12 px monospace labels, to size the label column
MARGIN = 10

STYLE = """
text { font-family: monospace; font-size: 12px; fill: #222; }
.tick { stroke: #ddd; stroke-width: 1; }
.wait { fill: #cfe0f5; }
.active { fill: #4a7fc1; }
.active.critical { fill: #d9480f; }
.unfinished { fill: #9aa5b1; }
.failed { fill: #c92a2a; }
.warmup { fill: #f2c94c; }
.mark { fill: #c92a2a; font-weight: bold; }
""".strip()


@dataclass(frozen=True, slots=True)
class Row:
    """One resource's moments, in seconds from the origin; None where it never got there."""

    name: str
    state: str
    has_dependencies: bool
    planned: float | None
    start: float | None
    ready: float | None
    warm_start: float | None
    warm_end: float | None
    critical: bool


def _text(value: object) -> str:
    """A record's text as XML 1.0 can hold it: control characters (a hand-edited record) become �."""
    return _NOT_XML.sub("\ufffd", str(value))


def _seconds(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def rows_of(record: dict[str, Any]) -> tuple[list[Row], float]:
    """The rows in start order, and the span (seconds) the axis must cover."""
    raw = record["resources"]
    if not isinstance(raw, list):
        raise TypeError("resources must be a list")
    chain = {item["name"] for item in critical_chain(raw)}
    moments = []
    for item in raw:
        warm = item.get("warmup") or {}
        moments.append((_text(item["name"]), _text(item["state"]), bool(item.get("depends_on")),
                        _seconds(item.get("planned_at")),
                        _seconds(item.get("started_at")), _seconds(item.get("ready_at")),
                        _seconds(warm.get("started_at")), _seconds(warm.get("ready_at"))))
    known = [t for m in moments for t in m[3:] if t is not None]
    if not known:
        return [], 0.0
    origin = min(known)
    end = max([*known, _seconds(record.get("recorded_at")) or origin])

    def offset(moment: float | None) -> float | None:
        return None if moment is None else moment - origin

    rows = [Row(name, state, deps, offset(planned), offset(start), offset(ready), offset(warm_start),
                offset(warm_end), name in chain)
            for name, state, deps, planned, start, ready, warm_start, warm_end in moments]
    rows.sort(key=lambda r: (r.start is None, r.start or 0.0, r.name))
    return rows, end - origin


def tick_step(span: float, wanted: int = 10) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about `wanted` ticks."""
    raw = max(span, 1e-3) / wanted
    power = 10 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def _label(seconds: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{seconds:.{decimals}f}s"


def _rect(x: float, y: float, width: float, classes: str, name: str, height: int = BAR_HEIGHT) -> str:
    return (f'<rect class="{classes}" data-resource={quoteattr(name)} x="{x:.2f}" y="{y:.2f}" '
            f'width="{max(width, 0.0):.2f}" height="{height}"/>')


def _row_svg(row: Row, y: float, x0: float, scale: float, end: float) -> list[str]:
    parts = [f'<g class="resource" data-resource={quoteattr(row.name)}>', f"<title>{escape(_describe(row))}</title>",
             f'<text x="{MARGIN}" y="{y + BAR_HEIGHT - 4:.2f}">{escape(row.name)}</text>']

    def at(moment: float) -> float:
        return x0 + moment * scale

    if _waited(row):
        assert row.planned is not None and row.start is not None
        parts.append(_rect(at(row.planned), y, (row.start - row.planned) * scale, "wait", row.name))
    if row.start is not None:
        if row.ready is not None:
            kind = "active critical" if row.critical else "active"
            parts.append(_rect(at(row.start), y, (row.ready - row.start) * scale, kind, row.name))
        else:
            kind = "failed" if row.state == "failed" else "unfinished"
            parts.append(_rect(at(row.start), y, (end - row.start) * scale, kind, row.name))
    if row.warm_start is not None:
        warm_end = row.warm_end if row.warm_end is not None else end
        parts.append(_rect(at(row.warm_start), y + 4, (warm_end - row.warm_start) * scale, "warmup", row.name,
                           height=BAR_HEIGHT - 8))
    if row.ready is None:
        right = at(end if row.start is not None else 0.0) + 4
        mark = f"✗ {row.state}" if row.state == "failed" else row.state
        parts.append(f'<text class="mark" x="{right:.2f}" y="{y + BAR_HEIGHT - 4:.2f}">{escape(mark)}</text>')
    parts.append("</g>")
    return parts


def _waited(row: Row) -> bool:
    """Whether it waited for dependencies (a resource without any starts as soon as asked)."""
    return row.has_dependencies and row.planned is not None and row.start is not None and row.start > row.planned


def _describe(row: Row) -> str:
    bits = [f"{row.name} ({row.state})"]
    if _waited(row):
        assert row.planned is not None and row.start is not None
        bits.append(f"waited {row.start - row.planned:.3f}s for dependencies")
    if row.start is not None:
        bits.append(f"started @{row.start:.3f}s")
    if row.ready is not None and row.start is not None:
        bits.append(f"ready @{row.ready:.3f}s (+{row.ready - row.start:.3f}s)")
    if row.warm_start is not None and row.warm_end is not None:
        bits.append(f"models warm @{row.warm_end:.3f}s")
    if row.critical:
        bits.append("on the critical chain")
    return ", ".join(bits)


def _axis(x0: float, scale: float, span: float, height: float) -> list[str]:
    step = tick_step(span)
    parts = []
    for index in range(int(span / step + 1e-9) + 1):
        seconds = index * step
        x = x0 + seconds * scale
        parts.append(f'<line class="tick" x1="{x:.2f}" y1="{AXIS_HEIGHT - 12}" x2="{x:.2f}" y2="{height:.2f}"/>')
        parts.append(f'<text class="tick-label" x="{x:.2f}" y="{AXIS_HEIGHT - 16}" text-anchor="middle">'
                     f"{_label(seconds, step)}</text>")
    return parts


def _legend(y: float) -> list[str]:
    items = [("wait", "waiting for dependencies"), ("active", "start → ready"),
             ("active critical", "critical chain"), ("warmup", "model warm-up"), ("failed", "failed")]
    parts, x = [], float(MARGIN)
    for classes, text in items:
        parts.append(f'<rect class="{classes} legend" x="{x:.2f}" y="{y:.2f}" width="14" height="10"/>')
        parts.append(f'<text x="{x + 18:.2f}" y="{y + 10:.2f}">{escape(text)}</text>')
        x += 18 + len(text) * CHAR_WIDTH + 16
    return parts


def render_svg(record: dict[str, Any]) -> str:
    """The picture of a last_start.json record, as standalone SVG text."""
    rows, span = rows_of(record)
    span = max(span, 1e-3)
    label_width = MARGIN * 2 + CHAR_WIDTH * max([len(r.name) for r in rows] + [8])
    x0 = label_width
    scale = PLOT_WIDTH / span
    rows_bottom = AXIS_HEIGHT + ROW_HEIGHT * len(rows)
    width = x0 + PLOT_WIDTH + 140  # room for a state written after a bar that runs to the end
    height = rows_bottom + LEGEND_HEIGHT + MARGIN
    title = f"vrooli: last start of {_text(record.get('project', '?'))}"
    parts = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
             f'viewBox="0 0 {width:.0f} {height:.0f}" data-seconds-per-pixel="{1 / scale:.9f}" '
             f'data-origin-x="{x0:.2f}">',
             f"<title>{escape(title)}</title>", f"<style>{STYLE}</style>",
             f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#fff"/>']
    parts += _axis(x0, scale, span, rows_bottom)
    for index, row in enumerate(rows):
        parts += _row_svg(row, AXIS_HEIGHT + index * ROW_HEIGHT + (ROW_HEIGHT - BAR_HEIGHT) / 2, x0, scale, span)
    parts += _legend(rows_bottom + MARGIN)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def save(text: str, target: str, as_json: bool = False) -> None:
    """Write the picture to `target` (whole or not at all) and say so; `-` is standard output."""
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        atomic.replace_file(Path(target), text.encode())
    except OSError as exc:
        raise UsageError(f"{target}: cannot write the plot: {exc.strerror or exc}") from None
    if as_json:
        print(json.dumps({"ok": True, "plot": target}))
    else:
        print(f"wrote {target}", file=sys.stderr)
