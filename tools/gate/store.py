"""The gate's state: pending actions, approvals and the keyed, hash-chained audit log, in one database.

SQLite (the embedded default) or PostgreSQL, chosen by the URL alone, through SQLAlchemy Core.
Every state change is one conditional UPDATE (compare-and-set on ``state``), so two replicas or two
clicks racing to confirm the same action cannot both win. Audit appends take a lock on the single
``audit_head`` row, so the chain stays linear under concurrent writers: no forks, no gaps. The chain's
cryptography (record MACs, checkpoints, verification) is in ``audit.py``; this module only moves rows.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import select as select_module
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

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
    bindparam,
    create_engine,
    event,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLATimeoutError

from ..core.entries import AuditEntry
from ..core.errors import ConfigurationError, StoreError, bounded, require_extra
from ..core.telemetry import emit
from .audit import (
    EVENT_CHECKPOINT_KEY,
    EVENT_KEYED,
    GENESIS,
    AuditKeyRing,
    AuditRecord,
    AuditReport,
    ChainVerifier,
    Checkpoint,
    Checkpointer,
    KeyedMark,
    load_checkpoints,
    read_detail,
    records_to_prepend,
)
from .canonical import canonical_json
from .private import private_file

log = logging.getLogger("flexus_ops.store")
T = TypeVar("T")
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
    # The process running the execution, and until when its lease holds (renewed while the call is in
    # flight): nobody else settles it before then. Added by _v5_execution_lease.
    Column("owner", String(80)),
    Column("lease_until", Float),
    # A rollout in waves: how many waves were sent, and each wave's state (a ``Rollout``), written with
    # the audit record of every wave start and end. Added by _v6_rollout_progress.
    Column("wave", Integer),
    Column("rollout_json", Text),
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
    # The key of the record whose hash is key_hash, written with the record by the append that moves the
    # head there (added by _v7_head_key). While key_hash is the head's hash, an append under that key reads
    # no record under the lock; a head moved by anything else (an older release, a hand edit of its seq
    # and hash) no longer matches, and the newest record is read instead.
    Column("key_id", String(16)),
    Column("key_hash", String(64)),
)

# The hot path's statements, built once and compiled once per dialect (``_compile``), then run on the
# DBAPI cursor inside SQLAlchemy's connection and transaction (``Store._run``): SQLAlchemy's own work per
# statement (cache key, execution context, result object) was about half of the store's CPU on a preview or
# a confirmation. Bound parameters in WHERE clauses are prefixed "w_"; an UPDATE's SET clause and an
# INSERT's columns are the other parameters' names. A list parameter is one parameter per item
# (``_each``), so each arity is its own statement, compiled once.
_ACTION_BY_ID = select(actions).where(actions.c.id == bindparam("w_id"))
_INSERT_ACTION = insert(actions)
_LOCK_ACTION = select(actions.c.tool, actions.c.state).where(actions.c.id == bindparam("w_id")).with_for_update()
# The head, locked, and the record the log became keyed at (w_keyed_from; 0 for none). That record was
# committed before this state dir noted it, so the statement's snapshot has it; the head's columns are
# its newest version once the lock is granted (PostgreSQL re-reads a locked row that changed while it
# waited), but a joined row would be as of before, hence the newest record is never read by a join here.
_AUDIT_HEAD = (
    select(
        audit_head.c.seq, audit_head.c.hash, audit_head.c.key_id, audit_head.c.key_hash, audit.c.key_id, audit.c.event
    )
    .select_from(audit_head.outerjoin(audit, audit.c.seq == bindparam("w_keyed_from")))
    .where(audit_head.c.id == 1)
    .with_for_update(of=audit_head)
)
_AUDIT_ROW = select(audit.c.seq, audit.c.key_id, audit.c.event).where(audit.c.seq == bindparam("w_seq"))
_INSERT_AUDIT = insert(audit)
_MOVE_AUDIT_HEAD = update(audit_head).where(audit_head.c.id == 1)
# PostgreSQL: the record and the head's move in one statement (one round trip). The head row is already
# locked by this transaction, so this is the same as the two statements it replaces.
_INSERT_AUDIT_MOVE_HEAD = text(
    "WITH appended AS (INSERT INTO flexus_audit "
    "(seq, at, event, person, surface, tool, action_id, detail_json, prev_hash, hash, key_id) VALUES "
    "(:seq, :at, :event, :person, :surface, :tool, :action_id, :detail_json, :prev_hash, :hash, :key_id)) "
    "UPDATE flexus_audit_head SET seq = :seq, hash = :hash, key_id = :key_id, key_hash = :hash WHERE id = 1"
)
_ACTION_COLUMNS = tuple(actions.c.keys())
_BOOLEAN_COLUMNS = tuple(column.key for column in actions.c if isinstance(column.type, Boolean))


def _each(name: str, values: Sequence[Any]) -> dict[str, Any]:
    """A list as one parameter per item: ``w_states`` of two is ``w_states_0`` and ``w_states_1``."""
    return {f"{name}_{index}": value for index, value in enumerate(values)}


def _items(name: str, count: int) -> list[Any]:
    return [bindparam(f"{name}_{index}") for index in range(count)]


@functools.lru_cache(maxsize=16)
def _open_action_statement(states: int) -> Any:
    return (
        select(actions)
        .where(
            actions.c.person == bindparam("w_person"),
            actions.c.tool == bindparam("w_tool"),
            actions.c.args_hash == bindparam("w_args_hash"),
            actions.c.state.in_(_items("w_states", states)),
            actions.c.expires_at > bindparam("w_now"),
        )
        .order_by(actions.c.created_at.desc())
        .limit(1)
    )


@functools.lru_cache(maxsize=64)
def _transition_statement(unexpired: bool, owned: bool, lease_expired: bool, returning: str, states: int) -> Any:
    """The compare-and-set for one shape of condition, from any of ``states`` states; its SET clause is the
    parameters' columns. ``returning``: "tool" (the moved row's tool), "tool_and_state" (and the state it
    moved from, read under a row lock in the same statement: PostgreSQL) or "" (nothing: the caller reads
    the row first)."""
    conditions = [actions.c.id == bindparam("w_id"), actions.c.state.in_(_items("w_states", states))]
    if unexpired:
        conditions.append(actions.c.expires_at > bindparam("w_now"))
    if owned:
        conditions.append(actions.c.owner == bindparam("w_owner"))
    if lease_expired:
        conditions.append(or_(actions.c.lease_until.is_(None), actions.c.lease_until < bindparam("w_now")))
    if returning == "tool_and_state":
        # The row locked first, as it is once the lock is granted: the state it really moved from. The
        # update then checks its conditions against that same newest version (PostgreSQL re-checks a row
        # that changed while it waited), as the separate SELECT ... FOR UPDATE and UPDATE did.
        before = select(actions.c.id, actions.c.state).where(actions.c.id == bindparam("w_id"))
        was = before.with_for_update().subquery("was")
        change = update(actions).where(actions.c.id == was.c.id, *conditions)
        return change.returning(actions.c.tool, was.c.state)
    change = update(actions).where(*conditions)
    return change.returning(actions.c.tool) if returning == "tool" else change


class _Compiled(NamedTuple):
    """A hot statement in one dialect's SQL, for the DBAPI cursor."""

    sql: str
    order: tuple[str, ...] | None  # a positional paramstyle's parameter names, in order (SQLite's "?")
    fixed: dict[str, Any]  # parameters whose values are in the statement (WHERE id = 1, a column's default)

    def parameters(self, params: dict[str, Any]) -> Any:
        values = {**self.fixed, **params} if self.fixed else params
        return values if self.order is None else [values[name] for name in self.order]


