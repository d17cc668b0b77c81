"""Hostile and unlucky input, family by family: every case is a clear one-line error (or a
correct value), never a traceback, and `validate` refuses what a start would refuse.

Each family is a table, so the figures in docs/HARDENING.md are the number of its cases.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict, Unpack

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import config
from orchestrator.config import variables
from orchestrator.config.project import PROJECT_KEYS
from orchestrator.config.resource import RESOURCE_KEYS
from orchestrator.config.values import MAX_DURATION, parse_duration, parse_port
from orchestrator.errors import ConfigError, InterpolationError
from orchestrator.probes import ProbeContext, make_probe, run_once
from orchestrator.probes.http import Target, UrlError
from tests.conftest import free_port

PASSWORD = "Zq8pw"  # a password fragment that must never show in any message


def problems(tmp_path: Path, body: str, environ: dict[str, str] | None = None,
             host_checks: bool = False, name: str = "resources.toml") -> list[str]:
    """The problem lines for a file (empty when it loads); fails the test on any other exception."""
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    try:
        config.load([path], environ if environ is not None else {"PATH": os.defpath},
                    host_checks=host_checks)
    except ConfigError as exc:
        lines = exc.lines()
        assert lines and all(line.isprintable() and line.startswith(str(path)) for line in lines), lines
        return lines
    return []


class ProblemOptions(TypedDict, total=False):
    """problems()'s keyword arguments, which one_problem() passes on."""

    environ: dict[str, str] | None
    host_checks: bool
    name: str


def one_problem(tmp_path: Path, body: str, key: str, **kwargs: Unpack[ProblemOptions]) -> str:
    lines = problems(tmp_path, body, **kwargs)
    assert len(lines) == 1, lines
    assert f": {key}" in lines[0], (key, lines[0])
    return lines[0]


def http_probe(url: str) -> str:
    literal = url.replace("$", "$$")  # the URL itself, not an interpolation of it
    return f'[resources.api]\ncommand = ["true"]\nhealth = {{ probe = "http", url = {toml_string(literal)} }}\n'


def toml_string(text: str) -> str:
    return tomli_w.dumps({"v": text}).partition("=")[2].strip()


# ------------------------------------------------------------------ probe URLs: one line each, never the password

BAD_URLS = {
    "port not a number": "http://127.0.0.1:abc/",
    "port superscript digits": "http://127.0.0.1:\u2075\u2074\u2073\u2073/",
    "port arabic-indic digits": "http://127.0.0.1:\u0665\u0664\u0663\u0663/",
    "port 0": "http://127.0.0.1:0/",
    "port 65536": "http://127.0.0.1:65536/",
    "port 5000 digits": "http://127.0.0.1:" + "9" * 5000 + "/",
    "port negative": "http://127.0.0.1:-80/",
    "port with plus": "http://127.0.0.1:+80/",
    "broken IPv6 literal": "http://[::1:5432/",
    "IPv6 without brackets": "http://::1:5432/",
    "not an IPv6 address in brackets": "http://[zz::1]:80/",
    "IPv4 in brackets": "http://[127.0.0.1]:80/",
    "text after the bracket": "http://[::1]x:80/",
    "password with slash": f"http://app:{PASSWORD}/x@127.0.0.1:5432/",
    "password with hash": f"http://app:{PASSWORD}#x@127.0.0.1:5432/",
    "password with question mark": f"http://app:{PASSWORD}?x@127.0.0.1:5432/",
    "password, host forgotten": f"http://app:{PASSWORD}/health",
    "at sign in the path": "http://127.0.0.1/a@b",
    "empty host": "http:///health",
    "empty host with port": "http://:8080/",
    "empty host with credentials": f"http://app:{PASSWORD}@/",
    "unknown scheme": "ftp://127.0.0.1/",
    "no scheme": "127.0.0.1:8080/health",
    "scheme without slashes": "http:127.0.0.1",
    "single slash": "http:/127.0.0.1/",
    "space in the path": "http://127.0.0.1/a b",
    "space in the host": "http://127.0.0 .1/",
    "CR LF in the path": "http://127.0.0.1/\r\nX-Injected: 1",
    "LF in the host": "http://127.0.0.1\n/",
    "tab": "http://127.0.0.1/\tx",
    "NUL": "http://127.0.0.1/\x00",
    "DEL": "http://127.0.0.1/\x7f",
    "no-break space": "http://127.0.0.1/\u00a0",
    "line separator": "http://127.0.0.1/\u2028",
    "zero-width space": "http://127.0.0.1/\u200b",
    "underscore-only host": "http://-/",
    "host with percent": "http://127.0.0.1%2F/",
    "host label over 63 (idna)": "http://" + "\u00e9" * 70 + ".example/",
    "host of 300 characters": "http://" + "a" * 300 + "/",
    "two ports": "http://127.0.0.1:80:90/",
    "8 KiB URL": "http://127.0.0.1/" + "a" * 9000,
    "empty": "",
    "only scheme": "http://",
}

