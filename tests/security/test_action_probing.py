"""Threat: someone who may read but did not ask (a viewer, another operator, a person outside the policy)
learns what others changed, or which action ids exist, through the audit log, approvals or undo_of.
``flexus_show_action`` is covered with the waves; here, the other doors to the same rooms."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexus_ops.core.errors import Refused
from flexus_ops.core.plans import ChangeOutput
from flexus_ops.registry.registry import Registry
from tests.gatekit import ALICE, BOB, CAROL, DAVE, STRANGER, make_registry, servers_with


@pytest.fixture
async def registry(tmp_path: Path):
    reg = make_registry(tmp_path)
    yield reg
    await reg.aclose()


async def alices_stop(registry: Registry) -> str:
    server = servers_with(registry, "ACTIVE")[0]
    arguments = {"servers": [server["id"]]}
    preview = await registry.call(ALICE, "flexus_stop_servers", arguments)
    assert isinstance(preview, ChangeOutput) and preview.preview is not None
    await registry.call(
        ALICE, "flexus_stop_servers", arguments | {"confirmation_token": preview.preview.confirmation_token}
    )
    return preview.preview.action_id


async def test_the_audit_shows_others_actions_only_to_approvers_and_admins(registry: Registry) -> None:
    action_id = await alices_stop(registry)
    for reader in (ALICE, BOB):  # the requester; an approver (the security lead)
        assert action_id in {record.action_id for record in await registry.audit(reader, 100)}
    for reader in (CAROL, DAVE):  # a viewer; another operator
        assert action_id not in {record.action_id for record in await registry.audit(reader, 100)}
    with pytest.raises(Refused, match="not a person in the policy"):
        await registry.audit(STRANGER, 100)


async def test_approving_tells_a_non_approver_nothing_about_the_id(registry: Registry) -> None:
    action_id = await alices_stop(registry)
    answers = []
    for target in (action_id, "0" * 32):
        with pytest.raises(Refused) as refused:
            await registry.approve(DAVE, target)
        answers.append(str(refused.value))
    assert answers[0] == answers[1] and "not an approver" in answers[0]
