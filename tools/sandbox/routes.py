"""The sandbox cloud's route table: which ECS v1 or IAM operation a method and path name.

This is the one place that knows the URL shapes, as moto's ``urls.py`` does for a service: a route
gives an operation name (the official SDK's name for it) and the parameters taken from the path
(``pid`` for the project, ``server_id``, ``job_id``). What an operation does lives in ``handlers.py``;
what a gateway checks before it runs, in ``gateway.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    operation: str


@dataclass(frozen=True, slots=True)
class RouteMatch:
    operation: str
    params: dict[str, str]


_PID = r"(?P<pid>[^/]+)"
ROUTES: tuple[Route, ...] = (
    Route("GET", re.compile(rf"^/v1/{_PID}/cloudservers/detail$"), "ListServersDetails"),
    Route("GET", re.compile(rf"^/v1/{_PID}/cloudservers/(?P<server_id>[^/]+)$"), "ShowServer"),
    Route("PUT", re.compile(rf"^/v1/{_PID}/cloudservers/os-reset-passwords$"), "BatchResetServersPassword"),
    Route("PUT", re.compile(rf"^/v1/{_PID}/cloudservers/(?P<server_id>[^/]+)$"), "UpdateServer"),
    # One route for three operations: the body's key (os-start, os-stop, reboot) says which.
    Route("POST", re.compile(rf"^/v1/{_PID}/cloudservers/action$"), "BatchAction"),
    Route("GET", re.compile(rf"^/v1/{_PID}/jobs/(?P<job_id>[^/]+)$"), "ShowJob"),
    Route("POST", re.compile(r"^/v3/auth/tokens$"), "KeystoneCreateUserTokenByPassword"),
    Route("GET", re.compile(r"^/v3/projects$"), "KeystoneListProjects"),
)
"""First match wins: ``cloudservers/detail`` and ``os-reset-passwords`` come before ``{server_id}``."""


def match_route(method: str, path: str) -> RouteMatch | None:
    """The operation and path parameters for ``method path``; None when no route matches (404)."""
    for route in ROUTES:
        if route.method == method and (found := route.pattern.match(path)):
            return RouteMatch(route.operation, found.groupdict())
    return None
