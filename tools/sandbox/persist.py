"""The embedded sandbox kept between processes: its state in one file, so a job started by one
``flexus-ops call`` can be shown by the next, and a server stopped by one is SHUTOFF in the next listing.

Only the CLI asks for this (each CLI call is a process of its own). ``flexus-ops sim`` and the MCP
server's in-process sandbox live as long as their process, so their state stays in memory.

Every request to a kept sandbox runs under a lock: an asyncio lock within the process, an exclusive
``flock`` on a lock file across processes. Under it the state is re-read if another process changed
it since, the request is handled, and after a write the state is written back atomically (a temporary
file renamed over the old one). Two CLI calls at once interleave request by request, as two clients
of a real cloud do, and neither loses the other's changes. Due times are stored as instants, so jobs
finish by wall-clock time between calls too.

The file holds what differs from the seeded fleet (each changed field of each server), every job, and
the sub-jobs still pending, as JSON: data, never code (no pickle). A file for another fleet, or one
that does not parse, is reported once and replaced: the fleet starts afresh.

A new asynchronous operation whose sub-jobs change a server when they finish adds what they do to
:data:`COMPLETIONS`, by sub-job type; saving a pending sub-job of an unknown type fails loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backend import POWER_ACTIONS, SandboxBackend, SandboxOptions, _power_done
from .fleet import ServerState, generate_fleet
from .jobs import JOB_RETENTION, Job, JobBook, SubJob, all_must_succeed

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from .responses import Sandbox

log = logging.getLogger("flexus_ops.sandbox")

FORMAT = 1
Opener = Callable[[Path, int], int]
"""``os.open`` for a private file (``flexus_ops.gate.private.open_private``: 0600, owned by this user)."""

COMPLETIONS: dict[str, Callable[[ServerState], Callable[[datetime], None]]] = {
    spec.sub_job_type: partial(_power_done, spec) for spec in POWER_ACTIONS.values()
}
"""What a pending sub-job does to its server when it completes, by sub-job type."""

RULES = {all_must_succeed.__name__: all_must_succeed}
"""A job's completion rule, by name."""

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class SandboxStateError(RuntimeError):
    """The sandbox holds something its state file cannot keep (a bug in the sandbox, not in the file)."""


def keep_state(sandbox: Sandbox, path: Path, opener: Opener) -> None:
    """Keep ``sandbox``'s state in ``path`` from now on. Call it before a client is made on ``sandbox.app``."""
    sandbox.app = KeptApp(sandbox.app, sandbox.backend, StateFile(path, opener))


class KeptApp:
    """An ASGI wrapper: each request sees the state on disk and leaves its changes there."""

    def __init__(self, app: ASGIApp, backend: SandboxBackend, state: StateFile) -> None:
        self.app = app
        self.backend = backend
        self.state = state
        self._one_at_a_time = asyncio.Lock()  # flock does not exclude the same process's other requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with self._one_at_a_time:
            with self.state.locked():
                self.state.load_into(self.backend)
                await self.app(scope, receive, send)
                if scope["method"] not in _READS:
                    # Reads only complete what was due, and every process completes it the same way
                    # from the same file (a sub-job ends at its due time), so only writes are saved.
                    self.state.save(self.backend)


