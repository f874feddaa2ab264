"""Threat: a web page the operator visits reaches the MCP HTTP server through DNS rebinding (its own name,
re-pointed at the server's address), so the request carries a Host header the server never named.

The transport's allow-list (the SDK's TransportSecuritySettings) accepts the address bound and loopback
on our port, the public URL's host, and the names given with --allowed-host (FLEXUS_ALLOWED_HOSTS); behind
a load balancer those are how a real name gets in. Anything else is 421, whatever the token."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from flexus_ops.core.errors import ConfigurationError
from flexus_ops.mcp_http import http_app
from flexus_ops.registry.registry import Registry
from tests.gatekit import make_registry
from tests.procs import serve_app
from tests.security.httpkit import MODERN_HEADERS, OPERATOR_SECRET, rpc_body, team

INITIALIZE = rpc_body(
    "initialize",
    {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "page", "version": "1"}},
)


@contextmanager
def served(registry: Registry, **options: Any) -> Iterator[str]:
    with serve_app(http_app(registry, "127.0.0.1", 0, **options), lifespan="on") as url:
        yield f"{url}/mcp"


async def status_with_host(url: str, host: str) -> int:
    headers = MODERN_HEADERS | {"Host": host, "Authorization": f"Bearer {OPERATOR_SECRET}"}
    async with httpx2.AsyncClient(timeout=30) as raw:
        return (await raw.post(url, headers=headers, json=INITIALIZE)).status_code


@pytest.fixture
async def registry(tmp_path: Path) -> Any:
    reg = make_registry(tmp_path, team())
    yield reg
    await reg.aclose()


async def test_a_name_the_server_was_not_given_is_refused(registry: Registry) -> None:
    with served(registry) as url:
        assert await status_with_host(url, "127.0.0.1:0") == 200  # the control: the address bound
        assert await status_with_host(url, "flexus.example.com") == 421
        assert await status_with_host(url, "attacker.example.net:0") == 421


async def test_an_allowed_host_is_accepted_on_any_port_and_nothing_else_is(registry: Registry) -> None:
    with served(registry, allowed_hosts=["flexus.example.com"]) as url:
        assert await status_with_host(url, "flexus.example.com") == 200
        assert await status_with_host(url, "flexus.example.com:8443") == 200
        for bogus in ("attacker.example.net", "flexus.example.com.attacker.net", "xflexus.example.com", "evil"):
            assert await status_with_host(url, bogus) == 421, bogus


async def test_the_public_urls_host_is_accepted(registry: Registry) -> None:
    with served(registry, public_url="https://flexus.example.com") as url:
        assert await status_with_host(url, "flexus.example.com") == 200
        assert await status_with_host(url, "attacker.example.net") == 421


async def test_allowed_hosts_come_from_the_environment_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEXUS_ALLOWED_HOSTS", "flexus.internal, flexus.example.com")
    reg = make_registry(tmp_path, team())
    try:
        with served(reg) as url:
            assert await status_with_host(url, "flexus.internal") == 200
            assert await status_with_host(url, "flexus.example.com:443") == 200
            assert await status_with_host(url, "attacker.example.net") == 421
    finally:
        await reg.aclose()


@pytest.mark.parametrize("name", ["*", "*.example.com", "https://flexus.example.com", "flexus.example.com/mcp", ""])
def test_a_pattern_or_url_is_not_a_host_name(registry: Registry, name: str) -> None:
    with pytest.raises(ConfigurationError, match="--allowed-host"):
        http_app(registry, "127.0.0.1", 0, allowed_hosts=[name])


async def test_a_trailing_slash_never_redirects_to_the_hosts_name(registry: Registry) -> None:
    """Starlette answers /mcp/ with a redirect built from the Host header, before the transport's check:
    an open redirect to any name. No path is redirected."""
    with served(registry) as url:
        base = url.removesuffix("/mcp")
        async with httpx2.AsyncClient(timeout=30, follow_redirects=False) as raw:
            for path in ("/mcp/", "/healthz/", "/readyz/", "/metrics/"):
                headers = {"Host": "evil.example", "Authorization": f"Bearer {OPERATOR_SECRET}"}
                answered = await raw.get(base + path, headers=headers)
                assert not 300 <= answered.status_code < 400, (path, answered.headers.get("location"))
                assert "evil.example" not in answered.headers.get("location", "")


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("https://Flexus.Example.com", "https://flexus.example.com"),
        ("https://flexus.example.com:443/", "https://flexus.example.com"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("https://flexus.example.com:8443", "https://flexus.example.com:8443"),
    ],
)
def test_the_public_url_is_canonical_so_the_advertised_resource_is_the_audience_checked(
    given: str, canonical: str
) -> None:
    """The metadata advertises <public URL>/mcp and a client asks its identity provider for exactly that
    string; a second spelling of the same URL would make every sign-in fail (or pass the wrong check)."""
    from flexus_ops.config import checked_public_url

    assert checked_public_url(given, "--public-url") == canonical


@pytest.mark.parametrize("url", ["https://*.example.com", "https://ex ample.com", "https://flexus.example.com:99999"])
def test_a_public_url_is_one_exact_name(url: str) -> None:
    from flexus_ops.config import checked_public_url

    with pytest.raises(ConfigurationError, match="--public-url"):
        checked_public_url(url, "--public-url")
