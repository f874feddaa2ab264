"""Who hears about cloud retries, kept apart from the client so surfaces can listen without loading it; and
what each request and retry tells the metrics and the log (by operation name, never by path)."""

from __future__ import annotations

import email.utils
import logging
import re
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from ..core.telemetry import emit

log = logging.getLogger("flexus_ops.cloud")

# Set by a surface for the duration of one tool call (the MCP server sends a log notification); the
# client also writes a log record for every retry, which the CLI shows on stderr.
retry_listener: ContextVar[Callable[[str], Awaitable[None]] | None] = ContextVar("retry_listener", default=None)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds or as an HTTP date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# -- what the client tells the metrics and the log --------------------------------------------------

# The operation a request is, by the official SDK's names: bounded metric labels, never a path (paths
# hold server, job and project ids). One table, the client's side of the sandbox's route table.
_OPERATIONS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("GET", re.compile(r"^/v1/[^/]+/cloudservers/detail$"), "ListServersDetails"),
    ("GET", re.compile(r"^/v1/[^/]+/cloudservers/[^/]+$"), "ShowServer"),
    ("PUT", re.compile(r"^/v1/[^/]+/cloudservers/os-reset-passwords$"), "BatchResetServersPassword"),
    ("PUT", re.compile(r"^/v1/[^/]+/cloudservers/[^/]+$"), "UpdateServer"),
    ("POST", re.compile(r"^/v1/[^/]+/cloudservers/action$"), "BatchAction"),
    ("GET", re.compile(r"^/v1/[^/]+/jobs/[^/]+$"), "ShowJob"),
    ("POST", re.compile(r"^/v3/auth/tokens$"), "KeystoneCreateUserTokenByPassword"),
    ("GET", re.compile(r"^/v3/projects$"), "KeystoneListProjects"),
)
# One route, three operations: the body's first key says which (os-start, os-stop, reboot).
_BATCH_ACTIONS = {"os-start": "BatchStartServers", "os-stop": "BatchStopServers", "reboot": "BatchRebootServers"}


def operation_name(method: str, path: str, body: dict[str, Any] | None = None) -> str:
    """``ShowServer``, ``BatchStopServers``, ...; ``other`` for a path no table row names."""
    for row_method, pattern, name in _OPERATIONS:
        if row_method == method and pattern.match(path):
            if name == "BatchAction":
                key = next(iter(body), "") if body else ""
                return _BATCH_ACTIONS.get(key, "BatchAction")
            return name
    return "other"


def observe_request(operation: str, status: int | str, seconds: float) -> None:
    """One try of a cloud request: its operation, its HTTP status (or ``error`` when no answer came)."""
    emit("cloud.request", level=logging.DEBUG, operation=operation, status=str(status), seconds=round(seconds, 4))


def observe_retry(
    operation: str, status: int | str, wait: float, attempt: int, retry_after: float | None, notice: str
) -> None:
    """A retry about to wait: the client's one warning for it (``cloud retry: <notice>``, which the CLI
    shows on stderr), with its fields; a 429 is a throttle (the gateway refused before processing)."""
    emit(
        "cloud.throttled" if str(status) == "429" else "cloud.retry",
        logging.WARNING,
        message=f"cloud retry: {notice}",
        logger=log,
        operation=operation,
        status=str(status),
        attempt=attempt,
        wait_seconds=round(wait, 2),
        retry_after=retry_after,
    )
