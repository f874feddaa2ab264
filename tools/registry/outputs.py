"""Output models of the tools: compact by default, because every byte goes into a model's context.

A server is summarised to what an operator acts on (id, name, status, task, flavor, IPs, AZ, lock, billing
mode, frozen);
``full=true`` returns the API's own fields.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import Field

from ..cloud.models import JobResult, ServerDetail, ServerRow
from ..core.plans import Compact


class ServerSummary(Compact):
    id: str
    name: str | None = None
    status: str | None = None
    task: str | None = Field(None, description="operation in progress, e.g. powering-off")
    flavor: str | None = Field(None, description="flavor id (vCPUs/RAM)")
    private_ips: list[str] = Field(default_factory=list)
    public_ips: list[str] = Field(default_factory=list)
    az: str | None = None
    locked: bool | None = None
    tags: list[str] = Field(default_factory=list)
    billing: str | None = Field(None, description="on-demand, prepaid (yearly/monthly) or spot")
    frozen: bool = Field(False, description="frozen by the cloud: it refuses actions")

    @classmethod
    def of(cls, server: ServerDetail | ServerRow) -> ServerSummary:
        return cls(**_summary_values(server))


def _summary_values(server: ServerDetail | ServerRow) -> dict[str, Any]:
    """Every field of a ServerSummary, in its field order, from a server as the API describes it."""
    flavor = None
    if server.flavor is not None:
        ram = server.flavor.ram
        size = f"{server.flavor.vcpus}vCPU/{int(ram) // 1024}GB" if ram and ram.isdigit() else None
        flavor = f"{server.flavor.id} ({size})" if size else server.flavor.id
    return {
        "id": server.id,
        "name": server.name,
        "status": server.status,
        "task": server.task_state,
        "flavor": flavor,
        "private_ips": server.private_ips,
        "public_ips": server.public_ips,
        "az": server.availability_zone,
        "locked": server.locked,
        "tags": list(server.tags or []),
        "billing": server.billing,
        "frozen": server.frozen,
    }


_UNSET = object()
_SUMMARY_DEFAULTS = {
    name: field.get_default(call_default_factory=True) if not field.is_required() else _UNSET
    for name, field in ServerSummary.model_fields.items()
}


USER_DATA_FIELD = ServerDetail.model_fields["user_data"].alias  # as the API names it in a full record


def user_data_digest(value: str) -> str:
    """User data as flexus-ops shows it anywhere (a full record, a plan): its size and hash, never its
    text. A boot script often carries secrets, and a tool result lands in an AI assistant's context."""
    return f"{len(value)} base64 characters, sha256 {hashlib.sha256(value.encode()).hexdigest()}"


def project(server: ServerDetail | ServerRow, full: bool) -> dict[str, Any]:
    if full:
        if not isinstance(server, ServerDetail):
            raise TypeError("full=true needs the whole record (ServerDetail), not a listing's row")
        record = server.model_dump(by_alias=True, exclude_none=True)
        if user_data := record.get(USER_DATA_FIELD):
            record[USER_DATA_FIELD] = "hidden: " + user_data_digest(user_data)
        return record
    # What ServerSummary.of(server).model_dump(exclude_none=True, exclude_defaults=True) gives (a test holds
    # them equal), without building and dumping a model per server: a listing projects every server it shows.
    summary = {
        name: value
        for name, value in _summary_values(server).items()
        if value is not None and value != _SUMMARY_DEFAULTS[name]
    }
    return summary | {"id": server.id}


class ShowServerOutput(Compact):
    server: dict[str, Any]


class ListServersOutput(Compact):
    count: int = Field(description="total matches")
    page: int
    servers: list[dict[str, Any]]
    next_page: int | None = Field(None, description="page to ask for next, if any")


class JobOutput(Compact):
    job_id: str
    status: str
    meaning: str | None = Field(None, description="what the status means (INIT counts as running)")
    job_type: str | None = None
    begin_time: str | None = None
    end_time: str | None = Field(None, description="empty until the job has finished")
    sub_jobs_total: int | None = Field(None, description="how many parts (one per server)")
    servers: list[dict[str, Any]] = Field(default_factory=list, description="per server: id, name, outcome")
    error_code: str | None = None
    fail_reason: str | None = None

    @classmethod
    def of(cls, result: JobResult) -> JobOutput:
        return cls(
            job_id=result.job_id,
            status=result.status,
            meaning=result.meaning,
            job_type=result.job_type,
            begin_time=result.begin_time,
            end_time=result.end_time,
            sub_jobs_total=result.sub_jobs_total,
            servers=[o.model_dump(exclude_none=True) for o in result.servers],
            error_code=result.error_code,
            fail_reason=result.fail_reason,
        )
