"""Every exception vrooli raises on purpose lives here (or derives from a class here).

The CLI turns any `VrooliError` into one line per problem and an exit code; anything
else is a bug and is allowed to show a traceback. Over the control socket an error travels
as its `kind` (see `VrooliError.reply` and `from_reply`), so the client rebuilds the same
class with the same exit code instead of guessing it from the message text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# What every command exits with; `status` adds EXIT_NOT_RUNNING.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # Ctrl-C while waiting (128 + SIGINT), as a shell reports it


class VrooliError(Exception):
    """Base class: a problem the user can act on. `exit_code` is what the CLI returns."""

    exit_code = EXIT_FAILED
    kind = "failed"  # its name in a control-socket reply; one per class below

    def lines(self) -> list[str]:
        return [str(self)]

    def reply(self) -> dict[str, Any]:
        """The control-socket answer that carries this error to the client."""
        return {"ok": False, "error": str(self), "errors": self.lines(), "exit_code": self.exit_code,
                "kind": self.kind}


class ConfigError(VrooliError):
    """resources.toml (or an override file) is invalid; every problem is one line."""

    exit_code = EXIT_USAGE
    kind = "config"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))

    def lines(self) -> list[str]:
        return list(self.problems)


class UsageError(VrooliError):
    """The command line asked for something that cannot be (unknown resource, bad flag)."""

    exit_code = EXIT_USAGE
    kind = "usage"


class SupervisorUnavailable(VrooliError):
    """No supervisor is running for this project, or it cannot be reached."""

    exit_code = EXIT_NOT_RUNNING
    kind = "unavailable"


class SupervisorGone(SupervisorUnavailable):
    """The supervisor went away in the middle of a command (crashed, killed, or ended)."""

    kind = "gone"


class StartFailed(VrooliError):
    """A resource could not be started at all (binary missing, port taken, image missing)."""

    kind = "start_failed"


class RuntimeUnavailable(VrooliError):
    """The machinery a runtime needs (the Docker engine) cannot be reached."""

    kind = "runtime_unavailable"


# Two parsers refuse a value with a ValueError rather than a VrooliError: each message is
# one line about that value alone, and the caller always catches it to add where the value
# is (the file and the key of a ConfigError line, or the probe whose check failed). One
# that escapes is a bug, and shows its traceback like any other.


class InterpolationError(ValueError):
    """A `${...}` that cannot be expanded (config/variables.py); the message is one line."""


class UrlError(ValueError):
    """A health URL the probe cannot use (probes/url.py). The message never repeats the URL:
    it may hold a password."""

    shows_no_secret = True


_BY_KIND: dict[str, type[VrooliError]] = {
    cls.kind: cls for cls in (VrooliError, UsageError, SupervisorUnavailable, SupervisorGone,
                              StartFailed, RuntimeUnavailable)
}


def from_reply(reply: Mapping[str, Any], default: str = "the supervisor refused") -> VrooliError:
    """The error a supervisor's `ok: false` reply carries, as the class it was raised as."""
    errors = [str(e) for e in reply.get("errors") or []]
    message = str(reply.get("error") or "; ".join(errors) or default)
    kind = str(reply.get("kind") or "")
    if kind == "config":
        return ConfigError(errors or [message])
    error = _BY_KIND.get(kind, VrooliError)(message)
    if kind not in _BY_KIND and isinstance(reply.get("exit_code"), int):
        error.exit_code = reply["exit_code"]  # a kind this client does not know: keep its code
    return error


def check_names(known: Iterable[str], names: Iterable[str]) -> None:
    """Every name a command gives must be a resource of the project (exit 2 otherwise).

    The one check of resource names: the CLI runs it before it asks anything (so it holds
    also when nothing is running) and the supervisor runs it on every request that names
    resources."""
    known = list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown resource '{unknown[0]}' (known: {', '.join(known)})")
