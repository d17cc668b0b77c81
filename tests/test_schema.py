"""The JSON Schema of resources.toml: shipped, valid, complete, and agreeing with the loader.

An editor that checks a file against the schema must say what `vrooli validate` says on
every question a schema can answer; where only the loader can answer (cycles, port clashes,
unset variables...), the cases are listed by name with the reason.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from orchestrator import config
from orchestrator.config import schema
from orchestrator.config.project import PROJECT_KEYS
from orchestrator.config.resource import RESOURCE_KEYS
from orchestrator.errors import ConfigError
from orchestrator.probes.kinds import all_keys

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "tests" / "bad_configs"

VALIDATOR = Draft202012Validator(schema.schema())


def schema_accepts(table: Any) -> bool:
    return VALIDATOR.is_valid(table)


def loader_accepts(text: str, tmp_path: Path) -> bool:
    path = tmp_path / "resources.toml"
    path.write_text(text)
    try:
        config.load([path], environ={"HOME": str(tmp_path)})
    except ConfigError:
        return False
    return True


def test_the_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(schema.schema())
    assert schema.schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.e2e
def test_docs_copy_and_vrooli_schema_print_the_same_schema() -> None:
    shipped = (ROOT / "docs" / "resources.schema.json").read_text()
    assert shipped == schema.text(), "regenerate: vrooli schema > docs/resources.schema.json"
    printed = subprocess.run([sys.executable, "-c", "from orchestrator.entry import main; main()", "schema"],
                             capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert json.loads(printed) == schema.schema()


def test_the_shipped_files_pass_and_point_editors_at_the_schema() -> None:
    shipped = tomllib.loads((ROOT / "resources.toml").read_text())
    assert list(VALIDATOR.iter_errors(shipped)) == []
    merged = config.read_merged([ROOT / "resources.toml", ROOT / "resources.local.toml"])
    assert list(VALIDATOR.iter_errors(merged)) == []
    assert (ROOT / "resources.toml").read_text().startswith("#:schema ./docs/resources.schema.json\n")


def test_every_key_the_loader_reads_is_in_the_schema_and_no_other() -> None:
    top = schema.schema()
    resource = top["$defs"]["resource"]["properties"]
    assert set(resource) == set(RESOURCE_KEYS)
    assert set(top["properties"]["project"]["properties"]) == set(PROJECT_KEYS)
    assert set(resource["health"]["properties"]) == set(all_keys())
    assert set(resource["health"]["properties"]["probe"]["enum"]) == set(
        __import__("orchestrator.probes.kinds", fromlist=["KINDS"]).KINDS)


# ----------------------------------------------------------------------------- corpus

BASE = """
[project]
name = "corpus"
health_listen = "127.0.0.1:9599"

[resources.db]
command = ["postgres", "-D", "data"]
ports = [5433]
start_timeout = "30s"
stop_timeout = 5
restart = "on-failure"
env = { PGDATA = "data", DEBUG = true, WORKERS = 4 }
health = { probe = "postgres", user = "app", interval = "100ms" }
memory_limit = "512m"
memory_grace = "5s"
log_max_size = "10m"
log_max_files = 2

[resources.cache]
runtime = "docker"
image = "redis:7"
ports = ["127.0.0.1:6380:6379"]
volumes = ["cache-data:/data", "./conf:/etc/redis:ro"]
health = { probe = "exec", command = ["redis-cli", "ping"], inside = true }

[resources.app]
command = ["python3", "-m", "http.server", "8080"]
ports = [8080]
depends_on = { db = "healthy", cache = { condition = "started", restart = true } }
health = { probe = "http", url = "http://127.0.0.1:8080/", expect_status = [200, 204] }
models = ["llama3.1:8b"]
model_load = "lazy"
keep_alive = "5m"

