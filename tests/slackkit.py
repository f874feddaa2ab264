"""Driving the Slack bot the way Slack does, with no Slack: a fake Web API that records every call, the
bot's real HTTP endpoint served on loopback, and requests signed exactly like Slack signs them.

Nothing of ours is mocked: the bot runs bolt's Starlette adapter behind uvicorn over a real Registry on
the embedded sandbox, and talks HTTP to the fake for every Web API call and every ``response_url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
from aiohttp import WSMsgType, web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from flexus_ops.bots.slack.app import SlackBot
from flexus_ops.bots.slack.blocks import APPROVE, CONFIRM, RESET_MODAL
from flexus_ops.bots.slack.settings import SlackBotSettings, SlackSettings
from flexus_ops.gate.policy import GateSettings, Person, Policy, Role
from flexus_ops.registry.registry import Registry
from tests.gatekit import make_registry
from tests.procs import serve_app

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-app-level-token"
TEAM = "T0FLEXUS"
OTHER_TEAM = "T0OUTSIDE"
OPS_CHANNEL = "C0OPS"
APPROVALS_CHANNEL = "C0APPROVALS"
OTHER_CHANNEL = "C0RANDOM"

ALICE = "UALICE"  # operator (requests changes and resets)
BOB = "UBOB"  # operator and approver
ERIN = "UERIN"  # approver
DAVE = "UDAVE"  # operator, not an approver
CAROL = "UCAROL"  # viewer
MALLORY = "UMALLORY"  # not in the policy
APPROVER_GROUP = "S0APPROVERS"


SLACK = SlackSettings(
    team_ids=[TEAM],
    channel_ids=[OPS_CHANNEL],
    approvals_channel=APPROVALS_CHANNEL,
    approver_usergroups=[APPROVER_GROUP],
)


def slack_policy(slack: SlackSettings = SLACK, **settings: Any) -> Policy:
    """The gate keeps the [slack] table as the file has it (a dict); the Slack surface validates it."""
    return Policy(
        settings=GateSettings(**settings),
        slack=slack.model_dump(),
        people=[
            Person(id="alice", roles=[Role.OPERATOR], principals=["os:alice", f"slack:{ALICE}"]),
            Person(id="bob", roles=[Role.OPERATOR, Role.APPROVER], principals=[f"slack:{BOB}", "os:bob"]),
            Person(id="erin", roles=[Role.APPROVER], principals=[f"slack:{ERIN}"]),
            Person(id="dave", roles=[Role.OPERATOR], principals=[f"slack:{DAVE}"]),
            Person(id="carol", roles=[Role.VIEWER], principals=[f"slack:{CAROL}"]),
        ],
    )


# -- serving on loopback ----------------------------------------------------------------------------


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """An ASGI app on 127.0.0.1 (random port) in a thread, with its lifespan; yields its base URL."""
    with serve_app(app, lifespan="on") as url:
        yield url


def wait_until(check: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll until ``check()`` is truthy (the bot answers after its ack, on its own schedule)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- the fake Slack Web API -------------------------------------------------------------------------


@dataclass
class Call:
    """One request the bot made: a Web API method, or a post to a response_url."""

    kind: str  # "api" or "response_url"
    method: str  # "chat.postMessage", or the response_url's id
    body: dict[str, Any]
    raw: str
    authorization: str | None
    answer: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> list[dict[str, Any]]:
        blocks = self.body.get("blocks") or (self.body.get("view") or {}).get("blocks") or []
        return json.loads(blocks) if isinstance(blocks, str) else blocks

    @property
    def view(self) -> dict[str, Any]:
        view = self.body.get("view") or {}
        return json.loads(view) if isinstance(view, str) else view

    @property
    def text(self) -> str:
        """Everything a person would read in it: the fallback text and every text in its blocks."""
        return self.body.get("text", "") + "\n" + json.dumps(self.blocks, ensure_ascii=False)


@dataclass
class FakeSlack:
    """Answers the Web API methods the bot uses like Slack does, and records everything it is sent."""

    calls: list[Call] = field(default_factory=list)
    url: str = ""
    failing: dict[str, str] = field(default_factory=dict)  # method -> Slack error code to answer with
    socket_url: str = ""  # what apps.connections.open hands out (Socket Mode)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/{method}", self._api, methods=["POST", "GET"]),
                Route("/response/{rid}", self._response_url, methods=["POST"]),
            ]
        )

    async def _record(self, request: Request, kind: str, method: str) -> Call:
        payload = (await request.body()).decode()
        raw = f"{request.url.query}\n{payload}" if request.url.query else payload
        if request.headers.get("content-type", "").startswith("application/json"):
            body = json.loads(payload) if payload else {}
        else:
            body = {k: v[0] for k, v in parse_qs(payload).items()}
        body = {**dict(request.query_params), **body}  # slack_sdk sends some methods' arguments as a query
        call = Call(kind, method, body, raw, request.headers.get("authorization"))
        with self._lock:
            self.calls.append(call)
        return call

    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        call = await self._record(request, "api", method)
        body = call.body
        if method == "apps.connections.open" and request.headers.get("authorization") == f"Bearer {APP_TOKEN}":
            call.answer = {"ok": True, "url": self.socket_url}
            return JSONResponse(call.answer)
        if request.headers.get("authorization") != f"Bearer {BOT_TOKEN}":
            call.answer = {"ok": False, "error": "invalid_auth"}
            return JSONResponse(call.answer)
        if method in self.failing:
            call.answer = {"ok": False, "error": self.failing[method]}
            return JSONResponse(call.answer)
        ts = f"1700000000.{next(self._ts):06d}"
        answers: dict[str, dict[str, Any]] = {
            "auth.test": {"user_id": "UBOTUSER", "bot_id": "BFLEXUS", "team_id": TEAM, "team": "Flexus"},
            "chat.postMessage": {"channel": body.get("channel"), "ts": ts, "message": {"ts": ts}},
            "chat.update": {"channel": body.get("channel"), "ts": body.get("ts")},
            "chat.postEphemeral": {"message_ts": ts},
            "views.open": {"view": {"id": f"V{ts.replace('.', '')}"}},
            "conversations.open": {"channel": {"id": "D" + str(body.get("users", "X"))[1:]}},
        }
        call.answer = {"ok": True, **answers.get(method, {})}
        return JSONResponse(call.answer)

    async def _response_url(self, request: Request) -> Response:
        await self._record(request, "response_url", request.path_params["rid"])
        return PlainTextResponse("ok")

    # -- reading what was sent ----------------------------------------------------------------

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def api_calls(self) -> list[Call]:
        return [c for c in self.snapshot() if c.kind == "api"]

    def api(self, method: str) -> list[Call]:
        return [c for c in self.snapshot() if c.kind == "api" and c.method == method]

    def at(self, response_url: str) -> list[Call]:
        rid = response_url.rsplit("/", 1)[-1]
        return [c for c in self.snapshot() if c.kind == "response_url" and c.method == rid]

    def wait_at(self, response_url: str, count: int = 1, *, final: Callable[[Call], bool] | None = None) -> list[Call]:
        def ready() -> list[Call] | None:
            found = self.at(response_url)
            if len(found) < count:
                return None
            if final is not None and not final(found[-1]):
                return None
            return found

        return wait_until(ready, what=f"{count} post(s) to {response_url}")

    def wait_api(self, method: str, count: int = 1) -> list[Call]:
        return wait_until(lambda: (found := self.api(method)) and len(found) >= count and found, what=method)

    def everything(self) -> str:
        return "\n".join(c.raw for c in self.snapshot())


def buttons(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The buttons in a message, by action id."""
    found: dict[str, dict[str, Any]] = {}
    for block in blocks:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            found[element["action_id"]] = element
    return found


