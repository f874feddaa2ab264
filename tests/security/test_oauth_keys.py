"""Threat: the verification keys themselves. An attacker sends tokens with made-up key ids to make the
server fetch the issuer's key set over and over; a configuration or a discovery document points the
server at keys over plain http or at another issuer's document; an issuer that hangs stalls every request.

The key set is cached and fetched again on an unknown kid at most once a minute; issuer and JWKS URLs are
https (plain http only on loopback); discovery must name the configured issuer; fetches time out."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from flexus_ops import mcp_oauth
from flexus_ops.config import Settings
from flexus_ops.core.errors import ConfigurationError
from flexus_ops.mcp_oauth import REFRESH_COOLDOWN_SECONDS, InvalidAccessToken, OidcTokenVerifier
from tests.security.oidckit import SUBJECT, Issuer, StoppedClock

AUDIENCE = "https://flexus.example.com/mcp"


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with Issuer().running() as running:
        yield running


def attacker_token(issuer: Issuer, kid: str) -> str:
    return issuer.token(AUDIENCE, key=rsa.generate_private_key(public_exponent=65537, key_size=2048), kid=kid)


async def test_unknown_kids_fetch_the_key_set_at_most_once_a_minute(issuer: Issuer) -> None:
    clock = StoppedClock(1_900_000_000)
    verifier = OidcTokenVerifier(issuer.url, AUDIENCE, clock=clock)
    forged = [attacker_token(issuer, f"made-up-{n}") for n in range(3)]
    for _ in range(10):
        for token in forged:
            with pytest.raises(InvalidAccessToken, match="no key"):
                await verifier.verify(token)
    assert issuer.jwks_requests == 1
    clock.now += REFRESH_COOLDOWN_SECONDS
    with pytest.raises(InvalidAccessToken, match="no key"):
        await verifier.verify(forged[0])
    assert issuer.jwks_requests == 2


async def test_a_rotated_key_is_picked_up_on_its_first_token(issuer: Issuer) -> None:
    """The other side of rate limiting: a genuine new key works as soon as the cooldown allows."""
    clock = StoppedClock(1_900_000_000)
    verifier = OidcTokenVerifier(issuer.url, AUDIENCE, clock=clock)
    assert (await verifier.verify(issuer.token(AUDIENCE, exp=clock.now + 300))).subject == SUBJECT
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer.publish(new_key, "rotated-2", "RS256")
    clock.now += REFRESH_COOLDOWN_SECONDS
    rotated = issuer.token(AUDIENCE, key=new_key, kid="rotated-2", exp=clock.now + 300)
    assert (await verifier.verify(rotated)).subject == SUBJECT
    assert issuer.jwks_requests == 2


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("oauth_issuer", "http://idp.example.com"),
        ("oauth_issuer", "https://idp.example.com?x=1"),
        ("oauth_issuer", "idp.example.com"),
        ("oauth_jwks_url", "http://idp.example.com/jwks"),
    ],
)
def test_issuer_and_jwks_urls_must_be_https_beyond_loopback(tmp_path: Path, variable: str, value: str) -> None:
    values = {"state_dir": tmp_path, "oauth_issuer": "https://idp.example.com", variable: value}
    with pytest.raises(ConfigurationError, match=f"FLEXUS_{variable.upper()}"):
        Settings.load(**values)


def test_oauth_settings_without_an_issuer_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="FLEXUS_OAUTH_AUDIENCE: is set but FLEXUS_OAUTH_ISSUER is not"):
        Settings.load(state_dir=tmp_path, oauth_audience="api://flexus")


async def test_a_discovery_document_pointing_at_plain_http_keys_is_not_followed(
    issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    issuer.jwks_uri = "http://keys.example.com/jwks.json"
    verifier = OidcTokenVerifier(issuer.url, AUDIENCE)
    with caplog.at_level(logging.WARNING, logger="flexus_ops.mcp.oauth"), pytest.raises(InvalidAccessToken):
        await verifier.verify(issuer.token(AUDIENCE))
    assert "must be https" in caplog.text and issuer.jwks_requests == 0


async def test_a_discovery_document_for_another_issuer_is_refused(
    issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    issuer.discovery_issuer = "https://evil.example.com"
    verifier = OidcTokenVerifier(issuer.url, AUDIENCE)
    with caplog.at_level(logging.WARNING, logger="flexus_ops.mcp.oauth"), pytest.raises(InvalidAccessToken):
        await verifier.verify(issuer.token(AUDIENCE))
    assert "names another issuer" in caplog.text and issuer.jwks_requests == 0


async def test_a_configured_jwks_url_is_used_without_discovery(issuer: Issuer) -> None:
    issuer.discovery_issuer = "https://evil.example.com"  # would fail, were discovery asked
    verifier = OidcTokenVerifier(issuer.url, AUDIENCE, jwks_url=f"{issuer.url}/jwks.json")
    assert (await verifier.verify(issuer.token(AUDIENCE))).subject == SUBJECT


async def test_an_issuer_that_never_answers_times_out_and_the_token_is_refused(
    issuer: Issuer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(mcp_oauth, "FETCH_TIMEOUT_SECONDS", 0.5)
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        verifier = OidcTokenVerifier(issuer.url, AUDIENCE, jwks_url=f"http://127.0.0.1:{port}/jwks.json")
        with caplog.at_level(logging.WARNING, logger="flexus_ops.mcp.oauth"), pytest.raises(InvalidAccessToken):
            await verifier.verify(issuer.token(AUDIENCE))
    assert "did not answer: ReadTimeout" in caplog.text


async def test_symmetric_keys_in_the_key_set_are_never_used(issuer: Issuer) -> None:
    """An "oct" key published by mistake would let anyone who can read the JWKS mint tokens."""
    import base64
    import hashlib
    import hmac
    import json

    secret = b"published-by-mistake-0123456789abcdef"
    issuer.published.append(
        {"kty": "oct", "kid": "shared", "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode(), "alg": "HS256"}
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "kid": "shared"}).encode())
    signing_input = f"{header}.{b64(json.dumps(issuer.claims(AUDIENCE)).encode())}"
    token = f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"
    verifier = OidcTokenVerifier(issuer.url, AUDIENCE)
    with pytest.raises(InvalidAccessToken, match="algorithm 'HS256' is not accepted"):
        await verifier.verify(token)
    await verifier.keys.key("flexus-test-1")
    assert await verifier.keys.key("shared") is None
