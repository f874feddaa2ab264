"""Errors from the cloud's answers: the official SDK's parsing order, mapped onto our hierarchy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.errors import (
    AuthenticationError,
    BadRequest,
    CloudError,
    NotFound,
    PermissionDenied,
    ServiceError,
    Throttled,
)

if TYPE_CHECKING:  # only the client, which imports httpx itself, builds errors from responses
    import httpx


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
