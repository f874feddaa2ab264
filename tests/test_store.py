"""The store on SQLite and on a real PostgreSQL: one code path, compare-and-set transitions, a linear
audit chain under concurrent writers from several OS processes, and in-place migrations."""

from __future__ import annotations

import multiprocessing
import secrets
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import inspect

from flexus_ops.core.errors import Refused
from flexus_ops.core.plans import ChangeOutput
from flexus_ops.gate.audit import AuditKeyRing
from flexus_ops.gate.secrets import Keys
from flexus_ops.gate.store import MIGRATIONS, Store
from tests import storework
from tests.gatekit import ALICE, BOB, make_registry, servers_with, team_policy, writes

WORKERS = 4


def audit_keys(tmp_path: Path) -> AuditKeyRing:
    return Keys.load(tmp_path / "keys").audit


def processes() -> ProcessPoolExecutor:
    # spawn: each worker is a fresh interpreter with its own connections, like a replica.
    return ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"))


def pending_action(store: Store) -> str:
    now = time.time()
    action_id = secrets.token_hex(16)
    store.create_action(
        {
            "id": action_id,
            "tool": "flexus_stop_servers",
            "person": "p",
            "principal": "os:p",
            "surface": "test",
            "args_json": "{}",
            "args_hash": "h",
            "plan_json": "{}",
            "plan_hash": "h",
            "state": "pending",
            "needs_approval": False,
            "created_at": now,
            "expires_at": now + 300,
            "updated_at": now,
        }
    )
    return action_id


def test_the_store_runs_on_both_databases(store_url: str, tmp_path: Path) -> None:
    store = Store(store_url, audit_keys(tmp_path))
    assert store.schema_version() == len(MIGRATIONS)
    action_id = pending_action(store)
    assert store.transition(action_id, ["pending"], "executing")
    assert not store.transition(action_id, ["pending"], "executing")
    record = store.append_audit("preview", person="p", surface="s", tool="t", action_id=action_id, detail={"a": 1})
    assert record.seq == 1 and store.verify_audit() == []
    store.engine.dispose()


def test_a_transition_from_several_states_names_the_one_it_left_and_checks_every_condition(
    store_url: str, tmp_path: Path
) -> None:
    """The final transition (from executing or submitted, only by its owner) is one statement on PostgreSQL
    and a locked read then an update on SQLite: the same answers, the same audit records."""
    from flexus_ops.core.entries import AuditEntry
    from flexus_ops.core.telemetry import add_sink, remove_sink

    store = Store(store_url, audit_keys(tmp_path))
    seen: list[dict[str, object]] = []

    def sink(event: str, fields: dict[str, object]) -> None:
        if event == "gate.transition":
            seen.append(fields)

    def entry(event: str, action_id: str) -> AuditEntry:
        return AuditEntry(event=event, person="p", surface="s", tool="t", action_id=action_id, detail={})

    add_sink(sink)
    try:
        action_id = pending_action(store)
        assert store.transition(action_id, ["pending"], "executing", owner="me", lease_until=time.time() + 60)
        assert store.transition(action_id, ["executing"], "submitted", owned_by="me", job_ids='["j"]')
        final = ["executing", "submitted"]
        assert not store.transition(action_id, final, "succeeded", owned_by="other", audit_entry=entry("x", action_id))
        assert not store.transition(action_id, final, "unknown", lease_expired=True, audit_entry=entry("y", action_id))
        assert store.transition(
            action_id, final, "succeeded", owned_by="me", result_json="{}", audit_entry=entry("z", action_id)
        )
        assert not store.transition(action_id, final, "failed", owned_by="me", audit_entry=entry("w", action_id))
    finally:
        remove_sink(sink)
    assert [(f["from_state"], f["to_state"]) for f in seen] == [
        ("none", "pending"),
        ("pending", "executing"),
        ("executing", "submitted"),
        ("submitted", "succeeded"),
    ]
    action = store.get_action(action_id)
    assert action is not None and (action["state"], action["result_json"], action["job_ids"]) == (
        "succeeded",
        "{}",
        '["j"]',
    )
    assert [r.event for r in store.audit_records()] == ["z"], "a transition that lost writes no record"
    assert store.verify_audit() == []
    store.engine.dispose()


