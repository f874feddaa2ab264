"""The registry: the one entry point every surface calls. It checks the policy (who, which tool,
read-only mode), validates arguments, runs read tools, and sends every change through the gate."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from ..config import Settings
from ..core.errors import ConfigurationError, FlexusError, InvalidInput, Refused, input_error
from ..core.plans import ActionReport, ActionResult, ActionView, ChangeOutput
from ..core.states import DONE_STATES, ActionState
from ..core.tools import Caller, Progress, Safety, ToolContext, ToolSpec, no_progress
from ..gate.gate import Gate, recorded_result
from ..gate.policy import Person, Policy, Role, load_policy
from ..gate.private import report_if_readable
from ..gate.secrets import Keys
from ..gate.settle import SETTLE_BATCH, Settler
from .catalog import TOOLS
from .completions import Completer, Kind, Suggestions
from .render import plan_text
from .undo import PastAction

if TYPE_CHECKING:
    from ..cloud.client import FlexusClient
    from ..gate.audit import AuditRecord
    from ..gate.store import AsyncStore, Store


log = logging.getLogger("flexus_ops.registry")
POLICY_CHECK_SECONDS = 1.0


def sandbox_state_path(settings: Settings) -> Path:
    """Where a kept embedded sandbox lives: one file per region, as each region is its own cloud."""
    return settings.state_dir / f"sandbox-{settings.region}.json"


def make_client(settings: Settings, *, keep_sandbox: bool = False) -> FlexusClient:
    """The cloud client for these settings: the one place that chooses the embedded sandbox (no
    credentials, no endpoint) over the real cloud. Both load only when first used. ``keep_sandbox``
    keeps the embedded sandbox's state in the state dir between processes (the CLI's calls)."""
    from ..cloud.client import FlexusClient

    if not settings.uses_sandbox:
        return FlexusClient(settings)
    from ..sandbox import Sandbox, SandboxOptions

    sandbox = Sandbox(
        SandboxOptions(
            servers=settings.sandbox_servers,
            seed=settings.sandbox_seed,
            job_seconds=settings.sandbox_job_seconds,
            region=settings.region,
        )
    )
    if keep_sandbox:
        from ..gate.private import open_private
        from ..sandbox.persist import keep_state

        keep_state(sandbox, sandbox_state_path(settings), open_private)
    return FlexusClient(settings, sandbox=sandbox)


class Registry:
    """Built cheaply: the cloud client, the store and the keys are made on first use, so a surface can
    publish its tool catalog (``initialize``, ``tools/list``) before paying for any of them."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: FlexusClient | None = None,
        store: Store | None = None,
        policy: Policy | None = None,
        keys: Keys | None = None,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock  # the gate's and the store's one clock (expiry, leases): tests move it forward
        self.read_only = read_only
        # A policy file is re-read when it changes (checked at most once a second), so removing a person
        # or a leaked token's principal takes effect without a restart. A policy given in code is fixed.
        self._policy_file = None if policy is not None else self._policy_path(settings)
        self._policy_seen = self._file_stamp(self._policy_file)
        self._policy_checked = time.monotonic()
        self._policy = policy if policy is not None else self._load_policy(settings)
        report_if_readable(settings.state_dir)  # at start, even if this process only reads
        self.specs: dict[str, ToolSpec] = {spec.name: spec for spec in TOOLS}
        for name, value in (("client", client), ("keys", keys)):
            if value is not None:
                self.__dict__[name] = value  # seeds the cached_property below
        if store is not None:
            from ..gate.store import AsyncStore

            store.clock = clock
            self.__dict__["records"] = AsyncStore.of(store)
        self.draining = False  # set when the process is shutting down: readiness says no
        self._housekeeping: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, read_only: bool = False, client: FlexusClient | None = None
    ) -> Registry:
        return cls(settings or Settings.load(), client=client, read_only=read_only)

    @staticmethod
    def _policy_path(settings: Settings) -> Path:
        return settings.policy_path or settings.state_dir / "policy.toml"

    @staticmethod
    def _load_policy(settings: Settings) -> Policy:
        return load_policy(Registry._policy_path(settings), required=settings.policy_path is not None)

    @staticmethod
    def _file_stamp(path: Path | None) -> tuple[int, int] | None:
        try:
            found = path.stat() if path is not None else None
        except OSError:
            return None
        return (found.st_mtime_ns, found.st_size) if found is not None else None

    @property
    def policy(self) -> Policy:
        """Who may do what, as the policy file says now. A file that no longer loads fails every call
        (closed), saying why, until it is fixed: a broken edit must not leave a removed person in."""
        now = time.monotonic()
        if self._policy_file is not None and now >= self._policy_checked + POLICY_CHECK_SECONDS:
            self._policy_checked = now
            stamp = self._file_stamp(self._policy_file)
            if stamp != self._policy_seen:
                try:
                    policy = self._load_policy(self.settings)
                except ConfigurationError:
                    self._policy_checked = 0.0  # look again on the next call
                    raise
                self._policy, self._policy_seen = policy, stamp
                if "gate" in self.__dict__:
                    self.gate.policy = policy
                log.warning("policy reloaded from %s", policy.source)
        return self._policy

    @cached_property
    def client(self) -> FlexusClient:
        return make_client(self.settings)

    @cached_property
    def records(self) -> AsyncStore:
        """The store as the registry and gate use it: every call off the event loop. It connects (and
        migrates) on first use, on its own threads, so a surface starts without touching it."""
        from ..gate.store import AsyncStore

        settings = self.settings
        return AsyncStore(
            self._open_store, url=settings.resolved_store_url, timeout=settings.db_statement_timeout_seconds
        )

    def _open_store(self) -> Store:
        from ..gate.audit import Checkpointer
        from ..gate.store import Store

        settings = self.settings
        return Store(
            settings.resolved_store_url,
            self.keys.audit,
            checkpoints=Checkpointer(settings.state_dir),
            connect_timeout=settings.db_connect_timeout_seconds,
            statement_timeout=settings.db_statement_timeout_seconds,
            clock=self.clock,
        )

    @property
    def store(self) -> Store:
        """The synchronous store: for tests, benchmarks and checks outside an event loop."""
        return self.records.sync

    @cached_property
    def keys(self) -> Keys:
        return Keys.load(
            self.settings.state_dir,
            token_key=self.settings.token_key,
            encryption_key=self.settings.encryption_key,
            mcp_state_key=self.settings.mcp_state_key,
            audit_key=self.settings.audit_key,
            audit_previous_keys=self.settings.audit_previous_keys,
        )

    @cached_property
    def gate(self) -> Gate:
        return Gate(
            self.records,
            self.policy,
            self.keys,
            lease_seconds=self.settings.lease_seconds,
            rollout_wait_seconds=self.settings.job_wait_seconds,
            clock=self.clock,
        )

    @property
    def is_sandbox(self) -> bool:
        return self.settings.uses_sandbox

    def describe_target(self) -> str:
        return self.settings.describe_target()

    # -- what is offered --------------------------------------------------------------------

    @property
    def is_read_only(self) -> bool:
        return self.read_only or self.policy.settings.read_only

    def tools(self) -> list[ToolSpec]:
        """The tools this deployment offers: derived from each tool's safety class and the policy."""
        return [spec for spec in TOOLS if self._offers(spec)]

    def _offers(self, spec: ToolSpec) -> bool:
        """The one rule of what is offered: enabled by the policy, and only reads in read-only mode."""
        return self.policy.tool_enabled(spec.name) and not (self.is_read_only and spec.safety is not Safety.READ)

    def spec(self, name: str) -> ToolSpec:
        # Asked on every call: one tool checked, not the whole offer rebuilt.
        found = self.specs.get(name)
        if found is not None:
            if self._offers(found):
                return found
            why = "read-only mode" if self.is_read_only else "the policy"
            raise Refused(f"{name} is disabled by {why}")
        offered = ", ".join(spec.name for spec in self.tools())
        raise InvalidInput("tool", f"no tool named {name!r}; tools: {offered}")  # a typo: bad input

    @cached_property
    def completer(self) -> Completer:
        return Completer(self.client)

    async def complete(self, caller: Caller, kind: Kind, prefix: str) -> Suggestions:
        """Server names, ids or tags starting with ``prefix``, for a client completing an argument. Only a
        person the policy knows may read them (they are what a listing shows)."""
        person = self.person(caller)
        self._authorize(person, self.spec("flexus_list_servers"))
        return await self.completer.suggest(kind, prefix)

    # -- who --------------------------------------------------------------------------------

    def person(self, caller: Caller) -> Person:
        person = self.policy.person_for(caller.principal)
        if person is None:
            # The caller may be anyone who can reach a surface (a whole Slack workspace): the policy's
            # path is for the admin who adds the principal, in the server's log.
            log.warning("%s is not a person in the policy (%s)", caller.principal, self.policy.source)
            raise Refused(f"{caller.principal} is not a person in the policy; ask an admin to add this principal")
        return person

    async def _refused(self, caller: Caller, refusal: Refused, *, tool: str | None = None) -> Refused:
        """A refused change or decision, audited: who is the person the policy names for the caller, else
        the principal the caller proved."""
        known = self.policy.person_for(caller.principal)
        who = known.id if known is not None else caller.principal
        return await self.gate.refused(refusal, None, person=who, surface=caller.surface, tool=tool)

    async def _person_or_refused(self, caller: Caller) -> Person:
        """``person``, for a confirmation or a decision: a caller the policy does not know is refused and
        audited."""
        try:
            return self.person(caller)
        except Refused as refusal:
            raise await self._refused(caller, refusal) from None

    def _authorize(self, person: Person, spec: ToolSpec) -> None:
        needed = Role.VIEWER if spec.safety is Safety.READ else Role.OPERATOR
        allowed = person.has(needed) or (
            needed is Role.VIEWER and any(person.has(role) for role in (Role.OPERATOR, Role.APPROVER))
        )
        if not allowed:
            raise Refused(f"{person.id} may not use {spec.name}: it needs the {needed.value} role")

    def context(self, person: Person, caller: Caller, progress: Progress | None) -> ToolContext:
        async def show(action_id: str) -> ActionReport:
            return await self._show_action(person, action_id)

        return ToolContext(
            client=self.client,
            person=person.id,
            surface=caller.surface,
            progress=progress or no_progress,
            read_action=self._past_action,
            show_action=show,
        )

    async def _past_action(self, action_id: str) -> PastAction | None:
        """An earlier action and its recorded result, for the plan of its undo (any operator may preview
        an undo; the plan shows only servers and fields, never a secret)."""
        row = await self.records.get_action(action_id)
        if row is None:
            return None
        stored = json.loads(row["result_json"]) if row["result_json"] else {}
        result = ActionResult.model_validate(stored) if "status" in stored else None
        return PastAction(view=ActionView.of(row), result=result)

    def validate(self, spec: ToolSpec, arguments: dict[str, Any]) -> BaseModel:
        try:
            return spec.input_model.model_validate(arguments)
        except ValidationError as exc:
            raise input_error(exc, spec.input_model) from None

    # -- calls ------------------------------------------------------------------------------

    async def call(
        self,
        caller: Caller,
        name: str,
        arguments: dict[str, Any],
        *,
        progress: Progress | None = None,
        wait_seconds: float | None = None,
    ) -> BaseModel:
        """Run a tool. A change returns a preview unless it carries a valid confirmation token; a surface
        that asks a person itself confirms the preview they saw by its id (``confirm_action``).
        ``wait_seconds``: how long a confirmed rollout with ``wait`` may be waited for (see confirm_action)."""
        spec = self.spec(name)
        try:
            person = self.person(caller)
            self._authorize(person, spec)
        except Refused as refusal:
            if spec.safety is Safety.READ:
                raise
            raise await self._refused(caller, refusal, tool=spec.name) from None
        args = self.validate(spec, arguments)
        ctx = self.context(person, caller, progress)
        if not spec.gated:
            assert spec.run is not None
            if spec.shows_actions:
                await self.settle_briefly()
            return await spec.run(ctx, args)
        dry_run = bool(getattr(args, "dry_run", False))
        token = getattr(args, "confirmation_token", None)
        if dry_run or token is None:
            await self.gate.expire_due()
            return ChangeOutput(preview=await self.gate.preview(ctx, spec, args, caller.principal))
        result = await self.gate.confirm(ctx, spec, args, token=token, via="token", wait_seconds=wait_seconds)
        return ChangeOutput(result=result)

    async def preview(self, caller: Caller, name: str, arguments: dict[str, Any]) -> ChangeOutput:
        """Always a preview, whatever the arguments say (for surfaces that ask a human next)."""
        arguments = {**arguments, "dry_run": True}
        arguments.pop("confirmation_token", None)
        result = await self.call(caller, name, arguments)
        assert isinstance(result, ChangeOutput)
        return result

    async def confirm_action(
        self,
        caller: Caller,
        action_id: str,
        *,
        progress: Progress | None = None,
        answer_key: str | None = None,
        wait: bool | None = None,
        wait_seconds: float | None = None,
    ) -> ActionResult:
        """Confirm the preview a person was shown, by its id (a button, a terminal prompt, an elicitation).

        ``answer_key`` identifies the answer that confirmed it (an elicitation's sealed request state); the
        gate consumes it with the action, so a replay of that answer gets the recorded outcome. ``wait``:
        a rollout in waves answers at its end, not once its first wave is sent; ``wait_seconds`` bounds that
        (default FLEXUS_JOB_WAIT_SECONDS; infinity for a process that owns the rollout to its end, the CLI)."""
        person = await self._person_or_refused(caller)
        action = await self.records.get_action(action_id)
        if action is None:
            raise Refused("no such preview")
        spec = self.spec(action["tool"])
        try:
            self._authorize(person, spec)
        except Refused as refusal:  # someone else's preview, most likely: the record names the tool only
            raise await self._refused(caller, refusal, tool=spec.name) from None
        args = self.gate.rebuild_arguments(spec, action)
        ctx = self.context(person, caller, progress)
        return await self.gate.confirm(
            ctx,
            spec,
            args,
            token=None,
            via=caller.surface,
            action_id=action_id,
            answer_key=answer_key,
            wait=wait,
            wait_seconds=wait_seconds,
        )

    async def action_answered_by(self, answer_key: str) -> ActionView | None:
        """The action an elicitation answer already confirmed, if any (to recognise a replay)."""
        row = await self.records.action_by_answer(answer_key)
        return ActionView.of(row) if row is not None else None

    @staticmethod
    def confirmation_question(action: ActionView) -> str:
        """The question a person answers, naming the one pending action the answer confirms."""
        message = plan_text(action.plan)
        if action.needs_approval:
            message += "\nAfter you confirm, a second person must approve it."
        return f"{message}\n(preview {action.id})"

    def start_draining(self) -> bool:
        """The process is stopping: readiness says no, and rollouts running here send no further wave.
        True when a rollout was running here (it now records where it stopped, once its wave has ended)."""
        self.draining = True
        if "gate" not in self.__dict__ or not self.gate.rollouts:
            return False
        self.gate.stop_sending()
        return True

    async def not_ready_because(self) -> str | None:
        """For readiness probes: None when ready, else one word: ``draining`` (shutting down), ``policy``
        (the policy file does not load), ``store`` (the store does not answer) or ``migrations`` (its schema
        is not at this release's head). Never the error itself: probes need no credentials, and an error
        may name a host or a path."""
        if self.draining:
            return "draining"
        try:
            self.policy  # noqa: B018 - re-reads a changed file; raises while it does not load
        except Exception:
            return "policy"
        try:
            at_head = await self.records.at_current_schema()
        except Exception:  # a store that fails, times out or cannot even open: not ready, and no more said
            return "store"
        return None if at_head else "migrations"

    async def action(self, action_id: str) -> ActionView | None:
        """An action as surfaces may show it (never its encrypted secrets)."""
        row = await self.records.get_action(action_id)
        return ActionView.of(row) if row is not None else None

    async def show_action(self, caller: Caller, action_id: str) -> ActionReport:
        """A gated action's plan, state, waves reached and outcome, for the person who asked, approvers and
        admins. Anyone else gets the answer an unknown id gets ("no such action"), so ids cannot be probed.
        (``flexus_show_action`` and any other surface read actions through this.)"""
        return await self._show_action(self.person(caller), action_id)

    async def _show_action(self, person: Person, action_id: str) -> ActionReport:
        row = await self.records.get_action(action_id) if action_id.isalnum() and len(action_id) <= 64 else None
        if row is None or not (row["person"] == person.id or person.has(Role.APPROVER)):
            raise Refused("no such action")
        shows_result = row["state"] in DONE_STATES or row["state"] == ActionState.AWAITING_APPROVAL
        return ActionReport(action=ActionView.of(row), result=recorded_result(row) if shows_result else None)

    async def audit(self, caller: Caller, limit: int) -> list[AuditRecord]:
        """The last ``limit`` audit records this person may read. Approvers and admins (the security lead)
        read every record; anyone else, as with ``show_action``, only those about their own actions or
        their own doing. Someone the policy does not name reads nothing."""
        person = self.person(caller)
        await self.settle_briefly()
        records = await self.records.audit_records()
        if person.has(Role.APPROVER):
            return records[-limit:] if limit > 0 else []
        requesters: dict[str, str | None] = {}
        visible: list[AuditRecord] = []
        for record in reversed(records):
            if len(visible) >= limit:
                break
            if record.person != person.id and record.action_id is not None:
                if record.action_id not in requesters:
                    row = await self.records.get_action(record.action_id)
                    requesters[record.action_id] = row["person"] if row is not None else None
                if requesters[record.action_id] != person.id:
                    continue
            elif record.person != person.id:
                continue
            visible.append(record)
        return visible[::-1]

    # -- settling ---------------------------------------------------------------------------

    async def settle(self, *, limit: int = SETTLE_BATCH) -> list[str]:
        """Settle executions whose owner is gone and outcomes that are unknown, from what the cloud shows
        (see Gate.settle). Bookkeeping only, so a read-only surface does it too."""
        ctx = ToolContext(client=self.client, person="flexus-ops", surface="settler")
        return await Settler(self.gate).settle(ctx, self.specs, limit=limit)

    async def settle_briefly(self, seconds: float = 3.0) -> None:
        """Before showing actions: settle what can be settled quickly; never fail or hold up the caller."""
        try:
            async with asyncio.timeout(seconds):
                await self.settle()
        except (TimeoutError, FlexusError) as exc:
            log.info("settling before showing actions: %s", exc or "took too long; left for the background")

    def start_housekeeping(self) -> None:
        """Once a surface has answered its first request: settle, expire and checkpoint in the background,
        every ``settle_interval_seconds`` (bounded work per round), until the registry is closed."""
        loop = asyncio.get_running_loop()
        if self._housekeeping is None or self._housekeeping.get_loop() is not loop or self._housekeeping.done():
            self._housekeeping = loop.create_task(self._keep_house())

    async def _keep_house(self) -> None:
        # The store's modules (SQLAlchemy among them: a tenth of a second or more) load on a worker thread,
        # not on the loop: the answer that started housekeeping may still be on its way to the client.
        await asyncio.to_thread(importlib.import_module, "..gate.store", __package__)
        while True:
            try:
                await self.settle()
                await self.gate.expire_due(force=True)
                await self.records.checkpoint_due()
            except FlexusError as exc:
                log.warning("housekeeping: %s", exc)
            except Exception as exc:  # a bug here must not kill the surface; it is logged, the loop goes on
                log.warning("housekeeping failed (%s): %s", type(exc).__name__, exc)
            await asyncio.sleep(self.settings.settle_interval_seconds)

    # -- approvals --------------------------------------------------------------------------

    async def pending_approvals(self, caller: Caller) -> list[dict[str, Any]]:
        person = self.person(caller)
        await self.gate.expire_due(force=True)
        rows = await self.records.actions_in(["awaiting_approval"])
        visible = person.has(Role.APPROVER)
        return [
            {
                "action_id": row["id"],
                "tool": row["tool"],
                "requested_by": row["person"],
                "reason": row["reason"],
                "arguments": row["args_json"],
                "expires_at": row["expires_at"],
                "yours": row["person"] == person.id,
            }
            for row in rows
            if visible or row["person"] == person.id
        ]

    async def approve(
        self,
        caller: Caller,
        action_id: str,
        note: str | None = None,
        progress: Progress | None = None,
        *,
        wait: bool | None = None,
        wait_seconds: float | None = None,
    ) -> ActionResult:
        person = await self._person_or_refused(caller)
        if not person.has(Role.APPROVER):  # before looking the id up: the answer must not tell ids apart
            refusal = Refused(f"{person.id} is not an approver; only approvers named in the policy can approve")
            raise await self._refused(caller, refusal)
        action = await self.records.get_action(action_id)
        if action is None:
            raise Refused("no such approval request")
        spec = self.spec(action["tool"])
        ctx = self.context(person, caller, progress)
        return await self.gate.approve(ctx, spec, action_id, note, wait=wait, wait_seconds=wait_seconds)

    async def reject(self, caller: Caller, action_id: str, note: str | None = None) -> None:
        person = await self._person_or_refused(caller)
        await self.gate.reject(person.id, caller.surface, action_id, note)

    async def reveal(self, caller: Caller, action_id: str) -> str:
        person = self.person(caller)
        return await self.gate.reveal(person.id, caller.surface, action_id)

    async def aclose(self) -> None:
        if "gate" in self.__dict__:
            # Rollouts running here send no further wave and record where they stopped.
            await self.gate.stop_rollouts()
        task, self._housekeeping = self._housekeeping, None
        if task is not None:
            if task.get_loop() is asyncio.get_running_loop():
                # Cancel until it is done: on Python 3.11, wait_for can swallow a cancellation that
                # arrives as its inner call completes, and the loop would then sleep on.
                while not task.done():
                    task.cancel()
                    await asyncio.wait([task], timeout=1)
            elif not task.get_loop().is_closed():
                # Started on another loop (a server thread's): cancel it there, never wait across loops.
                task.get_loop().call_soon_threadsafe(task.cancel)
        if "client" in self.__dict__:
            await self.client.aclose()
        if "records" in self.__dict__ and self.records.is_open:
            with contextlib.suppress(FlexusError):
                await self.records.flush_checkpoint()  # a short-lived command signs what it appended
            await self.records.aclose()
