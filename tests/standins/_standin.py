"""Shared plumbing for the stand-in servers (stdlib only: they run inside a tiny image).

These are STAND-INS, not the real services: no Qdrant, n8n or Ollama binary can be had on
this machine. Each serves the documented endpoints the orchestrator relies on, and can be
told to start slowly or fail:

  STANDIN_START_DELAY   seconds after the process started before HTTP is served (the port
                        may be bound earlier); counted from process creation, not from
                        when Python got going, so a loaded machine does not stretch it
  STANDIN_BIND_EARLY    "1": bind and listen at once, answer only after the delay
  STANDIN_FAIL          a message: print it and exit 1 after the delay
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socketserver
import sys
import time
from typing import Any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "standin"
    # Headers and body go out as separate writes; without TCP_NODELAY, Nagle plus delayed
    # ACKs hold every keep-alive response back ~40 ms (real servers set it, too).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return

    def send_json(self, code: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_text(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_json(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            value = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


def since_start() -> float:
    """Seconds since this process was created, from the kernel's record of it.

    A stand-in that "takes 15 s" is ready 15 s after it was launched, as the service it
    stands in for would be; its own interpreter start-up (0.1 s alone, up to 0.4 s when
    five start at once on two cores) is not part of that time. Resolution: one clock tick.
    """
    with open("/proc/self/stat") as handle:
        after_name = handle.read().rpartition(")")[2].split()
    start_ticks = int(after_name[19])  # field 22, starttime, in clock ticks since boot
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    print(message, flush=True)


def run(name: str, handler: type[Handler], host: str, port: int, on_ready: Any = None) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    delay = float(os.environ.get("STANDIN_START_DELAY", "0") or 0)
    fail = os.environ.get("STANDIN_FAIL")
    early = os.environ.get("STANDIN_BIND_EARLY") == "1"
    say(f"stand-in {name} starting (pid {os.getpid()}); this is not the real {name}")
    server = Server((host, port), handler, bind_and_activate=early)
    if early:
        say(f"stand-in {name} bound {host}:{port}, not serving yet")
    time.sleep(max(0.0, delay - since_start()))
    if fail:
        say(f"stand-in {name} failing: {fail}")
        sys.exit(1)
    if not early:
        server.server_bind()
        server.server_activate()
    if on_ready:
        on_ready()
    say(f"stand-in {name} answering at {time.time():.6f} on {host}:{port}")
    try:
        server.serve_forever(poll_interval=0.05)
    except SystemExit:
        server.server_close()
        raise
