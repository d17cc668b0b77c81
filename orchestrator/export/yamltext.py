"""A small YAML emitter for plain data (dicts, lists, str, int, float, bool, None) with comments.

PyYAML cannot write comments, and the exported files need them: what a deployer must fill
in, what a format could not express. The output is the block style every YAML 1.1 and 1.2
reader agrees on: a string is written bare only when no reader could take it for anything
else (a number, a boolean, `no`, a time like 12:30, a key/value), and otherwise as a JSON
string, which is valid YAML.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Path = tuple[str | int, ...]

_BARE = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
# YAML 1.1 words that readers turn into booleans or null (docker-compose's PyYAML does).
_SPECIAL = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"}
_FLOW_WIDTH = 100
_COMMENT_WIDTH = 96


@dataclass
class Document:
    """One YAML document: data, plus comment lines placed before the key at a path."""

    data: dict[str, object]
    comments: dict[Path, list[str]] = field(default_factory=dict)

    def note(self, path: Path, text: str) -> None:
        lines = [part for line in text.splitlines() or [""]
                 for part in textwrap.wrap(line, _COMMENT_WIDTH, break_on_hyphens=False, break_long_words=False)
                 or [""]]
        self.comments.setdefault(path, []).extend(lines)


def scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _BARE.match(text) and text.lower() not in _SPECIAL:
        return text
    return json.dumps(text, ensure_ascii=False)


def _flow(values: Sequence[object]) -> str | None:
    """A short list of scalars on one line (["CMD", "pg_isready"]), else None."""
    if any(isinstance(v, Mapping | list) for v in values):
        return None
    text = "[" + ", ".join(scalar(v) for v in values) + "]"
    return text if len(text) <= _FLOW_WIDTH else None


def _comment_lines(doc: Document, path: Path, indent: str) -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in doc.comments.get(path, [])]


def _mapping(doc: Document, data: Mapping[str, object], path: Path, depth: int) -> list[str]:
    indent = "  " * depth
    lines: list[str] = []
    for key, value in data.items():
        here = (*path, key)
        lines += _comment_lines(doc, here, indent)
        lines += _entry(doc, f"{indent}{scalar(key)}:", value, here, depth)
    return lines


def _sequence(doc: Document, data: Sequence[object], path: Path, depth: int) -> list[str]:
    indent = "  " * depth
    lines: list[str] = []
    for index, value in enumerate(data):
        here = (*path, index)
        lines += _comment_lines(doc, here, indent)
        if isinstance(value, Mapping) and value:
            inner = _mapping(doc, value, here, depth + 1)
            first = next(i for i, line in enumerate(inner) if not line.lstrip().startswith("#"))
            lines += inner[:first]  # comments on the first key go above the dash
            lines.append(f"{indent}- {inner[first].lstrip()}")  # the first key shares the dash's line
            lines += inner[first + 1:]
        else:
            lines += _entry(doc, f"{indent}-", value, here, depth)
    return lines


def _entry(doc: Document, lead: str, value: object, path: Path, depth: int) -> list[str]:
    if isinstance(value, Mapping):
        return [f"{lead} {{}}"] if not value else [lead, *_mapping(doc, value, path, depth + 1)]
    if isinstance(value, list | tuple):
        flow = _flow(value) if not any(p[:len(path)] == path and len(p) > len(path) for p in doc.comments) else None
        if flow is not None:
            return [f"{lead} {flow}"]
        return [lead, *_sequence(doc, value, path, depth + 1)]
    return [f"{lead} {scalar(value)}"]


def dump(doc: Document) -> str:
    lines = _comment_lines(doc, (), "") + _mapping(doc, doc.data, (), 0)
    return "\n".join(lines) + "\n"


def dump_all(docs: Sequence[Document], header: Sequence[str] = ()) -> str:
    head = "".join(f"# {line}".rstrip() + "\n" for line in header)
    return head + "---\n".join(dump(d) for d in docs)
