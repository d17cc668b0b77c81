"""running.json of every wrong shape, left behind by a supervisor killed with SIGKILL.

The next `up` must not crash, must report and set the file aside, adopt what it can
verify, and never start a second copy of a process that still runs.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from orchestrator.engine import records
from tests.conftest import Project, processes_with_token, wait_for

SERVICES = """
    [resources.a]
    command = ["python3", "-c", "import time; print('a up', flush=True); time.sleep(600)"]
    health = { probe = "log", pattern = "a up" }

    [resources.b]
    command = ["python3", "-c", "import time; print('b up', flush=True); time.sleep(601)"]
    health = { probe = "log", pattern = "b up" }
"""


def record_of(project: Project, name: str) -> dict[str, object]:
    recorded: dict[str, dict[str, object]] = json.loads((project.state_dir / "running.json").read_text())
    return recorded[name]


def copies_of(token: str, marker: str) -> list[psutil.Process]:
    found = []
    for proc in processes_with_token(token):
        try:
            if marker in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:  # gone meanwhile
            continue
    return found


def kill_supervisor(project: Project) -> None:
    pid = int((project.state_dir / "supervisor.pid").read_text())
    os.kill(pid, signal.SIGKILL)

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(gone, timeout=30)


def shapes(valid_b: dict[str, object]) -> dict[str, str]:
    """running.json texts; `valid_b` is b's real record, kept in the partial cases."""
    def with_b(bad_a: object) -> str:
        return json.dumps({"a": bad_a, "b": valid_b})

    good = dict(valid_b)
    return {
        "list": "[1, 2]",
        "number": "42",
        "null": "null",
        "string": '"running"',
        "not json": '{"a": {"kind": "process"',
        "empty file": "",
        "binary": "\udcff\x00garbage",
        "deeply nested": "[" * 100_000 + "]" * 100_000,
        "record is a number": with_b(5),
        "record is a list": with_b(["process", "123"]),
        "ident not numeric": with_b({**good, "ident": "12; rm -rf /"}),
        "ident is pid 1": with_b({**good, "ident": "1"}),
        "ident negative": with_b({**good, "ident": "-1"}),
        "ident huge": with_b({**good, "ident": "9" * 400}),
        "ident an int": with_b({**good, "ident": 1234}),
        "ident superscript digits": with_b({**good, "ident": "\u00b9\u00b2\u00b3"}),
        "missing keys": with_b({"kind": "process", "ident": "1234"}),
        "create_time a string": with_b({**good, "create_time": "yesterday"}),
        "create_time NaN": with_b({**good, "create_time": float("nan")}),
        "config_hash a number": with_b({**good, "config_hash": 7}),
        "log_start negative": with_b({**good, "log_start": -5}),
        "unknown kind": with_b({**good, "kind": "vm"}),
        "extra key": with_b({**good, "extra": True}),
        "docker id not hex": with_b({**good, "kind": "docker", "ident": "../../etc"}),
    }


SHAPES = sorted(shapes({"kind": "process", "ident": "2", "create_time": 0, "config_hash": ""}))


@pytest.mark.parametrize("shape", SHAPES)
def test_running_record_of_the_wrong_shape_is_set_aside(project: Project, no_leaked_processes: str,
                                                        shape: str) -> None:
    project.write(SERVICES)
    project.run("up", check=True)
    before = {name: row["pid"] for name, row in project.rows().items()}
    valid_b = record_of(project, "b")
    kill_supervisor(project)
    text = shapes(valid_b)[shape]
    (project.state_dir / "running.json").write_text(text, errors="surrogateescape")

    done = project.run("up")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    after = {name: row["pid"] for name, row in project.rows().items()}
    # Nothing runs twice, and what still ran was taken back: the same processes.
    assert after == before
    for marker in ("time.sleep(600)", "time.sleep(601)"):
        assert len(copies_of(no_leaked_processes, marker)) == 1
    aside = list(project.state_dir.glob("running.json.bad-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == text.encode(errors="surrogateescape")
    log = (project.state_dir / "supervisor.log").read_text().splitlines()
    warnings = [line for line in log if "running.json: records of the wrong shape set aside" in line]
    assert len(warnings) == 1
    if shape not in ("list", "number", "null", "string", "not json", "empty file", "binary",
                     "deeply nested"):
        assert '"adopted"' in "\n".join(log) and "b" in warnings[0]
        assert json.loads(warnings[0])["problems"][0].startswith("'a': ")

    project.run("down", check=True)
    assert not copies_of(no_leaked_processes, "time.sleep(60")


def test_record_parser_names_the_problem_of_each_shape() -> None:
    valid = {"kind": "process", "ident": "4321", "create_time": 1.5, "config_hash": "abc", "log_start": 7}
    for shape, text in shapes(valid).items():
        leftovers, problems = records.parse(text)
        assert problems, shape
        assert [leftover.name for leftover in leftovers] in ([], ["b"]), shape
    leftovers, problems = records.parse(json.dumps({"b": valid}))
    assert problems == [] and leftovers[0].record.ident == "4321" and leftovers[0].log_start == 7


def test_down_with_a_corrupt_record_and_no_supervisor_stops_what_runs(project: Project,
                                                                      no_leaked_processes: str) -> None:
    """`down` must never say "nothing is running" while our processes run."""
    project.write(SERVICES)
    project.run("up", check=True)
    kill_supervisor(project)
    (project.state_dir / "running.json").write_text("null")
    done = project.run("down")
    assert done.returncode == 0 and "nothing is running" not in done.stderr, done.stderr
    wait_for(lambda: not copies_of(no_leaked_processes, "time.sleep(60"), timeout=30)


def test_records_are_written_private_and_whole(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "running.json").symlink_to(tmp_path / "elsewhere")
    records.write(state, {"a": {"kind": "process"}})
    assert not (tmp_path / "elsewhere").exists()
    info = (state / "running.json").lstat()
    assert not (state / "running.json").is_symlink() and info.st_mode & 0o777 == 0o600
    assert json.loads((state / "running.json").read_text()) == {"a": {"kind": "process"}}
    assert sorted(p.name for p in state.iterdir()) == ["running.json"]


def test_unrecorded_process_whose_command_changed_is_replaced_not_doubled(project: Project,
                                                                          no_leaked_processes: str) -> None:
    """No valid record, and the file now declares another command: the old copy is stopped
    (we cannot tell it is still what the file asks for), one new copy runs."""
    project.write(SERVICES)
    project.run("up", check=True)
    old_pid = project.rows()["a"]["pid"]
    kill_supervisor(project)
    (project.state_dir / "running.json").write_text("[]")
    project.write(SERVICES.replace("time.sleep(600)", "time.sleep(602)"))
    project.run("up", check=True)
    assert not copies_of(no_leaked_processes, "time.sleep(600)")
    [new] = copies_of(no_leaked_processes, "time.sleep(602)")
    assert new.pid == project.rows()["a"]["pid"] != old_pid
    project.run("down", check=True)
