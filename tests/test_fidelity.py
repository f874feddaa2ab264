"""The tools against the sandbox where the official SDK cannot reach (issue 13): job reports, status
ranges, names and ids as the Flexus L reference documents them."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexus_ops.cloud import rules
from flexus_ops.core.errors import InvalidInput
from flexus_ops.core.plans import ChangeOutput
from flexus_ops.registry.outputs import JobOutput, ListServersOutput
from flexus_ops.registry.registry import Registry
from tests import secret_scan
from tests.gatekit import ALICE, BOB, CAROL, Clock, everything_written, make_registry, sandbox_of, servers_with


@pytest.fixture
async def registry(tmp_path: Path, store_url: str):
    reg = make_registry(tmp_path, store_url=store_url)
    yield reg
    await reg.aclose()


async def test_show_job_reports_type_times_totals_and_servers_by_name(registry: Registry) -> None:
    targets = servers_with(registry, "ACTIVE")[:2]
    backend = sandbox_of(registry).backend
    job_id = backend.stop_servers([t["id"] for t in targets])
    shown = await registry.call(CAROL, "flexus_show_job", {"job_id": job_id, "wait": True})
    assert isinstance(shown, JobOutput)
    assert (shown.status, shown.job_type, shown.sub_jobs_total) == ("SUCCESS", "batchStopServers", 2)
    assert shown.begin_time and shown.end_time and shown.meaning
    assert [(s["server_id"], s["name"]) for s in shown.servers] == [(t["id"], t["name"]) for t in targets]
    assert all(s["job_type"] == "stopServer" and s["end_time"] for s in shown.servers)


async def test_show_job_says_what_init_and_pending_payment_mean(registry: Registry) -> None:
    backend = sandbox_of(registry).backend
    backend.knobs.job_init_seconds = 3600
    (target,) = servers_with(registry, "ACTIVE")[:1]
    initialising = backend.stop_servers([target["id"]])
    shown = await registry.call(CAROL, "flexus_show_job", {"job_id": initialising})
    assert isinstance(shown, JobOutput) and shown.status == "INIT" and "running" in (shown.meaning or "")
    assert shown.end_time is None

    backend.knobs.pending_payment_next_jobs = 1
    (other,) = servers_with(registry, "ACTIVE")[:1]
    unpaid = backend.stop_servers([other["id"]])
    before = len(sandbox_of(registry).request_log)
    waited = await registry.call(CAROL, "flexus_show_job", {"job_id": unpaid, "wait": True})
    assert isinstance(waited, JobOutput) and waited.status == "PENDING_PAYMENT"
    assert "payment" in (waited.meaning or "") and waited.servers[0]["name"] == other["name"]
    polls = [r for r in sandbox_of(registry).request_log[before:] if r.operation == "ShowJob"]
    assert len(polls) == 1, "reported at once, never polled"


@pytest.mark.parametrize("waves", [None, {"size": 1}])
async def test_a_power_job_waiting_for_payment_is_reported_as_such_not_as_failed(
    registry: Registry, waves: dict[str, int] | None
) -> None:
    backend = sandbox_of(registry).backend
    target = next(s for s in servers_with(registry, "ACTIVE") if not s.get("frozen"))
    arguments = {"servers": [target["id"]], "wait": True} | ({"waves": waves} if waves else {})
    preview = await registry.call(ALICE, "flexus_stop_servers", arguments)
    assert isinstance(preview, ChangeOutput) and preview.preview is not None
    backend.knobs.pending_payment_next_jobs = 1
    confirmed = await registry.call(
        ALICE, "flexus_stop_servers", arguments | {"confirmation_token": preview.preview.confirmation_token}
    )
    assert isinstance(confirmed, ChangeOutput) and confirmed.result is not None
    (server,) = confirmed.result.servers
    assert server.outcome == "submitted", server
    assert server.detail is not None and "PENDING_PAYMENT" in server.detail and "pa" in server.detail


async def test_list_status_filter_covers_intermediate_states(registry: Registry) -> None:
    backend = sandbox_of(registry).backend
    target = servers_with(registry, "ACTIVE")[0]
    backend.servers[target["id"]].task_state = "rebuilding"  # REBUILD, from ACTIVE
    listing = await registry.call(CAROL, "flexus_list_servers", {"status": "ACTIVE", "limit": 1000})
    assert isinstance(listing, ListServersOutput)
    assert {s["id"]: s["status"] for s in listing.servers}[target["id"]] == "REBUILD"
    rebuilding = await registry.call(CAROL, "flexus_list_servers", {"status": "REBUILD"})
    assert isinstance(rebuilding, ListServersOutput) and [s["id"] for s in rebuilding.servers] == [target["id"]]


async def test_update_accepts_names_up_to_128_or_64_chinese(registry: Registry) -> None:
    target = servers_with(registry, "ACTIVE")[0]
    for name in ("n" * 128, "测" * 64):
        out = await registry.call(ALICE, "flexus_update_server", {"server": target["id"], "name": name})
        assert isinstance(out, ChangeOutput) and out.preview is not None
        done = await registry.call(
            ALICE,
            "flexus_update_server",
            {"server": target["id"], "name": name, "confirmation_token": out.preview.confirmation_token},
        )
        assert done.result is not None and done.result.status == "succeeded"
        # The long name is a target too.
        assert (await registry.call(CAROL, "flexus_show_server", {"server": name})).server["id"] == target["id"]
    for name in ("n" * 129, "测" * 65):
        with pytest.raises(InvalidInput, match="name") as caught:
            await registry.call(ALICE, "flexus_update_server", {"server": target["id"], "name": name})
        assert "128" in str(caught.value)


def test_tool_descriptions_say_how_the_api_behaves(registry: Registry) -> None:
    listing = registry.spec("flexus_list_servers").input_model.model_json_schema()["properties"]
    assert "fuzzy" in listing["name"]["description"] and "'.'" in listing["name"]["description"]
    status = listing["status"]
    assert "REBUILD" in str(status) and "HARD_REBOOT" in status["description"]
    update = registry.spec("flexus_update_server")
    assert "deprecated" in update.input_model.model_json_schema()["properties"]["hostname"]["description"]
    assert "deprecated" in update.description


# -- passwords: each server's rules, generated at preview, checked by the cloud ------------------


class PasswordSpy:
    """Records every password the sandbox's BatchResetServersPassword receives (the sandbox still does
    all of its work), and hands each to the session's secret scan."""

    def __init__(self, registry: Registry) -> None:
        backend = sandbox_of(registry).backend
        self.calls: list[tuple[str | None, bool, list[str]]] = []
        real = backend.reset_passwords

        def spy(server_ids: list[str], new_password: str | None, *, dry_run: bool = False) -> dict:
            if new_password is not None:
                secret_scan.remember("a password the sandbox received", new_password)
            self.calls.append((new_password, dry_run, list(server_ids)))
            return real(server_ids, new_password, dry_run=dry_run)

        backend.reset_passwords = spy  # type: ignore[method-assign]

    @property
    def passwords(self) -> set[str | None]:
        return {password for password, _, _ in self.calls}


