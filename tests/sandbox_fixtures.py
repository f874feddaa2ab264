"""Helpers for the sandbox tests: a fake clock and a signing HTTP client over ASGITransport.

(``tests/conftest.py`` belongs to the client tests, so these live here and are imported explicitly.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from flexus_ops.cloud import signer
from flexus_ops.sandbox import Sandbox, SandboxOptions

PINNED = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
HOST = "ecs.cn-north-4.myhuaweicloud.com"


class FakeClock:
    """An aware-UTC clock that only moves when told to."""

    def __init__(self, start: datetime = PINNED) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_sandbox(clock: FakeClock | None = None, **options: Any) -> Sandbox:
    return Sandbox(SandboxOptions(clock=clock, **options))


def server_ids(sandbox: Sandbox, status: str, *, locked: bool = False) -> list[str]:
    return [
        sid for sid, server in sandbox.backend.servers.items() if server.status == status and server.locked == locked
    ]


class Api:
    """Signs every request like the SDK does (Content-Type, X-Project-Id, X-Sdk-Date, Host)."""

    def __init__(self, sandbox: Sandbox, client: httpx.AsyncClient, clock: FakeClock | None = None) -> None:
        self.sandbox = sandbox
        self.client = client
        self.clock = clock
        self.access_key = sandbox.options.access_key
        self.secret_key = sandbox.options.secret_key
        self.project_id = sandbox.options.project_id

    @property
    def pid(self) -> str:
        return self.project_id

    def signed_headers(
        self,
        method: str,
        path: str,
        query: Iterable[tuple[str, Any]] = (),
        body: bytes | None = None,
        *,
        extra: dict[str, str] | None = None,
        now: datetime | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> signer.SignedRequest:
        headers = {
            "Content-Type": "application/json;charset=utf-8" if body else "application/json",
            "X-Project-Id": self.project_id,
        }
        headers.update(extra or {})
        return signer.sign(
            access_key=access_key or self.access_key,
            secret_key=secret_key or self.secret_key,
            method=method,
            host=HOST,
            path=path,
            query=list(query),
            headers=headers,
            body=body,
            now=now or (self.clock() if self.clock else datetime.now(UTC)),
        )

    async def request(
        self,
        method: str,
        path: str,
        query: Iterable[tuple[str, Any]] = (),
        body: Any = None,
        **sign_options: Any,
    ) -> httpx.Response:
        raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        signed = self.signed_headers(method, path, list(query), raw, **sign_options)
        url = path + ("?" + signed.query if signed.query else "")
        return await self.client.request(method, url, headers=signed.headers, content=raw)

    async def get(self, path: str, query: Iterable[tuple[str, Any]] = (), **sign_options: Any) -> httpx.Response:
        return await self.request("GET", path, query, **sign_options)

    async def show(self, server_id: str) -> httpx.Response:
        return await self.get(f"/v1/{self.pid}/cloudservers/{server_id}")

    async def action(self, body: Any, **sign_options: Any) -> httpx.Response:
        return await self.request("POST", f"/v1/{self.pid}/cloudservers/action", body=body, **sign_options)

    async def job(self, job_id: str) -> httpx.Response:
        return await self.get(f"/v1/{self.pid}/jobs/{job_id}")

    async def list(self, **query: Any) -> httpx.Response:
        pairs = [("not-tags" if key == "not_tags" else key, value) for key, value in query.items()]
        return await self.get(f"/v1/{self.pid}/cloudservers/detail", pairs)


def asgi_client(sandbox: Sandbox) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url=f"http://{HOST}")
