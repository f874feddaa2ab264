"""slack_ack: time to the HTTP acknowledgement for signed ``/flexus`` slash commands against the Slack
bot as it is deployed: ``flexus-ops slack`` in HTTP mode, its own process, on loopback. Slack allows
3 s. Two scenarios, each with its goal (issue #15):

- 200 ``/flexus list`` at concurrency 20: p99 <= 200 ms.
- 200 ``/flexus list`` at concurrency 50 while 10 confirmed changes execute: p99 <= 300 ms. The
  changes are real gated ones (``/flexus reboot <id>``, each previewed, then confirmed by a click on
  its preview's Confirm button, as a person would, the 10 clicks at once); once every change is
  running (its first progress was posted) the commands go in, while the reboots run against the sim
  (5 s jobs, followed by the bot to the end). Their outcomes are reported, and whether each ran for the
  whole time the commands were sent.

No ack in either, clicks included, may take over 3 s. The floor: the same client sends the same
number of requests at the same concurrency to a bare uvicorn + Starlette endpoint (``fake_slack.py``'s
``/floor``: an empty 200) right after each scenario, so a miss can be told from a busy machine.

Slack's side is ``fake_slack.py`` in a third process: the Web API the bot calls and the
``response_url`` endpoints where the real answers land after the ack, so the time to the answer is
reported too (not a goal: it includes the cloud call). The bot reads a ``flexus-ops sim``.

Reported as skipped, with the reason, when the bot is not importable (``flexus_ops.bots.slack``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from .harness import (
    BENCH_DIR,
    Case,
    CaseResult,
    RunContext,
    Skip,
    env_without_secrets,
    fmt_seconds,
    ratio,
    summary,
    wait_answering,
)
from .sim import Sim, free_port, running_sim

SIGNING_SECRET = "flexus-bench-signing-secret-0123456789"  # noqa: S105 - a benchmark-only value
BOT_TOKEN = "xoxb-flexus-bench"  # noqa: S105 - accepted only by fake_slack.py
TEAM, CHANNEL, USER = "T0BENCH", "C0BENCH", "UBENCH"
GOAL_P99 = 0.200  # at concurrency 20
GOAL_P99_BUSY = 0.300  # at concurrency 50 while changes execute
GOAL_MAX = 3.0  # Slack's own limit, for every ack
BUSY_CONCURRENCY = 50
JOB_SECONDS = 5.0  # a reboot in the sim: long enough to still run while the commands are acked
COMMAND_TEXT = "list"  # a read: its answer needs the cloud, its ack must not
WARMUP = 5
IDLE = 20
# The bot reads a sim in another process, as a deployed bot reads a remote cloud: the embedded sandbox
# would put the simulated cloud's own CPU work on the bot's event loop, in front of the acks.
LATENCY_MS = 30.0
POLICY = f"""
[slack]
team_ids = ["{TEAM}"]
channel_ids = ["{CHANNEL}"]

[[people]]
id = "bench"
roles = ["operator"]
principals = ["slack:{USER}"]
"""


def sign(body: bytes, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """Slack's request signature (v0): HMAC-SHA256 over ``v0:<timestamp>:<body>``."""
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def slash_command(command_id: str, response_base: str, text: str = COMMAND_TEXT) -> bytes:
    fields = {
        "token": "unused-verification-token",
        "team_id": TEAM,
        "team_domain": "bench",
        "channel_id": CHANNEL,
        "channel_name": "bench",
        "user_id": USER,
        "user_name": "bench",
        "command": "/flexus",
        "text": text,
        "api_app_id": "A0BENCH",
        "response_url": f"{response_base}/response/{command_id}",
        "trigger_id": f"bench.{command_id}",
    }
    return urllib.parse.urlencode(fields).encode()