GOOD_URLS = {
    "plain": ("http://127.0.0.1:8080/health", "127.0.0.1", 8080),
    "https default port": ("https://localhost/", "localhost", 443),
    "IPv6": ("http://[::1]:5432/x", "::1", 5432),
    "IPv6 with zone": ("http://[fe80::1%25lo]:80/", "fe80::1%lo", 80),
    "user only": ("http://app@127.0.0.1:80/", "127.0.0.1", 80),
    "empty password": ("http://app:@127.0.0.1:80/", "127.0.0.1", 80),
    "empty user": (f"http://:{PASSWORD}@127.0.0.1:80/", "127.0.0.1", 80),
    "encoded slash hash question": (f"http://app:{PASSWORD}%2F%23%3F@127.0.0.1:81/", "127.0.0.1", 81),
    "at sign in the password": (f"http://app:{PASSWORD}@x@127.0.0.1:82/", "127.0.0.1", 82),
    "colon in the password": (f"http://app:{PASSWORD}:x@127.0.0.1:83/", "127.0.0.1", 83),
    "empty port": ("http://127.0.0.1:/", "127.0.0.1", 80),
    "query only": ("http://127.0.0.1?ready=1", "127.0.0.1", 80),
    "fragment dropped": ("http://127.0.0.1/x#frag", "127.0.0.1", 80),
    "upper-case scheme": ("HTTP://127.0.0.1/", "127.0.0.1", 80),
    "idna host": ("http://b\u00fccher.example/", "b\u00fccher.example", 80),
    "underscore host": ("http://my_service:80/", "my_service", 80),
}


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_bad_probe_url_is_one_line_without_the_password(tmp_path: Path, url: str) -> None:
    line = one_problem(tmp_path, http_probe(url), "resources.api.health.url")
    assert PASSWORD not in line and "x@127" not in line
    with pytest.raises(UrlError) as caught:  # the probe's own parser says the same
        Target.parse(url)
    assert str(caught.value) in line or ("\x00" in url and "contains a NUL byte" in line)


@pytest.mark.parametrize(("url", "host", "port"), GOOD_URLS.values(), ids=GOOD_URLS.keys())
def test_good_probe_url_loads_and_the_probe_never_shows_the_password(tmp_path: Path, url: str, host: str,
                                                                     port: int) -> None:
    assert problems(tmp_path, http_probe(url)) == []
    target = Target.parse(url)
    assert (target.host, target.port) == (host, port)
    assert PASSWORD not in target.shown
    assert PASSWORD.encode() not in target.request  # only inside the base64 of Basic auth


@pytest.mark.e2e
def test_validate_line_for_a_password_url_exits_2_without_the_password(tmp_path: Path) -> None:
    path = tmp_path / "resources.toml"
    path.write_text(http_probe(f"http://app:{PASSWORD}/x@127.0.0.1:5432/"))
    done = subprocess.run([sys.executable, "-m", "orchestrator", "validate", "-f", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "resources.api.health.url: invalid URL" in done.stderr
    assert PASSWORD not in done.stderr + done.stdout


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("url", list(BAD_URLS.values()), ids=list(BAD_URLS.keys()))
async def test_probe_built_from_a_bad_url_fails_its_checks_instead_of_raising(url: str) -> None:
    """Belt and braces: were a bad URL ever to reach a probe, only its resource would know."""
    from orchestrator.spec import ProbeSpec

    probe = make_probe(ProbeSpec("http", url=url), ProbeContext())
    result = await run_once(probe, 1.0)
    await probe.aclose()
    assert not result.ok and "\n" not in result.message
    assert PASSWORD not in result.message


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.builds(lambda scheme, user, host, port, path: f"{scheme}{user}{host}{port}{path}",
                 st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "http:/", ""]),
                 st.one_of(st.just(""), st.text(max_size=8).map(lambda t: f"{t}:{PASSWORD}{t}@")),
                 st.one_of(st.sampled_from(["127.0.0.1", "[::1]", "[::1", "::1", "", "localhost", "h\u00e9"]),
                           st.text(max_size=10)),
                 st.one_of(st.just(""), st.text(max_size=6).map(lambda t: f":{t}"),
                           st.integers(-5, 70000).map(lambda n: f":{n}")),
                 st.text(max_size=12)))
