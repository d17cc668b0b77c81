"""`vrooli report`: the performance table measured on a real stack, and embedded in a file
without touching any other byte of it."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cli.report import splice
from tests.conftest import Project, free_port

RESOURCE_HEAD = "| Resource | Startup Time | Memory Usage | CPU Usage | Status |"
START, END = b"<!-- EMBED:RESOURCE_METRICS:START -->", b"<!-- EMBED:RESOURCE_METRICS:END -->"
SYS_START, SYS_END = b"<!-- EMBED:SYSTEM_METRICS:START -->", b"<!-- EMBED:SYSTEM_METRICS:END -->"
HOG = ("import time\n"
       "block = bytearray(64 << 20)\n"
       "for i in range(0, len(block), 4096): block[i] = 1\n"
       "print('ready', flush=True)\n"
       "while True: time.sleep(60)\n")
BUSY = "print('ready', flush=True)\nwhile True: pass\n"


def table(text: str, head: str) -> dict[str, list[str]]:
    """A Markdown table of `text` (the one under `head`) as first cell -> the other cells."""
    lines = text.splitlines()
    at = lines.index(head)
    rows: dict[str, list[str]] = {}
    for line in lines[at + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0]] = cells[1:]
    return rows


def mib(cell: str) -> float:
    number, unit = cell.split()
    return float(number) * {"B": 1 / (1 << 20), "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]


@pytest.fixture
def stack(project: Project) -> Project:
    project.write(f"""
        [resources.db]
        command = ["sh", "-c", "sleep 0.5; echo ready; exec sleep 1000"]
        health = {{ probe = "log", pattern = "ready" }}
        target_startup = "1m"
        target_memory = "1g"
        [resources.hog]
        # the memory is held by a child of the shell: only a sum over the tree sees it
        command = ["sh", "-c", "python3 -c \\"$$HOG\\" & wait"]
        env = {{ HOG = {json.dumps(HOG)} }}
        health = {{ probe = "log", pattern = "ready" }}
        target_memory = "32m"
        [resources.busy]
        command = ["python3", "-c", {json.dumps(BUSY)}]
        depends_on = ["db"]
        health = {{ probe = "log", pattern = "ready" }}
        target_startup = "1ms"
        [resources.broken]
        command = ["sh", "-c", "exit 3"]
        health = {{ probe = "log", pattern = "never" }}
        [resources.remote]
        runtime = "external"
        health = {{ probe = "tcp", host = "127.0.0.1", port = {free_port()} }}
        enabled = false
        target_startup = "2s"
    """)
    return project


def test_report_measures_the_running_stack(stack: Project) -> None:
    assert stack.run("up").returncode == 1  # broken fails, the rest is up
    done = stack.run("report")
    assert done.returncode == 1, done.stderr  # as `status`: something is not ready
    record = {r["name"]: r for r in json.loads((stack.state_dir / "last_start.json").read_text())["resources"]}
    rows = table(done.stdout, RESOURCE_HEAD)
    assert list(rows) == ["db", "hog", "busy", "broken"]  # config order; the disabled one is left out
    for name in ("db", "hog", "busy"):
        assert rows[name][0] == f"{record[name]['startup_seconds']:.3g}s"  # from the last start
    assert rows["broken"][0] == "—" and rows["broken"][1:] == ["—", "—", "❌ failed"]
    assert rows["db"][3] == "✅ within target"
    assert mib(rows["hog"][1]) >= 64  # the child's 64 MiB, summed over the tree
    assert rows["hog"][3] == f"⚠️ over target: memory {rows['hog'][1]} > 32 MiB"
    assert rows["busy"][3].startswith("⚠️ over target: startup ") and rows["busy"][3].endswith(" > 0.001s")
    busy_cpu, db_cpu = (float(rows[n][2].rstrip("%")) for n in ("busy", "db"))
    assert busy_cpu > 5 and db_cpu < busy_cpu  # a spinning loop against a sleeping shell
    system = table(done.stdout, "| Metric | Value |")
    assert system["Resources ready"] == ["3/4"]
    assert system["Stack startup time"] == [f"{chain_length(record):.3g}s"]
    assert mib(system["Total memory"][0]) >= mib(rows["hog"][1])

    data = json.loads(stack.run("report", "--json").stdout)
    by_name = {r["name"]: r for r in data["resources"]}
    assert data["running"] is True and data["system"]["ready"] == 3 and data["system"]["resources"] == 4
    assert by_name["hog"]["memory_bytes"] >= 64 << 20 and by_name["hog"]["over_target"]
    assert by_name["broken"]["status"] == "❌ failed" and by_name["broken"]["memory_bytes"] is None


def chain_length(record: dict[str, dict[str, object]]) -> float:
    from orchestrator.plan.analyze import critical_chain

    return float(critical_chain(list(record.values()))[0]["ready"])


def test_report_when_nothing_runs(stack: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VROOLI_KEEP_WARM", "5m")  # after `down` an idle supervisor answers: still "not running"
    done = stack.run("report")
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.strip() == "vrooli: no start recorded yet for " \
        f"{json.loads(stack.run('status', '--json').stdout)['project']} and nothing runs (run `vrooli up`)"
    assert stack.run("up").returncode == 1
    assert stack.run("down").returncode == 0
    done = stack.run("report")
    assert done.returncode == 3  # as `status`: nothing runs; the last start's times are still shown
    rows = table(done.stdout, RESOURCE_HEAD)
    assert rows["db"][0].endswith("s") and rows["db"][1:] == ["—", "—", "⏹ stopped"]
    assert "not running" in done.stderr
    target = stack.dir / "PERF.md"
    original = b"# Perf\n" + START + b"\nold\n" + END + b"\n"
    target.write_bytes(original)
    done = stack.run("report", "--embed", "PERF.md")
    assert done.returncode == 3 and "PERF.md is left as it was" in done.stderr
    assert target.read_bytes() == original
    assert stack.run("down", "--exit").returncode == 0


def between(data: bytes, start: bytes, end: bytes) -> bytes:
    return data[data.index(start) + len(start):data.index(end)]


def test_embed_changes_only_what_lies_between_the_markers(stack: Project) -> None:
    assert stack.run("up", "db", "hog").returncode == 0
    target = stack.dir / "PERFORMANCE.md"
    # CRLF line ends, text after the markers on their lines, bytes that are not UTF-8, and
    # no newline at the end: all of it must survive.
    before_res = b"# Performance\r\n\r\nIntro \xe9\xff text.\r\n" + START
    middle = END + b" trailing\r\n\r\n## System\r\n" + SYS_START
    after = SYS_END + b"\r\nLast line without newline"
    target.write_bytes(before_res + b"\r\n| stale |\r\n" + middle + b"old" + after)
    target.chmod(0o640)
    for _ in range(2):  # a second run replaces the first run's tables, nothing else
        done = stack.run("report", "--embed", "PERFORMANCE.md")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "" and "PERFORMANCE.md" in done.stderr
        data = target.read_bytes()
        resources = between(data, START, END)
        system = between(data, SYS_START, SYS_END)
        assert data == before_res + resources + middle + system + after
        assert resources.startswith(b"\r\n") and resources.endswith(b"\r\n")
        assert b"\n" not in resources.replace(b"\r\n", b"")  # every line end as the file's own
        text = resources.decode().replace("\r\n", "\n")
        assert list(table(text, RESOURCE_HEAD)) == ["db", "hog"]
        assert table(system.decode().replace("\r\n", "\n"), "| Metric | Value |")["Resources ready"] == ["2/2"]
    assert target.stat().st_mode & 0o777 == 0o640
    assert not [p.name for p in stack.dir.iterdir() if p.name.endswith(".tmp")]

    # LF, only the resource section: that one is written, the file otherwise untouched.
    plain = stack.dir / "README.md"
    head, tail = b"intro\n" + START, END + b"\nend\n"
    plain.write_bytes(head + tail)
    assert stack.run("report", "--embed", "README.md").returncode == 0
    data = plain.read_bytes()
    assert data.startswith(head) and data.endswith(tail) and b"\r" not in data
    assert RESOURCE_HEAD.encode() in data


@pytest.mark.parametrize(("content", "problem"), [
    (b"no markers at all\n", "no <!-- EMBED:RESOURCE_METRICS:START --> marker (nor SYSTEM_METRICS)"),
    (START + b"\n", "no <!-- EMBED:RESOURCE_METRICS:END --> marker"),
    (b"x\n" + END, "no <!-- EMBED:RESOURCE_METRICS:START --> marker"),
    (START + END + START + END, "2 times the <!-- EMBED:RESOURCE_METRICS:START --> marker"),
    (END + b"\n" + START, "<!-- EMBED:RESOURCE_METRICS:END --> comes before"),
    (START + END + SYS_START, "no <!-- EMBED:SYSTEM_METRICS:END --> marker"),
])
def test_bad_markers_are_one_line_and_leave_the_file(project: Project, content: bytes, problem: str) -> None:
    # Checked before anything is measured: the same answer whether or not the stack runs.
    project.write('[resources.one]\ncommand = ["sleep", "1000"]\n')
    target = project.dir / "doc.md"
    target.write_bytes(content)
    done = project.run("report", "--embed", "doc.md")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vrooli: doc.md: ") and problem in lines[0], lines
    assert target.read_bytes() == content


def test_embed_into_a_missing_file(project: Project) -> None:
    project.write('[resources.one]\ncommand = ["sleep", "1000"]\n')
    done = project.run("report", "--embed", "missing.md")
    assert done.returncode == 2 and done.stderr.strip() == \
        "vrooli: missing.md: cannot read it to embed the report: No such file or directory"


def test_embed_refuses_what_is_no_document_and_follows_a_symlink(project: Project) -> None:
    project.write('[resources.one]\ncommand = ["sh", "-c", "echo ok; exec sleep 1000"]\n'
                  'health = { probe = "log", pattern = "ok" }\n')
    os.mkfifo(project.dir / "pipe.md")
    (project.dir / "folder.md").mkdir()
    for name, problem in (("pipe.md", "not a regular file"), ("folder.md", "not a regular file"),
                          ("/dev/zero", "not a regular file")):
        done = project.run("report", "--embed", name, timeout=30)  # a FIFO must not hang it
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [f"vrooli: {name}: {problem}; --embed writes into an "
                                                    "existing Markdown file"]
    assert project.run("up").returncode == 0
    real = project.dir / "docs" / "PERF.md"
    real.parent.mkdir()
    real.write_bytes(b"a\n" + START + END + b"\nz\n")
    link = project.dir / "PERF.md"
    link.symlink_to(real)
    assert project.run("report", "--embed", "PERF.md").returncode == 0
    assert link.is_symlink() and RESOURCE_HEAD.encode() in real.read_bytes()
    assert real.read_bytes().startswith(b"a\n" + START) and real.read_bytes().endswith(END + b"\nz\n")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_embed_into_an_unwritable_directory(project: Project) -> None:
    project.write('[resources.one]\ncommand = ["sh", "-c", "echo ok; exec sleep 1000"]\n'
                  'health = { probe = "log", pattern = "ok" }\n')
    assert project.run("up").returncode == 0
    folder = project.dir / "ro"
    folder.mkdir()
    target = folder / "doc.md"
    target.write_bytes(START + END)
    folder.chmod(0o555)
    try:
        done = project.run("report", "--embed", str(target))
        assert done.returncode == 2 and "cannot write it" in done.stderr
        assert target.read_bytes() == START + END
    finally:
        folder.chmod(0o755)


def test_splice_keeps_every_other_byte() -> None:
    path = Path("x.md")
    tables = {"RESOURCE_METRICS": "| a |\n|---|", "SYSTEM_METRICS": "| b |"}
    for newline in (b"\n", b"\r\n"):
        data = b"pre" + newline + START + b"old" + END + b"mid" + SYS_START + SYS_END + b"post"
        out = splice(data, tables, path)
        assert out == (b"pre" + newline + START + newline + b"| a |" + newline + b"|---|" + newline + END
                       + b"mid" + SYS_START + newline + b"| b |" + newline + SYS_END + b"post")
        assert splice(out, tables, path) == out  # idempotent


@pytest.mark.parametrize(("line", "expected"), [
    ('target_startup = "0s"', "resources.one.target_startup: must be at least 0.001s"),
    ('target_startup = "soon"', "resources.one.target_startup: expected a duration"),
    ("target_startup = true", "resources.one.target_startup: expected a duration"),
    ('target_memory = "lots"', "resources.one.target_memory: expected a size"),
    ("target_memory = -5", "resources.one.target_memory: expected a size"),
    ('target_memory = "2000t"', "resources.one.target_memory: expected a size of at most 1024t"),
])
def test_bad_targets_are_one_line_naming_resource_and_key(project: Project, line: str, expected: str) -> None:
    project.write(f'[resources.one]\ncommand = ["sleep", "1"]\n{line}\n')
    done = project.run("validate")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{project.file}: {expected}"), lines


def test_targets_are_accepted_on_external_resources(project: Project) -> None:
    project.write(f'[resources.db]\nruntime = "external"\n'
                  f'health = {{ probe = "tcp", host = "127.0.0.1", port = {free_port()} }}\n'
                  f'target_startup = "2s"\ntarget_memory = "512MiB"\n')
    done = project.run("validate")
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------------- containers


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def container_project(project: Project) -> Iterator[Project]:
    try:
        ready = docker("image", "inspect", "vrooli-test/redis:7").returncode == 0
    except (OSError, subprocess.SubprocessError):
        ready = False
    if not ready:
        pytest.skip("needs a running Docker engine and the image vrooli-test/redis:7")
    project.name = f"t{uuid.uuid4().hex[:8]}"
    yield project
    project.run("down", "--volumes", timeout=180)
    left = docker("ps", "-aq", "--filter", f"label=dev.vrooli.project={project.name}").stdout.split()
    for ident in left:
        docker("rm", "-f", ident)
    assert not left, f"test left containers behind: {left}"


@pytest.mark.docker
def test_report_measures_a_container_through_the_engine(container_project: Project) -> None:
    project = container_project
    project.write(f'[project]\nname = "{project.name}"\nstate_dir = ".state"\nhealth_listen = "127.0.0.1:0"\n\n'
                  f'[resources.cache]\nruntime = "docker"\nimage = "vrooli-test/redis:7"\n'
                  f'ports = ["127.0.0.1:{free_port()}:6379"]\nhealth = {{ probe = "redis" }}\n'
                  f'target_memory = "1g"\n')
    assert project.run("up", timeout=180).returncode == 0
    done = project.run("report", "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)["resources"][0]
    assert row["name"] == "cache" and row["status"] == "✅ within target"
    assert row["memory_bytes"] > 1 << 20  # a redis server's usage, as the engine counts it
    assert isinstance(row["cpu_percent"], float) and 0 <= row["cpu_percent"] < 100
