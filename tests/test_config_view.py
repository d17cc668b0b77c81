"""`vrooli config`: the merged, expanded configuration, standing on its own, secrets masked."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from orchestrator import config
from orchestrator.spec import ProjectSpec
from tests.conftest import Project

SECRET = "s3cr3t-Passw0rd"

BASE = """
[project]
name = "cfgview"

[resources.db]
command = ["postgres", "-D", "data"]
cwd = "srv"
ports = [5433]
env_file = "db.env"
env = { PGUSER = "app", DB_PASSWORD = "${DB_PASSWORD}", DATABASE_URL = "postgres://app:${DB_PASSWORD}@127.0.0.1/app" }
health = { probe = "postgres", user = "app" }
start_timeout = "${START_TIMEOUT:-45s}"

[resources.cache]
runtime = "docker"
image = "redis:7"
command = ["redis-server", "--requirepass", "${DB_PASSWORD}"]
volumes = ["./conf:/etc/redis:ro", "cache-data:/data"]
ports = ["127.0.0.1:6390:6379"]
health = { probe = "redis", password = "short" }
"""

OVERRIDE = """
[resources.db]
start_timeout = "90s"
restart = "on-failure"

[resources.cache]
image = "redis:7-local"
"""


def write_project(root: Path) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    proj = Project(root)
    proj.write(BASE)
    proj.write(OVERRIDE, "override.toml")
    (root / "db.env").write_text("PGDATA=data\nLOG_LEVEL=debug\n")
    (root / ".env").write_text(f"DB_PASSWORD={SECRET}\n")
    (root / "srv").mkdir(exist_ok=True)
    return proj


def vrooli_config(proj: Project, *extra: str) -> subprocess.CompletedProcess[str]:
    return proj.run("config", "-f", "resources.toml", "-f", "override.toml", *extra)


def comparable(project: ProjectSpec) -> object:
    return dataclasses.replace(project, files=(), project_dir=Path("/"), environ_names=frozenset())


def test_config_prints_the_merge_expanded_and_loads_to_the_same_project_from_anywhere(tmp_path: Path) -> None:
    proj = write_project(tmp_path / "p")
    done = vrooli_config(proj, "--show-secrets")
    assert done.returncode == 0, done.stderr
    table = tomllib.loads(done.stdout)
    db = table["resources"]["db"]
    assert db["start_timeout"] == "90s" and db["restart"] == "on-failure"  # the override won
    assert table["resources"]["cache"]["image"] == "redis:7-local"
    assert db["env"]["DB_PASSWORD"] == SECRET  # .env expanded
    assert db["env"]["PGDATA"] == "data" and "env_file" not in db  # env_file folded in
    assert db["cwd"] == str((proj.dir / "srv").resolve())
    assert table["resources"]["cache"]["volumes"][0] == f"{(proj.dir / 'conf').resolve()}:/etc/redis:ro"

    # Saved elsewhere, with no .env, no env_file and no variables beside it, it is the same project.
    elsewhere = tmp_path / "elsewhere" / "resources.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(done.stdout)
    environ = {"HOME": str(tmp_path)}
    original = config.load([proj.dir / "resources.toml", proj.dir / "override.toml"],
                           {**environ, "DB_PASSWORD": SECRET})
    again = config.load([elsewhere], environ)
    assert comparable(again) == comparable(original)


def test_secrets_are_masked_wherever_they_were_copied_unless_asked(tmp_path: Path) -> None:
    proj = write_project(tmp_path / "p")
    done = vrooli_config(proj)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout
    table = tomllib.loads(done.stdout)
    db, cache = table["resources"]["db"], table["resources"]["cache"]
    assert db["env"]["DB_PASSWORD"] == "***"
    assert db["env"]["DATABASE_URL"] == "postgres://app:***@127.0.0.1/app"
    assert cache["command"] == ["redis-server", "--requirepass", "***"]
    assert cache["health"]["password"] == "***"  # masked by its name, however short
    assert db["env"]["PGUSER"] == "app" and db["health"]["user"] == "app"  # the rest is as it was
    assert "s3cr3t" not in vrooli_config(proj, "--json").stdout


def test_json_is_the_same_table(tmp_path: Path) -> None:
    proj = write_project(tmp_path / "p")
    as_toml = tomllib.loads(vrooli_config(proj).stdout)
    as_json = json.loads(vrooli_config(proj, "--json").stdout)
    assert as_json == as_toml
    assert list(as_json) == ["project", "resources"] and as_json["project"]["name"] == "cfgview"


def test_a_broken_file_is_one_line_per_problem_and_exit_2(tmp_path: Path) -> None:
    proj = write_project(tmp_path / "p")
    proj.write(OVERRIDE + '\n[resources.web]\ncommand = "not a list"\n', "override.toml")
    done = vrooli_config(proj)
    assert done.returncode == 2 and done.stdout == ""
    assert "override.toml: resources.web.command: expected a list of strings" in done.stderr
    assert "Traceback" not in done.stderr
    as_json = json.loads(vrooli_config(proj, "--json").stdout)
    assert as_json["ok"] is False and as_json["exit_code"] == 2


def test_the_shipped_stack_prints_and_reloads(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "orchestrator", "config", "-f", "resources.toml",
                           "-f", "resources.local.toml"], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    saved = tmp_path / "resources.toml"
    saved.write_text(done.stdout)
    names = list(config.load([saved], {"HOME": str(tmp_path)}).resources)
    assert names == ["postgres", "redis", "qdrant", "n8n", "ollama"]
