"""What every exporter shares: the project as written, what gets exported, probes as commands.

The exporters read the validated project (numbers, paths, probes) and, for every string a
deployer may have to supply, the text as written in resources.toml: `${POSTGRES_PASSWORD}`
stays a reference in the output and the value it stands for here is never written out.

Over the ~450-line guide: the translation of every probe kind into a shell check lives
here, shared by both formats, with the text-as-written handling it depends on.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orchestrator import config
from orchestrator.config.variables import (
    Literal,
    Reference,
    Token,
    as_written,
    read_env_file,
    tokenize,
)
from orchestrator.errors import ConfigError, InterpolationError, UsageError
from orchestrator.spec import ProbeSpec, ProjectSpec, ResourceSpec, VolumeSpec

FORMATS = ("compose", "kubernetes")
# Running a check inside a container (docker exec, a kubelet exec) costs process start-up on
# top of the check itself: on a busy node that alone can pass a network probe's 1 s.
MIN_EXEC_TIMEOUT = 5.0
# What `${VAR:?message}` validates with when VAR is not set here (it is never written out).
REQUIRED_STAND_IN = "set-when-deployed"
_SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|KEY", re.IGNORECASE)
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::", ""}


class ExportError(UsageError):
    """The project cannot be exported as asked (exit 2, nothing written)."""


# ---------------------------------------------------------------------------- text


@dataclass(frozen=True, slots=True)
class Text:
    """A string as resources.toml has it, read by the loader's own tokenizer: `${VAR}` with any
    of compose's operators, bare `$VAR`, `$$` a `$`. Each output renders the references its way;
    none of them ever reads the environment."""

    template: str
    tokens: tuple[Token, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tokenize(self.template))

    @classmethod
    def literal(cls, value: str) -> Text:
        return cls(value.replace("$", "$$"))

    @property
    def has_references(self) -> bool:
        return any(isinstance(t, Reference) for t in self.tokens)

    def needed(self) -> list[str]:
        """The variables only the deployer can supply: no default, or `${VAR:?message}`."""
        return list(dict.fromkeys(_needed(self.tokens)))

    @property
    def needs_value(self) -> bool:
        return bool(self.needed())

    def for_compose(self, caveats: list[str] | None = None, supplied: Collection[str] = ()) -> str:
        """The text in the interpolation docker-compose 1.29 and docker stack read: references
        kept as written where they can be; what they cannot read is translated and said in
        `caveats` (`supplied`: see `alternative`). A literal `$` is doubled."""
        lacking = "docker-compose 1.29 and docker stack have no ${VAR:+alt}"
        return _Render(caveats if caveats is not None else [], supplied, lacking).compose(self.tokens)

    def with_defaults(self, missing: Callable[[str], str] = lambda name: "",
                      caveats: list[str] | None = None, supplied: Collection[str] = ()) -> str:
        """The value where it is deployed when nothing is set there but what must be: each
        reference at its default, `missing(name)` where there is none (see `alternative`)."""
        render = _Render(caveats if caveats is not None else [], supplied, "a value has no conditional")
        return render.defaults(self.tokens, missing)

    def as_shell_source(self) -> str:
        """The text as a shell line: references in the shell's own syntax (sh has every operator
        compose has), `$$` a `$`."""
        return _shell(self.tokens, lambda text: text)

    def shell_word(self) -> str:
        """One sh word whose references the shell resolves from the container's environment,
        everything else literal."""
        if not self.has_references:
            return sh_quote(self.with_defaults())
        return '"' + _shell(self.tokens, _dq_escape) + '"'


_DEFAULTS = (":-", "-")
_REQUIRED = (":?", "?")
_ALTERNATIVES = (":+", "+")


def referenced(tokens: tuple[Token, ...]) -> Iterator[Reference]:
    """Every reference, nested ones (in defaults, messages, alternatives) included."""
    for token in tokens:
        if isinstance(token, Reference):
            yield token
            yield from referenced(token.word)


def _needed(tokens: tuple[Token, ...]) -> Iterator[str]:
    for token in tokens:
        if isinstance(token, Literal):
            continue
        if token.operator is None or token.operator in _REQUIRED:
            yield token.name  # a message is never the value: nothing in it is needed
        else:
            yield from _needed(token.word)  # a default, or an alternative that may be used


@dataclass(frozen=True, slots=True)
class _Render:
    caveats: list[str]
    supplied: Collection[str]  # variables the deployer must set: each has no default somewhere
    lacking: str  # why an alternative is decided here

    def alternative(self, ref: Reference, render: Callable[[tuple[Token, ...]], str]) -> str:
        """`${VAR:+alt}` where the output has no such operator: alt if VAR is one the deployer
        must supply anyway (a reference without a default), else empty, as if unset."""
        shown = as_written((ref,))
        if ref.name in self.supplied:
            self.caveats.append(f"{shown} is written as its alternative ({self.lacking}): {ref.name} has no "
                                "default elsewhere in the files, so it is set where this is deployed")
            return render(ref.word)
        self.caveats.append(f"{shown} is written empty ({self.lacking}), as if {ref.name} were unset where "
                            "this is deployed")
        return ""

    def defaults(self, tokens: tuple[Token, ...], missing: Callable[[str], str]) -> str:
        out = []
        for token in tokens:
            if isinstance(token, Literal):
                out.append(token.text)
            elif token.operator in _DEFAULTS:
                out.append(self.defaults(token.word, missing))
            elif token.operator in _ALTERNATIVES:
                out.append(self.alternative(token, lambda word: self.defaults(word, missing)))
            else:
                out.append(missing(token.name))
        return "".join(out)

    def compose(self, tokens: tuple[Token, ...]) -> str:
        out = []
        for index, token in enumerate(tokens):
            if isinstance(token, Literal):
                out.append(token.text.replace("$", "$$"))
                continue
            after = tokens[index + 1] if index + 1 < len(tokens) else None
            out.append(self.compose_reference(token, after))
        return "".join(out)

    def compose_reference(self, ref: Reference, after: Token | None) -> str:
        """docker-compose 1.29 and docker stack know `${V}` `$V` `-` `:-` `?` `:?` and read every
        word literally: no `+` / `:+`, nothing nested, no `$$` in a word."""
        if ref.operator is None:
            # 1.29 matches names case-insensitively: a non-ASCII letter after `$NAME` could join it.
            ascii_after = not isinstance(after, Literal) or after.text[:1].isascii()
            return f"${ref.name}" if not ref.braced and ascii_after else "${" + ref.name + "}"
        if ref.operator in _ALTERNATIVES:
            return self.alternative(ref, self.compose)
        if ref.operator in _REQUIRED:  # the message is only ever shown: nested references by name
            message = "".join(t.text if isinstance(t, Literal) else f"${t.name}" for t in ref.word)
            return "${" + ref.name + ref.operator + message + "}"
        word = self.defaults(ref.word, lambda name: "")
        rendered = "${" + ref.name + ref.operator + word + "}"
        if any(isinstance(t, Reference) for t in ref.word):
            self.caveats.append(f"{as_written((ref,))}: docker-compose 1.29 and docker stack cannot nest ${{...}} "
                                f"in a default; written as {rendered} (the inner reference at its default)")
        elif "$" in word:
            self.caveats.append(f"{as_written((ref,))} is written {rendered}: docker-compose 1.29 and docker stack "
                                "read a default literally (Compose v2 would expand its '$')")
        return rendered


def _shell(tokens: tuple[Token, ...], escape: Callable[[str], str]) -> str:
    out = []
    for token in tokens:
        if isinstance(token, Literal):
            out.append(escape(token.text))
        else:
            word = _shell(token.word, escape) if token.operator else ""
            out.append("${" + token.name + (token.operator or "") + word + "}")
    return "".join(out)


def _dq_escape(text: str) -> str:
    return re.sub(r'([\\"`$])', r"\\\1", text)


def sh_quote(text: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./:=@%+-]+", text):
        return text  # nothing the shell would read differently
    return "'" + text.replace("'", "'\\''") + "'"


# A shell line built from literal shell source and argument words. Each format renders the
# words its own way: compose substitutes ${VAR} before the shell runs; in Kubernetes the
# shell resolves them from the container's environment.
Script = tuple[str | Text, ...]


def is_number(text: str) -> bool:
    """Digits int() reads: str.isdigit() also takes '²' and other digits int() refuses."""
    return text.isascii() and text.isdigit()


def is_secret_name(key: str) -> bool:
    return bool(_SECRET_NAME.search(key))


# ---------------------------------------------------------------------------- the project


@dataclass(frozen=True, slots=True)
class EnvVar:
    key: str
    text: Text
    origin: str  # "env" | "env_file" | "export"


@dataclass
class Notes:
    """What could not be translated, or was translated with a loss: printed on stderr."""

    lines: list[str] = field(default_factory=list)

    def add(self, resource: str, key: str, message: str) -> None:
        where = f"resources.{resource}" + (f".{key}" if key else "")
        line = f"{where}: {message}"
        if line not in self.lines:
            self.lines.append(line)


@dataclass(frozen=True)
class Source:
    """The validated project plus the merged files as written (before ${VAR} expansion)."""

    project: ProjectSpec
    raw: Mapping[str, Any]
    supplied: frozenset[str] = frozenset()  # referenced without a default: the deployer must set them

    def raw_at(self, name: str, *keys: str | int) -> object:
        value: object = self.raw.get("resources", {}).get(name)
        for key in keys:
            if isinstance(value, dict):
                value = value.get(key)
            elif isinstance(value, list) and isinstance(key, int) and key < len(value):
                value = value[key]
            else:
                return None
        return value

    def text(self, name: str, keys: tuple[str | int, ...], expanded: str) -> Text:
        """The string at resources.NAME.<keys> as written, or the validated value as a literal."""
        written = self.raw_at(name, *keys)
        return Text(written) if isinstance(written, str) else Text.literal(expanded)

    def texts(self, name: str, key: tuple[str | int, ...], values: tuple[str, ...]) -> list[Text]:
        return [self.text(name, (*key, i), v) for i, v in enumerate(values)]


def load_source(files: list[Path]) -> Source:
    """Validate the files; a reference nobody set here is no error: the deployer supplies it.

    One the loader would refuse unset validates as empty, or as a stand-in where it must not
    be empty (`${VAR:?message}`); the others stay unset, at their defaults. Neither value is
    written out: the exporters write the references as they are in the files.
    """
    raw = config.read_merged(files)
    environ = dict(os.environ)
    dotenv = files[0].parent / ".env"
    known = dict(environ)
    if dotenv.is_file():
        try:
            known = {**read_env_file(dotenv, environ), **environ}
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError([f"{dotenv}: {exc}"]) from None
    supplied = frozenset(name for text in _strings(raw) for name in Text(text).needed())
    not_empty = {r.name for r in _referenced(raw) if r.operator == ":?"}
    stood_in = sorted(name for name in supplied if name not in known or (name in not_empty and not known[name]))
    for name in stood_in:
        environ[name] = REQUIRED_STAND_IN if name in not_empty else ""
    try:
        return Source(config.load(files, environ), raw, supplied)
    except ConfigError as exc:
        if not stood_in:
            raise
        names = ", ".join("${" + name + "}" for name in stood_in[:6]) + (", ..." if len(stood_in) > 6 else "")
        raise ConfigError([*exc.problems, f"{files[0]}: not set here, so validated as empty: {names}; set them "
                                          "for the export if a problem above comes from one"]) from None


def _referenced(value: object) -> Iterator[Reference]:
    for text in _strings(value):
        yield from referenced(tokenize(text))


def _strings(value: object) -> Iterator[str]:
    """Every string in the files as written that the tokenizer reads; one the loader refuses is left to it."""
    if isinstance(value, str):
        try:
            tokenize(value)
        except InterpolationError:
            return
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@dataclass(frozen=True)
class Plan:
    """Which enabled resources become containers, which are external, which are left out."""

    source: Source
    containers: dict[str, ResourceSpec]
    external: dict[str, ResourceSpec]
    skipped: dict[str, str]  # name -> why
    notes: Notes

    @property
    def project(self) -> ProjectSpec:
        return self.source.project

    def image(self, spec: ResourceSpec) -> Text:
        if spec.export is not None and spec.export.image:
            return self.source.text(spec.name, ("export", "image"), spec.export.image)
        return self.source.text(spec.name, ("image",), spec.image or "")

    def command(self, spec: ResourceSpec) -> list[Text] | None:
        if spec.export is not None and spec.export.command is not None:
            return self.source.texts(spec.name, ("export", "command"), spec.export.command)
        return self.source.texts(spec.name, ("command",), spec.command) if spec.command else None

    def entrypoint(self, spec: ResourceSpec) -> list[Text] | None:
        if spec.runtime != "docker" or spec.entrypoint is None:
            return None
        return self.source.texts(spec.name, ("entrypoint",), spec.entrypoint)

    def environment(self, spec: ResourceSpec) -> list[EnvVar]:
        """env_file values, then `env`, then `[export] env`: later wins, as in `up`."""
        found: dict[str, EnvVar] = {}
        raw_env = self.source.raw_at(spec.name, "env")
        written = raw_env if isinstance(raw_env, dict) else {}
        for key, value in spec.env:
            if key in written:
                found[key] = EnvVar(key, self.source.text(spec.name, ("env", key), value), "env")
            else:
                found[key] = EnvVar(key, Text.literal(value), "env_file")
        if spec.export is not None:
            for key, value in spec.export.env:
                found[key] = EnvVar(key, self.source.text(spec.name, ("export", "env", key), value), "export")
        return list(found.values())

    def as_deployed(self, spec: ResourceSpec, keys: tuple[str | int, ...], value: str) -> str:
        """A value no output can leave to the deployer's environment (a comment, a field that
        Kubernetes never expands) as written: each reference at its default, `${VAR}` where
        there is none. The value it has here is never used."""
        text = self.source.text(spec.name, keys, value)
        return text.with_defaults(lambda name: "${" + name + "}", supplied=self.source.supplied)

    def model_names(self, spec: ResourceSpec) -> list[str]:
        names = spec.models.names if spec.models is not None else ()
        return [self.as_deployed(spec, ("models", i), name) for i, name in enumerate(names)]

    def volume(self, spec: ResourceSpec, index: int) -> VolumeSpec | None:
        """The volume as written, a reference at its default (see `as_deployed`); None when
        only the deployer knows it (a reference without a default)."""
        written = self.source.raw_at(spec.name, "volumes", index)
        if not (isinstance(written, str) and Text(written).has_references):
            return spec.volumes[index]
        text = Text(written)
        if text.needs_value:
            return None
        return _volume_spec(text.with_defaults(supplied=self.source.supplied), self.project.project_dir)

    def env_file(self, spec: ResourceSpec) -> Path | None:
        written = self.source.raw_at(spec.name, "env_file")
        return (self.project.project_dir / written).resolve() if isinstance(written, str) else None

    def dependencies(self, spec: ResourceSpec) -> list[tuple[str, str]]:
        """(dependency, condition) for dependencies that are exported as containers."""
        return [(d.name, d.condition.value) for d in spec.depends_on if d.name in self.containers]

    def completed_targets(self) -> set[str]:
        """Resources some exported dependent waits for with condition = "completed": one-shot jobs."""
        return {d.name for r in self.containers.values() for d in r.depends_on
                if d.condition.value == "completed" and d.name in self.containers}


def _volume_spec(text: str, project_dir: Path) -> VolumeSpec | None:
    """"source:/target[:ro]" read as the loader reads it; None if it is no volume."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[1].startswith("/") or parts[2:] not in ([], ["ro"], ["rw"]):
        return None
    source, target = parts[0], parts[1]
    if source.startswith((".", "~")) or "/" in source:
        source = str((project_dir / os.path.expanduser(source)).resolve())
    elif not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", source):
        return None
    return VolumeSpec(source, target, read_only=parts[2:] == ["ro"])


