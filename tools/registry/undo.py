"""The undo of a finished change: offered with its result as a ready call, and resolved (``undo_of``) into
the exact inverse, previewed and confirmed like any change.

A tool's plan reads the original action through ``ToolContext.read_action``, which the registry
provides: the families never import the store (imports only go down)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..core.errors import FlexusError, InvalidInput
from ..core.plans import ActionResult, ActionView, Plan, Undo
from ..core.states import FINISHED_STATES, ActionState
from ..core.tools import ExecuteHandler, Execution, ToolContext


@dataclass(frozen=True)
class PastAction:
    """A gated action as an undo needs it: its view (tool, state, plan) and its recorded result."""

    view: ActionView
    result: ActionResult | None


ActionReader = Callable[[str], Awaitable[PastAction | None]]

INVERSE = {
    "flexus_stop_servers": "flexus_start_servers",
    "flexus_start_servers": "flexus_stop_servers",
    "flexus_update_server": "flexus_update_server",
}
"""A tool -> the tool that undoes it (and, the map being symmetric, the tool an ``undo_of`` may name)."""

NO_UNDO = {
    "flexus_reboot_servers": "a reboot cannot be undone",
    "flexus_reset_servers_password": "a password reset cannot be undone: the old password is never known",
}

UNDOABLE_STATES = tuple(state for state in FINISHED_STATES if state is not ActionState.UNKNOWN)
"""Finished with a recorded outcome: an unknown outcome is settled first, then it can be undone."""

REACHED = ("done", "submitted")
"""Outcomes of servers a change reached; the undo re-reads each and acts only where the change shows."""


async def original(ctx: ToolContext, action_id: str, tool: str) -> PastAction:
    """The finished action ``undo_of`` names, of the tool ``tool`` undoes; otherwise an error naming undo_of."""
    read: ActionReader | None = ctx.read_action
    if read is None:
        raise InvalidInput("undo_of", "earlier actions cannot be read here")
    undoes = INVERSE[tool]
    # Any operator may undo a finished change; but why an id cannot be undone (it is pending, of another
    # tool) is told only to those who may see the action, so an id cannot be probed through undo_of.
    uniform = f"there is no finished {undoes} action {action_id} to undo"
    past = await read(action_id)
    if past is None:
        raise InvalidInput("undo_of", uniform)
    problem = None
    if past.view.tool != undoes:
        problem = f"action {action_id} is {past.view.tool}; {tool} undoes only {undoes}"
    elif past.view.state not in UNDOABLE_STATES:
        problem = f"action {action_id} is {past.view.state}, not finished; only a finished change has an undo"
    if problem is not None:
        raise InvalidInput("undo_of", problem if await _may_see(ctx, action_id) else uniform)
    return past


async def _may_see(ctx: ToolContext, action_id: str) -> bool:
    """Whether this person may see the action (the one rule: ``Registry.show_action``)."""
    if ctx.show_action is None:
        return False
    try:
        await ctx.show_action(action_id)
    except FlexusError:
        return False
    return True


def reached_servers(past: PastAction) -> list[str]:
    """The servers the original change reached (done, or sent without waiting), in its order."""
    if past.result is None:
        raise InvalidInput(
            "undo_of",
            f"action {past.view.id} has no per-server outcome on record (it failed before sending, or was "
            "settled from the cloud); name the servers instead",
        )
    reached = [outcome.server_id for outcome in past.result.servers if outcome.outcome in REACHED]
    if not reached:
        raise InvalidInput("undo_of", f"action {past.view.id} changed no server; there is nothing to undo")
    return reached


def offer(tool: str, result: ActionResult, plan: Plan) -> Undo | None:
    """What a finished change's result offers: its inverse as a ready call, or why there is none."""
    if tool in NO_UNDO:
        return Undo(note=NO_UNDO[tool] + "; there is no undo")
    inverse = INVERSE.get(tool)
    reached = [o for o in result.servers if o.outcome in REACHED]
    if inverse is None or not reached:
        return None
    call = {"tool": inverse, "arguments": {"undo_of": result.action_id}}
    if tool == "flexus_update_server":
        (item,) = plan.items
        put_back = [f"{field} back to {change['from']!r}" for field, change in plan.changes.items()]
        put_back = [said for said in put_back if not said.startswith("user_data")]
        note = f"preview putting {item.name or item.server_id}'s " + ", ".join(put_back) if put_back else ""
        if "user_data" in plan.changes:
            note += ("; " if note else "") + "user_data cannot be restored (only its hash was kept)"
        return Undo(**call, note=note) if put_back else Undo(note=note)
    verb = "start" if inverse == "flexus_start_servers" else "stop"
    did = "stopped" if verb == "start" else "started"
    return Undo(**call, note=f"preview: {verb} the {len(reached)} server(s) this change {did}")


def offering_undo(tool: str, execute: ExecuteHandler) -> ExecuteHandler:
    """``execute``, with the undo offered on its result."""

    async def run(ctx: ToolContext, args: object, execution: Execution) -> ActionResult:
        result = await execute(ctx, args, execution)
        return result.model_copy(update={"undo": offer(tool, result, execution.plan)})

    return run
