"""The shipped stack on a real Docker Engine, with locally built images (no registry).

Postgres and Redis are the real servers inside images assembled from host binaries;
qdrant, n8n and ollama are the stand-ins from tests/standins/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Project, free_port, wait_for

pytestmark = pytest.mark.docker
LABEL = "dev.vrooli.project"


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def engine_ready() -> bool:
    try:
        subprocess.run(["docker", "info"], capture_output=True, check=True, timeout=20)
        docker("image", "inspect", "vrooli-test/postgres:15", "vrooli-test/redis:7", "vrooli-test/standin:1")
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@pytest.fixture(scope="module", autouse=True)
def need_docker() -> None:
    if not engine_ready():
        message = "needs a running Docker engine and `scripts/build-test-images.sh`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def leftovers(name: str) -> list[str]:
    found = []
    for kind in ("container", "network", "volume"):
        args = [kind, "ls", "-q", "--filter", f"label={LABEL}={name}"]
        if kind == "container":
            args.insert(2, "-a")
        found += [f"{kind} {x}" for x in docker(*args).split()]
    return found


@pytest.fixture
def stack(project: Project) -> Iterator[Project]:
    """The shipped resources.toml + resources.local.toml, as its own project."""
    name = f"t{uuid.uuid4().hex[:8]}"
    (project.dir / "resources.toml").write_text((ROOT / "resources.toml").read_text())
    (project.dir / "resources.local.toml").write_text((ROOT / "resources.local.toml").read_text())
    (project.dir / "tests" / "standins").mkdir(parents=True)
    for path in (ROOT / "tests" / "standins").glob("*.py"):
        (project.dir / "tests" / "standins" / path.name).write_text(path.read_text())
    project.write(f'[project]\nname = "{name}"\nstate_dir = ".state"\nhealth_listen = "127.0.0.1:0"\n', "test.toml")
    project.files = ["-f", "resources.toml", "-f", "resources.local.toml", "-f", "test.toml"]
    project.name = name
    yield project
    project.run("down", "--volumes", *project.files, timeout=180)
    left = leftovers(name)
    for item in left:
        kind, ident = item.split()
        subprocess.run(["docker", kind, "rm", "-f", ident], capture_output=True)
    assert not left, f"test left docker objects behind: {left}"


def up(p: Project, *extra: str) -> subprocess.CompletedProcess[str]:
    return p.run("up", *p.files, *extra, timeout=180)


def rows(p: Project) -> dict[str, dict[str, Any]]:
    done = p.run("status", "--json", *p.files)
    return {r["name"]: r for r in json.loads(done.stdout)["resources"]}


def test_shipped_stack_comes_up_concurrently_and_adopts_on_second_up(stack: Project) -> None:
    done = up(stack)
    assert done.returncode == 0, done.stderr
    first = rows(stack)
    assert {r["state"] for r in first.values()} == {"ready"}, first
    n8n = first["n8n"]
    assert ts(n8n["started_at"]) >= max(ts(first["postgres"]["ready_at"]), ts(first["redis"]["ready_at"]))
    # postgres, redis, qdrant and ollama were started together, not one after another
    roots = [ts(first[n]["started_at"]) for n in ("postgres", "redis", "qdrant", "ollama")]
    assert max(roots) - min(roots) < 1.0
    containers = docker("ps", "--filter", f"label={LABEL}={stack.name}", "--format", "{{.Names}}").split()
    assert sorted(containers) == sorted(f"{stack.name}-{n}" for n in ("postgres", "redis", "qdrant", "n8n"))
    networks = docker("network", "ls", "--filter", f"label={LABEL}={stack.name}", "--format", "{{.Name}}").split()
    assert networks == [f"{stack.name}_default"]
    labels = json.loads(docker("inspect", f"{stack.name}-redis"))[0]["Config"]["Labels"]
    assert labels["dev.vrooli.resource"] == "redis" and len(labels["dev.vrooli.config-hash"]) == 16

    # A second `up` changes nothing: same containers, same start times.
    again = up(stack)
    assert again.returncode == 0, again.stderr
    second = rows(stack)
    for name in first:
        assert second[name]["id"] == first[name]["id"]
        assert second[name]["started_at"] == first[name]["started_at"]

    # A changed env recreates only that resource.
    stack.write('[resources.qdrant.env]\nQDRANT__LOG_LEVEL = "DEBUG"\n', "change.toml")
    changed = stack.run("up", *stack.files, "-f", "change.toml", timeout=180)
    assert changed.returncode == 0, changed.stderr
    status = stack.run("status", "--json", *stack.files, "-f", "change.toml").stdout
    third = {r["name"]: r for r in json.loads(status)["resources"]}
    assert third["qdrant"]["id"] != first["qdrant"]["id"]
    for name in ("postgres", "redis", "n8n", "ollama"):
        assert third[name]["id"] == first[name]["id"], name
    env = json.loads(docker("inspect", f"{stack.name}-qdrant"))[0]["Config"]["Env"]
    assert "QDRANT__LOG_LEVEL=DEBUG" in env

    # Memory and CPU of containers come from the Docker stats API.
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    metrics = httpx.get(stack.health_url() + "/metrics", timeout=30).text
    memory = {s.labels["resource"]: s.value for f in text_string_to_metric_families(metrics)
              for s in f.samples if s.name == "vrooli_resource_memory_bytes"}
    assert memory["postgres"] > 1_000_000 and memory["redis"] > 100_000

    # Logs of containers work as for processes.
    logs = stack.run("logs", "qdrant", "--file", "resources.toml", "--file", "resources.local.toml",
                     "--file", "test.toml")
    assert "stand-in qdrant answering" in logs.stdout


def test_container_killed_from_outside_is_reported_and_restarted(stack: Project) -> None:
    stack.write('[resources.qdrant]\nrestart = "no"\n[resources.redis]\nrestart_delay = "100ms"\n', "policy.toml")
    files = [*stack.files, "-f", "policy.toml"]
    assert stack.run("up", *files, timeout=180).returncode == 0

    def status() -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in json.loads(stack.run("status", "--json", *files).stdout)["resources"]}

    docker("kill", f"{stack.name}-qdrant")
    docker("kill", f"{stack.name}-redis")
    qdrant = wait_for(lambda: (r := status()["qdrant"])["state"] == "failed" and r, 30)
    assert qdrant["message"].startswith("killed by signal 9 (SIGKILL)")  # as a process would read
    redis = wait_for(lambda: (r := status()["redis"])["state"] == "ready" and r["restarts"] == 1 and r, 30)
    assert redis["restarts"] == 1
    assert stack.run("status", *files).returncode == 1  # something is not ready


@pytest.fixture
def solo(project: Project) -> Iterator[Project]:
    """A project of our own with a known name, checked for leftovers afterwards."""
    project.name = f"t{uuid.uuid4().hex[:8]}"
    yield project
    project.run("down", "--volumes", timeout=180)
    left = leftovers(project.name)
    for item in left:
        kind, ident = item.split()
        subprocess.run(["docker", kind, "rm", "-f", ident], capture_output=True)
    assert not left, f"test left docker objects behind: {left}"


def sleeps_in(container: str) -> int:
    """How many `sleep 1000` run in the container (-1: it is not running)."""
    try:
        lines = docker("top", container).splitlines()[1:]
    except subprocess.CalledProcessError:
        return -1
    return sum(1 for line in lines if line.split(None, 7)[-1] == "sleep 1000")


def redis_resource(name: str, extra: str) -> str:
    return (f'[project]\nname = "{name}"\nstate_dir = ".state"\nhealth_listen = "127.0.0.1:0"\n\n'
            f'[resources.cache]\nruntime = "docker"\nimage = "vrooli-test/redis:7"\n'
            f'ports = ["127.0.0.1:{free_port()}:6379"]\n{extra}\n')


def test_container_killed_by_sigkill_reads_as_a_process_does(solo: Project) -> None:
    solo.write(redis_resource(solo.name, 'health = { probe = "redis" }'))
    assert solo.run("up", timeout=180).returncode == 0
    docker("kill", f"{solo.name}-cache")
    row = wait_for(lambda: (r := solo.rows()["cache"])["state"] == "failed" and r, 30)
    assert row["message"].startswith("killed by signal 9 (SIGKILL)"), row["message"]
    assert row["exit_code"] == -9


def test_hung_exec_inside_the_container_is_killed_not_piled_up(solo: Project) -> None:
    solo.write(redis_resource(solo.name, 'start_timeout = "5s"\n'
                              'health = { probe = "exec", command = ["sh", "-c", "sleep 1000"], inside = true, '
                              'timeout = "200ms" }'))
    up = subprocess.Popen([sys.executable, "-m", "orchestrator", "up"], cwd=solo.dir,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        container = f"{solo.name}-cache"
        wait_for(lambda: sleeps_in(container) >= 0, 60)
        counts = []
        while up.poll() is None:
            counts.append(sleeps_in(container))
            time.sleep(0.1)
        _out, err = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.communicate()
    assert up.returncode == 1
    assert "cache: failed: not ready after 5s: probe timed out after 0.2s" in err
    assert len(counts) > 10 and max(counts) <= 1, counts  # each hung exec killed before the next one


def test_an_exec_that_cannot_be_killed_blocks_the_next_instead_of_piling_up(
        solo: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    # With a remote engine the exec's pid means nothing here and cannot be killed: the
    # hung exec is remembered and no second one starts beside it until it ends.
    import anyio

    from orchestrator import config
    from orchestrator.infra.logs import OutputLog
    from orchestrator.runtimes import docker as docker_runtime

    monkeypatch.setattr(docker_runtime, "_same_pid_namespace", lambda pid, other: False)
    path = solo.write(redis_resource(solo.name, ""))
    project = config.load([path], {})
    spec = project.resources["cache"]
    container = f"{solo.name}-cache"

    async def scenario() -> list[int]:
        runtime = docker_runtime.DockerRuntime(project)
        counts = []
        async with anyio.create_task_group() as tg:
            instance = await runtime.start(spec, OutputLog(solo.dir / "cache.log"), tg)
            try:
                for _ in range(4):
                    started = time.monotonic()
                    with pytest.raises(TimeoutError):
                        await instance.exec_inside(("sh", "-c", "sleep 1000"), 0.3)
                    assert time.monotonic() - started < 5
                    counts.append(sleeps_in(container))
                    await anyio.sleep(0.2)
            finally:
                await instance.stop("SIGTERM", 5)
                await runtime.cleanup(project, remove_volumes=True)
                tg.cancel_scope.cancel()
        return counts

    assert anyio.run(scenario) == [1, 1, 1, 1]


def test_postgres_data_survives_down_and_up(stack: Project) -> None:
    assert up(stack, "postgres").returncode == 0
    env = {**os.environ, "PGPASSWORD": "vrooli"}
    psql = ["psql", "-h", "127.0.0.1", "-p", "5433", "-U", "vrooli", "-d", "vrooli", "-tAc"]
    subprocess.run([*psql, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')"],
                   env=env, check=True, capture_output=True)
    assert stack.run("down", *stack.files).returncode == 0
    assert not docker("ps", "-aq", "--filter", f"label={LABEL}={stack.name}").split()
    assert up(stack, "postgres").returncode == 0
    out = subprocess.run([*psql, "SELECT v FROM kept"], env=env, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "still here"
    # A plain `down` keeps the volume; `down --volumes` afterwards still removes it.
    assert stack.run("down", *stack.files).returncode == 0
    assert docker("volume", "ls", "-q", "--filter", f"label={LABEL}={stack.name}").split()
    assert stack.run("down", "--volumes", *stack.files).returncode == 0
    assert leftovers(stack.name) == []


def test_exec_probe_runs_inside_the_container(stack: Project) -> None:
    stack.write('[resources.redis]\nhealth = { probe = "exec", command = ["redis-cli", "ping"], inside = true }\n',
                "inside.toml")
    # No redis-cli on the supervisor's PATH: the probe can only pass inside the container.
    env = {**os.environ, "PATH": "/nonexistent"}
    done = subprocess.run([sys.executable, "-m", "orchestrator", "up", *stack.files, "-f", "inside.toml", "redis"],
                          cwd=stack.dir, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    status = json.loads(stack.run("status", "--json", *stack.files, "-f", "inside.toml", "redis").stdout)
    assert status["resources"][0]["message"] == "exec redis-cli exited 0"


def test_missing_image_names_the_image_and_the_fix(stack: Project) -> None:
    stack.write('[resources.qdrant]\nimage = "vrooli-test/does-not-exist:1"\n', "missing.toml")
    done = stack.run("up", *stack.files, "-f", "missing.toml", "qdrant", timeout=120)
    assert done.returncode == 1
    assert "qdrant: failed: image vrooli-test/does-not-exist:1 is not available locally and the pull failed" \
        in done.stderr
    assert "image = \"<local image>\"" in done.stderr
    assert "Traceback" not in done.stderr


def test_unreachable_engine_is_one_line_and_nothing_starts(project: Project) -> None:
    project.write("""
        [resources.native]
        command = ["sleep", "1000"]
        [resources.db]
        runtime = "docker"
        image = "vrooli-test/redis:7"
    """)
    env = {**os.environ, "DOCKER_HOST": "unix:///tmp/vrooli-no-engine.sock"}
    done = subprocess.run([sys.executable, "-m", "orchestrator", "up"], cwd=project.dir, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == ["vrooli: cannot reach the Docker engine at unix:///tmp/vrooli-no-engine.sock: "
                     "the engine is not running or not reachable"]
    status = json.loads(project.run("status", "--json").stdout)
    assert {r["state"] for r in status["resources"]} <= {"pending", "stopped"}
    assert all(r["pid"] is None for r in status["resources"])


@pytest.fixture
def local_registry(shared_tmp: Path) -> Iterator[str]:
    """A real registry (Debian's docker-registry) on loopback, holding one test image."""
    if not shutil.which("docker-registry"):
        pytest.fail("docker-registry is required (scripts/setup.sh installs it)")
    port = free_port()
    (shared_tmp / "registry.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {shared_tmp / 'registry'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(shared_tmp / "registry.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    image = f"127.0.0.1:{port}/vrooli-test/pulled:1"
    try:
        wait_for(lambda: subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/v2/"],
                                        capture_output=True).returncode == 0, 20)
        # A layer of its own (2 MB of random bytes on top of the redis image), so the pull
        # really downloads something rather than finding every layer already present.
        context = shared_tmp / "context"
        context.mkdir()
        (context / "blob").write_bytes(os.urandom(2_000_000))
        (context / "Dockerfile").write_text("FROM vrooli-test/redis:7\nCOPY blob /blob\n")
        subprocess.run(["docker", "build", "-q", "-t", image, str(context)], check=True, capture_output=True,
                       env={**os.environ, "DOCKER_BUILDKIT": "0"})
        docker("push", image)
        docker("rmi", image)  # now only the registry has it
        yield image
    finally:
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)
        proc.terminate()
        proc.wait(10)


