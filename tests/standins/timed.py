"""STAND-IN with a scripted start time, for the benchmark's `seed` profile.

  timed.py --name postgres --port 5433 --delay 3
      the port opens 3 s after the process started; every GET answers 200 from then on
  timed.py --name n8n --port 5678 --delay 15 --needs 127.0.0.1:5433 --needs 127.0.0.1:6380
      the port opens at once; GET answers 503 until 15 s have passed since the process
      started AND every --needs address accepts connections (like n8n retrying its
      database), then 200

It prints "stand-in NAME answering at <epoch seconds>" the moment it would first answer
200, so the benchmark can measure how late the orchestrator noticed.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time

from _standin import Handler, Server, say, since_start

READY = threading.Event()


def reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.2):
            return True
    except OSError:
        return False


class Timed(Handler):
    def do_GET(self) -> None:
        if READY.is_set():
            self.send_json(200, {"status": "ok"})
        else:
            self.send_json(503, {"status": "starting"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--needs", action="append", default=[])
    args = parser.parse_args()
    say(f"stand-in {args.name} starting; this is not the real {args.name}")
    server = Server(("127.0.0.1", args.port), Timed, bind_and_activate=bool(args.needs))
    if not args.needs:
        time.sleep(max(0.0, args.delay - since_start()))
        server.server_bind()
        server.server_activate()
        READY.set()
        say(f"stand-in {args.name} answering at {time.time():.6f}")
    else:
        def wait_ready() -> None:
            # Sleep out the start time first; only then poll what it needs, so the stand-in
            # does not load the machine (and the other stand-ins) while it "starts".
            time.sleep(max(0.0, args.delay - since_start()))
            while not all(reachable(a) for a in args.needs):
                time.sleep(0.002)
            READY.set()
            say(f"stand-in {args.name} answering at {time.time():.6f}")

        threading.Thread(target=wait_ready, daemon=True).start()
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
