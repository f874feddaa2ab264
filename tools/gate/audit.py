"""The audit chain's cryptography: keyed record MACs, signed checkpoints, and verification.

A record's ``hash`` is HMAC-SHA256, with an audit key kept outside the database, over the previous
record's hash and the record's canonical JSON; the record names its key by a short id (``key_id``).
Someone who can write the database but lacks the key cannot edit a record and re-hash the chain.

Records written before the chain was keyed (``key_id`` NULL) keep their plain SHA-256 links; the
first keyed writer appends an ``audit_keyed`` marker, and every record after it must be keyed. When
the configured key changes, the next writer appends ``audit_key_rotated`` (MACed with the new key).

Deleting the newest records and moving the head back leaves a valid chain, so each writing process
also signs checkpoints: the seq and MAC of the newest record it wrote, with its own Ed25519 key
(``<state_dir>/keys/audit-checkpoint.key``, whose public half is recorded in the chain first), at
least every 100 records or 60 s and when it closes. Checkpoints go to
``<state_dir>/audit-checkpoints.jsonl`` and, as one JSON line, to the ``flexus_ops.audit`` log, so
copies can live where a database writer cannot reach.

A log rewritten whole into unkeyed records needs no key, so each state dir also records, once per
store, where that store's log became keyed (``<state_dir>/audit-keyed.jsonl``, 0600): from then on its
writers refuse to append to a log whose keyed part is gone or starts elsewhere (never continuing or
re-sealing an unkeyed chain), and ``audit verify`` reports it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .canonical import canonical_json
from .private import open_private, trusted

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from .store import Store

log = logging.getLogger("flexus_ops.audit")

GENESIS = "0" * 64
KEY_LABEL = "audit-chain"  # the HKDF label of the key derived from the state dir's master key
EVENT_KEYED = "audit_keyed"
EVENT_ROTATED = "audit_key_rotated"
EVENT_CHECKPOINT_KEY = "checkpoint_key"
CHAIN_EVENTS = frozenset({EVENT_KEYED, EVENT_ROTATED, EVENT_CHECKPOINT_KEY})
CHECKPOINT_FILE = "audit-checkpoints.jsonl"
KEYED_FILE = "audit-keyed.jsonl"
SIGNING_KEY_FILE = "audit-checkpoint.key"
CHECKPOINT_EVERY_RECORDS = 100
CHECKPOINT_EVERY_SECONDS = 60.0


# -- records ----------------------------------------------------------------------------------------


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
    key_id: str | None = None  # None: a legacy record from before the chain was keyed
    # Why the stored detail text is not what was written (``read_detail``); not part of what is chained.
    detail_problem: str | None = None

    def chained_fields(self) -> dict[str, Any]:
        """What a legacy (unkeyed) record's SHA-256 covers: unchanged, so old chains still verify."""
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

    def mac_fields(self) -> dict[str, Any]:
        """What a keyed record's MAC covers: the key id too, so it cannot be swapped."""
        return {**self.chained_fields(), "key_id": self.key_id}


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("a key is repeated")
    return found


def read_detail(stored: str, keyed: bool) -> tuple[dict[str, Any], str | None]:
    """A record's detail from its stored text, and why that text is not what was written (None: it is).

    A record's MAC or hash covers the detail's value, not its text, so the text is checked here: never a
    repeated key (readers disagree on which one counts), and a keyed record's text is exactly the
    canonical form it was written in. Text nobody can read is a problem too, never a crash."""
    try:
        detail = json.loads(stored, object_pairs_hook=_no_repeated_keys)
        written = canonical_json(detail)
        written.encode("utf-8")  # a lone surrogate parses, but no record was ever written with one
    except (ValueError, RecursionError) as exc:
        reason = "repeats a key" if "repeated" in str(exc) else "is not readable JSON"
        return {}, f"its stored detail {reason} (edited?)"
    if not isinstance(detail, dict):
        return {}, "its stored detail is not a JSON object (edited?)"
    if keyed and written != stored:
        return detail, "its stored detail is not the text it was written as (edited?)"
    return detail, None


