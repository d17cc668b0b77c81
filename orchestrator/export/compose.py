"""`vrooli export compose`: one Compose file (format "3.8") for docker-compose and Swarm.

Format 3.8 is the newest that both docker-compose 1.29 and `docker stack deploy` accept.
That choice costs two things, each said in a comment where it applies:
- `depends_on` must be the plain list (stack deploy rejects conditions), so "healthy" and
  "completed" become "started"; `--conditions` writes them for docker-compose alone.
- `mem_limit` is a "forbidden property" for stack deploy; `deploy.resources.limits.memory`
  carries the limit instead, and docker-compose 1.29 applies that one too.

`--endpoint-mode dnsrr` is for Swarm on a kernel without IPVS (no /proc/net/ip_vs): there a
service's virtual IP and the ingress routing mesh route nothing, so every service is found by
DNS round robin instead and its ports are published in host mode (Swarm refuses dnsrr with
ingress ports). The long port syntax that host mode needs has no host IP in format 3.8.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config.variables import Literal, Token, as_written
from orchestrator.export.common import (
    Check,
    ExportError,
    Plan,
    Script,
    Text,
    duration,
    exec_timeout,
    external_address,
    probe_check,
    sh_quote,
)
from orchestrator.export.yamltext import Document
from orchestrator.spec import ProbeSpec, ResourceSpec, RestartPolicy

VERSION = "3.8"
ENDPOINT_MODES = ("vip", "dnsrr")
_CONDITIONS = {"started": "service_started", "healthy": "service_healthy",
               "completed": "service_completed_successfully"}
_SWARM_RESTART = {RestartPolicy.NO: "none", RestartPolicy.ON_FAILURE: "on-failure", RestartPolicy.ALWAYS: "any"}


@dataclass(frozen=True)
class Options:
    conditions: bool = False  # long-form depends_on (docker-compose only)
    out_dir: Path | None = None  # bind mounts and env files are written relative to it
    endpoint_mode: str = "vip"  # dnsrr: DNS round robin and host-mode ports, for kernels without IPVS


def build(plan: Plan, options: Options) -> Document:
    doc = Document({"version": VERSION, "services": {}})
    services: dict[str, object] = {}
    healthchecked = set()
    for name, spec in plan.containers.items():
        service = _service(plan, spec, options, doc)
        if "healthcheck" in service and service["healthcheck"] != {"disable": True}:
            healthchecked.add(name)
        services[name] = service
    for name, spec in plan.containers.items():
        _depends_on(plan, spec, services[name], healthchecked, options, doc)  # type: ignore[arg-type]
    doc.data["services"] = services
    volumes = sorted({v.source for r in plan.containers.values() for i in range(len(r.volumes))
                      if (v := plan.volume(r, i)) is not None and not v.is_bind})
    if volumes:
        doc.data["volumes"] = {v: {} for v in volumes}
    _header(plan, doc, options)
    return doc


def _header(plan: Plan, doc: Document, options: Options) -> None:
    files = ", ".join(str(f) for f in plan.project.files)
    doc.note((), f"Written by `vrooli export compose` from {files}; export again after editing those.")
    doc.note((), f"  docker-compose -p {plan.project.name} -f THIS_FILE up -d")
    doc.note((), f"  docker stack deploy -c THIS_FILE {plan.project.name}")
    doc.note((), "${VAR} references are resolved when deployed, from the environment or .env.")
    if options.endpoint_mode == "dnsrr":
        doc.note((), "--endpoint-mode dnsrr: services find each other by DNS round robin, not a virtual IP, "
                     "and publish their ports in host mode, on the node that runs the task only "
                     "(Swarm's virtual IPs and ingress need the kernel's IPVS).")
        doc.note((), "Host-mode ports are the long syntax, which has no host IP in format 3.8: docker stack "
                     "deploy and docker-compose both publish them on every interface.")
    else:
        doc.note((), "docker stack deploy publishes ports on every interface of every node (its ingress), "
                     "whatever host IP is written here; docker-compose honours the IP.")
    for name, spec in plan.external.items():
        host, port = external_address(plan, spec)
        doc.note((), f"{name} is external (runtime = \"external\"): not started here; it lives at "
                     f"{host}:{port}, and its dependents must be configured to reach it there.")
    for name, why in plan.skipped.items():
        doc.note((), f"{name} is left out: {why}.")


def _service(plan: Plan, spec: ResourceSpec, options: Options, doc: Document) -> dict[str, object]:
    name = spec.name
    image_key = "export.image" if spec.export is not None and spec.export.image else "image"
    service: dict[str, object] = {"image": _text(plan, name, image_key, plan.image(spec))}
    if spec.description:
        doc.note(("services", name), plan.as_deployed(spec, ("description",), spec.description))
    entrypoint = plan.entrypoint(spec)
    if entrypoint is not None:
        service["entrypoint"] = [_text(plan, name, "entrypoint", t) for t in entrypoint]
    command = plan.command(spec)
    if command is not None:
        command_key = "export.command" if spec.export is not None and spec.export.command is not None else "command"
        service["command"] = [_text(plan, name, command_key, t) for t in command]
    if spec.runtime == "docker":
        for key, compose_key, value in (("cwd", "working_dir", spec.cwd), ("user", "user", spec.user)):
            text = plan.source.text(name, (key,), value or "")
            if value or text.has_references:  # a ${VAR} unset here is still the deployer's to set
                service[compose_key] = _text(plan, name, key, text)
    _environment(plan, spec, service, options)
    if spec.ports:
        port = _host_mode_port if options.endpoint_mode == "dnsrr" else _port
        service["ports"] = [port(plan, spec, i) for i in range(len(spec.ports))]
    if spec.volumes:
        service["volumes"] = [_volume(plan, spec, i, options) for i in range(len(spec.volumes))]
    service["stop_signal"] = _text(plan, name, "stop_signal", plan.source.text(name, ("stop_signal",),
                                                                                spec.stop_signal))
    service["stop_grace_period"] = duration(spec.stop_timeout)
    service["restart"] = spec.restart.value
    healthcheck = _healthcheck(plan, spec)
    if healthcheck is not None:
        service["healthcheck"] = healthcheck
    service["deploy"] = _deploy(spec, options, doc)
    if spec.models is not None and spec.models.names:
        doc.note(("services", name), f"models {', '.join(plan.model_names(spec))}: Compose has no step that waits "
                                     f"for Ollama's API; pull them once it answers, e.g. "
                                     f"`docker-compose exec {name} ollama pull MODEL`.")
    return service


def _text(plan: Plan, resource: str, key: str, text: Text) -> str:
    """The text for compose; what docker-compose 1.29 cannot read as written is said on stderr."""
    caveats: list[str] = []
    rendered = text.for_compose(caveats, plan.source.supplied)
    for caveat in caveats:
        plan.notes.add(resource, key, caveat)
    return rendered


def _environment(plan: Plan, spec: ResourceSpec, service: dict[str, object], options: Options) -> None:
    env_file = plan.env_file(spec)
    if env_file is not None:
        # Referenced, never copied: an env file is where secrets usually live.
        service["env_file"] = [_relative(env_file, options)]
    environment = {v.key: _text(plan, spec.name, f"{'export.' if v.origin == 'export' else ''}env.{v.key}", v.text)
                   for v in plan.environment(spec) if v.origin != "env_file"}
    if environment:
        service["environment"] = environment


def _port(plan: Plan, spec: ResourceSpec, index: int) -> str:
    written = plan.source.raw_at(spec.name, "ports", index)
    if isinstance(written, str) and Text(written).has_references:
        return _text(plan, spec.name, "ports", Text(written))
    port = spec.ports[index]
    suffix = "/udp" if port.protocol == "udp" else ""
    return f"{port.host_ip}:{port.host_port}:{port.container_port}{suffix}"


def _host_mode_port(plan: Plan, spec: ResourceSpec, index: int) -> dict[str, object]:
    """The long syntax with `mode: host`, which dnsrr needs; it cannot say a host IP."""
    written = plan.source.raw_at(spec.name, "ports", index)
    port = spec.ports[index]
    if not (isinstance(written, str) and Text(written).has_references):
        _lost_host_ip(plan, spec, port.host_ip)
        return {"target": port.container_port, "published": port.host_port, "protocol": port.protocol,
                "mode": "host"}
    # As written: a value from the environment here is never written out, not even in a note.
    parts = _split_port(Text(written).tokens)
    target, protocol = _protocol(parts[-1])
    if len(parts) == 1:
        _one_port_number(spec, index, written)
    host = ":".join(as_written(part) for part in parts[:-2]) or "127.0.0.1"  # the loader's default
    _lost_host_ip(plan, spec, host)
    published = parts[-2] if len(parts) > 1 else target
    return {"target": _port_word(plan, spec, target), "published": _port_word(plan, spec, published),
            "protocol": _port_word(plan, spec, protocol) if protocol else "tcp", "mode": "host"}


def _one_port_number(spec: ResourceSpec, index: int, written: str) -> None:
    """A port from one variable is both published and target in the long syntax: its value
    must be one number: its default, and its value here (never written out), are checked."""
    default = Text(written).with_defaults()
    remapped = spec.ports[index].host_port != spec.ports[index].container_port
    if remapped or (default and not (default.isascii() and default.isdigit())):
        raise ExportError(f"resources.{spec.name}.ports.{index}: {written}: --endpoint-mode dnsrr writes a "
                          f"host-mode port, one number each for published and target; write them apart, "
                          f"e.g. \"${{PUBLISHED:-5433}}:5432\"")


def _lost_host_ip(plan: Plan, spec: ResourceSpec, host: str) -> None:
    if host not in ("0.0.0.0", "::", "[::]"):
        plan.notes.add(spec.name, "ports", f"published on every interface: a host-mode port "
                                           f"(--endpoint-mode dnsrr) cannot keep the host IP {host}")


def _split_port(tokens: tuple[Token, ...]) -> list[tuple[Token, ...]]:
    """`[HOST_IP:]PUBLISHED:TARGET[/PROTOCOL]` cut at the colons written as such, never at one
    inside a reference (`${PORT:-5433}`)."""
    parts: list[list[Token]] = [[]]
    for token in tokens:
        if not isinstance(token, Literal):
            parts[-1].append(token)
            continue
        for position, piece in enumerate(token.text.split(":")):
            if position:
                parts.append([])
            if piece:
                parts[-1].append(Literal(piece))
    return [tuple(part) for part in parts]


def _protocol(part: tuple[Token, ...]) -> tuple[tuple[Token, ...], tuple[Token, ...]]:
    """TARGET[/PROTOCOL] apart, at the first `/` written as such."""
    for position, token in enumerate(part):
        if isinstance(token, Literal) and "/" in token.text:
            before, _, after = token.text.partition("/")
            head = (*part[:position], *([Literal(before)] if before else []))
            tail = (*([Literal(after)] if after else []), *part[position + 1:])
            return head, tail
    return part, ()


def _port_word(plan: Plan, spec: ResourceSpec, tokens: tuple[Token, ...]) -> int | str:
    text = Text(as_written(tokens))
    if not text.has_references and text.template.isascii() and text.template.isdigit():
        return int(text.template)
    return _text(plan, spec.name, "ports", text)


def _volume(plan: Plan, spec: ResourceSpec, index: int, options: Options) -> str:
    written = plan.source.raw_at(spec.name, "volumes", index)
    if isinstance(written, str) and Text(written).has_references:
        volume = plan.volume(spec, index)
        if volume is None or not volume.is_bind:
            plan.notes.add(spec.name, f"volumes.{index}", f"{written}: a named volume must be declared under the "
                                                          "name it resolves to; declared here: "
                                                          + (volume.source if volume else "none (it has no default)"))
        return _text(plan, spec.name, "volumes", Text(written))
    volume = spec.volumes[index]
    source = _relative(Path(volume.source), options) if volume.is_bind else volume.source
    return f"{source}:{volume.target}" + (":ro" if volume.read_only else "")


def _relative(path: Path, options: Options) -> str:
    """Relative to the written file (compose resolves it so), or absolute on stdout."""
    if options.out_dir is None:
        return str(path)
    text = os.path.relpath(path, options.out_dir)
    return text if text.startswith("../") or text == ".." else f"./{text}"


def _deploy(spec: ResourceSpec, options: Options, doc: Document) -> dict[str, object]:
    deploy: dict[str, object] = {"endpoint_mode": "dnsrr"} if options.endpoint_mode == "dnsrr" else {}
    deploy["restart_policy"] = {
        "condition": _SWARM_RESTART[spec.restart],
        "delay": duration(spec.restart_delay),
        "max_attempts": spec.restart_burst,
        "window": duration(spec.restart_window),
    }
    if spec.memory_limit is not None:
        deploy["resources"] = {"limits": {"memory": _size(spec.memory_limit)}}
        doc.note(("services", spec.name, "deploy", "resources"),
                 "memory_limit: docker-compose 1.29 and Swarm both apply this; no mem_limit, "
                 "which docker stack deploy rejects in a 3.x file")
    return deploy


def _size(size: int) -> str:
    for unit, scale in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}b"


def _healthcheck(plan: Plan, spec: ResourceSpec) -> dict[str, object] | None:
    check = probe_check(plan, spec)
    if isinstance(check, str):
        plan.notes.add(spec.name, "health", f"no healthcheck: {check}")
        return None
    if check is None:
        disabled = spec.export is not None and spec.export.healthcheck == ("NONE",)
        return {"disable": True} if disabled else None
    probe = spec.health or ProbeSpec(kind="exec")
    test = render_test(check, lambda text: _text(plan, spec.name, "health", text))
    return {
        "test": test,
        "interval": duration(probe.liveness_interval),
        "timeout": duration(exec_timeout(probe)),
        "retries": probe.failure_threshold,
        "start_period": duration(spec.start_timeout),
    }


def render_test(check: Check, word: Callable[[Text], str]) -> list[str]:
    """The check as compose's `test`; `word` renders each Text (see `_text`)."""
    if check.shell is not None:
        return ["CMD-SHELL", word(check.shell)]
    if check.script:
        return ["CMD-SHELL", render_script(check.script, word)]
    return ["CMD", *(word(t) for t in check.argv)]


