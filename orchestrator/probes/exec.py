from __future__ import annotations

import os
import signal
import subprocess

import anyio
import psutil
from anyio.abc import ByteReceiveStream

from orchestrator.probes import ExecInside, ProbeResult
from orchestrator.spec import ProbeSpec

OUTPUT_LIMIT = 64 * 1024  # bytes of a command's output kept for the message (its end)


class ExecProbe:
    """Ready when a command exits 0: on the host, or inside the container (`inside = true`).

    On the host each check runs in its own session; when it ends (or is cut at the
    probe's timeout) the whole group is killed and reaped, so a hung `sh -c 'sleep …'`
    leaves nothing behind, however often it is checked.
    """

    def __init__(self, spec: ProbeSpec, inside: ExecInside | None) -> None:
        self.spec = spec
        self._inside = inside

    async def check(self) -> ProbeResult:
        name = self.spec.command[0]
        if self._inside is not None:
            code, output = await self._inside(self.spec.command, self.spec.timeout)
        else:
            try:
                code, output = await run_in_own_group(self.spec.command)
            except FileNotFoundError:
                return ProbeResult(False, f"exec: command not found: {name}")
        if code == 0:
            return ProbeResult(True, f"exec {name} exited 0")
        tail = output.strip().splitlines()[-1:] if output.strip() else []
        detail = f": {tail[0][:200]}" if tail else ""
        return ProbeResult(False, f"exec {name} exited {code}{detail}")

    async def aclose(self) -> None:
        return None


async def run_in_own_group(command: tuple[str, ...]) -> tuple[int, str]:
    """Run `command` in a new session; return its exit code and output. However this
    ends (exit, timeout, cancellation), every process of its group is killed and the
    command reaped before returning; a background child it left cannot hold the check
    open through the output pipe."""
    # Shielded: a timeout landing mid-spawn would leave a process we never got hold of,
    # so never killed. Once spawned, the cut takes effect inside the try below.
    with anyio.CancelScope(shield=True):
        process = await anyio.open_process(list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, start_new_session=True)
    kept = bytearray()
    try:
        async with anyio.create_task_group() as tg:
            assert process.stdout is not None
            tg.start_soon(_read_bounded, process.stdout, kept)
            code = await process.wait()
            _kill_group(process.pid)  # what it left behind; the pipe then ends
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:  # cut short: not reaped, so its pid is still its own
                await anyio.to_thread.run_sync(_kill_descendants, process.pid)
            _kill_group(process.pid)
            await process.aclose()  # closes the pipe and reaps the command
    return code, kept.decode(errors="replace")


def _kill_descendants(pid: int) -> None:
    """SIGKILL what the command started, including what left its group (`setsid`)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            continue


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left of the group


async def _read_bounded(stream: ByteReceiveStream, kept: bytearray) -> None:
    """Everything the command prints, keeping only the last OUTPUT_LIMIT bytes."""
    try:
        async for chunk in stream:
            kept.extend(chunk)
            del kept[:-OUTPUT_LIMIT]
    except (anyio.EndOfStream, anyio.ClosedResourceError):
        pass
