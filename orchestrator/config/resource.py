"""One [resources.NAME] table → ResourceSpec, each key checked, every problem collected."""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.config.health import parse_probe
from orchestrator.config.values import (
    Checker,
    home,
    optional_size,
    parse_port,
    parse_size,
    show,
    type_name,
    whole,
)
from orchestrator.config.variables import read_env_file
from orchestrator.spec import (
    DEFAULT_LOG_MAX_FILES,
    DEFAULT_LOG_MAX_SIZE,
    Condition,
    Dependency,
    ExportSpec,
    ModelLoad,
    ModelsSpec,
    PortSpec,
    ResourceSpec,
    RestartPolicy,
    VolumeSpec,
)

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}", re.ASCII)

COMMON_KEYS = {
    "runtime", "command", "cwd", "env", "env_file", "ports", "depends_on", "start_timeout",
    "stop_signal", "stop_timeout", "restart", "restart_delay", "restart_max_delay",
    "restart_burst", "restart_window", "enabled", "health", "user", "description",
    "log_max_size", "log_max_files", "models", "model_load", "keep_alive", "model_concurrency", "export",
    "memory_limit", "memory_grace", "target_startup", "target_memory", "profiles",
}

DOCKER_ONLY_KEYS = {"image", "entrypoint", "volumes", "hooks_inside"}

HOOK_KEYS = {"post_start", "pre_stop"}  # argv lists, checked like `command` (hooks.py runs them)

RESOURCE_KEYS = COMMON_KEYS | DOCKER_ONLY_KEYS | HOOK_KEYS

RUNTIMES = ("process", "docker", "external")

EXTERNAL_KEYS = {"runtime", "depends_on", "start_timeout", "enabled", "health", "description", "export",
                 "target_startup", "target_memory", "profiles"}

# Starts with a letter or digit, so that `--profile NAME` never reads as an option.
PROFILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", re.ASCII)

EXPORT_KEYS = {"image", "command", "healthcheck", "env"}

LOG_SIZE_RANGE = (1 << 10, 1 << 40)  # below 1 KiB the log would rotate on every line

LOG_FILES_MAX = 1000


