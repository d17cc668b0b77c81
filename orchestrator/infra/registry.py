"""Where each running project keeps its state, by the file it was started from.

`vrooli status` and `vrooli down` find a project's supervisor through its state dir, and
the state dir comes from resources.toml. While that file is broken (a typo mid-edit), the
running stack must still be visible and stoppable: so every start records, per user, the
first file's absolute path -> the state dir. The supervisor it leads to proves itself by
answering with the same files (see `client.target.running_despite`).

One small JSON file per project in `$XDG_STATE_HOME/vrooli/.registry/` (a name no
project can have: project names start with a letter or digit), 0600 in a 0700 directory.
A registry entry is a hint, never trusted alone; failures to write it are ignored.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

MAX_ENTRY = 64 * 1024


class Entry(NamedTuple):  # not a dataclass: the client path skips its ~7 ms import
    file: Path  # the first -f file, absolute and resolved
    state_dir: Path
    project: str


def directory(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "state")
    return Path(base) / "vrooli" / ".registry"


def key(first_file: Path) -> str:
    import hashlib  # here, not at the top: a client that never hashes skips its ~2.5 ms import
    return hashlib.sha256(os.fsencode(canonical(first_file))).hexdigest()[:32]


def canonical(path: Path) -> Path:
    """The path resolved (symlinks, `..`), or absolute where it cannot be: how files compare."""
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return path.absolute()


def remember(first_file: Path, state_dir: Path, project: str) -> None:
    """Record (or refresh) where this project's state lives; best effort."""
    folder = directory()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return  # not ours: write nothing there
        body = json.dumps({"file": str(canonical(first_file)), "state_dir": str(state_dir),
                           "project": project}).encode()
        target = folder / f"{key(first_file)}.json"
        tmp = folder / f".{key(first_file)}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, body)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError:
        return


def lookup(first_file: Path) -> Entry | None:
    """The entry for this file, if one of ours exists and has the expected shape."""
    path = directory() / f"{key(first_file)}.json"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or info.st_mode & 0o022 or not stat.S_ISREG(info.st_mode):
            return None
        raw = os.read(fd, MAX_ENTRY)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
        entry = Entry(Path(data["file"]), Path(data["state_dir"]), str(data["project"]))
    except (ValueError, KeyError, TypeError):
        return None
    if entry.file != canonical(first_file) or not entry.state_dir.is_absolute():
        return None
    return entry


def forget(first_file: Path) -> None:
    try:
        (directory() / f"{key(first_file)}.json").unlink()
    except OSError:
        pass
