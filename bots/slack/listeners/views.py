"""Modals (view submissions): the password-reset form, opened by ``/flexus reset-password``.

The chat core's parser turns a verb whose tool takes a secret into a ``FormRequest``; Slack asks for the
secret in a modal, the one place a surface may take it. The form's fields are that tool's (a reason, a
password typed twice or generated), so the form is per tool: ``FORMS`` says which tools have one.

The password is typed here (or left to be generated), never in command text. It reaches the bot only
in the submission payload and goes straight into the registry call, which keeps it encrypted until the
approved reset runs. It is never put in ``private_metadata``, a message, a log line or an error: the
rules are checked by ``problem_with_password``, whose sentences never quote the value.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError

from flexus_ops.cloud.rules import problem_with_password
from flexus_ops.core.errors import FlexusError, InvalidInput, Refused

from ...chat.parse import FormRequest
from ..blocks import (
    ENTER,
    GENERATE,
    RESET_MODAL,
    Message,
    clip,
    preview_message,
    problem_message,
    refusal_message,
    reset_modal,
)
from ..context import BUSY, INTERNAL_ERROR, BotContext, Kind, ResponseUrl, Who, identify, log, traceback_only

TOOL = "flexus_reset_servers_password"
METADATA_CHARS = 3000  # Slack's limit on private_metadata
ERROR_CHARS = 300


@dataclass(frozen=True)
class Metadata:
    """What the modal carries between opening and submission: the servers and where to answer."""

    servers: list[str]
    channel: str | None
    response_url: str | None

    def dump(self) -> str:
        return json.dumps({"servers": self.servers, "channel": self.channel, "response_url": self.response_url})

    @classmethod
    def load(cls, text: str) -> Metadata | None:
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        servers, channel, url = data.get("servers"), data.get("channel"), data.get("response_url")
        if not isinstance(servers, list) or not servers or not all(isinstance(s, str) for s in servers):
            return None
        return cls(
            servers=servers,
            channel=channel if isinstance(channel, str) else None,
            response_url=url if isinstance(url, str) else None,
        )


async def open_reset_modal(ctx: BotContext, body: dict[str, Any], request: FormRequest, who: Who) -> None:
    """Called right after the command's ack: the trigger_id is good for about three seconds."""
    url = body.get("response_url")
    servers = tuple(request.arguments["servers"])
    metadata = Metadata(list(servers), who.channel_id, url).dump()
    if len(metadata) > METADATA_CHARS:
        await ResponseUrl(url, replace=False).show(problem_message("Too many servers for one request; split it."))
        return
    try:
        await ctx.client.views_open(trigger_id=body.get("trigger_id", ""), view=reset_modal(servers, metadata))
    except SlackApiError as exc:
        text = f"Slack did not open the form ({exc.response.get('error')}); run the command again."
        await ResponseUrl(url, replace=False).show(problem_message(text))


FormOpener = Callable[[BotContext, dict[str, Any], FormRequest, Who], Awaitable[None]]
FORMS: dict[str, FormOpener] = {TOOL: open_reset_modal}  # tool -> the modal that asks for its secret


def form_for(tool: str) -> FormOpener:
    """How to ask for ``tool``'s secret, or ``Refused``: a secret is never taken from the text."""
    if tool not in FORMS:
        raise Refused(f"{tool} takes a secret, and Slack has no private form for it")
    return FORMS[tool]


async def open_form(ctx: BotContext, body: dict[str, Any], request: FormRequest, who: Who) -> None:
    await form_for(request.tool)(ctx, body, request, who)


def _value(values: dict[str, Any], block: str) -> str:
    found = ((values.get(block) or {}).get("value") or {}).get("value")
    return found if isinstance(found, str) else ""


def _choice(values: dict[str, Any], block: str) -> str | None:
    selected = ((values.get(block) or {}).get("value") or {}).get("selected_option") or {}
    found = selected.get("value")
    return found if isinstance(found, str) else None


def password_errors(source: str, first: str, second: str) -> dict[str, str]:
    """Errors by block id. The sentences name the rule, never the value."""
    if source == GENERATE:
        if first or second:
            return {"password": "You chose to have one generated: clear both fields, or choose 'I will enter one'."}
        return {}
    if not first:
        return {"password": "Enter the new password, or choose to have one generated."}
    if first != second:
        return {"password_again": "The two entries differ."}
    if problem := problem_with_password(first):
        return {"password": f"The password {problem}."}
    return {}


