"""A JSON Schema (draft 2020-12) of resources.toml, for editors and for CI checks of a file.

Editors with TOML schema support (taplo, and the VS Code extension Even Better TOML that
uses it) read a first line `#:schema ./docs/resources.schema.json` and then complete keys,
show each key's description, and mark wrong types as you type. `vrooli schema` prints it;
docs/resources.schema.json is the same text (a test keeps them equal).

The schema checks a file *as written*: a string holding `${VAR}` may become anything once
expanded, so wherever a pattern checks a string (durations, sizes, ports) a string with a
`$` in it passes, and the loader checks the expanded value. What a schema cannot see is the
loader's alone: dependency cycles and unknown dependency names, two resources on one host
port, a duration's range when written as text, and what only this machine knows (a cwd, a
command on PATH, a user). tests/test_schema.py holds the corpus on which both agree.

The key sets come from the loader (config/*.py, probes/kinds.py); tests fail when a key
is added there and not here, so the schema cannot fall behind the loader silently.
"""

from __future__ import annotations

import json
from typing import Any

SCHEMA_ID = "https://vrooli.dev/schemas/resources.schema.json"

_INTERPOLATED = {"type": "string", "pattern": r"\$"}  # ${VAR}: checked after expansion

_DURATION_TEXT = r"^ *(?:(?:\d+(?:\.\d*)?|\.\d+) *|(?: *(?:\d+(?:\.\d*)?|\.\d+) *(?:h|ms|m|s|us|µs|ns))+ *)$"

_SIZE_TEXT = r"^\s*\d{1,30}(?:\.\d{1,30})?\s*[kmgtKMGT]?(?:[iI]?[bB])?\s*$"

_PORT_TEXT = (r"^(?:(?:\[[0-9A-Fa-f:.]+\]|[0-9.]*):)?(?:\d{1,5}:)?\d{1,5}(?:/(?:tcp|udp))?$")

_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"

_PROFILE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"  # never read as an option: `--profile NAME`


def _text(pattern: str, description: str, example: str) -> dict[str, Any]:
    return {"description": description, "examples": [example],
            "anyOf": [{"type": "string", "pattern": pattern}, _INTERPOLATED]}


def _duration(description: str, example: str = "30s", minimum: float = 0) -> dict[str, Any]:
    """`minimum` as the loader's: checked here for numbers; for text only the loader can."""
    return {"description": description + " A duration: seconds as a number, or text like \"250ms\", \"1m30s\".",
            "examples": [example],
            "anyOf": [{"type": "number", "minimum": minimum, "maximum": 365 * 24 * 3600},
                      {"type": "string", "pattern": _DURATION_TEXT}, _INTERPOLATED]}


def _size(description: str, example: str = "512m") -> dict[str, Any]:
    return {"description": description + " A size: bytes as a number, or text like \"512m\", \"2GiB\".",
            "examples": [example],
            "anyOf": [{"type": "integer", "minimum": 1, "maximum": 1 << 50},
                      {"type": "string", "pattern": _SIZE_TEXT}, _INTERPOLATED]}


def _argv(description: str, example: list[str]) -> dict[str, Any]:
    return {"description": description, "examples": [example],
            "type": "array", "items": {"type": "string"}, "minItems": 1}


def _string(description: str, **more: Any) -> dict[str, Any]:
    return {"description": description, "type": "string", **more}


def _boolean(description: str, default: bool) -> dict[str, Any]:
    return {"description": description, "type": "boolean", "default": default}


def _count(description: str, default: int, minimum: int = 1) -> dict[str, Any]:
    return {"description": description, "type": "integer", "minimum": minimum, "maximum": 1_000_000,
            "default": default}


def _port() -> dict[str, Any]:
    return {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 65535},
                      {"type": "string", "pattern": _PORT_TEXT}, _INTERPOLATED]}