def test_a_sqlite_read_takes_no_write_lock_and_leaves_the_connection_as_it_was(tmp_path: Path) -> None:
    """A read runs without BEGIN IMMEDIATE: it answers while another process holds the write lock, and the
    pooled connection stays in the store's own transaction control for the writes after it."""
    import sqlite3

    path = tmp_path / "store.db"
    store = Store(f"sqlite:///{path}", audit_keys(tmp_path), statement_timeout=0.5)
    action_id = pending_action(store)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        action = store.get_action(action_id)  # would wait out the lock, then fail, under BEGIN IMMEDIATE
        assert action is not None and action["state"] == "pending"
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    with store.engine.connect() as db:
        assert db.connection.driver_connection.isolation_level is None
    assert store.transition(action_id, ["pending"], "executing")
    store.engine.dispose()


@pytest.mark.parametrize("idle", [0.0, 1.5])
def test_a_pooled_connection_the_server_ended_is_replaced_before_use(
    store_url: str, tmp_path: Path, idle: float
) -> None:
    """A connection is pinged only after a second idle; one used just before is checked without a round
    trip. Either way, one whose session the server ended (a restart, an administrator) is never used."""
    if not store_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL connection pool")
    from sqlalchemy import text

    from flexus_ops.gate.store import make_engine

    store = Store(store_url, audit_keys(tmp_path))
    admin = make_engine(store_url)
    try:
        with store.engine.connect() as db:
            pid = db.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.begin() as db:
            assert db.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        time.sleep(idle + 0.2)  # the server's goodbye reaches the idle socket
        action_id = pending_action(store)
        assert store.get_action(action_id) is not None
        with store.engine.connect() as db:
            assert db.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        admin.dispose()
        store.engine.dispose()


def test_a_hot_statement_that_waits_out_the_lock_timeout_is_a_store_error_and_changes_nothing(
    store_url: str, tmp_path: Path
) -> None:
    """The hot path runs its statements on the driver's cursor, outside SQLAlchemy's error handling: a driver
    error there must still be the one-line StoreError, with the change and its audit record rolled back."""
    if not store_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL row lock held by another session")
    from sqlalchemy import text

    from flexus_ops.core.entries import AuditEntry
    from flexus_ops.core.errors import StoreError
    from flexus_ops.gate.store import make_engine

    store = Store(store_url, audit_keys(tmp_path), statement_timeout=0.5)
    admin = make_engine(store_url)
    action_id = pending_action(store)
    entry = AuditEntry("confirmed", "p", "test", "flexus_stop_servers", action_id, {})
    try:
        with admin.begin() as db:  # another session holds the audit head through the whole attempt
            db.execute(text("SELECT seq FROM flexus_audit_head WHERE id = 1 FOR UPDATE"))
            with pytest.raises(StoreError, match=r"stayed locked by another process|did not answer within 0\.5 s"):
                store.transition(action_id, ["pending"], "confirmed", audit_entry=entry)
        assert store.get_action(action_id)["state"] == "pending"  # type: ignore[index]
        assert store.audit_records() == []
        assert store.transition(action_id, ["pending"], "confirmed", audit_entry=entry)
        assert [record.event for record in store.audit_records()] == ["confirmed"]
        assert store.verify_audit() == []
    finally:
        admin.dispose()
        store.engine.dispose()


@pytest.mark.parametrize("mover", ["older release", "this release"])
def test_an_append_sees_the_newest_record_once_the_heads_lock_is_granted(
    store_url: str, tmp_path: Path, mover: str
) -> None:
    """The newest record is the one that the lock's previous holder committed while this append waited.
    An older release moves the head without its key: the record is read once the lock is granted (read in
    the lock's own statement, it would be missed, and the append would then skip a key rotation record).
    This release moves the head with the record's key: the head's own newest version carries it."""
    if not store_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL row lock held by another session")
    import threading

    from sqlalchemy import text

    from flexus_ops.gate.store import make_engine

    store = Store(store_url, audit_keys(tmp_path))
    store.append_audit("note", person="p", surface="test", tool=None, action_id=None, detail={})
    admin = make_engine(store_url)
    seen: dict[str, object] = {}
    current = store.audit_keys.current.id
    key_id = "k-other" if mover == "older release" else current
    move = {
        "older release": "UPDATE flexus_audit_head SET seq = seq + 1, hash = :hash WHERE id = 1",
        "this release": "UPDATE flexus_audit_head SET seq = seq + 1, hash = :hash, key_id = :key, key_hash = :hash "
        "WHERE id = 1",
    }[mover]

    def appender() -> None:
        with store.tx() as db:
            seen["head"] = store._locked_head(db, None)

    try:
        with admin.connect() as other:
            with other.begin():  # another replica's append, committed while ours waits for the lock
                other.execute(text("SELECT seq FROM flexus_audit_head WHERE id = 1 FOR UPDATE"))
                other.execute(
                    text(
                        "INSERT INTO flexus_audit (seq, at, event, detail_json, prev_hash, hash, key_id) "
                        "SELECT seq + 1, 0, 'other', '{}', hash, :hash, :key FROM flexus_audit_head WHERE id = 1"
                    ),
                    {"key": key_id, "hash": "2" * 64},
                )
                other.execute(text(move), {"key": key_id, "hash": "2" * 64})
                waiting = threading.Thread(target=appender)
                waiting.start()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    with admin.connect() as look:
                        locked = look.execute(
                            text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                        ).scalar()
                    if locked:
                        break
                    time.sleep(0.02)
            waiting.join(timeout=10)
        head = seen["head"]
        assert head is not None and (head.seq, head.hash) == (2, "2" * 64)  # type: ignore[attr-defined]
        newest = head.newest  # type: ignore[attr-defined]
        assert newest is not None and (newest.seq, newest.key_id) == (2, key_id)
        if mover == "older release":
            assert newest.event == "other", "read from the record itself"
    finally:
        admin.dispose()
        store.engine.dispose()


