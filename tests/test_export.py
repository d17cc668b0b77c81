"""`vrooli export compose|kubernetes`: what the files say, and that real engines take them.

Structure is checked on the parsed YAML; acceptance by the real tools: docker-compose 1.29
and `docker stack config` (schema), docker-compose bringing the shipped stack up healthy,
a single-node Swarm (opt-in, see test_swarm...), and `kubernetes-validate --strict`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.errors import ConfigError, InterpolationError
from tests.conftest import ROOT, Project, free_port, wait_for

SECRET = "s3cret-from-the-environment-4711"


def export(p: Project, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return p.run("export", *args, timeout=timeout)


def compose_of(p: Project, *args: str) -> dict[str, Any]:
    done = export(p, "compose", *args)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = yaml.safe_load(done.stdout)
    return doc


def manifests(p: Project, *args: str) -> list[dict[str, Any]]:
    done = export(p, "kubernetes", *args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def container(doc: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
    return first


def shipped(p: Project, **ports: int) -> list[str]:
    """The shipped stack on the local images, on free ports, Ollama's stand-in as an image."""
    (p.dir / "resources.toml").write_text((ROOT / "resources.toml").read_text())
    (p.dir / "resources.local.toml").write_text((ROOT / "resources.local.toml").read_text())
    port = {k: ports.get(k) or free_port() for k in ("postgres", "redis", "qdrant", "n8n", "ollama")}
    p.write(f"""
        [project]
        name = "x{uuid.uuid4().hex[:8]}"
        state_dir = ".state"
        [resources.postgres]
        ports = ["127.0.0.1:{port['postgres']}:5432"]
        memory_limit = "256m"
        [resources.redis]
        ports = ["127.0.0.1:{port['redis']}:6379"]
        [resources.qdrant]
        ports = ["127.0.0.1:{port['qdrant']}:6333"]
        [resources.n8n]
        ports = ["127.0.0.1:{port['n8n']}:5678"]
        [resources.ollama]
        ports = [{port['ollama']}]
        health = {{ probe = "http", url = "http://127.0.0.1:{port['ollama']}/api/version" }}
        [resources.ollama.export]
        image = "vrooli-test/standin:1"
        command = ["/standins/ollama.py"]
        env = {{ OLLAMA_HOST = "0.0.0.0:{port['ollama']}" }}
        """, "export.toml")
    return ["-f", "resources.toml", "-f", "resources.local.toml", "-f", "export.toml"]


# A project exercising every probe kind, condition, volume kind, limit and secret.
KITCHEN = """
[project]
name = "kitchen"
state_dir = ".state"

[resources.db]
runtime = "docker"
image = "postgres:16-alpine"
ports = ["127.0.0.1:15433:5432"]
env = { POSTGRES_PASSWORD = "${DB_PASSWORD}", POSTGRES_USER = "${DB_USER:-app}", PGDATA = "/data/pg" }
volumes = ["pgdata:/data", "./init:/docker-entrypoint-initdb.d:ro"]
memory_limit = "512m"
user = "999:999"
stop_signal = "SIGINT"
stop_timeout = "30s"
start_timeout = "90s"
restart = "on-failure"
[resources.db.health]
probe = "postgres"
user = "${DB_USER:-app}"
database = "app"
liveness_interval = "15s"
failure_threshold = 4

[resources.cache]
runtime = "docker"
image = "redis:7-alpine"
command = ["redis-server", "--requirepass", "${REDIS_PASSWORD:-devpass}"]
ports = ["127.0.0.1:16380:6379"]
restart = "always"
health = { probe = "redis", password = "${REDIS_PASSWORD:-devpass}" }

[resources.migrate]
runtime = "docker"
image = "app/migrate:1"
command = ["migrate", "up"]
depends_on = { db = "healthy" }
restart = "on-failure"
restart_burst = 3

[resources.api]
runtime = "docker"
image = "${REGISTRY:-registry.example}/api:2"
entrypoint = ["/bin/api"]
command = ["--token", "${API_TOKEN}", "--db", "postgres://db:5432/app"]
cwd = "/srv"
user = "www-data"
ports = ["127.0.0.1:18080:8080"]
env = { LOG_LEVEL = "debug", SIGNING_KEY = "written-in-the-file" }
env_file = "api.env"
depends_on = { db = "healthy", cache = "started", migrate = "completed", billing = "healthy" }
health = { probe = "http", url = "http://127.0.0.1:18080/healthz", expect_status = [200, 204] }

[resources.admin]
runtime = "docker"
image = "app/admin:1"
ports = ["127.0.0.1:18081:8081"]
depends_on = ["api"]
health = { probe = "http", url = "https://localhost:18081/status", expect_status = 401 }

[resources.worker]
runtime = "docker"
image = "app/worker:1"
ports = ["127.0.0.1:19000:9000"]
health = { probe = "tcp", port = 19000, timeout = "3s" }

[resources.cron]
runtime = "docker"
image = "app/cron:1"
health = { probe = "exec", command = ["cron-check", "--quick"], inside = true }

[resources.logger]
runtime = "docker"
image = "app/logger:1"
health = { probe = "log", pattern = "listening" }

[resources.custom]
runtime = "docker"
image = "app/custom:1"
health = { probe = "log", pattern = "up" }
export = { healthcheck = ["CMD-SHELL", "test -f /tmp/ready"] }

[resources.quiet]
runtime = "docker"
image = "app/quiet:1"
health = { probe = "tcp", port = 1234 }
export = { healthcheck = ["NONE"] }

[resources.llm]
command = ["ollama", "serve"]
ports = [11434]
health = { probe = "http", url = "http://127.0.0.1:11434/api/version" }
restart = "on-failure"
models = ["llama3.1:8b", "nomic-embed-text"]
export = { image = "ollama/ollama:0.5", command = ["serve"], env = { OLLAMA_HOST = "0.0.0.0:11434" } }

[resources.billing]
runtime = "external"
health = { probe = "http", url = "https://billing.example.com:8443/health" }

[resources.legacy]
runtime = "external"
health = { probe = "tcp", host = "10.20.30.40", port = 5432 }

[resources.off]
runtime = "docker"
image = "app/off:1"
enabled = false
"""


@pytest.fixture
def kitchen(project: Project) -> Project:
    project.write(KITCHEN)
    (project.dir / "init").mkdir()
    (project.dir / "api.env").write_text("FEATURE_FLAGS=a,b\nSTRIPE_SECRET=sk_live_from_env_file\n")
    return project


# ------------------------------------------------------------------------ compose


