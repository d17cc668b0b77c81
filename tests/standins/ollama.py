"""STAND-IN for Ollama: the documented HTTP API the orchestrator uses, nothing more.

Like Ollama it binds its port before it serves HTTP (STANDIN_BIND_EARLY defaults to 1).
  STANDIN_MODELS          models already present, comma separated
  STANDIN_PULL_SECONDS    how long a pull streams progress (default 0.5)
  STANDIN_LOAD_SECONDS    how long loading a model into memory takes (default 0.2)
  STANDIN_PULL_FAIL_TIMES the first N pulls fail as Ollama words a network error
  STANDIN_MODEL_SIZE      bytes every model reports as `size` in /api/tags and /api/ps
                          (real Ollama: the size on disk, and in memory once loaded)
GET /standin/stats reports how many pulls and loads each model saw (for tests).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from _standin import Handler, run

LOCK = threading.Lock()
PRESENT: set[str] = {m.strip() for m in os.environ.get("STANDIN_MODELS", "").split(",") if m.strip()}
LOADED: dict[str, float] = {}  # model -> expiry (monotonic); -1 forever
STATS: dict[str, dict[str, int]] = {"pulls": {}, "loads": {}}
FAILS_LEFT = [int(os.environ.get("STANDIN_PULL_FAIL_TIMES", "0") or 0)]
PULL_SECONDS = float(os.environ.get("STANDIN_PULL_SECONDS", "0.5"))
LOAD_SECONDS = float(os.environ.get("STANDIN_LOAD_SECONDS", "0.2"))
SIZE = int(os.environ.get("STANDIN_MODEL_SIZE", "4920000"))


def canonical(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def keep_alive_seconds(value: Any) -> float:
    if value is None:
        return 300.0
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def expire() -> None:
    now = time.monotonic()
    for name, until in list(LOADED.items()):
        if until != -1 and until <= now:
            del LOADED[name]


class Ollama(Handler):
    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/":
            self.send_text(200, "Ollama is running")
        elif path == "/api/version":
            self.send_json(200, {"version": "0.0.0-standin"})
        elif path == "/api/tags":
            with LOCK:
                models = [{"name": m, "model": m, "size": SIZE, "digest": digest(m),
                           "modified_at": datetime.now(UTC).isoformat()} for m in sorted(PRESENT)]
            self.send_json(200, {"models": models})
        elif path == "/api/ps":
            with LOCK:
                expire()
                models = [{"name": m, "model": m, "size": SIZE, "size_vram": 0, "digest": digest(m),
                           "expires_at": (datetime.now(UTC) + timedelta(seconds=max(0, u - time.monotonic()))
                                          if u != -1 else datetime(2318, 1, 1, tzinfo=UTC)).isoformat()}
                          for m, u in sorted(LOADED.items())]
            self.send_json(200, {"models": models})
        elif path == "/standin/stats":
            with LOCK:
                self.send_json(200, STATS)
        else:
            self.send_text(404, "404 page not found")

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        body = self.read_json()
        if path == "/api/pull":
            self.pull(body)
        elif path in ("/api/generate", "/api/embed", "/api/chat"):
            self.load(body, path)
        else:
            self.send_text(404, "404 page not found")

    def pull(self, body: dict[str, Any]) -> None:
        name = canonical(str(body.get("model") or body.get("name") or ""))
        with LOCK:
            STATS["pulls"][name] = STATS["pulls"].get(name, 0) + 1
            failing = FAILS_LEFT[0] > 0
            if failing:
                FAILS_LEFT[0] -= 1
        stream = body.get("stream", True)
        if "nonexistent" in name or name in ("", ":latest"):
            self.send_json(500, {"error": "pull model manifest: file does not exist"})
            return
        if failing:
            self.send_json(500, {"error": "max retries exceeded: read tcp: connection reset by peer"})
            return
        if not stream:
            time.sleep(PULL_SECONDS)
            with LOCK:
                PRESENT.add(name)
            self.send_json(200, {"status": "success"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def line(payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        line({"status": "pulling manifest"})
        layer = "sha256:" + digest(name)
        steps = 10
        for step in range(steps + 1):
            line({"status": f"pulling {layer[7:19]}", "digest": layer, "total": SIZE,
                  "completed": SIZE * step // steps})
            time.sleep(PULL_SECONDS / steps)
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            line({"status": status})
        with LOCK:
            PRESENT.add(name)
        self.wfile.write(b"0\r\n\r\n")

    def load(self, body: dict[str, Any], path: str) -> None:
        name = canonical(str(body.get("model") or ""))
        with LOCK:
            present = name in PRESENT
        if not present:
            self.send_json(404, {"error": f'model "{name}" not found, try pulling it first'})
            return
        if path == "/api/generate" and "embed" in name:
            self.send_json(400, {"error": f'"{name}" does not support generate'})
            return
        keep = keep_alive_seconds(body.get("keep_alive"))
        if keep == 0:
            with LOCK:
                LOADED.pop(name, None)
            self.send_json(200, {"model": name, "created_at": datetime.now(UTC).isoformat(), "response": "",
                                 "done": True, "done_reason": "unload"})
            return
        with LOCK:
            expire()
            already = name in LOADED
            STATS["loads"][name] = STATS["loads"].get(name, 0) + (0 if already else 1)
        if not already:
            time.sleep(LOAD_SECONDS)
        with LOCK:
            LOADED[name] = -1 if keep < 0 else time.monotonic() + keep
        if path == "/api/embed":
            self.send_json(200, {"model": name, "embeddings": [[0.0, 0.1, 0.2]] if body.get("input") else []})
        else:
            self.send_json(200, {"model": name, "created_at": datetime.now(UTC).isoformat(), "response": "",
                                 "done": True, "done_reason": "load"})


if __name__ == "__main__":
    os.environ.setdefault("STANDIN_BIND_EARLY", "1")
    host, _, port = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").rpartition(":")
    run("ollama", Ollama, host or "127.0.0.1", int(port))
