"""`rm -rf .state` while the supervisor runs.

It used to leave the supervisor unreachable and invisible: the next `up` started a second
supervisor and duplicate processes, and `down` said "nothing is running" (exit 0) while
they ran. The supervisor now rebuilds its state dir in place, or, when it cannot, stops
its resources cleanly.
"""

from __future__ import annotations

import json
import os
import shutil
import stat

import psutil

from tests.conftest import Project, processes_with_token, wait_for

SERVICE = """
    [resources.a]
    command = ["python3", "-c", "import time; print('a up', flush=True); time.sleep(600)"]
    health = { probe = "log", pattern = "a up" }
"""
MARKER = "time.sleep(600)"


def copies(token: str) -> list[psutil.Process]:
    found = []
    for proc in processes_with_token(token):
        try:
            if MARKER in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:  # gone meanwhile
            continue
    return found


def supervisors(project: Project) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "status", "cwd"]):
        if proc.info["name"] == "vrooli-sup" and proc.info["status"] != psutil.STATUS_ZOMBIE \
                and proc.info["cwd"] == str(project.dir):
            found.append(proc)
    return found


def test_deleted_state_dir_is_rebuilt_and_the_stack_stays_reachable(project: Project,
                                                                     no_leaked_processes: str) -> None:
    project.write(SERVICE)
    project.run("up", check=True)
    pid = project.rows()["a"]["pid"]
    [supervisor] = supervisors(project)
    shutil.rmtree(project.state_dir)

    wait_for(lambda: project.run("status").returncode == 0, timeout=30, interval=0.1)
    assert project.rows()["a"]["pid"] == pid
    state = project.state_dir
    assert int((state / "supervisor.pid").read_text()) == supervisor.pid
    assert stat.S_ISSOCK((state / "control.sock").lstat().st_mode)
    assert stat.S_IMODE(state.lstat().st_mode) == 0o700
    wait_for(lambda: "a" in json.loads((state / "running.json").read_text()), timeout=10)
    assert (state / "health.addr").exists()
    assert (state / "supervisor.log").exists()  # its own log goes on in the new dir

    project.run("up", check=True)  # no second supervisor, no second copy
    assert project.rows()["a"]["pid"] == pid
    assert [p.pid for p in supervisors(project)] == [supervisor.pid]
    assert [p.pid for p in copies(no_leaked_processes)] == [pid]

    project.run("down", check=True)
    wait_for(lambda: not copies(no_leaked_processes) and not supervisors(project), timeout=30)


def test_down_right_after_the_state_dir_was_deleted_stops_everything(project: Project,
                                                                     no_leaked_processes: str) -> None:
    project.write(SERVICE)
    project.run("up", check=True)
    assert len(copies(no_leaked_processes)) == 1
    shutil.rmtree(project.state_dir)
    done = project.run("down")
    assert done.returncode == 0, done.stderr
    assert "nothing is running" not in done.stderr
    wait_for(lambda: not copies(no_leaked_processes) and not supervisors(project), timeout=30)


def test_state_dir_replaced_by_a_foreign_one_stops_the_stack_cleanly(project: Project,
                                                                      no_leaked_processes: str) -> None:
    """Rebuilding is refused (someone else's directory took its place): stop, don't linger."""
    project.write(SERVICE)
    project.run("up", check=True)
    shutil.rmtree(project.state_dir)
    project.state_dir.mkdir(mode=0o700)
    os.chown(project.state_dir, 65534, 65534)
    try:
        wait_for(lambda: not copies(no_leaked_processes) and not supervisors(project), timeout=30)
        assert os.listdir(project.state_dir) == []  # nothing written into someone else's dir
    finally:
        os.chown(project.state_dir, 0, 0)
