"""The last stage: checks across resources (dependencies, claimed ports) and, for
`vrooli validate`, what only this machine can answer (cwd, command on PATH, user)."""

from __future__ import annotations

import difflib
import itertools
import os
from collections.abc import Mapping
from pathlib import Path

from orchestrator.config.values import Checker, home, show
from orchestrator.config.variables import escaped_short
from orchestrator.plan import graph
from orchestrator.spec import ResourceSpec


def check_dependencies(resources: Mapping[str, ResourceSpec], check: Checker) -> None:
    for name, resource in resources.items():
        for dep in resource.depends_on:
            here = ("resources", name, "depends_on")
            if dep.name == name:
                check.fail(here, f"'{name}' depends on itself")
            elif dep.name not in resources:
                guess = difflib.get_close_matches(dep.name, list(resources), n=1, cutoff=0.6)
                hint = f" (did you mean '{guess[0]}'?)" if guess else ""
                check.fail(here, f"unknown resource '{dep.name}'{hint}")
            elif resource.enabled and dep.required and not resources[dep.name].enabled:
                check.fail(here, f"depends on '{dep.name}', which has enabled = false "
                                 "(or make it optional: required = false)")
    # Optional edges order a start as required ones do, so a cycle through them is one too.
    edges = {n: [d.name for d in r.depends_on if d.name in resources and d.name != n]
             for n, r in resources.items()}
    cycle = graph.find_cycle(edges)
    if cycle:
        optional = [f"{a} -> {b}" for a, b in itertools.pairwise(cycle)
                    if not next(d.required for d in resources[a].depends_on if d.name == b)]
        through = f" (optional: {', '.join(optional)}; an optional dependency is still waited for)" \
            if optional else ""
        check.fail(("resources", cycle[0], "depends_on"), "dependency cycle: " + " -> ".join(cycle) + through)


def check_port_conflicts(resources: Mapping[str, ResourceSpec], check: Checker) -> None:
    claimed: dict[tuple[int, str], str] = {}
    for name, resource in resources.items():
        if not resource.enabled:
            continue
        for port in resource.ports:
            key = (port.host_port, port.protocol)
            if key in claimed and claimed[key] != name:
                check.fail(("resources", name, "ports"),
                           f"host port {port.host_port} is already claimed by resource '{claimed[key]}'")
            claimed.setdefault(key, name)


def check_on_host(spec: ResourceSpec, project_dir: Path, environ: Mapping[str, str],
                   check: Checker) -> None:
    """What the process runtime would refuse at start, asked now (a container's command,
    cwd and user live in its image, so only processes are checked; and hooks run on the host)."""
    import pwd

    if spec.runtime == "docker" and spec.enabled and not spec.hooks_inside:
        for key, argv in (("post_start", spec.post_start), ("pre_stop", spec.pre_stop)):
            _check_program(spec, key, argv, project_dir, environ, check)
    if spec.runtime != "process" or not spec.enabled:
        return
    path = ("resources", spec.name)
    cwd = Path(spec.cwd) if spec.cwd else project_dir
    if spec.cwd is not None and not cwd.is_dir():
        check.fail((*path, "cwd"), f"{'is not a directory' if cwd.exists() else 'does not exist'}: {cwd}")
    for key, argv in (("command", spec.command), ("post_start", spec.post_start), ("pre_stop", spec.pre_stop)):
        _check_program(spec, key, argv, cwd, environ, check)
    if spec.user is not None:
        try:
            pwd.getpwnam(spec.user)
        except KeyError:
            check.fail((*path, "user"), f"no such user on this machine: {show(spec.user)}")


def _check_program(spec: ResourceSpec, key: str, argv: tuple[str, ...], cwd: Path, environ: Mapping[str, str],
                   check: Checker) -> None:
    """Is argv's program there, resolved as the process would resolve it (the PATH of its
    env, a relative path from its cwd)?"""
    import shutil

    if not argv:
        return
    program, here = argv[0], ("resources", spec.name, key)
    search = spec.env_dict.get("PATH", environ.get("PATH", os.defpath))
    if "/" in program:
        found = cwd / home(program)
        if not (found.is_file() and os.access(found, os.X_OK)):
            check.fail(here, f"not an executable file: {found}")
    elif shutil.which(program, path=search) is None:
        check.fail(here, f"{show(program)} is not found on PATH ({escaped_short(search)})")
