"""Server mode: sd_notify, supervision with backoff, the health endpoint, reload, adoption."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.daemon.sd_notify import notify
from tests.conftest import ROOT, Project, wait_for


class Daemon:
    def __init__(self, project: Project, env: dict[str, str] | None = None) -> None:
        self.project = project
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "daemon"], cwd=project.dir,
                                     env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                                     stderr=open(project.dir / "daemon.log", "ab"))

    def url(self) -> str:
        return wait_for(lambda: (self.project.state_dir / "health.addr").exists() and self.project.health_url(), 20)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture
def daemons(project: Project) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.stop()


class NotifyListener:
    """A real AF_UNIX datagram socket standing where systemd's would be."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def keys(self) -> list[str]:
        return [m.split("=", 1)[0] for _, m in self.messages]

    def close(self) -> None:
        self.sock.close()


def test_notify_reaches_abstract_namespace_sockets() -> None:
    name = f"vrooli-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        assert notify("READY=1\nSTATUS=hi", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"READY=1\nSTATUS=hi"
        assert not notify("READY=1", {})
    finally:
        sock.close()


def test_sd_notify_ready_status_watchdog_stopping(project: Project, daemons: list[Daemon]) -> None:
    listener = NotifyListener(project.dir / "notify.sock")
    project.write("""
        [resources.fast]
        command = ["sh", "-c", "echo up; exec sleep 1000"]
        health = { probe = "log", pattern = "up" }
        [resources.slow]
        command = ["sh", "-c", "sleep 6.5; echo up; exec sleep 1000"]
        depends_on = ["fast"]
        health = { probe = "log", pattern = "up" }
    """)
    daemon = Daemon(project, {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "200000"})
    daemons.append(daemon)
    try:
        wait_for(lambda: "READY" in listener.keys(), 30)
        ready_at = next(t for t, m in listener.messages if m == "READY=1")
        watchdog_before = [t for t, m in listener.messages if m == "WATCHDOG=1" and t < ready_at]
        assert len(watchdog_before) >= 3  # pings keep coming while resources start
        # a start still progressing after 5 s asks systemd for more time
        assert any(m.startswith("EXTEND_TIMEOUT_USEC=") and t < ready_at for t, m in listener.messages)
        statuses = [m for _, m in listener.messages if m.startswith("STATUS=")]
        assert any("waiting for slow" in s or "waiting for fast" in s for s in statuses)
        assert statuses[-1] == "STATUS=2/2 ready"
        slow_pid = project.rows()["slow"]["pid"]
        assert "NOTIFY_SOCKET" not in psutil.Process(slow_pid).environ()  # children never inherit it
        time.sleep(0.5)
        after = [t for t, m in listener.messages if m == "WATCHDOG=1" and t > ready_at]
        assert len(after) >= 2
        # systemctl reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 again
        seen = len(listener.messages)
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "READY=1" in [m for _, m in listener.messages[seen:]], 10)
        reload_lines = [m for _, m in listener.messages[seen:] if m != "WATCHDOG=1"]
        assert reload_lines[0] == "RELOADING=1"
        assert re.fullmatch(r"MONOTONIC_USEC=\d+", reload_lines[1])
        assert reload_lines.index("READY=1") > 1
        assert daemon.stop() == 0
        keys = listener.keys()
        assert "STOPPING" in keys and keys.index("STOPPING") > keys.index("READY")
        assert not psutil.pid_exists(slow_pid)
    finally:
        listener.close()


def test_sd_notify_ready_even_when_no_resource_is_enabled(project: Project, daemons: list[Daemon]) -> None:
    """systemd fails a Type=notify unit that never says READY=1: an empty stack is settled."""
    listener = NotifyListener(project.dir / "notify.sock")
    project.write("""
        [resources.off]
        command = ["sleep", "1000"]
        enabled = false
    """)
    daemon = Daemon(project, {"NOTIFY_SOCKET": str(listener.path)})
    daemons.append(daemon)
    try:
        wait_for(lambda: "READY" in listener.keys(), 30)
        assert daemon.proc.poll() is None
        assert "STATUS=0/0 ready" in [m for _, m in listener.messages]
        assert daemon.stop() == 0
    finally:
        listener.close()


def test_sd_notify_status_never_carries_output_or_probe_secrets(project: Project, daemons: list[Daemon]) -> None:
    """`systemctl status` shows STATUS= to every user: public text only."""
    listener = NotifyListener(project.dir / "notify.sock")
    project.write("""
        [resources.crash]
        command = ["sh", "-c", "echo 'FATAL: postgres://app:hunter2pw@db/x'; exit 1"]
        health = { probe = "log", pattern = "never" }
    """)
    daemon = Daemon(project, {"NOTIFY_SOCKET": str(listener.path)})
    daemons.append(daemon)
    try:
        wait_for(lambda: "READY" in listener.keys(), 30)
        statuses = [m for _, m in listener.messages if m.startswith("STATUS=")]
        assert any("crash: failed: exited with code 1" in s for s in statuses), statuses
        for secret in ("hunter2pw", "FATAL"):
            assert not any(secret in s for s in statuses), (secret, statuses)
        assert "hunter2pw" in project.run("status", "--json").stdout  # the owner sees it all
        assert daemon.stop() == 0
    finally:
        listener.close()


