"""Who hears about cloud retries, kept apart from the client so surfaces can listen without loading it."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

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
