"""vrooli under a real systemd, as a server operator installs and runs it.

A container boots Debian bookworm with systemd as PID 1 (image vrooli-test/systemd:bookworm,
built by scripts/build-systemd-image.sh, which scripts/setup.sh runs). Inside it, with no
network at all: the checkout is built into a wheel from the wheels the image carries,
scripts/install-systemd.sh installs it offline, and the unit runs two real native resources
(redis-server, and a Python HTTP server that depends on it and writes into its data path).

The tests run in file order against one container, each leaving the service as the next
expects it; the container is removed at the end, whatever happened.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.slow]
IMAGE = os.environ.get("VROOLI_SYSTEMD_IMAGE", "vrooli-test/systemd:bookworm")
CONFIG = "/etc/vrooli/resources.toml"
WEB_DIR = "/srv/vrooli-web"
USERS_DROPIN = "/etc/systemd/system/vrooli.service.d/users.conf"
T = TypeVar("T")

# redis-server on its own port with its data in a StateDirectory= subdirectory; an HTTP
# server depending on it, writing a file into a data path outside /var/lib/vrooli (which
# the sandbox keeps read-only unless the installer's drop-in lists it).
WEB_COMMAND = ('import http.server as h, pathlib; pathlib.Path("started").write_text("ok"); '
               'h.test(h.SimpleHTTPRequestHandler, port=8088, bind="127.0.0.1")')
BASE_CONFIG = f"""\
[project]
name = "vrooli"
health_listen = "127.0.0.1:9500"

[resources.redis]
command = ["redis-server", "--port", "6390", "--save", "", "--dir", "."]
cwd = "/var/lib/vrooli/redis"
restart = "on-failure"
health = {{ probe = "redis", port = 6390 }}

