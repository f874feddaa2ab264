"""The sandbox cloud's state model: servers, jobs, projects and IAM tokens, and the operations on them.

There is no HTTP in sight: ``handlers.py`` turns a request into one call here, and ``gateway.py`` has
already authenticated it. Time is driven by the configured clock and applied lazily: an asynchronous
operation opens a job in the :class:`~flexus_ops.sandbox.jobs.JobBook`, which schedules each server's
transition, and every public method first completes whatever is due (``advance``). That keeps a
10,000-server fleet cheap (no timers, no background task) and makes tests deterministic with a fake
clock. Power actions (start, stop, reboot) are the jobs' first user.

Every refusal raises :class:`SandboxError`, which the HTTP layer renders in the right shape: ECS
errors as ``{"error": {"code", "message"}}``, gateway and IAM errors flat (``error_code``/``error_msg``).
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..cloud import rules
from ..core.errors import bounded
from .fleet import ServerState, derive_status, empty_detail, generate_fleet, render_detail
from .jobs import PENDING_PAYMENT, Job, JobBook, render_job

DEFAULT_ACCESS_KEY = "FLEXUSSANDBOXAK000000"
DEFAULT_SECRET_KEY = "flexus-sandbox-sk-not-a-real-secret"  # noqa: S105 - a published sandbox-only value
DEFAULT_PROJECT_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
DEFAULT_REGION = "cn-north-4"
DEFAULT_IAM_DOMAIN = "flexus-sandbox"
DEFAULT_IAM_USER = "operator"
DEFAULT_IAM_PASSWORD = "Sandbox-Passw0rd"  # noqa: S105 - a published sandbox-only value

MAX_NAME_IN_MESSAGE = 200


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_token_time(moment: datetime) -> str:
    """IAM token timestamps, e.g. ``2020-01-04T09:05:22.701000Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SandboxError(Exception):
    """A refusal. ``flat`` selects the gateway/IAM body shape instead of the ECS ``{"error": ...}``."""

    def __init__(self, status: int, code: str, message: str, *, flat: bool = False) -> None:
        self.status = status
        self.code = code
        self.message = bounded(message)
        self.flat = flat
        super().__init__(f"{status} {code}: {self.message}")


def ecs_error(status: int, code: str, message: str) -> SandboxError:
    return SandboxError(status, code, message)


def gateway_error(status: int, code: str, message: str) -> SandboxError:
    return SandboxError(status, code, message, flat=True)


def not_found(server_id: str) -> SandboxError:
    return ecs_error(404, "Ecs.0114", f"Instance[{bounded(server_id, MAX_NAME_IN_MESSAGE)}] could not be found.")


