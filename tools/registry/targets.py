"""Servers named by id or by exact name, or selected by filter. An unknown or ambiguous name is an error
that lists candidates, so neither a person nor a model ever acts on a server it did not mean."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..cloud import rules
from ..core.errors import FlexusError

if TYPE_CHECKING:
    from ..cloud.client import FlexusClient
    from ..cloud.models import ServerDetail
    from .inputs import Selection, TargetedInput

NAME_QUERY_LIMIT = 3  # up to this many names: one filtered query each; more: read the fleet once


class TargetError(FlexusError):
    """A server reference that does not name exactly one server."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def _describe(server: ServerDetail) -> str:
    ips = ", ".join(server.private_ips + server.public_ips) or "no IP"
    return f"{server.name} ({server.id}, {server.status}, {ips})"


def _candidates(servers: list[ServerDetail], limit: int = 5) -> str:
    shown = "; ".join(_describe(s) for s in servers[:limit])
    more = f"; and {len(servers) - limit} more" if len(servers) > limit else ""
    return shown + more


async def servers_by_id(client: FlexusClient, ids: list[str]) -> list[ServerDetail]:
    """The servers with these ids, as many as a query takes at a time (an undo of a big change can name
    more than one request allows)."""
    size = rules.MAX_SERVERS_PER_REQUEST
    servers: list[ServerDetail] = []
    for start in range(0, len(ids), size):
        page = await client.list_servers(server_id=ids[start : start + size], limit=rules.MAX_PAGE_SIZE)
        servers += page.servers
    return servers


async def resolve_servers(client: FlexusClient, refs: list[str], field: str = "servers") -> list[ServerDetail]:
    """The servers ``refs`` name, in the order given, each read fresh from the cloud."""
    ids = [ref for ref in refs if rules.problem_with_server_id(ref) is None]
    names = [ref for ref in refs if ref not in ids]
    found: dict[str, ServerDetail] = {}

    if ids:
        for server in await servers_by_id(client, ids):
            if server.name is None and server.status is None:
                continue  # the API's placeholder for an unknown id
            found[server.id] = server
        missing = [server_id for server_id in ids if server_id not in found]
        if missing:
            raise TargetError(field, f"no server with id {', '.join(missing[:5])}")

    if names:
        if len(names) <= NAME_QUERY_LIMIT:
            pools = {name: await client.list_all_servers(name=name) for name in names}
        else:
            fleet = await client.list_all_servers()
            pools = {name: fleet for name in names}
        for name in names:
            exact = [s for s in pools[name] if s.name == name]
            if len(exact) == 1:
                found[name] = exact[0]
                continue
            if len(exact) > 1:
                raise TargetError(field, f"{name!r} names {len(exact)} servers; use an id: {_candidates(exact)}")
            similar = [s for s in pools[name] if s.name and name.lower() in s.name.lower()]
            hint = f"; similar: {_candidates(similar)}" if similar else ""
            raise TargetError(field, f"no server named {name!r}{hint}")

    ordered = [found[ref] for ref in refs]
    seen: set[str] = set()
    for ref, server in zip(refs, ordered, strict=True):
        if server.id in seen:
            raise TargetError(field, f"{ref!r} is the same server as another item ({server.id})")
        seen.add(server.id)
    return ordered


async def select_servers(client: FlexusClient, selection: Selection) -> list[ServerDetail]:
    """Every server the selection matches now, read from the cloud in one paged listing. ``name`` is a
    prefix: the API's name filter is fuzzy ("." matches any character), so its answer is narrowed here.
    Ordered by name then id, so the same fleet always gives the same plan."""
    filters = selection.filters()
    query = {QUERY_NAMES.get(name, name): value for name, value in filters.items()}
    servers = await client.list_all_servers(**query)
    prefix = selection.name
    if prefix is not None:
        servers = [server for server in servers if server.name is not None and server.name.startswith(prefix)]
    return sorted(servers, key=lambda server: (server.name or "", server.id))


QUERY_NAMES = {"tag": "tags", "not_tag": "not_tags"}
"""The selection's filter names that the listing query spells differently."""


async def target_servers(client: FlexusClient, args: TargetedInput) -> list[ServerDetail]:
    """The servers a batch change names: its list, or its selection resolved now."""
    if args.select is not None:
        return await select_servers(client, args.select)
    assert args.servers is not None  # the input model admits exactly one of the two (undo_of is resolved apart)
    return await resolve_servers(client, args.servers)
