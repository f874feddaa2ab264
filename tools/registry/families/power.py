"""Start, stop and reboot: one batch call per 1,000 servers, each job followed to the end, each server reported."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from ...cloud.models import ServerDetail
from ...core.plans import ActionResult, ChangeOutput, Plan, PlanItem, ServerResult
from ...core.tools import Execution, Safety, ToolContext, ToolSpec
from ..inputs import (
    PowerInput,
    RebootServersInput,
    StartServersInput,
    StopServersInput,
)
from ..targets import resolve_servers, servers_by_id, target_servers
from ..undo import offering_undo, original, reached_servers

if TYPE_CHECKING:
    from ...cloud.client import FlexusClient

from .shared import (
    FROZEN_NOTE,
    GATED_NOTE,
    SELECT_NOTE,
    JobProgress,
    nothing_to_do,
    overall_status,
    plan_item,
    server_outcomes,
    summary,
)

# -- power actions ----------------------------------------------------------------------------

PowerAction = Literal["start", "stop", "reboot"]


PREPAID_STOP_NOTE = "; prepaid: still billed while stopped"


def power_item(server: ServerDetail, action: PowerAction, kind: str) -> PlanItem:
    status = server.status
    if server.locked:
        return plan_item(server, False, "locked: the cloud would refuse it; skipped")
    if server.frozen:
        return plan_item(server, False, FROZEN_NOTE)
    if server.task_state:
        return plan_item(server, False, f"busy ({server.task_state}); skipped, try again when it finishes")
    if action == "start":
        if status == "SHUTOFF":
            return plan_item(server, True, "will start")
        if status == "ACTIVE":
            return plan_item(server, False, "already ACTIVE; nothing to do")
        return plan_item(server, False, f"is {status}; only a SHUTOFF server can start")
    if action == "stop":
        if status == "ACTIVE":
            billed = PREPAID_STOP_NOTE if server.billing == "prepaid" else ""
            return plan_item(server, True, f"will stop ({kind}){billed}")
        if status == "SHUTOFF":
            return plan_item(server, False, "already SHUTOFF; nothing to do")
        return plan_item(server, False, f"is {status}; only an ACTIVE server can stop")
    if status == "ACTIVE":
        return plan_item(server, True, f"will reboot ({kind})")
    if status == "SHUTOFF":
        return plan_item(server, False, "is SHUTOFF; start it instead of rebooting")
    return plan_item(server, False, f"is {status}; only an ACTIVE server can reboot")


def _power_plan(action: PowerAction) -> Any:
    tool = f"flexus_{action}_servers"

    async def plan(ctx: ToolContext, args: PowerInput) -> Plan:
        kind = getattr(args, "type", "SOFT")
        undo_of: str | None = getattr(args, "undo_of", None)
        if undo_of is not None:
            ids = reached_servers(await original(ctx, undo_of, tool))
            servers = await resolve_servers(ctx.client, ids, field="undo_of")
            scope = f" (the undo of {undo_of})"
        else:
            servers = await target_servers(ctx.client, args)
            scope = f" matching {args.select.describe()}" if args.select is not None else ""
        items = [power_item(server, action, kind) for server in servers]
        changes = {"type": kind} if action != "start" else {}
        if not items and args.select is not None:
            said = f"nothing matched {args.select.describe()}"
        else:
            said = summary(action, items) + scope
        return Plan(tool=tool, summary=said, items=items, changes=changes)

    return plan


def _power_execute(action: PowerAction) -> Any:
    async def execute(ctx: ToolContext, args: PowerInput, execution: Execution) -> ActionResult:
        acting = execution.plan.acting
        names = {item.server_id: item.name for item in execution.plan.items}
        if not acting:
            return nothing_to_do(execution, "nothing to do: no server is in a state this action applies to")
        ids = [item.server_id for item in acting]
        client: FlexusClient = ctx.client
        if action == "start":
            submission = await client.batch_start(ids)
        elif action == "stop":
            submission = await client.batch_stop(ids, type=getattr(args, "type", "SOFT"))
        else:
            submission = await client.batch_reboot(ids, type=getattr(args, "type", "SOFT"))
        await execution.record_jobs(submission.job_ids)
        results: dict[str, ServerResult] = {}
        for chunk in submission.failed:
            detail = f"{chunk.code}: {chunk.message}"
            outcome: Literal["failed", "unknown"] = "unknown" if chunk.may_have_applied else "failed"
            for sid in chunk.server_ids:
                results[sid] = ServerResult(server_id=sid, name=names.get(sid), outcome=outcome, detail=detail)
        if not args.wait:
            for job in submission.jobs:
                for sid in job.server_ids:
                    results[sid] = ServerResult(
                        server_id=sid, name=names.get(sid), outcome="submitted", detail=job.job_id
                    )
        else:
            tracker = JobProgress(ctx, total=len(ids))
            for job_result in await client.wait_for_jobs(submission.job_ids, on_progress=tracker.update):
                for o in job_result.servers:
                    detail = None
                    if o.status != "SUCCESS":
                        detail = " ".join(part for part in (o.error_code, o.fail_reason) if part) or o.status
                    results[o.server_id] = ServerResult(
                        server_id=o.server_id,
                        name=names.get(o.server_id),
                        outcome="done" if o.status == "SUCCESS" else "failed",
                        detail=detail,
                    )
        outcomes = server_outcomes(execution, results)
        status = overall_status(outcomes)
        counts = {kind: sum(o.outcome == kind for o in outcomes) for kind in ("done", "failed", "skipped", "submitted")}
        message = f"{action}: " + ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        return ActionResult(
            status=status, action_id=execution.action_id, job_ids=submission.job_ids, servers=outcomes, message=message
        )

    return execute


def _after(timestamp: str | None, since: float) -> bool:
    if not timestamp:
        return False
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() >= since - 1
    except ValueError:
        return False


def _power_observe(action: PowerAction) -> Any:
    async def observe(ctx: ToolContext, args: PowerInput, plan: Plan, since: float) -> dict[str, str]:
        acting = [item.server_id for item in plan.acting]
        if not acting:
            return {}
        seen: dict[str, str] = {}
        for server in await servers_by_id(ctx.client, acting):
            if action == "stop":
                applied = server.status == "SHUTOFF" or server.task_state == "powering-off"
            elif action == "start":
                applied = server.status == "ACTIVE" or server.task_state == "powering-on"
            else:  # a finished reboot looks like before; its trace is the update time
                applied = server.status in ("REBOOT", "HARD_REBOOT") or _after(server.updated, since)
            seen[server.id] = "applied" if applied else "not applied"
        return seen

    return observe


def _power_tool(
    action: PowerAction, input_model: type[PowerInput], safety: Safety, *, idempotent: bool, description: str
) -> ToolSpec:
    """The three power actions differ only in their words, their safety class and the API call."""
    return ToolSpec(
        name=f"flexus_{action}_servers",
        title=f"{action.capitalize()} servers",
        description=description + SELECT_NOTE + GATED_NOTE,
        input_model=input_model,
        output_model=ChangeOutput,
        safety=safety,
        idempotent=idempotent,
        plan=_power_plan(action),
        execute=offering_undo(f"flexus_{action}_servers", _power_execute(action)),
        observe=_power_observe(action),
    )


START = _power_tool(
    "start",
    StartServersInput,
    Safety.CHANGE,
    idempotent=True,
    description="Start SHUTOFF servers and report each server.",
)

STOP = _power_tool(
    "stop",
    StopServersInput,
    Safety.DESTRUCTIVE,
    idempotent=True,
    description="Stop ACTIVE servers, SOFT (clean) or HARD (forced), and report each server.",
)

REBOOT = _power_tool(
    "reboot",
    RebootServersInput,
    Safety.DESTRUCTIVE,
    idempotent=False,
    description="Reboot ACTIVE servers, SOFT or HARD, and report each server.",
)
