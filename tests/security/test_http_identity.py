"""Threat: a token holder with a lower role (or nobody at all) acts as someone else over MCP HTTP.

One caller per request, decided once by the SDK's auth layer from exactly one credential; the tools read
that verified caller and nothing else, and HTTP never falls back to the OS user."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from flexus_ops.gate.policy import Person, Policy, Role, os_principal
from flexus_ops.mcp_http import http_app, new_session_token
from flexus_ops.registry.registry import Registry
from tests.gatekit import make_registry, servers_with, writes
from tests.procs import free_port, wait_http
from tests.security.httpkit import (
    HOST,
    OPERATOR_SECRET,
    VIEWER_SECRET,
    parse_response,
    post,
    rpc_body,
    served,
    team,
)

INITIALIZE = rpc_body(
    "initialize",
    {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "attacker", "version": "1"}},
)


@pytest.fixture
async def registry(tmp_path: Path) -> Any:
    reg = make_registry(tmp_path, team())
    yield reg
    await reg.aclose()


@pytest.fixture
def url(registry: Registry) -> Iterator[str]:
    with served(registry) as running:
        yield running


def client(url: str, headers: list[tuple[str, str]], **options: Any) -> Client:
    transport = streamable_http_client(
        url, http_client=httpx2.AsyncClient(headers=httpx2.Headers([*headers, *HOST.items()]))
    )
    return Client(transport, **options)


# -- exactly one credential -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        # The finding: a non-Bearer header first, then a valid viewer's token; it ran as the OS user.
        [("Authorization", "Basic bWU6bWU="), ("Authorization", f"Bearer {VIEWER_SECRET}")],
        [("Authorization", f"Bearer {VIEWER_SECRET}"), ("Authorization", f"Bearer {OPERATOR_SECRET}")],
        [("Authorization", f"Bearer {OPERATOR_SECRET}"), ("authorization", f"Bearer {VIEWER_SECRET}")],
        [("AUTHORIZATION", f"Bearer {OPERATOR_SECRET}"), ("Authorization", "")],
    ],
    ids=["basic-then-viewer", "viewer-then-operator", "case-differs", "empty-second"],
)
async def test_two_authorization_headers_are_refused(registry: Registry, url: str, headers: Any) -> None:
    response = await post(url, headers, INITIALIZE)
    assert response.status_code == 401
    assert writes(registry) == [] and registry.store.audit_records() == []


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer  {OPERATOR_SECRET}",
        f"Bearer\t{OPERATOR_SECRET}",
        f"Bearer{OPERATOR_SECRET}",
        f"Bearer {OPERATOR_SECRET} extra",
        f"Bearer {OPERATOR_SECRET}, Bearer {VIEWER_SECRET}",
        f"Bearer {OPERATOR_SECRET},Bearer {VIEWER_SECRET}",
        f"Token {OPERATOR_SECRET}",
        "Basic bWU6bWU=",
        "Bearer",
    ],
)
async def test_anything_but_exactly_bearer_space_token_is_refused(url: str, value: str) -> None:
    assert (await post(url, [("Authorization", value)], INITIALIZE)).status_code == 401


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_the_scheme_is_case_insensitive(url: str, scheme: str) -> None:
    response = await post(url, [("Authorization", f"{scheme} {OPERATOR_SECRET}")], INITIALIZE)
    assert response.status_code == 200 and "result" in parse_response(response)


@pytest.mark.parametrize("name", ["access_token", "token", "Access_Token"])
async def test_a_token_in_the_query_string_is_refused(url: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The attacker's own HTTP client logs the URL it sends; that is the attacker's log, not the server's.
    monkeypatch.setattr(logging.getLogger("httpx2"), "level", logging.WARNING)
    with_header = await post(
        f"{url}?{name}={OPERATOR_SECRET}", [("Authorization", f"Bearer {OPERATOR_SECRET}")], INITIALIZE
    )
    alone = await post(f"{url}?{name}={OPERATOR_SECRET}", [], INITIALIZE)
    assert with_header.status_code == alone.status_code == 401


async def test_no_credential_and_unknown_tokens_are_refused(url: str) -> None:
    for headers in ([], [("Authorization", "Bearer fxt_not-a-token-anyone-holds")]):
        assert (await post(url, headers, INITIALIZE)).status_code == 401


# -- the verified caller is the one who acts ---------------------------------------------------


async def test_a_viewer_acts_as_the_viewer_and_cannot_stop(registry: Registry, url: str) -> None:
    target = servers_with(registry, "ACTIVE")[0]
    async with client(url, [("Authorization", f"Bearer {VIEWER_SECRET}")]) as viewer:
        listing = await viewer.call_tool("flexus_list_servers", {"limit": 1})
        stop = await viewer.call_tool("flexus_stop_servers", {"servers": [target["id"]]})
    assert not listing.is_error
    assert stop.is_error and "viewer may not use flexus_stop_servers" in stop.content[0].text  # type: ignore[union-attr]
    assert writes(registry) == []
    # The refused attempt is on record as the viewer's, over HTTP; nothing else is.
    [refused] = registry.store.audit_records()
    assert (refused.event, refused.person, refused.surface, refused.tool) == (
        "refused",
        "viewer",
        "mcp-http",
        "flexus_stop_servers",
    )


async def test_the_audit_names_exactly_the_verified_person(registry: Registry, url: str) -> None:
    target = servers_with(registry, "ACTIVE")[0]
    async with client(url, [("Authorization", f"Bearer {OPERATOR_SECRET}")]) as operator:
        first = await operator.call_tool("flexus_stop_servers", {"servers": [target["id"]]})
        token = first.structured_content["preview"]["confirmation_token"]  # type: ignore[index]
        done = await operator.call_tool("flexus_stop_servers", {"servers": [target["id"]], "confirmation_token": token})
    assert done.structured_content["result"]["status"] == "succeeded"  # type: ignore[index]
    assert {(r.person, r.surface) for r in registry.store.audit_records()} == {("me", "mcp-http")}


# -- no unauthenticated HTTP, even on loopback -------------------------------------------------


def os_only_policy() -> Policy:
    return Policy(people=[Person(id="me", roles=[Role.OPERATOR], principals=[os_principal()])])


async def test_without_token_principals_a_session_token_is_required(tmp_path: Path) -> None:
    reg = make_registry(tmp_path, os_only_policy())
    try:
        with pytest.raises(ValueError, match="session token"):
            http_app(reg, "127.0.0.1", 0)
        with pytest.raises(ValueError, match="without authentication"):
            http_app(reg, "0.0.0.0", 8765, session_token=new_session_token())
        session = new_session_token()
        with served(reg, session_token=session) as url:
            anonymous = await post(url, [], INITIALIZE)
            async with client(url, [("Authorization", f"Bearer {session}")]) as me:
                listing = await me.call_tool("flexus_list_servers", {"limit": 1})
        assert anonymous.status_code == 401
        assert not listing.is_error
    finally:
        await reg.aclose()


async def test_health_needs_no_credentials_and_says_nothing_else(registry: Registry, url: str) -> None:
    base = url.removesuffix("/mcp")
    async with httpx2.AsyncClient(headers=HOST) as raw:
        alive = await raw.get(f"{base}/healthz")
        ready = await raw.get(f"{base}/readyz")
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


@pytest.mark.slow
def test_the_cli_writes_the_session_token_to_a_private_file_and_never_logs_it(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "FLEXUS_STATE_DIR": str(tmp_path / "state")}
    command = [str(Path(sys.executable).parent / "flexus-ops"), "mcp", "--transport", "http", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
        token_file = tmp_path / "state" / "mcp-http.token"
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        headers = {"Host": f"127.0.0.1:{port}", "Accept": "application/json, text/event-stream"}
        url = f"http://127.0.0.1:{port}/mcp"
        anonymous = httpx2.post(url, headers=headers, json=INITIALIZE)
        authorised = httpx2.post(url, headers=headers | {"Authorization": f"Bearer {token}"}, json=INITIALIZE)
        assert anonymous.status_code == 401 and authorised.status_code == 200
    finally:
        process.terminate()
        _out, err = process.communicate(timeout=15)
    assert str(token_file) in err and token not in err


async def test_a_principal_removed_from_the_policy_file_is_refused_without_a_restart(tmp_path: Path) -> None:
    """A leaked token is revoked by editing the policy file: a running server must honour it at once."""
    from flexus_ops.config import Settings
    from flexus_ops.gate.policy import token_principal

    policy = tmp_path / "policy.toml"

    def write(*people: tuple[str, str]) -> None:
        policy.write_text(
            "".join(
                f'[[people]]\nid = "{who}"\nroles = ["viewer"]\nprincipals = ["{token_principal(token)}"]\n'
                for who, token in people
            )
        )

    write(("viewer", VIEWER_SECRET))
    reg = Registry(Settings(state_dir=tmp_path / "state", policy_path=policy, sandbox_job_seconds=0.1))
    try:
        with served(reg) as url:
            assert (await post(url, [("Authorization", f"Bearer {VIEWER_SECRET}")], INITIALIZE)).status_code == 200
            write(("newcomer", OPERATOR_SECRET))  # the viewer's token leaked: removed; someone else added
            deadline = asyncio.get_running_loop().time() + 15
            while (await post(url, [("Authorization", f"Bearer {VIEWER_SECRET}")], INITIALIZE)).status_code != 401:
                assert asyncio.get_running_loop().time() < deadline, "the removed token still works"
                await asyncio.sleep(0.2)
            assert (await post(url, [("Authorization", f"Bearer {OPERATOR_SECRET}")], INITIALIZE)).status_code == 200
            policy.write_text("[[people]\nbroken")  # a broken edit fails closed, it does not keep the old list
            while (await post(url, [("Authorization", f"Bearer {OPERATOR_SECRET}")], INITIALIZE)).status_code != 401:
                assert asyncio.get_running_loop().time() < deadline + 15, "a broken policy left the old one in force"
                await asyncio.sleep(0.2)
    finally:
        await reg.aclose()
