"""structlog, configured once per process: readable on a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|api[_-]?key|credential)", re.IGNORECASE)


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
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (structlog.processors.JSONRenderer() if as_json
                     else structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    if journal or to_journal(stream):
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