@functools.lru_cache(maxsize=512)  # a process has one engine (one dialect) and about 20 hot statements
def _compile(dialect: Dialect, statement: Any, column_keys: tuple[str, ...]) -> _Compiled:
    compiled = statement.compile(dialect=dialect, column_keys=list(column_keys) or None)
    fixed = {
        name: bind.effective_value
        for bind, name in compiled.bind_names.items()
        if not bind.required and bind.effective_value is not None
    }
    for column in getattr(compiled, "insert_prefetch", ()):
        if column.default is not None and column.default.is_scalar:
            fixed[column.key] = column.default.arg
    return _Compiled(
        compiled.string,
        tuple(compiled.positiontup) if compiled.positional and compiled.positiontup is not None else None,
        fixed,
    )


class _AuditRow(NamedTuple):
    seq: int
    key_id: str | None
    event: str


_HASH = re.compile(r"[0-9a-f]{64}")
_MAX_SEQ = 2**31 - 2  # the seq column is a 32-bit INTEGER on PostgreSQL; the next record needs one more


def _is_head(seq: Any, head_hash: Any) -> bool:
    return type(seq) is int and 0 <= seq <= _MAX_SEQ and isinstance(head_hash, str) and bool(_HASH.fullmatch(head_hash))


class _LockedHead(NamedTuple):
    """The audit head as an append finds it once it holds the head's lock."""

    seq: int
    hash: str
    # The record at seq (its key, on the head's word, when that holds; its event is then not known). None:
    # an empty log, or a record that was read and is gone.
    newest: _AuditRow | None
    keyed_from: _AuditRow | None  # the record the log became keyed at, when asked for and there


def _action_row(row: Sequence[Any]) -> dict[str, Any]:
    """A row of ``select(actions)`` as the dict the gate reads."""
    found = dict(zip(_ACTION_COLUMNS, row, strict=True))
    for name in _BOOLEAN_COLUMNS:  # SQLite has no boolean type: it returns 0 and 1
        if found[name] is not None:
            found[name] = bool(found[name])
    return found


MIGRATION_LOCK = 0x466C6578  # any constant shared by every replica ("Flex")


def _v1_tables(db: Connection) -> None:
    for table in (actions, audit, audit_head):
        table.create(db, checkfirst=True)
    if db.execute(select(audit_head.c.seq).where(audit_head.c.id == 1)).scalar() is None:
        db.execute(insert(audit_head).values(id=1, seq=0, hash=GENESIS))


def _add_missing_columns(db: Connection, table: str, columns: dict[str, str]) -> None:
    """Step 1 creates each table from today's definition, which already has every column; an older
    database gets the ones it lacks."""
    have = {column["name"] for column in inspect(db).get_columns(table)}
    for name, kind in columns.items():
        if name not in have:
            db.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"))


def _v2_open_action_index(db: Connection) -> None:
    # Previews are looked up by (person, tool, arguments) on every confirmation.
    # Raw DDL: an Index object would attach to the table and be created by step 1 already.
    db.execute(text("CREATE INDEX IF NOT EXISTS ix_flexus_actions_open ON flexus_actions (person, tool, args_hash)"))


def _v3_answer_key(db: Connection) -> None:
    # The elicitation answer that confirmed an action, consumed with it: a replayed answer finds its action.
    _add_missing_columns(db, "flexus_actions", {"answer_key": "VARCHAR(64)"})
    db.execute(text("CREATE UNIQUE INDEX IF NOT EXISTS ix_flexus_actions_answer ON flexus_actions (answer_key)"))


def _v4_keyed_audit(db: Connection) -> None:
    _add_missing_columns(db, "flexus_audit", {"key_id": "VARCHAR(16)"})
    # Each writing process looks its checkpoint key record up by event, once.
    db.execute(text("CREATE INDEX IF NOT EXISTS ix_flexus_audit_event ON flexus_audit (event)"))


def _v5_execution_lease(db: Connection) -> None:
    _add_missing_columns(db, "flexus_actions", {"owner": "VARCHAR(80)", "lease_until": "FLOAT"})


def _v6_rollout_progress(db: Connection) -> None:
    _add_missing_columns(db, "flexus_actions", {"wave": "INTEGER", "rollout_json": "TEXT"})


