"""The states of a gated action, named once: the gate moves actions between them, surfaces show them."""

from __future__ import annotations

from enum import StrEnum


class ActionState(StrEnum):
    PENDING = "pending"  # previewed, waiting for its person's confirmation
    AWAITING_APPROVAL = "awaiting_approval"  # confirmed, waiting for a second person
    APPROVED = "approved"  # approved, about to execute
    EXECUTING = "executing"  # owned by the process running it (a lease)
    SUBMITTED = "submitted"  # the cloud has its jobs
    UNKNOWN = "unknown"  # sent, outcome not known yet: settled by observation
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"  # a rollout in waves that stopped before its last wave: the rest was never sent
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


OPEN_STATES = (ActionState.PENDING, ActionState.AWAITING_APPROVAL)
"""Waiting for a person: they expire."""
UNSETTLED_STATES = (ActionState.EXECUTING, ActionState.SUBMITTED, ActionState.UNKNOWN)
"""Sent or being sent, outcome not recorded yet: settled from the cloud once nobody owns them."""
RUNNING_STATES = (ActionState.APPROVED, ActionState.EXECUTING, ActionState.SUBMITTED)
"""Decided, not finished."""
FINISHED_STATES = (ActionState.SUCCEEDED, ActionState.FAILED, ActionState.STOPPED, ActionState.UNKNOWN)
"""Executed, with an outcome on record (unknown ones are settled later)."""
DONE_STATES = (*RUNNING_STATES[1:], *FINISHED_STATES)
"""Confirmation used: executing or after."""
