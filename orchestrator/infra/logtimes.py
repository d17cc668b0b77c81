"""When each line of a resource's log was written: a sidecar index of time checkpoints.

A native process writes straight into NAME.log (no pipe through the supervisor, so a dead
supervisor never breaks a service with SIGPIPE), so nobody sees its lines one by one. Two
ways to know their times were measured under a chatty writer (`scripts/bench_log_times.py`,
100 MB of 100-byte lines as fast as Python writes them, 2 shared and busy cores, 4 runs
each): a pipe read by the supervisor that stamps every line cost 0.90-0.96 s of supervisor
CPU per 100 MB (a quarter to half a core while the writer ran, before any rotation), and
would bring back the broken-pipe risk; checkpoints written by the log keeper, which inotify
already wakes on every burst, cost 0.28-0.45 s against 0.20-0.29 s for the keeper without
them (rotation included): ~0.1 s per 100 MB. So checkpoints: each says "by `time`, the
stream had reached byte `end`", the time being the file's mtime when the keeper looked (the
kernel's time of the last write: an upper bound, late by the keeper's wake-up latency at
most). A line's time is the first checkpoint at or after its end. (A container's output,
which the supervisor copies itself, is checkpointed at each write with the engine's time.)

Offsets are *absolute*: bytes of this resource's output since its index began, so
rotation never rewrites them. Each kept file (NAME.log, NAME.log.1, ...) has an index
`<state_dir>/logtimes/<file name>.idx` (a directory of its own: writes there do not wake
the keeper's inotify watch on logs/) whose first record holds the absolute offset of the
file's byte 0 (its base); then the checkpoints. A rotation splits the live file's index in
two at the cut, as it splits the file; renames move indexes with their files.

Bounded: at most one checkpoint per keeper wake-up that saw growth, and an index past
`max(MIN_CAP, log size / 16)` is thinned to every other checkpoint (older lines then get a
coarser, still later-or-equal, time).
"""

from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from orchestrator.infra import paths

RECORD = struct.Struct("<dQ")  # time (epoch seconds), absolute offset
HEADER_TIME = -1.0  # the first record: (HEADER_TIME, base)
MIN_CAP = 64 * 1024
INDEX_DIR = "logtimes"


def index_path(log_file: Path) -> Path:
    return log_file.parent.parent / INDEX_DIR / f"{log_file.name}.idx"


@dataclass(frozen=True)
class Index:
    base: int | None  # absolute offset of the file's first byte; None: no index kept
    ends: tuple[int, ...]  # checkpoints, in file order
    times: tuple[float, ...]

    def time_of(self, end: int) -> float | None:
        """The time of the first checkpoint at or after absolute offset `end`."""
        at = bisect.bisect_left(self.ends, end)
        return self.times[at] if at < len(self.ends) else None


NO_INDEX = Index(None, (), ())


def _parse(data: bytes) -> Index:
    count = len(data) // RECORD.size  # a record half-appended right now is left out
    records = [RECORD.unpack_from(data, n * RECORD.size) for n in range(count)]
    if not records or records[0][0] != HEADER_TIME:
        return NO_INDEX
    return Index(records[0][1], tuple(end for _, end in records[1:]), tuple(t for t, _ in records[1:]))