def test_compose_keeps_references_and_never_writes_a_value_from_the_environment(
        kitchen: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PASSWORD", SECRET)
    monkeypatch.setenv("REDIS_PASSWORD", SECRET + "-redis")
    monkeypatch.setenv("API_TOKEN", SECRET + "-token")
    done = export(kitchen, "compose")
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout
    assert "sk_live_from_env_file" not in done.stdout  # an env file is referenced, never copied
    services = yaml.safe_load(done.stdout)["services"]
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == "${DB_PASSWORD}"
    assert services["db"]["environment"]["POSTGRES_USER"] == "${DB_USER:-app}"
    assert services["cache"]["command"] == ["redis-server", "--requirepass", "${REDIS_PASSWORD:-devpass}"]
    assert services["api"]["command"][1] == "${API_TOKEN}"
    assert services["api"]["image"] == "${REGISTRY:-registry.example}/api:2"
    assert services["api"]["env_file"] == [str(kitchen.dir / "api.env")]
    assert "STRIPE_SECRET" not in services["api"].get("environment", {})
    # A variable nobody set here is no error: the deployer supplies it.
    monkeypatch.delenv("DB_PASSWORD")
    monkeypatch.delenv("API_TOKEN")
    assert export(kitchen, "compose").returncode == 0


def test_compose_translates_every_probe_kind(kitchen: Project) -> None:
    done = export(kitchen, "compose")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    db = services["db"]["healthcheck"]
    assert db["test"] == ["CMD", "pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432", "-t", "2",
                          "-U", "${DB_USER:-app}", "-d", "app"]  # the container's port, not the host's
    assert (db["interval"], db["retries"], db["start_period"]) == ("15s", 4, "90s")
    cache = services["cache"]["healthcheck"]["test"]
    assert cache[0] == "CMD-SHELL" and "redis-cli -h 127.0.0.1 -p 6379" in cache[1]
    assert "-a '${REDIS_PASSWORD:-devpass}'" in cache[1] and '= PONG ]' in cache[1]
    assert "$$(redis-cli" in cache[1]  # the shell's own $ is escaped from compose interpolation
    api = services["api"]["healthcheck"]["test"][1]
    assert "http://127.0.0.1:8080/healthz" in api and "200|204)" in api and "wget" not in api
    admin = services["admin"]["healthcheck"]["test"][1]
    assert "https://127.0.0.1:8081/status" in admin and "401)" in admin
    worker = services["worker"]["healthcheck"]
    assert "nc -z -w 3 127.0.0.1 9000" in worker["test"][1] and worker["timeout"] == "5s"
    assert services["cron"]["healthcheck"]["test"] == ["CMD", "cron-check", "--quick"]
    assert "healthcheck" not in services["logger"]
    assert "resources.logger.health: no healthcheck: a log probe" in done.stderr
    assert services["custom"]["healthcheck"]["test"] == ["CMD-SHELL", "test -f /tmp/ready"]
    assert services["quiet"]["healthcheck"] == {"disable": True}
    assert services["llm"]["image"] == "ollama/ollama:0.5" and services["llm"]["command"] == ["serve"]
    assert services["llm"]["environment"]["OLLAMA_HOST"] == "0.0.0.0:11434"
    assert "off" not in services


def test_compose_depends_on_is_the_list_form_with_what_was_lost_said(kitchen: Project) -> None:
    done = export(kitchen, "compose")
    services = yaml.safe_load(done.stdout)["services"]
    assert services["api"]["depends_on"] == ["db", "cache", "migrate"]  # billing is external
    text = done.stdout
    assert "# vrooli waits for db healthy, migrate completed; the 3.8 list form only orders" in text
    assert "waits for external billing (billing.example.com:8443)" in text
    assert "billing is external" in text and "billing" not in services
    with_conditions = compose_of(kitchen, "--conditions")["services"]
    assert with_conditions["api"]["depends_on"] == {
        "db": {"condition": "service_healthy"}, "cache": {"condition": "service_started"},
        "migrate": {"condition": "service_completed_successfully"}}
    # `healthy` on a dependency with no healthcheck cannot be waited for: it says so.
    kitchen.write('[resources.cron]\ndepends_on = ["logger"]\n', "dep.toml")
    done = export(kitchen, "compose", "-f", "resources.toml", "-f", "dep.toml", "--conditions")
    assert yaml.safe_load(done.stdout)["services"]["cron"]["depends_on"] == {"logger": {"condition": "service_started"}}
    assert "resources.cron.depends_on: 'logger' has no healthcheck to wait for" in done.stderr


def test_compose_limits_restart_stop_ports_volumes(kitchen: Project) -> None:
    out = kitchen.dir / "deploy" / "compose.yml"
    out.parent.mkdir()
    assert export(kitchen, "compose", "-o", str(out)).returncode == 0
    doc = yaml.safe_load(out.read_text())
    db = doc["services"]["db"]
    assert db["deploy"]["resources"]["limits"]["memory"] == "512m"
    assert "mem_limit" not in out.read_text().replace("no mem_limit", "")  # stack deploy forbids it
    assert (db["stop_signal"], db["stop_grace_period"], db["restart"]) == ("SIGINT", "30s", "on-failure")
    assert db["deploy"]["restart_policy"] == {"condition": "on-failure", "delay": "500ms", "max_attempts": 5,
                                              "window": "60s"}
    assert doc["services"]["cache"]["deploy"]["restart_policy"]["condition"] == "any"
    assert db["ports"] == ["127.0.0.1:15433:5432"]
    assert db["volumes"] == ["pgdata:/data", "../init:/docker-entrypoint-initdb.d:ro"]  # relative to the file
    assert doc["volumes"] == {"pgdata": {}}
    assert db["user"] == "999:999" and doc["services"]["api"]["working_dir"] == "/srv"
    assert doc["services"]["api"]["entrypoint"] == ["/bin/api"]
    assert doc["version"] == "3.8"


HOST_MODE_PORTS = """
[resources.a]
runtime = "docker"
image = "app/a:1"
ports = ["${HOST_IP:-127.0.0.1}:${HOST_PORT:-18080}:8080", "[::1]:5433:5432/udp", "${ONE:-5434}",
         "5435:${TARGET:-5436}/udp", "0.0.0.0:7000:7001", 7002]
"""


def host_mode(target: int | str, published: int | str, protocol: str = "tcp") -> dict[str, Any]:
    return {"target": target, "published": published, "protocol": protocol, "mode": "host"}


def test_compose_dnsrr_has_no_virtual_ips_and_publishes_host_mode_ports(kitchen: Project) -> None:
    vip = export(kitchen, "compose")
    done = export(kitchen, "compose", "--endpoint-mode", "dnsrr")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert all(s["deploy"]["endpoint_mode"] == "dnsrr" for s in services.values())
    assert services["db"]["ports"] == [host_mode(5432, 15433)]
    assert services["llm"]["ports"] == [host_mode(11434, 11434)]
    assert services["worker"]["ports"] == [host_mode(9000, 19000)]
    assert all(p["mode"] == "host" for s in services.values() for p in s.get("ports", []))
    # Swarm's ingress would honour no host IP either, but docker-compose did: said on both channels.
    assert "# Host-mode ports are the long syntax, which has no host IP in format 3.8" in done.stdout
    assert "resources.db.ports: published on every interface: a host-mode port (--endpoint-mode dnsrr) " \
           "cannot keep the host IP 127.0.0.1" in done.stderr
    # Nothing else changes, and the default is today's output: no endpoint mode, short ports.
    default = yaml.safe_load(vip.stdout)["services"]
    assert "endpoint_mode" not in default["db"]["deploy"] and default["db"]["ports"] == ["127.0.0.1:15433:5432"]
    assert export(kitchen, "compose", "--endpoint-mode", "vip").stdout == vip.stdout
    for name, service in services.items():
        del service["deploy"]["endpoint_mode"]
        service.pop("ports", None)
        default[name].pop("ports", None)
    assert services == default


def test_compose_dnsrr_splits_ports_as_written_and_never_writes_a_value_from_here(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST_IP", "127.0.0.99")
    monkeypatch.setenv("HOST_PORT", "17777")
    monkeypatch.setenv("TARGET", "17778")
    monkeypatch.delenv("ONE", raising=False)
    project.write(HOST_MODE_PORTS)
    done = export(project, "compose", "--endpoint-mode", "dnsrr")
    assert done.returncode == 0, done.stderr
    assert services_ports(done) == [
        host_mode(8080, "${HOST_PORT:-18080}"), host_mode(5432, 5433, "udp"), host_mode("${ONE:-5434}", "${ONE:-5434}"),
        host_mode("${TARGET:-5436}", 5435, "udp"), host_mode(7001, 7000), host_mode(7002, 7002)]
    for value in ("127.0.0.99", "17777", "17778"):
        assert value not in done.stdout and value not in done.stderr
    assert "cannot keep the host IP ${HOST_IP:-127.0.0.1}" in done.stderr
    assert "cannot keep the host IP ::1" in done.stderr


def services_ports(done: subprocess.CompletedProcess[str]) -> list[Any]:
    ports: list[Any] = yaml.safe_load(done.stdout)["services"]["a"]["ports"]
    return ports


@pytest.mark.parametrize("port", ["${PP:-7003:7004}", "${PP:-127.0.0.1:7003:7003}", "${PP}"])
def test_compose_dnsrr_refuses_a_port_whose_one_variable_holds_host_and_container(
        project: Project, monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    monkeypatch.setenv("PP", "7003:7004")
    project.write(f'[resources.a]\nruntime = "docker"\nimage = "x"\nports = ["{port}"]\n')
    out = project.dir / "out.yml"
    done = export(project, "compose", "--endpoint-mode", "dnsrr", "-o", str(out))
    assert done.returncode == 2 and not out.exists()
    line = one_line(done)
    assert line.startswith(f"vrooli: resources.a.ports.0: {port}: --endpoint-mode dnsrr writes a host-mode port")
    assert "7004" not in done.stderr.replace(port, "")  # the value here is never shown
    monkeypatch.setenv("PP", "7003")
    assert export(project, "compose", "--endpoint-mode", "dnsrr").returncode == (2 if ":" in port[2:-1] else 0)


@pytest.mark.parametrize("mode", ["", "VIP", "dnsrr ", "host", "ingress", "dnsrr,vip", "dns\nrr"])
def test_unknown_endpoint_mode_is_one_line_and_writes_nothing(kitchen: Project, mode: str) -> None:
    out = kitchen.dir / "out.yml"
    done = export(kitchen, "compose", "--endpoint-mode", mode, "-o", str(out))
    assert done.returncode == 2 and not out.exists()
    assert one_line(done).startswith("vrooli: unknown --endpoint-mode '") and "(known: vip, dnsrr)" in done.stderr


def test_endpoint_mode_is_for_compose_only(kitchen: Project) -> None:
    done = export(kitchen, "kubernetes", "--endpoint-mode", "dnsrr")
    assert one_line(done) == "vrooli: --endpoint-mode is for compose only (Swarm), not kubernetes"


@pytest.mark.docker
def test_compose_file_passes_docker_compose_and_stack_deploy_schemas(kitchen: Project) -> None:
    if not shutil.which("docker-compose") or not shutil.which("docker"):
        pytest.skip("needs docker-compose and the docker CLI")
    out = kitchen.dir / "compose.yml"
    assert export(kitchen, "compose", "-o", str(out)).returncode == 0
    env = {**os.environ, "DB_PASSWORD": "x", "API_TOKEN": "y"}
    checked = subprocess.run(["docker-compose", "-f", str(out), "config", "-q"], capture_output=True, text=True,
                             env=env, timeout=60)
    assert checked.returncode == 0, checked.stderr
    stack = subprocess.run(["docker", "stack", "config", "-c", str(out)], capture_output=True, text=True,
                           env=env, timeout=60)
    assert stack.returncode == 0, stack.stderr
    assert export(kitchen, "compose", "--conditions", "-o", str(out)).returncode == 0
    checked = subprocess.run(["docker-compose", "-f", str(out), "config", "-q"], capture_output=True, text=True,
                             env=env, timeout=60)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.docker
def test_dnsrr_compose_file_passes_docker_compose_and_stack_deploy_schemas(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    if not shutil.which("docker-compose") or not shutil.which("docker"):
        pytest.skip("needs docker-compose and the docker CLI")
    for name in ("HOST_IP", "HOST_PORT", "ONE", "TARGET"):
        monkeypatch.delenv(name, raising=False)
    project.write(HOST_MODE_PORTS)
    out = project.dir / "compose.yml"
    assert export(project, "compose", "--endpoint-mode", "dnsrr", "-o", str(out)).returncode == 0
    for env in ({}, {"HOST_PORT": "17777", "ONE": "17779", "TARGET": "17778"}):
        environ = {**os.environ, **env}
        checked = subprocess.run(["docker-compose", "-f", str(out), "config"], capture_output=True, text=True,
                                 env=environ, timeout=60)
        assert checked.returncode == 0, checked.stderr
        ports = yaml.safe_load(checked.stdout)["services"]["a"]["ports"]
        assert ports[0] == host_mode(8080, int(env.get("HOST_PORT", "18080")))
        stack = subprocess.run(["docker", "stack", "config", "-c", str(out)], capture_output=True, text=True,
                               env=environ, timeout=60)
        assert stack.returncode == 0, stack.stderr
        read = yaml.safe_load(stack.stdout)["services"]["a"]
        assert read["deploy"]["endpoint_mode"] == "dnsrr"
        assert read["ports"][3] == host_mode(int(env.get("TARGET", "5436")), 5435, "udp")


# ------------------------------------------------------------------------ real engines


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def engine_ready() -> bool:
    try:
        return docker("image", "inspect", "vrooli-test/postgres:15", "vrooli-test/redis:7",
                      "vrooli-test/standin:1", timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture
def engine() -> None:
    if not engine_ready() or not shutil.which("docker-compose"):
        message = "needs a Docker engine, docker-compose and `scripts/build-test-images.sh`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def health_states(ids: list[str]) -> dict[str, str]:
    found = {}
    for ident in ids:
        done = docker("inspect", "-f", "{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", ident)
        if done.returncode == 0:
            name, _, state = done.stdout.strip().partition(" ")
            found[name] = state
    return found


@pytest.mark.docker
@pytest.mark.slow
def test_shipped_stack_export_comes_up_healthy_under_docker_compose(project: Project, engine: None) -> None:
    files = shipped(project)
    out = project.dir / "docker-compose.yml"
    done = export(project, "compose", *files, "-o", str(out))
    assert done.returncode == 0, done.stderr
    name = f"vx{uuid.uuid4().hex[:8]}"
    compose = ["docker-compose", "-p", name, "-f", str(out)]
    try:
        up = subprocess.run([*compose, "up", "-d"], capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr
        ids = subprocess.run([*compose, "ps", "-q"], capture_output=True, text=True, timeout=60).stdout.split()
        assert len(ids) == 5
        healthy = wait_for(lambda: (s := health_states(ids)) and all(v == "healthy" for v in s.values()) and s,
                           timeout=240, interval=1)
        assert sorted(healthy) == sorted(f"/{name}_{n}_1" for n in ("postgres", "redis", "qdrant", "n8n", "ollama"))
        memory = docker("inspect", "-f", "{{.HostConfig.Memory}}", f"{name}_postgres_1").stdout.strip()
        assert memory == str(256 << 20)  # deploy.resources.limits.memory, applied by docker-compose too
        # The healthchecks can fail: a probe of a port nothing serves is not healthy.
        redis_test = yaml.safe_load(out.read_text())["services"]["redis"]["healthcheck"]["test"][1]
        wrong = docker("exec", f"{name}_redis_1", "sh", "-c", redis_test.replace("$$", "$").replace("6379", "6399"))
        assert wrong.returncode != 0
        qdrant_test = yaml.safe_load(out.read_text())["services"]["qdrant"]["healthcheck"]["test"][1]
        wrong = docker("exec", f"{name}_qdrant_1", "sh", "-c", qdrant_test.replace("$$", "$").replace("6333", "6399"))
        assert wrong.returncode != 0
    finally:
        subprocess.run([*compose, "down", "-v", "--remove-orphans"], capture_output=True, text=True, timeout=300)
    left = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={name}").stdout.split()
    assert not left


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


def stack_health(stack: str) -> dict[str, str]:
    """Service name → health of its running task's container."""
    ids = docker("ps", "-q", "--filter", f"label=com.docker.stack.namespace={stack}").stdout.split()
    return {name.removeprefix(f"/{stack}_").split(".")[0]: state for name, state in health_states(ids).items()}


def stack_leftovers(stack: str) -> list[str]:
    label = f"label=com.docker.stack.namespace={stack}"
    return [*docker("ps", "-aq", "--filter", label).stdout.split(),
            *docker("volume", "ls", "-q", "--filter", label).stdout.split()]


def tear_down_swarm(stack: str, made_gwbridge: bool) -> None:
    """Every step runs, whatever the one before did: a swarm left behind changes the engine
    for everyone using it."""
    label = f"label=com.docker.stack.namespace={stack}"
    with contextlib.suppress(subprocess.SubprocessError):
        docker("stack", "rm", stack, timeout=60)
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not docker("ps", "-aq", "--filter", label).stdout.strip(), timeout=90, interval=1)
    for ident in docker("ps", "-aq", "--filter", label).stdout.split():
        with contextlib.suppress(subprocess.SubprocessError):
            docker("rm", "-f", "-v", ident, timeout=60)
    with contextlib.suppress(subprocess.SubprocessError):
        docker("swarm", "leave", "--force", timeout=60)
    for volume in docker("volume", "ls", "-q", "--filter", label).stdout.split():
        with contextlib.suppress(subprocess.SubprocessError):
            docker("volume", "rm", "-f", volume, timeout=60)
    if made_gwbridge:  # `swarm init` made it and `swarm leave` keeps it
        with contextlib.suppress(subprocess.SubprocessError):
            docker("network", "rm", "docker_gwbridge", timeout=60)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_shipped_stack_export_deploys_on_a_single_node_swarm(project: Project, engine: None) -> None:
    # `docker swarm init` changes the engine for everyone using it (an ingress network,
    # iptables rules, docker_gwbridge): run it only where that is acceptable.
    if os.environ.get("VROOLI_TEST_SWARM") != "1":
        pytest.skip("set VROOLI_TEST_SWARM=1 to let this test put the Docker engine in swarm mode")
    if swarm_state() != "inactive":
        pytest.skip(f"the engine is already in swarm mode ({swarm_state()}); not touching a swarm we did not make")
    postgres_port = free_port()
    files = shipped(project, postgres=postgres_port)
    out = project.dir / "stack.yml"
    # Without IPVS a service's virtual IP and the ingress mesh route nothing: n8n would never
    # reach postgres, nor the host a published port. DNS round robin and host-mode ports do.
    mode = [] if Path("/proc/net/ip_vs").exists() else ["--endpoint-mode", "dnsrr"]
    done = export(project, "compose", *files, *mode, "-o", str(out))
    assert done.returncode == 0, done.stderr
    stack = f"vx{uuid.uuid4().hex[:8]}"
    made_gwbridge = docker("network", "inspect", "docker_gwbridge").returncode != 0
    try:
        init = docker("swarm", "init", "--advertise-addr", "127.0.0.1", timeout=120)
        assert init.returncode == 0, init.stderr
        deploy = docker("stack", "deploy", "--resolve-image", "never", "-c", str(out), stack, timeout=180)
        assert deploy.returncode == 0, deploy.stderr

        def all_running() -> dict[str, str] | None:
            rows = docker("stack", "services", stack, "--format", "{{.Name}} {{.Replicas}}").stdout.split("\n")
            replicas = dict(r.split(" ", 1) for r in rows if r)
            return replicas if len(replicas) == 5 and all(v.startswith("1/1") for v in replicas.values()) else None

        try:
            wait_for(all_running, timeout=240, interval=2)
            # n8n is healthy only while it reaches postgres by its service name.
            healthy = wait_for(lambda: (h := stack_health(stack)) and len(h) == 5 and all(
                v == "healthy" for v in h.values()) and h, timeout=240, interval=2)
        except AssertionError:
            rows = docker("stack", "services", stack, "--format", "{{.Name}} {{.Replicas}}").stdout.split("\n")
            raise AssertionError(f"replicas {rows}, health {stack_health(stack)} ({' '.join(mode)})") from None
        assert sorted(healthy) == ["n8n", "ollama", "postgres", "qdrant", "redis"]
        assert wait_for(lambda: port_answers(postgres_port), timeout=60, interval=1)  # published to the host
    finally:
        tear_down_swarm(stack, made_gwbridge)
    assert swarm_state() == "inactive"
    assert not stack_leftovers(stack)


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------------ kubernetes


def validator() -> str:
    found = shutil.which("kubernetes-validate")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("kubernetes-validate is missing (pip install -e '.[test]')")
        pytest.skip("needs kubernetes-validate (pip install kubernetes-validate)")
    return found


def newest_kubernetes() -> str:
    from kubernetes_validate.utils import latest_version

    return str(latest_version())


@pytest.mark.parametrize("version", ["1.30.0", "newest"])
def test_every_manifest_passes_kubernetes_validate_strict(kitchen: Project, version: str) -> None:
    tool = validator()
    version = newest_kubernetes() if version == "newest" else version
    single = kitchen.dir / "all.yaml"
    assert export(kitchen, "kubernetes", "-o", str(single), "--namespace", "apps").returncode == 0
    per_resource = kitchen.dir / "k8s"
    assert export(kitchen, "kubernetes", "-o", f"{per_resource}/").returncode == 0
    files = [single, *sorted(per_resource.glob("*.yaml"))]
    done = subprocess.run([tool, "--strict", "-k", version, *map(str, files)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "did not validate" not in done.stdout + done.stderr
    checked = done.stdout.count(" passed for resource ")
    assert checked == 2 * len([d for d in yaml.safe_load_all(single.read_text()) if d])


def test_shipped_stack_manifests_pass_kubernetes_validate_strict(project: Project) -> None:
    tool = validator()
    files = shipped(project)
    out = project.dir / "k8s.yaml"
    assert export(project, "kubernetes", *files, "-o", str(out)).returncode == 0
    for version in ("1.30.0", newest_kubernetes()):
        done = subprocess.run([tool, "--strict", "-k", version, str(out)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr


def test_kubernetes_probes_translate_natively(kitchen: Project) -> None:
    docs = manifests(kitchen)
    api = container(find(docs, "Deployment", "api"))
    assert api["startupProbe"]["httpGet"] == {"path": "/healthz", "port": 8080, "scheme": "HTTP"}
    assert api["readinessProbe"]["httpGet"]["port"] == 8080
    assert api["startupProbe"]["periodSeconds"] == 1 and api["startupProbe"]["failureThreshold"] == 60
    assert "livenessProbe" not in api  # restart = "no": vrooli never restarts it for failing probes
    db = container(find(docs, "StatefulSet", "db"))
    command = db["readinessProbe"]["exec"]["command"]
    assert command[:2] == ["sh", "-c"] and "pg_isready" in command[2] and '"${DB_USER:-app}"' in command[2]
    assert "-p 5432" in command[2]
    assert (db["readinessProbe"]["periodSeconds"], db["readinessProbe"]["failureThreshold"]) == (15, 4)
    assert db["livenessProbe"]["failureThreshold"] == 4
    assert db["startupProbe"]["failureThreshold"] == 90  # start_timeout 90s at 1s
    assert db["startupProbe"]["timeoutSeconds"] == 5  # an exec in the container gets at least 5 s
    cache = container(find(docs, "Deployment", "cache"))
    script = cache["livenessProbe"]["exec"]["command"][2]
    assert 'redis-cli -h 127.0.0.1 -p 6379 --no-auth-warning -a "${REDIS_PASSWORD:-devpass}" ping' in script
    worker = container(find(docs, "Deployment", "worker"))
    assert worker["readinessProbe"]["tcpSocket"] == {"port": 9000}
    assert worker["readinessProbe"]["timeoutSeconds"] == 3
    assert container(find(docs, "Deployment", "cron"))["readinessProbe"]["exec"]["command"] == ["cron-check", "--quick"]
    admin = container(find(docs, "Deployment", "admin"))["readinessProbe"]
    assert "exec" in admin and "401)" in admin["exec"]["command"][2]  # httpGet cannot expect a 401
    assert "readinessProbe" not in container(find(docs, "Deployment", "logger"))
    assert container(find(docs, "Deployment", "custom"))["readinessProbe"]["exec"]["command"] == [
        "sh", "-c", "test -f /tmp/ready"]
    assert "readinessProbe" not in container(find(docs, "Deployment", "quiet"))
    llm = container(find(docs, "Deployment", "llm"))
    assert llm["readinessProbe"]["httpGet"] == {"path": "/api/version", "port": 11434, "scheme": "HTTP"}


def test_kubernetes_conditions_become_waits_and_a_job(kitchen: Project) -> None:
    docs = manifests(kitchen, "--namespace", "apps")
    api = find(docs, "Deployment", "api")
    init = {c["name"]: c for c in api["spec"]["template"]["spec"]["initContainers"]}
    assert sorted(init) == ["wait-for-billing", "wait-for-db", "wait-for-migrate"]  # cache is only "started"
    assert "nc -z -w 2 db 5432" in init["wait-for-db"]["command"][2]
    assert "nc -z -w 2 billing 8443" in init["wait-for-billing"]["command"][2]
    assert init["wait-for-migrate"]["args"] == ["wait", "--for=condition=complete", "--timeout=24h", "job/migrate"]
    assert api["spec"]["template"]["spec"]["serviceAccountName"] == "kitchen-job-waiter"
    job = find(docs, "Job", "migrate")
    assert job["spec"]["backoffLimit"] == 3
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    assert [c["name"] for c in job["spec"]["template"]["spec"]["initContainers"]] == ["wait-for-db"]
    role = find(docs, "Role", "kitchen-job-waiter")
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"]}]
    binding = find(docs, "RoleBinding", "kitchen-job-waiter")
    assert binding["subjects"][0] == {"kind": "ServiceAccount", "name": "kitchen-job-waiter", "namespace": "apps"}
    assert all(d["metadata"].get("namespace") == "apps" for d in docs)
    text = export(kitchen, "kubernetes").stdout
    assert "after cache started: Kubernetes starts pods together" in text


def test_kubernetes_volumes_limits_users_and_labels(kitchen: Project) -> None:
    docs = manifests(kitchen)
    db = find(docs, "StatefulSet", "db")
    assert db["spec"]["serviceName"] == "db"
    claim = db["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "pgdata"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod = db["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "bind-1", "hostPath": {"path": str(kitchen.dir / "init")}}]
    assert container(db)["volumeMounts"] == [
        {"name": "pgdata", "mountPath": "/data"},
        {"name": "bind-1", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True}]
    assert container(db)["resources"] == {"limits": {"memory": "512Mi"}}
    assert container(db)["securityContext"] == {"runAsUser": 999, "runAsGroup": 999}
    assert pod["terminationGracePeriodSeconds"] == 30
    assert "securityContext" not in container(find(docs, "Deployment", "api"))  # "www-data" is no uid
    api = container(find(docs, "Deployment", "api"))
    assert api["command"] == ["/bin/api"] and api["workingDir"] == "/srv"
    assert api["image"] == "registry.example/api:2"
    assert api["args"] == ["--token", "$(API_TOKEN)", "--db", "postgres://db:5432/app"]
    service = find(docs, "Service", "db")
    assert service["spec"]["ports"] == [{"name": "tcp-5432", "port": 5432, "targetPort": 5432, "protocol": "TCP"}]
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "kitchen"
        assert labels["app.kubernetes.io/managed-by"] == "vrooli"
    assert find(docs, "Deployment", "api")["metadata"]["labels"]["app.kubernetes.io/name"] == "api"
    assert not [d for d in docs if d["metadata"]["name"].startswith("off")]


def test_kubernetes_secrets_get_placeholders_and_config_maps_get_defaults(
        kitchen: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PASSWORD", SECRET)
    monkeypatch.setenv("REDIS_PASSWORD", SECRET)
    monkeypatch.setenv("API_TOKEN", SECRET)
    monkeypatch.setenv("DB_USER", "user-from-env")
    done = export(kitchen, "kubernetes")
    assert SECRET not in done.stdout and "sk_live_from_env_file" not in done.stdout
    assert "written-in-the-file" not in done.stdout and "user-from-env" not in done.stdout
    assert "a,b" not in done.stdout
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    secret = find(docs, "Secret", "db-secrets")
    assert secret["stringData"] == {"POSTGRES_PASSWORD": "CHANGE-ME"}
    assert "# fill in: the value of ${DB_PASSWORD}" in done.stdout
    assert find(docs, "ConfigMap", "db-env")["data"] == {"PGDATA": "/data/pg", "POSTGRES_USER": "app"}
    api_secret = find(docs, "Secret", "api-secrets")["stringData"]
    # Keys named like secrets, everything from the env file, and the command's reference without a default.
    assert api_secret == {"FEATURE_FLAGS": "CHANGE-ME", "SIGNING_KEY": "CHANGE-ME", "STRIPE_SECRET": "CHANGE-ME",
                          "API_TOKEN": "CHANGE-ME"}
    assert "# fill in: FEATURE_FLAGS (its env_file has it; not copied here)" in done.stdout
    assert find(docs, "ConfigMap", "api-env")["data"] == {"LOG_LEVEL": "debug"}
    env_from = container(find(docs, "Deployment", "api"))["envFrom"]
    assert env_from == [{"configMapRef": {"name": "api-env"}}, {"secretRef": {"name": "api-secrets"}}]


def test_kubernetes_external_resources_and_models(kitchen: Project) -> None:
    docs = manifests(kitchen)
    billing = find(docs, "Service", "billing")
    assert billing["spec"]["type"] == "ExternalName"
    assert billing["spec"]["externalName"] == "billing.example.com"
    legacy = find(docs, "Service", "legacy")
    assert "selector" not in legacy["spec"] and legacy["spec"]["ports"][0]["port"] == 5432
    endpoints = find(docs, "EndpointSlice", "legacy")
    assert endpoints["endpoints"] == [{"addresses": ["10.20.30.40"]}]
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == "legacy"
    assert not [d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] in
                ("billing", "legacy")]
    models = find(docs, "Job", "llm-models")
    script = models["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert script.startswith("until wget -q -O /dev/null http://llm:11434/api/version")
    assert '{"model": "llama3.1:8b"}' in script and '{"model": "nomic-embed-text"}' in script
    # Models never gate the rest: nothing waits for that Job.
    waits = [c for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")
             for c in d["spec"]["template"]["spec"].get("initContainers", [])]
    assert not [c for c in waits if "llm-models" in json.dumps(c)]


def test_kubernetes_to_a_directory_writes_one_file_per_resource(kitchen: Project) -> None:
    out = kitchen.dir / "k8s"
    done = export(kitchen, "kubernetes", "-o", f"{out}/", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(Path(p).name for p in report["output"])
    assert "api.yaml" in names and "_project.yaml" in names and "billing.yaml" in names
    assert {d["kind"] for d in yaml.safe_load_all((out / "db.yaml").read_text()) if d} == {
        "ConfigMap", "Secret", "Service", "StatefulSet"}
    assert report["resources"][0] == "db" and report["external"] == ["billing", "legacy"]
    assert "documents" not in report


def test_json_on_stdout_carries_the_documents_and_notes(kitchen: Project) -> None:
    done = export(kitchen, "compose", "--json")
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["format"] == "compose" and report["output"] is None
    assert report["documents"][0]["services"]["db"]["image"] == "postgres:16-alpine"
    assert any("resources.logger.health" in n for n in report["notes"])
    assert done.stderr == ""


# ------------------------------------------------------------------------ interpolation

# Every form of ${...} the loader knows, in an image, a command and an environment: `app`
# refers to variables that are no keys of its env, `cli` to keys of its env.
OPERATORS = r'''
[project]
name = "ops"
state_dir = ".state"

[resources.app]
runtime = "docker"
image = "${REGISTRY-docker.io}/library/busybox:${TAG:-1.36}"
command = ["sh", "-c", """echo $BARE_V ${BRACED_V} ${DASH_V-dash default} ${COLON_DASH_V:-colon default} \
${QUESTION_V?question message} ${COLON_QUESTION_V:?colon question message} \
${NESTED_V:-${INNER_V:-inner default}} $$LITERAL cost 5$"""]

[resources.app.env]
BARE = "$BARE_V"
BRACED = "${BRACED_V}"
DASH = "${DASH_V-dash default}"
COLON_DASH = "${COLON_DASH_V:-colon default}"
QUESTION = "${QUESTION_V?question message}"
COLON_QUESTION = "${COLON_QUESTION_V:?colon question message}"
NESTED = "${NESTED_V:-${INNER_V:-inner default}}"
DOLLAR_DEFAULT = "${DOLLAR_V:-cost $$5}"
PLUS = "${PLUS_V+plus alternative}"
COLON_PLUS = "${COLON_PLUS_V:+colon plus alternative}"
SUPPLIED_PLUS = "${BRACED_V:+braced is set}"

[resources.cli]
runtime = "docker"
image = "app/cli:1"
command = ["--mode", "${MODE:-slow}", "--token", "${TOKEN:?the API token}", "--level", "${LEVEL-info}",
           "--need", "${NEED?say what}", "$HOME_DIR", "${MODE:+--moded}", "${QUIET+-q}", "${TOKEN:+--auth}",
           "${EMPTY:+--never}", "$$(date)", "${NEED:-a default the Secret key overrides}"]
env = { MODE = "fast", TOKEN = "${TOKEN:?the API token}", EMPTY = "" }

[resources.extra]
runtime = "docker"
image = "app/extra:1"
description = "${DESCRIPTION:-the extra service}"
cwd = "${WORKDIR:-/srv}"
user = "${RUN_AS:-1000}"
stop_signal = "${STOP_SIGNAL:-SIGTERM}"
ports = ["${HOST_IP:-127.0.0.1}:${HOST_PORT:-18080}:8080"]
volumes = ["${DATA_DIR:-./data}:/data", "${VOLUME:-cache}:/cache"]
health = { probe = "http", url = "http://${PROBE_HOST:-127.0.0.1}:${PROBE_PORT:-18080}/health" }
models = ["${MODEL:-llama3}"]

[resources.billing]
runtime = "external"
health = { probe = "tcp", host = "${BILLING_HOST:-billing.example.com}", port = 8443 }
'''
# The variables only the deployer can supply (no default, `?`, `:?`), and those of them that must not be empty.
REQUIRED = ["BARE_V", "BRACED_V", "QUESTION_V", "COLON_QUESTION_V", "TOKEN", "NEED", "HOME_DIR"]
NOT_EMPTY = ["COLON_QUESTION_V", "TOKEN"]
OPTIONAL = ["REGISTRY", "TAG", "DASH_V", "COLON_DASH_V", "NESTED_V", "INNER_V", "DOLLAR_V", "PLUS_V",
            "COLON_PLUS_V", "MODE", "LEVEL", "QUIET", "EMPTY"]
ALTERNATIVES = {"PLUS": "", "COLON_PLUS": "", "SUPPLIED_PLUS": "braced is set"}  # as written for compose
# Fields whose value the exporters read from the validated project: set here, none may reach the output.
FIELDS = {"DESCRIPTION": SECRET, "WORKDIR": f"/{SECRET}", "RUN_AS": "31337", "STOP_SIGNAL": "SIGQUIT",
          "HOST_IP": "127.0.0.99", "HOST_PORT": "17777", "DATA_DIR": f"/{SECRET}-data", "VOLUME": f"{SECRET}-vol",
          "PROBE_HOST": f"{SECRET}.example", "PROBE_PORT": "17778", "MODEL": f"{SECRET}-model",
          "BILLING_HOST": f"{SECRET}.example"}


@pytest.fixture
def ops(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    for name in [*REQUIRED, *OPTIONAL, *FIELDS]:
        monkeypatch.delenv(name, raising=False)
    project.write(OPERATORS)
    return project


def test_compose_keeps_every_operator_as_a_reference(ops: Project) -> None:
    done = export(ops, "compose")
    assert done.returncode == 0, done.stderr  # ${VAR:?message} and bare $VAR unset here: the deployer's
    services = yaml.safe_load(done.stdout)["services"]
    app = services["app"]
    assert app["image"] == "${REGISTRY-docker.io}/library/busybox:${TAG:-1.36}"
    assert app["command"][2] == ("echo $BARE_V ${BRACED_V} ${DASH_V-dash default} ${COLON_DASH_V:-colon default} "
                                 "${QUESTION_V?question message} ${COLON_QUESTION_V:?colon question message} "
                                 "${NESTED_V:-inner default} $$LITERAL cost 5$$")
    assert app["environment"] == {
        "BARE": "$BARE_V", "BRACED": "${BRACED_V}", "DASH": "${DASH_V-dash default}",
        "COLON_DASH": "${COLON_DASH_V:-colon default}", "QUESTION": "${QUESTION_V?question message}",
        "COLON_QUESTION": "${COLON_QUESTION_V:?colon question message}", "NESTED": "${NESTED_V:-inner default}",
        "DOLLAR_DEFAULT": "${DOLLAR_V:-cost $5}", **ALTERNATIVES}
    assert services["cli"]["command"] == [
        "--mode", "${MODE:-slow}", "--token", "${TOKEN:?the API token}", "--level", "${LEVEL-info}",
        "--need", "${NEED?say what}", "$HOME_DIR", "", "", "--auth", "", "$$(date)",
        "${NEED:-a default the Secret key overrides}"]
    # What docker-compose 1.29 and docker stack cannot read as written is translated, and said.
    notes = done.stderr
    assert ("resources.app.env.PLUS: ${PLUS_V+plus alternative} is written empty (docker-compose 1.29 and "
            "docker stack have no ${VAR:+alt}), as if PLUS_V were unset where this is deployed") in notes
    assert "resources.app.env.COLON_PLUS: ${COLON_PLUS_V:+colon plus alternative} is written empty" in notes
    assert ("resources.app.env.SUPPLIED_PLUS: ${BRACED_V:+braced is set} is written as its alternative "
            "(docker-compose 1.29 and docker stack have no ${VAR:+alt}): BRACED_V has no default elsewhere") in notes
    assert ("resources.app.env.NESTED: ${NESTED_V:-${INNER_V:-inner default}}: docker-compose 1.29 and docker "
            "stack cannot nest ${...} in a default; written as ${NESTED_V:-inner default}") in notes
    assert "resources.app.command: ${NESTED_V:-${INNER_V:-inner default}}: docker-compose 1.29" in notes
    assert "resources.app.env.DOLLAR_DEFAULT: ${DOLLAR_V:-cost $$5} is written ${DOLLAR_V:-cost $5}" in notes
    assert "resources.cli.command: ${TOKEN:+--auth} is written as its alternative" in notes
    assert "resources.cli.command: ${MODE:+--moded} is written empty" in notes


def test_kubernetes_resolves_every_operator_as_said(ops: Project) -> None:
    done = export(ops, "kubernetes")
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    app = container(find(docs, "Deployment", "app"))
    assert app["image"] == "docker.io/library/busybox:1.36"
    # Not in the container's env: a default is written; no default, or `?` / `:?`, is a Secret key.
    assert app["args"][2] == ("echo $(BARE_V) $(BRACED_V) dash default colon default $(QUESTION_V) "
                              "$(COLON_QUESTION_V) inner default $$LITERAL cost 5$$")
    assert find(docs, "ConfigMap", "app-env")["data"] == {
        "DASH": "dash default", "COLON_DASH": "colon default", "NESTED": "inner default",
        "DOLLAR_DEFAULT": "cost $5", "PLUS": "", "COLON_PLUS": "", "SUPPLIED_PLUS": "braced is set"}
    assert find(docs, "Secret", "app-secrets")["stringData"] == dict.fromkeys(
        ("BARE", "BRACED", "QUESTION", "COLON_QUESTION", "BARE_V", "BRACED_V", "QUESTION_V", "COLON_QUESTION_V"),
        "CHANGE-ME")
    assert "# fill in: the value of ${QUESTION_V} (the command uses it: question message)" in done.stdout
    assert "# fill in: the value of ${COLON_QUESTION_V} (the command uses it: colon question message)" in done.stdout
    assert "# fill in: the value of ${BARE_V}\n" in done.stdout
    # Keys of the container's env are Kubernetes' $(VAR); an alternative follows what the pod's VAR holds.
    cli = container(find(docs, "Deployment", "cli"))
    assert cli["args"] == ["--mode", "$(MODE)", "--token", "$(TOKEN)", "--level", "info", "--need", "$(NEED)",
                           "$(HOME_DIR)", "--moded", "", "--auth", "", "$$(date)", "$(NEED)"]
    assert find(docs, "Secret", "cli-secrets")["stringData"] == {"TOKEN": "CHANGE-ME", "NEED": "CHANGE-ME",
                                                                 "HOME_DIR": "CHANGE-ME"}
    assert find(docs, "ConfigMap", "cli-env")["data"] == {"MODE": "fast", "EMPTY": ""}
    notes = done.stderr
    assert ("resources.cli.command: ${MODE:+--moded} is written as its alternative: MODE is set in the "
            "ConfigMap (Kubernetes has no conditional)") in notes
    assert "resources.cli.command: ${QUIET+-q} is written empty: QUIET is not in the container's env" in notes
    assert "resources.cli.command: ${TOKEN:+--auth} is written as its alternative: TOKEN is a Secret key" in notes
    assert "resources.cli.command: ${EMPTY:+--never} is written empty: EMPTY is empty in the ConfigMap" in notes
    assert "resources.app.env.PLUS: ${PLUS_V+plus alternative} is written empty (a value has no conditional)" in notes


def test_kubernetes_manifests_of_every_operator_pass_kubernetes_validate_strict(ops: Project) -> None:
    tool = validator()
    out = ops.dir / "k8s.yaml"
    assert export(ops, "kubernetes", "-o", str(out)).returncode == 0
    done = subprocess.run([tool, "--strict", "-k", "1.30.0", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" passed for resource ") == len([d for d in yaml.safe_load_all(out.read_text()) if d])


def test_kubernetes_probe_keeps_every_operator_for_the_shell(project: Project) -> None:
    project.write("""
        [resources.app]
        runtime = "docker"
        image = "app:1"
        env = { MODE = "fast" }
        health = { probe = "exec", inside = true, command = ["check", "$MODE", "${LEVEL-info}", "${NEED?say}",
                   "${MODE:+--moded}", "${A:-${B:-deep}}", "cost $$5"] }
        """)
    docs = manifests(project)
    command = container(find(docs, "Deployment", "app"))["readinessProbe"]["exec"]["command"]
    # sh has every operator compose has: the container's own environment decides, as the loader's would.
    assert command == ["sh", "-c", 'exec check "${MODE}" "${LEVEL-info}" "${NEED?say}" "${MODE:+--moded}" '
                                   '"${A:-${B:-deep}}" \'cost $5\'']
    script = command[2].replace("exec check", "printf '%s|'")
    ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                         env={"PATH": os.environ["PATH"], "MODE": "fast", "NEED": "x"})
    assert ran.stdout == "fast|info|x|--moded|deep|cost $5|"
    ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                         env={"PATH": os.environ["PATH"]})
    assert ran.returncode != 0 and "say" in ran.stderr


def test_a_reference_that_must_be_supplied_does_not_stop_the_export(ops: Project) -> None:
    # `${VAR:?message}` and a bare `$VAR` unset here are the deployer's to set, as `${VAR}` is.
    for fmt in ("compose", "kubernetes"):
        done = export(ops, fmt)
        assert done.returncode == 0, done.stderr
        assert "set-when-deployed" not in done.stdout + done.stderr  # what they validate with here
    # ... and one set but empty here as well: the value here is not what is exported.
    env = {**os.environ, "COLON_QUESTION_V": "", "TOKEN": ""}
    done = subprocess.run([sys.executable, "-m", "orchestrator", "export", "compose"], cwd=ops.dir, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_no_value_from_the_environment_or_dotenv_is_ever_written(ops: Project,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    unset = {fmt: export(ops, fmt) for fmt in ("compose", "kubernetes")}
    for name in REQUIRED + OPTIONAL:
        monkeypatch.setenv(name, f"{SECRET}-{name}")
    for name, value in FIELDS.items():
        monkeypatch.setenv(name, value)
    (ops.dir / ".env").write_text(f"DASH_V={SECRET}-dotenv\nPLUS_V={SECRET}-dotenv-plus\nMODEL={SECRET}-dotenv\n")
    for fmt in ("compose", "kubernetes"):
        done = export(ops, fmt)
        assert done.returncode == 0, done.stderr
        for value in [SECRET, "31337", "SIGQUIT", "127.0.0.99", "17777", "17778"]:
            assert value not in done.stdout + done.stderr, (fmt, value)
        # Whatever is set here, the export is the same: it is what is written in the files.
        assert (done.stdout, done.stderr) == (unset[fmt].stdout, unset[fmt].stderr)


def test_a_default_applies_when_nothing_is_set_here(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STOP_TIMEOUT", "RUN_AS", "TOKEN"):
        monkeypatch.delenv(name, raising=False)
    project.write("""
        [resources.app]
        runtime = "docker"
        image = "app:1"
        command = ["serve", "${TOKEN}"]
        stop_timeout = "${STOP_TIMEOUT-30s}"
        user = "${RUN_AS:-²}"
        """)
    # `${VAR-default}` unset is its default: only a variable the loader would refuse is stood in for.
    assert compose_of(project)["services"]["app"]["stop_grace_period"] == "30s"
    done = export(project, "kubernetes")
    assert done.returncode == 0, done.stderr
    pod = find([d for d in yaml.safe_load_all(done.stdout) if d], "Deployment", "app")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    assert "securityContext" not in pod["containers"][0]  # '²' is a digit to str.isdigit, not to int()
    assert "resources.app.user: '²' is not numeric" in done.stderr


def test_a_field_that_needs_a_value_here_says_which_variable_is_unset(project: Project,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKDIR", raising=False)
    project.write('[resources.app]\nruntime = "docker"\nimage = "app:1"\ncwd = "${WORKDIR}"\n')
    for fmt in ("compose", "kubernetes"):
        done = export(project, fmt)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 2 and "resources.app.cwd: a container's working directory must be an absolute" in lines[0]
        assert lines[1].endswith("not set here, so validated as empty: ${WORKDIR}; set them for the export if a "
                                 "problem above comes from one")
    monkeypatch.setenv("WORKDIR", "/srv/app")
    assert compose_of(project)["services"]["app"]["working_dir"] == "${WORKDIR}"


WEIRD = {
    "user '²'": 'runtime = "docker"\nimage = "x"\nuser = "${U:-²}"',
    "user unset": 'runtime = "docker"\nimage = "x"\nuser = "${U}"',
    "user required": 'runtime = "docker"\nimage = "x"\nuser = "${U:?set it}:${G:-²}"',
    "bracketed host": 'runtime = "external"\nhealth = { probe = "http", url = "http://[${H:-::1}]:80/" }',
    "host unset": 'runtime = "external"\nhealth = { probe = "http", url = "http://${H}:80/" }',
    "port reference": 'runtime = "external"\nhealth = { probe = "tcp", host = "${H}", port = "${P:-5432}" }',
    "volumes": 'runtime = "docker"\nimage = "x"\nvolumes = ["${V}:/data", "${W:-./w}:/w:${M:-ro}", "${N:-n}:/n"]',
    "volume mode": 'runtime = "docker"\nimage = "x"\nvolumes = ["${W:-./w}:/w:${M:-rx}"]',
    "fields unset": 'runtime = "docker"\nimage = "${I:?an image}"\ncwd = "${D}"\nstop_signal = "${S:-SIGINT}"\n'
                    'description = "${DESC}"\nmodels = ["${MO}"]\nports = [11434]',
    "nested alternatives": 'runtime = "docker"\nimage = "x"\ncommand = ["${A:+${B:+${C:?c}}}", "$(x)", "$$(y)", '
                           '"${A-${A-${A}}}"]\nenv = { A = "${A:+1}" }',
    "stop signal number": 'runtime = "docker"\nimage = "x"\nstop_signal = "${S:-9}"',
    "memory": 'runtime = "docker"\nimage = "x"\nmemory_limit = "${MEM:-²m}"',
}


@pytest.mark.parametrize("fmt", ["compose", "kubernetes"])
@pytest.mark.parametrize("body", WEIRD.values(), ids=WEIRD.keys())
def test_odd_references_in_any_field_are_an_export_or_a_clear_line(project: Project, fmt: str, body: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("U", "G", "H", "P", "V", "W", "M", "N", "I", "D", "S", "DESC", "MO", "A", "B", "C", "MEM"):
        monkeypatch.delenv(name, raising=False)
    project.write(f"[resources.a]\n{body}\n")
    done = export(project, fmt)
    assert "Traceback" not in done.stderr and done.returncode in (0, 2), done.stderr
    if done.returncode == 2:
        assert all(line.startswith(str(project.file)) for line in done.stderr.strip().splitlines()), done.stderr
        assert "resources.a." in done.stderr


def compose_env(state: str, *, unset: tuple[str, ...] = (), empty: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment a deployer might have: every variable set, empty, or only the required ones set."""
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED + OPTIONAL}
    for name in REQUIRED + OPTIONAL:
        if state == "set":
            env[name] = f"value of {name}"
        elif name in NOT_EMPTY or (name in REQUIRED and state == "unset"):
            env[name] = f"value of {name}"
        elif state == "empty":
            env[name] = ""
    for name in unset:
        env.pop(name, None)
    for name in empty:
        env[name] = ""
    return env


def compose_config(out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker-compose", "-f", str(out), "config"], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.docker
def test_docker_compose_reads_every_operator_as_vrooli_does(ops: Project) -> None:
    if not shutil.which("docker-compose"):
        pytest.skip("needs docker-compose")
    from orchestrator import config

    out = ops.dir / "out" / "docker-compose.yml"  # no .env beside it: only the environment given counts
    out.parent.mkdir()
    assert export(ops, "compose", "-o", str(out)).returncode == 0
    for state in ("set", "empty", "unset"):
        env = compose_env(state)
        checked = compose_config(out, env)
        assert checked.returncode == 0, (state, checked.stderr)
        app = yaml.safe_load(checked.stdout)["services"]["app"]
        expected = config.load([ops.file], env).resources["app"]
        assert app["image"] == expected.image, state
        assert [word.replace("$$", "$") for word in app["command"]] == list(expected.command), state
        environment = {k: v.replace("$$", "$") for k, v in app["environment"].items()}
        loaded = expected.env_dict
        assert {k: v for k, v in environment.items() if k not in ALTERNATIVES} == \
               {k: v for k, v in loaded.items() if k not in ALTERNATIVES}, state
        assert {k: environment[k] for k in ALTERNATIVES} == ALTERNATIVES  # as written: compose has no :+
    # A required variable missing stops docker-compose with its message, as it stops `vrooli up`.
    for unset, empty, message in ((("QUESTION_V",), (), "question message"),
                                  ((), ("COLON_QUESTION_V",), "colon question message"),
                                  (("COLON_QUESTION_V",), (), "colon question message"),
                                  (("TOKEN",), (), "the API token"), (("NEED",), (), "say what")):
        env = compose_env("unset", unset=unset, empty=empty)
        checked = compose_config(out, env)
        assert checked.returncode != 0 and message in checked.stderr, (unset, empty, checked.stderr)
        with pytest.raises(ConfigError, match=message):
            config.load([ops.file], env)
    env = compose_env("unset", empty=("QUESTION_V", "NEED"))  # `?` takes an empty value, as the loader does
    assert compose_config(out, env).returncode == 0
    config.load([ops.file], env)


COMPOSE_PYTHON = Path("/usr/bin/python3")  # docker-compose 1.29's own interpreter and interpolation code
COMPOSE_INTERPOLATE = """
import json, sys
import logging
from compose.config.environment import Environment
from compose.config.interpolation import Interpolator, TemplateWithDefaults, UnsetRequiredSubstitution
logging.disable(logging.WARNING)  # "The X variable is not set. Defaulting to a blank string."
results = []
for text, env in json.load(sys.stdin):
    try:
        results.append(["ok", Interpolator(TemplateWithDefaults, Environment(env)).interpolate(text)])
    except UnsetRequiredSubstitution:
        results.append(["required", None])
    except Exception as exc:
        results.append(["error", type(exc).__name__])
json.dump(results, sys.stdout)
"""


def random_templates(count: int, seed: int = 18) -> list[str]:
    """Half strings of syntax pieces in any order (many the loader refuses), half well-formed."""
    rng = random.Random(seed)
    pieces = ["$", "$$", "${", "}", ":-", "-", "?", ":?", ":+", "+", "A", "B", "_x", " ", "a", "1", "é", "{", ":"]

    def text(depth: int) -> str:
        out = []
        for _ in range(rng.randint(0, 4)):
            kind = rng.randrange(7)
            if kind == 0:
                out.append(rng.choice(["a", " ", "é", ":", "-", "?", "{", "1", "x y"] + ([] if depth else ["}"])))
            elif kind == 1:
                out.append(rng.choice(["$$", "$ ", "$1", "$é", "5$"]))
            elif kind == 2:
                out.append("$" + rng.choice(["A", "B", "_x"]) + rng.choice(["", " ", "é", ".", "-"]))
            else:
                operator = rng.choice(["", ":-", "-", ":?", "?", ":+", "+"])
                word = text(depth + 1) if operator and depth < 3 else ""
                out.append("${" + rng.choice(["A", "B", "_x"]) + operator + word + "}")
        return "".join(out)

    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 14))) if i % 2 else text(0)
            for i in range(count)]


def test_compose_1_29_reads_every_translated_text_as_the_loader_does() -> None:
    """Thousands of texts, each variable set, empty or unset: where the loader has a value,
    docker-compose 1.29's own interpolation gives the same one; where it refuses for a
    `?` / `:?`, so does compose. (Where compose has no `:+` or nesting the export says so.)"""
    if not COMPOSE_PYTHON.exists() or subprocess.run(
            [str(COMPOSE_PYTHON), "-c", "import compose.config.interpolation"], capture_output=True).returncode:
        pytest.skip("needs docker-compose 1.29's Python package")
    from orchestrator.config import variables
    from orchestrator.export.common import Text

    environments = [{}, {"A": "", "B": ""}, {"A": "va", "B": "vb"}, {"A": "va", "B": ""}, {"A": "", "_x": "x$y"}]
    cases: list[tuple[str, str, dict[str, str]]] = []
    for template in random_templates(4000):
        try:
            caveats: list[str] = []
            written = Text(template).for_compose(caveats)
        except InterpolationError:
            continue  # the loader refuses the file: nothing is exported
        if any("no ${VAR:+alt}" in c or "cannot nest" in c for c in caveats):
            continue  # translated with an assumption, said on stderr (tested above)
        cases += [(template, written, env) for env in environments]
    assert len(cases) > 4000
    done = subprocess.run([str(COMPOSE_PYTHON), "-c", COMPOSE_INTERPOLATE], capture_output=True, text=True,
                          input=json.dumps([[written, env] for _, written, env in cases]), timeout=300)
    assert done.returncode == 0, done.stderr
    compared = 0
    for (template, written, env), (outcome, value) in zip(cases, json.loads(done.stdout), strict=True):
        try:
            expected = variables.interpolate(template, env)
        except InterpolationError as exc:
            if "set it in the environment or .env" in str(exc):
                continue  # an unset ${VAR} without a default: the loader refuses, compose writes "" and warns
            assert outcome == "required", (template, written, env, str(exc), outcome, value)
            continue
        assert (outcome, value) == ("ok", expected), (template, written, env)
        compared += 1
    assert compared > 2000


def kubernetes_expand(text: str, env: dict[str, str]) -> str:
    """What the kubelet makes of a command word (Kubernetes' third_party/forked/golang/expansion)."""
    out, cursor = [], 0
    while cursor < len(text):
        if text[cursor] != "$" or cursor + 1 == len(text):
            out.append(text[cursor])
            cursor += 1
        elif text[cursor + 1] == "(" and ")" in text[cursor + 2:]:
            name = text[cursor + 2:text.index(")", cursor + 2)]
            out.append(env.get(name, f"$({name})"))
            cursor += len(name) + 3
        else:
            out.append("$" if text[cursor + 1] == "$" else text[cursor:cursor + 2])
            cursor += 2
    return "".join(out)


def test_kubernetes_command_words_mean_what_the_loader_reads() -> None:
    """Thousands of texts in a container without env: the Secret keys the export asks for,
    once filled in, make the kubelet's expansion give what the loader gives with those set."""
    from orchestrator.config import variables
    from orchestrator.export.kubernetes import _Args, secret_keys

    compared = 0
    for template in random_templates(4000, seed=19):
        try:
            tokens = variables.tokenize(template)
        except InterpolationError:
            continue
        needed = secret_keys({}, [tokens])
        word = _Args({}, needed, []).render(tokens)
        env = {name: f"v{name}$(x)" for name in needed}
        assert kubernetes_expand(word, env) == variables.interpolate(template, env), (template, word, env)
        compared += 1
    assert compared > 2000


# ------------------------------------------------------------------------ bad input


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("fmt", ["helm", "", "COMPOSE", "compose ", "k8s", "kube", "swarm", "compose,kubernetes"])
def test_unknown_format_is_one_line_and_writes_nothing(kitchen: Project, fmt: str) -> None:
    out = kitchen.dir / "out.yml"
    line = one_line(export(kitchen, fmt, "-o", str(out)))
    assert line.startswith("vrooli: unknown export format") and "(known: compose, kubernetes)" in line
    assert not out.exists()


def test_process_without_export_image_names_it_and_leaves_old_output(project: Project) -> None:
    project.write("""
        [resources.tool]
        command = ["python3", "-m", "http.server"]
        [resources.web]
        runtime = "docker"
        image = "nginx:1"
        depends_on = ["tool"]
        """)
    out = project.dir / "out.yml"
    out.write_text("the previous export\n")
    for fmt in ("compose", "kubernetes"):
        line = one_line(export(project, fmt, "-o", str(out)))
        assert "resources.tool: a native process has no image to export" in line
        assert "[resources.tool.export] image" in line and "--skip-process" in line
        assert out.read_text() == "the previous export\n"
    assert sorted(p.name for p in project.dir.iterdir() if p.name.startswith(".out")) == []
    skipped = export(project, "compose", "--skip-process", "-o", str(out))
    assert skipped.returncode == 0
    assert "resources.tool: left out (--skip-process)" in skipped.stderr
    assert "resources.web.depends_on: the dependency on 'tool' is left out with it" in skipped.stderr
    assert "depends_on" not in yaml.safe_load(out.read_text())["services"]["web"]


@pytest.mark.parametrize(("fmt", "where"), [
    ("compose", "missing-dir/out.yml"), ("compose", "a-file/out.yml"), ("compose", "a-dir"),
    ("compose", "a-dir/"), ("kubernetes", "missing-dir/out.yaml"), ("kubernetes", "a-file/out.yaml"),
    ("kubernetes", "a-file/sub/"), ("kubernetes", "missing-dir/sub/"),
])
def test_unwritable_output_is_one_line_and_no_partial_file(kitchen: Project, fmt: str, where: str) -> None:
    (kitchen.dir / "a-file").write_text("not a directory\n")
    (kitchen.dir / "a-dir").mkdir()
    before = sorted(str(p) for p in kitchen.dir.rglob("*"))
    line = one_line(export(kitchen, fmt, "-o", str(kitchen.dir / where) + ("/" if where.endswith("/") else "")))
    assert str(kitchen.dir / where.split("/")[0]) in line
    assert sorted(str(p) for p in kitchen.dir.rglob("*")) == before
    assert (kitchen.dir / "a-file").read_text() == "not a directory\n"


@pytest.mark.parametrize("where", ["/proc/vrooli-export.yml", "/proc/vrooli-export/", "/sys/vrooli.yml"])
def test_output_on_a_filesystem_that_takes_no_files_is_one_line(kitchen: Project, where: str) -> None:
    line = one_line(export(kitchen, "kubernetes" if where.endswith("/") else "compose", "-o", where))
    assert line.startswith(f"vrooli: cannot write {where.rstrip('/')}")


def test_export_of_a_broken_file_is_the_config_error(project: Project) -> None:
    project.write('[resources.a]\ncommand = "not a list"\n')
    line = one_line(export(project, "compose"))
    assert "resources.a.command" in line


def test_successful_write_leaves_no_temporary_files(kitchen: Project) -> None:
    out = kitchen.dir / "out.yml"
    assert export(kitchen, "compose", "-o", str(out)).returncode == 0
    assert [p.name for p in kitchen.dir.iterdir() if p.name.endswith(".tmp")] == []
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # a plain file, not mkstemp's private mode
