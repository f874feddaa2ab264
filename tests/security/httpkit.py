"""Speaking MCP over HTTP by hand, so an attack can send exactly the bytes it wants (duplicate headers,
a replayed request) and read what came back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2

from flexus_ops.gate.policy import GateSettings, Person, Policy, Role, os_principal, token_principal
from flexus_ops.mcp_http import http_app
from flexus_ops.registry.registry import Registry
from tests.procs import serve_app

OPERATOR_SECRET = "fxt_operator-token-0123456789abcdef"
VIEWER_SECRET = "fxt_viewer-token-0123456789abcdef01"
SECOND_OPERATOR_SECRET = "fxt_second-operator-0123456789abcd"
HOST = {"Host": "127.0.0.1:0"}  # the allow-list is built for the configured port (0)


def team(**settings: Any) -> Policy:
    """The OS user is an operator (so a fallback to it would be a privilege gain), the token holders are
    an operator, a viewer and a second operator."""
    return Policy(
        settings=GateSettings(**settings),
        people=[
            Person(id="me", roles=[Role.OPERATOR], principals=[os_principal(), token_principal(OPERATOR_SECRET)]),
            Person(id="viewer", roles=[Role.VIEWER], principals=[token_principal(VIEWER_SECRET)]),
            Person(id="other", roles=[Role.OPERATOR], principals=[token_principal(SECOND_OPERATOR_SECRET)]),
            Person(id="lead", roles=[Role.APPROVER], principals=["slack:ULEAD"]),
        ],
    )


@contextmanager
def served(registry: Registry, session_token: str | None = None) -> Iterator[str]:
    """The registry's MCP HTTP app on loopback; yields the /mcp URL."""
    with serve_app(http_app(registry, "127.0.0.1", 0, session_token=session_token), lifespan="on") as url:
        yield f"{url}/mcp"


def rpc_body(method: str, params: dict[str, Any], ident: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": ident, "method": method, "params": params}


def parse_response(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC message of a response, plain JSON or the last SSE ``data:`` event."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    events = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    messages = [json.loads(event) for event in events if event]
    answers = [m for m in messages if "result" in m or "error" in m]
    assert answers, response.text
    return answers[-1]


MODERN_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def post(url: str, headers: list[tuple[str, str]] | dict[str, str], body: dict[str, Any]) -> httpx2.Response:
    merged = httpx2.Headers(headers)
    for name, value in {**MODERN_HEADERS, **HOST}.items():
        if name not in merged:
            merged[name] = value
    async with httpx2.AsyncClient(timeout=30) as raw:
        return await raw.post(url, headers=merged, content=json.dumps(body))
