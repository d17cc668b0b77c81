"""Per-resource output files in the state dir, bounded in size.

A process writes straight into its file (not through a pipe to the supervisor), so a
supervisor that dies or restarts never breaks a running service with SIGPIPE. Size is
bounded logrotate-style with copy-and-truncate, which is safe for O_APPEND writers.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_MAX_BYTES = 10 * 1024 * 1024


class OutputLog:
    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._matched: dict[str, int] = {}

    def open_for_child(self) -> int:
        """A file descriptor to hand to a child as its stdout and stderr."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(data)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def enforce_limit(self) -> bool:
        """Keep the newest output: move the file aside into `.1` and truncate in place."""
        if self.size() <= self.max_bytes:
            return False
        backup = self.path.with_name(self.path.name + ".1")
        with self.path.open("rb") as source, backup.open("wb") as target:
            while chunk := source.read(1 << 20):
                target.write(chunk)
        os.truncate(self.path, 0)
        return True

    def search(self, pattern: str, since: int) -> tuple[bool, int]:
        """Is there a line matching `pattern` after byte offset `since`? Returns the new offset.

        Only whole lines are considered, so a line half-written is read again next time.
        """
        size = self.size()
        if size < since:  # truncated by enforce_limit: start over
            since = 0
        if size == since:
            return False, since
        with self.path.open("rb") as handle:
            handle.seek(since)
            data = handle.read(size - since)
        end = data.rfind(b"\n")
        if end < 0:
            return False, since
        text = data[: end + 1].decode(errors="replace")
        return re.search(pattern, text, re.MULTILINE) is not None, since + end + 1

    def tail(self, lines: int) -> list[str]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            chunk = min(size, max(4096, lines * 256))
            while True:
                handle.seek(size - chunk)
                data = handle.read(chunk)
                if data.count(b"\n") > lines or chunk == size:
                    break
                chunk = min(size, chunk * 2)
        text = data.decode(errors="replace").splitlines()
        return text[-lines:] if lines else []
