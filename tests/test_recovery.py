"""An execution interrupted by a crash is settled from what the cloud shows, never re-sent blindly."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from flexus_ops.core.plans import ActionResult, ChangeOutput, Rollout
from tests.gatekit import ALICE, make_registry, sandbox_of, servers_with, team_policy
from tests.live import AK, PID, SK, serve

ROOT = Path(__file__).resolve().parent.parent


def backdate(registry, action_id: str, seconds: float = 3600) -> None:
    """Make an action look silent for an hour (as after a crash), without waiting an hour."""
    with registry.store.engine.begin() as db:
        db.execute(
            text("UPDATE flexus_actions SET updated_at = updated_at - :s WHERE id = :i"), {"s": seconds, "i": action_id}
        )


def stop_writes(sandbox) -> list:
    return [w for w in sandbox.writes() if w.operation == "BatchStopServers"]


async def test_a_process_killed_mid_write_is_reconciled_from_the_cloud(tmp_path: Path) -> None:
    with serve(job_seconds=0.2) as live:
        server_id = next(
            sid
            for sid in live.sandbox.backend.servers
            if live.sandbox.backend.server_view(sid)["status"] == "ACTIVE"
            and not live.sandbox.backend.server_view(sid)["locked"]
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEXUS_", "HUAWEICLOUD_"))} | {
            "FLEXUS_STATE_DIR": str(tmp_path),
            "FLEXUS_ECS_ENDPOINT": live.url,
            "HUAWEICLOUD_SDK_AK": AK,
            "HUAWEICLOUD_SDK_SK": SK,
            "HUAWEICLOUD_SDK_PROJECT_ID": PID,
            "PYTHONPATH": str(ROOT),
            "FLEXUS_LEASE_SECONDS": "2",  # the dead owner's lease runs out in seconds
        }
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.crashwork", server_id],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdin is not None
        action_id = json.loads(child.stdout.readline())["preview"]["action_id"]
        # The re-read before executing and the write itself each hang a moment in the "network".
        live.sandbox.knobs.hang_seconds = 1.5
        live.sandbox.knobs.hang_next = 2
        child.stdin.write("go\n")
        child.stdin.flush()

        registry = make_registry(
            tmp_path, policy=None, ecs_endpoint=live.url, access_key=AK, secret_key=SK, project_id=PID
        )
        deadline = time.monotonic() + 30
        while (registry.store.get_action(action_id) or {})["state"] != "executing":
            assert time.monotonic() < deadline, "the child never started executing"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # the stop request is now in flight
        child.kill()
        child.wait(timeout=10)
        await asyncio.sleep(2.0)  # the cloud finishes what it received
        assert len(stop_writes(live.sandbox)) == 1
        assert registry.store.get_action(action_id)["state"] == "executing"
        try:
            # Once the dead owner's lease has run out (seconds), anyone settles it from the cloud.
            deadline = time.monotonic() + 20
            while (settled := await registry.settle()) == []:
                assert time.monotonic() < deadline, "the lease never ran out"
                await asyncio.sleep(0.2)
            assert settled == [action_id]
            row = registry.store.get_action(action_id)
            assert row["state"] == "succeeded"
            assert json.loads(row["result_json"])["reconciled"]["observed"] == {server_id: "applied"}
            assert len(stop_writes(live.sandbox)) == 1, "nothing was sent again"
            last = registry.store.audit_records()[-1]
            assert last.event == "reconciled" and last.detail["resent"] is False
            assert registry.store.verify_audit() == []
        finally:
            await registry.aclose()


async def test_an_execution_that_never_reached_the_cloud_is_marked_not_applied(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, team_policy())
    try:
        sandbox = sandbox_of(registry)
        target = [servers_with(registry, "ACTIVE")[0]["id"]]
        out = await registry.call(ALICE, "flexus_stop_servers", {"servers": target})
        assert isinstance(out, ChangeOutput) and out.preview is not None
        # The process died right after winning the compare-and-set, before sending anything.
        assert registry.store.transition(out.preview.action_id, ["pending"], "executing", executed_by="alice")
        assert await registry.settle() == [], "a recent execution may still be running elsewhere"
        backdate(registry, out.preview.action_id)
        assert await registry.settle() == [out.preview.action_id]
        row = registry.store.get_action(out.preview.action_id)
        assert row["state"] == "failed"
        assert json.loads(row["result_json"])["reconciled"]["observed"] == {target[0]: "not applied"}
        assert sandbox.writes() == []
    finally:
        await registry.aclose()


async def test_a_submitted_action_is_settled_from_its_jobs(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, team_policy())
    try:
        sandbox = sandbox_of(registry)
        target = [servers_with(registry, "ACTIVE")[0]["id"]]
        out = await registry.call(ALICE, "flexus_stop_servers", {"servers": target, "wait": False})
        done = await registry.call(
            ALICE,
            "flexus_stop_servers",
            {"servers": target, "wait": False, "confirmation_token": out.preview.confirmation_token},
        )
        assert isinstance(done, ChangeOutput) and done.result is not None and done.result.status == "submitted"
        action_id = done.result.action_id
        await asyncio.sleep(0.3)  # the job finishes in the cloud
        backdate(registry, action_id)
        assert await registry.settle() == [action_id]
        row = registry.store.get_action(action_id)
        assert row["state"] == "succeeded"
        assert list(json.loads(row["result_json"])["reconciled"]["jobs"].values()) == ["SUCCESS"]
        assert len(sandbox.writes()) == 1
    finally:
        await registry.aclose()


async def test_a_process_killed_mid_rollout_never_sends_another_wave(tmp_path: Path) -> None:
    with serve(job_seconds=1.0) as live:
        backend = live.sandbox.backend
        ids = [
            sid
            for sid in backend.servers
            if backend.server_view(sid)["status"] == "ACTIVE" and not backend.server_view(sid)["locked"]
        ][:6]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEXUS_", "HUAWEICLOUD_"))} | {
            "FLEXUS_STATE_DIR": str(tmp_path),
            "FLEXUS_ECS_ENDPOINT": live.url,
            "HUAWEICLOUD_SDK_AK": AK,
            "HUAWEICLOUD_SDK_SK": SK,
            "HUAWEICLOUD_SDK_PROJECT_ID": PID,
            "PYTHONPATH": str(ROOT),
            "FLEXUS_LEASE_SECONDS": "2",
            "FLEXUS_JOB_POLL_SECONDS": "0.05",
        }
        arguments = {"servers": ids, "waves": {"size": 2, "pause_seconds": 0}}
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.rolloutwork", json.dumps(arguments)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdin is not None
        action_id = json.loads(child.stdout.readline())["preview"]["action_id"]
        child.stdin.write("go\n")
        child.stdin.flush()

        registry = make_registry(
            tmp_path, policy=None, ecs_endpoint=live.url, access_key=AK, secret_key=SK, project_id=PID
        )
        try:
            deadline = time.monotonic() + 30
            # Killed while its first wave's job runs in the cloud (the wave is recorded with its job).
            while not registry.store.audit_records(event="wave_submitted"):
                assert time.monotonic() < deadline, "the child never sent its first wave"
                await asyncio.sleep(0.02)
            child.kill()
            child.wait(timeout=10)
            reboots = [w for w in live.sandbox.writes() if w.operation == "BatchRebootServers"]
            assert [w.server_ids for w in reboots] == [ids[0:2]]
            assert registry.store.get_action(action_id)["state"] == "executing"
            deadline = time.monotonic() + 30
            while (settled := await registry.settle()) == []:
                assert time.monotonic() < deadline, "the rollout was never settled"
                await asyncio.sleep(0.2)  # the lease runs out, the wave's job ends in the cloud
            assert settled == [action_id]
            row = registry.store.get_action(action_id)
            assert row["state"] == "stopped" and row["wave"] == 1
            result = json.loads(row["result_json"])
            assert [w["state"] for w in result["rollout"]["waves"]] == ["done", "not started", "not started"]
            assert result["resume"]["tool"] == "flexus_reboot_servers"
            assert result["resume"]["arguments"]["servers"] == ids[2:]
            assert result["resume"]["arguments"]["waves"]["size"] == 2
            assert [o["outcome"] for o in result["servers"]] == ["done"] * 2 + ["not started"] * 4
            # Nothing goes on by itself: more rounds of settling and time send no further wave.
            await registry.settle()
            await asyncio.sleep(1.0)
            assert len([w for w in live.sandbox.writes() if w.operation == "BatchRebootServers"]) == 1
            last = registry.store.audit_records()[-1]
            assert last.event == "reconciled" and last.detail["resent"] is False
            assert registry.store.verify_audit() == []
        finally:
            await registry.aclose()


async def test_a_rollout_that_died_before_its_wave_reached_the_cloud_offers_that_wave_again(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, team_policy())
    try:
        ids = [s["id"] for s in servers_with(registry, "ACTIVE")][:4]
        args = {"servers": ids, "waves": {"size": 2}}
        out = await registry.call(ALICE, "flexus_reboot_servers", args)
        assert isinstance(out, ChangeOutput) and out.preview is not None
        action_id = out.preview.action_id
        # The process died right after recording "wave 1 started", before the request left it.
        rollout = Rollout.of(out.preview.plan)
        rollout.waves[0].state, rollout.reached = "running", 1
        assert registry.store.transition(
            action_id, ["pending"], "executing", executed_by="alice", rollout_json=rollout.model_dump_json(), wave=1
        )
        assert await registry.settle() == [], "a recent wave may still land"
        backdate(registry, action_id)
        assert await registry.settle() == [action_id]
        row = registry.store.get_action(action_id)
        assert row["state"] == "stopped"
        result = ActionResult.model_validate_json(row["result_json"])
        assert result.rollout is not None and [w.state for w in result.rollout.waves] == ["not started"] * 2
        assert result.resume is not None and result.resume.arguments["servers"] == ids
        assert sandbox_of(registry).writes() == []
    finally:
        await registry.aclose()
