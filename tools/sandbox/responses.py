"""The sandbox cloud's HTTP layer: one Starlette app serving ECS v1, IAM and admin routes on one host.

The layer is thin on purpose: it routes, verifies authentication exactly as the API gateway would
(SDK-HMAC-SHA256 over what was *received*, or an IAM token), applies the fault knobs, parses bodies,
calls :class:`~flexus_ops.sandbox.backend.SandboxBackend`, renders errors in the real shapes and
records every ECS/IAM request in ``request_log``. Admin routes under ``/_sandbox/`` are unsigned and
not logged, for out-of-process tests.

Order of checks for each request, as a gateway does it: latency and hang knobs, route (404
APIGW.0101), throttling (429 APIGW.0308), injected 5xx (500 APIGW.0601), authentication (401),
project (403), then the operation.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..cloud import signer
from .backend import (
    Knobs,
    SandboxBackend,
    SandboxError,
    SandboxOptions,
    ecs_error,
    gateway_error,
)

_log = logging.getLogger(__name__)

MAX_CLOCK_SKEW = timedelta(minutes=15)
LOCK_AFTER_FAILURES = 5  # more than this many consecutive failures lock the AK
LOCK_DURATION = timedelta(minutes=5)
MAX_BODY_BYTES = 12 * 1024 * 1024  # the gateway's body limit (APIGW.0201, 413)

WRITE_OPERATIONS = frozenset(
    {
        "BatchStartServers",
        "BatchStopServers",
        "BatchRebootServers",
        "BatchResetServersPassword",
        "UpdateServer",
    }
)
BATCH_KEYS = {"os-start": "BatchStartServers", "os-stop": "BatchStopServers", "reboot": "BatchRebootServers"}
TOKEN_OPERATION = "KeystoneCreateUserTokenByPassword"  # noqa: S105 - an operation name
PROJECTS_OPERATION = "KeystoneListProjects"
API_NOT_FOUND = "The API does not exist or has not been published in the environment."


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One ECS/IAM request as the sandbox saw it. Never holds a password, token, signature or SK."""

    seq: int
    at: datetime
    method: str
    path: str
    query: dict[str, str]
    status: int
    error_code: str | None
    operation: str
    server_ids: list[str]
    is_write: bool
    dry_run: bool
    request_id: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data


# -- signature verification ---------------------------------------------------------------------


class SignatureRejected(Exception):
    """A request whose signature does not verify; ``access_key`` is set when it could be read."""

    def __init__(self, message: str, access_key: str | None = None) -> None:
        self.access_key = access_key
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class _Authorization:
    algorithm: str
    access_key: str
    signed_headers: list[str]
    signature: str
    info: str | None = None
    """The derived-signing scope ``yyyymmdd/region/service`` (V11 only)."""


def _parse_v11(value: str) -> _Authorization | None:
    prefix = signer.DERIVED_ALGORITHM + " "
    if not value.startswith(prefix):
        return None
    fields: dict[str, str] = {}
    for part in value[len(prefix) :].split(","):
        key, sep, item = part.strip().partition("=")
        if not sep:
            return None
        fields[key] = item
    credential = fields.get("Credential", "")
    access_key, sep, info = credential.partition("/")
    if not sep or "SignedHeaders" not in fields or "Signature" not in fields:
        return None
    headers = [h for h in fields["SignedHeaders"].split(";") if h]
    return _Authorization(signer.DERIVED_ALGORITHM, access_key, headers, fields["Signature"], info)


def parse_any_authorization(value: str) -> _Authorization | None:
    parsed = signer.parse_authorization(value)
    if parsed is not None:
        return _Authorization(signer.ALGORITHM, parsed.access_key, parsed.signed_headers, parsed.signature)
    return _parse_v11(value)