[resources.web]
command = ["python3", "-c", {json.dumps(WEB_COMMAND)}]
cwd = "{WEB_DIR}"
depends_on = ["redis"]
restart = "on-failure"
health = {{ probe = "http", url = "http://127.0.0.1:8088/" }}
"""
BROKEN = """
[resources.broken]
command = ["sh", "-c", "echo 'broken: cannot open /nonexistent/db' >&2; exit 3"]
"""


@dataclass(frozen=True)
class Box:
    """One running container with systemd as PID 1."""

    name: str

    def run(self, *argv: str, user: str | None = None, stdin: bytes | None = None,
            timeout: float = 120, workdir: str = "/") -> subprocess.CompletedProcess[str]:
        command = ["docker", "exec", "-w", workdir]
        if user:
            command += ["-u", user]
        if stdin is not None:
            command.append("-i")
        result = subprocess.run([*command, self.name, *argv], input=stdin, capture_output=True, timeout=timeout)
        return subprocess.CompletedProcess(result.args, result.returncode,
                                           result.stdout.decode(errors="replace"),
                                           result.stderr.decode(errors="replace"))

    def ok(self, *argv: str, **kwargs: Any) -> str:
        result = self.run(*argv, **kwargs)
        assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def sh(self, script: str, **kwargs: Any) -> str:
        return self.ok("sh", "-c", script, **kwargs)

    def write(self, path: str, text: str) -> None:
        self.ok("sh", "-c", f"cat > {path}", stdin=text.encode())

    def show(self, *props: str) -> dict[str, str]:
        out = self.ok("systemctl", "show", "vrooli.service", *(f"-p{p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def status(self, *args: str, user: str | None = None, workdir: str = "/") -> dict[str, Any]:
        out = self.ok("vrooli", "status", "--json", *args, user=user, workdir=workdir)
        return dict(json.loads(out))

    def pids(self, pattern: str | None = None) -> list[int]:
        """Processes of the service user (whose command line matches `pattern`)."""
        result = self.run("pgrep", "-u", "vrooli", *(("-f", pattern) if pattern else ()))
        return sorted(int(p) for p in result.stdout.split())

    def cursor(self) -> str:
        # The whole journal's position: the unit's own may have no entries yet.
        out = self.ok("journalctl", "-n", "0", "--show-cursor", "--no-pager")
        return out.strip().rsplit("cursor: ", 1)[-1]

    def journal(self, cursor: str, *args: str) -> list[dict[str, Any]]:
        # --cursor and not --after-cursor: with -p, journalctl 252 seeks past the cursor and
        # then skips one more entry, the first error line after it.
        out = self.ok("journalctl", "-u", "vrooli", "--cursor", cursor, "-o", "json", "--no-pager", *args)
        entries = (json.loads(line) for line in out.splitlines() if line.strip())
        return [entry for entry in entries if entry.get("__CURSOR") != cursor]


def wait(what: str, predicate: Callable[[], T | Literal[False] | None], timeout: float = 60) -> T:
    """The predicate's first truthy answer; False or None (or an exception) mean not yet."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            answer = predicate()
        except (AssertionError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            last = exc
        else:
            if answer:
                return answer
            last = answer
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def events(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The daemon's own log records (structlog JSON) among journal entries."""
    found = []
    for entry in entries:
        message = entry.get("MESSAGE")
        if isinstance(message, str) and message.startswith("{"):
            try:
                found.append(json.loads(message))
            except ValueError:
                continue
    return found


def all_ready(status: dict[str, Any]) -> bool:
    return bool(status["resources"]) and all(r["state"] == "ready" for r in status["resources"])


def resource_pids(status: dict[str, Any]) -> dict[str, int]:
    return {r["name"]: r["pid"] for r in status["resources"]}


def checkout_tar() -> bytes:
    skip = {".git", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
            "build", "dist", ".vrooli", "bench-results", ".venv"}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for entry in sorted(ROOT.iterdir()):
            if entry.name not in skip and not entry.name.endswith(".egg-info"):
                tar.add(entry, arcname=entry.name,
                        filter=lambda info: None if "__pycache__" in info.name else info)
    return buffer.getvalue()


def unavailable(reason: str) -> None:
    # CI builds the image in scripts/setup.sh: there, not running this test is a failure.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def boot(name: str) -> Box:
    try:
        subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        unavailable(f"needs a Docker engine and the image {IMAGE} (scripts/build-systemd-image.sh)")
    # --privileged is neither needed nor allowed here. cgroup namespace of the host and its
    # cgroup tree (the v1 hierarchies stay writable under the read-only tmpfs on this Docker),
    # tmpfs /run for systemd; no network: everything below is offline, loopback only.
    # CAP_SYS_ADMIN lets systemd build the unit's mount namespace: without it systemd skips
    # ProtectSystem=, ReadWritePaths=, PrivateTmp= ... silently ("containerized execution"),
    # and the sandbox under test would not be there at all.
    started = subprocess.run(
        ["docker", "run", "-d", "--name", name, "--label", "vrooli.test=systemd", "--network", "none",
         "--cap-add", "SYS_ADMIN", "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
         "--tmpfs", "/run", "--tmpfs", "/run/lock", "-e", "container=docker", IMAGE],
        capture_output=True, text=True, timeout=60)
    if started.returncode != 0:
        unavailable(f"cannot run {IMAGE}: {started.stderr.strip()}")
    box = Box(name)
    def booted() -> bool:
        return box.run("systemctl", "is-system-running").stdout.strip() in ("running", "degraded")

    try:
        wait("systemd boots", booted, timeout=60)
    except AssertionError:
        logs = subprocess.run(["docker", "logs", "--tail", "20", name], capture_output=True, text=True).stdout
        unavailable(f"systemd did not come up in {IMAGE} on this host: {logs.strip()[-400:]}")
    return box


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    name = f"vrooli-systemd-test-{uuid.uuid4().hex[:8]}"
    try:
        box = boot(name)
        box.ok("sh", "-c", "mkdir -p /src && tar -C /src -x", stdin=checkout_tar())
        # The project's wheel, built offline from the build backend's wheels in the image.
        box.sh("python3 -m venv /tmp/build && mkdir -p /wheels && cp /opt/vrooli-wheels/*.whl /wheels/")
        box.ok("/tmp/build/bin/pip", "wheel", "-q", "--no-index", "--find-links", "/opt/vrooli-wheels",
               "--no-deps", "-w", "/wheels", "/src", timeout=300)
        box.sh("mkdir -p /etc/vrooli && useradd --create-home alice")
        box.write(CONFIG, BASE_CONFIG)
        yield box
    finally:
        inspected = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True)
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, timeout=120)
    # systemd in the container made its cgroups in the host's tree (cgroupns=host): removing
    # the container must take them along.
    if inspected.returncode == 0:
        container_cgroup = f"/sys/fs/cgroup/systemd/docker/{inspected.stdout.strip()}"
        wait("the container's cgroups are gone", lambda: not os.path.exists(container_cgroup), timeout=30)


