"""The early path of a cold `vrooli up`: the supervisor forked before the CLI's imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psutil
import pytest

from orchestrator.spawn import PlainUp, plain_up
from tests.conftest import Project


@pytest.mark.parametrize(("argv", "expected"), [
    (["up"], PlainUp([], [], False)),
    (["up", "db", "-f", "a.toml", "--file", "b.toml", "--file=c.toml", "--no-deps", "--json", "cache"],
     PlainUp(["db", "cache"], ["a.toml", "b.toml", "c.toml"], True)),
    (["up", "--foreground"], None),  # attached: the CLI runs the supervisor itself
    (["up", "--help"], None),
    (["up", "-f"], None),  # typer reports the missing value
    (["up", "--log-format", "json"], None),
    (["down"], None),
    ([], None),
])
def test_only_a_plain_up_takes_the_early_path(argv: list[str], expected: PlainUp | None) -> None:
    assert plain_up(argv) == expected


def test_plain_up_leaves_vrooli_file_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VROOLI_FILE", "x.toml")
    assert plain_up(["up"]) is None


def supervisors_in(project: Project) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name", "status", "cwd"]) if p.info["name"] == "vrooli-sup"
            and p.info["status"] != psutil.STATUS_ZOMBIE and p.info["cwd"] == str(project.dir)]


def test_supervisor_is_forked_before_typer_and_the_cli_uses_it(project: Project) -> None:
    project.write("""
        [resources.one]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
    """)
    script = textwrap.dedent("""
        import sys
        from orchestrator import spawn
        spawn.start_early(["up"])
        print("typer imported before fork:", "typer" in sys.modules, file=sys.stderr)
        print("forked:", spawn._pending is not None, file=sys.stderr)
        sys.argv = ["vrooli", "up"]
        spawn.main()
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=project.dir, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "typer imported before fork: False" in done.stderr
    assert "forked: True" in done.stderr
    assert "1/1 ready" in done.stderr
    assert len(supervisors_in(project)) == 1
    assert project.rows()["one"]["state"] == "ready"


def test_unknown_name_starts_nothing(project: Project) -> None:
    project.write("""
        [resources.one]
        command = ["sleep", "1000"]
    """)
    done = project.run("up", "nosuch")
    assert done.returncode == 2
    assert done.stderr.strip() == "vrooli: unknown resource 'nosuch' (known: one)"
    assert not supervisors_in(project)
    assert not (project.state_dir / "supervisor.pid").exists()
