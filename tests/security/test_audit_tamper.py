"""Attacks on the audit log by someone who can write the database but does not hold the audit key:
truncation with a moved head, re-hashing with the old algorithm or a wrong key, downgrading to the
legacy chain, forged checkpoints. Each must be reported; honest logs (legacy, keyed, rotated) verify.

The attacker's code below uses raw SQL and its own hashing, never the code under test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, text

from flexus_ops.gate.audit import (
    CHECKPOINT_FILE,
    EVENT_CHECKPOINT_KEY,
    EVENT_KEYED,
    EVENT_ROTATED,
    Checkpointer,
    load_checkpoints,
)
from flexus_ops.gate.secrets import Keys
from flexus_ops.gate.store import MIGRATIONS, Store
from tests import storework

# Named *SECRET* so the session's secrets scan fails the run if either shows up in a log or a file.
OLD_AUDIT_SECRET = "old-audit-key-0123456789-abcdefghijklmnop"
NEW_AUDIT_SECRET = "new-audit-key-9876543210-qrstuvwxyzabcdef"
COMMAND = str(Path(sys.executable).parent / "flexus-ops")


# -- the honest side ------------------------------------------------------------------------------


@pytest.fixture
def opened() -> Iterator[list[Store]]:
    stores: list[Store] = []
    yield stores
    for store in stores:
        store.engine.dispose()


@pytest.fixture
def open_store(store_url: str, tmp_path: Path, opened: list[Store]) -> Callable[..., Store]:
    """A store as a replica opens it: audit key from configuration (or the state dir), checkpoints on."""

    def make(
        key: str | None = OLD_AUDIT_SECRET, previous: str | None = None, state: str = "state", **checkpointing: Any
    ) -> Store:
        state_dir = tmp_path / state
        keys = Keys.load(
            state_dir,
            audit_key=SecretStr(key) if key else None,
            audit_previous_keys=SecretStr(previous) if previous else None,
        )
        store = Store(store_url, keys.audit, checkpoints=Checkpointer(state_dir, **checkpointing))
        opened.append(store)
        return store

    return make


def append(store: Store, count: int, event: str = "test") -> None:
    for index in range(count):
        store.append_audit(event, person="alice", surface="cli", tool=None, action_id=None, detail={"n": index})


def events(store: Store) -> list[str]:
    return [record.event for record in store.audit_records()]


# -- the attacker's side --------------------------------------------------------------------------


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as db:
        return [dict(row) for row in db.execute(text("SELECT * FROM flexus_audit ORDER BY seq")).mappings()]


def truncate(engine: Engine, keep: int) -> None:
    """Delete every record after ``keep`` and move the head back onto it: a valid, shorter chain."""
    with engine.begin() as db:
        db.execute(text("DELETE FROM flexus_audit WHERE seq > :keep"), {"keep": keep})
        last = db.execute(text("SELECT hash FROM flexus_audit WHERE seq = :keep"), {"keep": keep}).scalar_one()
        db.execute(
            text("UPDATE flexus_audit_head SET seq = :keep, hash = :hash WHERE id = 1"), {"keep": keep, "hash": last}
        )


def sha256_link(prev: str, row: dict[str, Any]) -> str:
    fields = {k: row[k] for k in ("seq", "at", "event", "person", "surface", "tool", "action_id")}
    return hashlib.sha256((prev + canonical(fields | {"detail": json.loads(row["detail_json"])})).encode()).hexdigest()


def hmac_link(key: bytes) -> Callable[[str, dict[str, Any]], str]:
    def link(prev: str, row: dict[str, Any]) -> str:
        fields = {k: row[k] for k in ("seq", "at", "event", "person", "surface", "tool", "action_id", "key_id")}
        message = (prev + canonical(fields | {"detail": json.loads(row["detail_json"])})).encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    return link


def rewrite(
    engine: Engine,
    link: Callable[[str, dict[str, Any]], str],
    edit: Callable[[dict[str, Any]], None],
) -> None:
    """Edit rows, then recompute every link and the head: what a database writer can do unaided."""
    prev = "0" * 64
    original = rows(engine)
    with engine.begin() as db:
        for row in original:
            edit(row)
            row["prev_hash"], row["hash"] = prev, link(prev, row)
            db.execute(
                text(
                    "UPDATE flexus_audit SET person = :person, detail_json = :detail_json, key_id = :key_id, "
                    "prev_hash = :prev_hash, hash = :hash WHERE seq = :seq"
                ),
                row,
            )
            prev = row["hash"]
        db.execute(text("UPDATE flexus_audit_head SET hash = :hash WHERE id = 1"), {"hash": prev})


def blame_someone_else(row: dict[str, Any]) -> None:
    if row["seq"] == 3:
        row["person"] = "someone-else"


# -- (a) truncation -------------------------------------------------------------------------------


def test_truncation_with_a_moved_head_is_caught_by_a_checkpoint(open_store: Callable[..., Store]) -> None:
    store = open_store()
    append(store, 10)
    checkpoint = store.flush_checkpoint()
    assert checkpoint is not None and checkpoint.seq == 11, "the key record, then a checkpoint of it"
    assert events(store)[-1] == EVENT_CHECKPOINT_KEY
    report = store.audit_report()
    assert report.intact and report.checkpoints_checked == 1 and report.keyed_from == 1

    truncate(store.engine, keep=8)
    problems = store.verify_audit()
    assert any("truncated" in p and "record 11" in p and "ends at record 8" in p for p in problems), problems


def test_checkpoints_every_hundred_records_go_to_a_private_file_and_the_log(
    open_store: Callable[..., Store], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flexus_ops.audit")
    store = open_store()
    append(store, 250)  # never flushed: the checkpoints below come from the count alone
    path = tmp_path / "state" / CHECKPOINT_FILE
    written, _ = load_checkpoints([path])
    assert [c.seq for c in written] == [101, 201], "record 100 triggers one (after the key record), 200 the next"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    logged = [r.getMessage() for r in caplog.records if r.name == "flexus_ops.audit" and r.levelno == logging.INFO]
    assert [json.loads(line)["seq"] for line in logged] == [101, 201]
    assert OLD_AUDIT_SECRET not in "\n".join(logged)

    # A log kept elsewhere (prefixes and other lines included) serves as well as the file.
    saved = tmp_path / "shipped.log"
    saved.write_text("".join(f"2025-01-01T00:00:00 INFO flexus_ops.audit {line}\n" for line in logged) + "noise\n")
    truncate(store.engine, keep=150)
    problems = store.verify_audit([saved])
    assert any("truncated" in p and "record 201" in p for p in problems), problems


def test_a_timer_signs_what_was_appended_after_a_quiet_minute(open_store: Callable[..., Store]) -> None:
    store = open_store(every_seconds=3600)
    append(store, 3)
    assert store.checkpoint_due() is None, "not due yet"
    assert store.checkpoints is not None
    store.checkpoints.every_seconds = 0.0
    checkpoint = store.checkpoint_due()
    assert checkpoint is not None and checkpoint.seq == 4
    assert store.checkpoint_due() is None, "nothing new since"


# -- (b) re-hashing with the old algorithm ----------------------------------------------------------


def test_an_edit_rehashed_with_plain_sha256_is_detected(open_store: Callable[..., Store]) -> None:
    store = open_store()
    append(store, 6)
    rewrite(store.engine, sha256_link, blame_someone_else)
    problems = store.verify_audit()
    assert any("record 3" in p and "altered" in p for p in problems), problems


def test_a_downgrade_to_an_unkeyed_chain_is_caught_by_a_checkpoint(open_store: Callable[..., Store]) -> None:
    store = open_store()
    append(store, 6)
    store.flush_checkpoint()

    def unkeyed(row: dict[str, Any]) -> None:
        blame_someone_else(row)
        row["key_id"] = None  # pretend the whole log predates the keyed chain

    rewrite(store.engine, sha256_link, unkeyed)
    problems = store.verify_audit()
    assert any("checkpoint of record 7" in p and "rewritten" in p for p in problems), problems


# -- (c) re-hashing with a wrong key --------------------------------------------------------------


def test_an_edit_rehashed_with_a_wrong_key_is_detected(open_store: Callable[..., Store]) -> None:
    store = open_store()
    append(store, 6)
    rewrite(store.engine, hmac_link(b"attacker-guess".ljust(32, b"!")), blame_someone_else)
    problems = store.verify_audit()
    assert any("record 3" in p and "altered" in p for p in problems), problems


def test_relabelling_every_record_with_the_attackers_key_is_detected(open_store: Callable[..., Store]) -> None:
    store = open_store()
    append(store, 6)
    store.flush_checkpoint()
    wrong = b"attacker-own-key".ljust(32, b"!")
    wrong_id = hmac.new(wrong, b"key-id", hashlib.sha256).hexdigest()[:16]

    def relabel(row: dict[str, Any]) -> None:
        blame_someone_else(row)
        row["key_id"] = wrong_id

    rewrite(store.engine, hmac_link(wrong), relabel)
    report = store.audit_report()
    assert any(f"without key {wrong_id}" in gap for gap in report.unverifiable), "never passes as verified"
    assert any("checkpoint of record 7" in p for p in report.problems), report.problems


# -- (d) a legacy chain -----------------------------------------------------------------------------


def legacy_store(store_url: str, tmp_path: Path, records: int) -> None:
    """A store as the unkeyed release left it: no key_id column, SHA-256 links."""
    keys = Keys.load(tmp_path / "setup").audit
    store = Store(store_url, keys)
    step = [step.__name__ for step in MIGRATIONS].index("_v4_keyed_audit")
    with store.engine.begin() as db:
        db.execute(text("DROP INDEX IF EXISTS ix_flexus_audit_event"))
        db.execute(text("ALTER TABLE flexus_audit DROP COLUMN key_id"))
        db.execute(text("UPDATE flexus_schema_version SET version = :v WHERE id = 1"), {"v": step})
    for index in range(records):
        storework.append_legacy_audit(store.engine, "preview", {"n": index})
    store.engine.dispose()


def test_a_legacy_chain_verifies_then_continues_keyed_from_a_marker(
    store_url: str, tmp_path: Path, open_store: Callable[..., Store]
) -> None:
    legacy_store(store_url, tmp_path, records=5)
    store = open_store()  # migrates: the column is added, the old records stay as they were
    report = store.audit_report()
    assert report.intact and report.legacy_records == 5 and report.keyed_from is None

    append(store, 2)
    records = store.audit_records()
    marker = records[5]
    assert (marker.seq, marker.event, marker.key_id) == (6, EVENT_KEYED, store.audit_keys.current.id)
    assert marker.detail["legacy_seq"] == 5 and marker.detail["legacy_hash"] == records[4].hash
    assert [r.key_id is None for r in records] == [True] * 5 + [False] * 3
    report = store.audit_report()
    assert report.intact and report.keyed_from == 6 and report.legacy_records == 5

    # After the marker, an unkeyed record is a forgery, even one with a correct SHA-256 link.
    storework.append_legacy_audit(store.engine, "approved", {"forged": True})
    assert any("record 9" in p and "not keyed" in p for p in store.verify_audit())


def test_the_marker_pins_the_legacy_records_before_it(
    store_url: str, tmp_path: Path, open_store: Callable[..., Store]
) -> None:
    legacy_store(store_url, tmp_path, records=5)
    store = open_store()
    append(store, 1)

    def edit_legacy(row: dict[str, Any]) -> None:
        blame_someone_else(row)

    # Re-hash the legacy part only (it has no key); the keyed marker's link to it breaks.
    legacy = rows(store.engine)[:5]
    with store.engine.begin() as db:
        prev = "0" * 64
        for row in legacy:
            edit_legacy(row)
            row["prev_hash"], row["hash"] = prev, sha256_link(prev, row)
            db.execute(
                text("UPDATE flexus_audit SET person = :person, prev_hash = :prev_hash, hash = :hash WHERE seq = :seq"),
                row,
            )
            prev = row["hash"]
    problems = store.verify_audit()
    assert any("record 6" in p and "does not follow" in p for p in problems), problems


# -- (e) key rotation -------------------------------------------------------------------------------


def test_rotation_is_recorded_and_verifies_with_the_key_ring(open_store: Callable[..., Store]) -> None:
    old = open_store(key=OLD_AUDIT_SECRET)
    append(old, 3)
    old_id = old.audit_keys.current.id
    new = open_store(key=NEW_AUDIT_SECRET, previous=OLD_AUDIT_SECRET)
    new_id = new.audit_keys.current.id
    append(new, 2)
    rotation = new.audit_records()[3]
    assert (rotation.seq, rotation.event, rotation.key_id) == (4, EVENT_ROTATED, new_id)
    assert rotation.detail == {"old_key_id": old_id, "new_key_id": new_id}
    assert events(new) == ["test"] * 3 + [EVENT_ROTATED] + ["test"] * 2
    report = new.audit_report()
    assert report.intact and report.key_ids == [old_id, new_id]

    forgetful = open_store(key=NEW_AUDIT_SECRET)  # the old key is not in its ring
    report = forgetful.audit_report()
    assert report.problems == [], "a missing key is not tampering"
    assert report.unverifiable == [
        f"3 record(s) (records 1..3) cannot be verified without key {old_id} (add it to FLEXUS_AUDIT_PREVIOUS_KEYS)"
    ]
    assert forgetful.verify_audit() != [], "but the log is not reported intact either"


def test_a_tail_under_a_key_nobody_gave_is_never_carried_forward(open_store: Callable[..., Store]) -> None:
    """A database writer without the key appends a rotation to a key it invented, and records under it:
    verification can only call those unverifiable. The product must not chain its own keyed rotation
    record and checkpoints onto them, which would vouch for the forgery; it refuses until the key is given."""
    from flexus_ops.core.errors import StoreError

    store = open_store()
    append(store, 3)
    assert store.flush_checkpoint() is not None
    old_id, invented = store.audit_keys.current.id, "deadbeefdeadbeef"
    with store.engine.begin() as db:
        head = db.execute(text("SELECT seq, hash FROM flexus_audit_head WHERE id = 1")).one()
        forged = [
            ("audit_key_rotated", {"new_key_id": invented, "old_key_id": old_id}, "b" * 64),
            ("preview", {"plan": "forged"}, "c" * 64),
        ]
        prev = head.hash
        for offset, (event, detail, digest) in enumerate(forged, start=1):
            db.execute(
                text(
                    "INSERT INTO flexus_audit (seq, at, event, surface, detail_json, prev_hash, hash, key_id) "
                    "VALUES (:seq, 0, :event, 'audit', :detail, :prev, :hash, :key)"
                ),
                {"seq": head.seq + offset, "event": event, "detail": canonical(detail), "prev": prev, "hash": digest,
                 "key": invented},
            )  # fmt: skip
            prev = digest
        db.execute(
            text("UPDATE flexus_audit_head SET seq = :seq, hash = :hash, key_id = :key, key_hash = :hash WHERE id = 1"),
            {"seq": head.seq + 2, "hash": prev, "key": invented},
        )
    before = events(store)
    with pytest.raises(StoreError, match=rf"under key {invented}, which this process does not hold"):
        append(store, 1)
    assert events(store) == before, "nothing chained onto the forged records"
    assert store.flush_checkpoint() is None, "nothing signed over them"


def test_a_key_change_without_a_rotation_record_is_reported(open_store: Callable[..., Store]) -> None:
    store = open_store(key=NEW_AUDIT_SECRET, previous=OLD_AUDIT_SECRET)
    append(store, 4)
    old_key = hashlib.sha256(OLD_AUDIT_SECRET.encode()).digest()  # how a configured text key becomes bytes
    old_id = hmac.new(old_key, b"key-id", hashlib.sha256).hexdigest()[:16]

    def older_key_from_three(row: dict[str, Any]) -> None:
        if row["seq"] >= 3:
            row["key_id"] = old_id

    def link(prev: str, row: dict[str, Any]) -> str:
        return hmac_link(old_key if row["key_id"] == old_id else b"")(prev, row)

    # Even the holder of a previous key cannot slip records in under it without a rotation record.
    rewrite(store.engine, link, older_key_from_three)
    problems = store.verify_audit()
    assert any("record 3" in p and "no audit_key_rotated record" in p for p in problems), problems


def test_previous_keys_come_from_a_comma_list_and_the_state_dir(tmp_path: Path) -> None:
    derived = Keys.load(tmp_path).audit.current.id  # the default: derived from the state dir's master key
    keys = Keys.load(
        tmp_path,
        audit_key=SecretStr(NEW_AUDIT_SECRET),
        audit_previous_keys=SecretStr(f"{OLD_AUDIT_SECRET}, state-dir"),
    )
    old = Keys.load(tmp_path, audit_key=SecretStr(OLD_AUDIT_SECRET)).audit.current.id
    assert [k.id for k in keys.audit.previous] == [old, derived]
    assert keys.audit.current.id not in (old, derived)
    shown = repr(keys) + repr(keys.audit)
    assert NEW_AUDIT_SECRET not in shown and OLD_AUDIT_SECRET not in shown and "hidden" in repr(keys)


# -- (f) forged checkpoints -------------------------------------------------------------------------


def forged_line(seq: int, head_mac: str, *, claim: str | None = None) -> tuple[str, str]:
    """A checkpoint signed by a fresh key (its own id, or ``claim``ed to be another replica's)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    own_id = hashlib.sha256(private.public_key().public_bytes_raw()).hexdigest()[:16]
    key_id = claim or own_id
    body = {"seq": seq, "head_mac": head_mac, "at": 1.0, "key_id": key_id}
    sig = base64.b64encode(private.sign(canonical(body).encode())).decode()
    return canonical(body | {"sig": sig}), key_id


def test_forged_checkpoints_are_reported(open_store: Callable[..., Store], tmp_path: Path) -> None:
    store = open_store()
    append(store, 5)
    real = store.flush_checkpoint()
    assert real is not None and store.verify_audit() == []
    head = store.audit_records()[-1]

    bad_signature, _ = forged_line(head.seq, head.hash, claim=real.key_id)
    unrecorded, stranger = forged_line(head.seq, head.hash)
    beyond, _ = forged_line(head.seq + 50, "f" * 64)
    forged = tmp_path / "forged.jsonl"
    forged.write_text("\n".join([bad_signature, unrecorded, beyond, '{"head_mac": "damaged']) + "\n")
    problems = store.verify_audit([forged])
    assert any(real.key_id in p and "signature does not verify" in p for p in problems), problems
    assert any(stranger in p and "not recorded in the chain" in p for p in problems), problems
    assert any(f"record {head.seq + 50}" in p and "forged" in p for p in problems), problems
    assert any("damaged checkpoint line" in p for p in problems), problems


def test_a_checkpoint_key_record_must_match_its_key(open_store: Callable[..., Store]) -> None:
    store = open_store()
    append(store, 2)
    store.flush_checkpoint()
    with store.engine.begin() as db:  # swap in the attacker's public key (the record's MAC breaks too)
        db.execute(
            text("UPDATE flexus_audit SET detail_json = :d WHERE event = :e"),
            {
                "d": json.dumps({"key_id": "0" * 16, "public_key": base64.b64encode(b"x" * 32).decode()}),
                "e": EVENT_CHECKPOINT_KEY,
            },
        )
    problems = store.verify_audit()
    assert any("record 3" in p and "altered" in p for p in problems), problems


# -- (g) the command --------------------------------------------------------------------------------


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COMMAND, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_command_detects_truncation_with_a_moved_head(tmp_path: Path) -> None:
    state = tmp_path / "state"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HUAWEICLOUD_", "FLEXUS_", "SLACK_"))}
    env = clean | {"FLEXUS_STATE_DIR": str(state), "FLEXUS_SANDBOX_JOB_SECONDS": "0.1"}
    for name in ("web-01", "web-02", "web-03"):  # three processes, each previews and signs what it wrote
        previewed = run(env, "call", "flexus_stop_servers", "--args", json.dumps({"servers": [name]}))
        assert previewed.returncode == 0, previewed.stderr
    intact = run(env, "audit", "verify", "--output", "table")
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "audit log intact: 4 record(s)" in intact.stdout and "keyed (HMAC-SHA256) from record 1" in intact.stdout
    assert "3 signed checkpoint(s) checked" in intact.stdout

    kept = tmp_path / "elsewhere.jsonl"
    shutil.copy(state / CHECKPOINT_FILE, kept)
    with sqlite3.connect(state / "flexus.db") as db:
        db.execute("DELETE FROM flexus_audit WHERE seq > 2")
        (last,) = db.execute("SELECT hash FROM flexus_audit WHERE seq = 2").fetchone()
        db.execute("UPDATE flexus_audit_head SET seq = 2, hash = ? WHERE id = 1", (last,))
    caught = run(env, "audit", "verify", "--output", "table")
    assert caught.returncode == 1 and "TAMPERED" in caught.stdout and "truncated" in caught.stdout, caught.stdout

    # An attacker who also deletes the state dir's checkpoints is caught by copies kept elsewhere.
    (state / CHECKPOINT_FILE).unlink()
    unaware = run(env, "audit", "verify", "--output", "table")
    assert unaware.returncode == 0 and "no checkpoints were checked" in unaware.stdout
    elsewhere = run(env, "audit", "verify", "--output", "table", "--checkpoints", str(kept))
    assert elsewhere.returncode == 1 and "truncated" in elsewhere.stdout
    missing = run(env, "audit", "verify", "--output", "table", "--checkpoints", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "no such checkpoint file" in missing.stderr


# -- (h) rewriting a keyed log into an unkeyed one ------------------------------------------------------


KEYED_FILE = "audit-keyed.jsonl"  # the state dir's record of where each store's log became keyed


def forge_unkeyed(engine: Engine) -> None:
    """Rewrite the whole log as an unkeyed release would have written it: checkpoint key records dropped,
    the rest renumbered, plain SHA-256 links, no key ids, the head moved. No key is needed."""
    kept = [row for row in rows(engine) if row["event"] != EVENT_CHECKPOINT_KEY]
    prev = "0" * 64
    with engine.begin() as db:
        db.execute(text("DELETE FROM flexus_audit"))
        for seq, row in enumerate(kept, 1):
            row |= {"seq": seq, "key_id": None, "prev_hash": prev}
            row["hash"] = sha256_link(prev, row)
            db.execute(
                text(
                    "INSERT INTO flexus_audit (seq, at, event, person, surface, tool, action_id, detail_json, "
                    "prev_hash, hash, key_id) VALUES (:seq, :at, :event, :person, :surface, :tool, :action_id, "
                    ":detail_json, :prev_hash, :hash, :key_id)"
                ),
                row,
            )
            prev = row["hash"]
        db.execute(
            text("UPDATE flexus_audit_head SET seq = :seq, hash = :hash WHERE id = 1"), {"seq": len(kept), "hash": prev}
        )


def pending_row(action_id: str) -> dict[str, Any]:
    now = 1_700_000_000.0
    return {
        "id": action_id,
        "tool": "flexus_stop_servers",
        "person": "alice",
        "principal": "os:alice",
        "surface": "cli",
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


def test_a_log_rewritten_unkeyed_is_reported_and_never_continued_or_resealed(
    open_store: Callable[..., Store], tmp_path: Path
) -> None:
    """F3: with the database and the checkpoint file but no key, rewrite everything as legacy records and
    empty the checkpoints. Verify must not say intact, and the product must not seal the forgery by
    appending an audit_keyed marker and fresh checkpoints on top of it."""
    store = open_store()
    append(store, 10)
    assert store.flush_checkpoint() is not None
    assert store.verify_audit() == []

    forge_unkeyed(store.engine)
    (tmp_path / "state" / CHECKPOINT_FILE).write_text("")
    forged = events(store)
    assert forged == ["test"] * 10

    problems = store.verify_audit()
    assert any("no keyed records" in p and "record 1" in p and KEYED_FILE in p for p in problems), problems

    # The next change fails closed: its state change and its record roll back together.
    from flexus_ops.core.entries import AuditEntry
    from flexus_ops.core.errors import StoreError

    entry = AuditEntry("preview", "alice", "cli", "flexus_stop_servers", "a" * 32, {"n": 1})
    with pytest.raises(StoreError, match=r"has lost its keyed records \(this state dir saw them from record 1"):
        store.create_action(pending_row("a" * 32), entry)
    assert store.get_action("a" * 32) is None, "the state change rolled back with its audit record"
    with pytest.raises(StoreError, match="nothing was recorded"):
        append(store, 1)
    assert store.flush_checkpoint() is None, "nothing of the forgery is signed"

    # So does a new process on the same state dir: the fact is on disk, not only in memory.
    later = open_store()
    with pytest.raises(StoreError, match="lost its keyed records"):
        append(later, 1)
    assert events(later) == forged, "no audit_keyed marker was sealed onto the forgery"
    assert (tmp_path / "state" / CHECKPOINT_FILE).read_text() == ""
    assert any("no keyed records" in p for p in later.verify_audit())


def test_the_state_dir_records_where_each_log_became_keyed(
    store_url: str, tmp_path: Path, open_store: Callable[..., Store]
) -> None:
    legacy_store(store_url, tmp_path, records=5)
    first = open_store()
    append(first, 2)  # continues the legacy chain from a marker at record 6
    path = tmp_path / "state" / KEYED_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (line,) = [json.loads(text_line) for text_line in path.read_text().splitlines()]
    assert line["keyed_from"] == 6 and line["key_id"] == first.audit_keys.current.id
    assert line["legacy_seq"] == 5 and line["legacy_hash"] == first.audit_records()[4].hash
    assert line["store"].split(":")[0] in store_url, "named by its URL (never with a password)"

    # A replica with its own state dir joining the keyed store records what it finds.
    replica = open_store(state="replica")
    append(replica, 1)
    (joined,) = [json.loads(text_line) for text_line in (tmp_path / "replica" / KEYED_FILE).read_text().splitlines()]
    assert (joined["store"], joined["keyed_from"], joined["key_id"]) == (line["store"], 6, line["key_id"])
    assert replica.verify_audit() == [] and first.verify_audit() == []

    # Rewriting the keyed part away (back into one legacy chain) is reported by both state dirs.
    forge_unkeyed(first.engine)
    for store in (first, replica):
        problems = store.verify_audit()
        assert any("no keyed records" in p and "record 6" in p for p in problems), problems


def test_an_unkeyed_record_on_a_keyed_log_is_never_resealed(store_url: str, tmp_path: Path) -> None:
    """Even a writer with no state dir of its own (no record of the keyed start) must not continue a
    log that has keyed records but ends in an unkeyed one: that would seal a forged tail."""
    from flexus_ops.core.errors import StoreError

    store = Store(store_url, Keys.load(tmp_path / "keys").audit)
    try:
        append(store, 3)
        storework.append_legacy_audit(store.engine, "approved", {"forged": True})
        with pytest.raises(StoreError, match="nothing was recorded"):
            append(store, 1)
        assert events(store) == ["test"] * 3 + ["approved"], "no second audit_keyed marker"
    finally:
        store.engine.dispose()


def test_the_newest_record_rewritten_unkeyed_in_place_is_never_continued(
    open_store: Callable[..., Store],
) -> None:
    """The newest record replaced by an unkeyed one under the same number, and the head's hash moved to
    it (all a tamperer who knows the head's seq and hash does): the head's word on its record's key no
    longer holds, so the append reads the record itself and refuses, as for an unkeyed record appended."""
    from flexus_ops.core.errors import StoreError

    store = open_store()
    append(store, 3)
    with store.engine.begin() as db:
        db.execute(text("DELETE FROM flexus_audit WHERE seq = 3"))
    storework.append_legacy_audit(store.engine, "approved", {"forged": True}, seq=3)
    with pytest.raises(StoreError, match=r"the newest record, 3, is not keyed"):
        append(store, 1)
    assert events(store) == ["test", "test", "approved"], "nothing appended onto the forged record"


@pytest.mark.parametrize(
    "stored",
    [
        '{"n":"forged","n":1}',  # a first-key-wins reader (SQLite's json_extract, many SIEMs) sees "forged"
        '{"n": 1}',  # the same value, not the text that was written
        '{"\\u006e":1}',
    ],
)
def test_a_records_stored_detail_text_is_verified_not_only_its_parsed_value(
    open_store: Callable[..., Store], stored: str
) -> None:
    """The MAC covers the detail's value; a keyed record's detail is stored as its canonical text. Any
    other text for the same value (a duplicate key first, spacing, escapes) is an edit that other readers
    of the table may read differently: reported, never called intact."""
    store = open_store()
    append(store, 3)
    assert store.verify_audit() == []
    with store.engine.begin() as db:
        db.execute(text("UPDATE flexus_audit SET detail_json = :stored WHERE seq = 2"), {"stored": stored})
    problems = store.verify_audit()
    assert any(p.startswith("record 2:") and "detail" in p for p in problems), problems


def test_a_record_nobody_can_read_is_reported_with_everything_else(open_store: Callable[..., Store]) -> None:
    """A detail that is not JSON (or nests beyond any parser, or holds a lone surrogate) is one problem
    among the others: verification reads on, so it cannot hide a truncation behind a crash."""
    store = open_store()
    append(store, 6)
    assert store.flush_checkpoint() is not None
    truncate(store.engine, keep=5)
    unreadable = ["{", "[" * 50_000 + "]" * 50_000, '{"a":"\\ud800"}']
    with store.engine.begin() as db:
        for seq, stored in enumerate(unreadable, start=1):
            db.execute(
                text("UPDATE flexus_audit SET detail_json = :stored WHERE seq = :seq"), {"stored": stored, "seq": seq}
            )
    problems = store.verify_audit()
    for seq in (1, 2, 3):
        assert any(p.startswith(f"record {seq}:") and "detail" in p for p in problems), problems
    assert any("truncated" in p for p in problems), problems  # the truncation the checkpoint saw
    assert [record.seq for record in store.audit_records()] == [1, 2, 3, 4, 5], "the log still lists"


def test_text_that_is_not_utf8_is_an_altered_record_not_an_unreachable_store(tmp_path: Path) -> None:
    """SQLite stores whatever bytes it is given as TEXT. A record with bytes that are not UTF-8 is read as
    altered (its MAC no longer matches), next to any other tampering, instead of failing the whole read."""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}", Keys.load(tmp_path / "keys").audit)
    try:
        append(store, 4)
        with store.engine.begin() as db:
            db.execute(text("UPDATE flexus_audit SET person = CAST(X'ff' AS TEXT) WHERE seq = 2"))
            db.execute(text("UPDATE flexus_audit SET detail_json = CAST(X'7bff7d' AS TEXT) WHERE seq = 3"))
        problems = store.verify_audit()
        assert any(p.startswith("record 2:") for p in problems), problems
        assert any(p.startswith("record 3:") for p in problems), problems
        assert [record.seq for record in store.audit_records()] == [1, 2, 3, 4]
    finally:
        store.engine.dispose()


HEAD_EDITS = {
    "text seq": "UPDATE flexus_audit_head SET seq = 'x' WHERE id = 1",
    "huge seq": "UPDATE flexus_audit_head SET seq = 9223372036854775807 WHERE id = 1",
    "negative seq": "UPDATE flexus_audit_head SET seq = -5 WHERE id = 1",
    "number hash": "UPDATE flexus_audit_head SET hash = 7 WHERE id = 1",
}


@pytest.mark.parametrize("head", sorted(HEAD_EDITS))
def test_a_head_row_that_is_not_a_head_refuses_the_append_in_one_line(
    store_url: str, tmp_path: Path, head: str
) -> None:
    from sqlalchemy.exc import DBAPIError

    from flexus_ops.core.errors import StoreError

    store = Store(store_url, Keys.load(tmp_path / "keys").audit)
    try:
        append(store, 2)
        try:
            with store.engine.begin() as db:
                db.execute(text(HEAD_EDITS[head]))
        except DBAPIError:
            pytest.skip("this database's types refuse that value")
        with pytest.raises(StoreError, match="the audit head row is damaged"):
            append(store, 1)
        assert len(store.audit_records()) == 2
    finally:
        store.engine.dispose()


def test_the_reports_a_person_reads_show_control_characters_from_the_database_as_escapes() -> None:
    """A key id (or any text) written into the database by hand must not move the cursor, clear the
    'TAMPERED' line or print a forged 'intact' one on the reader's terminal."""
    from flexus_ops.cli import _audit_line, _audit_report_text
    from flexus_ops.gate.audit import AuditRecord, AuditReport

    forged = "k\x1b[1A\x1b[2K\raudit log intact: 4 record(s)\x1b[8m"
    report = AuditReport(problems=[f"record 4: under key {forged}"], key_ids=[forged], unverifiable=[forged])
    record = AuditRecord(
        seq=1, at=0.0, event=forged, person=forged, surface=forged, tool=forged, action_id=None,
        detail={"plan": forged}, prev_hash="0" * 64, hash="1" * 64, key_id=forged,
    )  # fmt: skip
    for shown in (_audit_report_text(report), _audit_line(record)):
        assert "\x1b" not in shown and "\r" not in shown, shown
        assert "\\x1b" in shown
    assert "\n" not in _audit_line(record)


def test_a_checkpoint_file_of_garbage_is_reported(open_store: Callable[..., Store], tmp_path: Path) -> None:
    """F6: lines in the state dir's own checkpoint file that are not checkpoints are a problem, not skipped."""
    store = open_store()
    append(store, 3)
    assert store.flush_checkpoint() is not None
    path = tmp_path / "state" / CHECKPOINT_FILE
    path.write_text("garbage\nnot a checkpoint at all\n")
    report = store.audit_report()
    assert report.checkpoints_checked == 0
    assert f"line 1 of {path} is not a checkpoint" in report.problems, report.problems
    assert f"line 2 of {path} is not a checkpoint" in report.problems, report.problems


def test_a_damaged_keyed_record_file_fails_closed(open_store: Callable[..., Store], tmp_path: Path) -> None:
    from flexus_ops.core.errors import StoreError

    store = open_store()
    append(store, 2)
    path = tmp_path / "state" / KEYED_FILE
    path.write_text("garbage\n")
    fresh = open_store()  # a new process reads the file afresh
    with pytest.raises(StoreError, match="nothing was recorded"):
        append(fresh, 1)
    assert any(f"line 1 of {path}" in p for p in fresh.verify_audit())


@pytest.mark.slow
def test_the_command_reports_an_unkeyed_rewrite_and_refuses_to_seal_it(tmp_path: Path) -> None:
    """F3 end to end: the rewrite is reported, and the next change fails (exit 4) instead of appending an
    audit_keyed marker and fresh checkpoints on top of the forgery."""
    from sqlalchemy import create_engine

    state = tmp_path / "state"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HUAWEICLOUD_", "FLEXUS_", "SLACK_"))}
    env = clean | {"FLEXUS_STATE_DIR": str(state), "FLEXUS_SANDBOX_JOB_SECONDS": "0.1"}
    for name in ("web-01", "web-02"):
        previewed = run(env, "call", "flexus_stop_servers", "--args", json.dumps({"servers": [name]}))
        assert previewed.returncode == 0, previewed.stderr
    intact = run(env, "audit", "verify", "--output", "table")
    assert intact.returncode == 0 and "keyed from the record this state dir saw" in intact.stdout, intact.stdout

    engine = create_engine(f"sqlite:///{state / 'flexus.db'}")
    try:
        forge_unkeyed(engine)
        forged = rows(engine)
    finally:
        engine.dispose()
    (state / CHECKPOINT_FILE).write_text("")

    caught = run(env, "audit", "verify", "--output", "table")
    assert caught.returncode == 1 and "TAMPERED" in caught.stdout and "no keyed records" in caught.stdout, caught.stdout
    change = run(env, "call", "flexus_stop_servers", "--args", json.dumps({"servers": ["web-03"]}))
    assert change.returncode == 4 and "lost its keyed records" in change.stderr, change.stdout + change.stderr
    engine = create_engine(f"sqlite:///{state / 'flexus.db'}")
    try:
        assert rows(engine) == forged, "nothing appended: no audit_keyed marker sealed onto the forgery"
    finally:
        engine.dispose()
    assert (state / CHECKPOINT_FILE).read_text() == "", "and no checkpoint signed over it"
    again = run(env, "audit", "verify", "--output", "table")
    assert again.returncode == 1 and "no keyed records" in again.stdout, again.stdout
