"""The tools: one definition per documented Flexus L operation. Nothing is hand-written per tool in any
surface; MCP, Slack and the CLI are generated from the specs here.

Descriptions are written for a language model and kept short: the whole catalog rides along on
every turn of a conversation.
"""

from __future__ import annotations

import secrets
import string
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from ..cloud import rules
from ..cloud.errors import CloudError
from ..cloud.models import JobResult, ListServersQuery, ServerDetail
from .inputs import (
    ListServersInput,
    PowerInput,
    RebootServersInput,
    ResetPasswordInput,
    ShowJobInput,
    ShowServerInput,
    StartServersInput,
    StopServersInput,
    UpdateServerInput,
)
from .outputs import (
    ActionResult,
    ChangeOutput,
    JobOutput,
    ListServersOutput,
    Plan,
    PlanItem,
    ServerResult,
    ShowServerOutput,
    project,
)
from .spec import Execution, Safety, ToolContext, ToolSpec
from .targets import resolve_servers

if TYPE_CHECKING:
    from ..cloud.client import FlexusClient

GATED_NOTE = (
    " Changes are gated: the first call returns a preview (what happens to each server, in its current "
    "state) and nothing changes until a human confirms."
)

# -- read tools -------------------------------------------------------------------------------


async def show_server(ctx: ToolContext, args: ShowServerInput) -> ShowServerOutput:
    (server,) = await resolve_servers(ctx.client, [args.server], field="server")
    return ShowServerOutput(server=project(server, args.full))


async def list_servers(ctx: ToolContext, args: ListServersInput) -> ListServersOutput:
    query = ListServersQuery(
        name=args.name,
        status=args.status,
        ip=args.ip,
        ip_eq=args.ip_eq,
        tags=args.tag,
        not_tags=args.not_tag,
        flavor=args.flavor,
        enterprise_project_id=args.enterprise_project_id,
        reservation_id=args.reservation_id,
        server_id=args.server_ids,
        limit=args.limit,
        offset=args.page,
    )
    page = await ctx.client.list_servers(query)
    has_more = args.server_ids is None and args.page * args.limit < page.count
    return ListServersOutput(
        count=page.count,
        page=args.page,
        servers=[project(server, args.full) for server in page.servers],
        next_page=args.page + 1 if has_more else None,
    )


async def show_job(ctx: ToolContext, args: ShowJobInput) -> JobOutput:
    if not args.wait:
        job = await ctx.client.show_job(args.job_id)
        return JobOutput.of(JobResult.from_job(args.job_id, job))
    tracker = _JobProgress(ctx, total=None)
    result = await ctx.client.wait_for_job(args.job_id, on_progress=tracker.update)
    return JobOutput.of(result)


# -- power actions ----------------------------------------------------------------------------

PowerAction = Literal["start", "stop", "reboot"]


def _item(server: ServerDetail, act: bool, note: str) -> PlanItem:
    return PlanItem(
        server_id=server.id,
        name=server.name,
        status=server.status,
        task=server.task_state,
        locked=server.locked,
        act=act,
        note=note,
    )


def power_item(server: ServerDetail, action: PowerAction, kind: str) -> PlanItem:
    status = server.status
    if server.locked:
        return _item(server, False, "locked: the cloud would refuse it; skipped")
    if server.task_state:
        return _item(server, False, f"busy ({server.task_state}); skipped, try again when it finishes")
    if action == "start":
        if status == "SHUTOFF":
            return _item(server, True, "will start")
        if status == "ACTIVE":
            return _item(server, False, "already ACTIVE; nothing to do")
        return _item(server, False, f"is {status}; only a SHUTOFF server can start")
    if action == "stop":
        if status == "ACTIVE":
            return _item(server, True, f"will stop ({kind})")
        if status == "SHUTOFF":
            return _item(server, False, "already SHUTOFF; nothing to do")
        return _item(server, False, f"is {status}; only an ACTIVE server can stop")
    if status == "ACTIVE":
        return _item(server, True, f"will reboot ({kind})")
    if status == "SHUTOFF":
        return _item(server, False, "is SHUTOFF; start it instead of rebooting")
    return _item(server, False, f"is {status}; only an ACTIVE server can reboot")


def _summary(tool_verb: str, items: list[PlanItem]) -> str:
    acting = sum(item.act for item in items)
    skipped = len(items) - acting
    text = f"{tool_verb} {acting} of {len(items)} server(s)"
    return text + (f"; {skipped} skipped (see notes)" if skipped else "")


