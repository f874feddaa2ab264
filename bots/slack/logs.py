"""Logging for the Slack surface: bolt and slack_sdk must never write a payload that could hold a password.

Both libraries log raw payloads: slack_sdk's Web API and webhook clients log request bodies at DEBUG
(a modal with a generated password, every message we send), the Socket Mode client logs every frame
it receives (a ``view_submission`` with the typed password), and bolt logs the whole body at INFO
when a signature check fails, or when a request is unhandled. So:

- the libraries' loggers default to WARNING, and
- every one of their loggers (and the base logger handed to bolt, which bolt copies onto each logger
  it creates) gets a filter that cuts a record's message where a payload starts. That holds even
  when someone turns DEBUG on for them while chasing a problem.
"""

from __future__ import annotations

import logging
import re

from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

LIBRARIES = ("slack_bolt", "slack_sdk")
# Loggers the libraries create only when first used (per client instance), so a sweep at start-up
# would miss them: the webhook client behind every respond(), the Socket Mode clients.
LAZY_LOGGERS = (
    "slack_sdk.webhook.async_client",
    "slack_sdk.web.async_base_client",
    "slack_sdk.socket_mode.aiohttp",
    "slack_sdk.socket_mode.async_client",
    "slack_sdk.socket_mode.websockets",
)
BASE_LOGGER = "flexus_ops.bots.slack"  # handed to bolt, the Web API client and the Socket Mode client

# Where a payload starts in the libraries' messages: "body: ...", "data: ...", "json_body: ...",
# "query_params: ...", dict or list reprs, form bodies ("payload=...").
_PAYLOAD = re.compile(
    r"body|data|params|payload|headers|signature|json|state|values|view|blocks|text|[{\[]|=", re.IGNORECASE
)
REDACTED = "[payload redacted by flexus-ops]"
# bolt reads SLACK_BOT_TOKEN from the environment itself and warns that the client we hand it wins; it
# is the same token, so the warning only confuses whoever reads the log.
_NOISE = frozenset({warning_client_prioritized_and_token_skipped()})


class RedactSlackPayloads(logging.Filter):
    """Keeps what happened, drops what was in it (and one misleading warning)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: keep nothing of its arguments
            message = str(record.msg)
        if message in _NOISE:
            return False
        if message.endswith(REDACTED):
            return True
        found = _PAYLOAD.search(message)
        if found is not None:
            record.msg = f"{message[: found.start()].rstrip(' ,:(-')} {REDACTED}".lstrip()
            record.args = None
        return True


_FILTER = RedactSlackPayloads()


def _guard(logger: logging.Logger) -> None:
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def guard_slack_loggers(level: int = logging.WARNING) -> logging.Logger:
    """Pin the libraries' loggers to ``level`` (WARNING unless a caller asks for more), put the filter
    on every one of them that exists now, and return the base logger for bolt and slack_sdk. Call it
    again after creating objects that make new loggers (the Socket Mode handler)."""
    base = logging.getLogger(BASE_LOGGER)
    base.setLevel(level)
    _guard(base)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(level)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and (name.startswith((*LIBRARIES, "flexus-ops"))):
            _guard(logger)
    for name in (*LIBRARIES, *LAZY_LOGGERS):
        _guard(logging.getLogger(name))
    return base
