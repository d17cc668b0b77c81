"""Health URLs: the one parser, used by `validate` (config) and by the HTTP probe.

Its own module, free of the event loop and TLS, so that loading a resources.toml costs no
imports of anyio and ssl (~16 ms for every CLI command); `probes.http` re-exports it.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from orchestrator.errors import UrlError

URL_SAFE = "/?&=%:@!$'()*+,;~-._"
MAX_URL = 8192
_HOST_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?", re.ASCII)


@dataclass(frozen=True, slots=True)
class Target:
    """What a health URL asks for, parsed once."""

    tls: bool
    host: str
    port: int
    request: bytes
    shown: str  # the URL as logs and status show it: without a password

    @classmethod
    def parse(cls, url: str) -> Target:
        """The one parser of health URLs: `validate` runs it at load time, the probe at start.

        Stricter than `urlsplit`, which happily splits a password holding '/' at that slash
        and then fails (or leaks the rest of the password in its error) when asked for the port.
        """
        scheme, authority, path = _split(url)
        userinfo, at, hostport = authority.rpartition("@")
        host, port_text = _split_host_port(hostport)
        tls = scheme == "https"
        port = int(port_text) if port_text else (443 if tls else 80)
        # As a browser would send it: non-ASCII percent-encoded, existing escapes kept.
        path, _, _fragment = path.partition("#")
        target = quote(path if path.startswith("/") else "/" + path, safe=URL_SAFE)
        host_header = f"[{host}]" if ":" in host else _ascii_host(host)
        if port_text:
            host_header += f":{port_text}"
        headers = [f"GET {target} HTTP/1.1", f"Host: {host_header}", "User-Agent: vrooli-probe",
                   "Accept: */*"]
        if at:
            user, _, password = userinfo.partition(":")
            credentials = f"{unquote(user)}:{unquote(password)}"
            headers.append("Authorization: Basic " + base64.b64encode(credentials.encode()).decode())
        shown = f"{scheme}://{hostport}{path}"
        return cls(tls, host, port, ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1"), shown)


def _split(url: str) -> tuple[str, str, str]:
    """scheme, authority (userinfo@host:port), and the rest (path, query, fragment)."""
    if len(url) > MAX_URL:
        raise UrlError(f"longer than {MAX_URL} characters")
    if any(c == " " or not c.isprintable() for c in url):
        raise UrlError("contains a space or a control character (CR, LF, tab...); percent-encode it, "
                       "e.g. %20 for a space")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise UrlError("expected an http:// or https:// URL")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, path = rest[:end], rest[end:]
    if "@" in path:
        # Either a password holding '/', '?' or '#' (which ends the host part early), or an
        # '@' in the path: both ambiguous, and guessing wrong would put a password in a log.
        raise UrlError("'@' after the host: percent-encode '/', '?' and '#' in a user name or "
                       "password (%2F, %3F, %23) and '@' in the path (%40)")
    return scheme.lower(), authority, path


def _split_host_port(hostport: str) -> tuple[str, str]:
    if hostport.startswith("["):
        inside, bracket, port_part = hostport[1:].partition("]")
        if not bracket:
            raise UrlError("'[' without its ']': an IPv6 address is written like http://[::1]:8080/")
        if port_part and not port_part.startswith(":"):
            raise UrlError("after ']' only ':port' may follow, like http://[::1]:8080/")
        host, port_text = unquote(inside), port_part[1:]  # a zone is written %25: fe80::1%25eth0
        import ipaddress  # ~2 ms: only for the URLs that need it

        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UrlError("not a valid IPv6 address between the brackets") from None
    else:
        host, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
        if ":" in host:
            raise UrlError("an IPv6 address in a URL is written in brackets, like http://[::1]:8080/")
        check_host(host)
    if port_text and not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
                          and 1 <= int(port_text) <= 65535):
        raise UrlError("the port must be a number from 1 to 65535")
    return host, port_text


def check_host(host: str) -> None:
    """A host name or IP address a probe can connect to (IPv6 without brackets)."""
    if not host:
        raise UrlError("no host name")
    if ":" in host:
        import ipaddress

        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UrlError("not a valid IPv6 address") from None
        return
    name = _ascii_host(host)
    if len(name) > 253 or not _HOST_RE.fullmatch(name):
        raise UrlError("not a valid host name or IP address")


def _ascii_host(host: str) -> str:
    if host.isascii():  # the codec costs ~1 ms to import, for nothing on plain names
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host
