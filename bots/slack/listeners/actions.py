"""Button clicks (block_actions): Confirm, Cancel, Approve, Reject, Reveal.

Each listener acks at once and hands the click to the answer worker's loop (``worker.py``); there the
flow finds out who clicked (``context.identify``) and hands the click to the registry with the gate's
action id from the button's value. The gate decides everything: only the
requester confirms their preview, exactly once (double clicks, retries and other replicas lose the
compare-and-set), approvers are not the requester, expired requests stay expired. The bot turns the
gate's answer into messages: a refusal goes privately to whoever clicked, and the message that held
the buttons is replaced only by the click that decided it.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError

from flexus_ops.core.errors import FlexusError, Refused
from flexus_ops.core.plans import ActionResult, ActionView
from flexus_ops.core.states import ActionState

from ...chat.follow import Follower, until_decided, until_finished
from ...chat.text import counts
from ..blocks import (
    APPROVE,
    CANCEL,
    CONFIRM,
    REJECT,
    REVEAL,
    ApprovalView,
    Message,
    actions,
    approval_decided_message,
    approval_request_message,
    button,
    confirm_dialog,
    esc,
    message,
    notice_message,
    outcome_lines,
    refusal_message,
    result_message,
    reveal_modal,
    section,
    when,
)
from ..context import (
    BUSY,
    INTERNAL_ERROR,
    BotContext,
    ChannelMessage,
    Kind,
    ResponseUrl,
    Target,
    Who,
    following,
    identify,
    log,
    slack_user,
    tell,
    traceback_only,
)

_ACTION_ID = re.compile(r"^[0-9a-f]{8,64}$")


def clicked(body: dict[str, Any]) -> str | None:
    """The action id a button carries (the gate's id: 32 hex characters), or None."""
    try:
        value = body["actions"][0]["value"]
    except (KeyError, IndexError, TypeError):
        return None
    return value if isinstance(value, str) and _ACTION_ID.match(value) else None


def clicked_message(ctx: BotContext, body: dict[str, Any]) -> Target:
    """The message that held the button: a channel message is edited with chat.update (no limits); an
    ephemeral one only through this click's response_url."""
    container = body.get("container") or {}
    channel, ts = container.get("channel_id"), container.get("message_ts")
    if container.get("type") == "message" and not container.get("is_ephemeral") and channel and ts:
        return ChannelMessage(ctx.client, channel, ts)
    return ResponseUrl(body.get("response_url"), replace=True)


async def _who(ctx: BotContext, body: dict[str, Any], kind: Kind) -> tuple[Who, str] | None:
    """The clicker and the action id, or None after telling the clicker privately why not."""
    url = body.get("response_url")
    try:
        who = identify(ctx, body, kind)
    except Refused as exc:
        await tell(url, refusal_message("Not allowed", str(exc)))
        return None
    action_id = clicked(body)
    if action_id is None:
        await tell(url, refusal_message("Not done", "this button does not carry a flexus-ops request"))
        return None
    return who, action_id


# -- confirm and cancel a preview ---------------------------------------------------------------


async def on_confirm(ctx: BotContext, body: dict[str, Any]) -> None:
    found = await _who(ctx, body, Kind.CLICK)
    if found is None:
        return
    who, action_id = found
    url = body.get("response_url")
    row = await ctx.registry.action(action_id)
    if row is None:
        await tell(url, refusal_message("Not done", "no such preview"))
        return
    title = ctx.title(row.tool)
    here = ResponseUrl(url, replace=True)
    follow = following(here, title, f"confirmed by {who.mention}", ctx.progress_interval)
    try:
        result = await ctx.registry.confirm_action(who.caller, action_id, progress=follow)
    except Refused as exc:
        await _confirm_refused(ctx, who, action_id, here, url, exc)
        return
    except FlexusError as exc:  # it ran and the cloud failed; the gate recorded it as failed
        await here.show(refusal_message(f"{title} failed", str(exc)), final=True)
        return
    if result.replay:
        # A second click of the same Confirm: the first one owns the message; this one ran nothing.
        await tell(url, notice_message("↩️", "This was already confirmed; nothing was run again."))
        return
    if result.status == "awaiting_approval":
        await request_approval(ctx, action_id, here)
        return
    if result.status == "running":
        await here.show(result_message(title, result, who.mention))
        ctx.spawn(follow_rollout(ctx, who, action_id, title, here, follow))
        return
    await here.show(result_message(title, result, who.mention), final=True)


async def follow_rollout(ctx: BotContext, who: Who, action_id: str, title: str, here: Target, follow: Follower) -> None:
    """A rollout in waves goes on after the click is answered: its message shows each finished wave,
    then the outcome (read from the store, so it works whichever replica runs the rollout)."""
    finished = await until_finished(ctx.registry, action_id, interval=ctx.progress_interval, progress=follow)
    if finished is None:
        return
    try:
        report = await ctx.registry.show_action(who.caller, action_id)
    except FlexusError as exc:
        log.warning("following rollout %s: %s", action_id, exc)
        return
    if report.result is not None:
        await here.show(result_message(title, report.result, who.mention), final=True)


async def _confirm_refused(
    ctx: BotContext, who: Who, action_id: str, here: Target, url: str | None, exc: Refused
) -> None:
    row = await ctx.registry.action(action_id)
    if row is not None and row.person == who.person.id and row.state in (ActionState.EXPIRED, ActionState.CANCELLED):
        # The preview can never run now: say so in its place, so the stale buttons go away.
        if row.state == ActionState.EXPIRED:
            text = (
                f"This preview expired {when(row.expires_at)} before it was confirmed; nothing was changed. "
                "Run the command again for a fresh preview."
            )
            await here.show(notice_message("⌛", text), final=True)
        else:
            await here.show(notice_message("↩️", f"Not run: {esc(exc)}"), final=True)
        return
    # Someone else's preview, or a second click that lost: a private answer, the message is untouched.
    prefix = "Not yours" if row is not None and row.person != who.person.id else "Not done"
    await tell(url, refusal_message(prefix, str(exc)))


async def on_cancel(ctx: BotContext, body: dict[str, Any]) -> None:
    found = await _who(ctx, body, Kind.CLICK)
    if found is None:
        return
    who, action_id = found
    url = body.get("response_url")
    before = await ctx.registry.action(action_id)
    try:
        await ctx.registry.reject(who.caller, action_id, None)
    except Refused as exc:
        if before is not None and before.person != who.person.id:
            await tell(url, refusal_message("Not yours", "only the person who asked for this preview can cancel it"))
            return
        await _confirm_refused(ctx, who, action_id, ResponseUrl(url, replace=True), url, exc)
        return
    await ResponseUrl(url, replace=True).show(
        notice_message("↩️", f"Cancelled by {who.mention}; nothing was changed."), final=True
    )


# -- approval requests --------------------------------------------------------------------------


async def request_approval(ctx: BotContext, action_id: str, here: Target) -> None:
    """After the requester confirmed: the request goes to the approvals channel (no secret in it)."""
    found = await ctx.approval_view(action_id)
    if found is None:
        return
    view, _row = found
    channel = ctx.slack.approvals_channel
    problem = "no approvals channel is configured ([slack] approvals_channel in the policy)"
    if channel:
        request = approval_request_message(view)
        try:
            posted = await ctx.client.chat_postMessage(channel=channel, text=request.text, blocks=request.blocks)
        except SlackApiError as exc:
            problem = f"I could not post in <#{channel}> ({esc(exc.response.get('error'))})"
        else:
            ctx.posted[action_id] = (posted["channel"], posted["ts"])
            ctx.spawn(watch(ctx, action_id))
            text = (
                f"Sent for approval to <#{channel}>: one of {view.approvers} must approve it before "
                f"{when(view.expires_at)}. I will tell you privately when it is decided."
            )
            await here.show(notice_message("🕒", text), final=True)
            return
    text = (
        f"Confirmed; waiting for approval by one of {view.approvers} until {when(view.expires_at)}. "
        f"But {problem}: approvers can find it with `/flexus approvals`."
    )
    await here.show(notice_message("🕒", text), final=True)


async def watch(ctx: BotContext, action_id: str) -> None:
    """Keep a posted approval message true to its request: when the request expires (the gate expires
    it; this only shows it) or is decided somewhere without a click here (another replica, the CLI),
    replace the buttons with the outcome. Ends early when a click here settles the message."""
    row = await until_decided(
        ctx.registry,
        action_id,
        interval=ctx.watch_interval,
        watching=lambda: action_id in ctx.posted,
        busy=lambda: action_id in ctx.deciding,
    )
    if row is None:
        return
    settled = await settle(ctx, action_id)
    if settled is not None and settled.state == ActionState.EXPIRED:
        view = await ctx.approval_view(action_id)
        if view is not None:
            notice = requester_notice(view[0], "⌛ nobody approved it in time; it expired")
            await notify_requester(ctx, settled, notice)


async def settle(
    ctx: BotContext, action_id: str, here: Target | None = None, closed: Message | None = None
) -> ActionView | None:
    """Show a decided request's decision in place of its buttons: here, and on the approval message
    this process posted, if that is another message. ``closed`` overrides the rendering from the
    gate's record (the deciding click knows the per-server result too)."""
    found = await ctx.approval_view(action_id)
    if found is None:
        return None
    view, row = found
    if closed is None:
        outcome = ctx.decision(row)
        if outcome is None:
            return row  # still open
        closed = approval_decided_message(view, outcome)
    if here is not None:
        await here.show(closed, final=True)
    posted = ctx.posted.pop(action_id, None)
    if posted is not None and not _same(here, posted):
        await ChannelMessage(ctx.client, *posted).show(closed, final=True)
    return row


def _same(target: Target | None, posted: tuple[str, str]) -> bool:
    return isinstance(target, ChannelMessage) and (target.channel, target.ts) == posted


def requester_notice(view: ApprovalView, outcome: str, result: ActionResult | None = None) -> Message:
    blocks = [section(f"Your request *{esc(view.title)}* ({esc(view.plan.summary)}): {outcome}.")]
    if result is not None and result.servers:
        blocks.append(section("\n".join(outcome_lines(result.servers))))
    return message(f"Your request {esc(view.title)}: {outcome}", blocks, formatted=True)


async def notify_requester(ctx: BotContext, row: ActionView, notice: Message) -> None:
    """Privately, in the requester's DM with the bot (a request can outlive any response_url)."""
    user_id = slack_user(ctx.policy, row.person, row.principal)
    if user_id is not None:
        await ctx.direct_message(user_id, notice)


def _generated_secret(ctx: BotContext, row: ActionView) -> bool:
    """True when the tool has a secret argument and the requester left it to be generated."""
    spec = ctx.registry.specs.get(row.tool)
    if spec is None or not spec.asks_for_secret:
        return False
    given = row.arguments
    return not any(name in given for name in spec.secret_fields)


def reveal_offer(view: ApprovalView) -> list[dict[str, Any]]:
    return [
        section(
            "A password was generated. Press *Reveal password* to see it once, in a window only you can see; "
            "it is not stored anywhere after that."
        ),
        actions(
            f"reveal:{view.action_id}",
            button(
                "Reveal password",
                REVEAL,
                view.action_id,
                style="primary",
                confirm=confirm_dialog(
                    "Show the password now?", "It is shown once, and cannot be shown again.", "Show it"
                ),
            ),
        ),
    ]


async def on_approve(ctx: BotContext, body: dict[str, Any]) -> None:
    found = await _who(ctx, body, Kind.APPROVAL)
    if found is None:
        return
    who, action_id = found
    url = body.get("response_url")
    viewed = await ctx.approval_view(action_id)
    if viewed is None:
        await tell(url, refusal_message("Not approved", "no such approval request"))
        return
    view, row = viewed
    here = clicked_message(ctx, body)
    follow = following(here, view.title, f"approved by {who.mention}", ctx.progress_interval)
    with ctx.deciding_on(action_id):
        await _approve(ctx, who, action_id, view, row, here, follow, url)


async def _approve(
    ctx: BotContext,
    who: Who,
    action_id: str,
    view: ApprovalView,
    row: ActionView,
    here: Target,
    follow: Follower,
    url: str | None,
) -> None:
    try:
        result = await ctx.registry.approve(who.caller, action_id, progress=follow)
    except Refused as exc:
        await settle(ctx, action_id, here)  # a closed request loses its stale buttons
        await tell(url, refusal_message("Not approved", str(exc)))
        return
    except FlexusError as exc:
        outcome = f"✅ *Approved* by {who.mention}, but the run failed: {esc(exc)}"
        await settle(ctx, action_id, here, approval_decided_message(view, outcome))
        await notify_requester(ctx, row, requester_notice(view, f"approved by {who.mention}, but the run failed"))
        return
    outcome = f"✅ *Approved* by {who.mention} {when(time.time())}: {counts(result.servers)}"
    await settle(ctx, action_id, here, approval_decided_message(view, outcome, result))
    if result.status == "running":  # a rollout in waves: its message follows it to the end
        ctx.spawn(follow_rollout(ctx, who, action_id, view.title, here, follow))
    notice = requester_notice(view, f"approved by {who.mention} and run ({counts(result.servers)})", result)
    if _generated_secret(ctx, row) and result.status in ("succeeded", "partial"):
        notice = message(notice.text, [*notice.blocks, *reveal_offer(view)], formatted=True)
    await notify_requester(ctx, row, notice)


async def on_reject(ctx: BotContext, body: dict[str, Any]) -> None:
    found = await _who(ctx, body, Kind.APPROVAL)
    if found is None:
        return
    who, action_id = found
    url = body.get("response_url")
    here = clicked_message(ctx, body)
    with ctx.deciding_on(action_id):
        try:
            await ctx.registry.reject(who.caller, action_id, None)
        except Refused as exc:
            await settle(ctx, action_id, here)
            await tell(url, refusal_message("Not rejected", str(exc)))
            return
        row = await settle(ctx, action_id, here)
    if row is not None and row.person != who.person.id:
        view = await ctx.approval_view(action_id)
        if view is not None:
            await notify_requester(ctx, row, requester_notice(view[0], f"❌ rejected by {who.mention}"))


# -- reveal a generated password ----------------------------------------------------------------


async def on_reveal(ctx: BotContext, body: dict[str, Any]) -> None:
    found = await _who(ctx, body, Kind.REVEAL)
    if found is None:
        return
    who, action_id = found
    url = body.get("response_url")
    viewed = await ctx.approval_view(action_id)
    servers = ", ".join(i.name or i.server_id for i in viewed[0].plan.acting) if viewed else "the servers"
    try:
        secret = await ctx.registry.reveal(who.caller, action_id)  # the gate: the requester only, once
    except Refused as exc:
        await tell(url, refusal_message("Nothing to show", str(exc)))
        return
    try:
        await ctx.client.views_open(trigger_id=body.get("trigger_id", ""), view=reveal_modal(secret, servers))
    except SlackApiError as exc:
        error = exc.response.get("error")
        text = (
            f"Slack did not open the window ({esc(error)}). The password was erased when it was read, so it "
            "cannot be shown again: request a new reset."
        )
        await ResponseUrl(url, replace=True).show(notice_message("⚠️", text), final=True)
        return
    finally:
        del secret
    text = f"The password was shown to you once {when(time.time())}; it is not stored anywhere now."
    await ResponseUrl(url, replace=True).show(notice_message("🔑", text), final=True)


# -- wiring -------------------------------------------------------------------------------------


def register(app: AsyncApp, ctx: BotContext) -> None:
    flows = {CONFIRM: on_confirm, CANCEL: on_cancel, APPROVE: on_approve, REJECT: on_reject, REVEAL: on_reveal}
    for action_id, flow in flows.items():
        app.action(action_id)(_listener(ctx, flow))


def _listener(ctx: BotContext, flow: Any) -> Any:
    async def listener(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()  # first, always: the rest may wait on the cloud
        url = body.get("response_url")

        async def work() -> None:
            await flow(ctx, body)

        async def failed(exc: BaseException) -> None:
            log.error("slack %s failed: %s", flow.__name__, type(exc).__name__, exc_info=traceback_only(exc))
            await tell(url, refusal_message("Internal error", INTERNAL_ERROR))

        # The click is handled on the answer worker's loop; this (the server's) loop goes back to acking.
        if not ctx.answers.submit(work, failed, name=flow.__name__):
            # Full: nothing was started, so the same click later is safe. Said privately, off the ack's path.
            notice = asyncio.get_running_loop().create_task(tell(url, refusal_message("Busy", BUSY)))
            _notices.add(notice)
            notice.add_done_callback(_notices.discard)

    listener.__name__ = f"{flow.__name__}_listener"
    return listener


_notices: set[asyncio.Task[None]] = set()  # "busy" notices in flight (a task needs a reference to finish)