def test_fuzz_probe_urls(tmp_path: Path, url: str) -> None:
    """Any URL: a clear line without the password, or one the probe accepts and can use."""
    try:
        target = Target.parse(url)
    except UrlError as exc:
        assert PASSWORD not in str(exc) and str(exc).isprintable()
        lines = problems(tmp_path, http_probe(url))
        assert lines and all("health.url: " in line and PASSWORD not in line for line in lines), lines
        assert len(lines) == 1 or "\x00" in url  # a NUL is its own problem, reported as well
        return
    assert PASSWORD not in target.shown
    target.request.decode("ascii")  # the request line and headers are plain ASCII
    assert problems(tmp_path, http_probe(url)) == []


def test_probe_host_key_is_checked(tmp_path: Path) -> None:
    for host in ("", "a b", "::1:", "[::1", "h\nx", "\u00e9" * 70):
        body = ('[resources.db]\ncommand = ["true"]\n'
                f'health = {{ probe = "tcp", port = 5, host = {toml_string(host)} }}\n')
        one_problem(tmp_path, body, "resources.db.health.host")
    ok = '[resources.db]\ncommand = ["true"]\nhealth = { probe = "http", port = 5, host = "::1" }\n'
    assert problems(tmp_path, ok) == []
    project = config.load([tmp_path / "resources.toml"], {})
    health = project.resources["db"].health
    assert health is not None and health.url == "http://[::1]:5/"


# ------------------------------------------------------------------ ports: ASCII digits, 1-65535, IPv6 hosts

BAD_PORTS = {
    "superscript digits": ("\u2075\u2074\u2073\u2073", "expected a port like"),
    "superscript in a mapping": ("127.0.0.1:\u2075\u2074\u2073\u2073:5432", "expected a port like"),
    "arabic-indic digits": ("\u0665\u0664\u0663\u0663", "expected a port like"),
    "5000-digit string": ("9" * 5000, "expected a port like"),
    "5000-digit mapping": ("127.0.0.1:" + "9" * 5000 + ":1", "expected a port like"),
    "host is a name": ("localhost:5433:5432", "not an IP address; Docker binds an IP address"),
    "host is garbage": ("x y:5433:5432", "not an IP address"),
    "broken IPv6 bracket": ("[::1:5433:5432", "expected a port like"),
    "IPv6 without brackets": ("::1:5433:5432", "goes in brackets"),
    "not an address in brackets": ("[zz]:5433:5432", "not an IP address"),
    "IPv4 in brackets": ("[127.0.0.1]:5433:5432", "without brackets"),
    "bracket without port": ("[::1]", "expected a port like"),
    "port 0": ("0", "out of range"),
    "port 70000 in mapping": ("127.0.0.1:70000:1", "out of range"),
    "negative": ("-1", "expected a port like"),
    "too many parts": ("1:2:3:4", "expected a port like"),
    "empty": ("", "expected a port like"),
    "spaces": (" 5433 ", "expected a port like"),
    "newline": ("5433\n", "expected a port like"),
    "protocol sctp": ("5433/sctp", "protocol must be tcp or udp"),
    "empty protocol part": ("5433:5432/", "protocol must be tcp or udp, got ''"),
}


@pytest.mark.parametrize(("port", "message"), BAD_PORTS.values(), ids=BAD_PORTS.keys())
def test_bad_port_string_is_one_line(tmp_path: Path, port: str, message: str) -> None:
    body = f'[resources.db]\nruntime = "docker"\nimage = "x"\nports = [{toml_string(port)}]\n'
    line = one_problem(tmp_path, body, "resources.db.ports.0")
    assert message in line


def test_bad_port_numbers_are_one_line(tmp_path: Path) -> None:
    for number in ("0", "-1", "65536", "9" * 400):
        one_problem(tmp_path, f'[resources.db]\ncommand = ["true"]\nports = [{number}]\n', "resources.db.ports.0")
        one_problem(tmp_path, f'[resources.db]\ncommand = ["true"]\nhealth = {{ probe = "tcp", port = {number} }}\n',
                    "resources.db.health.port")


@pytest.mark.parametrize(("text", "host_ip", "host_port", "container_port"), [
    ("[::1]:5433:5432", "::1", 5433, 5432),
    ("[::]:5433:5432", "::", 5433, 5432),
    ("[::1]:5433", "::1", 5433, 5433),
    ("[0:0:0:0:0:0:0:1]:6000:6001/udp", "::1", 6000, 6001),
    ("0.0.0.0:80:8080", "0.0.0.0", 80, 8080),
    (":5433:5432", "127.0.0.1", 5433, 5432),
])
def test_ipv6_and_other_host_ports_parse(tmp_path: Path, text: str, host_ip: str, host_port: int,
                                         container_port: int) -> None:
    body = (f'[resources.db]\nruntime = "docker"\nimage = "x"\nports = [{toml_string(text)}]\n'
            'health = { probe = "postgres" }\n')
    assert problems(tmp_path, body) == []
    db = config.load([tmp_path / "resources.toml"], {}).resources["db"]
    port = db.ports[0]
    assert (port.host_ip, port.host_port, port.container_port) == (host_ip, host_port, container_port)
    assert db.health is not None and db.health.port == host_port
    # the probe knocks where the port is published: [::1] only is not 127.0.0.1
    assert db.health.host == {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host_ip, host_ip)


