"""The state dir, log dir and socket dir as a hostile local user would prepare them.

A symlink planted where root's `vrooli up` writes (logs/NAME.log -> /some/root/file) made
it append to and truncate the target. Every case here must be refused with one clear line
and exit 1, with the target left exactly as it was and nothing started.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import Project, wait_for

SLEEPER = """
    [resources.a]
    command = ["python3", "-c", "import time; print('up', flush=True); time.sleep(600)"]
    health = { probe = "log", pattern = "up" }
"""
PRECIOUS = b"root's own file: must never be appended to or truncated\n"
NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plants files as another user: needs root")


@pytest.fixture
def target(shared_tmp: Path) -> Iterator[Path]:
    """A file of root's outside the project: what a planted symlink points at."""
    outside = shared_tmp / "outside"
    outside.mkdir(mode=0o700)
    path = outside / "precious"
    path.write_bytes(PRECIOUS)
    yield path


def assert_untouched(path: Path) -> None:
    assert path.read_bytes() == PRECIOUS
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # nothing created beside it


def assert_refused(done: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 1 and one clear line (no traceback) naming what was refused."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("vrooli: ") and "refusing to use it" in lines[0], lines
    for word in words:
        assert word in lines[0], lines
    assert "Traceback" not in done.stderr


def private_state(project: Project) -> Path:
    logs = project.state_dir / "logs"
    logs.mkdir(parents=True, mode=0o700)
    project.state_dir.chmod(0o700)
    return logs


PLANTED = ["logs/a.log", "logs/a.log.1", "supervisor.log", "running.json", "supervisor.lock",
           "spawn.lock", "supervisor.pid", "health.addr", "control.sock"]


@pytest.mark.parametrize("name", PLANTED)
def test_symlink_planted_in_the_state_dir_is_refused(project: Project, target: Path, name: str) -> None:
    project.write(SLEEPER)
    private_state(project)
    (project.state_dir / name).symlink_to(target)
    done = project.run("up")
    assert_refused(done, str(project.state_dir / name), "symbolic link")
    assert_untouched(target)
    pid_file = project.state_dir / "supervisor.pid"
    assert pid_file.is_symlink() if name == "supervisor.pid" else not pid_file.exists()  # none started


def test_symlinked_state_dir_is_refused(project: Project, target: Path) -> None:
    project.write(SLEEPER)
    project.state_dir.symlink_to(target.parent, target_is_directory=True)
    assert_refused(project.run("up"), str(project.state_dir), "symbolic link")
    assert_untouched(target)


def test_symlinked_log_dir_is_refused(project: Project, target: Path) -> None:
    project.write(SLEEPER)
    project.state_dir.mkdir(mode=0o700)
    (project.state_dir / "logs").symlink_to(target.parent, target_is_directory=True)
    assert_refused(project.run("up"), str(project.state_dir / "logs"), "symbolic link")
    assert_untouched(target)


def _foreign(path: Path) -> None:
    os.chown(path, NOBODY, NOBODY)


OWNERSHIP = {
    "state dir owned by nobody": (".state", _foreign, "belongs to uid 65534"),
    "state dir world-writable": (".state", lambda p: p.chmod(0o777), "may be written by group or others"),
    "state dir group-writable": (".state", lambda p: p.chmod(0o770), "may be written by group or others"),
    "log dir owned by nobody": (".state/logs", _foreign, "belongs to uid 65534"),
    "log dir world-writable": (".state/logs", lambda p: p.chmod(0o777), "may be written by group or others"),
    "parent owned by nobody": (".", _foreign, "which belongs to uid 65534"),
    "parent world-writable": (".", lambda p: p.chmod(0o777), "which others may write to"),
}


@pytest.mark.parametrize("case", sorted(OWNERSHIP))
def test_state_dir_someone_else_controls_is_refused(project: Project, target: Path, case: str) -> None:
    relative, spoil, words = OWNERSHIP[case]
    project.write(SLEEPER)
    logs = private_state(project)
    (logs / "a.log").symlink_to(target)  # what its owner would have planted
    spoiled = (project.dir / relative).resolve() if relative == "." else project.dir / relative
    spoil(spoiled)
    try:
        assert_refused(project.run("up"), words)
        assert_untouched(target)
        assert sorted(p.name for p in project.state_dir.iterdir()) == ["logs"]  # nothing written
        if relative in (".state", "."):  # a client refuses too, before it talks to a socket in there
            assert_refused(project.run("status"), words)
    finally:
        os.chown(project.dir, 0, 0)
        project.dir.chmod(0o755)


def deep_project(project: Project) -> None:
    """A state dir too deep for a unix socket path: the socket goes to the socket dir."""
    deep = "deep/" + "d" * 60 + "/" + "e" * 60
    project.write(f'[project]\nname = "deep{os.getpid()}"\nstate_dir = "{deep}"\n'
                  f'health_listen = "127.0.0.1:0"\n' + SLEEPER.replace("\n    ", "\n"))


def symlinked(base: Path, real: Path) -> None:
    base.symlink_to(real, target_is_directory=True)


def world_writable(base: Path, real: Path) -> None:
    base.mkdir()
    base.chmod(0o777)


def owned_by_nobody(base: Path, real: Path) -> None:
    base.mkdir(mode=0o700)
    os.chown(base, NOBODY, NOBODY)


# Each makes `base` an unsafe socket dir; `real` is a safe directory a symlink can point at.
SOCKET_DIRS: dict[str, Callable[[Path, Path], None]] = {
    "symlink": symlinked,
    "world-writable": world_writable,
    "owned by nobody": owned_by_nobody,
}


@pytest.mark.parametrize("case", sorted(SOCKET_DIRS))
def test_unsafe_socket_dir_is_refused(project: Project, monkeypatch: pytest.MonkeyPatch,
                                      shared_tmp: Path, target: Path, case: str) -> None:
    deep_project(project)
    base = shared_tmp / "run"
    SOCKET_DIRS[case](base, target.parent)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    assert_refused(project.run("up"), "socket dir ($XDG_RUNTIME_DIR)", str(base))
    assert_untouched(target)
    if case != "symlink":
        assert list(base.iterdir()) == []


def test_safe_socket_dir_holds_a_private_socket(project: Project, monkeypatch: pytest.MonkeyPatch,
                                                shared_tmp: Path) -> None:
    deep_project(project)
    base = shared_tmp / "run"
    base.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    project.run("up", check=True)
    try:
        [sock] = list(base.iterdir())
        assert stat.S_ISSOCK(sock.lstat().st_mode) and stat.S_IMODE(sock.lstat().st_mode) == 0o600
        assert project.run("status").returncode == 0
    finally:
        project.run("down", check=True)


def test_every_state_file_is_private(project: Project) -> None:
    project.write(SLEEPER)
    project.run("up", check=True)
    wait_for(lambda: (project.state_dir / "health.addr").exists(), timeout=30)
    state = project.state_dir
    for directory in (state, state / "logs"):
        assert stat.S_IMODE(directory.lstat().st_mode) == 0o700, directory
    for name in ("running.json", "supervisor.pid", "supervisor.lock", "spawn.lock", "supervisor.log",
                 "health.addr", "logs/a.log"):
        info = (state / name).lstat()
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600, name


def test_symlink_planted_while_running_is_refused_not_followed(project: Project, target: Path) -> None:
    """The supervisor runs and `a` is stopped: its log replaced by a symlink, then `up a`."""
    project.write(SLEEPER)
    project.run("up", check=True)
    project.run("down", "a", check=True)
    log = project.state_dir / "logs" / "a.log"
    log.unlink()
    log.symlink_to(target)
    done = project.run("up", "a")
    assert done.returncode == 1
    assert f"a: failed: file {log} is a symbolic link" in done.stderr
    assert_untouched(target)


def test_rotation_replaces_a_planted_older_file_without_following_it(project: Project, target: Path) -> None:
    chatter = ("import time\\nprint('up', flush=True)\\nwhile True:\\n"
               "    print('x' * 999, flush=True)\\n    time.sleep(0.002)")
    project.write(f"""
        [resources.a]
        command = ["python3", "-c", "{chatter}"]
        log_max_size = "64k"
        health = {{ probe = "log", pattern = "up" }}
    """)
    project.run("up", check=True)
    older = project.state_dir / "logs" / "a.log.1"
    wait_for(lambda: older.exists(), timeout=30)
    older.unlink()
    older.symlink_to(target)
    wait_for(lambda: not older.is_symlink(), timeout=30)
    assert_untouched(target)
    assert older.lstat().st_uid == 0 and stat.S_IMODE(older.lstat().st_mode) == 0o600
    pid = project.rows()["a"]["pid"]
    project.run("down", check=True)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_validate_names_bad_log_keys(project: Project) -> None:
    project.write("""
        [resources.a]
        command = ["true"]
        log_max_size = "12 parsecs"
        log_max_files = -1

        [resources.b]
        command = ["true"]
        log_max_size = 10
        log_max_files = true
    """)
    done = project.run("validate")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert any("resources.a.log_max_size: expected a size from 1k to 1t" in line for line in lines), lines
    assert any("resources.a.log_max_files: expected a whole number from 0 to 1000" in line for line in lines)
    assert any("resources.b.log_max_size" in line for line in lines)
    assert any("resources.b.log_max_files" in line for line in lines)
    assert "Traceback" not in done.stderr
