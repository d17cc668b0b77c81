"""The entry point's two ways of running `vrooli up`: the typer-free fast path (entry.py)
and the typer command (cli.py) accept the same options and answer alike (issue 11)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
import typer.core
import typer.main

from orchestrator.cli import app
from orchestrator.entry import PlainUp, plain_up
from tests.conftest import Project

# Options of typer's `up` that change what runs (the supervisor attached to the terminal,
# its log format) or only print help: the fast path leaves them to typer on purpose.
LEFT_TO_TYPER = {"--foreground", "--log-format", "--help"}


def typer_up() -> Any:
    """typer's `up` command (a click command from the copy of click typer carries)."""
    return typer.main.get_command(app).commands["up"]  # type: ignore[attr-defined]


def typer_parse(argv: Sequence[str]) -> PlainUp:
    params = typer_up().make_context("up", list(argv[1:])).params
    assert not params["foreground"] and params["log_format"] == "auto"
    return PlainUp(list(params["names"] or []), list(params["files"] or []), params["no_deps"], params["json_out"],
                   list(params["profile"] or []))


@pytest.mark.parametrize("argv", [
    ["up"], ["up", "db"], ["up", "-f", "a.toml"], ["up", "--file", "a.toml", "--file=b.toml"],
    ["up", "--no-deps", "db"], ["up", "--json"], ["up", "db", "--json", "cache", "--no-deps", "-f", "x.toml"],
    ["up", "-f", "--json"],  # the value of -f, for both
    ["up", "--profile", "ai"], ["up", "--profile=ai", "--profile", "gpu", "db"],
])
def test_the_fast_path_parses_an_up_as_typer_does(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VROOLI_FILE", raising=False)
    assert plain_up(argv) == typer_parse(argv)


def test_every_option_of_up_is_taken_by_the_fast_path_or_left_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new option added to typer's `up` must be taught to the fast path (or listed here
    as one it leaves to typer): otherwise the fast path would silently stop being used."""
    monkeypatch.delenv("VROOLI_FILE", raising=False)
    left: set[str] = set()
    command = typer_up()
    for param in command.get_params(command.make_context("up", [])):
        if not isinstance(param, typer.core.TyperOption):
            continue
        for opt in param.opts + param.secondary_opts:
            argv = ["up", opt] + ([] if param.is_flag or param.count else ["value.toml"])
            parsed = plain_up(argv)
            if parsed is None:
                left.add(opt)
            elif not param.is_eager:
                assert parsed == typer_parse(argv), opt
    assert left == LEFT_TO_TYPER
    assert plain_up(["up", "-h"]) is None  # the app's short help, which this bare command lacks


TYPER = "import sys; from orchestrator.cli import main; sys.argv = ['vrooli', *sys.argv[1:]]; main()"


def both(project: Project, *args: str) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    fast = project.run("up", *args)
    slow = subprocess.run([sys.executable, "-c", TYPER, "up", *args], cwd=project.dir, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    return fast, slow


def timeless(text: str) -> str:
    return re.sub(r"\d+\.\d+s", "N.NNs", text)


def shape(stdout: str) -> dict[str, Any]:
    reply = json.loads(stdout)
    return {"ok": reply["ok"], "keys": sorted(reply),
            "rows": [(r["name"], r["state"], sorted(r)) for r in reply.get("resources", [])]}


def test_fast_path_and_typer_up_give_the_same_output_and_exit_codes(project: Project) -> None:
    project.write("""
        [resources.db]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
        [resources.app]
        command = ["sh", "-c", "echo ready; exec sleep 1000"]
        depends_on = ["db"]
        health = { probe = "log", pattern = "ready" }
    """)
    project.write('[resources.x]\ncommand = "not a list"\n', name="broken.toml")
    args: tuple[str, ...]
    for args in (("nope",), ("nope", "--json"), ("-f", "broken.toml"), ("-f", "broken.toml", "--json"),
                 ("-f", "missing.toml"), ("-f", "missing.toml", "--json")):
        fast, slow = both(project, *args)
        assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr), args
        assert fast.returncode == 2 and "Traceback" not in fast.stderr
    fast = project.run("up", "--json")  # cold, through the fast path
    project.run("down", check=True)
    slow = subprocess.run([sys.executable, "-c", TYPER, "up", "--json"], cwd=project.dir, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)  # cold, through typer
    assert fast.returncode == slow.returncode == 0, (fast.stderr, slow.stderr)
    assert shape(fast.stdout) == shape(slow.stdout)
    for args in ((), ("db", "--no-deps"), ("app",), ("--json",)):  # the running supervisor answers
        fast, slow = both(project, *args)
        assert fast.returncode == slow.returncode == 0, args
        if "--json" in args:
            assert shape(fast.stdout) == shape(slow.stdout)
        else:
            assert (fast.stdout, timeless(fast.stderr)) == (slow.stdout, timeless(slow.stderr)), args


def test_ctrl_c_while_waiting_is_answered_alike(project: Project) -> None:
    """Only the waiting stops, and both ways say so (typer's way printed "Aborted!", exit 1)."""
    import signal
    import time

    project.write("""
        [resources.slow]
        command = ["sh", "-c", "sleep 3; echo ready; exec sleep 1000"]
        health = { probe = "log", pattern = "ready" }
    """)
    answers = []
    for command in ([sys.executable, "-m", "orchestrator", "up"], [sys.executable, "-c", TYPER, "up"]):
        waiting = subprocess.Popen(command, cwd=project.dir, stderr=subprocess.PIPE, text=True,
                                   stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not (project.state_dir / "supervisor.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # into the wait for readiness
        waiting.send_signal(signal.SIGINT)
        _, err = waiting.communicate(timeout=30)
        answers.append((waiting.returncode, err.strip().splitlines()[-1]))
        project.run("down", check=True)
    assert answers[0] == answers[1] == (
        130, "vrooli: interrupted; the supervisor goes on starting (see `vrooli status`)")