[resources.upstream]
runtime = "external"
health = { probe = "tcp", host = "127.0.0.1", port = 9000 }
"""

# (where, wrong value): each replaces one value of BASE; None deletes the key.
MUTATIONS: list[tuple[tuple[str, ...], Any]] = [
    (("project", "name"), 5), (("project", "name"), "bad name!"), (("project", "health_listen"), "nohost"),
    (("project", "health_enabled"), "yes"), (("project", "memory_budget"), "lots"),
    (("project", "unknown"), 1), (("project",), []),
    (("resources",), {}), (("resources",), []), (("resources", "Bad Name"), {"command": ["x"]}),
    (("resources", "db", "command"), "postgres -D data"), (("resources", "db", "command"), []),
    (("resources", "db", "command"), [1]), (("resources", "db", "command"), None),
    (("resources", "db", "runtime"), "podman"), (("resources", "db", "image"), "postgres"),
    (("resources", "db", "volumes"), ["a:/b"]), (("resources", "db", "entrypoint"), ["x"]),
    (("resources", "db", "ports"), "5433"), (("resources", "db", "ports"), [0]),
    (("resources", "db", "ports"), [70000]),
    (("resources", "db", "ports"), [True]), (("resources", "db", "ports"), ["not a port"]),
    (("resources", "db", "start_timeout"), "soon"), (("resources", "db", "start_timeout"), True),
    (("resources", "db", "start_timeout"), -1), (("resources", "db", "start_timeout"), "1x"),
    (("resources", "db", "stop_timeout"), [5]), (("resources", "db", "restart"), "sometimes"),
    (("resources", "db", "restart_burst"), 0), (("resources", "db", "restart_burst"), "5"),
    (("resources", "db", "enabled"), "no"), (("resources", "db", "env"), ["A=1"]),
    (("resources", "db", "env", "A=B"), "x"), (("resources", "db", "env", "LIST"), [1]),
    (("resources", "db", "health"), "postgres"), (("resources", "db", "health", "probe"), "ping"),
    (("resources", "db", "health", "probe"), None), (("resources", "db", "health", "interval"), "fast"),
    (("resources", "db", "health", "failure_threshold"), 0), (("resources", "db", "health", "extra"), 1),
    (("resources", "db", "health", "inside"), True), (("resources", "db", "memory_limit"), "big"),
    (("resources", "db", "memory_limit"), 0), (("resources", "db", "memory_limit"), None),
    (("resources", "db", "log_max_files"), -1), (("resources", "db", "log_max_files"), 1001),
    (("resources", "db", "user"), 1), (("resources", "db", "description"), 1), (("resources", "db", "typo"), 1),
    (("resources", "db", "ports"), []),
    (("resources", "cache", "image"), None), (("resources", "cache", "volumes"), ["nocolon"]),
    (("resources", "cache", "volumes"), ["a:relative"]), (("resources", "cache", "volumes"), ["a:/b:rx"]),
    (("resources", "cache", "memory_grace"), "5s"), (("resources", "cache", "health", "command"), None),
    (("resources", "app", "depends_on"), "db"), (("resources", "app", "depends_on", "db"), "ready"),
    (("resources", "app", "depends_on", "cache", "restart"), "yes"),
    (("resources", "app", "depends_on", "cache", "extra"), 1),
    (("resources", "app", "health", "expect_status"), [99]), (("resources", "app", "health", "expect_status"), "200"),
    (("resources", "app", "models"), "llama"), (("resources", "app", "models"), [""]),
    (("resources", "app", "model_load"), "soon"), (("resources", "app", "keep_alive"), True),
    (("resources", "upstream", "command"), ["x"]), (("resources", "upstream", "ports"), [9000]),
    (("resources", "upstream", "health"), None), (("resources", "upstream", "restart"), "always"),
    (("top-level-typo",), 1),
    (("resources", "db", "target_startup"), "quick"), (("resources", "db", "target_memory"), "lots"),
    (("resources", "db", "target_memory"), 0), (("resources", "db", "profiles"), "ai"),
    (("resources", "db", "profiles"), ["-ai"]), (("resources", "db", "profiles"), [""]),
    (("resources", "db", "profiles"), [1]), (("resources", "app", "depends_on", "cache", "required"), "no"),
    (("resources", "db", "post_start"), "createdb app"), (("resources", "db", "pre_stop"), []),
    (("resources", "db", "hooks_inside"), False), (("resources", "upstream", "post_start"), ["x"]),
    (("resources", "cache", "hooks_inside"), "yes"),
    (("resources", "db", "start_timeout"), 0), (("resources", "db", "restart_window"), 0.001),
    (("resources", "db", "target_startup"), 0), (("resources", "db", "health", "interval"), 0),
    (("resources", "db", "health", "liveness_interval"), 0.005),
    (("project", "keep_warm"), "soon"), (("project", "keep_warm"), -1),
]

# Good variations a schema must not refuse.
GOOD_MUTATIONS: list[tuple[tuple[str, ...], Any]] = [
    (("resources", "db", "start_timeout"), "1m30s"), (("resources", "db", "start_timeout"), 2.5),
    (("resources", "db", "start_timeout"), "250ms"), (("resources", "db", "memory_limit"), "2GiB"),
    (("resources", "db", "memory_limit"), 1 << 30), (("resources", "db", "ports"), ["5433:5433/tcp"]),
    (("resources", "cache", "ports"), ["[::1]:6380:6379"]), (("resources", "db", "runtime"), "process"),
    (("resources", "app", "depends_on"), ["db", "cache"]), (("resources", "db", "restart"), "always"),
    (("resources", "app", "health", "expect_status"), 204), (("resources", "db", "health", "port"), 5433),
    (("resources", "db", "env", "EMPTY"), ""), (("resources", "app", "keep_alive"), -1),
    (("project", "memory_budget"), "4g"), (("project", "name"), "my.project-2"),
    (("resources", "db", "description"), "the main database"),
    (("resources", "db", "target_startup"), "5s"), (("resources", "db", "target_memory"), "512MiB"),
    (("resources", "db", "profiles"), ["ai", "gpu.2"]), (("resources", "upstream", "profiles"), ["ai"]),
    (("resources", "app", "depends_on", "cache", "required"), False),
    (("resources", "upstream", "target_startup"), 2),
    (("resources", "db", "post_start"), ["createdb", "app"]), (("resources", "db", "pre_stop"), ["true"]),
    (("resources", "cache", "hooks_inside"), True), (("resources", "cache", "post_start"), ["redis-cli", "ping"]),
    (("project", "keep_warm"), "0"), (("project", "keep_warm"), "10m"), (("project", "keep_warm"), 0),
]


def mutated(where: tuple[str, ...], value: Any) -> dict[str, Any]:
    table = copy.deepcopy(tomllib.loads(BASE))
    node = table
    for key in where[:-1]:
        node = node[key]
    if value is None:
        node.pop(where[-1], None)
    else:
        node[where[-1]] = value
    return table


def as_toml(table: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(table)


def test_the_corpus_base_is_good_for_both() -> None:
    assert schema_accepts(tomllib.loads(BASE))


@pytest.mark.parametrize(("where", "value"), MUTATIONS + GOOD_MUTATIONS,
                         ids=[f"{'.'.join(w)}={v!r}"[:60] for w, v in MUTATIONS + GOOD_MUTATIONS])
def test_schema_and_loader_agree(where: tuple[str, ...], value: Any, tmp_path: Path) -> None:
    table = mutated(where, value)
    by_loader = loader_accepts(as_toml(table), tmp_path)
    by_schema = schema_accepts(table)
    assert by_schema == by_loader, (
        f"schema says {'ok' if by_schema else 'bad'}, loader says {'ok' if by_loader else 'bad'}"
        + "".join(f"\n  schema: {e.message[:200]}" for e in VALIDATOR.iter_errors(table)))
    assert by_loader == ((where, value) in GOOD_MUTATIONS)


# What only the loader can see; every other file in tests/bad_configs the schema must refuse.
LOADER_ONLY = {
    "01-cycle.toml": "a cycle spans resources",
    "02-self-dependency.toml": "names refer to other tables",
    "03-unknown-dependency.toml": "names refer to other tables",
    "08-port-claimed-twice.toml": "a clash between two resources",
    "14-bad-signal.toml": "the host's signal names",
    "15-unset-variable.toml": "${VAR} is expanded after the schema's look",
    "16-log-probe-bad-regex.toml": "regex syntax",
    "22-toml-syntax.toml": "not TOML at all: nothing for a schema to see",
    "31-toml-unclosed.toml": "not TOML at all",
    "30-depends-on-disabled.toml": "enabled is another table's",
    "32-url-password-with-slash.toml": "URL syntax",
    "33-url-bad-port.toml": "URL syntax",
    "34-url-broken-ipv6.toml": "URL syntax",
    "35-url-with-space.toml": "URL syntax",
    "36-port-host-not-an-ip.toml": "IP address syntax",
    "38-deep-nesting.toml": "refused while reading",
    "39-huge-duration.toml": "a duration's range written as text",
    "41-resource-name-newline.toml": "TOML text the loader refuses before tables",
    "42-required-variable.toml": "${VAR:?} is expanded after the schema's look",
    "44-nul-in-argv.toml": "NUL bytes",
    "45-cwd-missing.toml": "this machine (validate's host checks)",
    "46-command-not-on-path.toml": "this machine (validate's host checks)",
    "47-unknown-user.toml": "this machine (validate's host checks)",
    "49-env-file-unterminated-quote.toml": "another file's contents",
    "memory-04-peak-below-budget.toml": "a comparison of two values",
    "required-02-unknown-dep.toml": "names refer to other tables",
    "required-03-cycle-through-optional.toml": "a cycle spans resources",
}


@pytest.mark.parametrize("path", sorted(BAD.glob("*.toml")), ids=lambda p: p.name)
def test_bad_configs_the_schema_can_judge_are_refused_by_it(path: Path) -> None:
    try:
        table = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, RecursionError):
        assert path.name in LOADER_ONLY
        return
    if path.name in LOADER_ONLY:
        return
    assert not schema_accepts(table), f"{path.name}: the loader refuses it, the schema lets it through"
