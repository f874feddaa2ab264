"""Following what the gate runs: a job's progress into a chat message, an approval request until it is
decided. Both are about pacing and failure, not about any chat: the surface says how to show a step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from flexus_ops.core.plans import ActionView
from flexus_ops.core.states import RUNNING_STATES, ActionState
from flexus_ops.registry.registry import Registry

log = logging.getLogger("flexus_ops.bots")

Show = Callable[[float, float | None, str], Awaitable[object]]
"""Shows one step of a job: done, total (None while unknown), the registry's note."""


class Follower:
    """The registry's progress callback: shows the job's steps at most once per ``interval`` seconds, only
    when something moved, and never lets a failure of the chat reach the execution it reports on. Chats
    limit edits (Slack: five per response_url), so an unchanged step is not worth one."""

    def __init__(self, show: Show, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.show = show
        self.interval = interval
        self.clock = clock
        self.last: float | None = None
        self.shown: tuple[float, float | None] | None = None

    async def __call__(self, done: float, total: float | None, note: str) -> None:
        now = self.clock()
        if total and done >= total:
            return  # the final result replaces the message right after
        if self.last is not None and now - self.last < self.interval:
            return
        if (done, total) == self.shown:
            return  # nothing moved: keep the chat's few edits for news
        self.last, self.shown = now, (done, total)
        try:
            await self.show(done, total, note)
        except Exception as exc:
            log.warning("chat progress update failed: %s", type(exc).__name__)


async def until_decided(
    registry: Registry,
    action_id: str,
    *,
    interval: float,
    watching: Callable[[], bool],
    busy: Callable[[], bool] = lambda: False,
) -> ActionView | None:
    """The gate's record of an approval request once it is decided or expired, polled from the store (so
    it needs no coordination with other replicas). None when the request is gone or ``watching()`` turns
    false. While ``busy()`` (a click here is deciding it) or it is still running, it waits: whoever
    decided shows the outcome, with the per-server result. Expiry is the gate's; this only asks for it
    when it is due, so the wait ends on time."""
    while watching():
        row = await registry.action(action_id)
        if row is None:
            return None
        if busy() or row.state in (ActionState.AWAITING_APPROVAL, *RUNNING_STATES):
            if row.state == ActionState.AWAITING_APPROVAL and row.expires_at <= registry.clock():
                await registry.gate.expire_due()
                continue
            wait = interval
            if row.state == ActionState.AWAITING_APPROVAL:
                wait = min(wait, max(0.0, row.expires_at - registry.clock()) + 0.05)
            await asyncio.sleep(wait)
            continue
        return row
    return None


async def until_finished(
    registry: Registry, action_id: str, *, interval: float, progress: Show, watching: Callable[[], bool] = lambda: True
) -> ActionView | None:
    """A rollout running in the background (here or on another replica), followed from the store: each
    wave that finishes is shown through ``progress``; the action once it is finished. None when it is
    gone or ``watching()`` turns false."""
    shown = 0  # the message already says the first wave is on its way
    interval = max(interval, 0.1)  # a store read per poll: never a busy loop
    while watching():
        view = await registry.action(action_id)
        if view is None:
            return None
        if view.state not in RUNNING_STATES:
            return view
        if view.rollout is not None:
            waves = view.rollout.waves
            done = sum(wave.state in ("done", "failed") for wave in waves)
            if done != shown:
                shown = done
                await progress(done, len(waves), f"wave {done} of {len(waves)} finished")
        await asyncio.sleep(interval)
    return None
