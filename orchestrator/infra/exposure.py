"""What leaves the owner's hands: text anyone may read (the files only the owner may read are
written by paths.write_private).

`vrooli status` talks to the owner over a 0600 socket and shows everything. Other outputs
reach people who are not the owner: the health endpoint answers any local user (or the
network, if `health_listen` says so), systemd's STATUS= line is shown by `systemctl status`
to everyone, and last_start.json outlives the run. Those get `public_text`: one function,
so no public output can forget a rule. It drops

- a resource's own output (`...; last output: FATAL ... postgres://app:pw@db`) and an exec
  probe's output (`exec check exited 1: <its last line>`): a program's output is its
  business, and crash lines quote connection strings;
- the arguments of an exec probe (`exec curl -H "Authorization: Bearer ..."`);
- URL userinfo and query strings (`http://user:pw@host/health?token=...`), and
  `token=...`-like pairs anywhere;
- any value the resource's spec marks as a secret (a probe's password, env values whose
  name looks like a secret), wherever it appears.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from orchestrator.spec import ResourceSpec

MASK = "***"
# What the supervisor may append after a resource's output in a message (supervisor.py's
# exit and restart messages). Whatever follows the cut must match this fixed vocabulary,
# so no part of the output can survive by looking like a suffix.
_SUFFIX = r"(?P<suffix>(?: before it was ready)?(?:; restarting in [0-9.]+s)?\)?)"
_LAST_OUTPUT = re.compile(r"; last output: .*?" + _SUFFIX + r"\Z", re.DOTALL)
_EXEC_OUTPUT = re.compile(r"(?P<head>\bexec \S+ exited -?\d+): .*?" + _SUFFIX + r"\Z", re.DOTALL)
_URL = re.compile(r"\b(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#@]*@)?"
                  r"(?P<rest>[^\s?#]*)(?P<query>\?[^\s#]*?)?(?P<fragment>#\S*?)?"
                  r"(?=[:,;.)\]]*(?:\s|\Z))")  # punctuation after a URL is the sentence's, not the URL's
SECRET_NAME = re.compile(r"pass(word)?|secret|token|api[_-]?key|credential|auth", re.IGNORECASE)
_SECRET_PAIR = re.compile(r"(?P<key>[\w.-]*(?:pass(?:word)?|secret|token|api[_-]?key|credential|auth)[\w.-]*)"
                          r"(?P<sep>=)(?P<value>\"[^\"]*\"|'[^']*'|[^\s&;,]+)", re.IGNORECASE)
MIN_SECRET = 6  # shorter values would mask ordinary words wherever they appear


def public_text(text: str, spec: ResourceSpec | None = None) -> str:
    """`text` as anyone may read it (see the module docstring for what goes)."""
    if not text:
        return text
    text = _LAST_OUTPUT.sub(lambda m: m["suffix"], text)
    text = _EXEC_OUTPUT.sub(lambda m: m["head"] + m["suffix"], text)
    if spec is not None:
        text = _mask_spec_secrets(text, spec)
    text = _URL.sub(_public_url, text)
    return _SECRET_PAIR.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)


def public_probe(spec: ResourceSpec) -> str | None:
    """The probe as `describe()` says it, without an exec probe's arguments or URL secrets."""
    if spec.health is None:
        return None
    if spec.health.kind == "exec" and len(spec.health.command) > 1:
        return f"exec {spec.health.command[0]} {MASK}"
    return public_text(spec.health.describe(), spec)


def public_rows(rows: Iterable[dict[str, Any]], specs: Mapping[str, ResourceSpec]) -> list[dict[str, Any]]:
    """Status rows (`Supervisor.snapshot`) with every free-text field made public."""
    shown = []
    for row in rows:
        spec = specs.get(row.get("name", ""))
        row = dict(row)
        if isinstance(row.get("message"), str):
            row["message"] = public_text(row["message"], spec)
        if "probe" in row and spec is not None:
            row["probe"] = public_probe(spec)
        shown.append(row)
    return shown


def secrets_of(spec: ResourceSpec) -> list[str]:
    """The values in SPEC that are secrets (MIN_SECRET characters or more), longest first."""
    found: list[str] = []
    probe = spec.health
    if probe is not None:
        if probe.password:
            found.append(probe.password)
        if probe.url:
            parts = urlsplit(probe.url)
            found.extend(v for v in (parts.username, parts.password) if v)
            found.extend(v for _, v in parse_qsl(parts.query))
    found.extend(value for key, value in spec.env if SECRET_NAME.search(key) and value != spec.name)
    # Longest first, so a secret containing another is masked whole.
    return sorted({s for s in found if len(s) >= MIN_SECRET}, key=len, reverse=True)


def mask_secrets(text: str, spec: ResourceSpec) -> str:
    """`text` with the values `spec` marks as secrets masked, and nothing else removed: for
    text only the owner reads that quotes a program's output (a hook's, in its status message)."""
    return _mask_spec_secrets(text, spec)


def _mask_spec_secrets(text: str, spec: ResourceSpec) -> str:
    probe = spec.health
    if probe is not None and probe.kind == "exec" and len(probe.command) > 1:
        text = text.replace(" ".join(probe.command), f"{probe.command[0]} {MASK}")
    for secret in secrets_of(spec):
        text = text.replace(secret, MASK)
    return text


def _public_url(match: re.Match[str]) -> str:
    userinfo = f"{MASK}@" if match["userinfo"] else ""
    query = f"?{MASK}" if match["query"] and len(match["query"]) > 1 else (match["query"] or "")
    return f"{match['scheme']}{userinfo}{match['rest']}{query}"
