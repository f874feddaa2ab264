"""Serving HTTP surfaces (MCP over HTTP, the Slack bot's HTTP mode) the way an orchestrator expects: health
and readiness probes that need no credentials, and a graceful stop. On SIGTERM readiness turns false at
once, new requests are turned away, the ones in flight may finish for a grace period, then the process
exits 128 + the signal; anything still in flight is left in the store for settling. A rollout in waves that
this process runs in the background sends no further wave from the first signal on (``on_drain``), and
records where it stopped when the registry closes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from .registry.registry import Registry

HEALTH_PATHS = ("/healthz", "/readyz", "/metrics")  # answered while draining too


@dataclass
class Drain:
    """A graceful stop, shared by the app and the server: once ``draining``, readiness answers 503 (a load
    balancer sends new work elsewhere), new MCP requests get 503, and the ``in_flight`` ones may finish.
    Plain fields: everything that touches them runs on the one event loop."""

    draining: bool = False
    in_flight: int = 0
    on_drain: list[Callable[[], object]] = field(default_factory=list)
    """Called once when draining starts (``Registry.start_draining``: rollouts send no further wave)."""
    pending: list[Callable[[], int]] = field(default_factory=list)
    """Work in flight besides the requests, that a stop also waits for (the Slack bot's answers, which
    run after their ack)."""

    def busy(self) -> int:
        """Requests in flight plus the ``pending`` work: the stop waits for 0 (or the grace period)."""
        return self.in_flight + sum(count() for count in self.pending)

    def start(self) -> None:
        if self.draining:
            return
        self.draining = True
        for callback in self.on_drain:
            callback()


class Draining:
    """Counts MCP requests in flight and turns new ones away while draining; health probes always pass."""

    def __init__(self, app: Any, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            # Read the request first: a reply that closes the connection with the body still unread reaches
            # the client as a reset, not as this 503, and it would not know to retry.
            await _read_body(receive)
            # Stateless transport: the client's retry lands on another replica and carries on there.
            body = b'{"error": "draining", "error_description": "this server is stopping; retry"}'
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.in_flight -= 1


async def _read_body(receive: Any, limit: int = 1 << 20) -> None:
    """Read (and drop) a request's body, up to ``limit`` bytes: an MCP request is far smaller."""
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class DrainingServer(uvicorn.Server):
    """uvicorn, stopping gracefully. uvicorn on its own closes the listening socket at the first signal, so
    a probe could no longer hear "not ready"; here the first SIGTERM/SIGINT only starts draining, the
    server keeps listening until the calls in flight (and the drain's ``pending`` work) are done or
    ``grace_seconds`` pass, then stops. A second signal stops at once. ``exit_code`` is 128 + the first
    signal (0 if none came)."""

    def __init__(self, config: uvicorn.Config, drain: Drain, grace_seconds: float) -> None:
        config.timeout_graceful_shutdown = 2  # the grace was spent draining; this bounds the last goodbyes
        super().__init__(config)
        self.drain = drain
        self.grace_seconds = grace_seconds
        self.stopped_by: int | None = None
        self._deadline = float("inf")

    @property
    def exit_code(self) -> int:
        return 0 if self.stopped_by is None else 128 + self.stopped_by

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Called as the signal handler. Not recorded in uvicorn's _captured_signals: uvicorn would raise the
        # signal again after stopping, and the CLI returns exit_code itself.
        if self.stopped_by is not None:
            self.should_exit = self.force_exit = True
            return
        self.stopped_by = sig
        self.drain.start()
        self._deadline = time.monotonic() + self.grace_seconds
        # A bound on the whole stop, in case a shutdown step hangs: the store keeps what was in flight.
        watchdog = threading.Timer(self.grace_seconds + 10, os._exit, (self.exit_code,))
        watchdog.daemon = True
        watchdog.start()

    async def on_tick(self, counter: int) -> bool:
        if self.stopped_by is not None and (self.drain.busy() == 0 or time.monotonic() >= self._deadline):
            self.should_exit = True
        return await super().on_tick(counter)


def announce_start(registry: Registry, surface: str, mode: str, listen: str) -> None:
    """The start-up line of a long-running surface (a log record, so JSON too): where, how, against what
    and with which kind of store; never a secret."""
    from . import __version__
    from .core.telemetry import emit

    settings = registry.settings
    emit(
        "started",
        message=f"flexus-ops {surface} ({mode}) listening on {listen}; cloud: {settings.target_summary()}; "
        f"store: {settings.store_kind}",
        surface=surface,
        mode=mode,
        listen=listen,
        target=settings.target_summary(),
        store=settings.store_kind,
        version=__version__,
    )
