"""Pydantic models of the ECS v1 wire shapes (reference sections 2-7).

Response models accept what the real API sends, including its inconsistencies: ``addresses[].version``
is a string in ShowServer and an int in UpdateServer, ``image`` is an object or a string, flavor numbers
are strings, and every field but ``id`` may be missing or null (ListServersDetails with an unknown
``server_id`` returns only ``id`` and ``fault``). Unknown fields are kept (``extra="allow"``) so a newer
API never breaks parsing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)

from . import rules


def _to_str(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


LooseStr = Annotated[str, BeforeValidator(_to_str)]
"""A string field that the API sometimes sends as a number."""


class WireModel(BaseModel):
    # defer_build: these are needed at the first cloud call, not when a surface starts and lists its tools.
    model_config = ConfigDict(populate_by_name=True, extra="allow", serialize_by_alias=True, defer_build=True)


class ServerAddress(WireModel):
    version: LooseStr | None = None
    addr: str | None = None
    primary: bool | None = None
    ip_type: str | None = Field(None, alias="OS-EXT-IPS:type")
    mac_addr: str | None = Field(None, alias="OS-EXT-IPS-MAC:mac_addr")
    port_id: str | None = Field(None, alias="OS-EXT-IPS:port_id")


class ServerImage(WireModel):
    id: str | None = None


class GpuInfo(WireModel):
    name: str | None = None
    count: int | None = None
    memory_mb: int | None = None


class ServerFlavor(WireModel):
    id: str | None = None
    name: str | None = None
    disk: LooseStr | None = None
    vcpus: LooseStr | None = None
    ram: LooseStr | None = None
    gpus: list[GpuInfo] | None = None
    asic_accelerators: list[GpuInfo] | None = None


class SecurityGroupRef(WireModel):
    name: str | None = None
    id: str | None = None


class VolumeAttachment(WireModel):
    id: str | None = None
    delete_on_termination: LooseStr | None = None
    boot_index: LooseStr | None = Field(None, alias="bootIndex")
    device: str | None = None


class SysTag(WireModel):
    key: str | None = None
    value: str | None = None


class SecurityOptions(WireModel):
    secure_boot_enabled: bool | None = None
    tpm_enabled: bool | None = None


BillingMode = Literal["on-demand", "prepaid", "spot"]
BILLING_MODES: dict[str, BillingMode] = {"0": "on-demand", "1": "prepaid", "2": "spot"}
"""metadata ``charging_mode``: "0" pay-per-use, "1" yearly/monthly (prepaid), "2" spot."""


class ServerFacts:
    """What a server's raw fields mean to an operator: the same for the full record and the lean row."""

    if TYPE_CHECKING:  # the fields each model declares; no annotations at run time, so pydantic adds none
        addresses: Mapping[str, Sequence[ServerAddress | RowAddress]] | None
        metadata: dict[str, str] | None

    def ips(self, ip_type: str) -> list[str]:
        """Addresses of one kind: ``fixed`` (private) or ``floating`` (EIP)."""
        return [
            a.addr for entries in (self.addresses or {}).values() for a in entries if a.addr and a.ip_type == ip_type
        ]

    @property
    def private_ips(self) -> list[str]:
        return self.ips("fixed")

    @property
    def public_ips(self) -> list[str]:
        return self.ips("floating")

    @property
    def billing(self) -> BillingMode | None:
        """How the server is paid for, from metadata ``charging_mode`` (None when the API does not say)."""
        return BILLING_MODES.get((self.metadata or {}).get("charging_mode", ""))

    @property
    def frozen(self) -> bool:
        """Frozen by the cloud (metadata ``EcmResStatus`` = freeze, e.g. for arrears): it refuses actions."""
        return (self.metadata or {}).get("EcmResStatus") == "freeze"


