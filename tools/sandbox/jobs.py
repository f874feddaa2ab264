"""The sandbox cloud's job model: what an asynchronous ECS operation returns and ShowJob reports.

ECS answers a batch write with a ``job_id`` and does the work later, server by server. A job has a
type (``batchStopServers``), one sub-job per server with a type of its own (``stopServer``), begin
and end times, and a status its completion rule derives from the sub-jobs. Power actions were the
first operation to need this; with the model here, apart from what any one operation does to a
server, a new asynchronous operation only says which sub-jobs it has and what each does when it
finishes.

Time is applied lazily, as everywhere in the sandbox: a scheduled sub-job waits on a heap, and
:meth:`JobBook.advance` completes whatever is due by the time it is given (no timers, no background
task), so a 10,000-server job stays cheap and a fake clock makes it deterministic.
"""

from __future__ import annotations

import heapq
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

JOB_RETENTION = timedelta(days=1)  # finished jobs disappear after about a day (reference section 6)
MAX_FAILURES_IN_SUMMARY = 5

INIT = "INIT"
RUNNING = "RUNNING"
SUCCESS = "SUCCESS"
FAIL = "FAIL"
PENDING_PAYMENT = "PENDING_PAYMENT"


@lru_cache(maxsize=4096)
def format_job_time(moment: datetime) -> str:
    """Job timestamps, e.g. ``2016-04-25T20:04:34.604Z`` (milliseconds, Z). Cached: a job's sub-jobs share
    their begin and end times, and every poll of a 1,000-server job renders all of them again."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class SubJob:
    """The part of a job that concerns one server."""

    job_id: str
    server_id: str
    job_type: str
    status: str
    begin: datetime
    end: datetime | None = None
    error_code: str | None = None
    fail_reason: str | None = None
    on_success: Callable[[datetime], None] | None = field(default=None, repr=False, compare=False)
    """What the operation does to the server when this sub-job completes (at the given time)."""

    def succeed(self, at: datetime) -> None:
        self.status, self.end = SUCCESS, at
        if self.on_success is not None:
            self.on_success(at)

    def fail(self, at: datetime, error_code: str, reason: str) -> None:
        self.status, self.end = FAIL, at
        self.error_code, self.fail_reason = error_code, reason


CompletionRule = Callable[[Sequence[SubJob]], str]
"""A job's status from its sub-jobs: RUNNING, SUCCESS or FAIL."""


def all_must_succeed(sub_jobs: Sequence[SubJob]) -> str:
    """RUNNING while any sub-job runs; then FAIL if any failed, else SUCCESS (ECS batch jobs)."""
    statuses = {sub.status for sub in sub_jobs}
    if RUNNING in statuses:
        return RUNNING
    return FAIL if FAIL in statuses else SUCCESS


@dataclass(slots=True)
class Job:
    job_id: str
    job_type: str
    begin: datetime
    sub_jobs: list[SubJob] = field(default_factory=list)
    completion: CompletionRule = field(default=all_must_succeed, repr=False, compare=False)
    held: str | None = None
    """INIT (accepted, not started: lifted when time passes ``held_until``) or PENDING_PAYMENT (an order
    waiting for payment: the sandbox bills nothing, so it stays); None once the job runs."""
    held_until: datetime | None = None

    @property
    def status(self) -> str:
        return self.held or self.completion(self.sub_jobs)

    @property
    def end(self) -> datetime | None:
        """When the last sub-job ended; None while the job has not finished."""
        if self.status not in (SUCCESS, FAIL):
            return None
        return max((sub.end for sub in self.sub_jobs if sub.end), default=self.begin)


