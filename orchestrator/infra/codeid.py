"""Which code a process runs: the package version and the newest change among its files.

A warm supervisor (warm.py) outlives the `vrooli` commands that talk to it; after a
`pip install -U` (or an edit of an editable install) the next `vrooli up` must not hand
its request to a supervisor still running the old modules. The client compares its own
fingerprint with the one a supervisor reports, and an idle supervisor whose code differs
is retired (spawn.ensure_supervisor). Standard library only: the client computes it on
every `up`, and a scan of the package's ~70 files costs well under a millisecond.
"""

from __future__ import annotations

import os

from orchestrator import __version__

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # orchestrator/, above infra/


def fingerprint(package_dir: str = _PACKAGE_DIR) -> str:
    """`VERSION:NEWEST_MTIME_NS:FILE_COUNT` of the package's .py files as they are on disk now.

    The count catches a module deleted by an upgrade (which no mtime shows); the newest
    mtime catches an upgrade or an edit in place (pip writes every file anew).
    """
    newest, count = 0, 0
    pending = [package_dir]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.name == "__pycache__":
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.name.endswith(".py"):
                    newest = max(newest, entry.stat().st_mtime_ns)
                    count += 1
            except OSError:
                continue
    return f"{__version__}:{newest}:{count}"
