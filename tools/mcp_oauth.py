"""OAuth for MCP over HTTP: this server as an OAuth 2.1 resource server (the MCP authorization spec).

A client gets a JWT access token from the configured issuer and sends it as ``Authorization: Bearer``.
``OidcTokenVerifier`` accepts it only when all of these hold, and names the caller
``oidc:<issuer>#<sub>`` (a principal of the policy):

- the header's ``alg`` is an asymmetric signature algorithm (never ``none``, never HMAC: an HMAC "signed"
  with the issuer's public key would verify against public data);
- the signature checks out with the issuer's key named by ``kid``, taken from its JWKS (found by OIDC
  discovery at ``<issuer>/.well-known/openid-configuration``, or ``FLEXUS_OAUTH_JWKS_URL``);
- ``iss`` is the configured issuer exactly, ``aud`` holds the configured audience (by default this
  server's MCP endpoint URL, the resource indicator of RFC 8707), ``exp`` is in the future and ``nbf``/``iat``
  are not, give or take ``LEEWAY_SECONDS`` of clock skew, and ``sub`` is a non-empty string.

The key set is cached. An unknown ``kid`` (the issuer rotated its keys) fetches it again, at most once per
``REFRESH_COOLDOWN_SECONDS``, so tokens with made-up kids cannot make this server hammer the issuer.
Fetches time out after ``FETCH_TIMEOUT_SECONDS``, follow no redirects, read at most ``MAX_DOCUMENT_BYTES``
and use https (plain http only for a loopback issuer). The cryptography is PyJWT's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from .config import checked_oauth_url
from .core.errors import ConfigurationError
from .gate.policy import oidc_principal

log = logging.getLogger("flexus_ops.mcp.oauth")

# Asymmetric only: "none" and HS256/384/512 are refused before any key is looked at.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
LEEWAY_SECONDS = 30
FETCH_TIMEOUT_SECONDS = 5.0
REFRESH_COOLDOWN_SECONDS = 60.0
KEYS_MAX_AGE_SECONDS = 3600.0  # keys the issuer has withdrawn stop working within the hour
MAX_DOCUMENT_BYTES = 256 * 1024
DISCOVERY_PATH = "/.well-known/openid-configuration"
MAX_PRINCIPAL_LENGTH = 200  # what the gate's store keeps of a principal (actions.principal)


class InvalidAccessToken(Exception):
    """Why a token was refused (for the log; the client gets a plain 401)."""


class IssuerUnavailable(Exception):
    """The issuer's discovery document or key set could not be fetched or made no sense."""


@dataclass(frozen=True)
class OidcIdentity:
    issuer: str
    subject: str
    expires_at: int
    scopes: list[str]

    @property
    def principal(self) -> str:
        return oidc_principal(self.issuer, self.subject)


def looks_like_jwt(token: str) -> bool:
    """A JWS in compact form; static bearer tokens (``flexus-ops token new``) never contain a dot."""
    return token.count(".") == 2