def confirm_click(click_id: str, action_id: str, response_base: str) -> bytes:
    """A click on a preview's Confirm button (block_actions), as Slack posts it; the preview was private,
    so the click carries its response_url and no message."""
    from flexus_ops.bots.slack.blocks import CONFIRM

    payload = {
        "type": "block_actions",
        "user": {"id": USER, "username": "bench", "team_id": TEAM},
        "api_app_id": "A0BENCH",
        "token": "unused-verification-token",
        "container": {"type": "message", "channel_id": CHANNEL, "is_ephemeral": True, "message_ts": "1.000001"},
        "trigger_id": f"bench.{click_id}",
        "team": {"id": TEAM, "domain": "bench"},
        "channel": {"id": CHANNEL, "name": "bench"},
        "response_url": f"{response_base}/response/{click_id}",
        "actions": [
            {
                "action_id": CONFIRM,
                "block_id": "b",
                "text": {"type": "plain_text", "text": "Confirm"},
                "value": action_id,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def _confirm_value(blocks: list[dict[str, Any]]) -> str | None:
    from flexus_ops.bots.slack.blocks import CONFIRM

    for block in blocks:
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("action_id") == CONFIRM:
                return str(element["value"])
    return None


def _outcome(bodies: list[dict[str, Any]]) -> str | None:
    """The status a change's final message shows (its first block starts with the status's icon), or
    None while only progress has been posted. The final message is the one with "Confirmed by"."""
    from flexus_ops.bots.slack.blocks import STATUS_ICON

    for body in reversed(bodies):
        text = json.dumps(body.get("blocks") or [], ensure_ascii=False)
        if "Confirmed by" not in text:
            continue
        first = str(((body.get("blocks") or [{}])[0].get("text") or {}).get("text") or "")
        return next((status for status, icon in STATUS_ICON.items() if first.startswith(icon)), "unknown")
    return None


def _active_ids(sim: Sim, count: int) -> list[str]:
    async def listed() -> list[str]:
        client = sim.client()
        try:
            found = await client.list_servers(limit=100)
        finally:
            await client.aclose()
        return [server.id for server in found.servers if server.status == "ACTIVE" and not server.locked]

    ids = asyncio.run(listed())
    if len(ids) < count:
        raise RuntimeError(f"the sim has {len(ids)} unlocked ACTIVE servers; {count} changes need that many")
    return ids[:count]


async def drive(url: str, bodies: dict[str, bytes], concurrency: int) -> dict[str, tuple[float, float]]:
    """Send every body (signed just before sending) with at most ``concurrency`` in flight.
    Returns, per command id, (epoch seconds when sent, seconds to the HTTP answer)."""
    limit = asyncio.Semaphore(concurrency)
    timings: dict[str, tuple[float, float]] = {}
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as http:

        async def one(command_id: str, body: bytes) -> None:
            async with limit:
                headers = sign(body)
                sent = time.time()
                started = time.perf_counter()
                response = await http.post(url, content=body, headers=headers)
                timings[command_id] = (sent, time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"the bot answered {response.status_code}: {response.text[:200]}")

        await asyncio.gather(*(one(command_id, body) for command_id, body in bodies.items()))
    return timings


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path, health: str, what: str) -> Iterator[None]:
    with log.open("wb") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=sink, env=env)
        try:
            wait_answering(process, log, what, lambda: httpx.get(health, timeout=2).status_code == 200)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _answers(base: str) -> dict[str, float]:
    return {command_id: at for command_id, at in httpx.get(f"{base}/_answers", timeout=10).json()}


def _wait_answers(base: str, ids: list[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        answers = _answers(base)
        if all(command_id in answers for command_id in ids) or time.monotonic() > deadline:
            return answers
        time.sleep(0.2)


def run(ctx: RunContext, result: CaseResult) -> None:
    try:
        import flexus_ops.bots.slack.app  # noqa: F401 - only asks whether the bot is installed here
    except ImportError as exc:
        raise Skip(f"the Slack bot is not available (import flexus_ops.bots.slack failed: {exc})") from None
    count = ctx.pick(200, 40)
    concurrency = 20
    tmp = Path(tempfile.mkdtemp(prefix="flexus-bench-slack-"))
    try:
        _measure(ctx, result, tmp, count, concurrency, ctx.pick(10, 3))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(ctx: RunContext, result: CaseResult, tmp: Path, count: int, concurrency: int, changes: int) -> None:
    (tmp / "policy.toml").write_text(POLICY)
    fake_port, bot_port = free_port(), free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    bot = f"http://127.0.0.1:{bot_port}"
    base_env = env_without_secrets()
    bot_env = {
        **{key: value for key, value in base_env.items() if not key.startswith("SLACK_")},
        "FLEXUS_STATE_DIR": str(tmp / "state"),
        "FLEXUS_POLICY": str(tmp / "policy.toml"),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": f"{fake}/api/",
    }
    result.setup = {
        "bot": "flexus-ops slack --mode http (own process), policy with one operator",
        "cloud": f"flexus-ops sim (own process), 30 servers, {LATENCY_MS:g} ms latency, {JOB_SECONDS:g} s jobs",
        "slack": "benchmarks/fake_slack.py (own process): Web API + response_url sink + the floor endpoint",
        "commands": count,
        "concurrency": f"{concurrency}; then {BUSY_CONCURRENCY} while {changes} confirmed changes execute",
        "command_text": f"/flexus {COMMAND_TEXT}",
        "changes": "/flexus reboot <id>, previewed, then a Confirm click each, all at once; the commands start once "
        "every change is running (the clicks' acks count towards the 3 s goal)",
        "floor": "the same client, requests and concurrency against a bare uvicorn + Starlette empty 200, "
        "right after each scenario",
        "warm_up": f"{WARMUP} commands first, not timed",
    }
    fake_args = [ctx.python, str(BENCH_DIR / "fake_slack.py"), str(fake_port)]
    bot_args = [ctx.flexus_ops, "slack", "--mode", "http", "--host", "127.0.0.1", "--port", str(bot_port)]
    with (
        running_sim(ctx, servers=30, latency_ms=LATENCY_MS, job_seconds=JOB_SECONDS) as sim,
        _process(fake_args, base_env, tmp / "fake.log", f"{fake}/_answers", "fake_slack.py"),
        _process(bot_args, {**bot_env, **sim.env()}, tmp / "bot.log", f"{bot}/healthz", "flexus-ops slack"),
    ):
        url = f"{bot}/slack/events"
        warm = {f"warm{i}": slash_command(f"warm{i}", fake) for i in range(WARMUP)}
        asyncio.run(drive(url, warm, 1))
        _wait_answers(fake, list(warm), timeout=60)
        # One at a time, each after the previous answer landed: the ack of an idle bot, for comparison.
        idle: list[float] = []
        for index in range(IDLE):
            command_id = f"idle{index}"
            sent = asyncio.run(drive(url, {command_id: slash_command(command_id, fake)}, 1))
            idle.append(sent[command_id][1])
            _wait_answers(fake, [command_id], timeout=30)

        ctx.log(f"slack_ack: {count} commands at concurrency {concurrency}")
        bodies = {f"c{i}": slash_command(f"c{i}", fake) for i in range(count)}
        timings = asyncio.run(drive(url, bodies, concurrency))
        answers = _wait_answers(fake, list(bodies), timeout=180)
        floor = _floor(fake, count, concurrency)

        ctx.log(f"slack_ack: {count} commands at concurrency {BUSY_CONCURRENCY} while {changes} changes execute")
        busy = _busy(fake, url, sim, count, changes)
        busy_floor = _floor(fake, count, BUSY_CONCURRENCY)

    acks = [timings[command_id][1] for command_id in bodies]
    to_answer = [answers[c] - timings[c][0] for c in bodies if c in answers]
    ack_stats, answer_stats = summary(acks), summary(to_answer)
    floor_stats, busy_floor_stats = summary(floor), summary(busy_floor)
    busy_stats, click_stats = summary(busy["acks"]), summary(busy["click_acks"])
    result.data = {
        "ack_seconds": acks,
        "answer_seconds": to_answer,
        "ack": ack_stats,
        "idle_ack_seconds": idle,
        "answer": answer_stats,
        "answered": len(to_answer),
        "floor_ack_seconds": floor,
        "floor": floor_stats,
        "busy": {
            **busy,
            "ack": busy_stats,
            "click_ack": click_stats,
            "answer": summary(busy["answer_seconds"]),
            "floor_ack_seconds": busy_floor,
            "floor": busy_floor_stats,
        },
    }
    result.figure(
        f"ack p50 / p99 ({count} commands, concurrency {concurrency})",
        f"{fmt_seconds(ack_stats['median'])} / {fmt_seconds(ack_stats['p99'])} (max {fmt_seconds(ack_stats['max'])})",
    )
    result.figure(
        f"floor p50 / p99, same client and concurrency {concurrency} (bot p99 / floor p99)",
        f"{fmt_seconds(floor_stats['median'])} / {fmt_seconds(floor_stats['p99'])} "
        f"(max {fmt_seconds(floor_stats['max'])}; {ratio(ack_stats['p99'], floor_stats['p99']):.2f}x)",
    )
    idle_stats = summary(idle)
    result.figure(
        f"ack of an idle bot, one command at a time (n={IDLE})",
        f"{fmt_seconds(idle_stats['median'])} / {fmt_seconds(idle_stats['p99'])} (p50 / p99)",
    )
    if to_answer:
        result.figure(
            "answer at the response_url p50 / p99",
            f"{fmt_seconds(answer_stats['median'])} / {fmt_seconds(answer_stats['p99'])} "
            f"({len(to_answer)}/{count} answered)",
        )
    result.figure(
        f"ack p50 / p99 ({count} commands, concurrency {BUSY_CONCURRENCY}, {changes} changes executing)",
        f"{fmt_seconds(busy_stats['median'])} / {fmt_seconds(busy_stats['p99'])} "
        f"(max {fmt_seconds(busy_stats['max'])})",
    )
    result.figure(
        f"floor p50 / p99, same client and concurrency {BUSY_CONCURRENCY} (bot p99 / floor p99)",
        f"{fmt_seconds(busy_floor_stats['median'])} / {fmt_seconds(busy_floor_stats['p99'])} "
        f"(max {fmt_seconds(busy_floor_stats['max'])}; {ratio(busy_stats['p99'], busy_floor_stats['p99']):.2f}x)",
    )
    result.figure(
        f"Confirm clicks' ack p50 / max ({changes} at once)",
        f"{fmt_seconds(click_stats['median'])} / {fmt_seconds(click_stats['max'])}",
    )
    outcomes = busy["outcomes"]
    result.figure(
        f"the {changes} confirmed changes: outcomes; running while the commands were sent",
        ", ".join(f"{status} x{n}" for status, n in sorted(_count(outcomes.values()).items()))
        + f"; {busy['overlapping']} of {changes} ran the whole time (commands took {busy['commands_seconds']:.2f} s; "
        f"changes ran from {min(busy['started_after'].values(), default=math.nan):.1f} s to "
        f"{max(busy['finished_after'].values(), default=math.nan):.1f} s, from the first command)",
    )
    result.goal(
        f"p99 time to the HTTP ack <= 200 ms (concurrency {concurrency})",
        f"{fmt_seconds(ack_stats['p99'])} (floor {fmt_seconds(floor_stats['p99'])})",
        ack_stats["p99"] <= GOAL_P99,
    )
    result.goal(
        f"p99 time to the HTTP ack <= 300 ms (concurrency {BUSY_CONCURRENCY}, {changes} changes executing)",
        f"{fmt_seconds(busy_stats['p99'])} (floor {fmt_seconds(busy_floor_stats['p99'])})",
        busy_stats["p99"] <= GOAL_P99_BUSY,
    )
    worst = max(ack_stats["max"], busy_stats["max"], click_stats["max"])
    result.goal("no ack over 3 s (both scenarios, clicks included)", fmt_seconds(worst), worst <= GOAL_MAX)
    if any(status != "succeeded" for status in outcomes.values()):
        raise RuntimeError(f"not every confirmed change succeeded: {outcomes}")


def _count(values: Any) -> dict[str, int]:
    counted: dict[str, int] = {}
    for value in values:
        counted[value] = counted.get(value, 0) + 1
    return counted


def _floor(fake: str, count: int, concurrency: int) -> list[float]:
    bodies = {f"floor{i}": slash_command(f"floor{i}", fake) for i in range(count)}
    return [seconds for _sent, seconds in asyncio.run(drive(f"{fake}/floor", bodies, concurrency)).values()]


def _busy(fake: str, url: str, sim: Sim, count: int, changes: int) -> dict[str, Any]:
    """Preview ``changes`` reboots, confirm them all at once by click, and once they run send ``count``
    commands at concurrency 50; wait for every answer and for each change's final message."""
    targets = _active_ids(sim, changes)
    previews = {
        f"preview{i}": slash_command(f"preview{i}", fake, f"reboot {server}") for i, server in enumerate(targets)
    }
    asyncio.run(drive(url, previews, changes))
    _wait_answers(fake, list(previews), timeout=60)
    action_ids = []
    for preview in previews:
        shown = httpx.get(f"{fake}/_answer/{preview}", timeout=10).json()
        found = _confirm_value(shown[-1].get("blocks") or []) if shown else None
        if found is None:
            raise RuntimeError(f"the preview {preview} has no Confirm button: {str(shown)[:300]}")
        action_ids.append(found)
    clicks = {f"confirm{i}": confirm_click(f"confirm{i}", action_id, fake) for i, action_id in enumerate(action_ids)}
    bodies = {f"b{i}": slash_command(f"b{i}", fake) for i in range(count)}
    # The clicks first, then the commands once every change is running (its first progress was posted):
    # the reboots execute in the sim, followed by the bot, while the commands are acked.
    click_timings = asyncio.run(drive(url, clicks, changes))
    _wait_answers(fake, list(clicks), timeout=60)
    began = time.time()
    timings = asyncio.run(drive(url, bodies, BUSY_CONCURRENCY))
    took = time.time() - began
    answers = _wait_answers(fake, list(bodies), timeout=180)
    deadline = time.monotonic() + 120
    outcomes: dict[str, str | None] = {}
    while True:
        outcomes = {c: _outcome(httpx.get(f"{fake}/_answer/{c}", timeout=10).json()) for c in clicks}
        if all(outcomes.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    landed = httpx.get(f"{fake}/_answers", timeout=10).json()
    posted = {c: [at - began for rid, at in landed if rid == c] for c in clicks}
    # The first post to a click's response_url is the change's first progress (it is running); the last, its
    # outcome. Both in seconds from the first command: a change started before the commands is negative.
    started = {c: min(times) for c, times in posted.items() if times}
    finished = {c: max(times) for c, times in posted.items() if times}
    return {
        "acks": [timings[c][1] for c in bodies],
        "click_acks": [click_timings[c][1] for c in clicks],
        "answer_seconds": [answers[c] - timings[c][0] for c in bodies if c in answers],
        "outcomes": {c: outcome or "unfinished" for c, outcome in outcomes.items()},
        "started_after": started,
        "finished_after": finished,
        "commands_seconds": took,
        # Changes running the whole time the commands were sent: started before the first, finished after the last.
        "overlapping": sum(started[c] <= 0 and finished[c] >= took for c in started),
    }


CASE = Case("slack_ack", "time to the HTTP ack for signed slash commands", run)

__all__ = ["CASE", "confirm_click", "drive", "sign", "slash_command"]