def test_crash_loop_backs_off_then_fails_visibly(project: Project, daemons: list[Daemon]) -> None:
    project.write("""
        [resources.steady]
        command = ["sh", "-c", "echo up; exec sleep 1000"]
        health = { probe = "log", pattern = "up" }
        [resources.crashy]
        command = ["sh", "-c", "echo up; exec sleep 1000"]
        restart = "always"
        restart_delay = "200ms"
        restart_burst = 3
        health = { probe = "log", pattern = "up" }
    """)
    daemon = Daemon(project)
    daemons.append(daemon)
    url = daemon.url()
    waits: list[float] = []  # from our SIGKILL to the next instance's started_at
    wait_for(lambda: project.rows()["crashy"]["state"] == "ready", 20)
    for _ in range(4):
        row = wait_for(lambda: (r := project.rows()["crashy"])["state"] in ("ready", "failed") and r, 30)
        if row["state"] == "failed":
            break
        killed_at = time.time()
        os.kill(row["pid"], signal.SIGKILL)
        new = wait_for(lambda old=row["pid"]: ((r := project.rows()["crashy"])["pid"] not in (old, None)
                                               or r["state"] == "failed") and r, 30)
        if new["state"] != "failed":  # the fourth death is past the burst: no next instance
            waits.append(datetime.fromisoformat(new["started_at"]).timestamp() - killed_at)
    row = wait_for(lambda: (r := project.rows()["crashy"])["state"] == "failed" and r, 30)
    assert row["restarts"] == 3
    assert row["message"].startswith("restarted 3 times within 60s; giving up (killed by signal 9")
    # The delays double: 0.2 s, 0.4 s, 0.8 s (+ up to 10 % jitter). Load can only lengthen
    # what we measure (detecting the death, our polling), never shorten it below the delay,
    # so the lower bounds are what a loaded machine cannot make flaky.
    assert len(waits) == 3, waits
    for wait, delay in zip(waits, (0.2, 0.4, 0.8), strict=True):
        assert wait >= delay - 0.01, waits

    readyz = httpx.get(url + "/readyz?verbose")
    assert readyz.status_code == 503
    assert "[+]steady ok" in readyz.text
    assert "[-]crashy failed: restarted 3 times" in readyz.text
    assert httpx.get(url + "/readyz?exclude=crashy").status_code == 200
    health = httpx.get(url + "/health")
    assert health.headers["content-type"] == "application/health+json"
    doc = health.json()
    assert doc["status"] == "fail" and health.status_code == 503
    assert doc["checks"]["crashy:responseTime"][0]["status"] == "fail"
    assert doc["checks"]["steady:responseTime"][0]["status"] == "pass"
    assert doc["checks"]["steady:responseTime"][0]["observedUnit"] == "ms"
    metrics = {s.name + json.dumps(s.labels, sort_keys=True): s.value
               for f in text_string_to_metric_families(httpx.get(url + "/metrics").text) for s in f.samples}
    assert metrics['vrooli_resource_up{"resource": "crashy", "runtime": "process"}'] == 0
    assert metrics['vrooli_resource_up{"resource": "steady", "runtime": "process"}'] == 1
    assert metrics['vrooli_resource_restarts_total{"resource": "crashy"}'] == 3