def _v7_head_key(db: Connection) -> None:
    # Left empty: the first append reads the newest record as before, and moves the head with its key.
    _add_missing_columns(db, "flexus_audit_head", {"key_id": "VARCHAR(16)", "key_hash": "VARCHAR(64)"})


MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1_tables,
    _v2_open_action_index,
    _v3_answer_key,
    _v4_keyed_audit,
    _v5_execution_lease,
    _v6_rollout_progress,
    _v7_head_key,
]
"""Append-only: a released step is never edited, a change is a new step."""


SINGLE_READ = "flexus_single_read"
"""The execution option of a connection that runs one read without a transaction of its own (Store.read)."""


def _text_of(stored: bytes) -> str:
    return stored.decode("utf-8", "replace")


def _sqlite_engine(url: str, busy_seconds: float) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_seconds})
    busy_ms = int(busy_seconds * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's BEGIN below be the only transaction control, and allow readers
        # alongside the single writer. A lock held longer than the statement timeout is an error.
        dbapi_connection.isolation_level = None
        # SQLite keeps whatever bytes it was given as TEXT: bytes that are not UTF-8 (a hand edit) are read
        # as U+FFFD, so a record holding them fails its MAC, instead of every read of the table failing.
        dbapi_connection.text_factory = _text_of
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock up front, so read-then-write transactions (the audit
        # append) are serialised instead of failing with "database is locked" on upgrade.
        # A single-statement read (Store.read) runs without one: WAL gives it a committed snapshot.
        if not connection.get_execution_options().get(SINGLE_READ):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


PING_IDLE_SECONDS = 1.0
"""A pooled PostgreSQL connection idle this long is pinged before use; one used more recently is checked
without a round trip."""


def _check_on_checkout(engine: Engine) -> None:
    """What ``pool_pre_ping`` does, without its round trip for a connection that was just used (the hot path
    takes one per transaction). A server that went away since (restarted, or ended the session) has closed
    the socket or sent an error, so the idle socket is readable: only then, or after a second idle, is the
    connection pinged. A connection that fails is replaced before anyone uses it (DisconnectionError makes
    the pool connect anew), as with pre-ping."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None:
            return  # just connected
        if dbapi_connection.closed:
            raise DisconnectionError("the connection was closed")
        if time.monotonic() - idle_since < PING_IDLE_SECONDS:
            try:
                readable, _, _ = select_module.select([dbapi_connection.fileno()], [], [], 0)
            except (OSError, ValueError):
                readable = [True]
            if not readable:
                return  # nothing arrived on an idle session: the server has not closed it
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"the connection failed its ping ({type(exc).__name__})") from exc


def parse_store_url(url: str) -> URL:
    """The store's URL, or a configuration error that never repeats it (it may hold a password)."""
    try:
        parsed = make_url(url)
    except (ValueError, ArgumentError):
        raise ConfigurationError(
            "FLEXUS_STORE_URL: not a database URL (e.g. postgresql://USER:PASSWORD@HOST:5432/DB or "
            "sqlite:////path/flexus.db)"
        ) from None
    if parsed.get_backend_name() != "sqlite" and url.count("@") > 1:
        # A password (or user name) ended at its own '@': the rest of it would be read as the host, the
        # database or the query, printed by every message naming them (ours, the driver's) and looked up
        # as a host name. One '@' separates the credentials; any other must be written %40.
        raise ConfigurationError(
            "FLEXUS_STORE_URL: an '@' in its user name or password must be written %40 (the URL holds more "
            "than one '@')"
        )
    return parsed


def make_engine(url: str, *, connect_timeout: float = 10.0, statement_timeout: float = 10.0) -> Engine:
    parsed = parse_store_url(url)
    if parsed.get_backend_name() == "sqlite" and (parsed.database or ":memory:") == ":memory:":
        raise StoreError(
            "an in-memory SQLite store would forget every preview, approval and audit record when this process exits",
            "set FLEXUS_STORE_URL to sqlite:///PATH (or leave it unset for the state dir's file)",
        )
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the same mode.
            private_file(Path(parsed.database))
        return _sqlite_engine(url, statement_timeout)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # Kept a URL object: str() of a URL masks its password as '***', which would then be sent as the password.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "postgresql+psycopg":
        require_extra("a postgresql:// store (FLEXUS_STORE_URL)", "postgres", ("psycopg",))
    engine = create_engine(
        parsed,
        pool_size=10,
        max_overflow=20,
        pool_timeout=connect_timeout,
        connect_args={"connect_timeout": max(1, round(connect_timeout))},
    )
    _check_on_checkout(engine)
    statement_ms = int(statement_timeout * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Set per connection, not in the URL's options, so a URL's own options (search_path) stay.
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {statement_ms}")
            cursor.execute(f"SET lock_timeout = {statement_ms}")
            cursor.execute(f"SET idle_in_transaction_session_timeout = {max(statement_ms * 6, 60_000)}")
        dbapi_connection.commit()

    return engine


@functools.lru_cache(maxsize=32)  # a pure function of the URL, asked on every audit append
def describe_store(url: str) -> str:
    """The store as a person knows it, never with its password."""
    parsed = parse_store_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite store {parsed.database}"
    return f"PostgreSQL store {parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def store_error(exc: BaseException, url: str, timeout: float) -> StoreError:
    """One line for a person: which store, what went wrong, what to do next. The driver's own message is
    kept short and never carries a password (the URL is rendered without it)."""
    where = describe_store(url)
    raw = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lowered = raw.lower()
    if "readonly" in lowered or "read-only" in lowered or "read only" in lowered:
        return StoreError(f"{where} is read-only ({raw})", "check its file permissions, or set FLEXUS_STORE_URL")
    if "database is locked" in lowered or "lock timeout" in lowered or "could not obtain lock" in lowered:
        return StoreError(
            f"{where} stayed locked by another process for {timeout:g} s",
            "try again; if it persists, find the process holding it (FLEXUS_DB_STATEMENT_TIMEOUT sets the wait)",
        )
    if "statement timeout" in lowered or "canceling statement" in lowered or isinstance(exc, TimeoutError):
        return StoreError(
            f"{where} did not answer within {timeout:g} s",
            "check the database's health (FLEXUS_DB_STATEMENT_TIMEOUT sets the limit)",
        )
    if isinstance(exc, PermissionError | IsADirectoryError | NotADirectoryError | FileExistsError):
        return StoreError(
            f"cannot create {where} ({type(exc).__name__}: {exc.strerror or exc})",
            "set FLEXUS_STATE_DIR to a directory you can write, or FLEXUS_STORE_URL",
        )
    if "unable to open database" in lowered:
        return StoreError(f"cannot open {where} ({raw})", "check the path in FLEXUS_STORE_URL or FLEXUS_STATE_DIR")
    if isinstance(exc, OperationalError | InterfaceError | SQLATimeoutError) or "connect" in lowered:
        return StoreError(
            f"cannot reach {where} ({bounded(raw, 160)})",
            "check FLEXUS_STORE_URL and that the database is running (FLEXUS_DB_CONNECT_TIMEOUT sets the wait)",
        )
    return StoreError(f"{where} failed ({type(exc).__name__}: {bounded(raw, 160)})", "see the server log")


STORE_FAILURES = (DBAPIError, SQLATimeoutError, OSError)


def _transitioned(
    tool: str | None, action_id: str | None, from_state: str | None, to_state: str | None, entry: AuditEntry | None
) -> None:
    """One event per committed state change (every one passes here or ``create_action``): for the log and
    the metrics. Names, never arguments: the tool, the action id, the states, who and through what surface."""
    emit(
        "gate.transition",
        tool=tool,
        action_id=action_id,
        from_state=str(from_state) if from_state is not None else "none",
        to_state=str(to_state),
        surface=entry.surface if entry is not None else None,
        person=entry.person if entry is not None else None,
        audit_event=entry.event if entry is not None else None,
    )


class Store:
    """The state as rows, synchronously. The surfaces use it through ``AsyncStore``, which keeps every
    database call off their event loop; tests and benchmarks may use it directly."""

    def __init__(
        self,
        url: str,
        audit_keys: AuditKeyRing,
        *,
        checkpoints: Checkpointer | None = None,
        connect_timeout: float = 10.0,
        statement_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``audit_keys`` (``Keys.audit``): the key that MACs new audit records, and earlier keys that only
        verify. ``checkpoints``: signs checkpoints of what this process appends (None: no checkpoints).
        Timeouts bound connecting (and waiting for a pooled connection) and each statement or lock."""
        self.url = url
        self._store_name: str | None = None
        self.audit_keys = audit_keys
        self.checkpoints = checkpoints
        self.timeout = statement_timeout
        self.clock = clock  # one clock for every expiry and lease decision: injectable, so tests need no hooks
        try:
            self.engine = make_engine(url, connect_timeout=connect_timeout, statement_timeout=statement_timeout)
            self.migrate()
        except STORE_FAILURES as exc:
            raise store_error(exc, url, statement_timeout) from None
        except (ArgumentError, ImportError) as exc:
            # A URL SQLAlchemy cannot read, or a database with no driver here (mysql://...): a setting to
            # fix, not a bug. The URL itself is not echoed (it may hold a password); SQLAlchemy's message
            # does not hold it either.
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise StoreError(
                f"FLEXUS_STORE_URL names no store flexus-ops can use ({type(exc).__name__}: {bounded(cause, 160)})",
                "set it to sqlite:///PATH or postgresql://USER@HOST:5432/DB",
            ) from None

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as connection:
                yield connection
        except STORE_FAILURES as exc:
            raise store_error(exc, self.url, self.timeout) from None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """For a read of one statement: no transaction of its own (no BEGIN and COMMIT round trips on
        PostgreSQL, no write lock on SQLite). The statement sees committed rows, as in a transaction."""
        # PostgreSQL: autocommit. SQLite's connections already are (its BEGIN is the engine's own, which a
        # single read skips); setting its isolation level would change the pooled connection for good.
        postgresql = self.engine.dialect.name == "postgresql"
        options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if postgresql else {SINGLE_READ: True}
        try:
            with self.engine.connect().execution_options(**options) as connection:
                yield connection
        except STORE_FAILURES as exc:
            raise store_error(exc, self.url, self.timeout) from None

    def _run(self, db: Connection, statement: Any, params: dict[str, Any]) -> Any:
        """Run one of the hot path's statements on ``db``'s DBAPI cursor, in its transaction, and return
        the cursor with its result; the caller closes it (``_executed``). A driver
        error is raised as SQLAlchemy raises it, so callers see the same errors as from ``db.execute``.
        A lost connection is invalidated; the pool's other connections are checked when next taken out
        (``_check_on_checkout``), where SQLAlchemy would mark them all for replacement."""
        # An INSERT's columns and an UPDATE's SET clause are the parameters that are not "w_" ones.
        columns = tuple(sorted(name for name in params if not name.startswith("w_"))) if statement.is_dml else ()
        dialect = self.engine.dialect
        compiled = _compile(dialect, statement, columns)
        cursor = db.connection.cursor()
        try:
            cursor.execute(compiled.sql, compiled.parameters(params))
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, db.connection.dbapi_connection, cursor)
            cursor.close()
            if lost:
                db.invalidate(exc)
            # No parameters in the error: they may hold a sealed secret or a person's reason.
            raise DBAPIError.instance(
                compiled.sql, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost, dialect=dialect
            ) from exc
        return cursor

    @contextmanager
    def _executed(self, db: Connection, statement: Any, params: dict[str, Any]) -> Iterator[Any]:
        cursor = self._run(db, statement, params)
        try:
            yield cursor
        finally:
            cursor.close()

    def _first(self, db: Connection, statement: Any, params: dict[str, Any]) -> Any:
        """The first row (a tuple), or None."""
        with self._executed(db, statement, params) as cursor:
            return cursor.fetchone()

    def _count(self, db: Connection, statement: Any, params: dict[str, Any]) -> int:
        """How many rows the statement changed."""
        with self._executed(db, statement, params) as cursor:
            return int(cursor.rowcount)

    def _locked_head(self, db: Connection, keyed_from: int | None) -> _LockedHead | None:
        """The audit head, locked until this transaction ends, with the records an append checks: the
        newest, and the one the log became keyed at (``keyed_from``). The newest record's key comes with
        the head when an append under the current key moved it there; any other newest record is read
        once the lock is granted (read in the lock's statement, it would be as it was before the previous
        holder committed)."""
        found = self._first(db, _AUDIT_HEAD, {"w_keyed_from": keyed_from or 0})
        if found is None:
            return None
        seq, head_hash, head_key, key_hash, from_key, from_event = found
        if not _is_head(seq, head_hash):
            # What a database writer put there (text, a number past any seq, ...): its values are not echoed.
            raise StoreError(
                f"the audit head row is damaged in {describe_store(self.url)} (its seq or hash is not one an "
                "append writes): it may have been tampered with",
                "run flexus-ops audit verify; nothing was recorded",
            )
        start = _AuditRow(keyed_from, from_key, from_event) if keyed_from and from_event is not None else None
        if seq == 0:
            newest = None
        elif key_hash == head_hash and head_key == self.audit_keys.current.id:
            # Only the current key is taken on the head's word: anything else (a rotation to record, an
            # unkeyed tail to refuse) is decided on the record itself.
            newest = _AuditRow(seq, head_key, "")
        else:
            row = self._first(db, _AUDIT_ROW, {"w_seq": seq})
            newest = _AuditRow._make(row) if row is not None else None
        return _LockedHead(seq, head_hash, newest, start)

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

    def dispose(self) -> None:
        self.engine.dispose()

    def at_current_schema(self) -> bool:
        return self.schema_version() == len(MIGRATIONS)

    def schema_version(self) -> int:
        with self.tx() as db:
            return int(db.execute(select(schema_version.c.version).where(schema_version.c.id == 1)).scalar() or 0)

    # -- actions ----------------------------------------------------------------------------

    def create_action(self, row: dict[str, Any], audit_entry: AuditEntry | None = None) -> None:
        """Insert an action and, in the same transaction, its audit record."""
        # The driver takes values as they are: a flag is stored as the boolean it means (PostgreSQL refuses 1).
        row = {**row, **{name: bool(row[name]) for name in _BOOLEAN_COLUMNS if row.get(name) is not None}}
        with self.tx() as db:
            self._count(db, _INSERT_ACTION, row)
            record = self._append_entry(db, audit_entry)
        self._appended(record)
        _transitioned(row.get("tool"), row.get("id"), None, row.get("state"), audit_entry)

    def get_action(self, action_id: str) -> dict[str, Any] | None:
        with self.read() as db:
            found = self._first(db, _ACTION_BY_ID, {"w_id": action_id})
        return _action_row(found) if found is not None else None

    def action_by_answer(self, answer_key: str) -> dict[str, Any] | None:
        with self.read() as db:
            found = db.execute(select(actions).where(actions.c.answer_key == answer_key)).mappings().first()
        return dict(found) if found else None

    def find_open_action(self, person: str, tool: str, args_hash: str, states: Sequence[str]) -> dict[str, Any] | None:
        """The newest unexpired action of this person for these exact arguments."""
        states = list(states)
        if not states:
            return None  # in no state: no action (a statement can not name an empty list)
        params = {"w_person": person, "w_tool": tool, "w_args_hash": args_hash, "w_now": self.clock()}
        with self.read() as db:
            found = self._first(db, _open_action_statement(len(states)), {**params, **_each("w_states", states)})
        return _action_row(found) if found is not None else None

    def transition(
        self,
        action_id: str,
        from_states: Iterable[str],
        to_state: str,
        *,
        unexpired: bool = False,
        owned_by: str | None = None,
        lease_expired: bool = False,
        audit_entry: AuditEntry | None = None,
        **values: Any,
    ) -> bool:
        """Compare-and-set: True only for the one caller that moved the action, and only then is its audit
        record appended, in the same transaction (a state change never lacks its record; a lost race
        writes none). With ``unexpired``, an action past its expiry cannot move, however close the race
        with the clock; with ``owned_by``, only while that process still owns the execution; with
        ``lease_expired``, only once nobody holds its lease (settling a dead owner's work)."""
        now = self.clock()
        states = list(from_states)
        if not states:
            return False  # from no state: nothing can move (a statement can not name an empty list)
        params = {**values, "state": to_state, "updated_at": now, "w_id": action_id, **_each("w_states", states)}
        if unexpired or lease_expired:
            params["w_now"] = now
        if owned_by is not None:
            params["w_owner"] = owned_by
        with self.tx() as db:
            before: tuple[str, str] | None
            shape = (unexpired, owned_by is not None, lease_expired)
            if len(states) == 1:
                # One state it can have moved from: the compare-and-set names it, so the event needs no
                # read of its own (one round trip fewer on the hot path); RETURNING gives the tool.
                moved_row = self._first(db, _transition_statement(*shape, "tool", 1), params)
                moved, before = moved_row is not None, (moved_row[0], states[0]) if moved_row else None
            elif db.dialect.name == "postgresql":
                # The event names the state it really moved from: read under the row's lock, in the update.
                moved_row = self._first(db, _transition_statement(*shape, "tool_and_state", len(states)), params)
                moved, before = moved_row is not None, (moved_row[0], moved_row[1]) if moved_row else None
            else:
                # The row as it was, locked until commit (SQLite's RETURNING names the updated table only).
                found = self._first(db, _LOCK_ACTION, {"w_id": action_id})
                before = (found[0], found[1]) if found is not None else None
                moved = self._count(db, _transition_statement(*shape, "", len(states)), params) == 1
            record = self._append_entry(db, audit_entry) if moved else None
        self._appended(record)
        if moved and before is not None:
            _transitioned(before[0], action_id, before[1], to_state, audit_entry)
        return moved

    def renew_lease(self, action_id: str, owner: str, until: float) -> bool:
        """The owner's heartbeat while its execution is in flight; False once it lost the execution."""
        with self.tx() as db:
            result = db.execute(
                update(actions)
                .where(
                    actions.c.id == action_id,
                    actions.c.owner == owner,
                    actions.c.state.in_(["executing", "submitted"]),
                )
                .values(lease_until=until)
            )
        return result.rowcount == 1

    def unsettled(self, states: Sequence[str], limit: int) -> list[dict[str, Any]]:
        """Executions nobody owns any more (no lease, or an expired one), oldest first."""
        now = self.clock()
        with self.read() as db:
            rows = (
                db.execute(
                    select(actions)
                    .where(
                        actions.c.state.in_(states),
                        or_(actions.c.lease_until.is_(None), actions.c.lease_until < now),
                    )
                    .order_by(actions.c.updated_at)
                    .limit(limit)
                )
                .mappings()
                .all()
            )
        return [dict(row) for row in rows]

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
                .values(reveal_secret=None, reveal_expires_at=None, updated_at=self.clock())
            )
            if erased.rowcount != 1 or (row["reveal_expires_at"] or 0) < self.clock():
                return None
            return bytes(row["reveal_secret"])

    def actions_in(self, states: Sequence[str], limit: int = 200) -> list[dict[str, Any]]:
        with self.read() as db:
            rows = (
                db.execute(
                    select(actions).where(actions.c.state.in_(states)).order_by(actions.c.created_at).limit(limit)
                )
                .mappings()
                .all()
            )
        return [dict(row) for row in rows]

    def due_for_expiry(self, states: Sequence[str]) -> list[dict[str, Any]]:
        with self.read() as db:
            rows = (
                db.execute(select(actions).where(actions.c.state.in_(states), actions.c.expires_at <= self.clock()))
                .mappings()
                .all()
            )
        return [dict(row) for row in rows]

    def erase_stale_reveals(self) -> int:
        with self.tx() as db:
            result = db.execute(
                update(actions)
                .where(actions.c.reveal_secret.is_not(None), actions.c.reveal_expires_at <= self.clock())
                .values(reveal_secret=None, reveal_expires_at=None)
            )
        return result.rowcount

    # -- audit ------------------------------------------------------------------------------

    def _append_entry(self, db: Connection, entry: AuditEntry | None) -> AuditRecord | None:
        if entry is None:
            return None
        return self._append_audit(
            db,
            entry.event,
            person=entry.person,
            surface=entry.surface,
            tool=entry.tool,
            action_id=entry.action_id,
            detail=entry.detail,
        )

    def _appended(self, record: AuditRecord | None) -> None:
        if record is not None:
            try:
                self.audit_appended(record)
            except OSError as exc:  # the record is committed; a checkpoint file we cannot write is logged
                log.warning("audit checkpoint not written: %s", exc)

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
        mark, damaged = self._keyed_mark()
        head = self._locked_head(db, mark.keyed_from if mark is not None else None)
        if head is None:
            raise StoreError(
                f"the audit log in {describe_store(self.url)} has no head row (flexus_audit_head): it may have been "
                "tampered with",
                "run flexus-ops audit verify; nothing was recorded",
            )
        head_seq, head_hash, last = head.seq, head.hash, head.newest
        self._refuse_unkeyed(db, head, mark, damaged)
        if last is not None and last.key_id is not None and self.audit_keys.get(last.key_id) is None:
            # A rotation record from here would vouch for records nobody here can verify: made by a
            # database writer without the key, they would look like a rotation the operator forgot.
            raise StoreError(
                f"the newest record of the audit log in {describe_store(self.url)}, {head_seq}, is under key "
                f"{last.key_id}, which this process does not hold: it may have been forged",
                "if that key is yours, add it to FLEXUS_AUDIT_PREVIOUS_KEYS (or make it FLEXUS_AUDIT_KEY); "
                "run flexus-ops audit verify; nothing was recorded",
            )
        # A head whose record is gone is for verification to report; appends go on under the current key.
        last_key_id = last.key_id if last is not None else self.audit_keys.current.id
        key = self.audit_keys.current
        entries: list[tuple[str, dict[str, Any], str | None, str | None, str | None, str | None]] = [
            (name, fields, None, "audit", None, None)
            for name, fields in records_to_prepend(self.audit_keys, head_seq, head_hash, last_key_id)
        ]
        entries.append((event_name, detail, person, surface, tool, action_id))
        seq, prev_hash = head_seq, head_hash
        combined = db.dialect.name == "postgresql"
        for index, (name, fields, who, where, what, action) in enumerate(entries):
            detail_json = canonical_json(fields)
            draft = AuditRecord(
                seq=seq + 1,
                at=self.clock(),
                event=name,
                person=who,
                surface=where,
                tool=what,
                action_id=action,
                detail=json.loads(detail_json),
                prev_hash=prev_hash,
                hash="",
                key_id=key.id,
            )
            record = replace(draft, hash=key.mac(prev_hash, draft))
            row = {
                "seq": record.seq,
                "at": record.at,
                "event": record.event,
                "person": record.person,
                "surface": record.surface,
                "tool": record.tool,
                "action_id": record.action_id,
                # Canonical JSON parsed back is the same value: its canonical form is the same text.
                "detail_json": detail_json,
                "prev_hash": record.prev_hash,
                "hash": record.hash,
                "key_id": record.key_id,
            }
            if combined and index == len(entries) - 1:
                self._count(db, _INSERT_AUDIT_MOVE_HEAD, row)  # the head moves to this record in the same statement
            else:
                self._count(db, _INSERT_AUDIT, row)
            seq, prev_hash = record.seq, record.hash
        if not combined:
            self._count(db, _MOVE_AUDIT_HEAD, {"seq": seq, "hash": prev_hash, "key_id": key.id, "key_hash": prev_hash})
        return record

    def _audit_store_name(self) -> str:
        """This store as a state dir's record of where its log became keyed names it: the URL, without its
        password (nor one passed as a query parameter). Every append looks it up: parsed once."""
        if self._store_name is None:
            self._store_name = self._render_store_name()
        return self._store_name

    def _render_store_name(self) -> str:
        parsed = parse_store_url(self.url)
        query = {name: "***" if "pass" in name.lower() else value for name, value in parsed.query.items()}
        return parsed.set(query=query).render_as_string(hide_password=True)

    def _keyed_mark(self) -> tuple[KeyedMark | None, list[str]]:
        if self.checkpoints is None:
            return None, []
        return self.checkpoints.keyed_mark(self._audit_store_name())

    def _refuse_unkeyed(
        self,
        db: Connection,
        head: _LockedHead,
        mark: KeyedMark | None,
        damaged: list[str],
    ) -> None:
        """Refuse to append, before anything is written (the caller's state change rolls back with it),
        to a log that has lost the keyed part this state dir saw, or to a keyed log that now ends in
        unkeyed records: continuing either would seal a chain rewritten without the key. A legacy chain
        is continued only when this state dir never saw the store keyed and it has no keyed record."""
        where, next_step = describe_store(self.url), "run flexus-ops audit verify; nothing was recorded"
        head_seq, last = head.seq, head.newest
        if damaged:
            raise StoreError(
                f"where the audit log in {where} became keyed is unknown ({damaged[0]})",
                f"check that file, then {next_step}",
            )
        if mark is None:
            if last is None or last.key_id is not None:
                return
            keyed = db.execute(
                select(audit.c.seq).where(audit.c.key_id.is_not(None)).order_by(audit.c.seq).limit(1)
            ).first()
            if keyed is None:
                return  # a log from before the keyed release: continued from an audit_keyed marker
            raise StoreError(
                f"the audit log in {where} is keyed from record {keyed.seq} but ends in an unkeyed record "
                f"({head_seq}): it may have been rewritten",
                next_step,
            )
        start = mark.keyed_from
        first = head.keyed_from
        if head_seq < start:
            reason = f"the log ends at record {head_seq}"
        elif first is None:
            reason = f"record {start} is gone"
        elif first.key_id is None:
            reason = f"record {start} is not keyed"
        elif first.key_id != mark.key_id:
            reason = f"record {start} is under key {first.key_id}, not {mark.key_id}"
        elif start > 1 and first.event != EVENT_KEYED:
            reason = f"record {start} is not the {EVENT_KEYED} marker"
        elif last is not None and last.key_id is None:
            reason = f"the newest record, {head_seq}, is not keyed"
        else:
            return
        raise StoreError(
            f"the audit log in {where} has lost its keyed records (this state dir saw them from record "
            f"{start}; {reason}): it may have been rewritten",
            next_step,
        )

    def _keyed_start(self, db: Connection) -> KeyedMark | None:
        """Where the log in the database became keyed: record 1, or its audit_keyed marker."""
        name, now = self._audit_store_name(), round(self.clock(), 3)
        first = db.execute(select(audit.c.key_id).where(audit.c.seq == 1)).first()
        if first is not None and first.key_id is not None:
            return KeyedMark(name, 1, first.key_id, at=now)
        marker = db.execute(
            select(audit.c.seq, audit.c.key_id, audit.c.detail_json)
            .where(audit.c.event == EVENT_KEYED, audit.c.key_id.is_not(None))
            .order_by(audit.c.seq)
            .limit(1)
        ).first()
        if marker is None:
            return None
        detail, _ = read_detail(marker.detail_json, keyed=True)  # a damaged marker is for verify to report
        legacy_seq, legacy_hash = detail.get("legacy_seq"), detail.get("legacy_hash")
        return KeyedMark(
            name,
            marker.seq,
            marker.key_id,
            legacy_seq=legacy_seq if isinstance(legacy_seq, int) else None,
            legacy_hash=legacy_hash if isinstance(legacy_hash, str) else None,
            at=now,
        )

    def _note_keyed(self) -> None:
        """After a committed append: record, once, where this store's log became keyed, in the state dir
        (a replica joining a keyed store records what it finds). Never fails the write it follows."""
        if self.checkpoints is None:
            return
        try:
            mark, damaged = self._keyed_mark()
            if mark is not None or damaged:
                return
            with self.tx() as db:
                found = self._keyed_start(db)
            if found is not None and self.checkpoints.record_keyed(found):
                log.info(
                    "audit log keyed from record %d (key %s): recorded in %s",
                    found.keyed_from,
                    found.key_id,
                    self.checkpoints.keyed_path,
                )
        except Exception as exc:
            log.warning("where the audit log became keyed was not recorded (%s): %s", type(exc).__name__, exc)

    def audit_appended(self, record: AuditRecord) -> None:
        """After the transaction that appended ``record`` committed: records where the log became keyed,
        if this state dir has not yet, and counts it towards a checkpoint."""
        if self.checkpoints is not None:
            self._note_keyed()
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
        records = []
        for row in rows:
            detail, problem = read_detail(row["detail_json"], keyed=row["key_id"] is not None)
            records.append(
                AuditRecord(
                    seq=row["seq"],
                    at=row["at"],
                    event=row["event"],
                    person=row["person"],
                    surface=row["surface"],
                    tool=row["tool"],
                    action_id=row["action_id"],
                    detail=detail,
                    prev_hash=row["prev_hash"],
                    hash=row["hash"],
                    key_id=row["key_id"],
                    detail_problem=problem,
                )
            )
        return records

    def _all_audit_records(self, batch: int = 5000) -> Iterator[AuditRecord]:
        since = 0
        while True:
            chunk = self.audit_records(since_seq=since, limit=batch)
            yield from chunk
            if len(chunk) < batch:
                return
            since = chunk[-1].seq

    def checkpoint_key_seq(self, key_id: str, public_key: str) -> int | None:
        """Where the chain records this checkpoint key, if it does: nothing before it may be signed by it."""
        return next(
            (
                record.seq
                for record in self.audit_records(event=EVENT_CHECKPOINT_KEY)
                if record.detail.get("key_id") == key_id and record.detail.get("public_key") == public_key
            ),
            None,
        )

    def audit_report(self, checkpoint_files: Sequence[Path] | None = None) -> AuditReport:
        """Verify the chain, and the checkpoints in ``checkpoint_files`` (by default this state dir's own
        checkpoint file, when this store writes checkpoints and the file exists), and that the log is
        keyed from where this state dir saw it become keyed. Every line of the state dir's own checkpoint
        file must be a checkpoint."""
        own = [self.checkpoints.path] if self.checkpoints is not None else []
        if checkpoint_files is None:
            checkpoint_files = self.checkpoints.default_files() if self.checkpoints is not None else []
        checkpoints, unreadable = load_checkpoints(checkpoint_files, strict=own)
        local = self.checkpoints.known_public_keys() if self.checkpoints is not None and checkpoints else {}
        mark, damaged = self._keyed_mark()
        verifier = ChainVerifier(
            self.audit_keys,
            checkpoints,
            local_public_keys=local,
            keyed_mark=mark,
            keyed_source=str(self.checkpoints.keyed_path) if self.checkpoints is not None else "",
        )
        verifier.report.problems.extend(unreadable + damaged)
        verifier.report.checkpoint_files = [str(path) for path in checkpoint_files]
        for record in self._all_audit_records():
            verifier.feed(record)
        with self.tx() as db:
            head = db.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).first()
        return verifier.finish(tuple(head) if head is not None else None)

    def verify_audit(self, checkpoint_files: Sequence[Path] | None = None) -> list[str]:
        """Everything that keeps the log from being proven intact: altered records, gaps, forks, a head
        or checkpoints that disagree, and records under keys this store does not hold. Empty: intact."""
        report = self.audit_report(checkpoint_files)
        return report.problems + report.unverifiable


class AsyncStore:
    """The store as the surfaces use it: every call runs on the store's own threads, so a slow query
    never holds up the event loop (another request's Slack ack, another MCP answer). A caller waits at
    most the store's timeouts plus a margin, then gets a ``StoreError``, even if the database hangs."""

    def __init__(self, open_store: Callable[[], Store], *, url: str, timeout: float, threads: int = 8) -> None:
        """``open_store`` connects and migrates: it runs on the store's threads too, on first use."""
        self._open = open_store
        self._store: Store | None = None
        self._opening = threading.Lock()
        self.url = url
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="flexus-store")
        self._limit = timeout * 3 + 5  # connect, lock wait and statement, with room to spare

    @classmethod
    def of(cls, store: Store) -> AsyncStore:
        return cls(lambda: store, url=store.url, timeout=store.timeout)

    @property
    def sync(self) -> Store:
        """The synchronous store, opened if need be (for tests, benchmarks and start-up checks)."""
        if self._store is None:
            with self._opening:
                if self._store is None:
                    self._store = self._open()
        return self._store

    @property
    def is_open(self) -> bool:
        return self._store is not None

    async def _run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        def call() -> T:
            return getattr(self.sync, fn.__name__)(*args, **kwargs)

        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, call)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
            # arrives as the call completes, and a cancelled caller would then carry on.
            async with asyncio.timeout(self._limit):
                return await future
        except TimeoutError:
            raise store_error(TimeoutError(), self.url, self._limit) from None

    async def create_action(self, row: dict[str, Any], audit_entry: AuditEntry | None = None) -> None:
        await self._run(Store.create_action, row, audit_entry)

    async def get_action(self, action_id: str) -> dict[str, Any] | None:
        return await self._run(Store.get_action, action_id)

    async def action_by_answer(self, answer_key: str) -> dict[str, Any] | None:
        return await self._run(Store.action_by_answer, answer_key)

    async def find_open_action(
        self, person: str, tool: str, args_hash: str, states: Sequence[str]
    ) -> dict[str, Any] | None:
        return await self._run(Store.find_open_action, person, tool, args_hash, states)

    async def transition(self, action_id: str, from_states: Iterable[str], to_state: str, **options: Any) -> bool:
        return await self._run(Store.transition, action_id, list(from_states), to_state, **options)

    async def renew_lease(self, action_id: str, owner: str, until: float) -> bool:
        return await self._run(Store.renew_lease, action_id, owner, until)

    async def unsettled(self, states: Sequence[str], limit: int) -> list[dict[str, Any]]:
        return await self._run(Store.unsettled, states, limit)

    async def take_reveal_secret(self, action_id: str, person: str) -> bytes | None:
        return await self._run(Store.take_reveal_secret, action_id, person)

    async def actions_in(self, states: Sequence[str], limit: int = 200) -> list[dict[str, Any]]:
        return await self._run(Store.actions_in, states, limit)

    async def due_for_expiry(self, states: Sequence[str]) -> list[dict[str, Any]]:
        return await self._run(Store.due_for_expiry, states)

    async def erase_stale_reveals(self) -> int:
        return await self._run(Store.erase_stale_reveals)

    async def append_audit(self, entry: AuditEntry) -> AuditRecord:
        return await self._run(
            Store.append_audit,
            entry.event,
            person=entry.person,
            surface=entry.surface,
            tool=entry.tool,
            action_id=entry.action_id,
            detail=entry.detail,
        )

    async def audit_records(self, **options: Any) -> list[AuditRecord]:
        return await self._run(Store.audit_records, **options)

    async def audit_report(self, checkpoint_files: Sequence[Path] | None = None) -> AuditReport:
        return await self._run(Store.audit_report, checkpoint_files)

    async def checkpoint_due(self) -> Checkpoint | None:
        return await self._run(Store.checkpoint_due)

    async def flush_checkpoint(self) -> Checkpoint | None:
        return await self._run(Store.flush_checkpoint)

    async def at_current_schema(self) -> bool:
        return await self._run(Store.at_current_schema)

    async def aclose(self) -> None:
        if self._store is not None:
            await self._run(Store.dispose)
        self._pool.shutdown(wait=False)
