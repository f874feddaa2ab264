"""Update a server's name, description, hostname or user_data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...cloud.models import ServerDetail
from ...core.errors import CloudError
from ...core.plans import ActionResult, ChangeOutput, Plan, ServerResult
from ...core.tools import Execution, Safety, ToolContext, ToolSpec
from ..inputs import UPDATABLE, UpdateServerInput
from ..targets import resolve_servers

if TYPE_CHECKING:
    pass

from .shared import GATED_NOTE, nothing_to_do, plan_item

# -- update -----------------------------------------------------------------------------------


def _field_value(server: ServerDetail, field: str) -> str | None:
    return getattr(server, field)


def _show(field: str, value: str | None) -> str | None:
    if field == "user_data":  # user data can hold secrets: describe it, never echo it
        return f"{len(value)} base64 characters" if value else None
    return value


async def update_plan(ctx: ToolContext, args: UpdateServerInput) -> Plan:
    (server,) = await resolve_servers(ctx.client, [args.server], field="server")
    changes: dict[str, Any] = {}
    for field in UPDATABLE:
        new = getattr(args, field)
        if new is None:
            continue
        old = _field_value(server, field)
        if new != old:
            changes[field] = {"from": _show(field, old), "to": _show(field, new)}
    notes = []
    if not changes:
        notes.append("already has these values; nothing to do")
    else:
        notes.append("will change " + ", ".join(changes))
        if "hostname" in changes:
            notes.append("the hostname takes effect after a reboot (the API marks this field deprecated)")
        if "user_data" in changes:
            notes.append("user data is used at the next boot")
    if server.locked:
        notes.append("locked: the cloud may refuse it")
    item = plan_item(server, bool(changes), "; ".join(notes))
    return Plan(tool="flexus_update_server", summary=f"update {server.name}", items=[item], changes=changes)


async def update_observe(ctx: ToolContext, args: UpdateServerInput, plan: Plan, since: float) -> dict[str, str]:
    (item,) = plan.items
    if not item.act:
        return {}
    server = await ctx.client.show_server(item.server_id)
    applied = all(getattr(server, field) == getattr(args, field) for field in plan.changes)
    return {item.server_id: "applied" if applied else "not applied"}


async def update_execute(ctx: ToolContext, args: UpdateServerInput, execution: Execution) -> ActionResult:
    (item,) = execution.plan.items
    if not item.act:
        return nothing_to_do(execution, "nothing to change")
    fields = {field: getattr(args, field) for field in execution.plan.changes}
    try:
        await ctx.client.update_server(item.server_id, **fields)
    except CloudError as exc:
        result = ServerResult(
            server_id=item.server_id, name=item.name, outcome="failed", detail=f"{exc.code}: {exc.message}"
        )
        return ActionResult(status="failed", action_id=execution.action_id, servers=[result], message=str(exc))
    result = ServerResult(
        server_id=item.server_id, name=item.name, outcome="done", detail="updated " + ", ".join(fields)
    )
    return ActionResult(
        status="succeeded",
        action_id=execution.action_id,
        servers=[result],
        message=f"updated {item.name}: " + ", ".join(fields),
    )


UPDATE_SERVER = ToolSpec(
    name="flexus_update_server",
    title="Update server",
    description=(
        "Change a server's name, description, user_data (base64) or hostname (deprecated by the API; "
        "effective after reboot)." + GATED_NOTE
    ),
    input_model=UpdateServerInput,
    output_model=ChangeOutput,
    safety=Safety.DESTRUCTIVE,
    idempotent=True,
    plan=update_plan,
    execute=update_execute,
    observe=update_observe,
)
