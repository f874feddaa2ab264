"""Settling: an execution whose owner is gone (its lease ran out after a crash, a kill, a lost database)
or whose outcome is unknown (a lost answer) is decided from what the cloud shows: its jobs, or the
servers' state as each tool observes it. Nothing is ever sent again; the decision is recorded with a
``reconciled`` audit entry in the same transaction."""

from __future__ import annotations

import json
import logging
from typing import Any

from ..cloud.models import JobResult
from ..core.errors import FlexusError, bounded
from ..core.plans import ActionResult, Plan, Rollout, ServerResult
from ..core.states import UNSETTLED_STATES, ActionState
from ..core.tools import ToolContext, ToolSpec
from .gate import Gate, resume_call

log = logging.getLogger("flexus_ops.gate")
SETTLE_BATCH = 20
# A write whose answer was lost may still land for a while; "not applied" is believed only after this.
LANDING_WINDOW_SECONDS = 60.0


class Settler:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def settle(self, ctx: ToolContext, specs: dict[str, ToolSpec], *, limit: int = SETTLE_BATCH) -> list[str]:
        """Settle executions nobody owns any more (their owner's lease ran out: a crash, a kill, a lost
        database) and outcomes that are unknown (a lost answer), from what the cloud shows; never send
        anything again. ``submitted`` actions are settled from their jobs; the others by each tool's
        ``observe``, which reads the servers and says per server whether the change is there. At most
        ``limit`` actions a round, so a round's work is bounded."""
        observable = [name for name, spec in specs.items() if spec.observe is not None]
        settled: list[str] = []
        for action in await self.gate.store.unsettled(UNSETTLED_STATES, limit):
            spec = specs.get(action["tool"])
            if spec is None or (action["state"] == ActionState.UNKNOWN and action["tool"] not in observable):
                continue
            if action.get("rollout_json") and action["state"] in (ActionState.EXECUTING, ActionState.UNKNOWN):
                if await self._settle_rollout(ctx, spec, action):
                    settled.append(action["id"])
                continue
            try:
                if action["state"] == ActionState.SUBMITTED and action["job_ids"]:
                    outcome = await self._settle_from_jobs(ctx, action)
                else:
                    outcome = await self._settle_by_observation(ctx, spec, action)
            except FlexusError as exc:  # the cloud cannot be read now: try again next round
                log.warning("settling %s: %s", action["id"], bounded(str(exc), 200))
                continue
            if outcome is None:
                continue
            final, detail = outcome
            if await self._reconcile(action, final, detail, result_json=json.dumps({"reconciled": detail})):
                settled.append(action["id"])
        return settled

    async def _settle_from_jobs(self, ctx: ToolContext, action: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        statuses: dict[str, str] = {}
        for job_id in json.loads(action["job_ids"]):
            statuses[job_id] = (await ctx.client.show_job(job_id)).status or "UNKNOWN"
        if any(status in ("RUNNING", "INIT") for status in statuses.values()):
            return None  # still running: settle on a later round
        final = (
            ActionState.SUCCEEDED if all(status == "SUCCESS" for status in statuses.values()) else ActionState.FAILED
        )
        return final, {"jobs": statuses}

    async def _settle_by_observation(
        self, ctx: ToolContext, spec: ToolSpec, action: dict[str, Any]
    ) -> tuple[str, dict[str, Any]] | None:
        if spec.observe is None:
            # Nothing in the cloud shows whether it happened: keep it unknown, for a person to check.
            if action["state"] == ActionState.UNKNOWN:
                return None
            return ActionState.UNKNOWN, {"observed": "this change leaves no trace the API shows; verify by hand"}
        plan = Plan.model_validate_json(action["plan_json"])
        args = self.gate.rebuild_arguments(spec, action)
        observed = await spec.observe(ctx, args, plan, action["updated_at"])
        if any(seen not in ("applied", "not applied") for seen in observed.values()):
            if action["state"] == ActionState.UNKNOWN:
                return None
            return ActionState.UNKNOWN, {"observed": observed}
        applied = [sid for sid, seen in observed.items() if seen == "applied"]
        landing = self.gate.clock() - action["updated_at"] < LANDING_WINDOW_SECONDS
        if observed and len(applied) < len(observed) and landing:
            return None  # a write may still land: believe "not applied" only after the landing window
        final = ActionState.SUCCEEDED if observed and len(applied) == len(observed) else ActionState.FAILED
        return final, {"observed": observed}

    async def _settle_rollout(self, ctx: ToolContext, spec: ToolSpec, action: dict[str, Any]) -> bool:
        """A rollout whose owner is gone never goes on by itself: the wave it was in is settled from its
        jobs (or, if none was recorded, by observing its servers), the rollout is recorded as stopped,
        and the result offers the call that previews the servers it did not reach."""
        rollout = Rollout.model_validate_json(action["rollout_json"])
        plan = Plan.model_validate_json(action["plan_json"])
        outcomes: dict[str, tuple[str, str | None]] = {}
        try:
            for wave in rollout.waves:
                if wave.state != "running":
                    continue
                seen = await self._wave_outcomes(ctx, spec, action, plan, wave.servers, wave.job_ids)
                if seen is None:
                    return False  # its job is still running, or a write may still land: a later round
                outcomes.update(seen)
                wave.failed = [sid for sid, (outcome, _d) in seen.items() if outcome in ("failed", "unknown")]
                sent = any(outcome != "not started" for outcome, _d in seen.values())
                wave.state = ("failed" if wave.failed else "done") if sent else "not started"
                wave.note = "settled from the cloud after its process stopped"
        except FlexusError as exc:  # the cloud cannot be read now: try again next round
            log.warning("settling %s: %s", action["id"], bounded(str(exc), 200))
            return False
        for wave in rollout.waves:
            if wave.state == "waiting":
                wave.state = "not started"
        left = rollout.not_started
        if action["state"] == ActionState.UNKNOWN:  # its process stopped it, and said why
            why = rollout.stopped or "a wave's outcome was unknown"
        else:
            why = "the process running this rollout stopped (a crash, a kill or a lost lease)"
            if left:
                rollout.stopped = f"{why}; nothing further was sent"
        servers: list[ServerResult] = []
        for item in plan.items:
            if not item.act:
                skipped = ServerResult(server_id=item.server_id, name=item.name, outcome="skipped", detail=item.note)
                servers.append(skipped)
                continue
            wave_of = next(w for w in rollout.waves if item.server_id in w.servers)
            if item.server_id in outcomes:
                outcome, detail = outcomes[item.server_id]
            elif wave_of.state == "not started":
                outcome, detail = "not started", rollout.stopped
            else:
                outcome = "failed" if item.server_id in wave_of.failed else "done"
                detail = None
            servers.append(
                ServerResult(server_id=item.server_id, name=item.name, outcome=outcome, detail=detail)  # type: ignore[arg-type]
            )
        acted = [s for s in servers if s.outcome != "skipped"]
        failed = sum(s.outcome in ("failed", "unknown") for s in acted)
        if left:
            final, status = ActionState.STOPPED, "stopped"
        elif failed:
            final, status = ActionState.FAILED, "failed" if failed == len(acted) else "partial"
        else:
            final, status = ActionState.SUCCEEDED, "succeeded"
        tally = {k: sum(s.outcome == k for s in servers) for k in ("done", "failed", "unknown", "not started")}
        message = f"{why}; settled from the cloud: " + ", ".join(f"{n} {k}" for k, n in tally.items() if n)
        result = ActionResult(
            status=status,  # type: ignore[arg-type]
            action_id=action["id"],
            job_ids=[job for wave in rollout.waves for job in wave.job_ids],
            servers=servers,
            message=message + (". Preview the resume call to go on with the rest." if left else ""),
            rollout=rollout,
            resume=resume_call(action, left) if left else None,
        )
        observed = {sid: outcome for sid, (outcome, _d) in outcomes.items()}
        return await self._reconcile(
            action,
            final,
            {"wave": rollout.reached, "not_started": len(left), "observed": observed},
            result_json=result.model_dump_json(),
            rollout_json=rollout.model_dump_json(),
            wave=rollout.reached,
        )

    async def _reconcile(self, action: dict[str, Any], final: str, detail: dict[str, Any], **values: Any) -> bool:
        """The settler's one transition: only once the owner's lease has run out, never re-sending anything,
        with its "reconciled" audit record in the same transaction."""
        entry = self.gate.entry(
            "reconciled",
            action,
            person="flexus-ops",
            surface="settler",
            resent=False,
            was=action["state"],
            outcome=final,
            **detail,
        )
        return await self.gate.store.transition(
            action["id"], [action["state"]], final, lease_expired=True, secret=None, audit_entry=entry, **values
        )

    async def _wave_outcomes(
        self,
        ctx: ToolContext,
        spec: ToolSpec,
        action: dict[str, Any],
        plan: Plan,
        server_ids: list[str],
        job_ids: list[str],
    ) -> dict[str, tuple[str, str | None]] | None:
        """Per server of the wave in flight: done, failed, unknown, or not started (never sent)."""
        if job_ids:
            seen: dict[str, tuple[str, str | None]] = {}
            for job_id in job_ids:
                result = JobResult.from_job(job_id, await ctx.client.show_job(job_id))
                if result.status in ("RUNNING", "INIT"):
                    return None
                for o in result.servers:
                    detail = None if o.status == "SUCCESS" else (o.fail_reason or o.error_code or o.status)
                    seen[o.server_id] = ("done" if o.status == "SUCCESS" else "failed", detail)
            for sid in server_ids:
                seen.setdefault(sid, ("unknown", "not in its job"))
            return seen
        if spec.observe is None:
            return {sid: ("unknown", "verify by hand") for sid in server_ids}
        wave_plan = plan.model_copy(update={"items": [i for i in plan.items if i.server_id in server_ids]})
        args = self.gate.rebuild_arguments(spec, action)
        observed = await spec.observe(ctx, args, wave_plan, action["updated_at"])
        landing = self.gate.clock() - action["updated_at"] < LANDING_WINDOW_SECONDS
        if landing and any(v == "not applied" for v in observed.values()):
            return None  # a write may still land: believe "not applied" only after the landing window
        mapping = {"applied": ("done", "observed"), "not applied": ("not started", "never reached the cloud")}
        return {sid: mapping.get(observed.get(sid, ""), ("unknown", "not observable")) for sid in server_ids}
