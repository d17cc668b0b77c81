"""The system daemon as an operator reaches it: `vrooli daemon` run by root with
systemd's STATE_DIRECTORY, and the CLI run by root, by a member of the control group and by
a user who is neither — real processes, real uids (setpriv), no systemd needed.

The unprivileged CLI runs the system's python3.11 with a copy of the packages it imports:
the test interpreter's own site-packages lie under /root (0700), which `nobody` cannot read.
"""

from __future__ import annotations

import contextlib
import grp
import importlib
import json
import os
import platform
import select
import shutil
import signal
import site
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import load
from orchestrator.daemon import privileges
from orchestrator.errors import ConfigError
from tests.conftest import ROOT, free_port, wait_for

NOBODY = 65534
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="runs the daemon as root and the CLI as other uids"),
    pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv (util-linux)"),
]


def control_group() -> grp.struct_group:
    """An existing group `nobody` is not in (no users or groups are created)."""
    for name in ("users", "src", "games", "staff"):
        try:
            group = grp.getgrnam(name)
        except KeyError:
            continue
        if "nobody" not in group.gr_mem and group.gr_gid != NOBODY:
            return group
    pytest.skip("no existing group to use as the control group")


@pytest.fixture(scope="module")
def world_readable_site() -> Iterator[Path]:
    """The third-party packages the CLI imports, copied where `nobody` can read them."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip(f"needs {SYSTEM_PYTHON} (the same minor version) for the unprivileged CLI")
    target = Path(tempfile.mkdtemp(prefix="vrooli-site-", dir="/tmp"))
    target.chmod(0o755)
    for name in ("orchestrator.cli.app", "orchestrator.client.up", "structlog", "anyio", "psutil", "httpx",
                 "regex", "tomli_w", "h11", "click", "typing_extensions"):
        importlib.import_module(name)
    roots = [Path(p) for p in site.getsitepackages()]
    tops: set[Path] = set()
    for module in list(sys.modules.values()):
        where = Path(getattr(module, "__file__", None) or "/")
        for base in roots:
            if base in where.parents:
                top = base / where.relative_to(base).parts[0]
                if not top.name.startswith(("__editable", "_distutils")):
                    tops.add(top)
    for top in tops:
        (shutil.copytree if top.is_dir() else shutil.copy)(top, target / top.name)
    subprocess.run(["chmod", "-R", "a+rX", str(target)], check=True)
    yield target
    shutil.rmtree(target, ignore_errors=True)


@dataclass
class SystemDaemon:
    base: Path
    config: Path
    run_dir: Path
    state: Path
    group: grp.struct_group
    proc: subprocess.Popen[bytes]
    stderr: Path
    site: Path
    port: int

    def cli(self, *args: str, uid: int = 0, groups: list[int] | None = None, gid: int | None = None,
            cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`vrooli ARGS` as root (this interpreter) or as `uid` with `groups` (setpriv), with
        nothing of the daemon's environment: only where the daemon's record lies."""
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.base), "VROOLI_DAEMON_DIR": str(self.run_dir),
               "LANG": "C.UTF-8"}
        if uid == 0:
            command = [sys.executable, "-m", "orchestrator", *args]
            env["PYTHONPATH"] = str(ROOT)
        else:
            drop = ["setpriv", f"--reuid={uid}", f"--regid={uid if gid is None else gid}"]
            drop += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
            command = [*drop, str(SYSTEM_PYTHON), "-m", "orchestrator", *args]
            env["PYTHONPATH"] = f"{self.site}:{ROOT}"
        return subprocess.run(command, cwd=cwd or self.base, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def member(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli(*args, uid=NOBODY, groups=[self.group.gr_gid])

    def stranger(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli(*args, uid=NOBODY)


def daemon_environ(base: Path, group: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_STATE_HOME", "JOURNAL_STREAM")}
    return {**env, "PYTHONPATH": str(ROOT), "STATE_DIRECTORY": str(base / "state"),
            "VROOLI_DAEMON_DIR": str(base / "run"), "VROOLI_CONTROL_GROUP": group}


def write_config(base: Path, port: int, extra: str = "") -> Path:
    project = base / "etc"
    project.mkdir(exist_ok=True)
    project.chmod(0o755)
    config = project / "resources.toml"
    config.write_text(textwrap.dedent(f"""\
        [project]
        name = "sysd{port}"
        health_listen = "127.0.0.1:0"

        [resources.web]
        command = ["{sys.executable}", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
        health = {{ probe = "tcp", port = {port} }}
        """) + textwrap.dedent(extra))
    config.chmod(0o644)
    return config


@pytest.fixture(scope="module")
def system_daemon(world_readable_site: Path) -> Iterator[SystemDaemon]:
    group = control_group()
    base = Path(tempfile.mkdtemp(prefix="vrooli-sysd-", dir="/tmp"))
    base.chmod(0o755)
    (base / "state").mkdir(mode=0o755)
    port = free_port()
    config = write_config(base, port, """
        [resources.broken]
        command = ["/bin/sh", "-c", "echo cannot start >&2; exit 3"]
        """)
    with launched(base, config, port, group, world_readable_site) as daemon:
        yield daemon


@contextlib.contextmanager
def launched(base: Path, config: Path, port: int, group: grp.struct_group, site_dir: Path,
             **environ: str) -> Iterator[SystemDaemon]:
    """`vrooli daemon` as root, as systemd would start it; stopped and cleaned up after."""
    stderr = base / "daemon.stderr"
    with stderr.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "daemon", "-f", str(config)],
                                env={**daemon_environ(base, group.gr_name), **environ}, cwd=base,
                                stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True)
    daemon = SystemDaemon(base, config, base / "run", base / "state", group, proc, stderr, site_dir, port)
    try:
        wait_for(lambda: (daemon.run_dir / f"sysd{port}.json").exists() or proc.poll() is not None, 60)
        assert proc.poll() is None, stderr.read_text()
        wait_for(lambda: '"resource ready"' in stderr.read_text(), 60)
        yield daemon
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def status_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.stdout, done.stderr
    reply: dict[str, Any] = json.loads(done.stdout)
    return reply


# ------------------------------------------------------------------------ reaching it


def test_discovery_dir_socket_and_record_are_for_root_and_the_control_group(system_daemon: SystemDaemon) -> None:
    gid = system_daemon.group.gr_gid
    for path, mode in ((system_daemon.run_dir, 0o750), (system_daemon.run_dir / next(
            p.name for p in system_daemon.run_dir.iterdir() if p.suffix == ".sock"), 0o660)):
        info = os.lstat(path)
        assert (stat.S_IMODE(info.st_mode), info.st_gid, info.st_uid) == (mode, gid, 0), path
    record_path = next(p for p in system_daemon.run_dir.iterdir() if p.suffix == ".json")
    info = os.lstat(record_path)
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, gid)
    record = json.loads(record_path.read_text())
    assert record["pid"] == system_daemon.proc.pid
    assert record["files"] == [str(system_daemon.config)]
    assert Path(record["state_dir"]).parent == system_daemon.state


def test_root_reaches_the_daemon_with_its_file_and_without_one(system_daemon: SystemDaemon) -> None:
    done = system_daemon.cli("status", "--json", "-f", str(system_daemon.config))
    reply = status_of(done)
    assert reply["running"] is True, done.stderr
    assert reply["supervisor_pid"] == system_daemon.proc.pid
    assert reply["supervisor"] == {"pid": system_daemon.proc.pid, "mode": "daemon", "unit": None,
                                   "idle": False, "exits_in_seconds": None}
    rows = {r["name"]: r for r in reply["resources"]}
    assert rows["web"]["state"] == "ready"
    # No -f, no ./resources.toml, no VROOLI_FILE: the one system daemon running.
    empty = system_daemon.base / "elsewhere"
    empty.mkdir(exist_ok=True)
    text = system_daemon.cli("status", cwd=empty)
    assert f"supervisor: pid {system_daemon.proc.pid} (daemon)" in text.stdout, text.stderr


def test_a_group_member_works_the_daemon(system_daemon: SystemDaemon) -> None:
    config = str(system_daemon.config)
    def web() -> dict[str, Any]:
        reply = status_of(system_daemon.member("status", "--json", "-f", config))
        assert reply["supervisor_pid"] == system_daemon.proc.pid
        return next(r for r in reply["resources"] if r["name"] == "web")

    before = web()
    restarted = system_daemon.member("restart", "web", "-f", config)
    assert restarted.returncode == 0, restarted.stderr
    after = web()
    assert after["state"] == "ready" and after["pid"] != before["pid"]
    # logs and analyze read the state dir, which is not the member's to enter: through the socket.
    logs = system_daemon.member("logs", "broken", "--file", config, "-n", "5")
    assert logs.returncode == 0 and "cannot start" in logs.stdout, logs.stderr
    analyze = system_daemon.member("analyze", "--json", "-f", config)
    assert analyze.returncode == 0, analyze.stderr
    assert "web" in json.loads(analyze.stdout)["critical_chain"], analyze.stdout
    reload = system_daemon.member("reload", "-f", config)
    assert reload.returncode == 0 and "reloaded" in reload.stderr, reload.stderr
    up = system_daemon.member("up", "web", "-f", config)
    assert up.returncode == 0, up.stderr
    assert web()["pid"] == after["pid"]  # the daemon's own: nothing started twice


def read_until(fd: int, needle: bytes, seen: bytes = b"", timeout: float = 30) -> bytes:
    """Read `fd` until `needle` shows up (select first: a line that never comes cannot hang us)."""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            seen += os.read(fd, 65536)
    assert needle in seen, seen[-500:]
    return seen


def test_a_member_follows_a_log_through_the_socket(system_daemon: SystemDaemon) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(system_daemon.base), "VROOLI_DAEMON_DIR": str(system_daemon.run_dir),
           "PYTHONPATH": f"{system_daemon.site}:{ROOT}"}
    follower = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={system_daemon.group.gr_gid}",
         str(SYSTEM_PYTHON), "-m", "orchestrator", "logs", "web", "--file", str(system_daemon.config), "-f",
         "-n", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    try:
        assert follower.stdout is not None
        marker = f"/followed-{os.getpid()}".encode()
        seen = read_until(follower.stdout.fileno(), b"\n")  # the tail, sent at once
        with socket.create_connection(("127.0.0.1", system_daemon.port), timeout=10) as conn:
            conn.sendall(b"GET " + marker + b" HTTP/1.0\r\n\r\n")
            conn.recv(100)
        assert marker in read_until(follower.stdout.fileno(), marker, seen)
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 0, follower.stderr.read() if follower.stderr else ""