def verify_signature(
    *,
    method: str,
    path: str,
    query_string: str,
    headers: Mapping[str, str],
    body: bytes | None,
    secret_for: Callable[[str], str | None],
    now: datetime,
    security_token: str | None = None,
    max_skew: timedelta = MAX_CLOCK_SKEW,
) -> str:
    """Verify an SDK-HMAC-SHA256 (or V11-HMAC-SHA256) signed request from what was received.

    ``headers`` are keyed by lowercase name, ``path`` is the request path without the query, and
    ``query_string`` the raw query. Returns the access key; raises :class:`SignatureRejected`.
    """
    authorization = headers.get("authorization")
    if not authorization:
        raise SignatureRejected("Incorrect IAM authentication information: Authorization header is missing")
    parsed = parse_any_authorization(authorization)
    if parsed is None:
        raise SignatureRejected("Incorrect IAM authentication information: Authorization header is malformed")
    access_key = parsed.access_key
    signed = parsed.signed_headers
    if "host" not in signed or "x-sdk-date" not in signed:
        raise SignatureRejected(
            "Incorrect IAM authentication information: host and x-sdk-date must be signed", access_key
        )
    if any(name not in headers for name in signed):
        raise SignatureRejected(
            "Incorrect IAM authentication information: a signed header is missing from the request", access_key
        )
    date = headers["x-sdk-date"]
    try:
        signed_at = signer.parse_date(date)
    except ValueError:
        raise SignatureRejected(
            "Incorrect IAM authentication information: X-Sdk-Date is not in the format 20240101T120000Z",
            access_key,
        ) from None
    if abs(now - signed_at) > max_skew:
        raise SignatureRejected(
            "Incorrect IAM authentication information: X-Sdk-Date is more than 15 minutes from the server time",
            access_key,
        )
    secret_key = secret_for(access_key)
    if secret_key is None:
        raise SignatureRejected(
            f"Incorrect IAM authentication information: Get secretKey failed,ak:{access_key[:64]},err:ak not exist",
            access_key,
        )
    if security_token is not None and not hmac.compare_digest(
        headers.get("x-security-token", "").encode(), security_token.encode()
    ):
        raise SignatureRejected(
            "Incorrect IAM authentication information: X-Security-Token is missing or wrong", access_key
        )
    query = signer.canonical_query(parse_qsl(query_string, keep_blank_values=True))
    canonical = signer.canonical_request(method, path, query, headers, signed, body)
    if parsed.algorithm == signer.ALGORITHM:
        expected = signer.signature(secret_key, signer.string_to_sign(date, canonical))
    else:
        info = parsed.info or ""
        if not info.startswith(date[:8] + "/"):
            raise SignatureRejected("Incorrect IAM authentication information: Credential date mismatch", access_key)
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        to_sign = f"{signer.DERIVED_ALGORITHM}\n{date}\n{info}\n{digest}"
        expected = signer.signature(signer.derived_signing_key(access_key, secret_key, info), to_sign)
    if not hmac.compare_digest(expected.encode(), parsed.signature.encode()):
        raise SignatureRejected("Incorrect IAM authentication information: verify aksk signature fail", access_key)
    return access_key


# -- throttling and lockout ---------------------------------------------------------------------


