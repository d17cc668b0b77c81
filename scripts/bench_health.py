#!/usr/bin/env python3
"""The health endpoint's cost and capacity, for one checkout (run it on old and new code).

    python3 scripts/bench_health.py [--checkout DIR] [--rounds 5] [--label now]

Measures, on a real detached supervisor running one `sleep` resource:
- import: wall time a fresh interpreter spends importing what the endpoint needs to
  answer, on top of the supervisor's own modules (median of --rounds interpreters);
- rss: the supervisor's resident memory once the endpoint has answered /metrics, and after
  1,000 concurrent requests;
- concurrent: 1,000 connections opened at once, each sending `GET /readyz` and reading the
  answer: how many got a full answer within 30 s (fewest of --rounds batches), and how long
  a batch took (median, min-max);
- half-sent: 1,000 connections that send `GET /livez\r\nHost: x\r\n` and nothing more:
  the supervisor's open file descriptors 8 s later, and whether `vrooli status` still answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# What each server implementation imports to answer, beyond the supervisor itself.
ENDPOINT_IMPORTS = {
    "uvicorn": "import prometheus_client, uvicorn, uvicorn.protocols.http.h11_impl, uvicorn.lifespan.off",
    "h11": "import orchestrator.daemon.health, orchestrator.daemon.httpserver, h11",
}


def implementation(checkout: Path) -> str:
    package = checkout / "orchestrator"  # the module's place after the layout step, and before it
    module = next(p for p in (package / "daemon" / "health.py", package / "health.py") if p.exists())
    return "uvicorn" if "uvicorn" in module.read_text() else "h11"


def import_seconds(checkout: Path, rounds: int) -> float:
    code = ("import time, orchestrator.daemon.service, orchestrator.engine.supervisor\n"
            "t = time.perf_counter()\n"
            f"{ENDPOINT_IMPORTS[implementation(checkout)]}\n"
            "print(time.perf_counter() - t)")
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    times = [float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                  check=True).stdout) for _ in range(rounds)]
    return statistics.median(times)


async def one_request(host: str, port: int, path: str) -> bool:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await reader.read()
        return answer.startswith(b"HTTP/1.1 200") or answer.startswith(b"HTTP/1.1 503")
    except OSError:
        return False
    finally:
        writer.close()


async def concurrent(host: str, port: int, count: int) -> tuple[int, float]:
    started = time.perf_counter()
    tasks = [asyncio.wait_for(one_request(host, port, "/readyz"), 30) for _ in range(count)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return sum(1 for r in results if r is True), time.perf_counter() - started


async def half_sent(host: str, port: int, count: int, hold: float) -> int:
    writers = []
    for _ in range(count):
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            continue
        writer.write(b"GET /livez\r\nHost: x\r\n")
        writers.append(writer)
    await asyncio.sleep(hold)
    for writer in writers:
        writer.close()
    return len(writers)


def run(checkout: Path, rounds: int) -> dict[str, Any]:
    import psutil

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))  # the bench's own sockets
    work = Path(tempfile.mkdtemp(prefix="vrooli-bench-health-"))
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    (work / "resources.toml").write_text(textwrap.dedent("""
        [project]
        name = "bench-health"
        state_dir = "state"
        health_listen = "127.0.0.1:0"
        [resources.sleeper]
        command = ["sleep", "100000"]
    """))

    def vrooli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    result: dict[str, Any] = {"implementation": implementation(checkout),
                              "import_seconds": round(import_seconds(checkout, rounds), 4)}
    try:
        vrooli("up")
        pid = int((work / "state" / "supervisor.pid").read_text())
        host, _, port_text = (work / "state" / "health.addr").read_text().strip().rpartition(":")
        port = int(port_text)
        proc = psutil.Process(pid)
        asyncio.run(one_request(host, port, "/metrics"))
        time.sleep(1)
        result["rss_mb_after_metrics"] = round(proc.memory_info().rss / 1e6, 1)
        batches = [asyncio.run(concurrent(host, port, 1000)) for _ in range(rounds)]
        result["concurrent_1000_answered_min"] = min(answered for answered, _ in batches)
        times = sorted(seconds for _, seconds in batches)
        result["concurrent_1000_seconds_median"] = round(statistics.median(times), 2)
        result["concurrent_1000_seconds_range"] = [round(times[0], 2), round(times[-1], 2)]
        time.sleep(1)
        result["rss_mb_after_1000"] = round(proc.memory_info().rss / 1e6, 1)
        fds_before = proc.num_fds()

        async def flood_and_count() -> tuple[int, int]:
            flood = asyncio.create_task(half_sent(host, port, 1000, 8.0))
            await asyncio.sleep(7.5)
            held = proc.num_fds() - fds_before
            return await flood, held

        sent, held = asyncio.run(flood_and_count())
        result["half_sent_connections"] = sent
        result["half_sent_fds_held_after_7s"] = held
        result["status_exit_after_flood"] = vrooli("status").returncode if proc.is_running() else None
    finally:
        vrooli("down")
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkout", type=Path, default=ROOT)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--label", default="now")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    figures = {"label": args.label, **run(args.checkout.resolve(), args.rounds)}
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