class Knobs(BaseModel):
    """Fault and timing injection, changeable at run time (also over ``PATCH /_sandbox/knobs``)."""

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    latency_seconds: float = Field(0.0, ge=0)
    """Added (asyncio.sleep) before each ECS/IAM request."""
    rate_limit_per_second: float | None = Field(None, gt=0)
    """Token bucket with burst = rate; over it, 429 APIGW.0308 and the request is not processed."""
    fail_next_5xx: int = Field(0, ge=0)
    """The next N ECS/IAM requests get 500 APIGW.0601 without being processed."""
    fail_next_write_5xx: int = Field(0, ge=0)
    """The next N batch/PUT writes get 503 APIGW.0601, unprocessed; reads are untouched."""
    retry_after_seconds: int | None = Field(None, ge=0)
    """Add ``Retry-After`` to throttled (429) answers. Huawei documents none; a proxy in front may send it."""
    hang_next: int = Field(0, ge=0)
    """The next N requests sleep ``hang_seconds`` before being processed (so a client times out)."""
    hang_next_write: int = Field(0, ge=0)
    """The next N writes (not dry runs) sleep ``hang_seconds`` and are then processed: a lost answer."""
    hang_seconds: float = Field(30.0, ge=0)
    failing_server_ids: set[str] = Field(default_factory=set)
    """Sub-jobs for these servers FAIL with Ecs.0000 "injected failure"."""
    job_seconds: float = Field(1.0, ge=0)
    """How long a power transition takes; read when a job is created."""
    job_init_seconds: float = Field(0.0, ge=0)
    """A new job reports INIT this long before it runs (its transitions are that much later)."""
    pending_payment_next_jobs: int = Field(0, ge=0)
    """The next N jobs wait for payment (PENDING_PAYMENT, as a yearly/monthly order does): they never run
    in the sandbox and leave their servers as they are."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxOptions:
    servers: int = 30
    seed: int = 7
    access_key: str = DEFAULT_ACCESS_KEY
    secret_key: str = DEFAULT_SECRET_KEY
    project_id: str = DEFAULT_PROJECT_ID
    region: str = DEFAULT_REGION
    iam_domain: str = DEFAULT_IAM_DOMAIN
    iam_user: str = DEFAULT_IAM_USER
    iam_password: str = DEFAULT_IAM_PASSWORD
    job_seconds: float = 1.0
    token_seconds: float = 86_400
    security_token: str | None = None
    """When set, signed requests must carry a matching ``X-Security-Token`` (temporary AK/SK)."""
    clock: Callable[[], datetime] | None = None
    """Aware-UTC clock; default real time. Tests pass a fake clock they advance."""

    def __post_init__(self) -> None:
        if self.servers < 0:
            raise ValueError("servers must be 0 or more")
        if self.job_seconds < 0:
            raise ValueError("job_seconds must be 0 or more")
        if self.token_seconds <= 0:
            raise ValueError("token_seconds must be positive")
        for name in ("access_key", "secret_key", "project_id", "region", "iam_domain", "iam_user", "iam_password"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")

    def __repr__(self) -> str:
        # Never print the SK or the IAM password, even in a traceback.
        return (
            f"SandboxOptions(servers={self.servers}, seed={self.seed}, access_key={self.access_key!r}, "
            f"project_id={self.project_id!r}, region={self.region!r}, job_seconds={self.job_seconds})"
        )


@dataclass(frozen=True, slots=True)
class PowerAction:
    """A power action as a job: its job types, what it needs of a server and where it leaves one."""

    job_type: str
    sub_job_type: str
    needs_status: str
    """The status a server must have (with no task in progress) for the action to run."""
    vm_state: str
    power_state: int
    """Where a server is when its sub-job completes."""


POWER_ACTIONS: dict[str, PowerAction] = {
    "start": PowerAction("batchStartServers", "startServer", "SHUTOFF", "active", 1),
    "stop": PowerAction("batchStopServers", "stopServer", "ACTIVE", "stopped", 4),
    "reboot": PowerAction("batchRebootServers", "rebootServer", "ACTIVE", "active", 1),  # ends running
}
POWER_TYPES = ("SOFT", "HARD")


@dataclass(frozen=True, slots=True)
class TokenState:
    user_name: str
    project_id: str | None
    issued_at: datetime
    expires_at: datetime


class SandboxBackend:
    """Servers (``servers``: id -> :class:`ServerState`, generation order), jobs, projects and tokens."""

    def __init__(self, options: SandboxOptions, knobs: Knobs | None = None) -> None:
        self.options = options
        self.knobs = knobs if knobs is not None else Knobs(job_seconds=options.job_seconds)
        self._clock = options.clock or utc_now
        self.servers: dict[str, ServerState] = {
            server.id: server
            for server in generate_fleet(
                options.servers, options.seed, project_id=options.project_id, region=options.region
            )
        }
        self._position = {server_id: index for index, server_id in enumerate(self.servers)}
        self.job_book = JobBook()
        self._tokens: dict[str, TokenState] = {}
        self.domain_id = uuid.uuid5(uuid.NAMESPACE_URL, "flexus-sandbox-domain:" + options.iam_domain).hex
        self.user_id = uuid.uuid5(uuid.NAMESPACE_URL, "flexus-sandbox-user:" + options.iam_user).hex

    # -- time ---------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self._clock()

    @property
    def jobs(self) -> dict[str, Job]:
        """Every job still known, by id."""
        return self.job_book.jobs

    def advance(self) -> None:
        """Complete every transition that is due by now (called first by every public method)."""
        self.job_book.advance(self.now())

    # -- servers ------------------------------------------------------------------------------

    def _server(self, server_id: str) -> ServerState:
        server = self.servers.get(server_id)
        if server is None:
            raise not_found(server_id)
        return server

    def server_view(self, server_id: str) -> dict[str, Any]:
        """The current ServerDetail dict of one server (what ShowServer returns inside ``server``)."""
        self.advance()
        return render_detail(self._server(server_id))

    def show_server(self, server_id: str) -> dict[str, Any]:
        return {"server": self.server_view(server_id)}

    def list_servers(self, params: Mapping[str, str]) -> dict[str, Any]:
        """ListServersDetails with every filter of reference section 3 (``params`` are wire keys)."""
        self.advance()
        wanted = [part.strip() for part in params.get("server_id", "").split(",") if part.strip()]
        if wanted:
            # server_id overrides every other filter; an unknown id still yields a (null) entry.
            now = self.now()
            entries = [
                render_detail(server) if (server := self.servers.get(sid)) else empty_detail(sid, now) for sid in wanted
            ]
            return {"count": len(entries), "servers": entries}

        limit = _int_param(params, "limit", 25)
        if problem := rules.problem_with_limit(limit):
            raise ecs_error(400, "Ecs.0005", f"limit: {problem}")
        page = _int_param(params, "offset", 1)
        if page < 0:
            raise ecs_error(400, "Ecs.0005", "offset: is a page number and must be 0 or more")
        page = max(page, 1)  # 0 is treated as 1
        status = params.get("status")
        if status is not None and (problem := rules.problem_with_status(status)):
            raise ecs_error(400, "Ecs.0005", f"status: {problem}")

        predicates = _filters(params)
        matches = [server for server in self.servers.values() if all(p(server) for p in predicates)]
        count = len(matches)
        marker = params.get("marker")
        if marker:
            after = self._position.get(marker)
            if after is None:
                raise ecs_error(400, "Ecs.0005", f"marker [{bounded(marker, MAX_NAME_IN_MESSAGE)}] not found")
            matches = [server for server in matches if self._position[server.id] > after]
        start = (page - 1) * limit
        return {"count": count, "servers": [render_detail(s) for s in matches[start : start + limit]]}

    # -- batch power actions ------------------------------------------------------------------

    def _validate_ids(self, server_ids: list[str]) -> None:
        """Whole-request checks: any failure refuses the request and changes nothing."""
        if not server_ids:
            raise ecs_error(400, "Ecs.0005", "servers: " + str(rules.problem_with_server_ids(server_ids)))
        if len(server_ids) > rules.MAX_SERVERS_PER_REQUEST:
            raise ecs_error(400, "Ecs.0118", "servers: " + str(rules.problem_with_server_ids(server_ids)))
        for server_id in server_ids:
            if server_id not in self.servers:
                raise not_found(server_id)
        if problem := rules.problem_with_server_ids(server_ids):  # only duplicates are left to find
            raise ecs_error(400, "Ecs.0005", f"servers: {problem}")

    def start_servers(self, server_ids: list[str]) -> str:
        return self.power_action("start", server_ids, "SOFT")

    def stop_servers(self, server_ids: list[str], power_type: str = "SOFT") -> str:
        return self.power_action("stop", server_ids, power_type)

    def reboot_servers(self, server_ids: list[str], power_type: str) -> str:
        return self.power_action("reboot", server_ids, power_type)

    def power_action(self, action: str, server_ids: list[str], power_type: str) -> str:
        """Start, stop or reboot (``POWER_ACTIONS``) servers as one job; returns the job id.

        A server that cannot take the action fails its sub-job at once; the others are scheduled to
        complete after ``knobs.job_seconds``.
        """
        self.advance()
        if power_type not in POWER_TYPES:
            raise ecs_error(400, "Ecs.0005", "type: must be SOFT or HARD")
        self._validate_ids(server_ids)
        spec = POWER_ACTIONS[action]
        now = self.now()
        job = self.job_book.open(spec.job_type, now)
        if self.knobs.pending_payment_next_jobs > 0:
            self.knobs.pending_payment_next_jobs -= 1
            job.held = PENDING_PAYMENT
            for server_id in server_ids:
                self.job_book.add_sub_job(job, server_id, spec.sub_job_type, now)
            return job.job_id
        starts = now + timedelta(seconds=self.knobs.job_init_seconds)
        if starts > now:
            self.job_book.hold_in_init(job, starts)
        due = starts + timedelta(seconds=self.knobs.job_seconds)
        for server_id in server_ids:
            server = self.servers[server_id]
            sub = self.job_book.add_sub_job(job, server_id, spec.sub_job_type, now)
            refusal = self._refusal(action, server)
            if refusal is not None:
                sub.fail(now, *refusal)
            else:
                server.task_state = _task_for(action, power_type)
                server.updated = now
                self.job_book.schedule(sub, due, _power_done(spec, server))
        return job.job_id

    def _refusal(self, action: str, server: ServerState) -> tuple[str, str] | None:
        if server.frozen:
            return frozen_refusal(server.id)
        if server.locked:
            return "Ecs.0605", f"Instance[{server.id}] is locked ({server.lock_metadata.get('lockScene', 'locked')})."
        needed = POWER_ACTIONS[action].needs_status
        if server.task_state is not None or server.status != needed:
            doing = f", task {server.task_state} in progress" if server.task_state else ""
            return (
                "Ecs.0100",
                f"The ECS status does not meet requirements: {action} needs {needed}, "
                f"server is {server.status}{doing}.",
            )
        if server.id in self.knobs.failing_server_ids:
            return "Ecs.0000", "injected failure"
        return None

    # -- jobs ---------------------------------------------------------------------------------

    def show_job(self, job_id: str) -> dict[str, Any]:
        self.advance()
        job = self.job_book.find(job_id, self.now())  # finished jobs are purged after about a day
        if job is None:
            raise ecs_error(404, "Ecs.0000", f"job [{bounded(job_id, MAX_NAME_IN_MESSAGE)}] not found")
        return render_job(job)

    # -- password and update ------------------------------------------------------------------

    def reset_passwords(
        self, server_ids: list[str], new_password: str | None, *, dry_run: bool = False
    ) -> dict[str, Any]:
        """BatchResetServersPassword. Only a counter and a timestamp are kept, never the password."""
        self.advance()
        if new_password is None and not dry_run:
            raise ecs_error(400, "Ecs.0005", "new_password: is required unless dry_run is true")
        if new_password is not None and (problem := rules.problem_with_password_format(new_password)):
            raise ecs_error(400, "Ecs.0011", f"new_password: {problem}")
        self._validate_ids(server_ids)
        for server_id in server_ids:
            server = self.servers[server_id]
            if server.frozen:
                raise ecs_error(400, *frozen_refusal(server_id))
            if server.locked:
                raise ecs_error(400, "Ecs.0605", f"Instance[{server_id}] is locked.")
            # Each server's own rules, by its image's OS: one batch across Linux and Windows satisfies both.
            os_type = server.image.os_type
            if new_password is not None and (problem := rules.problem_with_password(new_password, os_type)):
                raise ecs_error(400, "Ecs.0011", f"new_password: {problem} (Instance[{server_id}] runs {os_type})")
        if not dry_run:
            now = self.now()
            for server_id in server_ids:
                server = self.servers[server_id]
                server.password_resets += 1
                server.password_reset_at = now
                server.updated = now
        return {"response": [{"id": server_id} for server_id in server_ids]}

    def update_server(self, server_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """UpdateServer: validate every field (rules.py), then apply them all or none."""
        self.advance()
        if not isinstance(changes, Mapping) or not changes:
            raise ecs_error(400, "Ecs.0005", "server: set at least one of " + ", ".join(_UPDATE_RULES))
        for key, value in changes.items():
            if key not in _UPDATE_RULES:
                hint = " (the key is user_data)" if key == "userdata" else ""
                raise ecs_error(400, "Ecs.0005", f"server.{bounded(str(key), 64)}: unknown field{hint}")
            if key == "security_options":
                problem = _problem_with_security_options(value)
            elif not isinstance(value, str):
                problem = "must be a string"
            else:
                problem = _UPDATE_RULES[key](value)
            if problem:
                raise ecs_error(400, "Ecs.0005", f"server.{key}: {problem}")
        server = self._server(server_id)
        if server.frozen:
            raise ecs_error(400, *frozen_refusal(server_id))
        for key, value in changes.items():
            if key == "security_options":
                server.security_options.update(value)
            else:
                setattr(server, key, value)
        server.updated = self.now()
        return {"server": render_update_result(server, self.options.region)}

    # -- IAM ----------------------------------------------------------------------------------

    def issue_token(
        self,
        *,
        user_name: str,
        password: str,
        domain_name: str,
        project_name: str | None = None,
        project_id: str | None = None,
        catalog_url: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """KeystoneCreateUserTokenByPassword: returns (token, body). Wrong credentials: 401 IAM.0002."""
        # Compare everything (constant time for the password) so a wrong user costs the same as a wrong password.
        good = (
            hmac.compare_digest(password.encode(), self.options.iam_password.encode())
            & (user_name == self.options.iam_user)
            & (domain_name == self.options.iam_domain)
        )
        if not good:
            raise gateway_error(401, "IAM.0002", "The username or password is wrong.")
        scoped_project: str | None = None
        if project_name is not None or project_id is not None:
            if (project_name is not None and project_name != self.options.region) or (
                project_id is not None and project_id != self.options.project_id
            ):
                raise gateway_error(400, "IAM.0004", "The project in the scope does not exist.")
            scoped_project = self.options.project_id
        now = self.now()
        expires = now + timedelta(seconds=self.options.token_seconds)
        # Forget expired tokens so the table cannot grow without bound.
        self._tokens = {value: state for value, state in self._tokens.items() if state.expires_at > now}
        token = "MIIsandbox" + secrets.token_urlsafe(96)
        self._tokens[token] = TokenState(user_name, scoped_project, now, expires)
        domain = {"name": self.options.iam_domain, "id": self.domain_id}
        body: dict[str, Any] = {
            "expires_at": format_token_time(expires),
            "issued_at": format_token_time(now),
            "methods": ["password"],
            "roles": [
                {"name": "te_admin", "id": uuid.uuid5(uuid.NAMESPACE_URL, "role:te_admin").hex},
                {"name": "op_service", "id": uuid.uuid5(uuid.NAMESPACE_URL, "role:op_service").hex},
            ],
            "user": {"name": user_name, "id": self.user_id, "password_expires_at": "", "domain": domain},
        }
        if scoped_project is not None:
            body["project"] = {"id": scoped_project, "name": self.options.region, "domain": domain}
        else:
            body["domain"] = domain
        if catalog_url is not None:
            body["catalog"] = self._catalog(catalog_url)
        return token, {"token": body}

    def _catalog(self, base_url: str) -> list[dict[str, Any]]:
        region = self.options.region

        def service(kind: str, name: str, url: str) -> dict[str, Any]:
            return {
                "type": kind,
                "name": name,
                "id": uuid.uuid5(uuid.NAMESPACE_URL, "service:" + name).hex,
                "endpoints": [
                    {
                        "id": uuid.uuid5(uuid.NAMESPACE_URL, "endpoint:" + name).hex,
                        "interface": "public",
                        "region": region,
                        "region_id": region,
                        "url": url,
                    }
                ],
            }

        base = base_url.rstrip("/")
        return [
            service("compute", "ecs", f"{base}/v1/{self.options.project_id}"),
            service("identity", "iam", f"{base}/v3"),
        ]

    def validate_token(self, token: str) -> TokenState:
        """Unknown token: 401 APIGW.0301; expired: 401 APIGW.0307."""
        state = self._tokens.get(token)
        if state is None:
            raise gateway_error(401, "APIGW.0301", "Incorrect IAM authentication information: decrypt token fail")
        if self.now() >= state.expires_at:
            raise gateway_error(401, "APIGW.0307", "The token must be updated: it has expired.")
        return state

    def list_projects(self, name: str | None = None) -> dict[str, Any]:
        """KeystoneListProjects: the sandbox has one project, named after the region."""
        project = {
            "id": self.options.project_id,
            "name": self.options.region,
            "domain_id": self.domain_id,
            "parent_id": self.domain_id,
            "description": "",
            "is_domain": False,
            "enabled": True,
        }
        projects = [project] if name in (None, self.options.region) else []
        return {"projects": projects, "links": {"self": "/v3/projects", "next": None, "previous": None}}


FROZEN_CODE = "Ecs.9001"
"""Made up: the real code for an action on a frozen server is not documented (the README says so)."""


def frozen_refusal(server_id: str) -> tuple[str, str]:
    return FROZEN_CODE, f"Instance[{server_id}] is frozen (EcmResStatus freeze); no action is allowed on it."


def _int_param(params: Mapping[str, str], key: str, default: int) -> int:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ecs_error(400, "Ecs.0005", f"{key}: must be an integer") from None


def _has_tag(server: ServerState, wanted: str) -> bool:
    # A tag filter matches the exact "key=value" string, or any tag whose key equals it.
    return any(tag == wanted or tag.partition("=")[0] == wanted for tag in server.tags)


def _name_matches(pattern: str, name: str) -> bool:
    # The docs: fuzzy match where "." stands for any single character.
    width = len(pattern)
    return any(
        all(p == "." or p == c for p, c in zip(pattern, name[start : start + width], strict=True))
        for start in range(len(name) - width + 1)
    )


def _status_matches(wanted: str, server: ServerState) -> bool:
    """The status filter finds the status itself and, for ACTIVE, SHUTOFF, ERROR and VERIFY_RESIZE, the
    intermediate states of servers whose stable state (vm_state) is that status: a HARD_REBOOT server is
    found by ACTIVE, a REBUILD server by the status it is rebuilding from. Together these are exactly the
    reference's ranges (rules.STATUS_RANGES)."""
    status = server.status
    if status == wanted:
        return True
    return status in rules.statuses_matched_by(wanted) and derive_status(server.vm_state, None) == wanted