def test_endpoints_answer_while_starting_and_expose_metrics(project: Project, daemons: list[Daemon]) -> None:
    project.write("""
        [resources.quick]
        command = ["sh", "-c", "echo up; exec sleep 1000"]
        health = { probe = "log", pattern = "up" }
        [resources.sluggish]
        command = ["sh", "-c", "sleep 4; echo up; exec sleep 1000"]
        health = { probe = "log", pattern = "up" }
    """)
    daemon = Daemon(project)
    daemons.append(daemon)
    url = daemon.url()
    assert urlparse_host(url) == "127.0.0.1"  # read-only endpoint binds loopback by default
    # The first request, sent the moment the address is published, is held while the start
    # burst runs (at most HEALTH_DEFER_MAX = 1 s), never refused.
    asked = time.monotonic()
    first = httpx.get(url + "/readyz", timeout=10)
    assert first.status_code == 503 and time.monotonic() - asked < 2.5
    with httpx.Client() as client:
        def hit(_: int) -> int:
            return client.get(url + "/readyz").status_code

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(hit, range(1000)))
    assert len(codes) == 1000 and set(codes) <= {200, 503}
    assert 503 in codes  # sluggish was still starting
    assert httpx.get(url + "/livez").text == "ok"
    wait_for(lambda: httpx.get(url + "/readyz").status_code == 200, 30)
    assert httpx.post(url + "/readyz").status_code == 405
    assert httpx.get(url + "/nope").status_code == 404
    text = httpx.get(url + "/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "up" not in families
    for name in ("vrooli_resource_up", "vrooli_resource_restarts", "vrooli_resource_startup_duration_seconds",
                 "vrooli_probe_duration_seconds", "vrooli_resource_memory_bytes", "vrooli_resource_cpu_seconds",
                 "vrooli_build_info"):
        assert name in families, name
    memory = {s.labels["resource"]: s.value for s in families["vrooli_resource_memory_bytes"].samples}
    assert memory["quick"] > 100_000
    startup = [s for s in families["vrooli_resource_startup_duration_seconds"].samples
               if s.name.endswith("_sum") and s.labels["resource"] == "sluggish"]
    assert 3.5 < startup[0].value < 10


def alive(pid: int) -> bool:
    """Running, not a zombie: orphans of a killed daemon are reaped by init, not by us."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def urlparse_host(url: str) -> str:
    return httpx.URL(url).host


def test_sighup_restarts_only_what_changed_and_rejects_a_broken_file(project: Project,
                                                                      daemons: list[Daemon]) -> None:
    body = """
        [resources.keep]
        command = ["sh", "-c", "echo up; exec sleep 1000"]
        health = { probe = "log", pattern = "up" }
        [resources.change]
        command = ["sh", "-c", "echo up; exec sleep 1000"]
        env = { FLAVOUR = "%s" }
        health = { probe = "log", pattern = "up" }
    """
    project.write(body % "vanilla")
    daemon = Daemon(project)
    daemons.append(daemon)
    wait_for(lambda: project.run("status").returncode == 0, 30)
    before = {n: r["pid"] for n, r in project.rows().items()}
    project.write(body % "chocolate")
    daemon.proc.send_signal(signal.SIGHUP)
    after = wait_for(lambda: (rows := project.rows())["change"]["pid"] not in (None, before["change"])
                     and rows["change"]["state"] == "ready" and rows, 30)
    assert after["keep"]["pid"] == before["keep"]
    assert psutil.Process(after["change"]["pid"]).environ()["FLAVOUR"] == "chocolate"

    project.write("[resources.keep]\ncommand = 42\n")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload rejected" in (project.dir / "daemon.log").read_text(), 10)
    done = project.run("reload")
    assert done.returncode == 2 and "resources.keep.command" in done.stderr
    project.write(body % "chocolate")  # the running stack matches this file
    assert {n: r["pid"] for n, r in project.rows().items()} == {n: r["pid"] for n, r in after.items()}


def test_killed_daemon_is_replaced_and_adopts_without_duplicates(project: Project, daemons: list[Daemon]) -> None:
    project.write("""
        [resources.one]
        command = ["sh", "-c", "echo up; exec sleep 1001"]
        health = { probe = "log", pattern = "up" }
        [resources.two]
        command = ["sh", "-c", "echo up; exec sleep 1002"]
        depends_on = ["one"]
        health = { probe = "log", pattern = "up" }
    """)
    first = Daemon(project)
    daemons.append(first)
    wait_for(lambda: project.run("status").returncode == 0, 30)
    before = {n: r["pid"] for n, r in project.rows().items()}
    first.proc.kill()
    first.proc.wait(10)
    assert all(psutil.pid_exists(p) for p in before.values())  # resources outlive the daemon
    second = Daemon(project)
    daemons.append(second)
    wait_for(lambda: project.run("status").returncode == 0, 30)
    after = {n: r["pid"] for n, r in project.rows().items()}
    assert after == before
    token = os.environ["VROOLI_TEST_TOKEN"]
    sleepers = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and p.info["cmdline"][0] == "sleep"
                and p.environ().get("VROOLI_TEST_TOKEN") == token]
    assert sorted(p.pid for p in sleepers) == sorted(before.values())
    assert second.stop() == 0
    assert not any(alive(p) for p in before.values())


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_unit_file_verifies_and_is_hardened(tmp_path: Path) -> None:
    vrooli = shutil.which("vrooli")
    assert vrooli, "the vrooli console script must be installed"
    unit = tmp_path / "vrooli.service"
    unit.write_text((ROOT / "systemd" / "vrooli.service").read_text().replace("/usr/local/bin/vrooli", vrooli))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    text = unit.read_text()
    for needed in ("Type=notify", "NotifyAccess=main", "WatchdogSec=", "Restart=on-failure", "TimeoutStopSec=",
                   "StateDirectory=vrooli", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                   "LimitNOFILE="):
        assert needed in text, needed
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                              capture_output=True, text=True)
    exposure = re.search(r"Overall exposure level for vrooli.service: ([\d.]+)", security.stdout)
    assert exposure is not None, security.stdout[-500:]
    score = float(exposure.group(1))
    assert score <= 5.0, security.stdout[-500:]
