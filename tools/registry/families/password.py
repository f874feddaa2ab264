"""Reset the OS password of servers: the cloud's own dry run at preview, approval by a second person, and
a generated password shown once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...cloud import rules
from ...cloud.models import ServerDetail
from ...core.errors import InvalidInput, Refused
from ...core.plans import ActionResult, ChangeOutput, Plan, PlanItem, ServerResult
from ...core.tools import Execution, Safety, ToolContext, ToolSpec
from ..inputs import (
    ResetPasswordInput,
)
from ..targets import target_servers
from ..undo import offering_undo

if TYPE_CHECKING:
    pass

from .shared import (
    FROZEN_NOTE,
    GATED_NOTE,
    SELECT_NOTE,
    nothing_to_do,
    overall_status,
    plan_item,
    server_outcomes,
    summary,
)

# -- password reset ---------------------------------------------------------------------------


def _check_per_server(password: str, servers: list[ServerDetail]) -> None:
    """Each server's own rules, by its image's OS (metadata os_type; both OSes' rules when it is missing),
    before anything is sent: the error names the field, the rule and the server."""
    for server in servers:
        os_type = (server.metadata or {}).get("os_type")
        if problem := rules.problem_with_password(password, os_type):
            runs = f"runs {os_type}" if os_type in rules.PASSWORD_USER_NAMES else "has no known OS type"
            raise InvalidInput("new_password", f"{problem} ({server.name or server.id} {runs})")


async def _reset_in_chunks(ctx: ToolContext, ids: list[str], password: str | None, *, dry_run: bool) -> set[str]:
    """The servers the cloud accepted, as many per request as it takes (a selection can match more)."""
    size = rules.MAX_SERVERS_PER_REQUEST
    accepted: set[str] = set()
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        accepted.update((await ctx.client.batch_reset_password(chunk, password, dry_run=dry_run)).server_ids)
    return accepted


async def reset_password_plan(ctx: ToolContext, args: ResetPasswordInput) -> Plan:
    servers = await target_servers(ctx.client, args)
    if args.new_password is not None:
        usable = [s for s in servers if not s.locked and not s.frozen]
        _check_per_server(args.new_password.get_secret_value(), usable)
    items: list[PlanItem] = []
    for server in servers:
        if server.locked:
            items.append(plan_item(server, False, "locked: the cloud would refuse it; skipped"))
        elif server.frozen:
            items.append(plan_item(server, False, FROZEN_NOTE))
        else:
            when = "after its next reboot" if server.status == "ACTIVE" else "when it next starts"
            items.append(plan_item(server, True, f"password will be reset; takes effect {when}"))
    acting = [item.server_id for item in items if item.act]
    if acting:
        password = args.new_password.get_secret_value() if args.new_password else None
        # The API's own dry run checks the request (plug-in, permissions, password rules) for real.
        accepted = await _reset_in_chunks(ctx, acting, password, dry_run=True)
        for item in items:
            if item.act and item.server_id not in accepted:
                item.act = False
                item.note = "the cloud's dry run did not accept this server; skipped"
    # A generated password is in args.new_password too (the gate made it at preview) and the gate says so.
    source = "given (hidden)" if args.new_password else "none: the dry run checked the request without one"
    said = summary("reset the password of", items)
    if args.select is not None:
        said = f"{said} matching {args.select.describe()}" if items else f"nothing matched {args.select.describe()}"
    return Plan(
        tool="flexus_reset_servers_password",
        summary=said,
        items=items,
        changes={"new_password": source, "reason": args.reason},
    )


async def reset_password_execute(ctx: ToolContext, args: ResetPasswordInput, execution: Execution) -> ActionResult:
    acting = [item.server_id for item in execution.plan.acting]
    names = {item.server_id: item.name for item in execution.plan.items}
    if not acting:
        return nothing_to_do(execution, "nothing to do")
    if execution.secret is None:
        # Passwords are generated at preview (so the cloud's dry run checked this one); none here means a
        # preview made before that, which cannot be run as previewed.
        raise Refused("new_password: this preview carries no password; preview again to have one generated")
    done = await _reset_in_chunks(ctx, acting, execution.secret, dry_run=False)
    results = {
        sid: ServerResult(
            server_id=sid,
            name=names.get(sid),
            outcome="done" if sid in done else "failed",
            detail="accepted; takes effect after the next start or reboot" if sid in done else "not accepted",
        )
        for sid in acting
    }
    outcomes = server_outcomes(execution, results)
    message = f"password reset accepted for {len(done)} of {len(acting)} server(s)"
    if execution.generated_secret:
        message += "; the generated password can be revealed once by the requester: flexus-ops approvals reveal " + (
            execution.action_id
        )
    return ActionResult(
        status=overall_status(outcomes), action_id=execution.action_id, servers=outcomes, message=message
    )


async def reset_password_observe(ctx: ToolContext, args: Any, plan: Plan, since: float) -> dict[str, str]:
    # A password reset leaves no trace the API shows; say so rather than guess.
    return {item.server_id: "unknown" for item in plan.acting}


RESET_PASSWORD = ToolSpec(
    name="flexus_reset_servers_password",
    title="Reset servers' password",
    description=(
        "Reset the OS login password of servers (effective after the next start or reboot). Needs a "
        "reason and, after confirmation, approval by a second authorised person. Omit new_password to "
        "have one generated, checked by the cloud's dry run and revealed once to the requester outside this "
        "conversation." + SELECT_NOTE + GATED_NOTE
    ),
    input_model=ResetPasswordInput,
    output_model=ChangeOutput,
    safety=Safety.DESTRUCTIVE,
    idempotent=False,
    plan=reset_password_plan,
    execute=offering_undo("flexus_reset_servers_password", reset_password_execute),
    observe=reset_password_observe,
    secret_fields=frozenset({"new_password"}),
    secret_generator=rules.generate_password,
)
