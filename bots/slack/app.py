"""The Slack app: bolt's AsyncApp over a Registry, its listeners registered, and the two ways to run it.

- Socket Mode when ``SLACK_APP_TOKEN`` is set (no public URL; Slack authenticates the WebSocket).
- HTTP mode otherwise: ``POST /slack/events`` through bolt's Starlette adapter behind uvicorn, with
  bolt's signature check (HMAC-SHA256 of the body with the signing secret, 5-minute replay window).

Every listener (``listeners/``) acks first and returns, so Slack gets its answer within its 3 seconds: the
server's loop only verifies, parses and acks (bolt runs the listener to its end before answering,
``process_before_response=True``, which is quick because the listener hands the slow part on). The slow
part (the registry, the cloud, the answer at the response_url) runs on the answer worker's own loop and
thread (``worker.py``), so no ack waits behind another request's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flexus_ops.core.errors import ConfigurationError
from flexus_ops.core.telemetry import log_format
from flexus_ops.observability import Metrics, Probes, ProbeServer
from flexus_ops.registry.registry import Registry
from flexus_ops.serving import Drain, Draining, announce_start

from ..chat.verbs import VERBS, problems
from . import listeners
from .context import BotContext
from .logs import guard_slack_loggers
from .settings import SlackBotSettings, slack_settings
from .worker import AnswerWorker

EVENTS_PATH = "/slack/events"
# Every Web API method the bot calls and the bot scope it needs; the manifests ask for exactly these
# scopes plus `commands` (a test holds them together). Approver groups are only mentioned
# (<!subteam^ID>), which needs no scope: who may approve is the policy's people, decided by the gate.
WEB_API_SCOPES: dict[str, str | None] = {
    "auth.test": None,  # bolt checks the bot token once
    "chat.postMessage": "chat:write",  # approval requests, DMs to the requester
    "chat.update": "chat:write",  # approval requests: Approved by / Rejected by / Expired
    "conversations.open": "im:write",  # the requester's DM with the bot
    "views.open": None,  # modals need no scope
}
BOT_SCOPES = ("commands", *sorted({scope for scope in WEB_API_SCOPES.values() if scope}))


# -- the app ------------------------------------------------------------------------------------


class SlackBot:
    """One bot process: the bolt app, its Web API client, and the listeners, over one registry."""

    def __init__(
        self,
        registry: Registry,
        settings: SlackBotSettings,
        *,
        log_level: int = logging.WARNING,
        progress_interval: float = 1.0,
        watch_interval: float = 30.0,
        owns_registry: bool = False,
        answers: AnswerWorker | None = None,
    ) -> None:
        if settings.bot_token is None:
            raise ConfigurationError("SLACK_BOT_TOKEN is not set (the app's Bot User OAuth Token, xoxb-...)")
        # Both checked before serving, so a mismatch fails at start, not on someone's first command.
        slack_settings(registry.policy)
        if mismatched := problems(VERBS, registry.specs):
            raise ConfigurationError("the chat verbs do not match the registry: " + "; ".join(mismatched))
        self.settings = settings
        self.registry = registry
        self.owns_registry = owns_registry
        self.log_level = log_level
        base = guard_slack_loggers(log_level)
        self.client = AsyncWebClient(
            token=settings.bot_token.get_secret_value(), base_url=settings.web_api_base(), logger=base
        )
        self.context = BotContext(
            registry,
            self.client,
            progress_interval=progress_interval,
            watch_interval=watch_interval,
            answers=answers if answers is not None else AnswerWorker(),
        )
        secret = settings.signing_secret.get_secret_value() if settings.signing_secret else ""
        self.app = AsyncApp(
            name="flexus-ops",
            client=self.client,
            signing_secret=secret,
            logger=base,
            # The listeners only ack and hand the rest to the answer worker, so bolt may answer the HTTP
            # request when the listener returns: no background task and no polling for the ack on this loop.
            process_before_response=True,
            raise_error_for_unhandled_request=False,
        )
        listeners.register(self.app, self.context)
        guard_slack_loggers(log_level)  # the loggers bolt created for the listeners get the filter too

    # -- HTTP mode ----------------------------------------------------------------------------

    def asgi(self, drain: Drain | None = None, metrics: Metrics | None = None) -> Any:
        """``POST /slack/events`` (commands, clicks, submissions), ``GET /healthz``, ``/readyz`` and ``/metrics``.
        With ``drain``, a stopping bot says "not ready" and turns new events away (Slack retries them,
        and another replica answers)."""
        if not self.settings.signing_secret:
            raise ConfigurationError("SLACK_SIGNING_SECRET is not set; HTTP mode cannot verify requests without it")
        handler = AsyncSlackRequestHandler(self.app)

        async def events(request: Request) -> Response:
            return await handler.handle(request)

        @asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            try:
                yield
            finally:
                await self.aclose()

        probes = Probes(self.registry, drain, metrics)  # no credentials, nothing of the fleet or the people
        app = Starlette(routes=[Route(EVENTS_PATH, events, methods=["POST"]), *probes.routes()], lifespan=lifespan)
        # While events are being acked, the answers' loop steps aside (see worker.Front).
        counted = self.context.answers.front.wrap(app, (EVENTS_PATH,))
        return counted if drain is None else Draining(counted, drain)

    # -- Socket Mode --------------------------------------------------------------------------

    async def run_socket_mode(self, probes: ProbeServer | None = None) -> int:
        """Connect and serve until SIGINT or SIGTERM, then close the connection and the registry; returns
        the exit code (128 + the signal). With ``probes`` (``--health-port``), /healthz, /readyz and
        /metrics are served on their own port meanwhile; readiness says ``draining`` once stopping."""
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        if self.settings.app_token is None:
            raise ConfigurationError("SLACK_APP_TOKEN is not set (an app-level token, xapp-..., connections:write)")
        handler = AsyncSocketModeHandler(self.app, self.settings.app_token.get_secret_value())
        guard_slack_loggers(self.log_level)  # the Socket Mode client logs every frame it receives
        stop = asyncio.Event()
        received: list[int] = []
        loop = asyncio.get_running_loop()

        def stopping(signum: int) -> None:
            received.append(signum)
            self.registry.draining = True  # readiness says so at once, even while still connecting
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # not on Windows; Ctrl-C still ends asyncio.run
                loop.add_signal_handler(signum, stopping, signum)
        try:
            if probes is not None:
                await probes.start()
            # Connecting retries for as long as Slack is unreachable: a signal must still end it.
            connecting = asyncio.ensure_future(handler.connect_async())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait([connecting, stopped], return_when=asyncio.FIRST_COMPLETED)
            if not stop.is_set():
                connecting.result()  # a failure to connect ends the bot, saying why
                await stopped
            for task in (connecting, stopped):
                task.cancel()
            await asyncio.wait([connecting, stopped], timeout=5)
        finally:
            self.registry.draining = True
            await handler.close_async()
            if probes is not None:
                await probes.stop()
            await self.aclose()
        return 128 + received[0] if received else 0

    @property
    def answers_pending(self) -> int:
        """Answers admitted and not finished (a graceful stop waits for them)."""
        return self.context.answers.pending

    def start_draining(self) -> None:
        """Readiness says "draining" at once; the registry's own stop (rollouts send no further wave)
        runs on the answers' loop, where the rollouts' state lives. Safe from a signal handler."""
        self.registry.draining = True
        self.context.answers.call_soon(self.registry.start_draining)

    async def aclose(self, grace: float = 0.0) -> None:
        """Wait up to ``grace`` seconds for answers in flight, cancel the rest, and close what lives on
        the answers' loop (the tasks following rollouts and approvals, the registry if this bot owns it)."""
        await self.context.answers.aclose(self._close_answers(), grace=grace)

    async def _close_answers(self) -> None:
        await self.context.aclose()
        if self.owns_registry:
            await self.registry.aclose()


