"""`vrooli config`: the configuration a start would use, as one self-contained file.

Like `docker compose config`: every -f file merged (later wins) and every ${VAR} expanded,
after the same validation a start does, so what is printed is what would run. Three things
make the output stand on its own, wherever it is saved and loaded from:

- the project's name is written out (by default it is the directory's name);
- paths a file may give relative to its directory (a process's cwd, bind-mount sources,
  state_dir) are made absolute, and a process without cwd gets the project directory;
- env_file's contents are folded into env (the file's values under the table's, as a
  start merges them), so the output does not depend on a file beside it.

Secrets are masked unless asked for: values of env keys and variables whose names look like
secrets, a probe's password, URL passwords — wherever such a value appears (a command's
argument, a URL, another env value), since interpolation copies secrets into any string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator import config
from orchestrator.infra.exposure import MASK, MIN_SECRET, SECRET_NAME, secrets_of
from orchestrator.spec import ProjectSpec, ResourceSpec


def effective(files: list[Path], environ: Mapping[str, str] | None = None, *,
              show_secrets: bool = False) -> dict[str, Any]:
    """The merged, expanded, validated configuration as a table; ConfigError if it is broken."""
    project = config.load(files, environ)
    merged, variables = config.expanded(files, environ)
    table: dict[str, Any] = {"project": dict(merged.get("project", {})), "resources": {}}
    table["project"]["name"] = project.name
    if "state_dir" in table["project"]:
        table["project"]["state_dir"] = str(project.state_dir)
    for name, raw in merged.get("resources", {}).items():
        table["resources"][name] = _standalone(dict(raw), project.resources[name], project)
    if show_secrets:
        return table
    secrets = _secrets(project, variables)
    pattern = re.compile("|".join(re.escape(s) for s in secrets)) if secrets else None
    masked: dict[str, Any] = {"project": table["project"],
                              "resources": _masked(table["resources"], pattern)}
    return masked


def render(table: Mapping[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(table, indent=2, ensure_ascii=False) + "\n"
    import tomli_w  # only here: no other command writes TOML

    return tomli_w.dumps(_ordered(table), multiline_strings=False)


def _standalone(raw: dict[str, Any], spec: ResourceSpec, project: ProjectSpec) -> dict[str, Any]:
    if spec.runtime == "process":
        raw["cwd"] = spec.cwd or str(project.project_dir)
    if "env_file" in raw:
        del raw["env_file"]
        raw["env"] = dict(spec.env)
    if "volumes" in raw:
        raw["volumes"] = [f"{v.source}:{v.target}{':ro' if v.read_only else ''}" for v in spec.volumes]
    return raw


def _secrets(project: ProjectSpec, variables: Mapping[str, str]) -> list[str]:
    found: set[str] = set()
    for spec in project.resources.values():
        found.update(secrets_of(spec))
    found.update(value for name, value in variables.items()
                 if name in project.environ_names and SECRET_NAME.search(name) and len(value) >= MIN_SECRET)
    return sorted(found, key=len, reverse=True)  # longest first: a secret holding another goes whole


ARGV_KEYS = {"command", "entrypoint", "post_start", "pre_stop"}


def _masked(value: Any, secrets: re.Pattern[str] | None, key: str = "") -> Any:
    """Mask by name (an env key or `password`), and copies of a secret's value inside argv
    lists, URLs and env values that embed it (`postgres://app:SECRET@db`, `--pass SECRET`).
    Not names, images, user names, or an env value that merely equals a secret under a
    plain name: with the shipped stack's defaults the password is also the user and the
    database's name, and masking those would hide what `config` is for."""
    if isinstance(value, dict):
        return {k: MASK if _secret_key(k, item) else _masked(item, secrets, k) for k, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, secrets, key) for item in value]
    if not isinstance(value, str) or secrets is None:
        return value
    if key in ARGV_KEYS or key == "url":
        return secrets.sub(MASK, value)
    if key.isupper() and not secrets.fullmatch(value):  # an env value embedding a secret (a URL, flags)
        return secrets.sub(MASK, value)
    return value


def _secret_key(key: str, value: Any) -> bool:
    """An env value or probe password is a secret by its name, however short it is."""
    return isinstance(value, str) and bool(value) and (key == "password" or bool(SECRET_NAME.search(key)))


def _ordered(table: Mapping[str, Any]) -> dict[str, Any]:
    """[project] first, then each resource with its plain keys before its sub-tables (health,
    env), so the TOML reads like a hand-written resources.toml."""
    resources = {name: dict(sorted(raw.items(), key=lambda item: isinstance(item[1], dict)))
                 for name, raw in table.get("resources", {}).items()}
    return {"project": table.get("project", {}), "resources": resources}
