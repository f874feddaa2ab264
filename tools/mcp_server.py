"""The MCP surface: every registry tool, generated, on ``MCPServer`` (mcp 2.x), over stdio or
streamable HTTP. It adds no logic of its own: it asks the human through elicitation when the client
can, and otherwise hands the registry the arguments as they came (a preview, or a token confirmation).
"""

from __future__ import annotations

import copy
import inspect
import sys
from collections.abc import Callable
from typing import Annotated, Any

from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    Elicit,
    ElicitationResult,
    MCPServer,
    RequestStateSecurity,
    Resolve,
)
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from . import __version__
from .cloud.errors import FlexusError
from .config import is_loopback
from .gate.gate import Refused
from .gate.policy import os_principal, token_principal
from .registry.registry import Registry
from .registry.render import plan_text, render
from .registry.spec import Caller, ToolSpec

SERVER_NAME = "flexus-ops"


class Confirm(BaseModel):
    """The one question a person answers before a change runs."""

    confirm: bool = Field(description="Run exactly this plan?")


class _NotAsked:
    """A resolver's answer when no question was asked (dry run, token, or no elicitation)."""


NOT_ASKED = _NotAsked()

CallerFor = Callable[[Context], Caller]


def stdio_caller(_ctx: Context) -> Caller:
    return Caller(principal=os_principal(), surface="mcp")


def http_caller(ctx: Context) -> Caller:
    # The HTTP app's auth middleware has already checked the token against the policy.
    header = (ctx.headers or {}).get("authorization", "")
    if header.lower().startswith("bearer "):
        return Caller(principal=token_principal(header[7:].strip()), surface="mcp-http")
    return Caller(principal=os_principal(), surface="mcp-http")


PUBLISHED_KEYWORDS = {
    "type",
    "properties",
    "items",
    "required",
    "enum",
    "const",
    "default",
    "description",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "anyOf",
    "$ref",
    "$defs",
    "additionalProperties",
}


def compact_schema(schema: dict[str, Any], *, output: bool = False) -> dict[str, Any]:
    """What a model needs to call the tool well, and no more: the catalog is resent on every turn, so
    its size is a cost. Validation still uses the full pydantic models (string lengths, patterns,
    every rule), whose errors name the field and the rule. Output schemas are published one level
    deep: the shape a client checks, not every nested field."""

    def walk(node: Any, depth: int) -> Any:
        if isinstance(node, list):
            return [walk(item, depth) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for name, value in node.items():
            if name not in PUBLISHED_KEYWORDS or (name == "default" and value is None):
                continue
            if output and name in ("description", "additionalProperties", "$defs"):
                continue
            if name == "properties":
                out[name] = {prop: walk(sub, depth + 1) for prop, sub in value.items()}
            else:
                out[name] = walk(value, depth)
        branches = out.get("anyOf")
        if isinstance(branches, list):
            kept = [b for b in branches if b != {"type": "null"}]
            if len(kept) == 1:
                del out["anyOf"]
                out = {**kept[0], **out}
        if output and depth >= 1 and ("$ref" in out or "properties" in out):
            return {"type": "object"}
        if output and depth >= 1 and out.get("type") == "array" and isinstance(out.get("items"), dict):
            out["items"] = {"type": out["items"].get("type", "object")}
        return out

    return walk(copy.deepcopy(schema), 0)


def raw_arguments(ctx: Context, provided: dict[str, Any]) -> dict[str, Any]:
    """The arguments exactly as the client sent them, so unknown ones are refused by name."""
    params = getattr(ctx.request_context, "params", None)
    if isinstance(params, dict) and isinstance(params.get("arguments"), dict):
        return dict(params["arguments"])
    return {name: value for name, value in provided.items() if value is not None}


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


def _tool_function(registry: Registry, spec: ToolSpec, caller_for: CallerFor) -> Callable[..., Any]:
    sandbox = registry.is_sandbox

    async def ask(ctx: Context) -> Any:
        arguments = raw_arguments(ctx, {})
        if arguments.get("dry_run") or arguments.get("confirmation_token") or not can_elicit(ctx):
            return NOT_ASKED
        try:
            preview = await registry.preview(caller_for(ctx), spec.name, arguments)
        except FlexusError:
            return NOT_ASKED  # the body reports the same error through the normal path
        assert preview.preview is not None
        if not preview.preview.runnable:
            return NOT_ASKED  # nothing to ask about: the body returns the preview that says why
        # Deterministic text (no token, no clock): a retried call asks the same question.
        message = plan_text(preview.preview.plan)
        if preview.preview.needs_approval:
            message += "\nAfter you confirm, a second person must approve it."
        return Elicit(message, Confirm)

    async def tool(ctx: Context, **provided: Any) -> Any:
        arguments = raw_arguments(ctx, provided)
        confirmation = provided.pop("confirmation", NOT_ASKED)
        caller = caller_for(ctx)

        async def progress(done: float, total: float | None, message: str) -> None:
            await ctx.report_progress(done, total, message)

        try:
            if isinstance(confirmation, AcceptedElicitation) and isinstance(confirmation.data, Confirm):
                if not confirmation.data.confirm:
                    return _error(Refused("not confirmed: nothing was changed"), sandbox)
                output = await registry.call(caller, spec.name, arguments, human_confirmed=True, progress=progress)
            elif spec.gated and not isinstance(confirmation, AcceptedElicitation):
                return _error(Refused(f"the user {confirmation.action}d the change: nothing was changed"), sandbox)
            else:
                output = await registry.call(caller, spec.name, arguments, progress=progress)
        except FlexusError as exc:
            return _error(exc, sandbox)
        return _result(output, sandbox)

    parameters = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    parameters += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Any)
        for name in spec.input_model.model_fields
    ]
    if spec.gated:
        parameters.append(
            inspect.Parameter(
                "confirmation",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[ElicitationResult[Confirm], Resolve(ask)],
            )
        )
    returns = Annotated[CallToolResult, spec.output_model]
    tool.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    tool.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": returns}
    tool.__name__ = spec.name
    return tool


