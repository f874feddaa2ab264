"""Start, stop and reboot: one batch call per 1,000 servers, each job followed to the end, each server reported."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from ...cloud import rules
from ...cloud.models import JobPoll, ServerDetail
from ...core.errors import FlexusError, JobTimeout, TransportError, bounded
from ...core.plans import ActionResult, ChangeOutput, Plan, PlanItem, ServerResult, WaveReport
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
    job_outcome,
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
        return Plan(tool=tool, summary=said, items=items, changes=changes).in_waves(args.waves)

    return plan


TARGET_STATUS: dict[str, str] = {"start": "ACTIVE", "stop": "SHUTOFF", "reboot": "ACTIVE"}
"""Where a server must be before the next wave of a rollout is sent."""


async def _submit(client: FlexusClient, action: PowerAction, ids: list[str], kind: str) -> Any:
    if action == "start":
        return await client.batch_start(ids)
    if action == "stop":
        return await client.batch_stop(ids, type=kind)  # type: ignore[arg-type]
    return await client.batch_reboot(ids, type=kind)  # type: ignore[arg-type]


async def _read(ctx: ToolContext, ids: list[str]) -> dict[str, ServerDetail]:
    page = await ctx.client.list_servers(server_id=ids, limit=rules.MAX_PAGE_SIZE) if ids else None
    return {server.id: server for server in page.servers} if page is not None else {}


def _changed_since_plan(
    action: PowerAction, kind: str, planned: list[PlanItem], now: dict[str, ServerDetail]
) -> list[str]:
    """A wave's servers as the cloud showed them just now, against the plan: what no longer matches."""
    changed = []
    for item in planned:
        server = now.get(item.server_id)
        if server is None:
            changed.append(f"{item.name or item.server_id}: gone")
            continue
        seen = power_item(server, action, kind)
        if (seen.status, seen.task, seen.locked, seen.act) != (item.status, item.task, item.locked, item.act):
            task = f" ({seen.task})" if seen.task else ""
            changed.append(f"{item.name or item.server_id}: was {item.status}, now {seen.status}{task}")
    return changed


async def _await_status(
    ctx: ToolContext, ids: list[str], target: str, limit: float, upcoming: list[str]
) -> tuple[set[str], dict[str, ServerDetail] | None]:
    """Poll until every server of ``ids`` shows ``target`` with no task in progress. Returns the ones that
    never did, and the ``upcoming`` wave's servers as the last read showed them (one read for both,
    when they fit in a page), so the next wave is checked against the plan without a read of its own."""
    interval = ctx.client.settings.job_poll_seconds
    deadline = time.monotonic() + limit
    waiting = set(ids)
    together = len(ids) + len(upcoming) <= rules.MAX_PAGE_SIZE
    seen_upcoming: dict[str, ServerDetail] | None = None
    while True:
        read = await _read(ctx, sorted(waiting) + (upcoming if together else []))
        if together and upcoming:
            seen_upcoming = {sid: read[sid] for sid in upcoming if sid in read}
        waiting -= {sid for sid in waiting if (s := read.get(sid)) and s.status == target and not s.task_state}
        if not waiting or time.monotonic() + interval > deadline:
            return waiting, seen_upcoming
        await asyncio.sleep(interval)
        interval = min(interval * 1.5, ctx.client.settings.job_poll_max_seconds)


class WaveProgress:
    """A wave's job polls as progress over the whole rollout: "wave 2 of 10: 40 of 100 servers done"."""

    def __init__(self, ctx: ToolContext, wave: WaveReport, waves: int, before: int, total: int) -> None:
        self.ctx, self.wave, self.waves, self.before, self.total = ctx, wave, waves, before, total
        self.done: dict[str, int] = {}

    async def update(self, poll: JobPoll) -> None:
        self.done[poll.job_id] = poll.sub_jobs_done
        done, size = sum(self.done.values()), len(self.wave.servers)
        if 0 < done < size:  # the wave's end is reported once its servers are at the target status
            note = f"wave {self.wave.number} of {self.waves}: {done} of {size} servers done"
            await self.ctx.progress(self.before + done, self.total, note)


