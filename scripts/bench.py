#!/usr/bin/env python3
"""Startup benchmark: vrooli against sequential start, docker-compose and the critical path.

Run on demand (never as a timed test):

    python3 scripts/bench.py --profile seed --rounds 3
    python3 scripts/bench.py --profile real --rounds 5      # needs dockerd + local images
    python3 scripts/bench.py --profile n8n --rounds 5       # real n8n (npm, see N8N_INSTALL)
    python3 scripts/bench.py --profile wide --rounds 5
    python3 scripts/bench.py --profile cli                  # CLI latency, daemon idle RSS/CPU
    python3 scripts/bench.py --profile warm --rounds 5      # the warm supervisor's targets (see bench_warm)
    python3 scripts/bench.py --profile warm --code /other/checkout   # the same, another checkout's vrooli

Each runner, per round:
- vrooli:     `vrooli up` from cold (no supervisor) until it returns ready (wall clock).
- sequential: the same resources one after another, each after the previous is ready,
              with the same probes and runtimes (upstream Vrooli's way).
- compose:    docker-compose 1.29 with the same images, `condition: service_healthy` and
              healthchecks every 200 ms; `up -d` until every service is healthy (real only).
- critical:   each resource's own time-to-ready measured alone by a bare launcher (Popen,
              or `start` of an already created container; checked every 5 ms with the
              same check), its dependencies already up; the longest chain, honouring each
              edge's condition, is the lower bound. vrooli's overhead is reported against it.

Results (medians, min-max, ratios) are printed and written to docs/bench/<profile>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STANDINS = ROOT / "tests" / "standins"
# The interpreter itself, not a version manager's shim: a shim's own start-up varies by caller.
PY = os.path.realpath(sys.executable)
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# How the benchmark runs `vrooli`: this checkout's code by default; --vrooli names an
# installed console script instead (a regular, non-editable install, as users have it).
CLIENT = [PY, "-m", "orchestrator"]


# ------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": round(median(values), 4) if values else None, "min": round(min(values), 4) if values else None,
            "max": round(max(values), 4) if values else None, "rounds": [round(v, 4) for v in values]}


def vrooli(*args: str, cwd: Path, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CLIENT, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if check and done.returncode not in (0,):
        raise RuntimeError(f"vrooli {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def answering_times(log_dir: Path) -> dict[str, float]:
    """When each stand-in first answered (it prints this), by resource name."""
    found: dict[str, float] = {}
    for path in log_dir.glob("*.log"):
        matches = re.findall(r"answering at (\d+\.\d+)", path.read_text(errors="replace"))
        if matches:
            found[path.stem] = float(matches[-1])
    return found


# ------------------------------------------------------------------ profiles


def seed_profile(workdir: Path, condition: str) -> str:
    """Stand-ins with the seed's per-resource times, as native processes."""
    pg, redis, qdrant, n8n, ollama = (free_port() for _ in range(5))
    timed = STANDINS / "timed.py"
    return textwrap.dedent(f"""
        [project]
        name = "bench-seed-{condition}"
        state_dir = "state-{condition}"
        health_listen = "127.0.0.1:0"

        [resources.postgres]
        command = ["{PY}", "{timed}", "--name", "postgres", "--port", "{pg}", "--delay", "3"]
        ports = [{pg}]
        health = {{ probe = "http", url = "http://127.0.0.1:{pg}/" }}

        [resources.redis]
        command = ["{PY}", "{timed}", "--name", "redis", "--port", "{redis}", "--delay", "1"]
        ports = [{redis}]
        health = {{ probe = "http", url = "http://127.0.0.1:{redis}/" }}

        [resources.qdrant]
        command = ["{PY}", "{timed}", "--name", "qdrant", "--port", "{qdrant}", "--delay", "5"]
        ports = [{qdrant}]
        health = {{ probe = "http", url = "http://127.0.0.1:{qdrant}/readyz" }}

        [resources.n8n]
        command = ["{PY}", "{timed}", "--name", "n8n", "--port", "{n8n}", "--delay", "15",
                   "--needs", "127.0.0.1:{pg}", "--needs", "127.0.0.1:{redis}"]
        ports = [{n8n}]
        depends_on = {{ postgres = "{condition}", redis = "{condition}" }}
        start_timeout = "60s"
        health = {{ probe = "http", url = "http://127.0.0.1:{n8n}/healthz/readiness" }}

        [resources.ollama]
        command = ["{PY}", "{STANDINS / 'ollama.py'}"]
        ports = [{ollama}]
        env = {{ OLLAMA_HOST = "127.0.0.1:{ollama}", STANDIN_START_DELAY = "1", STANDIN_LOAD_SECONDS = "20" }}
        health = {{ probe = "http", url = "http://127.0.0.1:{ollama}/api/version" }}
        models = ["llama3.1:8b"]
        model_load = "background"
    """)


