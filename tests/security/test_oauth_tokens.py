"""Threat: someone presents an OAuth access token that is not a valid token of the configured issuer for
this server (expired, for another audience, from another issuer, forged, unsigned, HMAC-signed with the
public key, for a person the policy does not know), to act over MCP HTTP.

Each is refused with 401 before any tool runs, and the log says why (never the token)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from flexus_ops.gate.policy import Person, Policy, Role, oidc_principal, token_principal
from flexus_ops.mcp_oauth import LEEWAY_SECONDS, InvalidAccessToken, OidcTokenVerifier
from flexus_ops.registry.registry import Registry
from tests.gatekit import make_registry, writes
from tests.security.httpkit import OPERATOR_SECRET, parse_response, post, rpc_body, served
from tests.security.oidckit import (
    SUBJECT,
    Issuer,
    StoppedClock,
    hmac_with_public_key,
    unsigned_token,
    with_payload_of,
)

AUDIENCE = "http://127.0.0.1:0/mcp"  # the default audience: the MCP endpoint at the public URL
METADATA_URL = "http://127.0.0.1:0/.well-known/oauth-protected-resource/mcp"
INITIALIZE = rpc_body(
    "initialize",
    {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "attacker", "version": "1"}},
)


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with Issuer().running() as running:
        yield running


def oauth_team(issuer_url: str) -> Policy:
    return Policy(
        people=[
            Person(id="alice", roles=[Role.OPERATOR], principals=[oidc_principal(issuer_url, SUBJECT)]),
            Person(id="me", roles=[Role.OPERATOR], principals=[token_principal(OPERATOR_SECRET)]),
        ]
    )


@pytest.fixture
async def registry(tmp_path: Path, issuer: Issuer) -> Any:
    reg = make_registry(tmp_path, oauth_team(issuer.url), oauth_issuer=issuer.url)
    yield reg
    await reg.aclose()


@pytest.fixture
def url(registry: Registry) -> Iterator[str]:
    with served(registry) as running:
        yield running


async def call(url: str, token: str | None) -> Any:
    headers = [("Authorization", f"Bearer {token}")] if token else []
    return await post(url, headers, INITIALIZE)


def attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


HOUR = 3600
NOW = int(time.time())
FORGERIES: dict[str, tuple[Callable[[Issuer], str], str]] = {
    "expired": (lambda i: i.token(AUDIENCE, exp=NOW - HOUR, iat=NOW - 2 * HOUR), "expired"),
    "wrong-audience": (lambda i: i.token("https://other.example.com/mcp"), "another audience"),
    "no-audience": (lambda i: i.token(AUDIENCE, aud=None), "'aud' is missing"),
    "no-expiry": (lambda i: i.token(AUDIENCE, exp=None), "'exp' is missing"),
    "not-yet-valid": (lambda i: i.token(AUDIENCE, nbf=NOW + HOUR), "not valid yet"),
    "wrong-issuer": (lambda i: i.token(AUDIENCE, iss="https://evil.example.com"), "another issuer"),
    "bad-signature": (
        lambda i: with_payload_of(i.token(AUDIENCE), i.token(AUDIENCE, subject="someone-else")),
        "signature does not verify",
    ),
    "attacker-key-with-the-issuers-kid": (
        lambda i: i.token(AUDIENCE, key=attacker_key()),
        "signature does not verify",
    ),
    "unknown-kid": (lambda i: i.token(AUDIENCE, key=attacker_key(), kid="attacker-1"), "no key 'attacker-1'"),
    "alg-none": (lambda i: unsigned_token(i.claims(AUDIENCE)), "algorithm 'none' is not accepted"),
    "hs256-with-the-public-key": (
        lambda i: hmac_with_public_key(i, i.claims(AUDIENCE)),
        "algorithm 'HS256' is not accepted",
    ),
    "rs256-against-the-ec-key": (lambda i: i.token(AUDIENCE, kid="flexus-test-ec"), "is for ES256"),
    "subject-longer-than-the-store-keeps": (lambda i: i.token(AUDIENCE, subject="x" * 300), "longer than 200"),
    "subject-not-in-the-policy": (
        lambda i: i.token(AUDIENCE, subject="stranger-42"),
        "no person in the policy has the principal oidc:",
    ),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_a_forged_or_misdirected_token_is_refused(
    registry: Registry, url: str, issuer: Issuer, forgery: str, caplog: pytest.LogCaptureFixture
) -> None:
    make, reason = FORGERIES[forgery]
    token = make(issuer)
    with caplog.at_level(logging.INFO, logger="flexus_ops.mcp"):
        response = await call(url, token)
    assert response.status_code == 401
    assert f'resource_metadata="{METADATA_URL}"' in response.headers["www-authenticate"]
    refusals = [r.getMessage() for r in caplog.records if "refused an OAuth access token" in r.getMessage()]
    assert refusals and reason in refusals[-1], refusals
    assert token not in caplog.text
    assert writes(registry) == [] and registry.store.audit_records() == []


async def test_the_control_a_genuine_token_is_accepted(url: str, issuer: Issuer) -> None:
    """The same path with nothing wrong: what the forgeries above change is what gets them refused."""
    response = await call(url, issuer.token(AUDIENCE))
    assert response.status_code == 200 and "result" in parse_response(response)
    es256 = await call(url, issuer.token(AUDIENCE, kid="flexus-test-ec", key=issuer.ec_key, alg="ES256"))
    assert es256.status_code == 200


async def test_no_token_gets_401_that_points_to_the_metadata(url: str) -> None:
    response = await call(url, None)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and f'resource_metadata="{METADATA_URL}"' in challenge


async def test_an_ambiguous_authorization_header_is_refused_and_also_points_to_the_metadata(
    url: str, issuer: Issuer
) -> None:
    token = issuer.token(AUDIENCE)
    doubled = await post(url, [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")], INITIALIZE)
    in_query = await post(f"{url}?access_token={token}", [], INITIALIZE)
    for response in (doubled, in_query):
        assert response.status_code == 401
        assert f'resource_metadata="{METADATA_URL}"' in response.headers["www-authenticate"]


async def test_static_tokens_still_work_beside_oauth(registry: Registry, url: str) -> None:
    response = await call(url, OPERATOR_SECRET)
    assert response.status_code == 200 and "result" in parse_response(response)


# -- time, on the injectable clock -------------------------------------------------------------


async def test_expiry_and_not_before_have_a_small_leeway_and_no_more(issuer: Issuer) -> None:
    exp = 2_000_000_000
    clock = StoppedClock(exp - 1)
    verifier = OidcTokenVerifier(issuer.url, AUDIENCE, clock=clock)
    token = issuer.token(AUDIENCE, exp=exp, iat=exp - 300, nbf=exp - 300)
    assert (await verifier.verify(token)).subject == SUBJECT
    clock.now = exp + LEEWAY_SECONDS - 1
    assert (await verifier.verify(token)).subject == SUBJECT
    clock.now = exp + LEEWAY_SECONDS
    with pytest.raises(InvalidAccessToken, match="expired"):
        await verifier.verify(token)
    early = issuer.token(AUDIENCE, exp=exp + 600, iat=exp - 10, nbf=exp + LEEWAY_SECONDS + 1)
    clock.now = exp
    with pytest.raises(InvalidAccessToken, match="not valid yet"):
        await verifier.verify(early)
    clock.now = exp + 2
    assert (await verifier.verify(early)).subject == SUBJECT


async def test_a_configured_audience_replaces_the_default(tmp_path: Path, issuer: Issuer) -> None:
    reg = make_registry(tmp_path, oauth_team(issuer.url), oauth_issuer=issuer.url, oauth_audience="api://flexus-ops")
    try:
        with served(reg) as url:
            assert (await call(url, issuer.token("api://flexus-ops"))).status_code == 200
            assert (await call(url, issuer.token(AUDIENCE))).status_code == 401
    finally:
        await reg.aclose()
