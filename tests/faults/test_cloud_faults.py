"""The cloud misbehaves on the wire: an answer to a confirmed write is lost (dropped by a proxy, or held
past the client's timeout), an answer comes too late, or nothing answers at all. A lost answer is never a
failure and never re-sent: the caller is told it may have been applied, the store keeps it `unknown`, and
settling reads the servers to find out. A read never hangs: it fails within its deadline, in one line."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from flexus_ops.core.errors import OutcomeUnknown
from flexus_ops.core.plans import ChangeOutput
from flexus_ops.registry.registry import Registry
from tests.faults.kit import BlackHole, Proxy, active_server, cli, cli_env, posts, problem_lines, until
from tests.gatekit import ALICE, make_registry
from tests.live import AK, PID, SK, LiveSandbox, serve


def registry_on(tmp_path: Path, endpoint: str, **settings: object) -> Registry:
    """A registry on ``tmp_path``'s state (the CLI's too) that reads the cloud at ``endpoint``."""
    values: dict[str, object] = {
        "ecs_endpoint": endpoint,
        "access_key": AK,
        "secret_key": SK,
        "project_id": PID,
        "retry_base_seconds": 0.01,
        "retry_max_seconds": 0.05,
    }
    return make_registry(tmp_path, **(values | settings))


async def settles_as_applied(registry: Registry, live: LiveSandbox, action_id: str, server_id: str) -> None:
    """Settling finds the stop in the cloud: succeeded, audited as reconciled, nothing sent again."""
    # Only once the write has landed can the servers show it ("not applied" is believed only after a minute).
    await until(lambda: live.sandbox.writes(), what="the lost write to land")
    deadline = time.monotonic() + 30
    while not (settled := await registry.settle()):
        assert time.monotonic() < deadline, "the action was never settled"
        await asyncio.sleep(0.1)
    assert settled == [action_id]
    row = registry.store.get_action(action_id)
    assert row is not None and row["state"] == "succeeded"
    assert json.loads(row["result_json"])["reconciled"]["observed"] == {server_id: "applied"}
    last = registry.store.audit_records()[-1]
    assert (last.event, last.action_id, last.detail["resent"]) == ("reconciled", action_id, False)
    assert len(posts(live.sandbox)) == 1, "settling sent nothing"
    assert registry.store.verify_audit() == []


async def test_a_dropped_answer_to_a_confirmed_stop_is_unknown_then_settled(tmp_path: Path) -> None:
    with serve(job_seconds=0.2) as live, Proxy(live.url) as proxy:
        server_id = active_server(live.sandbox)
        env = cli_env(tmp_path, endpoint=proxy.url)
        args = json.dumps({"servers": [server_id]})
        preview = cli(env, "call", "flexus_stop_servers", "--args", args)
        assert preview.returncode == 0, preview.stderr
        token = json.loads(preview.stdout)["preview"]["confirmation_token"]
        action_id = json.loads(preview.stdout)["preview"]["action_id"]

        proxy.drop_post_answers = 1  # the cloud processes the stop; its answer never reaches the CLI
        confirmed = cli(env, "call", "flexus_stop_servers", "--args", args, "--confirm", token)

        assert proxy.dropped == 1
        assert confirmed.returncode == 5, confirmed.stderr
        (line,) = problem_lines(confirmed.stderr)
        assert "may have been applied" in line and "Do not retry" in line, line
        assert "Traceback" not in confirmed.stderr + confirmed.stdout and confirmed.stdout == ""
        assert len(posts(live.sandbox)) == 1, "the stop reached the cloud once and was not re-sent"

        registry = registry_on(tmp_path, live.url)
        try:
            row = registry.store.get_action(action_id)
            assert row is not None and row["state"] == "unknown", "a lost answer is never recorded as failed"
            await settles_as_applied(registry, live, action_id, server_id)
        finally:
            await registry.aclose()


async def test_a_write_held_past_the_client_timeout_is_unknown_then_settled(tmp_path: Path) -> None:
    with serve(job_seconds=0.2) as live:
        server_id = active_server(live.sandbox)
        registry = registry_on(tmp_path, live.url, timeout_seconds=1.0)
        try:
            out = await registry.call(ALICE, "flexus_stop_servers", {"servers": [server_id]})
            assert isinstance(out, ChangeOutput) and out.preview is not None
            # The stop is processed after 2.5 s, long after the client gave up on its answer at 1 s.
            live.sandbox.knobs.hang_seconds = 2.5
            live.sandbox.knobs.hang_next_write = 1
            token = out.preview.confirmation_token
            with pytest.raises(OutcomeUnknown) as unknown:
                await registry.call(ALICE, "flexus_stop_servers", {"servers": [server_id], "confirmation_token": token})
            message = str(unknown.value)
            assert "may have been applied" in message and "Do not retry" in message, message
            assert unknown.value.action_id == out.preview.action_id
            row = registry.store.get_action(out.preview.action_id)
            assert row is not None and row["state"] == "unknown"
            await settles_as_applied(registry, live, out.preview.action_id, server_id)
        finally:
            await registry.aclose()


def test_a_cloud_that_never_answers_fails_a_read_within_its_deadline(tmp_path: Path) -> None:
    with BlackHole() as hole:
        env = cli_env(tmp_path, endpoint=hole.url, FLEXUS_READ_DEADLINE="2")
        # The bound only fails a hang; the read deadline (2 s) is what ends it.
        listing = cli(env, "call", "flexus_list_servers", bound=30)
    assert listing.returncode == 3, listing.stderr
    (line,) = problem_lines(listing.stderr)
    assert line.startswith("flexus-ops: network:") and "nothing was changed" in line, line
    assert "Traceback" not in listing.stderr and listing.stdout == ""


def test_a_cloud_that_answers_too_late_fails_a_read_within_its_deadline(tmp_path: Path) -> None:
    with serve() as live, Proxy(live.url) as proxy:
        proxy.answer_delay = 5.0  # every answer arrives, but after the read deadline
        env = cli_env(tmp_path, endpoint=proxy.url, FLEXUS_READ_DEADLINE="2")
        listing = cli(env, "call", "flexus_list_servers", bound=30)
    assert listing.returncode == 3, listing.stderr
    (line,) = problem_lines(listing.stderr)
    assert line.startswith("flexus-ops: network:") and "nothing was changed" in line, line
    assert "Traceback" not in listing.stderr and listing.stdout == ""
    assert live.sandbox.request_log and live.sandbox.writes() == []
