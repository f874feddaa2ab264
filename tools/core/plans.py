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


class Waves(Compact):
    """A rollout in waves: each wave's job finishes and its servers reach the target status before the
    pause and the next wave. Shared by every tool that rolls out (one definition in the catalog)."""

    # Strict: "1" or true is not a wave size (JSON numbers and booleans only), and a pause is finite.
    size: int = Field(ge=1, le=1000, strict=True, description="servers per wave")
    pause_seconds: float = Field(
        0.0, ge=0, le=3600, strict=True, allow_inf_nan=False, description="pause between waves"
    )
    stop_on_failure: bool = Field(True, strict=True, description="send no more waves after one fails")


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
    waves: list[list[str]] | None = Field(None, description="server ids per wave, in order (a rollout)")

    @property
    def acting(self) -> list[PlanItem]:
        return [item for item in self.items if item.act]

    def in_waves(self, waves: Waves | None) -> Plan:
        """This plan as a rollout: only the servers that act are put in waves, in the plan's order."""
        if waves is None:
            return self
        ids = [item.server_id for item in self.acting]
        batches = [ids[start : start + waves.size] for start in range(0, len(ids), waves.size)]
        if len(batches) > 1:
            summary = f"{self.summary}; in {len(batches)} waves of up to {waves.size}"
            if waves.pause_seconds:
                summary += f", {waves.pause_seconds:g} s apart"
            summary += ", stopping at the first failed wave" if waves.stop_on_failure else ", not stopping on failure"
        else:
            summary = self.summary
        return self.model_copy(update={"waves": batches or None, "summary": summary})


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
    outcome: Literal["done", "failed", "skipped", "submitted", "unknown", "not started"]
    detail: str | None = None


WaveState = Literal["waiting", "running", "done", "failed", "not started"]


class WaveReport(Compact):
    """One wave of a rollout as it stands."""

    number: int = Field(description="1 for the first wave")
    servers: list[str]
    state: WaveState = "waiting"
    job_ids: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list, description="its servers that failed or are unknown")
    note: str | None = None


class Rollout(Compact):
    """Where a rollout in waves stands: stored with the action at every wave start and end."""

    waves: list[WaveReport]
    reached: int = Field(0, description="how many waves were sent")
    stopped: str | None = Field(None, description="why the rollout stopped before its last wave")

    @classmethod
    def of(cls, plan: Plan) -> Rollout:
        return cls(waves=[WaveReport(number=n, servers=ids) for n, ids in enumerate(plan.waves or [], 1)])

    @property
    def not_started(self) -> list[str]:
        return [sid for wave in self.waves if wave.state in ("waiting", "not started") for sid in wave.servers]

    def progress_note(self) -> str:
        done = sum(wave.state in ("done", "failed") for wave in self.waves)
        return f"wave {done} of {len(self.waves)} finished" if done else f"wave 1 of {len(self.waves)} running"


class NextCall(Compact):
    """A ready call: preview it to carry on (e.g. the servers a stopped rollout did not reach)."""

    tool: str
    arguments: dict[str, Any]


class ActionResult(Compact):
    """What a confirmed change did, per server."""

    status: Literal[
        "succeeded",
        "failed",
        "partial",
        "submitted",
        "unknown",
        "awaiting_approval",
        "nothing_to_do",
        "running",
        "stopped",
    ]
    action_id: str
    job_ids: list[str] = Field(default_factory=list)
    servers: list[ServerResult] = Field(default_factory=list)
    message: str
    undo: Undo | None = Field(None, description="the call that previews the inverse, or why there is none")
    replay: bool | None = Field(None, description="true: a confirmation used again; nothing was run again")
    rollout: Rollout | None = Field(None, description="a rollout in waves: each wave's state")
    resume: NextCall | None = Field(None, description="preview this call for the servers a stopped rollout left")


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
    rollout: Rollout | None = Field(None, description="a rollout in waves: the wave reached, each wave's state")

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
            rollout=Rollout.model_validate_json(row["rollout_json"]) if row.get("rollout_json") else None,
        )


class ActionReport(Compact):
    """What ``flexus_show_action`` (and ``Registry.show_action``) says about a gated action: who asked,
    the plan, its state, the waves reached and the outcome. Never a secret."""

    action: ActionView
    result: ActionResult | None = Field(None, description="the outcome, once there is one")
