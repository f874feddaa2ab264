"""The sandbox cloud's API gateway: everything that happens to a request before its operation runs.

On Huawei Cloud, ECS and IAM sit behind an API gateway that authenticates, throttles and sometimes
fails a request before the service sees it, and answers in its own flat error shape
(``error_code``/``error_msg``/``request_id``). Keeping that here, apart from the operations, means a
handler only ever sees a request a real gateway would have passed on, and the tests of retries,
lock-outs and lost answers have one place to look.

What a :class:`Gateway` does, in the order it does it for each ECS/IAM request:

1. numbers the request and gives it an ``X-Request-Id`` (:meth:`Gateway.receive`);
2. the latency and hang knobs, including ``hang_next_write`` once the request is known to be a write
   (:meth:`Gateway.delay`, :meth:`Gateway.delay_write`);
3. request line length (414 APIGW.0201, :meth:`Gateway.check_request_line`), route (404 APIGW.0101,
   raised by the HTTP layer with :func:`not_published`), body limit (413
   APIGW.0201), throttling with a token bucket (429 APIGW.0308), injected 5xx (500 APIGW.0601, and
   503 for writes only) (:meth:`Gateway.admit`);
4. authentication (401): an SDK-HMAC-SHA256 or V11-HMAC-SHA256 signature over what was *received*,
   with AK lock-out after repeated failures, or an IAM token (:meth:`Gateway.authenticate`);
5. project (403 APIGW.0310) (:meth:`Gateway.check_project`);
6. after the operation: ``Retry-After`` on 429 when the knob says so, and the request log entry
   (:meth:`Gateway.reply`). The log never holds a password, token, signature or SK.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse, Response

from ..cloud import signer
from .backend import Knobs, SandboxBackend, SandboxError, SandboxOptions, gateway_error

MAX_CLOCK_SKEW = timedelta(minutes=15)
LOCK_AFTER_FAILURES = 5  # more than this many consecutive failures lock the AK
LOCK_DURATION = timedelta(minutes=5)
MAX_BODY_BYTES = 12 * 1024 * 1024  # the gateway's body limit (APIGW.0201, 413)
MAX_REQUEST_LINE_BYTES = 8192  # a longer "METHOD target HTTP/1.1" line is refused (APIGW.0201, 414)
API_NOT_FOUND = "The API does not exist or has not been published in the environment."


# -- the request log ------------------------------------------------------------------------------


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
    in_flight: int = 1
    """How many ECS/IAM requests were in flight when this one arrived, itself included (concurrency)."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data


@dataclass(slots=True)
class Exchange:
    """One request as it goes through the gateway: what the request log will say about it.

    ``operation``, ``server_ids``, ``dry_run`` and ``write`` are filled in by the operation's
    ``describe`` (handlers.py) before any check, so even a refused request is logged with them.
    """

    seq: int
    at: datetime
    request_id: str
    method: str
    path: str
    query: dict[str, str]
    in_flight: int = 1
    operation: str = "Unknown"
    server_ids: list[str] = field(default_factory=list)
    dry_run: bool = False
    write: bool = False
    """The operation changes the cloud (a dry run still counts here; ``dry_run`` says it changes nothing)."""


def error_response(error: SandboxError, request_id: str) -> Response:
    """A refusal in the real shape: flat for the gateway and IAM, ``{"error": ...}`` for ECS."""
    if error.flat:
        body: dict[str, Any] = {"error_code": error.code, "error_msg": error.message, "request_id": request_id}
    else:
        body = {"error": {"message": error.message, "code": error.code}}
    return JSONResponse(body, status_code=error.status)


def not_published() -> SandboxError:
    """No route for the method and path: the gateway's 404."""
    return gateway_error(404, "APIGW.0101", API_NOT_FOUND)


# -- signature verification -----------------------------------------------------------------------


class SignatureRejected(Exception):
    """A request whose signature does not verify; ``access_key`` is set when it could be read."""

    def __init__(self, message: str, access_key: str | None = None) -> None:
        self.access_key = access_key
        super().__init__(message)


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
    parsed = signer.parse_authorization(authorization)
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


# -- throttling and lock-out ----------------------------------------------------------------------


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


# -- the gateway ----------------------------------------------------------------------------------


