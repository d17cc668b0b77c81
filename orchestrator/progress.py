"""Live progress for `vrooli up`: a redrawn table on a terminal, one line per change otherwise."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, TextIO

SYMBOLS = {"ready": "✔", "completed": "✔", "failed": "✘", "blocked": "✘", "unhealthy": "!",
           "starting": "…", "pending": "·", "stopping": "…", "stopped": "■"}


def elapsed(row: dict[str, Any], now: datetime | None = None) -> str:
    if row.get("startup_seconds") is not None and row["state"] in ("ready", "completed", "unhealthy"):
        return f"{row['startup_seconds']:.2f}s"
    if row.get("started_at") and row["state"] == "starting":
        started = datetime.fromisoformat(row["started_at"].replace("Z", "+00:00"))
        return f"{((now or datetime.now(UTC)) - started).total_seconds():.1f}s"
    return ""


def line(row: dict[str, Any], width: int, now: datetime | None = None) -> str:
    symbol = SYMBOLS.get(row["state"], " ")
    message = row.get("message") or ""
    return f" {symbol} {row['name']:<{width}}  {row['state']:<9} {elapsed(row, now):>7}  {message}".rstrip()


class Progress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._drawn = 0
        self._last: dict[str, tuple[str, str]] = {}
        self._rows: list[dict[str, Any]] = []

    def update(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows
        if self.tty:
            self._redraw()
            return
        width = max((len(r["name"]) for r in rows), default=4)
        for row in rows:
            key = (row["state"], (row["state"] in ("failed", "blocked") and row.get("message")) or "")
            seen = row["name"] in self._last
            if self._last.get(row["name"]) != key:
                self._last[row["name"]] = key
                if row["state"] != "pending" or seen:
                    print(line(row, width), file=self.stream, flush=True)

    def tick(self) -> None:
        if self.tty and self._rows:
            self._redraw()

    def _redraw(self) -> None:
        width = max((len(r["name"]) for r in self._rows), default=4)
        out = []
        if self._drawn:
            out.append(f"\x1b[{self._drawn}F")
        out.extend("\x1b[2K" + line(row, width)[:200] + "\n" for row in self._rows)
        self._drawn = len(self._rows)
        self.stream.write("".join(out))
        self.stream.flush()