def plan(source: Source, skip_process: bool) -> Plan:
    containers: dict[str, ResourceSpec] = {}
    external: dict[str, ResourceSpec] = {}
    skipped: dict[str, str] = {}
    notes = Notes()
    problems: list[str] = []
    for name, spec in source.project.resources.items():
        if not spec.enabled:
            continue
        if spec.runtime == "external":
            external[name] = spec
        elif spec.runtime == "process" and not (spec.export and spec.export.image):
            if skip_process:
                skipped[name] = "a native process with no [export] image"
                notes.add(name, "", "left out (--skip-process): a native process with no [resources."
                                    f"{name}.export] image")
            else:
                problems.append(f"resources.{name}: a native process has no image to export; set "
                                f"[resources.{name}.export] image = \"...\" (and command), or pass --skip-process")
        else:
            containers[name] = spec
    if problems:
        raise ExportError("; ".join(problems) if len(problems) > 1 else problems[0])
    for name, spec in containers.items():
        for dep in spec.depends_on:
            if dep.name in skipped:
                notes.add(name, "depends_on", f"the dependency on '{dep.name}' is left out with it")
        for key in ("post_start", "pre_stop"):
            if getattr(spec, key):  # compose 1.29 has no hooks; Kubernetes' never hold readiness back
                notes.add(name, key, "not exported: only vrooli runs hooks; run it yourself")
    return Plan(source, containers, external, skipped, notes)


