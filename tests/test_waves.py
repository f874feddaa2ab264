"""Rolling changes in waves: one confirmation, wave by wave (each job finished and its servers at the target
status before the next wave), stopped at the first failed wave, at a changed server, or at shutdown; each
step stored and audited; and flexus_show_action, which shows it only to whoever may see it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flexus_ops.core.errors import InvalidInput, Refused
from flexus_ops.core.plans import ActionReport, ActionResult, ChangeOutput
from flexus_ops.core.tools import Caller
from flexus_ops.gate.policy import GateSettings, Person, Policy, Role
from flexus_ops.registry.registry import Registry
from tests.gatekit import ALICE, BOB, CAROL, DAVE, Clock, make_registry, sandbox_of, servers_with, team_policy

ERIN = Caller("os:erin", "cli")  # an admin


def policy_with_admin() -> Policy:
    people = [*team_policy().people, Person(id="erin", roles=[Role.ADMIN], principals=["os:erin"])]
    return Policy(settings=GateSettings(), people=people)


def reboots(registry: Registry) -> list[Any]:
    return [w for w in sandbox_of(registry).writes() if w.operation == "BatchRebootServers"]


def active_ids(registry: Registry, count: int) -> list[str]:
    ids = [s["id"] for s in servers_with(registry, "ACTIVE")]
    assert len(ids) >= count, "the sandbox fleet has too few ACTIVE servers for this test"
    return ids[:count]


async def preview(registry: Registry, servers: list[str], waves: dict[str, Any], **more: Any) -> ChangeOutput:
    out = await registry.call(ALICE, "flexus_reboot_servers", {"servers": servers, "waves": waves, **more})
    assert isinstance(out, ChangeOutput) and out.preview is not None
    return out


async def confirm(registry: Registry, servers: list[str], waves: dict[str, Any], **more: Any) -> ChangeOutput:
    out = await preview(registry, servers, waves)
    assert out.preview is not None
    token = out.preview.confirmation_token
    done = await registry.call(
        ALICE, "flexus_reboot_servers", {"servers": servers, "waves": waves, "confirmation_token": token, **more}
    )
    assert isinstance(done, ChangeOutput) and done.result is not None
    return done


def on_completion(registry: Registry, server_id: str, hook: Callable[[Any], None]) -> None:
    """Run ``hook(server)`` right after the sandbox completes ``server_id``'s power sub-job."""
    backend = sandbox_of(registry).backend
    book = backend.job_book
    original = book.schedule

    def schedule(sub: Any, due: Any, on_success: Any = None) -> None:
        if on_success is not None and sub.server_id == server_id:
            inner = on_success

            def wrapped(at: Any) -> None:
                inner(at)
                hook(backend.servers[server_id])

            on_success = wrapped
        original(sub, due, on_success)

    book.schedule = schedule  # type: ignore[method-assign]


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def settled_state(registry: Registry, action_id: str, states: tuple[str, ...]) -> dict[str, Any]:
    for _ in range(2000):
        row = registry.store.get_action(action_id)
        assert row is not None
        if row["state"] in states:
            return row
        await asyncio.sleep(0.01)
    raise AssertionError(f"action {action_id} never reached {states}: {row['state']}")


# -- preview ------------------------------------------------------------------------------------


