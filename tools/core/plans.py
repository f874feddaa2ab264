"""What the gate and the tools exchange about a change: its plan (per server, in its current state), the
preview a person confirms, and the result of the confirmed change. On the ground floor: the gate, the
registry and every surface read and write these."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .states import ActionState


class Compact(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanItem(Compact):
    """What will happen to one server, in its current state."""

    server_id: str
    name: str | None = None
    status: str | None = None
    task: str | None = None
    locked: bool | None = None
    act: bool = Field(description="true when the call will act on this server")
    note: str = Field(description="what will happen, or why nothing will")


class Plan(Compact):
    tool: str
    summary: str
    items: list[PlanItem]
    changes: dict[str, Any] = Field(default_factory=dict, description="fields to change (update)")

    @property
    def acting(self) -> list[PlanItem]:
        return [item for item in self.items if item.act]


class Preview(Compact):
    """A dry run: nothing was changed. Confirm with the token (or through the client's prompt)."""

    status: Literal["preview"] = "preview"
    action_id: str
    plan: Plan
    confirmation_token: str | None = Field(None, description="send back with the same arguments to confirm")
    expires_at: str
    needs_approval: bool = False
    runnable: bool = Field(description="false when nothing would act, or no approver could approve it")
    next_step: str


class Undo(Compact):
    """The inverse of a finished change as a ready call (preview it: it is a change like any other), or,
    without a tool, why there is none."""

    tool: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    note: str


class ServerResult(Compact):
    server_id: str
    name: str | None = None
    outcome: Literal["done", "failed", "skipped", "submitted", "unknown"]
    detail: str | None = None


class ActionResult(Compact):
    """What a confirmed change did, per server."""

    status: Literal["succeeded", "failed", "partial", "submitted", "unknown", "awaiting_approval", "nothing_to_do"]
    action_id: str
    job_ids: list[str] = Field(default_factory=list)
    servers: list[ServerResult] = Field(default_factory=list)
    message: str
    undo: Undo | None = Field(None, description="the call that previews the inverse, or why there is none")
    replay: bool | None = Field(None, description="true: a confirmation used again; nothing was run again")


class ChangeOutput(Compact):
    """A gated tool returns either a preview (nothing changed yet) or the result of the confirmed change."""

    preview: Preview | None = None
    result: ActionResult | None = None


class ActionView(Compact):
    """A gated action as surfaces see it: its plan parsed, its arguments as previewed (secrets hidden),
    never its encrypted secrets. Surfaces read this, not the store's rows."""

    id: str
    tool: str
    person: str
    principal: str
    state: ActionState
    plan: Plan
    arguments: dict[str, Any]
    needs_approval: bool
    reason: str | None = None
    created_at: float
    expires_at: float
    updated_at: float
    confirmed_via: str | None = None
    decided_by: str | None = None
    decided_at: float | None = None
    decision_note: str | None = None
    executed_by: str | None = None
    job_ids: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, row: dict[str, Any]) -> ActionView:
        return cls(
            id=row["id"],
            tool=row["tool"],
            person=row["person"],
            principal=row["principal"],
            state=row["state"],
            plan=Plan.model_validate_json(row["plan_json"]),
            arguments=json.loads(row["args_json"]),
            needs_approval=bool(row["needs_approval"]),
            reason=row["reason"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            updated_at=row["updated_at"],
            confirmed_via=row["confirmed_via"],
            decided_by=row["decided_by"],
            decided_at=row["decided_at"],
            decision_note=row["decision_note"],
            executed_by=row["executed_by"],
            job_ids=json.loads(row["job_ids"]) if row["job_ids"] else [],
        )
