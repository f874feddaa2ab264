"""Work run in separate OS processes by the store tests (a module, so spawned processes can import it)."""

from __future__ import annotations

from flexus_ops.gate.store import Store


def append_audit(url: str, worker: int, count: int) -> int:
    store = Store(url)
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


def race_transitions(url: str, action_ids: list[str], worker: int) -> list[str]:
    store = Store(url)
    won = [a for a in action_ids if store.transition(a, ["pending"], "executing", executed_by=f"w{worker}")]
    store.engine.dispose()
    return won


def migrate(url: str) -> int:
    store = Store(url)
    version = store.schema_version()
    store.engine.dispose()
    return version