def render_script(script: Script, word: Callable[[Text], str]) -> str:
    """Compose substitutes ${VAR} in the line before the shell sees it: literal `$` doubled,
    words single-quoted (a value holding a single quote would need [export] healthcheck)."""
    out = []
    for part in script:
        if isinstance(part, Text):
            out.append(sh_quote(word(part)))
        else:
            out.append(part.replace("$", "$$"))
    return "".join(out)


def _depends_on(plan: Plan, spec: ResourceSpec, service: dict[str, object], healthchecked: set[str],
                options: Options, doc: Document) -> None:
    name = spec.name
    for dependency in spec.depends_on:
        if dependency.name in plan.external:
            host, port = external_address(plan, plan.external[dependency.name])
            doc.note(("services", name), f"waits for external {dependency.name} ({host}:{port}) under vrooli; "
                                         "Compose cannot: it must retry until that answers.")
    deps = plan.dependencies(spec)
    if not deps:
        return
    wanted = {}
    for dep, condition in deps:
        if condition == "healthy" and dep not in healthchecked:
            plan.notes.add(name, "depends_on", f"'{dep}' has no healthcheck to wait for; waiting for it to start")
            condition = "started"
        wanted[dep] = condition
    if options.conditions:
        service["depends_on"] = {dep: {"condition": _CONDITIONS[c]} for dep, c in wanted.items()}
        doc.note(("services", name, "depends_on"),
                 "with conditions: docker-compose 1.29 only; docker stack deploy rejects this form")
        return
    service["depends_on"] = list(wanted)
    lost = [f"{dep} {c}" for dep, c in wanted.items() if c != "started"]
    if lost:
        doc.note(("services", name, "depends_on"),
                 f"vrooli waits for {', '.join(lost)}; the 3.8 list form only orders the start "
                 "(docker stack deploy rejects conditions and ignores the order), so this service "
                 "must retry until they are ready. `vrooli export compose --conditions` keeps them "
                 "for docker-compose alone.")