def wide_profile(workdir: Path, count: int = 100, depth: int = 10) -> str:
    """`count` synthetic resources in a `depth`-deep DAG; each is ready once spawned."""
    rng = random.Random(7)
    per_level = count // depth
    lines = ['[project]\nname = "bench-wide"\nstate_dir = "state-wide"\nhealth_listen = "127.0.0.1:0"\n']
    for level in range(depth):
        for index in range(per_level):
            name = f"r{level:02d}-{index:02d}"
            deps = []
            if level:
                deps = sorted({f"r{level - 1:02d}-{rng.randrange(per_level):02d}" for _ in range(rng.randint(1, 3))})
            lines.append(f'[resources.{name}]\ncommand = ["sleep", "1000"]\ndepends_on = {json.dumps(deps)}\n')
    return "\n".join(lines)


PG_BIN = Path("/usr/lib/postgresql/15/bin")
N8N_INSTALL = """mkdir -p /opt/n8n-bench && cd /opt/n8n-bench && cat > package.json <<'EOF'
{"private": true, "dependencies": {"n8n": "1.123.0"}, "overrides": {"xlsx": "0.18.5"}}
EOF
npm install --no-audit --no-fund     # ~2 min, 1.6 GB; Node 20"""


def n8n_profile(workdir: Path, n8n_dir: Path) -> str:
    """Real n8n 1.123 (Node 20) on real Postgres 15 and redis-server, all native processes:
    the slow starter that a real stack has, with no stand-in anywhere."""
    binary = n8n_dir / "node_modules" / ".bin" / "n8n"
    if not binary.exists():
        raise SystemExit(f"bench: real n8n not found at {binary}; install it with:\n{N8N_INSTALL}")
    data = workdir / "pgdata"
    if not data.exists():
        workdir.chmod(0o755)
        data.mkdir()
        sockets = workdir / "pgsock"
        sockets.mkdir()
        for path in (data, sockets):
            shutil.chown(path, "postgres", "postgres")
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "--no-sync"], check=True, capture_output=True)
    pg, redis, n8n = (free_port() for _ in range(3))
    home = workdir / "n8n-home"
    home.mkdir(exist_ok=True)
    env = {"DB_TYPE": "postgresdb", "DB_POSTGRESDB_HOST": "127.0.0.1", "DB_POSTGRESDB_PORT": str(pg),
           "DB_POSTGRESDB_DATABASE": "postgres", "DB_POSTGRESDB_USER": "postgres", "N8N_PORT": str(n8n),
           "N8N_LISTEN_ADDRESS": "127.0.0.1", "N8N_USER_FOLDER": str(home), "N8N_DIAGNOSTICS_ENABLED": "false",
           "N8N_VERSION_NOTIFICATIONS_ENABLED": "false", "N8N_PERSONALIZATION_ENABLED": "false",
           "N8N_SECURE_COOKIE": "false", "N8N_RUNNERS_ENABLED": "false",
           "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "false"}
    env_toml = ", ".join(f'{k} = "{v}"' for k, v in env.items())
    return textwrap.dedent(f"""
        [project]
        name = "bench-n8n"
        state_dir = "state-n8n"
        health_listen = "127.0.0.1:0"

        [resources.postgres]
        command = ["{PG_BIN / 'postgres'}", "-D", "{data}", "-p", "{pg}", "-k", "{workdir / 'pgsock'}",
                   "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        user = "postgres"
        ports = [{pg}]
        stop_signal = "SIGINT"
        health = {{ probe = "postgres" }}

        [resources.redis]
        command = ["redis-server", "--port", "{redis}", "--save", "", "--appendonly", "no"]
        ports = [{redis}]
        health = {{ probe = "redis" }}

        [resources.n8n]
        command = ["{binary}", "start"]
        cwd = "{home}"
        ports = [{n8n}]
        env = {{ {env_toml} }}
        depends_on = {{ postgres = "healthy", redis = "healthy" }}
        start_timeout = "180s"
        health = {{ probe = "http", url = "http://127.0.0.1:{n8n}/healthz/readiness" }}
    """)


def real_files(workdir: Path) -> list[str]:
    shutil.copy(ROOT / "resources.toml", workdir / "resources.toml")
    shutil.copy(ROOT / "resources.local.toml", workdir / "resources.local.toml")
    (workdir / "tests").mkdir(exist_ok=True)
    if not (workdir / "tests" / "standins").exists():
        shutil.copytree(STANDINS, workdir / "tests" / "standins")
    (workdir / "bench.toml").write_text('[project]\nname = "benchreal"\nstate_dir = "state-real"\n'
                                        'health_listen = "127.0.0.1:0"\n')
    return ["resources.toml", "resources.local.toml", "bench.toml"]


# ------------------------------------------------------------------ runners


def file_args(files: list[str]) -> list[str]:
    return [a for f in files for a in ("-f", f)]


def chain_profile(workdir: Path, delay: float = 0.7) -> str:
    """Four stand-ins in a row (three hops), each ready `delay` s after it starts and only
    after the one before it is healthy: the chain the warm supervisor's targets are measured on."""
    ports = [free_port() for _ in range(4)]
    timed = STANDINS / "timed.py"
    lines = ['[project]\nname = "bench-chain"\nstate_dir = "state-chain"\nhealth_listen = "127.0.0.1:0"\n']
    for index, port in enumerate(ports):
        deps = f'depends_on = {{ c{index - 1} = "healthy" }}\n' if index else ""
        lines.append(f'[resources.c{index}]\ncommand = ["{PY}", "{timed}", "--name", "c{index}", "--port", "{port}", '
                     f'"--delay", "{delay}"]\nports = [{port}]\n{deps}'
                     f'health = {{ probe = "http", url = "http://127.0.0.1:{port}/" }}\n')
    return "\n".join(lines)


def run_vrooli(workdir: Path, files: list[str]) -> tuple[float, list[dict[str, Any]]]:
    started = time.monotonic()
    done = vrooli("up", *file_args(files), cwd=workdir, check=False)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"vrooli up failed: {done.stderr[-3000:]}")
    rows = json.loads(vrooli("status", "--json", *file_args(files), cwd=workdir, check=False).stdout)["resources"]
    return took, rows


