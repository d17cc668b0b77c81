"""File descriptors: the resource any local user can exhaust by opening connections to us.

Two defences live here. At start the supervisor raises its soft `nofile` limit towards the
hard one, so an ordinary burst of connections never comes near it. And every accept loop
(the control socket, the health endpoint) treats "out of file descriptors" as weather, not
as a bug: it logs once, backs off, and tries again, instead of crashing the task group that
also supervises the resources.
"""

from __future__ import annotations

import errno
import resource
import time
from typing import Any

import anyio

# accept() fails with these when the process or the system is out of descriptors or
# memory for another socket: nothing to do but wait for some to be closed.
OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# ...and with these when the client gave up between connecting and our accept: skip it.
CLIENT_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.ECONNRESET, errno.EPERM})
# Enough for the resources' own descriptors plus every bounded listener, and small enough
# that a child which closes every possible fd in a loop at start (some do) stays quick.
NOFILE_TARGET = 65536


def raise_nofile_limit(target: int = NOFILE_TARGET) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to min(hard, target); never fails. Returns (before, after).

    Resources inherit the raised soft limit, as they would under systemd's LimitNOFILE=;
    the servers they run use poll/epoll, not select(), so a higher limit only helps them.
    A sandbox may deny it: systemd's SystemCallFilter=~@resources answers EPERM (with
    SystemCallErrorNumber=EPERM) to setrlimit and to prlimit64, which glibc uses for
    getrlimit too. Then the unit's LimitNOFILE= is the limit, and we run with it.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except OSError as exc:
        _not_raised(None, None, exc)
        return -1, -1
    wanted = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            _not_raised(soft, hard, exc)
            return soft, soft
        return soft, wanted
    return soft, soft


def _not_raised(soft: int | None, hard: int | None, exc: Exception) -> None:
    from orchestrator.infra.logger import get_logger  # only here: the CLI's fast paths need none of it

    get_logger("vrooli.fdlimits").info(
        "nofile limit not raised; running with the limit we were given (set LimitNOFILE= in the unit)",
        soft=soft, hard=hard, error=getattr(exc, "strerror", None) or str(exc))


def os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind an accept failure (anyio wraps it in BrokenResourceError)."""
    while exc is not None:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__  # type: ignore[assignment]
    return None


class AcceptPressure:
    """Back-off and once-only logging for an accept loop that ran out of descriptors.

    `failed()` sleeps a growing delay (10 ms doubling to 1 s) and logs a warning only on the
    first failure of an episode; `accepted()` ends the episode with one line saying how many
    accepts failed. A flood therefore costs two log lines, not one traceback per attempt.
    """

    FIRST_DELAY = 0.01
    MAX_DELAY = 1.0

    def __init__(self, logger: Any, listener: str) -> None:
        self._log = logger
        self._listener = listener
        self._failures = 0
        self._since = 0.0
        self._delay = self.FIRST_DELAY

    async def failed(self, exc: OSError) -> None:
        if self._failures == 0:
            self._since = time.monotonic()
            self._log.warning("out of file descriptors; not accepting connections for now",
                              listener=self._listener, error=exc.strerror or str(exc))
        self._failures += 1
        await anyio.sleep(self._delay)
        self._delay = min(self.MAX_DELAY, self._delay * 2)

    def accepted(self) -> None:
        if self._failures:
            self._log.info("accepting connections again", listener=self._listener,
                           failed_accepts=self._failures,
                           seconds=round(time.monotonic() - self._since, 2))
            self._failures = 0
            self._delay = self.FIRST_DELAY


class LogOnce:
    """Log the first occurrence of each kind of failure; count the rest silently.

    For failures that a client can trigger at will: the first tells the owner something is
    wrong, and the log cannot be grown without bound by repeating it.
    """

    def __init__(self, logger: Any) -> None:
        self._log = logger
        self.seen: dict[str, int] = {}

    def error(self, kind: str, event: str, **fields: Any) -> None:
        count = self.seen.get(kind, 0)
        self.seen[kind] = count + 1
        if count == 0:
            self._log.error(event, **fields, note="logged once; repeats are counted, not logged")


def where_raised(exc: BaseException) -> str:
    """file:line of the frame that raised: enough to find a bug, one line in the log."""
    import traceback  # here: only a failure needs it, and a cold start's way is shorter without

    frame = traceback.extract_tb(exc.__traceback__)[-1:]
    return f"{frame[0].filename}:{frame[0].lineno}" if frame else "?"
