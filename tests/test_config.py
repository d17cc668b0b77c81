"""resources.toml loading: the corpus of bad files, the rules users rely on, and fuzzing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import config
from orchestrator.config.resource import RESOURCE_KEYS
from orchestrator.config.values import parse_duration
from orchestrator.errors import ConfigError
from orchestrator.spec import Condition, RestartPolicy

BAD = sorted((Path(__file__).parent / "bad_configs").glob("*.toml"))
ROOT = Path(__file__).resolve().parent.parent


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: ")
    return first[len("# expect: "):]


def write(tmp_path: Path, text: str, name: str = "resources.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.e2e
@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_gives_one_line_naming_file_and_key(path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "orchestrator", "validate", "-f", str(path)],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(path.name) in lines[0]
    assert expected(path) in lines[0]


def test_bad_corpus_is_large_enough() -> None:
    assert len(BAD) >= 20


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, """
[resources.a]
command = "x"
start_timeout = "soon"
[resources.b]
command = ["true"]
ports = [0]
""")
    with pytest.raises(ConfigError) as caught:
        config.load([path], {})
    text = "\n".join(caught.value.lines())
    assert "resources.a.command" in text
    assert "resources.a.start_timeout" in text
    assert "resources.b.ports.0" in text


@pytest.mark.parametrize(("raw", "seconds"), [
    (5, 5.0), (0.25, 0.25), ("250ms", 0.25), ("2s", 2.0), ("1m", 60.0), ("1.5s", 1.5), ("2", 2.0), ("1h", 3600.0),
])
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["fast", "-1s", True, [1], "1 d", float("nan")])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)


def test_variables_expand_from_environment_and_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PG_PORT=5433\nexport PG_USER='vrooli'\n")
    path = write(tmp_path, """
[resources.db]
command = ["postgres", "-p", "${PG_PORT}"]
ports = [5433]
env = { USER = "${PG_USER}", DB = "${PG_DB:-vrooli}", LITERAL = "$${NOT_EXPANDED}", FROM_ENV = "${FROM_ENV}" }
""")
    project = config.load([path], {"FROM_ENV": "yes", "PG_USER": "env-wins"})
    db = project.resources["db"]
    assert db.command == ("postgres", "-p", "5433")
    env = db.env_dict
    assert env["USER"] == "env-wins"  # the environment beats .env, as in compose
    assert env["DB"] == "vrooli"
    assert env["LITERAL"] == "${NOT_EXPANDED}"
    assert env["FROM_ENV"] == "yes"


def test_override_files_merge_later_wins(tmp_path: Path) -> None:
    base = write(tmp_path, """
[project]
name = "stack"
[resources.redis]
command = ["redis-server", "--port", "6380"]
ports = [6380]
env = { A = "1", B = "2" }
[resources.app]
command = ["app"]
depends_on = ["redis"]
""")
    override = write(tmp_path, """
[resources.redis]
env = { B = "override" }
restart = "always"
[resources.app]
depends_on = { redis = "started" }
""", "override.toml")
    project = config.load([base, override], {})
    redis = project.resources["redis"]
    assert redis.env_dict == {"A": "1", "B": "override"}
    assert redis.restart is RestartPolicy.ALWAYS
    assert redis.command == ("redis-server", "--port", "6380")
    assert project.resources["app"].depends_on[0].condition is Condition.STARTED


def test_error_in_override_names_the_override_file(tmp_path: Path) -> None:
    base = write(tmp_path, '[resources.redis]\ncommand = ["redis-server"]\n')
    override = write(tmp_path, '[resources.redis]\nstop_timeout = "forever"\n', "local.toml")
    with pytest.raises(ConfigError) as caught:
        config.load([base, override], {})
    assert caught.value.lines()[0].startswith(f"{override}: resources.redis.stop_timeout")


def test_defaults_and_port_forms(tmp_path: Path) -> None:
    path = write(tmp_path, """
[project]
name = "p"
[resources.pg]
runtime = "docker"
image = "postgres:16-alpine"
ports = ["127.0.0.1:5433:5432", "6000:6001/udp", 7000]
health = { probe = "postgres" }
""")
    project = config.load([path], {"HOME": "/home/u"})
    pg = project.resources["pg"]
    assert [(p.host_ip, p.host_port, p.container_port, p.protocol) for p in pg.ports] == [
        ("127.0.0.1", 5433, 5432, "tcp"), ("127.0.0.1", 6000, 6001, "udp"), ("127.0.0.1", 7000, 7000, "tcp")]
    assert pg.health is not None and pg.health.port == 5433  # probes hit the published host port
    assert project.state_dir == Path("/home/u/.local/state/vrooli/p")
    assert pg.stop_timeout == 10.0 and pg.start_timeout == 60.0


@pytest.mark.e2e
def test_shipped_resources_toml_validates_and_shows_waves() -> None:
    done = subprocess.run([sys.executable, "-m", "orchestrator", "graph", "--json", "-f",
                           str(ROOT / "resources.toml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import json
    plan = json.loads(done.stdout)
    assert plan["waves"][0] == ["postgres", "redis", "qdrant", "ollama"]
    assert plan["waves"][1] == ["n8n"]
    assert plan["resources"]["n8n"]["depends_on"] == {"postgres": "healthy", "redis": "healthy"}


# Fuzzing: whatever a user writes, the loader answers with specs or ConfigError, never a crash.
scalars = st.one_of(st.none(), st.booleans(), st.integers(-70000, 70000), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(["2s", "250ms", "healthy", "started", "tcp", "redis",
                                                           "docker", "process", "127.0.0.1:1:2", "a:/b"]))
keys = st.sampled_from(sorted(RESOURCE_KEYS | {"probe", "port", "url", "pattern", "bogus"}))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)), max_leaves=8)
resource = st.dictionaries(keys, values, max_size=6)
documents = st.fixed_dictionaries({"resources": st.dictionaries(
    st.sampled_from(["a", "b", "c", "Bad Name"]), resource, max_size=3)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents)
def test_loader_never_crashes(tmp_path: Path, doc: dict[str, object]) -> None:
    def clean(value: object) -> object:  # TOML has no null
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [clean(v) for v in value if v is not None]
        return value

    path = tmp_path / "fuzz.toml"
    table = clean(doc)
    assert isinstance(table, dict)
    path.write_text(tomli_w.dumps(table))
    try:
        config.load([path], {})
    except ConfigError as exc:
        assert exc.lines() and all(line.strip() and "\n" not in line for line in exc.lines())


def test_shipped_images_are_pinned() -> None:
    """`latest` changes under a user between two `up`s; every shipped image names a release."""
    project = config.load([ROOT / "resources.toml"], {})
    images = [r.image for r in project.resources.values() if r.runtime == "docker"]
    assert len(images) == 4
    for image in images:
        assert image is not None
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag and tag not in ("", "latest"), image