# ---------------------------------------------------------------------------- probes


def inside_host(host: str) -> str:
    """Where a probe that vrooli runs from this host reaches the service, seen from inside."""
    return "127.0.0.1" if host in _LOOPBACK or host.startswith("127.") else host


def inside_port(spec: ResourceSpec, port: int) -> int:
    """vrooli probes a container through its published port; inside, it is the container's."""
    for mapping in spec.ports:
        if mapping.host_port == port:
            return mapping.container_port
    return port


@dataclass(frozen=True, slots=True)
class HttpTarget:
    scheme: str
    host: str  # as seen from inside the container (127.0.0.1 for its own service)
    port: int
    path: str  # with the query

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def http_target(spec: ResourceSpec, probe: ProbeSpec) -> HttpTarget | str:
    """The URL as seen from inside the container, or why it cannot be translated."""
    url = probe.url or ""
    parts = urlsplit(url)
    if parts.username or parts.password:
        return ("the probe URL carries credentials, which vrooli does not write into a manifest; "
                "give [export] healthcheck")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"cannot read the port of {url!r}"
    host = parts.hostname or "127.0.0.1"
    local = inside_host(host) == "127.0.0.1"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return HttpTarget(parts.scheme, "127.0.0.1" if local else host,
                      inside_port(spec, port) if local else port, path)


