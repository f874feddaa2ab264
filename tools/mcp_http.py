"""MCP over streamable HTTP: who the caller is, decided once, by the MCP SDK's own auth layer.

Every request needs exactly one ``Authorization: Bearer <token>`` header. ``StrictAuthorization`` refuses
anything ambiguous before the SDK sees it (two Authorization headers, another scheme, odd spacing, a token
in the query string), so the credential the SDK's ``BearerAuthBackend`` verifies is the only one there is.
``PolicyTokenVerifier`` maps the token to a principal of the policy; the tools read the caller from the
verified ``AccessToken`` (``get_access_token``), never from headers and never from the OS user.

With no token principals in the policy, a loopback server makes a random session token at start that
stands for the OS user who started it (as Jupyter does): no request is ever unauthenticated.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context

from .config import is_loopback
from .core.errors import ConfigurationError, Refused
from .core.tools import Caller
from .gate.policy import os_principal, token_principal
from .registry.registry import Registry
from .serving import Drain, Draining

if TYPE_CHECKING:
    from .observability import Metrics

log = logging.getLogger("flexus_ops.mcp")
SESSION_TOKEN_PREFIX = "fxs_"  # noqa: S105 - a prefix, not a secret

# RFC 6750: the scheme (any case), one space, a b64token. Anything else is ambiguous and refused.
BEARER = re.compile(r"^[Bb][Ee][Aa][Rr][Ee][Rr] ([A-Za-z0-9\-._~+/]+=*)$")
TOKEN_QUERY_NAMES = {"access_token", "token", "bearer", "authorization"}


def new_session_token() -> str:
    return SESSION_TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass
class PolicyTokenVerifier:
    """The SDK's ``TokenVerifier``: a bearer token is valid when a person in the policy holds its hash
    (``mcp-token:<sha256>``), or when it is this process's session token (the OS user)."""

    registry: Registry
    session_token: str | None = None
    _session_hash: bytes = field(init=False, default=b"")

    def __post_init__(self) -> None:
        if self.session_token:
            self._session_hash = hashlib.sha256(self.session_token.encode()).digest()

    async def verify_token(self, token: str) -> AccessToken | None:
        principal = token_principal(token)
        if self._session_hash and hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._session_hash):
            principal = os_principal()
        try:
            policy = self.registry.policy
        except ConfigurationError as exc:  # a policy file that no longer loads admits nobody until fixed
            log.warning("refusing every token: %s", exc)
            return None
        person = policy.person_for(principal)
        if person is None:
            return None
        return AccessToken(token=token, client_id=person.id, scopes=[], subject=principal)


def http_caller(_ctx: Context) -> Caller:
    """The caller the auth layer verified for this request; there is no other source."""
    verified = get_access_token()
    if verified is None or not verified.subject:
        raise Refused("unauthenticated request: send Authorization: Bearer <token>")
    return Caller(principal=verified.subject, surface="mcp-http")


async def _unauthorized(send: Any, why: str) -> None:
    body = ('{"error": "invalid_request", "error_description": "' + why + '"}').encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer error="invalid_request"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class StrictAuthorization:
    """Refuse requests whose credentials are ambiguous, before any auth code reads them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        values = [value for key, value in scope.get("headers", []) if key.lower() == b"authorization"]
        query = scope.get("query_string", b"").decode("latin-1")
        names = {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}
        if len(values) > 1:
            await _unauthorized(send, "more than one Authorization header")
            return
        if values and not BEARER.fullmatch(values[0].decode("latin-1")):
            await _unauthorized(send, "Authorization must be exactly: Bearer <token>")
            return
        if names & TOKEN_QUERY_NAMES:
            await _unauthorized(send, "credentials are not accepted in the query string")
            return
        await self.app(scope, receive, send)


def has_token_principals(registry: Registry) -> bool:
    return any(p.startswith("mcp-token:") for person in registry.policy.people for p in person.principals)


def auth_settings(public_url: str) -> AuthSettings:
    # Static bearer tokens are issued by this server itself (`flexus-ops token new`), so it is its own issuer.
    return AuthSettings(issuer_url=public_url, resource_server_url=None)


def http_app(
    registry: Registry,
    host: str,
    port: int,
    allowed_origins: list[str] | None = None,
    *,
    session_token: str | None = None,
    drain: Drain | None = None,
    metrics: Metrics | None = None,
) -> Any:
    """The streamable HTTP app: stateless (any replica answers any request), SSE responses (so progress
    notifications flow), host/origin allow-list against DNS rebinding, every request authenticated.

    Without token principals in the policy, ``session_token`` is required and only loopback is served.
    With ``drain``, a stopping server says "not ready" and takes no new calls (see ``DrainingServer``).
    ``metrics`` defaults to the process's own (``observability.process_metrics``)."""
    from mcp.server.transport_security import TransportSecuritySettings

    from .mcp_server import build_server
    from .observability import Probes, ToolCallMetrics

    if not has_token_principals(registry):
        if not is_loopback(host):
            raise ValueError(
                f"refusing to serve MCP on {host} without authentication: add an 'mcp-token:' principal to the "
                "policy (flexus-ops token new --person ID), or bind to 127.0.0.1"
            )
        if not session_token:
            raise ValueError("serving MCP over HTTP without token principals needs a session token")
    hosts = [f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}"]
    origins = allowed_origins or [f"http://{h}" for h in hosts]
    verifier = PolicyTokenVerifier(registry, session_token)
    server = build_server(
        registry,
        caller_for=http_caller,
        auth=auth_settings(f"http://{hosts[0]}"),
        token_verifier=verifier,
    )

    # Probes and metrics need no credentials and name nothing of the fleet (see observability.py).
    probes = Probes(registry, drain, metrics)
    for path, endpoint in probes.endpoints():
        server.custom_route(path, methods=["GET"])(endpoint)
    server.middleware.append(ToolCallMetrics())

    app = server.streamable_http_app(
        stateless_http=True,
        json_response=False,
        host=host,
        transport_security=TransportSecuritySettings(allowed_hosts=hosts, allowed_origins=origins),
    )
    return StrictAuthorization(app if drain is None else Draining(app, drain))
