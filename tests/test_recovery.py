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

from flexus_ops.core.plans import ChangeOutput
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
