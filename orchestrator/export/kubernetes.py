"""`vrooli export kubernetes`: manifests for the same graph, probes and limits.

Per resource: a ConfigMap and a Secret for its environment, a Service for its ports, and a
Deployment (a StatefulSet when it has named volumes; a Job when a dependent waits for it
to complete). Dependencies become initContainers: a Service only routes to ready pods, so
a TCP connect to the dependency's Service means it is `healthy`. External resources become
a Service of type ExternalName (or one with an EndpointSlice for an IP address).

Over the ~450-line guide (and `_Builder` over ~300): one builder per project keeps the
names, Secret keys and initContainers of all manifests consistent; a split per kind of
manifest would pass that state around.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from orchestrator.config.variables import Literal, Reference, Token, as_written
from orchestrator.export.common import (
    Check,
    EnvVar,
    Plan,
    Text,
    exec_timeout,
    external_address,
    http_script,
    http_target,
    inside_host,
    inside_port,
    is_number,
    is_secret_name,
    probe_address_is_deferred,
    probe_check,
    whole_seconds,
)
from orchestrator.export.yamltext import Document
from orchestrator.spec import ProbeSpec, ResourceSpec, RestartPolicy, VolumeSpec

WAIT_IMAGE = "busybox:1.36"  # nc and wget for the waits and the model pulls
KUBECTL_IMAGE = "registry.k8s.io/kubectl:v1.30.0"  # waits for a Job to complete
PLACEHOLDER = "CHANGE-ME"
DEFAULT_STORAGE = "1Gi"


@dataclass(frozen=True)
class Options:
    namespace: str | None = None


@dataclass(frozen=True)
class Manifest:
    group: str  # the file it goes to when OUT is a directory (a resource's name, or "_project")
    doc: Document


def k8s_name(name: str) -> str:
    """A DNS-1035 label: lowercase letters, digits and '-', starting with a letter."""
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "resource"
    return (text if text[0].isalpha() else f"r-{text}")[:63].rstrip("-")


def _label_value(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63].strip("-_.") or "vrooli"


class _Builder:
    def __init__(self, plan: Plan, options: Options) -> None:
        self.plan = plan
        self.options = options
        self.part_of = _label_value(plan.project.name)
        self.waiter = k8s_name(f"{plan.project.name}-job-waiter")
        self.jobs = plan.completed_targets()
        self.uses_waiter = False

    # ---------------------------------------------------------------- shared bits

    def labels(self, name: str) -> dict[str, str]:
        return {"app.kubernetes.io/name": k8s_name(name), "app.kubernetes.io/part-of": self.part_of,
                "app.kubernetes.io/managed-by": "vrooli"}

    def selector(self, name: str) -> dict[str, str]:
        return {"app.kubernetes.io/name": k8s_name(name), "app.kubernetes.io/part-of": self.part_of}

    def metadata(self, name: str, suffix: str = "") -> dict[str, object]:
        meta: dict[str, object] = {"name": k8s_name(name) + suffix}
        if self.options.namespace:
            meta["namespace"] = self.options.namespace
        meta["labels"] = self.labels(name)
        return meta

    def build(self) -> list[Manifest]:
        manifests: list[Manifest] = []
        for name, spec in self.plan.containers.items():
            if k8s_name(name) != name:
                self.plan.notes.add(name, "", f"named '{k8s_name(name)}' in Kubernetes (a DNS label)")
            manifests += [Manifest(name, d) for d in self.resource(spec)]
        for name, spec in self.plan.external.items():
            manifests += [Manifest(name, d) for d in self.external(spec)]
        if self.uses_waiter:
            manifests += [Manifest("_project", d) for d in self.waiter_rbac()]
        return manifests

    # ---------------------------------------------------------------- one resource

    def resource(self, spec: ResourceSpec) -> list[Document]:
        env = self.plan.environment(spec)
        # An env file is where secrets usually live: none of its values is copied.
        plain = [v for v in env if not (is_secret_name(v.key) or v.text.needs_value or v.origin == "env_file")]
        hidden = [v for v in env if v not in plain]
        # What each key holds in the pod: its ConfigMap value, or None: a Secret the deployer fills in.
        in_env: dict[str, str | None] = {v.key: None for v in hidden}
        in_env.update({v.key: v.text.with_defaults(supplied=self.plan.source.supplied) for v in plain})
        in_command: dict[str, str] = {}  # the command's references only the deployer can supply: Secret keys
        container = self.container(spec, in_env, in_command)
        docs: list[Document] = []
        env_from: list[object] = []
        if plain:
            docs.append(self.config_map(spec, plain))
            env_from.append({"configMapRef": {"name": k8s_name(spec.name) + "-env"}})
        if hidden or in_command:
            docs.append(self.secret(spec, hidden, in_command))
            env_from.append({"secretRef": {"name": k8s_name(spec.name) + "-secrets"}})
        if env_from:
            container["envFrom"] = env_from
        named = [v for _, v in self.volumes(spec) if not v.is_bind]
        if spec.ports or (named and spec.name not in self.jobs):
            docs.append(self.service(spec))
        docs.append(self.workload(spec, container))
        if spec.models is not None and spec.models.names and spec.name not in self.jobs:
            models_job = self.models_job(spec)
            if models_job is not None:
                docs.append(models_job)
        return docs

    def config_map(self, spec: ResourceSpec, plain: list[EnvVar]) -> Document:
        data: dict[str, str] = {}
        doc = Document({"apiVersion": "v1", "kind": "ConfigMap", "metadata": self.metadata(spec.name, "-env"),
                        "data": data})
        for v in plain:
            caveats: list[str] = []
            data[v.key] = v.text.with_defaults(caveats=caveats, supplied=self.plan.source.supplied)
            if v.text.has_references:
                doc.note(("data", v.key), f"{v.text.template} in resources.toml: its default")
            for caveat in caveats:
                self.plan.notes.add(spec.name, f"{'export.' if v.origin == 'export' else ''}env.{v.key}", caveat)
        return doc

    def secret(self, spec: ResourceSpec, hidden: list[EnvVar], in_command: dict[str, str]) -> Document:
        """Secret values are never written: each key gets a placeholder and says what goes there."""
        data: dict[str, str] = {}
        doc = Document({"apiVersion": "v1", "kind": "Secret", "metadata": self.metadata(spec.name, "-secrets"),
                        "type": "Opaque", "stringData": data})
        for v in hidden:
            data[v.key] = PLACEHOLDER
            refs = ", ".join("${" + n + "}" for n in v.text.needed())
            source = "its env_file" if v.origin == "env_file" else "resources.toml"
            what = f"the value of {refs}" if refs else f"{v.key} ({source} has it; not copied here)"
            doc.note(("stringData", v.key), f"fill in: {what}")
        for name, message in in_command.items():
            if name not in data:
                data[name] = PLACEHOLDER
                doc.note(("stringData", name), f"fill in: the value of ${{{name}}} (the command uses it"
                                               + (f": {message})" if message else ")"))
        doc.note((), f"Placeholders: replace every {PLACEHOLDER} before applying (or create this Secret "
                     "yourself and leave it out).")
        return doc

    def container(self, spec: ResourceSpec, in_env: dict[str, str | None],
                  in_command: dict[str, str]) -> dict[str, object]:
        image_key = "export.image" if spec.export is not None and spec.export.image else "image"
        container: dict[str, object] = {"name": k8s_name(spec.name), "image": self.value(spec, image_key,
                                                                                           self.plan.image(spec))}
        entrypoint = self.plan.entrypoint(spec)
        command = self.plan.command(spec)
        in_command.update(secret_keys(in_env, [t.tokens for t in [*(entrypoint or []), *(command or [])]]))
        if entrypoint is not None:
            container["command"] = [self.arg(spec, "entrypoint", t, in_env, in_command) for t in entrypoint]
        if command is not None:
            key = "export.command" if spec.export is not None and spec.export.command is not None else "command"
            container["args"] = [self.arg(spec, key, t, in_env, in_command) for t in command]
        if spec.runtime == "docker":
            working_dir = self.plan.source.text(spec.name, ("cwd",), spec.cwd or "")
            if spec.cwd or working_dir.has_references:  # as written: a value set here is never copied
                container["workingDir"] = self.value(spec, "cwd", working_dir)
        if spec.ports:
            container["ports"] = [{"containerPort": p.container_port, "protocol": p.protocol.upper()}
                                  for p in spec.ports]
        if spec.memory_limit is not None:
            container["resources"] = {"limits": {"memory": quantity(spec.memory_limit)}}
        security = self.security_context(spec)
        if security:
            container["securityContext"] = security
        mounts = [{"name": self.volume_name(i, v), "mountPath": v.target,
                   **({"readOnly": True} if v.read_only else {})} for i, v in self.volumes(spec)]
        if mounts:
            container["volumeMounts"] = mounts
        if spec.name not in self.jobs:
            container.update(self.probes(spec))
        return container

    def value(self, spec: ResourceSpec, key: str, text: Text) -> str:
        """A field Kubernetes never expands (image, workingDir): references at their defaults;
        one without a default stays `${VAR}`, for the deployer to substitute."""
        caveats: list[str] = []
        if text.needs_value:
            caveats.append(f"{text.template} has no default: it is written as is; substitute it before "
                           "applying (envsubst)")
            value = text.with_defaults(lambda name: "${" + name + "}", caveats, self.plan.source.supplied)
        else:
            value = text.with_defaults(caveats=caveats, supplied=self.plan.source.supplied)
        for caveat in caveats:
            self.plan.notes.add(spec.name, key, caveat)
        return value

    def arg(self, spec: ResourceSpec, key: str, text: Text, in_env: dict[str, str | None],
            needed: dict[str, str]) -> str:
        """A command word (see `_Args`); what it assumed is said on stderr."""
        caveats: list[str] = []
        out = _Args(in_env, needed, caveats).render(text.tokens)
        for caveat in caveats:
            self.plan.notes.add(spec.name, key, caveat)
        return out

    def security_context(self, spec: ResourceSpec) -> dict[str, object]:
        written = self.plan.source.text(spec.name, ("user",), spec.user or "")
        if not (spec.user or written.has_references) or spec.runtime != "docker":
            return {}
        as_deployed = self.plan.as_deployed(spec, ("user",), spec.user or "")
        user, _, group = as_deployed.partition(":")
        if not is_number(user) or (group and not is_number(group)):
            self.plan.notes.add(spec.name, "user", f"'{as_deployed}' is not numeric: Kubernetes' runAsUser "
                                                   "needs a uid; the image's default user runs")
            return {}
        context: dict[str, object] = {"runAsUser": int(user)}
        if group:
            context["runAsGroup"] = int(group)
        return context

    def volumes(self, spec: ResourceSpec) -> list[tuple[int, VolumeSpec]]:
        """(index, volume) as written, references at their defaults; one with no default is left out."""
        found = []
        for index in range(len(spec.volumes)):
            volume = self.plan.volume(spec, index)
            if volume is None:
                written = self.plan.source.raw_at(spec.name, "volumes", index)
                self.plan.notes.add(spec.name, f"volumes.{index}", f"{written} has no default: left out; mount it "
                                                                   "yourself")
            else:
                found.append((index, volume))
        return found

    @staticmethod
    def volume_name(index: int, volume: VolumeSpec) -> str:
        return k8s_name(volume.source) if not volume.is_bind else f"bind-{index}"

    def service(self, spec: ResourceSpec) -> Document:
        service_spec: dict[str, object] = {"selector": self.selector(spec.name)}
        if spec.ports:
            service_spec["ports"] = [{"name": f"{p.protocol}-{p.container_port}", "port": p.container_port,
                                      "targetPort": p.container_port, "protocol": p.protocol.upper()}
                                     for p in spec.ports]
        else:
            service_spec["clusterIP"] = "None"  # only the StatefulSet's governing service
        doc = Document({"apiVersion": "v1", "kind": "Service", "metadata": self.metadata(spec.name),
                        "spec": service_spec})
        if spec.ports:
            doc.note(("spec", "ports"), "host ports and host IPs are not published: reach it in the cluster "
                                        "by this name, or add an Ingress / LoadBalancer / port-forward")
        return doc

    # ---------------------------------------------------------------- workloads

    def pod_spec(self, spec: ResourceSpec, container: dict[str, object], doc_path: tuple[str, ...],
                 notes: list[tuple[tuple[str | int, ...], str]]) -> dict[str, object]:
        pod: dict[str, object] = {}
        waits = self.waits(spec, notes, doc_path)
        if waits:
            pod["initContainers"] = waits
        pod["containers"] = [container]
        pod["terminationGracePeriodSeconds"] = whole_seconds(spec.stop_timeout, 0)
        stop_signal = self.plan.as_deployed(spec, ("stop_signal",), spec.stop_signal)
        if stop_signal != "SIGTERM":
            notes.append(((*doc_path, "terminationGracePeriodSeconds"),
                          f"Kubernetes stops with SIGTERM; stop_signal {stop_signal} is not expressible"))
        binds = [{"name": f"bind-{i}", "hostPath": {"path": v.source}}
                 for i, v in self.volumes(spec) if v.is_bind]
        if binds:
            pod["volumes"] = binds
            notes.append(((*doc_path, "volumes"), "bind mounts become hostPath volumes: the path must exist on "
                                                  "the node the pod lands on"))
        if any(d.condition.value == "completed" and d.name in self.jobs for d in spec.depends_on):
            pod["serviceAccountName"] = self.waiter
            self.uses_waiter = True
        return pod

    def workload(self, spec: ResourceSpec, container: dict[str, object]) -> Document:
        notes: list[tuple[tuple[str | int, ...], str]] = []
        template_path = ("spec", "template", "spec")
        pod = self.pod_spec(spec, container, template_path, notes)
        template = {"metadata": {"labels": self.labels(spec.name)}, "spec": pod}
        named = [(i, v) for i, v in self.volumes(spec) if not v.is_bind]
        if spec.name in self.jobs:
            pod["restartPolicy"] = "Never" if spec.restart is RestartPolicy.NO else "OnFailure"
            backoff = 0 if spec.restart is RestartPolicy.NO else spec.restart_burst
            doc = Document({"apiVersion": "batch/v1", "kind": "Job", "metadata": self.metadata(spec.name),
                            "spec": {"backoffLimit": backoff, "template": template}})
            doc.note((), f"{spec.name} runs to completion: its dependents wait for this Job in an "
                         "initContainer (kubectl wait --for=condition=complete).")
            if named:
                notes.append((("spec",), "a Job's named volumes need PersistentVolumeClaims of your own"))
        elif named:
            storage = {"requests": {"storage": DEFAULT_STORAGE}}
            claims = [{"metadata": {"name": k8s_name(v.source)},
                       "spec": {"accessModes": ["ReadWriteOnce"], "resources": storage}} for _, v in named]
            doc = Document({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": self.metadata(spec.name),
                            "spec": {"serviceName": k8s_name(spec.name), "replicas": 1,
                                     "selector": {"matchLabels": self.selector(spec.name)},
                                     "template": template, "volumeClaimTemplates": claims}})
            for index in range(len(claims)):
                doc.note(("spec", "volumeClaimTemplates", index),
                         f"named volume {named[index][1].source}: {DEFAULT_STORAGE} is a guess; size it")
        else:
            doc = Document({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": self.metadata(spec.name),
                            "spec": {"replicas": 1, "selector": {"matchLabels": self.selector(spec.name)},
                                     "template": template}})
            if spec.restart is RestartPolicy.NO:
                notes.append((("spec", "replicas"), 'restart = "no" is not expressible: a Deployment always '
                                                    "restarts its pod"))
        if spec.description:
            doc.note((), self.plan.as_deployed(spec, ("description",), spec.description))
        for path, text in notes:
            doc.note(path, text)
        return doc

    def waits(self, spec: ResourceSpec, notes: list[tuple[tuple[str | int, ...], str]],
              pod_path: tuple[str, ...]) -> list[dict[str, object]]:
        waits: list[dict[str, object]] = []
        for dep in spec.depends_on:
            condition = dep.condition.value
            target = self.plan.containers.get(dep.name) or self.plan.external.get(dep.name)
            if target is None:
                continue  # left out (--skip-process); noted by the plan
            if condition == "completed" and dep.name in self.jobs:
                waits.append({"name": f"wait-for-{k8s_name(dep.name)}"[:63], "image": KUBECTL_IMAGE,
                              "args": ["wait", "--for=condition=complete", "--timeout=24h",
                                       f"job/{k8s_name(dep.name)}"]})
                continue
            if condition == "started":
                notes.append(((*pod_path, "containers"), f"after {dep.name} started: Kubernetes starts pods "
                                                         "together and has no start order to wait for"))
                continue
            port = self.service_port(target)
            if port is None:
                self.plan.notes.add(spec.name, "depends_on", f"cannot wait for '{dep.name}': it has no port")
                continue
            host = k8s_name(dep.name)
            waits.append({"name": f"wait-for-{host}"[:63], "image": WAIT_IMAGE, "command": [
                "sh", "-c", f"until nc -z -w 2 {host} {port}; do echo waiting for {host}:{port}; sleep 1; done"]})
        if waits:
            notes.append(((*pod_path, "initContainers"), "a Service routes only to ready pods: a connection "
                                                         "to it means the dependency is healthy"))
        return waits

    def service_port(self, spec: ResourceSpec) -> int | None:
        if spec.runtime == "external":
            return external_address(self.plan, spec)[1]
        return spec.ports[0].container_port if spec.ports else None

    # ---------------------------------------------------------------- probes

    def probes(self, spec: ResourceSpec) -> dict[str, object]:
        handler, is_exec = self.handler(spec)
        if handler is None:
            return {}
        probe = spec.health or ProbeSpec(kind="exec")
        timeout = whole_seconds(exec_timeout(probe) if is_exec else probe.timeout)
        period = whole_seconds(probe.interval)
        found: dict[str, object] = {
            "startupProbe": {**handler, "periodSeconds": period, "timeoutSeconds": timeout,
                             "failureThreshold": max(1, whole_seconds(spec.start_timeout / period))},
            "readinessProbe": {**handler, "periodSeconds": whole_seconds(probe.liveness_interval),
                               "timeoutSeconds": timeout, "failureThreshold": probe.failure_threshold},
        }
        if spec.restart is not RestartPolicy.NO:  # vrooli restarts an unhealthy resource only then
            found["livenessProbe"] = {**handler, "periodSeconds": whole_seconds(probe.liveness_interval),
                                      "timeoutSeconds": timeout, "failureThreshold": probe.failure_threshold}
        return found

    def handler(self, spec: ResourceSpec) -> tuple[dict[str, object] | None, bool]:
        """The probe's native form (httpGet, tcpSocket, exec); whether it execs in the container."""
        probe = spec.health
        overridden = spec.export is not None and spec.export.healthcheck is not None
        if probe is not None and not overridden and probe.kind in ("http", "tcp"):
            native = self.native(spec, probe)
            if native is not None:
                return native, False
        check = probe_check(self.plan, spec)
        if isinstance(check, str):
            self.plan.notes.add(spec.name, "health", f"no probes: {check}")
            return None, False
        if check is None:
            return None, False
        return {"exec": {"command": exec_command(check)}}, True

    def native(self, spec: ResourceSpec, probe: ProbeSpec) -> dict[str, object] | None:
        if probe_address_is_deferred(self.plan, spec):
            return None  # probe_check names the reason
        if probe.kind == "tcp":
            host = inside_host(probe.host)
            port = inside_port(spec, probe.port or 0) if host == "127.0.0.1" else probe.port
            return {"tcpSocket": {"port": port, **({} if host == "127.0.0.1" else {"host": host})}}
        target = http_target(spec, probe)
        if isinstance(target, str):
            return None  # probe_check names the reason
        if probe.expect_status and not all(200 <= s < 400 for s in probe.expect_status):
            # httpGet passes on 200-399 only: check the status in the container instead.
            return {"exec": {"command": exec_command(Check(script=http_script(target, probe.expect_status,
                                                                               probe.timeout)))}}
        get: dict[str, object] = {"path": target.path, "port": target.port, "scheme": target.scheme.upper()}
        if target.host != "127.0.0.1":
            get["host"] = target.host
        return {"httpGet": get}

    # ---------------------------------------------------------------- the rest

    def models_job(self, spec: ResourceSpec) -> Document | None:
        assert spec.models is not None
        port = self.service_port(spec)
        if port is None:
            self.plan.notes.add(spec.name, "models", "no port to reach Ollama's API at: models are not pulled")
            return None
        api = f"http://{k8s_name(spec.name)}:{port}"
        names = self.plan.model_names(spec)
        pulls = "; ".join(
            f"wget -q -O - --header 'Content-Type: application/json' --post-data '{{\"model\": \"{m}\"}}' "
            f"{api}/api/pull | tee /dev/stderr | grep -q '\"status\":\"success\"' || exit 1"
            for m in names)
        script = f"until wget -q -O /dev/null {api}/api/version; do sleep 2; done; {pulls}"
        meta = self.metadata(spec.name, "-models")
        doc = Document({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": {
            "backoffLimit": 6, "template": {"metadata": {"labels": meta["labels"]}, "spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "pull", "image": WAIT_IMAGE, "command": ["sh", "-c", script]}]}}}})
        doc.note((), f"Pulls {', '.join(names)} through Ollama's API once it answers; nothing waits "
                     "for this Job, as `vrooli up` never waits for models. Loading happens on first use.")
        return doc

    def external(self, spec: ResourceSpec) -> list[Document]:
        host, port = external_address(self.plan, spec)
        if "${" in host:
            self.plan.notes.add(spec.name, "health", f"{host} has no default: it is written as is; substitute it "
                                                     "before applying (envsubst)")
        ports = [{"name": f"tcp-{port}", "port": port, "protocol": "TCP"}] if port else []
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            named: dict[str, object] = {"type": "ExternalName", "externalName": host}
            if ports:
                named["ports"] = ports
            service = Document({"apiVersion": "v1", "kind": "Service", "metadata": self.metadata(spec.name),
                                "spec": named})
            service.note((), f"{spec.name} is external: vrooli never starts it; here it is a DNS name for {host}.")
            return [service]
        if address.is_loopback:
            self.plan.notes.add(spec.name, "health", f"external at {host}, this machine's loopback: "
                                                     "a cluster cannot reach it there")
        service = Document({"apiVersion": "v1", "kind": "Service", "metadata": self.metadata(spec.name),
                            "spec": {"ports": [{**p, "targetPort": port} for p in ports]}})
        service.note((), f"{spec.name} is external at {host}: a Service without a selector, and its address below.")
        meta = self.metadata(spec.name)
        meta["labels"] = {**self.labels(spec.name), "kubernetes.io/service-name": k8s_name(spec.name)}
        slice_doc = Document({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
                              "addressType": "IPv6" if address.version == 6 else "IPv4",
                              "endpoints": [{"addresses": [host]}],
                              "ports": [{"name": p["name"], "port": port, "protocol": "TCP"} for p in ports]})
        return [service, slice_doc]

    def waiter_rbac(self) -> list[Document]:
        meta = {"name": self.waiter, **({"namespace": self.options.namespace} if self.options.namespace else {}),
                "labels": {"app.kubernetes.io/part-of": self.part_of, "app.kubernetes.io/managed-by": "vrooli"}}
        subject = {"kind": "ServiceAccount", "name": self.waiter, "namespace": self.options.namespace or "default"}
        account = Document({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)})
        account.note((), "Lets a pod wait for a Job to complete (kubectl wait) before it starts.")
        role = Document({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": dict(meta),
                         "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"]}]})
        binding = Document({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": dict(meta),
                            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": self.waiter},
                            "subjects": [subject]})
        if not self.options.namespace:
            binding.note(("subjects", 0, "namespace"), "the namespace you apply to (--namespace sets it)")
        return [account, role, binding]


