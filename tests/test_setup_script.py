"""scripts/setup.sh runs on users' machines: it never stops a server it did not start."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_setup_leaves_a_users_redis_on_6379_running(tmp_path: Path) -> None:
    # What the packaged redis-server service looks like: the title an earlier setup.sh
    # killed by name. It must survive a run of the script.
    if not _port_free(6379):
        pytest.skip("port 6379 is taken on this machine; the case needs it free")
    redis = shutil.which("redis-server")
    assert redis, "redis-server must be installed (scripts/setup.sh installs it)"
    server = subprocess.Popen([redis, "--port", "6379", "--bind", "127.0.0.1", "--save", "",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: not _port_free(6379), 10)
        done = subprocess.run([str(ROOT / "scripts" / "setup.sh")], capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        assert server.poll() is None, "setup.sh stopped a redis-server it did not start"
    finally:
        server.terminate()
        server.wait(10)


def test_scripts_never_stop_processes_by_name() -> None:
    # pkill/killall match anyone's process; pg_ctlcluster stop ends the packaged cluster.
    pattern = re.compile(r"\b(pkill|killall)\b|pg_ctlcluster\s+\S+\s+\S+\s+stop")
    offenders = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                 for path in [*sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci" / "run"]
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line) and not line.lstrip().startswith("#")]
    assert offenders == []
