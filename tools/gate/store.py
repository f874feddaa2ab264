"""The gate's state: pending actions, approvals and the hash-chained audit log, in one database.

SQLite (the embedded default) or PostgreSQL, chosen by the URL alone, through SQLAlchemy Core.
Every state change is one conditional UPDATE (compare-and-set on ``state``), so two replicas or two
clicks racing to confirm the same action cannot both win. Audit appends take a lock on the single
``audit_head`` row, so the chain stays linear under concurrent writers: no forks, no gaps.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url

from .canonical import canonical_json

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
)

audit_head = Table(
    "flexus_audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

GENESIS = "0" * 64
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


MIGRATIONS: list[Callable[[Connection], None]] = [_v1_tables, _v2_open_action_index]
"""Append-only: a released step is never edited, a change is a new step."""


def chain_hash(prev_hash: str, record: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(record)).encode()).hexdigest()


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: float
    event: str
    person: str | None
    surface: str | None
    tool: str | None
    action_id: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def chained_fields(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "event": self.event,
            "person": self.person,
            "surface": self.surface,
            "tool": self.tool,
            "action_id": self.action_id,
            "detail": self.detail,
        }


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
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return _sqlite_engine(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg"))
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
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
        with self.tx() as db:
            head = db.execute(select(audit_head).where(audit_head.c.id == 1).with_for_update()).mappings().one()
            record = AuditRecord(
                seq=head["seq"] + 1,
                at=time.time(),
                event=event_name,
                person=person,
                surface=surface,
                tool=tool,
                action_id=action_id,
                detail=json.loads(canonical_json(detail)),
                prev_hash=head["hash"],
                hash="",
            )
            digest = chain_hash(record.prev_hash, record.chained_fields())
            db.execute(
                insert(audit).values(
                    seq=record.seq,
                    at=record.at,
                    event=record.event,
                    person=person,
                    surface=surface,
                    tool=tool,
                    action_id=action_id,
                    detail_json=canonical_json(record.detail),
                    prev_hash=record.prev_hash,
                    hash=digest,
                )
            )
            db.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=record.seq, hash=digest))
        return AuditRecord(**{**record.__dict__, "hash": digest})

    def audit_records(self, *, since_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        query = select(audit).where(audit.c.seq > since_seq).order_by(audit.c.seq)
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
            )
            for row in rows
        ]

    def verify_audit(self) -> list[str]:
        """Every problem in the chain: altered records, gaps, forks, or a head that disagrees."""
        problems: list[str] = []
        previous = GENESIS
        expected_seq = 1
        records = self.audit_records()
        for record in records:
            if record.seq != expected_seq:
                problems.append(f"record {expected_seq} is missing (found {record.seq} next)")
                expected_seq = record.seq
            if record.prev_hash != previous:
                problems.append(f"record {record.seq}: does not follow record {record.seq - 1} (chain broken)")
            if chain_hash(record.prev_hash, record.chained_fields()) != record.hash:
                problems.append(f"record {record.seq}: content does not match its hash (altered)")
            previous = record.hash
            expected_seq += 1
        with self.tx() as db:
            head = db.execute(select(audit_head).where(audit_head.c.id == 1)).mappings().one()
        last_seq = records[-1].seq if records else 0
        if head["seq"] != last_seq or head["hash"] != previous:
            problems.append(f"the chain head says record {head['seq']}, the log ends at {last_seq} (truncated?)")
        return problems
