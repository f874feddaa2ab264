"""Building registries for tests: a policy with people on several surfaces, the embedded sandbox, and
helpers to read what the sandbox saw."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flexus_ops.config import Settings
from flexus_ops.core.tools import Caller
from flexus_ops.gate.policy import GateSettings, Person, Policy, Role
from flexus_ops.gate.secrets import Keys
from flexus_ops.gate.store import Store
from flexus_ops.registry.registry import Registry, make_client
from flexus_ops.sandbox import Sandbox

ALICE = Caller("os:alice", "cli")  # operator
ALICE_SLACK = Caller("slack:UALICE", "slack")  # the same person on another surface
BOB = Caller("slack:UBOB", "slack")  # approver
CAROL = Caller("os:carol", "cli")  # viewer
DAVE = Caller("os:dave", "cli")  # operator, not an approver
STRANGER = Caller("os:mallory", "cli")  # not in the policy


def team_policy(**settings: Any) -> Policy:
    return Policy(
        settings=GateSettings(**settings),
        people=[
            Person(id="alice", roles=[Role.OPERATOR], principals=["os:alice", "slack:UALICE"]),
            Person(id="bob", roles=[Role.OPERATOR, Role.APPROVER], principals=["slack:UBOB", "os:bob"]),
            Person(id="carol", roles=[Role.VIEWER], principals=["os:carol"]),
            Person(id="dave", roles=[Role.OPERATOR], principals=["os:dave"]),
        ],
    )


class Clock:
    """The registry's clock, movable: a test lets five minutes pass with ``advance(300)``, no sleeping and
    no reaching into the store."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def make_registry(
    tmp_path: Path,
    policy: Policy | None = None,
    *,
    read_only: bool = False,
    store_url: str | None = None,
    clock: Clock | None = None,
    keys: Keys | None = None,
    **settings: Any,
) -> Registry:
    values: dict[str, Any] = {
        "state_dir": tmp_path,
        "sandbox_job_seconds": 0.1,
        "job_poll_seconds": 0.02,
        "job_poll_max_seconds": 0.05,
    }
    values.update(settings)
    config = Settings(**values)
    keys = keys or Keys.load(tmp_path)
    return Registry(
        settings=config,
        client=make_client(config),
        store=Store(store_url or config.resolved_store_url, keys.audit),
        policy=policy or team_policy(),
        keys=keys,
        read_only=read_only,
        clock=clock or Clock(),
    )


def sandbox_of(registry: Registry) -> Sandbox:
    assert registry.client.sandbox is not None
    return registry.client.sandbox


def servers_with(registry: Registry, status: str, *, locked: bool = False) -> list[dict[str, Any]]:
    backend = sandbox_of(registry).backend
    views = [backend.server_view(sid) for sid in backend.servers]
    return [v for v in views if v["status"] == status and bool(v["locked"]) == locked]


def writes(registry: Registry) -> list[Any]:
    return sandbox_of(registry).writes()


def everything_written(registry: Registry) -> str:
    """Every byte the gate and the sandbox kept: store rows, audit, request log (for secret scans)."""
    from sqlalchemy import text

    parts = [repr(sandbox_of(registry).request_log)]
    with registry.store.engine.connect() as db:
        for table in ("flexus_actions", "flexus_audit"):
            parts.extend(repr(tuple(row)) for row in db.execute(text(f"SELECT * FROM {table}")))  # noqa: S608
    return "\n".join(parts)