def build_server(registry: Registry, caller_for: CallerFor = stdio_caller) -> MCPServer:
    target = registry.describe_target()
    mode = " Read-only mode: only read tools are offered." if registry.is_read_only else ""
    server = MCPServer(
        SERVER_NAME,
        title="Flexus L operations",
        version=__version__,
        instructions=(
            f"Operate Huawei Cloud Flexus L servers. Target: {target}.{mode} Changes are previewed first and "
            "run only after the user confirms; password resets also need a second person's approval. "
            "Name servers by id or exact name."
        ),
        request_state_security=RequestStateSecurity(keys=[registry.keys.mcp_state]),
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
    names = ", ".join(spec.name for spec in registry.tools())
    print(
        f"flexus-ops MCP server {__version__} ({transport}) on {where}\n"
        f"  cloud: {registry.describe_target()}\n"
        f"  tools: {names}\n"
        f"  policy: {registry.policy.source}; store: {registry.settings.resolved_store_url}\n"
        "  connect a client, e.g. Claude Code:  claude mcp add flexus-ops -- flexus-ops mcp\n"
        "  (this process talks MCP on stdin/stdout; press Ctrl-C to stop)",
        file=sys.stderr,
    )


class BearerAuth:
    """HTTP auth for the MCP endpoint: a bearer token whose hash a person in the policy holds.

    With no token configured in the policy, only loopback serving is allowed, and requests act as
    the OS user who started the server (it is their machine)."""

    def __init__(self, app: Any, registry: Registry, *, anonymous_local: bool) -> None:
        self.app = app
        self.registry = registry
        self.anonymous_local = anonymous_local

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.lower(): value for key, value in scope.get("headers", [])}
        header = headers.get(b"authorization", b"").decode("latin-1")
        if header.lower().startswith("bearer "):
            known = self.registry.policy.person_for(token_principal(header[7:].strip())) is not None
        else:
            known = self.anonymous_local
        if not known:
            body = b'{"error": "unauthorized: send Authorization: Bearer <token> for a person in the policy"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def http_app(registry: Registry, host: str, port: int, allowed_origins: list[str] | None = None) -> Any:
    """The streamable HTTP app: stateless (any replica answers any request), SSE responses (so progress
    notifications flow), host/origin allow-list against DNS rebinding, bearer auth in front."""
    from mcp.server.transport_security import TransportSecuritySettings

    has_tokens = any(p.startswith("mcp-token:") for person in registry.policy.people for p in person.principals)
    if not has_tokens and not is_loopback(host):
        raise ValueError(
            f"refusing to serve MCP on {host} without authentication: add an 'mcp-token:' principal to the "
            "policy (flexus-ops token new --person ID), or bind to 127.0.0.1"
        )
    hosts = [f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}"]
    origins = allowed_origins or [f"http://{h}" for h in hosts]
    server = build_server(registry, caller_for=http_caller)
    app = server.streamable_http_app(
        stateless_http=True,
        json_response=False,
        host=host,
        transport_security=TransportSecuritySettings(allowed_hosts=hosts, allowed_origins=origins),
    )
    return BearerAuth(app, registry, anonymous_local=not has_tokens)
