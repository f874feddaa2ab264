"""What a tool is: one definition that every surface (MCP, Slack, CLI) is generated from."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from .plans import ActionReport, ActionResult, Plan, Rollout, WaveReport

if TYPE_CHECKING:
    from ..cloud.client import FlexusClient  # a type only: the ground floor imports no layer above it


GATE_FIELDS = frozenset({"dry_run", "confirmation_token", "wait"})
"""How a gated call is driven, not what it does: excluded from the arguments a confirmation binds."""


class ToolInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Safety(StrEnum):
    """The single source of the MCP annotations and of read-only filtering."""

    READ = "read"
    CHANGE = "change"
    DESTRUCTIVE = "destructive"


@dataclass(frozen=True)
class Caller:
    """Who is calling, as the surface knows them (``principal``) and through which surface."""

    principal: str
    surface: str


Progress = Callable[[float, float | None, str], Awaitable[None]]


async def no_progress(_done: float, _total: float | None, _message: str) -> None:
    return None


@dataclass
class ToolContext:
    client: FlexusClient
    person: str
    surface: str
    progress: Progress = no_progress
    show_action: Callable[[str], Awaitable[ActionReport]] | None = None
    """A gated action as this person may see it (``Registry.show_action``), for the tool that shows one."""
    read_action: Callable[[str], Awaitable[Any]] | None = None
    """An earlier action and its recorded result (``registry.undo.PastAction``), for an undo's plan: any
    operator may preview an undo, and the plan shows only servers and fields, never a secret."""


@dataclass
class Execution:
    """What the gate hands a tool's executor: the confirmed plan and any decrypted secret."""

    action_id: str
    plan: Plan
    secret: str | None = None
    generated_secret: bool = False
    """The gate generated ``secret`` at preview: the requester may reveal it once after execution."""
    on_jobs: Callable[[list[str]], Awaitable[None]] | None = None

    rollout: Rollout | None = None
    """A rollout in waves (the plan has waves): the executor runs it wave by wave and records each step."""
    on_wave: Callable[[str, WaveReport], Awaitable[bool]] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when this process shuts down: a rollout sends no further wave."""

    async def record_jobs(self, job_ids: list[str]) -> None:
        """Called as soon as jobs exist, so a crash after submission can be reconciled, not re-sent."""
        if self.on_jobs is not None:
            await self.on_jobs(job_ids)

    async def record_wave(self, event: str, wave: WaveReport) -> bool:
        """Store the rollout as it stands, with an audit record of ``event`` about ``wave``, in one
        transaction. False: this process no longer owns the execution, so it must send nothing more."""
        return True if self.on_wave is None else await self.on_wave(event, wave)

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    async def pause(self, seconds: float) -> None:
        """The pause between waves, cut short when this process shuts down."""
        if seconds > 0 and not self.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=seconds)


ReadHandler = Callable[[ToolContext, Any], Awaitable[BaseModel]]
PlanHandler = Callable[[ToolContext, Any], Awaitable[Plan]]
ExecuteHandler = Callable[[ToolContext, Any, Execution], Awaitable[ActionResult]]
ObserveHandler = Callable[[ToolContext, Any, Plan, float], Awaitable[dict[str, str]]]
"""After an interrupted execution: per server, "applied", "not applied" or "unknown", read from the cloud."""


@dataclass(frozen=True)
class ToolSpec:
    name: str
    title: str
    description: str
    input_model: type[ToolInput]
    output_model: type[BaseModel]
    safety: Safety
    idempotent: bool
    run: ReadHandler | None = None
    plan: PlanHandler | None = None
    execute: ExecuteHandler | None = None
    observe: ObserveHandler | None = None
    secret_fields: frozenset[str] = frozenset()
    """Arguments the gate keeps sealed (encrypted) between preview and execution and never shows: a
    password, or user data (a boot script often carries secrets)."""
    secret_generator: Callable[[], str] | None = None
    """Makes the secret when the caller leaves it out: the gate calls it at preview, so the plan (and the
    cloud's dry run) checks the very secret a confirmation will use."""
    shows_actions: bool = False
    """It reports what gated actions came to: outcomes are settled (best effort, briefly) first."""

    @property
    def asks_for_secret(self) -> bool:
        """Every action of this tool carries a secret, given privately or generated at preview (a password
        reset): a chat surface asks for it in a private form and guards its text against pasted secrets. An
        optional sealed argument that chat never takes (user data) asks for nothing."""
        return self.secret_generator is not None

    def __post_init__(self) -> None:
        if self.gated and (self.plan is None or self.execute is None):
            raise TypeError(f"{self.name}: a tool that changes servers needs plan and execute")
        if not self.gated and self.run is None:
            raise TypeError(f"{self.name}: a read tool needs run")

    @property
    def gated(self) -> bool:
        return self.safety is not Safety.READ

    @property
    def annotations(self) -> dict[str, Any]:
        """All four MCP hints, set explicitly (the spec's defaults would call a read 'destructive')."""
        return {
            "title": self.title,
            "readOnlyHint": self.safety is Safety.READ,
            "destructiveHint": self.safety is Safety.DESTRUCTIVE,
            "idempotentHint": self.idempotent,
            "openWorldHint": True,
        }
