"""The log probe: ready once a line of the resource's output matches a pattern.

A pattern comes from the user and the lines from the service, so a match can take
forever (`^(a|aa)+$` against a long line of a's backtracks exponentially). Python's own
`re` holds the GIL for as long as it runs, so neither the event loop nor a worker thread
could cut it short. Matching therefore runs in a worker thread with the `regex` module,
which releases the GIL (`concurrent=True`) and gives up after a timeout; each line is
capped at LINE_LIMIT bytes, and a line that still takes too long is skipped and said so.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import regex

from orchestrator.probes import ProbeContext, ProbeResult
from orchestrator.spec import ProbeSpec

LINE_LIMIT = 8 * 1024  # bytes of a line that are matched; the rest of a longer line is not
READ_LIMIT = 1024 * 1024  # bytes read per check; more waits for the next one


@dataclass(frozen=True, slots=True)
class Scan:
    matched: bool
    cursor: int  # where the next scan starts
    skipped: int  # lines given up on: matching them took longer than the time left
    mid_line: bool  # the cursor is inside a line longer than READ_LIMIT


class LogProbe:
    """Ready once the resource's output since this start matches a regular expression.

    A log line is an event, not a state: once seen it stays seen for this start, so the
    liveness checks after ready keep passing.

    The scan runs in a worker thread and keeps its progress itself: one cut short by
    the probe's timeout still finishes (within its budget) and records how far it got,
    and no second scan starts while it does.
    """

    def __init__(self, spec: ProbeSpec, context: ProbeContext) -> None:
        assert spec.pattern is not None
        self.spec = spec
        self.context = context
        self._cursor = context.log_start
        self._mid_line = False
        self._seen = False
        self._skipped = 0
        self._idle = threading.Event()
        self._idle.set()
        # A quarter of the probe's timeout: `regex` notices its timeout late (up to twice
        # over on a busy machine), and a scan cut short still finishes in the background.
        self._budget = max(0.01, spec.timeout / 4)
        try:
            self._regex: regex.Pattern[str] | None = regex.compile(spec.pattern)
        except regex.error:
            self._regex = None

    async def check(self) -> ProbeResult:
        if self._regex is None:
            return ProbeResult(False, f"log: invalid pattern /{self.spec.pattern}/")
        if self.context.log is None:
            return ProbeResult(False, "log: no output captured for this resource")
        if not self._seen:
            if self._idle.is_set():
                self._idle.clear()
                await anyio.to_thread.run_sync(self._scan, self.context.log.path, self._regex,
                                               abandon_on_cancel=True)
            else:  # the previous scan was cut short and is still finishing
                await anyio.to_thread.run_sync(self._idle.wait, self.spec.timeout, abandon_on_cancel=True)
        if self._seen:
            return ProbeResult(True, f"log matched /{self.spec.pattern}/")
        waiting = f"log: waiting for /{self.spec.pattern}/"
        if self._skipped:
            waiting += (f" ({self._skipped} line(s) skipped: matching took longer than {self._budget:g}s; "
                        f"simplify the pattern)")
        return ProbeResult(False, waiting)

    def _scan(self, path: Path, pattern: regex.Pattern[str]) -> None:
        try:
            scan = scan_lines(path, pattern, self._cursor, self._budget, self._mid_line)
            self._cursor, self._mid_line = scan.cursor, scan.mid_line
            self._skipped += scan.skipped
            self._seen = scan.matched
        finally:
            self._idle.set()

    async def aclose(self) -> None:
        return None


def scan_lines(path: Path, pattern: regex.Pattern[str], since: int, budget: float,
               mid_line: bool = False) -> Scan:
    """Match the whole lines written after byte offset `since`, within `budget` seconds.

    A line half-written is read again next time; a line longer than READ_LIMIT is
    matched on its first LINE_LIMIT bytes and the rest of it (`mid_line`) skipped; a
    file that shrank (rotated) is read from its start.
    """
    try:
        size = path.stat().st_size
        if size < since:
            since, mid_line = 0, False
        if size == since:
            return Scan(False, since, 0, mid_line)
        with path.open("rb") as handle:
            handle.seek(since)
            data = handle.read(min(size - since, READ_LIMIT))
    except FileNotFoundError:
        return Scan(False, 0, 0, False)
    end = data.rfind(b"\n")
    if end < 0:
        if len(data) < READ_LIMIT:
            return Scan(False, since, 0, mid_line)
        lines, mid_line, tail = ([] if mid_line else [data]), True, True  # part of an overlong line
    else:
        lines, tail = data[: end + 1].split(b"\n")[:-1], False
        if mid_line:  # the end of an overlong line already matched on its start
            since += len(lines.pop(0)) + 1
            mid_line = False
    deadline = time.monotonic() + budget
    cursor, skipped = since, 0
    for line in lines:
        cursor += len(line) + (0 if tail else 1)
        try:
            found = pattern.search(line[:LINE_LIMIT].decode(errors="replace"),
                                   timeout=max(0.001, deadline - time.monotonic()), concurrent=True)
        except TimeoutError:
            skipped, found = skipped + 1, None
        if found is not None:
            return Scan(True, cursor, skipped, mid_line)
        if time.monotonic() >= deadline:
            return Scan(False, cursor, skipped, mid_line)  # the rest waits for the next check
    return Scan(False, since + len(data) if tail else cursor, skipped, mid_line)
