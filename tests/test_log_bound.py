"""Log size is a promise: a burst must not make NAME.log (or NAME.log.1) 100 MiB.

Processes write straight into their log file (no pipe a dead supervisor could break), so
the file is bounded from outside: the supervisor's log keeper notices growth at once and
keeps the last `log_max_size` bytes in NAME.log.1 (older ones shift by rename). Container
output, which the supervisor writes itself, is bounded exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.infra import logs, paths
from orchestrator.infra.logs import LogKeeper, OutputLog
from tests.conftest import Project, wait_for

MiB = 1 << 20
SLACK = 3 * MiB  # "within a few MiB": what a burst may add before the keeper cuts it
LINES = 1_000_000  # 100 bytes each: 100 MB
WRITER = ("import sys, time\\n"
          "write = sys.stdout.write\\n"
          f"for i in range({LINES}):\\n"
          "    write(f'{i:09d} ' + 'x' * 89 + '\\\\n')\\n"
          "write('done\\\\n')\\n"
          "sys.stdout.flush()\\n"
          "time.sleep(600)")


class Sampler:
    """Samples the sizes of a log and its older files, every ~2 ms, from a thread."""

    def __init__(self, live: Path, older: int) -> None:
        self.files = [live] + [live.with_name(f"{live.name}.{n}") for n in range(1, older + 2)]
        self.largest = {f.name: 0 for f in self.files}
        self.largest_total = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for path in self.files:
                try:
                    size = os.lstat(path).st_size
                except FileNotFoundError:
                    continue
                self.largest[path.name] = max(self.largest[path.name], size)
                total += size
            self.largest_total = max(self.largest_total, total)
            self.samples += 1
            time.sleep(0.002)


def test_a_100mb_burst_stays_within_a_few_mib_of_log_max_size(project: Project) -> None:
    project.write(f"""
        [resources.burst]
        command = ["python3", "-c", "{WRITER}"]
        log_max_size = "2m"
        log_max_files = 2
    """)
    live = project.state_dir / "logs" / "burst.log"
    with Sampler(live, older=2) as sampler:
        project.run("up", check=True)
        wait_for(lambda: project.run("logs", "burst", "--tail", "1").stdout == "done\n", timeout=300,
                 interval=0.5)
    limit = 2 * MiB
    assert sampler.samples > 50
    for name, largest in sampler.largest.items():
        assert largest <= limit + SLACK, (name, largest / MiB, sampler.largest)
    assert sampler.largest["burst.log.3"] == 0  # log_max_files = 2: no third older file
    assert sampler.largest_total <= 3 * (limit + SLACK)
    tail = project.run("logs", "burst", "--tail", "5", check=True).stdout.splitlines()
    assert tail == [f"{i:09d} " + "x" * 89 for i in range(LINES - 4, LINES)] + ["done"]
    sizes = {p.name: p.stat().st_size for p in live.parent.iterdir()}
    assert sum(sizes.values()) <= 3 * (limit + SLACK), sizes
    project.run("down", check=True)


@pytest.fixture(params=["ext4", "tmpfs"])
def log_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A log dir on the disk's filesystem (the head of a live file is collapsed in place) and
    on tmpfs (no collapse: truncated after catching up with the writer)."""
    if request.param == "tmpfs":
        if not Path("/dev/shm").is_dir():
            pytest.skip("no tmpfs at /dev/shm")
        base = Path(tempfile.mkdtemp(prefix="vrooli-logs-", dir="/dev/shm"))
    else:
        base = tmp_path
    paths.ensure_state_dir(base / "state")
    yield base / "state" / "logs"
    if request.param == "tmpfs":
        shutil.rmtree(base)


def test_own_writes_rotate_by_rename_before_crossing_the_limit(log_dir: Path) -> None:
    output = OutputLog(log_dir / "c.log", max_bytes=MiB, max_files=2)
    chunk = b"".join(b"%08d %s\n" % (n, b"y" * 90) for n in range(3000))  # ~300 KB of lines
    for round_ in range(10):
        output.write(chunk)
        sizes = {p.name: p.stat().st_size for p in log_dir.iterdir()}
        assert all(size <= MiB for size in sizes.values()), (round_, sizes)
        assert set(sizes) <= {"c.log", "c.log.1", "c.log.2"}
    assert output.read_all()[-1] == f"{2999:08d} " + "y" * 90
    assert output.tail(9000) == chunk.decode().splitlines() * 3  # whole, across the files


