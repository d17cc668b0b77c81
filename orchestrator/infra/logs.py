"""Per-resource output files in the state dir, bounded in size.

A process writes straight into its file through an inherited O_APPEND descriptor (not
through a pipe to the supervisor), so a supervisor that dies or restarts never breaks a
running service with SIGPIPE. The price: the file cannot be renamed away under the
writer, whose descriptor would follow it. So the live file is bounded in place: at most
its last `log_max_size` bytes are copied into a new NAME.log.1 (older files shift by
rename: .1 -> .2 ...), then that head is cut from the live file with
FALLOC_FL_COLLAPSE_RANGE, which keeps whatever the writer appended meanwhile. Where the
filesystem cannot collapse (tmpfs, btrfs) the file is truncated after the copy has caught
up with the writer, logrotate's `copytruncate`: what is written in that instant is lost.

A size check every few seconds let a 100 MB burst through whole. `LogKeeper` watches the
log dir with inotify, so a burst is noticed as it starts and cut within milliseconds,
wherever the event loop is busy. Output the supervisor writes itself (containers') is
bounded exactly: rotated by rename before a write would cross the limit.

Over the ~450-line guide on purpose: the bound, the rotation, the cut and the keeper thread
share one file format and its races; split apart, each piece would have to re-explain them.
"""

from __future__ import annotations

import errno
import functools
import os
import select
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.infra import logtimes, paths
from orchestrator.infra.logger import get_logger
from orchestrator.spec import DEFAULT_LOG_MAX_FILES, DEFAULT_LOG_MAX_SIZE

if TYPE_CHECKING:
    import ctypes

log = get_logger("vrooli.logs")

DEFAULT_MAX_BYTES = DEFAULT_LOG_MAX_SIZE
CATCH_UP_ROUNDS = 8  # without collapse: copies of what the writer added meanwhile, at most
CATCH_UP_SMALL = 64 * 1024  # ... until that is this little (copied in microseconds)
FALLOC_FL_COLLAPSE_RANGE = 0x08
LINE_ALIGN_WINDOW = 64 * 1024  # the kept part starts at a line boundary found this close
NEWLINE = bytes([10])

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    """One lock per file, across threads: the keeper's rotation and a container's writer."""
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def _open_read(path: Path) -> int | None:
    try:
        return paths.open_private(path, os.O_RDONLY)
    except FileNotFoundError:
        return None


def _copy(source: int, target: int, start: int, end: int) -> int:
    """Copy bytes [start, end) of `source` to the end of `target`; returns where it stopped."""
    position = start
    while position < end:
        try:
            done = os.copy_file_range(source, target, end - position, position)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            done = os.write(target, os.pread(source, min(end - position, 1 << 20), position))
        if done <= 0:
            break
        position += done
    return position


@functools.cache
def _libc() -> ctypes.CDLL:
    # Imported here: ctypes (and its shared library) is not on a cold start's way to the
    # first spawn; the log keeper's thread loads it meanwhile.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    return libc


def _errno() -> int:
    import ctypes  # loaded by _libc already

    return ctypes.get_errno()


_collapse_supported: dict[int, bool] = {}  # by st_dev: known not to support collapsing


def _collapse(fd: int, length: int) -> bool:
    """Remove the first `length` bytes of the file in place; False where not supported."""
    if _libc().fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, length) == 0:
        return True
    code = _errno()
    if code in (errno.EOPNOTSUPP, errno.ENOSYS):
        _collapse_supported[os.fstat(fd).st_dev] = False
    elif code != errno.EINVAL:  # EINVAL: this length did not suit it (a block size); next time
        raise OSError(code, os.strerror(code))
    return False


def _tail_bytes(fd: int, lines: int) -> bytes:
    """The end of a file holding more than `lines` newlines, or the whole file."""
    size = os.fstat(fd).st_size
    chunk = min(size, max(4096, lines * 256))
    while True:
        data = os.pread(fd, chunk, size - chunk)
        if data.count(b"\n") > lines or chunk >= size:
            return data
        chunk = min(size, chunk * 2)