def exec_timeout(probe: ProbeSpec) -> float:
    return max(probe.timeout, MIN_EXEC_TIMEOUT)


@dataclass(frozen=True, slots=True)
class Check:
    """A container-side health check: an argv run directly, a shell line we built, or a
    shell line as the user wrote it in `[export] healthcheck = ["CMD-SHELL", "..."]`."""

    argv: tuple[Text, ...] = ()
    script: Script = ()
    shell: Text | None = None


def probe_check(plan: Plan, spec: ResourceSpec) -> Check | str | None:
    """The resource's probe as a command that runs inside its container.

    None: no probe (or `["NONE"]`). A string: why it cannot be translated.
    """
    override = spec.export.healthcheck if spec.export else None
    if override is not None:
        texts = plan.source.texts(spec.name, ("export", "healthcheck"), override)
        if override[0] == "NONE":
            return None
        return Check(shell=texts[1]) if override[0] == "CMD-SHELL" else Check(argv=tuple(texts[1:]))
    probe = spec.health
    if probe is None:
        return None
    if probe_address_is_deferred(plan, spec):
        return "its address uses ${...}, which a health check cannot resolve; give [export] healthcheck"
    host, port = inside_host(probe.host), inside_port(spec, probe.port or 0)
    if probe.kind == "exec":
        if not probe.inside:
            plan.notes.add(spec.name, "health", "the exec probe runs on this host under vrooli; the export "
                                                "runs it inside the container, so the image must have it")
        return Check(argv=tuple(plan.source.texts(spec.name, ("health", "command"), probe.command)))
    if probe.kind == "postgres":
        return Check(argv=tuple(_postgres_argv(plan, spec, probe, host, port)))
    if probe.kind == "redis":
        return Check(script=_redis_script(plan, spec, probe, host, port))
    if probe.kind == "tcp":
        return Check(script=tcp_script(host, port, probe.timeout))
    if probe.kind == "http":
        target = http_target(spec, probe)
        if isinstance(target, str):
            return target
        return Check(script=http_script(target, probe.expect_status, probe.timeout))
    return "a log probe reads vrooli's copy of the output; no engine has that: give [export] healthcheck"


