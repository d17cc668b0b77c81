"""Docker containers through the Docker SDK; every SDK call runs in a worker thread.

One network per project, so containers reach each other by resource name. Containers
carry labels (project, resource, config hash) so a later `up` can adopt a matching
running container instead of restarting it, and `down` can find everything it made.

Over the ~450-line guide: the SDK's error table, image pulls, container creation and the
instance (wait, stop, exec with its timeout) all run through the same worker-thread and
locking rules; splitting them would spread those rules over several files.
"""

from __future__ import annotations

import functools
import os
import re
import signal as signals
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.to_thread

from orchestrator.errors import RuntimeUnavailable, StartFailed
from orchestrator.infra.logger import get_logger
from orchestrator.runtimes import EXIT_UNKNOWN, Adoptable, Usage

# The SDK's requests imports a character-set detector (charset_normalizer, ~18 ms: a third
# of the SDK's import, paid before the first container can start) only to guess the
# encoding of responses that declare none. The Engine API answers JSON, and requests
# falls back to UTF-8 without a detector; it says so with a warning that is noise here.
for _detector in ("charset_normalizer", "chardet"):
    sys.modules.setdefault(_detector, None)  # type: ignore[arg-type]
warnings.filterwarnings("ignore", message="Unable to find acceptable character detection dependency")

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from orchestrator.infra.logs import OutputLog
    from orchestrator.spec import ProjectSpec, ResourceSpec

log = get_logger("vrooli.docker")

LABEL_PROJECT = "dev.vrooli.project"
LABEL_RESOURCE = "dev.vrooli.resource"
LABEL_HASH = "dev.vrooli.config-hash"
WAIT_SLICE = 30  # seconds per blocking wait call; the SDK's HTTP timeout is longer
Report = Callable[[str], None]


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


# What an exception from the SDK (or the requests/urllib3 stack under it) means to us.
SDK_FAILED = "failed"  # a call the engine could not do: report it
SDK_WAIT_AGAIN = "wait again"  # a long wait that timed out or lost its connection: call again
SDK_GONE = "gone"  # the container no longer exists
_OS_CONNECTION_ERRORS: dict[type[BaseException], str] = {
    ConnectionError: SDK_WAIT_AGAIN,
    ConnectionRefusedError: SDK_FAILED, ConnectionResetError: SDK_FAILED,
    ConnectionAbortedError: SDK_FAILED, BrokenPipeError: SDK_FAILED,
}


@functools.cache
def sdk_error_table() -> dict[type[BaseException], str]:
    """Every SDK exception by type; a class's nearest ancestor in the table decides.

    Built on first use, when the SDK is already loaded (it raised the exception)."""
    import docker.credentials.errors
    import docker.errors
    import docker.utils.socket
    import requests.exceptions
    import urllib3.exceptions

    table: dict[type[BaseException], str] = {
        **_OS_CONNECTION_ERRORS,
        docker.errors.DockerException: SDK_FAILED,
        docker.errors.StreamParseError: SDK_FAILED,
        docker.credentials.errors.StoreError: SDK_FAILED,
        docker.utils.socket.SocketError: SDK_FAILED,
        requests.exceptions.RequestException: SDK_FAILED,
        urllib3.exceptions.HTTPError: SDK_FAILED,
        urllib3.exceptions.ProxySchemeUnsupported: SDK_FAILED,
        requests.exceptions.ConnectionError: SDK_WAIT_AGAIN,
        requests.exceptions.ReadTimeout: SDK_WAIT_AGAIN,
        urllib3.exceptions.ReadTimeoutError: SDK_WAIT_AGAIN,
        docker.errors.NotFound: SDK_GONE,
    }
    # Connection failures that are not a cut long wait: a wait on them would never end.
    for failed in (requests.exceptions.ConnectTimeout, requests.exceptions.ProxyError,
                   requests.exceptions.SSLError):
        table[failed] = SDK_FAILED
    return table