class ServerDetail(WireModel, ServerFacts):
    id: str
    name: str | None = None
    description: str | None = None
    status: str | None = None
    updated: str | None = None
    created: str | None = None
    auto_terminate_time: str | None = None
    host_id: str | None = Field(None, alias="hostId")
    host: str | None = Field(None, alias="OS-EXT-SRV-ATTR:host")
    addresses: dict[str, list[ServerAddress]] | None = None
    key_name: str | None = None
    image: ServerImage | None = None
    task_state: str | None = Field(None, alias="OS-EXT-STS:task_state")
    vm_state: str | None = Field(None, alias="OS-EXT-STS:vm_state")
    power_state: int | None = Field(None, alias="OS-EXT-STS:power_state")
    instance_name: str | None = Field(None, alias="OS-EXT-SRV-ATTR:instance_name")
    hypervisor_hostname: str | None = Field(None, alias="OS-EXT-SRV-ATTR:hypervisor_hostname")
    flavor: ServerFlavor | None = None
    security_groups: list[SecurityGroupRef] | None = None
    availability_zone: str | None = Field(None, alias="OS-EXT-AZ:availability_zone")
    user_id: str | None = None
    tenant_id: str | None = None
    disk_config: str | None = Field(None, alias="OS-DCF:diskConfig")
    access_ipv4: str | None = Field(None, alias="accessIPv4")
    access_ipv6: str | None = Field(None, alias="accessIPv6")
    fault: dict[str, Any] | None = None
    progress: int | None = None
    config_drive: str | None = None
    metadata: dict[str, str] | None = None
    launched_at: str | None = Field(None, alias="OS-SRV-USG:launched_at")
    terminated_at: str | None = Field(None, alias="OS-SRV-USG:terminated_at")
    volumes_attached: list[VolumeAttachment] | None = Field(None, alias="os-extended-volumes:volumes_attached")
    host_status: str | None = None
    hostname: str | None = Field(None, alias="OS-EXT-SRV-ATTR:hostname")
    reservation_id: str | None = Field(None, alias="OS-EXT-SRV-ATTR:reservation_id")
    launch_index: int | None = Field(None, alias="OS-EXT-SRV-ATTR:launch_index")
    kernel_id: str | None = Field(None, alias="OS-EXT-SRV-ATTR:kernel_id")
    ramdisk_id: str | None = Field(None, alias="OS-EXT-SRV-ATTR:ramdisk_id")
    root_device_name: str | None = Field(None, alias="OS-EXT-SRV-ATTR:root_device_name")
    user_data: str | None = Field(None, alias="OS-EXT-SRV-ATTR:user_data")
    locked: bool | None = None
    tags: list[str] | None = None
    scheduler_hints: dict[str, Any] | None = Field(None, alias="os:scheduler_hints")
    enterprise_project_id: str | None = None
    sys_tags: list[SysTag] | None = None
    cpu_options: dict[str, Any] | None = None
    security_options: SecurityOptions | None = None
    hypervisor: dict[str, Any] | None = None
    network_interfaces: list[dict[str, Any]] | None = None
    capacity_reservation_id: str | None = None
    capacity_reservation_specification: dict[str, Any] | None = None
    spod_id: str | None = None
    enclave_options: dict[str, Any] | None = None

    @field_validator("image", mode="before")
    @classmethod
    def _image_id_or_object(cls, value: Any) -> Any:
        # UpdateServer-style responses carry the image id as a bare string.
        return {"id": value} if isinstance(value, str) else value


class ListServersResponse(WireModel):
    count: int = 0
    servers: list[ServerDetail] = Field(default_factory=list)