def by_os(registry: Registry, os_type: str) -> dict:
    backend = sandbox_of(registry).backend
    return next(
        s
        for s in servers_with(registry, "ACTIVE")
        if backend.servers[s["id"]].image.os_type == os_type and not s["locked"]
    )


async def preview_reset(registry: Registry, servers: list[str], **extra: str) -> ChangeOutput:
    out = await registry.call(
        ALICE, "flexus_reset_servers_password", {"servers": servers, "reason": "rotate after incident 7", **extra}
    )
    assert isinstance(out, ChangeOutput) and out.preview is not None
    return out


def stored_secret(registry: Registry, action_id: str) -> str | None:
    row = registry.store.get_action(action_id)
    assert row is not None
    return registry.keys.decrypt(row["secret"], context=action_id) if row["secret"] is not None else None


async def test_a_generated_password_is_made_at_preview_dry_run_by_the_cloud_and_run_as_checked(
    registry: Registry,
) -> None:
    spy = PasswordSpy(registry)
    targets = [by_os(registry, "Linux")["id"], by_os(registry, "Windows")["id"]]
    out = await preview_reset(registry, targets)
    assert out.preview is not None
    ((generated, dry_run, sent),) = spy.calls
    assert generated is not None and dry_run and sent == targets, "the cloud's dry run checked the generated one"
    assert rules.problem_with_password(generated, "Linux") is None
    assert rules.problem_with_password(generated, "Windows") is None
    action_id = out.preview.action_id
    assert stored_secret(registry, action_id) == generated, "kept encrypted with its action"
    assert "generated at preview" in out.preview.plan.changes["new_password"]
    assert generated not in out.model_dump_json(), "never shown in the preview"

    # The same question again keeps the same password (one pending action, one checked password).
    again = await preview_reset(registry, targets)
    assert again.preview is not None and again.preview.action_id == action_id
    assert spy.passwords == {generated}

    token = out.preview.confirmation_token
    confirmed = await registry.call(
        ALICE,
        "flexus_reset_servers_password",
        {"servers": targets, "reason": "rotate after incident 7", "confirmation_token": token},
    )
    assert confirmed.result is not None and confirmed.result.status == "awaiting_approval"
    result = await registry.approve(BOB, action_id)
    assert result.status == "succeeded" and "reveal" in result.message
    assert spy.calls[-1] == (generated, False, targets), "the execution sent exactly the password checked"
    assert spy.passwords == {generated}, "every dry run (preview, confirmation, approval) checked the same one"
    assert generated not in everything_written(registry) and generated not in result.model_dump_json()
    assert stored_secret(registry, action_id) is None
    assert await registry.reveal(ALICE, action_id) == generated, "revealed once to the requester, as before"