def test_process_port_check_handles_ipv6_host_ports() -> None:
    """The process runtime's free-port check binds the v6 address (in use is named, free passes)."""
    import socket

    from orchestrator.errors import StartFailed
    from orchestrator.runtimes.process import check_ports_free

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    port = free_port()
    spec = parse_port(f"[::1]:{port}:{port}")
    check_ports_free((spec,))  # free: no error
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", port))
        taken.listen()
        with pytest.raises(StartFailed, match=f"port {port} is already in use"):
            check_ports_free((spec,))


# ------------------------------------------------------------------ durations, sizes, counts (#17, #18)

@pytest.mark.parametrize(("raw", "seconds"), [
    ("1m30s", 90.0), ("1h2m3.5s", 3723.5), ("250ms", 0.25), ("1.5h", 5400.0), ("2h45m", 9900.0),
    ("500us", 0.0005), ("500\u00b5s", 0.0005), ("100ns", 1e-7), ("1m 30s", 90.0), (" 2s ", 2.0),
    (".5s", 0.5), ("3.", 3.0), ("0", 0.0), (31536000, 31536000.0),
])
def test_compound_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


BAD_DURATIONS = {
    "400-digit integer": 10 ** 400, "400-digit negative": -(10 ** 400), "400-digit string": "9" * 400,
    "400-digit string with unit": "9" * 400 + "s", "1e308 float": 1e308, "inf": float("inf"),
    "nan": float("nan"), "over a year": "8761h", "garbage": "fast", "unit only": "s", "number after unit": "1s1",
    "two dots": "1.2.3s", "exponent": "1e5s", "days (not Go)": "1d", "superscript": "\u2075s",
    "arabic-indic": "\u0665s", "negative": "-1s", "minus inside": "1m-30s", "empty": "", "blank": "  ",
    "newline inside": "1m\n30s", "tab inside": "1m\t30s", "missing unit in the middle": "1m30",
    "bool": True, "list": [1],
}


@pytest.mark.parametrize("raw", BAD_DURATIONS.values(), ids=BAD_DURATIONS.keys())
def test_bad_durations_are_one_line(tmp_path: Path, raw: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)
    if isinstance(raw, float) and raw != raw:
        return  # TOML has nan, but tomli_w writes it as `nan`, covered by the call above
    body = tomli_w.dumps({"resources": {"a": {"command": ["true"], "start_timeout": raw}}})
    line = one_problem(tmp_path, body, "resources.a.start_timeout")
    assert len(line) < 400  # the value is quoted short, not 400 digits


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(alphabet="0123456789.hmsunµ \u2075-+e", max_size=14),
                 st.integers(-10 ** 500, 10 ** 500), st.floats()))
def test_fuzz_durations(raw: object) -> None:
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        assert str(exc).isprintable() and len(str(exc)) < 300
        return
    assert 0 <= seconds <= MAX_DURATION


def test_huge_counts_and_sizes_are_one_line(tmp_path: Path) -> None:
    huge = "9" * 400
    for key in ("restart_burst", "model_concurrency"):
        one_problem(tmp_path, f'[resources.a]\ncommand = ["true"]\n{key} = {huge}\n', f"resources.a.{key}")
    one_problem(tmp_path, f'[resources.a]\ncommand = ["true"]\nhealth = {{ probe = "log", pattern = "x", '
                          f'failure_threshold = {huge} }}\n', "resources.a.health.failure_threshold")
    for size in (huge, f'"{huge}g"', '"1e9g"', '"0"', '"0.1"', '"\u2075m"'):
        one_problem(tmp_path, f'[resources.a]\nruntime = "docker"\nimage = "x"\nmemory_limit = {size}\n',
                    "resources.a.memory_limit")
    one_problem(tmp_path, f'[resources.a]\ncommand = ["true"]\nhealth = {{ probe = "http", port = 80, '
                          f'expect_status = {huge} }}\n', "resources.a.health.expect_status")


# ------------------------------------------------------------------ TOML shapes (#17)

def nested(kind: str, depth: int) -> str:
    if kind == "arrays":
        return "[resources.a]\ncommand = [\"true\"]\nx = " + "[" * depth + "]" * depth + "\n"
    if kind == "inline tables":
        return "[resources.a]\ncommand = [\"true\"]\nx = " + "{ y = " * depth + "1" + " }" * depth + "\n"
    if kind == "mixed":
        return "[resources.a]\ncommand = [\"true\"]\nx = " + "[{ y = " * depth + "1" + " }]" * depth + "\n"
    if kind == "headers":
        return "[" + ".".join(["t"] * depth) + "]\nx = 1\n"
    if kind == "dotted keys":
        return "[resources.a]\ncommand = [\"true\"]\n" + ".".join(["k"] * depth) + " = 1\n"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["arrays", "inline tables", "mixed", "headers", "dotted keys"])