def probe_address_is_deferred(plan: Plan, spec: ResourceSpec) -> bool:
    """The probe's url, host or port is a ${VAR}: known only where it is deployed."""
    return any(Text(str(plan.source.raw_at(spec.name, "health", key) or "")).has_references
               for key in ("url", "host", "port"))


def _postgres_argv(plan: Plan, spec: ResourceSpec, probe: ProbeSpec, host: str, port: int) -> list[Text]:
    argv = [Text.literal(a) for a in ("pg_isready", "-q", "-h", host, "-p", str(port),
                                      "-t", str(max(2, math.ceil(probe.timeout))), "-U")]
    argv.append(plan.source.text(spec.name, ("health", "user"), probe.user))
    if probe.database:
        argv += [Text.literal("-d"), plan.source.text(spec.name, ("health", "database"), probe.database)]
    return argv


def _redis_script(plan: Plan, spec: ResourceSpec, probe: ProbeSpec, host: str, port: int) -> Script:
    # redis-cli exits 0 even on an error reply (-LOADING, -NOAUTH): only PONG is ready.
    auth: Script = ()
    if probe.password:
        auth = (" --no-auth-warning -a ", plan.source.text(spec.name, ("health", "password"), probe.password))
    return ('[ "$(redis-cli -h ', Text.literal(host), f" -p {port}", *auth, ' ping)" = PONG ]')


