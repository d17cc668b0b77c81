"""Stages 1 and 2 of loading: read each TOML file, then merge the override files over the
first, remembering which file set each key (error lines name that file)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.config.values import dotted
from orchestrator.config.variables import read_env_file
from orchestrator.errors import ConfigError

MAX_DEPTH = 32  # tables and lists deeper than this are refused before anything recurses into them

Origins = dict[tuple[str, ...], str]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError([f"{path}: invalid TOML: arrays or inline tables nested too deeply "
                           f"(at most {MAX_DEPTH} levels)"]) from None
    except ValueError as exc:
        if isinstance(exc, tomllib.TOMLDecodeError):
            raise ConfigError([_toml_error(path, text, exc)]) from None
        # int() refuses numbers of more than 4,300 digits before tomllib can say where
        raise ConfigError([_huge_number_error(path, text)]) from None


def _toml_error(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    where = re.search(r"\(at line (\d+), column (\d+)\)", message)
    reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
    if where is None and "end of document" in message:
        lines = text.splitlines() or [""]
        where = re.search(r"(\d+):(\d+)", f"{len(lines)}:{len(lines[-1]) + 1}")
    if where:
        return f"{path}:{where.group(1)}:{where.group(2)}: invalid TOML: {reason}"
    return f"{path}: invalid TOML: {reason}"


def _huge_number_error(path: Path, text: str) -> str:
    found = re.search(r"[0-9_]{4000,}", text)
    if found is None:
        return f"{path}: invalid TOML: a number too long to read"
    line = text.count("\n", 0, found.start()) + 1
    column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
    return f"{path}:{line}:{column}: invalid TOML: a number of {len(found.group(0))} digits"


def too_deep(value: Any, limit: int = MAX_DEPTH) -> tuple[str, ...] | None:
    """The key path of the first value nested deeper than `limit`, found without recursion."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) > limit:
            return path[:limit]
        if isinstance(item, dict):
            stack.extend((child, (*path, str(key))) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, (*path, str(index))) for index, child in enumerate(item))
    return None


def merge(base: dict[str, Any], override: Mapping[str, Any], origin: str, origins: Origins,
          path: tuple[str, ...] = ()) -> dict[str, Any]:
    """Deep-merge tables; any other value (lists included) is replaced, as compose does."""
    for key, value in override.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value, origin, origins, here)
        else:
            base[key] = value
            _record_origins(value, origin, origins, here)
    return base


def _record_origins(value: object, origin: str, origins: Origins, path: tuple[str, ...]) -> None:
    origins[path] = origin
    if isinstance(value, dict):
        for key, child in value.items():
            _record_origins(child, origin, origins, (*path, key))


def read_all(files: list[Path]) -> tuple[dict[str, Any], Origins]:
    origins: Origins = {}
    merged: dict[str, Any] = {}
    for path in files:
        document = read_toml(path)
        deep = too_deep(document)
        if deep is not None:  # before merge and expand, which recurse
            raise ConfigError([f"{path}: {dotted(deep)}: nested more than {MAX_DEPTH} levels deep"])
        merge(merged, document, str(path), origins)
    return merged, origins


def dotenv(project_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    dotenv = project_dir / ".env"
    if not dotenv.is_file():
        return {}
    try:
        return read_env_file(dotenv, environ)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError([f"{dotenv}: {exc}"]) from None
