"""Live progress for `vrooli up`: a redrawn table on a terminal, one line per change otherwise.

A resource's message can be anything its probe or its output said (Redis' protected-mode
notice is 900 characters with newlines). Every line shown here is one terminal line: control
characters become spaces and the line is cut to the width with "…". Redrawing depends on it:
a line the terminal wraps would move the table down on every redraw. The whole text stays in
`status --json` and the logs.
"""

from __future__ import annotations

import os
import re
import sys
import unicodedata
from datetime import UTC, datetime
from typing import Any, TextIO

PIPE_WIDTH = 200  # the width of a line when the output is not a terminal (a pipe, a CI log)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")

SYMBOLS = {"ready": "✔", "completed": "✔", "failed": "✘", "blocked": "✘", "unhealthy": "!",
           "starting": "…", "pending": "·", "stopping": "…", "stopped": "■"}


def elapsed(row: dict[str, Any], now: datetime | None = None) -> str:
    if row.get("startup_seconds") is not None and row["state"] in ("ready", "completed", "unhealthy"):
        return f"{row['startup_seconds']:.2f}s"
    if row.get("started_at") and row["state"] == "starting":
        started = datetime.fromisoformat(row["started_at"].replace("Z", "+00:00"))
        return f"{((now or datetime.now(UTC)) - started).total_seconds():.1f}s"
    return ""


def one_line(text: str) -> str:
    """Newlines, tabs and escape sequences would break a table (or a terminal): spaces."""
    return _CONTROL.sub(" ", text).strip()


def _cells(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def fit(text: str, columns: int) -> str:
    """`text` cut to `columns` terminal cells, ending in "…" when something was cut."""
    if sum(_cells(c) for c in text) <= columns:
        return text
    used, kept = 1, []  # one cell for the "…"
    for char in text:
        used += _cells(char)
        if used > columns:
            break
        kept.append(char)
    return "".join(kept) + "…"


def display_width(stream: TextIO) -> int:
    """Cells per line: the terminal's width, or PIPE_WIDTH when not writing to one.

    One less than a terminal's width: a line that fills the last column leaves some
    terminals in a pending wrap, and the next redraw would start one line off. $COLUMNS
    is not consulted: readline exports it into every child (80 in a pytest run), where
    it describes no terminal of ours.
    """
    try:
        if stream.isatty():
            columns = os.get_terminal_size(stream.fileno()).columns
            if columns > 0:  # a pseudo-terminal nobody sized reports 0
                return max(20, columns - 1)
    except (OSError, ValueError, AttributeError):
        pass
    return PIPE_WIDTH


def line(row: dict[str, Any], width: int, now: datetime | None = None, columns: int = PIPE_WIDTH) -> str:
    symbol = SYMBOLS.get(row["state"], " ")
    message = one_line(row.get("message") or "")
    return fit(f" {symbol} {row['name']:<{width}}  {row['state']:<9} {elapsed(row, now):>7}  {message}".rstrip(),
               columns)


class Progress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.columns = display_width(self.stream)
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
                    print(line(row, width, columns=self.columns), file=self.stream, flush=True)

    def tick(self) -> None:
        if self.tty and self._rows:
            self._redraw()

    def _redraw(self) -> None:
        width = max((len(r["name"]) for r in self._rows), default=4)
        out = []
        if self._drawn:
            out.append(f"\x1b[{self._drawn}F")
        out.extend("\x1b[2K" + line(row, width, columns=self.columns) + "\n" for row in self._rows)
        self._drawn = len(self._rows)
        self.stream.write("".join(out))
        self.stream.flush()