def chain_hash(prev_hash: str, record: dict[str, Any]) -> str:
    """The unkeyed SHA-256 link of legacy records."""
    return hashlib.sha256((prev_hash + canonical_json(record)).encode()).hexdigest()


def chain_mac(key: bytes, prev_hash: str, record: dict[str, Any]) -> str:
    return hmac.new(key, (prev_hash + canonical_json(record)).encode(), hashlib.sha256).hexdigest()


def key_id_of(secret: bytes) -> str:
    """A short public name for an audit key (a MAC of a constant: says nothing about the key)."""
    return hmac.new(secret, b"key-id", hashlib.sha256).hexdigest()[:16]


# -- keys -------------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class AuditKey:
    secret: bytes
    id: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", key_id_of(self.secret))

    def __repr__(self) -> str:
        return f"AuditKey(id={self.id})"

    def mac(self, prev_hash: str, record: AuditRecord) -> str:
        return chain_mac(self.secret, prev_hash, record.mac_fields())


@dataclass(frozen=True, repr=False)
class AuditKeyRing:
    """The key new records are MACed with, and the earlier keys that only verify."""

    current: AuditKey
    previous: tuple[AuditKey, ...] = ()

    @classmethod
    def of(cls, current: bytes, previous: Iterable[bytes] = ()) -> AuditKeyRing:
        key = AuditKey(current)
        return cls(key, tuple(k for k in (AuditKey(p) for p in previous) if k.id != key.id))

    def get(self, key_id: str | None) -> AuditKey | None:
        for key in (self.current, *self.previous):
            if key.id == key_id:
                return key
        return None

    def __repr__(self) -> str:
        return f"AuditKeyRing(current={self.current.id}, previous={[k.id for k in self.previous]})"


