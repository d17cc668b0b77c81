"""CPU cost of knowing when each line of a native process's output was written.

Two designs, measured under a chatty writer (Python writing 100-byte lines as fast as it
can, 1M lines = 100 MB; the README's ~50 MB/s case):

  pipe   the process writes into a pipe; a reader (what the supervisor would run) stamps
         each line with the time and appends it to the log file.
  index  the process writes straight into its log file (as today); the supervisor's log
         keeper, woken by inotify, appends a (time, offset) checkpoint to a sidecar index.
  keeper the log keeper as before the index (baseline for `index`).

Prints the CPU seconds of the supervisor's side (reader or keeper) and the writer's wall
time. Run: python3 scripts/bench_log_times.py pipe|index|keeper [LINES]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WRITER = ("import sys\nw = sys.stdout.write\nfor i in range({lines}): w(f'{{i:09d}} ' + 'x' * 89 + chr(10))\n"
          "sys.stdout.flush()\n")


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pipe(lines: int, directory: Path) -> tuple[float, float]:
    started, wall = cpu(), time.monotonic()
    child = subprocess.Popen([sys.executable, "-c", WRITER.format(lines=lines)], stdout=subprocess.PIPE)
    assert child.stdout is not None
    out = os.open(directory / "p.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    pending = b""
    reader = child.stdout.raw  # type: ignore[attr-defined]
    while chunk := reader.read(1 << 16):
        *complete, pending = (pending + chunk).split(b"\n")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()).encode() + b"Z "
        os.write(out, b"".join(stamp + line + b"\n" for line in complete))
    child.wait()
    os.close(out)
    return cpu() - started, time.monotonic() - wall


def keeper(lines: int, directory: Path, with_index: bool) -> tuple[float, float]:
    from orchestrator.infra import logs, paths

    paths.ensure_state_dir(directory / "state")
    output = logs.OutputLog(directory / "state" / "logs" / "k.log", max_bytes=10 << 20, max_files=1)
    if not with_index:
        logs.OutputLog.mark = lambda self, size, when: None  # type: ignore[method-assign,assignment]
    keep = logs.LogKeeper(directory / "state", lambda: [output])
    thread = threading.Thread(target=keep.run)
    thread.start()
    time.sleep(0.2)
    fd = output.open_for_child()
    started, wall = cpu(), time.monotonic()
    subprocess.run([sys.executable, "-c", WRITER.format(lines=lines)], stdout=fd, check=True)
    elapsed = time.monotonic() - wall
    time.sleep(1.2)  # the keeper's safety period: its last round is counted too
    spent = cpu() - started
    keep.stop()
    thread.join()
    os.close(fd)
    return spent, elapsed


def main() -> None:
    mode = sys.argv[1]
    lines = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        directory = Path(name)
        spent, wall = pipe(lines, directory) if mode == "pipe" else keeper(lines, directory, mode == "index")
    print(f"{mode}: {lines * 100 / 1e6:.0f} MB in {wall:.2f} s; supervisor side {spent:.3f} s CPU "
          f"({spent / wall * 100:.0f} % of a core while it wrote)")


if __name__ == "__main__":
    main()
