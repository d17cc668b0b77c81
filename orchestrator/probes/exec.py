from __future__ import annotations

import subprocess

import anyio

from orchestrator.probes import ExecInside, ProbeResult
from orchestrator.spec import ProbeSpec


class ExecProbe:
    """Ready when a command exits 0: on the host, or inside the container (`inside = true`)."""

    def __init__(self, spec: ProbeSpec, inside: ExecInside | None) -> None:
        self.spec = spec
        self._inside = inside

    async def check(self) -> ProbeResult:
        name = self.spec.command[0]
        if self._inside is not None:
            code, output = await self._inside(self.spec.command, self.spec.timeout)
        else:
            try:
                done = await anyio.run_process(list(self.spec.command), check=False,
                                               stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            except FileNotFoundError:
                return ProbeResult(False, f"exec: command not found: {name}")
            code, output = done.returncode, done.stdout.decode(errors="replace")
        if code == 0:
            return ProbeResult(True, f"exec {name} exited 0")
        tail = output.strip().splitlines()[-1:] if output.strip() else []
        detail = f": {tail[0][:200]}" if tail else ""
        return ProbeResult(False, f"exec {name} exited {code}{detail}")

    async def aclose(self) -> None:
        return None
