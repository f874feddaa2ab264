"""The MCP surface: every registry tool, generated, on ``MCPServer`` (mcp 2.x), over stdio or
streamable HTTP. It adds no logic of its own: it asks the human through elicitation when the client
can, and otherwise hands the registry the arguments as they came (a preview, or a token confirmation).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    Elicit,
    ElicitationResult,
    MCPServer,
    RequestStateSecurity,
    Resolve,
)
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from . import __version__
from .cloud.retries import retry_listener
from .core.errors import FlexusError, Refused, bounded
from .core.plans import ChangeOutput
from .core.tools import Caller, ToolSpec
from .gate.policy import os_principal
from .mcp_fast import SERVER_NAME, SERVER_TITLE, instructions
from .mcp_prompts import add_prompts
from .mcp_resources import add_completions, add_resources
from .mcp_schema import compact_schema
from .registry.registry import Registry
from .registry.render import render


class Confirm(BaseModel):
    """The one question a person answers before a change runs."""

    confirm: bool = Field(description="Run exactly this plan?", strict=True)  # true, not "yes" or 1


class _NotAsked:
    """A resolver's answer when no question was asked (dry run, token, or no elicitation)."""


NOT_ASKED = _NotAsked()


@dataclass(frozen=True)
class Question:
    """The pending action a person is asked about: the question names it, so an answer confirms it alone."""

    action_id: str
    message: str


def answer_key(ctx: Context) -> str | None:
    """What identifies an elicitation answer (2026-07-28 era): the request state it came back with.

    The state is sealed by the SDK (only this server can mint it) and records the exact question, which
    names one pending action. A replay of the final request carries the same state, so the gate, which
    stores this key in the compare-and-set that consumes the action, recognises it."""
    state = ctx.request_state
    return hashlib.sha256(state.encode()).hexdigest() if state else None


CallerFor = Callable[[Context], Caller]


def stdio_caller(_ctx: Context) -> Caller:
    return Caller(principal=os_principal(), surface="mcp")


def raw_arguments(ctx: Context) -> dict[str, Any]:
    """The arguments exactly as the client sent them, so unknown ones are refused by name."""
    params = getattr(ctx.request_context, "params", None)
    arguments = params.get("arguments") if isinstance(params, Mapping) else None
    return dict(arguments) if isinstance(arguments, Mapping) else {}


def can_elicit(ctx: Context) -> bool:
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return False
    version = ctx.protocol_version or ""
    if version >= "2026-07-28":
        return True  # asked through InputRequiredResult: works on any transport
    return bool(ctx.session.can_send_request)  # the older era needs a back-channel


def _result(output: BaseModel, sandbox: bool) -> CallToolResult:
    text = render(output)
    if sandbox:
        text = "[SANDBOX cloud] " + text
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=output.model_dump(mode="json", exclude_none=True),
    )


def _error(exc: Exception, sandbox: bool) -> CallToolResult:
    text = str(exc)
    if sandbox:
        text = "[SANDBOX cloud] " + text
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _crash(exc: Exception, tool: str, sandbox: bool) -> CallToolResult:
    """An error that is not ours (a bug, or a library's): one line to the client, never a traceback. The
    server's log gets the same line, and the traceback only with FLEXUS_DEBUG=1."""
    lines = str(exc).strip().splitlines()  # only the first line: a database error goes on with SQL
    line = f"internal error ({type(exc).__name__}): {bounded(lines[0] if lines else '', 300)}"
    debug = os.environ.get("FLEXUS_DEBUG") == "1"
    logging.getLogger("flexus_ops").warning("%s: %s", tool, line, exc_info=exc if debug else None)
    return _error(RuntimeError(line), sandbox)


