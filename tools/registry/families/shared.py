"""What the change families share: plan items, per-server outcomes, a change's overall status, and
job progress for the surfaces ("n of N servers done")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ...cloud.models import JobPoll, JobResult, ServerDetail, ServerOutcome
from ...core.plans import ActionResult, PlanItem, ServerResult
from ...core.tools import Execution, ToolContext

if TYPE_CHECKING:
    pass


GATED_NOTE = " Gated: the first call returns a preview per server; nothing changes until a human confirms."

SELECT_NOTE = " Prefer select to listing servers."
FROZEN_NOTE = "frozen by the cloud (EcmResStatus freeze): it would refuse it; skipped"


def job_outcome(server: ServerOutcome, job: JobResult) -> tuple[Literal["done", "failed", "submitted"], str | None]:
    """What a finished job says of one server: done, failed (with the cloud's reason), or, for a job that
    stopped waiting without ending (PENDING_PAYMENT), still submitted, with what the job's status means."""
    if server.status == "SUCCESS":
        return "done", None
    if server.status == "FAIL":
        return "failed", " ".join(part for part in (server.error_code, server.fail_reason) if part) or "FAIL"
    return "submitted", f"{job.status}: {job.meaning}" if job.meaning else job.status


def plan_item(server: ServerDetail, act: bool, note: str) -> PlanItem:
    return PlanItem(
        server_id=server.id,
        name=server.name,
        status=server.status,
        task=server.task_state,
        locked=server.locked,
        act=act,
        note=note,
    )


def summary(tool_verb: str, items: list[PlanItem]) -> str:
    acting = sum(item.act for item in items)
    skipped = len(items) - acting
    text = f"{tool_verb} {acting} of {len(items)} server(s)"
    return text + (f"; {skipped} skipped (see notes)" if skipped else "")


class JobProgress:
    """Turns job polls into "n of N servers done" progress for the surface."""

    def __init__(self, ctx: ToolContext, total: int | None) -> None:
        self._ctx = ctx
        self._total = total
        self._done: dict[str, int] = {}

    async def update(self, poll: JobPoll) -> None:
        self._done[poll.job_id] = poll.sub_jobs_done
        done = sum(self._done.values())
        total = self._total if self._total is not None else poll.sub_jobs_total or poll.sub_jobs_seen or None
        await self._ctx.progress(done, total, f"{done} of {total or '?'} servers done")


def server_outcomes(execution: Execution, results: dict[str, ServerResult]) -> list[ServerResult]:
    ordered: list[ServerResult] = []
    for item in execution.plan.items:
        if not item.act:
            ordered.append(ServerResult(server_id=item.server_id, name=item.name, outcome="skipped", detail=item.note))
        else:
            ordered.append(
                results.get(item.server_id)
                or ServerResult(server_id=item.server_id, name=item.name, outcome="unknown", detail="no report")
            )
    return ordered


def overall_status(
    outcomes: list[ServerResult],
) -> Literal["succeeded", "failed", "partial", "submitted", "unknown", "nothing_to_do"]:
    acted = [o for o in outcomes if o.outcome != "skipped"]
    if not acted:
        return "nothing_to_do"
    if any(o.outcome == "unknown" for o in acted):
        return "unknown"  # a write whose answer was lost: settled later by observation, never re-sent
    if any(o.outcome == "submitted" for o in acted):
        return "submitted"
    failed = sum(o.outcome in ("failed", "unknown") for o in acted)
    if failed == 0:
        return "succeeded"
    return "failed" if failed == len(acted) else "partial"


def nothing_to_do(execution: Execution, message: str) -> ActionResult:
    """The result of a confirmed change that found no server to act on: each server says why."""
    return ActionResult(
        status="nothing_to_do",
        action_id=execution.action_id,
        servers=server_outcomes(execution, {}),
        message=message,
    )