def _project() -> dict[str, Any]:
    return {
        "description": "Settings of the whole stack.",
        "type": "object", "additionalProperties": False,
        "properties": {
            "name": {"description": "The project's name (default: the directory's name); names the state "
                                    "directory, containers and network.",
                     "anyOf": [{"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}, _INTERPOLATED]},
            "state_dir": _string("Where records, logs and the control socket live "
                                 "(default $XDG_STATE_HOME/vrooli/NAME)."),
            "health_listen": _text(r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$",
                                   "HOST:PORT of the read-only HTTP health endpoint.", "127.0.0.1:9500"),
            "health_enabled": _boolean("Serve the HTTP health endpoint.", True),
            "memory_budget": _size("The stack's memory budget: /health warns above it."),
            "memory_budget_peak": _size("A higher budget for short peaks; background model loads wait below it."),
            "keep_warm": _duration("How long the supervisor stays idle after `vrooli down`, so the next "
                                   "`vrooli up` skips Python's start-up; \"0\" turns it off.", "10m"),
        },
    }


def _dependency() -> dict[str, Any]:
    condition = {"description": "What the dependent waits for.", "enum": ["started", "healthy", "completed"]}
    return {
        "description": "Resources this one waits for: a list of names (each must be healthy), or a table "
                       "of name = condition, or name = { condition, restart, required }.",
        "anyOf": [
            {"type": "array", "items": {"type": "string"}},
            {"type": "object", "additionalProperties": {"anyOf": [condition, {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "condition": condition,
                    "restart": _boolean("Restart this resource when the dependency restarts.", False),
                    "required": _boolean("false: start anyway when the dependency is disabled, left out "
                                         "or failed (it is still waited for while it starts).", True),
                }}]}},
        ],
    }


def _health(probe_keys: dict[str, list[str]]) -> dict[str, Any]:
    kinds = list(probe_keys)
    properties: dict[str, Any] = {
        "probe": {"description": "How readiness is decided.", "enum": kinds},
        "host": _string("Address to probe (default: where the first port is published)."),
        "port": {"description": "Port to probe (default: the first of `ports`).",
                 "type": "integer", "minimum": 1, "maximum": 65535},
        "url": _string("http: the URL to GET (default http://HOST:PORT/)."),
        "expect_status": {"description": "http: the status codes that mean ready (default 2xx).",
                          "anyOf": [{"type": "integer", "minimum": 100, "maximum": 599},
                                    {"type": "array", "minItems": 1,
                                     "items": {"type": "integer", "minimum": 100, "maximum": 599}}]},
        "command": _argv("exec: the check to run; exit 0 means ready.", ["pg_isready", "-q"]),
        "inside": _boolean("exec: run the check in the container (docker only).", False),
        "user": _string("postgres: the role to connect as.", default="postgres"),
        "database": _string("postgres: the database to connect to."),
        "password": _string("redis: the AUTH password."),
        "pattern": _string("log: a regular expression; a matching output line means ready."),
        "interval": _duration("Time between probes while starting.", "100ms", minimum=0.001),
        "timeout": _duration("How long one probe may take.", "1s", minimum=0.001),
        "liveness_interval": _duration("Time between probes once ready.", "5s", minimum=0.01),
        "failure_threshold": _count("Failed probes in a row that make a ready resource unhealthy.", 3),
    }
    return {
        "description": "The health probe: decides when the resource is ready, and watches it afterwards.",
        "type": "object", "additionalProperties": False, "required": ["probe"],
        "properties": properties,
        "allOf": [
            {"if": {"properties": {"probe": {"const": "exec"}}}, "then": {"required": ["command"]}},
            {"if": {"properties": {"probe": {"const": "log"}}}, "then": {"required": ["pattern"]}},
        ],
    }


def _resource(probe_keys: dict[str, list[str]], needs_port: list[str]) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "runtime": {"description": "How it runs: a native process, a Docker container, or a service "
                                   "vrooli only watches.", "enum": ["process", "docker", "external"],
                    "default": "process"},
        "description": _string("What it is for (shown by `vrooli graph`)."),
        "command": _argv("The program and its arguments (process: required; docker: the image's CMD).",
                         ["redis-server", "--port", "6380"]),
        "entrypoint": _argv("docker: replaces the image's ENTRYPOINT.", ["/docker-entrypoint.sh"]),
        "image": _string("docker: the image to run.", examples=["postgres:16-alpine"]),
        "cwd": _string("Working directory (process: relative to the file; docker: an absolute path "
                       "in the container)."),
        "user": _string("process: the user to run as; docker: the container's user."),
        "env": {"description": "Environment variables.", "type": "object",
                "propertyNames": {"pattern": r"^[^=]+$"},
                "additionalProperties": {"type": ["string", "boolean", "number"]}},
        "env_file": _string("A file of NAME=value lines, relative to this file; `env` wins over it."),
        "ports": {"description": "Ports: 5433, or \"[HOST_IP:]HOST:CONTAINER[/PROTOCOL]\" as docker writes them.",
                  "type": "array", "items": _port()},
        "volumes": {"description": "docker: \"name:/target[:ro]\" or \"./host/path:/target[:ro]\".",
                    "type": "array",
                    "items": {"type": "string", "pattern": r"^[^:]+:/[^:]*(?::(?:ro|rw))?$|\$"}},
        "depends_on": _dependency(),
        "health": _health(probe_keys),
        "enabled": _boolean("false: left out of every start (and its dependents must go too).", True),
        "profiles": {"description": "Left out of a plain `vrooli up` unless one of these profiles is active "
                                    "(`--profile NAME` or VROOLI_PROFILES).",
                     "type": "array", "items": {"type": "string", "pattern": _PROFILE}},
        "start_timeout": _duration("How long it may take to become ready.", "60s", minimum=0.01),
        "stop_signal": _string("The signal that asks it to stop.", default="SIGTERM", examples=["SIGINT"]),
        "stop_timeout": _duration("How long it may take to stop before SIGKILL.", "10s"),
        "restart": {"description": "When to restart it.", "enum": ["no", "on-failure", "always"], "default": "no"},
        "restart_delay": _duration("The first restart's delay (doubling up to restart_max_delay).", "500ms"),
        "restart_max_delay": _duration("The longest delay between restarts.", "30s"),
        "restart_burst": _count("Restarts allowed within restart_window before giving up.", 5),
        "restart_window": _duration("The window restart_burst counts in.", "60s", minimum=0.01),
        "post_start": _argv("Run once it is ready (every start); it counts as ready when this exits 0.",
                            ["createdb", "app"]),
        "pre_stop": _argv("Run before the stop signal, within stop_timeout.", ["redis-cli", "save"]),
        "hooks_inside": _boolean("docker: run post_start and pre_stop in the container.", False),
        "log_max_size": _size("Its output log's size before rotation.", "10m"),
        "log_max_files": {"description": "Rotated output logs kept.", "type": "integer", "minimum": 0,
                          "maximum": 1000, "default": 3},
        "memory_limit": _size("Its memory limit (a cgroup, or the RSS watchdog for processes)."),
        "memory_grace": _duration("process: how long it may stay over memory_limit before a recycle.", "10s"),
        "models": {"description": "Ollama models this resource serves.", "type": "array",
                   "items": {"type": "string", "minLength": 1}},
        "model_load": {"description": "When models load: lazy (on first use), background (after ready), "
                                      "eager (before ready).", "enum": ["lazy", "background", "eager"]},
        "keep_alive": {"description": "How long Ollama keeps a model loaded (\"5m\", or -1 for ever).",
                       "type": ["string", "integer"]},
        "model_concurrency": _count("Models pulled at once.", 1),
        "target_startup": _duration("`vrooli report`: the startup time it should meet.", "5s", minimum=0.001),
        "target_memory": _size("`vrooli report`: the memory it should stay within.", "512MiB"),
        "export": {"description": "What `vrooli export` writes instead, where the local way differs.",
                   "type": "object", "additionalProperties": False,
                   "properties": {
                       "image": _string("The image to use in exported files."),
                       "command": _argv("The command to use in exported files.", ["ollama", "serve"]),
                       "healthcheck": _argv("A compose healthcheck test.", ["CMD", "pg_isready"]),
                       "env": {"type": "object", "additionalProperties": {"type": "string"}},
                   }},
    }
    port_needed = {"properties": {"health": {"required": ["probe"], "not": {"required": ["port"]},
                                             "properties": {"probe": {"enum": needs_port}}}},
                   "required": ["health"]}
    # An http probe without a url probes http://HOST:PORT/: it needs a port from somewhere.
    url_needed = {"properties": {"health": {"required": ["probe"], "not": {"anyOf": [{"required": ["port"]},
                                                                                     {"required": ["url"]}]},
                                            "properties": {"probe": {"const": "http"}}}},
                  "required": ["health"]}
    return {
        "type": "object", "additionalProperties": False, "properties": properties,
        "allOf": [
            _when_runtime("docker", {"required": ["image"],
                                     "properties": {"cwd": {"anyOf": [{"pattern": "^/"}, _INTERPOLATED]}}}),
            _when_runtime(None, {"required": ["command"], "properties": dict.fromkeys(DOCKER_ONLY, False)}),
            _when_runtime("external", {"required": ["health"],
                                       "properties": dict.fromkeys(NOT_EXTERNAL, False)}),
            {"if": {"not": _runtime_is("docker")},
             "then": {"properties": {"health": {"properties": {"inside": {"const": False}}}}}},
            {"if": {"not": _runtime_is(None)}, "then": {"properties": {"memory_grace": False}}},
            {"dependentRequired": {"memory_grace": ["memory_limit"]}},
            {"if": port_needed, "then": {"required": ["ports"], "properties": {"ports": {"minItems": 1}}}},
            {"if": url_needed, "then": {"required": ["ports"], "properties": {"ports": {"minItems": 1}}}},
        ],
    }


DOCKER_ONLY = ("image", "entrypoint", "volumes", "hooks_inside")

# An external resource is one vrooli never starts: nothing about running or stopping it applies.
NOT_EXTERNAL = ("command", "entrypoint", "image", "cwd", "user", "env", "env_file", "ports", "volumes",
                "stop_signal", "stop_timeout", "restart", "restart_delay", "restart_max_delay",
                "restart_burst", "restart_window", "log_max_size", "log_max_files", "memory_limit",
                "memory_grace", "models", "model_load", "keep_alive", "model_concurrency",
                "post_start", "pre_stop", "hooks_inside")


def _runtime_is(runtime: str | None) -> dict[str, Any]:
    """runtime = RUNTIME; None: the process runtime, which is also what a missing key means."""
    if runtime is None:
        return {"anyOf": [{"not": {"required": ["runtime"]}},
                          {"properties": {"runtime": {"const": "process"}}, "required": ["runtime"]}]}
    return {"properties": {"runtime": {"const": runtime}}, "required": ["runtime"]}


def _when_runtime(runtime: str | None, then: dict[str, Any]) -> dict[str, Any]:
    return {"if": _runtime_is(runtime), "then": then}


def schema() -> dict[str, Any]:
    from orchestrator.probes.kinds import KINDS

    probe_keys = {name: sorted(kind.keys) for name, kind in KINDS.items()}
    needs_port = [name for name, kind in KINDS.items() if kind.needs_port]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "vrooli resources.toml",
        "description": "The resources a `vrooli up` starts: how each runs, its ports, health probe and "
                       "dependencies. Put `#:schema ./docs/resources.schema.json` on the file's first line "
                       "for completion and checks in editors that read TOML schemas.",
        "type": "object", "additionalProperties": False, "required": ["resources"],
        "properties": {
            "project": _project(),
            "resources": {"description": "One table per resource: [resources.NAME].",
                          "type": "object", "minProperties": 1,
                          "propertyNames": {"pattern": _NAME},
                          "additionalProperties": {"$ref": "#/$defs/resource"}},
        },
        "$defs": {"resource": _resource(probe_keys, needs_port)},
    }


def text() -> str:
    """The schema as `vrooli schema` prints it and docs/resources.schema.json holds it."""
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"