class JobBook:
    """Every job (``jobs``: id -> :class:`Job`) and the sub-jobs waiting to complete."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._due: list[tuple[datetime, int, SubJob]] = []
        self._due_seq = 0
        self._initialising: list[Job] = []

    def open(self, job_type: str, begin: datetime, completion: CompletionRule = all_must_succeed) -> Job:
        """A new job with no sub-jobs yet, findable by its id from now on."""
        job = Job(uuid.uuid4().hex, job_type, begin, completion=completion)
        self.jobs[job.job_id] = job
        return job

    def hold_in_init(self, job: Job, until: datetime) -> None:
        """The job reports INIT until ``until`` (its sub-jobs should be scheduled after it)."""
        job.held, job.held_until = INIT, until
        self._initialising.append(job)

    def add_sub_job(self, job: Job, server_id: str, job_type: str, begin: datetime) -> SubJob:
        """A RUNNING sub-job for one server; then either :meth:`schedule` it or ``fail`` it."""
        # 32 random hex digits, as a uuid4's hex; without building a UUID per sub-job (10,000 per batch).
        sub = SubJob(os.urandom(16).hex(), server_id, job_type, RUNNING, begin)
        job.sub_jobs.append(sub)
        return sub

    def schedule(self, sub: SubJob, due: datetime, on_success: Callable[[datetime], None] | None = None) -> None:
        """Complete ``sub`` successfully at ``due`` (when time is next advanced past it)."""
        sub.on_success = on_success
        self._due_seq += 1
        heapq.heappush(self._due, (due, self._due_seq, sub))

    def advance(self, now: datetime) -> None:
        """Start every INIT job whose time has come; complete every sub-job due by ``now``, in due order."""
        if self._initialising:
            for job in [job for job in self._initialising if job.held_until is not None and job.held_until <= now]:
                job.held, job.held_until = None, None
                self._initialising.remove(job)
        while self._due and self._due[0][0] <= now:
            due, _, sub = heapq.heappop(self._due)
            sub.succeed(due)

    def pending(self) -> list[tuple[datetime, SubJob]]:
        """The scheduled sub-jobs not yet completed, in the order they will complete."""
        return [(due, sub) for due, _, sub in sorted(self._due, key=lambda entry: entry[:2])]

    def find(self, job_id: str, now: datetime) -> Job | None:
        """The job, or None if unknown or finished longer than :data:`JOB_RETENTION` ago (then purged)."""
        job = self.jobs.get(job_id)
        end = job.end if job is not None else None
        if job is not None and end is not None and now - end > JOB_RETENTION:
            del self.jobs[job_id]
            return None
        return job


def render_job(job: Job) -> dict[str, Any]:
    """The ShowJob body (reference section 6)."""
    status = job.status
    end = job.end
    failed = [sub for sub in job.sub_jobs if sub.status == FAIL]
    final_fail = status == FAIL
    summary = None
    if final_fail:
        shown = "; ".join(
            f"{sub.server_id}: {sub.error_code} {sub.fail_reason}" for sub in failed[:MAX_FAILURES_IN_SUMMARY]
        )
        hidden = len(failed) - MAX_FAILURES_IN_SUMMARY
        more = f"; and {hidden} more" if hidden > 0 else ""
        summary = f"{len(failed)} of {len(job.sub_jobs)} sub-jobs failed: {shown}{more}"
    return {
        "status": status,
        "entities": {
            "sub_jobs_total": len(job.sub_jobs),
            "sub_jobs": [
                {
                    # A job not started yet (INIT, or an unpaid order) has not started its parts either.
                    "status": INIT if job.held else sub.status,
                    "entities": {
                        "server_id": sub.server_id,
                        **({"errorcode_message": sub.fail_reason} if sub.fail_reason else {}),
                    },
                    "job_id": sub.job_id,
                    "job_type": sub.job_type,
                    "begin_time": format_job_time(sub.begin),
                    "end_time": format_job_time(sub.end) if sub.end else None,
                    "error_code": sub.error_code,
                    "fail_reason": sub.fail_reason,
                }
                for sub in job.sub_jobs
            ],
        },
        "job_id": job.job_id,
        "job_type": job.job_type,
        "begin_time": format_job_time(job.begin),
        "end_time": format_job_time(end) if end else None,
        "error_code": failed[0].error_code if final_fail else None,
        "fail_reason": summary,
    }