def test_the_control_group_as_primary_group_is_enough(system_daemon: SystemDaemon) -> None:
    """SO_PEERCRED's gid counts, not only the supplementary groups (SO_PEERGROUPS)."""
    done = system_daemon.cli("status", "--json", "-f", str(system_daemon.config), uid=NOBODY,
                             gid=system_daemon.group.gr_gid)
    assert status_of(done)["supervisor_pid"] == system_daemon.proc.pid, done.stderr


def test_a_user_outside_the_group_is_refused_in_one_line(system_daemon: SystemDaemon) -> None:
    done = system_daemon.stranger("status", "-f", str(system_daemon.config))
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"members of group {system_daemon.group.gr_name}" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_another_users_checkout_is_an_ordinary_project_for_a_stranger(system_daemon: SystemDaemon) -> None:
    """Refused is a file of root's or the daemon's user (the daemon's config); a project
    that belongs to some other user is just not running, whatever daemon the host has."""
    checkout = Path(tempfile.mkdtemp(prefix="vrooli-other-user-", dir="/tmp"))
    (checkout / "resources.toml").write_text('[project]\nstate_dir = "/tmp/vrooli-other-state"\n'
                                             '[resources.app]\ncommand = ["sleep", "60"]\n')
    try:
        for path in (checkout, checkout / "resources.toml"):
            os.chown(path, 4321, 4321)
            path.chmod(0o755 if path.is_dir() else 0o644)
        done = system_daemon.stranger("status", "-f", str(checkout / "resources.toml"))
        assert done.returncode == 3 and "not running" in done.stdout + done.stderr, (done.stdout, done.stderr)
        assert "members of group" not in done.stderr
    finally:
        shutil.rmtree(checkout, ignore_errors=True)