class FakeSocketMode:
    """Slack's Socket Mode end: a WebSocket that says hello, pushes envelopes and records the acks.
    Served by aiohttp (a dependency already), in its own thread and event loop."""

    def __init__(self) -> None:
        self.outbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.acks: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def __enter__(self) -> FakeSocketMode:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake Socket Mode server did not start")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/link", self._session)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = runner.addresses[0][1]
        self.url = f"ws://127.0.0.1:{port}/link"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    async def _session(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0FLEXUS"}})
        self.connected.set()
        while not ws.closed:
            with contextlib.suppress(queue.Empty):
                await ws.send_json(self.outbox.get_nowait())
            try:
                message = await ws.receive(timeout=0.05)
            except TimeoutError:
                continue
            if message.type == WSMsgType.TEXT:
                self.acks.append(json.loads(message.data))
            elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
        return ws

    def send(self, kind: str, payload: dict[str, Any]) -> str:
        envelope_id = f"envelope-{len(self.acks)}-{time.monotonic_ns()}"
        self.outbox.put(
            {"envelope_id": envelope_id, "type": kind, "accepts_response_payload": True, "payload": payload}
        )
        return envelope_id

    def ack_of(self, envelope_id: str) -> dict[str, Any]:
        return wait_until(
            lambda: next((a for a in self.acks if a.get("envelope_id") == envelope_id), None), what="the ack"
        )


# -- signed requests, as Slack sends them ----------------------------------------------------------


def signature(body: str, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class SlackDriver:
    """Posts signed slash commands, button clicks and modal submissions to the bot's endpoint."""

    bot_url: str
    fake: FakeSlack
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=20))
    _n: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def response_url(self) -> str:
        return f"{self.fake.url}/response/r{next(self._n)}"

    def post(
        self,
        body: str,
        *,
        content_type: str = "application/x-www-form-urlencoded",
        secret: str = SIGNING_SECRET,
        timestamp: int | None = None,
        url: str | None = None,
    ) -> httpx.Response:
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {
            "content-type": content_type,
            "x-slack-request-timestamp": str(ts),
            "x-slack-signature": signature(body, ts, secret),
        }
        return self.http.post(url or f"{self.bot_url}/slack/events", content=body, headers=headers)

    def command_form(
        self, user: str, text: str, *, channel: str = OPS_CHANNEL, team: str = TEAM, response_url: str | None = None
    ) -> tuple[dict[str, str], str]:
        """The fields Slack sends for a slash command (form-encoded over HTTP, JSON in Socket Mode)."""
        url = response_url or self.response_url()
        form = {
            "token": "legacy-verification-token",
            "team_id": team,
            "team_domain": "flexus",
            "channel_id": channel,
            "channel_name": "ops",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/flexus",
            "text": text,
            "api_app_id": "A0FLEXUS",
            "is_enterprise_install": "false",
            "response_url": url,
            "trigger_id": f"trigger-{next(self._n)}",
        }
        return form, url

    def command_body(self, user: str, text: str, **kwargs: Any) -> tuple[str, str]:
        form, url = self.command_form(user, text, **kwargs)
        return urlencode(form), url

    def command(self, user: str, text: str, **kwargs: Any) -> tuple[httpx.Response, str]:
        body, url = self.command_body(user, text, **kwargs)
        return self.post(body), url

    def click_body(
        self,
        user: str,
        action_id: str,
        value: str,
        *,
        channel: str = OPS_CHANNEL,
        team: str = TEAM,
        user_team: str | None = None,
        message_ts: str | None = None,
        response_url: str | None = None,
    ) -> tuple[str, str]:
        """A block_actions payload; ``message_ts`` makes it a click on a channel message, else on an
        ephemeral one (Slack sends no ``message`` for those)."""
        url = response_url or self.response_url()
        container: dict[str, Any] = {"type": "message", "channel_id": channel, "is_ephemeral": message_ts is None}
        container["message_ts"] = message_ts or "1700000000.999999"
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "team_id": user_team or team},
            "api_app_id": "A0FLEXUS",
            "token": "legacy-verification-token",
            "container": container,
            "trigger_id": f"trigger-{next(self._n)}",
            "team": {"id": team, "domain": "flexus"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": "ops"},
            "response_url": url,
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "b",
                    "text": {"type": "plain_text", "text": "x"},
                    "value": value,
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        if message_ts is not None:
            payload["message"] = {"type": "message", "ts": message_ts, "text": "", "blocks": []}
        return urlencode({"payload": json.dumps(payload)}), url

    def click(self, user: str, action_id: str, value: str, **kwargs: Any) -> tuple[httpx.Response, str]:
        body, url = self.click_body(user, action_id, value, **kwargs)
        return self.post(body), url

    def submit(self, user: str, view: dict[str, Any], values: dict[str, Any], *, team: str = TEAM) -> httpx.Response:
        """A view_submission of the modal the bot opened (``view`` as sent to views.open)."""
        payload = self.submission(user, view, values, team=team)
        return self.post(urlencode({"payload": json.dumps(payload)}))

    def submission(
        self, user: str, view: dict[str, Any], values: dict[str, Any], *, team: str = TEAM
    ) -> dict[str, Any]:
        return {
            "type": "view_submission",
            "team": {"id": team, "domain": "flexus"},
            "user": {"id": user, "username": user.lower(), "team_id": team},
            "api_app_id": "A0FLEXUS",
            "token": "legacy-verification-token",
            "trigger_id": f"trigger-{next(self._n)}",
            "view": {
                "id": "V0MODAL",
                "team_id": team,
                "type": "modal",
                "callback_id": view["callback_id"],
                "private_metadata": view["private_metadata"],
                "blocks": view["blocks"],
                "state": {"values": values},
                "hash": "1700000000.abcdef",
                "title": view["title"],
            },
            "response_urls": [],
            "is_enterprise_install": False,
        }


def reset_values(reason: str, password: str | None = None, again: str | None = None) -> dict[str, Any]:
    """The modal's state: ``password=None`` chooses "generate"."""
    source = "generate" if password is None else "enter"
    return {
        "reason": {"value": {"type": "plain_text_input", "value": reason}},
        "source": {"value": {"type": "radio_buttons", "selected_option": {"value": source}}},
        "password": {"value": {"type": "plain_text_input", "value": password}},
        "password_again": {"value": {"type": "plain_text_input", "value": password if again is None else again}},
    }


# -- the whole arrangement ------------------------------------------------------------------------


@dataclass
class Rig:
    registry: Registry
    fake: FakeSlack
    slack: SlackDriver
    bot: SlackBot

    def preview(self, user: str, text: str) -> tuple[str, Call]:
        """Run a change command and return the gate's action id from the preview's Confirm button."""
        response, url = self.slack.command(user, text)
        assert response.status_code == 200, response.text
        (shown,) = self.fake.wait_at(url)
        confirm = buttons(shown.blocks)[CONFIRM]
        return confirm["value"], shown

    def open_reset(self, user: str, servers: str) -> dict[str, Any]:
        """``/flexus reset-password ...``: the modal the bot opened."""
        before = len(self.fake.api("views.open"))
        response, _url = self.slack.command(user, f"reset-password {servers}")
        assert response.status_code == 200 and response.text == "", response.text
        view = self.fake.wait_api("views.open", before + 1)[-1].view
        assert view["callback_id"] == RESET_MODAL
        return view

    def request_reset(
        self, user: str, servers: str, password: str | None, reason: str = "rotate after incident 42"
    ) -> str:
        """The whole request: modal, submission, preview, Confirm; returns the action id."""
        view = self.open_reset(user, servers)
        metadata = json.loads(view["private_metadata"])
        response = self.slack.submit(user, view, reset_values(reason, password))
        assert response.status_code == 200 and response.text == "", response.text
        (preview,) = self.fake.wait_at(metadata["response_url"])
        action_id = buttons(preview.blocks)[CONFIRM]["value"]
        posted = len(self.fake.api("chat.postMessage"))
        response, url = self.slack.click(user, CONFIRM, action_id)
        assert response.status_code == 200
        self.fake.wait_at(url, final=lambda c: "approval" in c.text)
        self.fake.wait_api("chat.postMessage", posted + 1)
        return action_id

    def approval_message(self, action_id: str) -> Call:
        for call in reversed(self.fake.api("chat.postMessage")):
            if (
                call.body.get("channel") == APPROVALS_CHANNEL
                and buttons(call.blocks).get(APPROVE, {}).get("value") == action_id
            ):
                return call
        raise AssertionError(f"no approval message for {action_id}")

    def approval_ts(self, action_id: str) -> str:
        return str(self.approval_message(action_id).answer["ts"])


@contextmanager
def rig(tmp_path: Path, policy: Policy | None = None, **bot_options: Any) -> Iterator[Rig]:
    fake = FakeSlack()
    registry = make_registry(tmp_path, policy or slack_policy())
    with serve(fake.app()) as fake_url:
        fake.url = fake_url
        settings = SlackBotSettings(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, api_url=f"{fake_url}/api/")  # type: ignore[call-arg]
        options: dict[str, Any] = {"progress_interval": 0.0}
        options.update(bot_options)
        bot = SlackBot(registry, settings, **options)
        with serve(bot.asgi()) as bot_url:
            driver = SlackDriver(bot_url, fake)
            try:
                yield Rig(registry, fake, driver, bot)
            finally:
                driver.http.close()
    registry.store.engine.dispose()
