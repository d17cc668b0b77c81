"""A contract type for import-linter that its own types cannot state: "importing these modules
loads the standard library only".

Why it is needed: the client path (`vrooli status`, `up`, `down`, `restart` against a
running supervisor) must start in tens of milliseconds, so it may not import anyio,
structlog, psutil, docker, typer, ... when it loads. It still *calls* into heavier modules
on some paths (a cold `up` forks the supervisor, `down` reads records), through imports
inside functions. import-linter's graph counts every import wherever it is written, so its
`forbidden` contract would flag those deferred ones. This contract follows only what runs
when a module is imported: top-level statements (inside `if` and `try` too), not function
bodies, not `if TYPE_CHECKING:` blocks.

Used from pyproject.toml, [tool.importlinter]; run by `lint-imports` from the repository root.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path
from typing import Any

from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_statements(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                found += _import_time_statements(node.body)
            found += _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                found += _import_time_statements(block)
        elif isinstance(node, ast.With):
            found += _import_time_statements(node.body)
        elif isinstance(node, ast.ClassDef):  # a class body runs at import
            found += _import_time_statements(node.body)
    return found


class StandardLibraryOnlyContract(Contract):
    """Importing any of `source_modules` (and so every module they import at import time)
    loads nothing outside the standard library and the project's own package."""

    type_name = "standard_library_only"

    source_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        root = str(self.session_options["root_packages"][0])
        package_dir = Path(str(importlib.import_module(root).__file__)).parent
        modules = {m for m in graph.modules if m == root or m.startswith(root + ".")}
        sources = sorted({m for pattern in self.source_modules for m in modules  # type: ignore[attr-defined]
                          if m == pattern or m.startswith(pattern + ".")})
        offences: list[list[str]] = []
        for source in sources:
            seen: dict[str, list[str]] = {source: [source]}
            pending = [source]
            while pending:
                module = pending.pop()
                trail = seen[module]
                for imported in self._imports_at_import_time(module, modules, package_dir, root):
                    top = imported.split(".")[0]
                    if top == root:
                        if imported not in seen:
                            seen[imported] = [*trail, imported]
                            pending.append(imported)
                    elif top not in sys.stdlib_module_names and top != "__future__":
                        offences.append([*trail, imported])
        # One line per (source, external module); the shortest chain for each.
        shortest: dict[tuple[str, str], list[str]] = {}
        for chain in offences:
            key = (chain[0], chain[-1])
            if key not in shortest or len(chain) < len(shortest[key]):
                shortest[key] = chain
        return ContractCheck(kept=not shortest, metadata={"chains": [shortest[k] for k in sorted(shortest)]})

    @staticmethod
    def _imports_at_import_time(module: str, modules: set[str], package_dir: Path, root: str) -> list[str]:
        relative = module.split(".")[1:]
        path = package_dir.joinpath(*relative)
        file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        tree = ast.parse(file.read_text())
        found: list[str] = []
        # Importing a submodule runs its packages' __init__ first.
        for depth in range(1, len(module.split("."))):
            found.append(".".join(module.split(".")[:depth]))
        for node in _import_time_statements(tree.body):
            if isinstance(node, ast.Import):
                found += [alias.name for alias in node.names]
            elif node.level == 0 and node.module:
                found.append(node.module)
                found += [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
        return [f for f in found if f != module and (f.split(".")[0] != root or f in modules)]

    def render_broken_contract(self, check: ContractCheck) -> None:
        for chain in check.metadata["chains"]:
            output.print_error(f"{chain[0]} imports {chain[-1]} when it loads:", bold=True)
            output.indent_cursor()
            output.print_error(" -> ".join(chain), bold=False)
            output.new_line()