def test_the_daemon_refuses_a_stranger_even_through_an_open_socket(system_daemon: SystemDaemon) -> None:
    """The socket's mode is one fence, the peer check (SO_PEERCRED + SO_PEERGROUPS) the other."""
    run_dir = system_daemon.run_dir
    opened = [(p, stat.S_IMODE(os.lstat(p).st_mode)) for p in [run_dir, *run_dir.iterdir()]]
    try:
        for path, _ in opened:
            path.chmod(0o777 if path.suffix == ".sock" else 0o755 if path == run_dir else 0o644)
        done = system_daemon.stranger("status", "-f", str(system_daemon.config))
        listing = subprocess.run(["ls", "-la", str(run_dir)], capture_output=True, text=True).stdout
    finally:
        for path, mode in opened:
            path.chmod(mode)
    assert done.returncode == 1, (done.stdout, done.stderr, listing)
    assert f"uid {NOBODY} (nobody) is neither root, the supervisor's user, nor in group " \
           f"{system_daemon.group.gr_name}" in done.stderr, done.stderr


@pytest.mark.e2e
def test_the_daemon_keeps_its_own_environment(world_readable_site: Path) -> None:
    """Secrets come from the unit (EnvironmentFile=), not from an operator's shell: a member
    whose shell lacks them still sees, restarts and reloads the stack, and a reload from a
    shell with other values changes nothing."""
    base = Path(tempfile.mkdtemp(prefix="vrooli-sysd-env-", dir="/tmp"))
    base.chmod(0o755)
    (base / "state").mkdir(mode=0o755)
    port = free_port()
    config = write_config(base, port)
    config.write_text(config.read_text() + 'env = { SECRET = "${VROOLI_TEST_SECRET:?set it in the unit}" }\n')
    with launched(base, config, port, control_group(), world_readable_site, VROOLI_TEST_SECRET="s3cret") as daemon:
        status = daemon.member("status", "-f", str(config))
        assert status.returncode == 0, status.stderr
        assert "the config does not load" in status.stderr and "VROOLI_TEST_SECRET" in status.stderr
        assert "supervisor: pid" in status.stdout
        restart = daemon.member("restart", "web", "-f", str(config))
        assert restart.returncode == 0, restart.stderr
        analyze = daemon.member("analyze", "-f", str(config))
        assert analyze.returncode == 0 and "critical chain" in analyze.stdout, analyze.stderr
        models = daemon.member("models", "-f", str(config))  # reaches the daemon, which has none
        assert "no resource declares models" in models.stderr, models.stderr
        reload = daemon.member("reload", "-f", str(config))
        assert (reload.returncode, reload.stderr.strip()) == (0, "reloaded: nothing changed")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "VROOLI_DAEMON_DIR": str(daemon.run_dir),
               "VROOLI_TEST_SECRET": "not-the-units"}

        def web_pid() -> object:
            reply = status_of(daemon.cli("status", "--json", "-f", str(config)))
            return next(r["pid"] for r in reply["resources"] if r["name"] == "web")

        before = web_pid()
        other = subprocess.run([sys.executable, "-m", "orchestrator", "reload", "-f", str(config)], env=env,
                               capture_output=True, text=True, timeout=60)
        assert (other.returncode, other.stderr.strip()) == (0, "reloaded: nothing changed")
        up = subprocess.run([sys.executable, "-m", "orchestrator", "up", "-f", str(config)], env=env,
                            capture_output=True, text=True, timeout=60)
        assert up.returncode == 0, up.stderr
        assert web_pid() == before  # not restarted with the shell's value
        # Nor with a member's own override file: operating the stack is not redefining it
        # (an override could mount / into a container or set `user = "root"`).
        override = base / "member-override.toml"
        override.write_text('[resources.web]\nenv = { SECRET = "${VROOLI_TEST_SECRET:?}", INJECTED = "1" }\n')
        override.chmod(0o644)
        injected = daemon.member("reload", "-f", str(config), "-f", str(override))
        assert (injected.returncode, injected.stderr.strip()) == (0, "reloaded: nothing changed"), injected.stderr
        assert web_pid() == before