def parse_resource(name: str, raw: object, project_dir: Path, variables: Mapping[str, str],
                    check: Checker) -> ResourceSpec | None:
    path = ("resources", name)
    if not NAME_RE.fullmatch(name):
        check.fail(path, "a resource name is lowercase letters, digits, '-', '_' or '.', "
                         "starting with a letter or digit")
        return None
    if not isinstance(raw, dict):
        check.fail(path, f"expected a table, got {type_name(raw)}")
        return None
    runtime = raw.get("runtime", "process")
    if runtime not in RUNTIMES:
        check.fail((*path, "runtime"), f"must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        return None
    check.unknown_keys(raw, RESOURCE_KEYS, path, "a resource")
    if runtime == "external":
        _check_external(raw, path, check)
    if runtime == "process":
        for key in sorted(DOCKER_ONLY_KEYS & raw.keys()):
            check.fail((*path, key), 'only applies to runtime = "docker"')

    command = check.command(raw, "command", path)
    image = check.string(raw, "image", path)
    if runtime == "process" and command is None and "command" not in raw:
        check.fail((*path, "command"), "a process resource needs a command")
    if runtime == "docker" and not image and "image" not in raw:
        check.fail((*path, "image"), "a docker resource needs an image")

    env = _read_env_file(raw["env_file"], project_dir, variables, (*path, "env_file"), check) \
        if "env_file" in raw else {}
    env.update(_parse_env(raw.get("env", {}), (*path, "env"), check))
    cwd = _parse_cwd(raw, runtime, project_dir, path, check)

    ports = _parse_ports(raw["ports"], runtime, (*path, "ports"), check) if "ports" in raw else ()
    depends = _parse_depends(raw.get("depends_on", []), (*path, "depends_on"), check)
    health = parse_probe(raw["health"], name, ports, (*path, "health"), check) if "health" in raw else None
    if health is not None and health.inside and runtime != "docker":
        check.fail((*path, "health", "inside"), 'only applies to runtime = "docker"')

    stop_signal = check.string(raw, "stop_signal", path, "SIGTERM") or "SIGTERM"
    normalized = stop_signal.upper() if stop_signal.upper().startswith("SIG") else "SIG" + stop_signal.upper()
    if normalized not in signal.Signals.__members__:
        check.fail((*path, "stop_signal"), f"unknown signal {stop_signal!r} (try SIGTERM, SIGINT, SIGQUIT)")
        normalized = "SIGTERM"

    restart_raw = raw.get("restart", "no")
    policies = [p.value for p in RestartPolicy]
    if restart_raw is False:
        restart_raw = "no"
    if restart_raw not in policies:
        check.fail((*path, "restart"), f"must be one of {', '.join(policies)}, got {restart_raw!r}")
        restart_raw = "no"

    entrypoint = check.command(raw, "entrypoint", path)
    volumes = _parse_volumes(raw["volumes"], project_dir, (*path, "volumes"), check) if "volumes" in raw else ()
    memory_limit, memory_grace = _parse_memory(raw, runtime, path, check)
    models = _parse_models(raw, path, check)

    return ResourceSpec(
        name=name, runtime=runtime, command=command or (), cwd=cwd,
        env=tuple(sorted(env.items())), ports=ports, depends_on=depends,
        start_timeout=check.duration(raw, "start_timeout", path, 60.0, minimum=0.01),
        stop_signal=normalized,
        stop_timeout=check.duration(raw, "stop_timeout", path, 10.0),
        restart=RestartPolicy(restart_raw),
        restart_delay=check.duration(raw, "restart_delay", path, 0.5),
        restart_max_delay=check.duration(raw, "restart_max_delay", path, 30.0),
        restart_burst=whole(raw, "restart_burst", path, check, 5),
        restart_window=check.duration(raw, "restart_window", path, 60.0, minimum=0.01),
        enabled=check.boolean(raw, "enabled", path, True),
        health=health, user=_parse_user(raw, path, check),
        image=image, entrypoint=entrypoint, volumes=volumes, memory_limit=memory_limit,
        memory_grace=memory_grace, models=models, description=check.string(raw, "description", path, "") or "",
        export=_parse_export(raw["export"], (*path, "export"), check) if "export" in raw else None,
        log_max_size=_log_max_size(raw, path, check), log_max_files=_log_max_files(raw, path, check),
        target_startup=_target_startup(raw, path, check),
        target_memory=optional_size(raw, "target_memory", path, check),
        profiles=_parse_profiles(raw, path, check),
        post_start=check.command(raw, "post_start", path) or (), pre_stop=check.command(raw, "pre_stop", path) or (),
        hooks_inside=check.boolean(raw, "hooks_inside", path, False),
    )


def _parse_ports(raw: object, runtime: str, path: tuple[str, ...], check: Checker
                 ) -> tuple[PortSpec, ...]:
    if not isinstance(raw, list):
        check.fail(path, f"expected a list of ports, got {type_name(raw)}")
        return ()
    ports: list[PortSpec] = []
    for index, item in enumerate(raw):
        here = (*path, str(index))
        if isinstance(item, int) and not isinstance(item, bool):
            number = check.port(item, here)
            if number is not None:
                ports.append(PortSpec(host_port=number, container_port=number))
            continue
        if not isinstance(item, str):
            check.fail(here, f"expected a port like 5433 or \"127.0.0.1:5433:5432\", got {type_name(item)}")
            continue
        try:
            ports.append(parse_port(item))
        except ValueError as exc:
            check.fail(here, str(exc))
    if runtime == "process":
        for port in ports:
            if port.host_port != port.container_port:
                check.fail(path, f"a process cannot remap ports ({port.host_port} != {port.container_port})")
    return tuple(ports)


def _parse_depends(raw: object, path: tuple[str, ...], check: Checker) -> tuple[Dependency, ...]:
    deps: list[Dependency] = []
    if isinstance(raw, list):
        for index, item in enumerate(raw):
            if isinstance(item, str):
                deps.append(Dependency(item))
            else:
                check.fail((*path, str(index)), f"expected a resource name, got {type_name(item)}")
        return tuple(deps)
    if not isinstance(raw, dict):
        check.fail(path, "expected a list of names or a table of name = \"started\" | \"healthy\" | \"completed\"")
        return ()
    conditions = [c.value for c in Condition]
    for name, value in raw.items():
        here = (*path, name)
        restart, required = False, True
        if isinstance(value, dict):
            check.unknown_keys(value, {"condition", "restart", "required"}, here, "a dependency")
            restart = check.boolean(value, "restart", here, False)
            required = check.boolean(value, "required", here, True)
            value = value.get("condition", "healthy")
            here = (*here, "condition")
        if not isinstance(value, str) or value not in conditions:
            check.fail(here, f"condition must be one of {', '.join(conditions)}, got {value!r}")
            continue
        deps.append(Dependency(name, Condition(value), restart, required))
    return tuple(deps)


def _parse_profiles(raw: Mapping[str, Any], path: tuple[str, ...], check: Checker) -> tuple[str, ...]:
    """`profiles = ["ai", "gpu"]`: names of letters, digits, '-', '_' and '.', starting with a letter or digit."""
    value = raw.get("profiles", [])
    here = (*path, "profiles")
    if not isinstance(value, list):
        check.fail(here, f'expected a list of profile names like ["ai"], got {type_name(value)}')
        return ()
    names: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not PROFILE_RE.fullmatch(item):
            shown = show(item) if isinstance(item, str) else type_name(item)
            check.fail((*here, str(index)), "a profile name is 1 to 63 letters, digits, '-', '_' or '.', "
                                            "starting with a letter or digit, "
                                            f"got {shown}")
        elif item not in names:
            names.append(item)
    return tuple(names)


def _parse_volumes(raw: object, project_dir: Path, path: tuple[str, ...], check: Checker
                   ) -> tuple[VolumeSpec, ...]:
    if not isinstance(raw, list):
        check.fail(path, f"expected a list like [\"pgdata:/var/lib/postgresql/data\"], got {type_name(raw)}")
        return ()
    volumes: list[VolumeSpec] = []
    for index, item in enumerate(raw):
        here = (*path, str(index))
        if not isinstance(item, str) or item.count(":") not in (1, 2):
            check.fail(here, f"expected \"source:/target[:ro]\", got {item!r}")
            continue
        source, target, *mode = item.split(":")
        if not target.startswith("/"):
            check.fail(here, f"the target must be an absolute path in the container, got {target!r}")
            continue
        if mode and mode[0] not in ("ro", "rw"):
            check.fail(here, f"mode must be ro or rw, got {mode[0]!r}")
            continue
        if source.startswith((".", "~")) or "/" in source:
            source = str((project_dir / home(source)).resolve())
        elif not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", source):
            check.fail(here, f"invalid volume name {source!r}")
            continue
        volumes.append(VolumeSpec(source, target, read_only=bool(mode) and mode[0] == "ro"))
    return tuple(volumes)


def _check_external(raw: Mapping[str, Any], path: tuple[str, ...], check: Checker) -> None:
    from orchestrator.probes.kinds import KINDS

    for key in sorted((raw.keys() & RESOURCE_KEYS) - EXTERNAL_KEYS):
        check.fail((*path, key), 'does not apply to runtime = "external" (vrooli never starts, stops or restarts it)')
    health = raw.get("health")
    if health is None:
        check.fail((*path, "health"), "an external resource needs a probe (host and port, or url): "
                                      "it is how vrooli knows it is there")
    elif isinstance(health, dict) and getattr(KINDS.get(str(health.get("probe"))), "reads_output", False):
        # address probes first, then the rest: "use tcp, http, postgres, redis or exec"
        usable = [k.name for k in KINDS.values() if k.probes_address] + \
            [k.name for k in KINDS.values() if not k.probes_address and not k.reads_output]
        check.fail((*path, "health", "probe"), "an external resource has no output to read; use "
                                               f"{', '.join(usable[:-1])} or {usable[-1]}")


def _parse_export(raw: object, path: tuple[str, ...], check: Checker) -> ExportSpec | None:
    if not isinstance(raw, dict):
        check.fail(path, f"expected a table, got {type_name(raw)}")
        return None
    check.unknown_keys(raw, EXPORT_KEYS, path, "[export]")
    healthcheck = check.command(raw, "healthcheck", path)
    if healthcheck is not None and (healthcheck[0] not in ("CMD", "CMD-SHELL", "NONE")
                                    or (healthcheck[0] != "NONE" and len(healthcheck) < 2)
                                    or (healthcheck[0] == "CMD-SHELL" and len(healthcheck) != 2)):
        check.fail((*path, "healthcheck"), 'expected ["CMD", "program", ...], ["CMD-SHELL", "a shell line"] '
                                           'or ["NONE"]')
        healthcheck = None
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        check.fail((*path, "env"), 'expected a table of NAME = "value"')
        env = {}
    return ExportSpec(image=check.string(raw, "image", path), command=check.command(raw, "command", path),
                      healthcheck=healthcheck, env=tuple(sorted(env.items())))


def _log_max_size(raw: Mapping[str, Any], path: tuple[str, ...], check: Checker) -> int:
    if "log_max_size" not in raw:
        return DEFAULT_LOG_MAX_SIZE
    try:
        size = parse_size(raw["log_max_size"])
    except (ValueError, OverflowError):
        size = 0
    if not LOG_SIZE_RANGE[0] <= size <= LOG_SIZE_RANGE[1]:
        check.fail((*path, "log_max_size"), f"expected a size from 1k to 1t like \"10m\", got {raw['log_max_size']!r}")
        return DEFAULT_LOG_MAX_SIZE
    return size


def _log_max_files(raw: Mapping[str, Any], path: tuple[str, ...], check: Checker) -> int:
    value = raw.get("log_max_files", DEFAULT_LOG_MAX_FILES)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= LOG_FILES_MAX:
        check.fail((*path, "log_max_files"), f"expected a whole number from 0 to {LOG_FILES_MAX}, got {value!r}")
        return DEFAULT_LOG_MAX_FILES
    return value


def _target_startup(raw: Mapping[str, Any], path: tuple[str, ...], check: Checker) -> float | None:
    """`vrooli report`'s startup target; above zero (every start takes some time)."""
    if "target_startup" not in raw:
        return None
    seconds = check.duration(raw, "target_startup", path, -1.0, minimum=0.001)
    return seconds if seconds > 0 else None


def _parse_memory(raw: Mapping[str, Any], runtime: str, path: tuple[str, ...], check: Checker
                  ) -> tuple[int | None, float]:
    """memory_limit (any runtime) and memory_grace (the process watchdog's patience)."""
    limit = optional_size(raw, "memory_limit", path, check)
    grace = check.duration(raw, "memory_grace", path, 10.0)
    if "memory_grace" in raw:
        if runtime != "process":
            check.fail((*path, "memory_grace"), 'only applies to runtime = "process" (the engine enforces a '
                                                "container's memory_limit)")
        elif "memory_limit" not in raw:
            check.fail((*path, "memory_grace"), "needs a memory_limit to be over")
    return limit, grace


def _read_env_file(env_file: object, project_dir: Path, variables: Mapping[str, str],
                   path: tuple[str, ...], check: Checker) -> dict[str, str]:
    if not isinstance(env_file, str):
        check.fail(path, f"expected a path, got {type_name(env_file)}")
        return {}
    env_path = (project_dir / env_file).resolve()
    try:
        return read_env_file(env_path, variables)
    except FileNotFoundError:
        check.fail(path, f"file not found: {env_path}")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        check.fail(path, f"{env_path}: {exc}")
    return {}


def _parse_env(raw_env: object, path: tuple[str, ...], check: Checker) -> dict[str, str]:
    if not isinstance(raw_env, dict):
        check.fail(path, f"expected a table of NAME = \"value\", got {type_name(raw_env)}")
        return {}
    env: dict[str, str] = {}
    for key, value in raw_env.items():
        if not key or "=" in key:
            # execve() splits NAME=VALUE at the first '=': such a name cannot be passed on
            check.fail((*path, key), "an environment variable's name must be non-empty and without '='")
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        if isinstance(value, int | float):
            value = show(value, limit=4400)
        if not isinstance(value, str):
            check.fail((*path, key), f"expected a string, got {type_name(value)}")
            continue
        env[key] = value
    return env


def _parse_cwd(raw: Mapping[str, Any], runtime: str, project_dir: Path, path: tuple[str, ...],
               check: Checker) -> str | None:
    cwd = check.string(raw, "cwd", path)
    if cwd is None:
        return None
    if runtime == "docker":  # the container's working_dir: a path inside the image
        if not cwd.startswith("/"):
            check.fail((*path, "cwd"), f"a container's working directory must be an absolute path, got {show(cwd)}")
        return cwd
    if not cwd:
        check.fail((*path, "cwd"), "must not be empty (leave it out for the project directory)")
        return None
    return str((project_dir / home(cwd)).resolve())


def _parse_user(raw: Mapping[str, Any], path: tuple[str, ...], check: Checker) -> str | None:
    user = check.string(raw, "user", path)
    if user is not None and (not user or not user.isprintable() or user != user.strip()):
        check.fail((*path, "user"), f"expected a user name, got {show(user)}")
        return None
    return user


def _parse_models(raw: Mapping[str, Any], path: tuple[str, ...], check: Checker) -> ModelsSpec | None:
    keys = {"models", "model_load", "keep_alive", "model_concurrency"}
    if not keys & raw.keys():
        return None
    names = raw.get("models", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        check.fail((*path, "models"), 'expected a list of model names, like ["llama3.1:8b"]')
        names = []
    load = raw.get("model_load", "background")
    loads = [m.value for m in ModelLoad]
    if load not in loads:
        check.fail((*path, "model_load"), f"must be one of {', '.join(loads)}, got {load!r}")
        load = "background"
    keep_alive = raw.get("keep_alive", "5m")
    if isinstance(keep_alive, int) and not isinstance(keep_alive, bool):
        keep_alive = f"{keep_alive}s"
    if not isinstance(keep_alive, str):
        check.fail((*path, "keep_alive"), f"expected a duration like \"5m\" or -1, got {keep_alive!r}")
        keep_alive = "5m"
    concurrency = whole(raw, "model_concurrency", path, check, 1)
    return ModelsSpec(tuple(names), ModelLoad(load), keep_alive, concurrency)
