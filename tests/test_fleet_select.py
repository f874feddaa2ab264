"""Fleet operations (#12): servers selected by filter and previewed exactly, the blast-radius caps of the
policy, what a change costs (billing mode) and where it will fail (frozen servers), and the undo offered
with a finished change's result."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkecs.v2 import EcsClient, ListServersDetailsRequest

from flexus_ops.bots.chat.parse import ChangeRequest, Problem, ReadRequest, parse
from flexus_ops.core.errors import BadRequest, InvalidInput, Refused
from flexus_ops.core.plans import ActionResult, ChangeOutput, Preview
from flexus_ops.gate.policy import GateSettings, Person, Policy, Role
from flexus_ops.registry.registry import Registry
from flexus_ops.registry.render import render
from flexus_ops.sandbox.backend import FROZEN_CODE
from tests.gatekit import ALICE, BOB, DAVE, make_registry, sandbox_of, team_policy, writes
from tests.test_cli import run
from tests.test_official_sdk import _free_port, _sim_command

AK = "SELECTTESTAK00000001"
SK = "select-test-secret-key-0123456789"
PID = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    reg = make_registry(tmp_path, sandbox_servers=120)
    yield reg
    await reg.aclose()


async def preview(registry: Registry, caller: Any, tool: str, arguments: dict[str, Any]) -> Preview:
    out = await registry.call(caller, tool, arguments)
    assert isinstance(out, ChangeOutput) and out.preview is not None
    return out.preview


async def confirm(registry: Registry, caller: Any, tool: str, arguments: dict[str, Any]) -> ActionResult:
    shown = await preview(registry, caller, tool, arguments)
    assert shown.confirmation_token, shown.next_step
    out = await registry.call(caller, tool, {**arguments, "confirmation_token": shown.confirmation_token})
    assert isinstance(out, ChangeOutput) and out.result is not None
    return out.result


def backend_of(registry: Registry) -> Any:
    return sandbox_of(registry).backend


def named(registry: Registry, prefix: str) -> list[Any]:
    return [s for s in backend_of(registry).servers.values() if s.name.startswith(prefix)]


def force(registry: Registry, name: str, status: str) -> Any:
    """Put a server in a state directly (as if it had been there all along): tests need both kinds."""
    server = next(s for s in backend_of(registry).servers.values() if s.name == name)
    server.vm_state, server.power_state = ("active", 1) if status == "ACTIVE" else ("stopped", 4)
    return server


# -- selection against the official SDK's listing ---------------------------------------------


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log_path = tmp_path_factory.mktemp("sim") / "stderr.txt"
    args = [*_sim_command(), "--host", "127.0.0.1", "--port", str(port), "--servers", "300", "--seed", "12"]
    args += ["--ak", AK, "--sk", SK, "--project-id", PID, "--job-seconds", "0.2"]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        try:
            for _ in range(300):
                if process.poll() is not None:
                    pytest.fail(f"flexus-ops sim exited: {log_path.read_text()}")
                try:
                    if httpx.get(f"{url}/_sandbox/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            else:
                pytest.fail(f"flexus-ops sim did not answer: {log_path.read_text()}")
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


SELECTIONS = [
    {"name": "web"},  # the API's fuzzy match also finds staging-web-*: narrowed to the prefix
    {"name": "web-0", "status": "ACTIVE"},
    {"tag": "env=staging"},
    {"tag": "env=prod", "not_tag": "critical", "flavor": "hl1.4u.8g"},
    {"ip": "192.168.64"},
    {"name": "w.b"},  # "." is any character to the API; a prefix is literal text
    {"status": "SHUTOFF", "tag": "role=db"},
]


@pytest.mark.slow
@pytest.mark.parametrize("selection", SELECTIONS, ids=lambda s: " ".join(f"{k}={v}" for k, v in s.items()))
async def test_selection_resolves_to_what_the_official_sdk_lists(
    sim_url: str, tmp_path: Path, selection: dict[str, str]
) -> None:
    ecs = EcsClient.new_builder().with_credentials(BasicCredentials(AK, SK, PID)).with_endpoints([sim_url]).build()
    query = {"tags" if k == "tag" else "not_tags" if k == "not_tag" else k: v for k, v in selection.items()}
    listed = ecs.list_servers_details(ListServersDetailsRequest(limit=1000, **query)).servers
    prefix = selection.get("name")
    expected = sorted(s.id for s in listed if prefix is None or s.name.startswith(prefix))

    reg = make_registry(
        tmp_path, ecs_endpoint=sim_url, access_key=AK, secret_key=SK, project_id=PID, region="cn-north-4"
    )
    try:
        shown = await preview(reg, ALICE, "flexus_reboot_servers", {"select": selection})
    finally:
        await reg.aclose()
    assert sorted(item.server_id for item in shown.plan.items) == expected
    if prefix is not None:
        assert all((item.name or "").startswith(prefix) for item in shown.plan.items)
        assert len(listed) >= len(expected)  # the fuzzy answer is a superset the prefix narrows
    if selection == {"name": "web"}:
        assert any(s.name.startswith("staging-web") for s in listed), "the API's own filter is fuzzy"
    if selection == {"name": "w.b"}:
        assert listed and not expected, "the API reads '.' as any character; a selection never does"


async def test_the_preview_lists_each_server_what_happens_and_the_totals(registry: Registry) -> None:
    backend = backend_of(registry)
    web = sorted(named(registry, "web-0"), key=lambda s: s.name)
    busy = next(s for s in web if s.status == "ACTIVE" and not s.locked)
    busy.task_state = "powering-off"  # someone else is stopping it
    shown = await preview(registry, ALICE, "flexus_stop_servers", {"select": {"name": "web-0"}})
    assert [item.name for item in shown.plan.items] == [s.name for s in web]
    notes = {item.server_id: item for item in shown.plan.items}
    assert not notes[busy.id].act and "busy (powering-off); skipped" in notes[busy.id].note
    acting = [s for s in web if s.status == "ACTIVE" and not s.locked and not s.task_state and not s.frozen]
    assert {item.server_id for item in shown.plan.acting} == {s.id for s in acting}
    skipped = len(web) - len(acting)
    assert shown.plan.summary.startswith(f"stop {len(acting)} of {len(web)} server(s)")
    assert (f"{skipped} skipped" in shown.plan.summary) == bool(skipped)
    assert "name=web-0*" in shown.plan.summary
    assert shown.runnable and shown.confirmation_token
    assert backend.servers[busy.id].task_state == "powering-off" and writes(registry) == []


async def test_an_empty_match_is_a_clear_nothing_matched_preview(registry: Registry) -> None:
    shown = await preview(registry, ALICE, "flexus_stop_servers", {"select": {"name": "no-such-tier"}})
    assert shown.plan.items == [] and not shown.runnable and shown.confirmation_token is None
    assert shown.plan.summary == "nothing matched name=no-such-tier*"
    assert "Nothing matched" in shown.next_step
    assert "nothing matched" in render(ChangeOutput(preview=shown))
    assert writes(registry) == []


async def test_a_fleet_change_between_preview_and_confirmation_is_refused_with_the_difference(
    registry: Registry,
) -> None:
    backend = backend_of(registry)
    selection = {"select": {"name": "web-0", "status": "ACTIVE"}}
    shown = await preview(registry, ALICE, "flexus_stop_servers", selection)
    members = {item.server_id: item for item in shown.plan.items}
    leaving, changing = [backend.servers[sid] for sid in list(members)[:2]]
    joining = next(s for s in backend.servers.values() if s.status == "ACTIVE" and s.id not in members)
    backend.update_server(leaving.id, {"name": "retired-01"})  # it leaves the match
    backend.update_server(joining.id, {"name": "web-0-new"})  # it joins the match
    changing.task_state = "powering-off"  # it changes state (still ACTIVE, now busy)
    before = len(writes(registry))
    with pytest.raises(Refused) as refused:
        await registry.call(ALICE, "flexus_stop_servers", {**selection, "confirmation_token": shown.confirmation_token})
    message = str(refused.value)
    assert "web-0-new: joined since the preview" in message
    assert f"{members[leaving.id].name}: left since the preview" in message
    assert f"{changing.name}: was ACTIVE, now ACTIVE (powering-off)" in message
    assert len(writes(registry)) == before and all(w.operation != "BatchStopServers" for w in writes(registry))
    assert (await registry.action(shown.action_id)).state == "cancelled"


# -- the exactly-one-of rule --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "arguments", "words"),
    [
        ("flexus_stop_servers", {"servers": ["web-01"], "select": {"name": "web"}}, "got servers and select"),
        ("flexus_reboot_servers", {}, "give exactly one of servers, select (got none)"),
        ("flexus_start_servers", {"select": {"name": "web"}, "undo_of": "ab12"}, "got select and undo_of"),
        ("flexus_reset_servers_password", {"reason": "rotate"}, "give exactly one of servers, select"),
        ("flexus_reboot_servers", {"undo_of": "ab12"}, "undo_of: is not an argument"),
        ("flexus_stop_servers", {"select": {}}, "select: needs at least one filter of: name, status"),
        ("flexus_stop_servers", {"select": {"colour": "red"}}, "select.colour: is not a field of select (fields: name"),
        ("flexus_stop_servers", {"select": {"status": "RUNNING"}}, "select.status: must be one of"),
        ("flexus_update_server", {"server": "web-01", "undo_of": "ab12"}, "undo_of takes nothing else"),
        ("flexus_update_server", {"name": "x-01"}, "give server (and what to change) or undo_of"),
    ],
)
async def test_exactly_one_way_of_naming_servers(
    registry: Registry, tool: str, arguments: dict[str, Any], words: str
) -> None:
    with pytest.raises(InvalidInput, match=words.replace("(", r"\(").replace(")", r"\)")):
        await registry.call(ALICE, tool, arguments)
    assert writes(registry) == []


# -- blast-radius caps ------------------------------------------------------------------------


def solo_policy(**settings: Any) -> Policy:
    """Operators only: nobody could approve."""
    people = [Person(id="alice", roles=[Role.OPERATOR], principals=["os:alice"])]
    return Policy(settings=GateSettings(**settings), people=people)


async def test_a_change_over_the_cap_is_refused_at_preview_saying_how_to_split(tmp_path: Path) -> None:
    for policy in (team_policy(max_servers_per_change=3), solo_policy(max_servers_per_change=3)):
        reg = make_registry(tmp_path, policy, sandbox_servers=120)
        try:
            with pytest.raises(Refused) as refused:
                await reg.call(ALICE, "flexus_reboot_servers", {"select": {"status": "ACTIVE"}})
            message = str(refused.value)
            assert "at most 3 in one change (max_servers_per_change)" in message
            assert "Split it" in message and "a rollout counts all of its servers" in message
            # At the cap, not over it: allowed.
            few = [s.id for s in backend_of(reg).servers.values() if s.status == "ACTIVE"][:3]
            assert (await preview(reg, ALICE, "flexus_reboot_servers", {"servers": few})).runnable
            assert writes(reg) == []
        finally:
            await reg.aclose()


async def test_a_change_over_the_approval_threshold_needs_a_second_person(tmp_path: Path) -> None:
    reg = make_registry(tmp_path, team_policy(approve_above_servers=2), sandbox_servers=120)
    try:
        small = {"servers": [s.id for s in backend_of(reg).servers.values() if s.status == "ACTIVE"][:2]}
        assert not (await preview(reg, ALICE, "flexus_reboot_servers", small)).needs_approval
        big = {"select": {"name": "web-0", "status": "ACTIVE"}}
        shown = await preview(reg, ALICE, "flexus_reboot_servers", big)
        assert shown.needs_approval and shown.runnable and len(shown.plan.acting) > 2
        assert "waits for approval by one of: bob" in shown.next_step and "above 2" in shown.next_step
        result = (
            await reg.call(ALICE, "flexus_reboot_servers", {**big, "confirmation_token": shown.confirmation_token})
        ).result
        assert result is not None and result.status == "awaiting_approval"
        assert writes(reg) == []
        approved = await reg.approve(BOB, shown.action_id)
        assert approved.status == "succeeded"
        assert {w.operation for w in writes(reg)} == {"BatchRebootServers"}
    finally:
        await reg.aclose()


async def test_without_an_approver_the_threshold_does_not_apply_but_the_cap_does(tmp_path: Path) -> None:
    reg = make_registry(tmp_path, solo_policy(approve_above_servers=2, max_servers_per_change=50), sandbox_servers=120)
    try:
        result = await confirm(reg, ALICE, "flexus_reboot_servers", {"select": {"name": "web-0", "status": "ACTIVE"}})
        assert result.status == "succeeded" and sum(o.outcome == "done" for o in result.servers) > 2
        with pytest.raises(Refused, match="max_servers_per_change"):
            await reg.call(ALICE, "flexus_reboot_servers", {"select": {"status": "ACTIVE"}})
    finally:
        await reg.aclose()


def test_the_caps_have_everyday_defaults() -> None:
    settings = GateSettings()
    assert (settings.approve_above_servers, settings.max_servers_per_change) == (50, 1000)
    assert not solo_policy().needs_approval("flexus_stop_servers", 5000)  # nobody to approve
    assert team_policy().needs_approval("flexus_stop_servers", 51)
    assert not team_policy().needs_approval("flexus_stop_servers", 50)


# -- billing mode and frozen servers -------------------------------------------------------------


async def test_listings_show_billing_and_frozen_compactly(registry: Registry) -> None:
    listing = await registry.call(ALICE, "flexus_list_servers", {"limit": 100})
    backend = backend_of(registry)
    modes = {"0": "on-demand", "1": "prepaid"}
    for summary in listing.servers:
        server = backend.servers[summary["id"]]
        assert summary["billing"] == modes[server.charging_mode]
        assert summary.get("frozen", False) is server.frozen
    assert any(s.get("frozen") for s in listing.servers) and "FROZEN" in render(listing)


async def test_a_frozen_server_is_skipped_with_the_reason_and_the_sandbox_refuses_it(registry: Registry) -> None:
    frozen = next(s for s in backend_of(registry).servers.values() if s.frozen)
    shown = await preview(registry, ALICE, "flexus_stop_servers", {"servers": [frozen.id]})
    (item,) = shown.plan.items
    assert not item.act and "frozen" in item.note and "would refuse" in item.note and not shown.runnable
    detail = await registry.client.show_server(frozen.id)
    assert detail.frozen and detail.metadata["EcmResStatus"] == "freeze"
    # Sent anyway (bypassing the plan), the sandbox refuses it with its made-up code.
    submission = await registry.client.batch_stop([frozen.id])
    (job,) = await registry.client.wait_for_jobs(submission.job_ids)
    assert job.servers[0].status == "FAIL" and job.servers[0].error_code == FROZEN_CODE
    with pytest.raises(BadRequest, match=FROZEN_CODE):
        await registry.client.batch_reset_password([frozen.id], "Fresh-Passw0rd!")
    with pytest.raises(BadRequest, match=FROZEN_CODE):
        await registry.client.update_server(frozen.id, description="x")


async def test_stopping_a_prepaid_server_says_it_is_still_billed(registry: Registry) -> None:
    active = [
        s for s in backend_of(registry).servers.values() if s.status == "ACTIVE" and not s.locked and not s.frozen
    ]
    prepaid = next(s for s in active if s.charging_mode == "1")
    on_demand = next(s for s in active if s.charging_mode == "0")
    shown = await preview(registry, ALICE, "flexus_stop_servers", {"servers": [prepaid.id, on_demand.id]})
    notes = {item.server_id: item.note for item in shown.plan.items}
    assert notes[prepaid.id] == "will stop (SOFT); prepaid: still billed while stopped"
    assert notes[on_demand.id] == "will stop (SOFT)"


# -- the undo --------------------------------------------------------------------------------


async def test_a_stop_offers_its_undo_which_previews_the_exact_inverse(registry: Registry) -> None:
    backend = backend_of(registry)
    force(registry, "web-01", "ACTIVE")
    force(registry, "web-02", "SHUTOFF")  # already stopped: skipped, and the undo must leave it alone
    selection = {"select": {"name": "web-0"}}
    stopped = await confirm(registry, ALICE, "flexus_stop_servers", selection)
    statuses = {sid: server.status for sid, server in backend.servers.items()}
    done = [o.server_id for o in stopped.servers if o.outcome == "done"]
    skipped = [o.server_id for o in stopped.servers if o.outcome == "skipped"]
    assert done and skipped  # already SHUTOFF or locked ones were not stopped: the undo leaves them alone
    assert stopped.undo is not None and stopped.undo.tool == "flexus_start_servers"
    assert stopped.undo.arguments == {"undo_of": stopped.action_id}
    assert f"start the {len(done)} server(s) this change stopped" in stopped.undo.note
    assert "undo: flexus_start_servers" in render(ChangeOutput(result=stopped))

    # Any operator may preview it; it is a gated change like any other.
    shown = await preview(registry, DAVE, stopped.undo.tool, stopped.undo.arguments)
    assert [item.server_id for item in shown.plan.items] == done
    assert all(item.act and item.note == "will start" for item in shown.plan.items)
    assert f"(the undo of {stopped.action_id})" in shown.plan.summary
    before = len(writes(registry))
    started = await registry.call(
        DAVE, stopped.undo.tool, {**stopped.undo.arguments, "confirmation_token": shown.confirmation_token}
    )
    assert started.result is not None and started.result.status == "succeeded"
    assert all(backend.servers[sid].status == "ACTIVE" for sid in done)
    assert all(backend.servers[sid].status == statuses[sid] for sid in skipped)
    assert [w.operation for w in writes(registry)[before:]] == ["BatchStartServers"]
    # ... and the start offers its own undo in turn.
    assert started.result.undo is not None and started.result.undo.tool == "flexus_stop_servers"


async def test_undo_of_is_refused_when_missing_unfinished_or_of_another_tool(registry: Registry) -> None:
    with pytest.raises(InvalidInput) as missing:
        await registry.call(ALICE, "flexus_start_servers", {"undo_of": "0" * 32})
    assert str(missing.value) == f"undo_of: there is no finished flexus_stop_servers action {'0' * 32} to undo"
    pending = await preview(registry, ALICE, "flexus_stop_servers", {"select": {"name": "web-0"}})
    with pytest.raises(InvalidInput, match="is pending, not finished"):
        await registry.call(ALICE, "flexus_start_servers", {"undo_of": pending.action_id})
    # Another operator may undo finished changes, but cannot learn through undo_of that this one exists.
    with pytest.raises(InvalidInput) as probed:
        await registry.call(DAVE, "flexus_start_servers", {"undo_of": pending.action_id})
    assert str(probed.value) == str(missing.value).replace("0" * 32, pending.action_id)
    force(registry, "db-prod-01", "SHUTOFF")
    started = await confirm(registry, ALICE, "flexus_start_servers", {"servers": ["db-prod-01"]})
    with pytest.raises(InvalidInput, match="undoes only flexus_stop_servers"):
        await registry.call(ALICE, "flexus_start_servers", {"undo_of": started.action_id})
    with pytest.raises(InvalidInput, match="undoes only flexus_update_server"):
        await registry.call(ALICE, "flexus_update_server", {"undo_of": started.action_id})


async def test_an_update_undo_renames_back_and_never_restores_user_data(registry: Registry) -> None:
    backend = backend_of(registry)
    target = next(s for s in backend.servers.values() if s.name == "web-02")
    assert sum(s.name == "web-02" for s in backend.servers.values()) == 1
    renamed = await confirm(
        registry, ALICE, "flexus_update_server", {"server": "web-02", "name": "web-old", "description": "retired"}
    )
    assert renamed.undo is not None and renamed.undo.tool == "flexus_update_server"
    assert "name back to 'web-02'" in renamed.undo.note
    shown = await preview(registry, ALICE, "flexus_update_server", renamed.undo.arguments)
    assert shown.plan.summary.startswith("rename web-old back to web-02")
    assert shown.plan.changes == {
        "name": {"from": "web-old", "to": "web-02"},
        "description": {"from": "retired", "to": "nginx front end"},
    }
    undone = await registry.call(
        ALICE, "flexus_update_server", {**renamed.undo.arguments, "confirmation_token": shown.confirmation_token}
    )
    assert undone.result is not None and undone.result.status == "succeeded"
    assert (target.name, target.description) == ("web-02", "nginx front end")

    secret_script = "IyEvYmluL3NoCmV4cG9ydCBUT0tFTj1zM2NyM3QK"  # a script with a token in it
    changed = await confirm(registry, ALICE, "flexus_update_server", {"server": "web-02", "user_data": secret_script})
    assert changed.undo is not None and changed.undo.tool is None
    assert "user_data cannot be restored" in changed.undo.note
    plan = (await registry.action(changed.action_id)).plan
    assert "sha256" in plan.changes["user_data"]["to"] and secret_script not in json.dumps(plan.changes)
    # Only user_data changed: the undo has nothing it can put back, and says why.
    shown = await preview(registry, ALICE, "flexus_update_server", {"undo_of": changed.action_id})
    assert not shown.runnable and "user_data cannot be restored" in shown.plan.items[0].note


async def test_reboots_and_password_resets_say_they_have_no_undo(registry: Registry) -> None:
    web = force(registry, "web-01", "ACTIVE")
    rebooted = await confirm(registry, ALICE, "flexus_reboot_servers", {"servers": [web.id]})
    assert rebooted.undo is not None and rebooted.undo.tool is None
    assert rebooted.undo.note == "a reboot cannot be undone; there is no undo"
    asked = await confirm(registry, ALICE, "flexus_reset_servers_password", {"servers": [web.id], "reason": "rotate"})
    assert asked.status == "awaiting_approval"
    reset = await registry.approve(BOB, asked.action_id)
    assert reset.undo is not None and reset.undo.tool is None and "password reset cannot be undone" in reset.undo.note


# -- surfaces ---------------------------------------------------------------------------------


def test_slack_takes_the_list_filters_as_a_selection() -> None:
    assert parse("stop tag=env=staging name=web") == ChangeRequest(
        "flexus_stop_servers", {"select": {"tag": "env=staging", "name": "web"}, "type": "SOFT"}, "stop"
    )
    assert parse("reboot --hard status=active not-tag=critical") == ChangeRequest(
        "flexus_reboot_servers", {"select": {"status": "ACTIVE", "not_tag": "critical"}, "type": "HARD"}, "reboot"
    )
    assert parse("start flavor=hl1.2u.4g") == ChangeRequest(
        "flexus_start_servers", {"select": {"flavor": "hl1.2u.4g"}}, "start"
    )
    # The same words list the same servers.
    assert parse("list tag=env=staging name=web") == ReadRequest(
        "flexus_list_servers", {"limit": 20, "tag": "env=staging", "name": "web"}
    )
    mixed = parse("stop web-01 tag=env=staging")
    assert isinstance(mixed, Problem) and "either servers or `key=value` filters" in mixed.message
    unknown = parse("stop colour=red")
    assert isinstance(unknown, Problem) and "has no filter `colour`" in unknown.message
    assert isinstance(parse("stop page=2"), Problem)  # a selection has no pages
    assert parse("stop web-01 web-02") == ChangeRequest(
        "flexus_stop_servers", {"servers": ["web-01", "web-02"], "type": "SOFT"}, "stop"
    )


async def test_slack_selection_previews_through_the_registry(registry: Registry) -> None:
    request = parse("stop tag=env=staging name=staging-web")
    assert isinstance(request, ChangeRequest)
    out = await registry.preview(ALICE, request.tool, request.arguments)
    assert out.preview is not None and out.preview.plan.items
    assert all(item.name.startswith("staging-web") for item in out.preview.plan.items)


@pytest.mark.slow
def test_the_cli_takes_a_selection_through_args(tmp_path: Path) -> None:
    from tests.procs import clean_env

    env = clean_env(tmp_path)
    args = json.dumps({"select": {"name": "web-0", "status": "ACTIVE"}, "dry_run": True})
    shown = run(env, "call", "flexus_stop_servers", "--args", args)
    assert shown.returncode == 0, shown.stderr
    plan = json.loads(shown.stdout)["preview"]["plan"]
    assert plan["items"] and all(i["name"].startswith("web-0") and i["status"] == "ACTIVE" for i in plan["items"])
    both = run(
        env, "call", "flexus_stop_servers", "--args", json.dumps({"servers": ["web-01"], "select": {"name": "w"}})
    )
    assert both.returncode != 0 and "give exactly one of servers, select, undo_of" in both.stderr


@pytest.mark.slow
async def test_a_selection_over_a_thousand_servers_is_chunked_as_explicit_lists_are(tmp_path: Path) -> None:
    policy = team_policy(max_servers_per_change=5000, approve_above_servers=5000)
    reg = make_registry(tmp_path, policy, sandbox_servers=1500)
    try:
        backend = backend_of(reg)
        stopped = await confirm(reg, ALICE, "flexus_stop_servers", {"select": {"status": "ACTIVE"}})
        done = [o.server_id for o in stopped.servers if o.outcome == "done"]
        assert len(done) > 1000 and stopped.status == "succeeded" and len(stopped.job_ids) == 2
        assert [w.operation for w in writes(reg)].count("BatchStopServers") == 2
        # Its undo reads back more servers than one id query takes.
        shown = await preview(reg, ALICE, "flexus_start_servers", stopped.undo.arguments if stopped.undo else {})
        assert sorted(item.server_id for item in shown.plan.acting) == sorted(done)
        asked = await confirm(
            reg, ALICE, "flexus_reset_servers_password", {"select": {"status": "SHUTOFF"}, "reason": "rotate all"}
        )
        reset = await reg.approve(BOB, asked.action_id)
        acted = [o.server_id for o in reset.servers if o.outcome == "done"]
        assert len(acted) > 1000 and all(backend.servers[sid].password_resets == 1 for sid in acted)
    finally:
        await reg.aclose()


def test_slack_reset_password_takes_servers_not_filters() -> None:
    refused = parse("reset-password tag=env=prod")
    assert refused == Problem("`reset-password` takes server names or ids, not filters.")
    # Free text is free: a description may say "status=ok".
    described = parse("describe web-01 status=ok now")
    assert isinstance(described, ChangeRequest) and described.arguments["description"] == "status=ok now"


def test_an_approval_request_by_selection_names_its_selection() -> None:
    from flexus_ops.bots.chat.answers import _targets_said

    assert _targets_said({"select": {"name": "web", "tag": None, "status": "ACTIVE"}}) == [
        "selected by name=web status=ACTIVE"
    ]
    assert _targets_said({"undo_of": "ab12"}) == ["the undo of ab12"]
