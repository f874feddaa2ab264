"""The gate's state: pending actions, approvals and the keyed, hash-chained audit log, in one database.

SQLite (the embedded default) or PostgreSQL, chosen by the URL alone, through SQLAlchemy Core.
Every state change is one conditional UPDATE (compare-and-set on ``state``), so two replicas or two
clicks racing to confirm the same action cannot both win. Audit appends take a lock on the single
``audit_head`` row, so the chain stays linear under concurrent writers: no forks, no gaps. The chain's
cryptography (record MACs, checkpoints, verification) is in ``audit.py``; this module only moves rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url

from .audit import (
    EVENT_CHECKPOINT_KEY,
    GENESIS,
    AuditKeyRing,
    AuditRecord,
    AuditReport,
    ChainVerifier,
    Checkpoint,
    Checkpointer,
    load_checkpoints,
    records_to_prepend,
)
from .canonical import canonical_json
from .private import private_file

metadata = MetaData()

schema_version = Table(
    "flexus_schema_version",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

actions = Table(
    "flexus_actions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tool", String(64), nullable=False),
    Column("person", String(64), nullable=False),
    Column("principal", String(200), nullable=False),
    Column("surface", String(32), nullable=False),
    Column("args_json", Text, nullable=False),  # redacted, for people to read
    Column("args_hash", String(64), nullable=False),  # binds the confirmation to the exact arguments
    Column("plan_json", Text, nullable=False),
    Column("plan_hash", String(64), nullable=False),
    Column("state", String(32), nullable=False, index=True),
    Column("needs_approval", Boolean, nullable=False, default=False),
    Column("reason", Text),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("confirmed_via", String(32)),
    Column("decided_by", String(64)),
    Column("decided_at", Float),
    Column("decision_note", Text),
    Column("executed_by", String(64)),
    Column("secret", LargeBinary),  # AES-GCM ciphertext of a password, erased after use
    Column("reveal_secret", LargeBinary),  # a generated password, until its requester reads it once
    Column("reveal_expires_at", Float),
    Column("job_ids", Text),
    Column("result_json", Text),
    Column("answer_key", String(64)),  # added by _v3_answer_key
)

audit = Table(
    "flexus_audit",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", Float, nullable=False),
    Column("event", String(32), nullable=False),
    Column("person", String(64)),
    Column("surface", String(32)),
    Column("tool", String(64)),
    Column("action_id", String(32)),
    Column("detail_json", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("key_id", String(16)),  # the audit key's id, NULL on legacy records (added by _v4_keyed_audit)
)

audit_head = Table(
    "flexus_audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

MIGRATION_LOCK = 0x466C6578  # any constant shared by every replica ("Flex")


def _v1_tables(db: Connection) -> None:
    for table in (actions, audit, audit_head):
        table.create(db, checkfirst=True)
    if db.execute(select(audit_head.c.seq).where(audit_head.c.id == 1)).scalar() is None:
        db.execute(insert(audit_head).values(id=1, seq=0, hash=GENESIS))


def _v2_open_action_index(db: Connection) -> None:
    # Previews are looked up by (person, tool, arguments) on every confirmation.
    # Raw DDL: an Index object would attach to the table and be created by step 1 already.
    db.execute(text("CREATE INDEX IF NOT EXISTS ix_flexus_actions_open ON flexus_actions (person, tool, args_hash)"))


def _v3_answer_key(db: Connection) -> None:
    # The elicitation answer that confirmed an action, consumed with it: a replayed answer finds its action.
    # Step 1 creates the table from today's definition, which already has the column.
    if "answer_key" not in {column["name"] for column in inspect(db).get_columns("flexus_actions")}:
        db.execute(text("ALTER TABLE flexus_actions ADD COLUMN answer_key VARCHAR(64)"))
    db.execute(text("CREATE UNIQUE INDEX IF NOT EXISTS ix_flexus_actions_answer ON flexus_actions (answer_key)"))


def _v4_keyed_audit(db: Connection) -> None:
    # Step 1 creates the table from today's definition, which already has the column.
    if "key_id" not in {column["name"] for column in inspect(db).get_columns("flexus_audit")}:
        db.execute(text("ALTER TABLE flexus_audit ADD COLUMN key_id VARCHAR(16)"))
    # Each writing process looks its checkpoint key record up by event, once.
    db.execute(text("CREATE INDEX IF NOT EXISTS ix_flexus_audit_event ON flexus_audit (event)"))


MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1_tables,
    _v2_open_action_index,
    _v3_answer_key,
    _v4_keyed_audit,
]
"""Append-only: a released step is never edited, a change is a new step."""


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's BEGIN below be the only transaction control, and allow readers
        # alongside the single writer.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock up front, so read-then-write transactions (the audit
        # append) are serialised instead of failing with "database is locked" on upgrade.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the same mode.
            private_file(Path(parsed.database))
        return _sqlite_engine(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg"))
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


class Store:
    def __init__(self, url: str, audit_keys: AuditKeyRing, *, checkpoints: Checkpointer | None = None) -> None:
        """``audit_keys`` (``Keys.audit``): the key that MACs new audit records, and earlier keys that only
        verify. ``checkpoints``: signs checkpoints of what this process appends (None: no checkpoints)."""
        self.url = url
        self.audit_keys = audit_keys
        self.checkpoints = checkpoints
        self.engine = make_engine(url)
        self.migrate()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    def migrate(self, target: int | None = None) -> int:
        """Create or upgrade the schema in place, one numbered step at a time, and return the version.

        Safe from every replica at once: PostgreSQL takes a transaction-level advisory lock, SQLite's
        BEGIN IMMEDIATE serialises writers; a replica that finds the work done does nothing.
        """
        target = len(MIGRATIONS) if target is None else target
        with self.tx() as db:
            if db.dialect.name == "postgresql":
                db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            schema_version.create(db, checkfirst=True)
            current = db.execute(select(schema_version.c.version).where(schema_version.c.id == 1)).scalar()
            if current is None:
                current = 0
                db.execute(insert(schema_version).values(id=1, version=0))
            if current > len(MIGRATIONS):
                raise RuntimeError(f"store schema {current} is newer than this flexus-ops ({len(MIGRATIONS)})")
            for version in range(current + 1, target + 1):
                MIGRATIONS[version - 1](db)
                db.execute(update(schema_version).where(schema_version.c.id == 1).values(version=version))
            return max(current, target)

    def at_current_schema(self) -> bool:
        return self.schema_version() == len(MIGRATIONS)

    def schema_version(self) -> int:
        with self.tx() as db:
            return int(db.execute(select(schema_version.c.version).where(schema_version.c.id == 1)).scalar() or 0)

    # -- actions ----------------------------------------------------------------------------

    def create_action(self, row: dict[str, Any]) -> None:
        with self.tx() as db:
            db.execute(insert(actions).values(**row))

    def get_action(self, action_id: str) -> dict[str, Any] | None:
        with self.tx() as db:
            found = db.execute(select(actions).where(actions.c.id == action_id)).mappings().first()
        return dict(found) if found else None

    def action_by_answer(self, answer_key: str) -> dict[str, Any] | None:
        with self.tx() as db:
            found = db.execute(select(actions).where(actions.c.answer_key == answer_key)).mappings().first()
        return dict(found) if found else None

    def find_open_action(self, person: str, tool: str, args_hash: str, states: Sequence[str]) -> dict[str, Any] | None:
        """The newest unexpired action of this person for these exact arguments."""
        with self.tx() as db:
            found = (
                db.execute(
                    select(actions)
                    .where(
                        actions.c.person == person,
                        actions.c.tool == tool,
                        actions.c.args_hash == args_hash,
                        actions.c.state.in_(states),
                        actions.c.expires_at > time.time(),
                    )
                    .order_by(actions.c.created_at.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return dict(found) if found else None

    def transition(
        self, action_id: str, from_states: Iterable[str], to_state: str, *, unexpired: bool = False, **values: Any
    ) -> bool:
        """Compare-and-set: True only for the one caller that moved the action. With ``unexpired``, an
        action past its expiry cannot move, however close the race with the clock."""
        now = time.time()
        values["updated_at"] = now
        conditions = [actions.c.id == action_id, actions.c.state.in_(list(from_states))]
        if unexpired:
            conditions.append(actions.c.expires_at > now)
        with self.tx() as db:
            result = db.execute(update(actions).where(*conditions).values(state=to_state, **values))
        return result.rowcount == 1

    def set_fields(self, action_id: str, **values: Any) -> None:
        values["updated_at"] = time.time()
        with self.tx() as db:
            db.execute(update(actions).where(actions.c.id == action_id).values(**values))

    def take_reveal_secret(self, action_id: str, person: str) -> bytes | None:
        """Read a generated password once: it is erased in the same conditional update."""
        with self.tx() as db:
            row = (
                db.execute(
                    select(actions.c.reveal_secret, actions.c.reveal_expires_at).where(
                        actions.c.id == action_id, actions.c.person == person
                    )
                )
                .mappings()
                .first()
            )
            if not row or row["reveal_secret"] is None:
                return None
            erased = db.execute(
                update(actions)
                .where(actions.c.id == action_id, actions.c.reveal_secret == row["reveal_secret"])
                .values(reveal_secret=None, reveal_expires_at=None, updated_at=time.time())
            )
            if erased.rowcount != 1 or (row["reveal_expires_at"] or 0) < time.time():
                return None
            return bytes(row["reveal_secret"])

    def actions_in(self, states: Sequence[str], limit: int = 200) -> list[dict[str, Any]]:
        with self.tx() as db:
            rows = (
                db.execute(
                    select(actions).where(actions.c.state.in_(states)).order_by(actions.c.created_at).limit(limit)
                )
                .mappings()
                .all()
            )
        return [dict(row) for row in rows]

    def due_for_expiry(self, states: Sequence[str]) -> list[dict[str, Any]]:
        with self.tx() as db:
            rows = (
                db.execute(select(actions).where(actions.c.state.in_(states), actions.c.expires_at <= time.time()))
                .mappings()
                .all()
            )
        return [dict(row) for row in rows]

    def erase_stale_reveals(self) -> int:
        with self.tx() as db:
            result = db.execute(
                update(actions)
                .where(actions.c.reveal_secret.is_not(None), actions.c.reveal_expires_at <= time.time())
                .values(reveal_secret=None, reveal_expires_at=None)
            )
        return result.rowcount

    # -- audit ------------------------------------------------------------------------------

    def append_audit(
        self,
        event_name: str,
        *,
        person: str | None,
        surface: str | None,
        tool: str | None,
        action_id: str | None,
        detail: dict[str, Any],
    ) -> AuditRecord:
        """Append one record in a transaction of its own, then a checkpoint if one is due."""
        with self.tx() as db:
            record = self._append_audit(
                db, event_name, person=person, surface=surface, tool=tool, action_id=action_id, detail=detail
            )
        self.audit_appended(record)
        return record

    def _append_audit(
        self,
        db: Connection,
        event_name: str,
        *,
        person: str | None,
        surface: str | None,
        tool: str | None,
        action_id: str | None,
        detail: dict[str, Any],
    ) -> AuditRecord:
        """Append within the caller's transaction; call ``audit_appended`` once it has committed.

        The head row is locked first, so concurrent writers queue here and the chain stays linear.
        A legacy chain's marker, or a key rotation record, goes in first when needed."""
        head = db.execute(select(audit_head).where(audit_head.c.id == 1).with_for_update()).mappings().one()
        last = db.execute(select(audit.c.key_id).where(audit.c.seq == head["seq"])).first()
        # A head whose record is gone is for verification to report; appends go on under the current key.
        last_key_id = last.key_id if last is not None else self.audit_keys.current.id
        key = self.audit_keys.current
        entries: list[tuple[str, dict[str, Any], str | None, str | None, str | None, str | None]] = [
            (name, fields, None, "audit", None, None)
            for name, fields in records_to_prepend(self.audit_keys, head["seq"], head["hash"], last_key_id)
        ]
        entries.append((event_name, detail, person, surface, tool, action_id))
        seq, prev_hash = head["seq"], head["hash"]
        for name, fields, who, where, what, action in entries:
            draft = AuditRecord(
                seq=seq + 1,
                at=time.time(),
                event=name,
                person=who,
                surface=where,
                tool=what,
                action_id=action,
                detail=json.loads(canonical_json(fields)),
                prev_hash=prev_hash,
                hash="",
                key_id=key.id,
            )
            record = replace(draft, hash=key.mac(prev_hash, draft))
            db.execute(
                insert(audit).values(
                    seq=record.seq,
                    at=record.at,
                    event=record.event,
                    person=record.person,
                    surface=record.surface,
                    tool=record.tool,
                    action_id=record.action_id,
                    detail_json=canonical_json(record.detail),
                    prev_hash=record.prev_hash,
                    hash=record.hash,
                    key_id=record.key_id,
                )
            )
            seq, prev_hash = record.seq, record.hash
        db.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=prev_hash))
        return record

    def audit_appended(self, record: AuditRecord) -> None:
        """After the transaction that appended ``record`` committed: counts it towards a checkpoint."""
        if self.checkpoints is not None:
            self.checkpoints.appended(self, record)

    def checkpoint_due(self) -> Checkpoint | None:
        """For a long-running surface's timer: sign what this process appended if that is 60 s unsigned."""
        return self.checkpoints.tick(self) if self.checkpoints is not None else None

    def flush_checkpoint(self) -> Checkpoint | None:
        """On close: sign whatever this process appended since its last checkpoint."""
        return self.checkpoints.flush(self) if self.checkpoints is not None else None

    def audit_records(
        self, *, since_seq: int = 0, limit: int | None = None, event: str | None = None
    ) -> list[AuditRecord]:
        query = select(audit).where(audit.c.seq > since_seq).order_by(audit.c.seq)
        if event is not None:
            query = query.where(audit.c.event == event)
        if limit is not None:
            query = query.limit(limit)
        with self.tx() as db:
            rows = db.execute(query).mappings().all()
        return [
            AuditRecord(
                seq=row["seq"],
                at=row["at"],
                event=row["event"],
                person=row["person"],
                surface=row["surface"],
                tool=row["tool"],
                action_id=row["action_id"],
                detail=json.loads(row["detail_json"]),
                prev_hash=row["prev_hash"],
                hash=row["hash"],
                key_id=row["key_id"],
            )
            for row in rows
        ]

    def _all_audit_records(self, batch: int = 5000) -> Iterator[AuditRecord]:
        since = 0
        while True:
            chunk = self.audit_records(since_seq=since, limit=batch)
            yield from chunk
            if len(chunk) < batch:
                return
            since = chunk[-1].seq

    def checkpoint_key_recorded(self, key_id: str, public_key: str) -> bool:
        return any(
            record.detail.get("key_id") == key_id and record.detail.get("public_key") == public_key
            for record in self.audit_records(event=EVENT_CHECKPOINT_KEY)
        )

    def audit_report(self, checkpoint_files: Sequence[Path] | None = None) -> AuditReport:
        """Verify the chain, and the checkpoints in ``checkpoint_files`` (by default this state dir's own
        checkpoint file, when this store writes checkpoints and the file exists)."""
        if checkpoint_files is None:
            checkpoint_files = self.checkpoints.default_files() if self.checkpoints is not None else []
        checkpoints, unreadable = load_checkpoints(checkpoint_files)
        local = self.checkpoints.known_public_keys() if self.checkpoints is not None and checkpoints else {}
        verifier = ChainVerifier(self.audit_keys, checkpoints, local_public_keys=local)
        verifier.report.problems.extend(unreadable)
        verifier.report.checkpoint_files = [str(path) for path in checkpoint_files]
        for record in self._all_audit_records():
            verifier.feed(record)
        with self.tx() as db:
            head = db.execute(select(audit_head).where(audit_head.c.id == 1)).mappings().one()
        return verifier.finish(head["seq"], head["hash"])

    def verify_audit(self, checkpoint_files: Sequence[Path] | None = None) -> list[str]:
        """Everything that keeps the log from being proven intact: altered records, gaps, forks, a head
        or checkpoints that disagree, and records under keys this store does not hold. Empty: intact."""
        report = self.audit_report(checkpoint_files)
        return report.problems + report.unverifiable