def records_to_prepend(
    ring: AuditKeyRing, head_seq: int, head_hash: str, last_key_id: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """The bookkeeping records a keyed writer appends before its own, as (event, detail) pairs: the
    marker that ends a legacy chain, or the rotation record when the chain ends under another key."""
    if head_seq == 0:
        return []
    if last_key_id is None:
        return [(EVENT_KEYED, {"legacy_seq": head_seq, "legacy_hash": head_hash, "key_id": ring.current.id})]
    if last_key_id != ring.current.id:
        return [(EVENT_ROTATED, {"old_key_id": last_key_id, "new_key_id": ring.current.id})]
    return []


@dataclass(frozen=True)
class KeyedMark:
    """Where a store's log became keyed, as a state dir first saw it (when it first wrote keyed records
    there, or found them): the first keyed record, its key, and the legacy head an ``audit_keyed`` marker
    continued. A keyed log stays keyed from that record for good, so it never changes afterwards."""

    store: str  # the store's URL, without its password
    keyed_from: int
    key_id: str
    legacy_seq: int | None = None
    legacy_hash: str | None = None
    at: float = 0.0

    def to_json(self) -> str:
        return canonical_json(
            {
                "store": self.store,
                "keyed_from": self.keyed_from,
                "key_id": self.key_id,
                "legacy_seq": self.legacy_seq,
                "legacy_hash": self.legacy_hash,
                "at": self.at,
            }
        )

    @classmethod
    def parse(cls, line: str) -> KeyedMark:
        value = json.loads(line)
        if not isinstance(value, dict):
            raise ValueError("not an object")
        store, keyed_from, key_id = value.get("store"), value.get("keyed_from"), value.get("key_id")
        legacy_seq, legacy_hash, at = value.get("legacy_seq"), value.get("legacy_hash"), value.get("at", 0.0)
        if not (
            isinstance(store, str)
            and isinstance(keyed_from, int)
            and keyed_from >= 1
            and isinstance(key_id, str)
            and isinstance(legacy_seq, int | None)
            and isinstance(legacy_hash, str | None)
            and isinstance(at, int | float)
        ):
            raise ValueError("missing or mistyped fields")
        return cls(store, keyed_from, key_id, legacy_seq, legacy_hash, at)


# -- checkpoints ------------------------------------------------------------------------------------


def signer_id_of(public_key: bytes) -> str:
    """A replica's name: the fingerprint of its checkpoint signing key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    head_mac: str
    at: float
    key_id: str
    sig: str
    source: str = field(default="", compare=False)  # where it was read, for messages

    def signed_bytes(self) -> bytes:
        return canonical_json(
            {"seq": self.seq, "head_mac": self.head_mac, "at": self.at, "key_id": self.key_id}
        ).encode()

    def to_json(self) -> str:
        return canonical_json(
            {"seq": self.seq, "head_mac": self.head_mac, "at": self.at, "key_id": self.key_id, "sig": self.sig}
        )

    @classmethod
    def parse(cls, value: Any, source: str) -> Checkpoint:
        if not isinstance(value, dict):
            raise ValueError("not an object")
        seq, head_mac, at, key_id, sig = (value.get(k) for k in ("seq", "head_mac", "at", "key_id", "sig"))
        if not (
            isinstance(seq, int)
            and isinstance(head_mac, str)
            and isinstance(at, int | float)
            and isinstance(key_id, str)
            and isinstance(sig, str)
        ):
            raise ValueError("missing or mistyped fields")
        return cls(seq, head_mac, at, key_id, sig, source)

    def verifies_with(self, public_key: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(base64.b64decode(self.sig), self.signed_bytes())
        except (InvalidSignature, ValueError):
            return False
        return True


def load_checkpoints(paths: Sequence[Path], *, strict: Sequence[Path] = ()) -> tuple[list[Checkpoint], list[str]]:
    """Checkpoints from checkpoint files or saved logs, and a problem for each line that looks like one
    but does not parse. In a saved log a line may carry a log prefix, and lines that are not checkpoints
    are skipped; in a ``strict`` file (a state dir's own checkpoint file, where flexus-ops writes
    checkpoints and nothing else) every line that is not a checkpoint is a problem."""
    found: dict[Checkpoint, None] = {}  # ordered, without the copies a file and a log both hold
    problems: list[str] = []
    decoder = json.JSONDecoder()
    strict_files = {path.resolve() for path in strict}
    for path in paths:
        whole = path.resolve() in strict_files
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if whole and not line.strip():
                continue
            if '"head_mac"' not in line:
                if whole:
                    problems.append(f"line {number} of {path} is not a checkpoint")
                continue
            try:
                start = 0 if whole else line.index("{")
                value, end = decoder.raw_decode(line, start)
                if whole and line[end:].strip():
                    raise ValueError("more after the checkpoint")
                checkpoint = Checkpoint.parse(value, f"{path}:{number}")
            except ValueError:
                problems.append(f"line {number} of {path} is not a checkpoint (a damaged checkpoint line)")
                continue
            found.setdefault(checkpoint, None)
    return list(found), problems


def load_keyed_marks(path: Path) -> tuple[dict[str, KeyedMark], list[str]]:
    """A state dir's record of where each store's log became keyed (the first line for a store counts),
    and a problem for each line that is not such a record. A missing file records nothing."""
    marks: dict[str, KeyedMark] = {}
    problems: list[str] = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return marks, problems
    except OSError as exc:
        return marks, [f"{path} cannot be read ({type(exc).__name__}): where the audit log became keyed is unknown"]
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            mark = KeyedMark.parse(line)
        except ValueError:
            problems.append(f"line {number} of {path} is not a record of where an audit log became keyed")
            continue
        marks.setdefault(mark.store, mark)
    return marks, problems


@dataclass(frozen=True, repr=False)
class CheckpointSigner:
    private: Ed25519PrivateKey
    public: bytes
    key_id: str

    @classmethod
    def load(cls, path: Path) -> CheckpointSigner:
        """This state dir's signing key, created 0600 on first use. Written whole under a private name, then
        linked into place: a racing process either wins the link or reads the winner's complete key, never
        a file still empty (which O_EXCL alone allowed)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        if not path.exists():
            raw = Ed25519PrivateKey.generate().private_bytes_raw()
            draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = open_private(draft, os.O_WRONLY | os.O_EXCL)
            with os.fdopen(fd, "wb") as handle:
                handle.write(base64.b64encode(raw))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(draft, path)
            except FileExistsError:
                pass  # another process's key won; this one is discarded
            finally:
                draft.unlink()
        trusted(path, "key file", secret=True)  # a signing key someone else could read or plant signs nothing
        private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(path.read_bytes()))
        public = private.public_key().public_bytes_raw()
        return cls(private, public, signer_id_of(public))

    def __repr__(self) -> str:
        return f"CheckpointSigner({self.key_id})"

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public).decode()

    def sign(self, seq: int, head_mac: str) -> Checkpoint:
        unsigned = Checkpoint(seq, head_mac, round(time.time(), 3), self.key_id, "")
        signature = base64.b64encode(self.private.sign(unsigned.signed_bytes())).decode()
        return Checkpoint(seq, head_mac, unsigned.at, self.key_id, signature)