def sdk_error_kind(exc: BaseException) -> str | None:
    """SDK_FAILED, SDK_WAIT_AGAIN or SDK_GONE for an SDK exception; None for any other."""
    # No SDK call was made before it is loaded: only the OS's own errors apply then.
    table = sdk_error_table() if "docker" in sys.modules else _OS_CONNECTION_ERRORS
    return next((table[cls] for cls in type(exc).__mro__ if cls in table), None)


_ENGINE_TIME = re.compile(rb"(?:^|(?<=\n))(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d) ")


def engine_entries(chunk: bytes) -> list[tuple[bytes, float | None]]:
    """A chunk of `logs(timestamps=True)` as (entry, the engine's time of it), the prefix
    stripped. One chunk can hold several entries (a container that wrote several lines at
    once): each keeps its own time, so a line is never stamped with a later line's time.
    Bytes before the first prefix (the rest of an entry cut by the stream) have no time."""
    found = list(_ENGINE_TIME.finditer(chunk))
    if not found:
        return [(chunk, None)]
    entries: list[tuple[bytes, float | None]] = [(chunk[:found[0].start()], None)] if found[0].start() else []
    for match, after in zip(found, [*found[1:], None], strict=True):
        fraction = (match[2] or b".0")[:7].decode()  # nanoseconds: Python keeps microseconds
        zone = match[3].decode().replace("Z", "+00:00")
        when = datetime.fromisoformat(match[1].decode() + fraction + zone).timestamp()
        entries.append((chunk[match.end():after.start() if after else len(chunk)], when))
    return entries


def _is_sdk_error(exc: BaseException) -> bool:
    return sdk_error_kind(exc) is not None


def _reason(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, str) and explanation:
        return explanation
    text = str(exc)
    if "Connection aborted" in text or "No such file or directory" in text or "Connection refused" in text:
        return "the engine is not running or not reachable"
    return text or type(exc).__name__


@contextmanager
def sdk_errors(context: str) -> Iterator[None]:
    """The boundary: docker/requests errors become StartFailed with a readable reason."""
    try:
        yield
    except (StartFailed, RuntimeUnavailable):
        raise
    except Exception as exc:
        if _is_sdk_error(exc):
            raise StartFailed(f"{context}: {_reason(exc)}") from None
        raise


def container_name(project: str, resource: str) -> str:
    return f"{project}-{resource}"


def network_name(project: str) -> str:
    return f"{project}_default"


def volume_name(project: str, volume: str) -> str:
    return f"{project}_{volume}"


