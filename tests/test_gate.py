"""The registry and its gate: previews never write, a confirmation executes once, approvals need a second
person, and secrets never land anywhere in clear."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from flexus_ops.core.errors import InvalidInput, Refused
from flexus_ops.core.plans import ChangeOutput
from flexus_ops.registry.outputs import ListServersOutput, ShowServerOutput
from flexus_ops.registry.registry import Registry
from flexus_ops.registry.targets import TargetError
from tests.gatekit import (
    ALICE,
    ALICE_SLACK,
    BOB,
    CAROL,
    DAVE,
    STRANGER,
    everything_written,
    make_registry,
    sandbox_of,
    servers_with,
    team_policy,
    writes,
)

PASSWORD = "Gate-Test-pass7"


def state_bytes(state_dir: Path) -> bytes:
    """Every byte on disk: the database, its WAL, the key file."""
    return b"".join(p.read_bytes() for p in state_dir.rglob("*") if p.is_file())


@pytest.fixture
async def registry(tmp_path: Path, store_url: str):
    reg = make_registry(tmp_path, store_url=store_url)
    yield reg
    await reg.aclose()


def active_ids(registry: Registry, n: int) -> list[str]:
    return [s["id"] for s in servers_with(registry, "ACTIVE")[:n]]


async def preview(registry: Registry, caller, tool: str, args: dict) -> ChangeOutput:
    out = await registry.call(caller, tool, args)
    assert isinstance(out, ChangeOutput) and out.preview is not None
    return out


# -- reads and who may call -------------------------------------------------------------------


async def test_reads_return_compact_summaries(registry: Registry) -> None:
    listing = await registry.call(CAROL, "flexus_list_servers", {"limit": 5})
    assert isinstance(listing, ListServersOutput)
    assert listing.count == 30 and len(listing.servers) == 5 and listing.next_page == 2
    first = listing.servers[0]
    summary_fields = {"id", "name", "status", "task", "flavor", "private_ips", "public_ips", "az", "locked", "tags"}
    assert set(first) <= summary_fields | {"billing", "frozen"}
    shown = await registry.call(CAROL, "flexus_show_server", {"server": first["name"]})
    assert isinstance(shown, ShowServerOutput) and shown.server["id"] == first["id"]
    full = await registry.call(CAROL, "flexus_show_server", {"server": first["id"], "full": True})
    assert isinstance(full, ShowServerOutput) and "OS-EXT-STS:vm_state" in full.server


async def test_unknown_principal_and_missing_role_are_refused(registry: Registry) -> None:
    with pytest.raises(Refused, match="not a person in the policy"):
        await registry.call(STRANGER, "flexus_list_servers", {})
    with pytest.raises(Refused, match="needs the operator role"):
        await registry.call(CAROL, "flexus_stop_servers", {"servers": active_ids(registry, 1)})
    assert sandbox_of(registry).request_log == []


async def test_ambiguous_and_unknown_names_list_candidates(registry: Registry) -> None:
    names = [s["name"] for s in servers_with(registry, "ACTIVE") + servers_with(registry, "SHUTOFF")]
    duplicated = next(name for name in names if names.count(name) > 1)
    with pytest.raises(TargetError, match=f"'{duplicated}' names 2 servers; use an id"):
        await registry.call(ALICE, "flexus_stop_servers", {"servers": [duplicated]})
    with pytest.raises(TargetError, match="no server named 'web-0'; similar: web-01"):
        await registry.call(ALICE, "flexus_stop_servers", {"servers": ["web-0"]})
    assert writes(registry) == []


@pytest.mark.parametrize(
    ("tool", "args", "field"),
    [
        ("flexus_stop_servers", {"servers": []}, "servers"),
        ("flexus_stop_servers", {"servers": ["web-01", "web-01"]}, "servers"),
        ("flexus_stop_servers", {"servers": ["x" * 129]}, "servers.0"),  # a name is at most 128
        ("flexus_stop_servers", {"servers": ["web-01"], "type": "GENTLE"}, "type"),
        ("flexus_stop_servers", {"servers": ["web-01"], "force": True}, "force"),
        ("flexus_stop_servers", {"servers": [f"s{i}" for i in range(1001)]}, "servers"),
        ("flexus_list_servers", {"limit": 0}, "limit"),
        ("flexus_list_servers", {"status": "RUNNING"}, "status"),
        ("flexus_list_servers", {"server_ids": ["nope"]}, "server_ids.0"),
        ("flexus_update_server", {"server": "web-01"}, "UpdateServerInput"),
        ("flexus_update_server", {"server": "web-01", "hostname": "a--b"}, "hostname"),
        ("flexus_update_server", {"server": "web-01", "description": "<b>"}, "description"),
        ("flexus_update_server", {"server": "web-01", "user_data": "!!!"}, "user_data"),
        (
            "flexus_reset_servers_password",
            {"servers": ["web-01"], "reason": "x" * 3, "new_password": "abc"},
            "new_password",
        ),
        ("flexus_reset_servers_password", {"servers": ["web-01"]}, "reason"),
        ("flexus_show_job", {"job_id": "../../x"}, "job_id"),
    ],
)
async def test_bad_input_is_refused_by_field_and_reaches_nothing(
    registry: Registry, tool: str, args: dict, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await registry.call(ALICE, tool, args)
    assert caught.value.field == field
    assert len(str(caught.value)) < 400
    assert sandbox_of(registry).request_log == []


async def test_megabyte_argument_is_refused_without_echo(registry: Registry) -> None:
    huge = "A" * 1_000_000
    with pytest.raises(InvalidInput) as caught:
        await registry.call(ALICE, "flexus_update_server", {"server": "web-01", "description": huge})
    assert len(str(caught.value)) < 400 and huge[:1000] not in str(caught.value)


# -- preview and confirm ----------------------------------------------------------------------


async def test_preview_reads_state_and_never_writes(registry: Registry) -> None:
    stopped = servers_with(registry, "SHUTOFF")[0]
    locked = servers_with(registry, "ACTIVE", locked=True)[0]
    target = active_ids(registry, 1)
    out = await preview(
        registry, ALICE, "flexus_stop_servers", {"servers": [*target, stopped["id"], locked["id"]], "dry_run": True}
    )
    plan = out.preview.plan
    notes = {item.server_id: item for item in plan.items}
    assert notes[target[0]].act and "will stop (SOFT)" in notes[target[0]].note
    assert not notes[stopped["id"]].act and "already SHUTOFF" in notes[stopped["id"]].note
    assert not notes[locked["id"]].act and "locked" in notes[locked["id"]].note
    assert out.preview.confirmation_token and out.preview.expires_at and out.preview.runnable
    assert writes(registry) == []
    assert {r.operation for r in sandbox_of(registry).request_log} == {"ListServersDetails"}


async def test_confirmation_executes_exactly_once(registry: Registry) -> None:
    targets = active_ids(registry, 2)
    args = {"servers": targets, "type": "HARD"}
    out = await preview(registry, ALICE, "flexus_stop_servers", args)
    token = out.preview.confirmation_token
    done = await registry.call(ALICE, "flexus_stop_servers", {**args, "confirmation_token": token})
    assert isinstance(done, ChangeOutput) and done.result is not None
    assert done.result.status == "succeeded" and len(done.result.job_ids) == 1
    assert [s.outcome for s in done.result.servers] == ["done", "done"]
    again = await registry.call(ALICE, "flexus_stop_servers", {**args, "confirmation_token": token})
    assert isinstance(again, ChangeOutput) and again.result is not None and again.result.replay
    assert again.result.status == "succeeded" and again.result.job_ids == done.result.job_ids
    assert len(writes(registry)) == 1
    events = [r.event for r in registry.store.audit_records()]
    assert events == ["preview", "confirmed", "submitted", "executed", "replayed"]


async def test_racing_confirmations_execute_once(registry: Registry) -> None:
    targets = active_ids(registry, 1)
    out = await preview(registry, ALICE, "flexus_reboot_servers", {"servers": targets})
    token = out.preview.confirmation_token
    attempts = [
        registry.call(ALICE, "flexus_reboot_servers", {"servers": targets, "confirmation_token": token})
        for _ in range(8)
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    ran = [r for r in results if isinstance(r, ChangeOutput) and r.result is not None and not r.result.replay]
    replays = [r for r in results if isinstance(r, ChangeOutput) and r.result is not None and r.result.replay]
    refusals = [r for r in results if isinstance(r, Refused)]
    # One ran; each loser met it in flight ("already ...") or got its recorded outcome as a replay.
    assert len(ran) == 1 and len(replays) + len(refusals) == 7
    assert all("already" in str(r) for r in refusals)
    assert len(writes(registry)) == 1


@pytest.mark.parametrize(
    ("caller", "change", "words"),
    [
        (DAVE, {}, "issued to another person"),
        (ALICE, {"type": "HARD"}, "arguments differ"),
        (ALICE_SLACK, {}, None),  # the same person on another surface may confirm
    ],
)
async def test_token_is_bound_to_person_and_arguments(registry: Registry, caller, change: dict, words) -> None:
    targets = active_ids(registry, 1)
    out = await preview(registry, ALICE, "flexus_stop_servers", {"servers": targets})
    args = {"servers": targets, **change, "confirmation_token": out.preview.confirmation_token}
    if words is None:
        done = await registry.call(caller, "flexus_stop_servers", args)
        assert done.result is not None and done.result.status == "succeeded"
        assert len(writes(registry)) == 1
    else:
        with pytest.raises(Refused, match=words):
            await registry.call(caller, "flexus_stop_servers", args)
        assert writes(registry) == []


async def test_token_for_another_tool_or_forged_is_refused(registry: Registry) -> None:
    targets = active_ids(registry, 1)
    out = await preview(registry, ALICE, "flexus_stop_servers", {"servers": targets})
    token = out.preview.confirmation_token
    assert token
    with pytest.raises(Refused, match="it confirms flexus_stop_servers, not flexus_reboot_servers"):
        await registry.call(ALICE, "flexus_reboot_servers", {"servers": targets, "confirmation_token": token})
    altered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (altered, "fxc1.deadbeef.x", "nonsense", token.replace("fxc1", "fxc2")):
        with pytest.raises(Refused, match="not a token this gate issued"):
            await registry.call(ALICE, "flexus_stop_servers", {"servers": targets, "confirmation_token": bad})
    assert writes(registry) == []


async def test_expired_preview_is_refused_and_audited(registry: Registry) -> None:
    targets = active_ids(registry, 1)
    out = await preview(registry, ALICE, "flexus_stop_servers", {"servers": targets})
    registry.clock.advance(600)  # past the 5-minute confirmation window
    with pytest.raises(Refused, match="expired"):
        await registry.call(
            ALICE, "flexus_stop_servers", {"servers": targets, "confirmation_token": out.preview.confirmation_token}
        )
    assert writes(registry) == []
    assert "expired" in [r.event for r in registry.store.audit_records()]


async def test_changed_state_refuses_with_the_difference(registry: Registry) -> None:
    target = servers_with(registry, "ACTIVE")[0]
    out = await preview(registry, ALICE, "flexus_stop_servers", {"servers": [target["id"]]})
    # Someone else stops it in the meantime.
    await registry.client.batch_stop([target["id"]])
    await asyncio.sleep(0.3)
    before = len(writes(registry))
    with pytest.raises(Refused, match=f"{target['name']}: was ACTIVE, now SHUTOFF"):
        await registry.call(
            ALICE,
            "flexus_stop_servers",
            {"servers": [target["id"]], "confirmation_token": out.preview.confirmation_token},
        )
    assert len(writes(registry)) == before


async def test_human_confirmation_without_a_preview_is_refused(registry: Registry) -> None:
    with pytest.raises(Refused, match="no such preview"):
        await registry.confirm_action(ALICE, "0" * 32)
    assert writes(registry) == []


async def test_token_fallback_deny_offers_no_token(tmp_path: Path) -> None:
    reg = make_registry(tmp_path, team_policy(confirmation_fallback="deny"))
    try:
        targets = active_ids(reg, 1)
        out = await preview(reg, ALICE, "flexus_stop_servers", {"servers": targets})
        assert out.preview.confirmation_token is None
        assert "elicitation" in out.preview.next_step
        forged = reg.keys.issue_token(out.preview.action_id, "alice", "flexus_stop_servers", "x")
        with pytest.raises(Refused, match="disabled by policy"):
            await reg.call(ALICE, "flexus_stop_servers", {"servers": targets, "confirmation_token": forged})
        done = await reg.confirm_action(ALICE, out.preview.action_id)
        assert done.status == "succeeded"
    finally:
        await reg.aclose()


async def test_read_only_mode_offers_and_runs_no_change(tmp_path: Path) -> None:
    reg = make_registry(tmp_path, read_only=True)
    try:
        assert {spec.safety.value for spec in reg.tools()} == {"read"}
        with pytest.raises(Refused, match="read-only"):
            await reg.call(ALICE, "flexus_stop_servers", {"servers": active_ids(reg, 1)})
    finally:
        await reg.aclose()


async def test_nothing_to_do_has_no_token(registry: Registry) -> None:
    stopped = servers_with(registry, "SHUTOFF")[0]
    out = await preview(registry, ALICE, "flexus_stop_servers", {"servers": [stopped["id"]]})
    assert out.preview.confirmation_token is None and "Nothing to do" in out.preview.next_step
    assert not out.preview.runnable


async def test_update_server_preview_shows_the_change_and_executes(registry: Registry) -> None:
    target = servers_with(registry, "ACTIVE")[0]
    args = {"server": target["id"], "name": "renamed-01", "hostname": "renamed-01"}
    out = await preview(registry, ALICE, "flexus_update_server", args)
    assert out.preview.plan.changes["name"] == {"from": target["name"], "to": "renamed-01"}
    assert "after a reboot" in out.preview.plan.items[0].note
    done = await registry.call(
        ALICE, "flexus_update_server", {**args, "confirmation_token": out.preview.confirmation_token}
    )
    assert done.result is not None and done.result.status == "succeeded"
    assert sandbox_of(registry).backend.server_view(target["id"])["name"] == "renamed-01"


# -- approvals --------------------------------------------------------------------------------


async def request_reset(registry: Registry, targets: list[str], password: str | None = PASSWORD) -> str:
    args: dict = {"servers": targets, "reason": "rotate after incident 42"}
    if password:
        args["new_password"] = password
    out = await preview(registry, ALICE, "flexus_reset_servers_password", args)
    assert out.preview.needs_approval and out.preview.confirmation_token
    confirmed = await registry.call(
        ALICE, "flexus_reset_servers_password", {**args, "confirmation_token": out.preview.confirmation_token}
    )
    assert confirmed.result is not None and confirmed.result.status == "awaiting_approval"
    assert "bob" in confirmed.result.message
    return out.preview.action_id


async def test_password_reset_needs_a_second_person(registry: Registry) -> None:
    targets = active_ids(registry, 2)
    action_id = await request_reset(registry, targets)
    # The preview used the API's own dry run, and nothing was written yet.
    resets = [r for r in sandbox_of(registry).request_log if r.operation == "BatchResetServersPassword"]
    assert resets and all(r.dry_run for r in resets)
    assert writes(registry) == []

    with pytest.raises(Refused, match="not an approver"):
        await registry.approve(DAVE, action_id)
    with pytest.raises(Refused, match="not an approver"):
        await registry.approve(ALICE_SLACK, action_id)  # requester, on another surface
    assert [p["action_id"] for p in await registry.pending_approvals(BOB)] == [action_id]

    result = await registry.approve(BOB, action_id, note="ok")
    assert result.status == "succeeded"
    with pytest.raises(Refused, match="already"):
        await registry.approve(BOB, action_id)
    real = [w for w in writes(registry) if w.operation == "BatchResetServersPassword"]
    assert len(real) == 1 and sorted(real[0].server_ids) == sorted(targets)
    events = [r.event for r in registry.store.audit_records()]
    # Dave's and Alice's attempts are on record too, between the request and Bob's approval.
    assert events == ["preview", "approval_requested", "refused", "refused", "approved", "executed"]
    assert PASSWORD not in everything_written(registry)
    row = registry.store.get_action(action_id)
    assert row is not None and row["secret"] is None, "the encrypted password is erased after use"


async def test_an_approver_cannot_approve_their_own_request(tmp_path: Path) -> None:
    reg = make_registry(tmp_path)
    try:
        targets = active_ids(reg, 1)
        args = {"servers": targets, "reason": "mine", "new_password": PASSWORD}
        out = await preview(reg, BOB, "flexus_reset_servers_password", args)
        await reg.call(
            BOB, "flexus_reset_servers_password", {**args, "confirmation_token": out.preview.confirmation_token}
        )
        with pytest.raises(Refused, match="separation of duties"):
            await reg.approve(BOB, out.preview.action_id)
        assert writes(reg) == []
    finally:
        await reg.aclose()


async def test_two_approvers_at_once_execute_once(tmp_path: Path) -> None:
    policy = team_policy()
    policy.people[3].roles.append(policy.people[1].roles[1])  # dave becomes an approver too
    reg = make_registry(tmp_path, type(policy).model_validate(policy.model_dump()))
    try:
        action_id = await request_reset(reg, active_ids(reg, 1))
        results = await asyncio.gather(
            reg.approve(BOB, action_id), reg.approve(DAVE, action_id), return_exceptions=True
        )
        assert sum(not isinstance(r, Exception) for r in results) == 1
        assert len([w for w in writes(reg) if w.operation == "BatchResetServersPassword"]) == 1
    finally:
        await reg.aclose()


async def test_rejected_and_expired_requests_never_run(registry: Registry) -> None:
    first = await request_reset(registry, active_ids(registry, 1))
    await registry.reject(BOB, first, "not during business hours")
    with pytest.raises(Refused, match="rejected by bob: not during business hours"):
        await registry.approve(BOB, first)
    second = await request_reset(registry, active_ids(registry, 2)[1:])
    registry.clock.advance(2 * 3600)  # past the approval window
    with pytest.raises(Refused, match="expired"):
        await registry.approve(BOB, second)
    assert writes(registry) == []
    for action_id in (first, second):
        row = registry.store.get_action(action_id)
        assert row is not None and row["secret"] is None


async def test_generated_password_is_revealed_once_to_the_requester_only(registry: Registry) -> None:
    action_id = await request_reset(registry, active_ids(registry, 1), password=None)
    result = await registry.approve(BOB, action_id)
    assert result.status == "succeeded" and "reveal" in result.message
    with pytest.raises(Refused, match="nothing to reveal"):
        await registry.reveal(BOB, action_id)
    secret = await registry.reveal(ALICE, action_id)
    assert len(secret) >= 16
    with pytest.raises(Refused, match="nothing to reveal"):
        await registry.reveal(ALICE, action_id)
    assert secret not in everything_written(registry)
    assert secret not in result.model_dump_json()


async def test_no_approver_means_the_reset_cannot_run(tmp_path: Path) -> None:
    policy = team_policy()
    only_operators = type(policy).model_validate(
        {**policy.model_dump(), "people": [p.model_dump() for p in policy.people if p.id != "bob"]}
    )
    reg = make_registry(tmp_path, only_operators)
    try:
        out = await preview(
            reg,
            ALICE,
            "flexus_reset_servers_password",
            {"servers": active_ids(reg, 1), "reason": "rotate", "new_password": PASSWORD},
        )
        assert out.preview.confirmation_token is None and "no approver" in out.preview.next_step
        assert not out.preview.runnable
    finally:
        await reg.aclose()


# -- audit --------------------------------------------------------------------------------------


async def test_audit_chain_detects_tampering(registry: Registry) -> None:
    targets = active_ids(registry, 1)
    out = await preview(registry, ALICE, "flexus_stop_servers", {"servers": targets})
    await registry.call(
        ALICE, "flexus_stop_servers", {"servers": targets, "confirmation_token": out.preview.confirmation_token}
    )
    assert registry.store.verify_audit() == []
    with registry.store.engine.begin() as db:
        row = db.execute(text("SELECT detail_json FROM flexus_audit WHERE seq = 2")).scalar_one()
        forged = json.loads(row) | {"via": "slack"}
        db.execute(text("UPDATE flexus_audit SET detail_json = :d WHERE seq = 2"), {"d": json.dumps(forged)})
    problems = registry.store.verify_audit()
    assert any("record 2" in p and "altered" in p for p in problems)
    with registry.store.engine.begin() as db:
        db.execute(text("DELETE FROM flexus_audit WHERE seq = 3"))
    assert any("missing" in p for p in registry.store.verify_audit())


async def test_secrets_never_reach_audit_outputs_or_the_cloud_log(registry: Registry, tmp_path: Path) -> None:
    await request_reset(registry, active_ids(registry, 1))
    records = json.dumps([r.detail for r in registry.store.audit_records()])
    assert PASSWORD not in records and "<hidden>" in records
    raw_files = await asyncio.to_thread(state_bytes, tmp_path)
    assert PASSWORD.encode() not in raw_files


async def test_a_button_confirms_its_own_preview_once_and_only_for_its_owner(registry: Registry) -> None:
    out = await preview(registry, ALICE_SLACK, "flexus_stop_servers", {"servers": active_ids(registry, 1)})
    action_id = out.preview.action_id
    with pytest.raises(Refused, match="belongs to another person"):
        await registry.confirm_action(DAVE, action_id)
    clicks = await asyncio.gather(
        *(registry.confirm_action(ALICE_SLACK, action_id) for _ in range(3)), return_exceptions=True
    )
    assert sum(not isinstance(c, Exception) and not c.replay for c in clicks) == 1
    assert all("already" in str(c) for c in clicks if isinstance(c, Exception))
    assert len(writes(registry)) == 1
    shown = await registry.action(action_id)
    assert shown is not None and shown.state == "succeeded" and "secret" not in shown.model_dump()
