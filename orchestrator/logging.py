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
import re
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|api[_-]?key|credential)", re.IGNORECASE)
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class _Settings:
    minimum = _LEVELS["info"]
    json_stream: TextIO | None = None  # None: structlog renders (configured, or its defaults)


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Never let a secret reach a log: mask values whose key looks like one."""
    for key in list(event):
        if _SECRET_KEY.search(key):
            event[key] = "***"
    return event


def configure(fmt: str = "auto", stream: TextIO | None = None, level: str = "info") -> None:
    stream = stream or sys.stderr
    _Settings.minimum = _LEVELS.get(level.lower(), _LEVELS["info"])
    if fmt == "json" or (fmt == "auto" and not stream.isatty()):
        _Settings.json_stream = stream
        return
    _Settings.json_stream = None
    import logging

    import structlog

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.dev.ConsoleRenderer(colors=stream.isatty()),
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
        try:
            print(json.dumps(line, default=repr), file=stream, flush=True)
        except (OSError, ValueError):
            pass  # a log that cannot be written must not take the supervisor down


def get_logger(name: str) -> Logger:
    return Logger(name)