def _power_plan(action: PowerAction) -> Any:
    async def plan(ctx: ToolContext, args: PowerInput) -> Plan:
        kind = getattr(args, "type", "SOFT")
        servers = await resolve_servers(ctx.client, args.servers)
        items = [power_item(server, action, kind) for server in servers]
        changes = {"type": kind} if action != "start" else {}
        return Plan(tool=f"flexus_{action}_servers", summary=_summary(action, items), items=items, changes=changes)

    return plan


class _JobProgress:
    """Turns job polls into "n of N servers done" progress for the surface."""

    def __init__(self, ctx: ToolContext, total: int | None) -> None:
        self._ctx = ctx
        self._total = total
        self._done: dict[str, int] = {}

    async def update(self, result: JobResult) -> None:
        self._done[result.job_id] = sum(o.status in ("SUCCESS", "FAIL") for o in result.servers)
        done = sum(self._done.values())
        total = self._total if self._total is not None else len(result.servers) or None
        await self._ctx.progress(done, total, f"{done} of {total or '?'} servers done")


def _outcomes(execution: Execution, results: dict[str, ServerResult]) -> list[ServerResult]:
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


def _status(
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


def _power_execute(action: PowerAction) -> Any:
    async def execute(ctx: ToolContext, args: PowerInput, execution: Execution) -> ActionResult:
        acting = execution.plan.acting
        names = {item.server_id: item.name for item in execution.plan.items}
        if not acting:
            return ActionResult(
                status="nothing_to_do",
                action_id=execution.action_id,
                servers=_outcomes(execution, {}),
                message="nothing to do: no server is in a state this action applies to",
            )
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
            tracker = _JobProgress(ctx, total=len(ids))
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
        outcomes = _outcomes(execution, results)
        status = _status(outcomes)
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
        page = await ctx.client.list_servers(server_id=acting, limit=rules.MAX_PAGE_SIZE)
        seen: dict[str, str] = {}
        for server in page.servers:
            if action == "stop":
                applied = server.status == "SHUTOFF" or server.task_state == "powering-off"
            elif action == "start":
                applied = server.status == "ACTIVE" or server.task_state == "powering-on"
            else:  # a finished reboot looks like before; its trace is the update time
                applied = server.status in ("REBOOT", "HARD_REBOOT") or _after(server.updated, since)
            seen[server.id] = "applied" if applied else "not applied"
        return seen

    return observe


# -- password reset ---------------------------------------------------------------------------


def generate_password(length: int = 20) -> str:
    alphabet = string.ascii_letters + string.digits + "!@%-_=+.?"
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(length))
        if rules.problem_with_password(candidate) is None and all(
            any(test(ch) for ch in candidate) for test in (str.isupper, str.islower, str.isdigit)
        ):
            return candidate


async def reset_password_plan(ctx: ToolContext, args: ResetPasswordInput) -> Plan:
    servers = await resolve_servers(ctx.client, args.servers)
    items: list[PlanItem] = []
    for server in servers:
        if server.locked:
            items.append(_item(server, False, "locked: the cloud would refuse it; skipped"))
        else:
            when = "after its next reboot" if server.status == "ACTIVE" else "when it next starts"
            items.append(_item(server, True, f"password will be reset; takes effect {when}"))
    acting = [item.server_id for item in items if item.act]
    if acting:
        password = args.new_password.get_secret_value() if args.new_password else None
        # The API's own dry run checks the request (plug-in, permissions, password rules) for real.
        checked = await ctx.client.batch_reset_password(acting, password, dry_run=True)
        accepted = set(checked.server_ids)
        for item in items:
            if item.act and item.server_id not in accepted:
                item.act = False
                item.note = "the cloud's dry run did not accept this server; skipped"
    source = "given (hidden)" if args.new_password else "generated at execution, shown once to the requester"
    return Plan(
        tool="flexus_reset_servers_password",
        summary=_summary("reset the password of", items),
        items=items,
        changes={"new_password": source, "reason": args.reason},
    )


async def reset_password_execute(ctx: ToolContext, args: ResetPasswordInput, execution: Execution) -> ActionResult:
    acting = [item.server_id for item in execution.plan.acting]
    names = {item.server_id: item.name for item in execution.plan.items}
    if not acting:
        return ActionResult(
            status="nothing_to_do",
            action_id=execution.action_id,
            servers=_outcomes(execution, {}),
            message="nothing to do",
        )
    if execution.secret is None:
        execution.secret = generate_password()
        execution.generated_secret = True
    accepted = await ctx.client.batch_reset_password(acting, execution.secret)
    done = set(accepted.server_ids)
    results = {
        sid: ServerResult(
            server_id=sid,
            name=names.get(sid),
            outcome="done" if sid in done else "failed",
            detail="accepted; takes effect after the next start or reboot" if sid in done else "not accepted",
        )
        for sid in acting
    }
    outcomes = _outcomes(execution, results)
    message = f"password reset accepted for {len(done)} of {len(acting)} server(s)"
    if execution.generated_secret:
        message += "; the generated password can be revealed once by the requester: flexus-ops approvals reveal " + (
            execution.action_id
        )
    return ActionResult(status=_status(outcomes), action_id=execution.action_id, servers=outcomes, message=message)