@pytest.mark.parametrize("depth", [33, 100, 300, 1000, 5000])
def test_deep_nesting_is_one_line(tmp_path: Path, kind: str, depth: int) -> None:
    lines = problems(tmp_path, nested(kind, depth))
    assert len(lines) == 1, lines
    assert "nested" in lines[0]


def test_huge_integer_in_toml_is_one_line_with_its_place(tmp_path: Path) -> None:
    lines = problems(tmp_path, '[resources.a]\ncommand = ["true"]\nports = [' + "9" * 5000 + "]\n")
    assert len(lines) == 1 and ":3:10: invalid TOML: a number of 5000 digits" in lines[0]


def test_toml_strings_with_control_characters_stay_one_line(tmp_path: Path) -> None:
    body = tomli_w.dumps({"resources": {"a\nb": {"command": ["true"]}, "c": {"command": ["true"],
                                                                              "bogus\r\nkey": 1,
                                                                              "depends_on": ["x\ny"]}}})
    lines = problems(tmp_path, body)
    assert len(lines) == 3 and all("\n" not in line for line in lines)


# ------------------------------------------------------------------ names (#17)

def test_resource_name_ending_in_a_newline_is_refused(tmp_path: Path) -> None:
    for name in ("web\n", "web\r\n", "web\n\n", "\nweb", "w" * 64, "we b", "WEB", "-web", "w\u00e9b", "\u0665"):
        body = tomli_w.dumps({"resources": {name: {"command": ["true"]}}})
        lines = problems(tmp_path, body)
        assert len(lines) == 1 and "a resource name is lowercase letters" in lines[0], (name, lines)


@pytest.mark.parametrize("name", ["p" * 65, "p" * 300, "p" * 5000, "my project", "proj\n", "../x", ".hidden",
                                  "p/q", "\u00e9t\u00e9", ""])
def test_project_name_is_checked_before_a_path_is_made_of_it(tmp_path: Path, name: str) -> None:
    body = f'[project]\nname = {toml_string(name)}\n[resources.a]\ncommand = ["true"]\n'
    line = one_problem(tmp_path, body, "project.name")
    assert len(line) < 300


@pytest.mark.e2e
def test_project_name_of_300_characters_does_not_reach_the_file_system(tmp_path: Path) -> None:
    path = tmp_path / "resources.toml"
    path.write_text(f'[project]\nname = "{"p" * 300}"\n[resources.a]\ncommand = ["true"]\n')
    for command in ("validate", "up"):
        done = subprocess.run([sys.executable, "-m", "orchestrator", command, "-f", str(path)],
                              capture_output=True, text=True, env={**os.environ, "XDG_STATE_HOME": str(tmp_path)})
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.strip().endswith("project.name: at most 64 characters, got 300"), done.stderr


def test_directory_name_unfit_for_a_project_says_where_the_name_came_from(tmp_path: Path) -> None:
    folder = tmp_path / "my stack"
    folder.mkdir()
    line = one_problem(folder, '[resources.a]\ncommand = ["true"]\n', "project.name")
    assert "taken from the directory's name: set [project] name" in line


def test_state_dir_too_long_is_refused(tmp_path: Path) -> None:
    for state in ("x" * 300, "/".join(["d" * 200] * 25)):
        one_problem(tmp_path, f'[project]\nname = "p"\nstate_dir = "{state}"\n[resources.a]\ncommand = ["true"]\n',
                    "project.state_dir")


def test_tilde_of_an_unknown_user_is_not_a_traceback(tmp_path: Path) -> None:
    body = ('[project]\nname = "p"\nstate_dir = "~nosuchuser-vrooli/state"\n'
            '[resources.a]\ncommand = ["true"]\ncwd = "~nosuchuser-vrooli"\n'
            '[resources.b]\nruntime = "docker"\nimage = "x"\nvolumes = ["~nosuchuser-vrooli/x:/data"]\n')
    assert problems(tmp_path, body) == []


# ------------------------------------------------------------------ interpolation (#18)

