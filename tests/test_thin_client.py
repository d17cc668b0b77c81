"""The thin client: `status`, `up`, `down` and `restart` asked of the supervisor
already serving the files, without reading them here; and the way back to reading them
whenever that supervisor could answer differently from the full client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Project, masked, wait_for

CONFIG_MODULES = ("orchestrator.config", "orchestrator.spec", "tomllib")


def run_traced(project: Project, *args: str,
               env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`vrooli ARGS` and the modules it imported (`-X importtime`, removed from stderr)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator", *args], cwd=project.dir,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})
    lines = done.stderr.splitlines(keepends=True)
    modules = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    done.stderr = "".join(line for line in lines if not line.startswith("import time:"))
    return done, modules


def read_files(modules: set[str]) -> bool:
    return any(m in modules for m in CONFIG_MODULES)


def forget_registry() -> None:
    """Without its registry entry the client cannot find the supervisor but by the files."""
    folder = Path(os.environ["XDG_STATE_HOME"]) / "vrooli" / ".registry"
    for entry in folder.glob("*.json"):
        entry.unlink()


def app_log(project: Project) -> str:
    return (project.state_dir / "logs" / "app.log").read_text()


GREETER = """
[resources.app]
command = ["sh", "-c", "echo greeting=$$GREETING; exec sleep 600"]
{env}
health = {{ probe = "log", pattern = "greeting=" }}
[resources.idle]
command = ["sleep", "600"]
"""


def test_status_up_restart_and_down_on_a_running_stack_read_no_file(project: Project) -> None:
    project.write(GREETER.format(env=""))
    project.run("up", check=True)
    for args in (["status"], ["status", "--json", "app"], ["up"], ["up", "idle"], ["restart", "idle"]):
        done, modules = run_traced(project, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert not read_files(modules), f"`vrooli {' '.join(args)}` read the files: {sorted(modules)}"
    done, modules = run_traced(project, "down")
    assert done.returncode == 0 and "stopped" in done.stderr and not read_files(modules)
    assert project.run("status").returncode == 3


def test_the_thin_answer_is_the_full_clients(project: Project) -> None:
    """The same words and exit codes whichever way a command went."""
    project.write(GREETER.format(env=""))
    project.run("up", check=True)
    cases = [["status"], ["status", "--json"], ["status", "app"], ["status", "nope"], ["up", "nope"],
             ["restart", "nope"], ["down", "nope"], ["up", "--profile", "nope"], ["up", "--json", "idle"]]
    thin = {}
    for args in cases:
        done, _ = run_traced(project, *args)
        thin[tuple(args)] = done
    forget_registry()
    for args in cases:
        done, modules = run_traced(project, *args)
        assert read_files(modules), args  # the full way this time
        assert masked(thin[tuple(args)]) == masked(done), args
    assert thin[("status", "nope")].stderr.strip() == "vrooli: unknown resource 'nope' (known: app, idle)"
    assert thin[("up", "--profile", "nope")].returncode == 2
    # A resource added to the file but not started yet: "not running" (exit 3) either way.
    project.file.write_text(project.file.read_text() + '\n[resources.later]\ncommand = ["sleep", "600"]\n')
    project.run("up", "app", check=True)  # registers the files again (the thin way reads them now)
    thin_later, _ = run_traced(project, "status", "later")
    forget_registry()
    full_later, _ = run_traced(project, "status", "later")
    assert masked(thin_later) == masked(full_later) and full_later.returncode == 3, full_later.stderr


def test_a_new_variable_in_the_file_is_sent_by_the_full_way(project: Project) -> None:
    """The supervisor read the file when it referred to no $GREETING; now it does. A thin
    `up` cannot send a value it did not know to send: the supervisor declines, the client
    reads the file and sends it, and the app restarts with it."""
    project.write(GREETER.format(env=""))
    project.run("up", check=True)
    assert "greeting=\n" in app_log(project)
    project.write(GREETER.format(env='env = { GREETING = "${GREETING:-unset}" }'))
    done, modules = run_traced(project, "up", env={"GREETING": "hello"})
    assert done.returncode == 0, done.stderr
    assert read_files(modules), "a file referring to a variable the supervisor was not sent needs the full way"
    wait_for(lambda: "greeting=hello" in app_log(project))
    # Now the supervisor knows the name: a new value goes the thin way, and counts.
    done, modules = run_traced(project, "up", env={"GREETING": "bonjour"})
    assert done.returncode == 0 and not read_files(modules), done.stderr
    assert "config: restarted app" in done.stderr
    wait_for(lambda: "greeting=bonjour" in app_log(project))
    # Unset, it is unset for the supervisor too (the file's default applies).
    env = {k: v for k, v in os.environ.items() if k != "GREETING"}
    done = subprocess.run([sys.executable, "-m", "orchestrator", "up"], cwd=project.dir, capture_output=True,
                          text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: "greeting=unset" in app_log(project))


def test_a_broken_file_is_reported_by_the_full_client(project: Project) -> None:
    project.write(GREETER.format(env=""))
    project.run("up", check=True)
    project.file.write_text(project.file.read_text() + "\n[resources.app\n")
    done, modules = run_traced(project, "status")
    assert read_files(modules)
    assert "warning: the config does not load" in done.stderr and done.returncode == 0
    done, _ = run_traced(project, "up")
    assert done.returncode == 2 and "resources.toml" in done.stderr


def test_a_moved_state_dir_is_refused_as_before(project: Project) -> None:
    project.write(GREETER.format(env=""))
    project.run("up", check=True)
    project.file.write_text(project.file.read_text().replace('state_dir = ".state"', 'state_dir = ".other"'))
    done, modules = run_traced(project, "status")
    assert read_files(modules) and done.returncode == 3, done.stderr  # nothing runs from .other
    project.file.write_text(project.file.read_text().replace('state_dir = ".other"', 'state_dir = ".state"'))


def test_profiles_from_the_environment_count_on_the_thin_way(project: Project) -> None:
    project.write(GREETER.format(env="") + '\n[resources.extra]\ncommand = ["sleep", "600"]\nprofiles = ["debug"]\n')
    project.run("up", check=True)
    assert project.rows()["extra"]["state"] != "ready"  # not in an active profile
    done, modules = run_traced(project, "up", env={"VROOLI_PROFILES": "debug"})
    assert done.returncode == 0 and not read_files(modules), done.stderr
    assert project.rows()["extra"]["state"] == "ready"


def test_an_idle_supervisor_is_woken_the_thin_way_with_this_environment(project: Project,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables the file refers to are sent; the rest of this command's environment is
    what the woken supervisor's new processes inherit, as from one it forked."""
    monkeypatch.setenv("VROOLI_KEEP_WARM", "5m")
    project.write(GREETER.format(env='env = { GREETING = "${GREETING:-unset}" }').replace(
        "echo greeting=$$GREETING", "echo other=$$OTHER greeting=$$GREETING"))
    project.run("up", check=True)
    project.run("down", check=True)
    done, modules = run_traced(project, "up", env={"GREETING": "again", "OTHER": "inherited"})
    assert done.returncode == 0 and not read_files(modules), done.stderr
    wait_for(lambda: "other=inherited greeting=again" in app_log(project))
    status = json.loads(project.run("status", "--json").stdout)
    assert status["running"] is True


