"""What every Slack listener shares: who is asking (by immutable ids, from the policy file), where to
answer, and how a message follows a job. No safety decision is made here: the registry and its gate
decide who may do what; this module only finds out who is asking and refuses requests from outside the
workspaces and channels the policy's ``[slack]`` table allows.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from flexus_ops.core.errors import Refused
from flexus_ops.core.plans import ActionView
from flexus_ops.core.states import FINISHED_STATES, ActionState
from flexus_ops.core.tools import Caller
from flexus_ops.gate.policy import Person, Policy
from flexus_ops.registry.registry import Registry

from ..chat.answers import title_of
from ..chat.follow import Follower
from .blocks import ApprovalView, Message, esc, progress_message, user, when
from .settings import SlackSettings, slack_settings
from .worker import AnswerWorker, shared_http

log = logging.getLogger("flexus_ops.bots")

_USER_ID = re.compile(r"^[UW][A-Z0-9]{1,20}$")


class Kind(StrEnum):
    """What is being authorised; the channel rules differ a little between them."""

    COMMAND = "command"
    CLICK = "click"  # Confirm / Cancel on a preview
    APPROVAL = "approval"  # Approve / Reject, also in the approvals channel
    REVEAL = "reveal"  # the reveal button, in the requester's direct messages with the bot
    SUBMIT = "submit"  # a modal submission; its channel comes from the modal's metadata


@dataclass(frozen=True)
class Who:
    caller: Caller
    person: Person
    user_id: str
    channel_id: str | None

    @property
    def mention(self) -> str:
        return user(self.user_id)


def user_of(body: dict[str, Any]) -> str | None:
    found = body.get("user_id") or (body.get("user") or {}).get("id")
    return found if isinstance(found, str) else None


def teams_of(body: dict[str, Any]) -> list[str]:
    """The workspace the request came through and, for clicks, the clicker's own workspace: in a
    Slack Connect channel people from other organisations can press our buttons."""
    found = [
        body.get("team_id"),
        body.get("user_team_id"),
        (body.get("team") or {}).get("id"),
        (body.get("user") or {}).get("team_id"),
    ]
    return [team for team in dict.fromkeys(found) if isinstance(team, str) and team]


def channel_of(body: dict[str, Any]) -> str | None:
    found = (
        body.get("channel_id")
        or (body.get("channel") or {}).get("id")
        or (body.get("container") or {}).get("channel_id")
    )
    return found if isinstance(found, str) else None


def identify(ctx: BotContext, body: dict[str, Any], kind: Kind, channel_id: str | None = None) -> Who:
    """The caller of a command, click or submission, or ``Refused`` saying why not. Runs on every one."""
    registry = ctx.registry
    slack = ctx.slack
    user_id = user_of(body)
    if user_id is None or not _USER_ID.match(user_id):
        raise Refused("the request does not name a Slack user")
    if slack.team_ids:
        teams = teams_of(body)
        if not teams or any(team not in slack.team_ids for team in teams):
            raise Refused("this workspace is not allowed by the policy ([slack] team_ids)")
    channel = channel_id if channel_id is not None else channel_of(body)
    if slack.channel_ids:
        allowed = set(slack.channel_ids)
        if kind is Kind.APPROVAL and slack.approvals_channel:
            allowed.add(slack.approvals_channel)
        in_dm = kind is Kind.REVEAL and channel is not None and channel.startswith("D")
        if channel not in allowed and not in_dm:
            places = ", ".join(f"<#{c}>" for c in slack.channel_ids)
            raise Refused(f"flexus-ops does not take requests in this channel; use {places}")
    caller = Caller(principal=f"slack:{user_id}", surface="slack")
    return Who(caller=caller, person=registry.person(caller), user_id=user_id, channel_id=channel)


BUSY = "flexus-ops has too many answers under way right now; nothing was started. Try again in a moment."
INTERNAL_ERROR = (
    "something failed on our side (it is logged). Check `/flexus approvals` or the audit log before trying again."
)


class Failed(Exception):
    """Stands in for an exception in a log record: its type and traceback, never its message."""


def traceback_only(exc: BaseException) -> tuple[type[BaseException], BaseException, Any]:
    """``exc_info`` that logs where something failed but not the exception's message, which could
    quote a payload (a pydantic error quotes its input)."""
    return (Failed, Failed(type(exc).__name__), exc.__traceback__)  # type: ignore[return-value]


# -- people -------------------------------------------------------------------------------------


def slack_user(policy: Policy, person_id: str | None, principal: str | None = None) -> str | None:
    """The Slack user id of a person: the principal they used, else any Slack principal of theirs."""
    if principal and principal.startswith("slack:"):
        return principal.removeprefix("slack:")
    person = policy.person(person_id) if person_id else None
    for candidate in person.principals if person else []:
        if candidate.startswith("slack:"):
            return candidate.removeprefix("slack:")
    return None


def mention(policy: Policy, person_id: str | None, principal: str | None = None) -> str:
    found = slack_user(policy, person_id, principal)
    if found:
        return user(found)
    person = policy.person(person_id) if person_id else None
    return esc(person.display if person else (person_id or "someone"))


def approvers_text(policy: Policy, slack: SlackSettings, exclude: str | None) -> str:
    """Who may approve (never the requester), and the approver groups, so Slack notifies them."""
    people = [mention(policy, p.id) for p in policy.approvers if p.id != exclude]
    groups = [f"<!subteam^{group}>" for group in slack.approver_usergroups]
    return ", ".join(people + groups) or "nobody (no approver is named in the policy)"


# -- where answers go ---------------------------------------------------------------------------


class Target(Protocol):
    async def show(self, message: Message, *, final: bool = False) -> bool: ...


class ResponseUrl:
    """A message changed through one interaction's ``response_url`` (the only way to change an
    ephemeral message). Slack allows five uses in 30 minutes, so one is always kept for the final state."""

    def __init__(self, url: str | None, *, replace: bool, shared: bool = False, uses: int = 5) -> None:
        self.url = url
        self.replace = replace
        self.shared = shared
        self.uses = uses
        self.used = 0

    async def show(self, message: Message, *, final: bool = False) -> bool:
        if self.url is None or self.used >= self.uses or (not final and self.used >= self.uses - 1):
            return False
        self.used += 1
        try:
            # On the answer worker, its one session (connections reused); elsewhere a session for this post.
            answer = await AsyncWebhookClient(url=self.url, session=shared_http()).send(
                text=message.text,
                blocks=message.blocks,
                response_type="in_channel" if self.shared else "ephemeral",
                replace_original=self.replace,
            )
        except Exception as exc:  # a lost answer must not break the flow that is running the change
            log.warning("slack response_url failed: %s", type(exc).__name__)
            return False
        if answer.status_code != 200:
            log.warning("slack response_url answered HTTP %s", answer.status_code)
            return False
        return True


class ChannelMessage:
    """A normal message (the approval request), changed with chat.update: no use limit, no time limit."""

    def __init__(self, client: AsyncWebClient, channel: str, ts: str) -> None:
        self.client = client
        self.channel = channel
        self.ts = ts

    async def show(self, message: Message, *, final: bool = False) -> bool:
        try:
            await self.client.chat_update(channel=self.channel, ts=self.ts, text=message.text, blocks=message.blocks)
        except SlackApiError as exc:
            log.warning("slack chat.update failed: %s", exc.response.get("error"))
            return False
        return True


async def tell(url: str | None, message: Message) -> None:
    """A private answer to whoever clicked or typed (a new ephemeral message; the original stays)."""
    await ResponseUrl(url, replace=False).show(message, final=True)


def following(target: Target, title: str, by: str, interval: float) -> Follower:
    """The chat core's job follower, showing each step as a progress message on ``target``. ``by`` says
    who set it going, e.g. "confirmed by <@U1>"."""

    async def show(done: float, total: float | None, note: str) -> None:
        await target.show(progress_message(title, done, total, note, by))

    return Follower(show, interval)


# -- shared state of one bot process --------------------------------------------------------------


@dataclass
class BotContext:
    registry: Registry
    client: AsyncWebClient
    progress_interval: float = 1.0
    watch_interval: float = 30.0  # how often a posted approval request is checked against the store
    # Where everything after an ack runs (its own loop and thread): the registry, the cloud, the answers.
    answers: AnswerWorker = field(default_factory=AnswerWorker)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    deciding: Counter[str] = field(default_factory=Counter)  # approval requests clicks here are deciding now
    # Approval messages this process posted (action id -> channel, ts), to edit them when the request
    # is decided elsewhere or expires. Best effort: any replica also fixes a stale one on its next click.
    posted: dict[str, tuple[str, str]] = field(default_factory=dict)
    # The [slack] table of the policy object it was read from: validated once per policy, again after a reload.
    _slack: tuple[Policy, SlackSettings] | None = field(default=None, init=False, repr=False)

    @property
    def policy(self) -> Policy:
        return self.registry.policy

    @property
    def slack(self) -> SlackSettings:
        policy = self.registry.policy
        if self._slack is None or self._slack[0] is not policy:
            self._slack = (policy, slack_settings(policy))
        return self._slack[1]

    @property
    def target(self) -> str | None:
        client = self.registry.client
        return client.describe_target() if client.is_sandbox else None

    def title(self, tool: str) -> str:
        return title_of(self.registry, tool)

    def approvers(self, exclude: str | None) -> str:
        """Mentions of who may approve a request by ``exclude`` (never themselves), and the approver groups."""
        return approvers_text(self.policy, self.slack, exclude)

    @contextmanager
    def deciding_on(self, action_id: str) -> Iterator[None]:
        """While a click here decides a request, the watcher leaves its message to that click."""
        self.deciding[action_id] += 1
        try:
            yield
        finally:
            self.deciding[action_id] -= 1
            if self.deciding[action_id] <= 0:
                del self.deciding[action_id]

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """A task that outlives its answer (following a rollout, watching an approval request), on the
        answers' loop, where it is called from."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def aclose(self) -> None:
        """On the answers' loop, where the tasks run."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def direct_message(self, user_id: str, message: Message) -> bool:
        """A message in the person's DM with the bot: private, and it outlives response_url limits."""
        try:
            opened = await self.client.conversations_open(users=user_id)
            channel = opened["channel"]["id"]
            await self.client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks)
        except SlackApiError as exc:
            log.warning("slack direct message failed: %s", exc.response.get("error"))
            return False
        return True

    async def approval_view(self, action_id: str) -> tuple[ApprovalView, ActionView] | None:
        row = await self.registry.action(action_id)
        if row is None:
            return None
        view = ApprovalView(
            action_id=action_id,
            title=self.title(row.tool),
            requester=mention(self.policy, row.person, row.principal),
            reason=row.reason,
            plan=row.plan,
            expires_at=row.expires_at,
            approvers=self.approvers(row.person),
        )
        return view, row

    def decision(self, row: ActionView) -> str | None:
        """How a finished request reads, from the gate's record; None while it is open or still running
        (then whoever decided it shows the outcome, with the per-server result)."""
        state = row.state
        by = mention(self.policy, row.decided_by) if row.decided_by else "someone"
        at = f" {when(row.decided_at)}" if row.decided_at else ""
        note = f": {esc(row.decision_note)}" if row.decision_note else ""
        if state in FINISHED_STATES and row.decided_by:
            return f"✅ *Approved* by {by}{at}." + (" The run failed." if state == ActionState.FAILED else "")
        if state == ActionState.REJECTED:
            return f"❌ *Rejected* by {by}{at}{note}"
        if state == ActionState.CANCELLED:
            return f"↩️ *Withdrawn or cancelled*{at}{note}"
        if state == ActionState.EXPIRED:
            return f"⌛ *Expired* {when(row.expires_at)}: nobody approved it in time."
        return None
