"""`vrooli logs [NAME...]`: one resource's output, or several interleaved, like compose.

Everything is read from the files the supervisor keeps (`<state_dir>/logs/NAME.log` and
its older files, for processes and containers alike), with each line's time from the
checkpoint index beside them (logtimes.py). So `logs` needs no running supervisor, and a
followed resource that restarts, rotates or starts late keeps flowing: a follower holds an
absolute position in the resource's output, which rotation never moves.

Several resources: each line is prefixed with its resource's name padded to one column
(`postgres | ...`), coloured on a terminal unless NO_COLOR is set (no-color.org). The
kept lines are merged by time; followed lines are printed as each poll finds them.
"""

from __future__ import annotations

import heapq
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.errors import UsageError, check_names
from orchestrator.infra import logtimes, paths
from orchestrator.infra.logs import OutputLog
from orchestrator.spec import ProjectSpec

POLL_SECONDS = 0.05
STALE_SECONDS = 1.0  # a file shorter than our position for this long was truncated, not rotated
COLOURS = ("36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94", "91")  # compose's order
EXIT_INTERRUPTED = 0  # Ctrl-C is how a follow ends: as before, not an error


@dataclass(frozen=True)
class LogsRequest:
    names: list[str]
    follow: bool
    tail: int  # per resource; 0: every kept line
    since: str | None
    timestamps: bool
    json_out: bool


@dataclass(frozen=True)
class Line:
    resource: str
    time: float
    text: str


# ------------------------------------------------------------------------ options


def parse_since(text: str, now: float) -> float:
    """The epoch time `--since` names: a duration back from now (10m, 1h30m) or an RFC 3339
    time (2026-01-02T03:04:05Z, with an offset or Z). UsageError otherwise."""
    from orchestrator.config.values import parse_duration

    try:
        return now - parse_duration(text)  # (refuses negative durations)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r}: expected a duration like 10m or 1h30m, "
                         f"or an RFC 3339 time like 2026-01-02T03:04:05Z") from None
    if moment.tzinfo is None:
        raise UsageError(f"--since {text!r}: an RFC 3339 time needs its offset (Z or +01:00)")
    return moment.timestamp()


