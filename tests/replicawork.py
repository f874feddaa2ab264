"""A racer process for the replica tests: confirms every preview it is given through MCP HTTP replicas."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def _race(urls: list[str], token: str, items: list[dict[str, Any]], worker: int) -> list[tuple[str, str]]:
    outcomes: list[tuple[str, str]] = []
    async with AsyncExitStack() as stack:  # exits the sessions in reverse order, as anyio requires
        clients = []
        for url in urls:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
            transport = streamable_http_client(url, http_client=http)
            clients.append(await stack.enter_async_context(Client(transport, mode="legacy")))
        for index, item in enumerate(items):
            # Each racer walks the replicas in its own order, so every preview is tried on several.
            client = clients[(index + worker) % len(clients)]
            result = await client.call_tool("flexus_stop_servers", item["arguments"])
            text = "".join(getattr(block, "text", "") for block in result.content)
            replayed = bool(((result.structured_content or {}).get("result") or {}).get("replay"))
            outcome = "error: " + text if result.is_error else "replay" if replayed else "ok"
            outcomes.append((item["action_id"], outcome))
    return outcomes


def race(urls: list[str], token: str, items: list[dict[str, Any]], worker: int) -> list[tuple[str, str]]:
    return asyncio.run(_race(urls, token, items, worker))


def slack_approve_race(
    bot_urls: list[str], fake_url: str, action_ids: list[str], approver: str, worker: int
) -> list[str]:
    """Clicks Approve on every request, each on a replica of its own choosing; returns the response URLs."""
    from flexus_ops.bots.slack.blocks import APPROVE
    from tests.slackkit import APPROVALS_CHANNEL, FakeSlack, SlackDriver

    fake = FakeSlack(url=fake_url)
    drivers = [SlackDriver(url, fake) for url in bot_urls]
    urls: list[str] = []
    for index, action_id in enumerate(action_ids):
        driver = drivers[(index + worker) % len(drivers)]
        response_url = f"{fake_url}/response/w{worker}-{index}"
        body, _ = driver.click_body(
            approver,
            APPROVE,
            action_id,
            channel=APPROVALS_CHANNEL,
            message_ts=f"1700000001.{index:06d}",
            response_url=response_url,
        )
        answer = driver.post(body)
        assert answer.status_code == 200, answer.text
        urls.append(response_url)
    return urls