async def test_the_preview_lists_the_waves_of_acting_servers_only(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    try:
        ids = active_ids(registry, 5)
        shutoff = servers_with(registry, "SHUTOFF")[0]["id"]
        out = await preview(registry, [*ids, shutoff], {"size": 2, "pause_seconds": 5})
        assert out.preview is not None
        assert out.preview.plan.waves == [ids[0:2], ids[2:4], ids[4:5]]
        assert "in 3 waves of up to 2, 5 s apart" in out.preview.plan.summary
        assert sandbox_of(registry).writes() == []
    finally:
        await registry.aclose()


@pytest.mark.parametrize(
    ("waves", "field"),
    [
        ({"size": 0}, "waves.size"),
        ({"size": 1001}, "waves.size"),
        ({"size": 2, "pause_seconds": -1}, "waves.pause_seconds"),
        ({"size": 2, "pause_seconds": 3601}, "waves.pause_seconds"),
        ({"size": 2, "stop_on_failure": "sometimes"}, "waves.stop_on_failure"),
        ({"size": 2, "parallel": True}, "waves.parallel: is not a field of waves"),
        ({"size": "2"}, "waves.size: Input should be a valid integer"),
        ({"size": True}, "waves.size: Input should be a valid integer"),
        ({"size": 2, "pause_seconds": "NaN"}, "waves.pause_seconds"),
        ({"size": 2, "pause_seconds": float("inf")}, "waves.pause_seconds"),
    ],
)
async def test_bad_waves_are_refused_naming_the_field(tmp_path: Path, waves: dict[str, Any], field: str) -> None:
    registry = make_registry(tmp_path)
    try:
        with pytest.raises(InvalidInput) as refused:
            await registry.call(ALICE, "flexus_reboot_servers", {"servers": active_ids(registry, 2), "waves": waves})
        assert field in str(refused.value)
        assert registry.store.actions_in(["pending"]) == []
    finally:
        await registry.aclose()


# -- running ------------------------------------------------------------------------------------


async def test_waves_run_in_order_each_after_the_previous_job_ended(tmp_path: Path, store_url: str) -> None:
    registry = make_registry(tmp_path, store_url=store_url)
    try:
        ids = active_ids(registry, 5)
        done = await confirm(registry, ids, {"size": 2}, wait=True)
        result = done.result
        assert result is not None and result.status == "succeeded", result.message
        sent = reboots(registry)
        assert [w.server_ids for w in sent] == [ids[0:2], ids[2:4], ids[4:5]]
        book = sandbox_of(registry).backend.job_book
        jobs = [book.jobs[job_id] for job_id in result.job_ids]
        for job, next_write in zip(jobs, sent[1:], strict=False):
            assert job.end is not None and job.end <= next_write.at, "a wave was sent before the previous one ended"
        row = registry.store.get_action(result.action_id)
        assert row["state"] == "succeeded" and row["wave"] == 3
        events = [r.event for r in registry.store.audit_records() if r.action_id == result.action_id]
        assert events == ["preview", "confirmed"] + ["wave_started", "wave_submitted", "wave_finished"] * 3 + [
            "executed"
        ]
        assert registry.store.verify_audit() == []
    finally:
        await registry.aclose()


async def test_the_next_wave_waits_for_the_target_status(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    try:
        ids = active_ids(registry, 4)
        sandbox = sandbox_of(registry)
        held: list[Any] = []
        # The job reports success, but the server still shows a reboot in progress.
        on_completion(registry, ids[1], lambda server: (setattr(server, "task_state", "rebooting"), held.append(1)))
        out = await preview(registry, ids, {"size": 2})
        assert out.preview is not None
        token = out.preview.confirmation_token
        call = asyncio.ensure_future(
            registry.call(
                ALICE,
                "flexus_reboot_servers",
                {"servers": ids, "waves": {"size": 2}, "confirmation_token": token, "wait": True},
            )
        )
        await until(lambda: bool(held))
        seen = len(sandbox.request_log)
        # It polls the server, and sends nothing meanwhile.
        await until(lambda: sum(r.operation == "ListServersDetails" for r in sandbox.request_log[seen:]) >= 3)
        assert len(reboots(registry)) == 1
        released_at = len(sandbox.request_log)
        sandbox.backend.servers[ids[1]].task_state = None
        done = await call
        assert isinstance(done, ChangeOutput) and done.result is not None and done.result.status == "succeeded"
        second = reboots(registry)[1]
        assert second.seq > sandbox.request_log[released_at - 1].seq
    finally:
        await registry.aclose()


async def test_a_server_that_never_reaches_the_target_fails_its_wave(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, job_wait_seconds=0.3)
    try:
        ids = active_ids(registry, 4)
        on_completion(registry, ids[0], lambda server: setattr(server, "task_state", "rebooting"))
        started = await confirm(registry, ids, {"size": 2})
        assert started.result is not None
        row = await settled_state(registry, started.result.action_id, ("stopped",))
        result = ActionResult.model_validate_json(row["result_json"])
        assert result.status == "stopped"
        assert len(reboots(registry)) == 1
        by_id = {o.server_id: o for o in result.servers}
        assert by_id[ids[0]].outcome == "failed" and "did not reach ACTIVE" in (by_id[ids[0]].detail or "")
        assert [by_id[sid].outcome for sid in ids[2:]] == ["not started", "not started"]
    finally:
        await registry.aclose()


async def test_the_rollout_stops_at_the_first_failed_wave(tmp_path: Path, store_url: str) -> None:
    registry = make_registry(tmp_path, store_url=store_url)
    try:
        ids = active_ids(registry, 6)
        sandbox_of(registry).knobs.failing_server_ids = {ids[3]}
        done = await confirm(registry, ids, {"size": 2}, wait=True)
        result = done.result
        assert result is not None and result.status == "stopped"
        assert [w.server_ids for w in reboots(registry)] == [ids[0:2], ids[2:4]], "the third wave was sent"
        outcomes = {o.server_id: o.outcome for o in result.servers}
        assert [outcomes[sid] for sid in ids] == ["done", "done", "done", "failed", "not started", "not started"]
        assert result.rollout is not None and [w.state for w in result.rollout.waves] == [
            "done",
            "failed",
            "not started",
        ]
        assert result.resume is not None and result.resume.tool == "flexus_reboot_servers"
        assert result.resume.arguments["servers"] == ids[4:6]
        assert result.resume.arguments["waves"]["size"] == 2
        row = registry.store.get_action(result.action_id)
        assert row["state"] == "stopped" and row["wave"] == 2
        # The resume call is a ready preview of exactly the servers left.
        again = await registry.call(ALICE, result.resume.tool, result.resume.arguments)
        assert isinstance(again, ChangeOutput) and again.preview is not None
        assert again.preview.plan.waves == [ids[4:6]]
    finally:
        await registry.aclose()


async def test_stop_on_failure_false_sends_every_wave(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    try:
        ids = active_ids(registry, 6)
        sandbox_of(registry).knobs.failing_server_ids = {ids[3]}
        done = await confirm(registry, ids, {"size": 2, "stop_on_failure": False}, wait=True)
        result = done.result
        assert result is not None and result.status == "partial"
        assert [w.server_ids for w in reboots(registry)] == [ids[0:2], ids[2:4], ids[4:6]]
        assert [o.outcome for o in result.servers] == ["done", "done", "done", "failed", "done", "done"]
        assert registry.store.get_action(result.action_id)["state"] == "failed"
    finally:
        await registry.aclose()


async def test_a_server_changed_before_its_wave_stops_the_rollout(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    try:
        ids = active_ids(registry, 4)
        backend = sandbox_of(registry).backend

        def stop_another(_server: Any) -> None:  # while wave 1 runs, someone stops a wave-2 server
            other = backend.servers[ids[3]]
            other.vm_state, other.power_state = "stopped", 4

        on_completion(registry, ids[0], stop_another)
        done = await confirm(registry, ids, {"size": 2}, wait=True)
        result = done.result
        assert result is not None and result.status == "stopped"
        assert result.rollout is not None and result.rollout.stopped is not None
        assert "changed since the preview" in result.rollout.stopped
        assert "now SHUTOFF" in result.rollout.stopped
        assert len(reboots(registry)) == 1
        assert [o.outcome for o in result.servers][2:] == ["not started", "not started"]
        assert result.resume is not None and result.resume.arguments["servers"] == ids[2:4]
    finally:
        await registry.aclose()


async def test_confirm_returns_once_the_first_wave_is_sent_and_shutdown_stops_the_rest(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    ids = active_ids(registry, 4)
    progress: list[tuple[float, float | None, str]] = []

    async def record(done: float, total: float | None, message: str) -> None:
        progress.append((done, total, message))

    out = await preview(registry, ids, {"size": 2, "pause_seconds": 600})
    assert out.preview is not None
    result = await registry.confirm_action(ALICE, out.preview.action_id, progress=record)
    assert result.status == "running" and result.action_id == out.preview.action_id
    assert len(result.job_ids) == 1 and len(reboots(registry)) == 1
    assert result.rollout is not None and result.rollout.reached == 1
    await registry.aclose()  # shutting down: the pause is cut short and no further wave is sent
    assert len(reboots(registry)) == 1
    row = registry.store.get_action(result.action_id)
    assert row["state"] == "stopped" and row["wave"] == 1
    stored = json.loads(row["result_json"])
    assert "shutting down" in stored["rollout"]["stopped"]
    assert stored["resume"]["arguments"]["servers"] == ids[2:4]


async def test_wait_true_returns_at_the_end_with_progress_per_wave(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    try:
        ids = active_ids(registry, 6)
        progress: list[tuple[float, float | None, str]] = []

        async def record(done: float, total: float | None, message: str) -> None:
            progress.append((done, total, message))

        out = await preview(registry, ids, {"size": 2})
        assert out.preview is not None
        result = await registry.confirm_action(ALICE, out.preview.action_id, progress=record, wait=True)
        assert result.status == "succeeded" and len(reboots(registry)) == 3
        assert [p[0] for p in progress] == sorted(p[0] for p in progress), "progress only moves forward"
        assert [p for p in progress if re.fullmatch(r"wave \d of 3 done", p[2])] == [
            (2, 6, "wave 1 of 3 done"),
            (4, 6, "wave 2 of 3 done"),
            (6, 6, "wave 3 of 3 done"),
        ]
    finally:
        await registry.aclose()


async def test_one_approval_covers_the_whole_rollout(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, team_policy(require_approval=["flexus_reboot_servers"]))
    try:
        ids = active_ids(registry, 4)
        done = await confirm(registry, ids, {"size": 2})
        assert done.result is not None and done.result.status == "awaiting_approval"
        assert reboots(registry) == []
        result = await registry.approve(BOB, done.result.action_id, "ok", wait=True)
        assert result.status == "succeeded" and len(reboots(registry)) == 2
        row = registry.store.get_action(result.action_id)
        assert row["executed_by"] == "bob" and row["wave"] == 2
    finally:
        await registry.aclose()


# -- flexus_show_action ---------------------------------------------------------------------------


async def test_show_action_is_for_the_requester_approvers_and_admins_only(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, policy_with_admin())
    try:
        ids = active_ids(registry, 4)
        done = await confirm(registry, ids, {"size": 2}, wait=True)
        assert done.result is not None
        action_id = done.result.action_id
        for who in (ALICE, BOB, ERIN):
            shown = await registry.call(who, "flexus_show_action", {"action_id": action_id})
            assert isinstance(shown, ActionReport)
            assert shown.action.state == "succeeded" and shown.action.rollout is not None
            assert shown.action.rollout.reached == 2 and shown.result is not None
            assert shown.result.status == "succeeded"
        for who in (CAROL, DAVE):
            with pytest.raises(Refused) as hidden:
                await registry.call(who, "flexus_show_action", {"action_id": action_id})
            with pytest.raises(Refused) as unknown:
                await registry.call(who, "flexus_show_action", {"action_id": "0" * 32})
            assert str(hidden.value) == str(unknown.value) == "no such action"
    finally:
        await registry.aclose()


async def test_show_action_never_shows_a_secret(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    try:
        password = "Sandbox-Secret-91x"
        target = active_ids(registry, 1)
        args = {"servers": target, "new_password": password, "reason": "rotate after a leak"}
        out = await registry.call(ALICE, "flexus_reset_servers_password", args)
        assert isinstance(out, ChangeOutput) and out.preview is not None
        shown = await registry.show_action(ALICE, out.preview.action_id)
        assert password not in shown.model_dump_json()
        assert shown.action.arguments["new_password"] == "<hidden>"
        assert shown.result is None and shown.action.state == "pending"
    finally:
        await registry.aclose()


# -- surfaces -------------------------------------------------------------------------------------


def test_slack_follows_a_rollout_wave_by_wave_to_its_outcome(tmp_path: Path) -> None:
    from flexus_ops.bots.slack.blocks import CONFIRM
    from flexus_ops.cloud.client import FlexusClient
    from flexus_ops.gate.secrets import Keys
    from flexus_ops.gate.store import Store
    from tests.slackkit import ALICE as SLACK_ALICE
    from tests.slackkit import rig, wait_until

    with rig(tmp_path, watch_interval=0.1, progress_interval=0.0) as bot:
        first = bot.registry
        # The preview comes from another process on the same store (as from MCP); Slack confirms it.
        other = Registry(
            settings=first.settings,
            client=FlexusClient(first.settings, sandbox=sandbox_of(first)),
            store=Store(first.store.url, Keys.load(tmp_path).audit),
            policy=first.policy,
            keys=Keys.load(tmp_path),
        )
        ids = active_ids(first, 3)
        caller = Caller(f"slack:{SLACK_ALICE}", "slack")

        async def make_preview() -> str:
            try:
                out = await other.call(caller, "flexus_reboot_servers", {"servers": ids, "waves": {"size": 1}})
                assert isinstance(out, ChangeOutput) and out.preview is not None
                return out.preview.action_id
            finally:
                await other.aclose()

        action_id = asyncio.run(make_preview())
        response, url = bot.slack.click(SLACK_ALICE, CONFIRM, action_id)
        assert response.status_code == 200
        shown = bot.fake.wait_at(url, final=lambda call: "Confirmed by" in call.text and "3 done" in call.text)
        assert len(shown) <= 5, "response_url allows five uses"
        assert "rolling out in 3 waves" in shown[0].text, "the click is answered once the first wave is sent"
        assert all("of 3 finished" in c.text for c in shown[1:-1]), "then each finished wave"
        assert "Waves: 3 of 3 finished" in shown[-1].text
        wait_until(lambda: first.store.get_action(action_id)["state"] == "succeeded", what="the rollout's end")
        assert len(reboots(first)) == 3


async def test_draining_sends_no_further_wave_and_records_where_it_stopped(tmp_path: Path) -> None:
    from flexus_ops.serving import Drain

    registry = make_registry(tmp_path)
    try:
        ids = active_ids(registry, 6)
        drain = Drain(on_drain=[registry.start_draining])
        out = await preview(registry, ids, {"size": 2, "pause_seconds": 600})
        assert out.preview is not None
        started = await registry.confirm_action(ALICE, out.preview.action_id)
        assert started.status == "running"
        drain.start()  # SIGTERM: the rollout is told at once, before the registry closes
        row = await settled_state(registry, started.action_id, ("stopped",))
        assert len(reboots(registry)) == 1 and row["wave"] == 1
        assert await registry.not_ready_because() == "draining"
        stopped = ActionResult.model_validate_json(row["result_json"])
        assert stopped.rollout is not None and "shutting down" in (stopped.rollout.stopped or "")
        assert stopped.resume is not None and stopped.resume.arguments["servers"] == ids[2:]
    finally:
        await registry.aclose()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_mcp_reports_each_wave_as_progress_and_shows_the_action(tmp_path: Path, mode: str) -> None:
    from mcp import Client

    from flexus_ops.mcp_server import build_server
    from tests.test_mcp import local_policy, structured, text_of

    registry = make_registry(tmp_path, local_policy())
    try:
        ids = active_ids(registry, 6)
        arguments = {"servers": ids, "waves": {"size": 2}}
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))

        async with Client(build_server(registry), mode=mode) as client:
            first = await client.call_tool("flexus_reboot_servers", arguments)
            preview = structured(first)["preview"]
            assert "wave 3: " in text_of(first)
            token = preview["confirmation_token"]
            done = await client.call_tool(
                "flexus_reboot_servers",
                {**arguments, "confirmation_token": token, "wait": True},
                progress_callback=on_progress,
            )
            assert structured(done)["result"]["status"] == "succeeded"
            shown = await client.call_tool("flexus_show_action", {"action_id": preview["action_id"]})
        assert [p for p in progress if p[2] and re.fullmatch(r"wave \d of 3 done", p[2])] == [
            (2, 6, "wave 1 of 3 done"),
            (4, 6, "wave 2 of 3 done"),
            (6, 6, "wave 3 of 3 done"),
        ]
        report = structured(shown)
        assert report["action"]["state"] == "succeeded" and report["action"]["rollout"]["reached"] == 3
        assert "wave 3: done" in text_of(shown)
    finally:
        await registry.aclose()


async def test_a_confirmation_used_again_during_a_rollout_says_where_it_is_and_sends_nothing(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    try:
        ids = active_ids(registry, 4)
        waves = {"size": 2, "pause_seconds": 600}
        out = await preview(registry, ids, waves)
        assert out.preview is not None
        token = out.preview.confirmation_token
        arguments = {"servers": ids, "waves": waves, "confirmation_token": token}
        first = await registry.call(ALICE, "flexus_reboot_servers", arguments)
        again = await registry.call(ALICE, "flexus_reboot_servers", arguments)
        assert isinstance(first, ChangeOutput) and first.result is not None and first.result.status == "running"
        assert isinstance(again, ChangeOutput) and again.result is not None
        assert again.result.replay is True and again.result.status == "running"
        assert again.result.rollout is not None and again.result.rollout.reached == 1
        assert len(reboots(registry)) == 1
    finally:
        await registry.aclose()


async def test_a_wave_whose_outcome_is_unknown_stops_the_rollout_and_is_settled_from_its_job(tmp_path: Path) -> None:
    # The job outlives the wait: the wave may or may not be done, so nothing more is sent.
    registry = make_registry(tmp_path, job_wait_seconds=0.05)
    try:
        ids = active_ids(registry, 4)
        started = await confirm(registry, ids, {"size": 2})
        assert started.result is not None
        action_id = started.result.action_id
        row = await settled_state(registry, action_id, ("unknown",))
        unknown = ActionResult.model_validate_json(row["result_json"])
        assert unknown.status == "unknown" and unknown.resume is None
        assert unknown.rollout is not None and [w.state for w in unknown.rollout.waves] == ["running", "not started"]
        assert [o.outcome for o in unknown.servers] == ["unknown", "unknown", "not started", "not started"]
        settled: list[str] = []
        for _ in range(500):
            settled = await registry.settle()
            if settled:
                break
            await asyncio.sleep(0.02)  # until the job has ended in the cloud
        assert settled == [action_id]
        row = registry.store.get_action(action_id)
        assert row["state"] == "stopped"
        result = ActionResult.model_validate_json(row["result_json"])
        assert [o.outcome for o in result.servers] == ["done", "done", "not started", "not started"]
        assert result.resume is not None and result.resume.arguments["servers"] == ids[2:]
        assert len(reboots(registry)) == 1
        events = [r.event for r in registry.store.audit_records() if r.action_id == action_id]
        assert events[-3:] == ["wave_unknown", "executed", "reconciled"]
    finally:
        await registry.aclose()


async def test_a_rollout_outliving_its_call_tells_that_call_nothing_more(tmp_path: Path) -> None:
    from flexus_ops.cloud.retries import retry_listener

    registry = make_registry(tmp_path)
    try:
        ids = active_ids(registry, 4)
        heard: list[str] = []
        progress: list[str] = []

        async def closed_call(notice: str) -> None:  # a finished MCP request: telling it fails
            heard.append(notice)
            raise RuntimeError("this request has ended")

        async def record(_done: float, _total: float | None, message: str) -> None:
            progress.append(message)

        out = await preview(registry, ids, {"size": 2})
        assert out.preview is not None
        listening = retry_listener.set(closed_call)
        try:
            started = await registry.confirm_action(ALICE, out.preview.action_id, progress=record)
        finally:
            retry_listener.reset(listening)
        assert started.status == "running"
        told = len(progress)
        sandbox_of(registry).knobs.fail_next_5xx = 2  # the background's next reads are retried
        row = await settled_state(registry, started.action_id, ("succeeded", "failed", "stopped", "unknown"))
        assert row["state"] == "succeeded"
        assert heard == [] and len(progress) == told, "the ended call was told about the background's work"
        assert len(reboots(registry)) == 2
    finally:
        await registry.aclose()


async def test_a_caller_whose_progress_fails_does_not_stop_the_rollout(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    try:
        ids = active_ids(registry, 4)

        async def gone(_done: float, _total: float | None, _message: str) -> None:
            raise ConnectionResetError("the client went away")

        out = await preview(registry, ids, {"size": 2})
        assert out.preview is not None
        result = await registry.confirm_action(ALICE, out.preview.action_id, progress=gone, wait=True)
        assert result.status == "succeeded" and len(reboots(registry)) == 2
    finally:
        await registry.aclose()


async def test_a_rollout_that_lost_its_lease_reports_the_stores_record_not_its_own(tmp_path: Path) -> None:
    """A process paused past its lease (SIGSTOP, a stalled VM): the settler records where the rollout
    stopped; when the process wakes, it sends nothing more and reports that record, not "wave 2 running"."""
    clock = Clock()
    registry = make_registry(tmp_path, clock=clock)
    try:
        ids = active_ids(registry, 4)
        out = await preview(registry, ids, {"size": 2, "pause_seconds": 3})
        assert out.preview is not None
        action_id = out.preview.action_id
        started = await registry.confirm_action(ALICE, action_id)
        assert started.status == "running"
        task, _execution = registry.gate.rollouts[action_id]

        def first_wave_done() -> bool:
            row = registry.store.get_action(action_id)
            waves = json.loads(row["rollout_json"])["waves"] if row and row["rollout_json"] else []
            return bool(waves) and waves[0]["state"] == "done"

        await until(first_wave_done)  # now in the pause before wave 2
        while registry.store.get_action(action_id)["state"] != "stopped":
            clock.advance(registry.settings.lease_seconds + 1)  # the lease runs out while the process sleeps
            await registry.settle()
        result = await task
        assert len(reboots(registry)) == 1, "no wave is sent after the lease was lost"
        assert result.status == "stopped" and "lost the rollout" in result.message
        assert result.resume is not None and result.resume.arguments["servers"] == ids[2:]
        assert all(o.outcome != "unknown" for o in result.servers), result.servers
    finally:
        await registry.aclose()