def tcp_script(host: str, port: int, timeout: float) -> Script:
    """Connect with whatever the image has: nc, bash's /dev/tcp, or python3."""
    seconds = max(1, math.ceil(timeout))
    quoted = sh_quote(host)
    return (
        f"if command -v nc >/dev/null 2>&1; then exec nc -z -w {seconds} {quoted} {port}; fi; "
        f"if command -v bash >/dev/null 2>&1; then exec bash -c 'exec 3<>/dev/tcp/'{quoted}'/{port}'; fi; "
        f"exec python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], {port}), {seconds})' {quoted}",
    )


def http_script(target: HttpTarget, statuses: tuple[int, ...], timeout: float) -> Script:
    """A GET with whatever the image has: curl, wget, or python3; ready as vrooli's http probe is.

    Inside the container the service is reached at 127.0.0.1, not under the name its
    certificate carries, so https is not verified here (the service is its own peer).
    """
    seconds = max(1, math.ceil(timeout))
    url = sh_quote(target.url)
    pattern = "|".join(str(s) for s in statuses) if statuses else "2??|3??"
    accepted = f"s in {tuple(statuses)!r}" if statuses else "200 <= s < 400"
    python = ("import http.client as h, ssl, sys, urllib.parse as p; u = p.urlsplit(sys.argv[1]); "
              f"c = h.HTTPSConnection(u.hostname, u.port, timeout={seconds}, "
              "context=ssl._create_unverified_context()) "
              f"if u.scheme == \"https\" else h.HTTPConnection(u.hostname, u.port, timeout={seconds}); "
              "c.request(\"GET\", u.path + (\"?\" + u.query if u.query else \"\")); "
              f"s = c.getresponse().status; sys.exit(0 if {accepted} else 1)")
    wget = "" if statuses else (f"if command -v wget >/dev/null 2>&1; then exec wget -q --no-check-certificate "
                                f"-T {seconds} -O /dev/null {url}; fi; ")
    return (
        f"if command -v curl >/dev/null 2>&1; then case $(curl -sk -o /dev/null -m {seconds} "
        f"-w '%{{http_code}}' {url}) in {pattern}) exit 0;; esac; exit 1; fi; "
        + wget + f"exec python3 -c '{python}' {url}",
    )


def external_address(plan: Plan, spec: ResourceSpec) -> tuple[str, int | None]:
    """Where an external resource lives, from its probe as written (see `Plan.as_deployed`)."""
    probe = spec.health
    if probe is None:
        return spec.name, None
    host = plan.as_deployed(spec, ("health", "host"), probe.host)
    if probe.kind == "http" and probe.url:
        parts = urlsplit(plan.as_deployed(spec, ("health", "url"), probe.url))
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = None
        return parts.hostname or host, port
    port_text = plan.as_deployed(spec, ("health", "port"), str(probe.port)) if probe.port is not None else ""
    return host, int(port_text) if is_number(port_text) else None


# ---------------------------------------------------------------------------- units


def duration(seconds: float) -> str:
    """A duration both compose parsers read: whole seconds, else milliseconds."""
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def whole_seconds(seconds: float, minimum: int = 1) -> int:
    return max(minimum, math.ceil(seconds))