class OutputLog:
    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_files: int = DEFAULT_LOG_MAX_FILES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_files = max_files

    def older(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{number}")

    def _ensure_dir(self) -> None:
        paths.ensure_private_dir(self.path.parent, "log dir")

    def open_for_child(self) -> int:
        """A file descriptor to hand to a child as its stdout and stderr (O_APPEND, 0600,
        created exclusively; a symlink planted in its place is refused, never followed)."""
        self._ensure_dir()
        return paths.open_private(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def write(self, data: bytes, when: float | None = None) -> None:
        """Append output the supervisor copies itself (a container's), within the bound;
        `when` (default: now) is when it was written, for its checkpoint (logtimes.py)."""
        data = data[-self.max_bytes:]
        with _lock_for(self.path):
            if self.size() + len(data) > self.max_bytes:
                self._rotate_by_rename()
            try:
                fd = paths.open_private(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            except FileNotFoundError:  # the log dir is gone (state dir deleted): make it again
                self._ensure_dir()
                fd = paths.open_private(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            logtimes.mark(self.path, size, time.time() if when is None else when, self.max_bytes)

    def mark(self, size: int, when: float) -> None:
        """A time checkpoint: the live file had `size` bytes at `when` (see logtimes.py)."""
        with _lock_for(self.path):
            logtimes.mark(self.path, size, when, self.max_bytes)

    def size(self) -> int:
        return self.size_and_mtime()[0]

    def size_and_mtime(self) -> tuple[int, float]:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return 0, 0.0
        return info.st_size, info.st_mtime

    def _shift_older(self) -> None:
        """NAME.log.1 -> .2 -> ... up to max_files; the oldest is replaced."""
        for number in range(self.max_files - 1, 0, -1):
            try:
                os.replace(self.older(number), self.older(number + 1))
            except FileNotFoundError:
                continue
            logtimes.rename(self.older(number), self.older(number + 1))

    def _rotate_by_rename(self) -> None:
        base, size = logtimes.read_base(self.path) or 0, self.size()
        if self.max_files == 0:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        else:
            self._shift_older()
            try:
                os.replace(self.path, self.older(1))
                logtimes.rename(self.path, self.older(1))
            except FileNotFoundError:
                pass
        logtimes.write(self.path, base + size)  # the new file continues the count

    def enforce_limit(self) -> bool:
        """Over the limit: move its newest max_bytes into NAME.log.1, leaving the live file
        (the writer's own open file) nearly empty."""
        with _lock_for(self.path):
            try:
                fd = paths.open_private(self.path, os.O_RDWR)
            except FileNotFoundError:
                return False
            try:
                size = os.fstat(fd).st_size
                if size <= self.max_bytes:
                    return False
                if self.max_files == 0:
                    os.ftruncate(fd, 0)
                    logtimes.write(self.path, (logtimes.read_base(self.path) or 0) + size)
                else:
                    self._rotate_live(fd, size)
            finally:
                os.close(fd)
        return True

    def _rotate_live(self, fd: int, size: int) -> None:
        """Copy the kept part into a new NAME.log.1, then drop it from the live file.

        Dropping is done with FALLOC_FL_COLLAPSE_RANGE where the filesystem has it (ext4,
        xfs): the head of the file goes away in place, at a block boundary, so what the
        writer appends meanwhile stays; nothing is lost and it takes about a millisecond.
        Elsewhere (tmpfs, btrfs) the file is truncated after catching up with the writer,
        and what it writes in between the last copy and the truncation is lost.
        """
        target, temp = paths.create_exclusive(self.path.parent, self.older(1).name)
        try:
            try:
                kept_from, cut = self._move_head(fd, target, size)
            finally:
                os.close(target)
            self._shift_older()
            os.replace(temp, self.older(1))
            logtimes.split(self.path, self.older(1), kept_from, cut)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _move_head(self, fd: int, target: int, size: int) -> tuple[int, int]:
        """Returns (kept_from, cut): bytes [kept_from, cut) went to the target, [0, cut)
        left the live file."""
        start = self._line_start(fd, max(0, size - self.max_bytes))
        info = os.fstat(fd)
        cut = (size - 1) // info.st_blksize * info.st_blksize  # a block boundary before the end
        if cut > start and _collapse_supported.get(info.st_dev, True):
            _copy(fd, target, start, cut)
            if _collapse(fd, cut):
                return start, cut
            os.ftruncate(target, 0)
            os.lseek(target, 0, os.SEEK_SET)
        return self._copy_and_truncate(fd, target, start, size)

    def _copy_and_truncate(self, fd: int, target: int, start: int, size: int) -> tuple[int, int]:
        end = _copy(fd, target, start, size)
        for _ in range(CATCH_UP_ROUNDS):  # until what the writer added while we copied is small
            now = os.fstat(fd).st_size
            if now - end <= CATCH_UP_SMALL:
                end = _copy(fd, target, end, now)
                break
            if now - self.max_bytes >= end:  # it wrote more than a whole file meanwhile
                os.ftruncate(target, 0)
                os.lseek(target, 0, os.SEEK_SET)
                start = end = self._line_start(fd, now - self.max_bytes)
            end = _copy(fd, target, end, now)
        os.ftruncate(fd, 0)
        return start, end

    @staticmethod
    def _line_start(fd: int, offset: int) -> int:
        """The start of the first whole line at or after `offset`, if one starts close by."""
        if offset <= 0:
            return 0
        newline = os.pread(fd, LINE_ALIGN_WINDOW, offset - 1).find(NEWLINE)
        return offset + newline if newline >= 0 else offset

    def _files_newest_first(self) -> list[Path]:
        return [self.path] + [self.older(n) for n in range(1, self.max_files + 1)]

    def tail(self, lines: int) -> list[str]:
        """The last `lines` lines, reaching into NAME.log.1 (and older) when the live file
        was just truncated: a line cut by the rotation is whole again here."""
        if lines <= 0:
            return []
        data = b""
        for chunk in self._read_newest_first(lambda fd: _tail_bytes(fd, lines)):
            data = chunk + data
            if data.count(b"\n") > lines:
                break
        return data.decode(errors="replace").splitlines()[-lines:]

    def read_all(self) -> list[str]:
        """Every line kept, oldest first."""
        data = b"".join(reversed(list(self._read_newest_first(lambda fd: os.pread(fd, os.fstat(fd).st_size, 0)))))
        return data.decode(errors="replace").splitlines()

    def _read_newest_first(self, read: Callable[[int], bytes]) -> Iterator[bytes]:
        """`read` applied to each kept file that exists, the live one first."""
        for path in self._files_newest_first():
            fd = _open_read(path)
            if fd is None:
                continue
            try:
                yield read(fd)
            finally:
                os.close(fd)


# ---------------------------------------------------------------------------- the keeper

IN_MODIFY, IN_MOVED_FROM, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF = 0x2, 0x40, 0x200, 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED, IN_ONLYDIR, IN_DONT_FOLLOW = 0x4000, 0x8000, 0x01000000, 0x02000000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name


class Inotify:
    """The few inotify calls we need, through libc (the standard library has none)."""

    def __init__(self) -> None:
        self._libc = _libc()
        self.fd = int(self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        if self.fd < 0:
            raise OSError(_errno(), "inotify_init1 failed")

    def add(self, path: Path, mask: int) -> int | None:
        wd = int(self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask | IN_ONLYDIR | IN_DONT_FOLLOW))
        return wd if wd >= 0 else None

    def read(self) -> list[tuple[int, int, str]]:
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        events, offset = [], 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            name = data[offset:offset + length].rstrip(b"\0").decode(errors="replace")
            offset += length
            events.append((wd, mask, name))
        return events

    def close(self) -> None:
        os.close(self.fd)


STATE_SENTINELS = frozenset({"control.sock", "supervisor.lock"})


class LogKeeper:
    """Keeps every resource's log within its bound, from a thread of its own.

    inotify wakes it on the first write of a burst (events coalesce while it works),
    then at most every MIN_GAP, so a chatty service costs a stat per wake-up; every
    SAFETY_PERIOD it checks all files anyway. Without inotify it polls, FAST_PERIOD while a
    file grows, backing off to QUIET_PERIOD while none does. It also reports, through
    `on_state_event`, that the state dir or its socket or lock was deleted.
    """

    MIN_GAP = 0.002
    SAFETY_PERIOD = 1.0
    FAST_PERIOD = 0.01
    QUIET_PERIOD = 0.05  # a stat per resource 20 times a second: a burst's onset is the risk

    def __init__(self, state_dir: Path, logs: Callable[[], Iterable[OutputLog]],
                 on_state_event: Callable[[], None] | None = None) -> None:
        self.state_dir = state_dir
        self.on_state_event = on_state_event
        self._logs = logs  # called from the keeper's thread: must only read immutable things
        self._sizes: dict[str, int] = {}
        self._marked: dict[str, int] = {}  # the live size of each file's last time checkpoint
        self._failed: set[str] = set()
        self._stopped = False
        self._wake_lock = threading.Lock()  # no write to the wake pipe once it is closed
        self._wake_read = self._wake_write = -1

    def wake(self) -> None:
        """Check everything now and watch the directories again (after they were recreated)."""
        with self._wake_lock:
            if self._wake_write >= 0:
                try:
                    os.write(self._wake_write, b"!")
                except OSError:  # full: a wake-up is pending anyway
                    pass

    def stop(self) -> None:
        self._stopped = True
        self.wake()

    def run(self) -> None:
        with self._wake_lock:
            self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            notify: Inotify | None = Inotify()
        except (OSError, AttributeError) as exc:
            log.info("no inotify: log sizes are polled", error=str(exc))
            notify = None
        watches: dict[int, str] = {}
        poller = select.poll()  # not select(): the supervisor may hold more than 1024 fds
        for fd in [self._wake_read] + ([notify.fd] if notify else []):
            poller.register(fd, select.POLLIN)
        period = self.SAFETY_PERIOD if notify else self.QUIET_PERIOD
        try:
            while not self._stopped:
                try:
                    period = self._round(notify, watches, poller, period)
                except Exception as exc:  # a bug here must not take the stack down with it
                    log.error("log keeper failed; retrying", error=repr(exc))
                    time.sleep(self.SAFETY_PERIOD)
        finally:
            if notify is not None:
                notify.close()
            with self._wake_lock:
                os.close(self._wake_read)
                os.close(self._wake_write)
                self._wake_read = self._wake_write = -1

    def _round(self, notify: Inotify | None, watches: dict[int, str], poller: select.poll,
               period: float) -> float:
        """Wait for writes (or the period), bound what grew; returns the next period."""
        if notify is not None and len(watches) < 2:
            self._watch(notify, watches)
        ready = [fd for fd, _ in poller.poll(period * 1000)]
        names, state_event, check_all = self._events(notify, watches, ready)
        grew, rotated = self._enforce(names, check_all or not ready)
        if state_event and self.on_state_event is not None:
            self.on_state_event()
        if names and not rotated:  # (after a rotation a burst is on: look again at once)
            time.sleep(self.MIN_GAP)  # let the next writes pile into one event
        if notify is not None:
            return period
        return self.FAST_PERIOD if grew else min(self.QUIET_PERIOD, period * 2)

    def _watch(self, notify: Inotify, watches: dict[int, str]) -> None:
        wanted = {"state": (self.state_dir, IN_DELETE | IN_MOVED_FROM | IN_DELETE_SELF | IN_MOVE_SELF),
                  "logs": (self.state_dir / "logs", IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF)}
        for kind, (path, mask) in wanted.items():
            if kind not in watches.values():
                wd = notify.add(path, mask)
                if wd is not None:
                    watches[wd] = kind

    def _events(self, notify: Inotify | None, watches: dict[int, str],
                ready: list[int]) -> tuple[set[str], bool, bool]:
        names: set[str] = set()
        state_event = check_all = False
        if self._wake_read in ready:
            while True:
                try:
                    if not os.read(self._wake_read, 512):
                        break
                except BlockingIOError:
                    break
            check_all = True
        if notify is None or notify.fd not in ready:
            return names, state_event, check_all
        for wd, mask, name in notify.read():
            kind = watches.get(wd)
            if mask & IN_Q_OVERFLOW:
                check_all = True
            if mask & IN_IGNORED:  # its directory is gone: watch again once it is back
                watches.pop(wd, None)
                state_event = True
            elif mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                state_event = True
            elif kind == "state" and name in STATE_SENTINELS:
                state_event = True
            elif kind == "logs":
                names.add(name)
        return names, state_event, check_all

    def _enforce(self, names: set[str], check_all: bool) -> tuple[bool, bool]:
        """Bound the files named (or all): (did any grow, was any rotated)."""
        grew = rotated = False
        for output in self._logs():
            name = output.path.name
            if not check_all and name not in names:
                continue
            size, mtime = output.size_and_mtime()
            grew |= size > self._sizes.get(name, 0)
            self._sizes[name] = size
            try:
                if size and size != self._marked.get(name):
                    output.mark(size, mtime)  # mtime: when its last byte was written
                    self._marked[name] = size
                if size <= output.max_bytes:
                    continue
                if output.enforce_limit():
                    rotated = True
                    self._marked.pop(name, None)
                self._failed.discard(name)
            except OSError as exc:  # UnsafePath is not an OSError: reported below
                self._report(name, str(exc))
            except paths.UnsafePath as exc:
                self._report(name, str(exc))
        return grew, rotated

    def _report(self, name: str, error: str) -> None:
        if name not in self._failed:  # once per trouble, not every few milliseconds
            self._failed.add(name)
            log.warning("cannot bound a log file", log=name, error=error)