class StateFile:
    """The file and its lock. ``seen`` is the (lineage, generation) this process last read or wrote."""

    def __init__(self, path: Path, opener: Opener) -> None:
        self.path = path
        self._open = opener
        self._lock_path = path.with_name(path.name + ".lock")
        self._temporary = path.with_name(path.name + ".tmp")
        self.seen: tuple[str, int] | None = None
        self._set_aside_raw: bytes | None = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = self._open(self._lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _set_aside(self, raw: bytes, why: str) -> None:
        """Say once per content why the file is not used (it is re-read at every request until replaced)."""
        if raw != self._set_aside_raw:
            self._set_aside_raw = raw
            log.warning("sandbox state %s %s: the sandbox fleet starts afresh", self.path, why)

    def load_into(self, backend: SandboxBackend) -> None:
        """Make ``backend`` what the file says, unless it already is."""
        fd = self._open(self.path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read()
        data: dict[str, Any] | None = None
        if raw:
            try:
                data = json.loads(raw)
                if not isinstance(data, dict) or data.get("format") != FORMAT:
                    raise ValueError(f"not format {FORMAT}")
            except ValueError as exc:
                self._set_aside(raw, f"is unreadable ({exc})")
                data = None
        if data is not None and data.get("fleet") != fleet_key(backend.options):
            self._set_aside(raw, "is for another fleet (servers, seed or project)")
            data = None
        try:
            seen = (str(data["lineage"]), int(data["generation"])) if data is not None else None
            if seen == self.seen:
                return
            restore(backend, data or {})
        except (KeyError, TypeError, ValueError) as exc:
            self._set_aside(raw, f"is unreadable ({exc!r})")
            restore(backend, {})
            seen = None
        self.seen = seen

    def save(self, backend: SandboxBackend) -> None:
        lineage, generation = self.seen or (uuid.uuid4().hex, 0)
        data = {
            "format": FORMAT,
            "fleet": fleet_key(backend.options),
            "lineage": lineage,
            "generation": generation + 1,
            **snapshot(backend),
        }
        fd = self._open(self._temporary, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(self._temporary, self.path)
        self.seen = (lineage, generation + 1)


def fleet_key(options: SandboxOptions) -> dict[str, Any]:
    """What the seeded fleet depends on: a file written for another fleet does not apply."""
    return {"servers": options.servers, "seed": options.seed, "project_id": options.project_id}


def _fleet(options: SandboxOptions) -> dict[str, ServerState]:
    servers = generate_fleet(options.servers, options.seed, project_id=options.project_id, region=options.region)
    return {server.id: server for server in servers}


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$time": value.isoformat()}
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _encode(item) for key, item in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise SandboxStateError(f"the sandbox state file cannot keep a {type(value).__name__}")


def _decode(value: Any, like: Any = None) -> Any:
    """``value`` as it was encoded; ``like`` (the fleet's own value) says whether a list was a tuple."""
    if isinstance(value, dict) and set(value) == {"$time"}:
        return datetime.fromisoformat(value["$time"])
    if isinstance(value, list):
        items = [_decode(item) for item in value]
        return tuple(items) if isinstance(like, tuple) else items
    if isinstance(value, dict):
        return {key: _decode(item) for key, item in value.items()}
    return value


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def snapshot(backend: SandboxBackend) -> dict[str, Any]:
    """The backend's state as JSON-ready data: changed server fields, jobs, pending sub-jobs in order."""
    seeded = _fleet(backend.options)
    if seeded.keys() != backend.servers.keys():
        raise SandboxStateError("the sandbox state file keeps only the seeded fleet's servers")
    servers: dict[str, dict[str, Any]] = {}
    for server_id, server in backend.servers.items():
        base = seeded[server_id]
        changed = {
            f.name: _encode(getattr(server, f.name))
            for f in fields(ServerState)
            if getattr(server, f.name) != getattr(base, f.name)
        }
        if changed:
            servers[server_id] = changed
    jobs = []
    now = backend.now()
    for job in backend.job_book.jobs.values():
        end = job.end
        if end is not None and now - end > JOB_RETENTION:
            continue  # forgotten, as the real API forgets finished jobs after about a day: the file stays small
        rule = job.completion.__name__
        if RULES.get(rule) is not job.completion:
            raise SandboxStateError(f"the sandbox state file cannot keep a job completed by {rule}")
        jobs.append(
            {
                "id": job.job_id,
                "type": job.job_type,
                "begin": job.begin.isoformat(),
                "rule": rule,
                "sub_jobs": [
                    {
                        "id": sub.job_id,
                        "server_id": sub.server_id,
                        "type": sub.job_type,
                        "status": sub.status,
                        "begin": sub.begin.isoformat(),
                        "end": sub.end.isoformat() if sub.end else None,
                        "error_code": sub.error_code,
                        "fail_reason": sub.fail_reason,
                    }
                    for sub in job.sub_jobs
                ],
            }
        )
    pending = []
    for due, sub in backend.job_book.pending():
        if sub.on_success is not None and sub.job_type not in COMPLETIONS:
            raise SandboxStateError(f"the sandbox state file cannot keep a pending {sub.job_type} (see COMPLETIONS)")
        pending.append({"sub": sub.job_id, "due": due.isoformat(), "changes_server": sub.on_success is not None})
    return {"servers": servers, "jobs": jobs, "pending": pending}


def restore(backend: SandboxBackend, data: dict[str, Any]) -> None:
    """Make ``backend`` what ``data`` (from :func:`snapshot`; empty: the seeded fleet) describes."""
    servers = _fleet(backend.options)
    for server_id, changed in data.get("servers", {}).items():
        server = servers[server_id]
        for name, value in changed.items():
            if name not in ServerState.__dataclass_fields__:
                raise KeyError(name)
            setattr(server, name, _decode(value, getattr(server, name)))
    book = JobBook()
    subs: dict[str, SubJob] = {}
    for entry in data.get("jobs", []):
        job = Job(entry["id"], entry["type"], datetime.fromisoformat(entry["begin"]), completion=RULES[entry["rule"]])
        for item in entry["sub_jobs"]:
            sub = SubJob(
                item["id"],
                item["server_id"],
                item["type"],
                item["status"],
                datetime.fromisoformat(item["begin"]),
                _time(item["end"]),
                item["error_code"],
                item["fail_reason"],
            )
            job.sub_jobs.append(sub)
            subs[sub.job_id] = sub
        book.jobs[job.job_id] = job
    for entry in data.get("pending", []):
        sub = subs[entry["sub"]]
        then = COMPLETIONS[sub.job_type](servers[sub.server_id]) if entry["changes_server"] else None
        book.schedule(sub, datetime.fromisoformat(entry["due"]), then)
    backend.servers.clear()
    backend.servers.update(servers)
    backend.job_book = book
