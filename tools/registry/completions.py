"""Suggestions for a half-typed server name, id or tag, as a client completes an argument.

A client may ask on every keystroke, so the answers come from a short-lived index of the fleet, read with
one listing at most every ``ttl`` seconds and shared by concurrent askers; a keystroke never lists the fleet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..cloud.client import FlexusClient

MAX_SUGGESTIONS = 100  # the MCP limit for one completion answer
INDEX_TTL_SECONDS = 30.0

Kind = Literal["server", "name", "tag"]


@dataclass(frozen=True)
class Suggestions:
    values: list[str]
    total: int

    @property
    def has_more(self) -> bool:
        return self.total > len(self.values)


@dataclass(frozen=True)
class FleetIndex:
    """What completion needs of the fleet: names, ids and tags, sorted for prefix search."""

    names: tuple[str, ...]
    ids: tuple[str, ...]
    tags: tuple[str, ...]

    @classmethod
    def build(cls, servers: list[tuple[str, str | None, list[str]]]) -> FleetIndex:
        names = sorted({name for _, name, _ in servers if name})
        ids = sorted(server_id for server_id, _, _ in servers)
        tags: set[str] = set()
        for _, _, server_tags in servers:
            for tag in server_tags:
                tags.add(tag)
                key = tag.split("=", 1)[0]
                tags.add(key)  # a tag filter may name only the key
        return cls(tuple(names), tuple(ids), tuple(sorted(tags)))

    def suggest(self, kind: Kind, prefix: str) -> Suggestions:
        pools = {"server": (self.names, self.ids), "name": (self.names,), "tag": (self.tags,)}[kind]
        folded = prefix.casefold()
        matches = [value for pool in pools for value in pool if value.casefold().startswith(folded)]
        return Suggestions(values=matches[:MAX_SUGGESTIONS], total=len(matches))


class Completer:
    """The fleet index, refreshed when it is older than ``ttl``; one refresh at a time."""

    def __init__(
        self, client: FlexusClient, *, ttl: float = INDEX_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._index: FleetIndex | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()
        self.listings = 0  # how many times the fleet was read (tests and benchmarks look)

    async def index(self) -> FleetIndex:
        if self._index is not None and self._clock() < self._read_at + self._ttl:
            return self._index
        async with self._lock:  # askers arriving during a refresh wait for it instead of listing again
            if self._index is None or self._clock() >= self._read_at + self._ttl:
                servers = await self._client.list_all_summaries()  # id, name, tags: nothing else is built
                self.listings += 1
                self._index = FleetIndex.build([(s.id, s.name, s.tags or []) for s in servers])
                self._read_at = self._clock()
            return self._index

    async def suggest(self, kind: Kind, prefix: str) -> Suggestions:
        return (await self.index()).suggest(kind, prefix)