def test_rotation_keeps_the_newest_lines_whole_and_the_writers_file(log_dir: Path) -> None:
    output = OutputLog(log_dir / "p.log", max_bytes=64 * 1024, max_files=1)
    fd = output.open_for_child()
    try:
        inode = os.fstat(fd).st_ino
        lines = [f"line {n:06d}" for n in range(20000)]  # 240 KB
        os.write(fd, "".join(f"{line}\n" for line in lines).encode())
        assert output.enforce_limit()
        assert (log_dir / "p.log.1").stat().st_size <= 64 * 1024
        assert output.size() <= 8192 and os.stat(output.path).st_ino == inode
        os.write(fd, b"after\n")  # O_APPEND: the writer goes on in the same, emptied file
        kept = output.read_all()
        assert kept[-1] == "after" and kept[:-1] == lines[-len(kept) + 1:]  # nothing lost or cut
        assert len(kept) > 60 * 1024 // 12
        assert output.tail(2) == [lines[-1], "after"]
        assert not output.enforce_limit()
    finally:
        os.close(fd)
    assert stat_mode(log_dir / "p.log.1") == 0o600


def stat_mode(path: Path) -> int:
    return os.lstat(path).st_mode & 0o777


def test_no_older_files_with_log_max_files_zero(log_dir: Path) -> None:
    output = OutputLog(log_dir / "z.log", max_bytes=4096, max_files=0)
    output.write(b"a" * 4000 + b"\n")
    output.write(b"b" * 4000 + b"\n")
    assert sorted(p.name for p in log_dir.iterdir()) == ["z.log"]
    assert output.read_all() == ["b" * 4000]


@pytest.mark.e2e
@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "polling"])
def test_keeper_bounds_a_fast_writer(log_dir: Path, monkeypatch: pytest.MonkeyPatch, inotify: bool) -> None:
    if not inotify:  # as on a system without inotify (or out of instances): it polls
        def unavailable() -> None:
            raise OSError(38, "inotify unavailable")
        monkeypatch.setattr(logs, "Inotify", unavailable)
    output = OutputLog(log_dir / "w.log", max_bytes=MiB, max_files=1)
    keeper = LogKeeper(log_dir.parent, lambda: [output])
    thread = threading.Thread(target=keeper.run)
    thread.start()
    fd = output.open_for_child()
    code = ("import sys\nw = sys.stdout.write\nfor i in range(300000): w(f'{i:09d} ' + 'x' * 89 + chr(10))\n"
            "w('done' + chr(10))\n")
    try:
        with Sampler(output.path, older=1) as sampler:
            done = subprocess.run([sys.executable, "-c", code], stdout=fd, timeout=300, check=True)
            assert done.returncode == 0
            time.sleep(1.2)  # the keeper's safety period: whatever is left over is cut too
    finally:
        os.close(fd)
        keeper.stop()
        thread.join()
    for name, largest in sampler.largest.items():
        assert largest <= MiB + SLACK, (name, largest / MiB)
    assert output.size() <= MiB
    if not str(log_dir).startswith("/dev/shm"):  # collapsed in place: not a line lost
        assert output.tail(1) == ["done"]


def test_keeper_reports_the_deleted_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state" / str(uuid.uuid4())
    paths.ensure_state_dir(state)
    seen = threading.Event()
    keeper = LogKeeper(state, lambda: [], seen.set)
    thread = threading.Thread(target=keeper.run)
    thread.start()
    try:
        time.sleep(0.2)  # watching
        (state / "logs").rmdir()
        state.rmdir()
        assert seen.wait(5)
    finally:
        keeper.stop()
        thread.join()


def docker_ready() -> bool:
    try:
        subprocess.run(["docker", "image", "inspect", "vrooli-test/standin:1"], capture_output=True,
                       check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@pytest.mark.docker
@pytest.mark.skipif(not docker_ready(), reason="needs Docker and the vrooli-test/standin:1 image")
def test_container_output_is_bounded_exactly_and_so_is_the_engines_copy(project: Project) -> None:
    name = f"t{uuid.uuid4().hex[:8]}"
    code = ("import sys\\nw = sys.stdout.write\\nfor i in range(200000): w(f'{i:09d} ' + 'x' * 89 + chr(10))\\n"
            "w('done' + chr(10))\\nsys.stdout.flush()\\nimport time\\ntime.sleep(600)")
    project.write(f"""
        [project]
        name = "{name}"
        state_dir = ".state"
        health_listen = "127.0.0.1:0"

        [resources.chatty]
        runtime = "docker"
        image = "vrooli-test/standin:1"
        command = ["-c", "{code}"]
        log_max_size = "1m"
        log_max_files = 1
    """)
    live = project.state_dir / "logs" / "chatty.log"
    try:
        with Sampler(live, older=1) as sampler:
            project.run("up", check=True, timeout=180)
            wait_for(lambda: project.run("logs", "chatty", "--tail", "1").stdout == "done\n", timeout=120,
                     interval=0.5)
        for file_name, largest in sampler.largest.items():
            assert largest <= MiB, (file_name, largest)
        config = json.loads(subprocess.run(
            ["docker", "inspect", "-f", "{{json .HostConfig.LogConfig}}", f"{name}-chatty"],
            capture_output=True, text=True, check=True).stdout)
        assert config == {"Type": "json-file", "Config": {"max-size": str(MiB), "max-file": "2"}}
    finally:
        project.run("down", timeout=180)