def _tool_function(registry: Registry, spec: ToolSpec, caller_for: CallerFor) -> Callable[..., Any]:
    sandbox = registry.is_sandbox

    async def question(ctx: Context) -> Question | _NotAsked:
        """Which pending action to ask about: the one an earlier answer consumed (a replay), else a preview's."""
        arguments = raw_arguments(ctx)
        if arguments.get("dry_run") or arguments.get("confirmation_token") or not can_elicit(ctx):
            return NOT_ASKED
        try:
            caller = caller_for(ctx)
            key = answer_key(ctx)
            answered = await registry.action_answered_by(key) if key else None
            if answered is not None:
                # A replayed final request: ask (and so restore) the same question; the gate then answers
                # with the recorded outcome, never a second execution.
                return Question(answered.id, registry.confirmation_question(answered))
            preview = await registry.preview(caller, spec.name, arguments)
            if key and (answered := await registry.action_answered_by(key)) is not None:
                # A replay that raced the first answer: when it looked, the answer was not consumed yet;
                # now that the preview found nothing pending, it is. Same question, recorded outcome.
                return Question(answered.id, registry.confirmation_question(answered))
        except MCPError:
            raise
        except Exception:  # ours or not: the body meets the same error and reports it, in one line
            return NOT_ASKED
        assert preview.preview is not None
        if not preview.preview.runnable:
            return NOT_ASKED  # nothing to ask about: the body returns the preview that says why
        action = await registry.action(preview.preview.action_id)
        assert action is not None
        return Question(action.id, registry.confirmation_question(action))

    async def _withdraw(caller: Caller, asked: Question | _NotAsked) -> None:
        """A "no" closes the preview it answered, so the same question cannot be answered "yes" later."""
        if isinstance(asked, Question):
            with contextlib.suppress(FlexusError):
                await registry.reject(caller, asked.action_id, "declined at the confirmation prompt")

    async def ask(asked: Question | _NotAsked) -> Any:
        if isinstance(asked, Question):
            return Elicit(asked.message, Confirm)
        return NOT_ASKED

    # Real objects, not strings: the SDK reads these hints, and `question` is local to this function.
    ask.__annotations__ = {"asked": Annotated[Question | _NotAsked, Resolve(question)], "return": Any}

    async def tool(ctx: Context, **resolved: Any) -> Any:
        confirmation = resolved.get("confirmation", NOT_ASKED)
        asked = resolved.get("asked", NOT_ASKED)
        arguments = raw_arguments(ctx)

        reported: list[float | None] = [0.0, None]  # the last progress value and total sent

        async def progress(done: float, total: float | None, message: str) -> None:
            reported[:] = [done, total]
            await ctx.report_progress(done, total, message)

        async def retrying(notice: str) -> None:
            if (ctx.protocol_version or "") < "2026-07-28":
                await ctx.warning(notice, logger_name="flexus_ops.cloud")
                return
            # The logging capability is deprecated from 2026-07-28 on: tell it as progress, a hair further
            # on than the last report, since progress must only ever increase.
            reported[0] = (reported[0] or 0.0) + 0.001
            await ctx.report_progress(reported[0], reported[1], notice)

        listening = retry_listener.set(retrying)
        try:
            caller = caller_for(ctx)
            if isinstance(confirmation, AcceptedElicitation) and isinstance(confirmation.data, Confirm):
                if not confirmation.data.confirm:
                    await _withdraw(caller, asked)
                    return _error(Refused("not confirmed: nothing was changed"), sandbox)
                assert isinstance(asked, Question)
                result = await registry.confirm_action(
                    caller, asked.action_id, progress=progress, answer_key=answer_key(ctx)
                )
                output: BaseModel = ChangeOutput(result=result)
            elif spec.gated and not isinstance(confirmation, AcceptedElicitation):
                await _withdraw(caller, asked)
                said = {"decline": "declined", "cancel": "cancelled"}.get(confirmation.action, "did not accept")
                return _error(Refused(f"the user {said} the change: nothing was changed"), sandbox)
            else:
                output = await registry.call(caller, spec.name, arguments, progress=progress)
        except FlexusError as exc:
            return _error(exc, sandbox)
        except MCPError:
            raise  # a protocol-level answer the SDK gives itself (e.g. URL elicitation required)
        except Exception as exc:
            return _crash(exc, spec.name, sandbox)
        finally:
            retry_listener.reset(listening)
            registry.start_housekeeping()  # settling in the background, once the first request is answered
        return _result(output, sandbox)

    # Only the context (and a gated tool's resolvers): the tool reads its arguments as sent (raw_arguments)
    # and the registry validates them, so declaring each field to the SDK only made it parse and validate
    # every argument once more, per call, for nothing. The published inputSchema is set in build_server.
    parameters = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    if spec.gated:
        parameters += [
            inspect.Parameter(
                "asked",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[Question | _NotAsked, Resolve(question)],
            ),
            inspect.Parameter(
                "confirmation",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[ElicitationResult[Confirm], Resolve(ask)],
            ),
        ]
    returns = Annotated[CallToolResult, spec.output_model]
    tool.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    tool.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": returns}
    tool.__name__ = spec.name
    return tool