ENV = {"SET": "value", "EMPTY": "", "OTHER": "other", "PATH": os.defpath}
EXPANSIONS = {
    "${SET}": "value", "$SET": "value", "$SET.x": "value.x", "a${SET}b": "avalueb",
    "${UNSET-default}": "default", "${EMPTY-default}": "", "${SET-default}": "value",
    "${UNSET:-default}": "default", "${EMPTY:-default}": "default", "${SET:-default}": "value",
    "${SET:+alt}": "alt", "${EMPTY:+alt}": "", "${UNSET:+alt}": "",
    "${SET+alt}": "alt", "${EMPTY+alt}": "alt", "${UNSET+alt}": "",
    "${SET?never shown}": "value", "${SET:?never shown}": "value", "${EMPTY?set but empty is fine}": "",
    "$$": "$", "$${SET}": "${SET}", "$$SET": "$SET", "cost: 5$": "cost: 5$", "^ready$": "^ready$",
    "$1": "$1", "$ x": "$ x", "${UNSET:-${OTHER}}": "other", "${UNSET:-${UNSET2:-deep}}": "deep",
    "${UNSET:-a}b}": "ab}", "${UNSET:-$$}": "$", "${UNSET-}": "", "${SET:-${UNSET}}": "value",
}


@pytest.mark.parametrize(("text", "value"), EXPANSIONS.items(), ids=EXPANSIONS.keys())
def test_interpolation_expands_like_compose(tmp_path: Path, text: str, value: str) -> None:
    body = f'[resources.a]\ncommand = ["true"]\nenv = {{ X = {toml_string(text)} }}\n'
    assert problems(tmp_path, body, ENV) == []
    assert config.load([tmp_path / "resources.toml"], ENV).resources["a"].env_dict["X"] == value


FAILED_EXPANSIONS = {
    "${UNSET}": "${UNSET} is not set; set it in the environment or .env, or write ${UNSET:-default}",
    "$UNSET": "${UNSET} is not set",
    "${UNSET?the database password}": "${UNSET} is not set: the database password",
    "${UNSET:?the database password}": "${UNSET} is not set: the database password",
    "${EMPTY:?must not be empty}": "${EMPTY} is empty: must not be empty",
    "${UNSET?}": "${UNSET} is not set",
    "${UNSET:?needs ${OTHER}}": "${UNSET} is not set: needs other",
    "${UNSET:?two\nlines}": "${UNSET} is not set: two lines",
    "${": "unterminated ${",
    "${SET": "unterminated ${",
    "${UNSET:-${OTHER}": "unterminated ${",
    "${}": "invalid variable name in ${}",
    "${1X}": "invalid variable name in ${1X}",
    "${SET/a/b}": "unsupported ${SET/a/b}",
    "${SET:0:2}": "unsupported ${SET:0:2}",
    "${SET^^}": "unsupported ${SET^^}",
    "${UNSET:-${UNSET2}}": "${UNSET2} is not set",
    "${SET:-${}}": "invalid variable name in ${}",  # read whole, used or not: what is set does not hide it
    "deep": "nested more than 10 deep",
}


@pytest.mark.parametrize(("text", "message"), FAILED_EXPANSIONS.items(), ids=FAILED_EXPANSIONS.keys())
def test_interpolation_failure_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    if text == "deep":
        text = "${U:-" * 50 + "x" + "}" * 50
    body = f'[resources.a]\ncommand = ["true"]\nenv = {{ X = {toml_string(text)} }}\n'
    line = one_problem(tmp_path, body, "resources.a.env.X", environ=ENV)
    assert message in line


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([*list("${}:-?+$ ab_1\n"), "SET", "EMPTY", "UNSET", "${", "$$"]),
                max_size=30).map("".join))
def test_fuzz_interpolation(text: str) -> None:
    try:
        value = variables.interpolate(text, ENV)
    except InterpolationError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(value, str)


def test_dollar_in_a_log_pattern_stays(tmp_path: Path) -> None:
    body = '[resources.a]\ncommand = ["true"]\nhealth = { probe = "log", pattern = "ready$" }\n'
    assert problems(tmp_path, body) == []


# ------------------------------------------------------------------ env files (#18)

ENV_FILE = """\
# a comment line

export EXPORTED=1
SPACED = two words # a comment
HASH=value#not-a-comment
TAB_COMMENT=tabbed\t# comment
SINGLE='literal ${SET} \\t \\' $$ # not a comment'
DOUBLE="dq ${SET} \\n \\t \\" \\\\ end" # comment
DOUBLE_DOLLAR="cost \\$5 and $$6"
EMPTY=
EMPTY_QUOTED=""
FROM_ABOVE=${EXPORTED}-${SPACED}
BARE=$SET
MULTI="first
second"
UNQUOTED_BACKSLASH=a\\tb
INHERITED
CRLF=yes\r
"""


