"""OAuth for MCP over HTTP, as a team uses it: people sign in at their identity provider, the client finds
the issuer from the protected resource metadata, and the gate and the audit see the person the token is
for (``oidc:<issuer>#<sub>`` in the policy). The attacks are in tests/security/test_oauth_*.py."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from flexus_ops.gate.policy import Person, Policy, Role, oidc_principal
from flexus_ops.mcp_http import http_app
from flexus_ops.registry.registry import Registry
from tests.gatekit import make_registry, servers_with
from tests.procs import FLEXUS_OPS, clean_env, free_port, wait_http
from tests.security.httpkit import served
from tests.security.oidckit import SUBJECT, Issuer

AUDIENCE = "http://127.0.0.1:0/mcp"


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with Issuer().running() as running:
        yield running


@pytest.fixture
async def registry(tmp_path: Path, issuer: Issuer) -> Any:
    policy = Policy(
        people=[Person(id="alice", roles=[Role.OPERATOR], principals=[oidc_principal(issuer.url, SUBJECT)])]
    )
    reg = make_registry(tmp_path, policy, oauth_issuer=issuer.url)
    yield reg
    await reg.aclose()


def client(url: str, token: str, host: str = "127.0.0.1:0") -> Client:
    headers = {"Authorization": f"Bearer {token}", "Host": host}
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers)))


async def test_a_person_signed_in_at_the_issuer_changes_a_server_and_the_audit_names_them(
    registry: Registry, issuer: Issuer
) -> None:
    target = servers_with(registry, "ACTIVE")[0]
    with served(registry) as url:
        async with client(url, issuer.token(AUDIENCE)) as alice:
            first = await alice.call_tool("flexus_stop_servers", {"servers": [target["id"]]})
            token = first.structured_content["preview"]["confirmation_token"]  # type: ignore[index]
            done = await alice.call_tool(
                "flexus_stop_servers", {"servers": [target["id"]], "confirmation_token": token}
            )
    assert done.structured_content["result"]["status"] == "succeeded"  # type: ignore[index]
    records = registry.store.audit_records()
    assert records and {(r.person, r.surface) for r in records} == {("alice", "mcp-http")}
    action = registry.store.get_action(next(r.action_id for r in records if r.action_id))
    assert action is not None and action["principal"] == f"oidc:{issuer.url}#{SUBJECT}"


async def test_the_metadata_names_the_issuer_and_the_resource_at_both_places(
    registry: Registry, issuer: Issuer
) -> None:
    with served(registry) as url:
        base = url.removesuffix("/mcp")
        async with httpx2.AsyncClient(headers={"Host": "127.0.0.1:0"}) as raw:
            suffixed = await raw.get(f"{base}/.well-known/oauth-protected-resource/mcp")
            root = await raw.get(f"{base}/.well-known/oauth-protected-resource")
            anonymous = await raw.post(url, json={})
    for response in (suffixed, root):
        assert response.status_code == 200
        document = response.json()
        assert document["resource"] == AUDIENCE
        assert document["authorization_servers"] == [issuer.url]
        assert document["bearer_methods_supported"] == ["header"]
    assert anonymous.status_code == 401
    assert (
        'resource_metadata="http://127.0.0.1:0/.well-known/oauth-protected-resource/mcp"'
        in (anonymous.headers["www-authenticate"])
    )


def test_oauth_allows_binding_beyond_loopback_with_a_public_url(registry: Registry) -> None:
    http_app(registry, "0.0.0.0", 8765, public_url="https://flexus.example.com")  # no token principals needed
    with pytest.raises(ValueError, match="--public-url"):
        http_app(registry, "0.0.0.0", 8765)


def test_without_oauth_there_is_no_metadata_to_find(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from tests.security.httpkit import team

    reg = make_registry(tmp_path, team())
    with TestClient(http_app(reg, "127.0.0.1", 0), base_url="http://127.0.0.1:0") as raw:
        assert raw.get("/.well-known/oauth-protected-resource/mcp").status_code == 404
        assert "resource_metadata" not in raw.post("/mcp", json={}).headers["www-authenticate"]


@pytest.mark.slow
async def test_the_command_serves_oauth_behind_a_public_name(tmp_path: Path, issuer: Issuer) -> None:
    """The real `flexus-ops mcp --transport http`, configured from the environment and its flags as a
    deployment behind a load balancer would be: a client reaches it by a name, as the person signed in."""
    port = free_port()
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[[people]]\nid = "alice"\nroles = ["viewer"]\nprincipals = ["{oidc_principal(issuer.url, SUBJECT)}"]\n'
    )
    public = f"http://127.0.0.1:{port}"
    env = clean_env(tmp_path / "state", FLEXUS_OAUTH_ISSUER=issuer.url, FLEXUS_POLICY=str(policy))
    command = [FLEXUS_OPS, "mcp", "--transport", "http", "--port", str(port), "--public-url", public]
    command += ["--allowed-host", "flexus.example.com"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    token = issuer.token(f"{public}/mcp")
    try:
        wait_http(f"{public}/healthz", process)
        async with httpx2.AsyncClient() as raw:
            metadata = (await raw.get(f"{public}/.well-known/oauth-protected-resource/mcp")).json()
            anonymous = await raw.post(f"{public}/mcp", headers={"Accept": "application/json"}, json={})
        assert metadata["authorization_servers"] == [issuer.url] and metadata["resource"] == f"{public}/mcp"
        assert anonymous.status_code == 401 and "resource_metadata=" in anonymous.headers["www-authenticate"]
        async with client(f"{public}/mcp", token, host="flexus.example.com") as alice:
            listing = await alice.call_tool("flexus_list_servers", {"limit": 1})
            stop = await alice.call_tool("flexus_stop_servers", {"servers": ["web-01"]})
        assert not listing.is_error and listing.structured_content["count"] == 30  # type: ignore[index]
        assert stop.is_error and "alice may not use flexus_stop_servers" in stop.content[0].text  # type: ignore[union-attr]
        headers = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=headers | {"Host": "attacker.example.net"}) as rebinding:
            assert (await rebinding.post(f"{public}/mcp", json={})).status_code == 421
    finally:
        process.terminate()
        _out, err = process.communicate(timeout=15)
    assert token not in err
    assert not (tmp_path / "state" / "mcp-http.token").exists()  # OAuth configured: no session token made


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "variables", "code", "says"),
    [
        (["--public-url", "http://flexus.example.com"], {}, 2, "--public-url: must be https"),
        (["--public-url", "https://flexus.example.com/mcp"], {}, 2, "--public-url: give the server's base URL"),
        (["--allowed-host", "*"], {}, 2, "--allowed-host: '*' is not a host name"),
        ([], {"FLEXUS_OAUTH_ISSUER": "http://idp.example.com"}, 4, "FLEXUS_OAUTH_ISSUER: must be https"),
        ([], {"FLEXUS_ALLOWED_HOSTS": "a.example.com,*.example.com"}, 4, "FLEXUS_ALLOWED_HOSTS: '*.example.com'"),
        (["--host", "0.0.0.0"], {"FLEXUS_OAUTH_ISSUER": "https://idp.example.com"}, 2, "set --public-url"),
    ],
)
def test_the_command_names_the_bad_flag_or_variable(
    tmp_path: Path, flags: list[str], variables: dict[str, str], code: int, says: str
) -> None:
    command = [FLEXUS_OPS, "mcp", "--transport", "http", "--port", str(free_port()), *flags]
    env = clean_env(tmp_path / "state", **variables)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == code and says in result.stderr, result.stderr


@pytest.mark.parametrize("principal", ["oidc:alice", "oidc:https://idp.example.com", "oidc:idp.example.com#alice"])
def test_an_oidc_principal_must_name_the_issuer_url_and_the_subject(principal: str) -> None:
    with pytest.raises(ValueError, match=r"must look like 'oidc:<issuer URL>#<sub>'"):
        Person(id="alice", principals=[principal])
