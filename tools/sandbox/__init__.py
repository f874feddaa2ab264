"""The sandbox cloud: an in-process simulator of the Huawei ECS v1 and IAM endpoints flexus-ops uses.

``Sandbox(SandboxOptions(...))`` gives an ASGI app (``.app``) that signs, routes, fails and throttles
like the real API gateway, over a state model (``.backend``) driven by a clock. It is the embedded
default when no credentials are set, the backbone of the tests, and ``flexus-ops sim`` serves it over
HTTP. The official ``huaweicloudsdkecs`` works against it unchanged.

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
from .responses import RequestRecord, Sandbox, verify_signature

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
