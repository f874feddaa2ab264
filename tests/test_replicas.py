"""Exactly once with real processes: four MCP HTTP replicas share one PostgreSQL store and one sandbox
cloud, and four racer processes confirm the same 200 previews through them. Every action runs once,
counted in the sandbox's request log; every other attempt is told it was already done, and by whom."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from flexus_ops.config import Settings
from flexus_ops.gate.policy import token_principal
from flexus_ops.registry.outputs import ChangeOutput
from flexus_ops.registry.registry import Registry
from flexus_ops.registry.spec import Caller
from tests import replicawork
from tests.conftest import _postgres_schema_url
from tests.test_inspector import free_port, wait_http

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
AK, SK, PID = "REPLICAAK00000000001", "replica-test-secret-key-0123456789ab", "1f2e3d4c5b6a79880796a5b4c3d2e1f0"
TOKEN = "fxt_replica-race-token-0123456789"
REPLICAS = RACERS = 4
ACTIONS = 200


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_schema_url()


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_four_replicas_four_racers_every_action_once(postgres_url: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[[people]]\nid = "alice"\nroles = ["operator"]\nprincipals = ["{token_principal(TOKEN)}"]\n')
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEXUS_", "HUAWEICLOUD_"))}
    shared = {
        "FLEXUS_ECS_ENDPOINT": sim_url,
        "HUAWEICLOUD_SDK_AK": AK,
        "HUAWEICLOUD_SDK_SK": SK,
        "HUAWEICLOUD_SDK_PROJECT_ID": PID,
        "FLEXUS_STORE_URL": postgres_url,
        "FLEXUS_POLICY": str(policy),
        "FLEXUS_TOKEN_KEY": "t" * 40,
        "FLEXUS_ENCRYPTION_KEY": "e" * 40,
        "FLEXUS_MCP_STATE_KEY": "m" * 40,
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        sim = _start(
            [
                str(BIN / "flexus-ops"),
                "sim",
                "--port",
                str(sim_port),
                "--servers",
                "300",
                "--ak",
                AK,
                "--sk",
                SK,
                "--project-id",
                PID,
                "--job-seconds",
                "0.2",
            ],
            base_env,
        )
        processes.append(sim)
        wait_http(f"{sim_url}/_sandbox/health", sim)
        urls = []
        for index in range(REPLICAS):
            port = free_port()
            env = base_env | shared | {"FLEXUS_STATE_DIR": str(tmp_path / f"replica{index}")}
            replica = _start([str(BIN / "flexus-ops"), "mcp", "--transport", "http", "--port", str(port)], env)
            processes.append(replica)
            wait_http(f"http://127.0.0.1:{port}/mcp", replica)
            urls.append(f"http://127.0.0.1:{port}/mcp")

        # The previews: 200 stops of distinct servers, made by alice (through the registry directly).
        settings = Settings(
            **{  # type: ignore[arg-type]
                "ecs_endpoint": sim_url,
                "access_key": AK,
                "secret_key": SK,
                "project_id": PID,
                "store_url": postgres_url,
                "policy_path": policy,
                "state_dir": tmp_path / "previewer",
                "token_key": "t" * 40,
                "encryption_key": "e" * 40,
                "mcp_state_key": "m" * 40,
            }
        )
        registry = Registry.from_settings(settings)
        alice = Caller(token_principal(TOKEN), "test")
        try:
            servers = await registry.client.list_all_servers(status="ACTIVE")
            targets = [s.id for s in servers if not s.locked][:ACTIONS]
            assert len(targets) == ACTIONS
            items = []
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
        urllib.request.urlopen(urllib.request.Request(f"{sim_url}/_sandbox/requests", method="DELETE"))  # noqa: S310

        with ProcessPoolExecutor(RACERS, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(
                pool.map(replicawork.race, [urls] * RACERS, [TOKEN] * RACERS, [items] * RACERS, range(RACERS))
            )
        outcomes = [outcome for racer in results for outcome in racer]
        assert len(outcomes) == RACERS * ACTIONS
        wins = Counter(action_id for action_id, outcome in outcomes if outcome == "ok")
        assert sorted(wins) == sorted(item["action_id"] for item in items), "every action ran"
        assert set(wins.values()) == {1}, "and none ran twice"
        losers = [outcome for _, outcome in outcomes if outcome != "ok"]
        assert len(losers) == (RACERS - 1) * ACTIONS
        assert all("already done by alice" in outcome for outcome in losers), Counter(losers).most_common(3)

        with urllib.request.urlopen(f"{sim_url}/_sandbox/requests") as response:  # noqa: S310 - loopback
            records = json.load(response)
        stops = [r for r in records if r["operation"] == "BatchStopServers" and r["is_write"]]
        assert len(stops) == ACTIONS
        assert sorted(sid for r in stops for sid in r["server_ids"]) == sorted(targets)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)


async def test_four_slack_replicas_four_approvers_every_reset_once(postgres_url: str, tmp_path: Path) -> None:
    """200 password-reset requests, approved at once by four processes clicking through four Slack HTTP
    replicas: each reset runs once; every other click is told it was already decided."""
    from tests.slackkit import APPROVALS_CHANNEL, BOT_TOKEN, SIGNING_SECRET, FakeSlack, serve, wait_until

    approvers = ["UBOB", "UERIN", "UFRANK", "UGRACE"]
    policy = tmp_path / "policy.toml"
    people = "".join(
        f'[[people]]\nid = "{user.lower()}"\nroles = ["approver"]\nprincipals = ["slack:{user}"]\n'
        for user in approvers
    )
    policy.write_text(
        f'[slack]\napprovals_channel = "{APPROVALS_CHANNEL}"\n'
        '[[people]]\nid = "alice"\nroles = ["operator"]\nprincipals = ["slack:UALICE"]\n' + people
    )
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEXUS_", "HUAWEICLOUD_", "SLACK_"))}
    shared = {
        "FLEXUS_ECS_ENDPOINT": sim_url,
        "HUAWEICLOUD_SDK_AK": AK,
        "HUAWEICLOUD_SDK_SK": SK,
        "HUAWEICLOUD_SDK_PROJECT_ID": PID,
        "FLEXUS_STORE_URL": postgres_url,
        "FLEXUS_POLICY": str(policy),
        "FLEXUS_TOKEN_KEY": "t" * 40,
        "FLEXUS_ENCRYPTION_KEY": "e" * 40,
        "FLEXUS_MCP_STATE_KEY": "m" * 40,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
    }
    fake = FakeSlack()
    processes: list[subprocess.Popen[bytes]] = []
    with serve(fake.app()) as fake_url:
        fake.url = fake_url
        shared["SLACK_API_URL"] = f"{fake_url}/api/"
        try:
            sim = _start(
                [
                    str(BIN / "flexus-ops"),
                    "sim",
                    "--port",
                    str(sim_port),
                    "--servers",
                    "300",
                    "--ak",
                    AK,
                    "--sk",
                    SK,
                    "--project-id",
                    PID,
                ],
                base_env,
            )
            processes.append(sim)
            wait_http(f"{sim_url}/_sandbox/health", sim)
            bot_urls = []
            for index in range(REPLICAS):
                port = free_port()
                env = base_env | shared | {"FLEXUS_STATE_DIR": str(tmp_path / f"bot{index}")}
                bot = _start([str(BIN / "flexus-ops"), "slack", "--mode", "http", "--port", str(port)], env)
                processes.append(bot)
                wait_http(f"http://127.0.0.1:{port}/healthz", bot)
                bot_urls.append(f"http://127.0.0.1:{port}")

            settings = Settings(
                **{  # type: ignore[arg-type]
                    "ecs_endpoint": sim_url,
                    "access_key": AK,
                    "secret_key": SK,
                    "project_id": PID,
                    "store_url": postgres_url,
                    "policy_path": policy,
                    "state_dir": tmp_path / "requester",
                    "token_key": "t" * 40,
                    "encryption_key": "e" * 40,
                    "mcp_state_key": "m" * 40,
                }
            )
            registry = Registry.from_settings(settings)
            alice = Caller("slack:UALICE", "slack")
            try:
                servers = await registry.client.list_all_servers(status="ACTIVE")
                targets = [s.id for s in servers if not s.locked][:ACTIONS]
                action_ids = []
                for server_id in targets:
                    arguments = {"servers": [server_id], "reason": "rotation", "new_password": "Race-Reset-pass7"}
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

            with ProcessPoolExecutor(RACERS, mp_context=multiprocessing.get_context("spawn")) as pool:
                clicked = list(
                    pool.map(
                        replicawork.slack_approve_race,
                        [bot_urls] * RACERS,
                        [fake_url] * RACERS,
                        [action_ids] * RACERS,
                        approvers,
                        range(RACERS),
                    )
                )
            response_urls = [url for urls in clicked for url in urls]
            assert len(response_urls) == RACERS * ACTIONS

            def resets() -> list[dict]:
                with urllib.request.urlopen(f"{sim_url}/_sandbox/requests") as response:  # noqa: S310 - loopback
                    return [
                        r
                        for r in json.load(response)
                        if r["operation"] == "BatchResetServersPassword" and r["is_write"]
                    ]

            wait_until(lambda: len(resets()) >= ACTIONS, timeout=240, what="200 executed resets")
            refusals = wait_until(
                lambda: (
                    (found := [c for c in fake.snapshot() if c.kind == "response_url" and "Not approved" in c.raw])
                    and len(found) >= (RACERS - 1) * ACTIONS
                    and found
                ),
                timeout=240,
                what="600 refusals",
            )
            executed = resets()
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=15)
    assert len(executed) == ACTIONS, "every request ran once, none twice"
    assert sorted(sid for r in executed for sid in r["server_ids"]) == sorted(targets)
    assert len(refusals) == (RACERS - 1) * ACTIONS
    assert all("already" in call.raw for call in refusals), refusals[0].raw[:300]
    assert "Race-Reset-pass7" not in fake.everything()
