"""Variables as compose reads them: `${VAR}` interpolation and `.env` files.

Both follow compose's documented rules, so a file written for compose means the same here;
every failure is a ValueError whose message is one line (the caller adds file and key).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import InterpolationError

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*", re.ASCII)
MAX_NESTED_INTERPOLATION = 10


@dataclass(frozen=True, slots=True)
class Literal:
    """Text that means itself: a `$$` as written is one `$` here, and so is a lone `$`."""

    text: str


@dataclass(frozen=True, slots=True)
class Reference:
    """`$NAME`, or `${NAME}` with an operator (`:-` `-` `:?` `?` `:+` `+`) and its word: the
    default, the message or the alternative, itself tokenized (defaults nest)."""

    name: str
    operator: str | None = None
    word: tuple[Literal | Reference, ...] = ()
    braced: bool = True


Token = Literal | Reference
OPERATORS = (":-", ":?", ":+", "-", "?", "+")


def tokenize(text: str, depth: int = 0) -> tuple[Token, ...]:
    """The one reading of compose's interpolation syntax, for the loader and the exporters alike.

    `$NAME` and `${NAME}`, `${NAME:-default}` / `${NAME-default}`, `${NAME:?message}` /
    `${NAME?message}`, `${NAME:+alt}` / `${NAME+alt}`; words nest (`${A:-${B}}`).
    `$$` is a literal `$`, and a `$` that starts none of these stays as it is (`^ready$`).
    Every word is read here, used or not: a broken `${` is refused whatever is set.
    """
    if depth > MAX_NESTED_INTERPOLATION:
        raise InterpolationError(f"${{...}} nested more than {MAX_NESTED_INTERPOLATION} deep")
    tokens: list[Token] = []
    literal: list[str] = []
    position = 0
    while (dollar := text.find("$", position)) >= 0:
        literal.append(text[position:dollar])
        following = text[dollar + 1:dollar + 2]
        name = _VAR_NAME.match(text, dollar + 1)
        if following == "{":
            close = _closing_brace(text, dollar + 2)
            reference = _braced(text[dollar + 2:close], depth)
            position = close + 1
        elif name is not None:
            reference = Reference(name.group(0), braced=False)
            position = name.end()
        else:  # `$$`, or a `$` that starts nothing
            literal.append("$")
            position = dollar + (2 if following == "$" else 1)
            continue
        if "".join(literal):
            tokens.append(Literal("".join(literal)))
        literal = []
        tokens.append(reference)
    literal.append(text[position:])
    if "".join(literal):
        tokens.append(Literal("".join(literal)))
    return tuple(tokens)


def interpolate(text: str, variables: Mapping[str, str], depth: int = 0) -> str:
    """Expand variables as compose does (the syntax: see `tokenize`).

    An unset `$NAME` / `${NAME}` is an error (write a default); so is `${NAME:?message}` /
    `${NAME?message}` when unset (`:?` also when empty), with the message.
    """
    return evaluate(tokenize(text, depth), variables)


def evaluate(tokens: tuple[Token, ...], variables: Mapping[str, str]) -> str:
    return "".join(t.text if isinstance(t, Literal) else _lookup(t, variables) for t in tokens)


def _closing_brace(text: str, start: int) -> int:
    """The index of the `}` closing a `${` whose body starts at `start` (nested `${}` skipped)."""
    level, index = 1, start
    while index < len(text):
        if text.startswith("$$", index):
            index += 2
            continue
        if text.startswith("${", index):
            level += 1
            index += 2
            continue
        if text[index] == "}":
            level -= 1
            if level == 0:
                return index
        index += 1
    raise InterpolationError("unterminated ${ (no closing '}')")


def _braced(body: str, depth: int) -> Reference:
    name = _VAR_NAME.match(body)
    if name is None:
        raise InterpolationError(f"invalid variable name in ${{{escaped_short(body)}}}")
    rest = body[name.end():]
    operator = next((op for op in OPERATORS if rest.startswith(op)), None)
    if operator is None:
        if rest:
            raise InterpolationError(f"unsupported ${{{escaped_short(body)}}}: use ${{NAME}}, ${{NAME:-default}}, "
                                     f"${{NAME:?message}} or ${{NAME:+alternative}}")
        return Reference(name.group(0))
    return Reference(name.group(0), operator, tokenize(rest[len(operator):], depth + 1))


def _lookup(reference: Reference, variables: Mapping[str, str]) -> str:
    name, operator = reference.name, reference.operator
    value = variables.get(name)
    present = value is not None and (value != "" or not (operator or "").startswith(":"))
    if operator in (":-", "-"):
        return value if present and value is not None else evaluate(reference.word, variables)
    if operator in (":+", "+"):
        return evaluate(reference.word, variables) if present else ""
    if present and value is not None:
        return value
    if operator in (":?", "?"):
        reason = " ".join(evaluate(reference.word, variables).split())
        state = "empty" if value == "" else "not set"
        raise InterpolationError(f"${{{name}}} is {state}" + (f": {reason}" if reason else ""))
    raise InterpolationError(f"${{{name}}} is not set; set it in the environment or .env, "
                             f"or write ${{{name}:-default}}")


def as_written(tokens: tuple[Token, ...]) -> str:
    """Tokens back as resources.toml would have them (a literal `$` as `$$`)."""
    out: list[str] = []
    for token in tokens:
        if isinstance(token, Literal):
            out.append(token.text.replace("$", "$$"))
        elif not token.braced:
            out.append(f"${token.name}")
        else:
            out.append("${" + token.name + (token.operator or "") + as_written(token.word) + "}")
    return "".join(out)


def escaped_short(text: str) -> str:
    shown = text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= 40 else shown[:36] + "…"


def read_env_file(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A compose-style .env file: KEY=VALUE lines, `export `, quotes, comments, interpolation.

    Unquoted values end at ` #` (a comment) and are trimmed; 'single quotes' are literal;
    "double quotes" understand \\n \\r \\t \\" \\\\ and may span lines. Unquoted and
    double-quoted values expand `${VAR}` from `environ`, then from the lines above.
    A bare `KEY` takes KEY from `environ` when set. Raises ValueError("line N: ...").
    """
    text = path.read_text(encoding="utf-8")
    return parse_env_text(text, environ or {})


