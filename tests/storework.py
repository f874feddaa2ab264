"""Work run in separate OS processes by the store tests (a module, so spawned processes can import it),
and writing audit records the way releases before the keyed chain did."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from sqlalchemy import Engine, text

from flexus_ops.gate.audit import AuditKeyRing
from flexus_ops.gate.store import Store


def append_legacy_audit(engine: Engine, event: str, detail: dict[str, Any], seq: int | None = None) -> None:
    """One record as an unkeyed release wrote it: plain SHA-256 link, no key id (works on old schemas).
    With ``seq``, as record ``seq`` in place of the newest (already deleted), linked to the one before."""
    with engine.begin() as db:
        if seq is None:
            seq, prev = db.execute(text("SELECT seq, hash FROM flexus_audit_head WHERE id = 1")).one()
        else:
            seq = seq - 1
            prev = db.execute(text("SELECT hash FROM flexus_audit WHERE seq = :seq"), {"seq": seq}).scalar_one()
        fields = {
            "seq": seq + 1,
            "at": time.time(),
            "event": event,
            "person": "p",
            "surface": "s",
            "tool": None,
            "action_id": None,
            "detail": detail,
        }
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        digest = hashlib.sha256((prev + canonical).encode()).hexdigest()
        db.execute(
            text(
                "INSERT INTO flexus_audit (seq, at, event, person, surface, tool, action_id, detail_json, prev_hash, "
                "hash) VALUES (:seq, :at, :event, :person, :surface, :tool, :action_id, :detail_json, :prev, :hash)"
            ),
            fields | {"detail_json": json.dumps(detail), "prev": prev, "hash": digest},
        )
        db.execute(
            text("UPDATE flexus_audit_head SET seq = :seq, hash = :hash WHERE id = 1"), {"seq": seq + 1, "hash": digest}
        )


def append_audit(url: str, keys: AuditKeyRing, worker: int, count: int) -> int:
    store = Store(url, keys)
    for index in range(count):
        store.append_audit(
            "test",
            person=f"w{worker}",
            surface="test",
            tool=None,
            action_id=None,
            detail={"worker": worker, "index": index},
        )
    store.engine.dispose()
    return count


def race_transitions(url: str, keys: AuditKeyRing, action_ids: list[str], worker: int) -> list[str]:
    store = Store(url, keys)
    won = [a for a in action_ids if store.transition(a, ["pending"], "executing", executed_by=f"w{worker}")]
    store.engine.dispose()
    return won


def migrate(url: str, keys: AuditKeyRing) -> int:
    store = Store(url, keys)
    version = store.schema_version()
    store.engine.dispose()
    return version
