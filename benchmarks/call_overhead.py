"""call_overhead: what the MCP layer adds to one read. ``flexus_show_server`` through ``mcp.Client``,
in memory and over stdio (``flexus-ops mcp``), minus a direct ``FlexusClient.show_server`` on the
same sandbox.

In memory, both go to the registry's embedded sandbox; over stdio, both go to one ``flexus-ops sim``.
Samples are interleaved call by call (direct, MCP, direct, MCP, ...) so that machine noise hits both
alike. A no-op tool on a bare ``MCPServer`` (cold_start's floor) is timed the same way: what the
MCP SDK itself costs per call, which no server built on it can go below. The tool resolves its
argument with ``ListServersDetails?server_id=`` (it accepts names as well as ids), so the request
the tool itself sends is timed directly too, to separate "the tool sends a different request" from
"the MCP layer costs time".
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .harness import (
    BENCH_DIR,
    Case,
    CaseResult,
    RunContext,
    env_without_secrets,
    fmt_ratio,
    fmt_seconds,
    ratio,
    summary,
)
from .sim import running_sim

WARMUP = 20
GOAL_OVER_NOOP = 1.10  # overhead p50 / the bare SDK no-op call p50 (#15)

Timed = Callable[[], Awaitable[Any]]


async def _interleaved(calls: dict[str, Timed], n: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(WARMUP):
        for call in calls.values():
            await call()
    order = list(calls.items())
    for index in range(n):
        # Rotate who goes first, so no side always runs right after the other warmed a cache.
        shift = index % len(order)
        for name, call in order[shift:] + order[:shift]:
            started = time.perf_counter()
            await call()
            samples[name].append(time.perf_counter() - started)
    return samples


def floor_server() -> Any:
    """The bare one-tool MCPServer of cold_start: its no-op call is what the MCP SDK alone costs."""
    from .floor_server import server

    return server


def _checked(result: Any) -> Any:
    if result.is_error:
        raise RuntimeError(f"flexus_show_server failed: {result.content}")
    return result


async def _in_memory(n: int, state_dir: str) -> dict[str, list[float]]:
    from mcp import Client

    from flexus_ops.config import Settings
    from flexus_ops.mcp_server import build_server
    from flexus_ops.registry.registry import Registry

    # No credentials: the embedded sandbox, with no added latency, so the overhead is all that differs.
    registry = Registry.from_settings(Settings(state_dir=state_dir))
    try:
        server_id = (await registry.client.list_servers(limit=1)).servers[0].id
        async with Client(build_server(registry)) as client, Client(floor_server()) as floor:

            async def mcp() -> Any:
                return _checked(await client.call_tool("flexus_show_server", {"server": server_id}))

            return await _interleaved(
                {
                    "direct": lambda: registry.client.show_server(server_id),
                    "direct_list_by_id": lambda: registry.client.list_servers(server_id=[server_id], limit=1000),
                    "mcp": mcp,
                    "sdk_floor_noop_tool": lambda: floor.call_tool("ping", {"x": 1}),
                },
                n,
            )
    finally:
        await registry.aclose()


async def _stdio(ctx: RunContext, n: int, state_dir: str) -> dict[str, list[float]]:
    from mcp import Client, StdioServerParameters

    with running_sim(ctx, servers=30) as sim:
        env = {**env_without_secrets(), **sim.env(), "FLEXUS_STATE_DIR": state_dir}
        params = StdioServerParameters(command=ctx.flexus_ops, args=["mcp"], env=env)
        floor_params = StdioServerParameters(
            command=ctx.python, args=[str(BENCH_DIR / "floor_server.py")], env=env_without_secrets()
        )
        relay_env = {**env_without_secrets(), **sim.env()}
        relay_params = StdioServerParameters(
            command=ctx.python, args=[str(BENCH_DIR / "floor_relay_server.py")], env=relay_env
        )
        async with sim.client() as direct:
            server_id = (await direct.list_servers(limit=1)).servers[0].id
            async with Client(params) as client, Client(floor_params) as floor, Client(relay_params) as relay:

                async def mcp() -> Any:
                    return _checked(await client.call_tool("flexus_show_server", {"server": server_id}))

                async def relayed() -> Any:
                    answer = await relay.call_tool("fetch", {"server_id": server_id})
                    if answer.is_error:
                        raise RuntimeError(f"the relay floor's request failed: {answer.content}")
                    return answer

                return await _interleaved(
                    {
                        "direct": lambda: direct.show_server(server_id),
                        "direct_list_by_id": lambda: direct.list_servers(server_id=[server_id], limit=1000),
                        "mcp": mcp,
                        "sdk_floor_noop_tool": lambda: floor.call_tool("ping", {"x": 1}),
                        "sdk_floor_relay_tool": relayed,
                    },
                    n,
                )


def run(ctx: RunContext, result: CaseResult) -> None:
    n = ctx.pick(300, 30)
    result.setup = {
        "calls_per_side": n,
        "warm_up_calls": WARMUP,
        "in_memory": "mcp.Client(build_server(registry)) vs registry.client, embedded sandbox, no added latency",
        "stdio": "mcp.Client(StdioServerParameters(flexus-ops mcp)) vs FlexusClient, both on one flexus-ops sim",
        "overhead": "percentile of MCP samples minus the same percentile of direct show_server samples",
    }
    state_dir = tempfile.mkdtemp(prefix="flexus-bench-state-")
    try:
        ctx.log("call_overhead: in memory")
        in_memory = asyncio.run(_in_memory(n, state_dir))
        ctx.log("call_overhead: stdio")
        stdio = asyncio.run(_stdio(ctx, n, state_dir))
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    for label, samples in (("in_memory", in_memory), ("stdio", stdio)):
        stats = {name: summary(values) for name, values in samples.items()}
        p50 = stats["mcp"]["median"] - stats["direct"]["median"]
        p99 = stats["mcp"]["p99"] - stats["direct"]["p99"]
        p50_vs_list = stats["mcp"]["median"] - stats["direct_list_by_id"]["median"]
        result.data[label] = {
            "samples_seconds": samples,
            "stats": stats,
            "overhead_p50": p50,
            "overhead_p99": p99,
            "overhead_p50_vs_list_by_id": p50_vs_list,
        }
        result.figure(
            f"{label}: MCP p50 / p99",
            f"{fmt_seconds(stats['mcp']['median'])} / {fmt_seconds(stats['mcp']['p99'])} (n={stats['mcp']['n']})",
        )
        result.figure(
            f"{label}: direct show_server p50 / p99",
            f"{fmt_seconds(stats['direct']['median'])} / {fmt_seconds(stats['direct']['p99'])}",
        )
        result.figure(
            f"{label}: direct list-by-id (the tool's request) p50",
            fmt_seconds(stats["direct_list_by_id"]["median"]),
        )
        noop = stats["sdk_floor_noop_tool"]
        result.figure(
            f"{label}: no-op tool on a bare MCPServer (the SDK's own cost) p50 / p99",
            f"{fmt_seconds(noop['median'])} / {fmt_seconds(noop['p99'])}",
        )
        result.figure(
            f"{label}: overhead p50 / p99",
            f"{fmt_seconds(p50)} / {fmt_seconds(p99)} (p50 vs the tool's own request: {fmt_seconds(p50_vs_list)})",
        )
        if relay := stats.get("sdk_floor_relay_tool"):
            # What any server pays that makes the tool's request through the SDK over stdio (see
            # floor_relay_server.py): its overhead over the same direct call, against the no-op's.
            relay_overhead = relay["median"] - stats["direct"]["median"]
            result.data[label]["relay_floor_overhead_over_noop_p50"] = ratio(relay_overhead, noop["median"])
            result.data[label]["mcp_over_relay_floor_p50"] = ratio(stats["mcp"]["median"], relay["median"])
            result.figure(
                f"{label}: floor, a bare MCPServer making the tool's request, p50 (its overhead / no-op; ours / it)",
                f"{fmt_seconds(relay['median'])} ({fmt_ratio(ratio(relay_overhead, noop['median']))}; "
                f"{fmt_ratio(ratio(stats['mcp']['median'], relay['median']))})",
            )
        where = "in memory" if label == "in_memory" else "over stdio"
        # The goal (#15) is relative to the SDK's own per-call cost, measured in the same run.
        against = ratio(p50, noop["median"])
        result.data[label]["overhead_over_noop_p50"] = against
        result.goal(
            f"p50 overhead <= {GOAL_OVER_NOOP:.2f}x a bare MCPServer no-op call, {where}",
            f"{fmt_ratio(against)} ({fmt_seconds(p50)} vs {fmt_seconds(noop['median'])})",
            against <= GOAL_OVER_NOOP,
        )


CASE = Case("call_overhead", "flexus_show_server through MCP (in memory, stdio) minus a direct call", run)
