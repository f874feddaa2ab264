"""MCP resources, prompts and completions: each answers through a real client, goes through the registry
(who may read, what is offered), and only what answers is advertised."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import PromptReference, ResourceTemplateReference

from flexus_ops.core.plans import ChangeOutput
from flexus_ops.gate.policy import GateSettings, Person, Policy, Role, os_principal
from flexus_ops.mcp_server import build_server
from flexus_ops.registry.completions import Completer
from flexus_ops.registry.registry import Registry
from tests.gatekit import ALICE, DAVE, make_registry, servers_with, team_policy

MODES = ["legacy", "auto"]


def policy_with(*roles: Role) -> Policy:
    return Policy(
        settings=GateSettings(),
        people=[
            Person(id="me", roles=list(roles), principals=[os_principal()]),
            Person(id="lead", roles=[Role.APPROVER], principals=["slack:ULEAD"]),
        ],
    )


@pytest.fixture
async def registry(tmp_path: Path):
    reg = make_registry(tmp_path, policy_with(Role.OPERATOR))
    yield reg
    await reg.aclose()


def a_server(registry: Registry) -> dict[str, Any]:
    return servers_with(registry, "ACTIVE")[0]


@pytest.mark.parametrize("mode", MODES)
async def test_capabilities_advertise_what_answers(registry: Registry, mode: str) -> None:
    async with Client(build_server(registry), mode=mode) as client:
        capabilities = client.server_capabilities
        assert capabilities.resources is not None
        assert capabilities.prompts is not None
        assert capabilities.completions is not None
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        offered = {spec.name for spec in registry.tools()}
        expected = {"flexus://servers/{server}", "flexus://jobs/{job_id}"}
        if "flexus_show_action" in offered:
            expected.add("flexus://actions/{action_id}")
        assert templates == expected
        assert (await client.list_prompts()).prompts, "prompts are advertised, so some must be listed"


@pytest.mark.parametrize("mode", MODES)
async def test_a_server_resource_is_the_show_tools_answer(registry: Registry, mode: str) -> None:
    server = a_server(registry)
    async with Client(build_server(registry), mode=mode) as client:
        for key in (server["id"], server["name"]):
            result = await client.read_resource(f"flexus://servers/{key}")
            (content,) = result.contents
            assert content.mime_type == "application/json"
            document = json.loads(content.text)
            assert document["cloud"] == "SANDBOX"
            assert document["server"]["id"] == server["id"]
            assert document["server"]["status"] == "ACTIVE"


async def test_an_unknown_server_is_an_error_naming_it(registry: Registry) -> None:
    async with Client(build_server(registry)) as client:
        with pytest.raises(MCPError) as raised:
            await client.read_resource("flexus://servers/no-such-server-here")
    assert "no-such-server-here" in str(raised.value)


async def test_a_job_resource_reports_the_job(registry: Registry) -> None:
    server = a_server(registry)
    async with Client(build_server(registry)) as client:
        preview = await client.call_tool("flexus_stop_servers", {"servers": [server["id"]], "wait": False})
        token = preview.structured_content["preview"]["confirmation_token"]
        done = await client.call_tool(
            "flexus_stop_servers", {"servers": [server["id"]], "wait": False, "confirmation_token": token}
        )
        (job_id,) = done.structured_content["result"]["job_ids"]
        document = json.loads((await client.read_resource(f"flexus://jobs/{job_id}")).contents[0].text)
    assert document["job_id"] == job_id
    assert [entry["server_id"] for entry in document["servers"]] == [server["id"]]


async def test_someone_outside_the_policy_reads_nothing(tmp_path: Path) -> None:
    stranger_policy = Policy(
        settings=GateSettings(), people=[Person(id="lead", roles=[Role.ADMIN], principals=["slack:ULEAD"])]
    )
    reg = make_registry(tmp_path, stranger_policy)
    try:
        server = a_server(reg)
        async with Client(build_server(reg)) as client:
            with pytest.raises(MCPError, match="not a person in the policy"):
                await client.read_resource(f"flexus://servers/{server['id']}")
            with pytest.raises(MCPError, match="not a person in the policy"):
                await client.complete(
                    ResourceTemplateReference(uri="flexus://servers/{server}"), {"name": "server", "value": ""}
                )
        assert reg.completer.listings == 0, "a refused caller must not cause a fleet listing"
    finally:
        await reg.aclose()


# -- prompts ------------------------------------------------------------------------------------


async def test_runbooks_fill_in_their_arguments(registry: Registry) -> None:
    server = a_server(registry)
    async with Client(build_server(registry)) as client:
        names = {prompt.name for prompt in (await client.list_prompts()).prompts}
        assert "diagnose_start_failure" in names
        result = await client.get_prompt("diagnose_start_failure", {"server": server["name"]})
    text = result.messages[0].content.text
    assert server["name"] in text and "flexus_show_server" in text


async def test_read_only_mode_offers_no_runbook_that_changes_servers(tmp_path: Path) -> None:
    reg = make_registry(tmp_path, policy_with(Role.OPERATOR), read_only=True)
    try:
        async with Client(build_server(reg)) as client:
            names = {prompt.name for prompt in (await client.list_prompts()).prompts}
            templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert names == {"diagnose_start_failure"}
        assert "flexus://servers/{server}" in templates
    finally:
        await reg.aclose()


# -- completions --------------------------------------------------------------------------------


async def test_server_names_and_ids_complete_from_one_listing(registry: Registry) -> None:
    server = a_server(registry)
    ref = ResourceTemplateReference(uri="flexus://servers/{server}")
    async with Client(build_server(registry)) as client:
        for typed in (server["name"][:3], server["name"], server["id"][:6]):
            completion = (await client.complete(ref, {"name": "server", "value": typed})).completion
            assert completion.values, typed
            assert all(value.casefold().startswith(typed.casefold()) for value in completion.values)
            assert server["name"] in completion.values or server["id"] in completion.values
            assert completion.total is not None and completion.total >= len(completion.values)
    assert registry.completer.listings == 1, "keystrokes are served from the index, not a listing each"


async def test_a_short_prefix_is_capped_at_the_protocols_hundred(tmp_path: Path) -> None:
    ref = ResourceTemplateReference(uri="flexus://servers/{server}")
    reg = make_registry(tmp_path, policy_with(Role.OPERATOR), sandbox_servers=200)
    try:
        async with Client(build_server(reg)) as client:
            completion = (await client.complete(ref, {"name": "server", "value": ""})).completion
    finally:
        await reg.aclose()
    assert len(completion.values) == 100
    assert completion.has_more and completion.total is not None and completion.total > 100


async def test_tags_complete_for_runbook_arguments(registry: Registry) -> None:
    async with Client(build_server(registry)) as client:
        completion = (
            await client.complete(PromptReference(name="diagnose_start_failure"), {"name": "server", "value": "w"})
        ).completion
        assert all(value.casefold().startswith("w") for value in completion.values)
        # Job and action ids cannot be guessed from the fleet: nothing is offered, and nothing is listed.
        nothing = (
            await client.complete(
                ResourceTemplateReference(uri="flexus://jobs/{job_id}"), {"name": "job_id", "value": ""}
            )
        ).completion
    assert nothing.values == []
    sandbox_tags = {tag for view in servers_with(registry, "ACTIVE") for tag in view["tags"]}
    index = await registry.completer.index()
    assert {tag for tag in index.tags if "=" in tag} >= {tag for tag in sandbox_tags if "=" in tag}
    env = index.suggest("tag", "env=")
    assert env.values and all(value.startswith("env=") for value in env.values)


async def test_the_index_is_refreshed_once_it_is_old(registry: Registry) -> None:
    now = [1000.0]
    completer = Completer(registry.client, ttl=30, clock=lambda: now[0])
    await completer.suggest("name", "")
    await completer.suggest("name", "a")
    assert completer.listings == 1
    now[0] += 31
    await completer.suggest("name", "a")
    assert completer.listings == 2


async def test_an_action_resource_answers_its_requester_and_no_one_else(tmp_path: Path) -> None:
    """The action template goes through flexus_show_action: another operator cannot tell it exists."""
    from flexus_ops.core.tools import Caller

    reg = make_registry(tmp_path, team_policy())
    try:
        server = a_server(reg)
        preview = await reg.call(ALICE, "flexus_stop_servers", {"servers": [server["id"]]})
        assert isinstance(preview, ChangeOutput) and preview.preview is not None
        action_id = preview.preview.action_id
        uri = f"flexus://actions/{action_id}"

        def as_caller(caller: Caller) -> Any:
            return build_server(reg, caller_for=lambda _ctx: caller)

        async with Client(as_caller(ALICE)) as client:
            document = json.loads((await client.read_resource(uri)).contents[0].text)
        assert document["action"]["id"] == action_id and document["action"]["state"] == "pending"
        async with Client(as_caller(DAVE)) as client:
            with pytest.raises(MCPError) as refused:
                await client.read_resource(uri)
            with pytest.raises(MCPError) as unknown:
                await client.read_resource("flexus://actions/0123456789abcdef0123456789abcdef")
        assert str(refused.value) == str(unknown.value).replace("0123456789abcdef0123456789abcdef", action_id)
    finally:
        await reg.aclose()


async def test_the_rolling_reboot_runbook_is_offered_with_its_tools(registry: Registry) -> None:
    async with Client(build_server(registry)) as client:
        names = {prompt.name for prompt in (await client.list_prompts()).prompts}
        assert {"rolling_reboot", "rotate_root_passwords", "diagnose_start_failure"} <= names
        result = await client.get_prompt("rolling_reboot", {"tag": "role=web", "wave_size": "5"})
    text = result.messages[0].content.text
    assert '"select": {"tag": "role=web"}' in text and '"size": 5' in text and "flexus_show_action" in text