class Checkpointer:
    """Signs checkpoints of the newest record this process wrote. Each process signs only what it
    wrote itself, never what it merely reads from the database (that may already be forged)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        every_records: int = CHECKPOINT_EVERY_RECORDS,
        every_seconds: float = CHECKPOINT_EVERY_SECONDS,
    ) -> None:
        # Cheap on purpose: the key is read (and cryptography imported) at the first checkpoint only.
        self.path = state_dir / CHECKPOINT_FILE
        self.key_path = state_dir / "keys" / SIGNING_KEY_FILE
        self.keyed_path = state_dir / KEYED_FILE
        # Checked now, before the first change is recorded: a signing key others can read (or a record
        # file others can write) would make every later checkpoint worthless, so nothing may run on it.
        trusted(self.key_path, "key file", secret=True)
        trusted(self.path, "checkpoint file")
        trusted(self.keyed_path, "keyed-log record")
        self._keyed: dict[str, KeyedMark] = {}  # once read or written, kept: deleting the file changes nothing
        # Its own lock, never held while waiting for the database: an append holding the audit head's row
        # lock reads these marks, while the checkpoint lock is held across appends of the key record.
        self._keyed_lock = threading.RLock()
        self.every_records = every_records
        self.every_seconds = every_seconds
        self._signer: CheckpointSigner | None = None
        self._key_seq: int | None = None  # where the chain records this state dir's checkpoint key
        self._latest: tuple[int, str] | None = None  # (seq, MAC) of the newest record this process wrote
        self._signed_seq = 0
        self._signed_at = time.monotonic()
        self._writing = False
        self._lock = threading.RLock()

    def signer(self) -> CheckpointSigner:
        if self._signer is None:
            self._signer = CheckpointSigner.load(self.key_path)
        return self._signer

    def known_public_keys(self) -> dict[str, bytes]:
        """This state dir's own public key, if it has one: it still checks a checkpoint whose key
        record was deleted along with the rest of a rewritten chain."""
        if not self.key_path.exists():
            return {}
        signer = self.signer()
        return {signer.key_id: signer.public}

    def default_files(self) -> list[Path]:
        return [self.path] if self.path.exists() else []

    def keyed_mark(self, store: str) -> tuple[KeyedMark | None, list[str]]:
        """Where this state dir saw ``store``'s log become keyed (None: it never did), and the problems
        with its record file (a damaged file leaves that unknown: writers then refuse to append)."""
        with self._keyed_lock:
            if store in self._keyed:
                return self._keyed[store], []
            marks, problems = load_keyed_marks(self.keyed_path)
            for name, mark in marks.items():
                self._keyed.setdefault(name, mark)
            return self._keyed.get(store), problems

    def record_keyed(self, mark: KeyedMark) -> bool:
        """Record, once, where ``mark.store``'s log became keyed: False if a record of it already stands
        (or the file is damaged, which verification and every writer report)."""
        with self._keyed_lock:
            earlier, problems = self.keyed_mark(mark.store)
            if earlier is not None or problems:
                return False
            fd = open_private(self.keyed_path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, (mark.to_json() + "\n").encode())  # one short line: appends stay whole
            finally:
                os.close(fd)
            self._keyed[mark.store] = mark  # (not logged here: INFO on this logger is the checkpoint stream)
            return True

    def appended(self, store: Store, record: AuditRecord) -> Checkpoint | None:
        """Called after each committed append: a checkpoint when 100 records or 60 s have passed."""
        with self._lock:
            if self._writing:  # the key record appended by _write itself
                return None
            if self._latest is None or record.seq > self._latest[0]:
                self._latest = (record.seq, record.hash)
            unsigned = self._unsigned()
            if unsigned and (unsigned >= self.every_records or self._age() >= self.every_seconds):
                return self._write_safely(store)
            return None

    def tick(self, store: Store) -> Checkpoint | None:
        """For a long-running surface's timer: a checkpoint if records are unsigned for 60 s."""
        with self._lock:
            return self._write_safely(store) if self._unsigned() and self._age() >= self.every_seconds else None

    def flush(self, store: Store) -> Checkpoint | None:
        """On close: a checkpoint of whatever this process wrote since its last one."""
        with self._lock:
            return self._write_safely(store) if self._unsigned() else None

    def _unsigned(self) -> int:
        return 0 if self._latest is None else max(0, self._latest[0] - self._signed_seq)

    def _age(self) -> float:
        return time.monotonic() - self._signed_at

    def _write_safely(self, store: Store) -> Checkpoint | None:
        try:
            return self._write(store)
        except Exception as exc:
            # The write it follows has committed and must not be reported as failed; the missing
            # checkpoint shows in `audit verify`, and the next one covers these records too.
            log.warning("audit checkpoint not written (%s): %s", type(exc).__name__, exc)
            return None

    def _write(self, store: Store) -> Checkpoint | None:
        signer = self.signer()
        if self._key_seq is None:
            self._key_seq = store.checkpoint_key_seq(signer.key_id, signer.public_b64)
            if self._key_seq is None:
                self._writing = True
                try:
                    record = store.append_audit(
                        EVENT_CHECKPOINT_KEY,
                        person=None,
                        surface="audit",
                        tool=None,
                        action_id=None,
                        detail={"key_id": signer.key_id, "public_key": signer.public_b64},
                    )
                finally:
                    self._writing = False
                self._latest = (record.seq, record.hash)
                self._key_seq = record.seq
        assert self._latest is not None
        if self._latest[0] < self._key_seq:
            # Another process sharing this state dir recorded the key after this process's last record:
            # signing that record with it would read as forged. The next checkpoint after the key signs.
            return None
        checkpoint = signer.sign(*self._latest)
        line = checkpoint.to_json()
        try:
            fd = open_private(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, (line + "\n").encode())  # one write of one short line: appends stay whole
            finally:
                os.close(fd)
        except OSError as exc:
            # The log copy below still goes out; a failing disk must not fail the command that wrote.
            log.warning("audit checkpoint not written to %s: %s", self.path, exc)
        log.info(line)
        self._signed_seq, self._signed_at = checkpoint.seq, time.monotonic()
        return checkpoint


