"""The read tools: list servers (every filter of ListServersDetails), show one server, show a job."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...cloud import rules
from ...cloud.models import JobResult, ListServersQuery
from ...core.tools import Safety, ToolContext, ToolSpec
from ..inputs import (
    ListServersInput,
    ShowJobInput,
    ShowServerInput,
)
from ..outputs import JobOutput, ListServersOutput, ShowServerOutput, project
from ..targets import resolve_servers

if TYPE_CHECKING:
    pass

from .shared import JobProgress

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
    # The compact form needs a dozen fields of each server: read only those unless every field is asked for.
    page = await (ctx.client.list_servers(query) if args.full else ctx.client.list_server_rows(query))
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
        result = JobResult.from_job(args.job_id, job)
    else:
        tracker = JobProgress(ctx, total=None)
        result = await ctx.client.wait_for_job(args.job_id, on_progress=tracker.update)
    return JobOutput.of(result.with_names(await _server_names(ctx, result)))


async def _server_names(ctx: ToolContext, result: JobResult) -> dict[str, str | None]:
    """ShowJob names servers by id only; a person acts on names, so read them (a deleted server has none)."""
    ids = list(dict.fromkeys(o.server_id for o in result.servers if rules.problem_with_server_id(o.server_id) is None))
    if not ids:
        return {}
    page = await ctx.client.list_servers(server_id=ids, limit=rules.MAX_PAGE_SIZE)
    return {server.id: server.name for server in page.servers}


LIST_SERVERS = ToolSpec(
    name="flexus_list_servers",
    title="List servers",
    description=(
        "List Flexus L servers by any filter. Returns a compact summary per server (id, name, status, task, "
        "flavor, IPs, AZ, locked, billing, frozen) and next_page when there are more."
    ),
    input_model=ListServersInput,
    output_model=ListServersOutput,
    safety=Safety.READ,
    idempotent=True,
    run=list_servers,
)

SHOW_SERVER = ToolSpec(
    name="flexus_show_server",
    title="Show server",
    description="Show one server by id or exact name; full=true returns every API field.",
    input_model=ShowServerInput,
    output_model=ShowServerOutput,
    safety=Safety.READ,
    idempotent=True,
    run=show_server,
)

SHOW_JOB = ToolSpec(
    name="flexus_show_job",
    title="Show job",
    description=(
        "A job a start/stop/reboot returned: status and meaning, type, times, totals, each server by name and "
        "id. wait=true waits until it ends (INIT counts as running; PENDING_PAYMENT is reported at once)."
    ),
    input_model=ShowJobInput,
    output_model=JobOutput,
    safety=Safety.READ,
    idempotent=True,
    run=show_job,
    shows_actions=True,
)
