"""The sandbox cloud's HTTP layer: one Starlette app serving ECS v1, IAM and admin routes on one host.

The layer is thin on purpose; it only wires the parts together for each request:

- ``routes.py`` names the operation from the method and path;
- ``gateway.py`` does what the API gateway does before an operation runs (knobs, throttling,
  authentication, project) and logs the request (``request_log``);
- ``handlers.py`` has one handler per operation, which calls
  :class:`~flexus_ops.sandbox.backend.SandboxBackend` and builds the response;
- ``admin.py`` serves ``/_sandbox/``: unsigned and not logged, for out-of-process tests.

A :class:`~flexus_ops.sandbox.backend.SandboxError` from any of them is answered in the real shape;
anything else is a sandbox bug, logged and answered as the gateway's 500.
"""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .admin import Admin
from .backend import Knobs, SandboxBackend, SandboxError, SandboxOptions, gateway_error
from .gateway import Gateway, RequestRecord, SignatureRejected, error_response, not_published, verify_signature
from .handlers import OPERATIONS, describe, run
from .routes import match_route

__all__ = ["RequestRecord", "Sandbox", "SignatureRejected", "verify_signature"]  # as imported from here before

_log = logging.getLogger(__name__)


class Sandbox:
    """The sandbox cloud: ``app`` (ASGI), ``backend`` (state), ``knobs`` and ``request_log``."""

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options or SandboxOptions()
        self.knobs = Knobs(job_seconds=self.options.job_seconds)
        self.backend = SandboxBackend(self.options, self.knobs)
        self.gateway = Gateway(self.options, self.knobs, self.backend)
        self._admin = Admin(self.options, self.backend, self.knobs, self.gateway)
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    @property
    def request_log(self) -> list[RequestRecord]:
        """Every ECS/IAM request so far, in order (the gateway keeps it)."""
        return self.gateway.request_log

    @request_log.setter
    def request_log(self, records: list[RequestRecord]) -> None:
        self.gateway.request_log = records

    def writes(self) -> list[RequestRecord]:
        return self.gateway.writes()

    def now(self) -> datetime:
        return self.backend.now()

    async def _handle(self, request: Request) -> Response:
        path: str = request.scope["path"]
        if Admin.owns(path):
            return await self._admin.handle(request, path)

        method = request.method
        query_string = request.scope.get("query_string", b"").decode("latin-1")
        query = _query_of(query_string)
        exchange = self.gateway.receive(method, path, query)
        route = match_route(method, path)
        operation = OPERATIONS.get(route.operation) if route else None
        if route is not None:
            exchange.operation = route.operation
        error_code: str | None = None
        try:
            # The body is read first, as a gateway would have received it; the knobs that slow a
            # request down come next, so a hung request is still processed after its sleep even if
            # the client gave up (the "answer lost, write applied" case clients must reconcile).
            body = await request.body()
            await self.gateway.delay()
            if route is not None and operation is not None:
                describe(exchange, operation, route.params, query, body)
            await self.gateway.delay_write(exchange)
            self.gateway.check_request_line(method, _received_path(request, path), query_string)
            if route is None or operation is None:
                raise not_published()
            self.gateway.admit(exchange, body)
            headers = {name: value for name, value in request.headers.items()}
            if operation.signed:
                token_project = self.gateway.authenticate(
                    method=method,
                    signed_path=_received_path(request, path),
                    query_string=query_string,
                    headers=headers,
                    body=body,
                )
                if "pid" in route.params:
                    self.gateway.check_project(route.params["pid"], headers, token_project)
            response = run(
                operation,
                self.backend,
                params=route.params,
                query=query,
                body=body,
                base_url=str(request.base_url),
            )
        except SandboxError as error:
            error_code = error.code
            response = error_response(error, exchange.request_id)
        except Exception:  # answer like a gateway would rather than drop the connection, but log the bug
            _log.exception("sandbox bug while handling %s %s", method, path)
            error_code = "APIGW.0601"
            response = error_response(gateway_error(500, error_code, "Internal server error."), exchange.request_id)
        except BaseException:  # cancelled (the client went away): no answer, but no longer in flight
            self.gateway.abandon(exchange)
            raise
        return self.gateway.reply(exchange, response, error_code)


REPEATABLE_QUERY_KEYS = frozenset({"server_id"})
"""Keys the API takes more than once (``server_id=a&server_id=b``), joined as the comma form."""


def _query_of(query_string: str) -> dict[str, str]:
    """The query as one value per key: a repeated ``server_id`` is joined with commas (the two forms the
    reference documents mean the same); any other repeated key keeps its last value."""
    query: dict[str, str] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        if key in REPEATABLE_QUERY_KEYS and query.get(key):
            query[key] = f"{query[key]},{value}"
        else:
            query[key] = value
    return query


def _received_path(request: Request, path: str) -> str:
    """The path as the client sent (and signed) it, undecoded and without the query."""
    raw_path = request.scope.get("raw_path")
    # httpx's ASGITransport puts the query inside raw_path; uvicorn does not.
    return raw_path.decode("utf-8", "replace").split("?", 1)[0] if raw_path else path