def test_missing_image_is_pulled_with_progress(project: Project, local_registry: str) -> None:
    project.write(f"""
        [resources.cache]
        runtime = "docker"
        image = "{local_registry}"
        ports = ["127.0.0.1:{free_port()}:6379"]
        health = {{ probe = "redis" }}
    """)
    try:
        done = project.run("up", timeout=180)
        assert done.returncode == 0, done.stderr
        events = [json.loads(line) for line in (project.state_dir / "supervisor.log").read_text().splitlines()
                  if line.startswith("{")]
        pulled = [e for e in events if e.get("event") == "pulled image"]
        assert pulled and pulled[0]["image"] == local_registry
        assert pulled[0]["layers"] >= 1 and pulled[0]["megabytes"] > 1
        assert project.rows()["cache"]["state"] == "ready"
    finally:
        project.run("down", timeout=120)


def test_sdk_runs_without_a_charset_detector_and_keeps_the_engines_words() -> None:
    # The runtime declines requests' charset_normalizer (a third of the SDK's import); the
    # engine's error text must still come through, and no warning may reach the logs.
    script = """
import sys
import orchestrator.runtimes.docker
import docker, docker.errors
client = docker.from_env()
assert client.ping()
try:
    client.images.get("vrooli-test/no-such-image:1")
except docker.errors.ImageNotFound as exc:
    print("explanation:", exc.explanation)
print("detector loaded:", sys.modules.get("charset_normalizer") is not None)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "No such image: vrooli-test/no-such-image:1" in done.stdout
    assert "detector loaded: False" in done.stdout
    assert done.stderr == ""
