"""Structured events and the log format: the ground floor every layer may tell what happened through.

A layer that does something worth watching (the store moving an action, the cloud client retrying)
calls :func:`emit` once. That writes one log record on the ``flexus_ops.events`` logger, whose
structured fields a JSON log keeps as fields, and hands the event to the sinks a serving process added
(the Prometheus metrics). Standard library only: this module loads with the store and the client, so
it must cost nothing at start-up.

An event's fields name what happened (tool, action id, states, operation, status, person); they never
carry arguments, previews or anything secret: callers pass only those.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

EVENTS_LOGGER = "flexus_ops.events"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

Sink = Callable[[str, dict[str, Any]], None]
_sinks: list[Sink] = []
_format = "text"
log = logging.getLogger(EVENTS_LOGGER)
_internal = logging.getLogger("flexus_ops.telemetry")


def add_sink(sink: Sink) -> None:
    """Hear every event from now on (idempotent)."""
    if sink not in _sinks:
        _sinks.append(sink)


def remove_sink(sink: Sink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def emit(
    event: str,
    /,
    level: int = logging.INFO,
    *,
    message: str | None = None,
    logger: logging.Logger | None = None,
    **fields: Any,
) -> None:
    """One event: one log record carrying ``fields`` (on ``logger``, default ``flexus_ops.events``; its
    message is ``message``, default the event and its fields as ``name=value``), and every sink told.
    Never raises: watching must not break what is watched (a transition already committed, a retry)."""
    target = logger or log
    if target.isEnabledFor(level):
        if message is None:
            shown = " ".join(f"{name}={value}" for name, value in fields.items() if value is not None)
            message = f"{event} {shown}"
        target.log(level, "%s", message, extra={"event": event, "fields": fields})
    for sink in list(_sinks):
        try:
            sink(event, fields)
        except Exception as exc:  # a metrics bug is logged, never raised into a transition
            _internal.warning("event sink failed on %s: %s: %s", event, type(exc).__name__, exc)


# -- the log format -----------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came from ``extra`` and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (UTC, ISO 8601), level, logger, message, and the record's
    structured fields (an event's ``fields`` flattened, other ``extra`` values as they are)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name in _STANDARD or name in entry:
                continue
            if name == "fields" and isinstance(value, dict):
                entry.update({key: item for key, item in value.items() if key not in entry})
            else:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z")


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so configuring again replaces it instead of adding one."""


def configure_logging(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """The root logger of a long-running command: ``level`` and ``fmt`` (text or json), on stderr
    (stdout belongs to MCP over stdio). Libraries that log request URLs or payloads stay at WARNING."""
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if fmt.lower() not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    global _format
    _format = fmt.lower()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt.lower() == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("flexus_ops", EVENTS_LOGGER):
        logging.getLogger(name).setLevel(logging.NOTSET)  # follow the root


def log_format() -> str:
    """The format ``configure_logging`` set (text until then): human banners stay out of a JSON log."""
    return _format
