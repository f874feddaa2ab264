"""The sandbox's own control plane under ``/_sandbox/``: for tests that run it in another process.

No real cloud has these routes, so they go around the gateway: unsigned, never throttled or failed
by the knobs, and never in the request log. That is also why ``flexus-ops sim`` binds to loopback
unless told otherwise (server.py).

- ``GET /_sandbox/health``: up, fleet size, region, project and AK (the AK is published anyway);
- ``GET`` / ``DELETE /_sandbox/requests``: read or clear the request log;
- ``GET`` / ``PATCH /_sandbox/knobs``: read or change the fault knobs (the whole result is validated
  before anything changes);
- ``GET /_sandbox/servers/{id}``: a server as ShowServer renders it, plus its password-reset count.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .backend import Knobs, SandboxBackend, SandboxError, SandboxOptions
from .gateway import Gateway, error_response
from .handlers import lenient_json

PREFIX = "/_sandbox"
SERVERS_PREFIX = "/_sandbox/servers/"

AdminHandler = Callable[[Request], Awaitable[Response]]


class Admin:
    """The ``/_sandbox/`` routes of one sandbox."""

    def __init__(self, options: SandboxOptions, backend: SandboxBackend, knobs: Knobs, gateway: Gateway) -> None:
        self.options = options
        self.backend = backend
        self.knobs = knobs
        self.gateway = gateway
        self._routes: dict[tuple[str, str], AdminHandler] = {
            ("GET", "/_sandbox/health"): self._health,
            ("GET", "/_sandbox/requests"): self._requests,
            ("DELETE", "/_sandbox/requests"): self._clear_requests,
            ("GET", "/_sandbox/knobs"): self._knobs,
            ("PATCH", "/_sandbox/knobs"): self._patch_knobs,
        }

    @staticmethod
    def owns(path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    async def handle(self, request: Request, path: str) -> Response:
        method = request.method
        route = self._routes.get((method, path))
        if route is not None:
            return await route(request)
        if path.startswith(SERVERS_PREFIX) and method == "GET":
            return self._server(path.removeprefix(SERVERS_PREFIX))
        return JSONResponse({"error_code": "APIGW.0101", "error_msg": "No such sandbox admin route."}, 404)

    async def _health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "servers": len(self.backend.servers),
                "region": self.options.region,
                "project_id": self.options.project_id,
                "access_key": self.options.access_key,
            }
        )

    async def _requests(self, request: Request) -> Response:
        return JSONResponse([record.to_json() for record in self.gateway.request_log])

    async def _clear_requests(self, request: Request) -> Response:
        cleared = len(self.gateway.request_log)
        self.gateway.request_log.clear()
        return JSONResponse({"cleared": cleared})

    async def _knobs(self, request: Request) -> Response:
        return JSONResponse(self._knobs_json())

    async def _patch_knobs(self, request: Request) -> Response:
        patch = lenient_json(await request.body())
        if not isinstance(patch, dict):
            return JSONResponse({"error_code": "Ecs.0005", "error_msg": "Send a JSON object of knob fields."}, 400)
        try:
            # Validate the whole result first, then mutate in place: the backend and gateway hold this object.
            merged = Knobs.model_validate({**self.knobs.model_dump(), **patch})
        except ValidationError as error:
            message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            return JSONResponse({"error_code": "Ecs.0005", "error_msg": message[:500]}, 400)
        for name in patch:
            setattr(self.knobs, name, getattr(merged, name))
        return JSONResponse(self._knobs_json())

    def _knobs_json(self) -> dict[str, Any]:
        data = self.knobs.model_dump(mode="json")
        data["failing_server_ids"] = sorted(self.knobs.failing_server_ids)
        return data

    def _server(self, server_id: str) -> Response:
        try:
            detail = self.backend.server_view(server_id)
        except SandboxError as error:
            return error_response(error, uuid.uuid4().hex)
        state = self.backend.servers[server_id]
        reset_at = state.password_reset_at.isoformat() if state.password_reset_at else None
        return JSONResponse({"server": detail, "password_resets": state.password_resets, "password_reset_at": reset_at})
