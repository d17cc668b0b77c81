"""`vrooli logs [NAME...]` on real processes, real redis-server and a real container.

Several resources interleave with a name column (coloured on a terminal only), `--tail` is
per resource, `--since` and `--timestamps` use each line's time from the checkpoint index
the supervisor's log keeper writes beside the logs, and that index survives rotation (the
live file's head collapsed in place, or copied and truncated on tmpfs).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.cli.logs_view import Follower, timed_lines
from orchestrator.infra import logtimes, paths
from orchestrator.infra.logs import LogKeeper, OutputLog
from orchestrator.runtimes.docker import container_name
from tests.conftest import Project, free_port, wait_for

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
ESCAPE = "\033["


def writer(tag: str, go: Path, late: Path) -> str:
    """A service printing three lines, three more once `go` exists, then one per `late`
    file it sees (late.1, late.2, ...), as a follower would watch."""
    code = (f"import os, time\n"
            f"def say(text): print('{tag} ' + text, flush=True)\n"
            f"for n in range(1, 4): say(f'early {{n}}')\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
            f"for n in range(4, 7): say(f'later {{n}}')\n"
            f"seen = 0\n"
            f"while True:\n"
            f"    if os.path.exists({str(late)!r} + f'.{{seen + 1}}'):\n"
            f"        seen += 1; say(f'late {{seen}}')\n"
            f"    time.sleep(0.02)\n")
    return json.dumps(["python3", "-c", code])


@pytest.fixture
def writers(project: Project) -> Project:
    go, late = project.dir / "go", project.dir / "late"
    redis_port = free_port()
    project.write(f"""
        [resources.alpha]
        command = {writer("alpha", go, late)}
        health = {{ probe = "log", pattern = "alpha early 3" }}

        [resources.bravo-two]
        command = {writer("bravo", go, late)}
        health = {{ probe = "log", pattern = "bravo early 3" }}

        [resources.redis]
        command = ["redis-server", "--port", "{redis_port}", "--save", "", "--appendonly", "no"]
        ports = [{redis_port}]
        health = {{ probe = "redis" }}
    """)
    project.run("up", check=True)
    return project


def release(project: Project) -> tuple[float, float]:
    """Let the writers print their `later` lines; returns the times around it."""
    before = time.time()
    time.sleep(0.05)  # the clock moves on: the early lines are strictly older than `before`
    (project.dir / "go").touch()
    for tag in ("alpha", "bravo-two"):
        wait_for(lambda tag=tag: "later 6" in project.run("logs", tag).stdout, timeout=30, interval=0.1)
    return before, time.time()


def test_interleaves_with_a_name_column_and_tails_per_resource(writers: Project) -> None:
    release(writers)
    done = writers.run("logs", check=True)
    lines = done.stdout.splitlines()
    assert ESCAPE not in done.stdout  # piped: no colour
    assert "alpha     | alpha early 1" in lines and "bravo-two | bravo later 6" in lines
    assert any(re.match(r"^redis     \| .*Ready to accept connections", line) for line in lines)
    for tag, name in (("alpha", "alpha    "), ("bravo", "bravo-two")):  # each resource's lines in order
        own = [line for line in lines if line.startswith(f"{name} | {tag} ")]
        assert own == [f"{name} | {tag} early {n}" for n in (1, 2, 3)] + \
                      [f"{name} | {tag} later {n}" for n in (4, 5, 6)]
    # Interleaved by time: every early line (written before `go`) before every later one.
    first_later = min(n for n, line in enumerate(lines) if " later " in line)
    assert all(n < first_later for n, line in enumerate(lines) if " early " in line)

    tailed = writers.run("logs", "--tail", "2", "alpha", "bravo-two", check=True).stdout.splitlines()
    assert sorted(tailed) == sorted(["alpha     | alpha later 5", "alpha     | alpha later 6",
                                     "bravo-two | bravo later 5", "bravo-two | bravo later 6"])
    assert writers.run("logs", "alpha", "--tail", "1", check=True).stdout == "alpha later 6\n"  # as before


def test_since_and_timestamps(writers: Project) -> None:
    before, after = release(writers)
    moment = datetime.fromtimestamp(before, UTC).isoformat().replace("+00:00", "Z")
    since = writers.run("logs", "alpha", "bravo-two", "--since", moment, "--tail", "0", check=True)
    assert sorted(since.stdout.splitlines()) == sorted(
        [f"alpha     | alpha later {n}" for n in (4, 5, 6)] + [f"bravo-two | bravo later {n}" for n in (4, 5, 6)])
    everything = writers.run("logs", "alpha", "--since", "10m", check=True).stdout.splitlines()
    assert everything[0] == "alpha early 1" and len(everything) == 6
    assert writers.run("logs", "--since", "1h30m", "--tail", "0", check=True).stdout.count("later") == 6

    stamped = writers.run("logs", "--timestamps", "alpha", "redis", check=True).stdout.splitlines()
    for line in stamped:
        rest = line.partition(" | ")[2]
        stamp, _, text = rest.partition(" ")
        assert RFC3339.match(stamp), line
        moment_of_line = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        if "later" in text:
            assert before <= moment_of_line <= after + 1, line  # the keeper's checkpoint: within ms
        elif "early" in text:
            assert moment_of_line < before, line

    rows = [json.loads(line) for line in writers.run("logs", "--json", "--tail", "1").stdout.splitlines()]
    assert {row["resource"] for row in rows} == {"alpha", "bravo-two", "redis"}
    assert all(set(row) == {"resource", "time", "line"} and RFC3339.match(row["time"]) for row in rows)

    for bad in ("yesterday", "2026-01-02T03:04:05", "-5m"):
        done = writers.run("logs", "--since", bad)
        assert done.returncode == 2 and "Traceback" not in done.stderr, bad
        assert done.stderr.startswith("vrooli: --since"), done.stderr
    unknown = writers.run("logs", "alpha", "nope")
    assert unknown.returncode == 2 and unknown.stderr.strip().startswith("vrooli: unknown resource 'nope'")


def run_on_a_pty(project: Project, *args: str, env: dict[str, str] | None = None) -> str:
    """The CLI's output as a terminal sees it."""
    master, slave = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=project.dir, stdout=slave,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=60,
                              env={**os.environ, **(env or {})})
        assert done.returncode == 0, done.stderr
        os.close(slave)
        slave = -1
        chunks = []
        while select.select([master], [], [], 1)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_colour_only_on_a_terminal_without_no_color(writers: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = run_on_a_pty(writers, "logs", "alpha", "bravo-two")
    assert "\033[36malpha     |\033[0m alpha early 1" in coloured
    assert "\033[33mbravo-two |\033[0m bravo early 1" in coloured
    plain = run_on_a_pty(writers, "logs", "alpha", "bravo-two", env={"NO_COLOR": "1"})
    assert ESCAPE not in plain and "alpha     | alpha early 1" in plain
    assert ESCAPE not in run_on_a_pty(writers, "logs", "alpha")  # one resource: no column, as before


def read_lines(stream: Iterator[str], into: list[str]) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.extend(stream), daemon=True)
    thread.start()
    return thread


