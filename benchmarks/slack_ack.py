"""slack_ack: time to the HTTP acknowledgement for signed ``/flexus`` slash commands, 200 of them at
concurrency 20, against the Slack bot as it is deployed: ``flexus-ops slack`` in HTTP mode, its own
process, on loopback. Slack allows 3 s; the goal is p99 <= 200 ms.

Slack's side is ``fake_slack.py`` in a third process: the Web API the bot calls and the
``response_url`` endpoints where the real answers land after the ack, so the time to the answer is
reported too (not a goal: it includes the cloud call). The bot reads a ``flexus-ops sim``.

Reported as skipped, with the reason, when the bot is not importable (``flexus_ops.bots.slack``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from .harness import (
    BENCH_DIR,
    Case,
    CaseResult,
    RunContext,
    Skip,
    env_without_secrets,
    fmt_seconds,
    summary,
)
from .sim import free_port, running_sim

SIGNING_SECRET = "flexus-bench-signing-secret-0123456789"  # noqa: S105 - a benchmark-only value
BOT_TOKEN = "xoxb-flexus-bench"  # noqa: S105 - accepted only by fake_slack.py
TEAM, CHANNEL, USER = "T0BENCH", "C0BENCH", "UBENCH"
GOAL_P99 = 0.200
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


def slash_command(command_id: str, response_base: str) -> bytes:
    fields = {
        "token": "unused-verification-token",
        "team_id": TEAM,
        "team_domain": "bench",
        "channel_id": CHANNEL,
        "channel_name": "bench",
        "user_id": USER,
        "user_name": "bench",
        "command": "/flexus",
        "text": COMMAND_TEXT,
        "api_app_id": "A0BENCH",
        "response_url": f"{response_base}/response/{command_id}",
        "trigger_id": f"bench.{command_id}",
    }
    return urllib.parse.urlencode(fields).encode()


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


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log.read_text()[-1500:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer on {url}: {log.read_text()[-1500:]}")
        time.sleep(0.05)


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path, health: str, what: str) -> Iterator[None]:
    with log.open("wb") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=sink, env=env)
        try:
            _wait_http(health, process, log, what)
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
        _measure(ctx, result, tmp, count, concurrency)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(ctx: RunContext, result: CaseResult, tmp: Path, count: int, concurrency: int) -> None:
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
        "cloud": f"flexus-ops sim (own process), 30 servers, {LATENCY_MS:g} ms latency",
        "slack": "benchmarks/fake_slack.py (own process): Web API + response_url sink",
        "commands": count,
        "concurrency": concurrency,
        "command_text": f"/flexus {COMMAND_TEXT}",
        "warm_up": f"{WARMUP} commands first, not timed",
    }
    fake_args = [ctx.python, str(BENCH_DIR / "fake_slack.py"), str(fake_port)]
    bot_args = [ctx.flexus_ops, "slack", "--mode", "http", "--host", "127.0.0.1", "--port", str(bot_port)]
    with (
        running_sim(ctx, servers=30, latency_ms=LATENCY_MS) as sim,
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
    acks = [timings[command_id][1] for command_id in bodies]
    to_answer = [answers[c] - timings[c][0] for c in bodies if c in answers]
    ack_stats, answer_stats = summary(acks), summary(to_answer)
    result.data = {
        "ack_seconds": acks,
        "answer_seconds": to_answer,
        "ack": ack_stats,
        "idle_ack_seconds": idle,
        "answer": answer_stats,
        "answered": len(to_answer),
    }
    result.figure(
        f"ack p50 / p99 ({count} commands, concurrency {concurrency})",
        f"{fmt_seconds(ack_stats['median'])} / {fmt_seconds(ack_stats['p99'])} (max {fmt_seconds(ack_stats['max'])})",
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
    result.goal("p99 time to the HTTP ack <= 200 ms", fmt_seconds(ack_stats["p99"]), ack_stats["p99"] <= GOAL_P99)


CASE = Case("slack_ack", "time to the HTTP ack for signed slash commands", run)

__all__ = ["CASE", "drive", "sign", "slash_command"]