def _filters(params: Mapping[str, str]) -> list[Callable[[ServerState], bool]]:
    """One predicate per filter present (built once per request, so 10,000 servers stay cheap)."""
    makers: dict[str, Callable[[str], Callable[[ServerState], bool]]] = {
        "name": lambda v: lambda s: _name_matches(v, s.name),
        # ip filters match the private (fixed) address, as Nova's ip filter does.
        "ip": lambda v: lambda s: v in s.fixed_ip,
        "ip_eq": lambda v: lambda s: v == s.fixed_ip,
        "status": lambda v: lambda s: _status_matches(v, s),
        "flavor": lambda v: lambda s: v == s.flavor.id,
        "tags": lambda v: lambda s: _has_tag(s, v),
        "not-tags": lambda v: lambda s: not _has_tag(s, v),
        "reservation_id": lambda v: lambda s: v == s.reservation_id,
        "enterprise_project_id": lambda v: (
            (lambda s: True) if v == "all_granted_eps" else (lambda s: v == s.enterprise_project_id)
        ),
    }
    return [make(value) for key, make in makers.items() if (value := params.get(key))]


def _task_for(action: str, power_type: str) -> str:
    if action == "stop":
        return "powering-off"
    if action == "start":
        return "powering-on"
    return "rebooting_hard" if power_type == "HARD" else "reboot_started"