# ------------------------------------------------------------------------ the journal


def test_stderr_lines_carry_their_journal_priority(system_daemon: SystemDaemon) -> None:
    wait_for(lambda: '"resource failed"' in system_daemon.stderr.read_text(), 30)
    lines = system_daemon.stderr.read_text().splitlines()
    assert lines and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), lines[:5]
    by_event = {json.loads(line[3:])["event"]: line[:3] for line in lines}
    assert by_event["resource failed"] == "<3>"
    assert by_event["resource ready"] == "<6>" and by_event["resource starting"] == "<6>"
    errors = [json.loads(line[3:])["event"] for line in lines if line.startswith("<3>")]
    assert set(errors) == {"resource failed"}, errors


def test_a_member_stops_the_daemon_with_down(system_daemon: SystemDaemon) -> None:
    """Last of the tests on this daemon: `down` ends it (the unit goes inactive)."""
    done = system_daemon.member("down", "-f", str(system_daemon.config))
    assert done.returncode == 0 and "stopped" in done.stderr, done.stderr
    assert system_daemon.proc.wait(60) == 0
    assert not list(system_daemon.run_dir.iterdir())  # record and socket withdrawn
    again = system_daemon.cli("status", "-f", str(system_daemon.config))
    assert again.returncode == 3, again.stderr


