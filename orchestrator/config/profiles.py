"""Which profiles a command activates: `--profile NAME` (repeatable) and `VROOLI_PROFILES=a,b`.

Resolved by the client (the supervisor is sent the list in its `up` request and never reads
the variable), so every way of running `up` activates the same profiles. The thin client,
which does not read the files, sends what it was given; the supervisor resolves it here
for it (control_api.from_thin_client), with the same checks and messages.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence

from orchestrator.errors import UsageError
from orchestrator.spec import ProjectSpec

ENV = "VROOLI_PROFILES"


def active_profiles(project: ProjectSpec, named: Sequence[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """The profiles named on the command line, then those of VROOLI_PROFILES, once each.

    A profile named on the command line that no resource declares is a typo: an error
    (exit 2). The variable's names are not checked: it may be set for many projects at once.
    """
    check_named(project, named)
    environ = os.environ if environ is None else environ
    from_env = [p.strip() for p in environ.get(ENV, "").split(",") if p.strip()]
    return list(dict.fromkeys([*named, *from_env]))


def check_named(project: ProjectSpec, named: Sequence[str]) -> None:
    declared = project.declared_profiles
    for name in named:
        if name in declared:
            continue
        guess = [d for d in declared if d.lower() == name.lower()] or \
            difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        known = f"declared: {', '.join(declared)}" if declared else "no resource declares profiles"
        raise UsageError(f"unknown profile {name!r} ({hint}{known})")


def nothing_to_start(project: ProjectSpec, names: Sequence[str], active: Sequence[str]) -> str | None:
    """The warning for a plain `up` that would start nothing (every resource disabled or in
    an inactive profile), or None."""
    from orchestrator.plan.scheduler import select

    if names or not project.declared_profiles or select(project.resources, None, False, active).selected:
        return None
    return (f"nothing to start: every resource is disabled or in an inactive profile "
            f"({', '.join(project.declared_profiles)}); use --profile or name one")
