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
            outcomes.append((item["action_id"], "error: " + text if result.is_error else "ok"))
    return outcomes


def race(urls: list[str], token: str, items: list[dict[str, Any]], worker: int) -> list[tuple[str, str]]:
    return asyncio.run(_race(urls, token, items, worker))
