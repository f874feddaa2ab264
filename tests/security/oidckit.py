"""A local OAuth issuer for tests: keys made here with cryptography, OIDC discovery and a JWKS served over
real HTTP on loopback, and tokens minted as an identity provider (or an attacker) would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.procs import serve_app

KID = "flexus-test-1"
SUBJECT = "248289761001"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg.startswith(("RS", "PS")) else jwt.algorithms.ECAlgorithm
    jwk = json.loads(algorithm.to_jwk(key.public_key()))
    return jwk | {"kid": kid, "alg": alg, "use": "sig"}


class StoppedClock:
    """Time that moves only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Issuer:
    """An identity provider on loopback. ``url`` is its issuer identifier once ``running()`` has started."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.published: list[dict[str, Any]] = []
        self.url = ""
        self.jwks_requests = 0
        self.discovery_issuer: str | None = None  # what the discovery document claims; None: the truth
        self.jwks_uri: str | None = None  # where the discovery document sends clients; None: its own JWKS
        self.publish(self.key, KID, "RS256")
        self.publish(self.ec_key, "flexus-test-ec", "ES256")

    def publish(self, key: Any, kid: str, alg: str) -> None:
        self.published.append(public_jwk(key, kid, alg))

    def app(self) -> Starlette:
        async def discovery(_request: Request) -> JSONResponse:
            issuer = self.discovery_issuer or self.url
            jwks_uri = self.jwks_uri or f"{self.url}/jwks.json"
            return JSONResponse({"issuer": issuer, "jwks_uri": jwks_uri, "response_types_supported": []})

        async def jwks(_request: Request) -> JSONResponse:
            self.jwks_requests += 1
            return JSONResponse({"keys": self.published})

        return Starlette(routes=[Route("/.well-known/openid-configuration", discovery), Route("/jwks.json", jwks)])

    @contextmanager
    def running(self) -> Iterator[Issuer]:
        with serve_app(self.app()) as url:
            self.url = url
            yield self

    def claims(self, audience: str, subject: str = SUBJECT, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": self.url, "sub": subject, "aud": audience, "iat": now, "exp": now + 300, "scope": "mcp"}
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not None}

    def token(
        self,
        audience: str,
        subject: str = SUBJECT,
        *,
        kid: str = KID,
        key: Any = None,
        alg: str = "RS256",
        **claims: Any,
    ) -> str:
        """A token signed as the issuer signs them (or with ``key``, an attacker's), any claim changed."""
        return jwt.encode(
            self.claims(audience, subject, **claims), key or self.key, algorithm=alg, headers={"kid": kid}
        )


def unsigned_token(claims: dict[str, Any], kid: str = KID) -> str:
    """``alg: none``: no signature at all."""
    header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}."


def hmac_with_public_key(issuer: Issuer, claims: dict[str, Any], kid: str = KID) -> str:
    """The key-confusion attack: HS256 "signed" with the issuer's public key, which anyone can download."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    signing_input = f"{header}.{b64url(json.dumps(claims).encode())}"
    public_pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def with_payload_of(token: str, other: str) -> str:
    """``token``'s header and signature around ``other``'s claims: a signature over something else."""
    header, _payload, signature = token.split(".")
    return f"{header}.{other.split('.')[1]}.{signature}"