@dataclass(frozen=True)
class _Args:
    """Command words: a reference to a key of the container's env becomes Kubernetes' $(VAR);
    otherwise its default; one only the deployer can supply becomes a Secret key to fill in
    (into `needed`, with its message). A literal `$` is `$$`, which Kubernetes reads as `$`."""

    in_env: dict[str, str | None]  # key -> its ConfigMap value, or None for a Secret
    needed: dict[str, str]
    caveats: list[str]

    def render(self, tokens: tuple[Token, ...]) -> str:
        out = []
        for token in tokens:
            if isinstance(token, Literal):
                out.append(token.text.replace("$", "$$"))
            elif token.operator in (":+", "+"):
                out.append(self.alternative(token))
            elif token.name in self.in_env or token.name in self.needed:  # a Secret key is in the env too
                out.append(f"$({token.name})")
            elif token.operator in (":-", "-"):
                out.append(self.render(token.word))
            else:  # no default, or `${VAR:?message}`: only the deployer knows it
                self.needed.setdefault(token.name, " ".join(_message(token.word).split()))
                out.append(f"$({token.name})")
        return "".join(out)

    def alternative(self, token: Reference) -> str:
        """Kubernetes has no conditional: `${VAR:+alt}` is decided by what the pod's VAR holds."""
        name, value = token.name, self.in_env.get(token.name)
        if name in self.needed or (name in self.in_env and value is None):
            is_set, why = True, "a Secret key the deployer fills in"
        elif value is not None:
            is_set = value != "" or token.operator == "+"
            why = f"{'set' if value else 'empty'} in the ConfigMap"
        else:
            is_set, why = False, "not in the container's env"
        self.caveats.append(f"{as_written((token,))} is written {'as its alternative' if is_set else 'empty'}: "
                            f"{name} is {why} (Kubernetes has no conditional)")
        return self.render(token.word) if is_set else ""


