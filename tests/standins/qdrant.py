"""STAND-IN for Qdrant: the health and info endpoints of its documented HTTP API."""

from __future__ import annotations

import os

from _standin import Handler, run


class Qdrant(Handler):
    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path in ("/healthz", "/livez", "/readyz"):
            self.send_text(200, f"{path[1:]} check passed")
        elif path == "/":
            self.send_json(200, {"title": "qdrant - vector search engine (stand-in)", "version": "stand-in"})
        elif path == "/collections":
            self.send_json(200, {"result": {"collections": []}, "status": "ok", "time": 0.0})
        else:
            self.send_json(404, {"status": {"error": f"Not found: {path}"}})


if __name__ == "__main__":
    port = int(os.environ.get("QDRANT__SERVICE__HTTP_PORT", "6333"))
    run("qdrant", Qdrant, os.environ.get("QDRANT_HOST", "0.0.0.0"), port)