def test_an_append_under_the_current_key_reads_no_record_while_it_holds_the_heads_lock(
    store_url: str, tmp_path: Path
) -> None:
    """Every writer queues on the head's lock, so what runs while it is held bounds the store's throughput:
    the head row carries the newest record's key, and an append under the same key reads nothing more.
    On PostgreSQL: the lock (with the head and the keyed-from record), then the record with the head's
    move; on SQLite, whose write lock is the transaction's, the move is a statement of its own."""
    store = Store(store_url, audit_keys(tmp_path))
    statements: list[str] = []
    run = store._run

    def counted(db: object, statement: object, params: dict[str, object]) -> object:
        statements.append(str(statement))
        return run(db, statement, params)  # type: ignore[arg-type]

    try:
        store.append_audit("note", person="p", surface="test", tool=None, action_id=None, detail={})
        store._run = counted  # type: ignore[method-assign]
        store.append_audit("note", person="p", surface="test", tool=None, action_id=None, detail={})
        expected = 2 if store_url.startswith("postgresql") else 3
        assert len(statements) == expected, statements
        assert store.verify_audit() == []
    finally:
        store.engine.dispose()


def test_no_state_to_move_from_matches_nothing_and_a_flag_is_stored_as_a_boolean(
    store_url: str, tmp_path: Path
) -> None:
    """Edges of the hot path's statements: an empty list of states matches no action (as SQL's IN () would),
    rather than sending a statement the database refuses; a truthy flag is stored as the boolean it means."""
    store = Store(store_url, audit_keys(tmp_path))
    try:
        action_id = pending_action(store)
        assert store.find_open_action("p", "flexus_stop_servers", "h", []) is None
        assert store.transition(action_id, [], "executing") is False
        assert store.transition(action_id, [], "executing", unexpired=True, lease_expired=True) is False
        assert store.get_action(action_id)["state"] == "pending"  # type: ignore[index]
        assert store.find_open_action("p", "flexus_stop_servers", "h", iter(["pending"])) is not None  # type: ignore[arg-type]

        now = time.time()
        row = {
            "id": secrets.token_hex(16), "tool": "flexus_stop_servers", "person": "p", "principal": "os:p",
            "surface": "test", "args_json": "{}", "args_hash": "h2", "plan_json": "{}", "plan_hash": "h",
            "state": "pending", "needs_approval": 1, "created_at": now, "expires_at": now + 300, "updated_at": now,
        }  # fmt: skip
        store.create_action(row)
        assert store.get_action(row["id"])["needs_approval"] is True  # type: ignore[index]
    finally:
        store.engine.dispose()


def test_an_audit_log_without_its_head_row_is_a_store_error_naming_it(store_url: str, tmp_path: Path) -> None:
    from sqlalchemy import text

    from flexus_ops.core.errors import StoreError

    store = Store(store_url, audit_keys(tmp_path))
    try:
        with store.engine.begin() as db:
            db.execute(text("DELETE FROM flexus_audit_head"))
        with pytest.raises(StoreError, match="no head row"):
            store.append_audit("note", person="p", surface="test", tool=None, action_id=None, detail={})
        assert store.audit_records() == []
        # Verification reports it as what it is, not as a store it cannot reach.
        assert any("no head row" in problem for problem in store.verify_audit())
    finally:
        store.engine.dispose()


