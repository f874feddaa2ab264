"""One small handler per ECS/IAM operation: a parsed request in, one backend call, a response out.

As in moto's ``responses.py``, the handlers hold no state and check only the request's *shape*
(unknown fields, wrong types: 400 Ecs.0005, or IAM.0001 for a token request); every rule about the
cloud's state is the backend's. The HTTP layer looks an operation up by the name the route table
gives (``OPERATIONS``), so adding one is a route, a handler and an entry here, never a new branch
elsewhere.

An operation also says how the request log describes it (``describe``): which servers it names,
whether it is a dry run, and, for ``POST .../action``, which of the three power operations the body
asks for. That runs before any gateway check, on a lenient parse, so a refused request is still
logged with what it tried to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from .backend import SandboxBackend, SandboxError, ecs_error, gateway_error
from .gateway import Exchange

WRITE_OPERATIONS = frozenset(
    {
        "BatchStartServers",
        "BatchStopServers",
        "BatchRebootServers",
        "BatchResetServersPassword",
        "UpdateServer",
    }
)
"""The operations, as logged, that change the cloud: ``fail_next_write_5xx`` and ``hang_next_write``
aim at them, and ``Sandbox.writes()`` lists them."""


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a handler sees it, after the gateway let it through."""

    backend: SandboxBackend
    params: Mapping[str, str]
    """From the path: ``pid``, ``server_id``, ``job_id``."""
    query: Mapping[str, str]
    body: Any
    """The parsed JSON body for operations that take one, else None."""
    base_url: str


Handler = Callable[[Call], Response]
Describer = Callable[[Exchange, Mapping[str, str], bytes], None]
"""Fills the log's view of a request from its query and raw body (never raises)."""


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    handle: Handler
    takes_body: bool = False
    """A JSON body is required (400 Ecs.0005 when missing or not JSON)."""
    signed: bool = True
    """False for the one call made before there is anything to sign with: the token request."""
    describe: Describer | None = None


# -- body parsing -------------------------------------------------------------------------------


def _parse_json(body: bytes) -> Any:
    """The parsed, non-empty body, or raises 400 Ecs.0005."""
    if not body.strip():
        raise ecs_error(400, "Ecs.0005", "The request body is required.")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ecs_error(400, "Ecs.0005", "The request body is not valid JSON.") from None


def lenient_json(body: bytes) -> Any:
    """The parsed body, or None when empty or not JSON (for describing, never for acting)."""
    try:
        return json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError):
        return None


def _ids_of(servers: Any) -> list[str]:
    if not isinstance(servers, list):
        return []
    return [item["id"] for item in servers if isinstance(item, dict) and isinstance(item.get("id"), str)]


def _server_list(container: dict[str, Any], where: str) -> list[str]:
    servers = container.get("servers")
    if servers is None:
        raise ecs_error(400, "Ecs.0005", f"{where}.servers: is required")
    if not isinstance(servers, list):
        raise ecs_error(400, "Ecs.0005", f'{where}.servers: must be a list of {{"id": ...}}')
    ids: list[str] = []
    for index, item in enumerate(servers):
        if not isinstance(item, dict) or set(item) != {"id"} or not isinstance(item["id"], str):
            raise ecs_error(400, "Ecs.0005", f'{where}.servers[{index}]: must be {{"id": "<server id>"}}')
        ids.append(item["id"])
    return ids


