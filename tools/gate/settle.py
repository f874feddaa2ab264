"""Settling: an execution whose owner is gone (its lease ran out after a crash, a kill, a lost database)
or whose outcome is unknown (a lost answer) is decided from what the cloud shows: its jobs, or the
servers' state as each tool observes it. Nothing is ever sent again; the decision is recorded with a
``reconciled`` audit entry in the same transaction."""

from __future__ import annotations

import json
import logging
from typing import Any

from ..core.errors import FlexusError, bounded
from ..core.plans import Plan
from ..core.states import UNSETTLED_STATES, ActionState
from ..core.tools import ToolContext, ToolSpec
from .gate import Gate

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
            if await self.gate.store.transition(
                action["id"],
                [action["state"]],
                final,
                lease_expired=True,
                secret=None,
                result_json=json.dumps({"reconciled": detail}),
                audit_entry=entry,
            ):
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
