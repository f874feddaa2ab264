"""The tools against the sandbox where the official SDK cannot reach (issue 13): job reports, status
ranges, names and ids as the Flexus L reference documents them."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexus_ops.core.errors import InvalidInput
from flexus_ops.core.plans import ChangeOutput
from flexus_ops.registry.outputs import JobOutput, ListServersOutput
from flexus_ops.registry.registry import Registry
from tests.gatekit import ALICE, CAROL, make_registry, sandbox_of, servers_with


@pytest.fixture
async def registry(tmp_path: Path):
    reg = make_registry(tmp_path)
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
