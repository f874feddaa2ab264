"""Every refused attempt at a change is in the audit log, for the security lead who reads it: a person
without the role, a principal the policy does not know, a non-approver deciding, and a requester approving
their own request. The record says who, where, which tool and why; never the arguments (a password)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flexus_ops.core.errors import Refused
from flexus_ops.registry.registry import Registry
from tests.gatekit import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    STRANGER,
    everything_written,
    make_registry,
    servers_with,
    team_policy,
)

PASSWORD = "Refused-Audit-pass7"


@pytest.fixture
async def registry(tmp_path: Path) -> Any:
    reg = make_registry(tmp_path, team_policy())
    yield reg
    await reg.aclose()


def refusals(registry: Registry) -> list[tuple[str | None, str | None, str | None, str]]:
    return [
        (r.person, r.surface, r.tool, r.detail["reason"])
        for r in registry.store.audit_records()
        if r.event == "refused"
    ]


async def test_a_change_without_the_role_or_by_a_stranger_is_refused_and_audited(registry: Registry) -> None:
    target = servers_with(registry, "ACTIVE")[0]["id"]
    reset = {"servers": [target], "new_password": PASSWORD, "reason": "probing"}
    with pytest.raises(Refused, match="operator role"):
        await registry.call(CAROL, "flexus_reset_servers_password", reset)  # a viewer
    with pytest.raises(Refused, match="not a person in the policy"):
        await registry.call(STRANGER, "flexus_stop_servers", {"servers": [target]})
    await registry.call(CAROL, "flexus_list_servers", {})  # reading is her role: nothing to record
    found = refusals(registry)
    assert [(person, surface, tool) for person, surface, tool, _ in found] == [
        ("carol", "cli", "flexus_reset_servers_password"),
        ("os:mallory", "cli", "flexus_stop_servers"),  # no person: the principal the caller proved
    ]
    assert "operator role" in found[0][3] and "not a person in the policy" in found[1][3]
    assert PASSWORD not in everything_written(registry)


async def test_a_non_approver_and_a_requester_deciding_are_refused_and_audited(registry: Registry) -> None:
    target = servers_with(registry, "ACTIVE")[0]["id"]
    args = {"servers": [target], "new_password": PASSWORD, "reason": "rotate"}
    preview = await registry.call(BOB, "flexus_reset_servers_password", args)
    token = preview.preview.confirmation_token  # type: ignore[attr-defined]
    await registry.call(BOB, "flexus_reset_servers_password", {**args, "confirmation_token": token})
    action_id = preview.preview.action_id  # type: ignore[attr-defined]
    with pytest.raises(Refused, match="not an approver"):
        await registry.approve(DAVE, action_id)
    with pytest.raises(Refused, match="not an approver"):
        await registry.reject(ALICE, action_id)
    with pytest.raises(Refused, match="separation of duties"):
        await registry.approve(BOB, action_id)  # an approver, but the one who asked
    found = refusals(registry)
    # A non-approver's record is tied to no action (a real id must not read differently from a made-up one,
    # even in their own records); the requester's own attempt is tied to their request.
    assert [(person, tool) for person, _, tool, _ in found] == [
        ("dave", None),
        ("alice", None),
        ("bob", "flexus_reset_servers_password"),
    ]
    assert "separation of duties" in found[2][3]
    records = [r for r in registry.store.audit_records() if r.event == "refused"]
    assert [r.action_id for r in records] == [None, None, action_id]
    assert [set(r.detail) for r in records[:2]] == [{"reason"}, {"reason"}]
    assert PASSWORD not in everything_written(registry)


async def test_an_unknown_action_id_is_audited_without_telling_ids_apart(registry: Registry) -> None:
    # A non-approver gets the same refusal for any id, known or not, and so does the record: no action tied.
    with pytest.raises(Refused, match="not an approver"):
        await registry.approve(DAVE, "0" * 32)
    [record] = [r for r in registry.store.audit_records() if r.event == "refused"]
    assert (record.person, record.action_id, record.tool) == ("dave", None, None)


async def test_a_click_on_someone_elses_preview_without_the_role_is_audited_by_tool_only(registry: Registry) -> None:
    target = servers_with(registry, "ACTIVE")[0]["id"]
    preview = await registry.call(ALICE, "flexus_stop_servers", {"servers": [target]})
    with pytest.raises(Refused, match="operator role"):
        await registry.confirm_action(CAROL, preview.preview.action_id)  # type: ignore[attr-defined]
    [record] = [r for r in registry.store.audit_records() if r.event == "refused"]
    assert (record.person, record.tool, record.action_id) == ("carol", "flexus_stop_servers", None)


async def test_a_stranger_is_not_told_where_the_policy_file_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone in the workspace can type /flexus: a refusal must not map the server's files for them. The
    admin who has to add the principal finds the policy's path in the server's log instead."""
    from flexus_ops.gate.policy import load_policy

    policy_file = tmp_path / "team-policy.toml"
    policy_file.write_text(
        '[[people]]\nid = "alice"\nroles = ["operator"]\nprincipals = ["os:alice"]\n', encoding="utf-8"
    )
    policy_file.chmod(0o600)
    registry = make_registry(tmp_path / "state", load_policy(policy_file, required=True))
    try:
        with caplog.at_level("WARNING"), pytest.raises(Refused, match="not a person in the policy") as refused:
            await registry.call(STRANGER, "flexus_list_servers", {})
        assert str(policy_file) not in str(refused.value)
        assert str(policy_file) not in everything_written(registry)
        logged = [r.getMessage() for r in caplog.records if STRANGER.principal in r.getMessage()]
        assert logged and str(policy_file) in logged[0]
    finally:
        await registry.aclose()