def read(log_file: Path) -> Index:
    try:
        fd = paths.open_private(index_path(log_file), os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return NO_INDEX
    try:
        return _parse(os.pread(fd, os.fstat(fd).st_size, 0))
    finally:
        os.close(fd)


def read_recent(log_file: Path, records: int = 256) -> Index:
    """The base and only the newest checkpoints (what a follower needs for new lines)."""
    try:
        fd = paths.open_private(index_path(log_file), os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return NO_INDEX
    try:
        size = os.fstat(fd).st_size // RECORD.size * RECORD.size
        start = max(RECORD.size, size - records * RECORD.size)
        return _parse(os.pread(fd, RECORD.size, 0) + os.pread(fd, size - start, start))
    finally:
        os.close(fd)


def read_base(log_file: Path) -> int | None:
    """Only the base of a file's index (one small read, for a follower's every poll)."""
    try:
        fd = paths.open_private(index_path(log_file), os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return _parse(os.pread(fd, RECORD.size, 0)).base
    finally:
        os.close(fd)


def _encode(base: int, ends: list[int], times: list[float]) -> bytes:
    return RECORD.pack(HEADER_TIME, base) + b"".join(RECORD.pack(t, e) for t, e in zip(times, ends, strict=True))


def write(log_file: Path, base: int, ends: list[int] | None = None, times: list[float] | None = None) -> None:
    """Replace a file's index (by rename: a reader sees the old or the new one)."""
    target = index_path(log_file)
    paths.ensure_private_dir(target.parent, "log index dir")
    paths.write_private(target, _encode(base, ends or [], times or []))


def mark(log_file: Path, size: int, when: float, log_max_size: int) -> None:
    """Record that the live file had `size` bytes at `when` (caller holds the file's lock)."""
    target = index_path(log_file)
    try:
        fd = paths.open_private(target, os.O_RDWR | os.O_CREAT)
    except (FileNotFoundError, NotADirectoryError):
        paths.ensure_private_dir(target.parent, "log index dir")
        fd = paths.open_private(target, os.O_RDWR | os.O_CREAT)
    try:
        head = _parse(os.pread(fd, RECORD.size, 0))
        if head.base is None:  # new (or unreadable): this file's bytes start the count
            os.ftruncate(fd, 0)
            os.pwrite(fd, RECORD.pack(HEADER_TIME, 0), 0)
            head = Index(0, (), ())
        assert head.base is not None
        end = head.base + size
        length = os.fstat(fd).st_size // RECORD.size * RECORD.size
        if length > RECORD.size:
            # Two markers race for one file: the keeper reads a size, unlocked, and marks it
            # after a container's writer has marked a later one (or the same one with the
            # engine's earlier time). Ends must stay sorted (lookups bisect them) and a
            # line keeps its earliest known time, so a stale or later mark changes nothing.
            last_time, last_end = RECORD.unpack(os.pread(fd, RECORD.size, length - RECORD.size))
            if end < last_end or (end == last_end and when >= last_time):
                return
            if end == last_end:
                os.pwrite(fd, RECORD.pack(when, end), length - RECORD.size)  # not O_APPEND: in place
                return
        os.pwrite(fd, RECORD.pack(when, end), length)  # over a half-written record, if any
        length += RECORD.size
    finally:
        os.close(fd)
    if length > max(MIN_CAP, log_max_size // 16):
        _thin(log_file)


def _thin(log_file: Path) -> None:
    index = read(log_file)
    if index.base is None:
        return
    keep = list(range(len(index.ends) - 1, -1, -2))[::-1]  # every other one, the newest kept
    write(log_file, index.base, [index.ends[n] for n in keep], [index.times[n] for n in keep])


def split(live: Path, older: Path, kept_from: int, cut: int) -> None:
    """The live file's bytes [kept_from, cut) went to `older` and [0, cut) left the live
    file: its checkpoints follow them, so neither file's lines change time."""
    index = read(live)
    base = index.base or 0
    to_older = [n for n, end in enumerate(index.ends) if base + kept_from < end <= base + cut]
    to_live = [n for n, end in enumerate(index.ends) if end > base + cut]
    write(older, base + kept_from, [index.ends[n] for n in to_older], [index.times[n] for n in to_older])
    write(live, base + cut, [index.ends[n] for n in to_live], [index.times[n] for n in to_live])


def rename(source: Path, target: Path) -> None:
    """Move a file's index with the file."""
    try:
        os.replace(index_path(source), index_path(target))
    except (FileNotFoundError, NotADirectoryError):
        remove(target)


def remove(log_file: Path) -> None:
    try:
        os.unlink(index_path(log_file))
    except (FileNotFoundError, NotADirectoryError):
        pass