class DockerRuntime:
    def __init__(self, project: ProjectSpec) -> None:
        self.project = project
        self._client: Any = None
        self._lock = threading.Lock()
        self._network_lock = threading.Lock()
        self._resource_locks: dict[str, threading.Lock] = {}

    # -------------------------------------------------------------- engine

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import docker

                try:
                    client = docker.from_env(max_pool_size=64, timeout=60)
                    client.ping()
                except Exception as exc:
                    if _is_sdk_error(exc):
                        raise RuntimeUnavailable(
                            f"cannot reach the Docker engine at {engine_address()}: {_reason(exc)}") from None
                    raise
                self._client = client
            return self._client

    def close(self) -> None:
        """Close the engine connections (a warm supervisor holds none while idle)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    async def preflight(self) -> None:
        """Is the engine there? A raw /_ping on its unix socket answers in a millisecond;
        the SDK (~110 ms of imports) then loads in the worker thread of the first start,
        off the event loop, instead of holding up every resource."""
        address = engine_address()
        if address.startswith("unix://"):
            path = address[len("unix://"):]
            try:
                await anyio.to_thread.run_sync(_raw_ping, path)
            except OSError as exc:
                reason = "the engine is not running or not reachable" if isinstance(
                    exc, FileNotFoundError | ConnectionRefusedError) else (exc.strerror or str(exc))
                raise RuntimeUnavailable(f"cannot reach the Docker engine at {address}: {reason}") from None
            return
        await anyio.to_thread.run_sync(self.client)

    # -------------------------------------------------------------- start

    async def start(self, spec: ResourceSpec, output: OutputLog, tasks: TaskGroup,
                    report: Report | None = None) -> DockerInstance:
        show = report or (lambda _: None)

        def from_worker(message: str) -> None:
            anyio.from_thread.run_sync(show, message)

        container = await anyio.to_thread.run_sync(self._ensure_container, spec, from_worker)
        instance = DockerInstance(self, container, spec)
        instance.follow_logs(output, tasks)
        return instance

    def _resource_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._resource_locks.setdefault(name, threading.Lock())

    def _ensure_container(self, spec: ResourceSpec, report: Report) -> Any:
        """Adopt a matching running container, or start a matching stopped/created one, or
        create it anew; then make sure it runs."""
        from orchestrator.runtimes.process import check_ports_free

        with self._resource_lock(spec.name):
            container = self._container_for(spec, report)
            if container.status != "running":
                with sdk_errors(f"container {container.name}"):
                    check_ports_free(spec.ports)  # name the culprit rather than the engine's bind error
                    container.start()
                    container.reload()
            return container

    def _container_for(self, spec: ResourceSpec, report: Report) -> Any:
        """The container for `spec` (matching labels), created if needed but not started."""
        import docker.errors

        client = self.client()
        name = container_name(self.project.name, spec.name)
        wanted_hash = spec.config_hash()
        with sdk_errors(f"container {name}"):
            try:
                existing = client.containers.get(name)
            except docker.errors.NotFound:
                existing = None
            if existing is not None:
                labels = existing.labels or {}
                if labels.get(LABEL_HASH) == wanted_hash and labels.get(LABEL_PROJECT) == self.project.name:
                    if existing.status == "running":
                        log.info("adopting running container", resource=spec.name, id=existing.short_id)
                    return existing
                log.info("recreating container: its config changed", resource=spec.name, id=existing.short_id)
                existing.remove(force=True)
            self._ensure_image(spec, report)
            self._ensure_network()
            for volume in spec.volumes:
                if not volume.is_bind:
                    self._ensure_volume(volume.source)
            return client.containers.create(**self._create_args(spec))

    async def prepare(self, spec: ResourceSpec) -> None:
        """Create (not start) the container of a resource still waiting for its dependencies.

        Creating takes a good part of a container's start; done while the dependencies
        start, it is off the critical path: when they are ready only `start` is left.
        """
        def work() -> None:
            with self._resource_lock(spec.name):
                self._container_for(spec, lambda _: None)

        await anyio.to_thread.run_sync(work)

    async def discard(self, spec: ResourceSpec) -> None:
        """Remove a prepared container that never started."""
        import docker.errors

        def work() -> None:
            with self._resource_lock(spec.name):
                try:
                    container = self.client().containers.get(container_name(self.project.name, spec.name))
                except docker.errors.NotFound:
                    return
                if container.status == "created":
                    container.remove(force=True)

        with sdk_errors(f"discarding {spec.name}"):
            await anyio.to_thread.run_sync(work)

    def _ensure_image(self, spec: ResourceSpec, report: Report) -> None:
        import docker.errors

        assert spec.image is not None
        client = self.client()
        try:
            client.images.get(spec.image)
            return
        except docker.errors.ImageNotFound:
            pass
        repository, tag = _split_image(spec.image)
        report(f"pulling {spec.image}")
        log.info("pulling image", resource=spec.name, image=spec.image)
        started = time.monotonic()
        layers: dict[str, tuple[int, int]] = {}
        last_report = 0.0
        try:
            for event in client.api.pull(repository, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise StartFailed(self._pull_failed(spec, str(event["error"])))
                layer, detail = event.get("id"), event.get("progressDetail") or {}
                if layer and detail.get("total"):
                    layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
                now = time.monotonic()
                if now - last_report > 0.2:
                    last_report = now
                    done = sum(c for c, _ in layers.values())
                    total = sum(t for _, t in layers.values())
                    report(f"pulling {spec.image}: {len(layers)} layers, "
                           f"{done / 1e6:.1f}/{total / 1e6:.1f} MB")
        except StartFailed:
            raise
        except Exception as exc:
            if _is_sdk_error(exc):
                raise StartFailed(self._pull_failed(spec, _reason(exc))) from None
            raise
        report(f"pulled {spec.image}")
        total = sum(t for _, t in layers.values())
        log.info("pulled image", resource=spec.name, image=spec.image, layers=len(layers),
                 megabytes=round(total / 1e6, 1), seconds=round(time.monotonic() - started, 3))

    def _pull_failed(self, spec: ResourceSpec, reason: str) -> str:
        return (f"image {spec.image} is not available locally and the pull failed: {reason.strip()}. "
                f"Load or build it locally (docker load / docker build), or point the resource at a local "
                f"image in an override file: [resources.{spec.name}] image = \"<local image>\" "
                f"(vrooli up -f resources.toml -f resources.local.toml)")

    def _labels(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {LABEL_PROJECT: self.project.name, **(extra or {})}

    def _ensure_network(self) -> None:
        # Resources start in parallel threads; the engine would happily create two
        # networks of the same name, so creation is serialized here.
        with self._network_lock:
            client = self.client()
            name = network_name(self.project.name)
            if not client.networks.list(names=[name]):
                client.networks.create(name, driver="bridge", labels=self._labels(), check_duplicate=True)

    def _ensure_volume(self, source: str) -> None:
        import docker.errors

        client = self.client()
        name = volume_name(self.project.name, source)
        try:
            client.volumes.get(name)
        except docker.errors.NotFound:
            client.volumes.create(name, labels=self._labels({"dev.vrooli.volume": source}))

    def _create_args(self, spec: ResourceSpec) -> dict[str, Any]:
        ports: dict[str, tuple[str, int]] = {}
        for port in spec.ports:
            ports[f"{port.container_port}/{port.protocol}"] = (port.host_ip, port.host_port)
        volumes = {}
        for volume in spec.volumes:
            source = volume.source if volume.is_bind else volume_name(self.project.name, volume.source)
            volumes[source] = {"bind": volume.target, "mode": "ro" if volume.read_only else "rw"}
        args: dict[str, Any] = {
            "image": spec.image,
            "name": container_name(self.project.name, spec.name),
            "hostname": spec.name,
            "environment": spec.env_dict,
            "ports": ports,
            "volumes": volumes,
            "labels": self._labels({LABEL_RESOURCE: spec.name, LABEL_HASH: spec.config_hash()}),
            "network": network_name(self.project.name),
            "stop_signal": spec.stop_signal,
            "detach": True,
            # The engine's own copy of the output (which `docker logs` and our NAME.log read)
            # bounded like NAME.log: the live file and log_max_files older ones.
            "log_config": {"type": "json-file", "config": {"max-size": str(spec.log_max_size),
                                                           "max-file": str(spec.log_max_files + 1)}},
        }
        if spec.command:
            args["command"] = list(spec.command)
        if spec.entrypoint is not None:
            args["entrypoint"] = list(spec.entrypoint)
        if spec.user:
            args["user"] = spec.user
        if spec.memory_limit:
            args["mem_limit"] = spec.memory_limit
        if spec.cwd:
            args["working_dir"] = spec.cwd
        return args

    # -------------------------------------------------------------- adopt, cleanup

    async def adopt(self, spec: ResourceSpec, record: Adoptable, output: OutputLog,
                    tasks: TaskGroup) -> DockerInstance | None:
        if record.kind != "docker":
            return None

        def find() -> Any:
            import docker.errors

            try:
                container = self.client().containers.get(record.ident)
            except docker.errors.NotFound:
                return None
            return container if container.status == "running" else None

        with sdk_errors(f"adopting {spec.name}"):
            container = await anyio.to_thread.run_sync(find)
        if container is None:
            return None
        instance = DockerInstance(self, container, spec)
        instance.follow_logs(output, tasks, since=int(time.time()))
        return instance

    async def reclaim(self, record: Adoptable) -> DockerInstance | None:
        """None: a leftover container is not stopped one by one; `cleanup` removes every
        container labelled with the project."""
        return None

    async def cleanup(self, project: ProjectSpec, remove_volumes: bool) -> None:
        def work() -> None:
            client = self.client()
            selector = {"label": f"{LABEL_PROJECT}={project.name}"}
            for container in client.containers.list(all=True, filters=selector):
                container.remove(force=True)
            for network in client.networks.list(filters=selector):
                network.remove()
            if remove_volumes:
                for volume in client.volumes.list(filters=selector):
                    volume.remove(force=True)

        with sdk_errors("cleaning up"):
            await anyio.to_thread.run_sync(work)


def _raw_ping(path: str) -> None:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        reply = sock.recv(256)
    if not reply.startswith(b"HTTP/1.") or b" 200 " not in reply.split(b"\r\n", 1)[0] + b" ":
        raise OSError(f"unexpected answer from the engine: {reply[:60]!r}")


def _as_signal(code: int) -> int:
    """A container's 128+N exit status is its process killed by signal N: reported as a
    native process's would be (minus N), so both read "killed by signal 9 (SIGKILL)"."""
    if 128 < code < EXIT_UNKNOWN:
        try:
            return -signals.Signals(code - 128).value
        except ValueError:
            pass
    return code


