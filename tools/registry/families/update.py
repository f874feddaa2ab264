"""Update a server's name, description, hostname or user_data."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from ...cloud.models import ServerDetail
from ...core.errors import CloudError
from ...core.plans import ActionResult, ChangeOutput, Plan, ServerResult
from ...core.tools import Execution, Safety, ToolContext, ToolSpec
from ..inputs import UPDATABLE, UpdateServerInput
from ..outputs import user_data_digest
from ..targets import resolve_servers
from ..undo import offering_undo, original, reached_servers
from .shared import GATED_NOTE, nothing_to_do, plan_item

# -- update -----------------------------------------------------------------------------------


def _field_value(server: ServerDetail, field: str) -> str | None:
    return getattr(server, field)


TOOL = "flexus_update_server"


def _show(field: str, value: str | None) -> str | None:
    """A value as the plan keeps it: the previous values are what an undo puts back. User data can hold
    secrets: only its size and hash are kept, never its text (so it cannot be restored)."""
    if field == "user_data":
        return user_data_digest(value) if value else None
    return value


def _given(args: UpdateServerInput, field: str) -> str | None:
    """An argument's value; user data is kept as a secret (``SecretStr``) until it is used."""
    value = getattr(args, field)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _wanted(args: UpdateServerInput, plan: Plan) -> dict[str, str]:
    """The values to set: the arguments', or for an undo the previous values its plan recorded."""
    if args.undo_of is not None:
        return {field: change["to"] for field, change in plan.changes.items()}
    return {field: value for field in plan.changes if (value := _given(args, field)) is not None}


async def _undo_plan(ctx: ToolContext, undo_of: str) -> Plan:
    """Put back what a finished update changed, from the previous values its plan recorded."""
    past = await original(ctx, undo_of, TOOL)
    reached_servers(past)
    (was,) = past.view.plan.items
    (server,) = await resolve_servers(ctx.client, [was.server_id], field="undo_of")
    changes: dict[str, Any] = {}
    notes: list[str] = []
    for field, change in past.view.plan.changes.items():
        previous, set_to = change.get("from"), change.get("to")
        if field == "user_data":
            notes.append("user_data cannot be restored: only its hash was kept")
            continue
        if previous is None and field == "description":
            previous = ""  # there was none: clearing it puts it back
        if previous is None:
            notes.append(f"{field} had no value before; it cannot be put back")
            continue
        now = _field_value(server, field)
        if now == previous:
            notes.append(f"{field} is already {previous!r}")
            continue
        if now != set_to:
            notes.append(f"{field} was changed since (now {now!r}); it is put back all the same")
        changes[field] = {"from": now, "to": previous}
    if changes:
        notes.insert(0, "will put back " + ", ".join(f"{field} {change['to']!r}" for field, change in changes.items()))
    if server.locked:
        notes.append("locked: the cloud may refuse it")
    if "name" in changes:
        said = f"rename {server.name} back to {changes['name']['to']}"
    elif changes:
        said = f"put back {server.name}'s " + ", ".join(changes)
    else:
        said = f"nothing of {undo_of} to put back on {server.name}"
    item = plan_item(server, bool(changes), "; ".join(notes) or "nothing to put back")
    return Plan(tool=TOOL, summary=f"{said} (the undo of {undo_of})", items=[item], changes=changes)


async def update_plan(ctx: ToolContext, args: UpdateServerInput) -> Plan:
    if args.undo_of is not None:
        return await _undo_plan(ctx, args.undo_of)
    assert args.server is not None  # the input model requires server or undo_of
    (server,) = await resolve_servers(ctx.client, [args.server], field="server")
    changes: dict[str, Any] = {}
    for field in UPDATABLE:
        new = _given(args, field)
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
    return Plan(tool=TOOL, summary=f"update {server.name}", items=[item], changes=changes)


async def update_observe(ctx: ToolContext, args: UpdateServerInput, plan: Plan, since: float) -> dict[str, str]:
    (item,) = plan.items
    if not item.act:
        return {}
    server = await ctx.client.show_server(item.server_id)
    applied = all(getattr(server, field) == value for field, value in _wanted(args, plan).items())
    return {item.server_id: "applied" if applied else "not applied"}


async def update_execute(ctx: ToolContext, args: UpdateServerInput, execution: Execution) -> ActionResult:
    (item,) = execution.plan.items
    if not item.act:
        return nothing_to_do(execution, "nothing to change")
    fields = _wanted(args, execution.plan)
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
    name=TOOL,
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
    execute=offering_undo(TOOL, update_execute),
    secret_fields=frozenset({"user_data"}),
    observe=update_observe,
)