class RowAddress(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", defer_build=True)

    addr: str | None = None
    ip_type: str | None = Field(None, alias="OS-EXT-IPS:type")


class RowFlavor(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    id: str | None = None
    vcpus: LooseStr | None = None
    ram: LooseStr | None = None


class ServerRow(BaseModel, ServerFacts):
    """A server as a listing shows it (the compact summary's fields): the other forty-odd fields of the
    answer are skipped while parsing, never built, which halves the CPU of a page (``full=true`` reads
    ``ServerDetail``)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", defer_build=True)

    id: str
    name: str | None = None
    status: str | None = None
    task_state: str | None = Field(None, alias="OS-EXT-STS:task_state")
    flavor: RowFlavor | None = None
    addresses: dict[str, list[RowAddress]] | None = None
    availability_zone: str | None = Field(None, alias="OS-EXT-AZ:availability_zone")
    locked: bool | None = None
    tags: list[str] | None = None
    metadata: dict[str, str] | None = None


class ServerRows(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    count: int = 0
    servers: list[ServerRow] = Field(default_factory=list)


class ServerSummary(BaseModel):
    """A server as a whole-fleet index needs it (completions): every other field of the answer is
    skipped while parsing, never built, so a 10,000-server listing costs a fraction of full models."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    id: str
    name: str | None = None
    status: str | None = None
    tags: list[str] | None = None


class ServerSummaries(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    count: int = 0
    servers: list[ServerSummary] = Field(default_factory=list)


class ListServersQuery(BaseModel):
    """Every filter of ListServersDetails. ``offset`` is a page number (1-based), not an item offset."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", defer_build=True)

    enterprise_project_id: str | None = None
    flavor: str | None = None
    ip: str | None = Field(None, description="IPv4, fuzzy match")
    ip_eq: str | None = Field(None, description="IPv4, exact match")
    limit: rules.PageSize | None = Field(None, description="page size, 1-1000 (the API's default is 25)")
    name: str | None = Field(None, description="fuzzy match; '.' matches any one character")
    not_tags: str | None = Field(None, description="exclude servers with this tag (wire key not-tags)")
    offset: int | None = Field(None, description="page number, 1-based; 0 is treated as 1")
    reservation_id: str | None = None
    status: str | None = None
    tags: str | None = None
    server_id: list[str] | None = Field(None, description="exact ids; when given, every other filter is ignored")
    marker: str | None = None

    @field_validator("offset")
    @classmethod
    def _offset(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError("is a page number and must be 0 or more")
        return value

    @field_validator("status")
    @classmethod
    def _status(cls, value: str | None) -> str | None:
        if value is not None and (problem := rules.problem_with_status(value)):
            raise ValueError(problem)
        return value

    @field_validator("server_id")
    @classmethod
    def _server_ids(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (problem := rules.problem_with_server_ids(value)):
            raise ValueError(problem)
        return value

    def to_query(self) -> list[tuple[str, Any]]:
        pairs: list[tuple[str, Any]] = []
        for name, value in self.model_dump(exclude_none=True).items():
            if name == "server_id":
                pairs.append(("server_id", ",".join(value)))
            elif name == "not_tags":
                pairs.append(("not-tags", value))
            else:
                pairs.append((name, value))
        return pairs


PowerType = Literal["SOFT", "HARD"]


class JobSubEntities(WireModel):
    server_id: str | None = None
    nic_id: str | None = None
    errorcode_message: str | None = None


class SubJob(WireModel):
    status: str | None = None
    job_id: str | None = None
    job_type: str | None = None
    begin_time: str | None = None
    end_time: str | None = None
    error_code: str | None = None
    fail_reason: str | None = None
    entities: JobSubEntities | None = None


class JobEntities(WireModel):
    server_id: str | None = None
    nic_id: str | None = None
    sub_jobs_total: int | None = None
    sub_jobs: list[SubJob] | None = None


JobStatus = Literal["SUCCESS", "RUNNING", "FAIL", "INIT", "PENDING_PAYMENT"]
FINAL_JOB_STATUSES = frozenset({"SUCCESS", "FAIL"})
JOB_STATUS_MEANINGS: dict[str, str] = {
    "INIT": "accepted, not started yet (counts as running)",
    "RUNNING": "running",
    "SUCCESS": "finished: every part succeeded",
    "FAIL": "finished: at least one part failed",
    "PENDING_PAYMENT": "waiting for payment of a yearly/monthly order; it goes on only once the order is paid",
}
"""What each documented job status means (reference section 6). A waiter polls INIT and RUNNING (within
its limit), stops at SUCCESS and FAIL, and reports PENDING_PAYMENT at once: polling cannot pay an order."""
WAITING_FOR_PAYMENT = "PENDING_PAYMENT"


class Job(WireModel):
    status: str | None = None
    job_id: str | None = None
    job_type: str | None = None
    begin_time: str | None = None
    end_time: str | None = None
    error_code: str | None = None
    fail_reason: str | None = None
    entities: JobEntities | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_JOB_STATUSES

    @property
    def stops_waiting(self) -> bool:
        """Waiting longer cannot change it: finished, or waiting for a payment no poll will make."""
        return self.is_final or self.status == WAITING_FOR_PAYMENT


class ServerOutcome(BaseModel):
    """What one batch job did to one server."""

    server_id: str
    name: str | None = None
    """Filled in by whoever knows the fleet (ShowJob names servers by id only)."""
    status: str
    job_type: str | None = None
    begin_time: str | None = None
    end_time: str | None = None
    error_code: str | None = None
    fail_reason: str | None = None


class JobPoll(BaseModel):
    """One poll of a job, as much as progress needs: its status and how many of its servers are done.

    Read from the raw ShowJob body without building a model per sub-job: a running 1,000-server job
    answers ~300 KB on every poll, and only the final answer needs every server's outcome."""

    job_id: str
    status: str
    sub_jobs_total: int | None = None
    sub_jobs_done: int = 0
    sub_jobs_seen: int = 0

    @property
    def stops_waiting(self) -> bool:
        return self.status in FINAL_JOB_STATUSES or self.status == WAITING_FOR_PAYMENT

    @classmethod
    def from_job(cls, job_id: str, job: Job) -> JobPoll:
        subs = (job.entities.sub_jobs if job.entities else None) or []
        return cls(
            job_id=job.job_id or job_id,
            status=job.status or "UNKNOWN",
            sub_jobs_total=job.entities.sub_jobs_total if job.entities else None,
            sub_jobs_done=sum(sub.status in FINAL_JOB_STATUSES for sub in subs),
            sub_jobs_seen=len(subs),
        )

    @classmethod
    def from_body(cls, job_id: str, body: bytes) -> JobPoll | None:
        """The poll from a ShowJob body, or None when the body is not the documented shape (the caller
        then validates it in full, so a malformed answer fails exactly as ``show_job`` fails)."""
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        status, entities = data.get("status"), data.get("entities") or {}
        subs = entities.get("sub_jobs") if isinstance(entities, dict) else None
        total = entities.get("sub_jobs_total") if isinstance(entities, dict) else None
        if not (
            isinstance(status, str | None)
            and isinstance(data.get("job_id"), str | None)
            and isinstance(subs, list | None)
            and (total is None or (isinstance(total, int) and not isinstance(total, bool)))
            and all(isinstance(sub, dict) and isinstance(sub.get("status"), str | None) for sub in subs or ())
        ):
            return None
        return cls(
            job_id=data.get("job_id") or job_id,
            status=status or "UNKNOWN",
            sub_jobs_total=total,
            sub_jobs_done=sum(sub.get("status") in FINAL_JOB_STATUSES for sub in subs or ()),
            sub_jobs_seen=len(subs or ()),
        )


class JobResult(BaseModel):
    job_id: str
    status: str
    meaning: str | None = None
    job_type: str | None = None
    begin_time: str | None = None
    end_time: str | None = None
    sub_jobs_total: int | None = None
    servers: list[ServerOutcome] = Field(default_factory=list)
    error_code: str | None = None
    fail_reason: str | None = None

    @classmethod
    def from_job(cls, job_id: str, job: Job) -> JobResult:
        outcomes = [
            ServerOutcome(
                server_id=(sub.entities.server_id if sub.entities and sub.entities.server_id else "?"),
                status=sub.status or "UNKNOWN",
                job_type=sub.job_type,
                begin_time=sub.begin_time,
                end_time=sub.end_time,
                error_code=sub.error_code,
                fail_reason=sub.fail_reason or (sub.entities.errorcode_message if sub.entities else None),
            )
            for sub in ((job.entities.sub_jobs if job.entities else None) or [])
        ]
        status = job.status or "UNKNOWN"
        return cls(
            job_id=job.job_id or job_id,
            status=status,
            meaning=JOB_STATUS_MEANINGS.get(status, "a status the API documents nowhere"),
            job_type=job.job_type,
            begin_time=job.begin_time,
            end_time=job.end_time,
            sub_jobs_total=job.entities.sub_jobs_total if job.entities else None,
            servers=outcomes,
            error_code=job.error_code,
            fail_reason=job.fail_reason,
        )

    def with_names(self, names: dict[str, str | None]) -> JobResult:
        """The same report with each server's name, from ``names`` (id -> name)."""
        servers = [outcome.model_copy(update={"name": names.get(outcome.server_id)}) for outcome in self.servers]
        return self.model_copy(update={"servers": servers})

    @property
    def failed(self) -> list[ServerOutcome]:
        return [outcome for outcome in self.servers if outcome.status == "FAIL"]


class SubmittedJob(BaseModel):
    job_id: str
    server_ids: list[str]


class FailedChunk(BaseModel):
    """A chunk of a large batch the cloud refused; its servers were not acted on."""

    server_ids: list[str]
    status: int | None
    code: str
    message: str
    may_have_applied: bool = False
    """True when the answer was lost after sending: check the servers before trying again."""


class BatchSubmission(BaseModel):
    """Every job a batch call created, and every chunk that was refused (nothing is dropped)."""

    action: str
    jobs: list[SubmittedJob] = Field(default_factory=list)
    failed: list[FailedChunk] = Field(default_factory=list)

    @property
    def job_ids(self) -> list[str]:
        return [job.job_id for job in self.jobs]


class UpdateServerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    name: rules.ServerName | None = None
    description: rules.Description | None = None
    hostname: rules.Hostname | None = None
    user_data: rules.UserData | None = None
    security_options: SecurityOptions | None = None

    def to_body(self) -> dict[str, Any]:
        inner = self.model_dump(exclude_none=True)
        if not inner:
            raise ValueError("set at least one of name, description, hostname, user_data, security_options")
        return {"server": inner}


class UpdateServerAddress(WireModel):
    version: int | None = None
    addr: str | None = None


class Link(WireModel):
    href: str | None = None
    rel: str | None = None


class UpdateServerFlavor(WireModel):
    id: str | None = None
    links: list[Link] | None = None


class UpdateServerResult(WireModel):
    id: str
    name: str | None = None
    description: str | None = None
    status: str | None = None
    tenant_id: str | None = None
    user_id: str | None = None
    created: str | None = None
    updated: str | None = None
    host_id: str | None = Field(None, alias="hostId")
    progress: int | None = None
    locked: bool | None = None
    image: str | None = None
    access_ipv4: str | None = Field(None, alias="accessIPv4")
    access_ipv6: str | None = Field(None, alias="accessIPv6")
    metadata: dict[str, str] | None = None
    disk_config: str | None = Field(None, alias="OS-DCF:diskConfig")
    hostname: str | None = Field(None, alias="OS-EXT-SRV-ATTR:hostname")
    user_data: str | None = Field(None, alias="OS-EXT-SRV-ATTR:user_data")
    tags: list[str] | None = None
    addresses: dict[str, list[UpdateServerAddress]] | None = None
    flavor: UpdateServerFlavor | None = None
    links: list[Link] | None = None

    @field_validator("image", mode="before")
    @classmethod
    def _image(cls, value: Any) -> Any:
        return value.get("id") if isinstance(value, dict) else value


class ResetPasswordRequest(BaseModel):
    new_password: SecretStr | None = None
    dry_run: bool = False
    server_ids: list[str] = Field(validation_alias=AliasChoices("server_ids", "servers"))

    @field_validator("new_password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        # The user-name rules depend on each server's OS, which the request does not carry: the cloud
        # (its dry run) and the tool, which reads the servers, check those.
        if value is not None and (problem := rules.problem_with_password_format(value.get_secret_value())):
            raise ValueError(problem)
        return value

    @field_validator("server_ids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        if problem := rules.problem_with_server_ids(value):
            raise ValueError(problem)
        return value


class ResetPasswordResult(BaseModel):
    """Servers the reset was accepted for. There is no job: the API reports nothing more."""

    server_ids: list[str]
    dry_run: bool


class Token(BaseModel):
    """An IAM token; the value itself is a secret and never printed."""

    value: SecretStr
    expires_at: str
