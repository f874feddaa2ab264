"""Who may settle an execution: only its owner while its lease is renewed, anyone once it has run out, and
a change of state that lost its compare-and-set leaves no audit record. A read-only MCP server, which
changes nothing itself, still settles a dead process's execution in the background."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from sqlalchemy import text

from flexus_ops.core.errors import Refused
from flexus_ops.core.plans import ChangeOutput
from flexus_ops.gate.gate import Gate
from flexus_ops.gate.secrets import Keys
from flexus_ops.gate.store import Store
from flexus_ops.registry.registry import Registry
from tests.faults.kit import active_server, cli_env, posts, until
from tests.gatekit import ALICE, make_registry, team_policy
from tests.live import AK, PID, SK, serve
from tests.procs import FLEXUS_OPS
from tests.test_mcp import structured

ROOT = Path(__file__).resolve().parents[2]


def registry_on(tmp_path: Path, endpoint: str | None = None, **settings: object) -> Registry:
    cloud: dict[str, object] = {}
    if endpoint is not None:
        cloud = {"ecs_endpoint": endpoint, "access_key": AK, "secret_key": SK, "project_id": PID}
    return make_registry(tmp_path, team_policy(), **(cloud | settings))


def events_of(registry: Registry, action_id: str) -> list[str]:
    return [record.event for record in registry.store.audit_records() if record.action_id == action_id]


def backdate(registry: Registry, action_id: str) -> None:
    """Make the action look silent for an hour: "not applied" would then be believed at once, so only the
    owner's lease stands between another process and settling it as failed."""
    with registry.store.engine.begin() as db:
        db.execute(text("UPDATE flexus_actions SET updated_at = updated_at - 3600 WHERE id = :i"), {"i": action_id})


async def test_a_live_execution_is_not_settled_while_its_owner_renews_the_lease(tmp_path: Path) -> None:
    with serve(job_seconds=0.2) as live:
        owner = registry_on(tmp_path, live.url, lease_seconds=1)
        other = registry_on(tmp_path, live.url, lease_seconds=1)
        try:
            server_id = active_server(live.sandbox)
            out = await owner.call(ALICE, "flexus_stop_servers", {"servers": [server_id]})
            assert isinstance(out, ChangeOutput) and out.preview is not None
            action_id = out.preview.action_id
            live.sandbox.knobs.hang_seconds = 3.0  # three leases long
            live.sandbox.knobs.hang_next_write = 1
            confirm = asyncio.create_task(
                owner.call(
                    ALICE,
                    "flexus_stop_servers",
                    {"servers": [server_id], "confirmation_token": out.preview.confirmation_token},
                )
            )
            await until(lambda: live.sandbox.knobs.hang_next_write == 0 or confirm.done(), what="the stop to arrive")
            first_lease = owner.store.get_action(action_id)["lease_until"]  # type: ignore[index]
            leases: list[float] = []
            past_first_lease = 0
            # While the stop is held in the cloud, another process tries to settle it, again and again.
            # The synchronous store calls run off the loop, so the owner's heartbeat, on the same loop, is
            # never held up by the test itself.
            while not live.sandbox.writes() and not confirm.done():
                await asyncio.to_thread(backdate, other, action_id)
                assert await other.settle() == [], "settled someone else's live execution"
                row = await asyncio.to_thread(other.store.get_action, action_id)
                assert row is not None and row["state"] == "executing"
                leases.append(row["lease_until"])
                past_first_lease += time.time() > first_lease
                await asyncio.sleep(0.1)
            done = await asyncio.wait_for(confirm, 60)
        finally:
            await owner.aclose()
            await other.aclose()
        # The attempts went on past the lease the owner first took: it held only because it was renewed.
        assert past_first_lease >= 1, "inconclusive: no attempt came after the first lease ran out"
        assert max(leases) > first_lease, "the owner renewed its lease while the stop was in flight"
        assert isinstance(done, ChangeOutput) and done.result is not None and done.result.status == "succeeded"
        assert owner.store.get_action(action_id)["state"] == "succeeded"  # type: ignore[index]
        events = events_of(owner, action_id)
        assert events.count("executed") == 1 and "reconciled" not in events, events
        assert len(posts(live.sandbox)) == 1


