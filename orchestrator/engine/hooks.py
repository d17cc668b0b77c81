"""Hooks: `post_start` (run once the probe passes; must exit 0 before READY) and `pre_stop`
(run before the stop signal, within `stop_timeout`).

A hook runs on the host with the resource's env (a process resource's cwd and user too), or,
with `hooks_inside`, by docker exec in the container (the runtime's `exec_inside`, which kills
an exec that overruns). On the host it runs in its own session with a token of its own in its
environment; however it ends (exit, timeout, cancellation) everything it started is killed:
its process group, its descendants, and whatever carries its token, so a hook leaves nothing
behind.

Its output goes to the resource's log, each line marked `[post_start]` or `[pre_stop]`; a
failure's reason is one bounded line quoting its last lines, env secrets masked. The reason
says "; last output: ", the words `exposure.public_text` drops a program's output after, so
public text (the health endpoint, STATUS=, last_start.json) never carries it.

This module runs hooks and reports how they ended; it never writes a resource's state (the
lifecycle decides what an outcome means, through the supervisor).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from anyio.abc import ByteReceiveStream

from orchestrator.errors import VrooliError
from orchestrator.infra.exposure import mask_secrets
from orchestrator.infra.logger import get_logger
from orchestrator.runtimes import EXIT_UNKNOWN, killed_by
from orchestrator.runtimes.process import (
    INSTANCE_ENV,
    ProcessInstance,
    _switch_user,
    child_environment,
    identity_of,
    new_token,
)

if TYPE_CHECKING:
    from orchestrator.infra.logs import OutputLog
    from orchestrator.runtimes import Instance
    from orchestrator.spec import ResourceSpec

log = get_logger("vrooli.hooks")

POST_START = "post_start"
PRE_STOP = "pre_stop"
TAIL_LINES = 3  # the last lines of output a failure's message quotes
MESSAGE_OUTPUT_LIMIT = 300  # characters of output in that message (its end)
LINE_LIMIT = 8192  # a line longer than this is written to the log in pieces
PIPE_DRAIN = 1.0  # seconds to read what is left in the output pipe once the hook has ended


def is_hook_line(line: str) -> bool:
    """A line a hook (or vrooli about a hook) wrote to the resource's log: not the resource's
    own output, which a crash's message quotes."""
    return line.startswith((f"[{POST_START}] ", f"[{PRE_STOP}] "))


@dataclass(frozen=True, slots=True)
class HookOutcome:
    """How one run of a hook ended: `ok` (exited 0), else `reason`, one line for a status message."""

    ok: bool
    reason: str
    seconds: float


class _Output:
    """A hook's output on its way to the resource's log: whole lines, each marked with the
    hook's name; the last few kept for a failure's message."""

    def __init__(self, which: str, output: OutputLog) -> None:
        self._prefix = f"[{which}] ".encode()
        self._output = output
        self._partial = b""
        self.last: list[bytes] = []

    def line(self, text: str) -> None:
        """A line of vrooli's own about the hook (started, exited), in the same log."""
        self._write([text.encode()], own=True)

    def feed(self, chunk: bytes) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > LINE_LIMIT:
            lines.append(self._partial)
            self._partial = b""
        self._write(lines)

    def flush(self) -> None:
        if self._partial:
            self._write([self._partial])
            self._partial = b""

    def _write(self, lines: list[bytes], own: bool = False) -> None:
        if not lines:
            return
        if not own:
            self.last = [*self.last, *(line for line in lines if line.strip())][-TAIL_LINES:]
        try:
            self._output.write(b"".join(self._prefix + line.rstrip(b"\r") + b"\n" for line in lines))
        except OSError as exc:  # the log is not the hook's business: it runs on without it
            log.warning("cannot write a hook's output to the log", error=str(exc))

    def quoted(self, spec: ResourceSpec) -> str:
        """The last lines, as one line of at most MESSAGE_OUTPUT_LIMIT characters (the end
        kept: a failure's reason is usually last), secrets masked."""
        text = " | ".join(line.decode(errors="replace").strip() for line in self.last)
        text = "".join(c if c.isprintable() else " " for c in text)
        text = mask_secrets(text, spec)
        if len(text) > MESSAGE_OUTPUT_LIMIT:
            text = "…" + text[-(MESSAGE_OUTPUT_LIMIT - 1):]
        return text


