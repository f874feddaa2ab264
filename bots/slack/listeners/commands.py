"""The ``/flexus`` slash command: who asks, what the text asks for (the chat core's parser), and the
answer, rendered as Block Kit.

Acks first. The ack itself carries what needs no I/O (a refusal, the help, a parser's problem) and
otherwise is an empty 200 within Slack's 3 seconds; the answer then follows through the
``response_url`` while the registry works (bolt runs it as a background task).
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck

from flexus_ops.core.errors import FlexusError, Refused
from flexus_ops.registry.outputs import JobOutput, ListServersOutput, ShowServerOutput
from flexus_ops.registry.render import render

from ...chat.answers import Answer, Approvals, Previewed, Read, answer_for
from ...chat.parse import FormRequest, Help, Problem, ReadRequest, parse
from ...chat.verbs import help_text
from ..blocks import (
    Message,
    approvals_list_message,
    help_message,
    job_message,
    list_message,
    preview_message,
    problem_message,
    refusal_message,
    server_message,
)
from ..context import INTERNAL_ERROR, BotContext, Kind, ResponseUrl, Who, identify, log, mention, traceback_only
from ..settings import COMMAND
from . import views


async def on_command(ctx: BotContext, ack: AsyncAck, body: dict[str, Any]) -> None:
    try:
        who = identify(ctx, body, Kind.COMMAND)
    except Refused as exc:
        refused = refusal_message("Not allowed", str(exc))
        await ack(text=refused.text, blocks=refused.blocks, response_type="ephemeral")
        return
    registry = ctx.registry
    request = parse(str(body.get("text") or ""), registry.specs, command=COMMAND)
    log.info("slack /flexus %s by %s", type(request).__name__, who.user_id)  # never the text: it may hold a secret
    if isinstance(request, Help | Problem):
        if isinstance(request, Help):
            shown = help_message(
                help_text(registry.specs, command=COMMAND, needs_approval=ctx.policy.needs_approval), request.problem
            )
        else:
            shown = problem_message(request.message)
        await ack(text=shown.text, blocks=shown.blocks, response_type="ephemeral")
        return
    if isinstance(request, FormRequest):
        try:
            registry.spec(request.tool)  # disabled by policy or read-only mode: say so before the form
            views.form_for(request.tool)
        except Refused as exc:
            refused = refusal_message("Not possible", str(exc))
            await ack(text=refused.text, blocks=refused.blocks, response_type="ephemeral")
            return
        await ack()
        await views.open_form(ctx, body, request, who)
        return

    await ack()  # an empty 200 within Slack's 3 seconds; the answer follows through the response_url
    registry.start_housekeeping()  # settling and expiry in the background, after the first request
    shared = isinstance(request, ReadRequest) and request.share
    answer = ResponseUrl(body.get("response_url"), replace=False, shared=shared)
    try:
        shown = answer_message(ctx, who, await answer_for(registry, who.caller, who.person, request))
    except FlexusError as exc:
        shown = refusal_message("Not done", str(exc))
        answer.shared = False  # errors stay private
    await answer.show(shown, final=True)


def answer_message(ctx: BotContext, who: Who, answer: Answer) -> Message:
    """The chat core's answer as Block Kit."""
    if isinstance(answer, Approvals):
        mentions = {item.requested_by: mention(ctx.policy, item.requested_by) for item in answer.items}
        return approvals_list_message(answer.items, mentions, answer.can_approve)
    if isinstance(answer, Previewed):
        return preview_message(
            answer.preview, title=answer.title, approvers=ctx.approvers(who.person.id), target=ctx.target
        )
    assert isinstance(answer, Read)
    output = answer.output
    if isinstance(output, ListServersOutput):
        return list_message(output, answer.arguments, ctx.target)
    if isinstance(output, ShowServerOutput):
        return server_message(output, ctx.target)
    if isinstance(output, JobOutput):
        return job_message(output, ctx.target)
    return problem_message(render(output))  # any other output: the registry's text rendering


def register(app: AsyncApp, ctx: BotContext) -> None:
    @app.command(COMMAND)
    async def flexus_command(ack: AsyncAck, body: dict[str, Any]) -> None:
        try:
            await on_command(ctx, ack, body)
        except Exception as exc:
            log.error("slack /flexus failed: %s", type(exc).__name__, exc_info=traceback_only(exc))
            if not ack.response:  # bolt's AsyncAck remembers whether it answered
                await ack(text=f"Internal error: {INTERNAL_ERROR}", response_type="ephemeral")
            else:
                await ResponseUrl(body.get("response_url"), replace=False).show(
                    refusal_message("Internal error", INTERNAL_ERROR), final=True
                )
