"""Lazy Ollama models against the Ollama stand-in (tests/standins/ollama.py).

No Ollama binary can be had here; the stand-in speaks the documented API and binds its
port before it serves, as Ollama does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from orchestrator.engine.models import base_url
from orchestrator.spec import PortSpec, ProbeSpec, ResourceSpec
from tests.conftest import ROOT, Project, free_port, wait_for

STANDIN = ROOT / "tests" / "standins" / "ollama.py"


def write_stack(project: Project, port: int, mode: str = "background", **env: str) -> str:
    settings = {"OLLAMA_HOST": f"127.0.0.1:{port}", "STANDIN_PULL_SECONDS": "0.2", "STANDIN_LOAD_SECONDS": "0.2",
                "STANDIN_START_DELAY": "0.3", **env}
    env_toml = ", ".join(f'{k} = "{v}"' for k, v in settings.items())
    project.write(f"""
        [resources.db]
        command = ["sh", "-c", "echo up; exec sleep 1000"]
        health = {{ probe = "log", pattern = "up" }}

        [resources.ollama]
        command = ["{sys.executable}", "{STANDIN}"]
        ports = [{port}]
        env = {{ {env_toml} }}
        restart = "always"
        restart_delay = "100ms"
        health = {{ probe = "http", url = "http://127.0.0.1:{port}/api/version" }}
        models = ["llama3.1:8b", "nomic-embed-text"]
        model_load = "{mode}"
        keep_alive = "10m"
    """)
    return f"http://127.0.0.1:{port}"


def models(project: Project) -> dict[str, dict[str, Any]]:
    done = project.run("models", "list", "--json")
    assert done.returncode == 0, done.stderr
    return {m["name"]: m for m in json.loads(done.stdout)["models"]}


def stats(url: str) -> dict[str, dict[str, int]]:
    answer: dict[str, dict[str, int]] = httpx.get(url + "/standin/stats").json()
    return answer


def test_background_load_never_holds_up_up(project: Project) -> None:
    url = write_stack(project, free_port(), STANDIN_LOAD_SECONDS="20")
    started = time.monotonic()
    done = project.run("up")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert took < 10  # the 20 s model load is still running
    assert project.rows()["ollama"]["state"] == "ready"
    loading = wait_for(lambda: (m := models(project))["llama3.1:8b"]["status"] == "loading" and m, 10)
    assert loading["llama3.1:8b"]["status"] == "loading"
    status = project.run("status")
    assert "models: 0/2 loaded (background)" in status.stdout
    final = wait_for(lambda: (m := models(project)) and all(x["status"] == "loaded" for x in m.values()) and m, 60)
    assert set(final) == {"llama3.1:8b", "nomic-embed-text:latest"}
    ps = httpx.get(url + "/api/ps").json()["models"]
    assert {m["name"] for m in ps} == {"llama3.1:8b", "nomic-embed-text:latest"}
    assert "models: 2/2 loaded" in project.run("status").stdout


def test_lazy_does_nothing_until_ensure_and_concurrent_ensures_share_one_pull(project: Project) -> None:
    url = write_stack(project, free_port(), "lazy", STANDIN_PULL_SECONDS="1.5")
    assert project.run("up").returncode == 0
    time.sleep(1.0)
    assert stats(url) == {"pulls": {}, "loads": {}}
    assert {m["status"] for m in models(project).values()} == {"absent"}
    cmd = [sys.executable, "-m", "orchestrator", "models", "ensure", "llama3.1:8b"]
    both = [subprocess.Popen(cmd, cwd=project.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    assert stats(url) == {"pulls": {"llama3.1:8b": 1}, "loads": {"llama3.1:8b": 1}}
    listed = models(project)
    assert listed["llama3.1:8b"]["status"] == "loaded"
    assert listed["nomic-embed-text:latest"]["status"] == "absent"
    # unload, then list says present
    assert project.run("models", "unload", "llama3.1:8b").returncode == 0
    assert models(project)["llama3.1:8b"]["status"] == "present"


def test_eager_waits_for_models(project: Project) -> None:
    url = write_stack(project, free_port(), "eager", STANDIN_LOAD_SECONDS="2")
    started = time.monotonic()
    done = project.run("up")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 2
    assert {m["name"] for m in httpx.get(url + "/api/ps").json()["models"]} == {"llama3.1:8b",
                                                                               "nomic-embed-text:latest"}


def test_failing_pull_is_retried_and_unknown_model_reports_ollamas_words(project: Project) -> None:
    url = write_stack(project, free_port(), STANDIN_PULL_FAIL_TIMES="1")
    assert project.run("up").returncode == 0
    wait_for(lambda: all(m["status"] == "loaded" for m in models(project).values()), 30)
    pulls = stats(url)["pulls"]
    assert sum(pulls.values()) == 3  # one failed, then both models pulled
    log = (project.state_dir / "supervisor.log").read_text()
    assert "max retries exceeded: read tcp: connection reset by peer" in log
    done = project.run("models", "ensure", "nonexistent-model")
    assert done.returncode == 1
    assert "nonexistent-model: pull model manifest: file does not exist" in done.stderr


def test_models_loaded_again_after_ollama_restarts(project: Project) -> None:
    url = write_stack(project, free_port(), "lazy", STANDIN_MODELS="llama3.1:8b")
    assert project.run("up").returncode == 0
    assert project.run("models", "ensure", "llama3.1:8b").returncode == 0
    first = project.rows()["ollama"]["pid"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: (r := project.rows()["ollama"])["state"] == "ready" and r["pid"] != first, 30)
    loaded = wait_for(lambda: {m["name"] for m in httpx.get(url + "/api/ps").json()["models"]}, 30)
    assert loaded == {"llama3.1:8b"}
    assert stats(url)["loads"] == {"llama3.1:8b": 1}  # the new Ollama loaded it once


def test_down_right_after_up_warns_of_nothing(project: Project) -> None:
    # The background warm-up waits a moment after the stack settles; a `down` in that
    # moment is an ordinary thing to do and must not leave "cannot list models" in the log.
    url = write_stack(project, free_port())
    # db takes a while to stop, so the supervisor outlives Ollama by more than the delay.
    text = project.file.read_text().replace(
        'command = ["sh", "-c", "echo up; exec sleep 1000"]',
        'command = ["sh", "-c", "trap \'sleep 0.8; exit 0\' TERM; echo up; while :; do sleep 0.05; done"]')
    project.file.write_text(text)
    assert project.run("up").returncode == 0
    assert project.run("down").returncode == 0
    log = (project.state_dir / "supervisor.log").read_text()
    assert '"supervisor stopped"' in log
    assert "cannot list models" not in log
    assert '"level": "warning"' not in log, log
    assert not httpx_reachable(url)


def httpx_reachable(url: str) -> bool:
    try:
        httpx.get(url + "/api/version", timeout=1)
    except httpx.TransportError:
        return False
    return True


# ------------------------------------------------------------ where Ollama answers: probe url, OLLAMA_HOST, ports

def ollama_spec(runtime: str = "process", url: str | None = None, host: str | None = None,
                ports: tuple[tuple[str, int, int], ...] = (), inside: bool = False) -> ResourceSpec:
    health = ProbeSpec("http", url=url, inside=inside) if url else None
    env = (("OLLAMA_HOST", host),) if host is not None else ()
    return ResourceSpec("ollama", runtime, command=("ollama", "serve"), env=env, health=health,
                        ports=tuple(PortSpec(h, c, host_ip=ip) for ip, h, c in ports))


@pytest.mark.parametrize(("spec", "expected"), [
    (ollama_spec(), "http://127.0.0.1:11434"),
    # the probe's URL says where the API answers, whatever else is set
    (ollama_spec(url="http://127.0.0.1:11500/api/version"), "http://127.0.0.1:11500"),
    (ollama_spec(url="http://127.0.0.2:11434/"), "http://127.0.0.2:11434"),
    (ollama_spec(url="http://localhost/api/tags"), "http://localhost:80"),
    (ollama_spec(url="https://models.internal:8443/ollama/api/version"), "https://models.internal:8443/ollama"),
    (ollama_spec(url="http://user:pw@127.0.0.1:11600/"), "http://127.0.0.1:11600"),
    (ollama_spec(url="http://[::1]:11700/api/version"), "http://[::1]:11700"),
    (ollama_spec(url="http://0.0.0.0:11800/", host="127.0.0.1:9"), "http://127.0.0.1:11800"),
    (ollama_spec(url="http://127.0.0.1:11500/", ports=(("127.0.0.1", 9, 9),)), "http://127.0.0.1:11500"),
    # a probe run inside the container names the container's view: not ours
    (ollama_spec("docker", url="http://127.0.0.1:11434/", inside=True, ports=(("127.0.0.1", 11900, 11434),)),
     "http://127.0.0.1:11900"),
    # OLLAMA_HOST, read as Ollama reads it
    (ollama_spec(host="127.0.0.1:11501"), "http://127.0.0.1:11501"),
    (ollama_spec(host="0.0.0.0"), "http://127.0.0.1:11434"),
    (ollama_spec(host=":11502"), "http://127.0.0.1:11502"),
    (ollama_spec(host="http://127.0.0.3"), "http://127.0.0.3:80"),
    (ollama_spec(host="https://127.0.0.4:9443"), "https://127.0.0.4:9443"),
    (ollama_spec(host="[::]:11503"), "http://[::1]:11503"),
    (ollama_spec(host="::1"), "http://[::1]:11434"),
    (ollama_spec(host="127.0.0.1:notaport"), "http://127.0.0.1:11434"),
    (ollama_spec(host="  "), "http://127.0.0.1:11434"),
    # ports: a process binds what it publishes; a container's mapping of its own port
    (ollama_spec(ports=(("127.0.0.1", 11504, 11504),)), "http://127.0.0.1:11504"),
    (ollama_spec("docker", ports=(("0.0.0.0", 11505, 11434),)), "http://127.0.0.1:11505"),
    (ollama_spec("docker", host="0.0.0.0:8080", ports=(("127.0.0.1", 11506, 11434), ("127.0.0.1", 11507, 8080))),
     "http://127.0.0.1:11507"),
    (ollama_spec("docker", host="0.0.0.0:11434"), "http://127.0.0.1:11434"),
])
def test_ollama_address_follows_probe_url_then_ollama_host_then_ports(spec: ResourceSpec, expected: str) -> None:
    assert base_url(spec) == expected


def test_models_reach_ollama_where_only_the_probe_url_says(project: Project) -> None:
    port = free_port()
    project.write(f"""
        [resources.ollama]
        command = ["sh", "-c", "OLLAMA_HOST=127.0.0.1:{port} exec {sys.executable} {STANDIN}"]
        env = {{ STANDIN_PULL_SECONDS = "0.2", STANDIN_LOAD_SECONDS = "0.2" }}
        health = {{ probe = "http", url = "http://127.0.0.1:{port}/api/version" }}
        models = ["llama3.1:8b"]
    """)
    assert project.run("up").returncode == 0
    wait_for(lambda: "models: 1/1 loaded" in project.run("status").stdout, 60)
    assert stats(f"http://127.0.0.1:{port}")["loads"] == {"llama3.1:8b": 1}


def test_status_says_why_no_model_loads(project: Project) -> None:
    port, wrong = free_port(), free_port()
    project.write(f"""
        [resources.ollama]
        command = ["sh", "-c", "OLLAMA_HOST=127.0.0.1:{port} exec {sys.executable} {STANDIN}"]
        ports = [{wrong}]
        health = {{ probe = "tcp", port = {port} }}
        models = ["llama3.1:8b"]
    """)
    assert project.run("up").returncode == 0
    line = wait_for(lambda: (out := project.run("status").stdout) and "cannot list models" in out and out, 30)
    # The table cuts a line at the terminal's width (200 cells in a pipe); the reason leads.
    assert f"models: 0/1 loaded (background); cannot list models: ollama at http://127.0.0.1:{wrong}" in line
    payload = json.loads(project.run("status", "--json").stdout)
    assert payload["models"][0]["error"].startswith(f"cannot list models: ollama at http://127.0.0.1:{wrong}")
