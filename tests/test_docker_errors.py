"""Docker SDK exceptions are sorted by type in one table (runtimes/docker.py), not by
matching class or module names: what a cut wait, a vanished container and a failed call
mean is decided in one place, and a subclass means what its parent means."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

docker = pytest.importorskip("docker")

from orchestrator.runtimes import docker as runtime  # noqa: E402


def test_real_sdk_errors_are_sorted_by_type() -> None:
    import docker.errors
    import requests.exceptions
    import urllib3
    import urllib3.exceptions

    unreachable = docker.DockerClient(base_url="unix:///nonexistent/vrooli-test.sock", version="1.41",
                                       timeout=2)
    with pytest.raises(Exception) as caught:
        unreachable.ping()
    assert runtime.sdk_error_kind(caught.value) == runtime.SDK_WAIT_AGAIN  # requests' ConnectionError
    assert runtime.sdk_error_kind(docker.errors.NotFound("gone")) == runtime.SDK_GONE
    # A subclass means what its parent means: name matching missed ImageNotFound.
    assert runtime.sdk_error_kind(docker.errors.ImageNotFound("gone")) == runtime.SDK_GONE
    assert runtime.sdk_error_kind(docker.errors.APIError("boom")) == runtime.SDK_FAILED
    assert runtime.sdk_error_kind(requests.exceptions.ReadTimeout()) == runtime.SDK_WAIT_AGAIN
    pool = urllib3.HTTPConnectionPool("127.0.0.1")  # the one a read timed out on; never connects
    assert runtime.sdk_error_kind(urllib3.exceptions.ReadTimeoutError(pool, "/", "slow")) == runtime.SDK_WAIT_AGAIN
    # A connection that cannot be made at all is a failure, not a wait to repeat forever.
    assert runtime.sdk_error_kind(requests.exceptions.ConnectTimeout()) == runtime.SDK_FAILED
    assert runtime.sdk_error_kind(requests.exceptions.SSLError()) == runtime.SDK_FAILED
    assert runtime.sdk_error_kind(ConnectionRefusedError()) == runtime.SDK_FAILED
    assert runtime.sdk_error_kind(ConnectionError()) == runtime.SDK_WAIT_AGAIN
    assert runtime.sdk_error_kind(docker.errors.StreamParseError("bad")) == runtime.SDK_FAILED
    for ours in (ValueError("x"), KeyError("x"), TimeoutError(), RuntimeError("x")):
        assert runtime.sdk_error_kind(ours) is None


def test_no_exception_is_recognised_by_its_name() -> None:
    """The table is the only place: no `type(exc).__name__ ==` or `__module__` matching."""
    source = Path(runtime.__file__).read_text(encoding="utf-8")
    for compare in ast.walk(ast.parse(source)):
        if not isinstance(compare, ast.Compare):
            continue
        for node in ast.walk(compare):
            if isinstance(node, ast.Attribute) and node.attr in ("__name__", "__module__"):
                raise AssertionError(f"line {node.lineno} matches an exception by its name")
