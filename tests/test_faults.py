"""Faults from the cloud (per-server failures, 5xx, throttling, slow jobs) reach the person through the
MCP surface per server; nothing is retried that could act twice; the audit keeps every outcome; and
the server keeps answering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from flexus_ops.mcp_server import build_server
from flexus_ops.registry.registry import Registry
from tests.gatekit import make_registry, sandbox_of, servers_with, writes
from tests.test_mcp import local_policy, structured, text_of


@pytest.fixture
async def registry(tmp_path: Path):
    reg = make_registry(tmp_path, local_policy(), retry_base_seconds=0.05, retry_max_seconds=0.2)
    yield reg
    await reg.aclose()


async def confirm(client: Client, tool: str, arguments: dict[str, Any]) -> Any:
    preview = structured(await client.call_tool(tool, arguments))["preview"]
    return await client.call_tool(tool, arguments | {"confirmation_token": preview["confirmation_token"]})


async def test_per_server_failures_reach_the_person_with_reasons(registry: Registry) -> None:
    targets = [s["id"] for s in servers_with(registry, "ACTIVE")[:3]]
    sandbox_of(registry).knobs.failing_server_ids = {targets[1]}
    async with Client(build_server(registry)) as client:
        result = await confirm(client, "flexus_stop_servers", {"servers": targets})
        still_up = await client.call_tool("flexus_list_servers", {"limit": 1})
    data = structured(result)["result"]
    assert data["status"] == "partial"
    outcomes = {s["server_id"]: s for s in data["servers"]}
    assert outcomes[targets[1]]["outcome"] == "failed" and "injected failure" in outcomes[targets[1]]["detail"]
    assert outcomes[targets[0]]["outcome"] == outcomes[targets[2]]["outcome"] == "done"
    assert "1 failed" in text_of(result) and "injected failure" in text_of(result)
    assert not still_up.is_error
    executed = [r for r in registry.store.audit_records() if r.event == "executed"][-1]
    assert executed.detail["outcome"] == "partial" and executed.detail["servers"][targets[1]] == "failed"


async def test_a_refused_write_is_not_retried_and_is_reported(registry: Registry) -> None:
    target = [servers_with(registry, "ACTIVE")[0]["id"]]
    sandbox_of(registry).knobs.fail_next_write_5xx = 1
    async with Client(build_server(registry)) as client:
        failed = await confirm(client, "flexus_stop_servers", {"servers": target})
        again = await confirm(client, "flexus_stop_servers", {"servers": target})
    assert failed.is_error and "503" in text_of(failed) and "APIGW.0601" in text_of(failed)
    stops = [r for r in sandbox_of(registry).request_log if r.operation == "BatchStopServers"]
    assert [r.status for r in stops] == [503, 200], "one refused write, not retried; then a fresh confirmation"
    assert structured(again)["result"]["status"] == "succeeded"
    events = [(r.event, r.detail.get("outcome")) for r in registry.store.audit_records()]
    assert ("executed", "error") in events and ("executed", "succeeded") in events


async def test_throttling_and_read_errors_are_absorbed_by_retries(registry: Registry) -> None:
    sandbox = sandbox_of(registry)
    sandbox.knobs.fail_next_5xx = 2
    async with Client(build_server(registry)) as client:
        listing = await client.call_tool("flexus_list_servers", {"limit": 2})
        sandbox.knobs.rate_limit_per_second = 5.0
        target = [servers_with(registry, "ACTIVE")[0]["id"]]
        result = await confirm(client, "flexus_stop_servers", {"servers": target})
    assert not listing.is_error
    assert structured(result)["result"]["status"] == "succeeded"
    assert len(writes(registry)) == 1, "a throttled write is resent only because it was never processed"


async def test_slow_jobs_report_progress_and_a_timeout_keeps_the_job_id(registry: Registry) -> None:
    sandbox = sandbox_of(registry)
    sandbox.knobs.job_seconds = 0.6
    target = [servers_with(registry, "ACTIVE")[0]["id"]]
    seen: list[str | None] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen.append(message)

    async with Client(build_server(registry)) as client:
        preview = structured(await client.call_tool("flexus_stop_servers", {"servers": target}))["preview"]
        result = await client.call_tool(
            "flexus_stop_servers",
            {"servers": target, "confirmation_token": preview["confirmation_token"]},
            progress_callback=progress,
        )
        job_id = structured(result)["result"]["job_ids"][0]
        job = await client.call_tool("flexus_show_job", {"job_id": job_id})
    assert seen[0] == "0 of 1 servers done" and seen[-1] == "1 of 1 servers done"
    assert structured(job)["status"] == "SUCCESS"