def test_env_file_follows_compose_rules(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text(ENV_FILE)
    body = '[resources.a]\ncommand = ["true"]\nenv_file = "app.env"\nenv = { OVERRIDE = "x" }\n'
    assert problems(tmp_path, body, {**ENV, "INHERITED": "from-env"}) == []
    env = config.load([tmp_path / "resources.toml"], {**ENV, "INHERITED": "from-env"}).resources["a"].env_dict
    assert env == {
        "EXPORTED": "1", "SPACED": "two words", "HASH": "value#not-a-comment", "TAB_COMMENT": "tabbed",
        "SINGLE": "literal ${SET} \\t ' $$ # not a comment", "DOUBLE": 'dq value \n \t " \\ end',
        "DOUBLE_DOLLAR": "cost $5 and $6", "EMPTY": "", "EMPTY_QUOTED": "", "FROM_ABOVE": "1-two words",
        "BARE": "value", "MULTI": "first\nsecond", "UNQUOTED_BACKSLASH": "a\\tb", "INHERITED": "from-env",
        "CRLF": "yes", "OVERRIDE": "x",
    }


def test_dotenv_beside_the_file_uses_the_same_format(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("export PORT=5433 # the port\nNAME='a b'\n")
    body = '[resources.a]\ncommand = ["true", "${PORT}", "${NAME}"]\n'
    assert problems(tmp_path, body, {}) == []
    project = config.load([tmp_path / "resources.toml"], {})
    assert project.resources["a"].command == ("true", "5433", "a b")


BAD_ENV_FILES = {
    "no equals, bad name": ("1A=x", "line 1: expected KEY=VALUE"),
    "space in name": ("A B=x", "line 1: expected KEY=VALUE"),
    "empty name": ("=x", "line 1: expected KEY=VALUE"),
    "unterminated double": ('A="x', 'line 1: unterminated "quoted" value'),
    "unterminated single": ("A='x", "line 1: unterminated 'quoted' value"),
    "text after quote": ("A='x' y", "line 1: unexpected text after the closing quote"),
    "unset variable": ("\nA=${NOPE}", "line 2: ${NOPE} is not set"),
    "required message": ("A=${NOPE:?set the password}", "line 1: ${NOPE} is not set: set the password"),
    "NUL byte": ("A=x\x00y", "line 1: contains a NUL byte"),
    "unterminated interpolation": ('A="${X"', "line 1: unterminated ${"),
}


@pytest.mark.parametrize(("text", "message"), BAD_ENV_FILES.values(), ids=BAD_ENV_FILES.keys())
def test_bad_env_file_is_one_line_with_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "app.env").write_text(text)
    body = '[resources.a]\ncommand = ["true"]\nenv_file = "app.env"\n'
    line = one_problem(tmp_path, body, "resources.a.env_file", environ={})
    assert f"{tmp_path / 'app.env'}: {message}" in line


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*list("AB=#'\" \\\n\tx$"), "export ", "${A}", "\r\n"]), max_size=40).map("".join))
def test_fuzz_env_files(text: str) -> None:
    try:
        values = variables.parse_env_text(text, ENV)
    except ValueError as exc:
        assert str(exc).startswith("line ") and "\n" not in str(exc)
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())


# ------------------------------------------------------------------ what a start would refuse (#16)

NUL_CASES = {
    "env value": ('env = { A = "x\\u0000y" }', "resources.a.env.A"),
    "argv": ('command = ["true", "a\\u0000b"]', "resources.a.command.1"),
    "program": ('command = ["tr\\u0000ue"]', "resources.a.command.0"),
    "cwd": ('cwd = "/tmp\\u0000x"', "resources.a.cwd"),
    "user": ('user = "no\\u0000body"', "resources.a.user"),
    "env_file": ('env_file = "a\\u0000.env"', "resources.a.env_file"),
    "probe url": ('health = { probe = "http", url = "http://127.0.0.1/\\u0000" }', "resources.a.health.url"),
    "env name": ('env = { "A\\u0000B" = "x" }', "resources.a.env.A"),
}


@pytest.mark.parametrize(("line", "key"), NUL_CASES.values(), ids=NUL_CASES.keys())
def test_nul_bytes_are_refused(tmp_path: Path, line: str, key: str) -> None:
    lines = problems(tmp_path, f'[resources.a]\ncommand = ["true"]\n{line}\n'.replace(
        'command = ["true"]\ncommand', "command"))
    assert lines and all(key in problem for problem in lines[:1]), lines
    assert any("NUL byte" in problem for problem in lines)


@pytest.mark.parametrize("name", ["A=B", "=", "", "=A"])
def test_env_name_with_equals_or_empty_is_refused(tmp_path: Path, name: str) -> None:
    body = f'[resources.a]\ncommand = ["true"]\nenv = {{ {toml_string(name)} = "x" }}\n'
    line = one_problem(tmp_path, body, "resources.a.env")
    assert "must be non-empty and without '='" in line


