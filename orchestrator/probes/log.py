from __future__ import annotations

from orchestrator.probes import ProbeContext, ProbeResult
from orchestrator.spec import ProbeSpec


class LogProbe:
    """Ready once the resource's output since this start matches a regular expression.

    A log line is an event, not a state: once seen it stays seen for this start, so the
    liveness checks after ready keep passing.
    """

    def __init__(self, spec: ProbeSpec, context: ProbeContext) -> None:
        self.spec = spec
        self.context = context
        self._cursor = context.log_start
        self._seen = False

    async def check(self) -> ProbeResult:
        assert self.spec.pattern is not None
        if self._seen:
            return ProbeResult(True, f"log matched /{self.spec.pattern}/")
        if self.context.log is None:
            return ProbeResult(False, "log: no output captured for this resource")
        self._seen, self._cursor = self.context.log.search(self.spec.pattern, self._cursor)
        if self._seen:
            return ProbeResult(True, f"log matched /{self.spec.pattern}/")
        return ProbeResult(False, f"log: waiting for /{self.spec.pattern}/")

    async def aclose(self) -> None:
        return None
