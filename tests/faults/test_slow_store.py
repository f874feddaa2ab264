"""No database call runs on a surface's event loop: while one request is stuck in a slow store, the same
server keeps answering others (an MCP read, a Slack ack and its answer). Proved with events, not timings:
the store holds the first request until the test releases it, and every store call says which thread it
ran on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mcp import Client

from flexus_ops.bots.slack.app import SlackBot
from flexus_ops.bots.slack.settings import SlackBotSettings
from flexus_ops.config import Settings
from flexus_ops.gate.policy import Policy
from flexus_ops.gate.secrets import Keys
from flexus_ops.gate.store import Store
from flexus_ops.mcp_server import build_server
from flexus_ops.registry.registry import Registry, make_client
from tests.slackkit import ALICE, BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackDriver, buttons, serve, slack_policy
from tests.test_mcp import local_policy, structured

BOUND = 30.0  # failure bounds only: nothing below is judged by how long it took


class SlowStore(Store):
    """A store whose action lookups wait, once ``slow`` is set, until the test releases them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.threads: set[str] = set()
        super().__init__(*args, **kwargs)  # connects and migrates on the test's own thread
        self.threads = set()  # from here on: every thread a surface's store call ran on
        self.slow = False
        self.entered = threading.Event()  # a lookup is being held
        self.release = threading.Event()

    def tx(self) -> Any:
        self.threads.add(threading.current_thread().name)
        return super().tx()

    def _hold(self) -> None:
        if self.slow and not self.release.is_set():
            self.entered.set()
            assert self.release.wait(BOUND * 2), "the test never released the store"

    def get_action(self, action_id: str) -> dict[str, Any] | None:
        self._hold()
        return super().get_action(action_id)

    def find_open_action(self, person: str, tool: str, args_hash: str, states: Sequence[str]) -> dict[str, Any] | None:
        self._hold()
        return super().find_open_action(person, tool, args_hash, states)


def slow_registry(tmp_path: Path, policy: Policy) -> tuple[Registry, SlowStore]:
    settings = Settings(state_dir=tmp_path, sandbox_job_seconds=0.1, job_poll_seconds=0.02)
    keys = Keys.load(tmp_path)
    store = SlowStore(settings.resolved_store_url, keys.audit)
    registry = Registry(settings, client=make_client(settings), store=store, policy=policy, keys=keys)
    return registry, store


def only_store_threads(store: SlowStore) -> None:
    # AsyncStore names its threads flexus-store_N; anything else would be a surface's loop (or its caller).
    assert store.threads, "the store was used"
    assert all(name.startswith("flexus-store") for name in store.threads), store.threads


async def test_an_mcp_read_is_answered_while_a_preview_is_stuck_in_the_store(tmp_path: Path) -> None:
    registry, store = slow_registry(tmp_path, local_policy())
    try:
        async with Client(build_server(registry)) as client:
            store.slow = True
            preview = asyncio.create_task(client.call_tool("flexus_stop_servers", {"servers": ["web-01"]}))
            assert await asyncio.to_thread(store.entered.wait, BOUND), "the preview never reached the store"

            listing = await asyncio.wait_for(client.call_tool("flexus_list_servers", {"limit": 1}), BOUND)
            assert not listing.is_error and structured(listing)["count"] == 30
            assert not preview.done(), "the preview is still held in the store, yet the read was answered"

            store.release.set()
            result = await asyncio.wait_for(preview, BOUND)
        assert not result.is_error
        assert structured(result)["preview"]["plan"]["items"][0]["name"] == "web-01"
        only_store_threads(store)
    finally:
        store.release.set()
        await registry.aclose()


@contextmanager
def bot_on(registry: Registry) -> Iterator[tuple[FakeSlack, SlackDriver]]:
    """The Slack bot over ``registry`` at its real HTTP endpoint, talking to a fake Slack (as slackkit.rig)."""
    fake = FakeSlack()
    with serve(fake.app()) as fake_url:
        fake.url = fake_url
        settings = SlackBotSettings(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, api_url=f"{fake_url}/api/")  # type: ignore[call-arg]
        bot = SlackBot(registry, settings, progress_interval=0.0)
        with serve(bot.asgi()) as bot_url:
            driver = SlackDriver(bot_url, fake)
            try:
                yield fake, driver
            finally:
                driver.http.close()


def test_a_slack_command_is_acked_and_answered_while_another_is_stuck_in_the_store(tmp_path: Path) -> None:
    registry, store = slow_registry(tmp_path, slack_policy())
    try:
        with bot_on(registry) as (fake, slack):
            store.slow = True
            stuck, stuck_url = slack.command(ALICE, "stop web-01")
            assert stuck.status_code == 200
            assert store.entered.wait(BOUND), "the preview never reached the store"

            listed, list_url = slack.command(ALICE, "list")
            assert listed.status_code == 200, "acked while the other request waits on the store"
            (answer,) = fake.wait_at(list_url)
            assert "web-01" in answer.text
            assert fake.at(stuck_url) == [], "the stuck preview has not answered yet"

            store.release.set()
            (preview,) = fake.wait_at(stuck_url)
            assert buttons(preview.blocks), preview.text  # the preview, with its Confirm button
        only_store_threads(store)
    finally:
        store.release.set()
        registry.store.engine.dispose()
