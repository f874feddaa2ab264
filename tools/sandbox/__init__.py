"""The sandbox cloud: an in-process simulator of the Huawei ECS v1 and IAM endpoints flexus-ops uses.

``Sandbox(SandboxOptions(...))`` gives an ASGI app (``.app``) that signs, routes, fails and throttles
like the real API gateway, over a state model (``.backend``) driven by a clock. It is the embedded
default when no credentials are set, the backbone of the tests, and ``flexus-ops sim`` serves it over
HTTP. The official ``huaweicloudsdkecs`` works against it unchanged.

It is split as moto splits a service: ``routes.py`` (method and path to operation), ``gateway.py``
(authentication, throttling, lock-out, fault knobs, request log), ``handlers.py`` (one handler per
operation), ``backend.py`` (state and operations), ``jobs.py`` (asynchronous jobs), ``fleet.py``
(the seeded fleet), ``admin.py`` (``/_sandbox/``), with ``responses.py`` the thin HTTP layer that
wires them, and ``server.py`` the ``sim`` command. ``persist.py`` keeps a sandbox's state in a file
between processes (the CLI's embedded sandbox, so one call's job is there for the next).

Importing this package is light: uvicorn is only imported by ``server.run``.
"""

from .backend import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_IAM_DOMAIN,
    DEFAULT_IAM_PASSWORD,
    DEFAULT_IAM_USER,
    DEFAULT_PROJECT_ID,
    DEFAULT_REGION,
    DEFAULT_SECRET_KEY,
    Knobs,
    SandboxBackend,
    SandboxError,
    SandboxOptions,
)
from .gateway import RequestRecord, verify_signature
from .responses import Sandbox

__all__ = [
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_IAM_DOMAIN",
    "DEFAULT_IAM_PASSWORD",
    "DEFAULT_IAM_USER",
    "DEFAULT_PROJECT_ID",
    "DEFAULT_REGION",
    "DEFAULT_SECRET_KEY",
    "Knobs",
    "RequestRecord",
    "Sandbox",
    "SandboxBackend",
    "SandboxError",
    "SandboxOptions",
    "verify_signature",
]
