"""The import rules between the package's folders ([tool.importlinter] in pyproject.toml):
kept by the checkout, and each one broken on purpose in a copy fails `lint-imports` with
the rule's name."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def lint(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(LINT, cwd=where, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(where), "NO_COLOR": "1"})


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the package with the contract, to break."""
    shutil.copytree(ROOT / "orchestrator", tmp_path / "orchestrator", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "import_contracts.py", tmp_path / "scripts")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def add(checkout: Path, module: str, text: str) -> None:
    path = checkout / "orchestrator" / module
    path.write_text(path.read_text() + "\n" + text + "\n")


def test_the_checkout_keeps_every_contract(checkout: Path) -> None:
    done = lint(checkout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_the_layers_even_inside_a_function(checkout: Path) -> None:
    add(checkout, "plan/graph.py", "def _later() -> None:\n    from orchestrator.cli import app  # noqa")
    done = lint(checkout)
    assert done.returncode != 0
    assert "Folders import only the folders below them" in done.stdout
    assert "orchestrator.plan.graph -> orchestrator.cli.app" in done.stdout


def test_siblings_on_one_line_never_import_each_other(checkout: Path) -> None:
    add(checkout, "engine/events.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    from orchestrator.config import view  # noqa")
    done = lint(checkout)
    assert done.returncode != 0
    assert "orchestrator.engine is not allowed to import orchestrator.config" in done.stdout


def test_a_cycle_inside_a_folder_breaks_the_acyclic_rule(checkout: Path) -> None:
    add(checkout, "plan/graph.py", "def _later() -> None:\n    from orchestrator.plan import scheduler  # noqa")
    done = lint(checkout)
    assert done.returncode != 0
    assert "No import cycle between the modules of any folder BROKEN" in done.stdout


def test_the_client_path_may_not_load_a_third_party_package(checkout: Path) -> None:
    add(checkout, "infra/registry.py", "import anyio  # noqa")
    done = lint(checkout)
    assert done.returncode != 0
    assert "The client path loads the standard library only BROKEN" in done.stdout
    # the chain from a client module to the package, so the reader knows which import to move
    assert "-> orchestrator.infra.registry -> anyio" in done.stdout


def test_the_client_path_may_defer_a_heavy_import_into_a_function(checkout: Path) -> None:
    add(checkout, "infra/registry.py", "def _later() -> None:\n    import anyio  # noqa")
    done = lint(checkout)
    assert done.returncode == 0, done.stdout
