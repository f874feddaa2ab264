"""A parsed request, answered by the registry: the call (a read, a preview, the approvals list) and what
came back, for a surface to render. The registry and its gate do the work and decide; this module only
picks the call and shapes the answer, the same for every chat surface.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from flexus_ops.core.plans import Preview
from flexus_ops.core.tools import Caller
from flexus_ops.gate.policy import Person, Role
from flexus_ops.registry.registry import Registry

from .parse import ApprovalsRequest, ChangeRequest, ReadRequest


@dataclass(frozen=True)
class Read:
    """A read tool's output, with the arguments it was asked with (a listing names its filters)."""

    output: BaseModel
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Previewed:
    """The gate's preview of a change: nothing has run; the requester confirms it (or not)."""

    preview: Preview
    tool: str
    title: str


@dataclass(frozen=True)
class ApprovalItem:
    """One approval request waiting, as a chat lists it."""

    action_id: str
    tool: str
    title: str
    requested_by: str  # the person's id in the policy; the surface turns it into a mention
    yours: bool
    expires_at: float
    servers: list[str]
    reason: str | None


@dataclass(frozen=True)
class Approvals:
    items: list[ApprovalItem]
    can_approve: bool  # approvers get Approve / Reject on others' requests; everyone can withdraw their own


Answer = Read | Previewed | Approvals


def title_of(registry: Registry, tool: str) -> str:
    spec = registry.specs.get(tool)
    return spec.title if spec else tool


def _targets_said(arguments: dict[str, Any]) -> list[str]:
    """A request that names no server list: its selection, or the change it undoes."""
    selection = arguments.get("select")
    if isinstance(selection, dict):
        return ["selected by " + " ".join(f"{key}={value}" for key, value in selection.items() if value is not None)]
    if arguments.get("undo_of"):
        return [f"the undo of {arguments['undo_of']}"]
    return [arguments.get("server", "?")]


def approval_items(registry: Registry, rows: list[dict[str, Any]]) -> list[ApprovalItem]:
    """The registry's pending approvals, with each request's servers read from its arguments."""
    items = []
    for row in rows:
        try:
            arguments = json.loads(row["arguments"])
        except (TypeError, ValueError):
            arguments = {}
        servers = arguments.get("servers") or _targets_said(arguments)
        items.append(
            ApprovalItem(
                action_id=row["action_id"],
                tool=row["tool"],
                title=title_of(registry, row["tool"]),
                requested_by=row["requested_by"],
                yours=bool(row["yours"]),
                expires_at=row["expires_at"],
                servers=[str(server) for server in servers],
                reason=row["reason"],
            )
        )
    return items


async def answer_for(
    registry: Registry, caller: Caller, person: Person, request: ReadRequest | ChangeRequest | ApprovalsRequest
) -> Answer:
    """The registry does the work; a refusal or a cloud failure propagates as the registry raised it."""
    if isinstance(request, ApprovalsRequest):
        await registry.settle_briefly()  # outcomes settled first, so a finished run is not listed as waiting
        rows = await registry.pending_approvals(caller)
        return Approvals(approval_items(registry, rows), person.has(Role.APPROVER))
    if isinstance(request, ChangeRequest):
        output = await registry.preview(caller, request.tool, request.arguments)
        assert output.preview is not None  # a preview call always answers with a preview
        return Previewed(output.preview, request.tool, title_of(registry, request.tool))
    return Read(await registry.call(caller, request.tool, request.arguments), request.arguments)
