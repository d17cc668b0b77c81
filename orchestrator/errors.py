"""Every exception vrooli raises on purpose lives here.

The CLI turns any `VrooliError` into one line per problem and an exit code; anything
else is a bug and is allowed to show a traceback.
"""

from __future__ import annotations

# What every command exits with; `status` adds EXIT_NOT_RUNNING.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3


class VrooliError(Exception):
    """Base class: a problem the user can act on. `exit_code` is what the CLI returns."""

    exit_code = EXIT_FAILED

    def lines(self) -> list[str]:
        return [str(self)]


class ConfigError(VrooliError):
    """resources.toml (or an override file) is invalid; every problem is one line."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))

    def lines(self) -> list[str]:
        return list(self.problems)


class UsageError(VrooliError):
    """The command line asked for something that cannot be (unknown resource, bad flag)."""

    exit_code = EXIT_USAGE


class SupervisorUnavailable(VrooliError):
    """No supervisor is running for this project, or it cannot be reached."""

    exit_code = EXIT_NOT_RUNNING


class StartFailed(VrooliError):
    """A resource could not be started at all (binary missing, port taken, image missing)."""


class RuntimeUnavailable(VrooliError):
    """The machinery a runtime needs (the Docker engine) cannot be reached."""