# -- update -----------------------------------------------------------------------------------

UPDATABLE = ("name", "description", "hostname", "user_data")


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
            notes.append("the hostname takes effect after a reboot")
        if "user_data" in changes:
            notes.append("user data is used at the next boot")
    if server.locked:
        notes.append("locked: the cloud may refuse it")
    item = _item(server, bool(changes), "; ".join(notes))
    return Plan(tool="flexus_update_server", summary=f"update {server.name}", items=[item], changes=changes)


async def reset_password_observe(ctx: ToolContext, args: Any, plan: Plan, since: float) -> dict[str, str]:
    # A password reset leaves no trace the API shows; say so rather than guess.
    return {item.server_id: "unknown" for item in plan.acting}


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
        return ActionResult(
            status="nothing_to_do",
            action_id=execution.action_id,
            servers=_outcomes(execution, {}),
            message="nothing to change",
        )
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


# -- the catalog ------------------------------------------------------------------------------


def _power_tool(
    action: PowerAction, input_model: type[PowerInput], safety: Safety, *, idempotent: bool, description: str
) -> ToolSpec:
    """The three power actions differ only in their words, their safety class and the API call."""
    return ToolSpec(
        name=f"flexus_{action}_servers",
        title=f"{action.capitalize()} servers",
        description=description + GATED_NOTE,
        input_model=input_model,
        output_model=ChangeOutput,
        safety=safety,
        idempotent=idempotent,
        plan=_power_plan(action),
        execute=_power_execute(action),
        observe=_power_observe(action),
    )


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="flexus_list_servers",
        title="List servers",
        description=(
            "List Flexus L servers with filters (name substring, status, IP, tag). Returns a compact summary "
            "per server (id, name, status, task, flavor, IPs, AZ, locked) and next_page when there are more."
        ),
        input_model=ListServersInput,
        output_model=ListServersOutput,
        safety=Safety.READ,
        idempotent=True,
        run=list_servers,
    ),
    ToolSpec(
        name="flexus_show_server",
        title="Show server",
        description="Show one server by id or exact name; full=true returns every API field.",
        input_model=ShowServerInput,
        output_model=ShowServerOutput,
        safety=Safety.READ,
        idempotent=True,
        run=show_server,
    ),
    _power_tool(
        "start",
        StartServersInput,
        Safety.CHANGE,
        idempotent=True,
        description="Start SHUTOFF servers (ids or exact names) and report each server.",
    ),
    _power_tool(
        "stop",
        StopServersInput,
        Safety.DESTRUCTIVE,
        idempotent=True,
        description="Stop ACTIVE servers, SOFT (clean) or HARD (forced), and report each server.",
    ),
    _power_tool(
        "reboot",
        RebootServersInput,
        Safety.DESTRUCTIVE,
        idempotent=False,
        description="Reboot ACTIVE servers, SOFT or HARD, and report each server.",
    ),
    ToolSpec(
        name="flexus_reset_servers_password",
        title="Reset servers' password",
        description=(
            "Reset the OS login password of servers (effective after the next start or reboot). Needs a "
            "reason and, after confirmation, approval by a second authorised person. Omit new_password to "
            "have one generated and shown once to the requester outside this conversation." + GATED_NOTE
        ),
        input_model=ResetPasswordInput,
        output_model=ChangeOutput,
        safety=Safety.DESTRUCTIVE,
        idempotent=False,
        plan=reset_password_plan,
        execute=reset_password_execute,
        observe=reset_password_observe,
        secret_fields=frozenset({"new_password"}),
    ),
    ToolSpec(
        name="flexus_update_server",
        title="Update server",
        description=(
            "Change a server's name, description, hostname (effective after reboot) or user_data (base64)." + GATED_NOTE
        ),
        input_model=UpdateServerInput,
        output_model=ChangeOutput,
        safety=Safety.DESTRUCTIVE,
        idempotent=True,
        plan=update_plan,
        execute=update_execute,
        observe=update_observe,
    ),
    ToolSpec(
        name="flexus_show_job",
        title="Show job",
        description=(
            "Status of a job a start/stop/reboot returned, with each server's outcome; wait=true waits until it ends."
        ),
        input_model=ShowJobInput,
        output_model=JobOutput,
        safety=Safety.READ,
        idempotent=True,
        run=show_job,
        shows_actions=True,
    ),
)
