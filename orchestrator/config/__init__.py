"""resources.toml → ProjectSpec, as a pipeline of stages, one module each in this folder:

    read (read.py) → merge override files (read.py) → expand ${VAR} (here)
    → validate each table ([project]: project.py; [resources.NAME]: resource.py, its
    health table: health.py) → cross-checks (checks.py).

Validation collects every problem instead of stopping at the first, and each problem is one
line naming the file, the resource and the key, so a user fixes a broken file in one pass.
The words every stage shares (durations, sizes, ports, the Checker) are in values.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.config.checks import check_dependencies, check_on_host, check_port_conflicts
from orchestrator.config.project import parse_project
from orchestrator.config.read import Origins, dotenv, merge, read_all, read_toml
from orchestrator.config.resource import parse_resource
from orchestrator.config.values import Checker, dotted, home, type_name
from orchestrator.config.variables import interpolate
from orchestrator.errors import ConfigError, InterpolationError
from orchestrator.infra import paths
from orchestrator.spec import ProjectSpec, ResourceSpec

DEFAULT_FILE = paths.DEFAULT_FILE


def expand(value: Any, variables: Mapping[str, str], problems: list[str],
           where: Callable[[tuple[str, ...]], str], path: tuple[str, ...] = ()) -> Any:
    """Interpolate every string (see `interpolate`); each failure is one problem line."""
    if isinstance(value, str):
        try:
            return interpolate(value, variables)
        except InterpolationError as exc:
            problems.append(f"{where(path)}: {exc}")
            return ""
    if isinstance(value, dict):
        return {k: expand(v, variables, problems, where, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, variables, problems, where, (*path, str(i))) for i, v in enumerate(value)]
    return value


def find_files(explicit: list[str] | None, cwd: Path | None = None) -> list[Path]:
    """The files to load: those given with -f, or ./resources.toml; or, with neither, the
    files of the one system daemon running. Files a system daemon serves are linked to it
    (daemons.py): the project's state dir and control socket are then the daemon's."""
    from orchestrator.infra import daemons

    if explicit:
        return daemons.discover([home(f).absolute() for f in explicit], defaulted=False)
    return daemons.discover([((cwd or Path.cwd()) / DEFAULT_FILE).absolute()], defaulted=True)


def load(files: list[Path], environ: Mapping[str, str] | None = None, *,
         host_checks: bool = False) -> ProjectSpec:
    """Read, merge, expand and validate; raise ConfigError listing every problem.

    `host_checks` adds what only this machine can answer and a start would trip over
    (cwd, command on PATH, user): `vrooli validate` asks for them. Commands that must work
    while a file is merely stale on this machine (`down`, `status`) do not.
    """
    # Both record every name looked up (the files' ${VAR}s, .env's, the default state
    # dir's HOME...): exactly what a client must send a supervisor to load the same config.
    environ = _Recording(os.environ if environ is None else environ)
    merged, variables, check = _read_expanded(files, environ)
    project_dir = files[0].parent
    check.unknown_keys(merged, {"project", "resources"}, (), "the file")
    settings = parse_project(merged.get("project", {}), project_dir, environ, check)  # validate each table
    resources = _parse_resources(merged.get("resources", {}), project_dir, variables, check)
    check_dependencies(resources, check)  # cross-checks
    check_port_conflicts(resources, check)
    if host_checks:
        for spec in resources.values():
            check_on_host(spec, project_dir, environ, check)
    if check.problems:
        raise ConfigError(_dedupe(check.problems))
    link = paths.daemon_link(files[0])  # a system daemon's project: its state dir, not ours
    return ProjectSpec(
        name=settings.name, state_dir=link.state_dir if link is not None else settings.state_dir,
        project_dir=project_dir,
        files=tuple(files), resources=resources,
        health_listen=settings.health_listen, health_enabled=settings.health_enabled,
        environ_names=frozenset(environ.looked_up | variables.looked_up),
        memory_budget=settings.memory_budget, memory_budget_peak=settings.memory_budget_peak,
        keep_warm=settings.keep_warm,
    )


def expanded(files: list[Path], environ: Mapping[str, str] | None = None
             ) -> tuple[dict[str, Any], dict[str, str]]:
    """The files merged and every ${VAR} expanded, as `load` sees them before validating,
    and the variables they were expanded with (`vrooli config` prints the one and masks
    the secret-looking values of the other). Call `load` first: this reports nothing."""
    merged, variables, _ = _read_expanded(files, _Recording(os.environ if environ is None else environ))
    return merged, dict(variables)


def _read_expanded(files: list[Path], environ: _Recording) -> tuple[dict[str, Any], _Recording, Checker]:
    if not files:
        raise ConfigError(["no resources.toml given"])
    merged, origins = read_all(files)  # read, then merge the overrides
    variables = _Recording({**dotenv(files[0].parent, environ), **environ})  # the environment wins, as in compose
    check = Checker(_locator(files, origins))
    merged = _without_nul(expand(merged, variables, check.problems, check.where), check)  # expand
    return merged, variables, check


def _locator(files: list[Path], origins: Origins) -> Callable[[tuple[str, ...]], str]:
    """Where a key path was set, as an error line starts: "FILE: resources.db.port"."""
    def where(path: tuple[str, ...]) -> str:
        for cut in range(len(path), 0, -1):
            if path[:cut] in origins:
                return f"{origins[path[:cut]]}: {dotted(path)}"
        return f"{files[0]}: {dotted(path)}" if path else str(files[0])

    return where


def _parse_resources(raw: object, project_dir: Path, variables: Mapping[str, str],
                     check: Checker) -> dict[str, ResourceSpec]:
    if not isinstance(raw, dict):
        check.fail(("resources",), f"expected tables [resources.NAME], got {type_name(raw)}")
        raw = {}
    if not raw and not check.problems:
        check.fail(("resources",), "no resources declared; add a [resources.NAME] table")
    resources: dict[str, ResourceSpec] = {}
    for name, table in raw.items():
        spec = parse_resource(name, table, project_dir, variables, check)
        if spec is not None:
            resources[name] = spec
    return resources


def read_merged(files: list[Path]) -> dict[str, Any]:
    """The files merged as written, before ${VAR} expansion: `vrooli export` writes the
    references out, never the values they stand for."""
    merged: dict[str, Any] = {}
    for path in files:
        merge(merged, read_toml(path), str(path), {})
    return merged


def referenced_environ(project: ProjectSpec, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The part of the environment the project's files depend on: what a client sends the
    supervisor so it loads the same config, and nothing else (no unrelated secrets)."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in sorted(project.environ_names) if k in environ}


class _Recording(dict[str, str]):
    """A dict that remembers which names were asked for, found or not. Copying it into
    another dict ({**it}, update) asks for nothing: only real lookups count."""

    def __init__(self, initial: Mapping[str, str] | None = None) -> None:
        super().__init__(initial or {})
        self.looked_up: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.looked_up.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.looked_up.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.looked_up.add(key)
        return super().__contains__(key)


def _dedupe(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def _without_nul(value: Any, check: Checker, path: tuple[str, ...] = ()) -> Any:
    """Report every string holding a NUL byte (no argv, env or path can carry one), and drop
    the byte so that the checks after this one still run on something a path can hold."""
    if isinstance(value, str):
        if "\x00" in value:
            check.fail(path, "contains a NUL byte (\\u0000)")
            return value.replace("\x00", "")
        return value
    if isinstance(value, dict):
        for key in value:
            if "\x00" in key:
                check.fail((*path, key), "a key containing a NUL byte (\\u0000)")
        return {k.replace("\x00", ""): _without_nul(v, check, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v, check, (*path, str(i))) for i, v in enumerate(value)]
    return value
