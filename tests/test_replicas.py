"""Exactly once with real processes. Four replicas (MCP over HTTP, or the Slack bot over HTTP) share one
PostgreSQL store and one sandbox cloud, and four racer processes act on the same 200 previews or
approval requests through them. Every action runs once, counted in the sandbox's request log; every
other attempt is told it was already done."""

from __future__ import annotations

import json
import multiprocessing
import os
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flexus_ops.config import Settings
from flexus_ops.core.plans import ChangeOutput
from flexus_ops.core.tools import Caller
from flexus_ops.gate.policy import token_principal
from flexus_ops.registry.registry import Registry
from tests import replicawork
from tests.conftest import _postgres_schema_url
from tests.procs import FLEXUS_OPS, free_port, sim_process, start, stop, wait_http

pytestmark = pytest.mark.slow
AK, SK, PID = "REPLICAAK00000000001", "replica-test-secret-key-0123456789ab", "1f2e3d4c5b6a79880796a5b4c3d2e1f0"
TOKEN = "fxt_replica-race-token-0123456789"
PASSWORD = "Race-Reset-pass7"
KEYS = {"token_key": "t" * 40, "encryption_key": "e" * 40, "mcp_state_key": "m" * 40, "audit_key": "a" * 40}
REPLICAS = RACERS = 4
ACTIONS = 200


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_schema_url()


@dataclass
class Cluster:
    sim_url: str
    urls: list[str]
    settings: Settings  # what the test's own registry uses: the same cloud, store, policy and keys

    def writes(self, operation: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.sim_url}/_sandbox/requests") as response:  # noqa: S310 - loopback
            return [r for r in json.load(response) if r["operation"] == operation and r["is_write"]]

    async def active_servers(self) -> list[str]:
        registry = Registry.from_settings(self.settings)
        try:
            servers = await registry.client.list_all_servers(status="ACTIVE")
        finally:
            await registry.aclose()
        # Only servers every change applies to: the status filter also finds ACTIVE's intermediate states,
        # and a locked or frozen server is skipped by the preview (it would have no token to race for).
        usable = [s for s in servers if s.status == "ACTIVE" and not (s.task_state or s.locked or s.frozen)]
        return [s.id for s in usable][:ACTIONS]