def _block_for(field: str) -> str:
    return {"new_password": "password", "reason": "reason"}.get(field.split(".")[0], "reason")


async def on_submit(ctx: BotContext, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
    meta = Metadata.load(view.get("private_metadata", ""))
    if meta is None:
        await ack(
            response_action="errors", errors={"reason": "This form is out of date: close it and run the command again."}
        )
        return
    try:
        who = identify(ctx, body, Kind.SUBMIT, channel_id=meta.channel or "")
    except Refused as exc:
        await ack(response_action="errors", errors={"reason": clip(f"Not allowed: {exc}", ERROR_CHARS)})
        return
    values = (view.get("state") or {}).get("values") or {}
    reason = _value(values, "reason").strip()
    source = _choice(values, "source") or GENERATE
    first, second = _value(values, "password"), _value(values, "password_again")
    errors = password_errors(source, first, second)
    arguments: dict[str, Any] = {"servers": meta.servers, "reason": reason}
    if source == ENTER and not errors:
        arguments["new_password"] = first
    del first, second
    if not errors:
        # The registry's own input rules, before the modal closes, so a mistake is shown next to its field.
        try:
            ctx.registry.validate(ctx.registry.spec(TOOL), arguments)
        except InvalidInput as exc:
            errors[_block_for(exc.field)] = clip(f"{exc.field}: {exc.rule}", ERROR_CHARS)
        except Refused as exc:
            errors["reason"] = clip(str(exc), ERROR_CHARS)
    if errors:
        arguments.clear()
        await ack(response_action="errors", errors=errors)
        return
    ticket = ctx.answers.admit()
    if ticket is None:  # full: the form stays open with its values, nothing was started
        arguments.clear()
        await ack(response_action="errors", errors={"reason": clip(BUSY, ERROR_CHARS)})
        return
    try:
        await ack()  # closes the modal; the dry run runs on the answer worker's loop and may take a while
    except BaseException:
        arguments.clear()
        ticket.release()
        raise

    async def work() -> None:
        await preview_reset(ctx, who, meta, reason, arguments)

    async def failed(exc: BaseException) -> None:
        arguments.clear()
        await submit_failed(meta, exc)

    ticket.start(work, failed, name="reset preview")


async def preview_reset(ctx: BotContext, who: Who, meta: Metadata, reason: str, arguments: dict[str, Any]) -> None:
    answer = ResponseUrl(meta.response_url, replace=False)
    try:
        output = await ctx.registry.preview(who.caller, TOOL, arguments)
    except FlexusError as exc:
        await _tell(ctx, who, answer, refusal_message("Not possible", str(exc)))
        return
    finally:
        arguments.clear()  # the registry holds it encrypted now; drop our reference
    assert output.preview is not None
    shown = preview_message(
        output.preview,
        title=ctx.title(TOOL),
        approvers=ctx.approvers(who.person.id),
        target=ctx.target,
        reason=reason,
    )
    await _tell(ctx, who, answer, shown)


async def submit_failed(meta: Metadata | None, exc: BaseException) -> None:
    log.error("slack reset submission failed: %s", type(exc).__name__, exc_info=traceback_only(exc))
    if meta is not None:
        await ResponseUrl(meta.response_url, replace=False).show(
            refusal_message("Internal error", INTERNAL_ERROR), final=True
        )


async def _tell(ctx: BotContext, who: Who, answer: ResponseUrl, shown: Message) -> None:
    """Through the command's response_url; if Slack refuses it, in the requester's DM instead."""
    if not await answer.show(shown, final=True):
        await ctx.direct_message(who.user_id, shown)


def register(app: AsyncApp, ctx: BotContext) -> None:
    @app.view(RESET_MODAL)
    async def reset_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        try:
            await on_submit(ctx, ack, body, view)
        except Exception as exc:
            await submit_failed(Metadata.load(view.get("private_metadata", "")), exc)
            if not ack.response:  # bolt's AsyncAck remembers whether it answered
                await ack(response_action="errors", errors={"reason": clip(INTERNAL_ERROR, ERROR_CHARS)})
