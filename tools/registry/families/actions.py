"""Reading what the gate did with a change: its plan, state, the waves a rollout reached, its outcome."""

from __future__ import annotations

from ...core.errors import Refused
from ...core.plans import ActionReport
from ...core.tools import Safety, ToolContext, ToolSpec
from ..inputs import ShowActionInput


async def show_action(ctx: ToolContext, args: ShowActionInput) -> ActionReport:
    if ctx.show_action is None:  # every registry context sets it; a bare context cannot read the store
        raise Refused("no such action")
    return await ctx.show_action(args.action_id)


SHOW_ACTION = ToolSpec(
    name="flexus_show_action",
    title="Show a change",
    description="Show a gated change by action_id: plan, state, waves reached, outcome (yours, or as approver).",
    input_model=ShowActionInput,
    output_model=ActionReport,
    safety=Safety.READ,
    idempotent=True,
    run=show_action,
    shows_actions=True,
)