def test_audit_chain_stays_linear_under_concurrent_processes(store_url: str, tmp_path: Path) -> None:
    keys = audit_keys(tmp_path)
    Store(store_url, keys).engine.dispose()  # migrate once up front; the workers only append
    with processes() as pool:
        done = list(
            pool.map(storework.append_audit, [store_url] * WORKERS, [keys] * WORKERS, range(WORKERS), [50] * WORKERS)
        )
    store = Store(store_url, keys)
    records = store.audit_records()
    assert sum(done) == len(records) == WORKERS * 50
    assert [r.seq for r in records] == list(range(1, WORKERS * 50 + 1)), "no gaps, no duplicates"
    assert store.verify_audit() == [], "no forks: each record follows the one before"
    store.engine.dispose()


def test_compare_and_set_gives_each_action_to_exactly_one_process(store_url: str, tmp_path: Path) -> None:
    keys = audit_keys(tmp_path)
    store = Store(store_url, keys)
    action_ids = [pending_action(store) for _ in range(200)]
    with processes() as pool:
        results = list(
            pool.map(
                storework.race_transitions,
                [store_url] * WORKERS,
                [keys] * WORKERS,
                [action_ids] * WORKERS,
                range(WORKERS),
            )
        )
    winners = [a for won in results for a in won]
    assert sorted(winners) == sorted(action_ids), "every action moved exactly once"
    store.engine.dispose()


def test_migrations_upgrade_an_existing_store_in_place(store_url: str, tmp_path: Path) -> None:
    old = Store.__new__(Store)
    old.url = store_url
    from flexus_ops.gate.store import make_engine

    old.engine = make_engine(store_url)
    assert old.migrate(target=1) == 1
    action_id = pending_action(old)
    storework.append_legacy_audit(old.engine, "preview", {})  # as the release that made this store did
    assert "ix_flexus_actions_open" not in {i["name"] for i in inspect(old.engine).get_indexes("flexus_actions")}
    old.engine.dispose()

    with processes() as pool:  # several replicas start at once against the old store
        versions = list(pool.map(storework.migrate, [store_url] * WORKERS, [audit_keys(tmp_path)] * WORKERS))
    assert versions == [len(MIGRATIONS)] * WORKERS
    upgraded = Store(store_url, audit_keys(tmp_path))
    assert upgraded.get_action(action_id) is not None and upgraded.verify_audit() == []
    assert "ix_flexus_actions_open" in {i["name"] for i in inspect(upgraded.engine).get_indexes("flexus_actions")}
    upgraded.engine.dispose()


async def test_two_replicas_share_one_store_and_the_configured_keys(store_url: str, tmp_path: Path) -> None:
    """Preview on one replica, confirm on another: works with the shared token key, and a replica with
    a different key refuses the token as forged."""
    shared = {"token_key": "k" * 40, "encryption_key": "e" * 40, "mcp_state_key": "m" * 40, "audit_key": "a" * 40}
    keys = Keys.load(tmp_path, **{k: _secret(v) for k, v in shared.items()})
    first = make_registry(tmp_path / "a", team_policy(), store_url=store_url, keys=keys)
    second = make_registry(tmp_path / "b", team_policy(), store_url=store_url, keys=keys)
    # Its own token key, but the audit key every replica of one store shares (without it, it writes nothing).
    other = Keys.load(tmp_path / "other-keys", audit_key=_secret(shared["audit_key"]))
    stranger = make_registry(tmp_path / "c", team_policy(), store_url=store_url, keys=other)
    second.client = first.client  # one cloud behind both replicas
    try:
        target = [servers_with(first, "ACTIVE")[0]["id"]]
        out = await first.call(ALICE, "flexus_stop_servers", {"servers": target})
        assert isinstance(out, ChangeOutput) and out.preview is not None
        token = out.preview.confirmation_token
        with pytest.raises(Refused, match="not a token this gate issued"):
            await stranger.call(ALICE, "flexus_stop_servers", {"servers": target, "confirmation_token": token})
        done = await second.call(ALICE, "flexus_stop_servers", {"servers": target, "confirmation_token": token})
        assert isinstance(done, ChangeOutput) and done.result is not None and done.result.status == "succeeded"
        assert len(writes(first)) == 1

        # A password awaiting approval, encrypted by one replica, is executed by the other.
        args = {"servers": target, "reason": "rotate", "new_password": "Replica-Pass-42x"}
        out = await first.call(ALICE, "flexus_reset_servers_password", args)
        assert isinstance(out, ChangeOutput) and out.preview is not None
        await first.call(
            ALICE, "flexus_reset_servers_password", {**args, "confirmation_token": out.preview.confirmation_token}
        )
        result = await second.approve(BOB, out.preview.action_id)
        assert result.status == "succeeded"
    finally:
        await first.aclose()
        await stranger.aclose()
        second.store.engine.dispose()


def _secret(value: str):
    from pydantic import SecretStr

    return SecretStr(value)
