"""Logging, configured once per process: readable on a terminal, JSON lines otherwise.

`get_logger(name).info("event", key=value)` as with structlog, whose output this keeps
(the same JSON keys, in the same order: the fields, then event, level, timestamp). JSON
lines, what a supervisor writes to supervisor.log, are written here without structlog: it
costs ~30 ms of imports (~50 ms on a loaded machine), and a cold `vrooli up` waits for the
forked supervisor's imports before the first resource starts. A terminal (`up --foreground`,
`vrooli daemon` run by hand) still gets structlog's console renderer, imported then.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|api[_-]?key|credential)", re.IGNORECASE)
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class _Settings:
    minimum = _LEVELS["info"]
    json_stream: TextIO | None = None  # None: structlog renders (configured, or its defaults)
    journal = False  # JSON lines start with their priority's "<N>" (see with_priority)


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Never let a secret reach a log: mask values whose key looks like one."""
    for key in list(event):
        if _SECRET_KEY.search(key):
            event[key] = "***"
    return event


# sd-daemon(3) priority prefixes: journald strips "<N>" and files the line at priority N.
PRIORITY = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4, "info": 6, "debug": 7}


def to_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Is `stream` connected to the journal? $JOURNAL_STREAM names the device:inode systemd
    gave our stderr; inherited by a process whose stderr is elsewhere, it does not match."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        info = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


def with_priority(renderer: Any) -> Any:
    """Wrap a renderer: each line it makes starts with its level's "<N>"."""
    def render(logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        prefix = f"<{PRIORITY.get(method, 6)}>"
        text = str(renderer(logger, method, event))
        return "\n".join(prefix + line for line in text.split("\n"))

    return render


def configure(fmt: str = "auto", stream: TextIO | None = None, level: str = "info",
              journal: bool = False) -> None:
    """`journal`: prefix every line with its priority (daemon mode; also whenever stderr is
    the journal's stream), so `journalctl -p err` shows only errors."""
    stream = stream or sys.stderr
    _Settings.minimum = _LEVELS.get(level.lower(), _LEVELS["info"])
    _Settings.journal = journal or to_journal(stream)
    if fmt == "json" or (fmt == "auto" and not stream.isatty()):
        _Settings.json_stream = stream
        return
    _Settings.json_stream = None
    import logging

    import structlog

    renderer: Any = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    if _Settings.journal:
        renderer = with_priority(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


class Logger:
    """What the modules log through; cheap to create at import time (nothing is imported)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, fields)

    def _log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        stream = _Settings.json_stream
        if stream is None:
            import structlog

            getattr(structlog.get_logger(self.name), level)(event, **fields)
            return
        if _LEVELS[level] < _Settings.minimum:
            return
        line: dict[str, Any] = dict(fields)
        line["event"] = event
        line["level"] = level
        line["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        redact(None, level, line)
        prefix = f"<{PRIORITY.get(level, 6)}>" if _Settings.journal else ""
        try:
            print(prefix + json.dumps(line, default=repr), file=stream, flush=True)
        except (OSError, ValueError):
            pass  # a log that cannot be written must not take the supervisor down


def get_logger(name: str) -> Logger:
    return Logger(name)
