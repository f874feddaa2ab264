"""The MCP surface through real clients: in memory (both protocol eras), streamable HTTP, and stdio."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ElicitResult

from flexus_ops.gate.policy import GateSettings, Person, Policy, Role, os_principal, token_principal
from flexus_ops.mcp_http import http_app
from flexus_ops.mcp_server import build_server, tool_catalog
from flexus_ops.registry.registry import Registry
from tests.gatekit import make_registry, servers_with, writes
from tests.procs import serve_app

ROOT = Path(__file__).resolve().parent.parent
MODES = ["legacy", "auto"]  # the 2025-11-25 handshake era, and the 2026-07-28 stateless era
TOKEN = "fxt_test-token-for-alice-0123456789"


def local_policy(**settings: Any) -> Policy:
    return Policy(
        settings=GateSettings(**settings),
        people=[
            Person(id="me", roles=[Role.OPERATOR], principals=[os_principal(), token_principal(TOKEN)]),
            Person(id="lead", roles=[Role.APPROVER], principals=["slack:ULEAD"]),
        ],
    )


@pytest.fixture
async def registry(tmp_path: Path):
    reg = make_registry(tmp_path, local_policy())
    yield reg
    await reg.aclose()


def structured(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    return result.structured_content


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


class Elicitor:
    """A client-side person: answers every confirmation with ``action`` and remembers the questions."""

    def __init__(self, action: str = "accept", confirm: bool = True) -> None:
        self.action = action
        self.confirm = confirm
        self.questions: list[str] = []

    async def __call__(self, _ctx: Any, params: Any) -> ElicitResult:
        self.questions.append(params.message)
        content = {"confirm": self.confirm} if self.action == "accept" else None
        return ElicitResult(action=self.action, content=content)


# -- the catalog ------------------------------------------------------------------------------


def test_checked_in_catalog_matches_the_code(registry: Registry) -> None:
    """Any schema change is a reviewed diff: run `flexus-ops tools export --to manifests/tools.json` and commit it."""
    checked_in = json.loads((ROOT / "manifests" / "tools.json").read_text())
    assert tool_catalog(registry) == checked_in


def test_annotations_come_from_the_safety_class(registry: Registry) -> None:
    catalog = {tool["name"]: tool for tool in tool_catalog(registry)}
    for name in ("flexus_list_servers", "flexus_show_server", "flexus_show_job"):
        assert catalog[name]["annotations"] == {
            "title": catalog[name]["title"],
            "readOnlyHint": True,
            "destructiveHint": False,
            "idempotentHint": True,
            "openWorldHint": True,
        }
    assert catalog["flexus_stop_servers"]["annotations"]["destructiveHint"] is True
    assert catalog["flexus_start_servers"]["annotations"]["destructiveHint"] is False
    assert catalog["flexus_start_servers"]["annotations"]["readOnlyHint"] is False
    assert catalog["flexus_reboot_servers"]["annotations"]["idempotentHint"] is False
    for tool in catalog.values():
        assert set(tool["annotations"]) == {
            "title",
            "readOnlyHint",
            "destructiveHint",
            "idempotentHint",
            "openWorldHint",
        }
        assert tool["outputSchema"]["type"] == "object"


def test_every_reference_in_the_catalog_resolves(registry: Registry) -> None:
    """A $ref whose $defs entry was compacted away leaves a client unable to read the schema."""

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [ref for value in node.values() for ref in refs(value)]
        return [ref for value in node for ref in refs(value)] if isinstance(node, list) else []

    for tool in tool_catalog(registry):
        for kind in ("inputSchema", "outputSchema"):
            schema = tool[kind] or {}
            for ref in refs(schema):
                name = ref.removeprefix("#/$defs/")
                assert name in schema.get("$defs", {}), f"{tool['name']} {kind}: {ref} points nowhere"


def test_catalog_is_small(registry: Registry) -> None:
    size = len(json.dumps(tool_catalog(registry), separators=(",", ":")))
    assert size <= 11_000, f"the tool catalog grew to {size} bytes; every client pays for it on every turn"


# -- in memory, both eras ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_reads_give_structured_content_and_short_text(registry: Registry, mode: str) -> None:
    async with Client(build_server(registry), mode=mode) as client:
        result = await client.call_tool("flexus_list_servers", {"limit": 3, "status": "ACTIVE"})
    assert not result.is_error
    data = structured(result)
    assert data["count"] > 3 and len(data["servers"]) == 3
    text = text_of(result)
    assert text.startswith("[SANDBOX cloud]") and "{" not in text


@pytest.mark.parametrize("mode", MODES)
async def test_without_elicitation_a_change_is_a_preview_then_a_token_confirms(registry: Registry, mode: str) -> None:
    targets = [s["id"] for s in servers_with(registry, "ACTIVE")[:2]]
    async with Client(build_server(registry), mode=mode) as client:
        first = await client.call_tool("flexus_stop_servers", {"servers": targets})
        preview = structured(first)["preview"]
        assert "PREVIEW - nothing has changed" in text_of(first)
        assert writes(registry) == []
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))

        second = await client.call_tool(
            "flexus_stop_servers",
            {"servers": targets, "confirmation_token": preview["confirmation_token"]},
            progress_callback=on_progress,
        )
        assert structured(second)["result"]["status"] == "succeeded"
        again = await client.call_tool(
            "flexus_stop_servers", {"servers": targets, "confirmation_token": preview["confirmation_token"]}
        )
    # The same person replaying a used token gets the recorded outcome, marked, and nothing runs again.
    assert not again.is_error and structured(again)["result"]["replay"] is True and "REPLAY" in text_of(again)
    assert len(writes(registry)) == 1
    assert progress and progress[-1][0] == progress[-1][1] == 2


@pytest.mark.parametrize("mode", MODES)
async def test_elicitation_accept_runs_once_and_shows_the_plan(registry: Registry, mode: str) -> None:
    target = servers_with(registry, "ACTIVE")[0]
    person = Elicitor("accept")
    async with Client(build_server(registry), mode=mode, elicitation_callback=person) as client:
        result = await client.call_tool("flexus_reboot_servers", {"servers": [target["name"]], "type": "HARD"})
    assert not result.is_error, text_of(result)
    assert structured(result)["result"]["status"] == "succeeded"
    assert len(person.questions) == 1
    assert f"{target['name']} (ACTIVE): will reboot (HARD)" in person.questions[0]
    assert [w.operation for w in writes(registry)] == ["BatchRebootServers"]
    events = [r.event for r in registry.store.audit_records()]
    assert events == ["preview", "confirmed", "submitted", "executed"]
    confirmed = registry.store.audit_records()[1]
    assert confirmed.detail["via"] == "mcp"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("action", "confirm"), [("decline", True), ("cancel", True), ("accept", False)])
async def test_elicitation_refusal_changes_nothing(registry: Registry, mode: str, action: str, confirm: bool) -> None:
    target = servers_with(registry, "ACTIVE")[0]
    async with Client(build_server(registry), mode=mode, elicitation_callback=Elicitor(action, confirm)) as client:
        result = await client.call_tool("flexus_stop_servers", {"servers": [target["id"]]})
    assert result.is_error and "nothing was changed" in text_of(result)
    assert writes(registry) == []


@pytest.mark.parametrize("mode", MODES)
async def test_dry_run_never_asks(registry: Registry, mode: str) -> None:
    person = Elicitor("accept")
    target = servers_with(registry, "ACTIVE")[0]
    async with Client(build_server(registry), mode=mode, elicitation_callback=person) as client:
        result = await client.call_tool("flexus_stop_servers", {"servers": [target["id"]], "dry_run": True})
    assert "preview" in structured(result)
    assert person.questions == [] and writes(registry) == []


@pytest.mark.parametrize("mode", MODES)
async def test_bad_arguments_name_the_field(registry: Registry, mode: str) -> None:
    async with Client(build_server(registry), mode=mode) as client:
        unknown = await client.call_tool("flexus_stop_servers", {"servers": ["web-01"], "sever": 1})
        bad_type = await client.call_tool("flexus_stop_servers", {"servers": ["web-01"], "type": "GENTLE"})
        missing = await client.call_tool("flexus_update_server", {"server": "web-01"})
    assert unknown.is_error and text_of(unknown).startswith("[SANDBOX cloud] sever: is not an argument")
    assert bad_type.is_error and "type:" in text_of(bad_type)
    assert missing.is_error and "set at least one of" in text_of(missing)
    assert registry.client.sandbox is not None and registry.client.sandbox.request_log == []


async def test_read_only_server_lists_only_read_tools(tmp_path: Path) -> None:
    reg = make_registry(tmp_path, local_policy(), read_only=True)
    try:
        async with Client(build_server(reg)) as client:
            tools = await client.list_tools()
        assert {t.name for t in tools.tools} == {
            "flexus_list_servers",
            "flexus_show_server",
            "flexus_show_job",
            "flexus_show_action",
        }
        assert all(t.annotations and t.annotations.read_only_hint for t in tools.tools)
    finally:
        await reg.aclose()


async def test_password_never_appears_in_results(registry: Registry) -> None:
    password = "Mcp-Secret-77pass"
    target = servers_with(registry, "ACTIVE")[0]
    args = {"servers": [target["id"]], "reason": "rotation", "new_password": password}
    async with Client(build_server(registry)) as client:
        first = await client.call_tool("flexus_reset_servers_password", args)
        token = structured(first)["preview"]["confirmation_token"]
        second = await client.call_tool("flexus_reset_servers_password", {**args, "confirmation_token": token})
        bad = await client.call_tool("flexus_reset_servers_password", {**args, "new_password": "short"})
    assert structured(second)["result"]["status"] == "awaiting_approval"
    for result in (first, second, bad):
        assert password not in json.dumps(result.model_dump(mode="json"))
    assert "short" not in text_of(bad)


# -- streamable HTTP --------------------------------------------------------------------------


@pytest.fixture
def http_server(registry: Registry) -> Iterator[str]:
    with serve_app(http_app(registry, "127.0.0.1", 0), lifespan="on") as url:
        yield f"{url}/mcp"


def http_client(url: str, token: str | None, **options: Any) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # The allow-list was built for the configured port (0); present the Host it expects.
    transport = streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers | {"Host": "127.0.0.1:0"}))
    return Client(transport, **options)


@pytest.mark.parametrize("mode", MODES)
async def test_http_with_a_token_lists_and_calls(registry: Registry, http_server: str, mode: str) -> None:
    async with http_client(http_server, TOKEN, mode=mode) as client:
        tools = await client.list_tools()
        assert len(tools.tools) == 9
        result = await client.call_tool("flexus_list_servers", {"limit": 2})
    assert structured(result)["count"] == 30


async def test_http_refuses_unknown_tokens(registry: Registry, http_server: str) -> None:
    async with httpx2.AsyncClient() as raw:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = await raw.post(http_server, headers=headers | {"Host": "127.0.0.1:0"}, json={})
            assert response.status_code == 401


async def test_http_modern_era_elicits_across_the_stateless_transport(registry: Registry, http_server: str) -> None:
    target = servers_with(registry, "ACTIVE")[0]
    person = Elicitor("accept")
    async with http_client(http_server, TOKEN, mode="auto", elicitation_callback=person) as client:
        result = await client.call_tool("flexus_stop_servers", {"servers": [target["id"]]})
    assert structured(result)["result"]["status"] == "succeeded", text_of(result)
    assert len(person.questions) == 1 and len(writes(registry)) == 1


async def test_http_legacy_era_falls_back_to_the_token(registry: Registry, http_server: str) -> None:
    """A 2025-11-25 client on stateless HTTP has no back-channel: the preview and its token stand in."""
    target = servers_with(registry, "ACTIVE")[0]
    person = Elicitor("accept")
    async with http_client(http_server, TOKEN, mode="legacy", elicitation_callback=person) as client:
        result = await client.call_tool("flexus_stop_servers", {"servers": [target["id"]]})
    assert "preview" in structured(result) and person.questions == [] and writes(registry) == []


def test_serving_beyond_loopback_without_tokens_is_refused(tmp_path: Path) -> None:
    reg = make_registry(tmp_path, Policy(people=[Person(id="me", roles=[Role.OPERATOR], principals=[os_principal()])]))
    with pytest.raises(ValueError, match="without authentication"):
        http_app(reg, "0.0.0.0", 8765)


# -- stdio, the real command ------------------------------------------------------------------


@pytest.mark.slow
async def test_stdio_server_as_clients_run_it(tmp_path: Path) -> None:
    env = {**os.environ, "FLEXUS_STATE_DIR": str(tmp_path), "FLEXUS_SANDBOX_JOB_SECONDS": "0.1"}
    command = str(Path(sys.executable).parent / "flexus-ops")
    params = StdioServerParameters(command=command, args=["mcp"], env=env)
    async with Client(params, mode="legacy") as client:
        tools = await client.list_tools()
        listing = await client.call_tool("flexus_list_servers", {"limit": 1})
        preview = await client.call_tool("flexus_start_servers", {"servers": ["web-01"], "dry_run": True})
    assert len(tools.tools) == 9
    assert structured(listing)["count"] == 30
    assert "preview" in structured(preview)