def secret_keys(in_env: dict[str, str | None], texts: list[tuple[Token, ...]]) -> dict[str, str]:
    """The variables the command words need as Secret keys, with their messages. Each one found
    can turn an alternative (`${VAR:+alt}`) on, which may need more: read until none is new."""
    needed: dict[str, str] = {}
    while True:
        known = len(needed)
        for tokens in texts:
            _Args(in_env, needed, []).render(tokens)
        if len(needed) == known:
            return needed


def _message(tokens: tuple[Token, ...]) -> str:
    return "".join(t.text if isinstance(t, Literal) else "${" + t.name + "}" for t in tokens)


def exec_command(check: Check) -> list[str]:
    """A check as an exec probe's command; references resolve from the container's env."""
    if check.shell is not None:
        return ["sh", "-c", check.shell.as_shell_source()]
    if check.script:
        return ["sh", "-c", "".join(p.shell_word() if isinstance(p, Text) else p for p in check.script)]
    if any(t.has_references for t in check.argv):
        return ["sh", "-c", "exec " + " ".join(t.shell_word() for t in check.argv)]
    return [t.with_defaults() for t in check.argv]


def quantity(size: int) -> str:
    for unit, scale in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def build(plan: Plan, options: Options) -> list[Manifest]:
    return _Builder(plan, options).build()
