"""scripts/install-systemd.sh without systemd: its data-path rules and its refusals.

The install itself, idempotence and --uninstall run under a real systemd in
tests/test_systemd_real.py; here, what needs no container: which directives a config's data
paths become (scripts/systemd_paths.py), and bad invocations refused in one line before
anything is touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PATHS = ROOT / "scripts" / "systemd_paths.py"
INSTALL = ROOT / "scripts" / "install-systemd.sh"


def findings(tmp_path: Path, toml: str) -> list[str]:
    config = tmp_path / "etc" / "resources.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(toml)
    done = subprocess.run([sys.executable, str(PATHS), str(config), "/var/lib/vrooli"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout.splitlines()


def cwd_of(path: str, runtime: str = "process") -> str:
    return f'[resources.r]\nruntime = "{runtime}"\ncommand = ["x"]\ncwd = "{path}"\n'


@pytest.mark.parametrize(("cwd", "expected"), [
    ("/var/lib/vrooli/redis", ["line StateDirectory=vrooli/redis"]),
    ("/var/lib/vrooli/a/b/", ["line StateDirectory=vrooli/a/b"]),
    ("/var/lib/vrooli", []),
    ("/var/lib/vrooli/../vrooli/pg", ["line StateDirectory=vrooli/pg"]),
    ("/srv/web", ["line ReadWritePaths=-/srv/web", "dir /srv/web"]),
    ("/var/lib/vrooli-other", ["line ReadWritePaths=-/var/lib/vrooli-other", "dir /var/lib/vrooli-other"]),
    ("/srv/a b", ['line ReadWritePaths=-"/srv/a b"', "dir /srv/a b"]),
    ("/srv/100%", ["line ReadWritePaths=-/srv/100%%", "dir /srv/100%"]),
    ("/run/vrooli/sock", []),
])
def test_data_path_becomes_a_directive(tmp_path: Path, cwd: str, expected: list[str]) -> None:
    assert findings(tmp_path, cwd_of(cwd)) == expected


@pytest.mark.parametrize(("cwd", "said"), [
    ("data", "read-only to the service (ProtectSystem=strict)"),
    (".", "read-only to the service"),
    ("/home/alice/web", "ProtectHome=yes"),
    ("/root/x", "ProtectHome=yes"),
    ("/tmp/web", "PrivateTmp=yes"),
    ("/var/tmp/web", "PrivateTmp=yes"),
    ("${DATA:-/srv/x}", "only known at run time"),
    ("~/web", "only known at run time"),
    ('/srv/quote\\"d', "a path systemd cannot take"),
    ("/srv/new\\nline", "a path systemd cannot take"),
])
def test_data_path_the_sandbox_hides_is_a_warning(tmp_path: Path, cwd: str, said: str) -> None:
    found = findings(tmp_path, cwd_of(cwd))
    assert len(found) == 1 and found[0].startswith("warn resources.r.cwd") and said in found[0], found


@pytest.mark.parametrize("toml", [
    cwd_of("/srv/x", runtime="docker"),           # the engine writes a container's data
    '[resources.r]\ncommand = ["x"]\n',           # no cwd: the project dir, nothing to add
    '[resources.r]\ncommand = ["x"]\ncwd = 3\n',  # a bad value is the daemon's to report
    "[resources]\nr = 1\n",
    "resources = 1\n",
    "",
])
def test_nothing_to_add(tmp_path: Path, toml: str) -> None:
    assert findings(tmp_path, toml) == []


def test_state_dir_and_duplicates(tmp_path: Path) -> None:
    toml = ('[project]\nstate_dir = "/srv/state"\n' + cwd_of("/srv/state")
            + '[resources.s]\ncommand = ["x"]\ncwd = "/var/lib/vrooli/s"\n')
    assert findings(tmp_path, toml) == ["line ReadWritePaths=-/srv/state", "dir /srv/state",
                                        "line StateDirectory=vrooli/s"]


@pytest.mark.parametrize("content", ["[project\n", b"\xff\xfe".decode("latin-1")])
def test_unreadable_config_is_a_warning(tmp_path: Path, content: str) -> None:
    found = findings(tmp_path, content)
    assert len(found) == 1 and found[0].startswith("warn ") and "not read" in found[0]


def test_missing_config_is_a_warning(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(PATHS), str(tmp_path / "none.toml")], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("warn ") and "not read" in done.stdout


@pytest.mark.parametrize(("args", "code", "said"), [
    (["--bogus"], 2, "usage: install-systemd.sh"),
    (["--wheels"], 2, "usage: install-systemd.sh"),
    (["--wheels", "/nonexistent/wheels"], 2, "--wheels /nonexistent/wheels: no such directory"),
    (["--wheels=/nonexistent/wheels"], 2, "--wheels=/nonexistent/wheels: no such directory"),
    (["--purge"], 2, "--purge goes with --uninstall"),
])
def test_bad_invocation_is_one_line_and_touches_nothing(args: list[str], code: int, said: str) -> None:
    # These are refused before the root check: safe to run as root on this machine.
    done = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == code
    assert done.stdout == "" and done.stderr.count("\n") == 1 and said in done.stderr, done.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to nobody")
def test_not_root_is_refused() -> None:
    # The script on stdin: nobody may not enter this checkout's directories.
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-s"],
                          input=INSTALL.read_text(), capture_output=True, text=True, timeout=30, cwd="/")
    assert done.returncode == 1
    assert done.stderr == "install-systemd: run as root\n"
