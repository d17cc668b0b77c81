"""The CLI's promises that are not about starting things: cheap imports, clean errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def imported_by(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator", *args],
                          capture_output=True, text=True, cwd=ROOT)
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_help_imports_neither_docker_nor_the_event_loop_stack() -> None:
    names = imported_by("--help")
    assert "orchestrator.cli" in names  # the measurement works
    for heavy in ("docker", "anyio", "httpx", "uvicorn", "prometheus_client", "rich"):
        assert heavy not in names, heavy


def test_validate_does_not_import_docker_even_for_docker_resources() -> None:
    names = imported_by("validate", "-f", str(ROOT / "resources.toml"))
    assert "orchestrator.config" in names
    assert "docker" not in names


def test_bad_file_is_one_line_exit_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "resources.toml"
    path.write_text('[resources.a]\ncommand = ["true"]\ndepends_on = ["b"]\n[resources.b]\ncommand = ["true"]\n'
                    'depends_on = ["a"]\n')
    for command in ("up", "status", "graph", "validate", "down"):
        done = subprocess.run([sys.executable, "-m", "orchestrator", command, "-f", str(path)],
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.strip() == f"{path}: resources.a.depends_on: dependency cycle: a -> b -> a", command


def test_missing_file_is_named(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "orchestrator", "validate"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"{tmp_path / 'resources.toml'}: file not found"


def test_json_errors_for_scripts(tmp_path: Path) -> None:
    import json

    path = tmp_path / "resources.toml"
    path.write_text('[resources.a]\ncommand = "true"\n')
    done = subprocess.run([sys.executable, "-m", "orchestrator", "validate", "--json", "-f", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    payload = json.loads(done.stdout)
    assert payload["ok"] is False and payload["exit_code"] == 2
    assert "resources.a.command" in payload["errors"][0]
