"""MCP over streamable HTTP: who the caller is, decided once, by the MCP SDK's own auth layer.

Every request needs exactly one ``Authorization: Bearer <token>`` header. ``StrictAuthorization`` refuses
anything ambiguous before the SDK sees it (two Authorization headers, another scheme, odd spacing, a token
in the query string), so the credential the SDK's ``BearerAuthBackend`` verifies is the only one there is.
``PolicyTokenVerifier`` maps the token to a principal of the policy; the tools read the caller from the
verified ``AccessToken`` (``get_access_token``), never from headers and never from the OS user.

With ``FLEXUS_OAUTH_ISSUER`` set, the same verifier also takes JWT access tokens of that issuer
(``mcp_oauth.OidcTokenVerifier``; the caller is ``oidc:<issuer>#<sub>``), and the server publishes its
protected resource metadata (RFC 9728) so clients find the issuer; a 401 points to it.

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

from .config import checked_allowed_host, checked_public_url, is_loopback
from .core.errors import ConfigurationError, Refused
from .core.tools import Caller
from .gate.policy import os_principal, token_principal
from .mcp_oauth import InvalidAccessToken, OidcTokenVerifier, looks_like_jwt
from .registry.registry import Registry
from .serving import Drain, Draining

if TYPE_CHECKING:
    from .observability import Metrics

log = logging.getLogger("flexus_ops.mcp")
SESSION_TOKEN_PREFIX = "fxs_"  # noqa: S105 - a prefix, not a secret

# RFC 6750: the scheme (any case), one space, a b64token. Anything else is ambiguous and refused.
BEARER = re.compile(r"^[Bb][Ee][Aa][Rr][Ee][Rr] ([A-Za-z0-9\-._~+/]+=*)$")
TOKEN_QUERY_NAMES = {"access_token", "token", "bearer", "authorization"}
MCP_PATH = "/mcp"
RESOURCE_METADATA_PATH = "/.well-known/oauth-protected-resource"


def new_session_token() -> str:
    return SESSION_TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass
class PolicyTokenVerifier:
    """The SDK's ``TokenVerifier``, the one place that decides who the caller is. A bearer token is valid
    when a person in the policy holds the principal it proves: a JWT access token of the configured issuer
    (``oidc:<issuer>#<sub>``, when ``oidc`` is set), a static token's hash (``mcp-token:<sha256>``), or
    this process's session token (the OS user)."""

    registry: Registry
    session_token: str | None = None
    oidc: OidcTokenVerifier | None = None
    _session_hash: bytes = field(init=False, default=b"")

    def __post_init__(self) -> None:
        if self.session_token:
            self._session_hash = hashlib.sha256(self.session_token.encode()).digest()

    async def verify_token(self, token: str) -> AccessToken | None:
        expires_at: int | None = None
        claims: dict[str, Any] | None = None
        scopes: list[str] = []
        if self.oidc is not None and looks_like_jwt(token):
            try:
                identity = await self.oidc.verify(token)
            except InvalidAccessToken as exc:
                log.info("refused an OAuth access token: %s", exc)
                return None
            principal, expires_at, scopes = identity.principal, identity.expires_at, identity.scopes
            claims = {"iss": identity.issuer}
        else:
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
            if claims is not None:  # the name an admin puts in the policy to let this person in
                log.warning("refused an OAuth access token: no person in the policy has the principal %s", principal)
            return None
        return AccessToken(
            token=token, client_id=person.id, scopes=scopes, subject=principal, expires_at=expires_at, claims=claims
        )


def http_caller(_ctx: Context) -> Caller:
    """The caller the auth layer verified for this request; there is no other source."""
    verified = get_access_token()
    if verified is None or not verified.subject:
        raise Refused("unauthenticated request: send Authorization: Bearer <token>")
    return Caller(principal=verified.subject, surface="mcp-http")


async def _unauthorized(send: Any, why: str, resource_metadata_url: str | None = None) -> None:
    body = ('{"error": "invalid_request", "error_description": "' + why + '"}').encode()
    challenge = 'Bearer error="invalid_request"'
    if resource_metadata_url:  # RFC 9728 5.1: every 401 tells the client where to find the issuer
        challenge += f', resource_metadata="{resource_metadata_url}"'
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", challenge.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class StrictAuthorization:
    """Refuse requests whose credentials are ambiguous, before any auth code reads them."""

    def __init__(self, app: Any, resource_metadata_url: str | None = None) -> None:
        self.app = app
        self.resource_metadata_url = resource_metadata_url

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        values = [value for key, value in scope.get("headers", []) if key.lower() == b"authorization"]
        query = scope.get("query_string", b"").decode("latin-1")
        names = {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}
        why = None
        if len(values) > 1:
            why = "more than one Authorization header"
        elif values and not BEARER.fullmatch(values[0].decode("latin-1")):
            why = "Authorization must be exactly: Bearer <token>"
        elif names & TOKEN_QUERY_NAMES:
            why = "credentials are not accepted in the query string"
        if why is not None:
            await _unauthorized(send, why, self.resource_metadata_url)
            return
        await self.app(scope, receive, send)


def has_token_principals(registry: Registry) -> bool:
    return any(p.startswith("mcp-token:") for person in registry.policy.people for p in person.principals)


def needs_session_token(registry: Registry) -> bool:
    """Nobody but the OS user could get in: no token principals and no OAuth issuer."""
    return not has_token_principals(registry) and not registry.settings.oauth_issuer


def public_base_url(registry: Registry, host: str, port: int, public_url: str | None = None) -> str:
    """Where clients reach this server (``--public-url``, else FLEXUS_PUBLIC_URL, else the address bound)."""
    if public_url:
        return checked_public_url(public_url, "--public-url")
    if registry.settings.public_url:
        return registry.settings.public_url
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def oauth_verifier(registry: Registry, public: str) -> OidcTokenVerifier | None:
    settings = registry.settings
    if not settings.oauth_issuer:
        return None
    return OidcTokenVerifier(
        issuer=settings.oauth_issuer,
        audience=settings.oauth_audience or public + MCP_PATH,  # the resource indicator of the MCP endpoint
        jwks_url=settings.oauth_jwks_url,
        clock=registry.clock,
    )


def auth_settings(public_url: str, oidc: OidcTokenVerifier | None = None) -> AuthSettings:
    if oidc is None:
        # Static bearer tokens are issued by this server itself (`flexus-ops token new`), so it is its own issuer.
        return AuthSettings(issuer_url=public_url, resource_server_url=None)
    # A resource server: the SDK serves the metadata at /.well-known/oauth-protected-resource/mcp and names it
    # in every 401. The verifier checks `aud` itself, so the SDK's own resource check stays off.
    return AuthSettings(
        issuer_url=oidc.issuer, resource_server_url=public_url + MCP_PATH, validate_token_resource=False
    )


def allowed_host_values(host: str, port: int, names: list[str], public: str) -> list[str]:
    """Host header values the DNS-rebinding check accepts: the address bound and loopback on our port, and
    each named host (the public URL's, ``--allowed-host``) on any port, since rebinding is about the name."""
    values = [f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}"]
    for name in [*names, public.split("://", 1)[1].lower()]:
        has_port = name.rsplit("]", 1)[-1].count(":") == 1
        values += [name] if has_port else [name, f"{name}:*"]
    return list(dict.fromkeys(values))


def http_app(
    registry: Registry,
    host: str,
    port: int,
    allowed_origins: list[str] | None = None,
    *,
    session_token: str | None = None,
    drain: Drain | None = None,
    public_url: str | None = None,
    allowed_hosts: list[str] | None = None,
    metrics: Metrics | None = None,
) -> Any:
    """The streamable HTTP app: stateless (any replica answers any request), SSE responses (so progress
    notifications flow), host/origin allow-list against DNS rebinding, every request authenticated.

    Without token principals in the policy or an OAuth issuer, ``session_token`` is required and only
    loopback is served. ``public_url`` and ``allowed_hosts`` default to FLEXUS_PUBLIC_URL and
    FLEXUS_ALLOWED_HOSTS.
    With ``drain``, a stopping server says "not ready" and takes no new calls (see ``DrainingServer``).
    ``metrics`` defaults to the process's own (``observability.process_metrics``)."""
    from mcp.server.transport_security import TransportSecuritySettings

    from .mcp_server import build_server
    from .observability import Probes, ToolCallMetrics

    if needs_session_token(registry):
        if not is_loopback(host):
            raise ValueError(
                f"refusing to serve MCP on {host} without authentication: add an 'mcp-token:' principal to the "
                "policy (flexus-ops token new --person ID), set FLEXUS_OAUTH_ISSUER, or bind to 127.0.0.1"
            )
        if not session_token:
            raise ValueError("serving MCP over HTTP without token principals needs a session token")
    public = public_base_url(registry, host, port, public_url)
    oidc = oauth_verifier(registry, public)
    if oidc is not None and not is_loopback(host) and not public_url and not registry.settings.public_url:
        raise ValueError(
            f"OAuth on {host} needs the URL clients use: set --public-url (FLEXUS_PUBLIC_URL), e.g. "
            "https://flexus.example.com; tokens are issued for it and the metadata names it"
        )
    names = [checked_allowed_host(name, "--allowed-host") for name in allowed_hosts or []]
    hosts = allowed_host_values(host, port, names or registry.settings.allowed_hosts, public)
    origins = allowed_origins or [f"http://{h}" for h in hosts[:3]] + [public]
    verifier = PolicyTokenVerifier(registry, session_token, oidc)
    auth = auth_settings(public, oidc)
    server = build_server(registry, caller_for=http_caller, auth=auth, token_verifier=verifier)
    resource_metadata_url = None
    if oidc is not None:
        resource_metadata_url = public + RESOURCE_METADATA_PATH + MCP_PATH
        _serve_resource_metadata_at_root(server, auth)

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
    # Starlette would answer /mcp/ with a redirect built from the Host header, before the transport's Host
    # check: an open redirect to any name. Every path is served exactly as spelled, or not at all.
    app.router.redirect_slashes = False
    return StrictAuthorization(app if drain is None else Draining(app, drain), resource_metadata_url)


def _serve_resource_metadata_at_root(server: Any, auth: AuthSettings) -> None:
    """The SDK serves the metadata at the path-suffixed URL of RFC 9728 3.1 (``.../oauth-protected-resource/mcp``);
    clients that look at the root of the host get the same document there."""
    from mcp.server.auth.routes import create_protected_resource_routes

    assert auth.resource_server_url is not None
    (route,) = create_protected_resource_routes(
        resource_url=auth.resource_server_url, authorization_servers=[auth.issuer_url]
    )
    server.custom_route(RESOURCE_METADATA_PATH, methods=["GET", "OPTIONS"])(route.app)