class TokenBucket:
    """``rate`` tokens per second, burst ``rate`` (at least 1), on the monotonic clock."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class _AkFailures:
    count: int = 0
    locked_until: datetime | None = None


# -- routing --------------------------------------------------------------------------------------

_PID = r"(?P<pid>[^/]+)"
ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("GET", re.compile(rf"^/v1/{_PID}/cloudservers/detail$"), "ListServersDetails"),
    ("GET", re.compile(rf"^/v1/{_PID}/cloudservers/(?P<server_id>[^/]+)$"), "ShowServer"),
    ("PUT", re.compile(rf"^/v1/{_PID}/cloudservers/os-reset-passwords$"), "BatchResetServersPassword"),
    ("PUT", re.compile(rf"^/v1/{_PID}/cloudservers/(?P<server_id>[^/]+)$"), "UpdateServer"),
    ("POST", re.compile(rf"^/v1/{_PID}/cloudservers/action$"), "BatchAction"),
    ("GET", re.compile(rf"^/v1/{_PID}/jobs/(?P<job_id>[^/]+)$"), "ShowJob"),
    ("POST", re.compile(r"^/v3/auth/tokens$"), TOKEN_OPERATION),
    ("GET", re.compile(r"^/v3/projects$"), PROJECTS_OPERATION),
)


def match_route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    for route_method, pattern, operation in ROUTES:
        if route_method == method and (found := pattern.match(path)):
            return operation, found.groupdict()
    return None


_NO_BODY = object()


def _parse_json(body: bytes) -> Any:
    """The parsed body, ``_NO_BODY`` when empty, or raises 400 Ecs.0005."""
    if not body.strip():
        return _NO_BODY
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ecs_error(400, "Ecs.0005", "The request body is not valid JSON.") from None


def _lenient_json(body: bytes) -> Any:
    try:
        return json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError):
        return None


def _ids_of(servers: Any) -> list[str]:
    if not isinstance(servers, list):
        return []
    return [item["id"] for item in servers if isinstance(item, dict) and isinstance(item.get("id"), str)]


def _server_list(container: dict[str, Any], where: str) -> list[str]:
    servers = container.get("servers")
    if servers is None:
        raise ecs_error(400, "Ecs.0005", f"{where}.servers: is required")
    if not isinstance(servers, list):
        raise ecs_error(400, "Ecs.0005", f'{where}.servers: must be a list of {{"id": ...}}')
    ids: list[str] = []
    for index, item in enumerate(servers):
        if not isinstance(item, dict) or set(item) != {"id"} or not isinstance(item["id"], str):
            raise ecs_error(400, "Ecs.0005", f'{where}.servers[{index}]: must be {{"id": "<server id>"}}')
        ids.append(item["id"])
    return ids


def _require_object(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ecs_error(400, "Ecs.0005", f"{where}: must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ecs_error(400, "Ecs.0005", f"{where}.{str(unknown[0])[:64]}: unknown field")
    return value


@dataclass(slots=True)
class _Exchange:
    """What the request log needs to know about one request as it is handled."""

    operation: str
    server_ids: list[str] = field(default_factory=list)
    dry_run: bool = False


class Sandbox:
    """The sandbox cloud: ``app`` (ASGI), ``backend`` (state), ``knobs`` and ``request_log``."""

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options or SandboxOptions()
        self.knobs = Knobs(job_seconds=self.options.job_seconds)
        self.backend = SandboxBackend(self.options, self.knobs)
        self.request_log: list[RequestRecord] = []
        self._seq = 0
        self._bucket: TokenBucket | None = None
        self._failures: dict[str, _AkFailures] = {}
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    def writes(self) -> list[RequestRecord]:
        return [record for record in self.request_log if record.is_write]

    def now(self) -> datetime:
        return self.backend.now()

    # -- the request cycle ------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        path: str = request.scope["path"]
        if path == "/_sandbox" or path.startswith("/_sandbox/"):
            return await self._admin(request, path)

        self._seq += 1
        seq = self._seq
        at = self.now()
        request_id = uuid.uuid4().hex
        method = request.method
        query_string = request.scope.get("query_string", b"").decode("latin-1")
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        route = match_route(method, path)
        exchange = _Exchange(route[0] if route else "Unknown")
        error_code: str | None = None
        try:
            # The body is read first, as a gateway would have received it; the knobs that slow a
            # request down come next, so a hung request is still processed after its sleep even if
            # the client gave up (the "answer lost, write applied" case clients must reconcile).
            body = await request.body()
            if self.knobs.latency_seconds:
                await asyncio.sleep(self.knobs.latency_seconds)
            if self.knobs.hang_next > 0:
                self.knobs.hang_next -= 1
                await asyncio.sleep(self.knobs.hang_seconds)
            if route is not None:
                self._describe(exchange, route[1], query, body)
            if self.knobs.hang_next_write > 0 and exchange.operation in WRITE_OPERATIONS and not exchange.dry_run:
                # Aimed at one write, so the reads before it answer: the lost-answer case, precisely.
                self.knobs.hang_next_write -= 1
                await asyncio.sleep(self.knobs.hang_seconds)
            response = self._process(request, route, path, query_string, query, body, exchange)
        except SandboxError as error:
            error_code = error.code
            response = self._error(error, request_id)
        except Exception:  # answer like a gateway would rather than drop the connection, but log the bug
            _log.exception("sandbox bug while handling %s %s", method, path)
            error_code = "APIGW.0601"
            response = self._error(gateway_error(500, error_code, "Internal server error."), request_id)
        response.headers["X-Request-Id"] = request_id
        status = response.status_code
        if status == 429 and self.knobs.retry_after_seconds is not None:
            response.headers["Retry-After"] = str(self.knobs.retry_after_seconds)
        self.request_log.append(
            RequestRecord(
                seq=seq,
                at=at,
                method=method,
                path=path,
                query=query,
                status=status,
                error_code=error_code,
                operation=exchange.operation,
                server_ids=exchange.server_ids,
                is_write=exchange.operation in WRITE_OPERATIONS and status < 400 and not exchange.dry_run,
                dry_run=exchange.dry_run,
                request_id=request_id,
            )
        )
        return response

    def _describe(self, exchange: _Exchange, params: dict[str, str], query: dict[str, str], body: bytes) -> None:
        """Fill the log's view of the request (operation, server ids, dry_run) before any check."""
        if "server_id" in params:
            exchange.server_ids = [params["server_id"]]
        elif exchange.operation == "ListServersDetails" and query.get("server_id"):
            exchange.server_ids = [p.strip() for p in query["server_id"].split(",") if p.strip()]
        parsed = _lenient_json(body)
        if not isinstance(parsed, dict):
            if exchange.operation == "BatchAction":
                exchange.operation = "Unknown"
            return
        if exchange.operation == "BatchAction":
            keys = [key for key in parsed if key in BATCH_KEYS]
            exchange.operation = BATCH_KEYS[keys[0]] if len(keys) == 1 else "Unknown"
            inner = parsed.get(keys[0]) if len(keys) == 1 else None
            exchange.server_ids = _ids_of(inner.get("servers")) if isinstance(inner, dict) else []
        elif exchange.operation == "BatchResetServersPassword":
            exchange.server_ids = _ids_of(parsed.get("servers"))
            exchange.dry_run = parsed.get("dry_run") is True

    def _process(
        self,
        request: Request,
        route: tuple[str, dict[str, str]] | None,
        path: str,
        query_string: str,
        query: dict[str, str],
        body: bytes,
        exchange: _Exchange,
    ) -> Response:
        if route is None:
            raise gateway_error(404, "APIGW.0101", API_NOT_FOUND)
        if len(body) > MAX_BODY_BYTES:
            raise gateway_error(413, "APIGW.0201", "Request entity too large.")
        self._throttle()
        if self.knobs.fail_next_5xx > 0:
            self.knobs.fail_next_5xx -= 1
            raise gateway_error(500, "APIGW.0601", "Internal server error (injected by the sandbox).")
        operation, params = route
        if exchange.operation in WRITE_OPERATIONS and self.knobs.fail_next_write_5xx > 0:
            # Aimed at writes only, so the reads around them (previews, re-reads) still succeed.
            self.knobs.fail_next_write_5xx -= 1
            raise gateway_error(503, "APIGW.0601", "Service unavailable (injected by the sandbox).")
        headers = {name: value for name, value in request.headers.items()}
        if operation != TOKEN_OPERATION:
            token_project = self._authenticate(request, path, query_string, headers, body)
            if "pid" in params:
                self._check_project(params["pid"], headers, token_project)
        return self._operate(operation, exchange, params, query, body, str(request.base_url))

    def _throttle(self) -> None:
        rate = self.knobs.rate_limit_per_second
        if rate is None:
            self._bucket = None
            return
        now = time.monotonic()
        if self._bucket is None or self._bucket.rate != rate:
            self._bucket = TokenBucket(rate, now)
        if not self._bucket.take(now):
            raise gateway_error(
                429,
                "APIGW.0308",
                f"The throttling threshold has been reached: policy user over ratelimit,limit:{rate:g},time:1 second",
            )

    # -- authentication ---------------------------------------------------------------------

    def _authenticate(
        self, request: Request, path: str, query_string: str, headers: dict[str, str], body: bytes
    ) -> str | None:
        """Returns the token's project id for token auth, None for AK/SK; raises 401 otherwise."""
        if "authorization" not in headers:
            token = headers.get("x-auth-token")
            if not token:
                raise gateway_error(
                    401,
                    "APIGW.0301",
                    "Incorrect IAM authentication information: the request has no Authorization or X-Auth-Token",
                )
            state = self.backend.validate_token(token)
            return state.project_id or ""
        raw_path = request.scope.get("raw_path")
        # httpx's ASGITransport puts the query inside raw_path; uvicorn does not.
        signed_path = raw_path.decode("utf-8", "replace").split("?", 1)[0] if raw_path else path
        now = self.now()
        parsed = parse_any_authorization(headers["authorization"])
        failures = self._failures.get(parsed.access_key) if parsed else None
        if failures and failures.locked_until:
            if now < failures.locked_until:
                raise gateway_error(
                    401,
                    "APIGW.0301",
                    "Incorrect IAM authentication information: the AK is locked for 5 minutes after "
                    "more than 5 consecutive authentication failures",
                )
            failures.locked_until, failures.count = None, 0
        try:
            access_key = verify_signature(
                method=request.method,
                path=signed_path,
                query_string=query_string,
                headers=headers,
                body=body,
                secret_for=self._secret_for,
                now=now,
                security_token=self.options.security_token,
            )
        except SignatureRejected as rejected:
            if rejected.access_key is not None:
                record = self._failures.setdefault(rejected.access_key, _AkFailures())
                record.count += 1
                if record.count > LOCK_AFTER_FAILURES:
                    record.locked_until = now + LOCK_DURATION
            raise gateway_error(401, "APIGW.0301", str(rejected)) from None
        self._failures.pop(access_key, None)
        return None

    def _secret_for(self, access_key: str) -> str | None:
        return self.options.secret_key if access_key == self.options.access_key else None

    def _check_project(self, path_project: str, headers: dict[str, str], token_project: str | None) -> None:
        expected = self.options.project_id
        header_project = headers.get("x-project-id")
        if path_project != expected or (header_project is not None and header_project != expected):
            raise gateway_error(403, "APIGW.0310", "The project is unavailable: it is not the caller's project.")
        if token_project is not None and token_project != expected:
            raise gateway_error(403, "APIGW.0310", "The project is unavailable: the token is not scoped to it.")

    # -- operations -------------------------------------------------------------------------

    def _operate(
        self,
        operation: str,
        exchange: _Exchange,
        params: dict[str, str],
        query: dict[str, str],
        body: bytes,
        base_url: str,
    ) -> Response:
        backend = self.backend
        if operation == "ShowServer":
            return JSONResponse(backend.show_server(params["server_id"]))
        if operation == "ListServersDetails":
            return JSONResponse(backend.list_servers(query))
        if operation == "ShowJob":
            return JSONResponse(backend.show_job(params["job_id"]))
        if operation == PROJECTS_OPERATION:
            return JSONResponse(backend.list_projects(query.get("name")))
        parsed = _parse_json(body)
        if parsed is _NO_BODY:
            raise ecs_error(400, "Ecs.0005", "The request body is required.")
        if operation == "BatchAction":
            return JSONResponse(self._batch(parsed))
        if operation == "BatchResetServersPassword":
            request_body = _require_object(parsed, "body", {"new_password", "dry_run", "servers"})
            password = request_body.get("new_password")
            dry_run = request_body.get("dry_run", False)
            if password is not None and not isinstance(password, str):
                raise ecs_error(400, "Ecs.0005", "new_password: must be a string")
            if not isinstance(dry_run, bool):
                raise ecs_error(400, "Ecs.0005", "dry_run: must be true or false")
            ids = _server_list(request_body, "body")
            return JSONResponse(backend.reset_passwords(ids, password, dry_run=dry_run))
        if operation == "UpdateServer":
            request_body = _require_object(parsed, "body", {"server"})
            if "server" not in request_body:
                raise ecs_error(400, "Ecs.0005", "server: is required")
            if not isinstance(request_body["server"], dict):
                raise ecs_error(400, "Ecs.0005", "server: must be a JSON object")
            return JSONResponse(backend.update_server(params["server_id"], request_body["server"]))
        if operation == TOKEN_OPERATION:
            return self._token(parsed, query, base_url)
        raise gateway_error(404, "APIGW.0101", API_NOT_FOUND)

    def _batch(self, parsed: Any) -> dict[str, Any]:
        if not isinstance(parsed, dict) or len(parsed) != 1 or next(iter(parsed)) not in BATCH_KEYS:
            raise ecs_error(400, "Ecs.0005", "The body must have exactly one of os-start, os-stop, reboot.")
        key, inner = next(iter(parsed.items()))
        allowed = {"servers"} if key == "os-start" else {"servers", "type"}
        inner = _require_object(inner, key, allowed)
        power_type = inner.get("type")
        if key == "reboot" and power_type is None:
            raise ecs_error(400, "Ecs.0005", "reboot.type: is required (SOFT or HARD)")
        if power_type is not None and not isinstance(power_type, str):
            raise ecs_error(400, "Ecs.0005", f"{key}.type: must be SOFT or HARD")
        ids = _server_list(inner, key)
        if key == "os-start":
            job_id = self.backend.start_servers(ids)
        elif key == "os-stop":
            job_id = self.backend.stop_servers(ids, power_type or "SOFT")
        else:
            job_id = self.backend.reboot_servers(ids, str(power_type))
        return {"job_id": job_id}

    def _token(self, parsed: Any, query: dict[str, str], base_url: str) -> Response:
        def bad(message: str) -> SandboxError:
            return gateway_error(400, "IAM.0001", f"The request body is invalid: {message}")

        auth = parsed.get("auth") if isinstance(parsed, dict) else None
        identity = auth.get("identity") if isinstance(auth, dict) else None
        if not isinstance(identity, dict):
            raise bad("auth.identity is required")
        methods = identity.get("methods")
        if not isinstance(methods, list) or "password" not in methods:
            raise bad("auth.identity.methods must contain password")
        password_block = identity.get("password")
        user = password_block.get("user") if isinstance(password_block, dict) else None
        if not isinstance(user, dict):
            raise bad("auth.identity.password.user is required")
        domain = user.get("domain")
        name, password = user.get("name"), user.get("password")
        domain_name = domain.get("name") if isinstance(domain, dict) else None
        if not all(isinstance(v, str) for v in (name, password, domain_name)):
            raise bad("user name, password and domain name are required strings")
        scope = auth.get("scope") if isinstance(auth, dict) else None
        project = scope.get("project") if isinstance(scope, dict) else None
        project_name = project.get("name") if isinstance(project, dict) else None
        project_id = project.get("id") if isinstance(project, dict) else None
        if isinstance(project, dict) and not isinstance(project_name or project_id, str):
            raise bad("auth.scope.project needs a name or an id")
        token, body = self.backend.issue_token(
            user_name=str(name),
            password=str(password),
            domain_name=str(domain_name),
            project_name=project_name if isinstance(project_name, str) else None,
            project_id=project_id if isinstance(project_id, str) else None,
            catalog_url=None if query.get("nocatalog") else base_url,
        )
        return JSONResponse(body, status_code=201, headers={"X-Subject-Token": token})

    # -- errors and admin -------------------------------------------------------------------

    @staticmethod
    def _error(error: SandboxError, request_id: str) -> Response:
        if error.flat:
            body: dict[str, Any] = {"error_code": error.code, "error_msg": error.message, "request_id": request_id}
        else:
            body = {"error": {"message": error.message, "code": error.code}}
        return JSONResponse(body, status_code=error.status)

    async def _admin(self, request: Request, path: str) -> Response:
        method = request.method
        if path == "/_sandbox/health" and method == "GET":
            return JSONResponse(
                {
                    "status": "ok",
                    "servers": len(self.backend.servers),
                    "region": self.options.region,
                    "project_id": self.options.project_id,
                    "access_key": self.options.access_key,
                }
            )
        if path == "/_sandbox/requests" and method == "GET":
            return JSONResponse([record.to_json() for record in self.request_log])
        if path == "/_sandbox/requests" and method == "DELETE":
            cleared = len(self.request_log)
            self.request_log.clear()
            return JSONResponse({"cleared": cleared})
        if path == "/_sandbox/knobs" and method == "GET":
            return JSONResponse(self._knobs_json())
        if path == "/_sandbox/knobs" and method == "PATCH":
            return self._patch_knobs(await request.body())
        if path.startswith("/_sandbox/servers/") and method == "GET":
            server_id = path.removeprefix("/_sandbox/servers/")
            try:
                detail = self.backend.server_view(server_id)
            except SandboxError as error:
                return self._error(error, uuid.uuid4().hex)
            state = self.backend.servers[server_id]
            reset_at = state.password_reset_at.isoformat() if state.password_reset_at else None
            return JSONResponse(
                {"server": detail, "password_resets": state.password_resets, "password_reset_at": reset_at}
            )
        return JSONResponse({"error_code": "APIGW.0101", "error_msg": "No such sandbox admin route."}, 404)

    def _knobs_json(self) -> dict[str, Any]:
        data = self.knobs.model_dump(mode="json")
        data["failing_server_ids"] = sorted(self.knobs.failing_server_ids)
        return data

    def _patch_knobs(self, body: bytes) -> Response:
        patch = _lenient_json(body)
        if not isinstance(patch, dict):
            return JSONResponse({"error_code": "Ecs.0005", "error_msg": "Send a JSON object of knob fields."}, 400)
        try:
            # Validate the whole result first, then mutate in place: the backend holds this object.
            merged = Knobs.model_validate({**self.knobs.model_dump(), **patch})
        except ValidationError as error:
            message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            return JSONResponse({"error_code": "Ecs.0005", "error_msg": message[:500]}, 400)
        for name in patch:
            setattr(self.knobs, name, getattr(merged, name))
        return JSONResponse(self._knobs_json())
