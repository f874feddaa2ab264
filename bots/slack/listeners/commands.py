"""The ``/flexus`` slash command: who asks, what the text asks for (the chat core's parser), and the
answer, rendered as Block Kit.

Acks first. The ack itself carries what needs no I/O (a refusal, the help, a parser's problem) and
otherwise is an empty 200 within Slack's 3 seconds; the answer then follows through the
``response_url`` while the registry works, on the answer worker's loop (``worker.py``), so no ack
waits behind another command's answer.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck

from flexus_ops.core.errors import FlexusError, Refused
from flexus_ops.registry.outputs import JobOutput, ListServersOutput, ShowServerOutput
from flexus_ops.registry.render import render

from ...chat.answers import Answer, Approvals, Previewed, Read, answer_for
from ...chat.parse import ApprovalsRequest, ChangeRequest, FormRequest, Help, Problem, ReadRequest, parse
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
from ..context import (
    BUSY,
    INTERNAL_ERROR,
    BotContext,
    Kind,
    ResponseUrl,
    Who,
    identify,
    log,
    mention,
    tell,
    traceback_only,
)
from ..settings import COMMAND
from ..worker import Work
from . import views


async def on_command(ctx: BotContext, ack: AsyncAck, body: dict[str, Any]) -> None:
    """Runs on the server's loop and only acks: who asks, what the text asks for, and anything the ack
    itself can say. What needs the registry or Slack's Web API is handed to the answer worker."""
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
    work: Work
    if isinstance(request, FormRequest):
        try:
            registry.spec(request.tool)  # disabled by policy or read-only mode: say so before the form
            views.form_for(request.tool)
        except Refused as exc:
            refused = refusal_message("Not possible", str(exc))
            await ack(text=refused.text, blocks=refused.blocks, response_type="ephemeral")
            return
        form = request

        async def work() -> None:
            await views.open_form(ctx, body, form, who)

    else:
        chat = request

        async def work() -> None:
            await answer_command(ctx, body, who, chat)

    ticket = ctx.answers.admit()
    if ticket is None:  # full: still an ack within Slack's 3 seconds, and nothing was started
        busy = refusal_message("Busy", BUSY)
        await ack(text=busy.text, blocks=busy.blocks, response_type="ephemeral")
        return
    try:
        await ack()  # an empty 200 within Slack's 3 seconds; the answer follows through the response_url
    except BaseException:
        ticket.release()
        raise
    ticket.start(work, lambda exc: command_failed(body, exc), name="command")


async def answer_command(
    ctx: BotContext, body: dict[str, Any], who: Who, request: ReadRequest | ChangeRequest | ApprovalsRequest
) -> None:
    """On the answer worker's loop: the registry's answer, through the command's response_url."""
    registry = ctx.registry
    registry.start_housekeeping()  # settling and expiry in the background, after the first request
    shared = isinstance(request, ReadRequest) and request.share
    answer = ResponseUrl(body.get("response_url"), replace=False, shared=shared)
    try:
        shown = answer_message(ctx, who, await answer_for(registry, who.caller, who.person, request))
    except FlexusError as exc:
        shown = refusal_message("Not done", str(exc))
        answer.shared = False  # errors stay private
    await answer.show(shown, final=True)


async def command_failed(body: dict[str, Any], exc: BaseException) -> None:
    log.error("slack /flexus failed: %s", type(exc).__name__, exc_info=traceback_only(exc))
    await ResponseUrl(body.get("response_url"), replace=False).show(
        refusal_message("Internal error", INTERNAL_ERROR), final=True
    )


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
                await tell(body.get("response_url"), refusal_message("Internal error", INTERNAL_ERROR))
