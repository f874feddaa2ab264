"""The gate: preview, confirm, approve. Every tool that changes a server passes through here, whatever
surface it came from, so no surface can skip a step.

1. ``preview`` reads the targets, says per server what will happen, and records a pending action
   bound to the person, the tool and the canonical arguments (single use, expiring).
2. ``confirm`` (a token from the preview, or a human's answer to an elicitation/terminal prompt/Slack
   button) re-reads the targets, refuses if the plan no longer holds, and executes exactly once.
3. For tools that need approval, confirming turns the action into an approval request; ``approve`` by
   a *different* authorised person executes it once.

Every state change and its audit record are one transaction, and a change that lost its compare-and-set
writes no record. An execution belongs to the process running it (an owner and a lease it renews while
the call is in flight); only after the lease has run out may another process settle it, from what the
cloud shows, never by sending anything again. All store calls go through ``AsyncStore``: off the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr

from ..cloud.retries import retry_listener
from ..core.entries import AuditEntry
from ..core.errors import FlexusError, JobTimeout, OutcomeUnknown, Refused, StoreError, TransportError, bounded
from ..core.plans import ActionResult, NextCall, Plan, Preview, Rollout, ServerResult, WaveReport
from ..core.states import DONE_STATES, FINISHED_STATES, OPEN_STATES, ActionState
from ..core.tools import GATE_FIELDS, Execution, ToolContext, ToolSpec
from .canonical import canonical_json
from .policy import Policy, Role
from .secrets import Keys

if TYPE_CHECKING:
    from .store import AsyncStore

log = logging.getLogger("flexus_ops.gate")

SWEEP_INTERVAL_SECONDS = 1.0
ROLLOUT_STOP_SECONDS = 5.0
"""On shutdown, how long a rollout may take to finish its current wave before it is left for the settler."""
# Who runs an execution: this process, named so that a person reading the store can find it.
OWNER = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def plan_fingerprint(plan: Plan) -> str:
    material = {
        "tool": plan.tool,
        "items": [[i.server_id, i.status, i.task, i.locked, i.act] for i in plan.items],
        "changes": plan.changes,
    }
    return hashlib.sha256(canonical_json(material).encode()).hexdigest()


def plan_difference(before: Plan, now: Plan) -> str:
    """What changed between the previewed plan and the plan now, server by server: those that joined the
    targets (a selection matches them now), those that left them, and those whose state changed."""
    old = {item.server_id: item for item in before.items}
    current = {item.server_id for item in now.items}
    lines = []
    for item in now.items:
        was = old.get(item.server_id)
        if was is None:
            lines.append(f"{item.name or item.server_id}: joined since the preview ({item.status}): {item.note}")
            continue
        if (was.status, was.task, was.locked, was.act) != (item.status, item.task, item.locked, item.act):
            lines.append(
                f"{item.name or item.server_id}: was {was.status}{f' ({was.task})' if was.task else ''}, "
                f"now {item.status}{f' ({item.task})' if item.task else ''}: {item.note}"
            )
    for item in before.items:
        if item.server_id not in current:
            lines.append(f"{item.name or item.server_id}: left since the preview (no longer matches, or gone)")
    if before.changes != now.changes:
        lines.append("the fields to change are no longer the same (the server was changed meanwhile)")
    return "; ".join(lines) or "the plan changed"


def recorded_result(action: dict[str, Any]) -> ActionResult:
    """What the store says an action came to, as a result a surface can show."""
    stored = json.loads(action["result_json"]) if action["result_json"] else {}
    if "status" in stored:
        return ActionResult.model_validate(stored)
    if action["state"] == ActionState.AWAITING_APPROVAL:
        message = f"confirmed; waiting for approval until {_when(action['expires_at'])}"
        return ActionResult(status="awaiting_approval", action_id=action["id"], message=message)
    rollout = Rollout.model_validate_json(action["rollout_json"]) if action.get("rollout_json") else None
    if action["state"] in (ActionState.APPROVED, ActionState.EXECUTING):
        job_ids = json.loads(action["job_ids"]) if action["job_ids"] else []
        message = f"rolling out: {rollout.progress_note()}" if rollout is not None else "being executed"
        return ActionResult(status="running", action_id=action["id"], job_ids=job_ids, message=message, rollout=rollout)
    detail = stored.get("error") or stored.get("reconciled") or f"state {action['state']}"
    status = action["state"] if action["state"] in ("succeeded", "submitted", "unknown") else "failed"
    job_ids = json.loads(action["job_ids"]) if action["job_ids"] else []
    return ActionResult(status=status, action_id=action["id"], job_ids=job_ids, message=bounded(str(detail)))


def resume_call(action: dict[str, Any], servers: list[str]) -> NextCall:
    """The call that previews the rest of a stopped rollout: the same arguments, for these servers only."""
    arguments = {k: v for k, v in json.loads(action["args_json"]).items() if k not in ("select", "undo_of")}
    return NextCall(tool=action["tool"], arguments={**arguments, "servers": servers})


class Gate:
    def __init__(
        self,
        store: AsyncStore,
        policy: Policy,
        keys: Keys,
        *,
        lease_seconds: float = 10.0,
        rollout_wait_seconds: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.rollout_wait_seconds = rollout_wait_seconds  # the longest a caller who asked to wait waits
        # Rollouts this process runs in the background, by action id: stopped (and waited for) on close.
        self.rollouts: dict[str, tuple[asyncio.Task[ActionResult], Execution]] = {}
        self.clock = clock
        self.policy = policy
        self.keys = keys
        self.lease_seconds = lease_seconds
        self._next_sweep = 0.0

    # -- binding ----------------------------------------------------------------------------

    def bind_arguments(self, spec: ToolSpec, args: BaseModel) -> tuple[dict[str, Any], str, str | None]:
        """(arguments people may read, hash a confirmation is bound to, the secret argument if any)."""
        values = args.model_dump(mode="python", exclude=set(GATE_FIELDS))
        shown: dict[str, Any] = {}
        hashed: dict[str, Any] = {}
        secret: str | None = None
        for name, value in values.items():
            if name in spec.secret_fields:
                if isinstance(value, SecretStr):
                    secret = value.get_secret_value()
                    hashed[name] = self.keys.bind(secret)
                    shown[name] = "<hidden>"
                continue
            shown[name] = hashed[name] = value
        digest = hashlib.sha256(canonical_json({"tool": spec.name, "args": hashed}).encode()).hexdigest()
        return json.loads(canonical_json(shown)), digest, secret

    def rebuild_arguments(self, spec: ToolSpec, action: dict[str, Any]) -> BaseModel:
        """The arguments as the requester gave them, for a confirmation or an execution that happens later.
        A secret the gate generated is no argument of theirs: ``with_generated_secret`` adds it."""
        values = {k: v for k, v in json.loads(action["args_json"]).items() if k not in spec.secret_fields}
        if action["secret"] is not None and not self.secret_was_generated(spec, action):
            for name in spec.secret_fields:
                values[name] = self.keys.decrypt(action["secret"], context=action["id"])
        return spec.input_model.model_validate(values)

    # -- a secret generated at preview ------------------------------------------------------

    @staticmethod
    def secret_was_generated(spec: ToolSpec, action: dict[str, Any]) -> bool:
        """The action holds a secret its requester did not give (the arguments show no secret field)."""
        return action["secret"] is not None and not spec.secret_fields & set(json.loads(action["args_json"]))

    @staticmethod
    def _with_secret(spec: ToolSpec, args: BaseModel, secret: str) -> BaseModel:
        return args.model_copy(update=dict.fromkeys(spec.secret_fields, SecretStr(secret)))

    def with_generated_secret(self, spec: ToolSpec, action: dict[str, Any], args: BaseModel) -> BaseModel:
        """``args`` with the secret generated at the action's preview, so a re-plan (and the cloud's dry
        run in it) checks the very secret the preview checked and the execution will send."""
        if not self.secret_was_generated(spec, action):
            return args
        return self._with_secret(spec, args, self.keys.decrypt(action["secret"], context=action["id"]))

    @staticmethod
    def _say_generated(spec: ToolSpec, plan: Plan) -> Plan:
        """The plan says the secret was generated, never what it is."""
        for name in spec.secret_fields:
            plan.changes[name] = (
                "generated at preview and checked by the cloud's dry run (hidden); the requester can reveal "
                "it once after execution"
            )
        return plan

    # -- audit ------------------------------------------------------------------------------

    @staticmethod
    def entry(
        event: str,
        action: dict[str, Any] | None,
        *,
        person: str | None,
        surface: str | None,
        tool: str | None = None,
        **detail: Any,
    ) -> AuditEntry:
        """An audit record about ``action``, to be written with the state change it describes."""
        if action is not None:
            detail.setdefault("arguments", json.loads(action["args_json"]))
        return AuditEntry(
            event=event,
            person=person,
            surface=surface,
            tool=tool or (action["tool"] if action else None),
            action_id=action["id"] if action else None,
            detail={k: v for k, v in detail.items() if v is not None},
        )

    async def audit(self, event: str, action: dict[str, Any] | None, **fields: Any) -> None:
        """A record with no state change of its own (a replay, a reveal)."""
        await self.store.append_audit(self.entry(event, action, **fields))

    async def refused(
        self, refusal: Refused, action: dict[str, Any] | None, *, person: str, surface: str, tool: str | None = None
    ) -> Refused:
        """``refusal``, audited first (``refused``): an attempt at a change or a decision by someone the policy
        does not allow (no role, not an approver, the requester approving, not a person at all: then
        ``person`` is the principal the caller proved). Who, where, which tool and why; tied to an action
        (and its recorded arguments, never a secret) only when it is the person's own request."""
        await self.audit("refused", action, person=person, surface=surface, tool=tool, reason=str(refusal))
        return refusal

    # -- expiry -----------------------------------------------------------------------------

    async def expire_due(self, *, force: bool = False) -> None:
        """Record expiries (and erase their secrets). Housekeeping only: every decision checks expiry itself,
        so this runs at most once a second per process unless forced."""
        now = time.monotonic()
        if not force and now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL_SECONDS
        for action in await self.store.due_for_expiry(OPEN_STATES):
            entry = self.entry(
                "expired",
                action,
                person=action["person"],
                surface="gate",
                was=action["state"],
                expired_at=_when(action["expires_at"]),
            )
            await self.store.transition(
                action["id"], [action["state"]], ActionState.EXPIRED, secret=None, audit_entry=entry
            )
        await self.store.erase_stale_reveals()

    # -- preview ----------------------------------------------------------------------------

    async def preview(self, ctx: ToolContext, spec: ToolSpec, args: BaseModel, principal: str) -> Preview:
        assert spec.plan is not None
        shown, args_hash, secret = self.bind_arguments(spec, args)
        reused = await self.store.find_open_action(ctx.person, spec.name, args_hash, [ActionState.PENDING])
        generator = spec.secret_generator if secret is None and spec.secret_fields else None
        if generator is not None:
            # Made now, not at execution, so the plan's dry run checks the secret a confirmation sends; the
            # same question again keeps its secret (what was checked is what is kept).
            if reused is not None and self.secret_was_generated(spec, reused):
                secret = self.keys.decrypt(reused["secret"], context=reused["id"])
            else:
                secret = generator()
            args = self._with_secret(spec, args, secret)
        plan = await spec.plan(ctx, args)
        if problem := self.policy.blast_radius_problem(len(plan.acting)):
            raise Refused(problem)
        if generator is not None:
            self._say_generated(spec, plan)
        fingerprint = plan_fingerprint(plan)
        needs_approval = self.policy.needs_approval(spec.name, len(plan.acting))
        settings = self.policy.settings
        if reused is not None and reused["plan_hash"] == fingerprint:
            action = reused  # the same question again (e.g. a client's retry): keep one pending action
        else:
            now = self.clock()
            action = {
                "id": secrets.token_hex(16),
                "tool": spec.name,
                "person": ctx.person,
                "principal": principal,
                "surface": ctx.surface,
                "args_json": canonical_json(shown),
                "args_hash": args_hash,
                "plan_json": plan.model_dump_json(),
                "plan_hash": fingerprint,
                "state": ActionState.PENDING,
                "needs_approval": needs_approval,
                "reason": getattr(args, "reason", None),
                "created_at": now,
                "expires_at": now + settings.confirmation_ttl_seconds,
                "updated_at": now,
            }
            if secret is not None:
                action["secret"] = self.keys.encrypt(secret, context=action["id"])
            entry = self.entry(
                "preview",
                action,
                person=ctx.person,
                surface=ctx.surface,
                plan=plan.summary,
                acting=[i.server_id for i in plan.acting],
            )
            await self.store.create_action(action, entry)

        token: str | None = self.keys.issue_token(action["id"], ctx.person, spec.name, args_hash)
        approvers = [p.id for p in self.policy.approvers if p.id != ctx.person]
        runnable = bool(plan.acting) and (approvers != [] or not needs_approval)
        if not plan.items:
            token, step = None, "Nothing matched: no server fits this selection, so there is nothing to do."
        elif not plan.acting:
            token, step = None, "Nothing to do: no server is in a state this action applies to."
        elif needs_approval and not approvers:
            token = None
            step = (
                "Cannot run: this tool needs approval by a second person and the policy names no approver "
                "other than you. Ask an admin to add one to the policy file."
            )
        else:
            step = "Ask the user to confirm this exact plan."
            if settings.confirmation_fallback == "deny":
                token = None
                step += " Confirmation by token is disabled: use a client that can prompt the user (elicitation)."
            else:
                step += " Then call again with the same arguments and this confirmation_token."
            if needs_approval:
                step += f" After confirmation it waits for approval by one of: {', '.join(approvers)}."
                if not self.policy.needs_approval(spec.name):
                    step += (
                        f" (It acts on {len(plan.acting)} servers; the policy asks a second person above "
                        f"{settings.approve_above_servers}.)"
                    )
        return Preview(
            action_id=action["id"],
            plan=plan,
            confirmation_token=token,
            expires_at=_when(action["expires_at"]),
            needs_approval=needs_approval,
            runnable=runnable,
            next_step=step,
        )

    # -- confirm ----------------------------------------------------------------------------

    def _explain_closed(self, action: dict[str, Any]) -> str:
        state = action["state"]
        if state in DONE_STATES:
            by = action["executed_by"] or action["decided_by"] or "someone"
            return f"already done by {by} (via {action['confirmed_via'] or 'approval'}); state {state}"
        if state == ActionState.APPROVED:
            return f"already approved by {action['decided_by']}; it is being executed"
        if state == ActionState.AWAITING_APPROVAL:
            return "already confirmed; it is waiting for approval"
        if state == ActionState.REJECTED:
            return f"rejected by {action['decided_by']}: {action['decision_note'] or 'no reason given'}"
        if state == ActionState.EXPIRED:
            return f"expired at {_when(action['expires_at'])}; preview again"
        if state == ActionState.CANCELLED:
            return f"cancelled: {action['decision_note'] or 'no reason given'}; preview again"
        return f"not open (state {state})"

    async def _lost(
        self, action: dict[str, Any], attempt: str, person: str, surface: str, via: str | None = None
    ) -> Refused:
        """The refusal for a compare-and-set that lost (a double click, two approvers at once): it says who
        won, and the losing attempt is audited as a refused second use (``replay_refused`` for a confirmation,
        ``approve_refused`` / ``reject_refused`` for a decision)."""
        now = await self.store.get_action(action["id"]) or action
        event = "replay_refused" if attempt == "confirm" else f"{attempt}_refused"
        await self.audit(event, now, person=person, surface=surface, via=via, state=now["state"])
        return Refused(self._explain_closed(now))

    async def _check_token(self, spec: ToolSpec, ctx: ToolContext, args_hash: str, token: str) -> dict[str, Any]:
        person = ctx.person
        if self.policy.settings.confirmation_fallback == "deny":
            raise Refused(
                "confirmation_token: confirmation by token is disabled by policy (confirmation_fallback = "
                "'deny'); use a client that can prompt the user"
            )
        action_id = self.keys.action_id_of(token)
        action = await self.store.get_action(action_id) if action_id else None
        if action is None or not self.keys.token_matches(
            token, action["id"], action["person"], action["tool"], action["args_hash"]
        ):
            raise Refused("confirmation_token: not a token this gate issued (forged, altered or truncated)")
        if action["tool"] != spec.name:
            raise Refused(f"confirmation_token: it confirms {action['tool']}, not {spec.name}")
        if action["person"] != person:
            # A genuine token in the wrong hands is worth the security lead's attention.
            await self.audit("confirm_refused", action, person=person, surface=ctx.surface, via="token")
            raise Refused("confirmation_token: it was issued to another person; only they can confirm it")
        if action["args_hash"] != args_hash:
            raise Refused(
                "confirmation_token: the arguments differ from the previewed ones "
                f"({bounded(action['args_json'], 300)}); preview the new arguments first"
            )
        return action

    async def confirm(
        self,
        ctx: ToolContext,
        spec: ToolSpec,
        args: BaseModel,
        *,
        token: str | None,
        via: str,
        action_id: str | None = None,
        answer_key: str | None = None,
        wait: bool | None = None,
        wait_seconds: float | None = None,
    ) -> ActionResult:
        """Confirm by token, or by the id of the preview a person was shown and answered (a button, a
        terminal prompt, an elicitation). Every confirmation names one action and is used once: the
        compare-and-set that moves it out of ``pending`` consumes it (and ``answer_key``, the answer that
        confirmed it). Used again by the same person, it gets the recorded outcome marked as a replay;
        by anyone else, a refusal; never a second execution."""
        await self.expire_due()
        _shown, args_hash, _secret = self.bind_arguments(spec, args)
        if token is not None:
            action = await self._check_token(spec, ctx, args_hash, token)
        elif action_id is not None:
            by_id = await self.store.get_action(action_id)
            if by_id is None or by_id["tool"] != spec.name:
                raise Refused("no such preview")
            if by_id["person"] != ctx.person:
                await self.audit("confirm_refused", by_id, person=ctx.person, surface=ctx.surface, via=via)
                raise Refused("this preview belongs to another person; only they can confirm it")
            if by_id["args_hash"] != args_hash:
                raise Refused("the arguments differ from the previewed ones; preview again")
            action = by_id
        else:
            raise Refused("nothing to confirm: name the preview (its confirmation_token or action id)")
        if action["state"] != ActionState.PENDING:
            return await self._replay(action, ctx.person, ctx.surface, via)
        consumed = {"answer_key": answer_key} if answer_key else {}
        if action["expires_at"] <= self.clock():
            await self.expire_due(force=True)
            raise Refused(f"the preview expired at {_when(action['expires_at'])}; preview again")
        assert spec.plan is not None
        args = self.with_generated_secret(spec, action, args)
        current = await spec.plan(ctx, args)
        if problem := self.policy.blast_radius_problem(len(current.acting)):
            raise Refused(problem)  # the policy was tightened since the preview
        if self.secret_was_generated(spec, action):
            self._say_generated(spec, current)
        if plan_fingerprint(current) != action["plan_hash"]:
            # The previewed plan is parsed only to say what changed: a plan that still holds needs its hash.
            difference = plan_difference(Plan.model_validate_json(action["plan_json"]), current)
            entry = self.entry(
                "refused", action, person=ctx.person, surface=ctx.surface, via=via, difference=difference
            )
            if await self.store.transition(
                action["id"],
                [ActionState.PENDING],
                ActionState.CANCELLED,
                secret=None,
                decision_note=f"state changed before confirmation: {difference}",
                audit_entry=entry,
            ):
                raise Refused(
                    f"the servers changed since the preview, so it no longer holds: {difference}. Preview again."
                )
            # Someone else confirmed it meanwhile: the change we see is theirs, say so.
            raise await self._lost(action, "confirm", ctx.person, ctx.surface, via)

        if action["needs_approval"] or self.policy.needs_approval(spec.name, len(current.acting)):
            if not [p for p in self.policy.approvers if p.id != ctx.person]:
                raise Refused("no approver other than you is named in the policy; this cannot run")
            expires = self.clock() + self.policy.settings.approval_ttl_seconds
            entry = self.entry(
                "approval_requested",
                action,
                person=ctx.person,
                surface=ctx.surface,
                via=via,
                reason=action["reason"],
                expires_at=_when(expires),
            )
            if not await self.store.transition(
                action["id"],
                [ActionState.PENDING],
                ActionState.AWAITING_APPROVAL,
                unexpired=True,
                confirmed_via=via,
                expires_at=expires,
                audit_entry=entry,
                **consumed,
            ):
                raise await self._lost(action, "confirm", ctx.person, ctx.surface, via)
            approvers = ", ".join(p.id for p in self.policy.approvers if p.id != ctx.person)
            return ActionResult(
                status="awaiting_approval",
                action_id=action["id"],
                message=f"confirmed; waiting for approval by one of: {approvers} (until {_when(expires)})",
            )

        entry = self.entry("confirmed", action, person=ctx.person, surface=ctx.surface, via=via)
        if not await self.store.transition(
            action["id"],
            [ActionState.PENDING],
            ActionState.EXECUTING,
            unexpired=True,
            executed_by=ctx.person,
            confirmed_via=via,
            audit_entry=entry,
            **self._lease(),
            **consumed,
        ):
            raise await self._lost(action, "confirm", ctx.person, ctx.surface, via)
        secret = self.keys.decrypt(action["secret"], context=action["id"]) if action["secret"] else None
        return await self._execute(ctx, spec, args, action, current, secret, wait=wait, wait_seconds=wait_seconds)

    async def _replay(self, action: dict[str, Any], person: str, surface: str, via: str) -> ActionResult:
        """A confirmation used again: the recorded outcome for its owner, a refusal for anyone else.
        Either way the attempt is audited: a replay is worth a security lead's attention."""
        state = action["state"]
        settled = (
            ActionState.AWAITING_APPROVAL,
            ActionState.SUBMITTED,
            ActionState.SUCCEEDED,
            ActionState.FAILED,
            ActionState.STOPPED,
            ActionState.UNKNOWN,
        )
        running = state == ActionState.EXECUTING and action.get("rollout_json") is not None  # a rollout: where it is
        if action["person"] != person or (state not in settled and not running):
            await self.audit("replay_refused", action, person=person, surface=surface, via=via, state=state)
            raise Refused(self._explain_closed(action) + "; this request was not run again")
        await self.audit("replayed", action, person=person, surface=surface, via=via, state=state)
        recorded = recorded_result(action)
        return recorded.model_copy(
            update={
                "replay": True,
                "message": "REPLAY: this confirmation was already used; nothing was run again. "
                f"Recorded outcome: {recorded.message}",
            }
        )

    # -- approval ---------------------------------------------------------------------------

    async def _approver_check(
        self, person: str, surface: str, action: dict[str, Any] | None, verb: str
    ) -> dict[str, Any]:
        who = self.policy.person(person)
        if who is None or not who.has(Role.APPROVER):
            # Recorded without the action: the refusal must not tell a real id from a made-up one, even to a
            # reader of their own records.
            refusal = Refused(f"{person} is not an approver; only approvers named in the policy can {verb}")
            raise await self.refused(refusal, None, person=person, surface=surface)
        if action is None:
            raise Refused("no such approval request")
        if action["person"] == person:
            refusal = Refused(f"you requested this; a different person must {verb} it (separation of duties)")
            raise await self.refused(refusal, action, person=person, surface=surface)
        if action["state"] != ActionState.AWAITING_APPROVAL:
            raise Refused(self._explain_closed(action))
        if action["expires_at"] <= self.clock():
            await self.expire_due(force=True)
            raise Refused(f"the request expired at {_when(action['expires_at'])} before anyone approved it")
        return action

    async def approve(
        self,
        ctx: ToolContext,
        spec: ToolSpec,
        action_id: str,
        note: str | None,
        *,
        wait: bool | None = None,
        wait_seconds: float | None = None,
    ) -> ActionResult:
        await self.expire_due()
        action = await self._approver_check(ctx.person, ctx.surface, await self.store.get_action(action_id), "approve")
        entry = self.entry(
            "approved", action, person=ctx.person, surface=ctx.surface, requester=action["person"], note=note
        )
        if not await self.store.transition(
            action_id,
            [ActionState.AWAITING_APPROVAL],
            ActionState.APPROVED,
            unexpired=True,
            decided_by=ctx.person,
            decided_at=self.clock(),
            decision_note=note,
            audit_entry=entry,
        ):
            raise await self._lost(action, "approve", ctx.person, ctx.surface)
        args = self.with_generated_secret(spec, action, self.rebuild_arguments(spec, action))
        requester_ctx = ToolContext(
            client=ctx.client,
            person=ctx.person,
            surface=ctx.surface,
            progress=ctx.progress,
            read_action=ctx.read_action,
        )
        assert spec.plan is not None
        current = await spec.plan(requester_ctx, args)
        if self.secret_was_generated(spec, action):
            self._say_generated(spec, current)
        if plan_fingerprint(current) != action["plan_hash"]:
            difference = plan_difference(Plan.model_validate_json(action["plan_json"]), current)
            await self.store.transition(
                action_id,
                [ActionState.APPROVED],
                ActionState.CANCELLED,
                secret=None,
                decision_note=f"state changed before execution: {difference}",
                audit_entry=self.entry(
                    "refused", action, person=ctx.person, surface=ctx.surface, difference=difference
                ),
            )
            raise Refused(f"approved, but the servers changed since the request, so it was not run: {difference}")
        if not await self.store.transition(
            action_id, [ActionState.APPROVED], ActionState.EXECUTING, executed_by=ctx.person, **self._lease()
        ):
            raise await self._lost(action, "approve", ctx.person, ctx.surface)
        secret = self.keys.decrypt(action["secret"], context=action_id) if action["secret"] else None
        return await self._execute(
            requester_ctx, spec, args, action, current, secret, wait=wait, wait_seconds=wait_seconds
        )

    async def reject(self, person: str, surface: str, action_id: str, note: str | None) -> None:
        await self.expire_due()
        action = await self.store.get_action(action_id)
        if action is not None and action["person"] == person:
            # A requester may withdraw their own request while it is open; once closed (by them a moment
            # ago, say), the answer says how it closed: their own request is theirs to ask about.
            if action["state"] in OPEN_STATES and await self.store.transition(
                action_id,
                OPEN_STATES,
                ActionState.CANCELLED,
                secret=None,
                decided_by=person,
                decided_at=self.clock(),
                decision_note=note or "withdrawn by the requester",
                audit_entry=self.entry("cancelled", action, person=person, surface=surface, note=note),
            ):
                return
            raise Refused(self._explain_closed(await self.store.get_action(action_id) or action))
        action = await self._approver_check(person, surface, action, "reject")
        if not await self.store.transition(
            action_id,
            [ActionState.AWAITING_APPROVAL],
            ActionState.REJECTED,
            secret=None,
            decided_by=person,
            decided_at=self.clock(),
            decision_note=note,
            audit_entry=self.entry(
                "rejected", action, person=person, surface=surface, requester=action["person"], note=note
            ),
        ):
            raise await self._lost(action, "reject", person, surface)

    async def reveal(self, person: str, surface: str, action_id: str) -> str:
        blob = await self.store.take_reveal_secret(action_id, person)
        if blob is None:
            raise Refused("nothing to reveal: only the requester can reveal a generated password, once, soon after")
        await self.audit("revealed", await self.store.get_action(action_id), person=person, surface=surface)
        return self.keys.decrypt(blob, context=f"reveal:{action_id}")

    # -- execution --------------------------------------------------------------------------

    def _lease(self) -> dict[str, Any]:
        return {"owner": OWNER, "lease_until": self.clock() + self.lease_seconds}

    async def _keep_lease(self, action_id: str) -> None:
        """Renew this process's lease while its execution is in flight; a dead process stops renewing."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                if not await self.store.renew_lease(action_id, OWNER, self.clock() + self.lease_seconds):
                    log.warning("execution %s: lost its lease (settled elsewhere)", action_id)
                    return
            except StoreError as exc:  # keep trying: the database may come back before the lease runs out
                log.warning("execution %s: lease not renewed: %s", action_id, exc)

    async def _execute(
        self,
        ctx: ToolContext,
        spec: ToolSpec,
        args: BaseModel,
        action: dict[str, Any],
        plan: Plan,
        secret: str | None,
        *,
        wait: bool | None = None,
        wait_seconds: float | None = None,
    ) -> ActionResult:
        """``wait`` (else the arguments' ``wait``): a rollout in waves answers at its end, waiting at most
        ``wait_seconds`` (default ``rollout_wait_seconds``; infinity: to the end), not after its first wave."""
        assert spec.execute is not None
        action_id = action["id"]
        if plan.waves:
            asked = wait if wait is not None else getattr(args, "wait", None)
            bound = self.rollout_wait_seconds if wait_seconds is None else wait_seconds
            return await self._start_rollout(ctx, spec, args, action, plan, waiting=bound if asked is True else None)
        sent: list[str] = []  # job ids, once the cloud has them

        async def on_jobs(job_ids: list[str]) -> None:
            sent.extend(job_ids)
            entry = self.entry("submitted", action, person=ctx.person, surface=ctx.surface, job_ids=job_ids)
            await self.store.transition(
                action_id,
                [ActionState.EXECUTING],
                ActionState.SUBMITTED,
                owned_by=OWNER,
                job_ids=json.dumps(job_ids),
                audit_entry=entry,
            )

        execution = Execution(action_id=action_id, plan=plan, secret=secret, on_jobs=on_jobs)
        execution.generated_secret = self.secret_was_generated(spec, action)
        heartbeat = asyncio.create_task(self._keep_lease(action_id))
        try:
            result = await spec.execute(ctx, args, execution)
        except (TransportError, JobTimeout, StoreError) as exc:
            raise await self._unknown(ctx, spec, action, exc, sent) from None
        except FlexusError as exc:
            # The cloud refused it outright (or it was refused before sending): nothing was applied.
            await self._record_failure(ctx, action, exc)
            raise
        finally:
            while not heartbeat.done():  # until it is really gone, however a cancellation races its calls
                heartbeat.cancel()
                await asyncio.wait([heartbeat], timeout=1)
        unknown = any(o.outcome == "unknown" for o in result.servers)
        final = (
            "unknown"
            if unknown
            else {"succeeded": "succeeded", "nothing_to_do": "succeeded"}.get(
                result.status, "submitted" if result.status == "submitted" else "failed"
            )
        )
        values: dict[str, Any] = {"secret": None, "result_json": result.model_dump_json(), "lease_until": None}
        if result.job_ids:
            values["job_ids"] = json.dumps(result.job_ids)
        if execution.generated_secret and execution.secret is not None:
            values["reveal_secret"] = self.keys.encrypt(execution.secret, context=f"reveal:{action_id}")
            values["reveal_expires_at"] = self.clock() + self.policy.settings.reveal_ttl_seconds
        try:
            won = await self._record_final(
                ctx,
                action,
                final,
                values,
                outcome=result.status,
                job_ids=result.job_ids or None,
                servers={o.server_id: o.outcome for o in result.servers},
            )
        except StoreError as exc:
            raise OutcomeUnknown(
                f"{spec.title}: {result.message}, but recording the outcome failed ({exc}). Nothing will be "
                f"sent again; flexus-ops settles action {action_id} from the cloud once the store is back."
                + (f" Jobs: {', '.join(result.job_ids)}." if result.job_ids else ""),
                action_id,
            ) from None
        if not won:
            settled = await self.store.get_action(action_id) or {}
            result = result.model_copy(
                update={
                    "message": f"{result.message} (meanwhile the store settled this action as "
                    f"{settled.get('state', 'unknown')} from the cloud; this is what this execution saw)"
                }
            )
        return result

    # -- rollouts in waves ------------------------------------------------------------------

    async def _start_rollout(
        self,
        ctx: ToolContext,
        spec: ToolSpec,
        args: BaseModel,
        action: dict[str, Any],
        plan: Plan,
        *,
        waiting: float | None,
    ) -> ActionResult:
        """Run a rollout in the background, owned by this process (its lease renewed until the end), and
        answer once its first wave is submitted, or at its end when the caller waits (at most
        ``rollout_wait_seconds``). Progress goes to the caller while the call lasts, per wave."""
        assert spec.execute is not None
        action_id = action["id"]
        rollout = Rollout.of(plan)
        first_sent = asyncio.Event()
        attached = True
        caller_progress = ctx.progress

        async def relay(done: float, total: float | None, message: str) -> None:
            nonlocal attached
            if not attached:  # the call that reported to its client has returned: nobody to tell any more
                return
            try:
                await caller_progress(done, total, message)
            except Exception as exc:  # a caller gone mid-call must not stop the rollout it started
                log.info("rollout %s: progress not delivered (%s); the caller is no longer told", action_id, exc)
                attached = False

        def all_jobs() -> list[str]:
            return [job for wave in rollout.waves for job in wave.job_ids]

        async def on_wave(event: str, wave: WaveReport) -> bool:
            entry = self.entry(
                event,
                action,
                person=ctx.person,
                surface=ctx.surface,
                arguments=None,  # in the action's preview and confirmation records; a wave names its servers
                wave=wave.number,
                waves=len(rollout.waves),
                servers=wave.servers,
                job_ids=wave.job_ids or None,
                state=wave.state,
                note=wave.note,
            )
            moved = await self.store.transition(
                action_id,
                [ActionState.EXECUTING],
                ActionState.EXECUTING,
                owned_by=OWNER,
                wave=rollout.reached,
                rollout_json=rollout.model_dump_json(),
                job_ids=json.dumps(all_jobs()),
                audit_entry=entry,
            )
            if event != "wave_started":
                first_sent.set()
            return moved

        background = ToolContext(client=ctx.client, person=ctx.person, surface=ctx.surface, progress=relay)
        execution = Execution(action_id=action_id, plan=plan, rollout=rollout, on_wave=on_wave)

        async def run() -> ActionResult:
            heartbeat = asyncio.create_task(self._keep_lease(action_id))
            try:
                assert spec.execute is not None
                result = await spec.execute(background, args, execution)
            finally:
                first_sent.set()
                while not heartbeat.done():
                    heartbeat.cancel()
                    await asyncio.wait([heartbeat], timeout=1)
            return await self._finish_rollout(background, action, result)

        # The rollout outlives the call: whatever the call's surface listens with (cloud retries) is heard
        # only while the call lasts, like its progress.
        caller_listener = retry_listener.get()

        async def relay_retry(notice: str) -> None:
            nonlocal attached
            if attached and caller_listener is not None:
                try:
                    await caller_listener(notice)
                except Exception as exc:
                    log.info("rollout %s: retry notice not delivered (%s)", action_id, exc)
                    attached = False

        context = contextvars.copy_context()
        context.run(retry_listener.set, relay_retry)
        task = asyncio.get_running_loop().create_task(run(), name=f"rollout {action_id}", context=context)
        self.rollouts[action_id] = (task, execution)
        task.add_done_callback(lambda done: self._rollout_ended(action_id, done))
        if waiting is not None:
            await asyncio.wait([task], timeout=None if waiting == float("inf") else waiting)
        else:
            sent_one = asyncio.ensure_future(first_sent.wait())
            try:
                await asyncio.wait([task, sent_one], return_when=asyncio.FIRST_COMPLETED)
            finally:
                sent_one.cancel()
        if task.done():
            return task.result()
        attached = False
        sent = sum(wave.state != "waiting" for wave in rollout.waves)
        names = {item.server_id: item.name for item in plan.items}
        return ActionResult(
            status="running",
            action_id=action_id,
            job_ids=all_jobs(),
            servers=[
                ServerResult(server_id=sid, name=names.get(sid), outcome="submitted", detail=f"wave {wave.number}")
                for wave in rollout.waves
                if wave.state != "waiting"
                for sid in wave.servers
            ],
            message=f"rolling out in {len(rollout.waves)} waves ({rollout.progress_note()}, {sent} sent); it goes "
            f"on in the background: flexus_show_action {action_id} shows where it stands",
            rollout=rollout.model_copy(deep=True),
        )

    def _rollout_ended(self, action_id: str, task: asyncio.Task[ActionResult]) -> None:
        self.rollouts.pop(action_id, None)
        if not task.cancelled() and (error := task.exception()) is not None:
            # Nothing more is sent; the lease runs out and the settler records where it stopped.
            log.warning("rollout %s ended early (%s): %s", action_id, type(error).__name__, bounded(str(error), 200))

    async def _finish_rollout(self, ctx: ToolContext, action: dict[str, Any], result: ActionResult) -> ActionResult:
        """A rollout's last transition: its outcome, the waves reached and, if it stopped early, the call
        that previews the servers it did not reach."""
        rollout = result.rollout
        if rollout is not None and result.status == "stopped" and rollout.not_started:
            result = result.model_copy(update={"resume": resume_call(action, rollout.not_started)})
        final = {
            "succeeded": ActionState.SUCCEEDED,
            "nothing_to_do": ActionState.SUCCEEDED,
            "stopped": ActionState.STOPPED,
            "unknown": ActionState.UNKNOWN,
        }.get(result.status, ActionState.FAILED)
        values: dict[str, Any] = {
            "secret": None,
            "result_json": result.model_dump_json(),
            "lease_until": None,
            "job_ids": json.dumps(result.job_ids),
        }
        if rollout is not None:
            values |= {"rollout_json": rollout.model_dump_json(), "wave": rollout.reached}
        stopped = rollout.stopped if rollout is not None else None
        if not await self._record_final(ctx, action, final, values, outcome=result.status, stopped=stopped):
            # This process lost the rollout (its lease ran out, e.g. while it was paused) and the settler
            # recorded where it stopped, from the cloud: that record is the truth, not what this process saw.
            settled = await self.store.get_action(action["id"])
            if settled is None or settled["state"] not in FINISHED_STATES:
                note = f" (meanwhile the store moved it to {settled['state'] if settled else 'nowhere'})"
                return result.model_copy(update={"message": result.message + note})
            recorded = recorded_result(settled)
            return recorded.model_copy(
                update={
                    "message": "this process lost the rollout (its lease ran out) and it was settled from the "
                    f"cloud: {recorded.message}"
                }
            )
        return result

    def stop_sending(self) -> None:
        """From now on, every rollout of this process sends no further wave (it records where it stopped
        once its current wave has ended)."""
        for _task, execution in list(self.rollouts.values()):
            execution.stop.set()

    async def stop_rollouts(self, seconds: float = ROLLOUT_STOP_SECONDS) -> None:
        """On shutdown: every rollout of this process sends no further wave, finishes the one in flight
        if it can within ``seconds`` and records where it stopped; one that cannot is left to the settler
        (its lease runs out, its current wave is settled by observation)."""
        running = list(self.rollouts.values())
        self.stop_sending()
        tasks = [task for task, _execution in running if task.get_loop() is asyncio.get_running_loop()]
        if not tasks:
            return
        _done, late = await asyncio.wait(tasks, timeout=seconds)
        for task in late:
            log.warning("%s: still in its wave at shutdown; left for the settler", task.get_name())
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1)

    async def _record_final(
        self, ctx: ToolContext, action: dict[str, Any], final: str, values: dict[str, Any], **detail: Any
    ) -> bool:
        """The execution's last transition, only while this process still owns it; False if it lost."""
        entry = self.entry("executed", action, person=ctx.person, surface=ctx.surface, **detail)
        return await self.store.transition(
            action["id"],
            [ActionState.EXECUTING, ActionState.SUBMITTED],
            final,
            owned_by=OWNER,
            audit_entry=entry,
            **values,
        )

    async def _record_failure(self, ctx: ToolContext, action: dict[str, Any], exc: FlexusError) -> bool:
        """A change that certainly did not apply: recorded as failed, with the reason."""
        error = bounded(str(exc))
        values = {"secret": None, "result_json": json.dumps({"error": error})}
        return await self._record_final(ctx, action, ActionState.FAILED, values, outcome="error", error=error)

    async def _unknown(
        self, ctx: ToolContext, spec: ToolSpec, action: dict[str, Any], exc: FlexusError, sent: list[str]
    ) -> FlexusError:
        """The change may have been applied: store it as unknown (settled later by observation), never as
        failed, and tell the caller what was sent and how to check. A read that failed before anything was
        sent is simply a failure."""
        maybe = (isinstance(exc, TransportError) and exc.may_have_applied) or isinstance(exc, JobTimeout) or sent
        if not maybe and not isinstance(exc, StoreError):
            with contextlib.suppress(StoreError):
                await self._record_failure(ctx, action, exc)
            return exc
        state = ActionState.SUBMITTED if sent else ActionState.UNKNOWN
        jobs = f" Jobs: {', '.join(sent)}." if sent else ""
        with contextlib.suppress(StoreError):
            await self._record_final(
                ctx,
                action,
                state,
                {"lease_until": None, "result_json": json.dumps({"error": bounded(str(exc))})},
                outcome="unknown",
                error=bounded(str(exc)),
                job_ids=sent or None,
            )
        return OutcomeUnknown(
            f"{spec.title}: the request was sent but its outcome is not known ({bounded(str(exc), 200)}).{jobs} "
            f"Do not retry it: flexus-ops settles action {action['id']} from what the cloud shows "
            "(see flexus-ops audit, or flexus_show_job for a job).",
            action["id"],
        )