def _require_object(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ecs_error(400, "Ecs.0005", f"{where}: must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ecs_error(400, "Ecs.0005", f"{where}.{str(unknown[0])[:64]}: unknown field")
    return value


# -- ECS reads ----------------------------------------------------------------------------------


def show_server(call: Call) -> Response:
    return JSONResponse(call.backend.show_server(call.params["server_id"]))


def list_servers_details(call: Call) -> Response:
    return JSONResponse(call.backend.list_servers(call.query))


def _describe_list(exchange: Exchange, query: Mapping[str, str], body: bytes) -> None:
    if query.get("server_id"):
        exchange.server_ids = [part.strip() for part in query["server_id"].split(",") if part.strip()]


def show_job(call: Call) -> Response:
    return JSONResponse(call.backend.show_job(call.params["job_id"]))


# -- ECS writes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PowerBody:
    """One of the three bodies ``POST .../cloudservers/action`` takes."""

    operation: str
    """The operation as logged (the SDK's name for it)."""
    action: str
    """The backend's power action."""
    takes_type: bool
    needs_type: bool


POWER_BODIES: dict[str, PowerBody] = {
    "os-start": PowerBody("BatchStartServers", "start", takes_type=False, needs_type=False),
    "os-stop": PowerBody("BatchStopServers", "stop", takes_type=True, needs_type=False),
    "reboot": PowerBody("BatchRebootServers", "reboot", takes_type=True, needs_type=True),
}


def batch_action(call: Call) -> Response:
    """BatchStartServers, BatchStopServers or BatchRebootServers: one job over up to 1000 servers."""
    parsed = call.body
    if not isinstance(parsed, dict) or len(parsed) != 1 or next(iter(parsed)) not in POWER_BODIES:
        raise ecs_error(400, "Ecs.0005", "The body must have exactly one of os-start, os-stop, reboot.")
    key, inner = next(iter(parsed.items()))
    kind = POWER_BODIES[key]
    inner = _require_object(inner, key, {"servers", "type"} if kind.takes_type else {"servers"})
    power_type = inner.get("type")
    if kind.needs_type and power_type is None:
        raise ecs_error(400, "Ecs.0005", f"{key}.type: is required (SOFT or HARD)")
    if power_type is not None and not isinstance(power_type, str):
        raise ecs_error(400, "Ecs.0005", f"{key}.type: must be SOFT or HARD")
    ids = _server_list(inner, key)
    # A required type goes as given (the backend refuses an empty one); an optional one defaults to SOFT.
    chosen = power_type if kind.needs_type else power_type or "SOFT"
    return JSONResponse({"job_id": call.backend.power_action(kind.action, ids, chosen)})


def _describe_batch(exchange: Exchange, query: Mapping[str, str], body: bytes) -> None:
    parsed = lenient_json(body)
    if not isinstance(parsed, dict):
        exchange.operation = "Unknown"
        return
    keys = [key for key in parsed if key in POWER_BODIES]
    if len(keys) != 1:
        exchange.operation, exchange.server_ids = "Unknown", []
        return
    exchange.operation = POWER_BODIES[keys[0]].operation
    inner = parsed.get(keys[0])
    exchange.server_ids = _ids_of(inner.get("servers")) if isinstance(inner, dict) else []


def batch_reset_servers_password(call: Call) -> Response:
    request_body = _require_object(call.body, "body", {"new_password", "dry_run", "servers"})
    password = request_body.get("new_password")
    dry_run = request_body.get("dry_run", False)
    if password is not None and not isinstance(password, str):
        raise ecs_error(400, "Ecs.0005", "new_password: must be a string")
    if not isinstance(dry_run, bool):
        raise ecs_error(400, "Ecs.0005", "dry_run: must be true or false")
    ids = _server_list(request_body, "body")
    return JSONResponse(call.backend.reset_passwords(ids, password, dry_run=dry_run))


def _describe_reset(exchange: Exchange, query: Mapping[str, str], body: bytes) -> None:
    parsed = lenient_json(body)
    if isinstance(parsed, dict):
        exchange.server_ids = _ids_of(parsed.get("servers"))
        exchange.dry_run = parsed.get("dry_run") is True


def update_server(call: Call) -> Response:
    request_body = _require_object(call.body, "body", {"server"})
    if "server" not in request_body:
        raise ecs_error(400, "Ecs.0005", "server: is required")
    if not isinstance(request_body["server"], dict):
        raise ecs_error(400, "Ecs.0005", "server: must be a JSON object")
    return JSONResponse(call.backend.update_server(call.params["server_id"], request_body["server"]))


# -- IAM ----------------------------------------------------------------------------------------


def create_token(call: Call) -> Response:
    """KeystoneCreateUserTokenByPassword: the token comes back in ``X-Subject-Token``, with 201."""

    def bad(message: str) -> SandboxError:
        return gateway_error(400, "IAM.0001", f"The request body is invalid: {message}")

    parsed = call.body
    auth = parsed.get("auth") if isinstance(parsed, dict) else None
    identity = auth.get("identity") if isinstance(auth, dict) else None
    if not isinstance(identity, dict):
        raise bad("auth.identity is required")
    methods = identity.get("methods")
    if not isinstance(methods, list) or "password" not in methods:
        raise bad("auth.identity.methods must contain password")
    password_block = identity.get("password")
    user = password_block.get("user") if isinstance(password_block, dict) else None
    if not isinstance(user, dict):
        raise bad("auth.identity.password.user is required")
    domain = user.get("domain")
    name, password = user.get("name"), user.get("password")
    domain_name = domain.get("name") if isinstance(domain, dict) else None
    if not all(isinstance(v, str) for v in (name, password, domain_name)):
        raise bad("user name, password and domain name are required strings")
    scope = auth.get("scope") if isinstance(auth, dict) else None
    project = scope.get("project") if isinstance(scope, dict) else None
    project_name = project.get("name") if isinstance(project, dict) else None
    project_id = project.get("id") if isinstance(project, dict) else None
    if isinstance(project, dict) and not isinstance(project_name or project_id, str):
        raise bad("auth.scope.project needs a name or an id")
    token, body = call.backend.issue_token(
        user_name=str(name),
        password=str(password),
        domain_name=str(domain_name),
        project_name=project_name if isinstance(project_name, str) else None,
        project_id=project_id if isinstance(project_id, str) else None,
        catalog_url=None if call.query.get("nocatalog") else call.base_url,
    )
    return JSONResponse(body, status_code=201, headers={"X-Subject-Token": token})


def list_projects(call: Call) -> Response:
    return JSONResponse(call.backend.list_projects(call.query.get("name")))


# -- the registry -------------------------------------------------------------------------------

OPERATIONS: dict[str, Operation] = {
    operation.name: operation
    for operation in (
        Operation("ListServersDetails", list_servers_details, describe=_describe_list),
        Operation("ShowServer", show_server),
        Operation("BatchResetServersPassword", batch_reset_servers_password, takes_body=True, describe=_describe_reset),
        Operation("UpdateServer", update_server, takes_body=True),
        Operation("BatchAction", batch_action, takes_body=True, describe=_describe_batch),
        Operation("ShowJob", show_job),
        Operation("KeystoneCreateUserTokenByPassword", create_token, takes_body=True, signed=False),
        Operation("KeystoneListProjects", list_projects),
    )
}
"""Every operation by the name the route table gives it (routes.py)."""


def describe(
    exchange: Exchange, operation: Operation, params: Mapping[str, str], query: Mapping[str, str], body: bytes
) -> None:
    """Fill the log's view of the request (operation, server ids, dry run, write) before any check."""
    exchange.operation = operation.name
    if "server_id" in params:
        exchange.server_ids = [params["server_id"]]
    if operation.describe is not None:
        operation.describe(exchange, query, body)
    exchange.write = exchange.operation in WRITE_OPERATIONS


def run(
    operation: Operation,
    backend: SandboxBackend,
    *,
    params: Mapping[str, str],
    query: Mapping[str, str],
    body: bytes,
    base_url: str,
) -> Response:
    """Parse the body if the operation takes one, then call its handler."""
    parsed = _parse_json(body) if operation.takes_body else None
    return operation.handle(Call(backend, params, query, parsed, base_url))