def _power_done(spec: PowerAction, server: ServerState) -> Callable[[datetime], None]:
    """What completing a power sub-job does to its server."""

    def done(at: datetime) -> None:
        server.vm_state, server.power_state = spec.vm_state, spec.power_state
        server.task_state = None
        server.updated = at

    return done


def _problem_with_security_options(value: Any) -> str | None:
    allowed = {"secure_boot_enabled", "tpm_enabled"}
    if not isinstance(value, dict) or not value:
        return "must be an object with secure_boot_enabled and/or tpm_enabled"
    for key, item in value.items():
        if key not in allowed:
            return f"unknown field {bounded(str(key), 64)}"
        if not isinstance(item, bool):
            return f"{key} must be true or false"
    return None


_UPDATE_RULES: dict[str, Callable[[str], str | None]] = {
    "name": rules.problem_with_name,
    "description": rules.problem_with_description,
    "hostname": rules.problem_with_hostname,
    "user_data": rules.problem_with_user_data,
    "security_options": lambda _value: None,  # checked by _problem_with_security_options
}


def render_update_result(server: ServerState, region: str) -> dict[str, Any]:
    """UpdateServerResult (reference 5.2): int address versions, image as a string, flavor with links."""
    detail = render_detail(server)
    base = f"https://ecs.{region}.myhuaweicloud.com"
    return {
        "id": server.id,
        "name": server.name,
        "description": server.description,
        "status": server.status,
        "tenant_id": server.project_id,
        "user_id": server.user_id,
        "created": detail["created"],
        "updated": detail["updated"],
        "hostId": server.host_id,
        "progress": 0,
        "locked": server.locked,
        "image": server.image.id,
        "accessIPv4": "",
        "accessIPv6": "",
        "metadata": detail["metadata"],
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-SRV-ATTR:hostname": server.hostname,
        "OS-EXT-SRV-ATTR:user_data": server.user_data,
        "tags": list(server.tags),
        "addresses": {
            network: [{"version": int(entry["version"]), "addr": entry["addr"]} for entry in entries]
            for network, entries in detail["addresses"].items()
        },
        "flavor": {
            "id": server.flavor.id,
            "links": [{"href": f"{base}/{server.project_id}/flavors/{server.flavor.id}", "rel": "bookmark"}],
        },
        "links": [
            {"href": f"{base}/v2.1/{server.project_id}/servers/{server.id}", "rel": "self"},
            {"href": f"{base}/{server.project_id}/servers/{server.id}", "rel": "bookmark"},
        ],
    }