def down(workdir: Path, files: list[str]) -> None:
    vrooli("down", *file_args(files), cwd=workdir, check=False)


def in_process(workdir: Path, files: list[str], body: Callable[[Any], Any]) -> Any:
    """Run `body(supervisor)` inside a supervisor of our own (no CLI, no control socket)."""
    import anyio

    from orchestrator import config
    from orchestrator.engine.supervisor import Supervisor

    project = config.load([workdir / f for f in files], ENV)

    async def main() -> Any:
        sup = Supervisor(project)
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            try:
                return await body(sup)
            finally:
                sup.shutdown_requested.set()

    return anyio.run(main)


def run_in_process(workdir: Path, files: list[str]) -> float:
    """vrooli's scheduling alone: request_up to settled in a running supervisor, without
    the CLI's and a new supervisor's Python start-up (~0.2 s, the rest of a cold `up`)."""

    async def body(sup: Any) -> float:
        started = time.monotonic()
        selected = sup.request_up()
        await sup.wait_settled(selected)
        return time.monotonic() - started

    return float(in_process(workdir, files, body))


def run_sequential(workdir: Path, files: list[str]) -> float:
    from orchestrator.plan import graph

    async def body(sup: Any) -> float:
        order = [n for wave in graph.waves(sup.edges()) for n in wave]
        started = time.monotonic()
        for name in order:
            sup.request_up([name], no_deps=True)
            await sup.wait_settled([name])
            if sup.records[name].state.value not in ("ready", "completed"):
                raise RuntimeError(f"sequential: {name} {sup.records[name].state.value}: {sup.records[name].message}")
        return time.monotonic() - started

    return float(in_process(workdir, files, body))


def measure_alone(workdir: Path, files: list[str]) -> dict[str, float]:
    """Each resource's own time-to-ready, started by a bare launcher once its dependencies are up.

    The bound must not contain vrooli's own overhead, so vrooli does not start the
    resource being timed: its dependencies come up through a supervisor (untimed), then a
    bare launcher starts it, `subprocess.Popen` for a process or one `start` call on an
    already created container, and checks it every 5 ms with the same check as its probe.
    """
    from orchestrator.plan import graph

    async def body(sup: Any) -> dict[str, float]:
        own: dict[str, float] = {}
        order = [n for wave in graph.waves(sup.edges()) for n in wave if sup.records[n].spec.enabled]
        for name in order:
            deps = graph.closure(sup.edges(), [name]) - {name}
            if deps:
                sup.request_up(sorted(deps))
                await sup.wait_settled(sorted(deps))
            own[name] = await bare_start(sup, name, workdir)
            await sup.stop(list(sup.records))
        return own

    return dict(in_process(workdir, files, body))


async def bare_start(sup: Any, name: str, workdir: Path) -> float:
    """Start one resource without vrooli and time it to its first passing check (5 ms polls)."""
    import anyio

    from orchestrator.infra.logs import OutputLog
    from orchestrator.probes import ProbeContext, make_probe, run_once

    spec = sup.records[name].spec
    log_path = workdir / f"bare-{name}.log"
    log_path.unlink(missing_ok=True)
    output = OutputLog(log_path)
    container: Any = None
    proc: subprocess.Popen[bytes] | None = None
    if spec.runtime == "docker":
        runtime = sup.runtime("docker")
        await runtime.prepare(spec)  # created, not started: the bare `docker start` is what is timed
        from orchestrator.runtimes.docker import container_name

        api = runtime.client().api
        container = container_name(sup.project.name, name)
    probe = make_probe(spec.health, ProbeContext(log=output, log_start=0)) if spec.health else None
    started = time.monotonic()
    try:
        if container is not None:
            await anyio.to_thread.run_sync(api.start, container)
        else:
            proc = bare_popen(spec, log_path)
        while probe is not None:
            if (await run_once(probe, spec.health.timeout)).ok:
                break
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"bare start of {name}: exited {proc.returncode}; see {log_path}")
            await anyio.sleep(0.005)
        took = time.monotonic() - started
    finally:
        if probe is not None:
            await probe.aclose()
        if proc is not None:
            stop_group(proc, spec.stop_signal)
        if container is not None:
            await anyio.to_thread.run_sync(lambda: api.remove_container(container, force=True))
    return took


