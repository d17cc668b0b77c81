"""STAND-IN for n8n: /healthz and /healthz/readiness, and the log line n8n prints.

Readiness, as in n8n, means its database connection works: the stand-in opens a TCP
connection to DB_POSTGRESDB_HOST:DB_POSTGRESDB_PORT (when DB_TYPE=postgresdb) on every
readiness check, so it is ready only while Postgres is reachable.
"""

from __future__ import annotations

import os
import socket

from _standin import Handler, run, say


def database_reachable() -> bool:
    if os.environ.get("DB_TYPE") != "postgresdb":
        return True
    host = os.environ.get("DB_POSTGRESDB_HOST", "localhost")
    port = int(os.environ.get("DB_POSTGRESDB_PORT", "5432"))
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class N8n(Handler):
    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/healthz":
            self.send_json(200, {"status": "ok"})
        elif path == "/healthz/readiness":
            if database_reachable():
                self.send_json(200, {"status": "ok"})
            else:
                self.send_json(503, {"status": "error"})
        else:
            self.send_text(200, "<html>n8n stand-in</html>")


def ready() -> None:
    port = os.environ.get("N8N_PORT", "5678")
    say(f"Editor is now accessible via:\nhttp://localhost:{port}")


if __name__ == "__main__":
    run("n8n", N8n, "0.0.0.0", int(os.environ.get("N8N_PORT", "5678")), on_ready=ready)
