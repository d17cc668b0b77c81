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
    return httpx.get(url + "/standin/stats").json()


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