# ------------------------------------------------------------------------ the sandbox


SECCOMP_DENY_RLIMIT = """
import ctypes, os, resource, struct, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))
# Like SystemCallFilter=~@resources with SystemCallErrorNumber=EPERM: setrlimit (160) and
# prlimit64 (302) answer EPERM; everything else is allowed. x86_64 only.
ins = [(0x20, 0, 0, 4), (0x15, 0, 5, 0xC000003E), (0x20, 0, 0, 0), (0x15, 2, 0, 160), (0x15, 1, 0, 302),
       (0x06, 0, 0, 0x7FFF0000), (0x06, 0, 0, 0x00050001), (0x06, 0, 0, 0x7FFF0000)]
code = b"".join(struct.pack("HBBI", *i) for i in ins)
buf = ctypes.create_string_buffer(code, len(code))
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
prog = Prog(len(ins), ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0, ctypes.get_errno()  # PR_SET_SECCOMP, FILTER
os.execv(sys.executable, [sys.executable, "-m", "orchestrator", *sys.argv[1:]])
"""


@pytest.mark.e2e
@pytest.mark.skipif(platform.machine() != "x86_64", reason="the seccomp filter is written for x86_64")
def test_a_denied_setrlimit_does_not_fail_the_start(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="vrooli-rlimit-", dir="/tmp"))
    try:
        config = write_config(base, free_port())
        stderr = base / "daemon.stderr"
        with stderr.open("wb") as sink:
            proc = subprocess.Popen([sys.executable, "-c", SECCOMP_DENY_RLIMIT, "daemon", "-f", str(config)],
                                    env=daemon_environ(base, "root"), cwd=base, stdout=subprocess.DEVNULL,
                                    stderr=sink, start_new_session=True)
        try:
            wait_for(lambda: '"resource ready"' in stderr.read_text() or proc.poll() is not None, 60)
            assert proc.poll() is None, stderr.read_text()
            assert "nofile limit not raised" in stderr.read_text()
            limits = Path(f"/proc/{proc.pid}/limits").read_text()
            assert any(line.startswith("Max open files") and line.split()[3:5] == ["1024", "4096"]
                       for line in limits.splitlines()), limits
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, stderr.read_text()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.e2e
def test_user_is_refused_at_start_when_the_daemon_cannot_switch_users() -> None:
    """As under NoNewPrivileges=yes with an empty CapabilityBoundingSet: one line, exit 2."""
    base = Path(tempfile.mkdtemp(prefix="vrooli-nnp-", dir="/tmp"))
    try:
        config = write_config(base, free_port())
        override = base / "etc" / "user.toml"
        override.write_text('[resources.web]\nuser = "nobody"\n')
        done = subprocess.run(["setpriv", "--no-new-privs", "--bounding-set=-setuid,-setgid",
                               sys.executable, "-m", "orchestrator", "daemon", "-f", str(config), "-f", str(override)],
                              env=daemon_environ(base, "root"), cwd=base, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"<3>{override}: resources.web.user: cannot start it as user 'nobody'")
        assert "without CAP_SETUID and CAP_SETGID and with NoNewPrivileges" in lines[0]
        assert not list((base / "state").glob("*/running.json"))  # nothing was started
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_switch_check_follows_the_capabilities(tmp_path: Path) -> None:
    config = tmp_path / "resources.toml"
    config.write_text('[resources.web]\ncommand = ["true"]\nuser = "nobody"\n'
                      '[resources.self]\ncommand = ["true"]\nuser = "root"\n')
    project = load([config])
    full = "CapEff:\t000001ffffffffff\nNoNewPrivs:\t1\n"
    none = "CapEff:\t0000000000000000\nNoNewPrivs:\t1\n"
    privileges.check_user_switch(project, status_text=full)  # root with its capabilities: it works
    with pytest.raises(ConfigError) as refused:
        privileges.check_user_switch(project, status_text=none)
    assert [line.split(": ")[1] for line in refused.value.lines()] == ["resources.web.user"]  # not `self`


