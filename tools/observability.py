"""What an orchestrator and a monitoring system see of a serving process: liveness, readiness with a
one-word reason, Prometheus metrics, a small probe server for the Socket Mode bot (which has no HTTP
server of its own), and OpenTelemetry tracing when asked for.

None of it needs credentials, so none of it may say anything about the fleet or the people: the probes
answer a status word, and every metric label is from a closed set (tool names of the catalog, ECS
operation names, action states, HTTP status codes); anything else is counted as ``other``.

Metrics are fed by the events of ``core.telemetry`` (the store's transitions, the client's requests and
retries) and by the MCP tool-call middleware here. Each process has its own ``CollectorRegistry``
(``process_metrics()``), never prometheus_client's global one: every replica is scraped on its own, and
tests make their own ``Metrics`` so nothing leaks between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

from .core.errors import ConfigurationError
from .core.states import ActionState
from .core.telemetry import add_sink, emit, remove_sink
from .registry.catalog import TOOLS

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from .registry.registry import Registry
    from .serving import Drain

log = logging.getLogger("flexus_ops.observability")
OTHER = "other"
OPERATIONS = frozenset(
    {
        "ListServersDetails",
        "ShowServer",
        "BatchResetServersPassword",
        "UpdateServer",
        "BatchStartServers",
        "BatchStopServers",
        "BatchRebootServers",
        "BatchAction",
        "ShowJob",
        "KeystoneCreateUserTokenByPassword",
        "KeystoneListProjects",
    }
)
STATES = frozenset({*(str(state) for state in ActionState), "none"})
# Cloud calls take from milliseconds (the embedded sandbox) to the 30 s timeout; tool calls up to a job's wait.
CLOUD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOOL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


def _bounded(value: Any, allowed: Iterable[str]) -> str:
    text = str(value) if value is not None else ""
    return text if text in allowed else OTHER


def _status(value: Any) -> str:
    text = str(value)
    return text if text == "error" or (len(text) == 3 and text.isdigit()) else OTHER


class Metrics:
    """The process's Prometheus metrics; a sink for ``core.telemetry`` events (``attach``)."""

    def __init__(self, tool_names: Iterable[str] | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: start times say nothing a scrape needs

        self.tools = frozenset(tool_names if tool_names is not None else (spec.name for spec in TOOLS))
        self.registry = CollectorRegistry()
        r = self.registry
        self.transitions = Counter(
            "flexus_gate_transitions",
            "Gate state changes, by tool and state",
            ["tool", "from_state", "to_state"],
            registry=r,
        )
        self.cloud_requests = Counter(
            "flexus_cloud_requests",
            "Cloud API tries, by operation and HTTP status (error: no answer)",
            ["operation", "status"],
            registry=r,
        )
        self.cloud_seconds = Histogram(
            "flexus_cloud_request_duration_seconds",
            "Cloud API try latency, by operation",
            ["operation"],
            buckets=CLOUD_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "flexus_cloud_retries",
            "Cloud API retries (throttles included), by operation and status",
            ["operation", "status"],
            registry=r,
        )
        self.throttles = Counter(
            "flexus_cloud_throttles",
            "Cloud API requests refused with 429, retried, by operation",
            ["operation"],
            registry=r,
        )
        self.tool_calls = Counter(
            "flexus_mcp_tool_calls", "MCP tool calls, by tool and outcome (ok, error)", ["tool", "outcome"], registry=r
        )
        self.tool_seconds = Histogram(
            "flexus_mcp_tool_call_duration_seconds",
            "MCP tool call latency, by tool",
            ["tool"],
            buckets=TOOL_BUCKETS,
            registry=r,
        )

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        if event == "gate.transition":
            self.transitions.labels(
                _bounded(fields.get("tool"), self.tools),
                _bounded(fields.get("from_state"), STATES),
                _bounded(fields.get("to_state"), STATES),
            ).inc()
        elif event == "cloud.request":
            operation = _bounded(fields.get("operation"), OPERATIONS)
            self.cloud_requests.labels(operation, _status(fields.get("status"))).inc()
            self.cloud_seconds.labels(operation).observe(float(fields.get("seconds") or 0.0))
        elif event in ("cloud.retry", "cloud.throttled"):
            operation = _bounded(fields.get("operation"), OPERATIONS)
            self.retries.labels(operation, _status(fields.get("status"))).inc()
            if event == "cloud.throttled":
                self.throttles.labels(operation).inc()
        elif event == "mcp.tool_call":
            tool = _bounded(fields.get("tool"), self.tools)
            outcome = "ok" if fields.get("outcome") == "ok" else "error"
            self.tool_calls.labels(tool, outcome).inc()
            self.tool_seconds.labels(tool).observe(float(fields.get("seconds") or 0.0))

    def attach(self) -> Metrics:
        add_sink(self)
        return self

    def detach(self) -> None:
        remove_sink(self)

    def exposition(self) -> tuple[bytes, str]:
        """The text format Prometheus scrapes, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_process_metrics: Metrics | None = None


def process_metrics() -> Metrics:
    """This process's metrics, made and attached on first use (a serving surface asks; a CLI command never)."""
    global _process_metrics
    if _process_metrics is None:
        _process_metrics = Metrics().attach()
    return _process_metrics


# -- probes ---------------------------------------------------------------------------------------


async def not_ready_because(registry: Registry, drain: Drain | None = None) -> str | None:
    """None when ready, else one word (see ``Registry.not_ready_because``; ``draining`` once ``drain`` is)."""
    if drain is not None and drain.draining:
        return "draining"
    return await registry.not_ready_because()


class Probes:
    """``GET /healthz`` (the process answers), ``GET /readyz`` (it can serve: 503 with a reason word) and
    ``GET /metrics`` (Prometheus text), as Starlette endpoints any surface mounts."""

    PATHS = ("/healthz", "/readyz", "/metrics")

    def __init__(self, registry: Registry, drain: Drain | None = None, metrics: Metrics | None = None) -> None:
        self.registry = registry
        self.drain = drain
        self.metrics = metrics or process_metrics()

    async def healthz(self, _request: Request) -> Response:
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok"})

    async def readyz(self, _request: Request) -> Response:
        from starlette.responses import JSONResponse

        reason = await not_ready_because(self.registry, self.drain)
        return JSONResponse({"status": reason or "ready"}, status_code=503 if reason else 200)

    async def metrics_endpoint(self, _request: Request) -> Response:
        from starlette.responses import Response

        body, content_type = self.metrics.exposition()
        return Response(body, media_type=content_type)

    def endpoints(self) -> list[tuple[str, Callable[[Request], Any]]]:
        return [("/healthz", self.healthz), ("/readyz", self.readyz), ("/metrics", self.metrics_endpoint)]

    def routes(self) -> list[Route]:
        from starlette.routing import Route

        return [Route(path, endpoint, methods=["GET"]) for path, endpoint in self.endpoints()]


class ToolCallMetrics:
    """MCP server middleware (the SDK's ``ServerMiddleware``): one ``mcp.tool_call`` event per
    ``tools/call``, with the tool's name, its outcome and its latency."""

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        name = ctx.params.get("name") if isinstance(ctx.params, dict) else None
        started, outcome = time.perf_counter(), "error"
        try:
            result = await call_next(ctx)
            failed = getattr(result, "is_error", False) or (isinstance(result, dict) and result.get("isError") is True)
            outcome = "error" if failed else "ok"
            return result
        finally:
            seconds = round(time.perf_counter() - started, 4)
            emit("mcp.tool_call", logging.DEBUG, tool=name, outcome=outcome, seconds=seconds)


# -- a probe server for the Socket Mode bot --------------------------------------------------------


class ProbeServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` on their own port, served by uvicorn on the caller's
    event loop. It leaves the process's signals to its owner (the bot stops it when it stops)."""

    def __init__(self, probes: Probes, host: str, port: int) -> None:
        import uvicorn
        from starlette.applications import Starlette

        class QuietServer(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None]:
                yield  # the bot's own handlers stay in place

        config = uvicorn.Config(
            Starlette(routes=probes.routes()),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self.server = QuietServer(config)
        self.host, self.port = host, port
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listening when this returns; a port that cannot be taken is a ConfigurationError."""
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                with contextlib.suppress(BaseException):
                    self._task.result()
                raise ConfigurationError(f"cannot listen on {self.host}:{self.port} for --health-port")
            await asyncio.sleep(0.01)

    @property
    def bound_port(self) -> int:
        """The port really bound (``port=0`` picks a free one, as tests do)."""
        for server in getattr(self.server, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await self._task


# -- OpenTelemetry -----------------------------------------------------------------------------------


def otel_requested(environ: dict[str, str] | None = None) -> bool:
    """``FLEXUS_OTEL=1``, or an OTLP endpoint in the standard variables (unless ``OTEL_SDK_DISABLED``)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return env.get("FLEXUS_OTEL") == "1" or any(
        env.get(name) for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def setup_otel(span_processor: Any = None) -> bool:
    """Export traces: the MCP SDK's own spans (it makes one per request through opentelemetry-api, which
    stay no-ops until a tracer provider is set) and a span per httpx request (the cloud client's calls).
    ``span_processor`` defaults to batching to OTLP over HTTP, configured by the standard ``OTEL_*``
    variables. False (with a warning) when the ``[otel]`` extra is not installed."""
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        log.warning("tracing was asked for, but the [otel] extra is not installed: pip install 'flexus-ops[otel]'")
        return False
    if span_processor is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        span_processor = BatchSpanProcessor(OTLPSpanExporter())
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "flexus-ops")})
    )
    provider.add_span_processor(span_processor)
    trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument()
    return True