@contextmanager
def cluster(
    tmp_path: Path,
    postgres_url: str,
    policy: str,
    replica: list[str],
    ready: str,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """A sim and four replica processes of ``flexus-ops <replica...> --port P``, sharing one store."""
    policy_path = tmp_path / "policy.toml"
    policy_path.write_text(policy)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEXUS_", "HUAWEICLOUD_", "SLACK_"))}
    with sim_process(
        "--servers", "300", "--ak", AK, "--sk", SK, "--project-id", PID, "--job-seconds", "0.2", env=base_env
    ) as sim_url:
        shared = {
            "FLEXUS_ECS_ENDPOINT": sim_url,
            "HUAWEICLOUD_SDK_AK": AK,
            "HUAWEICLOUD_SDK_SK": SK,
            "HUAWEICLOUD_SDK_PROJECT_ID": PID,
            "FLEXUS_STORE_URL": postgres_url,
            "FLEXUS_POLICY": str(policy_path),
            **{f"FLEXUS_{name.upper()}": value for name, value in KEYS.items()},
            **(extra_env or {}),
        }
        processes = []
        urls = []
        try:
            for index in range(REPLICAS):
                port = free_port()
                env = base_env | shared | {"FLEXUS_STATE_DIR": str(tmp_path / f"replica{index}")}
                processes.append(start([FLEXUS_OPS, *replica, "--port", str(port)], env))
                wait_http(f"http://127.0.0.1:{port}{ready}", processes[-1])
                urls.append(f"http://127.0.0.1:{port}")
            settings = Settings(  # type: ignore[call-arg]
                ecs_endpoint=sim_url,
                access_key=AK,
                secret_key=SK,
                project_id=PID,
                store_url=postgres_url,
                policy_path=policy_path,
                state_dir=tmp_path / "test-process",
                **KEYS,
            )
            yield Cluster(sim_url, urls, settings)
        finally:
            stop(processes)


def race(function: Any, *arguments: list[Any]) -> list[Any]:
    with ProcessPoolExecutor(RACERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(function, *arguments, range(RACERS)))


async def test_four_mcp_replicas_four_racers_every_confirmation_once(postgres_url: str, tmp_path: Path) -> None:
    policy = f'[[people]]\nid = "alice"\nroles = ["operator"]\nprincipals = ["{token_principal(TOKEN)}"]\n'
    mcp = ["mcp", "--transport", "http"]
    with cluster(tmp_path, postgres_url, policy, mcp, "/mcp") as where:
        targets = await where.active_servers()
        registry = Registry.from_settings(where.settings)
        alice = Caller(token_principal(TOKEN), "test")
        items = []
        try:  # the previews: 200 stops of distinct servers, made by alice
            for server_id in targets:
                arguments = {"servers": [server_id], "wait": False}
                out = await registry.call(alice, "flexus_stop_servers", arguments)
                assert isinstance(out, ChangeOutput) and out.preview is not None
                token = out.preview.confirmation_token
                items.append(
                    {"action_id": out.preview.action_id, "arguments": arguments | {"confirmation_token": token}}
                )
        finally:
            await registry.aclose()

        urls = [f"{url}/mcp" for url in where.urls]
        results = race(replicawork.race, [urls] * RACERS, [TOKEN] * RACERS, [items] * RACERS)
        stops = where.writes("BatchStopServers")

    outcomes = [outcome for racer in results for outcome in racer]
    assert len(outcomes) == RACERS * ACTIONS
    wins = Counter(action_id for action_id, outcome in outcomes if outcome == "ok")
    assert sorted(wins) == sorted(item["action_id"] for item in items), "every action ran"
    assert set(wins.values()) == {1}, "and none ran twice"
    losers = [outcome for _, outcome in outcomes if outcome != "ok"]
    assert len(losers) == (RACERS - 1) * ACTIONS
    # A loser either met the execution in flight ("already done") or, after it, got its recorded outcome.
    assert all(o == "replay" or "already done by alice" in o for o in losers), Counter(losers).most_common(3)
    assert len(stops) == ACTIONS
    assert sorted(sid for r in stops for sid in r["server_ids"]) == sorted(targets)


async def test_four_slack_replicas_four_approvers_every_reset_once(postgres_url: str, tmp_path: Path) -> None:
    from tests.slackkit import APPROVALS_CHANNEL, BOT_TOKEN, SIGNING_SECRET, FakeSlack, serve, wait_until

    approvers = ["UBOB", "UERIN", "UFRANK", "UGRACE"]
    policy = f'[slack]\napprovals_channel = "{APPROVALS_CHANNEL}"\n' + "".join(
        f'[[people]]\nid = "{user.lower()}"\nroles = ["{role}"]\nprincipals = ["slack:{user}"]\n'
        for user, role in [("UALICE", "operator")] + [(user, "approver") for user in approvers]
    )
    fake = FakeSlack()
    with serve(fake.app()) as fake_url:
        fake.url = fake_url
        slack_env = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": f"{fake_url}/api/",
        }
        bot = ["slack", "--mode", "http"]
        with cluster(tmp_path, postgres_url, policy, bot, "/healthz", slack_env) as where:
            targets = await where.active_servers()
            registry = Registry.from_settings(where.settings)
            alice = Caller("slack:UALICE", "slack")
            action_ids = []
            try:  # 200 confirmed reset requests, each waiting for approval
                for server_id in targets:
                    arguments = {"servers": [server_id], "reason": "rotation", "new_password": PASSWORD}
                    out = await registry.call(alice, "flexus_reset_servers_password", arguments)
                    assert isinstance(out, ChangeOutput) and out.preview is not None
                    token = out.preview.confirmation_token
                    done = await registry.call(
                        alice, "flexus_reset_servers_password", arguments | {"confirmation_token": token}
                    )
                    assert isinstance(done, ChangeOutput) and done.result is not None
                    assert done.result.status == "awaiting_approval"
                    action_ids.append(out.preview.action_id)
            finally:
                await registry.aclose()

            clicked = race(
                replicawork.slack_approve_race,
                [where.urls] * RACERS,
                [fake_url] * RACERS,
                [action_ids] * RACERS,
                approvers,
            )
            assert sum(len(urls) for urls in clicked) == RACERS * ACTIONS
            wait_until(
                lambda: len(where.writes("BatchResetServersPassword")) >= ACTIONS,
                timeout=240,
                what="200 executed resets",
            )

            def refused() -> list[Any]:
                return [c for c in fake.snapshot() if c.kind == "response_url" and "Not approved" in c.raw]

            refusals = wait_until(
                lambda: len(found := refused()) >= (RACERS - 1) * ACTIONS and found, timeout=240, what="600 refusals"
            )
            executed = where.writes("BatchResetServersPassword")

    assert len(executed) == ACTIONS, "every request ran once, none twice"
    assert sorted(sid for r in executed for sid in r["server_ids"]) == sorted(targets)
    assert len(refusals) == (RACERS - 1) * ACTIONS
    assert all("already" in call.raw for call in refusals), refusals[0].raw[:300]
    assert PASSWORD not in fake.everything()