def rfc3339(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def wants_colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


# ------------------------------------------------------------------------ kept lines


@dataclass(frozen=True)
class _Kept:
    data: bytes
    index: logtimes.Index
    mtime: float


def _read_kept(output: OutputLog, enough: int | None) -> tuple[list[_Kept], int]:
    """The kept files oldest first (stopping once `enough` lines are in), and the absolute
    offset where the live file ended: where a follower starts."""
    files: list[_Kept] = []
    found, live_end = 0, 0
    for number in range(output.max_files + 1):
        path = output.older(number) if number else output.path
        try:
            fd = paths.open_private(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            info = os.fstat(fd)
            data = os.pread(fd, info.st_size, 0)
        finally:
            os.close(fd)
        index = logtimes.read(path)
        if number == 0:
            live_end = (index.base or 0) + len(data)
        files.insert(0, _Kept(data, index, info.st_mtime))
        found += data.count(b"\n")
        if enough is not None and found > enough:
            break
    return files, live_end


def _time_of(files: list[_Kept], at: int, end: int) -> float:
    """When the line ending at byte `end` of files[at] was written: its own file's first
    checkpoint at or after it, else a later file's first, else its file's mtime."""
    kept = files[at]
    if kept.index.base is not None:
        found = kept.index.time_of(kept.index.base + end)
        if found is not None:
            return found
    for later in files[at + 1:]:
        if later.index.times:
            return later.index.times[0]
    return kept.mtime


def timed_lines(output: OutputLog, name: str, enough: int | None) -> tuple[list[Line], int]:
    """Every kept line of a resource with its time, oldest first (at least the last `enough`
    when given); a line cut in two by a rotation is whole again."""
    files, live_end = _read_kept(output, enough)
    lines: list[Line] = []
    pending = b""
    for at, kept in enumerate(files):
        if pending and at and not _contiguous(files[at - 1], kept):  # what followed it was dropped
            _add(lines, name, _time_of(files, at - 1, len(files[at - 1].data)), pending)
            pending = b""
        start = 0
        while (newline := kept.data.find(b"\n", start)) >= 0:
            _add(lines, name, _time_of(files, at, newline + 1), pending + kept.data[start:newline])
            pending, start = b"", newline + 1
        pending += kept.data[start:]
    if pending:  # a line still being written
        _add(lines, name, files[-1].mtime, pending)
    return lines, live_end


def _contiguous(earlier: _Kept, later: _Kept) -> bool:
    """Whether `later` starts where `earlier` ends (a line cut by the rotation goes on in
    it), as far as the index knows; without one, assume so (as `logs` always did)."""
    if earlier.index.base is None or later.index.base is None:
        return True
    return earlier.index.base + len(earlier.data) == later.index.base


def _add(lines: list[Line], name: str, moment: float, raw: bytes) -> None:
    # splitlines, as `logs NAME` always split (a carriage return starts a line too)
    lines.extend(Line(name, moment, text) for text in raw.decode(errors="replace").splitlines() or [""])


# ------------------------------------------------------------------------ following


class Follower:
    """New output of one resource, from an absolute position in it (see logtimes.py)."""

    def __init__(self, output: OutputLog, name: str, position: int) -> None:
        self.output = output
        self.name = name
        self.position = position
        self._pending = b""
        self._short_since: float | None = None

    def poll(self) -> list[Line]:
        """New complete lines, each with its checkpoint's time (now, if the keeper has not
        marked it yet), so lines of several resources found in one poll can be ordered."""
        data = self._read()
        if not data:
            return []
        *complete, self._pending = (self._pending + data).split(b"\n")
        index, now = logtimes.read_recent(self.output.path), time.time()
        end = self.position - len(self._pending)  # absolute offset after the last complete line
        lines = []
        for raw in reversed(complete):
            lines.append(Line(self.name, min(now, index.time_of(end) or now), raw.decode(errors="replace")))
            end -= len(raw) + 1
        return lines[::-1]

    def _read(self) -> bytes:
        base = logtimes.read_base(self.output.path) or 0
        size = self.output.size()
        if self.position > base + size:  # rotated and its index not yet rewritten, or truncated
            if self._short_since is None:
                self._short_since = time.monotonic()
            if time.monotonic() - self._short_since < STALE_SECONDS:
                return b""
            self.position = base  # truncated by someone else: from its start
        self._short_since = None
        data = b""
        if self.position < base:  # rotated since the last poll: the missed part ends NAME.log.1
            older_base = logtimes.read_base(self.output.older(1))
            if older_base is not None:
                data = _read_from(self.output.older(1), max(0, self.position - older_base))
        data += _read_from(self.output.path, max(0, self.position - base), size)
        if (logtimes.read_base(self.output.path) or 0) != base:  # rotated while we read: again
            return b""
        self.position = base + size
        return data


def _read_from(path: Path, start: int, end: int | None = None) -> bytes:
    try:
        fd = paths.open_private(path, os.O_RDONLY)
    except FileNotFoundError:
        return b""
    try:
        stop = os.fstat(fd).st_size if end is None else end
        return os.pread(fd, max(0, stop - start), start) if stop > start else b""
    finally:
        os.close(fd)


# ------------------------------------------------------------------------ printing


class Printer:
    """One line as asked: JSON, or text after its resource's column and its time."""

    def __init__(self, names: list[str], request: LogsRequest, prefixed: bool) -> None:
        self.request = request
        width = max((len(n) for n in names), default=0)
        colour = prefixed and wants_colour()
        self.prefixes = {}
        for number, name in enumerate(names):
            label = f"{name:<{width}} |"
            self.prefixes[name] = (f"\033[{COLOURS[number % len(COLOURS)]}m{label}\033[0m " if colour
                                   else f"{label} ") if prefixed else ""

    def show(self, line: Line) -> None:
        if self.request.json_out:
            text = json.dumps({"resource": line.resource, "time": rfc3339(line.time), "line": line.text})
        else:
            stamp = f"{rfc3339(line.time)} " if self.request.timestamps else ""
            text = f"{self.prefixes[line.resource]}{stamp}{line.text}"
        sys.stdout.write(text + "\n")


def run_logs(project: ProjectSpec, request: LogsRequest) -> int:
    """Print what was asked; returns the exit code."""
    check_names(project.resources, request.names)
    if request.tail < 0:
        raise UsageError(f"--tail {request.tail}: expected 0 (every line) or more")
    since = parse_since(request.since, time.time()) if request.since is not None else None
    names = list(dict.fromkeys(request.names)) or list(project.resources)  # each once, in order
    try:
        kept, followers = _kept_lines(project, names, request.tail, since)
        return _print(kept, followers, names, request)
    except KeyboardInterrupt:  # Ctrl-C is how a follow ends (or a long read is given up)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `vrooli logs | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _kept_lines(project: ProjectSpec, names: list[str], tail: int,
                since: float | None) -> tuple[dict[str, list[Line]], list[Follower]]:
    """Each resource's kept lines (since, then tail), and a follower from where they end."""
    kept: dict[str, list[Line]] = {}
    followers = []
    for name in names:
        spec = project.resources[name]
        output = OutputLog(paths.resource_log(project.state_dir, name), spec.log_max_size, spec.log_max_files)
        lines, live_end = timed_lines(output, name, None if since is not None or not tail else tail)
        lines = [line for line in lines if since is None or line.time >= since]
        kept[name] = lines[-tail:] if tail else lines
        followers.append(Follower(output, name, live_end))
    return kept, followers


def _print(kept: dict[str, list[Line]], followers: list[Follower], names: list[str],
           request: LogsRequest) -> int:
    if len(names) == 1 and request.names and request.json_out and not request.follow:
        _print_one_object(names[0], kept[names[0]])
        return 0
    printer = Printer(names, request, prefixed=len(names) != 1 or not request.names)
    for line in heapq.merge(*kept.values(), key=lambda line: line.time):
        printer.show(line)
    sys.stdout.flush()
    return _follow(followers, printer) if request.follow else 0


def _print_one_object(name: str, lines: list[Line]) -> None:
    """`logs NAME --json` as it always was, one object (its "lines"), plus their times."""
    print(json.dumps({"resource": name, "lines": [line.text for line in lines],
                      "times": [rfc3339(line.time) for line in lines]}))


def _follow(followers: list[Follower], printer: Printer) -> int:
    """Until Ctrl-C (KeyboardInterrupt, caught by run_logs)."""
    while True:
        found = [follower.poll() for follower in followers]
        for line in heapq.merge(*found, key=lambda line: line.time):  # each one's own order kept
            printer.show(line)
        sys.stdout.flush()
        time.sleep(POLL_SECONDS)