async def run_hook(spec: ResourceSpec, which: str, instance: Instance, output: OutputLog,
                   timeout: float) -> HookOutcome:
    """Run `spec`'s hook `which` (post_start or pre_stop) for at most `timeout` seconds.

    Never raises for the hook's own failure (not found, non-zero exit, timeout): the outcome
    says what happened. Cancellation passes through, after the hook's processes are gone.
    """
    argv = spec.post_start if which == POST_START else spec.pre_stop
    sink = _Output(which, output)
    sink.line("running" + (" inside the container" if spec.hooks_inside else ""))
    started = time.monotonic()
    code: int | None = None
    failure = ""
    try:
        if spec.hooks_inside:
            code, failure = await _run_inside(instance, argv, timeout, sink)
        else:
            code, failure = await _run_on_host(spec, argv, timeout, sink)
    except anyio.get_cancelled_exc_class():
        sink.flush()
        sink.line(f"cut short after {time.monotonic() - started:.3f}s (the resource stopped or is being stopped)")
        raise
    sink.flush()
    seconds = time.monotonic() - started
    if code is None and not failure:
        failure = f"did not finish within {round(timeout, 2):g}s"
    elif code is not None and code != 0:
        failure = killed_by(-code) if code < 0 else ("exited" if code == EXIT_UNKNOWN else f"exited with code {code}")
    sink.line(f"{failure or 'exited with code 0'} after {seconds:.3f}s")
    log.info(f"{which} finished", resource=spec.name, ok=not failure, seconds=round(seconds, 4),
             reason=failure or None)
    if not failure:
        return HookOutcome(True, "", seconds)
    quoted = sink.quoted(spec)
    reason = f"{which} {failure}" + (f"; last output: {quoted}" if quoted else "")
    return HookOutcome(False, reason, seconds)


async def _run_inside(instance: Instance, argv: tuple[str, ...], timeout: float,
                      sink: _Output) -> tuple[int | None, str]:
    """docker exec in the container: (exit code, "") or (None, why it did not run or finish)."""
    try:
        code, text = await instance.exec_inside(argv, timeout)
    except TimeoutError:
        return None, ""
    except NotImplementedError:  # hooks_inside is refused for anything but a container
        return None, "cannot run inside: not a container"
    except VrooliError as exc:
        return None, f"could not run in the container: {exc}"
    sink.feed(text.encode())
    return code, ""


async def _run_on_host(spec: ResourceSpec, argv: tuple[str, ...], timeout: float,
                       sink: _Output) -> tuple[int | None, str]:
    """The hook as a child of ours: (exit code, "") or (None, "" for a timeout, or why it
    could not start)."""
    identity = None
    if spec.runtime == "process" and spec.user:
        try:
            identity = identity_of(spec.user)
        except VrooliError as exc:
            return None, f"cannot start: {exc}"
    env = child_environment(spec, identity=identity)
    token = new_token()
    env[INSTANCE_ENV] = token  # the hook's own: finds what it started, even outside its group
    uid, gid, groups = _switch_user(identity)
    born = time.time()
    try:
        # Shielded: a cancellation landing mid-spawn would leave a process we never got hold of.
        with anyio.CancelScope(shield=True):
            process = await anyio.open_process(
                list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                cwd=spec.cwd if spec.runtime == "process" else None, env=env, start_new_session=True,
                user=uid, group=gid, extra_groups=groups)
    except FileNotFoundError:
        return None, f"command not found: {argv[0]}"
    except PermissionError as exc:
        return None, f"cannot start {argv[0]}: {exc.strerror}"
    except (OSError, KeyError, ValueError) as exc:
        return None, f"cannot start {argv[0]}: {exc}"
    members = ProcessInstance(process.pid, born, "", process, groups=frozenset({process.pid}), token=token)
    code: int | None = None
    ended, drained = False, anyio.Event()
    try:
        async with anyio.create_task_group() as tg:
            assert process.stdout is not None
            tg.start_soon(_pump, process.stdout, sink.feed, drained)
            with anyio.move_on_after(timeout):
                code = await process.wait()
            await _end_all(members)  # what it left behind: the pipe then ends
            ended = True
            # ... unless something we could not find (it scrubbed its environment and left
            # the session) holds it open: the hook has ended all the same.
            with anyio.move_on_after(PIPE_DRAIN):
                await drained.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if not ended:  # cancelled, or the reading failed
                await _end_all(members)
            await process.aclose()
    return code, ""


async def _end_all(members: ProcessInstance) -> None:
    """SIGKILL the hook and everything it started (group, descendants, its token)."""
    import psutil  # here: the supervisor imports this module before its first spawn

    try:
        await members.stop("SIGKILL", 0.0)
    except psutil.Error as exc:  # a process table read that raced an exit: nothing left to end
        log.debug("ending a hook's processes", error=str(exc))


async def _pump(stream: ByteReceiveStream, feed: Callable[[bytes], None], drained: anyio.Event) -> None:
    try:
        async for chunk in stream:
            feed(chunk)
    except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    drained.set()
