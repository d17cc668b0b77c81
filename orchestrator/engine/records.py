"""running.json: what a supervisor left running, read back with suspicion.

A supervisor killed with SIGKILL leaves this record behind, and the next one adopts what
it lists. The file may be anything by then (cut short by a full disk, edited by hand,
from another version): every record is checked for its shape before anything acts on a
pid from it, a file that is not entirely right is moved aside for inspection, and the
processes a bad record no longer names are found the other way, by the log file they
write to (their stdout is `logs/NAME.log`, in a directory only we can write to).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.infra import paths
from orchestrator.runtimes import Adoptable

RECORD_KEYS = frozenset({"kind", "ident", "create_time", "config_hash"})
PID_MAX = 1 << 22  # the kernel's limit (/proc/sys/kernel/pid_max cannot exceed it)
_CONTAINER_ID = re.compile(r"^[0-9a-f]{12,64}$")


@dataclass(frozen=True, slots=True)
class Leftover:
    name: str
    record: Adoptable
    log_start: int = 0


@dataclass(frozen=True, slots=True)
class Recorded:
    leftovers: tuple[Leftover, ...]
    problems: tuple[str, ...]  # one per record (or for the whole file) set aside
    present: bool  # the file existed


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_ident(kind: str, ident: str) -> str | None:
    if kind == "process":
        if not ident.isascii() or not ident.isdigit() or not 1 < int(ident) < PID_MAX:
            return f"ident {ident[:40]!r} is not a process id"
        if int(ident) == os.getpid():
            return "ident is the supervisor's own pid"
    elif kind == "docker" and not _CONTAINER_ID.match(ident):
        return f"ident {ident[:40]!r} is not a container id"
    return None


def check_record(raw: object) -> str | None:
    """What is wrong with one record, or None."""
    if not isinstance(raw, dict):
        return f"expected an object, got {type(raw).__name__}"
    missing = sorted(RECORD_KEYS - raw.keys())
    if missing:
        return f"missing {', '.join(missing)}"
    extra = sorted(set(raw) - RECORD_KEYS - {"log_start"})
    if extra:
        return f"unknown key {extra[0]!r}"
    kind, ident = raw["kind"], raw["ident"]
    if kind not in ("process", "docker", "fake"):
        return f"unknown kind {str(kind)[:40]!r}"
    if not isinstance(ident, str) or not ident:
        return "ident must be a non-empty string"
    if not _is_number(raw["create_time"]) or raw["create_time"] < 0:
        return "create_time must be a number of seconds"
    if not isinstance(raw["config_hash"], str):
        return "config_hash must be a string"
    log_start = raw.get("log_start", 0)
    if isinstance(log_start, bool) or not isinstance(log_start, int) or log_start < 0:
        return "log_start must be a whole number of bytes"
    return _check_ident(kind, ident)


def parse(text: str) -> tuple[list[Leftover], list[str]]:
    """The records that have the right shape, and one line per problem."""
    try:
        data: Any = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return [], [f"not JSON ({str(exc)[:80]})"]
    if not isinstance(data, dict):
        return [], [f"expected an object of resource records, got {type(data).__name__}"]
    leftovers, problems = [], []
    for name, raw in data.items():
        problem = check_record(raw)
        if problem is not None:
            problems.append(f"{name[:64]!r}: {problem}")
            continue
        record = Adoptable(raw["kind"], raw["ident"], float(raw["create_time"]), raw["config_hash"])
        leftovers.append(Leftover(name, record, raw.get("log_start", 0)))
    return leftovers, problems


def read(state_dir: Path) -> Recorded:
    path = paths.running_file(state_dir)
    try:
        fd = paths.open_private(path, os.O_RDONLY)
    except FileNotFoundError:
        return Recorded((), (), False)
    except (OSError, paths.UnsafePath) as exc:
        return Recorded((), (f"cannot read it: {exc}",), True)
    try:
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(1 << 24)
    except OSError as exc:
        return Recorded((), (f"cannot read it: {exc}",), True)
    leftovers, problems = parse(raw.decode("utf-8", errors="replace"))
    return Recorded(tuple(leftovers), tuple(problems), True)


def set_aside(state_dir: Path) -> Path | None:
    """Move a bad running.json out of the way, kept for inspection: running.json.bad-<time>."""
    path = paths.running_file(state_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = path.with_name(f"{path.name}.bad-{stamp}")
    try:
        os.rename(path, target)
    except OSError:
        return None
    return target


def write(state_dir: Path, running: dict[str, dict[str, Any]]) -> None:
    paths.write_private(paths.running_file(state_dir), json.dumps(running))


def log_writers(log_dir: Path) -> dict[str, list[int]]:
    """Session leaders whose stdout is a `NAME.log` of this dir (deleted or not), by NAME.

    Each process we start leads its own session with its output in its log file, so this
    finds what we started even when no record says so. Only our own processes (or all,
    for root) can be inspected: exactly those we could have started.
    """
    prefix = str(log_dir.resolve()) + os.sep
    found: dict[str, list[int]] = {}
    try:
        entries = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return found
    for pid in entries:
        try:
            target = os.readlink(f"/proc/{pid}/fd/1")
            if not target.startswith(prefix) or os.getsid(pid) != pid:
                continue
        except OSError:
            continue
        name = target[len(prefix):].removesuffix(" (deleted)")
        if "/" not in name and name.endswith(".log"):
            found.setdefault(name[: -len(".log")], []).append(pid)
    return found


def maybe_running(state_dir: Path) -> bool:
    """Could anything of this project still run, with no supervisor to ask?

    A record of any shape but an empty one says maybe (a supervisor is started to adopt
    and stop it); so does any process writing to our log files.
    """
    try:
        text = paths.running_file(state_dir).read_text()
    except FileNotFoundError:
        text = "{}"
    except OSError:
        return True
    if text.strip() not in ("{}", ""):
        return True
    return bool(log_writers(state_dir / "logs"))