def test_install_offline_and_idempotent(box: Box) -> None:
    first = box.run("/src/scripts/install-systemd.sh", "--wheels", "/wheels", timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installed vrooli_orchestrator-" in first.stdout
    assert box.ok("id", "-nG", "vrooli").split() == ["vrooli"]
    assert box.ok("systemctl", "is-enabled", "vrooli").strip() == "enabled"
    dropin = box.ok("cat", "/etc/systemd/system/vrooli.service.d/10-install.conf")
    assert "StateDirectory=vrooli/redis" in dropin
    assert f"ReadWritePaths=-{WEB_DIR}" in dropin
    assert "SupplementaryGroups=docker" not in dropin, "no docker group in this container"
    assert box.ok("stat", "-c", "%U:%G %a", WEB_DIR).strip() == "vrooli:vrooli 750"

    box.sh("touch /tmp/before-second-run")
    second = box.run("/src/scripts/install-systemd.sh", "--wheels", "/wheels", timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing to change" in second.stdout
    touched = box.sh("find /opt/vrooli /etc/vrooli /etc/systemd/system /usr/local/bin /srv /etc/passwd "
                     "/etc/group /etc/shadow -newer /tmp/before-second-run")
    assert touched.split() == [], f"a second install changed: {touched}"
    box.sh("usermod -aG vrooli alice")


def test_install_replaces_a_rebuilt_wheel_of_the_same_version(box: Box) -> None:
    # Same version, other files: pip alone calls that "already satisfied".
    box.sh("rm -rf /src2 && cp -a /src /src2 && echo '# rebuilt' >> /src2/orchestrator/__init__.py && "
           "mkdir -p /wheels2 && cp /opt/vrooli-wheels/*.whl /wheels2/")
    box.ok("/tmp/build/bin/pip", "wheel", "-q", "--no-index", "--find-links", "/opt/vrooli-wheels",
           "--no-deps", "-w", "/wheels2", "/src2", timeout=300)
    installed = "$(/opt/vrooli/venv/bin/python -c 'import orchestrator; print(orchestrator.__file__)')"
    assert "installed vrooli_orchestrator-" in box.ok("/src/scripts/install-systemd.sh", "--wheels", "/wheels2")
    assert "# rebuilt" in box.sh(f'cat "{installed}"')
    assert "installed vrooli_orchestrator-" in box.ok("/src/scripts/install-systemd.sh", "--wheels", "/wheels")
    assert "# rebuilt" not in box.sh(f'cat "{installed}"')
    assert "nothing to change" in box.ok("/src/scripts/install-systemd.sh", "--wheels", "/wheels")


def test_docker_group_is_given_through_the_dropin(box: Box) -> None:
    box.sh("groupadd --system docker")
    box.ok("/src/scripts/install-systemd.sh", "--wheels", "/wheels")
    assert "SupplementaryGroups=docker" in box.ok("cat", "/etc/systemd/system/vrooli.service.d/10-install.conf")
    box.ok("systemctl", "start", "vrooli")
    docker_gid = box.ok("getent", "group", "docker").split(":")[2]
    daemon = box.ok("cat", f"/proc/{box.show('MainPID')['MainPID']}/status")
    groups = next(line.split()[1:] for line in daemon.splitlines() if line.startswith("Groups:"))
    assert docker_gid in groups, groups
    box.ok("systemctl", "stop", "vrooli")
    box.sh("groupdel docker")
    box.ok("/src/scripts/install-systemd.sh", "--wheels", "/wheels")
    assert "docker" not in box.ok("cat", "/etc/systemd/system/vrooli.service.d/10-install.conf")


def test_start_ready_and_sandbox_fits(box: Box) -> None:
    box.ok("systemctl", "start", "vrooli")
    shown = box.show("ActiveState", "StatusText", "MainPID", "LimitNOFILE")
    assert shown["ActiveState"] == "active"
    assert shown["StatusText"] == "2/2 ready"
    # LimitNOFILE= (clamped to the container's own hard limit) is what the daemon runs with.
    limits = box.ok("cat", f"/proc/{shown['MainPID']}/limits")
    nofile = next(line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files"))
    assert nofile[0] == nofile[1] and int(nofile[0]) <= int(shown["LimitNOFILE"]), nofile
    # Data paths writable through the drop-in: outside /var/lib/vrooli, and a subdirectory of it.
    assert box.ok("stat", "-c", "%U", f"{WEB_DIR}/started").strip() == "vrooli"
    assert box.ok("redis-cli", "-p", "6390", "SAVE").strip() == "OK"
    assert box.ok("stat", "-c", "%U", "/var/lib/vrooli/redis/dump.rdb").strip() == "vrooli"


def test_cli_reaches_the_daemon_for_root_and_group_only(box: Box) -> None:
    for user, args, workdir in ((None, (), "/"), (None, ("-f", CONFIG), "/"),
                                ("alice", ("-f", CONFIG), "/home/alice"), ("alice", (), "/home/alice")):
        status = box.status(*args, user=user, workdir=workdir)
        assert all_ready(status), (user, args, status)
        assert sorted(resource_pids(status)) == ["redis", "web"]
        assert status["supervisor"]["unit"] == "vrooli.service", status["supervisor"]
        assert status["supervisor"]["mode"] == "daemon"
    text = box.ok("vrooli", "status", user="alice", workdir="/home/alice")
    assert "systemd unit vrooli.service" in text

    refused = box.run("vrooli", "status", "--json", "-f", CONFIG, user="nobody", workdir="/tmp")
    assert refused.returncode == 1, refused
    assert "group vrooli" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    # Not only the CLI: the socket itself does not let nobody in.
    probe = "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/vrooli/vrooli.sock')"
    direct = box.run("python3", "-c", probe, user="nobody", workdir="/tmp")
    assert direct.returncode != 0 and "PermissionError" in direct.stderr, direct


def test_group_member_operates_the_daemon(box: Box) -> None:
    # The state dir is the daemon's alone: the access model is /run/vrooli's.
    assert box.ok("stat", "-c", "%a %U:%G", "/run/vrooli", "/run/vrooli/vrooli.sock").split("\n")[:2] == [
        "750 vrooli:vrooli", "660 vrooli:vrooli"]
    assert box.ok("stat", "-c", "%a", "/var/lib/vrooli").strip() == "700"
    logs = box.ok("vrooli", "logs", "redis", user="alice", workdir="/home/alice")
    assert "Ready to accept connections" in logs
    # Root too: the log files are the vrooli user's, which root's own reads refuse.
    assert "Ready to accept connections" in box.ok("vrooli", "logs", "redis", "--file", CONFIG)
    before = resource_pids(box.status())
    box.ok("vrooli", "restart", "web", user="alice", workdir="/home/alice")
    after = resource_pids(box.status(user="alice", workdir="/home/alice"))
    assert after["web"] != before["web"] and after["redis"] == before["redis"]
    refused = box.run("vrooli", "restart", "web", "-f", CONFIG, user="nobody", workdir="/tmp")
    assert refused.returncode == 1 and "group vrooli" in refused.stdout + refused.stderr, refused
    assert "Traceback" not in refused.stderr
    assert resource_pids(box.status())["web"] == after["web"]


def test_reload_restarts_only_the_changed_resource(box: Box) -> None:
    before = resource_pids(box.status())
    main = box.show("MainPID")["MainPID"]
    box.write(CONFIG, BASE_CONFIG.replace(f'cwd = "{WEB_DIR}"', f'cwd = "{WEB_DIR}"\nenv = {{ GREETING = "v2" }}'))
    box.ok("systemctl", "reload", "vrooli")
    after = wait("web restarted and ready", lambda: (s := box.status()) and all_ready(s)
                 and resource_pids(s)["web"] != before["web"] and resource_pids(s))
    assert after["redis"] == before["redis"], "redis did not change and must not restart"
    assert box.show("MainPID")["MainPID"] == main
    assert box.pids("http.server") == [after["web"]]


def test_resource_killed_comes_back_once(box: Box) -> None:
    before = resource_pids(box.status())
    box.ok("kill", "-KILL", str(before["redis"]))
    after = wait("redis back", lambda: (s := box.status()) and all_ready(s)
                 and resource_pids(s)["redis"] != before["redis"] and resource_pids(s))
    assert box.pids("redis-server") == [after["redis"]]
    assert after["web"] == before["web"]


def vrooli_processes_in_unit(box: Box) -> tuple[set[int], set[int]]:
    """(every process of user vrooli, every process in the unit's cgroup)."""
    cgroup = box.show("ControlGroup")["ControlGroup"]
    in_unit = {int(p) for p in box.ok("cat", f"/sys/fs/cgroup/systemd{cgroup}/cgroup.procs").split()}
    return set(box.pids()), in_unit


def test_stopped_daemon_is_killed_by_the_watchdog_and_restarted_with_its_resources(box: Box) -> None:
    # The mechanism is the shipped one; only the period is shorter than its 30 s.
    box.write("/etc/systemd/system/vrooli.service.d/50-test-watchdog.conf", "[Service]\nWatchdogSec=10s\n")
    box.ok("systemctl", "daemon-reload")
    box.ok("systemctl", "restart", "vrooli")
    old_main = int(box.show("MainPID")["MainPID"])
    old = resource_pids(box.status())
    restarts = int(box.show("NRestarts")["NRestarts"])
    cursor = box.cursor()
    box.ok("kill", "-STOP", str(old_main))

    def back() -> dict[str, str] | None:
        shown = box.show("MainPID", "NRestarts", "ActiveState", "StatusText")
        if int(shown["NRestarts"]) > restarts and shown["ActiveState"] == "active" \
                and shown["StatusText"] == "2/2 ready" and shown["MainPID"] != str(old_main):
            return shown
        return None

    shown = wait("the watchdog restarts the daemon", back, timeout=90)
    messages = "\n".join(str(e.get("MESSAGE")) for e in box.journal(cursor))
    assert "Watchdog timeout" in messages
    status = box.status()
    assert all_ready(status)
    new = resource_pids(status)
    assert not set(new.values()) & set(old.values())
    # Each resource once, and every process of the service user inside the unit: no
    # duplicates, no orphans from the killed daemon.
    assert box.pids("redis-server") == [new["redis"]]
    assert box.pids("http.server") == [new["web"]]
    everyone, in_unit = vrooli_processes_in_unit(box)
    assert everyone == {int(shown["MainPID"]), new["redis"], new["web"]}
    assert everyone <= in_unit
    box.ok("rm", "/etc/systemd/system/vrooli.service.d/50-test-watchdog.conf")
    box.ok("systemctl", "daemon-reload")


def test_stop_in_reverse_order_leaves_nothing(box: Box) -> None:
    cgroup = box.show("ControlGroup")["ControlGroup"]
    assert cgroup.endswith("/vrooli.service")
    cursor = box.cursor()
    box.ok("systemctl", "stop", "vrooli")
    shown = box.show("ActiveState", "Result", "ExecMainStatus")
    assert shown == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    stopping = [e["resource"] for e in events(box.journal(cursor)) if e.get("event") == "resource stopping"]
    assert stopping == ["web", "redis"], stopping
    left = box.run("cat", f"/sys/fs/cgroup/systemd{cgroup}/cgroup.procs")
    assert left.returncode != 0 or left.stdout.split() == [], f"left in the unit's cgroup: {left.stdout}"
    assert box.pids() == []


def test_journal_err_shows_the_failing_resource_only(box: Box) -> None:
    box.ok("systemctl", "stop", "vrooli")  # whatever an earlier test left running
    box.write(CONFIG, BASE_CONFIG + BROKEN)
    cursor = box.cursor()
    box.ok("systemctl", "start", "vrooli")
    wait("broken settles as failed", lambda: box.show("StatusText")["StatusText"].startswith("2/3 ready"))
    errors = box.journal(cursor, "-p", "err")
    everything = box.journal(cursor)
    text = "\n".join(str(e.get("MESSAGE")) for e in errors)
    assert "broken" in text, f"no error line for the failing resource in `journalctl -p err`:\n{text}"
    assert any(e.get("event") == "resource ready" for e in events(everything)), "info lines exist"
    info_in_err = [e for e in events(errors) if e.get("level") not in ("error", "critical")]
    assert info_in_err == [], info_in_err
    assert all(int(e["PRIORITY"]) <= 3 for e in errors)
    box.ok("systemctl", "stop", "vrooli")


def test_user_key_refused_under_the_sandbox(box: Box) -> None:
    box.ok("systemctl", "stop", "vrooli")
    box.write(CONFIG, BASE_CONFIG.replace(f'cwd = "{WEB_DIR}"', f'cwd = "{WEB_DIR}"\nuser = "nobody"'))
    cursor = box.cursor()
    started = box.run("systemctl", "start", "vrooli")
    assert started.returncode != 0
    shown = wait("the unit fails", lambda: (s := box.show("ActiveState", "NRestarts", "ExecMainStatus"))
                 and s["ActiveState"] == "failed" and s)
    assert shown["ExecMainStatus"] == "2"
    assert shown["NRestarts"] == "0", "a config error is not retried (RestartPreventExitStatus=2)"
    text = "\n".join(str(e.get("MESSAGE")) for e in box.journal(cursor, "-p", "err"))
    assert "web" in text and "user" in text, text
    assert box.pids() == []
    box.ok("systemctl", "reset-failed", "vrooli")

    # The supported way, as the unit file describes it: both capabilities and the setuid calls.
    who = ('[resources.who]\ncommand = ["python3", "-m", "http.server", "8089", "--bind", "127.0.0.1"]\n'
           'cwd = "/usr"\nuser = "nobody"\nhealth = { probe = "http", url = "http://127.0.0.1:8089/" }\n')
    box.write(CONFIG, '[project]\nname = "vrooli"\n' + who)
    box.write(USERS_DROPIN, "[Service]\nAmbientCapabilities=CAP_SETUID CAP_SETGID\n"
              "CapabilityBoundingSet=CAP_SETUID CAP_SETGID\nSystemCallFilter=@setuid\n")
    box.ok("systemctl", "daemon-reload")
    try:
        box.ok("systemctl", "start", "vrooli")
        assert box.show("StatusText")["StatusText"] == "1/1 ready"
        assert box.ok("ps", "-o", "user=", "-p", str(resource_pids(box.status())["who"])).strip() == "nobody"
        box.ok("systemctl", "stop", "vrooli")
    finally:
        box.ok("rm", "-f", USERS_DROPIN)
        box.ok("systemctl", "daemon-reload")
        box.write(CONFIG, BASE_CONFIG)


def test_uninstall_keeps_config_and_data_unless_purge(box: Box) -> None:
    box.ok("systemctl", "start", "vrooli")
    assert box.ok("redis-cli", "-p", "6390", "SAVE").strip() == "OK"  # data in /var/lib/vrooli
    box.ok("/src/scripts/install-systemd.sh", "--uninstall")
    assert box.pids() == []
    for gone in ("/etc/systemd/system/vrooli.service", "/etc/systemd/system/vrooli.service.d",
                 "/opt/vrooli", "/usr/local/bin/vrooli"):
        assert box.run("test", "-e", gone).returncode != 0, f"{gone} is still there"
    for kept in (CONFIG, "/var/lib/vrooli/redis/dump.rdb", f"{WEB_DIR}/started"):
        assert box.run("test", "-e", kept).returncode == 0, f"{kept} was removed"
    assert box.run("id", "vrooli").returncode == 0
    assert box.run("systemctl", "cat", "vrooli").returncode != 0
    box.ok("/src/scripts/install-systemd.sh", "--uninstall")  # again: nothing left to do, still fine

    purged = box.ok("/src/scripts/install-systemd.sh", "--uninstall", "--purge")
    for gone in ("/etc/vrooli", "/var/lib/vrooli"):
        assert box.run("test", "-e", gone).returncode != 0, f"{gone} survived --purge"
    assert box.run("id", "vrooli").returncode != 0
    assert box.run("getent", "group", "vrooli").returncode != 0
    assert WEB_DIR in purged and box.run("test", "-e", WEB_DIR).returncode == 0