async def test_a_generated_password_is_erased_on_cancel_rejection_and_expiry(tmp_path: Path, store_url: str) -> None:
    clock = Clock()
    registry = make_registry(tmp_path, clock=clock, store_url=store_url)
    try:
        spy = PasswordSpy(registry)
        ids = [s["id"] for s in servers_with(registry, "ACTIVE") if not s["locked"]][:3]

        cancelled = (await preview_reset(registry, [ids[0]])).preview
        assert cancelled is not None and stored_secret(registry, cancelled.action_id) == spy.calls[-1][0]
        await registry.reject(ALICE, cancelled.action_id, "withdrawn")

        rejected = (await preview_reset(registry, [ids[1]])).preview
        assert rejected is not None and rejected.confirmation_token
        await registry.call(
            ALICE,
            "flexus_reset_servers_password",
            {
                "servers": [ids[1]],
                "reason": "rotate after incident 7",
                "confirmation_token": rejected.confirmation_token,
            },
        )
        await registry.reject(BOB, rejected.action_id, "not now")

        expired = (await preview_reset(registry, [ids[2]])).preview
        assert expired is not None and stored_secret(registry, expired.action_id) is not None
        clock.advance(3600)
        await registry.gate.expire_due(force=True)

        states = {a: registry.store.get_action(a) for a in (cancelled.action_id, rejected.action_id, expired.action_id)}
        assert [row["state"] for row in states.values() if row] == ["cancelled", "rejected", "expired"]
        assert all(row is not None and row["secret"] is None for row in states.values()), "erased (NULL)"
        written = everything_written(registry)
        generated = [password for password, _, _ in spy.calls]  # the confirmation's re-plan checks the second again
        assert generated[1] == generated[2] and len(set(generated)) == 3
        assert all(p is not None and p not in written for p in generated)
        assert all(dry for _, dry, _ in spy.calls), "nothing was ever reset"
    finally:
        await registry.aclose()


async def test_a_typed_password_meets_each_servers_rules_at_preview(registry: Registry) -> None:
    linux, windows = by_os(registry, "Linux"), by_os(registry, "Windows")
    spy = PasswordSpy(registry)
    with pytest.raises(InvalidInput) as caught:
        await preview_reset(registry, [linux["id"], windows["id"]], new_password="Badminton-Wrong-9")
    assert caught.value.field == "new_password" and "two consecutive" in caught.value.rule
    assert windows["name"] in caught.value.rule and "Windows" in caught.value.rule
    with pytest.raises(InvalidInput, match="'root'"):
        await preview_reset(registry, [windows["id"], linux["id"]], new_password="Uproot-Wrong-9")
    assert spy.calls == [], "refused before anything was sent"
    # Each rule is its own OS's: the same passwords are fine where they do not apply.
    assert (await preview_reset(registry, [linux["id"]], new_password="Badminton-Fine-9")).preview is not None
    assert (await preview_reset(registry, [windows["id"]], new_password="Uproot-Fine-9")).preview is not None
    assert [dry for _, dry, _ in spy.calls] == [True, True]


@pytest.mark.parametrize(
    ("typed", "rule"),
    [("short1A", "8-26"), ("twoclasses1only", "three of"), ("Pass word-1", "may contain only")],
)
def test_the_cli_prompt_applies_the_shared_password_rules(
    monkeypatch: pytest.MonkeyPatch, typed: str, rule: str
) -> None:
    from flexus_ops import cli

    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: typed)
    with pytest.raises(InvalidInput) as caught:
        cli._ask_secret("new_password")
    assert caught.value.field == "new_password" and rule in caught.value.rule and typed not in str(caught.value)
    # What depends on each server's OS is left to the preview: this one is fine for Windows servers.
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: "Uproot-Fine-9")
    assert cli._ask_secret("new_password") == "Uproot-Fine-9"