def bare_popen(spec: Any, log_path: Path) -> subprocess.Popen[bytes]:
    """The resource's command as a plain child: its env, cwd and user, output to a file."""
    from orchestrator.runtimes.process import child_environment

    env = child_environment(spec)  # what the process runtime gives it, nothing more
    user = getattr(spec, "user", None)
    with open(log_path, "ab") as out:
        return subprocess.Popen(list(spec.command), cwd=spec.cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                user=user or None, group=_group_of(user) if user else None,
                                extra_groups=[] if user else None)


def _group_of(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def stop_group(proc: subprocess.Popen[bytes], signal_name: str) -> None:
    import signal as signals

    try:
        os.killpg(proc.pid, getattr(signals, signal_name, signals.SIGTERM))
        proc.wait(30)
    except (OSError, subprocess.TimeoutExpired):
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signals.SIGKILL)
        proc.wait()


def critical_path(workdir: Path, files: list[str], own: dict[str, float]) -> tuple[float, list[str]]:
    from orchestrator import config

    project = config.load([workdir / f for f in files], ENV)
    start: dict[str, float] = {}
    chain: dict[str, list[str]] = {}

    def earliest(name: str) -> float:
        if name not in start:
            best, path = 0.0, []
            for dep in project.resources[name].depends_on:
                at = earliest(dep.name) + (0.0 if dep.condition.value == "started" else own[dep.name])
                if at >= best:
                    best, path = at, [*chain[dep.name], dep.name]
            start[name], chain[name] = best, path
        return start[name]

    finish = {n: earliest(n) + own[n] for n in project.resources if project.resources[n].enabled}
    last = max(finish, key=lambda n: finish[n])
    return finish[last], [*chain[last], last]


def compose_file(workdir: Path) -> Path:
    """The real profile as docker-compose 1.29 sees it: same images, same ports."""
    hc = {"interval": "200ms", "timeout": "2s", "retries": 300}
    http_check = "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)"
    services = {
        "postgres": {"image": "vrooli-test/postgres:15", "ports": ["127.0.0.1:5433:5432"],
                     "environment": {"POSTGRES_USER": "vrooli", "POSTGRES_PASSWORD": "vrooli", "POSTGRES_DB": "vrooli"},
                     "volumes": ["postgres-data:/var/lib/postgresql/data"], "stop_signal": "SIGINT",
                     "healthcheck": {"test": ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "vrooli"], **hc}},
        "redis": {"image": "vrooli-test/redis:7", "command": ["redis-server", "--appendonly", "yes"],
                  "ports": ["127.0.0.1:6380:6379"], "volumes": ["redis-data:/data"],
                  "healthcheck": {"test": ["CMD", "redis-cli", "ping"], **hc}},
        "qdrant": {"image": "vrooli-test/standin:1", "command": ["/standins/qdrant.py"],
                   "ports": ["127.0.0.1:6333:6333"], "volumes": ["qdrant-data:/qdrant/storage"],
                   "healthcheck": {"test": ["CMD", "python3", "-c", http_check, "http://127.0.0.1:6333/readyz"], **hc}},
        "n8n": {"image": "vrooli-test/standin:1", "command": ["/standins/n8n.py"], "ports": ["127.0.0.1:5678:5678"],
                "environment": {"DB_TYPE": "postgresdb", "DB_POSTGRESDB_HOST": "postgres",
                                "DB_POSTGRESDB_PORT": "5432"},
                "volumes": ["n8n-data:/home/node/.n8n"],
                "depends_on": {"postgres": {"condition": "service_healthy"},
                               "redis": {"condition": "service_healthy"}},
                "healthcheck": {"test": ["CMD", "python3", "-c", http_check,
                                         "http://127.0.0.1:5678/healthz/readiness"], **hc}},
        "ollama": {"image": "vrooli-test/standin:1", "command": ["/standins/ollama.py"],
                   "environment": {"OLLAMA_HOST": "0.0.0.0:11434"}, "ports": ["127.0.0.1:11434:11434"],
                   "healthcheck": {"test": ["CMD", "python3", "-c", http_check,
                                            "http://127.0.0.1:11434/api/version"], **hc}},
    }
    doc = {"version": "2.4", "services": services,
           "volumes": {v: {} for v in ("postgres-data", "redis-data", "qdrant-data", "n8n-data")}}
    path = workdir / "docker-compose.yml"
    path.write_text(json.dumps(doc, indent=2))  # JSON is valid YAML
    return path


def run_compose(workdir: Path) -> float:
    path = compose_file(workdir)
    base = ["docker-compose", "-p", "benchcompose", "-f", str(path)]
    started = time.monotonic()
    subprocess.run([*base, "up", "-d"], check=True, capture_output=True, cwd=workdir)
    ids = subprocess.run([*base, "ps", "-q"], check=True, capture_output=True, text=True, cwd=workdir).stdout.split()
    while True:
        states = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", *ids],
                                capture_output=True, text=True, check=True).stdout.split()
        if states and all(s == "healthy" for s in states):
            break
        if time.monotonic() - started > 300:
            raise RuntimeError(f"compose: not healthy after 300 s: {states}")
        time.sleep(0.01)
    took = time.monotonic() - started
    subprocess.run([*base, "down"], check=True, capture_output=True, cwd=workdir)
    return took