@pytest.mark.parametrize("command", ["status", "down"])
def test_an_idle_supervisor_leaves_status_and_down_to_the_full_client(project: Project, command: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VROOLI_KEEP_WARM", "5m")
    project.write(GREETER.format(env=""))
    project.run("up", check=True)
    project.run("down", check=True)
    done, modules = run_traced(project, command)
    assert read_files(modules)
    assert done.returncode == (3 if command == "status" else 0), done.stderr


def test_a_reader_that_stops_early_gets_no_traceback(project: Project) -> None:
    """`vrooli status --json | head -1`: the pipe closes under the answer; one quiet exit.
    (The answer, ~1 kB a resource, is made longer than a pipe holds, so the writer meets
    the closed pipe whatever the timing.)"""
    project.write(GREETER.format(env="") + "".join(f'\n[resources.more{n}]\ncommand = ["sleep", "600"]\n'
                                                  for n in range(120)))
    project.run("up", check=True, timeout=300)
    for args in (["status", "--json"],):
        reader = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=project.dir,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert reader.stdout is not None and reader.stderr is not None
        reader.stdout.readline()
        reader.stdout.close()  # as `head -1` does once it has its line
        error = reader.stderr.read().decode()
        assert reader.wait(timeout=60) == 0 and "Traceback" not in error, error


def test_a_thin_field_on_another_operation_is_a_bad_request(project: Project) -> None:
    from orchestrator.infra.control import Client

    project.write(GREETER.format(env=""))
    project.run("up", check=True)
    client = Client(project.state_dir / "control.sock")
    for request in ({"op": "ping", "thin": {}}, {"op": "reload", "thin": {}, "files": [str(project.file)]},
                    {"op": "ping", "thin": "x", "files": 5}, {"op": "status", "thin": {"environ_names": 5}}):
        reply = client.call(request)
        assert reply["ok"] is False and reply["exit_code"] == 2 and "bad request" in reply["error"], (request, reply)
    assert project.rows()["app"]["state"] == "ready"


def test_a_thin_down_waits_for_a_slow_stop(project: Project) -> None:
    """A stop can take longer than a question's 5 s (stop_timeout): the thin `down` waits,
    as the full one does, and does not ask a second time."""
    project.write("""
        [resources.stubborn]
        command = ["sh", "-c", "trap '' TERM; echo up; while :; do sleep 0.1; done"]
        stop_timeout = "7s"
        health = { probe = "log", pattern = "up" }
    """)
    project.run("up", check=True)
    done, modules = run_traced(project, "down")
    assert done.returncode == 0 and not read_files(modules), done.stderr
    assert done.stderr.strip().endswith("stopped stubborn"), done.stderr
    assert project.run("status").returncode == 3