@pytest.fixture
def script(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "bin" / "serve.sh"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    yield path


HOST_CASES = {
    "cwd missing": ('command = ["true"]\ncwd = "nowhere"', "resources.a.cwd: does not exist"),
    "cwd is a file": ('command = ["true"]\ncwd = "resources.toml"', "resources.a.cwd: is not a directory"),
    "command not on PATH": ('command = ["vrooli-no-such-program"]',
                            "resources.a.command: 'vrooli-no-such-program' is not found on PATH"),
    "relative command missing": ('command = ["./missing.sh"]', "resources.a.command: not an executable file"),
    "relative command not executable": ('command = ["./resources.toml"]',
                                        "resources.a.command: not an executable file"),
    "relative to cwd, not the project": ('command = ["./serve.sh"]', "resources.a.command: not an executable file"),
    "a directory as command": ('command = ["./bin"]', "resources.a.command: not an executable file"),
    "PATH from env": ('command = ["serve.sh"]\nenv = { PATH = "/nonexistent" }',
                      "resources.a.command: 'serve.sh' is not found on PATH (/nonexistent)"),
    "unknown user": ('command = ["true"]\nuser = "vrooli-no-such-user"',
                     "resources.a.user: no such user on this machine: 'vrooli-no-such-user'"),
    "empty user": ('command = ["true"]\nuser = ""', "resources.a.user: expected a user name, got ''"),
    "user with newline": ('command = ["true"]\nuser = "nobody\\n"', "resources.a.user: expected a user name"),
}


@pytest.mark.parametrize(("lines", "message"), HOST_CASES.values(), ids=HOST_CASES.keys())
def test_validate_refuses_what_a_start_would_refuse(tmp_path: Path, script: Path, lines: str, message: str) -> None:
    line = one_problem(tmp_path, f"[resources.a]\n{lines}\n", "resources.a", host_checks=True,
                       environ={"PATH": f"{os.defpath}"})
    assert message in line


@pytest.mark.parametrize("lines", [
    'command = ["./serve.sh"]\ncwd = "bin"',
    'command = ["bin/serve.sh"]',
    'command = ["serve.sh"]\nenv = { PATH = "BIN" }',
    'command = ["true"]\nuser = "nobody"',
    'command = ["sh", "-c", "exit 0"]\ncwd = "bin"',
    'command = ["vrooli-no-such-program"]\nenabled = false',
    'runtime = "docker"\nimage = "x"\ncommand = ["vrooli-no-such-program"]\nuser = "no-such-user"\ncwd = "/app"',
])
def test_validate_accepts_what_a_start_would_accept(tmp_path: Path, script: Path, lines: str) -> None:
    body = f"[resources.a]\n{lines.replace('BIN', str(script.parent))}\n"
    assert problems(tmp_path, body, {"PATH": os.defpath}, host_checks=True) == []


@pytest.mark.e2e
def test_host_checks_are_for_validate_only(tmp_path: Path) -> None:
    """`down` and `status` must still work for a stack whose program was since uninstalled."""
    body = '[resources.a]\ncommand = ["vrooli-no-such-program"]\ncwd = "gone"\n'
    assert problems(tmp_path, body) == []
    path = tmp_path / "resources.toml"
    done = subprocess.run([sys.executable, "-m", "orchestrator", "validate", "-f", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 2, done.stderr
    assert "Traceback" not in done.stderr


def test_docker_cwd_must_be_absolute(tmp_path: Path) -> None:
    line = one_problem(tmp_path, '[resources.a]\nruntime = "docker"\nimage = "x"\ncwd = "app"\n', "resources.a.cwd")
    assert "must be an absolute path" in line
    assert problems(tmp_path, '[resources.a]\nruntime = "docker"\nimage = "x"\ncwd = "/app"\n') == []
    project = config.load([tmp_path / "resources.toml"], {})
    assert project.resources["a"].cwd == "/app"  # the container's path, not resolved on the host


# ------------------------------------------------------------------ whole documents (fuzz)

shapes = st.recursive(
    st.one_of(st.booleans(), st.integers(-(10 ** 30), 10 ** 30), st.text(max_size=10),
              st.sampled_from(["${X}", "$$", "${X:?m}", "[::1]:1:2", "localhost:1:2", "\u2075", "1m30s", "\x00",
                               "http://u:p/q@h/", "http://[::1", "web\n"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10)
resource_keys = st.sampled_from(sorted(RESOURCE_KEYS))
documents = st.fixed_dictionaries({
    "project": st.dictionaries(st.sampled_from(sorted(PROJECT_KEYS)), shapes, max_size=2),
    "resources": st.dictionaries(st.text(max_size=8), st.dictionaries(resource_keys, shapes, max_size=5), max_size=3),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents)
def test_fuzz_whole_documents(tmp_path: Path, doc: dict[str, object]) -> None:
    problems(tmp_path, tomli_w.dumps(doc), {"PATH": os.defpath}, host_checks=True)