def resource_usage(state: Path) -> dict[str, dict[str, float]]:
    """Memory and CPU per resource, as the health endpoint's /metrics reports them."""
    import urllib.request

    try:
        addr = (state / "health.addr").read_text().strip()
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=30) as response:
            text = response.read().decode()
    except OSError:
        return {}
    found: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        pattern = r'(vrooli_resource_memory_bytes|vrooli_resource_cpu_seconds_total)\{resource="([^"]+)"\} (\S+)'
        match = re.match(pattern, line)
        if match:
            key = "rss_mb" if "memory" in match.group(1) else "cpu_seconds"
            value = float(match.group(3)) / (1e6 if key == "rss_mb" else 1)
            found.setdefault(match.group(2), {})[key] = round(value, 3)
    return found


def detection(workdir: Path, state_dir: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    answered = answering_times(workdir / state_dir / "logs")
    return {r["name"]: ts(r["ready_at"]) - answered[r["name"]] for r in rows
            if r["name"] in answered and r.get("ready_at")}


# ------------------------------------------------------------------ suites


def bench_stack(workdir: Path, files: list[str], state_dir: str, rounds: int, with_compose: bool,
                label: str, alone_rounds: int = 1) -> dict[str, Any]:
    print(f"== {label}", flush=True)
    own: dict[str, float] = {}
    crit, chain = 0.0, []
    results: dict[str, list[float]] = {"vrooli": [], "in_process": [], "sequential": [], "compose": []}
    detect: list[float] = []
    per_resource: dict[str, list[float]] = {}
    down(workdir, files)
    usage: dict[str, dict[str, float]] = {}
    for index in range(rounds + 1):  # round 0 warms caches and volumes; not counted
        took, rows = run_vrooli(workdir, files)
        if index:
            results["vrooli"].append(took)
            detect += detection(workdir, state_dir, rows).values()
            for row in rows:
                per_resource.setdefault(row["name"], []).append(row["startup_seconds"])
        if index == rounds:
            usage = resource_usage(workdir / state_dir)
        down(workdir, files)
        inner = run_in_process(workdir, files)
        seq = run_sequential(workdir, files)
        if index:
            results["sequential"].append(seq)
            results["in_process"].append(inner)
        if with_compose:
            comp = run_compose(workdir)
            if index:
                results["compose"].append(comp)
        print(f"   round {index}{' (warm-up)' if not index else ''}: vrooli {took:.3f}s, "
              f"in-process {inner:.3f}s, sequential {seq:.3f}s"
              + (f", compose {comp:.3f}s" if with_compose else ""), flush=True)
        if not index:
            # Measured after the warm-up round, so first-start work (initdb into a new
            # volume) inflates neither the bound nor the rounds.
            # A resource whose own time varies (real n8n: +-0.1 s) is measured several times;
            # the bound uses the median, not one lucky or unlucky start.
            alone = [measure_alone(workdir, files) for _ in range(alone_rounds)]
            own = {name: median([a[name] for a in alone]) for name in alone[0]}
            crit, chain = critical_path(workdir, files, own)
            print(f"   own: { {k: round(v, 3) for k, v in own.items()} }; critical path {crit:.3f}s "
                  f"via {' -> '.join(chain)}", flush=True)
    out: dict[str, Any] = {
        "own_seconds": {k: round(v, 4) for k, v in own.items()},
        "critical_path_seconds": round(crit, 4), "critical_chain": chain,
        "vrooli": summary(results["vrooli"]), "in_process": summary(results["in_process"]),
        "sequential": summary(results["sequential"]),
        "detection_ms": summary([d * 1000 for d in detect]),
        "startup_seconds_per_resource": {k: summary(v) for k, v in per_resource.items()},
        "resource_usage_after_ready": usage,
    }
    vm = out["vrooli"]["median"]
    out["ratio_vrooli_to_critical"] = round(vm / crit, 4)
    out["ratio_in_process_to_critical"] = round(out["in_process"]["median"] / crit, 4)
    out["ratio_vrooli_to_sequential"] = round(vm / out["sequential"]["median"], 4)
    # Against the bare-launcher bound: what a cold `up` adds in all, and what each
    # dependency hop adds inside a running supervisor (the in-process run has no start-up).
    hops = max(1, len(chain) - 1)
    out["overhead_cold_seconds"] = round(vm - crit, 4)
    out["overhead_per_hop_seconds"] = round((out["in_process"]["median"] - crit) / hops, 4)
    if with_compose:
        out["compose"] = summary(results["compose"])
        out["ratio_vrooli_to_compose"] = round(vm / out["compose"]["median"], 4)
    return out


def bench_wide(workdir: Path, rounds: int) -> dict[str, Any]:
    """Cost growth with size: the same 10-deep DAG with 10 and with 100 resources.

    The slope (T100 - T10) / 90 is the time each extra resource adds end to end (a real
    process each); the fake runtime gives the scheduling and bookkeeping share alone.
    """
    sizes = {10: "wide10.toml", 100: "wide100.toml"}
    for count, name in sizes.items():
        (workdir / name).write_text(wide_profile(workdir, count=count).replace("bench-wide", f"bench-wide{count}")
                                    .replace("state-wide", f"state-wide{count}"))
    cli: dict[int, list[float]] = {10: [], 100: []}
    fake: dict[int, list[float]] = {10: [], 100: []}
    for index in range(rounds + 1):
        line = []
        for count, name in sizes.items():
            took, rows = run_vrooli(workdir, [name])
            assert all(r["state"] == "ready" for r in rows), rows
            down(workdir, [name])
            orchestration = wide_fake(workdir, [name])
            if index:
                cli[count].append(took)
                fake[count].append(orchestration)
            line.append(f"{count}: up {took:.3f}s, fake {orchestration * 1000:.1f} ms")
        print(f"   round {index}{' (warm-up)' if not index else ''}: " + "; ".join(line), flush=True)
    slope = (median(cli[100]) - median(cli[10])) / 90
    fake_slope = (median(fake[100]) - median(fake[10])) / 90
    return {"depth": 10, "vrooli_up_seconds": {str(k): summary(v) for k, v in cli.items()},
            "fake_runtime_seconds": {str(k): summary(v) for k, v in fake.items()},
            "per_resource_ms_end_to_end": round(slope * 1000, 3),
            "per_resource_ms_orchestration": round(fake_slope * 1000, 3)}


def wide_fake(workdir: Path, files: list[str]) -> float:
    """The same DAG on the fake runtime: scheduling and bookkeeping cost alone."""
    import anyio

    from orchestrator import config
    from orchestrator.engine.supervisor import Supervisor
    from orchestrator.runtimes.fake import FakeRuntime

    project = config.load([workdir / f for f in files], ENV)
    fake = FakeRuntime()

    async def main() -> float:
        sup = Supervisor(project, runtime_factory=lambda kind, proj: fake)
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            started = time.monotonic()
            selected = sup.request_up()
            await sup.wait_settled(selected)
            took = time.monotonic() - started
            sup.shutdown_requested.set()
        return took

    return float(anyio.run(main))


def bench_cli(workdir: Path, idle_seconds: float) -> dict[str, Any]:
    (workdir / "cli.toml").write_text(textwrap.dedent("""
        [project]
        name = "bench-cli"
        state_dir = "state-cli"
        health_listen = "127.0.0.1:0"
        [resources.redis]
        command = ["redis-server", "--port", "0", "--unixsocket", "/tmp/bench-cli-redis.sock", "--save", ""]
        [resources.web]
        command = ["sleep", "1000"]
        depends_on = ["redis"]
    """))
    files = ["cli.toml"]

    vrooli_bin = CLIENT
    out: dict[str, Any] = {"help": timed(workdir, [*vrooli_bin, "--help"])}
    vrooli("up", *file_args(files), cwd=workdir)
    out["status"] = timed(workdir, [*vrooli_bin, "status", *file_args(files)])
    out["up_on_running"] = timed(workdir, [*vrooli_bin, "up", *file_args(files)])
    import psutil

    pid = int((workdir / "state-cli" / "supervisor.pid").read_text())
    proc = psutil.Process(pid)
    time.sleep(2)
    before = proc.cpu_times()
    rss_samples = []
    end = time.monotonic() + idle_seconds
    while time.monotonic() < end:
        rss_samples.append(proc.memory_info().rss)
        time.sleep(1)
    after = proc.cpu_times()
    cpu = (after.user + after.system - before.user - before.system) / idle_seconds * 100
    out["daemon_idle_rss_mb"] = round(max(rss_samples) / 1e6, 2)
    out["daemon_idle_cpu_percent"] = round(cpu, 3)
    out["idle_seconds"] = idle_seconds
    down(workdir, files)
    return out


# ------------------------------------------------------------------ warm supervisor


def end_supervisor(workdir: Path, files: list[str]) -> None:
    """Stop the stack and end its supervisor, warm or not (`down --exit`; a checkout without
    it (exit 2, unknown option) ends the supervisor with a plain `down`)."""
    if vrooli("down", "--exit", *file_args(files), cwd=workdir, check=False).returncode == 2:
        down(workdir, files)


def drop_caches() -> bool:
    """A fresh boot's cold page cache, as far as a running machine can have one (root only)."""
    if os.geteuid() != 0:
        return False
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def supervisor_share(log: Path, began: float) -> float | None:
    """In a warm supervisor: from the `up` request's arrival ("supervisor waking") to the
    first "resource starting" (seconds); None if no warm supervisor served this `up`."""
    waking = None
    try:
        lines = log.read_text(errors="replace").splitlines()[-400:]
    except OSError:
        return None
    for line in lines:
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        at = ts(event.get("timestamp", "1970-01-01T00:00:00Z"))
        if event.get("event") == "supervisor waking" and at >= began:
            waking = at
        elif event.get("event") == "resource starting" and waking is not None:
            return at - waking
    return None


def timed(workdir: Path, args: list[str], n: int = 15) -> dict[str, Any]:
    """A whole command's wall time over N runs (in WORKDIR), summarized."""
    values = []
    for _ in range(n):
        started = time.monotonic()
        subprocess.run(args, cwd=workdir, env=ENV, capture_output=True, stdin=subprocess.DEVNULL)
        values.append(time.monotonic() - started)
    return summary(values)


def timed_up(workdir: Path, files: list[str]) -> tuple[float, float]:
    """(`vrooli up` to ready, `vrooli up` began to the first resource started), seconds.

    "Started" is the supervisor's `started_at`, taken just before it spawns the process."""
    began = time.time()
    done = subprocess.run([*CLIENT, "up", *file_args(files)], cwd=workdir, env=ENV,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    took = time.time() - began
    if done.returncode != 0:
        raise RuntimeError(f"vrooli up failed: {done.stderr[-3000:]}")
    rows = json.loads(vrooli("status", "--json", *file_args(files), cwd=workdir, check=False).stdout)["resources"]
    first = min(ts(r["started_at"]) for r in rows if r.get("started_at"))
    return took, first - began


def warm_stack(workdir: Path, files: list[str], rounds: int, fresh_rounds: int, label: str) -> dict[str, Any]:
    """`up` of a stopped stack, right after `down` (a warm supervisor, where there is one) and
    after a fresh boot (no supervisor, page cache dropped), against the bare critical path."""
    print(f"== {label}", flush=True)
    end_supervisor(workdir, files)
    timed_up(workdir, files)  # warm-up round: caches, .pyc files; not counted
    own = measure_alone_after(workdir, files)
    crit, chain = critical_path(workdir, files, own)
    print(f"   critical path {crit:.3f}s via {' -> '.join(chain)}", flush=True)
    timed_up(workdir, files)  # a supervisor again (measuring alone ended it): the first `down` leaves it warm
    # after_down: a warm supervisor (where the code has one); cold: no supervisor (ended),
    # the page cache as the last run left it; fresh_boot: no supervisor, page cache dropped.
    kinds: dict[str, dict[str, list[float]]] = {kind: {"up": [], "first_start": [], "supervisor": []}
                                                for kind in ("after_down", "cold", "fresh_boot")}
    log = workdir / state_dir_of(workdir, files) / "supervisor.log"
    dropped = False
    plan = ["after_down"] * rounds + ["cold"] * fresh_rounds + ["fresh_boot"] * fresh_rounds
    for kind in plan:
        if kind == "after_down":
            down(workdir, files)  # the supervisor stays warm if the code has that
        else:
            end_supervisor(workdir, files)
            if kind == "fresh_boot":
                dropped = drop_caches()
        began = time.time()
        took, first = timed_up(workdir, files)
        kinds[kind]["up"].append(took)
        kinds[kind]["first_start"].append(first)
        inside = supervisor_share(log, began)
        if inside is not None:
            kinds[kind]["supervisor"].append(inside)
        print(f"   {kind}: up {took:.3f}s, first start after {first * 1000:.0f} ms"
              + (f" ({inside * 1000:.1f} ms of it in the warm supervisor)" if inside is not None else ""), flush=True)
    end_supervisor(workdir, files)
    out: dict[str, Any] = {"critical_path_seconds": round(crit, 4), "critical_chain": chain,
                           "own_seconds": {k: round(v, 4) for k, v in own.items()}, "page_cache_dropped": dropped}
    for kind, values in kinds.items():
        up = summary(values["up"])
        out[kind] = {"up": up, "first_start_ms": summary([v * 1000 for v in values["first_start"]]),
                     "request_to_first_start_in_warm_supervisor_ms": summary([v * 1000 for v in values["supervisor"]]),
                     "ratio_to_critical": round(up["median"] / crit, 4) if up["median"] else None,
                     "over_critical_seconds": round(up["median"] - crit, 4) if up["median"] else None}
    out["target_after_down_seconds"] = round(1.02 * crit + 0.1, 4)
    out["target_fresh_boot_seconds"] = round(1.02 * crit + 0.2, 4)
    return out


def state_dir_of(workdir: Path, files: list[str]) -> str:
    match = re.search(r'state_dir = "([^"]+)"', (workdir / files[0]).read_text())
    return match.group(1) if match else ".state"


def measure_alone_after(workdir: Path, files: list[str]) -> dict[str, float]:
    end_supervisor(workdir, files)  # the bare launcher must not compete with a running stack
    return measure_alone(workdir, files)


def idle_cost(pid: int, seconds: float) -> dict[str, Any]:
    """An idle process's cost from /proc: CPU (utime + stime) and voluntary context switches
    (its wake-ups) over `seconds`, and its resident memory."""
    def sample() -> tuple[float, int, int]:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return cpu, int(status["voluntary_ctxt_switches"]), int(status["VmRSS"].split()[0]) * 1024

    cpu0, switches0, _ = sample()
    rss = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(1)
        rss.append(sample()[2])
    cpu1, switches1, _ = sample()
    return {"seconds": seconds, "rss_mb": round(max(rss) / 1e6, 2),
            "cpu_percent": round((cpu1 - cpu0) / seconds * 100, 4),
            "wakeups_per_minute": round((switches1 - switches0) / seconds * 60, 1)}


def bench_warm(workdir: Path, rounds: int, idle_seconds: float, with_seed: bool) -> dict[str, Any]:
    """The warm supervisor's targets: the first start after `up` began (after `down`, and after a fresh
    boot); `up` against 1.02 x the bare critical path + 0.1 s (+ 0.2 s after a fresh boot) on
    the chain and seed profiles; `status`, `up` on a running stack, `--help`; an idle warm
    supervisor's RSS and CPU. Each CLI latency is a whole command, interpreter included."""
    out: dict[str, Any] = {"code": ENV.get("PYTHONPATH", "installed"), "client": " ".join(CLIENT)}
    (workdir / "chain.toml").write_text(chain_profile(workdir))
    out["chain"] = warm_stack(workdir, ["chain.toml"], rounds, max(2, rounds // 2), "chain of four (three hops)")
    if with_seed:
        (workdir / "seed.toml").write_text(seed_profile(workdir, "healthy").replace("state-healthy", "state-seed"))
        out["seed"] = warm_stack(workdir, ["seed.toml"], max(2, rounds // 2), 1, "seed, n8n edges 'healthy'")
    files = ["chain.toml"]

    cmd = CLIENT
    python = Path(CLIENT[0]).parent / "python3" if len(CLIENT) == 1 else Path(PY)
    out["python_startup_seconds"] = timed(workdir, [str(python), "-c", "pass"])  # the interpreter alone, for scale
    out["help_seconds"] = timed(workdir, [*cmd, "--help"])
    vrooli("up", *file_args(files), cwd=workdir)
    out["status_running_seconds"] = timed(workdir, [*cmd, "status", *file_args(files)])
    out["up_running_seconds"] = timed(workdir, [*cmd, "up", *file_args(files)])
    down(workdir, files)
    pid_file = workdir / "state-chain" / "supervisor.pid"
    if pid_file.exists():
        time.sleep(2)  # let the last session's tasks finish
        out["idle_supervisor"] = idle_cost(int(pid_file.read_text()), idle_seconds)
    else:
        out["idle_supervisor"] = None  # this code keeps no supervisor after `down`
    end_supervisor(workdir, files)
    return out


def machine() -> dict[str, Any]:
    import psutil

    return {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
            "python": platform.python_version(), "kernel": platform.release(),
            "docker": subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True,
                                     text=True).stdout.strip() if shutil.which("docker") else None,
            "date": datetime.now().isoformat(timespec="seconds")}


def quiet_logs() -> None:
    """In-process supervisors log as JSON to a file, not over the benchmark's output."""
    from orchestrator.infra.logger import configure

    configure("json", open(os.devnull, "w"))


def main() -> None:
    quiet_logs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["seed", "real", "n8n", "wide", "cli", "warm"], required=True)
    parser.add_argument("--n8n-dir", type=Path, default=Path("/opt/n8n-bench"),
                        help="where real n8n is installed (profile n8n)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--code", type=Path, default=None,
                        help="the checkout whose `vrooli` the commands run (default: this one)")
    parser.add_argument("--no-seed", action="store_true", help="profile warm: the chain only")
    parser.add_argument("--vrooli", type=Path, default=None,
                        help="an installed `vrooli` console script to run instead of this checkout's code")
    args = parser.parse_args()
    if args.vrooli is not None:
        CLIENT[:] = [str(args.vrooli)]
        ENV.pop("PYTHONPATH")  # the installed package, not this checkout's files
    if args.code is not None:
        ENV["PYTHONPATH"] = str(args.code.resolve())
    workdir = Path(tempfile.mkdtemp(prefix="vrooli-bench-"))
    result: dict[str, Any] = {"profile": args.profile, "machine": machine(), "rounds": args.rounds,
                              "command": " ".join(["python3", "scripts/bench.py", *sys.argv[1:]])}
    try:
        if args.profile == "seed":
            for condition in ("started", "healthy"):
                (workdir / f"seed-{condition}.toml").write_text(seed_profile(workdir, condition))
                result[condition] = bench_stack(workdir, [f"seed-{condition}.toml"], f"state-{condition}",
                                                args.rounds, False, f"seed, n8n edges '{condition}'")
        elif args.profile == "real":
            files = real_files(workdir)
            try:
                result["stack"] = bench_stack(workdir, files, "state-real", args.rounds, True, "real")
            finally:  # leave no containers or volumes behind, ours or compose's
                vrooli("down", "--volumes", *file_args(files), cwd=workdir, check=False)
                if (workdir / "docker-compose.yml").exists():
                    subprocess.run(["docker-compose", "-p", "benchcompose", "-f", str(workdir / "docker-compose.yml"),
                                    "down", "--volumes"], capture_output=True, cwd=workdir)
        elif args.profile == "n8n":
            (workdir / "n8n.toml").write_text(n8n_profile(workdir, args.n8n_dir))
            try:
                result["stack"] = bench_stack(workdir, ["n8n.toml"], "state-n8n", args.rounds, False,
                                              "real n8n on real Postgres and Redis", alone_rounds=5)
            finally:
                vrooli("down", "-f", "n8n.toml", cwd=workdir, check=False)
        elif args.profile == "wide":
            result["wide"] = bench_wide(workdir, args.rounds)
        elif args.profile == "warm":
            result["warm"] = bench_warm(workdir, args.rounds, args.idle_seconds, not args.no_seed)
        else:
            result["cli"] = bench_cli(workdir, args.idle_seconds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = args.out or ROOT / "docs" / "bench" / f"{args.profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