# -- verification -----------------------------------------------------------------------------------


@dataclass
class AuditReport:
    records: int = 0
    last_seq: int = 0
    legacy_records: int = 0
    keyed_from: int | None = None
    key_ids: list[str] = field(default_factory=list)
    keyed_recorded: str | None = None  # the state dir's record of the keyed start, when compared
    checkpoint_files: list[str] = field(default_factory=list)
    checkpoints_checked: int = 0
    problems: list[str] = field(default_factory=list)  # tampering
    unverifiable: list[str] = field(default_factory=list)  # needs a key this verifier lacks

    @property
    def intact(self) -> bool:
        return not self.problems and not self.unverifiable


@dataclass
class _Signer:
    public: bytes
    recorded_at: int
    verified: bool


class ChainVerifier:
    """Feed it the records in seq order, then ``finish`` with the head; it says what is wrong."""

    def __init__(
        self,
        ring: AuditKeyRing,
        checkpoints: Sequence[Checkpoint] = (),
        *,
        local_public_keys: dict[str, bytes] | None = None,
        keyed_mark: KeyedMark | None = None,
        keyed_source: str = "",
    ) -> None:
        """``keyed_mark``: where a state dir saw this log become keyed (read from ``keyed_source``); a log
        whose keyed part is gone or starts elsewhere was rewritten, whatever its links say."""
        self.ring = ring
        self.checkpoints = list(checkpoints)
        self.local_public_keys = local_public_keys or {}
        self.keyed_mark = keyed_mark
        self.keyed_source = keyed_source
        self.report = AuditReport()
        self._wanted = {c.seq for c in self.checkpoints}
        self._macs_at: dict[int, str] = {}
        self._expected = 1
        self._previous_hash = GENESIS
        self._last: AuditRecord | None = None
        self._unknown: dict[str, list[int]] = {}
        self._signers: dict[str, _Signer] = {}

    def _problem(self, text: str) -> None:
        self.report.problems.append(text)

    def feed(self, record: AuditRecord) -> None:
        self.report.records += 1
        if record.detail_problem is not None:
            self._problem(f"record {record.seq}: {record.detail_problem}")
        if record.seq != self._expected:
            self._problem(f"record {self._expected} is missing (found {record.seq} next)")
            self._expected = record.seq
        if record.prev_hash != self._previous_hash:
            self._problem(f"record {record.seq}: does not follow record {record.seq - 1} (chain broken)")
        verdict = self._content(record)  # an unreadable detail is read as {}: its MAC does not match either
        if record.seq in self._wanted:
            self._macs_at[record.seq] = record.hash
        if record.event == EVENT_CHECKPOINT_KEY and verdict != "bad" and record.key_id is not None:
            self._note_signer(record, verified=verdict == "ok")
        self._previous_hash = record.hash
        self._expected += 1
        self._last = record

    def _content(self, record: AuditRecord) -> str:
        """'ok', 'bad' (a problem was reported) or 'unknown' (its key is not in the ring)."""
        report, seq, previous = self.report, record.seq, self._last
        if record.key_id is None:
            if report.keyed_from is not None:
                self._problem(
                    f"record {seq}: not keyed, but the chain is keyed from record {report.keyed_from} "
                    "(rewritten without the audit key?)"
                )
                return "bad"
            report.legacy_records += 1
            if record.event in CHAIN_EVENTS:
                self._problem(f"record {seq}: a {record.event} record must be keyed")
                return "bad"
            if chain_hash(record.prev_hash, record.chained_fields()) != record.hash:
                self._problem(f"record {seq}: content does not match its hash (altered)")
                return "bad"
            return "ok"

        detail = record.detail
        if report.keyed_from is None:
            report.keyed_from = seq
            if previous is not None and previous.key_id is None:
                if record.event != EVENT_KEYED:
                    self._problem(f"record {seq}: the keyed chain starts without an {EVENT_KEYED} marker")
                elif detail.get("legacy_seq") != previous.seq or detail.get("legacy_hash") != previous.hash:
                    self._problem(f"record {seq}: the {EVENT_KEYED} marker names another legacy head")
        elif record.event == EVENT_KEYED:
            self._problem(f"record {seq}: another {EVENT_KEYED} marker (the chain is keyed from {report.keyed_from})")
        elif previous is not None and previous.key_id not in (None, record.key_id) and record.event != EVENT_ROTATED:
            self._problem(
                f"record {seq}: written with key {record.key_id}, record {previous.seq} with key "
                f"{previous.key_id}, and no {EVENT_ROTATED} record between them"
            )
        if record.event == EVENT_ROTATED and (
            previous is None or detail.get("old_key_id") != previous.key_id or detail.get("new_key_id") != record.key_id
        ):
            self._problem(f"record {seq}: the rotation record does not name the keys around it")
        if record.key_id not in report.key_ids:
            report.key_ids.append(record.key_id)
        key = self.ring.get(record.key_id)
        if key is None:
            self._unknown.setdefault(record.key_id, []).append(seq)
            return "unknown"
        if not hmac.compare_digest(key.mac(record.prev_hash, record), record.hash):
            self._problem(f"record {seq}: content does not match its MAC (altered, or written with another key)")
            return "bad"
        return "ok"

    def _note_signer(self, record: AuditRecord, *, verified: bool) -> None:
        key_id, public_b64 = record.detail.get("key_id"), record.detail.get("public_key")
        try:
            public = base64.b64decode(str(public_b64), validate=True)
        except ValueError:
            public = b""
        if len(public) != 32 or signer_id_of(public) != key_id:
            self._problem(f"record {record.seq}: a checkpoint key whose id does not match its public key")
            return
        self._signers.setdefault(key_id, _Signer(public, record.seq, verified))

    def finish(self, head: tuple[int, str] | None) -> AuditReport:
        """The report, once every record was fed; ``head`` is the head row's (seq, hash), None when it is gone."""
        report = self.report
        report.last_seq = self._last.seq if self._last else 0
        if head is None:
            self._problem("the audit log has no head row (flexus_audit_head): it may have been tampered with")
        elif head[0] != report.last_seq:
            self._problem(f"the chain head says record {head[0]}, the log ends at {report.last_seq} (truncated?)")
        elif head[1] != self._previous_hash:
            self._problem(f"the chain head's hash is not record {report.last_seq}'s, the log's last (altered?)")
        for key_id, seqs in self._unknown.items():
            span = f"record {seqs[0]}" if len(seqs) == 1 else f"records {seqs[0]}..{seqs[-1]}"
            report.unverifiable.append(
                f"{len(seqs)} record(s) ({span}) cannot be verified without key {key_id} "
                "(add it to FLEXUS_AUDIT_PREVIOUS_KEYS)"
            )
        self._keyed_start()
        for checkpoint in self.checkpoints:
            self._checkpoint(checkpoint)
        return report

    def _keyed_start(self) -> None:
        mark, report = self.keyed_mark, self.report
        if mark is None:
            return
        report.keyed_recorded = self.keyed_source
        seen = f"this state dir saw it keyed from record {mark.keyed_from} ({self.keyed_source})"
        if report.keyed_from is None:
            self._problem(f"the log has no keyed records, but {seen}: rewritten without the audit key")
        elif report.keyed_from != mark.keyed_from:
            self._problem(f"the log is keyed from record {report.keyed_from}, but {seen}: rewritten")
        elif report.key_ids[0] != mark.key_id:
            self._problem(
                f"record {mark.keyed_from} is under key {report.key_ids[0]}, but {seen} under key {mark.key_id}"
            )

    def _checkpoint(self, checkpoint: Checkpoint) -> None:
        seq, key_id = checkpoint.seq, checkpoint.key_id
        where = f"checkpoint of record {seq} by {key_id} ({checkpoint.source or 'given'})"
        recorded = self._signers.get(key_id)
        if recorded is not None and recorded.recorded_at > seq:
            recorded = None  # a writer records its key before it signs: a later record does not count
        public = recorded.public if recorded else self.local_public_keys.get(key_id)
        signed = public is not None and checkpoint.verifies_with(public)
        last = self.report.last_seq
        if seq > last:
            forged = "" if signed else " (or the checkpoint is forged)"
            self._problem(f"{where}: the log ends at record {last}: records were deleted (truncated){forged}")
            return
        problems_before = len(self.report.problems)
        if recorded is None:
            self._problem(f"{where}: signed by a key not recorded in the chain before it (forged, or chain rewritten)")
        elif not signed:
            self._problem(f"{where}: the signature does not verify (forged)")
        mac = self._macs_at.get(seq)
        if mac is None:
            self._problem(f"{where}: record {seq} is missing")
        elif not hmac.compare_digest(mac, checkpoint.head_mac):
            self._problem(f"{where}: record {seq} is not the record that was signed (rewritten)")
        if len(self.report.problems) > problems_before:
            return
        if recorded is not None and not recorded.verified:
            self.report.unverifiable.append(f"{where}: its key record {recorded.recorded_at} cannot be verified")
            return
        self.report.checkpoints_checked += 1