async def fetch_json(url: str, what: str) -> dict[str, Any]:
    """One bounded GET of a JSON object: a timeout, no redirects, a size cap."""
    try:
        async with (
            httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise IssuerUnavailable(f"{what} at {url} answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise IssuerUnavailable(f"{what} at {url} is larger than {MAX_DOCUMENT_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise IssuerUnavailable(f"{what} at {url} did not answer: {type(exc).__name__}") from None
    try:
        document = json.loads(bytes(body))
    except ValueError:
        raise IssuerUnavailable(f"{what} at {url} is not JSON") from None
    if not isinstance(document, dict):
        raise IssuerUnavailable(f"{what} at {url} is not a JSON object")
    return document


@dataclass
class JwksCache:
    """The issuer's signing keys by ``kid``, fetched when first needed and again on an unknown ``kid``."""

    issuer: str
    jwks_url: str | None = None
    clock: Callable[[], float] = time.time
    _keys: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    _fetched_at: float | None = field(default=None, init=False)
    _attempted_at: float | None = field(default=None, init=False)
    _lock: asyncio.Lock | None = field(default=None, init=False)
    fetches: int = field(default=0, init=False)  # how many times the key set was asked for (tests, metrics)

    async def key(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK for ``kid`` (``None``: the only key, when the set has exactly one), or None."""
        now = self.clock()
        stale = self._fetched_at is None or now - self._fetched_at > KEYS_MAX_AGE_SECONDS
        if stale or self._find(kid) is None:
            await self._refresh()
        return self._find(kid)

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            now = self.clock()
            if self._attempted_at is not None and now - self._attempted_at < REFRESH_COOLDOWN_SECONDS:
                return  # fetched (or tried) a moment ago, perhaps by the request we waited for
            self._attempted_at = now
            self.fetches += 1
            try:
                self._keys = await self._fetch()
                self._fetched_at = now
            except IssuerUnavailable as exc:
                # Keep the keys we had: a flaky issuer must not lock everyone out until it answers again.
                log.warning("OAuth: cannot refresh the issuer's keys: %s", exc)

    async def _fetch(self) -> dict[str, dict[str, Any]]:
        url = self.jwks_url or await self._discover()
        document = await fetch_json(url, "the issuer's JWKS")
        keys = document.get("keys")
        if not isinstance(keys, list):
            raise IssuerUnavailable(f"the JWKS at {url} has no 'keys' list")
        found: dict[str, dict[str, Any]] = {}
        for index, jwk in enumerate(keys):
            # Signing keys of an asymmetric type only: an "oct" (shared secret) key is never a verification key.
            if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC", "OKP"):
                continue
            if jwk.get("use", "sig") != "sig" or (jwk.get("alg") and jwk["alg"] not in ALLOWED_ALGORITHMS):
                continue
            kid = jwk.get("kid")
            found[kid if isinstance(kid, str) and kid else f"#{index}"] = jwk
        return found

    async def _discover(self) -> str:
        url = self.issuer.rstrip("/") + DISCOVERY_PATH
        document = await fetch_json(url, "the issuer's OpenID configuration")
        if document.get("issuer") != self.issuer:
            # OIDC Discovery 4.3: the document must name the issuer it was fetched for, exactly.
            raise IssuerUnavailable(f"the OpenID configuration at {url} names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise IssuerUnavailable(f"the OpenID configuration at {url} has no jwks_uri")
        try:
            return checked_oauth_url(jwks_uri, "jwks_uri of the issuer's OpenID configuration")
        except ConfigurationError as exc:
            raise IssuerUnavailable(str(exc)) from None


@dataclass
class OidcTokenVerifier:
    """Verifies JWT access tokens of one issuer for one audience (see the module's docstring)."""

    issuer: str
    audience: str
    jwks_url: str | None = None
    clock: Callable[[], float] = time.time
    keys: JwksCache = field(init=False)

    def __post_init__(self) -> None:
        self.keys = JwksCache(self.issuer, self.jwks_url, self.clock)

    async def verify(self, token: str) -> OidcIdentity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidAccessToken("not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise InvalidAccessToken(f"algorithm {str(alg)[:20]!r} is not accepted (asymmetric signatures only)")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidAccessToken("the kid is not a string")
        jwk = await self.keys.key(kid)
        if jwk is None and kid is None:
            raise InvalidAccessToken("the token names no key (kid) and the issuer's key set has not exactly one")
        if jwk is None:
            raise InvalidAccessToken(f"no key {kid[:64]!r} in the issuer's key set")
        if jwk.get("alg") and jwk["alg"] != alg:
            raise InvalidAccessToken(f"key {str(kid)[:64]!r} is for {jwk['alg']}, the token says {alg}")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                # Time is checked below against the injectable clock, the one the gate uses.
                options={
                    "require": ["exp", "iss", "aud", "sub"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError:
            raise InvalidAccessToken("issued for another audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidAccessToken("issued by another issuer") from None
        except jwt.InvalidSignatureError:
            raise InvalidAccessToken("the signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidAccessToken(f"the claim {exc.claim!r} is missing") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidAccessToken(f"not a valid token ({type(exc).__name__})") from None
        return self._checked(claims)

    def _checked(self, claims: dict[str, Any]) -> OidcIdentity:
        now = self.clock()
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        for name, value in (("exp", exp), ("nbf", nbf), ("iat", iat)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise InvalidAccessToken(f"the claim {name!r} is not a number")
        if exp <= now - LEEWAY_SECONDS:
            raise InvalidAccessToken("expired")
        if nbf is not None and nbf > now + LEEWAY_SECONDS:
            raise InvalidAccessToken("not valid yet (nbf)")
        if iat is not None and iat > now + LEEWAY_SECONDS:
            raise InvalidAccessToken("issued in the future (iat)")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidAccessToken("the claim 'sub' is not a non-empty string")
        if len(oidc_principal(self.issuer, subject)) > MAX_PRINCIPAL_LENGTH:
            raise InvalidAccessToken(
                f"the principal oidc:<issuer>#<sub> is longer than {MAX_PRINCIPAL_LENGTH} characters"
            )
        scope = claims.get("scope", claims.get("scp"))  # RFC 9068 `scope`; Entra ID's `scp`
        scopes = scope.split() if isinstance(scope, str) else [str(s) for s in scope] if isinstance(scope, list) else []
        # Reported to the SDK as the moment this server stops accepting it (its check has no leeway).
        return OidcIdentity(self.issuer, subject, int(exp) + LEEWAY_SECONDS, scopes)
