"""Each probe kind is declared once (orchestrator/probes/kinds.py): its keys, defaults,
requirements and checker. A new kind is one entry there: config accepts it, validates it
and names it in its error lines, and make_probe runs its checker, with no other edit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from orchestrator import config
from orchestrator.errors import ConfigError
from orchestrator.probes import Probe, ProbeContext, ProbeResult, make_probe, run_once
from orchestrator.probes.kinds import KINDS, Fail, ProbeDraft, ProbeKind
from orchestrator.spec import ProbeSpec
from tests.conftest import ROOT


class EchoProbe:
    """A kind no release has: passes when its `pattern` says "yes"."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec

    async def check(self) -> ProbeResult:
        return ProbeResult(self.spec.pattern == "yes", f"echo said {self.spec.pattern}")

    async def aclose(self) -> None:
        return None


def _echo(spec: ProbeSpec, context: ProbeContext) -> Probe:
    return EchoProbe(spec)


def _needs_word(draft: ProbeDraft, fail: Fail) -> None:
    if "pattern" not in draft.raw:
        fail("pattern", "an echo probe needs a word")


@pytest.fixture
def echo_kind(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProbeKind]:
    kind = ProbeKind("echo", frozenset({"pattern"}), _echo, {"failure_threshold": 7}, validate=_needs_word)
    monkeypatch.setitem(KINDS, "echo", kind)
    yield kind


def write(tmp_path: Path, health: str) -> Path:
    path = tmp_path / "resources.toml"
    path.write_text(f'[resources.app]\ncommand = ["sleep", "60"]\nhealth = {{ {health} }}\n')
    return path


def test_a_new_kind_is_one_declaration(tmp_path: Path, echo_kind: ProbeKind) -> None:
    project = config.load([write(tmp_path, 'probe = "echo", pattern = "yes"')], {})
    spec = project.resources["app"].health
    assert spec is not None and spec.kind == "echo"
    assert spec.failure_threshold == 7  # the kind's own default
    assert spec.timeout == 1.0  # ProbeSpec's default for a key the kind leaves alone

    with pytest.raises(ConfigError) as missing:
        config.load([write(tmp_path, 'probe = "echo"')], {})
    assert missing.value.problems == [f"{tmp_path / 'resources.toml'}: resources.app.health.pattern: "
                                      "an echo probe needs a word"]

    with pytest.raises(ConfigError) as unknown:
        config.load([write(tmp_path, 'probe = "nope"')], {})
    assert "must be one of tcp, http, exec, postgres, redis, log, echo, got 'nope'" in unknown.value.problems[0]

    async def check_both() -> tuple[ProbeResult, ProbeResult]:
        passing = make_probe(spec, ProbeContext())
        failing = make_probe(replace(spec, pattern="no"), ProbeContext())
        return await run_once(passing, 1.0), await run_once(failing, 1.0)

    passed, failed = anyio.run(check_both)
    assert (passed.ok, passed.message) == (True, "echo said yes")
    assert (failed.ok, failed.message) == (False, "echo said no")


def test_every_kind_declares_its_keys_defaults_requirements_and_checker() -> None:
    assert list(KINDS) == ["tcp", "http", "exec", "postgres", "redis", "log"]
    for name, kind in KINDS.items():
        assert kind.name == name
        assert set(kind.defaults) <= kind.keys | {"interval", "timeout", "liveness_interval", "failure_threshold"}
        # a kind needs something to check: an address, or a requirement of its own
        assert kind.probes_address or kind.validate is not None, name
        assert callable(kind.build)


@pytest.mark.e2e
def test_loading_a_config_imports_no_event_loop() -> None:
    """config → probes.kinds must not pull anyio in: every CLI command loads a config."""
    code = ("import sys; from pathlib import Path; from orchestrator import config; "
            f"config.load([Path({str(ROOT / 'resources.toml')!r})]); "
            "print(sorted(m for m in ('anyio', 'ssl', 'httpx', 'docker') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_config_names_no_probe_kind_of_its_own() -> None:
    """Validation reads kinds from the declarations only: no stage spells a kind's name (the
    port protocol "tcp" in values.parse_port is a port's, not a probe's)."""
    import ast

    stages = [ROOT / "orchestrator" / "config" / f"{stage}.py"
              for stage in ("__init__", "read", "values", "project", "resource", "health", "checks")]
    for path in stages:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef) or function.name == "parse_port":
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Constant) and node.value in KINDS:
                    raise AssertionError(f"{path.name}:{node.lineno} names the probe kind {node.value!r}")
