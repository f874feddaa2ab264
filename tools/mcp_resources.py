"""MCP resources and completions: the read tools' answers addressable by URI, and suggestions for a
half-typed server name, id or tag. Like the tools, they go through the registry (who may read, what is
offered); this module only maps URIs and references onto it."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    PromptReference,
    ResourceTemplateReference,
)

from .core.errors import FlexusError
from .core.tools import Caller
from .registry.completions import Kind
from .registry.registry import Registry

CallerFor = Callable[[Context], Caller]

SERVER_URI = "flexus://servers/{server}"
JOB_URI = "flexus://jobs/{job_id}"
ACTION_URI = "flexus://actions/{action_id}"

# (URI template, the read tool behind it, the argument its variable fills, title, description)
TEMPLATES = (
    (SERVER_URI, "flexus_show_server", "server", "Server", "One server's summary, by id or exact name."),
    (JOB_URI, "flexus_show_job", "job_id", "Job", "A cloud job: its type, times and each server's outcome."),
    (
        ACTION_URI,
        "flexus_show_action",
        "action_id",
        "Gated action",
        "A gated change: its plan, state, waves reached and outcome (its requester, approvers and admins only).",
    ),
)

# Which completion kind fills which argument, wherever it appears (a resource template or a prompt).
ARGUMENT_KINDS: dict[str, Kind] = {"server": "server", "name_prefix": "name", "tag": "tag"}


def _reader(registry: Registry, caller_for: CallerFor, tool: str, argument: str) -> Callable[..., Any]:
    async def read(ctx: Context, **values: str) -> str:
        try:
            output = await registry.call(caller_for(ctx), tool, {argument: values[argument]})
        except FlexusError as exc:  # the caller's mistake or a refusal, said as the tool would say it
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
        document = output.model_dump(mode="json", exclude_none=True)
        if registry.is_sandbox:
            document = {"cloud": "SANDBOX", **document}
        return json.dumps(document, separators=(",", ":"))

    # The SDK matches the URI's variable to a parameter of that name, and finds Context by annotation.
    parameters = [
        inspect.Parameter(argument, inspect.Parameter.KEYWORD_ONLY, annotation=str),
        inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context),
    ]
    read.__signature__ = inspect.Signature(parameters, return_annotation=str)  # type: ignore[attr-defined]
    read.__annotations__ = {argument: str, "ctx": Context, "return": str}
    read.__name__ = tool.removeprefix("flexus_")
    return read


def add_resources(server: MCPServer, registry: Registry, caller_for: CallerFor) -> None:
    """One resource template per read tool that answers by a single key, if the deployment offers it."""
    offered = {spec.name for spec in registry.tools()}
    target = "sandbox cloud" if registry.is_sandbox else registry.describe_target()
    for uri, tool, argument, title, description in TEMPLATES:
        if tool not in offered:
            continue
        server.resource(uri, title=title, description=f"{description} ({target})", mime_type="application/json")(
            _reader(registry, caller_for, tool, argument)
        )


def _argument_kind(ref: ResourceTemplateReference | PromptReference, argument: str) -> Kind | None:
    if isinstance(ref, ResourceTemplateReference) and ref.uri != SERVER_URI:
        return None  # job and action ids are not guessable from the fleet
    return ARGUMENT_KINDS.get(argument)


def add_completions(server: MCPServer, registry: Registry, caller_for: CallerFor) -> None:
    """Completions for server names and ids and for tags, from the registry's short-lived fleet index."""

    async def complete(request: Any, params: CompleteRequestParams) -> CompleteResult:
        kind = _argument_kind(params.ref, params.argument.name)
        if kind is None:
            return CompleteResult(completion=Completion(values=[], total=0, has_more=False))
        ctx = Context(request_context=request, mcp_server=server)
        try:
            found = await registry.complete(caller_for(ctx), kind, params.argument.value)
        except FlexusError as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
        return CompleteResult(completion=Completion(values=found.values, total=found.total, has_more=found.has_more))

    # The SDK's decorator hides the request context, and without it there is no caller to authorise.
    server._lowlevel_server.add_request_handler("completion/complete", CompleteRequestParams, complete)