# -- running ------------------------------------------------------------------------------------


def describe(bot: SlackBot, mode: str, where: str) -> str:
    policy = bot.registry.policy
    slack = slack_settings(policy)
    people = sum(any(p.startswith("slack:") for p in person.principals) for person in policy.people)
    lines = [
        f"flexus-ops Slack bot ({mode}): {where}",
        f"  cloud: {bot.registry.client.describe_target()}",
        f"  policy: {policy.source}; {people} person(s) with a Slack principal",
        f"  approvals channel: {slack.approvals_channel or 'none (approvers use /flexus approvals)'}",
        f"  channels: {', '.join(slack.channel_ids) or 'any'}; workspaces: {', '.join(slack.team_ids) or 'any'}",
    ]
    if people == 0:
        lines.append("  warning: nobody in the policy has a slack:<USER_ID> principal, so every request is refused")
    return "\n".join(lines)


def main(
    *,
    host: str = "127.0.0.1",
    port: int = 3000,
    mode: str = "auto",
    read_only: bool = False,
    grace_seconds: float = 10,
    health_port: int | None = None,
) -> int:
    """``flexus-ops slack``: Socket Mode when SLACK_APP_TOKEN is set (or ``mode="socket"``), else HTTP.
    Socket Mode has no HTTP server; ``health_port`` gives it one for probes and metrics, on ``host``.
    Configuration errors propagate to the CLI, which reports them in one line (exit 4)."""
    import uvicorn

    from flexus_ops.config import Settings
    from flexus_ops.core.sockets import IDLE_KEEP_ALIVE_SECONDS, listening_socket
    from flexus_ops.serving import Drain, DrainingServer

    settings = SlackBotSettings()
    chosen = mode if mode != "auto" else ("socket" if settings.app_token else "http")
    settings.check(chosen)  # before the registry touches the state directory
    registry = Registry.from_settings(Settings.load(), read_only=read_only)
    bot = SlackBot(registry, settings, owns_registry=True)
    if chosen == "socket":
        probes = ProbeServer(Probes(registry), host, health_port) if health_port is not None else None
        listen = f"http://{host}:{health_port} (probes)" if probes else "none (no --health-port)"
        announce_start(registry, "slack", "socket", listen)
        if log_format() == "text":
            print(
                describe(bot, "Socket Mode", "connecting with SLACK_APP_TOKEN (no public URL needed)"), file=sys.stderr
            )
        return asyncio.run(bot.run_socket_mode(probes))
    # A stop waits for the answers in flight too (they run after their ack, on the answer worker).
    drain = Drain(on_drain=[bot.start_draining], pending=[lambda: bot.answers_pending])
    app = bot.asgi(drain)
    sock = listening_socket(host, port)
    port = sock.getsockname()[1]  # the one the system gave, with --port 0
    announce_start(registry, "slack", "http", f"http://{host}:{port}{EVENTS_PATH}")
    if log_format() == "text":
        print(describe(bot, "HTTP", f"http://{host}:{port}{EVENTS_PATH}"), file=sys.stderr)
    # log_config=None: uvicorn's records go through the process's handler (text or JSON), not its own.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", log_config=None, timeout_keep_alive=IDLE_KEEP_ALIVE_SECONDS
    )
    server = DrainingServer(config, drain, grace_seconds)
    asyncio.run(server.serve(sockets=[sock]))
    return server.exit_code