async def _roll_out(ctx: ToolContext, args: PowerInput, execution: Execution, action: PowerAction) -> ActionResult:
    """Wave by wave: each wave's servers are re-read against the plan, sent, followed to the end of
    their job and to the target status, before the pause and the next wave. Nothing after a failed
    wave is sent (with stop_on_failure), nor after this process is told to stop."""
    assert execution.rollout is not None and args.waves is not None
    rollout, waves = execution.rollout, args.waves
    kind = getattr(args, "type", "SOFT")
    items = {item.server_id: item for item in execution.plan.items}
    results: dict[str, ServerResult] = {}
    total = sum(len(wave.servers) for wave in rollout.waves)
    finished = 0
    job_ids: list[str] = []
    upcoming: dict[str, ServerDetail] | None = None  # the next wave's servers, as last read

    def outcome(sid: str, kind_: Any, detail: str | None = None) -> None:
        results[sid] = ServerResult(server_id=sid, name=items[sid].name, outcome=kind_, detail=detail)

    for wave in rollout.waves:
        if wave.number > 1:
            await execution.pause(waves.pause_seconds)
        if execution.stopping:
            rollout.stopped = f"stopped before wave {wave.number}: this process is shutting down"
            break
        # The first wave was checked by the gate just now (the plan re-read at confirmation or approval);
        # each later one against the servers as read when the previous wave ended (again after a pause).
        if wave.number > 1 and (upcoming is None or waves.pause_seconds > 0):
            upcoming = await _read(ctx, wave.servers)
        planned = [items[sid] for sid in wave.servers]
        changed = _changed_since_plan(action, kind, planned, upcoming) if upcoming is not None else []
        upcoming = None
        if changed:
            rollout.stopped = f"stopped before wave {wave.number}: its servers changed since the preview: " + "; ".join(
                changed
            )
            break
        # Recorded before sending: a crash from here on is settled by observing this wave, never re-sent.
        wave.state, rollout.reached = "running", wave.number
        if not await execution.record_wave("wave_started", wave):
            rollout.stopped = f"stopped before wave {wave.number}: this process lost the execution's lease"
            break
        try:
            submission = await _submit(ctx.client, action, wave.servers, kind)
        except FlexusError as exc:
            maybe = isinstance(exc, JobTimeout) or (isinstance(exc, TransportError) and exc.may_have_applied)
            for sid in wave.servers:
                outcome(sid, "unknown" if maybe else "failed", bounded(str(exc), 200))
            if maybe:  # it may have been applied: the wave stays in flight, settled from the cloud
                wave.note = f"outcome unknown: {bounded(str(exc), 200)}"
            else:
                wave.state, wave.failed, wave.note = "failed", list(wave.servers), f"refused: {bounded(str(exc), 200)}"
            await execution.record_wave("wave_unknown" if maybe else "wave_finished", wave)
            break
        wave.job_ids = submission.job_ids
        job_ids += submission.job_ids
        # Recorded while the job is polled: the record and the first poll need not wait for each other.
        submitted = asyncio.ensure_future(execution.record_wave("wave_submitted", wave))
        for chunk in submission.failed:
            for sid in chunk.server_ids:
                outcome(sid, "unknown" if chunk.may_have_applied else "failed", f"{chunk.code}: {chunk.message}")
        ok: list[str] = []
        tracker = WaveProgress(ctx, wave, len(rollout.waves), finished, total)
        try:
            for job_result in await ctx.client.wait_for_jobs(submission.job_ids, on_progress=tracker.update):
                for o in job_result.servers:
                    said, detail = job_outcome(o, job_result)
                    if said == "done":
                        ok.append(o.server_id)
                    else:  # failed, or waiting for payment: either way this wave did not finish
                        outcome(o.server_id, said, detail)
            target = TARGET_STATUS[action]
            following = rollout.waves[wave.number].servers if wave.number < len(rollout.waves) else []
            late, upcoming = await _await_status(ctx, ok, target, ctx.client.settings.job_wait_seconds, following)
            for sid in late:
                outcome(sid, "failed", f"its job succeeded but it did not reach {target}")
        except (TransportError, JobTimeout) as exc:
            for sid in wave.servers:
                results.setdefault(sid, ServerResult(server_id=sid, name=items[sid].name, outcome="unknown"))
            wave.note = f"outcome unknown: {bounded(str(exc), 200)}"
        finally:
            await submitted  # the store holds "submitted" before it is told "finished"
        for sid in wave.servers:
            results.setdefault(sid, ServerResult(server_id=sid, name=items[sid].name, outcome="done"))
        bad = [sid for sid in wave.servers if results[sid].outcome != "done"]
        if any(results[sid].outcome == "unknown" for sid in wave.servers):
            # Not known to have ended: the wave stays in flight for the settler, and nothing more is sent.
            wave.failed = bad
            await execution.record_wave("wave_unknown", wave)
            break
        wave.state, wave.failed = ("failed" if bad else "done"), bad
        if bad:
            wave.note = f"{len(bad)} of {len(wave.servers)} failed"
        await execution.record_wave("wave_finished", wave)
        finished += len(wave.servers)
        await ctx.progress(finished, total, f"wave {wave.number} of {len(rollout.waves)} {wave.state}")
        if bad and waves.stop_on_failure:
            if wave.number < len(rollout.waves):
                rollout.stopped = f"stopped after wave {wave.number}: {wave.note}"
            break
    in_flight = next((wave for wave in rollout.waves if wave.state == "running"), None)
    if in_flight is not None:
        rollout.stopped = (
            f"stopped at wave {in_flight.number}: {in_flight.note}; flexus-ops settles it from the cloud, "
            "and sends nothing more"
        )
    for wave in rollout.waves:
        if wave.state == "waiting":
            wave.state = "not started"
            for sid in wave.servers:
                outcome(sid, "not started", rollout.stopped)
    outcomes = server_outcomes(execution, results)
    status = "unknown" if in_flight is not None else "stopped" if rollout.stopped else overall_status(outcomes)
    counts = {k: sum(o.outcome == k for o in outcomes) for k in ("done", "failed", "unknown", "not started", "skipped")}
    message = f"{action} in {len(rollout.waves)} waves: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    if rollout.stopped:
        message += f". {rollout.stopped}"
    return ActionResult(
        status=status,  # type: ignore[arg-type]
        action_id=execution.action_id,
        job_ids=job_ids,
        servers=outcomes,
        message=message,
        rollout=rollout,
    )