class Gateway:
    """The gateway in front of one sandbox: its request log, token bucket and AK lock-outs.

    ``knobs`` is the sandbox's one :class:`Knobs` object, read at every request, so a change (also
    over ``PATCH /_sandbox/knobs``) applies from the next request on.
    """

    def __init__(self, options: SandboxOptions, knobs: Knobs, backend: SandboxBackend) -> None:
        self.options = options
        self.knobs = knobs
        self.backend = backend
        self.request_log: list[RequestRecord] = []
        self.in_flight = 0
        self._seq = 0
        self._bucket: TokenBucket | None = None
        self._failures: dict[str, _AkFailures] = {}

    def receive(self, method: str, path: str, query: dict[str, str]) -> Exchange:
        """Number, time and name (``X-Request-Id``) one ECS/IAM request as it arrives."""
        self._seq += 1
        self.in_flight += 1  # until reply(): every request that is received is answered through it
        at = self.backend.now()
        return Exchange(self._seq, at, uuid.uuid4().hex, method, path, query, self.in_flight)

    # -- fault knobs ------------------------------------------------------------------------

    async def delay(self) -> None:
        """Latency, then ``hang_next``. Called once the body is in: a hung request is still processed
        after its sleep even if the client gave up (the "answer lost, write applied" case)."""
        knobs = self.knobs
        if knobs.latency_seconds:
            await asyncio.sleep(knobs.latency_seconds)
        if knobs.hang_next > 0:
            knobs.hang_next -= 1
            await asyncio.sleep(knobs.hang_seconds)

    async def delay_write(self, exchange: Exchange) -> None:
        """``hang_next_write``: aimed at one write (not a dry run), so the reads before it answer."""
        knobs = self.knobs
        if knobs.hang_next_write > 0 and exchange.write and not exchange.dry_run:
            knobs.hang_next_write -= 1
            await asyncio.sleep(knobs.hang_seconds)

    def check_request_line(self, method: str, raw_path: str, query_string: str) -> None:
        """A request line over :data:`MAX_REQUEST_LINE_BYTES` is refused with 414 before anything else
        looks at it, as real gateways cap URI length: a client that puts 1,000 ids in one query fails here."""
        target = f"{raw_path}?{query_string}" if query_string else raw_path
        length = len(f"{method} {target} HTTP/1.1".encode("latin-1", "replace"))
        if length > MAX_REQUEST_LINE_BYTES:
            raise gateway_error(
                414, "APIGW.0201", f"Request-URI too large: the request line is {length} bytes, over 8192."
            )

    def admit(self, exchange: Exchange, body: bytes) -> None:
        """Body limit (413), throttling (429) and injected 5xx; raises :class:`SandboxError`."""
        if len(body) > MAX_BODY_BYTES:
            raise gateway_error(413, "APIGW.0201", "Request entity too large.")
        self._throttle()
        knobs = self.knobs
        if knobs.fail_next_5xx > 0:
            knobs.fail_next_5xx -= 1
            raise gateway_error(500, "APIGW.0601", "Internal server error (injected by the sandbox).")
        if exchange.write and knobs.fail_next_write_5xx > 0:
            # Aimed at writes only, so the reads around them (previews, re-reads) still succeed.
            knobs.fail_next_write_5xx -= 1
            raise gateway_error(503, "APIGW.0601", "Service unavailable (injected by the sandbox).")

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

    def authenticate(
        self, *, method: str, signed_path: str, query_string: str, headers: dict[str, str], body: bytes
    ) -> str | None:
        """Returns the token's project id for token auth, None for AK/SK; raises 401 otherwise.

        ``headers`` are keyed by lowercase name; ``signed_path`` is the path as received (undecoded).
        """
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
        now = self.backend.now()
        parsed = signer.parse_authorization(headers["authorization"])
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
                method=method,
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

    def check_project(self, path_project: str, headers: dict[str, str], token_project: str | None) -> None:
        """The project in the path (and X-Project-Id, and a scoped token) must be the caller's: else 403."""
        expected = self.options.project_id
        header_project = headers.get("x-project-id")
        if path_project != expected or (header_project is not None and header_project != expected):
            raise gateway_error(403, "APIGW.0310", "The project is unavailable: it is not the caller's project.")
        if token_project is not None and token_project != expected:
            raise gateway_error(403, "APIGW.0310", "The project is unavailable: the token is not scoped to it.")

    # -- the answer -------------------------------------------------------------------------

    def reply(self, exchange: Exchange, response: Response, error_code: str | None) -> Response:
        """Stamp the answer (``X-Request-Id``, ``Retry-After`` on 429 when set) and log the request."""
        self.in_flight -= 1
        response.headers["X-Request-Id"] = exchange.request_id
        status = response.status_code
        if status == 429 and self.knobs.retry_after_seconds is not None:
            response.headers["Retry-After"] = str(self.knobs.retry_after_seconds)
        self.request_log.append(
            RequestRecord(
                seq=exchange.seq,
                at=exchange.at,
                method=exchange.method,
                path=exchange.path,
                query=exchange.query,
                status=status,
                error_code=error_code,
                operation=exchange.operation,
                server_ids=exchange.server_ids,
                is_write=exchange.write and status < 400 and not exchange.dry_run,
                dry_run=exchange.dry_run,
                request_id=exchange.request_id,
                in_flight=exchange.in_flight,
            )
        )
        return response

    def abandon(self, exchange: Exchange) -> None:
        """A request that will get no answer (cancelled) is no longer in flight."""
        self.in_flight -= 1

    def writes(self) -> list[RequestRecord]:
        """The logged requests that changed the cloud (succeeded, not dry runs)."""
        return [record for record in self.request_log if record.is_write]
