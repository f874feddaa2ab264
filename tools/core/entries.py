"""What the gate writes about a change, on the ground floor: the gate builds entries at start-up cost of
nothing, and only the store (loaded on first use) turns them into keyed, chained records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AuditEntry:
    """An audit record to append in the same transaction as the state change it describes."""

    event: str
    person: str | None
    surface: str | None
    tool: str | None
    action_id: str | None
    detail: dict[str, Any]