def build_server(
    registry: Registry,
    caller_for: CallerFor = stdio_caller,
    *,
    auth: AuthSettings | None = None,
    token_verifier: TokenVerifier | None = None,
) -> MCPServer:
    server = MCPServer(
        SERVER_NAME,
        title=SERVER_TITLE,
        version=__version__,
        instructions=instructions(registry.describe_target(), registry.is_read_only),
        request_state_security=RequestStateSecurity(keys=[registry.keys.mcp_state]),
        auth=auth,
        token_verifier=token_verifier,
    )
    for spec in registry.tools():
        server.add_tool(
            _tool_function(registry, spec, caller_for),
            name=spec.name,
            title=spec.title,
            description=spec.description,
            annotations=ToolAnnotations(**spec.annotations),
        )
        registered = server._tool_manager.get_tool(spec.name)  # no public setter for schemas
        assert registered is not None
        registered.parameters = compact_schema(spec.input_model.model_json_schema())
        if registered.fn_metadata.output_schema is not None:
            registered.fn_metadata.output_schema = compact_schema(registered.fn_metadata.output_schema, output=True)
        # Structured content is always the dump of the tool's own output model (_result), so the SDK validating
        # it against that model again, per call, checked nothing. The outputSchema is still published, and
        # clients still validate against it.
        registered.fn_metadata.output_model = None
    add_resources(server, registry, caller_for)
    add_prompts(server, registry)
    add_completions(server, registry, caller_for)
    return server


def tool_catalog(registry: Registry) -> list[dict[str, Any]]:
    """The catalog exactly as ``tools/list`` publishes it (used by ``tools export`` and the snapshot test)."""
    server = build_server(registry)
    tools = server._tool_manager.list_tools()
    return [
        {
            "name": tool.name,
            "title": tool.title,
            "description": tool.description,
            "annotations": tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else {},
            "inputSchema": tool.parameters,
            "outputSchema": tool.output_schema,
        }
        for tool in tools
    ]


def banner(registry: Registry, transport: str, where: str) -> None:
    """Shown only on a terminal: stdout belongs to the protocol."""
    if not sys.stderr.isatty():
        return
    from .gate.store import describe_store

    names = ", ".join(spec.name for spec in registry.tools())
    store = describe_store(registry.settings.resolved_store_url)  # never its password, in the URL or its query
    print(
        f"flexus-ops MCP server {__version__} ({transport}) on {where}\n"
        f"  cloud: {registry.describe_target()}\n"
        f"  tools: {names}\n"
        f"  policy: {registry.policy.source}; store: {store}\n"
        + (
            "  connect a client, e.g. Claude Code:  claude mcp add flexus-ops -- flexus-ops mcp\n"
            "  (this process talks MCP on stdin/stdout; press Ctrl-C to stop)"
            if transport == "stdio"
            else f"  clients connect to {where} with Authorization: Bearer <token>; press Ctrl-C to stop"
        ),
        file=sys.stderr,
    )
