"""The exception hierarchy of the cloud client.

``FlexusError``
 - ``InvalidInput``: refused before anything was sent; names the field and the rule.
 - ``ConfigurationError``: the settings cannot work (e.g. an endpoint without credentials).
 - ``CloudError``: the cloud answered with an error (status, code, message, request id).
   ``AuthenticationError`` 401, ``PermissionDenied`` 403, ``NotFound`` 404, ``Throttled`` 429,
   ``BadRequest`` other 4xx, ``ServiceError`` 5xx.
 - ``TransportError``: no answer (connection refused, timeout). ``may_have_applied`` tells whether
   a write could have reached the cloud, so callers reconcile instead of re-sending blindly.
 - ``JobTimeout``: a job did not finish in the time allowed.
 - ``StoreError``: the gate's store (database, state dir) failed; says which, why and what to do.
 - ``OutcomeUnknown``: a change was sent but its outcome is not known (a lost answer, a store that
   failed after sending); it is settled by observation later, never re-sent.

Every message is one line a person can act on: the component, the cause, the next step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only the client, which imports httpx itself, builds errors from responses
    import httpx

MAX_MESSAGE_CHARS = 500


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Never echo an unbounded input back (a megabyte name must not become a megabyte error)."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


class FlexusError(Exception):
    """Base of every error raised by flexus-ops."""


class InvalidInput(FlexusError, ValueError):
    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = bounded(rule, 300)
        super().__init__(f"{field}: {self.rule}")


class ConfigurationError(FlexusError):
    pass


class CloudError(FlexusError):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = bounded(message)
        self.request_id = request_id
        self.details = details or []
        where = f" (request {request_id})" if request_id else ""
        super().__init__(f"{status} {code}: {self.message}{where}")

    @property
    def is_throttling(self) -> bool:
        return self.status == 429


class BadRequest(CloudError):
    pass


class AuthenticationError(CloudError):
    pass


class PermissionDenied(CloudError):
    pass


class NotFound(CloudError):
    pass


class Throttled(CloudError):
    pass


class ServiceError(CloudError):
    pass


class TransportError(FlexusError):
    def __init__(self, message: str, *, may_have_applied: bool) -> None:
        self.may_have_applied = may_have_applied
        suffix = (
            " The request may have been applied; check the server state before retrying." if (may_have_applied) else ""
        )
        super().__init__(bounded(message) + suffix)


class JobTimeout(FlexusError):
    def __init__(self, job_id: str, waited_seconds: float, last_status: str | None) -> None:
        self.job_id = job_id
        self.last_status = last_status
        super().__init__(
            f"job {job_id} still {last_status or 'unknown'} after {waited_seconds:.0f}s; "
            "it keeps running in the cloud: query it again with show_job"
        )


class StoreError(FlexusError):
    """The store could not be used: unreachable, locked, read-only, timed out, or a bad state dir."""

    def __init__(self, cause: str, next_step: str) -> None:
        self.cause = bounded(cause, 300)
        super().__init__(f"store: {self.cause}; {next_step}")


class OutcomeUnknown(FlexusError):
    """A change was sent to the cloud but whether it applied is not known yet. Never retry it blindly:
    it is settled by observation (the job, or the servers' state), then recorded as applied or not."""

    def __init__(self, message: str, action_id: str | None = None) -> None:
        self.action_id = action_id
        super().__init__(bounded(message))


def _find_code(payload: Any) -> tuple[str | None, str | None, list[dict[str, Any]]]:
    """The official SDK's parsing order: flat gateway keys first, then nested objects."""
    if not isinstance(payload, dict):
        return None, None, []
    for code_key, msg_key in (("error_code", "error_msg"), ("errorCode", "errorMsg"), ("code", "message")):
        if isinstance(payload.get(code_key), str):
            details = payload.get("details")
            return payload[code_key], payload.get(msg_key), details if isinstance(details, list) else []
    for value in payload.values():
        if isinstance(value, dict):
            found = _find_code(value)
            if found[0] is not None:
                return found
    return None, None, []


_BY_STATUS: dict[int, type[CloudError]] = {
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    429: Throttled,
}


def error_from_response(response: httpx.Response) -> CloudError:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    code, message, details = _find_code(payload)
    request_id = response.headers.get("X-Request-Id")
    if request_id is None and isinstance(payload, dict) and isinstance(payload.get("request_id"), str):
        request_id = payload["request_id"]
    status = response.status_code
    if status >= 500:
        cls: type[CloudError] = ServiceError
    else:
        cls = _BY_STATUS.get(status, BadRequest)
    return cls(
        status,
        code or str(status),
        message or response.reason_phrase or "error",
        request_id,
        details,
    )