def parse_env_text(text: str, environ: Mapping[str, str]) -> dict[str, str]:
    values: dict[str, str] = {}
    # Only "\n" ends a line (CRLF tolerated): splitlines() would also split at \v, \f, U+2028...
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index].lstrip()
        index += 1
        if not line.strip() or line.startswith("#"):
            continue
        if "\x00" in line:
            raise ValueError(f"line {number}: contains a NUL byte")
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].lstrip()
        key, sep, raw = line.partition("=")
        key = key.strip()
        if not _ENV_KEY.fullmatch(key):
            raise ValueError(f"line {number}: expected KEY=VALUE with KEY of letters, digits and '_'")
        if not sep:
            if key in environ:
                values[key] = environ[key]
            continue
        raw = raw.lstrip()
        lookup = _ChainLookup(environ, values)
        try:
            if raw[:1] in ("'", '"'):
                value, index = _quoted_value(raw, lines, index, number)
                if raw[0] == '"':
                    value = interpolate(value, lookup)
            else:
                value = interpolate(_strip_comment(raw).rstrip(), lookup)
        except InterpolationError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        values[key] = value
    return values


def _strip_comment(raw: str) -> str:
    for index, char in enumerate(raw):
        if char == "#" and index > 0 and raw[index - 1] in " \t":
            return raw[:index]
    return raw


_DOUBLE_QUOTE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$$"}


def _quoted_value(raw: str, lines: list[str], index: int, number: int) -> tuple[str, int]:
    """The value between quotes (may continue on the next lines) and the next line's index."""
    quote, text, position = raw[0], raw, 1
    out: list[str] = []
    while True:
        if position >= len(text):
            if index >= len(lines):
                raise ValueError(f"line {number}: unterminated {quote}quoted{quote} value")
            text, position, index = lines[index], 0, index + 1
            out.append("\n")
            continue
        char = text[position]
        if char == "\\" and position + 1 < len(text):
            escaped = text[position + 1]
            if quote == '"' and escaped in _DOUBLE_QUOTE_ESCAPES:
                out.append(_DOUBLE_QUOTE_ESCAPES[escaped])
                position += 2
                continue
            if quote == "'" and escaped == "'":
                out.append("'")
                position += 2
                continue
        if char == quote:
            trailing = text[position + 1:].strip()
            if trailing and not trailing.startswith("#"):
                raise ValueError(f"line {number}: unexpected text after the closing quote")
            return "".join(out), index
        out.append(char)
        position += 1


class _ChainLookup(Mapping[str, str]):
    """The environment first (it wins, as in compose), then the file's own earlier lines."""

    def __init__(self, first: Mapping[str, str], second: Mapping[str, str]) -> None:
        self.first, self.second = first, second

    def __getitem__(self, key: str) -> str:
        return self.first[key] if key in self.first else self.second[key]

    def __iter__(self) -> Iterator[str]:
        return iter({**self.second, **self.first})

    def __len__(self) -> int:
        return len({**self.second, **self.first})