def test_a_record_in_a_directory_others_may_write_is_ignored(tmp_path: Path) -> None:
    """A planted record must not point a root CLI at someone else's socket."""
    from orchestrator.infra import daemons, paths

    run_dir = Path(tempfile.mkdtemp(prefix="vrooli-run-", dir="/tmp"))
    try:
        config = tmp_path / "resources.toml"
        config.write_text("")
        record = {"project": "x", "files": [str(config)], "state_dir": "/nonexistent", "pid": os.getpid(),
                  "socket": str(run_dir / "x.sock"), "uid": 0, "unit": None}
        (run_dir / "x.json").write_text(json.dumps(record))
        run_dir.chmod(0o777)
        assert daemons.discover([config], defaulted=False, environ={"VROOLI_DAEMON_DIR": str(run_dir)}) == [config]
        assert paths.daemon_link(config) is None
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)



BAD_RECORDS = {
    "not JSON": "{",
    "a list": "[]",
    "no files": '{"project": "x", "files": [], "state_dir": "/s", "socket": "SOCK", "pid": PID, "uid": 0}',
    "files not a list": '{"project": "x", "files": 5, "state_dir": "/s", "socket": "SOCK", "pid": PID, "uid": 0}',
    "pid a string": '{"project": "x", "files": ["FILE"], "state_dir": "/s", "socket": "SOCK", "pid": "me", "uid": 0}',
    "pid 0 (kill would signal our group)": '{"project": "x", "files": ["FILE"], "state_dir": "/s", "socket": "SOCK", '
                                           '"pid": 0, "uid": 0}',
    "pid -1": '{"project": "x", "files": ["FILE"], "state_dir": "/s", "socket": "SOCK", "pid": -1, "uid": 0}',
    "a dead pid": '{"project": "x", "files": ["FILE"], "state_dir": "/s", "socket": "SOCK", "pid": 999999999, '
                  '"uid": 0}',
    "a pid past any int": '{"project": "x", "files": ["FILE"], "state_dir": "/s", "socket": "SOCK", '
                          '"pid": 99999999999999999999, "uid": 0}',
    "unit not a string": '{"project": "x", "files": ["FILE"], "state_dir": "/s", "socket": "SOCK", "pid": PID, '
                         '"uid": 4242, "unit": 5}',
    "oversized": '{"project": "' + "x" * 70000 + '"}',
    "socket outside the dir": '{"project": "x", "files": ["FILE"], "state_dir": "/s", "socket": "/tmp/x.sock", '
                              '"pid": PID, "uid": 0}',
    "served by another uid": '{"project": "x", "files": ["FILE"], "state_dir": "/s", "socket": "SOCK", "pid": PID, '
                             '"uid": 4242}',
    "missing keys": '{"project": "x"}',
    "NUL in a path": '{"project": "x", "files": ["FILE\\u0000"], "state_dir": "/s", "socket": "SOCK", "pid": PID, '
                     '"uid": 0}',
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_a_malformed_or_stale_record_is_ignored(case: str, tmp_path: Path) -> None:
    """Whatever lies in the discovery dir, the CLI links only a well-formed, live record of
    the dir's owner: anything else is as if no daemon ran (never a traceback)."""
    from orchestrator.infra import daemons, paths

    run_dir = Path(tempfile.mkdtemp(prefix="vrooli-run-", dir="/tmp"))
    try:
        config = tmp_path / "resources.toml"
        config.write_text("")
        text = BAD_RECORDS[case].replace("FILE", str(config)).replace("SOCK", str(run_dir / "x.sock"))
        (run_dir / "x.json").write_text(text.replace("PID", str(os.getpid())))
        assert daemons.discover([config], defaulted=False, environ={"VROOLI_DAEMON_DIR": str(run_dir)}) == [config]
        assert paths.daemon_link(config) is None
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def test_a_symlinked_record_or_discovery_dir_is_ignored(tmp_path: Path) -> None:
    from orchestrator.infra import daemons, paths

    run_dir = Path(tempfile.mkdtemp(prefix="vrooli-run-", dir="/tmp"))
    try:
        config = tmp_path / "resources.toml"
        config.write_text("")
        real = tmp_path / "real.json"
        real.write_text(json.dumps({"project": "x", "files": [str(config)], "state_dir": "/s", "pid": os.getpid(),
                                    "socket": str(run_dir / "x.sock"), "uid": 0}))
        (run_dir / "x.json").symlink_to(real)
        assert daemons.discover([config], defaulted=False, environ={"VROOLI_DAEMON_DIR": str(run_dir)}) == [config]
        link = tmp_path / "run-link"
        link.symlink_to(run_dir)
        (run_dir / "x.json").unlink()
        real.rename(run_dir / "x.json")
        assert daemons.discover([config], defaulted=False, environ={"VROOLI_DAEMON_DIR": str(link)}) == [config]
        assert paths.daemon_link(config) is None
        # The same record, in the real directory: linked (the control case).
        assert daemons.discover([config], defaulted=False, environ={"VROOLI_DAEMON_DIR": str(run_dir)}) == [config]
        assert paths.daemon_link(config) is not None
    finally:
        paths._daemon_links.clear()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.parametrize(("cgroup", "unit"), [
    ("0::/system.slice/vrooli.service\n", "vrooli.service"),
    ("0::/system.slice/vrooli.service/vrooli.supervisor\n", "vrooli.service"),  # moved for memory delegation
    ("12:pids:/system.slice/vrooli@a.service\n1:name=systemd:/system.slice/vrooli@a.service\n", "vrooli@a.service"),
    ("0::/\n", None),
])
def test_the_unit_is_read_from_the_cgroup(cgroup: str, unit: str | None) -> None:
    from orchestrator.infra import daemons

    assert daemons.unit_name({"INVOCATION_ID": "x"}, cgroup) == unit
    assert daemons.unit_name({}, cgroup) is None  # not started by systemd


def test_journal_stream_prefixes_only_when_stderr_is_that_stream(tmp_path: Path) -> None:
    """$JOURNAL_STREAM is inherited by children whose stderr is elsewhere: it must match."""
    from orchestrator.infra.logger import to_journal

    with (tmp_path / "a").open("w") as journal, (tmp_path / "b").open("w") as elsewhere:
        info = os.fstat(journal.fileno())
        environ = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        assert to_journal(journal, environ)
        assert not to_journal(elsewhere, environ)
        assert not to_journal(journal, {"JOURNAL_STREAM": "garbage"})
        assert not to_journal(journal, {})
