"""Replace a user's file whole or not at all: a temporary file beside it, renamed over it.

For files the user names (`report --embed`, `analyze --plot`), not state files (those are
private: paths.write_private). An existing file keeps its mode (and, where we may, its
owner); a symlink is followed, so the link stays and its target is replaced.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def replace_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically; OSError when it cannot be done (nothing changed)."""
    real = Path(os.path.realpath(path))
    try:
        before: os.stat_result | None = os.stat(real)
    except FileNotFoundError:
        before = None
    if before is not None and not stat.S_ISREG(before.st_mode):
        raise IsADirectoryError(f"not a regular file: {path}") if stat.S_ISDIR(before.st_mode) \
            else OSError(f"not a regular file: {path}")
    handle, temporary = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if before is not None:
            os.chmod(temporary, stat.S_IMODE(before.st_mode))
            if (before.st_uid, before.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.chown(temporary, before.st_uid, before.st_gid)
                except PermissionError:
                    pass  # not root: the file becomes ours, as any editor's save would make it
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)  # what a plain open() would have made
        os.replace(temporary, real)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