def _power_execute(action: PowerAction) -> Any:
    async def execute(ctx: ToolContext, args: PowerInput, execution: Execution) -> ActionResult:
        acting = execution.plan.acting
        names = {item.server_id: item.name for item in execution.plan.items}
        if not acting:
            return nothing_to_do(execution, "nothing to do: no server is in a state this action applies to")
        if execution.rollout is not None:
            return await _roll_out(ctx, args, execution, action)
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
        if args.wait is False:
            for job in submission.jobs:
                for sid in job.server_ids:
                    results[sid] = ServerResult(
                        server_id=sid, name=names.get(sid), outcome="submitted", detail=job.job_id
                    )
        else:
            tracker = JobProgress(ctx, total=len(ids))
            for job_result in await client.wait_for_jobs(submission.job_ids, on_progress=tracker.update):
                for o in job_result.servers:
                    said, detail = job_outcome(o, job_result)
                    results[o.server_id] = ServerResult(
                        server_id=o.server_id, name=names.get(o.server_id), outcome=said, detail=detail
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
    description="Start SHUTOFF servers.",
)

STOP = _power_tool(
    "stop",
    StopServersInput,
    Safety.DESTRUCTIVE,
    idempotent=True,
    description="Stop ACTIVE servers, SOFT (clean) or HARD (forced).",
)

REBOOT = _power_tool(
    "reboot",
    RebootServersInput,
    Safety.DESTRUCTIVE,
    idempotent=False,
    description="Reboot ACTIVE servers, SOFT or HARD.",
)
