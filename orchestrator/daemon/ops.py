"""The control API's operations and the shape of each request, checked in one place.

Every request line reaching the supervisor is checked here before any handler sees it, so
a handler can trust its fields' types: a request of the wrong shape (`"names": 5`, a
non-string in `files`, an `environ` that is not str -> str, `"no_deps": "yes"`) gets one
clear error line and exit code 2, never an exception inside the supervisor.

Keys a schema does not name are ignored, so a newer CLI can talk to an older supervisor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_NAMES = 10_000
MAX_STRING = 64 * 1024
MAX_ENVIRON = 100_000

Check = Callable[[Any], str | None]  # None when the value is fine, else what is wrong


def _string(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {_kind(value)}"
    if "\0" in value:
        return "contains a NUL byte"
    if len(value) > MAX_STRING:
        return f"longer than {MAX_STRING} characters"
    return None


def _strings(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"expected a list of strings, got {_kind(value)}"
    if len(value) > MAX_NAMES:
        return f"more than {MAX_NAMES} entries"
    for index, item in enumerate(value):
        problem = _string(item)
        if problem:
            return f"item {index}: {problem}"
    return None


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected true or false, got {_kind(value)}"


def _count(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000_000:
        return f"expected a whole number from 0 to 10000000, got {_kind(value)}"
    return None


def _environ(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"expected an object of string -> string, got {_kind(value)}"
    if len(value) > MAX_ENVIRON:
        return f"more than {MAX_ENVIRON} variables"
    for key, item in value.items():
        if not key or "=" in key or "\0" in key:
            return f"invalid variable name {key[:40]!r}"
        problem = _string(item)
        if problem:
            return f"{key[:40]}: {problem}"
    return None


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        shown = repr(value)[:40] if isinstance(value, str) else _kind(value)
        return f"expected one of {', '.join(choices)}, got {shown}"
    return check


def _first_problem(fields: dict[str, Any], schema: dict[str, Check]) -> tuple[str, str] | None:
    """(key, what is wrong) for the first field `schema` refuses; null is the same as absent."""
    for key, check in schema.items():
        if fields.get(key) is not None:  # null is the same as leaving the key out
            problem = check(fields[key])
            if problem:
                return key, problem
    return None


THIN_SCHEMA: dict[str, Check] = {"environ_names": _strings, "profiles_named": _strings, "profiles_env": _string}


def _thin(value: Any) -> str | None:
    """The thin client's part of a request (control_api.from_thin_client)."""
    if not isinstance(value, dict):
        return f"expected an object, got {_kind(value)}"
    found = _first_problem(value, THIN_SCHEMA)
    return f"{found[0]}: {found[1]}" if found else None


# op -> {key: check}. Every key is optional (null = absent); handlers supply the defaults.
SCHEMAS: dict[str, dict[str, Check]] = {
    "ping": {},
    # files, environ and thin: a thin client's request (control_api.from_thin_client).
    "status": {"names": _strings, "files": _strings, "environ": _environ, "thin": _thin},
    "up": {"names": _strings, "no_deps": _boolean, "files": _strings, "environ": _environ,
           "profiles": _strings, "process_environ": _environ, "thin": _thin, "claim": _string},
    "down": {"names": _strings, "volumes": _boolean, "exit": _boolean, "files": _strings, "environ": _environ,
             "thin": _thin},
    "retire": {},
    "restart": {"names": _strings, "files": _strings, "environ": _environ, "thin": _thin},
    "reload": {"files": _strings, "environ": _environ},
    "usage": {"names": _strings},
    "models": {"action": _one_of("list", "pull", "ensure", "unload"), "names": _strings,
               "resource": _string},
    # For clients that may not read the state dir (a system daemon's control group).
    "logs": {"name": _string, "tail": _count, "follow": _boolean},
    "last_start": {},
}


def problem_with(request: Any) -> str | None:
    """What is wrong with a decoded request line, in one line; None when it is well formed."""
    if not isinstance(request, dict):
        return f"a request must be a JSON object, got {_kind(request)}"
    op = request.get("op")
    if not isinstance(op, str):
        return f"'op' must be a string naming the operation ({', '.join(SCHEMAS)})"
    schema = SCHEMAS.get(op)
    if schema is None:
        return f"unknown operation {op[:40]!r} ({', '.join(SCHEMAS)})"
    found = _first_problem(request, schema)
    return f"{op}: '{found[0]}': {found[1]}" if found else None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)