async def test_a_transition_that_loses_its_compare_and_set_writes_no_audit_record(
    tmp_path: Path, store_url: str
) -> None:
    first = make_registry(tmp_path, team_policy(), store_url=store_url)
    second = make_registry(tmp_path, team_policy(), store_url=store_url)
    try:
        target = {"servers": [active_server(first.client.sandbox)]}  # type: ignore[arg-type]
        preview = await first.call(ALICE, "flexus_stop_servers", target)
        assert isinstance(preview, ChangeOutput) and preview.preview is not None
        action_id = preview.preview.action_id
        action = first.store.get_action(action_id)
        assert action is not None
        before = len(first.store.audit_records())

        # A transition from the wrong state, with its audit record: nothing moves, nothing is recorded.
        entry = Gate.entry("approved", action, person="bob", surface="test")
        assert not first.store.transition(action_id, ["awaiting_approval"], "approved", audit_entry=entry)
        assert len(first.store.audit_records()) == before

        # The requester withdraws it through two processes at once, five times each: one wins.
        attempts = [r.reject(ALICE, action_id, "changed my mind") for r in (first, second) for _ in range(5)]
        outcomes = await asyncio.gather(*attempts, return_exceptions=True)
        assert sum(outcome is None for outcome in outcomes) == 1, outcomes
        assert all(isinstance(o, Refused) for o in outcomes if o is not None), outcomes
        assert events_of(first, action_id) == ["preview", "cancelled"]

        # An expired preview, expired by both processes at once: one "expired" record.
        again = await first.call(ALICE, "flexus_stop_servers", target)
        assert isinstance(again, ChangeOutput) and again.preview is not None
        with first.store.engine.begin() as db:
            db.execute(
                text("UPDATE flexus_actions SET expires_at = expires_at - 3600 WHERE id = :i"),
                {"i": again.preview.action_id},
            )
        await asyncio.gather(*(r.gate.expire_due(force=True) for r in (first, second) for _ in range(4)))
        assert events_of(first, again.preview.action_id) == ["preview", "expired"]
        assert first.store.verify_audit() == []
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.slow
async def test_a_read_only_mcp_server_settles_a_dead_process_execution(tmp_path: Path) -> None:
    with serve(job_seconds=0.2) as live:
        server_id = active_server(live.sandbox)
        env = cli_env(tmp_path, endpoint=live.url, FLEXUS_LEASE_SECONDS="1", FLEXUS_SETTLE_SECONDS="1")
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.crashwork", server_id],
            env=env | {"PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdin is not None
            action_id = json.loads(child.stdout.readline())["preview"]["action_id"]
            live.sandbox.knobs.hang_seconds = 1.5
            live.sandbox.knobs.hang_next_write = 1
            child.stdin.write("go\n")
            child.stdin.flush()
            # Killed while its stop is held in the cloud: the stop lands, nobody hears the answer.
            await until(lambda: live.sandbox.knobs.hang_next_write == 0, what="the child's stop to arrive")
        finally:
            child.kill()
            child.wait(timeout=10)

        store = Store(f"sqlite:///{tmp_path / 'flexus.db'}", Keys.load(tmp_path).audit)
        try:
            assert store.get_action(action_id)["state"] == "executing"  # type: ignore[index]
            params = StdioServerParameters(command=FLEXUS_OPS, args=["mcp", "--read-only"], env=env)
            async with Client(params, mode="legacy") as client:
                offered = {tool.name for tool in (await client.list_tools()).tools}
                listing = await client.call_tool("flexus_list_servers", {"limit": 1})
                assert structured(listing)["count"] == 30
                # Housekeeping started with that first call: it settles once the dead owner's lease is out.
                await until(
                    lambda: store.get_action(action_id)["state"] == "succeeded",  # type: ignore[index]
                    bound=60,
                    what="the read-only server to settle the action",
                    every=0.2,
                )
            assert "flexus_stop_servers" not in offered and "flexus_list_servers" in offered
            reconciled = [r for r in store.audit_records() if r.event == "reconciled"]
            assert [(r.action_id, r.surface, r.detail["resent"]) for r in reconciled] == [(action_id, "settler", False)]
            assert len(posts(live.sandbox)) == 1, "nothing was sent again"
        finally:
            store.dispose()