def _same_pid_namespace(pid: int, other: int) -> bool:
    """Is `pid` a process of the container whose main process is `other`, on this host?
    (A remote engine's pids mean nothing here: they never match a local namespace.)"""
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino == os.stat(f"/proc/{other}/ns/pid").st_ino \
            and os.stat(f"/proc/{pid}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return False


def _kill_tree(pid: int) -> bool:
    """SIGKILL an exec's process and all its descendants; False if not permitted."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:
            return False
    return True


def _split_image(image: str) -> tuple[str, str]:
    name, _, digest = image.partition("@")
    if digest:
        return name, digest
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:]
    return name, "latest"


class DockerInstance:
    def __init__(self, runtime: DockerRuntime, container: Any, spec: ResourceSpec) -> None:
        self.runtime = runtime
        self.container = container
        self.spec = spec
        self._exit_code: int | None = None
        self._hung: set[str] = set()  # execs that overran and could not be killed

    def __repr__(self) -> str:
        return f"<DockerInstance {self.container.name} id={self.container.short_id}>"

    @property
    def pid(self) -> int | None:
        pid = (self.container.attrs.get("State") or {}).get("Pid")
        return int(pid) if pid else None

    @property
    def ident(self) -> str:
        return str(self.container.short_id)

    def follow_logs(self, output: OutputLog, tasks: TaskGroup, since: int | None = None) -> None:
        """Copy the container's output into the resource's log file, as for processes."""

        def pump() -> None:
            try:
                kwargs: dict[str, Any] = {"stream": True, "follow": True, "stdout": True, "stderr": True,
                                          "timestamps": True}  # the engine's own time of each line
                if since is not None:
                    kwargs["since"] = since
                for chunk in self.container.logs(**kwargs):
                    for entry, when in engine_entries(chunk):
                        output.write(entry, when)
            except Exception as exc:
                if not _is_sdk_error(exc):
                    raise

        async def run() -> None:
            await anyio.to_thread.run_sync(pump, abandon_on_cancel=True)

        tasks.start_soon(run, name=f"logs {self.spec.name}")

    async def wait(self) -> int:
        if self._exit_code is not None:
            return self._exit_code

        def blocking_wait() -> int | None:
            try:
                result = self.container.wait(timeout=WAIT_SLICE)
                return int(result.get("StatusCode", EXIT_UNKNOWN))
            except Exception as exc:
                kind = sdk_error_kind(exc)
                if kind == SDK_WAIT_AGAIN:
                    return None
                if kind == SDK_GONE:
                    return EXIT_UNKNOWN
                raise

        while True:
            with sdk_errors(f"waiting for {self.spec.name}"):
                code = await anyio.to_thread.run_sync(blocking_wait, abandon_on_cancel=True)
            if code is not None:
                self._exit_code = _as_signal(code)
                return self._exit_code

    async def stop(self, signal_name: str, timeout: float) -> None:
        import docker.errors

        def kill(sig: str) -> None:
            try:
                self.container.kill(signal=sig)
            except docker.errors.APIError as exc:
                # 409: not running any more; 404: already gone. Both mean stopped.
                if exc.status_code not in (404, 409):
                    raise

        def remove() -> None:
            try:
                self.container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # removal already in progress
                    raise

        with sdk_errors(f"stopping {self.spec.name}"):
            await anyio.to_thread.run_sync(kill, signals.Signals[signal_name].name)
            with anyio.move_on_after(timeout) as scope:
                await self.wait()
            if scope.cancelled_caught:
                await anyio.to_thread.run_sync(kill, "SIGKILL")
                with anyio.move_on_after(10):
                    await self.wait()
            await anyio.to_thread.run_sync(remove)

    async def exec_inside(self, command: tuple[str, ...], timeout: float) -> tuple[int, str]:
        """Run `command` in the container, for at most `timeout` seconds.

        The engine has no way to stop an exec, so one that overruns (or is cancelled) is
        killed from the host by its pid, after checking that the pid lives in this
        container's pid namespace. Where that is impossible (a remote engine) the hung
        exec is remembered and no new one starts beside it: hung execs never pile up.
        """
        api = (await anyio.to_thread.run_sync(self.runtime.client)).api
        with sdk_errors(f"exec in {self.spec.name}"):
            if await anyio.to_thread.run_sync(self._still_hung, api):
                raise TimeoutError("the previous exec is still running")
            exec_id = (await anyio.to_thread.run_sync(
                lambda: api.exec_create(self.container.id, list(command), stdout=True, stderr=True)))["Id"]
            output: bytes | None = None
            try:
                with anyio.fail_after(timeout):
                    output = await anyio.to_thread.run_sync(api.exec_start, exec_id, abandon_on_cancel=True)
            finally:
                if output is None:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(self._kill_exec, api, exec_id)
            code = (await anyio.to_thread.run_sync(api.exec_inspect, exec_id)).get("ExitCode")
        assert output is not None  # else the timeout or the cancellation has been raised
        return (EXIT_UNKNOWN if code is None else int(code)), output.decode(errors="replace")

    def _still_hung(self, api: Any) -> bool:
        """Forget the remembered hung execs that have ended; is one still running?"""
        for exec_id in list(self._hung):
            try:
                running = bool(api.exec_inspect(exec_id).get("Running"))
            except Exception as exc:
                if not _is_sdk_error(exc):
                    raise
                running = False
            if not running:
                self._hung.discard(exec_id)
        return bool(self._hung)

    def _kill_exec(self, api: Any, exec_id: str) -> None:
        try:
            info = api.exec_inspect(exec_id)
            if not info.get("Running"):
                return
            pid = int(info.get("Pid") or 0)
            main = int((api.inspect_container(self.container.id).get("State") or {}).get("Pid") or 0)
            if pid and main and _same_pid_namespace(pid, main) and _kill_tree(pid):
                return
        except Exception as exc:
            if not _is_sdk_error(exc):
                raise
        self._hung.add(exec_id)
        log.warning("a hung exec could not be killed; no new exec starts until it ends",
                    resource=self.spec.name, exec_id=exec_id[:12])

    async def usage(self) -> Usage | None:
        def stats() -> Usage | None:
            data = self.container.stats(stream=False, one_shot=True)
            memory = (data.get("memory_stats") or {}).get("usage")
            cpu = ((data.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
            if memory is None and cpu is None:
                return None
            return Usage(int(memory or 0), float(cpu or 0) / 1e9)

        with sdk_errors(f"stats of {self.spec.name}"):
            return await anyio.to_thread.run_sync(stats, abandon_on_cancel=True)

    def adoptable(self) -> Adoptable:
        return Adoptable("docker", str(self.container.id), 0.0, self.spec.config_hash())
