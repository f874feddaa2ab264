"""httpx authentication: AK/SK request signing, or an IAM token fetched with a password."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Callable, Generator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import httpx

from ..core.errors import ConfigurationError
from . import signer
from .errors import error_from_response

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AkSkAuth(httpx.Auth):
    """Signs every request with SDK-HMAC-SHA256 exactly as the official SDK does.

    The URL's query is rewritten to the canonical query (the SDK sends that same string), and
    ``X-Project-Id`` / ``X-Security-Token`` are added before signing so they are signed too.
    """

    requires_request_body = True

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        *,
        project_id: str | None = None,
        security_token: str | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        self._access_key = access_key
        self._secret_key = secret_key
        self.project_id = project_id
        self._security_token = security_token
        self._clock = clock

    def __repr__(self) -> str:  # never show the key material
        return f"AkSkAuth(access_key={self._access_key[:4]}..., project_id={self.project_id})"

    def sign_request(self, request: httpx.Request) -> None:
        if self.project_id and "X-Project-Id" not in request.headers:
            request.headers["X-Project-Id"] = self.project_id
        if self._security_token:
            request.headers["X-Security-Token"] = self._security_token
        raw_path = request.url.raw_path.decode("ascii").split("?", 1)[0]
        pairs = parse_qsl(request.url.query.decode("ascii"), keep_blank_values=True)
        # Host and the other headers httpx already set are signed as they will be sent.
        signed = signer.sign(
            access_key=self._access_key,
            secret_key=self._secret_key,
            method=request.method,
            host=request.url.netloc.decode("ascii"),
            path=raw_path,
            query=pairs,
            headers={name: value for name, value in request.headers.items() if name != "authorization"},
            body=request.content or None,
            now=self._clock(),
        )
        query = signed.query.encode("ascii")
        if query != request.url.query:  # the client already sends the canonical query: no second URL parse
            request.url = request.url.copy_with(query=query or None)
        for name, value in signed.headers.items():
            request.headers[name] = value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sign_request(request)
        yield request


class IamTokenAuth(httpx.Auth):
    """``X-Auth-Token`` from ``POST /v3/auth/tokens``, cached and refreshed before it expires.

    Tokens live 24 h; we refresh 15 minutes early (or half-way for short-lived tokens), so a
    long job wait never meets an expired token. A 401 ``APIGW.0307`` (token must be updated)
    triggers one refresh and one resend: the gateway refused the request, so nothing happened.
    """

    requires_response_body = True

    def __init__(
        self,
        iam_base_url: str,
        *,
        domain: str,
        user: str,
        password: str,
        region: str,
        project_id: str | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        self._url = iam_base_url.rstrip("/") + "/v3/auth/tokens"
        self._domain = domain
        self._user = user
        self._password = password
        self._region = region
        self.project_id = project_id
        self._clock = clock
        self._token: str | None = None
        self._refresh_at: datetime | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"IamTokenAuth(user={self._user}, domain={self._domain})"

    def _token_request(self) -> httpx.Request:
        scope = {"project": {"id": self.project_id}} if self.project_id else {"project": {"name": self._region}}
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": self._user, "password": self._password, "domain": {"name": self._domain}}
                    },
                },
                "scope": scope,
            }
        }
        return httpx.Request(
            "POST",
            self._url,
            params={"nocatalog": "true"},
            content=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json;charset=utf-8"},
        )

    def _store(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            raise error_from_response(response)
        token = response.headers.get("X-Subject-Token")
        if not token:
            raise ConfigurationError("IAM answered without an X-Subject-Token header")
        body = response.json().get("token", {})
        now = self._clock()
        expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
        lifetime = expires - now
        margin = min(timedelta(minutes=15), lifetime / 2)
        self._token = token
        self._refresh_at = expires - margin
        if not self.project_id:
            project = body.get("project") or {}
            self.project_id = project.get("id")

    def _needs_token(self) -> bool:
        return self._token is None or self._refresh_at is None or self._clock() >= self._refresh_at

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        async with self._lock:
            if self._needs_token():
                token_response = yield self._token_request()
                await token_response.aread()
                self._store(token_response)
        if self.project_id and "X-Project-Id" not in request.headers:
            request.headers["X-Project-Id"] = self.project_id
        request.headers["X-Auth-Token"] = self._token or ""
        response = yield request
        if response.status_code == 401 and b"APIGW.0307" in response.content:
            async with self._lock:
                token_response = yield self._token_request()
                await token_response.aread()
                self._store(token_response)
            request.headers["X-Auth-Token"] = self._token or ""
            yield request

    async def ensure_token(self, http: httpx.AsyncClient) -> None:
        """Fetch a token now (used to learn the project id before the first ECS call)."""
        async with self._lock:
            if self._needs_token():
                # A bare Auth: the client's own auth is this object, and it would wait for this lock.
                response = await http.send(self._token_request(), auth=httpx.Auth())
                await response.aread()
                self._store(response)