def test_follow_sees_new_lines_of_every_resource_and_ends_on_ctrl_c(writers: Project) -> None:
    follower = subprocess.Popen([sys.executable, "-m", "orchestrator", "logs", "-f", "--tail", "1"],
                                cwd=writers.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    assert follower.stdout is not None and follower.stderr is not None
    reader = read_lines(follower.stdout, seen)
    try:
        wait_for(lambda: len(seen) >= 3, timeout=30)
        (writers.dir / "go").touch()
        wait_for(lambda: {"alpha     | alpha later 6\n", "bravo-two | bravo later 6\n"} <= set(seen), timeout=30)
        # Arrival order: bravo's late line is written after alpha's has been printed.
        (writers.dir / "late.1").touch()
        # (alpha and bravo both watch late.1; the order between them is theirs to race)
        wait_for(lambda: {"alpha     | alpha late 1\n", "bravo-two | bravo late 1\n"} <= set(seen), timeout=30)
        # A restarted resource keeps flowing into the same follow.
        writers.run("restart", "alpha", check=True)
        wait_for(lambda: "alpha     | alpha early 1\n" in seen and
                 "alpha     | alpha later 6\n" in seen[seen.index("alpha     | alpha early 1\n"):], timeout=30)
    finally:
        follower.send_signal(signal.SIGINT)
        code = follower.wait(timeout=30)
        reader.join(timeout=10)
    error = follower.stderr.read()
    assert code in (0, 130), error
    assert "Traceback" not in error and "KeyboardInterrupt" not in error


def test_follow_prints_in_arrival_order(project: Project) -> None:
    """Two resources taking turns: the follow shows the turns as they happened."""
    turn = project.dir / "turn"
    code = ("import os, sys, time\n"
            "me, other = sys.argv[1], sys.argv[2]\n"
            f"path = {str(turn)!r}\n"
            "while True:\n"
            "    try: n = int(open(path).read() or 0)\n"
            "    except (FileNotFoundError, ValueError): n = -1\n"
            "    if n >= 20: time.sleep(0.1); continue\n"
            "    if n >= 0 and n % 2 == (0 if me == 'one' else 1):\n"
            "        print(me, n, flush=True)\n"
            "        time.sleep(0.15)\n"
            "        open(path + '.tmp', 'w').write(str(n + 1)); os.replace(path + '.tmp', path)\n"
            "    time.sleep(0.01)\n")
    project.write(f"""
        [resources.one]
        command = ["python3", "-c", {json.dumps(code)}, "one", "two"]
        [resources.two]
        command = ["python3", "-c", {json.dumps(code)}, "two", "one"]
    """)
    project.run("up", check=True)
    follower = subprocess.Popen([sys.executable, "-m", "orchestrator", "logs", "-f", "--tail", "0"],
                                cwd=project.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    assert follower.stdout is not None and follower.stderr is not None
    reader = read_lines(follower.stdout, seen)
    try:
        time.sleep(1)  # the follower is polling
        # Held up (as on a loaded machine), it finds many turns at once: their times order them.
        follower.send_signal(signal.SIGSTOP)
        turn.write_text("0")
        wait_for(lambda: int(turn.read_text() or 0) >= 8, timeout=60)
        follower.send_signal(signal.SIGCONT)
        wait_for(lambda: len(seen) >= 20, timeout=60)
    finally:
        follower.send_signal(signal.SIGCONT)
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=30)
        reader.join(timeout=10)
    names = ["one" if n % 2 == 0 else "two" for n in range(20)]
    assert seen[:20] == [f"{name} | {name} {n}\n" for n, name in enumerate(names)]


# ---------------------------------------------------------------- the index under rotation


@pytest.fixture(params=["ext4", "tmpfs"])
def log_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
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


def test_line_times_survive_rotation_and_a_follower_loses_nothing(log_dir: Path) -> None:
    """Lines written in two phases a second apart keep their phase's time across many
    rotations, and a follower polling meanwhile sees every line once, in order."""
    output = OutputLog(log_dir / "w.log", max_bytes=64 * 1024, max_files=2)
    keeper = LogKeeper(log_dir.parent, lambda: [output])
    thread = threading.Thread(target=keeper.run)
    thread.start()
    fd = output.open_for_child()
    follower = Follower(output, "w", 0)
    followed: list[str] = []
    try:
        os.write(fd, b"start\n")  # once checkpointed, the keeper is watching
        wait_for(lambda: logtimes.read(output.path).ends, timeout=10)
        for number in range(1000):  # phase one: 40 KB, no rotation yet
            os.write(fd, f"one {number:06d} {'x' * 28}\n".encode())
        time.sleep(0.3)
        followed += [line.text for line in follower.poll()]
        middle = time.time()
        time.sleep(0.3)
        for number in range(3000):  # phase two: 120 KB in bursts, rotated on the way
            os.write(fd, f"two {number:06d} {'y' * 28}\n".encode())
            if number % 500 == 499:
                time.sleep(0.05)
                followed += [line.text for line in follower.poll()]
        time.sleep(0.3)
        wait_for(lambda: output.size() <= output.max_bytes, timeout=10)
        followed += [line.text for line in follower.poll()]
    finally:
        os.close(fd)
        keeper.stop()
        thread.join()
    assert (log_dir / "w.log.1").exists()  # it was rotated
    lines, _ = timed_lines(output, "w", None)
    assert lines[-1].text.startswith("two 002999")
    for line in lines:
        assert (line.time < middle) == (line.text[:1] != "t"), (line, middle)  # "two ..." or its cut head
    expected = (["start"] + [f"one {n:06d} {'x' * 28}" for n in range(1000)]
                + [f"two {n:06d} {'y' * 28}" for n in range(3000)])
    if str(log_dir).startswith("/dev/shm"):  # copy-and-truncate: what was written in the instant may go
        assert followed == sorted(set(followed), key=expected.index)
    else:
        assert followed == expected  # collapsed in place: every line, once, in order
    # In order, with gaps between older files; a line whose end an older file dropped is
    # kept as far as it goes, never glued to another.
    whole = {text: n for n, text in enumerate(expected)}
    positions = [whole.get(line.text, -1) for line in lines]
    cut = [line.text for line, at in zip(lines, positions, strict=True) if at < 0]
    assert all(any(text.startswith(t) for text in expected) for t in cut) and len(cut) <= 2, cut
    assert [at for at in positions if at >= 0] == sorted({at for at in positions if at >= 0})
    assert positions[-1] == len(expected) - 1


def test_the_index_stays_bounded(tmp_path: Path) -> None:
    paths.ensure_state_dir(tmp_path / "state")
    log = tmp_path / "state" / "logs" / "slow.log"
    log.write_bytes(b"")
    for size in range(1, 20001):  # a checkpoint per byte: the worst a writer can force
        logtimes.mark(log, size, 1000.0 + size, 100 * 1024)
    index = logtimes.read(log)
    assert logtimes.index_path(log).stat().st_size <= logtimes.MIN_CAP + logtimes.RECORD.size
    assert index.ends[-1] == 20000 and index.times[-1] == 21000.0  # the newest checkpoint kept
    assert list(index.ends) == sorted(index.ends)


def test_a_late_keeper_mark_neither_unsorts_the_index_nor_delays_a_line(tmp_path: Path) -> None:
    """The keeper reads a container log's size unlocked and may mark it after the container's
    writer has marked the same or a later end with the engine's (earlier) time: the race CI
    once lost, which left ends out of order and gave a line the copy's time, 9 ms late."""
    paths.ensure_state_dir(tmp_path / "state")
    log = tmp_path / "state" / "logs" / "cache.log"
    log.write_bytes(b"")
    logtimes.mark(log, 10, 100.0, 1 << 20)  # writer: entry 1, the engine's time
    logtimes.mark(log, 25, 101.0, 1 << 20)  # writer: entry 2
    logtimes.mark(log, 10, 100.009, 1 << 20)  # keeper: entry 1's size and mtime, late
    logtimes.mark(log, 25, 101.009, 1 << 20)  # keeper: entry 2's, late
    index = logtimes.read(log)
    assert index.ends == (10, 25) and index.times == (100.0, 101.0)
    assert index.time_of(25) == 101.0 and index.time_of(11) == 101.0
    logtimes.mark(log, 25, 100.5, 1 << 20)  # the same end, an earlier time: the line's true time
    logtimes.mark(log, 40, 102.0, 1 << 20)
    assert logtimes.read(log).ends == (10, 25, 40) and logtimes.read(log).times == (100.0, 100.5, 102.0)


# ---------------------------------------------------------------- containers


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def writers_project_name(project: Project) -> str:
    return str(project.status()["project"])


@pytest.mark.docker
def test_a_container_interleaves_with_a_process(project: Project) -> None:
    try:
        subprocess.run(["docker", "image", "inspect", "vrooli-test/redis:7"], capture_output=True, check=True,
                       timeout=30)
    except (OSError, subprocess.SubprocessError):
        if os.environ.get("CI"):
            pytest.fail("needs a running Docker engine and `scripts/build-test-images.sh`")
        pytest.skip("needs a running Docker engine and `scripts/build-test-images.sh`")
    port = free_port()
    project.write(f"""
        [resources.cache]
        runtime = "docker"
        image = "vrooli-test/redis:7"
        ports = ["127.0.0.1:{port}:6379"]
        health = {{ probe = "redis" }}
        [resources.app]
        command = ["sh", "-c", "echo app says hello; exec sleep 1000"]
        health = {{ probe = "log", pattern = "hello" }}
    """)
    try:
        project.run("up", timeout=180, check=True)
        wait_for(lambda: "Ready to accept connections" in project.run("logs", "cache").stdout, timeout=60,
                 interval=0.2)
        lines = project.run("logs", "--timestamps", check=True).stdout.splitlines()
        cache = [line for line in lines if line.startswith("cache | ")]
        assert any("Ready to accept connections" in line for line in cache)
        assert "app   | " in lines[-1] or any(line.startswith("app   | ") for line in lines)
        for line in lines:
            assert RFC3339.match(line.split(" | ", 1)[1].split(" ", 1)[0]), line
        # The engine's own time of each line (`docker logs -t`), not when vrooli copied it.
        name = container_name(writers_project_name(project), "cache")
        engine = subprocess.run(["docker", "logs", "-t", name], capture_output=True, text=True, check=True)
        stamp = next(line.split(" ", 1)[0] for line in (engine.stdout + engine.stderr).splitlines()
                     if "Ready to accept connections" in line)
        ours = next(line.split(" | ", 1)[1].split(" ", 1)[0] for line in cache if "Ready to accept" in line)
        assert abs(seconds(ours) - seconds(stamp[:26] + "Z")) < 2e-6, (ours, stamp)
        later = datetime.fromtimestamp(time.time() + 5, UTC).isoformat()
        assert project.run("logs", "cache", "--since", later, check=True).stdout == ""
        assert "Ready to accept" in project.run("logs", "cache", "--since", "10m", check=True).stdout
    finally:
        project.run("down", timeout=120)


BAD_OPTIONS = {
    "since a word": (["--since", "yesterday"], "vrooli: --since 'yesterday': expected a duration"),
    "since without offset": (["--since", "2026-01-02T03:04:05"], "needs its offset"),
    "since negative": (["--since", "-5m"], "vrooli: --since '-5m': expected a duration"),
    "since bare negative": (["--since", "-5"], "vrooli: --since '-5': expected a duration"),
    "since empty": (["--since", ""], "vrooli: --since '': expected"),
    "since bad unit": (["--since", "10x"], "vrooli: --since '10x': expected"),
    "since month 13": (["--since", "2026-13-01T00:00:00Z"], "vrooli: --since '2026-13-01T00:00:00Z'"),
    "tail negative": (["--tail", "-1"], "vrooli: --tail -1: expected 0"),
    "unknown among known": (["a", "nope"], "vrooli: unknown resource 'nope' (known: a)"),
}


@pytest.mark.parametrize("case", BAD_OPTIONS, ids=str)
def test_bad_options_are_one_line_and_exit_2(project: Project, case: str) -> None:
    args, message = BAD_OPTIONS[case]
    project.write('[resources.a]\ncommand = ["sleep", "1"]\n')
    done = project.run("logs", *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr


def test_a_planted_index_is_refused_not_followed(project: Project) -> None:
    project.write('[resources.a]\ncommand = ["sh", "-c", "echo hi; exec sleep 1000"]\n'
                  'health = { probe = "log", pattern = "hi" }\n')
    project.run("up", check=True)
    index = logtimes.index_path(paths.resource_log(project.state_dir, "a"))
    wait_for(index.exists, timeout=10)
    secret = project.dir / "secret"
    secret.write_bytes(b"not yours")
    index.unlink()
    index.symlink_to(secret)
    done = project.run("logs", "a", "a")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "symbolic link" in done.stderr and str(index) in done.stderr
    assert secret.read_bytes() == b"not yours"


def test_one_resource_reads_as_it_always_did(log_dir: Path) -> None:
    """`logs NAME` splits and tails as OutputLog.tail and read_all always did: carriage
    returns, empty lines, a line still being written, a line across the rotation."""
    output = OutputLog(log_dir / "r.log", max_bytes=4096, max_files=1)
    output.write(b"first\r\nprogress 10%\rprogress 100%\n\n\nblank above\n" + b"z" * 3000 + b"\n")
    output.write(b"x" * 2000 + b"\nafter rotation\nunfinished")  # rotated by rename: whole lines
    for tail in (1, 2, 5, 50):
        assert [line.text for line in timed_lines(output, "r", tail)[0]][-tail:] == output.tail(tail), tail
    assert [line.text for line in timed_lines(output, "r", None)[0]] == output.read_all()


def test_follow_picks_up_a_resource_that_starts_later(project: Project) -> None:
    project.write("""
        [resources.early]
        command = ["sh", "-c", "echo early here; exec sleep 1000"]
        health = { probe = "log", pattern = "early here" }
        [resources.late]
        command = ["sh", "-c", "echo late here; exec sleep 1000"]
        health = { probe = "log", pattern = "late here" }
    """)
    project.run("up", "early", check=True)
    assert not paths.resource_log(project.state_dir, "late").exists()
    follower = subprocess.Popen([sys.executable, "-m", "orchestrator", "logs", "-f"], cwd=project.dir,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    assert follower.stdout is not None and follower.stderr is not None
    reader = read_lines(follower.stdout, seen)
    try:
        wait_for(lambda: "early | early here\n" in seen, timeout=30)
        project.run("up", "late", check=True)
        wait_for(lambda: "late  | late here\n" in seen, timeout=30)
    finally:
        follower.send_signal(signal.SIGINT)
        code = follower.wait(timeout=30)
        reader.join(timeout=10)
    assert code in (0, 130) and "Traceback" not in follower.stderr.read()


def test_each_entry_of_a_container_chunk_keeps_its_own_engine_time() -> None:
    # A container that writes several lines at once sends them in one chunk; before, every
    # line of the chunk took the last one's time (16 ms off in 1 run of 3 with redis).
    from orchestrator.runtimes.docker import engine_entries

    chunk = (b"2026-11-30T04:55:06.800567198Z first\n2026-11-30T04:55:06.816610000Z second\n"
             b"2026-11-30T04:55:07Z third\n")
    entries = engine_entries(b"tail of an entry\n" + chunk)
    assert [e for e, _ in entries] == [b"tail of an entry\n", b"first\n", b"second\n", b"third\n"]
    times = [t for _, t in entries]
    assert times[0] is None
    assert times[1] == pytest.approx(1796014506.800567, abs=1e-6)
    assert times[2] == pytest.approx(1796014506.81661, abs=1e-6)
    assert times[3] == pytest.approx(1796014507.0, abs=1e-6)
    assert engine_entries(b"no prefix at all") == [(b"no prefix at all", None)]
